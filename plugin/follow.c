/* plugin/follow.c: following the guest through its journal.
 *
 * The committed view is the image plus the overlay of committed journal
 * blocks not yet written home (fs/overlay.h).  The model (layout) is a
 * scan of that view.  At each commit point the next view is scanned,
 * compared with the current one (fs/diff.h) and with the bytes written
 * to free space since (pending), and the events that follow are decided
 * by the handlers *before* the commit block, or the metadata write on
 * ext2, reaches the image.  A veto fails that request: the transaction
 * never commits (the guest's journal aborts) and the model stays.
 *
 * Rescanning the view at each commit keeps "the model equals a fresh
 * scan" true by construction; its cost is the price of a scan per
 * commit (see the man page).
 */
#include <config.h>

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define NBDKIT_API_VERSION 2
#include <nbdkit-plugin.h>

#include "diff.h"
#include "device.h"
#include "epoch.h"
#include "follow.h"
#include "handlers.h"
#include "jbd2.h"
#include "locks.h"
#include "layout-internal.h"
#include "layout-update.h"
#include "overlay.h"
#include "paths.h"
#include "pending.h"
#include "util.h"
#include "writes.h"

NBDKIT_DLL_PUBLIC int fsevent_debug_check = 0;
/* -D fsevent.commit_timing=1: where each commit point's time goes. */
NBDKIT_DLL_PUBLIC int fsevent_debug_commit_timing = 0;

static uint64_t
now_ns (void)
{
  struct timespec ts;
  clock_gettime (CLOCK_MONOTONIC, &ts);
  return (uint64_t) ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* on-unparseable=: what a commit point that cannot be decided does
 * while any handler is loaded.  Deny (refuse the request with EIO) by
 * default: an undecided change is an unchecked one.
 */
static bool allow_unparseable;

int
follow_set_on_unparseable (const char *value)
{
  if (strcmp (value, "deny") == 0)
    allow_unparseable = false;
  else if (strcmp (value, "allow") == 0)
    allow_unparseable = true;
  else {
    nbdkit_error ("on-unparseable=%s: use deny or allow", value);
    return -1;
  }
  return 0;
}

struct follow_stats {
  uint64_t transactions, vetoed, not_followed, rescans;
  uint64_t incremental;         /* commit points updated in place */
  uint64_t undecided;           /* commit points that could not be decided */
  uint64_t commits;             /* commit points that held the model */
  uint64_t commit_bytes, journal_bytes, unattributed_bytes;
  uint64_t check_failures;
};

/* Commit hold times kept for the percentiles (the newest ones). */
#define HOLD_SAMPLES 16384

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
  struct fsev_jsuper js;
  uint64_t jsb_offset;          /* filesystem bytes */
  bool head_known;
  uint32_t head, head_seq;      /* where the next transaction starts */

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

static bool
was_named (uint32_t ino, void *opaque)
{
  const struct volume *vol = opaque;
  return ino < vol->named_bits && (vol->named[ino / 8] & (1u << (ino % 8)));
}

static void
remember_names (struct volume *vol, const struct fsev_layout *L)
{
  size_t n;
  const struct fsev_inode *in = fsev_layout_inodes (L, &n);
  for (size_t i = 0; i < n; i++)
    if (in[i].ino < vol->named_bits && fsev_layout_names (L, in[i].ino, NULL, 0))
      vol->named[in[i].ino / 8] |= 1u << (in[i].ino % 8);
}


/* --- Reading the views. --- */

struct view {
  struct volume *vol;
  const struct io *io;          /* a request not yet in the image, or NULL */
  const struct fsev_overlay *ov;/* NULL: the raw image (and request) */
  bool with_epoch;              /* ext2: the held metadata on top */
};

/* The image with the request's bytes on top. */
static int
raw_read (void *opaque, void *buf, size_t count, uint64_t offset)
{
  const struct view *v = opaque;
  if (device_read (v->vol->dev, buf, count, v->vol->offset + offset) == -1)
    return -1;
  if (v->with_epoch)
    epoch_patch (&v->vol->epoch, buf, count, offset);
  const struct io *io = v->io;
  if (io) {
    uint64_t from = io->offset > offset ? io->offset : offset;
    uint64_t to = io->offset + io->count < offset + count
      ? io->offset + io->count : offset + count;
    if (from < to) {
      if (io->op == FSEVENT_OP_WRITE)
        memcpy ((char *) buf + (from - offset),
                (const char *) io->buf + (from - io->offset), to - from);
      else
        memset ((char *) buf + (from - offset), 0, to - from);
    }
  }
  return 0;
}

/* The committed view: raw, then the overlay. */
static int
committed_read (void *opaque, void *buf, size_t count, uint64_t offset)
{
  const struct view *v = opaque;
  if (raw_read (opaque, buf, count, offset) == -1)
    return -1;
  if (v->ov && fsev_overlay_patch (v->ov, raw_read, opaque, buf, count,
                                   offset) == -1)
    return -1;
  return 0;
}

struct jview {
  struct view *v;
  const struct fsev_layout *L;
};

static int
jread (void *opaque, uint32_t jblk, void *buf)
{
  const struct jview *j = opaque;
  uint64_t pblk = fsev_layout_journal_pblk (j->L, jblk);
  if (pblk == 0) {
    errno = EIO;
    return -1;
  }
  return raw_read (j->v, buf, j->v->vol->bs, pblk * j->v->vol->bs);
}

static uint64_t
jmap (void *opaque, uint32_t jblk)
{
  const struct jview *j = opaque;
  return fsev_layout_journal_pblk (j->L, jblk);
}

static void
build_warning (void *opaque, const char *msg)
{
  const struct volume *vol = opaque;
  nbdkit_debug ("partition %u: layout: warning: %s", vol->partition, msg);
}

/* Scan the committed view V. */
static struct fsev_layout *
scan (struct view *v, char *err, size_t errlen)
{
  struct volume *vol = v->vol;
  struct fsev_source src = {
    .read = committed_read, .opaque = v, .size = fsev_layout_fs_bytes (vol->layout),
  };
  struct fsev_build_options opts = {
    .warn = build_warning, .opaque = vol, .max_warnings = 20,
    .no_allocated_gaps = true,
  };
  return fsev_layout_build (&src, &opts, err, errlen);
}

/* --- Start and end. --- */

static int
replay_txn (const struct fsev_jtxn *txn, void *opaque)
{
  struct jview *j = opaque;
  return fsev_overlay_apply (j->v->vol->overlay, txn, jmap, j, j->L->fs_blocks);
}

/* Messages about a volume name its partition when the device has them. */
#define VDEBUG(vol, fmt, ...)                                           \
  nbdkit_debug ("%s%.0u%s" fmt, (vol)->partition ? "partition " : "",   \
                (vol)->partition, (vol)->partition ? ": " : "", ##__VA_ARGS__)

static void
volume_free (struct volume *vol)
{
  pending_free (&vol->pending);
  free (vol->named);
  free (vol->hold_ns);
  fsev_updater_close (vol->updater);
  fsev_overlay_free (vol->overlay);
  fsev_layout_free (vol->layout);
  pthread_rwlock_destroy (&vol->model_lock);
  pthread_mutex_destroy (&vol->pending_lock);
  epoch_clear (&vol->epoch);
  pthread_mutex_destroy (&vol->epoch_lock);
  free (vol);
}

struct volume *
follow_init (struct device *dev, unsigned partition, uint64_t offset,
             uint64_t length, struct fsev_layout *L)
{
  struct volume *vol = calloc (1, sizeof *vol);
  if (vol == NULL) {
    fsev_layout_free (L);
    nbdkit_error ("out of memory");
    return NULL;
  }
  vol->partition = partition;
  vol->offset = offset;
  vol->length = length;
  vol->dev = dev;
  vol->layout = L;
  vol->bs = fsev_layout_block_size (L);
  pthread_rwlockattr_t attr;
  pthread_rwlockattr_init (&attr);
  /* A commit waits for the writes in flight, not for every later one. */
  pthread_rwlockattr_setkind_np (&attr,
                                 PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
  pthread_rwlock_init (&vol->model_lock, &attr);
  pthread_rwlockattr_destroy (&attr);
  pthread_mutex_init (&vol->pending_lock, NULL);
  pthread_mutex_init (&vol->epoch_lock, NULL);
  epoch_init (&vol->epoch, vol->bs);
  vol->overlay = fsev_overlay_new (vol->bs);
  vol->named_bits = (uint64_t) L->inodes_count + 1;
  vol->named = calloc (vol->named_bits / 8 + 1, 1);
  vol->hold_ns = calloc (HOLD_SAMPLES, sizeof *vol->hold_ns);
  if (vol->overlay == NULL || vol->named == NULL || vol->hold_ns == NULL) {
    nbdkit_error ("out of memory");
    volume_free (vol);
    return NULL;
  }
  remember_names (vol, L);

  uint64_t pblk = fsev_layout_journal_ino (L)
    ? fsev_layout_journal_pblk (L, 0) : 0;
  if (pblk == 0) {
    VDEBUG (vol, "no journal: metadata writes are the commit points");
    return vol;
  }
  unsigned char *buf = malloc (vol->bs);
  char err[256];
  struct view v = { .vol = vol };
  if (buf == NULL || raw_read (&v, buf, vol->bs, pblk * vol->bs) == -1) {
    free (buf);
    nbdkit_error ("cannot read the journal superblock");
    volume_free (vol);
    return NULL;
  }
  if (fsev_jbd2_parse_super (buf, vol->bs, &vol->js, err, sizeof err) == -1) {
    /* Followed without it: journalled metadata is then seen when it is
     * written home (checkpoint), later than its commit.
     */
    free (buf);
    VDEBUG (vol, "the journal cannot be followed (%s): metadata writes "
            "are the commit points", err);
    return vol;
  }
  free (buf);
  vol->journalled = true;
  vol->jsb_offset = pblk * vol->bs;
  vol->head_seq = vol->js.sequence;
  VDEBUG (vol, "journal: %" PRIu32 " blocks, log %" PRIu32 "..%" PRIu32
          ", sequence %" PRIu32 ", %s%s%s",
          vol->js.maxlen, vol->js.first, vol->js.log_end, vol->js.sequence,
          vol->js.start ? "needs recovery" : "clean",
          vol->js.csum_v3 ? ", csum v3" : vol->js.csum_v2 ? ", csum v2" : "",
          vol->js.fast_commit ? ", fast commit (followed at full commits)" : "");
  if (vol->js.start == 0)
    return vol;

  /* Recovery is replayed into the overlay, never into the image. */
  struct jview jv = { .v = &v, .L = L };
  uint32_t next, next_seq;
  int n = fsev_jbd2_walk (&vol->js, jread, &jv, replay_txn, &jv, &next, &next_seq);
  if (n < 0) {
    nbdkit_error ("cannot replay the journal");
    volume_free (vol);
    return NULL;
  }
  vol->head = next;
  vol->head_seq = next_seq;
  vol->head_known = true;
  VDEBUG (vol, "journal: %d committed transactions replayed into the "
          "committed view (%zu blocks)", n, vol->overlay->n);
  if (vol->overlay->n) {
    struct view cv = { .vol = vol, .ov = vol->overlay };
    struct fsev_layout *nl = scan (&cv, err, sizeof err);
    if (nl == NULL) {
      nbdkit_error ("the filesystem after journal recovery: %s", err);
      volume_free (vol);
      return NULL;
    }
    fsev_layout_free (vol->layout);
    vol->layout = nl;
  }
  return vol;
}

void
follow_fini (struct volume *vol)
{
  if (vol == NULL)
    return;
  pending_normalise (&vol->pending);
  if (vol->pending.bytes) {
    struct log_batch lb;
    log_batch_init (&lb);
    for (size_t i = 0; i < vol->pending.n; i++)
      log_unattributed (&lb, vol->partition,
                        vol->offset + vol->pending.v[i].offset,
                        vol->pending.v[i].length, "shutdown");
    log_commit (&lb);
    vol->stats.unattributed_bytes += vol->pending.bytes;
    VDEBUG (vol, "%" PRIu64 " bytes written to free space never became "
            "part of a file (unattributed)", vol->pending.bytes);
  }
  follow_log_stats (vol);
  volume_free (vol);
}

void
follow_log_stats (struct volume *vol)
{
  struct follow_hold h;
  follow_get_hold (vol, &h);
  VDEBUG (vol, "follow: commit hold p50 %.3f ms p99 %.3f ms max %.3f ms over %"
          PRIu64 " commits; incremental %" PRIu64 ", rescans %" PRIu64,
          h.p50_ns / 1e6, h.p99_ns / 1e6, h.max_ns / 1e6, h.commits,
          h.incremental, h.rescans);
  VDEBUG (vol, "follow: %" PRIu64 " transactions, %" PRIu64 " vetoed, %"
          PRIu64 " not followed, %" PRIu64 " rescans; attributed at "
          "commit %" PRIu64 " bytes, from the journal %" PRIu64
          " bytes; unattributed %" PRIu64 " bytes; undecided %" PRIu64 "%s",
          vol->stats.transactions, vol->stats.vetoed, vol->stats.not_followed,
          vol->stats.rescans, vol->stats.commit_bytes, vol->stats.journal_bytes,
          vol->stats.unattributed_bytes, vol->stats.undecided,
          vol->stats.check_failures ? "; MODEL CHECK FAILURES" : "");
}

unsigned volume_partition (const struct volume *vol) { return vol->partition; }
uint64_t volume_offset (const struct volume *vol) { return vol->offset; }
uint64_t volume_length (const struct volume *vol) { return vol->length; }

void follow_lock_shared (struct volume *vol) { pthread_rwlock_rdlock (&vol->model_lock); }

/* The exclusive holder notes when it got the model; at unlock, a hold
 * that served a commit point (follow_plan_finish says so) is a sample.
 * Only the exclusive holder writes these fields, and no shared holder
 * exists meanwhile.
 */
void
follow_lock_exclusive (struct volume *vol)
{
  pthread_rwlock_wrlock (&vol->model_lock);
  clock_gettime (CLOCK_MONOTONIC, &vol->excl_since);
  vol->excl_is_commit = false;
}

void
follow_unlock (struct volume *vol)
{
  if (vol->excl_since.tv_sec || vol->excl_since.tv_nsec) {
    /* Only ever non-zero while held exclusively. */
    if (vol->excl_is_commit) {
      struct timespec now;
      clock_gettime (CLOCK_MONOTONIC, &now);
      int64_t ns = (int64_t) (now.tv_sec - vol->excl_since.tv_sec) * 1000000000 +
        (now.tv_nsec - vol->excl_since.tv_nsec);
      vol->hold_ns[vol->nhold++ % HOLD_SAMPLES] = ns > 0 ? (uint64_t) ns : 0;
      vol->stats.commits++;
    }
    vol->excl_since = (struct timespec) { 0 };
  }
  pthread_rwlock_unlock (&vol->model_lock);
}

static int
cmp_u64 (const void *a, const void *b)
{
  uint64_t x = *(const uint64_t *) a, y = *(const uint64_t *) b;
  return x < y ? -1 : x > y;
}

void
follow_get_hold (struct volume *vol, struct follow_hold *h)
{
  /* Called with the model held (shared or exclusive). */
  size_t n = vol->nhold < HOLD_SAMPLES ? vol->nhold : HOLD_SAMPLES;
  memset (h, 0, sizeof *h);
  h->commits = vol->stats.commits;
  h->incremental = vol->stats.incremental;
  h->rescans = vol->stats.rescans;
  if (n == 0)
    return;
  uint64_t *v = malloc (n * sizeof *v);
  if (v == NULL)
    return;
  memcpy (v, vol->hold_ns, n * sizeof *v);
  qsort (v, n, sizeof *v, cmp_u64);
  h->p50_ns = v[(n - 1) / 2];
  h->p99_ns = v[(n - 1) * 99 / 100];
  h->max_ns = v[n - 1];
  free (v);
}
const struct fsev_layout *follow_layout (const struct volume *vol) { return vol->layout; }

/* --- Which requests need the exclusive path. --- */

static bool
is_metadata (enum fsev_role r)
{
  switch (r) {
  case FSEV_ROLE_SUPERBLOCK: case FSEV_ROLE_GROUP_DESCRIPTORS:
  case FSEV_ROLE_RESERVED_GDT: case FSEV_ROLE_BLOCK_BITMAP:
  case FSEV_ROLE_INODE_BITMAP: case FSEV_ROLE_INODE_TABLE:
  case FSEV_ROLE_EXTENT_TREE: case FSEV_ROLE_INDIRECT:
  case FSEV_ROLE_DIRECTORY: case FSEV_ROLE_XATTR:
    return true;
  default:
    return false;
  }
}

/* The new bytes of IO at [OFFSET, OFFSET+LEN) into BUF. */
static void
new_bytes (const struct io *io, void *buf, uint64_t offset, uint64_t len)
{
  if (io->op == FSEVENT_OP_WRITE)
    memcpy (buf, (const char *) io->buf + (offset - io->offset), len);
  else
    memset (buf, 0, len);
}

/* Does IO change the committed content of a metadata block that the
 * overlay does not hold?  (Blocks the overlay holds are checkpoints:
 * recovery would put the journal copy back anyway.)
 */
static bool
changes_metadata (struct volume *vol, const struct io *io,
                  const struct fsev_segment *seg)
{
  unsigned char old[65536], neu[65536];
  if (vol->bs > sizeof old)
    return true;
  for (uint64_t off = seg->offset; off < seg->offset + seg->length; ) {
    uint64_t blk = off / vol->bs;
    uint64_t end = (blk + 1) * vol->bs;
    if (end > seg->offset + seg->length)
      end = seg->offset + seg->length;
    if (fsev_overlay_find (vol->overlay, blk) == NULL) {
      struct view v = { .vol = vol };
      if (raw_read (&v, old, end - off, off) == -1)
        return true;
      new_bytes (io, neu, off, end - off);
      if (memcmp (old, neu, end - off) != 0)
        return true;
    }
    off = end;
  }
  return false;
}

/* Does the epoch hold any block of [OFFSET, OFFSET+LEN)?  (Model held.) */
static bool
epoch_touches (const struct volume *vol, uint64_t offset, uint64_t len)
{
  if (vol->epoch.n == 0 || len == 0)
    return false;
  for (uint64_t b = offset / vol->bs; b <= (offset + len - 1) / vol->bs; b++)
    if (epoch_get (&vol->epoch, b))
      return true;
  return false;
}

/* Is there a commit block among IO's whole blocks in SEG? */
static bool
has_commit_block (const struct volume *vol, const struct io *io,
                  const struct fsev_segment *seg)
{
  if (io->op != FSEVENT_OP_WRITE)
    return false;
  uint64_t first = (seg->offset + vol->bs - 1) / vol->bs * vol->bs;
  for (uint64_t off = first; off + vol->bs <= seg->offset + seg->length; off += vol->bs) {
    uint32_t type, seq;
    if (fsev_jbd2_header ((const char *) io->buf + (off - io->offset),
                          &type, &seq) && type == FSEV_JBD2_COMMIT)
      return true;
  }
  return false;
}

bool
follow_segment_needs_exclusive (struct volume *vol, const struct io *io,
                                const struct fsev_segment *seg)
{
  if (seg->role == FSEV_ROLE_JOURNAL) {
    if (!vol->journalled || (seg->flags & FSEV_SEG_JOURNAL_FC))
      return false;             /* fast commits: followed at full commits */
    if (seg->flags & FSEV_SEG_JOURNAL_SB)
      return true;
    return fsev_overlay_refers (vol->overlay, seg->offset, seg->length) ||
      has_commit_block (vol, io, seg);
  }
  if (is_metadata (seg->role))
    return changes_metadata (vol, io, seg) ||
      (!vol->journalled && epoch_touches (vol, seg->offset, seg->length));
  return false;
}

bool
follow_is_checkpoint (struct volume *vol, const struct io *io,
                      const struct fsev_segment *seg)
{
  unsigned char cur[65536], neu[65536];
  if (vol->overlay->n == 0 || vol->bs > sizeof cur)
    return false;
  for (uint64_t off = seg->offset; off < seg->offset + seg->length; ) {
    uint64_t blk = off / vol->bs;
    uint64_t end = (blk + 1) * vol->bs;
    if (end > seg->offset + seg->length)
      end = seg->offset + seg->length;
    const struct fsev_overlay_entry *e = fsev_overlay_find (vol->overlay, blk);
    struct view v = { .vol = vol };
    if (e == NULL || fsev_overlay_read_entry (vol->overlay, e, raw_read, &v, cur) == -1)
      return false;
    new_bytes (io, neu, off, end - off);
    if (memcmp (cur + (off - blk * vol->bs), neu, end - off) != 0)
      return false;
    off = end;
  }
  return true;
}

/* --- Pending free-space bytes. --- */

void
follow_pending_add (struct volume *vol, uint64_t offset, uint64_t length)
{
  pthread_mutex_lock (&vol->pending_lock);
  if (pending_add (&vol->pending, offset, length) == -1)
    nbdkit_error ("out of memory: %" PRIu64 " bytes at %" PRIu64
                  " will not be attributed", length, offset);
  pthread_mutex_unlock (&vol->pending_lock);
}

struct give_up {
  struct volume *vol;
  struct log_batch *lb;
  const char *reason;
};

static void
given_up (uint64_t offset, uint64_t length, void *opaque)
{
  struct give_up *g = opaque;
  struct volume *vol = g->vol;
  log_unattributed (g->lb, vol->partition, vol->offset + offset, length,
                    g->reason);
  __atomic_fetch_add (&vol->stats.unattributed_bytes, length, __ATOMIC_RELAXED);
  VDEBUG (vol, "unattributed: %" PRIu64 " bytes at %" PRIu64 " (%s)",
          length, vol->offset + offset, g->reason);
}

void
follow_pending_drop (struct volume *vol, uint64_t offset, uint64_t length,
                     const char *reason, struct log_batch *lb)
{
  struct give_up g = { vol, lb, reason };
  pthread_mutex_lock (&vol->pending_lock);
  pending_normalise (&vol->pending);
  pending_remove (&vol->pending, offset, length, given_up, &g);
  pthread_mutex_unlock (&vol->pending_lock);
}

/* --- The plan of a commit point. --- */

struct item {
  bool is_change;
  int rank;
  struct fsevent_write w;
  struct fsevent_change c;
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
  struct fsev_update up;
  /* ext2: the metadata blocks this request holds back in the epoch
   * instead of writing them home (sorted, whole blocks, owned).
   */
  struct epoch_block *held;
  size_t nheld;
  uint64_t t_start, t_read, t_update, t_decided;   /* commit_timing */
  bool new_js;
  struct fsev_jsuper js;
  bool new_head;
  uint32_t head, head_seq;
  bool journal_clean;           /* give up what is still pending */
  uint64_t sequence;
  unsigned ntxns;
  struct item *items;
  size_t n, cap, decided;
  struct pending kept;          /* pending after this commit */
  bool have_kept;
  bool oom;
};

static struct item *
new_item (struct follow_plan *p)
{
  if (fsev_grow ((void **) &p->items, &p->cap, p->n + 1, sizeof *p->items) == -1) {
    p->oom = true;
    return NULL;
  }
  struct item *it = &p->items[p->n++];
  memset (it, 0, sizeof *it);
  return it;
}

static void
free_plan (struct follow_plan *p)
{
  if (p == NULL)
    return;
  if (p->updated)
    fsev_update_rollback (p->vol->layout, &p->up);
  for (size_t i = 0; i < p->nheld; i++)
    free (p->held[i].data);
  free (p->held);
  for (size_t i = 0; i < p->n; i++) {
    free (p->items[i].names);
    free (p->items[i].file);
    free (p->items[i].new_file);
    free (p->items[i].data);
  }
  free (p->items);
  fsev_overlay_free (p->ov);
  fsev_layout_free (p->L);
  pending_free (&p->kept);
  free (p);
}

static void
set_attrs (struct fsevent_attributes *a, const struct fsev_inode *i)
{
  if (i == NULL)
    return;
  *a = (struct fsevent_attributes) {
    .mode = i->mode, .uid = i->uid, .gid = i->gid, .flags = i->flags,
    .links = i->links, .size = i->size,
    .atime = { i->atime, i->atime_ns }, .mtime = { i->mtime, i->mtime_ns },
    .ctime = { i->ctime, i->ctime_ns }, .crtime = { i->crtime, i->crtime_ns },
  };
}

/* A namespace change as an event item. */
static void
add_change (struct follow_plan *p, const struct fsev_layout *A,
            const struct fsev_layout *B, const struct fsev_change *ch)
{
  struct item *it = new_item (p);
  if (it == NULL)
    return;
  it->is_change = true;
  it->rank = fsev_change_rank (ch->kind);
  struct fsevent_change *c = &it->c;
  *c = (struct fsevent_change) {
    .struct_size = sizeof *c,
    .phase = FSEVENT_BEFORE,
    .partition = p->vol->partition,
    .ino = ch->ino,
    .replaced_ino = ch->replaced_ino,
    .changed = ch->changed,
    .timestamps_only = ch->kind == FSEV_SET_ATTRIBUTES &&
      (ch->changed & ~FSEV_ATTR_TIMES) == 0,
    .sequence = p->sequence,
    .handle_info = &p->conn->info,
  };
  switch (ch->kind) {
  case FSEV_CREATE: c->kind = FSEVENT_CREATE; break;
  case FSEV_DELETE: c->kind = FSEVENT_DELETE; break;
  case FSEV_LINK: c->kind = FSEVENT_LINK; break;
  case FSEV_UNLINK: c->kind = FSEVENT_UNLINK; break;
  case FSEV_RENAME: c->kind = FSEVENT_RENAME; break;
  case FSEV_SET_SIZE: c->kind = FSEVENT_SET_SIZE; break;
  case FSEV_SET_ATTRIBUTES: c->kind = FSEVENT_SET_ATTRIBUTES; break;
  }
  set_attrs (&c->old_attributes, ch->old_inode);
  set_attrs (&c->attributes, ch->new_inode);

  /* Paths: a new name is found in the new model, an old one in the old. */
  switch (ch->kind) {
  case FSEV_CREATE:
    it->names = paths_of (B, ch->ino);
    it->file = path_of_link (B, ch->ino, ch->new_link);
    break;
  case FSEV_LINK:
    it->names = paths_of (B, ch->ino);
    it->file = fsev_layout_names (A, ch->ino, NULL, 0) && ch->old_inode
      ? path_of_link (A, ch->ino, 0) : path_of_link (B, ch->ino, 0);
    it->new_file = path_of_link (B, ch->ino, ch->new_link);
    break;
  case FSEV_RENAME:
    it->names = paths_of (A, ch->ino);
    it->file = path_of_link (A, ch->ino, ch->old_link);
    it->new_file = path_of_link (B, ch->ino, ch->new_link);
    break;
  case FSEV_UNLINK:
  case FSEV_DELETE:
    it->names = paths_of (A, ch->ino);
    it->file = path_of_link (A, ch->ino, ch->old_link);
    it->freed_inode = ch->kind == FSEV_DELETE;
    break;
  case FSEV_SET_SIZE:
  case FSEV_SET_ATTRIBUTES:
    /* Named before (or, for a new file, only now). */
    if (ch->old_link >= 0 || ch->new_link < 0) {
      it->names = paths_of (A, ch->ino);
      it->file = path_of_link (A, ch->ino, ch->old_link);
    }
    else {
      it->names = paths_of (B, ch->ino);
      it->file = path_of_link (B, ch->ino, ch->new_link);
    }
    break;
  }
  if (it->names == NULL || it->file == NULL ||
      ((ch->kind == FSEV_LINK || ch->kind == FSEV_RENAME) && it->new_file == NULL)) {
    p->oom = true;
    return;
  }
  c->file_name = it->file;
  c->file_names = (const char *const *) it->names;
  c->new_file_name = it->new_file;
  if (ch->replaced_ino)
    c->replaced_file_name = it->new_file;
}

/* New data given to a file at this commit: one event per contiguous
 * (inode, position) range.
 */
static void
add_data (struct follow_plan *p, const struct fsev_layout *B,
          enum fsevent_direction dir, uint32_t ino, uint64_t position,
          uint64_t offset, uint64_t length)
{
  offset += p->vol->offset;     /* events carry device offsets */
  if (p->n > 0) {
    struct item *last = &p->items[p->n - 1];
    struct fsevent_write *w = &last->w;
    if (!last->is_change && w->direction == dir && w->ino == ino &&
        w->device_offset + w->bytes_to_write == offset &&
        w->position + w->bytes_to_write == position) {
      w->bytes_to_write += length;
      return;
    }
  }
  struct item *it = new_item (p);
  if (it == NULL)
    return;
  it->rank = 4;
  it->w = (struct fsevent_write) {
    .struct_size = sizeof it->w,
    .phase = FSEVENT_BEFORE,
    .direction = dir,
    .operation = FSEVENT_OP_WRITE,
    .partition = p->vol->partition,
    .ino = ino,
    .position = position,
    .bytes_to_write = length,
    .device_offset = offset,
    .sequence = p->sequence,
    .handle_info = &p->conn->info,
  };
  it->names = paths_of (B, ino);
  if (it->names == NULL) {
    p->oom = true;
    return;
  }
  it->w.file_name = it->names[0] ? it->names[0] : "";
  it->w.file_names = (const char *const *) it->names;
}

/* Pending bytes that the new model B gives to files become commit
 * events; what is still free stays pending.
 */
struct sift {
  struct follow_plan *p;
  const struct fsev_layout *B;
};

static int
sift_segment (const struct fsev_segment *seg, void *opaque)
{
  struct sift *s = opaque;
  struct follow_plan *p = s->p;
  if (seg->role == FSEV_ROLE_FREE) {
    if (pending_add (&p->kept, seg->offset, seg->length) == -1)
      p->oom = true;
  }
  else if (seg->role == FSEV_ROLE_DATA && !(seg->flags & FSEV_SEG_BEYOND_EOF) &&
           !(seg->flags & FSEV_SEG_DUP)) {
    add_data (p, s->B, FSEVENT_COMMIT, seg->ino, seg->position, seg->offset,
              seg->length);
  }
  /* Anything else (metadata, past the end of a file) is owned now but
   * is no file data: nothing to attribute.
   */
  return 0;
}

/* Logged data blocks (data=journal) that B gives to files. */
struct jdata {
  struct follow_plan *p;
  const struct fsev_layout *B;
};

static int
jdata_segment (const struct fsev_segment *seg, void *opaque)
{
  struct jdata *j = opaque;
  if (seg->role == FSEV_ROLE_DATA && !(seg->flags & FSEV_SEG_BEYOND_EOF) &&
      !(seg->flags & FSEV_SEG_DUP))
    add_data (j->p, j->B, FSEVENT_JOURNAL, seg->ino, seg->position,
              seg->offset, seg->length);
  return 0;
}

/* Find and parse the transaction whose commit block for SEQ is at
 * journal block CJBLK.  Normally it starts where the last one ended;
 * otherwise (first transaction after mount) walk back to its start.
 */
static bool
find_txn (struct jview *jv, uint32_t cjblk, uint32_t seq,
          uint32_t hint, bool hint_ok, struct fsev_jtxn *txn)
{
  struct volume *vol = jv->v->vol;
  char err[256];
  if (hint_ok) {
    enum fsev_jresult r = fsev_jbd2_parse_txn (&vol->js, jread, jv, hint, seq, txn,
                                               err, sizeof err);
    if (r == FSEV_J_OK && txn->commit_jblk == cjblk)
      return true;
    if (r == FSEV_J_OK)
      fsev_jtxn_free (txn);
  }
  unsigned char *buf = malloc (vol->bs);
  if (buf == NULL)
    return false;
  uint32_t loglen = vol->js.log_end - vol->js.first, pos = cjblk, start = 0;
  bool found = false;
  for (uint32_t steps = 0; steps < loglen; steps++) {
    pos = pos == vol->js.first ? vol->js.log_end - 1 : pos - 1;
    uint32_t type, s;
    if (jread (jv, pos, buf) == -1)
      break;
    if (!fsev_jbd2_header (buf, &type, &s))
      continue;                 /* a logged block */
    if (s != seq)
      break;                    /* the transaction before */
    if (type == FSEV_JBD2_DESCRIPTOR || type == FSEV_JBD2_REVOKE) {
      start = pos;
      found = true;
    }
  }
  free (buf);
  if (!found)
    return false;
  enum fsev_jresult r = fsev_jbd2_parse_txn (&vol->js, jread, jv, start, seq, txn,
                                             err, sizeof err);
  if (r == FSEV_J_OK && txn->commit_jblk == cjblk)
    return true;
  if (r == FSEV_J_OK)
    fsev_jtxn_free (txn);
  VDEBUG (vol, "journal: transaction %" PRIu32 " committing at block %"
          PRIu32 " cannot be parsed: %s", seq, cjblk,
          r == FSEV_J_OK ? "it ends elsewhere" : err);
  return false;
}

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
  bool rescan;                  /* a change only a full scan follows */
  bool oom;
};

static void
add_blocks (struct prep *pr, uint64_t first, uint64_t n)
{
  for (uint64_t b = first; b < first + n; b++) {
    if (fsev_grow ((void **) &pr->blocks, &pr->blocks_cap, pr->nblocks + 1,
                   sizeof *pr->blocks) == -1) {
      pr->oom = true;
      return;
    }
    pr->blocks[pr->nblocks++] = b;
  }
}

static struct fsev_overlay *
next_overlay (struct follow_plan *p)
{
  if (p->ov == NULL)
    p->ov = fsev_overlay_clone (p->vol->overlay);
  if (p->ov == NULL)
    p->oom = true;
  return p->ov;
}

/* Expired entries whose home does not hold the committed copy change
 * the committed view (a guest that moved its tail too early).
 */
struct expire_check {
  struct view *raw;
  const struct fsev_overlay *ov;
  bool differs;
};

static void
check_expired (const struct fsev_overlay_entry *e, void *opaque)
{
  struct expire_check *x = opaque;
  const struct volume *vol = x->raw->vol;
  unsigned char a[65536], b[65536];
  if (x->differs || vol->bs > sizeof a)
    return;
  if (fsev_overlay_read_entry (x->ov, e, raw_read, x->raw, a) == -1 ||
      raw_read (x->raw, b, vol->bs, e->fsblk * vol->bs) == -1 ||
      memcmp (a, b, vol->bs) != 0)
    x->differs = true;
}

static int
prep_segment (const struct fsev_segment *seg, void *opaque)
{
  struct prep *pr = opaque;
  struct follow_plan *p = pr->p;
  struct volume *vol = p->vol;
  const struct io *io = pr->io;

  if (is_metadata (seg->role)) {
    if (changes_metadata (vol, io, seg) ||
        (!vol->journalled && epoch_touches (vol, seg->offset, seg->length))) {
      pr->meta_changed = true;
      add_blocks (pr, seg->offset / vol->bs,
                  (seg->offset + seg->length + vol->bs - 1) / vol->bs -
                  seg->offset / vol->bs);
    }
    return 0;
  }
  if (seg->role != FSEV_ROLE_JOURNAL || !vol->journalled ||
      (seg->flags & FSEV_SEG_JOURNAL_FC))
    return 0;

  if (seg->flags & FSEV_SEG_JOURNAL_SB) {
    char err[256];
    unsigned char *buf = malloc (vol->bs);
    if (buf == NULL) {
      pr->oom = true;
      return -1;
    }
    int r = raw_read (pr->jv.v, buf, vol->bs, vol->jsb_offset);
    struct fsev_jsuper nj;
    if (r == 0 && fsev_jbd2_parse_super (buf, vol->bs, &nj, err, sizeof err) == 0) {
      struct fsev_overlay *ov = next_overlay (p);
      if (ov) {
        struct expire_check x = { .raw = pr->jv.v, .ov = ov };
        fsev_overlay_expire (ov, nj.sequence, nj.start == 0, check_expired, &x);
        if (x.differs)
          pr->rescan = true;
      }
      /* The journal's areas are part of the model. */
      if (nj.maxlen != vol->js.maxlen || nj.first != vol->js.first ||
          nj.log_end != vol->js.log_end)
        pr->rescan = true;
      p->new_js = true;
      p->js = nj;
      if (nj.start == 0)
        p->journal_clean = true;
      else if (!vol->head_known && !p->new_head) {
        p->new_head = true;
        p->head = nj.start;
        p->head_seq = nj.sequence;
      }
    }
    else
      VDEBUG (vol, "journal: the guest wrote a journal superblock that "
              "does not parse (%s): kept the last good one",
              r == 0 ? err : "read error");
    free (buf);
    return 0;
  }

  /* The log: commit blocks among the request's whole blocks. */
  if (io->op != FSEVENT_OP_WRITE)
    return 0;
  uint64_t first = (seg->offset + vol->bs - 1) / vol->bs * vol->bs;
  for (uint64_t off = first; off + vol->bs <= seg->offset + seg->length; off += vol->bs) {
    uint32_t type, seq;
    if (!fsev_jbd2_header ((const char *) io->buf + (off - io->offset),
                           &type, &seq) || type != FSEV_JBD2_COMMIT)
      continue;
    uint32_t cjblk = (uint32_t) ((seg->position + (off - seg->offset)) / vol->bs);
    uint32_t hint = p->new_head ? p->head : vol->head;
    bool hint_ok = (p->new_head || vol->head_known) &&
      (p->new_head ? p->head_seq : vol->head_seq) == seq;
    struct fsev_jtxn txn;
    if (!find_txn (&pr->jv, cjblk, seq, hint, hint_ok, &txn)) {
      vol->stats.not_followed++;
      continue;
    }
    struct fsev_overlay *ov = next_overlay (p);
    if (ov == NULL ||
        fsev_overlay_apply (ov, &txn, jmap, &pr->jv, vol->layout->fs_blocks) == -1 ||
        fsev_grow ((void **) &pr->txns, &pr->cap, pr->ntxns + 1,
                   sizeof *pr->txns) == -1) {
      fsev_jtxn_free (&txn);
      pr->oom = true;
      return -1;
    }
    pr->txns[pr->ntxns++] = txn;
    for (size_t k = 0; k < txn.ntags; k++)
      if (txn.tags[k].csum_ok)
        add_blocks (pr, txn.tags[k].fsblk, 1);
    for (size_t k = 0; k < txn.nrevoked; k++)
      add_blocks (pr, txn.revoked[k], 1);
    p->new_head = true;
    p->head = txn.next;
    p->head_seq = seq + 1;
    p->sequence = seq;
    p->ntxns++;
  }
  return 0;
}

/* Decide a commit point: the model for the view CV (from OLDV, the
 * committed view now, through the blocks PR names), and the events the
 * change carries, in P.  0 or an errno.
 */
static int
decide (struct follow_plan *p, struct prep *pr, struct view *oldv,
        struct view *cv)
{
  struct volume *vol = p->vol;
  /* The next model: updated in place from what changed, or (when the
   * update cannot follow the change) scanned.  A and B are what the
   * diff compares: the touched inodes before and after, or the whole
   * models; NEXT is the whole next model, for lookups.
   */
  const struct fsev_layout *A = NULL, *B = NULL, *next = NULL;
  if (fsevent_debug_commit_timing)
    p->t_read = now_ns ();
  if (pr->ntxns || pr->meta_changed || pr->rescan) {
    char msg[256] = "";
    uint64_t size = fsev_layout_fs_bytes (vol->layout);
    struct fsev_source src_old = { .read = committed_read, .opaque = oldv, .size = size };
    struct fsev_source src_new = { .read = committed_read, .opaque = cv, .size = size };
    if (!pr->rescan && vol->updater == NULL && !vol->no_updater) {
      vol->updater = fsev_updater_open (vol->layout, &src_old, msg, sizeof msg);
      if (vol->updater == NULL) {
        vol->no_updater = true;
        VDEBUG (vol, "commits are followed by full scans: %s", msg);
      }
    }
    if (!pr->rescan && vol->updater) {
      switch (fsev_update (vol->layout, vol->updater, &src_old, &src_new,
                           pr->blocks, pr->nblocks, &p->up, msg, sizeof msg)) {
      case FSEV_UPDATE_DONE:
        p->updated = true;
        A = p->up.before;
        B = p->up.after;
        next = vol->layout;
        break;
      case FSEV_UPDATE_NOMEM:
        return ENOMEM;
      case FSEV_UPDATE_RESCAN:
        pr->rescan = true;
        VDEBUG (vol, "commit: %s: full scan", msg);
        break;
      }
    }
    else if (pr->meta_changed || pr->ntxns)
      pr->rescan = true;
    if (pr->rescan) {
      vol->stats.rescans++;
      p->L = scan (cv, msg, sizeof msg);
      if (p->L == NULL) {
        /* Fail closed: a change nobody could look at is refused while
         * anyone is looking (on-unparseable=allow lets it through,
         * for guests that run mkfs or resize2fs).
         */
        bool refuse = handlers_active () && !allow_unparseable;
        char why[320];
        snprintf (why, sizeof why, "the committed view does not parse: %s", msg);
        VDEBUG (vol, "%s: %s", why, refuse ? "refused (EIO)"
                : "let through, the model stays as it was");
        vol->stats.undecided++;
        struct log_batch lb;
        log_batch_init (&lb);
        log_undecided (&lb, vol->partition, p->sequence, why, refuse ? EIO : 0);
        log_commit (&lb);
        if (refuse)
          return EIO;
      }
      else {
        A = vol->layout;
        B = next = p->L;
      }
    }
  }
  if (fsevent_debug_commit_timing)
    p->t_update = now_ns ();
  if (next) {
    /* Namespace changes. */
    struct fsev_change *ch;
    ssize_t nch = fsev_diff (A, B, was_named, vol, &ch);
    if (nch < 0)
      return ENOMEM;
    ssize_t i = 0;
    for (; i < nch && (ch[i].reused || fsev_change_rank (ch[i].kind) < 4); i++)
      add_change (p, A, B, &ch[i]);
    /* New data: pending bytes the new model gives to files. */
    pthread_mutex_lock (&vol->pending_lock);
    pending_normalise (&vol->pending);
    struct sift s = { p, next };
    for (size_t k = 0; k < vol->pending.n && !p->oom; k++)
      fsev_layout_lookup (next, vol->pending.v[k].offset, vol->pending.v[k].length,
                          sift_segment, &s);
    pthread_mutex_unlock (&vol->pending_lock);
    p->have_kept = true;
    /* Logged data (data=journal). */
    struct jdata jd = { p, next };
    for (size_t t = 0; t < pr->ntxns; t++)
      for (size_t k = 0; k < pr->txns[t].ntags; k++) {
        const struct fsev_jtag *tag = &pr->txns[t].tags[k];
        if (tag->csum_ok && tag->fsblk < next->fs_blocks)
          fsev_layout_lookup (next, tag->fsblk * vol->bs, vol->bs, jdata_segment, &jd);
      }
    for (; i < nch; i++)
      add_change (p, A, B, &ch[i]);
    free (ch);
  }
  if (p->oom)
    return ENOMEM;
  if (fsevent_debug_commit_timing)
    p->t_decided = now_ns ();

  /* Handlers that read data get the bytes: read back from the image
   * (pending data is there already) or from the journal's copies.
   */
  if (handlers_want_data ()) {
    for (size_t k = 0; k < p->n; k++) {
      struct item *it = &p->items[k];
      if (it->is_change || it->w.bytes_to_write > (64u << 20))
        continue;               /* huge ranges: no buffer (documented) */
      it->data = malloc (it->w.bytes_to_write ? it->w.bytes_to_write : 1);
      if (it->data == NULL)
        return ENOMEM;
      if (committed_read (cv, it->data, it->w.bytes_to_write,
                          it->w.device_offset - vol->offset) == -1)
        return EIO;
      it->w.buffer = it->data;
    }
  }
  return 0;
}

/* ext2: hold the metadata blocks of IO that PR found back in the epoch
 * (their content: the held copy or the image, with IO on top).  The
 * epoch's room is made here, so taking them in after the I/O cannot
 * fail.  0 or an errno.
 */
static int
hold (struct follow_plan *p, struct prep *pr, const struct io *io)
{
  struct volume *vol = p->vol;
  struct view img = { .vol = vol };
  for (size_t i = 0; i < pr->nblocks; i++) {
    uint64_t b = pr->blocks[i];
    if (p->nheld && p->held[p->nheld - 1].fsblk >= b)
      continue;                 /* blocks come in order, maybe twice */
    size_t cap = p->nheld;
    if (fsev_grow ((void **) &p->held, &cap, p->nheld + 1, sizeof *p->held) == -1)
      return ENOMEM;
    unsigned char *data = malloc (vol->bs);
    if (data == NULL)
      return ENOMEM;
    const unsigned char *cur = epoch_get (&vol->epoch, b);
    if (cur)
      memcpy (data, cur, vol->bs);
    else if (raw_read (&img, data, vol->bs, b * vol->bs) == -1) {
      free (data);
      return EIO;
    }
    uint64_t from = b * vol->bs > io->offset ? b * vol->bs : io->offset;
    uint64_t to = (b + 1) * vol->bs < io->offset + io->count
      ? (b + 1) * vol->bs : io->offset + io->count;
    if (from < to)
      new_bytes (io, data + (from - b * vol->bs), from, to - from);
    p->held[p->nheld++] = (struct epoch_block) { .fsblk = b, .data = data };
  }
  /* Room for all of them in the epoch now. */
  size_t cap = vol->epoch.cap;
  if (fsev_grow ((void **) &vol->epoch.v, &cap, vol->epoch.n + p->nheld,
                 sizeof *vol->epoch.v) == -1)
    return ENOMEM;
  vol->epoch.cap = cap;
  return 0;
}

struct follow_plan *
follow_prepare (struct volume *vol, const struct io *io, struct conn *conn,
                int *err)
{
  struct follow_plan *p = calloc (1, sizeof *p);
  if (p == NULL) {
    *err = ENOMEM;
    return NULL;
  }
  p->vol = vol;
  p->conn = conn;
  if (fsevent_debug_commit_timing)
    p->t_start = now_ns ();
  struct view raw = { .vol = vol, .io = io };
  struct prep pr = { .p = p, .io = io, .jv = { .v = &raw, .L = vol->layout } };

  /* Journal blocks the overlay still needs get copies before the guest
   * overwrites them (the old content: the image without this request).
   */
  struct view old = { .vol = vol };
  if (fsev_overlay_refers (vol->overlay, io->offset, io->count) &&
      fsev_overlay_materialize (vol->overlay, raw_read, &old, io->offset,
                                io->count) == -1)
    goto oom;

  fsev_layout_lookup (vol->layout, io->offset, io->count, prep_segment, &pr);
  if (pr.oom || p->oom)
    goto oom;

  int e;
  if (!vol->journalled && pr.meta_changed)
    e = hold (p, &pr, io);      /* decided at the guest's flush */
  else {
    struct view oldv = { .vol = vol, .ov = vol->overlay };
    struct view cv = { .vol = vol, .io = io,
                       .ov = p->ov ? p->ov : vol->overlay };
    e = decide (p, &pr, &oldv, &cv);
  }
  for (size_t t = 0; t < pr.ntxns; t++)
    fsev_jtxn_free (&pr.txns[t]);
  free (pr.txns);
  free (pr.blocks);
  if (e) {
    if (e == ENOMEM)
      nbdkit_error ("out of memory while following the filesystem");
    free_plan (p);
    *err = e;
    return NULL;
  }
  return p;

 oom:
  for (size_t t = 0; t < pr.ntxns; t++)
    fsev_jtxn_free (&pr.txns[t]);
  free (pr.txns);
  free (pr.blocks);
  free_plan (p);
  nbdkit_error ("out of memory while following the journal");
  *err = ENOMEM;
  return NULL;
}

/* --- ext2: the epoch between two guest flushes. --- */

size_t
follow_plan_held (const struct follow_plan *p, uint64_t *blocks, size_t max)
{
  if (p == NULL)
    return 0;
  for (size_t i = 0; i < p->nheld && i < max; i++)
    blocks[i] = p->held[i].fsblk;
  return p->nheld;
}

unsigned
follow_block_size (const struct volume *vol)
{
  return vol->bs;
}

bool
follow_epoch_full (struct volume *vol)
{
  return __atomic_load_n (&vol->held, __ATOMIC_ACQUIRE) >= EPOCH_MAX_BLOCKS;
}

bool
follow_holds (struct volume *vol)
{
  return __atomic_load_n (&vol->held, __ATOMIC_ACQUIRE) > 0;
}

void
follow_patch_read (struct volume *vol, void *buf, uint64_t count,
                   uint64_t offset)
{
  if (__atomic_load_n (&vol->held, __ATOMIC_ACQUIRE) == 0)
    return;
  pthread_mutex_lock (&vol->epoch_lock);
  epoch_patch (&vol->epoch, buf, count, offset);
  pthread_mutex_unlock (&vol->epoch_lock);
}

int
follow_epoch_commit (struct volume *vol, struct conn *conn)
{
  if (vol->journalled || __atomic_load_n (&vol->held, __ATOMIC_ACQUIRE) == 0)
    return 0;
  follow_lock_exclusive (vol);
  if (vol->epoch.n == 0) {
    follow_unlock (vol);
    return 0;
  }
  struct log_batch lb;
  log_batch_init (&lb);
  int status = 0;
  struct follow_plan *p = calloc (1, sizeof *p);
  uint64_t *blocks = malloc (vol->epoch.n * sizeof *blocks);
  if (p == NULL || blocks == NULL) {
    free (p);
    free (blocks);
    follow_unlock (vol);
    nbdkit_error ("out of memory deciding the metadata written since the "
                  "last flush");
    return ENOMEM;
  }
  for (size_t i = 0; i < vol->epoch.n; i++)
    blocks[i] = vol->epoch.v[i].fsblk;
  p->vol = vol;
  p->conn = conn;
  struct prep pr = { .p = p, .blocks = blocks, .nblocks = vol->epoch.n,
                     .meta_changed = true };
  struct view oldv = { .vol = vol };
  struct view cv = { .vol = vol, .with_epoch = true };
  int e = decide (p, &pr, &oldv, &cv);
  free (pr.blocks);
  if (e) {
    /* Not decided (no memory, a read failed): refuse the flush and keep
     * the epoch for the next one.
     */
    follow_plan_discard (p);
    follow_unlock (vol);
    return e;
  }
  int veto = 0;
  uint64_t id;
  if (veto == 0 && locks_any () && follow_plan_locked (p, &id)) {
    /* A host tool's lock: the epoch waits for a later flush. */
    VDEBUG (vol, "flush: the metadata held since the last flush changes "
            "a range lock %" PRIu64 " holds: kept for the next flush", id);
    follow_plan_discard (p);
    follow_unlock (vol);
    return EIO;
  }
  if (veto == 0)
    veto = follow_plan_before (p, &lb);
  if (veto == 0) {
    /* Decided: the epoch goes home, in block order. */
    for (size_t i = 0; i < vol->epoch.n && status == 0; i++)
      if (vol->dev->pwrite (vol->dev, vol->epoch.v[i].data, vol->bs,
                            vol->offset + vol->epoch.v[i].fsblk * vol->bs,
                            false) == -1)
        status = errno ? errno : EIO;
  }
  else
    status = veto;
  follow_plan_finish (p, &lb, status);
  if (status == 0 || veto) {
    /* Written home, or refused: a refused epoch is dropped, and the
     * image keeps the last decided state (see the man page).
     */
    pthread_mutex_lock (&vol->epoch_lock);
    if (veto && vol->epoch.n)
      VDEBUG (vol, "flush: %zu metadata blocks written since the last flush "
              "dropped (%s)", vol->epoch.n, strerror (veto));
    epoch_clear (&vol->epoch);
    __atomic_store_n (&vol->held, 0, __ATOMIC_RELEASE);
    pthread_mutex_unlock (&vol->epoch_lock);
  }
  log_commit (&lb);
  follow_unlock (vol);
  return status;
}

void
follow_plan_discard (struct follow_plan *p)
{
  free_plan (p);
}

/* Would the plan change a range a host tool has locked?  New data in
 * it, a size change below its end, the file's unlink or deletion, or a
 * rename or link replacing it.  A rename of the locked file itself is
 * fine: the lock follows the inode.
 */
bool
follow_plan_locked (const struct follow_plan *p, uint64_t *id)
{
  for (size_t i = 0; i < p->n; i++) {
    const struct item *it = &p->items[i];
    if (!it->is_change) {
      if (locks_covers (p->vol->partition, it->w.ino, it->w.position,
                        it->w.position + it->w.bytes_to_write, id))
        return true;
      continue;
    }
    const struct fsevent_change *c = &it->c;
    uint64_t lo;
    switch (c->kind) {
    case FSEVENT_SET_SIZE:
      lo = c->old_attributes.size < c->attributes.size
        ? c->old_attributes.size : c->attributes.size;
      if (locks_covers (p->vol->partition, c->ino, lo, LOCK_TO_EOF, id))
        return true;
      break;
    case FSEVENT_UNLINK:
    case FSEVENT_DELETE:
      if (locks_covers (p->vol->partition, c->ino, 0, LOCK_TO_EOF, id))
        return true;
      break;
    default:
      break;
    }
    if (c->replaced_ino && locks_covers (p->vol->partition, c->replaced_ino, 0, LOCK_TO_EOF, id))
      return true;
  }
  return false;
}

/* CAT: the file's committed content. */
struct extent {
  uint64_t lblk, pblk, len;
  bool unwritten;
};

struct extents {
  struct extent *v;
  size_t n, cap;
};

static int
add_extent (uint64_t lblk, uint64_t pblk, uint64_t len, bool unwritten,
            void *opaque)
{
  struct extents *x = opaque;
  if (fsev_grow ((void **) &x->v, &x->cap, x->n + 1, sizeof *x->v) == -1)
    return -1;
  x->v[x->n++] = (struct extent) { lblk, pblk, len, unwritten };
  return 0;
}

static int
cmp_extent (const void *a, const void *b)
{
  const struct extent *x = a, *y = b;
  return x->lblk < y->lblk ? -1 : x->lblk > y->lblk;
}

int
follow_cat (struct volume *vol, const char *path,
            int (*header) (void *, uint64_t),
            int (*out) (void *, const void *, size_t), void *opaque)
{
  struct extents x = { 0 };
  unsigned char *buf = NULL;
  int r = 0;

  follow_lock_shared (vol);
  uint32_t ino = fsev_layout_lookup_path (vol->layout, path);
  const struct fsev_inode *in = ino ? fsev_layout_inode (vol->layout, ino) : NULL;
  if (in == NULL) {
    r = -ENOENT;
    goto out;
  }
  if ((in->mode & 0170000) != 0100000) {
    r = (in->mode & 0170000) == 0040000 ? -EISDIR : -EINVAL;
    goto out;
  }
  if (in->flags & 0x10000000) { /* EXT4_INLINE_DATA_FL */
    r = -ENOTSUP;
    goto out;
  }
  buf = malloc (vol->bs);
  if (buf == NULL ||
      fsev_layout_file_blocks (vol->layout, ino, add_extent, &x) == -1) {
    r = -ENOMEM;
    goto out;
  }
  qsort (x.v, x.n, sizeof *x.v, cmp_extent);
  if (header (opaque, in->size) == -1) {
    r = -EPIPE;
    goto out;
  }
  struct view v = { .vol = vol, .ov = vol->overlay };
  size_t k = 0;
  for (uint64_t pos = 0, lblk = 0; pos < in->size; pos += vol->bs, lblk++) {
    while (k < x.n && x.v[k].lblk + x.v[k].len <= lblk)
      k++;
    size_t n = in->size - pos < vol->bs ? in->size - pos : vol->bs;
    if (k < x.n && x.v[k].lblk <= lblk && !x.v[k].unwritten) {
      if (committed_read (&v, buf, vol->bs,
                          (x.v[k].pblk + (lblk - x.v[k].lblk)) * vol->bs) == -1) {
        r = -EIO;
        goto out;
      }
    }
    else
      memset (buf, 0, vol->bs);      /* a hole, or unwritten: zeroes */
    if (out (opaque, buf, n) == -1) {
      r = -EPIPE;
      goto out;
    }
  }
 out:
  follow_unlock (vol);
  free (x.v);
  free (buf);
  return r;
}

int
follow_resolve (struct volume *vol, const char *path, uint32_t *ino,
                char ***names)
{
  follow_lock_shared (vol);
  *ino = fsev_layout_lookup_path (vol->layout, path);
  *names = *ino ? paths_of (vol->layout, *ino) : NULL;
  follow_unlock (vol);
  if (*ino == 0)
    return -ENOENT;
  return *names ? 0 : -ENOMEM;
}

uint64_t
follow_pending_bytes (struct volume *vol)
{
  pthread_mutex_lock (&vol->pending_lock);
  pending_normalise (&vol->pending);
  uint64_t b = vol->pending.bytes;
  pthread_mutex_unlock (&vol->pending_lock);
  return b;
}

void
follow_get_stats (struct volume *vol, uint64_t *transactions, uint64_t *vetoed,
                  uint64_t *unattributed, uint64_t *not_followed)
{
  /* Summed over volumes by the caller. */
  *transactions += vol->stats.transactions;
  *vetoed += vol->stats.vetoed;
  *unattributed += __atomic_load_n (&vol->stats.unattributed_bytes,
                                    __ATOMIC_RELAXED);
  *not_followed += vol->stats.not_followed;
}

int
follow_plan_before (struct follow_plan *p, struct log_batch *lb)
{
  if (p == NULL)
    return 0;
  for (size_t i = 0; i < p->n; i++) {
    struct item *it = &p->items[i];
    int veto;
    if (it->is_change) {
      handlers_before_change (&it->c, p->conn->contexts);
      veto = it->c.result_code;
      log_change (lb, &it->c);
    }
    else {
      handlers_before_write (&it->w, p->conn->contexts);
      veto = it->w.result_code;
      log_event (lb, &it->w);
    }
    p->decided = i + 1;
    if (veto) {
      VDEBUG (p->vol, "transaction %" PRIu64 " vetoed at %s of %s: %s",
              p->sequence,
              it->is_change ? log_change_name (it->c.kind) : "write",
              it->is_change ? it->c.file_name : it->w.file_name,
              strerror (veto));
      return veto;
    }
  }
  return 0;
}

/* The names of INO in L, sorted, as one comparable string. */
static char *
names_key (const struct fsev_layout *L, uint32_t ino, size_t *len)
{
  unsigned n = fsev_layout_names (L, ino, NULL, 0);
  struct fsev_name *v = calloc (n ? n : 1, sizeof *v);
  char *out = NULL;
  size_t cap = 0;
  *len = 0;
  if (v == NULL)
    return NULL;
  fsev_layout_names (L, ino, v, n);
  /* Order-free: a name set, not the order links were found in. */
  for (unsigned i = 1; i < n; i++)
    for (unsigned j = i; j > 0; j--) {
      struct fsev_name *x = &v[j - 1], *y = &v[j];
      size_t m = x->len < y->len ? x->len : y->len;
      int c = x->parent != y->parent ? (x->parent < y->parent ? -1 : 1)
        : memcmp (x->name, y->name, m) ? memcmp (x->name, y->name, m)
        : (x->len > y->len) - (x->len < y->len);
      if (c <= 0)
        break;
      struct fsev_name t = *x; *x = *y; *y = t;
    }
  for (unsigned i = 0; i < n; i++) {
    if (fsev_grow ((void **) &out, &cap, *len + v[i].len + 16, 1) == -1) {
      free (out);
      free (v);
      return NULL;
    }
    *len += (size_t) snprintf (out + *len, 16, "%u/", v[i].parent);
    memcpy (out + *len, v[i].name, v[i].len);
    *len += v[i].len;
    out[(*len)++] = 0;
  }
  free (v);
  return out ? out : strdup ("");
}

/* What differs between the model M and a fresh scan F, field by field,
 * or NULL.
 */
static const char *
model_differs (struct volume *vol, const struct fsev_layout *M,
               const struct fsev_layout *F)
{
  static __thread char msg[256];
  if (M->nruns != F->nruns)
    return "the model's block runs differ from a fresh scan's (count)";
  for (size_t i = 0; i < M->nruns; i++)
    if (memcmp (&M->runs[i], &F->runs[i], sizeof M->runs[i]) != 0 ||
        M->maxend[i] != F->maxend[i]) {
      snprintf (msg, sizeof msg, "run %zu differs from a fresh scan's: block "
                "%" PRIu64 "+%" PRIu32 " role %u owner %" PRIu32 " vs block %"
                PRIu64 "+%" PRIu32 " role %u owner %" PRIu32, i,
                M->runs[i].pblk, M->runs[i].len, M->runs[i].role,
                M->runs[i].owner, F->runs[i].pblk, F->runs[i].len,
                F->runs[i].role, F->runs[i].owner);
      return msg;
    }
  if (M->ninodes != F->ninodes)
    return "the model's inodes in use differ from a fresh scan's (count)";
  for (size_t i = 0; i < M->ninodes; i++)
    if (memcmp (&M->inodes[i], &F->inodes[i], sizeof M->inodes[i]) != 0) {
      snprintf (msg, sizeof msg, "inode %" PRIu32 " differs from a fresh "
                "scan's", M->inodes[i].ino);
      return msg;
    }
  if (M->nxattrs != F->nxattrs ||
      (M->nxattrs && memcmp (M->xattrs, F->xattrs,
                             M->nxattrs * sizeof *M->xattrs) != 0))
    return "the model's xattr block owners differ from a fresh scan's";
  if (M->names.nlinks != F->names.nlinks)
    return "the model's names differ from a fresh scan's (count)";
  for (size_t i = 0; i < F->names.nlinks; i++) {
    uint32_t ino = F->names.links[i].child;
    if (i && F->names.links[i - 1].child == ino)
      continue;
    size_t la, lb;
    char *a = names_key (M, ino, &la), *b = names_key (F, ino, &lb);
    bool same = a && b && la == lb && memcmp (a, b, la) == 0;
    free (a);
    free (b);
    if (!same) {
      snprintf (msg, sizeof msg, "the names of inode %" PRIu32 " differ from "
                "a fresh scan's", ino);
      return msg;
    }
  }
  struct fsev_change *ch;
  ssize_t n = fsev_diff (M, F, was_named, vol, &ch);
  if (n > 0)
    free (ch);
  if (n != 0)
    return "the model differs from a fresh scan (namespace diff)";
  return NULL;
}

/* -D fsevent.check=1: the overlay against a fresh replay of the
 * journal from its tail, and the model against a fresh scan.
 */
static void
check_model (struct volume *vol)
{
  char err[256];
  struct view raw = { .vol = vol };
  struct jview jv = { .v = &raw, .L = vol->layout };
  struct fsev_overlay *saved = vol->overlay;
  const char *what = NULL;

  vol->overlay = fsev_overlay_new (vol->bs);
  if (vol->overlay == NULL) {
    vol->overlay = saved;
    return;
  }
  if (vol->journalled && vol->js.start != 0 &&
      fsev_jbd2_walk (&vol->js, jread, &jv, replay_txn, &jv, NULL, NULL) < 0)
    what = "the journal does not replay";
  struct fsev_overlay *fresh = vol->overlay;
  vol->overlay = saved;
  /* Entries must match; blocks already home may be missing from either
   * side only if home holds the same bytes.
   */
  unsigned char a[65536], b[65536];
  for (size_t i = 0; what == NULL && i < saved->n && vol->bs <= sizeof a; i++) {
    const struct fsev_overlay_entry *e = &saved->e[i];
    const struct fsev_overlay_entry *f = fsev_overlay_find (fresh, e->fsblk);
    fsev_overlay_read_entry (saved, e, raw_read, &raw, a);
    if (f)
      fsev_overlay_read_entry (fresh, f, raw_read, &raw, b);
    else
      raw_read (&raw, b, vol->bs, e->fsblk * vol->bs);
    if (memcmp (a, b, vol->bs) != 0)
      what = "the overlay differs from a fresh replay of the journal";
  }
  if (what == NULL) {
    struct view cv = { .vol = vol, .ov = fresh };
    struct fsev_layout *L2 = scan (&cv, err, sizeof err);
    if (L2 == NULL)
      what = "the committed view does not scan";
    else {
      what = model_differs (vol, vol->layout, L2);
      fsev_layout_free (L2);
    }
  }
  fsev_overlay_free (fresh);
  if (what) {
    vol->stats.check_failures++;
    nbdkit_error ("%s%.0u%smodel check failed after transaction %" PRIu32
                  ": %s", vol->partition ? "partition " : "", vol->partition,
                  vol->partition ? ": " : "", vol->head_seq - 1, what);
  }
  else
    VDEBUG (vol, "model check passed (%zu overlay blocks)", vol->overlay->n);
}

void
follow_plan_finish (struct follow_plan *p, struct log_batch *lb, int status)
{
  if (p == NULL)
    return;
  struct volume *vol = p->vol;
  if (status == 0 && p->nheld) {
    /* The request's metadata joins the epoch (room was made). */
    pthread_mutex_lock (&vol->epoch_lock);
    for (size_t i = 0; i < p->nheld; i++)
      if (epoch_take (&vol->epoch, p->held[i].fsblk, p->held[i].data) == -1)
        nbdkit_error ("out of memory holding metadata block %" PRIu64
                      " (lost)", p->held[i].fsblk);
    __atomic_store_n (&vol->held, vol->epoch.n, __ATOMIC_RELEASE);
    pthread_mutex_unlock (&vol->epoch_lock);
    free (p->held);
    p->held = NULL;
    p->nheld = 0;
  }
  bool model_changed = p->updated || p->L;
  vol->excl_is_commit |= p->ntxns || model_changed;
  uint64_t t_finish = fsevent_debug_commit_timing ? now_ns () : 0;
  if (status == 0 && p->updated) {
    /* The in-place edits stand. */
    fsev_update_release (&p->up);
    p->updated = false;
    vol->stats.incremental++;
    if (fsev_edit_compact_names (vol->layout) == -1)
      nbdkit_debug ("out of memory compacting names (retried later)");
  }
  if (status == 0) {
    if (p->ov) {
      fsev_overlay_free (vol->overlay);
      vol->overlay = p->ov;
      p->ov = NULL;
    }
    if (p->L) {
      fsev_layout_free (vol->layout);
      vol->layout = p->L;
      p->L = NULL;
      /* A new geometry may come with a scan: re-open the updater. */
      fsev_updater_close (vol->updater);
      vol->updater = NULL;
      vol->no_updater = false;
    }
    {
      /* Announced names: created, linked or renamed to; forgotten when
       * the inode is freed.
       */
      for (size_t i = 0; i < p->n; i++) {
        const struct item *it = &p->items[i];
        uint32_t ino = it->c.ino;
        if (!it->is_change || ino >= vol->named_bits)
          continue;
        if (it->freed_inode)
          vol->named[ino / 8] &= ~(1u << (ino % 8));
        else if (it->c.kind == FSEVENT_CREATE || it->c.kind == FSEVENT_LINK ||
                 it->c.kind == FSEVENT_RENAME)
          vol->named[ino / 8] |= 1u << (ino % 8);
      }
    }
    if (p->new_js)
      vol->js = p->js;
    if (p->new_head) {
      vol->head = p->head;
      vol->head_seq = p->head_seq;
      vol->head_known = true;
    }
    vol->stats.transactions += p->ntxns;
    pthread_mutex_lock (&vol->pending_lock);
    if (p->have_kept) {
      /* What was attributed leaves the set; requests that added to it
       * meanwhile cannot exist (we hold the model exclusively).
       */
      pending_free (&vol->pending);
      vol->pending = p->kept;
      memset (&p->kept, 0, sizeof p->kept);
    }
    if (p->journal_clean) {
      struct give_up g = { vol, lb, "journal-clean" };
      pending_normalise (&vol->pending);
      for (size_t i = 0; i < vol->pending.n; i++)
        given_up (vol->pending.v[i].offset, vol->pending.v[i].length, &g);
      pending_free (&vol->pending);
    }
    pthread_mutex_unlock (&vol->pending_lock);
  }
  else if (p->ntxns)
    vol->stats.vetoed += p->ntxns;

  for (size_t i = 0; i < p->decided; i++) {
    struct item *it = &p->items[i];
    writes_count_events (it->is_change ? 1 + (unsigned) it->c.kind : 0, 1);
    if (it->is_change) {
      it->c.phase = FSEVENT_AFTER;
      it->c.status = status;
      it->c.result_code = 0;
      handlers_after_change (&it->c, p->conn->contexts);
      log_change (lb, &it->c);
      if (status == 0 && it->freed_inode)
        handlers_inode_freed (vol->partition, it->c.ino);
    }
    else {
      it->w.phase = FSEVENT_AFTER;
      it->w.status = status;
      it->w.bytes_written = status == 0 ? it->w.bytes_to_write : 0;
      it->w.result_code = 0;
      if (status == 0)
        *(it->w.direction == FSEVENT_JOURNAL ? &vol->stats.journal_bytes
          : &vol->stats.commit_bytes) += it->w.bytes_to_write;
      handlers_after_write (&it->w, p->conn->contexts);
      log_event (lb, &it->w);
    }
  }
  bool changed = status == 0 && (p->ntxns || p->new_js || model_changed);
  if (fsevent_debug_commit_timing && p->t_start && model_changed)
    VDEBUG (vol, "commit timing: journal %.0f us, update %.0f us (%s), events "
            "%.0f us, handlers+I/O %.0f us, finish %.0f us; %zu events",
            (p->t_read - p->t_start) / 1e3, (p->t_update - p->t_read) / 1e3,
            p->L ? "scan" : "in place", (p->t_decided - p->t_update) / 1e3,
            (t_finish - p->t_decided) / 1e3, (now_ns () - t_finish) / 1e3, p->n);
  free_plan (p);
  if (changed && fsevent_debug_check)
    check_model (vol);
}
