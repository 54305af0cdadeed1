/* fs/layout-edit.c: in-place edits of the layout model with an undo
 * log (see layout-edit.h).
 *
 * The arrays stay sorted arrays: an edit moves the tail of one array
 * (memmove), which is cheap next to the scan it replaces and leaves
 * lookups exactly as fast as after a fresh build.
 */
#include <config.h>

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "layout-edit.h"
#include "util.h"

enum undo_kind {
  U_RUN_ADDED, U_RUN_REMOVED, U_RUN_REPLACED,
  U_INODE,                      /* the record before (or none) */
  U_LINK_ADDED, U_LINK_REMOVED,
  U_XATTR_ADDED, U_XATTR_REMOVED,
};

struct undo_op {
  enum undo_kind kind;
  bool had;                     /* U_INODE: a record existed */
  size_t index;                 /* U_RUN_REMOVED: where it was */
  struct run run2;              /* U_RUN_REPLACED: the new run */
  union {
    struct run run;
    struct fsev_inode inode;
    struct fsev_link link;
    struct xattr_owner x;
  };
};

static int
log_op (struct fsev_undo *u, const struct undo_op *op)
{
  if (u == NULL)
    return 0;
  if (fsev_grow ((void **) &u->v, &u->cap, u->n + 1, sizeof *u->v) == -1)
    return -1;
  u->v[u->n++] = *op;
  return 0;
}

/* --- Runs. --- */

/* First index whose run starts at or after PBLK. */
static size_t
runs_lower (const struct fsev_layout *L, uint64_t pblk)
{
  size_t lo = 0, hi = L->nruns;
  while (lo < hi) {
    size_t mid = lo + (hi - lo) / 2;
    if (L->runs[mid].pblk < pblk)
      lo = mid + 1;
    else
      hi = mid;
  }
  return lo;
}

/* maxend from index I on, after an edit there: stop once it agrees with
 * what is stored (everything after is then right already).
 */
static void
fix_maxend (struct fsev_layout *L, size_t i)
{
  uint64_t m = i ? L->maxend[i - 1] : 0;
  for (bool first = true; i < L->nruns; i++, first = false) {
    uint64_t end = L->runs[i].pblk + L->runs[i].len;
    if (end > m)
      m = end;
    if (!first && L->maxend[i] == m)
      break;
    L->maxend[i] = m;
  }
}

static bool
same_run (const struct run *a, const struct run *b)
{
  return a->pblk == b->pblk && a->len == b->len && a->owner == b->owner &&
    a->aux == b->aux && a->role == b->role && a->flags == b->flags &&
    a->eof_bytes == b->eof_bytes;
}

static int
run_remove (struct fsev_layout *L, const struct run *r, size_t *index,
            bool check)
{
  for (size_t i = runs_lower (L, r->pblk);
       i < L->nruns && L->runs[i].pblk == r->pblk; i++)
    if (same_run (&L->runs[i], r)) {
      /* Two runs it kept apart (a block claimed twice) would become
       * neighbours that a scan joins into one: not an edit this model
       * can make in place.
       */
      if (check && i > 0 && i + 1 < L->nruns &&
          fsev_runs_join (&L->runs[i - 1], &L->runs[i + 1], L->inodes_per_block))
        return 1;
      if (index)
        *index = i;
      memmove (&L->runs[i], &L->runs[i + 1],
               (L->nruns - i - 1) * sizeof *L->runs);
      memmove (&L->maxend[i], &L->maxend[i + 1],
               (L->nruns - i - 1) * sizeof *L->maxend);
      L->nruns--;
      fix_maxend (L, i);
      return 0;
    }
  return 1;
}

/* Insert R after the runs that start where it does, or at AT (the place
 * a rollback puts a removed run back, to keep the scan's order of runs
 * that share a block) when AT is not SIZE_MAX.
 */
static int
run_insert_at (struct fsev_layout *L, const struct run *r, bool check,
               size_t at)
{
  size_t i = at != SIZE_MAX && at <= L->nruns ? at
    : runs_lower (L, r->pblk + 1);          /* after equal starts */
  if (check &&
      ((i > 0 && L->maxend[i - 1] > r->pblk) ||
       (i < L->nruns && L->runs[i].pblk < r->pblk + r->len)))
    return 1;
  if (L->nruns + 1 > L->runs_cap) {
    size_t cap = L->runs_cap ? L->runs_cap + L->runs_cap / 8 + 16 : 64;
    struct run *nr = realloc (L->runs, cap * sizeof *nr);
    if (nr == NULL)
      return -1;
    L->runs = nr;
    uint64_t *nm = realloc (L->maxend, cap * sizeof *nm);
    if (nm == NULL)
      return -1;
    L->maxend = nm;
    L->runs_cap = cap;
  }
  memmove (&L->runs[i + 1], &L->runs[i], (L->nruns - i) * sizeof *L->runs);
  memmove (&L->maxend[i + 1], &L->maxend[i],
           (L->nruns - i) * sizeof *L->maxend);
  L->runs[i] = *r;
  L->nruns++;
  fix_maxend (L, i);
  return 0;
}

static int
run_insert (struct fsev_layout *L, const struct run *r, bool check)
{
  return run_insert_at (L, r, check, SIZE_MAX);
}

int
fsev_edit_run_remove (struct fsev_layout *L, const struct run *r,
                      struct fsev_undo *u)
{
  struct undo_op op = { .kind = U_RUN_REMOVED, .run = *r };
  if (log_op (u, &op) == -1)
    return -1;
  size_t index = 0;
  int ret = run_remove (L, r, &index, true);
  if (ret && u)
    u->n--;
  else if (u)
    u->v[u->n - 1].index = index;
  return ret;
}

int
fsev_edit_run_insert (struct fsev_layout *L, const struct run *r,
                      struct fsev_undo *u)
{
  struct undo_op op = { .kind = U_RUN_ADDED, .run = *r };
  if (log_op (u, &op) == -1)
    return -1;
  int ret = run_insert (L, r, true);
  if (ret && u)
    u->n--;
  return ret;
}

/* Put R2 where R is, if it fits there (no overlap, order kept). */
static int
run_replace (struct fsev_layout *L, const struct run *r, const struct run *r2)
{
  for (size_t i = runs_lower (L, r->pblk);
       i < L->nruns && L->runs[i].pblk == r->pblk; i++)
    if (same_run (&L->runs[i], r)) {
      if ((i > 0 && L->maxend[i - 1] > r2->pblk) ||
          (i + 1 < L->nruns && L->runs[i + 1].pblk < r2->pblk + r2->len))
        return 1;
      L->runs[i] = *r2;
      fix_maxend (L, i);
      return 0;
    }
  return 1;
}

int
fsev_edit_run_replace (struct fsev_layout *L, const struct run *r,
                       const struct run *r2, struct fsev_undo *u)
{
  struct undo_op op = { .kind = U_RUN_REPLACED, .run = *r, .run2 = *r2 };
  if (log_op (u, &op) == -1)
    return -1;
  int ret = run_replace (L, r, r2);
  if (ret && u)
    u->n--;
  return ret;
}

/* --- Inode records. --- */

static size_t
inodes_lower (const struct fsev_layout *L, uint32_t ino)
{
  size_t lo = 0, hi = L->ninodes;
  while (lo < hi) {
    size_t mid = lo + (hi - lo) / 2;
    if (L->inodes[mid].ino < ino)
      lo = mid + 1;
    else
      hi = mid;
  }
  return lo;
}

static int
inode_set (struct fsev_layout *L, uint32_t ino, const struct fsev_inode *rec)
{
  size_t i = inodes_lower (L, ino);
  bool have = i < L->ninodes && L->inodes[i].ino == ino;
  if (rec && have)
    L->inodes[i] = *rec;
  else if (rec) {
    if (fsev_grow ((void **) &L->inodes, &L->inodes_cap, L->ninodes + 1,
                   sizeof *L->inodes) == -1)
      return -1;
    memmove (&L->inodes[i + 1], &L->inodes[i],
             (L->ninodes - i) * sizeof *L->inodes);
    L->inodes[i] = *rec;
    L->ninodes++;
  }
  else if (have) {
    memmove (&L->inodes[i], &L->inodes[i + 1],
             (L->ninodes - i - 1) * sizeof *L->inodes);
    L->ninodes--;
  }
  return 0;
}

int
fsev_edit_inode (struct fsev_layout *L, uint32_t ino,
                 const struct fsev_inode *rec, struct fsev_undo *u)
{
  size_t i = inodes_lower (L, ino);
  struct undo_op op = { .kind = U_INODE };
  op.had = i < L->ninodes && L->inodes[i].ino == ino;
  if (op.had)
    op.inode = L->inodes[i];
  else
    op.inode.ino = ino;
  if (log_op (u, &op) == -1)
    return -1;
  if (inode_set (L, ino, rec) == -1) {
    if (u)
      u->n--;
    return -1;
  }
  return 0;
}

/* --- Links. --- */

/* Links are sorted by child, then parent; a new one goes after those
 * with the same child and parent (a fresh scan reads directories in
 * inode order, so a file's links come by parent).
 */
static size_t
links_upper (const struct fsev_names *N, uint32_t child, uint32_t parent)
{
  size_t lo = 0, hi = N->nlinks;
  while (lo < hi) {
    size_t mid = lo + (hi - lo) / 2;
    const struct fsev_link *l = &N->links[mid];
    if (l->child < child || (l->child == child && l->parent <= parent))
      lo = mid + 1;
    else
      hi = mid;
  }
  return lo;
}

static int
link_insert (struct fsev_names *N, const struct fsev_link *l)
{
  if (fsev_grow ((void **) &N->links, &N->links_cap, N->nlinks + 1,
                 sizeof *N->links) == -1)
    return -1;
  size_t i = links_upper (N, l->child, l->parent);
  memmove (&N->links[i + 1], &N->links[i], (N->nlinks - i) * sizeof *N->links);
  N->links[i] = *l;
  N->nlinks++;
  return 0;
}

/* Index of the link PARENT/NAME -> CHILD, or N->nlinks. */
static size_t
link_find (const struct fsev_names *N, uint32_t parent, uint32_t child,
           const char *name, size_t len)
{
  size_t i = links_upper (N, child, parent);
  while (i-- > 0) {
    const struct fsev_link *l = &N->links[i];
    if (l->child != child || l->parent != parent)
      break;
    if (l->name_len == len &&
        (len == 0 || memcmp (N->pool + l->name_off, name, len) == 0))
      return i;
  }
  return N->nlinks;
}

static void
link_remove_at (struct fsev_names *N, size_t i)
{
  memmove (&N->links[i], &N->links[i + 1],
           (N->nlinks - i - 1) * sizeof *N->links);
  N->nlinks--;
}

int
fsev_edit_link (struct fsev_layout *L, bool add, uint32_t parent,
                uint32_t child, const char *name, size_t len,
                struct fsev_undo *u)
{
  struct fsev_names *N = &L->names;
  struct undo_op op = { .kind = add ? U_LINK_ADDED : U_LINK_REMOVED };
  if (add) {
    if (N->pool_len + len > UINT32_MAX ||
        fsev_grow ((void **) &N->pool, &N->pool_cap, N->pool_len + len, 1) == -1)
      return -1;
    op.link = (struct fsev_link) {
      .child = child, .parent = parent,
      .name_off = (uint32_t) N->pool_len, .name_len = (uint32_t) len,
    };
    if (log_op (u, &op) == -1)
      return -1;
    if (len)
      memcpy (N->pool + N->pool_len, name, len);
    if (link_insert (N, &op.link) == -1) {
      if (u)
        u->n--;
      return -1;
    }
    N->pool_len += len;
    return 0;
  }
  size_t i = link_find (N, parent, child, name, len);
  if (i == N->nlinks)
    return 1;
  op.link = N->links[i];
  if (log_op (u, &op) == -1)
    return -1;
  link_remove_at (N, i);
  N->garbage += len;
  return 0;
}

/* --- Xattr block owners. --- */

static size_t
xattrs_lower (const struct fsev_layout *L, uint64_t pblk, uint32_t ino)
{
  size_t lo = 0, hi = L->nxattrs;
  while (lo < hi) {
    size_t mid = lo + (hi - lo) / 2;
    const struct xattr_owner *x = &L->xattrs[mid];
    if (x->pblk < pblk || (x->pblk == pblk && x->ino < ino))
      lo = mid + 1;
    else
      hi = mid;
  }
  return lo;
}

/* The lowest owner of PBLK, or 0. */
static uint32_t
xattr_first_owner (const struct fsev_layout *L, uint64_t pblk)
{
  size_t i = xattrs_lower (L, pblk, 0);
  return i < L->nxattrs && L->xattrs[i].pblk == pblk ? L->xattrs[i].ino : 0;
}

static int
xattr_set (struct fsev_layout *L, bool add, uint64_t pblk, uint32_t ino)
{
  size_t i = xattrs_lower (L, pblk, ino);
  if (add) {
    if (fsev_grow ((void **) &L->xattrs, &L->xattrs_cap, L->nxattrs + 1,
                   sizeof *L->xattrs) == -1)
      return -1;
    memmove (&L->xattrs[i + 1], &L->xattrs[i],
             (L->nxattrs - i) * sizeof *L->xattrs);
    L->xattrs[i] = (struct xattr_owner) { .pblk = pblk, .ino = ino };
    L->nxattrs++;
    return 0;
  }
  if (i >= L->nxattrs || L->xattrs[i].pblk != pblk || L->xattrs[i].ino != ino)
    return 1;
  memmove (&L->xattrs[i], &L->xattrs[i + 1],
           (L->nxattrs - i - 1) * sizeof *L->xattrs);
  L->nxattrs--;
  return 0;
}

int
fsev_edit_xattr (struct fsev_layout *L, bool add, uint64_t pblk, uint32_t ino,
                 struct fsev_undo *u)
{
  uint32_t before = xattr_first_owner (L, pblk);
  struct undo_op op = {
    .kind = add ? U_XATTR_ADDED : U_XATTR_REMOVED,
    .x = { .pblk = pblk, .ino = ino },
  };
  if (log_op (u, &op) == -1)
    return -1;
  int r = xattr_set (L, add, pblk, ino);
  if (r) {
    if (u)
      u->n--;
    return r;
  }
  /* The block's run belongs to its lowest owner (as map_xattr_blocks). */
  uint32_t after = xattr_first_owner (L, pblk);
  if (after == before)
    return 0;
  if (before) {
    struct run old = { .pblk = pblk, .len = 1, .owner = before,
                       .role = FSEV_ROLE_XATTR };
    if ((r = fsev_edit_run_remove (L, &old, u)) != 0)
      return r;
  }
  if (after) {
    struct run neu = { .pblk = pblk, .len = 1, .owner = after,
                       .role = FSEV_ROLE_XATTR };
    if ((r = fsev_edit_run_insert (L, &neu, u)) != 0)
      return r;
  }
  return 0;
}

/* --- Undo. --- */

void
fsev_undo_rollback (struct fsev_layout *L, struct fsev_undo *u)
{
  /* Rollback puts back what was there, so it needs no memory beyond
   * what the edits had (arrays never shrink); a failure here would be
   * a bug, not a guest's doing.
   */
  while (u->n > 0) {
    struct undo_op *op = &u->v[--u->n];
    switch (op->kind) {
    case U_RUN_ADDED: run_remove (L, &op->run, NULL, false); break;
    case U_RUN_REMOVED: run_insert_at (L, &op->run, false, op->index); break;
    case U_RUN_REPLACED:
      if (run_replace (L, &op->run2, &op->run) != 0) {
        /* It fitted before: put it back the long way. */
        size_t at = SIZE_MAX;
        run_remove (L, &op->run2, &at, false);
        run_insert_at (L, &op->run, false, at);
      }
      break;
    case U_INODE:
      inode_set (L, op->inode.ino, op->had ? &op->inode : NULL);
      break;
    case U_LINK_ADDED: {
      size_t i = link_find (&L->names, op->link.parent, op->link.child,
                            L->names.pool + op->link.name_off,
                            op->link.name_len);
      if (i < L->names.nlinks)
        link_remove_at (&L->names, i);
      /* The pool keeps its bytes: the newest, so they can go. */
      if (op->link.name_off + op->link.name_len == L->names.pool_len)
        L->names.pool_len = op->link.name_off;
      else
        L->names.garbage += op->link.name_len;
      break;
    }
    case U_LINK_REMOVED:
      link_insert (&L->names, &op->link);
      L->names.garbage -= op->link.name_len;
      break;
    case U_XATTR_ADDED: xattr_set (L, false, op->x.pblk, op->x.ino); break;
    case U_XATTR_REMOVED: xattr_set (L, true, op->x.pblk, op->x.ino); break;
    }
  }
}

void
fsev_undo_free (struct fsev_undo *u)
{
  free (u->v);
  memset (u, 0, sizeof *u);
}

int
fsev_edit_compact_names (struct fsev_layout *L)
{
  struct fsev_names *N = &L->names;
  if (N->garbage < (1u << 20) || N->garbage < N->pool_len / 2)
    return 0;
  size_t len = N->pool_len - N->garbage;
  char *pool = malloc (len ? len : 1);
  if (pool == NULL)
    return -1;
  size_t off = 0;
  for (size_t i = 0; i < N->nlinks; i++) {
    memcpy (pool + off, N->pool + N->links[i].name_off, N->links[i].name_len);
    N->links[i].name_off = (uint32_t) off;
    off += N->links[i].name_len;
  }
  free (N->pool);
  N->pool = pool;
  N->pool_len = N->pool_cap = off;
  N->garbage = 0;
  return 0;
}
