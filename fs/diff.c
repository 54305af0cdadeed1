/* fs/diff.c: namespace changes between two layout models (see diff.h). */
#include <config.h>

#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>

#include <ext2fs/ext2_fs.h>

#include "diff.h"
#include "layout-internal.h"
#include "util.h"

#define MAX_LINKS 64            /* names of an inode kept on the stack;
                                   more are compared on the heap */

/* What connected () learnt about directories: one byte per inode
 * number for whole models, a small hash table for the few inodes a
 * commit touched (a whole array there would cost more than the diff).
 */
struct memo {
  unsigned char *dense;         /* [inodes_count + 1], or NULL */
  uint32_t *keys;               /* hash: 0 is an empty slot */
  unsigned char *vals;
  size_t cap, n;
};

static struct memo *
memo_new (const struct fsev_layout *L)
{
  struct memo *m = calloc (1, sizeof *m);
  if (m == NULL)
    return NULL;
  if (L->ninodes > L->inodes_count / 32) {
    m->dense = calloc ((size_t) L->inodes_count + 1, 1);
    if (m->dense == NULL) {
      free (m);
      return NULL;
    }
  }
  return m;
}

static void
memo_free (struct memo *m)
{
  if (m == NULL)
    return;
  free (m->dense);
  free (m->keys);
  free (m->vals);
  free (m);
}

static size_t
memo_slot (const struct memo *m, uint32_t key)
{
  size_t i = (key * 2654435761u) & (m->cap - 1);
  while (m->keys[i] && m->keys[i] != key)
    i = (i + 1) & (m->cap - 1);
  return i;
}

static unsigned char
memo_get (const struct memo *m, uint32_t key)
{
  if (m->dense)
    return m->dense[key];
  if (m->cap == 0)
    return 0;
  size_t i = memo_slot (m, key);
  return m->keys[i] ? m->vals[i] : 0;
}

/* Returns false when out of memory (the caller then trusts names). */
static bool
memo_set (struct memo *m, uint32_t key, unsigned char v)
{
  if (m->dense) {
    m->dense[key] = v;
    return true;
  }
  if (2 * (m->n + 1) > m->cap) {
    size_t cap = m->cap ? 2 * m->cap : 64;
    uint32_t *keys = calloc (cap, sizeof *keys);
    unsigned char *vals = calloc (cap, 1);
    if (keys == NULL || vals == NULL) {
      free (keys);
      free (vals);
      return false;
    }
    struct memo old = *m;
    m->keys = keys;
    m->vals = vals;
    m->cap = cap;
    for (size_t i = 0; i < old.cap; i++)
      if (old.keys[i]) {
        size_t j = memo_slot (m, old.keys[i]);
        m->keys[j] = old.keys[i];
        m->vals[j] = old.vals[i];
      }
    free (old.keys);
    free (old.vals);
  }
  size_t i = memo_slot (m, key);
  if (m->keys[i] == 0) {
    m->keys[i] = key;
    m->n++;
  }
  m->vals[i] = v;
  return true;
}

struct out {
  bool (*was_named) (uint32_t ino, void *opaque);
  unsigned (*extra) (uint32_t ino, void *opaque);
  void *opaque;
  struct fsev_change *v;
  size_t n, cap;
  int *depth;                   /* sort key beside each change */
  bool reused;                  /* emitting the delete of a reused number */
  struct memo *memo_a, *memo_b;     /* see connected () */
  bool oom;
};

static void
emit (struct out *o, const struct fsev_change *c, int depth)
{
  if (fsev_grow ((void **) &o->v, &o->cap, o->n + 1, sizeof *o->v) == -1) {
    o->oom = true;
    return;
  }
  o->v[o->n] = *c;
  o->v[o->n++].reused = o->reused;
  int *d = realloc (o->depth, o->cap * sizeof *d);
  if (d == NULL) {
    o->oom = true;
    return;
  }
  o->depth = d;
  /* A number freed and reused in one step: its delete comes first of
   * all, so that whoever keys on inode numbers ends with the new file.
   */
  o->depth[o->n - 1] = o->reused ? INT_MIN : depth;
}

static bool
same_name (const struct fsev_name *a, const struct fsev_name *b)
{
  return a->parent == b->parent && a->len == b->len &&
    memcmp (a->name, b->name, a->len) == 0;
}

/* Depth of the N-th path of INO (components), for ordering. */
static int
depth_of (const struct fsev_layout *L, uint32_t ino, int n)
{
  char path[4096];
  if (n < 0 || fsev_layout_path (L, ino, (unsigned) n, path, sizeof path) <= 0)
    return 0;
  int d = 0;
  for (const char *p = path; *p; p++)
    d += *p == '/';
  return d;
}

static unsigned
attr_changes (const struct fsev_inode *a, const struct fsev_inode *b)
{
  unsigned c = 0;
  if (a->mode != b->mode) c |= FSEV_ATTR_MODE;
  if (a->uid != b->uid) c |= FSEV_ATTR_UID;
  if (a->gid != b->gid) c |= FSEV_ATTR_GID;
  /* Only flags users set (chattr, and the ioctls that make a file
   * fs-verity or encrypted, which change how its bytes read): the
   * kernel flips the rest itself.
   */
  if ((a->flags ^ b->flags) &
      (EXT2_FL_USER_MODIFIABLE | EXT4_VERITY_FL | EXT4_ENCRYPT_FL))
    c |= FSEV_ATTR_FLAGS;
  if (a->atime != b->atime || a->atime_ns != b->atime_ns) c |= FSEV_ATTR_ATIME;
  if (a->mtime != b->mtime || a->mtime_ns != b->mtime_ns) c |= FSEV_ATTR_MTIME;
  if (a->ctime != b->ctime || a->ctime_ns != b->ctime_ns) c |= FSEV_ATTR_CTIME;
  if (a->crtime != b->crtime || a->crtime_ns != b->crtime_ns) c |= FSEV_ATTR_CRTIME;
  /* A directory's count follows its subdirectories (their own events);
   * a file's is its hard links, which the names may not show (a guest
   * that writes the count alone).
   */
  if (a->links != b->links && !LINUX_S_ISDIR (b->mode)) c |= FSEV_ATTR_LINKS;
  return c;
}

/* A name that went away, to find which inode a rename replaced. */
struct gone {
  struct fsev_name name;
  uint32_t ino;
};

static int
cmp_gone (const void *a, const void *b)
{
  const struct gone *x = a, *y = b;
  if (x->name.parent != y->name.parent)
    return x->name.parent < y->name.parent ? -1 : 1;
  size_t n = x->name.len < y->name.len ? x->name.len : y->name.len;
  int r = memcmp (x->name.name, y->name.name, n);
  if (r)
    return r;
  return x->name.len < y->name.len ? -1 : x->name.len > y->name.len;
}

static bool
watched (const struct fsev_layout *L, uint32_t ino)
{
  return ino == L->root_ino || ino >= L->first_ino;
}

/* Is directory DIR reachable from the root in L?  A name in an
 * unreachable directory is no name yet (ext2 may write a new entry
 * before the entry of its directory) or no more (a removed tree).
 * MEMO: 0 unknown, 1 yes, 2 being looked at (a loop: no), 3 no.
 */
static bool
connected (const struct fsev_layout *L, struct memo *memo, uint32_t dir,
           unsigned depth)
{
  if (dir == L->root_ino)
    return true;
  if (memo == NULL || dir > L->inodes_count || depth > 4096)
    return memo == NULL;        /* no memory for the memo: trust names */
  unsigned char known = memo_get (memo, dir);
  if (known)
    return known == 1;
  if (!memo_set (memo, dir, 2))
    return true;                /* no memory for the memo: trust names */
  unsigned n = fsev_layout_names (L, dir, NULL, 0);
  for (unsigned i = 0; i < n; i++) {
    const struct fsev_link *l = names_link (&L->names, dir, i);
    if (l && connected (L, memo, l->parent, depth + 1)) {
      memo_set (memo, dir, 1);
      return true;
    }
  }
  memo_set (memo, dir, 3);
  return false;
}

/* Keep the names of V[0..N) whose directory is reachable; IDX gets
 * their indices among all.  Returns how many are kept.
 */
static unsigned
keep_connected (const struct fsev_layout *L, struct memo *memo,
                struct fsev_name *v, unsigned n, unsigned *idx)
{
  unsigned k = 0;
  for (unsigned i = 0; i < n; i++)
    if (connected (L, memo, v[i].parent, 0)) {
      v[k] = v[i];
      idx[k++] = i;
    }
  return k;
}

/* Per-inode scratch: its names before and after, which of them are
 * matched, and which inode a new name replaced.  On the stack for the
 * usual handful of names, on the heap for many hard links.
 */
struct scratch {
  struct fsev_name sa[MAX_LINKS], sb[MAX_LINKS];
  bool sua[MAX_LINKS], sub[MAX_LINKS];
  uint32_t srep[MAX_LINKS];
  unsigned sia[MAX_LINKS], sib[MAX_LINKS];
  unsigned *ia, *ib;            /* index of each kept name among all */
  struct fsev_name *na, *nb;
  bool *used_a, *used_b;
  uint32_t *replaced;
  void *heap;
};

static int
scratch_init (struct scratch *s, unsigned ca, unsigned cb)
{
  s->heap = NULL;
  if (ca <= MAX_LINKS && cb <= MAX_LINKS) {
    s->na = s->sa; s->nb = s->sb;
    s->used_a = s->sua; s->used_b = s->sub;
    s->replaced = s->srep;
    s->ia = s->sia; s->ib = s->sib;
    memset (s->sua, 0, sizeof s->sua);
    memset (s->sub, 0, sizeof s->sub);
    memset (s->srep, 0, sizeof s->srep);
    return 0;
  }
  size_t n = (size_t) ca + cb + 1;
  s->heap = calloc (n, 2 * sizeof (struct fsev_name) + 2 * sizeof (bool) +
                    sizeof (uint32_t) + 2 * sizeof (unsigned));
  if (s->heap == NULL)
    return -1;
  s->na = s->heap;
  s->nb = s->na + n;
  s->replaced = (uint32_t *) (s->nb + n);
  s->ia = (unsigned *) (s->replaced + n);
  s->ib = s->ia + n;
  s->used_a = (bool *) (s->ib + n);
  s->used_b = s->used_a + n;
  return 0;
}

static void
diff_names (struct out *o, const struct fsev_layout *A,
            const struct fsev_layout *B, const struct fsev_inode *a,
            const struct fsev_inode *b, uint32_t ino, unsigned ca, unsigned cb,
            struct fsev_name *na, struct fsev_name *nb, const unsigned *ia,
            const unsigned *ib, bool *used_a, bool *used_b,
            uint32_t *replaced, struct gone **gone, size_t *ngone,
            size_t *gone_cap, bool collect);

static void
diff_inode (struct out *o, const struct fsev_layout *A,
            const struct fsev_layout *B, const struct fsev_inode *a,
            const struct fsev_inode *b, struct gone **gone, size_t *ngone,
            size_t *gone_cap, bool collect)
{
  uint32_t ino = a ? a->ino : b->ino;
  unsigned ca = a ? fsev_layout_names (A, ino, NULL, 0) : 0;
  unsigned cb = b ? fsev_layout_names (B, ino, NULL, 0) : 0;

  /* The same number, another inode: freed and reused in between. */
  if (a && b && (a->generation != b->generation ||
                 ((a->mode ^ b->mode) & 0170000))) {
    o->reused = true;           /* its delete goes before its create */
    diff_inode (o, A, B, a, NULL, gone, ngone, gone_cap, collect);
    o->reused = false;
    diff_inode (o, A, B, NULL, b, gone, ngone, gone_cap, collect);
    return;
  }

  struct scratch sc;
  if (scratch_init (&sc, ca, cb) == -1) {
    o->oom = true;
    return;
  }
  struct fsev_name *na = sc.na, *nb = sc.nb;
  bool *used_a = sc.used_a, *used_b = sc.used_b;
  uint32_t *replaced = sc.replaced;
  if (a) {
    fsev_layout_names (A, ino, na, ca);
    ca = keep_connected (A, o->memo_a, na, ca, sc.ia);
  }
  if (b) {
    fsev_layout_names (B, ino, nb, cb);
    cb = keep_connected (B, o->memo_b, nb, cb, sc.ib);
  }
  diff_names (o, A, B, a, b, ino, ca, cb, na, nb, sc.ia, sc.ib, used_a,
              used_b, replaced, gone, ngone, gone_cap, collect);
  free (sc.heap);
}

static void
diff_names (struct out *o, const struct fsev_layout *A,
            const struct fsev_layout *B, const struct fsev_inode *a,
            const struct fsev_inode *b, uint32_t ino, unsigned ca, unsigned cb,
            struct fsev_name *na, struct fsev_name *nb, const unsigned *ia,
            const unsigned *ib, bool *used_a, bool *used_b,
            uint32_t *replaced, struct gone **gone, size_t *ngone,
            size_t *gone_cap, bool collect)
{
  for (unsigned i = 0; i < ca; i++)
    for (unsigned j = 0; j < cb; j++)
      if (!used_b[j] && same_name (&na[i], &nb[j])) {
        used_a[i] = used_b[j] = true;
        break;
      }

  if (collect) {                /* first pass: names that went away */
    for (unsigned i = 0; i < ca; i++) {
      if (used_a[i])
        continue;
      if (fsev_grow ((void **) gone, gone_cap, *ngone + 1, sizeof **gone) == -1) {
        o->oom = true;
        return;
      }
      (*gone)[(*ngone)++] = (struct gone) { .name = na[i], .ino = ino };
    }
    return;
  }

  if (b == NULL) {              /* freed */
    emit (o, &(struct fsev_change) {
          .kind = FSEV_DELETE, .ino = ino, .old_inode = a,
        .old_link = ca ? (int) ia[0] : -1, .new_link = -1,
      }, -depth_of (A, ino, ca ? (int) ia[0] : -1));
    return;
  }
  if (cb == 0 && ca == 0 && a == NULL)
    return;                     /* allocated, not yet named: later */

  /* Which inode held the name it takes now, if another. */
  for (unsigned j = 0; j < cb; j++) {
    if (used_b[j] || *ngone == 0)
      continue;
    struct gone key = { .name = nb[j] };
    struct gone *g = bsearch (&key, *gone, *ngone, sizeof key, cmp_gone);
    if (g && g->ino != ino)
      replaced[j] = g->ino;
  }

  /* Named for the first time: created.  (An inode that had names
   * before, in an earlier model, and lost them all in between is not:
   * on ext2 a rename can write the old entry's removal first.)
   */
  if (ca == 0 && cb > 0 && !(a && o->was_named && o->was_named (ino, o->opaque))) {
    emit (o, &(struct fsev_change) {
        .kind = FSEV_CREATE, .ino = ino, .old_inode = a, .new_inode = b,
        .old_link = -1, .new_link = (int) ib[0], .replaced_ino = replaced[0],
      }, depth_of (B, ino, (int) ib[0]));
    used_b[0] = true;
    for (unsigned j = 1; j < cb; j++)
      emit (o, &(struct fsev_change) {
          .kind = FSEV_LINK, .ino = ino, .old_inode = a, .new_inode = b,
          .old_link = -1, .new_link = (int) ib[j], .replaced_ino = replaced[j],
        }, 0);
    return;                     /* the create carries the size */
  }

  /* Removed names pair with added ones as renames; the rest are
   * unlinks and links.
   */
  unsigned i = 0, j = 0;
  for (;;) {
    while (i < ca && used_a[i]) i++;
    while (j < cb && used_b[j]) j++;
    if (i >= ca || j >= cb)
      break;
    emit (o, &(struct fsev_change) {
        .kind = FSEV_RENAME, .ino = ino, .old_inode = a, .new_inode = b,
        .old_link = (int) ia[i], .new_link = (int) ib[j],
        .replaced_ino = replaced[j],
      }, 0);
    used_a[i] = used_b[j] = true;
  }
  for (; j < cb; j++)
    if (!used_b[j])
      emit (o, &(struct fsev_change) {
          .kind = FSEV_LINK, .ino = ino, .old_inode = a, .new_inode = b,
          .old_link = -1, .new_link = (int) ib[j], .replaced_ino = replaced[j],
        }, 0);
  for (; i < ca; i++)
    if (!used_a[i])
      emit (o, &(struct fsev_change) {
          .kind = FSEV_UNLINK, .ino = ino, .old_inode = a, .new_inode = b,
          .old_link = (int) ia[i], .new_link = -1,
        }, 0);

  if (a->size != b->size && !LINUX_S_ISDIR (b->mode))
    emit (o, &(struct fsev_change) {
        .kind = FSEV_SET_SIZE, .ino = ino, .old_inode = a, .new_inode = b,
        .old_link = ca ? (int) ia[0] : -1, .new_link = cb ? (int) ib[0] : -1,
      }, 0);
  unsigned changed = attr_changes (a, b) |
    (o->extra ? o->extra (ino, o->opaque) : 0);
  if (changed)
    emit (o, &(struct fsev_change) {
        .kind = FSEV_SET_ATTRIBUTES, .ino = ino, .old_inode = a, .new_inode = b,
        .old_link = ca ? (int) ia[0] : -1, .new_link = cb ? (int) ib[0] : -1, .changed = changed,
      }, 0);
}

int
fsev_change_rank (enum fsev_change_kind kind)
{
  switch (kind) {
  case FSEV_CREATE: return 0;
  case FSEV_RENAME: return 1;
  case FSEV_LINK: return 2;
  case FSEV_SET_SIZE: return 3;
  /* 4: data writes */
  case FSEV_SET_ATTRIBUTES: return 5;
  case FSEV_UNLINK: return 6;
  case FSEV_DELETE: return 7;
  }
  return 8;
}

/* Stable order: rank, then depth (create: parents first; delete: the
 * negative depth puts children first), then as found (by inode).
 */
struct keyed { struct fsev_change c; int depth; size_t i; };
static int
cmp_keyed (const void *a, const void *b)
{
  const struct keyed *x = a, *y = b;
  int rx = x->depth == INT_MIN ? -1 : fsev_change_rank (x->c.kind);
  int ry = y->depth == INT_MIN ? -1 : fsev_change_rank (y->c.kind);
  if (rx != ry) return rx < ry ? -1 : 1;
  if (x->depth != y->depth) return x->depth < y->depth ? -1 : 1;
  return x->i < y->i ? -1 : x->i > y->i;
}

/* Walk both inode lists in order; PASS 0 collects vanished names,
 * pass 1 emits.
 */
static void
walk (struct out *o, const struct fsev_layout *A, const struct fsev_layout *B,
      struct gone **gone, size_t *ngone, size_t *gone_cap, bool collect)
{
  size_t na, nb, i = 0, j = 0;
  const struct fsev_inode *ia = fsev_layout_inodes (A, &na);
  const struct fsev_inode *ib = fsev_layout_inodes (B, &nb);
  while ((i < na || j < nb) && !o->oom) {
    const struct fsev_inode *a = NULL, *b = NULL;
    if (j >= nb || (i < na && ia[i].ino < ib[j].ino))
      a = &ia[i++];
    else if (i >= na || ib[j].ino < ia[i].ino)
      b = &ib[j++];
    else {
      a = &ia[i++];
      b = &ib[j++];
    }
    uint32_t ino = a ? a->ino : b->ino;
    /* Watched on either side: an inode that stops being watched (a
     * superblock that moves s_first_ino above it) is gone as far as
     * its names go, one that starts is new.
     */
    bool wa = a && watched (A, ino), wb = b && watched (B, ino);
    if (!wa && !wb)
      continue;
    diff_inode (o, A, B, wa ? a : NULL, wb ? b : NULL, gone, ngone, gone_cap,
                collect);
  }
}

ssize_t
fsev_diff (const struct fsev_layout *A, const struct fsev_layout *B,
           bool (*was_named) (uint32_t ino, void *opaque), void *opaque,
           struct fsev_change **result)
{
  return fsev_diff_extra (A, B, was_named, NULL, opaque, result);
}

ssize_t
fsev_diff_extra (const struct fsev_layout *A, const struct fsev_layout *B,
                 bool (*was_named) (uint32_t ino, void *opaque),
                 unsigned (*extra) (uint32_t ino, void *opaque),
                 void *opaque, struct fsev_change **result)
{
  struct out o = { .was_named = was_named, .extra = extra, .opaque = opaque };
  o.memo_a = memo_new (A);
  o.memo_b = memo_new (B);
  struct gone *gone = NULL;
  size_t ngone = 0, gone_cap = 0;

  *result = NULL;
  walk (&o, A, B, &gone, &ngone, &gone_cap, true);
  if (ngone > 1)
    qsort (gone, ngone, sizeof *gone, cmp_gone);
  if (!o.oom)
    walk (&o, A, B, &gone, &ngone, &gone_cap, false);
  free (gone);
  memo_free (o.memo_a);
  memo_free (o.memo_b);
  if (o.oom) {
    free (o.v);
    free (o.depth);
    return -1;
  }

  struct keyed *k = malloc ((o.n ? o.n : 1) * sizeof *k);
  if (k == NULL) {
    free (o.v);
    free (o.depth);
    return -1;
  }
  for (size_t i = 0; i < o.n; i++)
    k[i] = (struct keyed) { .c = o.v[i], .depth = o.depth[i], .i = i };
  qsort (k, o.n, sizeof *k, cmp_keyed);
  for (size_t i = 0; i < o.n; i++)
    o.v[i] = k[i].c;
  free (k);
  free (o.depth);
  *result = o.v;
  return (ssize_t) o.n;
}
