/* plugin/follow.h: following the guest through its journal.
 *
 * The model (layout and committed overlay) changes only at commit
 * points: a jbd2 commit block on ext3/ext4, a metadata write that
 * changes the committed view on ext2 (or outside the journal).  Those
 * requests take the model exclusively; every other request holds it
 * shared, so a commit sees no write in flight and every write sees one
 * model from start to end.
 */
#ifndef FSEVENT_FOLLOW_H
#define FSEVENT_FOLLOW_H

#include <stdbool.h>
#include <stdint.h>

#include "fsevent.h"
#include "layout.h"
#include "log.h"

struct conn;

/* One client request. */
struct io {
  enum fsevent_operation op;
  const void *buf;
  uint32_t count;
  uint64_t offset;
  bool may_trim, fast, fua;
  /* Write path: after the write, its whole blocks of CACHE_BS bytes
   * (counted from the device offset CACHE_BASE) go into the block cache
   * (blockcache.h); 0: not cached.
   */
  uint32_t cache_bs;
  uint64_t cache_base;
};

/* Debug switch -D fsevent.check=1: check the model after every
 * transaction against a fresh replay and scan.
 */
extern int fsevent_debug_check;
/* -D fsevent.commit_timing=1: where each commit point's time goes. */
extern int fsevent_debug_commit_timing;

/* on-unparseable=deny|allow (see follow.c). */
extern int follow_set_on_unparseable (const char *value);

/* One followed filesystem: the whole device, or one partition of it.
 * The follow_* calls below take requests (struct io) and give segments
 * in the volume's own offsets (0 is the filesystem's first byte);
 * events carry device offsets.
 */
struct volume;
struct device;
extern unsigned volume_partition (const struct volume *vol);
extern uint64_t volume_offset (const struct volume *vol);
extern uint64_t volume_length (const struct volume *vol);

/* Start following the filesystem at OFFSET..OFFSET+LENGTH of DEV (its
 * model LAYOUT, which the volume owns from now on, even on failure):
 * replay a journal that needs recovery into the overlay (never into the
 * device) and rebuild the model from the committed view.  NULL on
 * error (reported).
 */
extern struct volume *follow_init (struct device *dev, unsigned partition,
                                   uint64_t offset, uint64_t length,
                                   struct fsev_layout *layout);
/* Give up what is still pending (summary) and free the volume. */
extern void follow_fini (struct volume *vol);

extern void follow_lock_shared (struct volume *vol);
extern void follow_lock_exclusive (struct volume *vol);
extern void follow_unlock (struct volume *vol);
extern const struct fsev_layout *follow_layout (const struct volume *vol);
/* The paths where the model and the kernel may disagree on what is
 * there, as the model was built at start-up: "/" when the root is not
 * held; every path the model names whose inode it does not hold as in
 * use (the inode bitmap says free; the kernel opens it all the same);
 * every directory whose entries it did not (all) read.  FN with the
 * partition, the path, why, and OPAQUE; a non-zero return stops the
 * walk and is returned.  -1 when out of memory.
 */
extern int follow_paths_in_doubt (struct volume *vol,
                                  int (*fn) (unsigned partition,
                                             const char *path,
                                             const char *why, void *opaque),
                                  void *opaque);

/* Shared lock held: does segment SEG of request IO need the exclusive
 * path (a commit block, a journal superblock, a journal block the
 * overlay still needs, a metadata change outside the journal)?
 */
extern bool follow_segment_needs_exclusive (struct volume *vol,
                                            const struct io *io,
                                            const struct fsev_segment *seg);
/* Shared lock held: are these data bytes a checkpoint of a journalled
 * copy (data=journal), already attributed at the commit?
 */
extern bool follow_is_checkpoint (struct volume *vol, const struct io *io,
                                  const struct fsev_segment *seg);

/* Exclusive lock held: the commit-time decisions request IO carries. */
struct follow_plan;
extern struct follow_plan *follow_prepare (struct volume *vol,
                                           const struct io *io,
                                           struct conn *conn, int *err);
/* Run the before phase of the plan's events; the errno of a veto or 0. */
extern int follow_plan_before (struct follow_plan *p, struct log_batch *lb);
/* After the I/O: install the plan when STATUS is 0, then run the after
 * phase.  Frees the plan.
 */
extern void follow_plan_finish (struct follow_plan *p, struct log_batch *lb,
                                int status);
/* The plan is a commit point: a transaction, or a change to the model. */
extern bool follow_plan_commits (const struct follow_plan *p);

/* ext2 (no journal followed): a request's metadata blocks are held in
 * the volume's epoch until the guest's next flush instead of going to
 * the image.  The filesystem blocks the plan holds back (up to MAX
 * into BLOCKS; returns how many): the caller writes everything else.
 */
extern size_t follow_plan_held (const struct follow_plan *p, uint64_t *blocks,
                                size_t max);
extern unsigned follow_block_size (const struct volume *vol);
/* Decide the epoch (the guest flushed, wrote FUA, or the epoch is
 * full), then write it home: 0, or the errno of a veto (the epoch is
 * dropped) or of a failed write or lock (it is kept).
 */
extern int follow_epoch_commit (struct volume *vol, struct conn *conn);
extern bool follow_epoch_full (struct volume *vol);
extern bool follow_holds (struct volume *vol);
/* Client reads: patch in the held metadata (volume offsets). */
extern void follow_patch_read (struct volume *vol, void *buf, uint64_t count,
                               uint64_t offset);

/* Drop a plan without running it (NULL is fine). */
extern void follow_plan_discard (struct follow_plan *p);
/* Would the plan change a range a host tool has locked?  (*ID: which.) */
extern bool follow_plan_locked (const struct follow_plan *p, uint64_t *id);

/* For the control socket: the inode at PATH and its paths (free NAMES);
 * 0 or -errno.
 */
extern int follow_resolve (struct volume *vol, const char *path,
                           uint32_t *ino, char ***names);
/* The committed content of the regular file at PATH: HEADER gets its
 * size, then OUT the bytes in order.  0 or -errno.
 */
extern int follow_cat (struct volume *vol, const char *path,
                       int (*header) (void *, uint64_t),
                       int (*out) (void *, const void *, size_t),
                       void *opaque);
extern uint64_t follow_pending_bytes (struct volume *vol);
/* Adds this volume's counts to the four totals. */
extern void follow_get_stats (struct volume *vol, uint64_t *transactions,
                              uint64_t *vetoed, uint64_t *unattributed,
                              uint64_t *not_followed);

/* Free-space bookkeeping (shared lock held); volume offsets. */
extern void follow_pending_add (struct volume *vol, uint64_t offset,
                                uint64_t length);
extern void follow_pending_drop (struct volume *vol, uint64_t offset,
                                 uint64_t length, const char *reason,
                                 struct log_batch *lb);

extern void follow_log_stats (struct volume *vol);

/* How long commit points held the model exclusively (the newest 16384
 * of them), and how their models were updated: in place, or by a full
 * scan.  Call with the model held.
 */
struct follow_hold {
  uint64_t p50_ns, p99_ns, max_ns;
  uint64_t commits, incremental, rescans;
};
extern void follow_get_hold (struct volume *vol, struct follow_hold *h);

#endif
