/* fs/layout-query.c: answer questions from the layout model.
 *
 * Lookups never touch the image: binary search over the sorted runs,
 * then a walk forward while runs overlap the range.
 */
#include <config.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "layout-internal.h"

static const char *const role_names[FSEV_ROLE_COUNT] = {
  [FSEV_ROLE_SUPERBLOCK] = "superblock",
  [FSEV_ROLE_GROUP_DESCRIPTORS] = "group_descriptors",
  [FSEV_ROLE_RESERVED_GDT] = "reserved_gdt",
  [FSEV_ROLE_BLOCK_BITMAP] = "block_bitmap",
  [FSEV_ROLE_INODE_BITMAP] = "inode_bitmap",
  [FSEV_ROLE_INODE_TABLE] = "inode_table",
  [FSEV_ROLE_JOURNAL] = "journal",
  [FSEV_ROLE_MMP] = "mmp",
  [FSEV_ROLE_EXTENT_TREE] = "extent_tree",
  [FSEV_ROLE_INDIRECT] = "indirect",
  [FSEV_ROLE_DIRECTORY] = "directory",
  [FSEV_ROLE_XATTR] = "xattr",
  [FSEV_ROLE_DATA] = "data",
  [FSEV_ROLE_FREE] = "free",
  [FSEV_ROLE_OUTSIDE] = "outside",
};

const char *
fsev_role_name (enum fsev_role role)
{
  return (unsigned) role < FSEV_ROLE_COUNT ? role_names[role] : "unknown";
}

static bool
is_fixed_metadata (uint8_t role)
{
  return role <= FSEV_ROLE_INODE_TABLE;
}

static unsigned
seg_flags (uint8_t run_flags)
{
  unsigned f = 0;
  if (run_flags & RUN_BACKUP) f |= FSEV_SEG_BACKUP;
  if (run_flags & RUN_UNWRITTEN) f |= FSEV_SEG_UNWRITTEN;
  if (run_flags & RUN_ALLOCATED) f |= FSEV_SEG_ALLOCATED;
  if (run_flags & RUN_JOURNAL_SB) f |= FSEV_SEG_JOURNAL_SB;
  if (run_flags & RUN_JOURNAL_LOG) f |= FSEV_SEG_JOURNAL_LOG;
  if (run_flags & RUN_JOURNAL_FC) f |= FSEV_SEG_JOURNAL_FC;
  return f;
}

/* Segments pass through here so that neighbours that continue each
 * other (a run split at i_size, runs of one file that merely touch) reach
 * the caller as one.
 */
struct emitter {
  fsev_segment_fn fn;
  void *opaque;
  struct fsev_segment pending;
  bool has_pending;
};

static bool
continues (const struct fsev_segment *p, const struct fsev_segment *n)
{
  if (p->role != n->role || p->flags != n->flags || p->ino != n->ino ||
      p->group != n->group || p->offset + p->length != n->offset)
    return false;
  switch (n->role) {
  case FSEV_ROLE_DATA:
  case FSEV_ROLE_DIRECTORY:
  case FSEV_ROLE_JOURNAL:
    return p->position + p->length == n->position;
  case FSEV_ROLE_INODE_TABLE:
    return p->last_ino + 1 == n->first_ino;
  case FSEV_ROLE_FREE:
  case FSEV_ROLE_OUTSIDE:
    return true;
  default:
    return false;               /* one segment per metadata block */
  }
}

static int
flush (struct emitter *em)
{
  if (!em->has_pending)
    return 0;
  em->has_pending = false;
  return em->fn (&em->pending, em->opaque);
}

static int
emit (const struct fsev_segment *seg, void *opaque)
{
  struct emitter *em = opaque;
  if (em->has_pending && continues (&em->pending, seg)) {
    em->pending.length += seg->length;
    if (seg->role == FSEV_ROLE_INODE_TABLE)
      em->pending.last_ino = seg->last_ino;
    return 0;
  }
  int ret = flush (em);
  em->pending = *seg;
  em->has_pending = true;
  return ret;
}

/* Emit the part [S, E) of run R (bytes), split at end of file. */
static int
emit_run (const struct fsev_layout *L, const struct run *r, bool dup,
          uint64_t s, uint64_t e, fsev_segment_fn fn, void *opaque)
{
  const uint64_t rs = r->pblk * L->block_size;
  struct fsev_segment seg = {
    .offset = s, .length = e - s, .role = r->role,
    .flags = seg_flags (r->flags) | (dup ? FSEV_SEG_DUP : 0),
  };

  if (is_fixed_metadata (r->role))
    seg.group = r->owner;
  else
    seg.ino = r->owner;

  switch (r->role) {
  case FSEV_ROLE_INODE_TABLE:
    /* Tables of several groups in a row (flex_bg) are one run: report
     * one segment per group.
     */
    while (s < e) {
      seg.offset = s;
      seg.first_ino = r->aux + (uint32_t) ((s - rs) / L->inode_size);
      seg.group = (seg.first_ino - 1) / L->inodes_per_group;
      uint64_t group_end = rs + ((uint64_t) (seg.group + 1) * L->inodes_per_group
                                 + 1 - r->aux) * L->inode_size;
      uint64_t piece_end = group_end < e && group_end > s ? group_end : e;
      seg.length = piece_end - s;
      seg.last_ino = r->aux + (uint32_t) ((piece_end - 1 - rs) / L->inode_size);
      int ret = fn (&seg, opaque);
      if (ret)
        return ret;
      s = piece_end;
    }
    return 0;
  case FSEV_ROLE_DATA: {
    seg.position = (uint64_t) r->aux * L->block_size + (s - rs);
    if (r->flags & RUN_BEYOND_EOF)
      seg.flags |= FSEV_SEG_BEYOND_EOF;
    else if (r->flags & RUN_EOF_PARTIAL) {
      /* The file ends inside the run's last block. */
      uint64_t eof = (r->pblk + r->len - 1) * L->block_size + r->eof_bytes;
      if (s >= eof)
        seg.flags |= FSEV_SEG_BEYOND_EOF;
      else if (e > eof) {
        /* Split: the part inside the file, then the part past its end. */
        struct fsev_segment tail = seg;
        seg.length = eof - s;
        int ret = fn (&seg, opaque);
        if (ret)
          return ret;
        tail.offset = eof;
        tail.length = e - eof;
        tail.position = seg.position + seg.length;
        tail.flags |= FSEV_SEG_BEYOND_EOF;
        return fn (&tail, opaque);
      }
    }
    break;
  }
  case FSEV_ROLE_DIRECTORY:
  case FSEV_ROLE_JOURNAL:
    seg.position = (uint64_t) r->aux * L->block_size + (s - rs);
    break;
  default:
    break;
  }
  return fn (&seg, opaque);
}

static int
emit_plain (enum fsev_role role, uint64_t s, uint64_t e,
            fsev_segment_fn fn, void *opaque)
{
  struct fsev_segment seg = { .offset = s, .length = e - s, .role = role };
  return fn (&seg, opaque);
}

static int
lookup (const struct fsev_layout *L, uint64_t offset, uint64_t length,
        fsev_segment_fn fn, void *opaque)
{
  const uint64_t bs = L->block_size;
  uint64_t end = length > UINT64_MAX - offset ? UINT64_MAX : offset + length;
  uint64_t lim = end < L->fs_bytes ? end : L->fs_bytes;
  int ret;

  if (offset < lim) {
    const uint64_t blk = offset / bs;
    uint64_t covered = offset;
    /* The first run that could reach OFFSET: maxend is non-decreasing. */
    size_t lo = 0, hi = L->nruns;
    while (lo < hi) {
      size_t mid = lo + (hi - lo) / 2;
      if (L->maxend[mid] <= blk)
        lo = mid + 1;
      else
        hi = mid;
    }
    for (size_t i = lo; i < L->nruns; i++) {
      const struct run *r = &L->runs[i];
      uint64_t rs = r->pblk * bs, re = (r->pblk + r->len) * bs;
      if (rs >= lim)
        break;
      if (re <= offset)
        continue;
      uint64_t s = rs > offset ? rs : offset;
      uint64_t e = re < lim ? re : lim;
      if (s > covered) {
        if ((ret = emit_plain (FSEV_ROLE_FREE, covered, s, fn, opaque)))
          return ret;
        covered = s;
      }
      bool dup = (i > 0 && L->maxend[i - 1] > r->pblk) ||
        (i + 1 < L->nruns && L->runs[i + 1].pblk < r->pblk + r->len);
      if ((ret = emit_run (L, r, dup, s, e, fn, opaque)))
        return ret;
      if (e > covered)
        covered = e;
    }
    if (covered < lim &&
        (ret = emit_plain (FSEV_ROLE_FREE, covered, lim, fn, opaque)))
      return ret;
  }
  if (end > L->fs_bytes) {
    uint64_t s = offset > L->fs_bytes ? offset : L->fs_bytes;
    if ((ret = emit_plain (FSEV_ROLE_OUTSIDE, s, end, fn, opaque)))
      return ret;
  }
  return 0;
}

int
fsev_layout_path (const struct fsev_layout *L, uint32_t ino, unsigned n,
                  char *buf, size_t buflen)
{
  unsigned count;

  if (buflen == 0)
    return -1;
  buf[0] = '\0';
  if (ino == L->root_ino) {
    if (n == 0) {
      if (buflen < 2)
        return -1;
      strcpy (buf, "/");
    }
    return 1;
  }
  count = names_count (&L->names, ino);
  if (count > 0) {
    if (n < count &&
        names_path (&L->names, ino, n, L->root_ino, buf, buflen) == -1)
      return -1;
    return (int) count;
  }
  for (unsigned i = 0; i < L->nspecial; i++)
    if (L->special[i].ino == ino) {
      if (n == 0 && snprintf (buf, buflen, "%s", L->special[i].name) >=
          (int) buflen)
        return -1;
      return 1;
    }
  return 0;
}

unsigned
fsev_layout_xattr_owners (const struct fsev_layout *L, uint64_t offset,
                          uint32_t *inos, unsigned max)
{
  uint64_t blk = offset / L->block_size;
  size_t lo = 0, hi = L->nxattrs;
  unsigned count = 0;

  while (lo < hi) {
    size_t mid = lo + (hi - lo) / 2;
    if (L->xattrs[mid].pblk < blk)
      lo = mid + 1;
    else
      hi = mid;
  }
  for (size_t i = lo; i < L->nxattrs && L->xattrs[i].pblk == blk; i++) {
    if (count < max)
      inos[count] = L->xattrs[i].ino;
    count++;
  }
  return count;
}

void
fsev_layout_get_stats (const struct fsev_layout *L,
                       struct fsev_layout_stats *stats)
{
  *stats = L->stats;
}

uint64_t
fsev_layout_fs_bytes (const struct fsev_layout *L)
{
  return L->fs_bytes;
}

unsigned
fsev_layout_block_size (const struct fsev_layout *L)
{
  return L->block_size;
}

const char *
fsev_layout_fs_type (const struct fsev_layout *L)
{
  return L->fs_type;
}

bool
fsev_layout_external_journal (const struct fsev_layout *L)
{
  return L->external_journal;
}

int
fsev_layout_lookup (const struct fsev_layout *L, uint64_t offset,
                    uint64_t length, fsev_segment_fn fn, void *opaque)
{
  struct emitter em = { .fn = fn, .opaque = opaque };
  int ret = lookup (L, offset, length, emit, &em);
  if (ret)
    return ret;
  return flush (&em);
}

const struct fsev_inode *
fsev_layout_inode (const struct fsev_layout *L, uint32_t ino)
{
  size_t lo = 0, hi = L->ninodes;
  while (lo < hi) {
    size_t mid = lo + (hi - lo) / 2;
    if (L->inodes[mid].ino < ino)
      lo = mid + 1;
    else
      hi = mid;
  }
  return lo < L->ninodes && L->inodes[lo].ino == ino ? &L->inodes[lo] : NULL;
}

const struct fsev_inode *
fsev_layout_inodes (const struct fsev_layout *L, size_t *n)
{
  *n = L->ninodes;
  return L->inodes;
}

size_t
fsev_layout_unread_dirs (const struct fsev_layout *L, const uint32_t **dirs)
{
  *dirs = L->unread_dirs;
  return L->nunread_dirs;
}

unsigned
fsev_layout_names (const struct fsev_layout *L, uint32_t ino,
                   struct fsev_name *out, unsigned max)
{
  unsigned count = names_count (&L->names, ino);
  for (unsigned i = 0; i < count && i < max; i++) {
    const struct fsev_link *l = names_link (&L->names, ino, i);
    out[i] = (struct fsev_name) {
      .parent = l->parent,
      /* An empty name (a hostile directory) may have no pool at all. */
      .name = L->names.pool ? L->names.pool + l->name_off : "",
      .len = l->name_len,
    };
  }
  return count;
}

struct fsev_journal_place {
  uint32_t ino;
  size_t n;
  struct journal_extent x[];
};

struct fsev_journal_place *
fsev_layout_journal_place (const struct fsev_layout *L)
{
  struct fsev_journal_place *p =
    malloc (sizeof *p + L->njextents * sizeof p->x[0]);
  if (p == NULL)
    return NULL;
  p->ino = L->journal_ino;
  p->n = L->njextents;
  if (p->n)
    memcpy (p->x, L->jextents, p->n * sizeof p->x[0]);
  return p;
}

bool
fsev_journal_place_same (const struct fsev_journal_place *p,
                         const struct fsev_layout *L)
{
  return p->ino == L->journal_ino && p->n == L->njextents &&
    (p->n == 0 || memcmp (p->x, L->jextents, p->n * sizeof p->x[0]) == 0);
}

void
fsev_journal_place_free (struct fsev_journal_place *p)
{
  free (p);
}

uint32_t
fsev_layout_journal_ino (const struct fsev_layout *L)
{
  return L->journal_ino;
}

uint64_t
fsev_layout_journal_pblk (const struct fsev_layout *L, uint32_t jblk)
{
  size_t lo = 0, hi = L->njextents;
  while (lo < hi) {
    size_t mid = lo + (hi - lo) / 2;
    if (L->jextents[mid].lblk <= jblk)
      lo = mid + 1;
    else
      hi = mid;
  }
  if (lo == 0)
    return 0;
  const struct journal_extent *x = &L->jextents[lo - 1];
  if (jblk - x->lblk >= x->len)
    return 0;
  return x->pblk + (jblk - x->lblk);
}

uint32_t
fsev_layout_lookup_path (const struct fsev_layout *L, const char *path)
{
  const struct fsev_names *nm = &L->names;
  uint32_t cur = L->root_ino;

  if (path == NULL || path[0] != '/')
    return 0;
  for (const char *p = path; *p; ) {
    while (*p == '/')
      p++;
    if (*p == '\0')
      break;
    size_t len = strcspn (p, "/");
    uint32_t next = 0;
    /* Links are sorted by child: a name is found by a scan (this is for
     * host tools, not for the write path).
     */
    for (size_t i = 0; i < nm->nlinks && next == 0; i++) {
      const struct fsev_link *l = &nm->links[i];
      if (l->parent == cur && l->name_len == len &&
          memcmp (nm->pool + l->name_off, p, len) == 0)
        next = l->child;
    }
    if (next == 0)
      return 0;
    cur = next;
    p += len;
  }
  return cur;
}

int
fsev_layout_file_blocks (const struct fsev_layout *L, uint32_t ino,
                         int (*fn) (uint64_t lblk, uint64_t pblk,
                                    uint64_t len, bool unwritten, void *),
                         void *opaque)
{
  for (size_t i = 0; i < L->nruns; i++) {
    const struct run *r = &L->runs[i];
    if (r->owner != ino || r->role != FSEV_ROLE_DATA)
      continue;
    int e = fn (r->aux, r->pblk, r->len, (r->flags & RUN_UNWRITTEN) != 0,
                opaque);
    if (e)
      return e;
  }
  return 0;
}
