/* fs/layout-update.c: the commit-time update of the layout model (see
 * layout-update.h).
 *
 * Work is proportional to the blocks a commit changed:
 *
 *   inode-table block   the inodes in it whose bytes changed
 *   inode bitmap        the inodes whose bit flipped
 *   group descriptors   geometry must not change; a changed INODE_UNINIT
 *                       flag or itable_unused count shows or hides inodes
 *   superblock          geometry must not change
 *   extent/indirect     their owner is re-mapped
 *   directory block     its directory is re-read
 *   block bitmap, data, xattr content, backups: nothing in the model
 *
 * Each touched inode is mapped in both views with the scan's own code
 * (fsev_map_one_inode), so the edit is exactly the difference between
 * two fresh scans restricted to that inode.  The "before" mapping must
 * match the model: when it does not, the model and the view disagree
 * and the caller rescans rather than guess.
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

/* Measured on the test machine: re-mapping one inode in both views
 * (reads, libext2fs, the record), and moving array tails.
 */
#define INODE_COST 25e-6
#define MEMMOVE_BYTES_PER_SECOND 5e9

struct fsev_updater {
  ext2_filsys fs;
  struct fsev_source src;       /* reads whichever view is current */
  const struct fsev_source *cur;
  unsigned bs;
  bool csum;                    /* group descriptors carry checksums:
                                   the scan honours the lazy flags */
};

static int
switch_read (void *opaque, void *buf, size_t count, uint64_t offset)
{
  struct fsev_updater *u = opaque;
  return u->cur->read (u->cur->opaque, buf, count, offset);
}

struct fsev_updater *
fsev_updater_open (const struct fsev_layout *L, const struct fsev_source *view,
                   char *err, size_t errlen)
{
  struct fsev_updater *u = calloc (1, sizeof *u);
  if (u == NULL) {
    snprintf (err, errlen, "out of memory");
    return NULL;
  }
  u->src = (struct fsev_source) { .read = switch_read, .opaque = u,
                                  .size = view->size };
  u->cur = view;
  u->bs = L->block_size;
  errcode_t e = fsev_source_open_fs (&u->src, EXT2_FLAG_IGNORE_CSUM_ERRORS, &u->fs);
  if (e) {
    snprintf (err, errlen, "cannot open the filesystem (%s)", error_message (e));
    free (u);
    return NULL;
  }
  /* A scan whose bitmaps do not read takes every inode as in use; the
   * update reads bitmaps block by block and cannot do the same.
   */
  e = ext2fs_read_bitmaps (u->fs);
  if (e || u->fs->blocksize != L->block_size) {
    snprintf (err, errlen, "the bitmaps do not read (%s)",
              e ? error_message (e) : "block size");
    fsev_updater_close (u);
    return NULL;
  }
  /* The scan skips inodes in blocks the bad-blocks inode lists; the
   * update reads inode-table blocks directly and would not.  No current
   * filesystem has such a list (badblocks is for floppies): follow one
   * that does by scans.
   */
  struct ext2_inode bad;
  if (ext2fs_read_inode (u->fs, EXT2_BAD_INO, &bad) != 0 || bad.i_blocks ||
      memcmp (bad.i_block, (uint32_t[EXT2_N_BLOCKS]) { 0 }, sizeof bad.i_block) != 0) {
    snprintf (err, errlen, "the filesystem has a bad-blocks list");
    fsev_updater_close (u);
    return NULL;
  }
  ext2fs_free_inode_bitmap (u->fs->inode_map);
  ext2fs_free_block_bitmap (u->fs->block_map);
  u->fs->inode_map = NULL;
  u->fs->block_map = NULL;
  u->csum = ext2fs_has_group_desc_csum (u->fs);
  return u;
}

void
fsev_updater_close (struct fsev_updater *u)
{
  if (u == NULL)
    return;
  ext2fs_close_free (&u->fs);
  free (u);
}

/* --- Small sets. --- */

struct u32s {
  uint32_t *v;
  size_t n, cap;
};

static int
u32s_add (struct u32s *s, uint32_t x)
{
  if (fsev_grow ((void **) &s->v, &s->cap, s->n + 1, sizeof *s->v) == -1)
    return -1;
  s->v[s->n++] = x;
  return 0;
}

static int
cmp_u32 (const void *a, const void *b)
{
  uint32_t x = *(const uint32_t *) a, y = *(const uint32_t *) b;
  return x < y ? -1 : x > y;
}

static void
u32s_sort_unique (struct u32s *s)
{
  if (s->n < 2)
    return;
  qsort (s->v, s->n, sizeof *s->v, cmp_u32);
  size_t out = 1;
  for (size_t i = 1; i < s->n; i++)
    if (s->v[i] != s->v[out - 1])
      s->v[out++] = s->v[i];
  s->n = out;
}

/* --- One update. --- */

struct inode_change {
  uint32_t ino;
  struct fsev_one_inode old, neu;
  unsigned char *raw_old, *raw_new;   /* the inode's bytes, or NULL */
  bool runs_done;               /* replaced in place */
};

struct link_change {
  bool add;
  uint32_t parent, child;
  const char *name;             /* into a names pool of the update */
  uint32_t len;
};

/* A group descriptor's fields the model depends on. */
struct gdesc {
  uint64_t block_bitmap, inode_bitmap, inode_table;
  uint32_t itable_unused;
  uint16_t flags;
};

struct upd {
  struct fsev_layout *L;
  struct fsev_updater *u;
  const struct fsev_source *oldv, *newv;
  unsigned char *a, *b;         /* two blocks */
  struct u32s cand;             /* inodes to re-map */
  struct u32s groups;           /* groups whose inode visibility to check */
  struct u32s dirs;             /* directories to re-read */
  struct inode_change *ic;
  size_t nic, ic_cap;
  struct fsev_names dold, dnew; /* entries read, old and new */
  struct link_change *lc;
  size_t nlc, lc_cap;
  char *why;
  size_t whylen;
  bool rescan, oom;
  /* The last descriptor read in each view (inodes of one group come
   * together): read_desc's cache.
   */
  struct {
    const struct fsev_source *v;
    dgrp_t g;
    struct gdesc gd;
  } dcache[2];
};

static void __attribute__ ((format (printf, 2, 3)))
rescan (struct upd *d, const char *fmt, ...)
{
  if (d->rescan)
    return;
  d->rescan = true;
  va_list ap;
  va_start (ap, fmt);
  vsnprintf (d->why, d->whylen, fmt, ap);
  va_end (ap);
}



/* Descriptor number I of the table block in BUF. */
static void
parse_desc (struct upd *d, const unsigned char *buf, unsigned i,
            struct gdesc *out)
{
  ext2_filsys fs = d->u->fs;
  unsigned dsz = EXT2_DESC_SIZE (fs->super);
  const struct ext4_group_desc *gd = (const void *) (buf + (size_t) i * dsz);
  bool wide = ext2fs_has_feature_64bit (fs->super) &&
    dsz >= EXT2_MIN_DESC_SIZE_64BIT;
  *out = (struct gdesc) {
    .block_bitmap = ext2fs_le32_to_cpu (gd->bg_block_bitmap),
    .inode_bitmap = ext2fs_le32_to_cpu (gd->bg_inode_bitmap),
    .inode_table = ext2fs_le32_to_cpu (gd->bg_inode_table),
    .itable_unused = ext2fs_le16_to_cpu (gd->bg_itable_unused),
    .flags = ext2fs_le16_to_cpu (gd->bg_flags),
  };
  if (wide) {
    out->block_bitmap |= (uint64_t) ext2fs_le32_to_cpu (gd->bg_block_bitmap_hi) << 32;
    out->inode_bitmap |= (uint64_t) ext2fs_le32_to_cpu (gd->bg_inode_bitmap_hi) << 32;
    out->inode_table |= (uint64_t) ext2fs_le32_to_cpu (gd->bg_inode_table_hi) << 32;
    out->itable_unused |= (uint32_t) ext2fs_le16_to_cpu (gd->bg_itable_unused_hi) << 16;
  }
}

/* Descriptor of group G in view V (read through the primary table). */
static int
read_desc (struct upd *d, const struct fsev_source *v, dgrp_t g,
           struct gdesc *out)
{
  ext2_filsys fs = d->u->fs;
  unsigned per = EXT2_DESC_PER_BLOCK (fs->super);
  unsigned dsz = EXT2_DESC_SIZE (fs->super);
  unsigned char raw[EXT2_MAX_DESC_SIZE];
  int slot = v == d->newv;
  if (d->dcache[slot].v == v && d->dcache[slot].g == g) {
    *out = d->dcache[slot].gd;
    return 0;
  }
  blk64_t blk = ext2fs_descriptor_block_loc2 (fs, fs->super->s_first_data_block,
                                              g / per);
  if (blk == 0 || blk >= d->L->fs_blocks || dsz > sizeof raw)
    return -1;
  if (vread (v, raw, dsz, blk * d->u->bs + (uint64_t) (g % per) * dsz) == -1)
    return -1;
  parse_desc (d, raw, 0, out);
  d->dcache[slot].v = v;
  d->dcache[slot].g = g;
  d->dcache[slot].gd = *out;
  return 0;
}

/* Which inodes of group G the scan sees in view V (the inode scan's
 * lazy rules, then the inode bitmap) into VIS (ipg bits).
 */
static int
visible_inodes (struct upd *d, const struct fsev_source *v, dgrp_t g,
                unsigned char *vis)
{
  const struct fsev_layout *L = d->L;
  uint32_t ipg = L->inodes_per_group;
  struct gdesc gd;
  memset (vis, 0, (ipg + 7) / 8);
  if (read_desc (d, v, g, &gd) == -1) {
    rescan (d, "group %u: its descriptor does not read", g);
    return -1;
  }
  if (gd.inode_table == 0)
    return 0;                   /* no table: the scan skips the group */
  if (d->u->csum && (gd.flags & EXT2_BG_INODE_UNINIT))
    return 0;
  if (gd.inode_bitmap == 0 || gd.inode_bitmap >= L->fs_blocks) {
    rescan (d, "group %u: inode bitmap at block %llu", g,
            (unsigned long long) gd.inode_bitmap);
    return -1;
  }
  if (vread (v, d->b, d->u->bs, gd.inode_bitmap * d->u->bs) == -1)
    return -1;
  uint32_t shown = ipg;
  if (d->u->csum)
    shown = gd.itable_unused >= ipg ? 0 : ipg - gd.itable_unused;
  size_t bytes = (ipg + 7) / 8;
  if (bytes > d->u->bs)
    bytes = d->u->bs;
  memcpy (vis, d->b, bytes);
  for (uint32_t i = shown; i < ipg; i++)
    vis[i / 8] &= ~(1u << (i % 8));
  if (ipg % 8)
    vis[ipg / 8] &= (1u << (ipg % 8)) - 1;
  return 0;
}

/* The raw bytes of INO in view V into BUF (inode_size bytes). */
static int
read_inode_raw (struct upd *d, const struct fsev_source *v, uint32_t ino,
                void *buf)
{
  const struct fsev_layout *L = d->L;
  struct gdesc gd;
  dgrp_t g = (ino - 1) / L->inodes_per_group;
  uint32_t idx = (ino - 1) % L->inodes_per_group;
  if (read_desc (d, v, g, &gd) == -1)
    return -1;
  uint64_t blk = gd.inode_table + idx / L->inodes_per_block;
  if (gd.inode_table == 0 || blk >= L->fs_blocks)
    return -1;
  return vread (v, buf, L->inode_size,
                blk * d->u->bs + (uint64_t) (idx % L->inodes_per_block) * L->inode_size);
}

/* Is INO seen by the scan in view V?  (The same rules as
 * visible_inodes, for one inode: no pass over the group.)
 */
static int
inode_visible (struct upd *d, const struct fsev_source *v, uint32_t ino,
               bool *yes)
{
  const struct fsev_layout *L = d->L;
  uint32_t ipg = L->inodes_per_group;
  dgrp_t g = (ino - 1) / ipg;
  uint32_t idx = (ino - 1) % ipg;
  struct gdesc gd;
  *yes = false;
  if (ino == L->journal_ino) {
    *yes = true;                /* as the scan: whatever the bitmap says */
    return 0;
  }
  if (read_desc (d, v, g, &gd) == -1) {
    rescan (d, "group %u: its descriptor does not read", g);
    return -1;
  }
  if (gd.inode_table == 0 || (d->u->csum && (gd.flags & EXT2_BG_INODE_UNINIT)))
    return 0;
  if (d->u->csum && idx >= (gd.itable_unused >= ipg ? 0 : ipg - gd.itable_unused))
    return 0;
  if (gd.inode_bitmap == 0 || gd.inode_bitmap >= L->fs_blocks) {
    rescan (d, "group %u: inode bitmap at block %llu", g,
            (unsigned long long) gd.inode_bitmap);
    return -1;
  }
  unsigned char byte;
  if (idx / 8 >= d->u->bs ||
      vread (v, &byte, 1, gd.inode_bitmap * d->u->bs + idx / 8) == -1)
    return -1;
  *yes = byte & (1u << (idx % 8));
  return 0;
}

/* --- Classifying the changed blocks. --- */

/* Superblock fields whose change means a new geometry. */
static bool
geometry_differs (const struct ext2_super_block *a,
                  const struct ext2_super_block *b)
{
#define F(f) (a->f != b->f)
  /* The kernel flips these at mount, umount and orphan handling. */
  uint32_t incompat_mask = ~(uint32_t) EXT3_FEATURE_INCOMPAT_RECOVER;
  uint32_t ro_mask = ~(uint32_t) EXT4_FEATURE_RO_COMPAT_ORPHAN_PRESENT;
  return F (s_inodes_count) || F (s_blocks_count) || F (s_blocks_count_hi) ||
    F (s_first_data_block) || F (s_log_block_size) || F (s_log_cluster_size) ||
    F (s_blocks_per_group) || F (s_clusters_per_group) ||
    F (s_inodes_per_group) || F (s_magic) || F (s_rev_level) ||
    F (s_first_ino) || F (s_inode_size) || F (s_feature_compat) ||
    ((a->s_feature_incompat ^ b->s_feature_incompat) & incompat_mask) ||
    ((a->s_feature_ro_compat ^ b->s_feature_ro_compat) & ro_mask) ||
    F (s_reserved_gdt_blocks) || F (s_journal_inum) || F (s_journal_dev) ||
    F (s_desc_size) || F (s_first_meta_bg) || F (s_mmp_block) ||
    F (s_log_groups_per_flex) || F (s_usr_quota_inum) ||
    F (s_grp_quota_inum) || F (s_prj_quota_inum) ||
    F (s_orphan_file_inum);
#undef F
}

static void
check_superblock (struct upd *d)
{
  struct ext2_super_block sa, sb;
  if (vread (d->oldv, &sa, sizeof sa, SUPERBLOCK_OFFSET) == -1 ||
      vread (d->newv, &sb, sizeof sb, SUPERBLOCK_OFFSET) == -1) {
    rescan (d, "the superblock does not read");
    return;
  }
  if (geometry_differs (&sa, &sb))
    rescan (d, "the superblock's geometry or features changed");
}

/* A changed block of the primary descriptor table: locations must stay;
 * lazy-init changes make the group's inodes worth a look.
 */
static void
check_descriptors (struct upd *d, uint64_t blk)
{
  ext2_filsys fs = d->u->fs;
  unsigned per = EXT2_DESC_PER_BLOCK (fs->super);
  for (dgrp_t i = 0; i < fs->desc_blocks; i++) {
    if (ext2fs_descriptor_block_loc2 (fs, fs->super->s_first_data_block, i) != blk)
      continue;
    /* The block's old and new contents are in d->a and d->b. */
    for (dgrp_t g = i * per; g < (i + 1) * per && g < fs->group_desc_count; g++) {
      struct gdesc x, y;
      parse_desc (d, d->a, g % per, &x);
      parse_desc (d, d->b, g % per, &y);
      if (x.block_bitmap != y.block_bitmap || x.inode_bitmap != y.inode_bitmap ||
          x.inode_table != y.inode_table) {
        rescan (d, "group %u: bitmaps or inode table moved", g);
        return;
      }
      if ((x.flags ^ y.flags) & EXT2_BG_INODE_UNINIT ||
          x.itable_unused != y.itable_unused)
        if (u32s_add (&d->groups, g) == -1)
          d->oom = true;
    }
    return;
  }
  /* Not where libext2fs reads descriptors from: a backup. */
}

struct classify {
  struct upd *d;
  uint64_t blk;
  unsigned nseg;
  enum fsev_role role;          /* the first segment's owner */
  uint32_t ino;
};

static int
classify_segment (const struct fsev_segment *seg, void *opaque)
{
  struct classify *c = opaque;
  struct upd *d = c->d;
  const struct fsev_layout *L = d->L;
  /* A block may come in pieces of one owner (a file's last block is
   * split at its end of file): classified once.  Pieces of different
   * owners, or a claim the model knows is shared, are a corrupt state
   * the update does not follow.  (Counting pieces as owners made 30% of
   * data=journal commits, whose tags carry file data, fall back to a
   * scan in test-follow-random.)
   */
  if (++c->nseg > 1 && !(seg->flags & FSEV_SEG_DUP) &&
      seg->role == c->role && seg->ino == c->ino)
    return 0;
  if (c->nseg > 1 || (seg->flags & FSEV_SEG_DUP)) {
    rescan (d, "block %llu has several owners", (unsigned long long) c->blk);
    return 1;
  }
  c->role = seg->role;
  c->ino = seg->ino;
  switch (seg->role) {
  case FSEV_ROLE_SUPERBLOCK:
    if (!(seg->flags & FSEV_SEG_BACKUP))
      check_superblock (d);
    break;
  case FSEV_ROLE_GROUP_DESCRIPTORS:
    check_descriptors (d, c->blk);
    break;
  case FSEV_ROLE_INODE_BITMAP:
    if (u32s_add (&d->groups, seg->group) == -1)
      d->oom = true;
    break;
  case FSEV_ROLE_INODE_TABLE:
    for (uint32_t ino = seg->first_ino; ino && ino <= seg->last_ino; ino++) {
      size_t off = (size_t) (ino - seg->first_ino) * L->inode_size;
      if (off + L->inode_size > d->u->bs)
        break;
      if (memcmp (d->a + off, d->b + off, L->inode_size) != 0 &&
          u32s_add (&d->cand, ino) == -1)
        d->oom = true;
    }
    break;
  case FSEV_ROLE_EXTENT_TREE:
  case FSEV_ROLE_INDIRECT:
    if (u32s_add (&d->cand, seg->ino) == -1)
      d->oom = true;
    break;
  case FSEV_ROLE_DIRECTORY:
    if (u32s_add (&d->dirs, seg->ino) == -1)
      d->oom = true;
    break;
  case FSEV_ROLE_XATTR: {
    /* Every inode sharing the block has new attributes. */
    uint32_t inos[256];
    unsigned n = fsev_layout_xattr_owners (L, seg->offset, inos, 256);
    if (n > 256) {
      rescan (d, "xattr block %llu has %u owners", (unsigned long long) c->blk, n);
      break;
    }
    for (unsigned i = 0; i < n; i++)
      if (u32s_add (&d->cand, inos[i]) == -1)
        d->oom = true;
    break;
  }
  case FSEV_ROLE_JOURNAL:
    /* Where the journal's log and fast-commit area end is read from its
     * superblock: the model's journal runs are cut there.  (A guest
     * that rewrites it where the journal is not followed, or through a
     * transaction, changed the cut unseen: fuzz-follow.)
     */
    if (seg->flags & FSEV_SEG_JOURNAL_SB)
      rescan (d, "the journal superblock changed");
    break;
  default:
    /* Block bitmaps, reserved GDT, data, the journal's log, free
     * space: nothing the model holds.
     */
    break;
  }
  return d->rescan || d->oom;
}

/* Inodes of the groups in d->groups whose visibility differs. */
static void
check_groups (struct upd *d)
{
  uint32_t ipg = d->L->inodes_per_group;
  unsigned char *x = malloc ((ipg + 7) / 8), *y = malloc ((ipg + 7) / 8);
  if (x == NULL || y == NULL) {
    d->oom = true;
    goto out;
  }
  u32s_sort_unique (&d->groups);
  for (size_t k = 0; k < d->groups.n && !d->rescan && !d->oom; k++) {
    dgrp_t g = d->groups.v[k];
    if (visible_inodes (d, d->oldv, g, x) == -1 ||
        visible_inodes (d, d->newv, g, y) == -1) {
      rescan (d, "group %u: its inode bitmap does not read", g);
      break;
    }
    for (uint32_t i = 0; i < ipg; i++)
      if ((x[i / 8] ^ y[i / 8]) & (1u << (i % 8)))
        if (u32s_add (&d->cand, g * ipg + i + 1) == -1)
          d->oom = true;
  }
 out:
  free (x);
  free (y);
}

/* --- Re-mapping inodes. --- */

static int
map_side (struct upd *d, const struct fsev_source *v, uint32_t ino,
          struct fsev_one_inode *out, unsigned char **keep)
{
  memset (out, 0, sizeof *out);
  *keep = NULL;
  bool vis;
  if (inode_visible (d, v, ino, &vis) == -1)
    return -1;
  if (!vis)
    return 0;
  unsigned char *raw = malloc (d->L->inode_size);
  if (raw == NULL) {
    d->oom = true;
    return -1;
  }
  d->u->cur = v;
  if (read_inode_raw (d, v, ino, raw) == -1) {
    free (raw);
    rescan (d, "inode %u does not read", ino);
    return -1;
  }
  int r = fsev_map_one_inode (d->u->fs, d->L, ino, raw, out);
  if (r == -1) {
    free (raw);
    d->oom = true;
  }
  else
    *keep = raw;
  return r;
}

static bool
same_runs (const struct fsev_one_inode *a, const struct fsev_one_inode *b)
{
  return a->nruns == b->nruns &&
    (a->nruns == 0 || memcmp (a->runs, b->runs, a->nruns * sizeof *a->runs) == 0);
}

static void
remap_inode (struct upd *d, uint32_t ino)
{
  const struct fsev_layout *L = d->L;
  if (ino == 0 || ino > L->inodes_count)
    return;
  if (fsev_grow ((void **) &d->ic, &d->ic_cap, d->nic + 1, sizeof *d->ic) == -1) {
    d->oom = true;
    return;
  }
  struct inode_change *c = &d->ic[d->nic];
  memset (c, 0, sizeof *c);
  c->ino = ino;
  if (map_side (d, d->oldv, ino, &c->old, &c->raw_old) == -1 ||
      map_side (d, d->newv, ino, &c->neu, &c->raw_new) == -1) {
    free (c->old.runs);
    free (c->neu.runs);
    free (c->raw_old);
    free (c->raw_new);
    return;
  }
  d->nic++;
  if (c->old.truncated || c->neu.truncated) {
    rescan (d, "inode %u: its block map is larger than the filesystem", ino);
    return;
  }
  /* The model must hold what the old view maps to. */
  const struct fsev_inode *rec = fsev_layout_inode (L, ino);
  if ((rec != NULL) != c->old.in_use ||
      (rec && memcmp (rec, &c->old.rec, sizeof *rec) != 0)) {
    rescan (d, "inode %u: the model and the committed view disagree", ino);
    return;
  }
  bool same_rec = c->old.in_use == c->neu.in_use &&
    (!c->old.in_use || memcmp (&c->old.rec, &c->neu.rec, sizeof c->old.rec) == 0);
  bool same_map = same_runs (&c->old, &c->neu);
  if ((ino == L->journal_ino || ino == EXT2_RESIZE_INO || ino == EXT2_BAD_INO) &&
      (!same_rec || !same_map ||
       (ino == EXT2_BAD_INO && c->raw_old && c->raw_new &&
        memcmp (c->raw_old, c->raw_new, L->inode_size) != 0))) {
    rescan (d, "the %s inode changed", ino == EXT2_BAD_INO ? "bad-blocks"
            : ino == L->journal_ino ? "journal" : "resize");
    return;
  }
  bool dir_a = c->old.in_use && c->old.is_dir;
  bool dir_b = c->neu.in_use && c->neu.is_dir;
  /* What a directory lists depends on more of its inode than its runs:
   * the extent header's fields, inline data, the flags.  Any change of
   * its bytes means reading it again (a live directory whose inode
   * changes almost always has a block in the transaction anyway).
   */
  bool same_raw = c->raw_old && c->raw_new &&
    memcmp (c->raw_old, c->raw_new, L->inode_size) == 0;
  if ((dir_a || dir_b) &&
      (dir_a != dir_b || !same_map || !same_raw ||
       (c->old.rec.flags & INLINE_DATA_FL) || (c->neu.rec.flags & INLINE_DATA_FL)))
    if (u32s_add (&d->dirs, ino) == -1)
      d->oom = true;
}

/* --- What the records do not show. --- */

static int
cmp_lmap (const void *a, const void *b)
{
  const struct lmap *x = a, *y = b;
  return x->lblk < y->lblk ? -1 : x->lblk > y->lblk;
}

/* The data map of S inside its first NBLK logical blocks, by logical
 * block, contiguous pieces joined.  NULL (and *N 0) when it has none;
 * -1 when out of memory.
 */
static int
data_map (const struct fsev_one_inode *s, uint64_t nblk, struct lmap **out,
          size_t *n)
{
  *out = NULL;
  *n = 0;
  struct lmap *v = malloc ((s->nruns ? s->nruns : 1) * sizeof *v);
  if (v == NULL)
    return -1;
  size_t k = 0;
  for (size_t i = 0; i < s->nruns; i++) {
    const struct run *r = &s->runs[i];
    if (r->role != FSEV_ROLE_DATA || r->aux >= nblk)
      continue;
    uint64_t len = r->len;
    if (r->aux + len > nblk)
      len = nblk - r->aux;
    v[k++] = (struct lmap) { r->aux, r->pblk, len, r->flags & RUN_UNWRITTEN };
  }
  qsort (v, k, sizeof *v, cmp_lmap);
  size_t m = 0;
  for (size_t i = 0; i < k; i++) {
    if (m && v[m - 1].lblk + v[m - 1].len == v[i].lblk &&
        v[m - 1].pblk + v[m - 1].len == v[i].pblk && v[m - 1].flags == v[i].flags) {
      v[m - 1].len += v[i].len;
      continue;
    }
    v[m++] = v[i];
  }
  *out = v;
  *n = m;
  return 0;
}

/* FSEV_ATTR_BLOCKS and FSEV_ATTR_XATTR for an inode in use before and
 * after: what its bytes are (the block map inside both sizes, inline
 * content) and its extended attributes (the block, its content, the
 * in-inode area) -- changes the inode's record does not show, so that
 * a remap with size and times kept is an event too.
 */
static unsigned
extra_changes (struct upd *d, const struct inode_change *c)
{
  const struct fsev_one_inode *a = &c->old, *b = &c->neu;
  const struct fsev_layout *L = d->L;
  unsigned x = 0;
  if (!a->in_use || !b->in_use || a->rec.generation != b->rec.generation ||
      ((a->rec.mode ^ b->rec.mode) & 0170000) || !c->raw_old || !c->raw_new)
    return 0;                   /* created, deleted or reused: its own events */
  uint64_t size = a->rec.size < b->rec.size ? a->rec.size : b->rec.size;
  uint64_t nblk = (size + L->block_size - 1) / L->block_size;
  struct lmap *ma, *mb;
  size_t na, nb;
  if (data_map (a, nblk, &ma, &na) == -1 || data_map (b, nblk, &mb, &nb) == -1) {
    free (ma);
    d->oom = true;
    return 0;
  }
  if (na != nb || !same_lmaps (ma, mb, na))
    x |= FSEV_ATTR_BLOCKS;
  free (ma);
  free (mb);
  /* Content kept in i_block itself: a fast symlink's target, inline
   * data.  (For other inodes i_block is the block map, compared above.)
   */
  const size_t iblock = offsetof (struct ext2_inode, i_block);
  bool inline_a = (a->rec.flags & INLINE_DATA_FL) ||
    (LINUX_S_ISLNK (a->rec.mode) && a->nruns == 0);
  bool inline_b = (b->rec.flags & INLINE_DATA_FL) ||
    (LINUX_S_ISLNK (b->rec.mode) && b->nruns == 0);
  if ((inline_a || inline_b) &&
      memcmp (c->raw_old + iblock, c->raw_new + iblock,
              sizeof ((struct ext2_inode *) 0)->i_block) != 0)
    x |= FSEV_ATTR_BLOCKS;
  /* Extended attributes: the block, what it holds, the in-inode area
   * (after i_extra_isize's fields, whose checksum changes with any
   * change of the inode).
   */
  if (a->xattr_blk != b->xattr_blk)
    x |= FSEV_ATTR_XATTR;
  else if (a->xattr_blk) {
    if (vread (d->oldv, d->a, d->u->bs, a->xattr_blk * d->u->bs) == -1 ||
        vread (d->newv, d->b, d->u->bs, b->xattr_blk * d->u->bs) == -1 ||
        memcmp (d->a, d->b, d->u->bs) != 0)
      x |= FSEV_ATTR_XATTR;
  }
  if (L->inode_size > EXT2_GOOD_OLD_INODE_SIZE + 2) {
    const struct ext2_inode_large *la = (const void *) c->raw_old;
    const struct ext2_inode_large *lb = (const void *) c->raw_new;
    size_t ea = EXT2_GOOD_OLD_INODE_SIZE + la->i_extra_isize;
    size_t eb = EXT2_GOOD_OLD_INODE_SIZE + lb->i_extra_isize;
    if (ea != eb)
      x |= FSEV_ATTR_XATTR;
    else if (ea < L->inode_size &&
             memcmp (c->raw_old + ea, c->raw_new + ea, L->inode_size - ea) != 0)
      x |= FSEV_ATTR_XATTR;
  }
  return x;
}

/* --- Re-reading directories. --- */

static int
cmp_entry (const struct fsev_names *N, const struct fsev_link *x,
           const struct fsev_link *y)
{
  if (x->child != y->child)
    return x->child < y->child ? -1 : 1;
  size_t n = x->name_len < y->name_len ? x->name_len : y->name_len;
  int r = n ? memcmp (N->pool + x->name_off, N->pool + y->name_off, n) : 0;
  if (r)
    return r;
  return x->name_len < y->name_len ? -1 : x->name_len > y->name_len;
}

static int
cmp_entry_r (const void *a, const void *b, void *names)
{
  return cmp_entry (names, a, b);
}

/* Sort the links [FROM, nlinks) of N by child and name. */
static void
sort_entries (struct fsev_names *N, size_t from)
{
  if (N->nlinks - from > 1)
    qsort_r (N->links + from, N->nlinks - from, sizeof *N->links, cmp_entry_r, N);
}

static bool
is_dir_in (struct upd *d, uint32_t dir, bool new_side)
{
  for (size_t i = 0; i < d->nic; i++)
    if (d->ic[i].ino == dir) {
      const struct fsev_one_inode *s = new_side ? &d->ic[i].neu : &d->ic[i].old;
      return s->in_use && s->is_dir;
    }
  /* Not re-mapped: the same inode in both views.  Whether the names
   * pass reads it (a directory whose blocks lie partly outside the
   * filesystem is not read) is the scan's own answer for it.
   */
  const struct fsev_inode *rec = fsev_layout_inode (d->L, dir);
  if (rec == NULL || !LINUX_S_ISDIR (rec->mode))
    return false;
  struct fsev_one_inode one;
  unsigned char *raw;
  if (map_side (d, new_side ? d->newv : d->oldv, dir, &one, &raw) == -1)
    return false;               /* rescan or oom set */
  bool r = one.in_use && one.is_dir;
  free (one.runs);
  free (raw);
  return r;
}

static void
reread_dir (struct upd *d, uint32_t dir)
{
  size_t a0 = d->dold.nlinks, b0 = d->dnew.nlinks;
  if (is_dir_in (d, dir, false)) {
    d->u->cur = d->oldv;
    if (fsev_dir_entries (d->u->fs, d->L, dir, &d->dold) == -1) {
      d->oom = true;
      return;
    }
  }
  if (is_dir_in (d, dir, true)) {
    d->u->cur = d->newv;
    if (fsev_dir_entries (d->u->fs, d->L, dir, &d->dnew) == -1) {
      d->oom = true;
      return;
    }
  }
  sort_entries (&d->dold, a0);
  sort_entries (&d->dnew, b0);
  /* The multiset difference: entries only before are removed, only
   * after are added.
   */
  size_t i = a0, j = b0;
  while (i < d->dold.nlinks || j < d->dnew.nlinks) {
    const struct fsev_link *x = i < d->dold.nlinks ? &d->dold.links[i] : NULL;
    const struct fsev_link *y = j < d->dnew.nlinks ? &d->dnew.links[j] : NULL;
    int c;
    if (x && y) {
      /* Two pools: compare by hand. */
      if (x->child != y->child)
        c = x->child < y->child ? -1 : 1;
      else {
        size_t n = x->name_len < y->name_len ? x->name_len : y->name_len;
        c = n ? memcmp (d->dold.pool + x->name_off, d->dnew.pool + y->name_off, n) : 0;
        if (c == 0)
          c = x->name_len < y->name_len ? -1 : x->name_len > y->name_len;
      }
    }
    else
      c = x ? -1 : 1;
    if (c == 0) {
      i++, j++;
      continue;
    }
    if (fsev_grow ((void **) &d->lc, &d->lc_cap, d->nlc + 1, sizeof *d->lc) == -1) {
      d->oom = true;
      return;
    }
    if (c < 0) {
      d->lc[d->nlc++] = (struct link_change) {
        .add = false, .parent = dir, .child = x->child,
        .name = (const char *) (uintptr_t) x->name_off, .len = x->name_len };
      i++;
    }
    else {
      d->lc[d->nlc++] = (struct link_change) {
        .add = true, .parent = dir, .child = y->child,
        .name = (const char *) (uintptr_t) y->name_off, .len = y->name_len };
      j++;
    }
  }
}

/* --- Reachability. --- */

/* A name in a directory that is not reachable from the root is no name
 * (fsev_diff's rule: ext2 may write an entry before its directory's).
 * When a commit makes a directory reachable or not, every name below it
 * changes meaning, so the inodes below are touched too.
 */

/* Is DIR reachable from the root, before the update (AFTER false) or
 * after it (the model's links with the link changes applied)?  VISITED
 * bounds the walk (loops, depth).
 */
static bool
reachable (struct upd *d, uint32_t dir, bool after, struct u32s *visited,
           unsigned depth)
{
  const struct fsev_layout *L = d->L;
  if (dir == L->root_ino)
    return true;
  if (depth > 4096)
    return false;
  for (size_t i = 0; i < visited->n; i++)
    if (visited->v[i] == dir)
      return false;
  if (u32s_add (visited, dir) == -1) {
    d->oom = true;
    return false;
  }
  unsigned n = names_count (&L->names, dir);
  for (unsigned k = 0; k < n; k++) {
    const struct fsev_link *l = names_link (&L->names, dir, k);
    bool gone = false;
    if (after)
      for (size_t j = 0; j < d->nlc && !gone; j++) {
        const struct link_change *c = &d->lc[j];
        gone = !c->add && c->child == dir && c->parent == l->parent &&
          c->len == l->name_len &&
          (c->len == 0 || memcmp (d->dold.pool + (uintptr_t) c->name,
                                  L->names.pool + l->name_off, c->len) == 0);
      }
    if (!gone && reachable (d, l->parent, after, visited, depth + 1))
      return true;
  }
  if (after)
    for (size_t j = 0; j < d->nlc; j++) {
      const struct link_change *c = &d->lc[j];
      if (c->add && c->child == dir &&
          reachable (d, c->parent, after, visited, depth + 1))
        return true;
    }
  return false;
}

static bool
reachable_in (struct upd *d, uint32_t dir, bool after)
{
  struct u32s visited = { 0 };
  bool r = reachable (d, dir, after, &visited, 0);
  free (visited.v);
  return r;
}

/* Directories among TOUCHED whose reachability changes: the inodes they
 * hold (in either view) are touched too, and so on down.
 */
static void
touch_below (struct upd *d, struct u32s *touched)
{
  const size_t limit = 1u << 20;
  struct fsev_names sub = { 0 };
  u32s_sort_unique (touched);
  size_t first_new = touched->n;    /* appended below: may repeat */
  for (size_t i = 0; i < touched->n && !d->oom && !d->rescan; i++) {
    uint32_t dir = touched->v[i];
    if (i >= first_new) {
      bool seen = bsearch (&dir, touched->v, first_new, sizeof dir, cmp_u32) != NULL;
      for (size_t k = first_new; k < i && !seen; k++)
        seen = touched->v[k] == dir;
      if (seen)
        continue;
    }
    bool a = is_dir_in (d, dir, false), b = is_dir_in (d, dir, true);
    if (!a && !b)
      continue;
    if (reachable_in (d, dir, false) == reachable_in (d, dir, true))
      continue;
    for (int side = 0; side < 2 && !d->oom; side++) {
      if (!(side ? b : a))
        continue;
      sub.nlinks = sub.pool_len = 0;
      d->u->cur = side ? d->newv : d->oldv;
      if (fsev_dir_entries (d->u->fs, d->L, dir, &sub) == -1) {
        d->oom = true;
        break;
      }
      for (size_t k = 0; k < sub.nlinks; k++)
        if (u32s_add (touched, sub.links[k].child) == -1)
          d->oom = true;
    }
    if (touched->n > limit)
      rescan (d, "more than %zu inodes change reachability", limit);
  }
  names_free (&sub);
}

/* --- Applying. --- */

static int
apply (struct upd *d, struct fsev_undo *undo)
{
  struct fsev_layout *L = d->L;
  int r = 0;
  /* The common case first: as many runs after as before (a file that
   * grew inside its last extent, a truncation inside one): each new run
   * takes its old one's place, and nothing in the arrays moves.
   */
  for (size_t k = 0; k < d->nic; k++) {
    struct inode_change *c = &d->ic[k];
    if (same_runs (&c->old, &c->neu) || c->old.nruns != c->neu.nruns)
      continue;
    size_t i;
    r = 0;
    for (i = 0; i < c->old.nruns; i++)
      if ((r = fsev_edit_run_replace (L, &c->old.runs[i], &c->neu.runs[i],
                                      undo)) != 0)
        break;
    if (r == -1)
      return -1;
    if (i == c->old.nruns) {
      c->runs_done = true;
      continue;
    }
    while (i-- > 0)             /* undo this inode's, then the long way */
      if (fsev_edit_run_replace (L, &c->neu.runs[i], &c->old.runs[i],
                                 undo) != 0)
        return -1;
  }
  /* Removals first: a block one inode gives up another may take. */
  for (size_t k = 0; k < d->nic; k++) {
    struct inode_change *c = &d->ic[k];
    if (same_runs (&c->old, &c->neu) || c->runs_done)
      continue;
    for (size_t i = 0; i < c->old.nruns; i++)
      if ((r = fsev_edit_run_remove (L, &c->old.runs[i], undo)) != 0) {
        if (r > 0)
          rescan (d, "inode %u: a run is not in the model", c->ino);
        return r;
      }
  }
  for (size_t k = 0; k < d->nic; k++) {
    struct inode_change *c = &d->ic[k];
    uint64_t xa = c->old.in_use ? c->old.xattr_blk : 0;
    uint64_t xb = c->neu.in_use ? c->neu.xattr_blk : 0;
    if (xa != xb && xa && (r = fsev_edit_xattr (L, false, xa, c->ino, undo)) != 0) {
      if (r > 0)
        rescan (d, "inode %u: its xattr block is not in the model", c->ino);
      return r;
    }
  }
  for (size_t k = 0; k < d->nic; k++) {
    struct inode_change *c = &d->ic[k];
    if (same_runs (&c->old, &c->neu) || c->runs_done)
      continue;
    for (size_t i = 0; i < c->neu.nruns; i++)
      if ((r = fsev_edit_run_insert (L, &c->neu.runs[i], undo)) != 0) {
        if (r > 0)
          rescan (d, "inode %u: its blocks overlap another owner's", c->ino);
        return r;
      }
  }
  for (size_t k = 0; k < d->nic; k++) {
    struct inode_change *c = &d->ic[k];
    uint64_t xa = c->old.in_use ? c->old.xattr_blk : 0;
    uint64_t xb = c->neu.in_use ? c->neu.xattr_blk : 0;
    if (xa != xb && xb && (r = fsev_edit_xattr (L, true, xb, c->ino, undo)) != 0) {
      if (r > 0)
        rescan (d, "inode %u: its xattr block overlaps another owner's", c->ino);
      return r;
    }
    bool same = c->old.in_use == c->neu.in_use &&
      (!c->old.in_use || memcmp (&c->old.rec, &c->neu.rec, sizeof c->old.rec) == 0);
    if (!same &&
        fsev_edit_inode (L, c->ino, c->neu.in_use ? &c->neu.rec : NULL, undo) == -1)
      return -1;
  }
  for (int pass = 0; pass < 2; pass++)
    for (size_t k = 0; k < d->nlc; k++) {
      struct link_change *l = &d->lc[k];
      if (l->add != (pass == 1))
        continue;
      const char *pool = l->add ? d->dnew.pool : d->dold.pool;
      const char *name = pool ? pool + (uintptr_t) l->name : "";
      if ((r = fsev_edit_link (L, l->add, l->parent, l->child, name, l->len,
                               undo)) != 0) {
        if (r > 0)
          rescan (d, "directory %u: an entry is not in the model", l->parent);
        return r;
      }
    }
  return 0;
}

static void
upd_free (struct upd *d)
{
  for (size_t i = 0; i < d->nic; i++) {
    free (d->ic[i].old.runs);
    free (d->ic[i].neu.runs);
    free (d->ic[i].raw_old);
    free (d->ic[i].raw_new);
  }
  free (d->ic);
  free (d->cand.v);
  free (d->groups.v);
  free (d->dirs.v);
  free (d->lc);
  names_free (&d->dold);
  names_free (&d->dnew);
  free (d->a);
  free (d->b);
}

enum fsev_update_result
fsev_update (struct fsev_layout *L, struct fsev_updater *u,
             const struct fsev_source *old_view,
             const struct fsev_source *new_view,
             const uint64_t *blocks, size_t nblocks, double scan_seconds,
             struct fsev_update *up, char *why, size_t whylen)
{
  struct upd d = {
    .L = L, .u = u, .oldv = old_view, .newv = new_view,
    .why = why, .whylen = whylen,
  };
  struct u32s touched = { 0 };
  memset (up, 0, sizeof *up);
  d.a = malloc (u->bs);
  d.b = malloc (u->bs);
  uint64_t *blks = malloc ((nblocks ? nblocks : 1) * sizeof *blks);
  if (d.a == NULL || d.b == NULL || blks == NULL) {
    free (blks);
    upd_free (&d);
    return FSEV_UPDATE_NOMEM;
  }

  /* 1. What the changed blocks lead to. */
  if (nblocks)
    memcpy (blks, blocks, nblocks * sizeof *blks);
  size_t nb = 0;
  for (size_t i = 0; i < nblocks; i++)
    if (blks[i] < L->fs_blocks)
      blks[nb++] = blks[i];
  for (size_t i = 1; i < nb; i++)   /* insertion sort: a transaction's worth */
    for (size_t j = i; j > 0 && blks[j - 1] > blks[j]; j--) {
      uint64_t t = blks[j]; blks[j] = blks[j - 1]; blks[j - 1] = t;
    }
  for (size_t i = 0; i < nb && !d.rescan && !d.oom; i++) {
    if (i && blks[i] == blks[i - 1])
      continue;
    if (vread (old_view, d.a, u->bs, blks[i] * u->bs) == -1 ||
        vread (new_view, d.b, u->bs, blks[i] * u->bs) == -1) {
      rescan (&d, "block %llu does not read", (unsigned long long) blks[i]);
      break;
    }
    if (memcmp (d.a, d.b, u->bs) == 0)
      continue;
    up->blocks++;
    struct classify c = { .d = &d, .blk = blks[i] };
    fsev_layout_lookup (L, blks[i] * u->bs, u->bs, classify_segment, &c);
  }
  free (blks);
  if (!d.rescan && !d.oom)
    check_groups (&d);

  /* 2. Re-map the inodes, then re-read the directories. */
  u32s_sort_unique (&d.cand);
  u32s_sort_unique (&d.dirs);
  /* A transaction that touches a good part of the filesystem (a big
   * untar, mkfs-like work) is cheaper to follow by a scan: re-mapping
   * an inode costs about INODE_COST, a scan what the last one took.
   */
  if (scan_seconds > 0 &&
      (d.cand.n + 4 * d.dirs.n) * INODE_COST > scan_seconds)
    rescan (&d, "the transaction touches %zu inodes and %zu directories: "
            "a scan is cheaper", d.cand.n, d.dirs.n);
  for (size_t i = 0; i < d.cand.n && !d.rescan && !d.oom; i++)
    remap_inode (&d, d.cand.v[i]);
  /* Re-mapping adds directories (some already named by their blocks):
   * one read each, or its entries would change twice.
   */
  u32s_sort_unique (&d.dirs);
  for (size_t i = 0; i < d.dirs.n && !d.rescan && !d.oom; i++)
    reread_dir (&d, d.dirs.v[i]);
  /* Records and names added or removed move the tail of their sorted
   * arrays (memmove): many of them in a big model cost more than a
   * scan too.
   */
  if (scan_seconds > 0 && !d.rescan && !d.oom) {
    size_t moves = d.nlc;
    for (size_t i = 0; i < d.nic; i++)
      moves += d.ic[i].old.in_use != d.ic[i].neu.in_use ||
        d.ic[i].old.nruns != d.ic[i].neu.nruns;
    double bytes = (double) moves *
      ((double) L->ninodes * sizeof *L->inodes + (double) L->names.nlinks *
       sizeof *L->names.links + (double) L->nruns * (sizeof *L->runs + 8)) / 2;
    if (bytes / MEMMOVE_BYTES_PER_SECOND > scan_seconds)
      rescan (&d, "%zu records and names move in a model of %zu inodes: "
              "a scan is cheaper", moves, L->ninodes);
  }
  up->inodes = d.nic;
  up->dirs = d.dirs.n;
  for (size_t i = 0; i < d.nic && i < 8; i++)
    up->first_inos[i] = d.ic[i].ino;
  for (size_t i = 0; i < d.nic && !d.rescan && !d.oom; i++) {
    unsigned x = extra_changes (&d, &d.ic[i]);
    if (x == 0)
      continue;
    if (fsev_grow ((void **) &up->extra, &up->extra_cap, up->nextra + 1,
                   sizeof *up->extra) == -1) {
      d.oom = true;
      break;
    }
    up->extra[up->nextra++] = (struct fsev_extra) { d.ic[i].ino, x };
  }

  /* 3. What the events are about: the re-mapped inodes and the inodes
   * whose names changed.
   */
  for (size_t i = 0; i < d.nic && !d.oom; i++)
    if (u32s_add (&touched, d.ic[i].ino) == -1)
      d.oom = true;
  for (size_t i = 0; i < d.nlc && !d.oom; i++)
    if (u32s_add (&touched, d.lc[i].child) == -1)
      d.oom = true;
  if (!d.rescan && !d.oom)
    touch_below (&d, &touched);
  u32s_sort_unique (&touched);
  if (!d.rescan && !d.oom) {
    up->before = fsev_layout_subset (L, touched.v, touched.n);
    if (up->before == NULL)
      d.oom = true;
  }

  /* 4. Edit the model, and take the "after" picture. */
  if (!d.rescan && !d.oom) {
    int r = apply (&d, &up->undo);
    if (r == -1)
      d.oom = true;
    if (r == 0) {
      up->after = fsev_layout_subset (L, touched.v, touched.n);
      if (up->after == NULL)
        d.oom = true;
    }
  }
  free (touched.v);
  bool oom = d.oom, rs = d.rescan;
  upd_free (&d);
  if (oom || rs) {
    fsev_update_rollback (L, up);
    return oom ? FSEV_UPDATE_NOMEM : FSEV_UPDATE_RESCAN;
  }
  L->stats.runs = L->nruns;
  L->stats.links = L->names.nlinks;
  L->stats.names_bytes = L->names.pool_len;
  return FSEV_UPDATE_DONE;
}

void
fsev_update_rollback (struct fsev_layout *L, struct fsev_update *up)
{
  fsev_undo_rollback (L, &up->undo);
  fsev_update_release (up);
}

unsigned
fsev_update_extra (const struct fsev_update *up, uint32_t ino)
{
  /* In inode order: the inodes were re-mapped in that order. */
  size_t lo = 0, hi = up->nextra;
  while (lo < hi) {
    size_t mid = lo + (hi - lo) / 2;
    if (up->extra[mid].ino < ino)
      lo = mid + 1;
    else
      hi = mid;
  }
  return lo < up->nextra && up->extra[lo].ino == ino ? up->extra[lo].changed : 0;
}

void
fsev_update_release (struct fsev_update *up)
{
  fsev_undo_free (&up->undo);
  free (up->extra);
  up->extra = NULL;
  up->nextra = up->extra_cap = 0;
  fsev_layout_free (up->before);
  fsev_layout_free (up->after);
  up->before = up->after = NULL;
}
