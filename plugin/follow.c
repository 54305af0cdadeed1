/* plugin/follow.c: following one filesystem of the served device: its
 * lifetime, its model lock and what that costs commit points, and the
 * questions the control socket asks of it.
 *
 * The work is split by concern, all on struct volume
 * (follow-internal.h): follow-view.c reads the views (image, overlay,
 * journal), follow-journal.c finds the commit points in the guest's
 * writes and reads their transactions, follow-plan.c decides a commit
 * point (model update, events, handlers) and makes it take effect,
 * follow-epoch.c holds ext2 metadata until the guest's flush, and
 * follow-check.c compares the model with a fresh scan (-D
 * fsevent.check=1).
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
#include "follow-internal.h"

NBDKIT_DLL_PUBLIC int fsevent_debug_check = 0;
/* -D fsevent.commit_timing=1: where each commit point's time goes. */
NBDKIT_DLL_PUBLIC int fsevent_debug_commit_timing = 0;

uint64_t
follow_now_ns (void)
{
  struct timespec ts;
  clock_gettime (CLOCK_MONOTONIC, &ts);
  return (uint64_t) ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* on-unparseable=: what a commit point that cannot be decided does
 * while any handler is loaded.  Deny (refuse the request with EIO) by
 * default: an undecided change is an unchecked one.
 */
bool follow_allow_unparseable;

int
follow_set_on_unparseable (const char *value)
{
  if (strcmp (value, "deny") == 0)
    follow_allow_unparseable = false;
  else if (strcmp (value, "allow") == 0)
    follow_allow_unparseable = true;
  else {
    nbdkit_error ("on-unparseable=%s: use deny or allow", value);
    return -1;
  }
  return 0;
}

static void
volume_free (struct volume *vol)
{
  pending_free (&vol->pending);
  free (vol->tracked);
  free (vol->named);
  free (vol->hold_ns);
  free (vol->vcache_data);
  free (vol->vcache_off);
  fsev_updater_close (vol->updater);
  fsev_overlay_free (vol->overlay);
  fsev_layout_free (vol->layout);
  pthread_rwlock_destroy (&vol->model_lock);
  pthread_mutex_destroy (&vol->pending_lock);
  epoch_clear (&vol->epoch);
  pthread_mutex_destroy (&vol->epoch_lock);
  free (vol);
}

/* Start-up recovery: the transactions replayed are followed ones
 * (tracked once the live log they lie in is known).
 */
struct replay {
  struct jview jv;
  struct jtrack *v;
  size_t n, cap;
};

static int
replay_and_note (const struct fsev_jtxn *txn, void *opaque)
{
  struct replay *r = opaque;
  if (fsev_grow ((void **) &r->v, &r->cap, r->n + 1, sizeof *r->v) == 0)
    r->v[r->n++] = (struct jtrack) { txn->sequence, txn->start, txn->next };
  return view_replay_txn (txn, &r->jv);
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
  follow_remember_names (vol, L);

  uint64_t pblk = fsev_layout_journal_ino (L)
    ? fsev_layout_journal_pblk (L, 0) : 0;
  if (pblk == 0) {
    VDEBUG (vol, "no journal: metadata writes are the commit points");
    return vol;
  }
  unsigned char *buf = malloc (vol->bs);
  char err[256];
  struct view v = { .vol = vol };
  if (buf == NULL || view_raw (&v, buf, vol->bs, pblk * vol->bs) == -1) {
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
            "are the commit points; a journal superblock that parses "
            "will be refused", err);
    vol->journal_unfollowed = true;
    vol->jsb_offset = pblk * vol->bs;
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
  struct replay rp = { .jv = { .v = &v, .L = L } };
  uint32_t next, next_seq;
  int n = fsev_jbd2_walk (&vol->js, view_jread, &rp.jv, replay_and_note, &rp,
                          &next, &next_seq);
  if (n < 0) {
    free (rp.v);
    nbdkit_error ("cannot replay the journal");
    volume_free (vol);
    return NULL;
  }
  vol->head = next;
  vol->head_seq = next_seq;
  vol->head_known = true;
  journal_track (vol, rp.v, rp.n);
  free (rp.v);
  VDEBUG (vol, "journal: %d committed transactions replayed into the "
          "committed view (%zu blocks)", n, vol->overlay->n);
  if (vol->overlay->n) {
    struct view cv = { .vol = vol, .ov = vol->overlay };
    struct fsev_layout *nl = view_scan (&cv, err, sizeof err);
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
      if (fsevent_debug_commit_timing)
        VDEBUG (vol, "commit hold: %.0f us", ns / 1e3);
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

static int
each_path (const struct fsev_layout *L, struct volume *vol, uint32_t ino,
           const char *why, int (*fn) (unsigned, const char *, const char *,
                                       void *), void *opaque)
{
  char **names = paths_of (L, ino);
  if (names == NULL)
    return -1;
  int r = 0;
  for (size_t k = 0; names[k] && r == 0; k++)
    r = fn (vol->partition, names[k], why, opaque);
  free (names);
  return r;
}

int
follow_paths_in_doubt (struct volume *vol,
                       int (*fn) (unsigned, const char *, const char *, void *),
                       void *opaque)
{
  const struct fsev_layout *L = vol->layout;
  const struct fsev_names *nm = &L->names;
  static const char free_ino[] = "the inode bitmap says its inode is free, "
    "yet the kernel opens it by its name";
  int r;
  /* The root has no entry of its own: not held, nothing below it is
   * named (its entries are not read), and every path is in doubt.
   */
  if (fsev_layout_inode (L, L->root_ino) == NULL &&
      (r = fn (vol->partition, "/", free_ino, opaque)) != 0)
    return r;
  /* The links are sorted by child: each inode once. */
  uint32_t last = 0;
  for (size_t i = 0; i < nm->nlinks; i++) {
    uint32_t ino = nm->links[i].child;
    if (ino == last || ino == 0)
      continue;
    last = ino;
    if (fsev_layout_inode (L, ino) == NULL &&
        (r = each_path (L, vol, ino, free_ino, fn, opaque)) != 0)
      return r;
  }
  const uint32_t *dirs;
  size_t n = fsev_layout_unread_dirs (L, &dirs);
  for (size_t i = 0; i < n; i++)
    if ((r = each_path (L, vol, dirs[i], "a directory whose entries fsevent "
                        "does not read (its \".\" names another inode, a "
                        "block lies outside the filesystem, or it does not "
                        "parse), while the kernel may read them",
                        fn, opaque)) != 0)
      return r;
  return 0;
}

/* --- Pending free-space bytes. --- */

void
follow_pending_add (struct volume *vol, uint64_t offset, uint64_t length)
{
  /* Bounded: past PENDING_MAX_RANGES ranges (after merging) or without
   * memory, the bytes are given up at once, as an unattributed record
   * (never dropped silently).
   */
  const char *why = NULL;
  pthread_mutex_lock (&vol->pending_lock);
  if (vol->pending.n >= PENDING_MAX_RANGES)
    pending_normalise (&vol->pending);
  if (vol->pending.n >= PENDING_MAX_RANGES)
    why = "pending-full";
  else if (pending_add (&vol->pending, offset, length) == -1)
    why = "no-memory";
  pthread_mutex_unlock (&vol->pending_lock);
  if (why) {
    struct log_batch lb;
    struct give_up g = { vol, &lb, why };
    log_batch_init (&lb);
    pending_given_up (offset, length, &g);
    log_commit (&lb);
  }
}


void
pending_given_up (uint64_t offset, uint64_t length, void *opaque)
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
  pending_remove (&vol->pending, offset, length, pending_given_up, &g);
  pthread_mutex_unlock (&vol->pending_lock);
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
      if (view_committed (&v, buf, vol->bs,
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
