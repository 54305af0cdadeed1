/* fs/layout-build.c: build the layout model with libext2fs.
 *
 * One pass over the group descriptors (fixed metadata by arithmetic),
 * one inode scan (extent trees, indirect blocks, xattr blocks, the
 * journal), one dir_iterate per directory (names), and one walk of the
 * block bitmap over the gaps (free space).  Everything is copied into
 * our own arrays; libext2fs is closed before this returns.
 *
 * The image is hostile: every block number is checked against the
 * filesystem's size before it becomes a run, and every loop is bounded
 * by what the filesystem can hold.
 */
#include <config.h>

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <ext2fs/ext2fs.h>
#include <ext2fs/ext3_extents.h>

#include "fserror.h"
#include "fsinfo.h"
#include "layout-internal.h"
#include "sort.h"
#include "util.h"

/* jbd2's superblock, the fields we need (big-endian on disk). */
#define JBD2_MAGIC             0xC03B3998U
#define JBD2_SUPERBLOCK_V1     3
#define JBD2_SUPERBLOCK_V2     4
#define JBD2_INCOMPAT_FAST_COMMIT 0x20
#define JBD2_DEFAULT_FC_BLOCKS 256
struct jsb {
  uint32_t h_magic, h_blocktype, h_sequence;
  uint32_t s_blocksize, s_maxlen, s_first;
  uint32_t s_sequence, s_start, s_errno;
  uint32_t s_feature_compat, s_feature_incompat, s_feature_ro_compat;
  uint8_t s_uuid[16];
  uint32_t s_nr_users, s_dynsuper, s_max_transaction, s_max_trans_data;
  uint8_t s_checksum_type, s_padding2[3];
  uint32_t s_num_fc_blks;
};

struct builder {
  ext2_filsys fs;
  struct fsev_layout *L;
  const struct fsev_build_options *opts;
  size_t runs_cap, xattrs_cap, inodes_cap, jextents_cap;
  uint32_t *dirs;               /* directory inodes, for the names pass */
  size_t ndirs, dirs_cap;
  bool oom;
  /* The journal inode's areas, in logical blocks. */
  uint32_t journal_ino;
  uint64_t jlog_end;            /* first block of the fast-commit area */
  uint64_t jmaxlen;
  /* Per-inode state while mapping one inode. */
  uint32_t cur_ino;
  uint8_t cur_role;
  uint64_t cur_size;            /* i_size */
  bool cur_dir_outside;         /* a block of this directory was ignored */
  uint64_t steps, max_steps;
  bool stale_dir;               /* the directory being read is not one */
  bool journal_seen;            /* the inode scan met the journal inode */
  /* A full build's directories whose entries were not (all) read: into
   * L->unread_dirs.  The one-inode mappers leave it off.
   */
  bool record_unread;
  uint32_t *unread;
  size_t nunread, unread_cap;
};

static void
note_unread (struct builder *b, uint32_t dir)
{
  if (!b->record_unread)
    return;
  if (fsev_grow ((void **) &b->unread, &b->unread_cap, b->nunread + 1,
                 sizeof *b->unread) == -1) {
    b->oom = true;
    return;
  }
  b->unread[b->nunread++] = dir;
}

static void __attribute__ ((format (printf, 2, 3)))
warn (struct builder *b, const char *fmt, ...)
{
  unsigned max = b->opts && b->opts->max_warnings ? b->opts->max_warnings : 100;
  uint64_t n = b->L->stats.warnings++;
  if (n > max || b->opts == NULL || b->opts->warn == NULL)
    return;
  char msg[512];
  if (n == max)
    snprintf (msg, sizeof msg, "more warnings suppressed");
  else {
    va_list ap;
    va_start (ap, fmt);
    vsnprintf (msg, sizeof msg, fmt, ap);
    va_end (ap);
  }
  b->opts->warn (b->opts->opaque, msg);
}

/* Add a run after checking it lies inside the filesystem.  Consecutive
 * calls that continue the previous run (same owner and role, next block
 * on disk and in the file) extend it, which keeps indirect-mapped files
 * at one run per contiguous piece.
 */
static void
add_run_eof (struct builder *b, uint64_t pblk, uint64_t len, uint8_t role,
             uint32_t owner, uint32_t aux, uint8_t flags, uint16_t eof_bytes)
{
  struct fsev_layout *L = b->L;

  if (len == 0)
    return;
  if (pblk >= L->fs_blocks || len > L->fs_blocks - pblk) {
    warn (b, "inode %" PRIu32 ": %s block %" PRIu64 "+%" PRIu64
          " lies outside the filesystem (%" PRIu64 " blocks): ignored",
          owner, fsev_role_name (role), pblk, len, L->fs_blocks);
    if (role == FSEV_ROLE_DIRECTORY)
      b->cur_dir_outside = true;
    return;
  }
  while (len > 0) {
    uint32_t piece = len > UINT32_MAX / 2 ? UINT32_MAX / 2 : (uint32_t) len;
    if (L->nruns > 0) {
      struct run *p = &L->runs[L->nruns - 1];
      /* The block a file ends in may end a run: RUN_EOF_PARTIAL
       * speaks of the run's last block.
       */
      if (p->role == role && p->owner == owner &&
          p->flags == (flags & ~RUN_EOF_PARTIAL) &&
          !((flags & RUN_EOF_PARTIAL) && piece != 1) &&
          p->pblk + p->len == pblk && (uint64_t) p->aux + p->len == aux &&
          (uint64_t) p->len + piece <= UINT32_MAX / 2) {
        p->len += piece;
        p->flags = flags;
        p->eof_bytes = eof_bytes;
        goto next;
      }
    }
    if (fsev_grow ((void **) &L->runs, &b->runs_cap, L->nruns + 1,
              sizeof *L->runs) == -1) {
      b->oom = true;
      return;
    }
    L->runs[L->nruns++] = (struct run) {
      .pblk = pblk, .len = piece, .owner = owner, .aux = aux,
      .role = role, .flags = flags, .eof_bytes = eof_bytes,
    };
  next:
    pblk += piece;
    aux += piece;
    len -= piece;
  }
}

static void
add_run (struct builder *b, uint64_t pblk, uint64_t len, uint8_t role,
         uint32_t owner, uint32_t aux, uint8_t flags)
{
  add_run_eof (b, pblk, len, role, owner, aux, flags, 0);
}

/* --- Fixed metadata, by per-group arithmetic. --- */

static void
map_fixed_metadata (struct builder *b)
{
  ext2_filsys fs = b->fs;
  struct ext2_super_block *sb = fs->super;
  uint64_t gdt_old_blocks, reserved;

  if (ext2fs_has_feature_meta_bg (sb)) {
    gdt_old_blocks = sb->s_first_meta_bg;
    if (gdt_old_blocks > fs->desc_blocks)
      gdt_old_blocks = fs->desc_blocks;
    reserved = 0;
  }
  else {
    gdt_old_blocks = fs->desc_blocks;
    reserved = sb->s_reserved_gdt_blocks;
  }

  for (dgrp_t g = 0; g < fs->group_desc_count && !b->oom; g++) {
    blk64_t super = 0, old_desc = 0, new_desc = 0, first;
    blk_t used = 0;
    uint8_t backup = g == 0 ? 0 : RUN_BACKUP;

    /* libext2fs does the group arithmetic: groups start at
     * s_first_data_block + g * s_blocks_per_group (blocks, not
     * clusters), and with 1 KiB blocks and bigalloc s_first_data_block
     * is 0 yet the superblock still lies at byte 1024 (block 1), with
     * the descriptors after it: SUPER, not s_first_data_block, says
     * where group 0's metadata starts.
     */
    ext2fs_super_and_bgd_loc2 (fs, g, &super, &old_desc, &new_desc, &used);
    if (g == 0)                 /* the boot block belongs with it */
      add_run (b, 0, (uint64_t) (super > sb->s_first_data_block
                                 ? super : sb->s_first_data_block) + 1,
               FSEV_ROLE_SUPERBLOCK, g, 0, 0);
    else if (super)
      add_run (b, super, 1, FSEV_ROLE_SUPERBLOCK, g, 0, backup);
    if (old_desc) {
      add_run (b, old_desc, gdt_old_blocks, FSEV_ROLE_GROUP_DESCRIPTORS,
               g, 0, backup);
      add_run (b, old_desc + gdt_old_blocks, reserved,
               FSEV_ROLE_RESERVED_GDT, g, 0, backup);
    }
    if (new_desc) {
      /* meta_bg: the first group of a meta group holds the primary. */
      unsigned per = EXT2_DESC_PER_BLOCK (sb);
      add_run (b, new_desc, 1, FSEV_ROLE_GROUP_DESCRIPTORS, g, 0,
               g % per == 0 ? 0 : RUN_BACKUP);
    }
    /* A location of 0 means "none" (block 0 is the superblock's). */
    if (ext2fs_block_bitmap_loc (fs, g))
      add_run (b, ext2fs_block_bitmap_loc (fs, g), 1,
               FSEV_ROLE_BLOCK_BITMAP, g, 0, 0);
    if (ext2fs_inode_bitmap_loc (fs, g))
      add_run (b, ext2fs_inode_bitmap_loc (fs, g), 1,
               FSEV_ROLE_INODE_BITMAP, g, 0, 0);
    first = ext2fs_inode_table_loc (fs, g);
    if (first)
      add_run (b, first, fs->inode_blocks_per_group, FSEV_ROLE_INODE_TABLE,
               g, g * sb->s_inodes_per_group + 1, 0);
  }
}

/* --- The journal's areas. --- */

static void
read_journal_superblock (struct builder *b)
{
  ext2_filsys fs = b->fs;
  struct ext2_super_block *sb = fs->super;
  struct ext2_inode inode;
  blk64_t pblk = 0;
  char *buf;

  if (!ext2fs_has_feature_journal (sb))
    return;
  if (sb->s_journal_inum == 0) {
    b->L->external_journal = true;
    return;
  }
  b->journal_ino = sb->s_journal_inum;
  if (b->journal_ino > sb->s_inodes_count) {
    warn (b, "journal inode %u does not exist", b->journal_ino);
    b->journal_ino = 0;
    return;
  }
  b->jlog_end = b->jmaxlen = UINT64_MAX;
  if (ext2fs_read_inode (fs, b->journal_ino, &inode) != 0 ||
      ext2fs_bmap2 (fs, b->journal_ino, &inode, NULL, 0, 0, NULL, &pblk) != 0 ||
      pblk == 0 || pblk >= ext2fs_blocks_count (sb)) {
    warn (b, "journal inode %u: cannot find its superblock", b->journal_ino);
    return;
  }
  if (ext2fs_get_mem (fs->blocksize, &buf) != 0)
    return;
  if (io_channel_read_blk64 (fs->io, pblk, 1, buf) == 0) {
    struct jsb j;
    memcpy (&j, buf, sizeof j);
    uint32_t type = ext2fs_be32_to_cpu (j.h_blocktype);
    if (ext2fs_be32_to_cpu (j.h_magic) != JBD2_MAGIC ||
        (type != JBD2_SUPERBLOCK_V1 && type != JBD2_SUPERBLOCK_V2))
      warn (b, "journal superblock at block %" PRIu64 " is not valid", (uint64_t) pblk);
    else {
      uint64_t maxlen = ext2fs_be32_to_cpu (j.s_maxlen);
      uint64_t fc = 0;
      /* mke2fs reserves the fast-commit area for the fast_commit
       * feature; the journal's own flag is set only at first mount.
       */
      if (type == JBD2_SUPERBLOCK_V2 &&
          ((ext2fs_be32_to_cpu (j.s_feature_incompat) & JBD2_INCOMPAT_FAST_COMMIT) ||
           ext2fs_has_feature_fast_commit (sb))) {
        fc = ext2fs_be32_to_cpu (j.s_num_fc_blks);
        if (fc == 0)
          fc = JBD2_DEFAULT_FC_BLOCKS;
      }
      if (fc >= maxlen)
        warn (b, "journal: fast-commit area (%" PRIu64 " blocks) does not fit "
              "in the journal (%" PRIu64 " blocks)", fc, maxlen);
      else {
        b->jmaxlen = maxlen;
        b->jlog_end = maxlen - fc;
      }
    }
  }
  ext2fs_free_mem (&buf);
}

/* Add a piece of the journal inode, split into its areas. */
static void
add_journal_run (struct builder *b, uint64_t pblk, uint64_t lblk, uint64_t len)
{
  struct fsev_layout *L = b->L;
  if (pblk < L->fs_blocks && len <= L->fs_blocks - pblk) {
    if (fsev_grow ((void **) &L->jextents, &b->jextents_cap,
                   L->njextents + 1, sizeof *L->jextents) == -1) {
      b->oom = true;
      return;
    }
    L->jextents[L->njextents++] = (struct journal_extent) {
      .pblk = pblk, .lblk = (uint32_t) lblk, .len = (uint32_t) len };
  }
  while (len > 0) {
    uint64_t n = len;
    uint8_t part;
    if (lblk == 0) {
      part = RUN_JOURNAL_SB;
      n = 1;
    }
    else if (lblk < b->jlog_end) {
      part = RUN_JOURNAL_LOG;
      if (n > b->jlog_end - lblk)
        n = b->jlog_end - lblk;
    }
    else if (lblk < b->jmaxlen) {
      part = RUN_JOURNAL_FC;
      if (n > b->jmaxlen - lblk)
        n = b->jmaxlen - lblk;
    }
    else
      part = 0;                 /* past s_maxlen: journal, no area */
    add_run (b, pblk, n, FSEV_ROLE_JOURNAL, b->journal_ino,
             (uint32_t) lblk, part);
    pblk += n;
    lblk += n;
    len -= n;
  }
}

/* A mapped piece of file content: data, directory or journal. */
static void
add_content (struct builder *b, uint64_t pblk, uint64_t lblk, uint64_t len,
             uint8_t flags)
{
  if (lblk > UINT32_MAX || len > (uint64_t) UINT32_MAX + 1 - lblk) {
    warn (b, "inode %" PRIu32 ": logical block %" PRIu64 " out of range",
          b->cur_ino, lblk);
    /* A directory whose block the model drops is not read for names:
     * libext2fs would read the entries there, a write to them would
     * change names nobody follows (fuzz-follow: a root extent at
     * logical block 2^32-1, zeroed later, took /p/secret away unseen).
     */
    b->cur_dir_outside = true;
    return;
  }
  if (b->cur_role == FSEV_ROLE_JOURNAL) {
    add_journal_run (b, pblk, lblk, len);
    return;
  }
  if (b->cur_role != FSEV_ROLE_DATA) {
    add_run (b, pblk, len, b->cur_role, b->cur_ino, (uint32_t) lblk, flags);
    return;
  }
  /* Data: split where i_size ends, so that lookups need no size table:
   * blocks inside the file, the block i_size ends in, blocks past it.
   */
  const uint64_t bs = b->L->block_size;
  const uint64_t eof_blk = b->cur_size / bs;
  const uint16_t eof_bytes = (uint16_t) (b->cur_size % bs);
  if (lblk < eof_blk) {
    uint64_t n = len < eof_blk - lblk ? len : eof_blk - lblk;
    add_run (b, pblk, n, FSEV_ROLE_DATA, b->cur_ino, (uint32_t) lblk, flags);
    pblk += n; lblk += n; len -= n;
  }
  if (len > 0 && lblk == eof_blk && eof_bytes) {
    add_run_eof (b, pblk, 1, FSEV_ROLE_DATA, b->cur_ino, (uint32_t) lblk,
                 flags | RUN_EOF_PARTIAL, eof_bytes);
    pblk++; lblk++; len--;
  }
  if (len > 0)
    add_run (b, pblk, len, FSEV_ROLE_DATA, b->cur_ino, (uint32_t) lblk,
             flags | RUN_BEYOND_EOF);
}

/* --- Block maps of one inode. --- */

/* Most files have all their extents in the inode (depth 0): read them
 * straight from i_block, checked, without opening an extent handle.
 * Returns false to let libext2fs handle anything else.
 */
static bool
map_extents_in_inode (struct builder *b, struct ext2_inode *inode)
{
  const struct ext3_extent_header *eh = (const void *) inode->i_block;
  const struct ext3_extent *ex = (const void *) (eh + 1);
  unsigned entries = ext2fs_le16_to_cpu (eh->eh_entries);
  const unsigned fit = (sizeof inode->i_block - sizeof *eh) / sizeof *ex;

  if (ext2fs_le16_to_cpu (eh->eh_magic) != EXT3_EXT_MAGIC ||
      ext2fs_le16_to_cpu (eh->eh_depth) != 0 ||
      entries > ext2fs_le16_to_cpu (eh->eh_max) || entries > fit)
    return false;
  for (unsigned i = 0; i < entries; i++) {
    uint32_t len = ext2fs_le16_to_cpu (ex[i].ee_len);
    uint8_t flags = 0;
    if (len > EXT_INIT_MAX_LEN) {
      len -= EXT_INIT_MAX_LEN;
      flags = RUN_UNWRITTEN;
    }
    uint64_t pblk = ((uint64_t) ext2fs_le16_to_cpu (ex[i].ee_start_hi) << 32) |
      ext2fs_le32_to_cpu (ex[i].ee_start);
    if (len)
      add_content (b, pblk, ext2fs_le32_to_cpu (ex[i].ee_block), len, flags);
  }
  return true;
}

static void
map_extents (struct builder *b, ext2_ino_t ino, struct ext2_inode *inode)
{
  ext2_extent_handle_t h;
  struct ext2fs_extent ext;
  errcode_t e;
  int op = EXT2_EXTENT_ROOT;

  if (map_extents_in_inode (b, inode))
    return;
  e = ext2fs_extent_open2 (b->fs, ino, inode, &h);
  if (e) {
    warn (b, "inode %u: bad extent tree: %s", ino, fsev_strerror (e));
    return;
  }
  for (;;) {
    e = ext2fs_extent_get (h, op, &ext);
    if (e) {
      if (e != EXT2_ET_EXTENT_NO_NEXT)
        warn (b, "inode %u: extent tree: %s", ino, fsev_strerror (e));
      break;
    }
    op = EXT2_EXTENT_NEXT;
    if (++b->steps > b->max_steps) {
      warn (b, "inode %u: extent tree larger than the filesystem", ino);
      break;
    }
    if (ext.e_flags & EXT2_EXTENT_FLAGS_SECOND_VISIT)
      continue;
    if (!(ext.e_flags & EXT2_EXTENT_FLAGS_LEAF)) {
      /* An index entry: e_pblk is the tree block below it. */
      add_run (b, ext.e_pblk, 1, FSEV_ROLE_EXTENT_TREE, ino, 0, 0);
      continue;
    }
    if (ext.e_len == 0)
      continue;
    add_content (b, ext.e_pblk, ext.e_lblk, ext.e_len,
                 (ext.e_flags & EXT2_EXTENT_FLAGS_UNINIT) ? RUN_UNWRITTEN : 0);
  }
  ext2fs_extent_free (h);
}

static int
block_cb (ext2_filsys fs, blk64_t *blocknr, e2_blkcnt_t blockcnt,
          blk64_t ref_blk, int ref_offset, void *priv)
{
  struct builder *b = priv;

  if (++b->steps > b->max_steps) {
    warn (b, "inode %u: block map larger than the filesystem", b->cur_ino);
    return BLOCK_ABORT;
  }
  if (blockcnt < 0) {
    /* The resize inode's indirect blocks below the top one are the
     * reserved GDT blocks, already mapped by arithmetic.
     */
    if (b->cur_ino == EXT2_RESIZE_INO && blockcnt != BLOCK_COUNT_DIND)
      return 0;
    add_run (b, *blocknr, 1, FSEV_ROLE_INDIRECT, b->cur_ino, 0, 0);
  }
  else if (b->cur_ino != EXT2_RESIZE_INO)
    add_content (b, *blocknr, (uint64_t) blockcnt, 1, 0);
  return b->oom ? BLOCK_ABORT : 0;
}

static void
map_indirect (struct builder *b, ext2_ino_t ino)
{
  errcode_t e = ext2fs_block_iterate3 (b->fs, ino, BLOCK_FLAG_READ_ONLY,
                                       NULL, block_cb, b);
  if (e)
    warn (b, "inode %u: block map: %s", ino, fsev_strerror (e));
}

static void
add_xattr_owner (struct builder *b, uint64_t pblk, uint32_t ino)
{
  struct fsev_layout *L = b->L;
  if (pblk >= L->fs_blocks) {
    warn (b, "inode %u: xattr block %" PRIu64 " outside the filesystem",
          ino, pblk);
    return;
  }
  if (fsev_grow ((void **) &L->xattrs, &b->xattrs_cap, L->nxattrs + 1,
            sizeof *L->xattrs) == -1) {
    b->oom = true;
    return;
  }
  L->xattrs[L->nxattrs++] = (struct xattr_owner) { .pblk = pblk, .ino = ino };
}

static void
add_special_name (struct builder *b, uint32_t ino, const char *name)
{
  struct fsev_layout *L = b->L;
  if (ino == 0 || L->nspecial >= sizeof L->special / sizeof L->special[0])
    return;
  L->special[L->nspecial].ino = ino;
  L->special[L->nspecial].name = name;
  L->nspecial++;
}

/* Seconds and nanoseconds of an inode time with its _extra word. */
static void
inode_time (uint32_t base, uint32_t extra, bool has_extra,
            int64_t *sec, uint32_t *ns)
{
  *sec = (int32_t) base;
  *ns = 0;
  if (has_extra) {
    *sec += (int64_t) (extra & 3) << 32;
    *ns = (extra >> 2) % 1000000000;
  }
}

static void
record_inode (struct builder *b, ext2_ino_t ino,
              const struct ext2_inode_large *in)
{
  struct fsev_layout *L = b->L;
  if (fsev_grow ((void **) &L->inodes, &b->inodes_cap, L->ninodes + 1,
                 sizeof *L->inodes) == -1) {
    b->oom = true;
    return;
  }
  struct fsev_inode *r = &L->inodes[L->ninodes++];
  size_t extra = L->inode_size > EXT2_GOOD_OLD_INODE_SIZE
    ? in->i_extra_isize : 0;
  /* Which _extra fields lie inside i_extra_isize. */
#define HAS(f) (extra >= offsetof (struct ext2_inode_large, f) + \
                sizeof in->f - EXT2_GOOD_OLD_INODE_SIZE)
  *r = (struct fsev_inode) {
    .ino = ino,
    .generation = in->i_generation,
    .mode = in->i_mode,
    .links = in->i_links_count,
    .uid = inode_uid (*in),
    .gid = inode_gid (*in),
    .flags = in->i_flags,
    .size = EXT2_I_SIZE (in),
  };
  inode_time (in->i_atime, in->i_atime_extra, HAS (i_atime_extra),
              &r->atime, &r->atime_ns);
  inode_time (in->i_mtime, in->i_mtime_extra, HAS (i_mtime_extra),
              &r->mtime, &r->mtime_ns);
  inode_time (in->i_ctime, in->i_ctime_extra, HAS (i_ctime_extra),
              &r->ctime, &r->ctime_ns);
  if (HAS (i_crtime))
    inode_time (in->i_crtime, in->i_crtime_extra, HAS (i_crtime_extra),
                &r->crtime, &r->crtime_ns);
#undef HAS
}

static void
map_inode (struct builder *b, ext2_ino_t ino, struct ext2_inode *inode)
{
  ext2_filsys fs = b->fs;
  struct ext2_super_block *sb = fs->super;
  bool is_dir = LINUX_S_ISDIR (inode->i_mode);
  uint64_t xblk = ext2fs_file_acl_block (fs, inode);

  if (ino == b->journal_ino)
    b->journal_seen = true;
  else if (ino != EXT2_BAD_INO && inode->i_mode == 0 &&
           inode->i_links_count == 0)
    return;                     /* allocated in the bitmap but empty */
  record_inode (b, ino, (const struct ext2_inode_large *) inode);

  if (is_dir) {
    if (fsev_grow ((void **) &b->dirs, &b->dirs_cap, b->ndirs + 1,
              sizeof *b->dirs) == -1) {
      b->oom = true;
      return;
    }
    b->dirs[b->ndirs++] = ino;
    b->L->stats.directories++;
  }
  b->L->stats.files++;

  if (xblk)
    add_xattr_owner (b, xblk, ino);

  /* The journal inode is mapped whatever its mode, links or bitmap bit
   * say: recovery finds the journal through the superblock and reads
   * its blocks by bmap, and not every recoverer checks the rest
   * (fuzz-follow: a journal inode of mode 0 was no journal to the model,
   * while a transaction logged in its blocks was replayed by recovery).
   */
  if (ino != b->journal_ino && !ext2fs_inode_has_valid_blocks2 (fs, inode))
    return;                     /* fast symlink, inline data, device, ... */

  b->cur_ino = ino;
  b->cur_role = ino == b->journal_ino ? FSEV_ROLE_JOURNAL
    : is_dir ? FSEV_ROLE_DIRECTORY : FSEV_ROLE_DATA;
  b->cur_size = EXT2_I_SIZE (inode);
  if (ino == EXT2_RESIZE_INO && !ext2fs_has_feature_resize_inode (sb))
    return;
  b->cur_dir_outside = false;
  if (inode->i_flags & EXT4_EXTENTS_FL)
    map_extents (b, ino, inode);
  else
    map_indirect (b, ino);
  /* A directory whose blocks the model does not hold all of is not
   * read for names: libext2fs would read the part inside the
   * filesystem, blocks the model gives to others (an inode table, say),
   * and a change to those would change names that no update follows.
   */
  if (is_dir && b->cur_dir_outside && b->ndirs && b->dirs[b->ndirs - 1] == ino) {
    b->ndirs--;
    note_unread (b, ino);
    warn (b, "directory %u: blocks outside the filesystem or its logical "
          "range: its entries are ignored", ino);
  }
}

static void
scan_inodes (struct builder *b)
{
  ext2_filsys fs = b->fs;
  ext2_inode_scan scan;
  ext2_ino_t ino;
  errcode_t e;
  int bufsize = EXT2_INODE_SIZE (fs->super);
  struct ext2_inode_large *inode;

  if (bufsize < (int) sizeof (struct ext2_inode))
    bufsize = sizeof (struct ext2_inode);
  inode = calloc (1, (size_t) bufsize > sizeof *inode ? (size_t) bufsize
                                                    : sizeof *inode);
  if (inode == NULL) {
    b->oom = true;
    return;
  }
  /* Read inode tables 1 MiB at a time. */
  e = ext2fs_open_inode_scan (fs, (1 << 20) / fs->blocksize, &scan);
  if (e) {
    warn (b, "cannot scan inodes: %s", fsev_strerror (e));
    free (inode);
    return;
  }
  /* Not EXT2_SF_WARN_GARBAGE_INODES: it checksums every inode of every
   * block read, which was a fifth of the build time.  Garbage inodes
   * are survived anyway: every block number is range-checked.
   */
  ext2fs_inode_scan_flags (scan, EXT2_SF_SKIP_MISSING_ITABLE, 0);
  for (uint64_t n = 0; n <= fs->super->s_inodes_count && !b->oom; n++) {
    e = ext2fs_get_next_inode_full (scan, &ino, (struct ext2_inode *) inode,
                                    bufsize);
    if (e == EXT2_ET_INODE_CSUM_INVALID || e == EXT2_ET_INODE_IS_GARBAGE) {
      if (ino && fs->inode_map && ext2fs_test_inode_bitmap2 (fs->inode_map, ino))
        warn (b, "inode %u: %s%s", ino, fsev_strerror (e),
              e == EXT2_ET_INODE_IS_GARBAGE ? ": ignored" : "");
      if (e == EXT2_ET_INODE_IS_GARBAGE)
        continue;
    }
    else if (e == EXT2_ET_BAD_BLOCK_IN_INODE_TABLE)
      continue;
    else if (e) {
      warn (b, "inode scan stopped: %s", fsev_strerror (e));
      break;
    }
    if (ino == 0)
      break;
    if (ino > fs->super->s_inodes_count)
      break;
    /* The inode bitmap says which inodes are in use (the journal's is,
     * whatever it says).
     */
    if (fs->inode_map && !ext2fs_test_inode_bitmap2 (fs->inode_map, ino) &&
        ino != b->journal_ino)
      continue;
    map_inode (b, ino, (struct ext2_inode *) inode);
  }
  ext2fs_close_inode_scan (scan);
  free (inode);
}

/* --- Names. --- */

static int
dir_cb (ext2_ino_t dir, int entry, struct ext2_dir_entry *dirent,
        int offset, int blocksize, char *buf, void *priv)
{
  struct builder *b = priv;
  unsigned len = ext2fs_dirent_name_len (dirent);

  if (++b->steps > b->max_steps)
    return DIRENT_ABORT;
  /* A directory whose first block does not name it as "." is not
   * written yet (ext2 may write the inode before its new block) or is
   * garbage: its entries are no names.
   */
  if (entry == DIRENT_DOT_FILE && offset == 0 && dirent->inode != dir) {
    b->stale_dir = true;
    return DIRENT_ABORT;
  }
  if (entry == DIRENT_DOT_FILE || entry == DIRENT_DOT_DOT_FILE ||
      dirent->inode == 0)
    return 0;
  if (len > EXT2_NAME_LEN)
    return 0;
  if (dirent->inode > b->fs->super->s_inodes_count) {
    warn (b, "directory %u: entry '%.*s' names inode %u, which does not exist",
          dir, (int) len, dirent->name, dirent->inode);
    return 0;
  }
  if (names_add (&b->L->names, dir, dirent->inode, dirent->name, len) == -1) {
    b->oom = true;
    return DIRENT_ABORT;
  }
  return 0;
}

static void
scan_names (struct builder *b)
{
  for (size_t i = 0; i < b->ndirs && !b->oom; i++) {
    size_t nlinks = b->L->names.nlinks, pool = b->L->names.pool_len;
    b->stale_dir = false;
    errcode_t e = ext2fs_dir_iterate2 (b->fs, b->dirs[i], 0, NULL, dir_cb, b);
    if (b->stale_dir) {
      b->L->names.nlinks = nlinks;
      b->L->names.pool_len = pool;
      warn (b, "directory %u: its first block does not start with its own "
            "\".\": entries ignored", b->dirs[i]);
      note_unread (b, b->dirs[i]);
      continue;
    }
    if (e) {
      warn (b, "directory %u: %s", b->dirs[i], fsev_strerror (e));
      note_unread (b, b->dirs[i]);
    }
    if (b->steps > b->max_steps)
      break;
  }
}

/* --- Sorting, free space, duplicates. --- */

static int
cmp_xattr (const void *a, const void *b)
{
  const struct xattr_owner *x = a, *y = b;
  if (x->pblk != y->pblk)
    return x->pblk < y->pblk ? -1 : 1;
  return x->ino < y->ino ? -1 : x->ino > y->ino;
}

/* One xattr run per distinct block, owned by its lowest inode; the
 * others are found through the xattrs table.
 */
static void
map_xattr_blocks (struct builder *b)
{
  struct fsev_layout *L = b->L;
  if (L->nxattrs)
    qsort (L->xattrs, L->nxattrs, sizeof *L->xattrs, cmp_xattr);
  for (size_t i = 0; i < L->nxattrs; i++)
    if (i == 0 || L->xattrs[i].pblk != L->xattrs[i - 1].pblk)
      add_run (b, L->xattrs[i].pblk, 1, FSEV_ROLE_XATTR, L->xattrs[i].ino,
               0, 0);
}

/* Blocks in use in the bitmap that nothing claims (the unused rest of a
 * bigalloc cluster, leaks in corrupt images) become "free, allocated".
 */
static void
map_allocated_gaps (struct builder *b)
{
  struct fsev_layout *L = b->L;
  ext2fs_block_bitmap map = b->fs->block_map;
  uint64_t first = b->fs->super->s_first_data_block;
  uint64_t covered = first, nruns = L->nruns;

  if (map == NULL)
    return;
  for (size_t i = 0; i <= nruns && !b->oom; i++) {
    uint64_t gap_end = i < nruns ? L->runs[i].pblk : L->fs_blocks;
    while (covered < gap_end) {
      blk64_t set, clear;
      if (ext2fs_find_first_set_block_bitmap2 (map, covered, gap_end - 1,
                                               &set) != 0)
        break;
      if (set < covered)        /* bigalloc: the cluster began earlier */
        set = covered;
      if (ext2fs_find_first_zero_block_bitmap2 (map, set, gap_end - 1,
                                                &clear) != 0)
        clear = gap_end;
      if (clear <= set)
        clear = set + 1;
      add_run (b, set, clear - set, FSEV_ROLE_FREE, 0, 0, RUN_ALLOCATED);
      covered = clear;
    }
    if (i < nruns && L->runs[i].pblk + L->runs[i].len > covered)
      covered = L->runs[i].pblk + L->runs[i].len;
  }
}

/* Does R continue P (the scan's rule for joining two runs)? */
bool
fsev_runs_join (const struct run *p, const struct run *r,
                uint32_t inodes_per_block)
{
  uint64_t aux_step = p->role == FSEV_ROLE_INODE_TABLE
    ? (uint64_t) p->len * inodes_per_block : p->len;
  bool owner_ok = p->owner == r->owner ||
    p->role == FSEV_ROLE_INODE_TABLE;       /* flex_bg: tables in a row */
  return p->role == r->role && owner_ok &&
    p->flags == (r->flags & ~RUN_EOF_PARTIAL) &&
    p->pblk + p->len == r->pblk && (uint64_t) p->aux + aux_step == r->aux &&
    (uint64_t) p->len + r->len <= UINT32_MAX / 2 &&
    p->role != FSEV_ROLE_SUPERBLOCK && p->role != FSEV_ROLE_FREE;
}

/* Merge runs that continue each other.  RUNS must be sorted. */
size_t
fsev_merge_runs (struct run *runs, size_t n, uint32_t inodes_per_block)
{
  size_t out = 0;

  for (size_t i = 0; i < n; i++) {
    struct run *r = &runs[i];
    if (out > 0 && fsev_runs_join (&runs[out - 1], r, inodes_per_block)) {
      struct run *p = &runs[out - 1];
      p->len += r->len;
      p->flags = r->flags;
      p->eof_bytes = r->eof_bytes;
      continue;
    }
    runs[out++] = *r;
  }
  return out;
}

static void
merge_runs (struct builder *b)
{
  b->L->nruns = fsev_merge_runs (b->L->runs, b->L->nruns,
                                 b->L->inodes_per_block);
}

/* Runs [0, N) and [N, nruns) are each sorted: merge them in order. */
static void
merge_sorted_tail (struct builder *b, size_t n)
{
  struct fsev_layout *L = b->L;
  size_t m = L->nruns - n;
  if (m == 0)
    return;
  struct run *out = malloc (L->nruns * sizeof *out);
  if (out == NULL) {
    b->oom = true;
    return;
  }
  size_t i = 0, j = n, k = 0;
  while (i < n && j < L->nruns)
    out[k++] = L->runs[j].pblk < L->runs[i].pblk ? L->runs[j++] : L->runs[i++];
  while (i < n)
    out[k++] = L->runs[i++];
  while (j < L->nruns)
    out[k++] = L->runs[j++];
  free (L->runs);
  L->runs = out;
  b->runs_cap = L->nruns;
}

static void
finish_runs (struct builder *b)
{
  struct fsev_layout *L = b->L;

  /* Stable by block: equal blocks (duplicate owners) keep the order
   * they were found in.
   */
  if (fsev_radix_sort (L->runs, L->nruns, sizeof *L->runs,
                       offsetof (struct run, pblk), sizeof L->runs->pblk) == -1) {
    b->oom = true;
    return;
  }
  merge_runs (b);
  size_t n = L->nruns;
  if (b->opts == NULL || !b->opts->no_allocated_gaps)
    map_allocated_gaps (b);     /* appends free runs in block order */
  merge_sorted_tail (b, n);
  if (b->oom)
    return;
  merge_runs (b);
  if (L->nruns) {
    void *p = realloc (L->runs, L->nruns * sizeof *L->runs);
    if (p)
      L->runs = p;
  }
  L->maxend = malloc ((L->nruns ? L->nruns : 1) * sizeof *L->maxend);
  if (L->maxend == NULL) {
    b->oom = true;
    return;
  }
  uint64_t m = 0;
  for (size_t i = 0; i < L->nruns; i++) {
    uint64_t end = L->runs[i].pblk + L->runs[i].len;
    if (end > m)
      m = end;
    L->maxend[i] = m;
  }
}

static int
cmp_jextent (const void *a, const void *b)
{
  const struct journal_extent *x = a, *y = b;
  return x->lblk < y->lblk ? -1 : x->lblk > y->lblk;
}

static double
now (void)
{
  struct timespec ts;
  clock_gettime (CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec / 1e9;
}

struct fsev_layout *
fsev_layout_build (const struct fsev_source *src,
                   const struct fsev_build_options *opts,
                   char *err, size_t errlen)
{
  double t0 = now ();
  struct builder b = { .opts = opts, .record_unread = true };
  struct fsev_layout *L;
  errcode_t e;

  L = calloc (1, sizeof *L);
  if (L == NULL) {
    snprintf (err, errlen, "out of memory");
    return NULL;
  }
  b.L = L;

  /* JOURNAL_DEV_OK: so that a journal device gets its own message. */
  e = fsev_source_open_fs (src, EXT2_FLAG_IGNORE_CSUM_ERRORS |
                           EXT2_FLAG_JOURNAL_DEV_OK, &b.fs);
  if (e) {
    snprintf (err, errlen, "cannot open the filesystem: %s",
              fsev_strerror (e));
    free (L);
    return NULL;
  }
  struct ext2_super_block *sb = b.fs->super;
  if (ext2fs_has_feature_journal_dev (sb)) {
    snprintf (err, errlen, "this is an external journal device, "
              "not a filesystem");
    goto fail;
  }
  /* Groups start at s_first_data_block: 1 with 1 KiB blocks (block 0
   * is the boot block), 0 otherwise and with bigalloc.  e2fsck refuses
   * any other value, and libext2fs (1.47.0) reading the bitmaps of such
   * a filesystem writes past its bitmap buffer (found by fuzz-layout:
   * 1 KiB blocks, s_first_data_block 256).
   */
  unsigned first_data = b.fs->blocksize == 1024 &&
    EXT2FS_CLUSTER_RATIO (b.fs) == 1 ? 1 : 0;
  if (sb->s_first_data_block != first_data) {
    snprintf (err, errlen, "the superblock says the first data block is "
              "%" PRIu32 ", not %u: the filesystem's geometry is corrupt",
              sb->s_first_data_block, first_data);
    goto fail;
  }

  L->block_size = b.fs->blocksize;
  L->fs_blocks = ext2fs_blocks_count (sb);
  L->fs_bytes = L->fs_blocks * L->block_size;
  L->inode_size = EXT2_INODE_SIZE (sb);
  if (L->inode_size == 0 || L->inode_size > L->block_size) {
    snprintf (err, errlen, "inode size %u is not valid", L->inode_size);
    goto fail;
  }
  if (sb->s_inodes_per_group == 0) {
    snprintf (err, errlen, "the superblock says 0 inodes per group");
    goto fail;
  }
  L->inodes_per_block = L->block_size / L->inode_size;
  L->inodes_per_group = sb->s_inodes_per_group;
  L->root_ino = EXT2_ROOT_INO;
  L->first_ino = EXT2_FIRST_INO (sb);
  L->inodes_count = sb->s_inodes_count;
  L->fs_type = fsev_fsinfo_type (sb);
  /* Every loop over block maps and directories together is bounded by
   * a generous multiple of what the filesystem can hold.
   */
  b.max_steps = 4 * (L->fs_blocks + sb->s_inodes_count) + 1024;

  /* Size the big arrays once from what the superblock promises (about
   * a run and a name per inode in use), bounded by what the filesystem
   * can hold, so that they rarely grow by copying.
   */
  uint64_t used = sb->s_inodes_count > sb->s_free_inodes_count
    ? sb->s_inodes_count - sb->s_free_inodes_count : 0;
  uint64_t guess = used + 8ULL * b.fs->group_desc_count + 1024;
  if (guess > L->fs_blocks + 1024)
    guess = L->fs_blocks + 1024;
  if (fsev_grow ((void **) &L->runs, &b.runs_cap, guess, sizeof *L->runs) == -1 ||
      names_reserve (&L->names, used + 1024) == -1) {
    snprintf (err, errlen, "out of memory");
    goto fail;
  }

  e = ext2fs_read_bitmaps (b.fs);
  if (e)
    warn (&b, "cannot read the bitmaps (%s): free space and inode use "
          "are guessed", fsev_strerror (e));

  map_fixed_metadata (&b);
  if (ext2fs_has_feature_mmp (sb) && sb->s_mmp_block)
    add_run (&b, sb->s_mmp_block, 1, FSEV_ROLE_MMP, 0, 0, 0);
  read_journal_superblock (&b);
  scan_inodes (&b);
  if (b.journal_ino && !b.journal_seen && !b.oom) {
    /* Hidden from the scan by its group's lazy-init fields: read it. */
    struct ext2_inode_large jin;
    memset (&jin, 0, sizeof jin);
    size_t n0 = L->ninodes;
    if (ext2fs_read_inode_full (b.fs, b.journal_ino, (struct ext2_inode *) &jin,
                                sizeof jin) == 0)
      map_inode (&b, b.journal_ino, (struct ext2_inode *) &jin);
    if (L->ninodes == n0 + 1) {
      /* Records are sorted by inode: move it to its place (fuzz-layout
       * found the lookups failing with it at the end).
       */
      struct fsev_inode r = L->inodes[n0];
      size_t at = n0;
      while (at > 0 && L->inodes[at - 1].ino > r.ino)
        at--;
      memmove (&L->inodes[at + 1], &L->inodes[at], (n0 - at) * sizeof r);
      L->inodes[at] = r;
    }
  }
  map_xattr_blocks (&b);
  if (!b.oom)
    scan_names (&b);
  if (names_finish (&L->names) == -1)
    b.oom = true;
  finish_runs (&b);
  if (b.oom) {
    snprintf (err, errlen, "out of memory while building the layout");
    goto fail;
  }

  L->journal_ino = b.journal_ino;
  if (L->njextents > 1)
    qsort (L->jextents, L->njextents, sizeof *L->jextents, cmp_jextent);

  add_special_name (&b, EXT2_BAD_INO, "<bad blocks>");
  add_special_name (&b, EXT2_BOOT_LOADER_INO, "<boot loader>");
  add_special_name (&b, EXT2_UNDEL_DIR_INO, "<undelete>");
  add_special_name (&b, EXT2_RESIZE_INO, "<resize>");
  add_special_name (&b, b.journal_ino, "<journal>");
  add_special_name (&b, sb->s_usr_quota_inum, "<quota:user>");
  add_special_name (&b, sb->s_grp_quota_inum, "<quota:group>");
  add_special_name (&b, sb->s_prj_quota_inum, "<quota:project>");
  add_special_name (&b, sb->s_orphan_file_inum, "<orphan file>");
  add_special_name (&b, EXT2_EXCLUDE_INO, "<exclude>");

  L->stats.runs = L->nruns;
  L->stats.links = L->names.nlinks;
  L->stats.names_bytes = L->names.pool_len;
  L->stats.memory = L->nruns * (sizeof *L->runs + sizeof *L->maxend) +
    L->nxattrs * sizeof *L->xattrs +
    L->names.nlinks * sizeof *L->names.links + L->names.pool_cap +
    L->ninodes * sizeof *L->inodes;
  L->stats.build_seconds = now () - t0;
  L->runs_cap = L->nruns;
  L->inodes_cap = b.inodes_cap;
  L->xattrs_cap = b.xattrs_cap;
  L->unread_dirs = b.unread;
  L->nunread_dirs = b.nunread;

  free (b.dirs);
  ext2fs_close_free (&b.fs);
  return L;

 fail:
  free (b.unread);
  free (b.dirs);
  ext2fs_close_free (&b.fs);
  fsev_layout_free (L);
  return NULL;
}

void
fsev_layout_free (struct fsev_layout *L)
{
  if (L == NULL)
    return;
  free (L->runs);
  free (L->maxend);
  free (L->xattrs);
  free (L->inodes);
  free (L->jextents);
  free (L->unread_dirs);
  names_free (&L->names);
  free (L);
}

/* --- One inode, one directory: what a commit-time update re-reads. --- */

static int
cmp_run_pblk (const void *a, const void *b)
{
  const struct run *x = a, *y = b;
  return x->pblk < y->pblk ? -1 : x->pblk > y->pblk;
}

int
fsev_map_one_inode (ext2_filsys fs, const struct fsev_layout *L, uint32_t ino,
                    const void *raw, struct fsev_one_inode *out)
{
  struct fsev_layout S = {
    .block_size = L->block_size, .fs_blocks = L->fs_blocks,
    .fs_bytes = L->fs_bytes, .inode_size = L->inode_size,
    .inodes_per_block = L->inodes_per_block,
    .inodes_per_group = L->inodes_per_group, .root_ino = L->root_ino,
    .first_ino = L->first_ino, .inodes_count = L->inodes_count,
  };
  struct builder b = {
    .fs = fs, .L = &S, .journal_ino = L->journal_ino,
    .jlog_end = UINT64_MAX, .jmaxlen = UINT64_MAX,
    .max_steps = 4 * (L->fs_blocks + L->inodes_count) + 1024,
  };
  struct ext2_inode_large *inode = calloc (1, L->inode_size > sizeof *inode
                                           ? L->inode_size : sizeof *inode);
  memset (out, 0, sizeof *out);
  if (inode == NULL)
    return -1;
  memcpy (inode, raw, L->inode_size);
  /* block_iterate3 reads the inode again through libext2fs's cache,
   * which must not hold another view's copy.
   */
  ext2fs_flush_icache (fs);
  map_inode (&b, ino, (struct ext2_inode *) inode);
  free (inode);
  /* The journal inode's extents (add_journal_run) are the model's,
   * never this one inode's: a re-mapped journal inode (its inode-table
   * block changed) must not leak them (fuzz-follow found it).
   */
  free (S.jextents);
  if (b.oom) {
    free (S.runs); free (S.inodes); free (S.xattrs); free (b.dirs);
    return -1;
  }
  if (S.ninodes == 1) {
    out->in_use = true;
    out->rec = S.inodes[0];
    out->is_dir = b.ndirs == 1;
  }
  if (S.nxattrs)
    out->xattr_blk = S.xattrs[0].pblk;
  if (S.nruns > 1)
    qsort (S.runs, S.nruns, sizeof *S.runs, cmp_run_pblk);
  S.nruns = fsev_merge_runs (S.runs, S.nruns, S.inodes_per_block);
  out->runs = S.runs;
  out->nruns = S.nruns;
  out->truncated = b.steps > b.max_steps;
  free (S.inodes);
  free (S.xattrs);
  free (b.dirs);
  return 0;
}

int
fsev_dir_entries (ext2_filsys fs, const struct fsev_layout *L, uint32_t dir,
                  struct fsev_names *out)
{
  struct fsev_layout S = {
    .block_size = L->block_size, .fs_blocks = L->fs_blocks,
    .inode_size = L->inode_size, .inodes_count = L->inodes_count,
    .names = *out,
  };
  struct builder b = {
    .fs = fs, .L = &S,
    .max_steps = 4 * (L->fs_blocks + L->inodes_count) + 1024,
  };
  ext2fs_flush_icache (fs);
  size_t nlinks = S.names.nlinks, pool = S.names.pool_len;
  ext2fs_dir_iterate2 (fs, dir, 0, NULL, dir_cb, &b);
  if (b.stale_dir) {
    S.names.nlinks = nlinks;
    S.names.pool_len = pool;
  }
  *out = S.names;
  return b.oom ? -1 : 0;
}
