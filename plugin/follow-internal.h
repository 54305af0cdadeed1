/* plugin/follow-internal.h: what the follow-*.c files share: the
 * volume, the views, a commit point's plan, and the functions one part
 * offers the others.  Nothing here is seen outside the follower
 * (follow.h is its interface).
 */
#ifndef FSEVENT_FOLLOW_INTERNAL_H
#define FSEVENT_FOLLOW_INTERNAL_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <time.h>

#include "epoch.h"
#include "follow.h"
#include "jbd2.h"
#include "layout-update.h"
#include "overlay.h"
#include "pending.h"

struct follow_stats {
  uint64_t transactions, vetoed, not_followed, rescans;
  uint64_t incremental;         /* commit points updated in place */
  uint64_t undecided;           /* commit points that could not be decided */
  uint64_t commits;             /* commit points that held the model */
  uint64_t commit_bytes, journal_bytes, unattributed_bytes;
  uint64_t check_failures;
};

/* Ranges of bytes written to free space kept at most, merged (16 MiB):
 * past it, new ones are reported unattributed at once.
 */
#define PENDING_MAX_RANGES (1u << 20)

/* Commit hold times kept for the percentiles (the newest ones). */
#define HOLD_SAMPLES 16384

/* Where a transaction followed here lies in the log: sequence, first
 * block, and the block after its commit block.
 */
struct jtrack {
  uint32_t seq, start, next;
};

/* One followed filesystem: a bare image, or one partition of a disk. */
struct volume {
  unsigned partition;           /* 0: the whole device */
  uint64_t offset, length;      /* where it lies on the device, bytes */
  struct device *dev;

  pthread_rwlock_t model_lock;
  struct fsev_layout *layout;
  /* Re-reads the committed view at commit points (layout-update.h);
   * NULL until first needed, and again after a full scan.
   */
  struct fsev_updater *updater;
  bool no_updater;              /* it cannot open: scan at every commit */
  /* The commit point's block cache (struct vcache) lives here between
   * commit points: one commit point at a time holds the model
   * exclusively, and a buffer of this size allocated and freed at every
   * one cost more than the reads it saved.
   */
  unsigned char *vcache_data;
  uint64_t *vcache_off;
  /* How long commit points held the model exclusively: the newest
   * HOLD_SAMPLES, in nanoseconds.
   */
  struct timespec excl_since;
  bool excl_is_commit;
  uint64_t *hold_ns;
  size_t nhold;
  struct fsev_overlay *overlay;
  unsigned bs;

  /* The journal, when there is one we can follow. */
  bool journalled;
  /* A journal whose superblock did not parse at start-up (at
   * jsb_offset): not followed, so it must not become one that recovery
   * would replay.
   */
  bool journal_unfollowed;
  struct fsev_jsuper js;
  uint64_t jsb_offset;          /* filesystem bytes */
  bool head_known;
  uint32_t head, head_seq;      /* where the next transaction starts */
  /* Transactions followed here whose journal blocks have stayed in the
   * live log ever since (in commit order): recovery that starts at one
   * of them replays only what was decided (journal_tail_known).
   */
  struct jtrack *tracked;
  size_t ntracked, tracked_cap;

  pthread_mutex_t pending_lock;
  struct pending pending;       /* filesystem offsets */

  /* ext2 (no journal followed): metadata written since the guest's
   * last flush, decided at the next (epoch.h).  Changed only with the
   * model held exclusively and EPOCH_LOCK; client reads take only the
   * lock.  HELD mirrors epoch.n for a lock-free "nothing held" test.
   */
  struct epoch epoch;
  pthread_mutex_t epoch_lock;
  size_t held;

  /* Inodes that have had a name announced (present at start-up, or
   * created, linked or renamed to since): one that gets a name again is
   * linked, not created (ext2 writes a rename's two directory entries at
   * two commit points).
   */
  unsigned char *named;
  uint64_t named_bits;

  struct follow_stats stats;
};


struct view {
  struct volume *vol;
  const struct io *io;          /* a request not yet in the image, or NULL */
  const struct fsev_overlay *ov;/* NULL: the raw image (and request) */
  bool with_epoch;              /* ext2: the held metadata on top */
  struct vcache *cache;         /* the request's block cache, or NULL */
};

/* Whole blocks of the device one commit point has read, as read (before
 * the epoch, the request or the overlay are put on top): the journal
 * parse reads a transaction's blocks, and the committed view reads the
 * same logged copies again; each pread costs a system call.  Lives in
 * follow_prepare only, where nothing writes the device, and is shared
 * by its views.  Full: reads go to the device.  (64 KiB: a small
 * transaction's blocks; the buffers are the volume's, kept from one
 * commit point to the next.)  Blocks it misses come from blockcache.h's
 * recent blocks before the device.
 */
#define VCACHE_BYTES (64u * 1024)
struct vcache {
  struct volume *vol;           /* whose buffers it borrows */
  unsigned bs, n, cap;          /* cap = VCACHE_BYTES / bs blocks */
  uint64_t *off;                /* volume offsets of the blocks held */
  unsigned char *data;          /* cap blocks; NULL until first used */
  uint64_t hits, reads, kept;   /* kept: found in blockcache.h's blocks */
};
extern void vcache_free (struct vcache *c);

struct jview {
  struct view *v;
  const struct fsev_layout *L;
};

/* Messages about a volume name its partition when the device has them. */
#define VDEBUG(vol, fmt, ...)                                           \
  nbdkit_debug ("%s%.0u%s" fmt, (vol)->partition ? "partition " : "",   \
                (vol)->partition, (vol)->partition ? ": " : "", ##__VA_ARGS__)



struct item {
  bool is_change;
  int rank;
  union {                       /* a commit of 20,000 creates has 40,000
                                   items: both would be 150 bytes more each */
    struct fsevent_write w;     /* !is_change */
    struct fsevent_change c;    /* is_change */
  };
  char **names;
  char *file, *new_file;
  void *data;                   /* buffer owned by the item */
  bool freed_inode;             /* delete: drop its file contexts after */
};

struct follow_plan {
  struct volume *vol;
  struct conn *conn;
  struct fsev_overlay *ov;      /* the next overlay, or NULL: unchanged */
  struct fsev_layout *L;        /* the next model from a full scan, or
                                   NULL: unchanged or updated in place */
  bool updated;                 /* the model was updated in place (UP):
                                   a veto or a discard rolls it back */
  struct fsev_journal_place *journal_before;   /* where the journal was */
  struct fsev_update up;
  /* ext2: the metadata blocks this request holds back in the epoch
   * instead of writing them home (sorted, whole blocks, owned).
   */
  struct epoch_block *held;
  size_t nheld;
  uint64_t t_start, t_read, t_update, t_decided;   /* commit_timing */
  bool undecidable;             /* plan_undecided was called */
  bool new_js;
  struct fsev_jsuper js;
  bool new_head;
  uint32_t head, head_seq;
  struct jtrack *track;         /* the transactions decided here */
  size_t ntrack;
  bool journal_clean;           /* give up what is still pending */
  uint64_t sequence;
  unsigned ntxns;
  struct item *items;
  size_t n, cap, decided;
  struct pending kept;          /* pending after this commit */
  bool have_kept;
  bool oom;
};


struct prep {
  struct follow_plan *p;
  const struct io *io;
  struct jview jv;
  struct fsev_jtxn *txns;
  size_t ntxns, cap;
  uint64_t *blocks;             /* filesystem blocks whose committed
                                   content may change here */
  size_t nblocks, blocks_cap;
  bool meta_changed;            /* metadata written outside the journal */
  const char *refuse_why;       /* a change that cannot be decided */
  bool rescan;                  /* a change only a full scan follows */
  bool oom;
};


struct give_up {
  struct volume *vol;
  struct log_batch *lb;
  const char *reason;
};

/* follow.c */
extern bool follow_allow_unparseable;
extern uint64_t follow_now_ns (void);
extern void pending_given_up (uint64_t offset, uint64_t length, void *opaque);

/* follow-view.c */
extern bool follow_was_named (uint32_t ino, void *opaque);
extern void follow_remember_names (struct volume *vol, const struct fsev_layout *L);
extern int view_raw (void *opaque, void *buf, size_t count, uint64_t offset);
extern int view_committed (void *opaque, void *buf, size_t count, uint64_t offset);
extern int view_jread (void *opaque, uint32_t jblk, void *buf);
extern uint64_t view_jmap (void *opaque, uint32_t jblk);
extern struct fsev_layout *view_scan (struct view *v, char *err, size_t errlen);
extern int view_replay_txn (const struct fsev_jtxn *txn, void *opaque);

/* follow-journal.c */
extern bool role_is_metadata (enum fsev_role r);
extern void io_new_bytes (const struct io *io, void *buf, uint64_t offset, uint64_t len);
extern bool io_changes_metadata (struct volume *vol, const struct io *io,
                                 const struct fsev_segment *seg);
extern bool follow_epoch_touches (const struct volume *vol, uint64_t offset, uint64_t len);
extern bool io_has_commit_block (const struct volume *vol, const struct io *io,
                                 const struct fsev_segment *seg);
extern bool journal_find_txn (struct jview *jv, uint32_t cjblk, uint32_t seq,
                              uint32_t hint, bool hint_ok, struct fsev_jtxn *txn);
extern void prep_add_blocks (struct prep *pr, uint64_t first, uint64_t n);
extern struct fsev_overlay *plan_next_overlay (struct follow_plan *p);
extern int prep_segment (const struct fsev_segment *seg, void *opaque);
/* PR's request carries a change that cannot be decided (WHY): refused
 * while handlers look, unless on-unparseable=allow.
 */
extern void prep_refuse (struct prep *pr, const char *why);
extern bool journal_block_head (const struct volume *vol, const struct io *io,
                                uint64_t offset, unsigned char head[64]);
extern bool io_rewrites_committed (struct volume *vol, const struct io *io,
                                   const struct fsev_segment *seg);
extern bool io_rewrites_live_log (struct volume *vol, const struct io *io,
                                  const struct fsev_segment *seg);
/* The transactions followed in the live log (struct volume's tracked):
 * add those of V[N] wholly inside it; keep only those still inside it
 * (after a change of the tail, or of the head other than transactions
 * appended there); are two superblocks' logs parsed alike?
 */
extern void journal_track (struct volume *vol, const struct jtrack *v, size_t n);
extern void journal_prune (struct volume *vol);
extern bool journal_same_format (const struct fsev_jsuper *a,
                                 const struct fsev_jsuper *b);

/* follow-plan.c */
extern struct item *plan_new_item (struct follow_plan *p);
extern void plan_free (struct follow_plan *p);
extern int plan_decide (struct follow_plan *p, struct prep *pr, struct view *oldv,
                        struct view *cv);
extern int plan_hold (struct follow_plan *p, struct prep *pr, const struct io *io);
/* A commit point that cannot be decided (WHY): counted and logged;
 * true when it must be refused (handlers loaded, on-unparseable=deny).
 */
extern bool plan_undecided (struct follow_plan *p, const char *why);

/* follow-check.c */
extern void follow_check_model (struct volume *vol);

#endif
