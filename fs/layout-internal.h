/* fs/layout-internal.h: the model's own structures, shared by the
 * builder (layout-build.c) and the queries (layout-query.c).
 */
#ifndef FSEVENT_LAYOUT_INTERNAL_H
#define FSEVENT_LAYOUT_INTERNAL_H

#include <stdbool.h>
#include <stdint.h>

#include "layout.h"
#include "names.h"

/* Run flags (8 bits: they must fit struct run). */
#define RUN_BACKUP      0x01
#define RUN_UNWRITTEN   0x02
#define RUN_ALLOCATED   0x04
#define RUN_JOURNAL_SB  0x08
#define RUN_JOURNAL_LOG 0x10
#define RUN_JOURNAL_FC  0x20
#define RUN_BEYOND_EOF  0x40    /* data wholly past i_size */
#define RUN_EOF_PARTIAL 0x80    /* data: i_size ends inside the last block */

/* One contiguous range of blocks with one role and one owner: 24 bytes.
 * Sorted by pblk.  Runs overlap only where the image is corrupt (two
 * owners claim a block); maxend[] makes those findable.
 */
struct run {
  uint64_t pblk;
  uint32_t len;                 /* blocks */
  uint32_t owner;               /* inode; for fixed metadata the group */
  uint32_t aux;                 /* logical block; inode_table: first inode */
  uint8_t role;                 /* enum fsev_role */
  uint8_t flags;                /* RUN_* */
  uint16_t eof_bytes;           /* RUN_EOF_PARTIAL: bytes of the last
                                   block that lie inside the file */
};

struct xattr_owner {
  uint64_t pblk;
  uint32_t ino;
  uint32_t reserved;
};

/* A piece of the journal inode: logical blocks [lblk, lblk+len) at pblk. */
struct journal_extent {
  uint64_t pblk;
  uint32_t lblk;
  uint32_t len;
};

struct fsev_layout {
  unsigned block_size;
  uint64_t fs_blocks;           /* blocks_count */
  uint64_t fs_bytes;
  uint32_t inode_size;
  uint32_t inodes_per_block;
  uint32_t inodes_per_group;
  uint32_t root_ino;
  uint32_t first_ino;           /* first inode not reserved */
  uint32_t inodes_count;
  const char *fs_type;
  bool external_journal;

  struct run *runs;
  uint64_t *maxend;             /* maxend[i] = max (pblk + len) of runs[0..i] */
  size_t nruns;
  size_t runs_cap;              /* room in runs and maxend (layout-edit.c) */
  size_t inodes_cap, xattrs_cap;

  struct xattr_owner *xattrs;   /* (block, owner) pairs, sorted */
  size_t nxattrs;

  struct fsev_names names;

  struct fsev_inode *inodes;    /* in use, sorted by number */
  size_t ninodes;

  uint32_t journal_ino;
  struct journal_extent *jextents;  /* sorted by lblk */
  size_t njextents;

  /* Directories whose entries a full build did not (all) read: a "."
   * that is not their own, blocks outside the filesystem, an error.
   * Diagnostics of the build that made this model: the in-place update
   * does not keep them.
   */
  uint32_t *unread_dirs;
  size_t nunread_dirs;

  /* Pseudo-paths of special inodes, e.g. "<journal>". */
  struct { uint32_t ino; const char *name; } special[12];
  unsigned nspecial;

  struct fsev_layout_stats stats;
};

/* --- For the commit-time update (layout-update.c). --- */

#include <ext2fs/ext2fs.h>

/* One inode as a fresh scan maps it: its record, its runs (sorted by
 * block and merged as the scan merges them), its xattr block, whether
 * the names pass reads it as a directory.
 */
struct fsev_one_inode {
  bool in_use;                  /* the scan would record it */
  bool is_dir;
  struct fsev_inode rec;
  uint64_t xattr_blk;           /* 0: none */
  struct run *runs;             /* caller frees */
  size_t nruns;
  bool truncated;               /* hit the step bound: not exact */
};

/* Map inode INO of FS (whose raw bytes, inode_size of them, are INODE)
 * the way fsev_layout_build does, with the geometry of L.  Returns 0,
 * or -1 when out of memory.
 */
extern int fsev_map_one_inode (ext2_filsys fs, const struct fsev_layout *L,
                               uint32_t ino, const void *inode,
                               struct fsev_one_inode *out);

/* The names directory DIR gives, the way the names pass reads them
 * (none when its first block does not name it as "."), added to OUT
 * (not sorted).  Returns 0, or -1 when out of memory.
 */
extern int fsev_dir_entries (ext2_filsys fs, const struct fsev_layout *L,
                             uint32_t dir, struct fsev_names *out);

/* Does R continue P, so that a scan joins them into one run? */
extern bool fsev_runs_join (const struct run *p, const struct run *r,
                            uint32_t inodes_per_block);
/* Merge runs that continue each other (sorted runs, the scan's rule). */
extern size_t fsev_merge_runs (struct run *runs, size_t n,
                               uint32_t inodes_per_block);

#endif
