/* fs/diff.h: what one transaction changed in the namespace, found by
 * comparing the layout model before and after it.
 *
 * Changes are reported per inode: created (it has a name for the first
 * time), deleted (freed), a name added (link), removed (unlink) or both
 * (rename), its size or its attributes changed.  Data is not diffed
 * here: the write path attributes it.
 */
#ifndef FSEVENT_DIFF_H
#define FSEVENT_DIFF_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "layout.h"

enum fsev_change_kind {
  FSEV_CREATE,
  FSEV_DELETE,
  FSEV_LINK,
  FSEV_UNLINK,
  FSEV_RENAME,
  FSEV_SET_SIZE,
  FSEV_SET_ATTRIBUTES,
};

/* Attributes set_attributes compares (the same bits as fsevent.h). */
#define FSEV_ATTR_MODE   0x01
#define FSEV_ATTR_UID    0x02
#define FSEV_ATTR_GID    0x04
#define FSEV_ATTR_FLAGS  0x08
#define FSEV_ATTR_ATIME  0x10
#define FSEV_ATTR_MTIME  0x20
#define FSEV_ATTR_CTIME  0x40
#define FSEV_ATTR_CRTIME 0x80
#define FSEV_ATTR_TIMES  0xf0
#define FSEV_ATTR_LINKS  0x100  /* the link count */
#define FSEV_ATTR_BLOCKS 0x200  /* what the file's bytes are: blocks moved,
                                   holes made or filled inside the file, or
                                   inline content (a fast symlink's target) */
#define FSEV_ATTR_XATTR  0x400  /* extended attributes (ACLs, labels) */

struct fsev_change {
  enum fsev_change_kind kind;
  uint32_t ino;
  const struct fsev_inode *old_inode;   /* in the old model, or NULL */
  const struct fsev_inode *new_inode;   /* in the new model, or NULL */
  int old_link;                 /* index of the name it had (old model), -1 */
  int new_link;                 /* index of the name it has (new model), -1 */
  uint32_t replaced_ino;        /* rename/link over another inode's name */
  unsigned changed;             /* set_attributes: FSEV_ATTR_* */
  bool reused;                  /* delete of a number created again in
                                   the same step: it comes first */
};

/* The changes from OLD to NEW in the order events are raised: create
 * (parents before children), rename, link, set_size, set_attributes,
 * unlink, delete (children before parents).  An inode that gets a name
 * is created, unless WAS_NAMED (may be NULL) says it had one in an
 * earlier model (then it is a link).  Returns the number of changes in
 * *OUT (caller frees), or -1 on out of memory.
 */
extern ssize_t fsev_diff (const struct fsev_layout *old_layout,
                          const struct fsev_layout *new_layout,
                          bool (*was_named) (uint32_t ino, void *opaque),
                          void *opaque, struct fsev_change **out);

/* The same, where EXTRA (may be NULL) adds what the models do not
 * hold for an inode present in both: FSEV_ATTR_BLOCKS and
 * FSEV_ATTR_XATTR, found by whoever read the blocks.
 */
extern ssize_t fsev_diff_extra (const struct fsev_layout *old_layout,
                                const struct fsev_layout *new_layout,
                                bool (*was_named) (uint32_t ino, void *opaque),
                                unsigned (*extra) (uint32_t ino, void *opaque),
                                void *opaque, struct fsev_change **out);

/* Rank of a kind in that order, for merging other events in. */
extern int fsev_change_rank (enum fsev_change_kind kind);

#endif
