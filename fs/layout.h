/* fs/layout.h: the layout model of an ext2/3/4 filesystem.
 *
 * For any byte range of the device it answers the ordered list of
 * segments covering it, each with its role (superblock, inode table,
 * file data, free space, ...) and owner (inode, path, position in the
 * file).  The model is built once with libext2fs and then held in
 * structures of our own: lookups cost O(log n) and never touch the
 * image.  Every byte of metadata it reads is treated as hostile.
 */
#ifndef FSEVENT_LAYOUT_H
#define FSEVENT_LAYOUT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "source.h"

enum fsev_role {
  FSEV_ROLE_SUPERBLOCK,
  FSEV_ROLE_GROUP_DESCRIPTORS,
  FSEV_ROLE_RESERVED_GDT,
  FSEV_ROLE_BLOCK_BITMAP,
  FSEV_ROLE_INODE_BITMAP,
  FSEV_ROLE_INODE_TABLE,
  FSEV_ROLE_JOURNAL,
  FSEV_ROLE_MMP,
  FSEV_ROLE_EXTENT_TREE,
  FSEV_ROLE_INDIRECT,
  FSEV_ROLE_DIRECTORY,
  FSEV_ROLE_XATTR,
  FSEV_ROLE_DATA,
  FSEV_ROLE_FREE,
  FSEV_ROLE_OUTSIDE,
  FSEV_ROLE_COUNT
};

/* Segment flags. */
#define FSEV_SEG_BACKUP      0x0001  /* backup superblock / descriptors */
#define FSEV_SEG_BEYOND_EOF  0x0002  /* data: past the file's i_size */
#define FSEV_SEG_UNWRITTEN   0x0004  /* data: unwritten (uninit) extent */
#define FSEV_SEG_DUP         0x0008  /* another owner claims these bytes too */
#define FSEV_SEG_ALLOCATED   0x0010  /* free: no owner, yet in use in the bitmap */
#define FSEV_SEG_JOURNAL_SB  0x0020  /* journal: the journal superblock */
#define FSEV_SEG_JOURNAL_LOG 0x0040  /* journal: the log area */
#define FSEV_SEG_JOURNAL_FC  0x0080  /* journal: the fast-commit area */

struct fsev_segment {
  uint64_t offset;              /* device bytes */
  uint64_t length;
  enum fsev_role role;
  unsigned flags;
  uint32_t ino;                 /* owner inode, 0 for none */
  uint32_t group;               /* fixed metadata: the group it belongs to */
  uint64_t position;            /* data/directory/journal: byte offset in the inode */
  uint32_t first_ino;           /* inode_table: inodes the range holds */
  uint32_t last_ino;
};

struct fsev_layout;

struct fsev_build_options {
  /* Called once per inconsistency found (bounded: see max_warnings). */
  void (*warn) (void *opaque, const char *msg);
  void *opaque;
  unsigned max_warnings;        /* 0 means 100 */
  /* Leave out the "free, allocated" runs (blocks in use in the bitmap
   * that nothing claims).  The plugin's model does: they depend on
   * every bitmap block, which a commit-time update does not re-read,
   * and the write path treats them as free space anyway.
   */
  bool no_allocated_gaps;
};

struct fsev_layout_stats {
  uint64_t runs;                /* block runs held (extents, metadata, ...) */
  uint64_t files;               /* inodes in use with a mapping or a name */
  uint64_t directories;
  uint64_t links;               /* directory entries (names) */
  uint64_t names_bytes;
  uint64_t memory;              /* bytes held by the model */
  uint64_t warnings;
  double build_seconds;
};

/* Build the model of the filesystem on SRC.  Returns NULL with a message
 * in ERR when the source holds no ext2/3/4 filesystem it can map.
 */
extern struct fsev_layout *fsev_layout_build (const struct fsev_source *src,
                                              const struct fsev_build_options *opts,
                                              char *err, size_t errlen);
extern void fsev_layout_free (struct fsev_layout *layout);

/* Call FN for each segment covering [OFFSET, OFFSET+LENGTH) in order of
 * offset.  Bytes claimed by several owners (corrupt images) give one
 * segment per owner, flagged FSEV_SEG_DUP; there all the segments of one
 * owner's run come before the next owner's, so offsets may go back among
 * DUP segments, never before the end of the last segment that is not.
 * FN returns 0 to go on, non-zero to stop; that value is returned.
 */
typedef int (*fsev_segment_fn) (const struct fsev_segment *seg, void *opaque);
extern int fsev_layout_lookup (const struct fsev_layout *layout,
                               uint64_t offset, uint64_t length,
                               fsev_segment_fn fn, void *opaque);

/* The N-th path of inode INO (every hard link is one path), written
 * into BUF.  Returns the number of paths INO has (so 0 when it has no
 * name, e.g. the journal or an orphan), or -1 if BUF is too small.
 * Special inodes without a name get a pseudo-path in angle brackets,
 * e.g. "<journal>".
 */
extern int fsev_layout_path (const struct fsev_layout *layout, uint32_t ino,
                             unsigned n, char *buf, size_t buflen);

/* For an xattr block shared by several inodes: all its owners. Returns
 * the count; fills at most MAX entries of INOS.
 */
extern unsigned fsev_layout_xattr_owners (const struct fsev_layout *layout,
                                          uint64_t offset, uint32_t *inos,
                                          unsigned max);

/* An inode in use, as the model saw it: what namespace and attribute
 * changes are diffed on.
 */
struct fsev_inode {
  uint32_t ino;
  uint32_t generation;
  uint16_t mode;                /* type and permission bits */
  uint16_t links;
  uint32_t uid, gid;
  uint32_t flags;               /* i_flags */
  uint64_t size;
  int64_t atime, mtime, ctime, crtime;  /* seconds; crtime 0 if none */
  uint32_t atime_ns, mtime_ns, ctime_ns, crtime_ns;
};

/* The inode INO if it is in use, else NULL. */
extern const struct fsev_inode *fsev_layout_inode (const struct fsev_layout *layout,
                                                   uint32_t ino);
/* Every inode in use, in order of number. */
extern const struct fsev_inode *fsev_layout_inodes (const struct fsev_layout *layout,
                                                    size_t *n);
/* The directories whose entries the build that made LAYOUT did not
 * (all) read, in inode order of the scan: *DIRS, and how many.  (The
 * in-place update keeps none: what a guest does later is decided.)
 */
extern size_t fsev_layout_unread_dirs (const struct fsev_layout *layout,
                                       const uint32_t **dirs);

/* The names of INO as (parent, name) links; returns how many. */
struct fsev_name {
  uint32_t parent;
  const char *name;             /* not NUL-terminated */
  size_t len;
};
extern unsigned fsev_layout_names (const struct fsev_layout *layout, uint32_t ino,
                                   struct fsev_name *names, unsigned max);

/* Where the model places the journal (its inode and its blocks), copied
 * so that a commit can tell whether it moved, appeared or went away.
 */
struct fsev_journal_place;
extern struct fsev_journal_place *
fsev_layout_journal_place (const struct fsev_layout *layout);
extern bool fsev_journal_place_same (const struct fsev_journal_place *p,
                                     const struct fsev_layout *layout);
extern void fsev_journal_place_free (struct fsev_journal_place *p);

/* The journal inode (0 for none), and the device block of its logical
 * block JBLK (0 when it is not mapped).
 */
extern uint32_t fsev_layout_journal_ino (const struct fsev_layout *layout);
extern uint64_t fsev_layout_journal_pblk (const struct fsev_layout *layout,
                                          uint32_t jblk);

/* The inode at PATH ("/a/b"), or 0 if there is none. */
extern uint32_t fsev_layout_lookup_path (const struct fsev_layout *layout,
                                         const char *path);
/* Each run of file data of INO (logical block, device block, blocks),
 * in no particular order.  FN returns non-zero to stop (returned).
 */
extern int fsev_layout_file_blocks (const struct fsev_layout *layout,
                                    uint32_t ino,
                                    int (*fn) (uint64_t lblk, uint64_t pblk,
                                               uint64_t len, bool unwritten,
                                               void *opaque),
                                    void *opaque);

extern const char *fsev_role_name (enum fsev_role role);
extern void fsev_layout_get_stats (const struct fsev_layout *layout,
                                   struct fsev_layout_stats *stats);
extern uint64_t fsev_layout_fs_bytes (const struct fsev_layout *layout);
extern unsigned fsev_layout_block_size (const struct fsev_layout *layout);
/* "ext2", "ext3" or "ext4" and, for an external journal, its UUID. */
extern const char *fsev_layout_fs_type (const struct fsev_layout *layout);
extern bool fsev_layout_external_journal (const struct fsev_layout *layout);

#endif /* FSEVENT_LAYOUT_H */
