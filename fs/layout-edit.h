/* fs/layout-edit.h: in-place edits of the layout model, with an undo
 * log.
 *
 * A commit-time update (layout-update.c) changes the model where the
 * transaction changed the filesystem, before the handlers decide; a
 * veto rolls the edits back.  Every edit keeps the arrays sorted the
 * way a fresh scan sorts them, so lookups stay binary searches and the
 * model stays comparable, field by field, with a fresh scan.
 */
#ifndef FSEVENT_LAYOUT_EDIT_H
#define FSEVENT_LAYOUT_EDIT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "layout-internal.h"

struct undo_op;
struct fsev_undo {
  struct undo_op *v;
  size_t n, cap;
};

/* Each returns 0, -1 when out of memory (nothing changed), or 1 when
 * the edit does not fit the model as it is (the run to remove is not
 * there, the run to add overlaps another): the caller then falls back
 * to a full scan.
 */
extern int fsev_edit_run_remove (struct fsev_layout *L, const struct run *r,
                                 struct fsev_undo *u);
extern int fsev_edit_run_insert (struct fsev_layout *L, const struct run *r,
                                 struct fsev_undo *u);
/* Put R2 where R is, without moving the array: 1 when R2 does not fit
 * there (the caller then removes and inserts).
 */
extern int fsev_edit_run_replace (struct fsev_layout *L, const struct run *r,
                                  const struct run *r2, struct fsev_undo *u);
/* Set (REC) or remove (NULL) the record of INO. */
extern int fsev_edit_inode (struct fsev_layout *L, uint32_t ino,
                            const struct fsev_inode *rec, struct fsev_undo *u);
/* Add or remove the link PARENT/NAME -> CHILD. */
extern int fsev_edit_link (struct fsev_layout *L, bool add, uint32_t parent,
                           uint32_t child, const char *name, size_t len,
                           struct fsev_undo *u);
/* Add or remove INO as an owner of xattr block PBLK, and keep the
 * block's run owned by its lowest owner.
 */
extern int fsev_edit_xattr (struct fsev_layout *L, bool add, uint64_t pblk,
                            uint32_t ino, struct fsev_undo *u);

/* Undo every edit logged in U, newest first, and empty U. */
extern void fsev_undo_rollback (struct fsev_layout *L, struct fsev_undo *u);
/* Forget the log (the edits stay). */
extern void fsev_undo_free (struct fsev_undo *u);

/* Give back the names pool's garbage when it is more than half of it
 * (called after a commit took effect: rollback needs the old bytes).
 * Returns 0, or -1 when out of memory (nothing changed).
 */
extern int fsev_edit_compact_names (struct fsev_layout *L);

#endif
