/* fs/layout-update.h: update the layout model from what one commit
 * changed, instead of rescanning the filesystem.
 *
 * The caller names the filesystem blocks whose committed content may
 * have changed (a transaction's tags and revokes, or the metadata
 * blocks a write outside the journal changed) and gives two views of
 * the filesystem: before and after.  The update reads only what those
 * blocks lead to: the inodes in a changed inode-table block or whose
 * bitmap bit flipped, the owners of changed tree blocks, the
 * directories with a changed block, and re-maps each the way a fresh
 * scan would.  It edits the model in place (layout-edit.h), so a veto
 * can roll it back, and hands fsev_diff two small models of the
 * touched inodes (layout-subset.h) so events come from the same delta.
 *
 * A change it cannot follow (the superblock's or a descriptor's
 * geometry, the journal or resize inode, blocks with several owners, a
 * model that does not match what it re-reads) is answered with
 * FSEV_UPDATE_RESCAN and a reason: the caller then scans, as at
 * start-up.
 */
#ifndef FSEVENT_LAYOUT_UPDATE_H
#define FSEVENT_LAYOUT_UPDATE_H

#include <stddef.h>
#include <stdint.h>

#include "layout.h"
#include "layout-edit.h"
#include "source.h"

/* What re-reads the filesystem: a libext2fs handle opened once (per
 * geometry) over a view the update switches between.
 */
struct fsev_updater;

/* Open over VIEW (the committed view now).  NULL with ERR set when the
 * filesystem cannot be opened or its bitmaps cannot be read (then every
 * commit needs a scan).
 */
extern struct fsev_updater *fsev_updater_open (const struct fsev_layout *L,
                                               const struct fsev_source *view,
                                               char *err, size_t errlen);
extern void fsev_updater_close (struct fsev_updater *u);

/* An inode whose bytes or extended attributes changed in ways its
 * record does not show (FSEV_ATTR_BLOCKS, FSEV_ATTR_XATTR of diff.h).
 */
struct fsev_extra {
  uint32_t ino;
  unsigned changed;
};

struct fsev_update {
  struct fsev_undo undo;        /* the edits made to the model */
  struct fsev_extra *extra;     /* by inode */
  size_t nextra, extra_cap;
  struct fsev_layout *before;   /* the touched inodes before */
  struct fsev_layout *after;    /* and after */
  size_t blocks;                /* changed blocks looked at */
  size_t inodes;                /* inodes re-mapped */
  size_t dirs;                  /* directories re-read */
  uint32_t first_inos[8];       /* the first inodes re-mapped (debug) */
};

enum fsev_update_result {
  FSEV_UPDATE_DONE,             /* L updated; UP holds the delta */
  FSEV_UPDATE_RESCAN,           /* L unchanged; WHY says why */
  FSEV_UPDATE_NOMEM,            /* L unchanged */
};

/* Update L for BLOCKS (filesystem block numbers, any order, repeats
 * fine) changing from OLD_VIEW to NEW_VIEW.  SCAN_SECONDS (0: no limit)
 * is what a full scan costs: a transaction whose update would cost more
 * (a big untar) is answered FSEV_UPDATE_RESCAN.
 */
extern enum fsev_update_result
fsev_update (struct fsev_layout *L, struct fsev_updater *u,
             const struct fsev_source *old_view,
             const struct fsev_source *new_view,
             const uint64_t *blocks, size_t nblocks, double scan_seconds,
             struct fsev_update *up, char *why, size_t whylen);

/* What fsev_diff_extra should add for INO. */
extern unsigned fsev_update_extra (const struct fsev_update *up, uint32_t ino);

/* (layout-extra.c) After a full scan: FSEV_ATTR_BLOCKS (block maps) and FSEV_ATTR_XATTR
 * (xattr block numbers; their content, in-inode attributes and inline
 * content: fsev_extra_from_content below) between two
 * whole models, into UP's extra list.  0, or -1 out of memory.
 */
extern int fsev_extra_from_models (const struct fsev_layout *A,
                                   const struct fsev_layout *B,
                                   struct fsev_update *up);

/* After a full scan too: what the models do not hold, from the blocks
 * that changed (BLOCKS, from OLD_VIEW to NEW_VIEW; A the model before,
 * B after): FSEV_ATTR_BLOCKS for changed inline content (inline data, a
 * fast symlink's target), FSEV_ATTR_XATTR for a changed in-inode xattr
 * area or xattr block content -- what fsev_extra_from_models cannot
 * see, and the commit-time update reads itself.  Merged into UP's extra
 * list.  0, or -1 out of memory.
 */
extern int fsev_extra_from_content (const struct fsev_layout *A,
                                    const struct fsev_layout *B,
                                    const struct fsev_source *old_view,
                                    const struct fsev_source *new_view,
                                    const uint64_t *blocks, size_t nblocks,
                                    struct fsev_update *up);

/* Roll the edits back (a veto) and free UP. */
extern void fsev_update_rollback (struct fsev_layout *L, struct fsev_update *up);
/* Keep the edits and free UP. */
extern void fsev_update_release (struct fsev_update *up);

#endif
