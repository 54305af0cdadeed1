/* fs/layout-extra.c: after a commit decided by a full scan, what the
 * two whole models do not say by their records: a file whose data map
 * changed under the same size and block count (fsev_extra_from_models),
 * and inline data, in-inode and block xattr content read from the
 * blocks the commit changed (fsev_extra_from_content).  The in-place
 * update (layout-update.c) finds the same for the inodes it re-maps.
 */
#include <config.h>

#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <ext2fs/ext2fs.h>

#include "diff.h"
#include "layout-extra-internal.h"
#include "layout-internal.h"
#include "layout-subset.h"
#include "layout-update.h"
#include "source.h"
#include "util.h"

/* --- The same, between two whole models (after a full scan). --- */

struct omap { uint32_t ino; struct lmap m; };

static int
cmp_omap (const void *a, const void *b)
{
  const struct omap *x = a, *y = b;
  if (x->ino != y->ino)
    return x->ino < y->ino ? -1 : 1;
  return x->m.lblk < y->m.lblk ? -1 : x->m.lblk > y->m.lblk;
}

static int
cmp_owner_ino (const void *a, const void *b)
{
  const struct xattr_owner *x = a, *y = b;
  return x->ino < y->ino ? -1 : x->ino > y->ino;
}

/* Every data run of L by inode and logical block. */
static struct omap *
all_data (const struct fsev_layout *L, size_t *n)
{
  struct omap *v = malloc ((L->nruns ? L->nruns : 1) * sizeof *v);
  *n = 0;
  if (v == NULL)
    return NULL;
  for (size_t i = 0; i < L->nruns; i++)
    if (L->runs[i].role == FSEV_ROLE_DATA)
      v[(*n)++] = (struct omap) { L->runs[i].owner,
        { L->runs[i].aux, L->runs[i].pblk, L->runs[i].len,
          L->runs[i].flags & RUN_UNWRITTEN } };
  qsort (v, *n, sizeof *v, cmp_omap);
  return v;
}

/* The next piece of INO's map inside NBLK blocks from *I, joined with
 * what continues it.  False at the end.
 */
static bool
next_piece (const struct omap *v, size_t n, size_t *i, uint32_t ino,
            uint64_t nblk, struct lmap *out)
{
  while (*i < n && v[*i].ino == ino && v[*i].m.lblk >= nblk)
    (*i)++;
  if (*i >= n || v[*i].ino != ino)
    return false;
  *out = v[(*i)++].m;
  if (out->lblk + out->len > nblk)
    out->len = nblk - out->lblk;
  while (*i < n && v[*i].ino == ino && v[*i].m.lblk < nblk &&
         out->lblk + out->len == v[*i].m.lblk &&
         out->pblk + out->len == v[*i].m.pblk && out->flags == v[*i].m.flags) {
    uint64_t len = v[*i].m.len;
    if (v[*i].m.lblk + len > nblk)
      len = nblk - v[*i].m.lblk;
    out->len += len;
    (*i)++;
  }
  return true;
}

int
fsev_extra_from_models (const struct fsev_layout *A, const struct fsev_layout *B,
                        struct fsev_update *up)
{
  size_t na, nb;
  struct omap *va = all_data (A, &na), *vb = all_data (B, &nb);
  if (va == NULL || vb == NULL) {
    free (va);
    free (vb);
    return -1;
  }
  /* Xattr owners by inode. */
  struct xattr_owner *xa = malloc ((A->nxattrs + 1) * sizeof *xa);
  struct xattr_owner *xb = malloc ((B->nxattrs + 1) * sizeof *xb);
  if (xa == NULL || xb == NULL) {
    free (va); free (vb); free (xa); free (xb);
    return -1;
  }
  if (A->nxattrs)
    memcpy (xa, A->xattrs, A->nxattrs * sizeof *xa);
  if (B->nxattrs)
    memcpy (xb, B->xattrs, B->nxattrs * sizeof *xb);
  qsort (xa, A->nxattrs, sizeof *xa, cmp_owner_ino);
  qsort (xb, B->nxattrs, sizeof *xb, cmp_owner_ino);
  size_t ixa = 0, ixb = 0;
  size_t ia = 0, ib = 0;
  size_t nia, nib;
  const struct fsev_inode *ra = fsev_layout_inodes (A, &nia);
  const struct fsev_inode *rb = fsev_layout_inodes (B, &nib);
  int ret = 0;
  for (size_t i = 0, j = 0; i < nia && j < nib && ret == 0; ) {
    if (ra[i].ino < rb[j].ino) { i++; continue; }
    if (rb[j].ino < ra[i].ino) { j++; continue; }
    const struct fsev_inode *a = &ra[i++], *b = &rb[j++];
    unsigned x = 0;
    if (a->generation == b->generation && !((a->mode ^ b->mode) & 0170000)) {
      uint64_t size = a->size < b->size ? a->size : b->size;
      uint64_t nblk = (size + A->block_size - 1) / A->block_size;
      while (ia < na && va[ia].ino < a->ino) ia++;
      while (ib < nb && vb[ib].ino < a->ino) ib++;
      for (;;) {
        struct lmap pa, pb;
        bool ha = next_piece (va, na, &ia, a->ino, nblk, &pa);
        bool hb = next_piece (vb, nb, &ib, a->ino, nblk, &pb);
        if (ha != hb || (ha && !same_lmaps (&pa, &pb, 1))) {
          x |= FSEV_ATTR_BLOCKS;
          break;
        }
        if (!ha)
          break;
      }
      /* xattr block numbers (the content is not compared here). */
      while (ixa < A->nxattrs && xa[ixa].ino < a->ino) ixa++;
      while (ixb < B->nxattrs && xb[ixb].ino < a->ino) ixb++;
      uint64_t pa = ixa < A->nxattrs && xa[ixa].ino == a->ino ? xa[ixa].pblk : 0;
      uint64_t pb = ixb < B->nxattrs && xb[ixb].ino == a->ino ? xb[ixb].pblk : 0;
      if (pa != pb)
        x |= FSEV_ATTR_XATTR;
    }
    if (x) {
      if (fsev_grow ((void **) &up->extra, &up->extra_cap, up->nextra + 1,
                     sizeof *up->extra) == -1)
        ret = -1;
      else
        up->extra[up->nextra++] = (struct fsev_extra) { a->ino, x };
    }
  }
  free (va);
  free (vb);
  free (xa);
  free (xb);
  return ret;
}

/* --- After a full scan: what the models do not hold. --- */

struct content_scan {
  const struct fsev_layout *A, *B;
  const unsigned char *a, *b;   /* the block in the two views */
  uint64_t blk;
  struct fsev_extra *v;
  size_t n, cap;
  bool oom;
};

static void
content_add (struct content_scan *c, uint32_t ino, unsigned bits)
{
  /* Only an inode that is the same file on both sides: a created,
   * deleted or reused one has events of its own.
   */
  const struct fsev_inode *ra = fsev_layout_inode (c->A, ino);
  const struct fsev_inode *rb = fsev_layout_inode (c->B, ino);
  if (bits == 0 || ra == NULL || rb == NULL || ra->generation != rb->generation ||
      ((ra->mode ^ rb->mode) & 0170000))
    return;
  if (fsev_grow ((void **) &c->v, &c->cap, c->n + 1, sizeof *c->v) == -1) {
    c->oom = true;
    return;
  }
  c->v[c->n++] = (struct fsev_extra) { ino, bits };
}

static bool
inline_content (const struct ext2_inode *in)
{
  struct ext2_inode copy = *in;     /* libext2fs takes no const */
  return (in->i_flags & INLINE_DATA_FL) || ext2fs_is_fast_symlink (&copy);
}

static int
content_segment (const struct fsev_segment *seg, void *opaque)
{
  struct content_scan *c = opaque;
  const struct fsev_layout *L = c->A;
  if (seg->role == FSEV_ROLE_INODE_TABLE) {
    uint64_t base = seg->offset - c->blk * L->block_size;
    for (uint32_t ino = seg->first_ino; ino && ino <= seg->last_ino; ino++) {
      uint64_t off = base + (uint64_t) (ino - seg->first_ino) * L->inode_size;
      if (off + L->inode_size > L->block_size)
        break;
      const unsigned char *x = c->a + off, *y = c->b + off;
      if (memcmp (x, y, L->inode_size) == 0)
        continue;
      const struct ext2_inode *ix = (const void *) x, *iy = (const void *) y;
      unsigned bits = 0;
      const size_t iblock = offsetof (struct ext2_inode, i_block);
      if ((inline_content (ix) || inline_content (iy)) &&
          memcmp (x + iblock, y + iblock, sizeof ix->i_block) != 0)
        bits |= FSEV_ATTR_BLOCKS;
      if (L->inode_size > EXT2_GOOD_OLD_INODE_SIZE + 2) {
        const struct ext2_inode_large *lx = (const void *) x, *ly = (const void *) y;
        size_t ea = EXT2_GOOD_OLD_INODE_SIZE + lx->i_extra_isize;
        size_t eb = EXT2_GOOD_OLD_INODE_SIZE + ly->i_extra_isize;
        if (ea != eb ||
            (ea < L->inode_size && memcmp (x + ea, y + ea, L->inode_size - ea) != 0))
          bits |= FSEV_ATTR_XATTR;
      }
      content_add (c, ino, bits);
    }
  }
  else if (seg->role == FSEV_ROLE_XATTR) {
    /* Every inode sharing the block on either side. */
    uint32_t inos[256];
    for (int side = 0; side < 2 && !c->oom; side++) {
      const struct fsev_layout *M = side ? c->B : c->A;
      unsigned n = fsev_layout_xattr_owners (M, seg->offset, inos, 256);
      if (n > 256)
        n = 256;                /* a shared block's owners past 256: a
                                   number change or record shows them */
      for (unsigned i = 0; i < n; i++)
        content_add (c, inos[i], FSEV_ATTR_XATTR);
    }
  }
  return 0;
}

static int
cmp_extra (const void *x, const void *y)
{
  const struct fsev_extra *a = x, *b = y;
  return a->ino < b->ino ? -1 : a->ino > b->ino;
}

int
fsev_extra_from_content (const struct fsev_layout *A, const struct fsev_layout *B,
                         const struct fsev_source *old_view,
                         const struct fsev_source *new_view,
                         const uint64_t *blocks, size_t nblocks,
                         struct fsev_update *up)
{
  unsigned bs = A->block_size;
  unsigned char *a = malloc (bs), *b = malloc (bs);
  struct content_scan c = { .A = A, .B = B, .a = a, .b = b };
  if (a == NULL || b == NULL) {
    free (a);
    free (b);
    return -1;
  }
  for (size_t i = 0; i < nblocks && !c.oom; i++) {
    uint64_t blk = blocks[i];
    if (blk >= A->fs_blocks)
      continue;
    if (vread (old_view, a, bs, blk * bs) == -1 ||
        vread (new_view, b, bs, blk * bs) == -1) {
      /* Unreadable: the scan that preceded read it; say it changed. */
      memset (a, 0, bs);
      memset (b, 0xff, bs);
    }
    if (memcmp (a, b, bs) == 0)
      continue;
    c.blk = blk;
    fsev_layout_lookup (A, blk * bs, bs, content_segment, &c);
  }
  free (a);
  free (b);
  /* Into UP's list: sorted by inode, one entry each. */
  if (!c.oom && c.n &&
      fsev_grow ((void **) &up->extra, &up->extra_cap, up->nextra + c.n,
                 sizeof *up->extra) == -1)
    c.oom = true;
  if (c.oom) {
    free (c.v);
    return -1;
  }
  if (c.n == 0)
    return 0;
  memcpy (up->extra + up->nextra, c.v, c.n * sizeof *c.v);
  free (c.v);
  size_t n = up->nextra + c.n;
  qsort (up->extra, n, sizeof *up->extra, cmp_extra);
  size_t m = 0;
  for (size_t i = 0; i < n; i++) {
    if (m && up->extra[m - 1].ino == up->extra[i].ino)
      up->extra[m - 1].changed |= up->extra[i].changed;
    else
      up->extra[m++] = up->extra[i];
  }
  up->nextra = m;
  return 0;
}
