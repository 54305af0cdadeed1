/* plugin/log.c: log=FILE.
 *
 * One JSON object per line, per event: its after phase, with the
 * outcome and who vetoed (log-phases=both: the before phase too, with
 * the handlers' decision).  The request path does
 * as little as it can: a request records its events in binary as they
 * are decided (with the time of the decision), then takes a run of seq
 * numbers with one atomic add and copies its records into those slots
 * of a ring.  Slot = seq, so the file's order is seq order and a
 * request's lines stay together without a lock.  A writer thread of its
 * own formats the ring's records as JSON (log-format.c) and writes
 * them, many lines a write(2), every 2 ms.
 *
 * Why, measured on 2 cores at 4 KiB random writes, QD16, against
 * nbdkit file in the same run: formatting on the request path and
 * numbering under a shared lock gave 0.73; this ring 0.78, and 0.80 to
 * 0.84 with the writer at nice 19 (6 s runs).  In scripts/bench's 10 s
 * runs, where writing back the log's own pages weighs more, 0.74 to 0.75
 * with two lines per event.  One line per event (the default since):
 * about 1.1x the two-line format in the same rounds, and in
 * scripts/bench runs 0.74 to 1.00 of file (medians of per-round ratios,
 * on cores shared with other work, whose noise hides anything closer).
 * What is left of the log's cost, by perf: the writer's write(2) and
 * formatting, the clock, the slot copy: about 4% of nbdkit's CPU (the
 * fence that was in log_commit, another 1.2%, is gone); the rest of
 * the gap is the plugin's own work and the log's page-cache writeback.
 *
 * An NBD flush waits until every line numbered before it is written,
 * and syncs the log with the data (log-sync=).  A commit point starts
 * that sync as soon as it is answered (log_sync_soon): a guest flushes
 * right after its commit block, and the flush then finds the log's
 * fdatasync done or under way instead of adding a second one after the
 * image's.  A full ring (the file cannot keep
 * up, e.g. a slow terminal) makes request threads wait: lines are never
 * dropped for speed, only for want of memory, and then counted.
 */
#include <config.h>

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <semaphore.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>

#define NBDKIT_API_VERSION 2
#include <nbdkit-plugin.h>

#include "handlers.h"
#include "log.h"
#include "log-format.h"
#include "watch.h"

static int fd = -1;
static void syncer_start (void);
static void syncer_stop (void);
static void write_out (uint64_t target);
static bool own_fd;
static bool both_phases;        /* log-phases=both */

/* --- The ring. --- */

#define SLOTS 16384             /* a power of 2: about 50 ms of lines at
                                   the fastest we have measured */
/* Slots are cache-line aligned: requests on different CPUs fill
 * neighbouring slots at once.
 */
struct slot {
  uint64_t ready;               /* the seq whose record this slot holds */
  struct log_rec rec;
} __attribute__ ((aligned (64)));
_Static_assert (sizeof (struct slot) == 192, "a slot is 3 cache lines");
static struct slot *ring;

/* Each written often by one side and read by the other: a cache line
 * each.
 */
static uint64_t next_seq __attribute__ ((aligned (64))) = 1;
                                /* the next seq to give (atomic) */
static uint64_t consumed __attribute__ ((aligned (64)));
                                /* every seq up to here has been formatted
                                   and its slot is free (atomic) */

/* Waits and wake-ups; never taken on the request path unless the ring
 * is full or the writer sleeps for want of lines.
 */
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t queued = PTHREAD_COND_INITIALIZER;
                                /* to the writer: lines, a flush, or stop;
                                   log_start gives it the monotonic clock */
static pthread_cond_t written = PTHREAD_COND_INITIALIZER; /* to flushes */
static pthread_cond_t space = PTHREAD_COND_INITIALIZER;   /* to producers */
static uint64_t written_seq;    /* every seq up to here is in the file */
static unsigned sync_waiting, space_waiting;
static bool writer_asleep;      /* atomic: wake it after taking seqs */
/* The idle writer sleeps on this, not on queued: a request wakes it
 * with sem_post, which never waits.  (Taking the mutex to signal could
 * wait for the writer itself, at nice 19 and descheduled while it held
 * the mutex: milliseconds on a busy machine.)  Whoever sets a flag the
 * writer waits for (stop, sync, space) posts too.
 */
static sem_t wake;
static bool stopping;
static uint64_t full_waits, helped;     /* atomic: for -v at close */
static bool writer_running;     /* atomic */
static pthread_t writer;

/* How long records may wait in the ring.  Waking the writer for every
 * request cost more than the writing.
 */
#define WRITER_PERIOD_NS 2000000        /* 2 ms */
#define OUT_BATCH (256 * 1024)          /* bytes formatted per write(2) */

/* The writer's output buffer, and who formats into it: the writer, or
 * log_close when there never was one.
 */
static pthread_mutex_t drain_lock = PTHREAD_MUTEX_INITIALIZER;
static char *out;
static size_t out_cap;

int
log_open (const char *path)
{
  if (fd >= 0) {
    nbdkit_error ("log= given more than once");
    return -1;
  }
  ring = aligned_alloc (64, SLOTS * sizeof *ring);
  if (ring)
    memset (ring, 0, SLOTS * sizeof *ring);
  if (ring == NULL) {
    nbdkit_error ("log: %m");
    return -1;
  }
  if (strcmp (path, "-") == 0) {
    fd = STDERR_FILENO;
    return 0;
  }
  fd = open (path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (fd == -1) {
    nbdkit_error ("log=%s: %m", path);
    free (ring);
    ring = NULL;
    return -1;
  }
  own_fd = true;
  return 0;
}

int
log_set_phases (const char *value)
{
  if (strcmp (value, "after") == 0)
    both_phases = false;
  else if (strcmp (value, "both") == 0)
    both_phases = true;
  else {
    nbdkit_error ("log-phases=%s: use after (one line per event, with its "
                  "outcome: the default) or both (a before line with the "
                  "handlers' decision, and the after line)", value);
    return -1;
  }
  return 0;
}

/* log-sync=.  Why fs exists, measured on this project's 2-core hosts
 * (ext4 on a virtio disk): a 4 KiB overwrite plus fdatasync of the
 * image costs 0.16-0.17 ms; adding an appended line plus the log's
 * fdatasync (side by side or one after the other) 0.30-0.38 ms, since
 * each fdatasync ends in a cache flush of its own and an append also
 * commits the host's journal; one syncfs(2) for both 0.19-0.23 ms.
 * syncfs writes back every dirty file of that filesystem, so it is a
 * choice for a filesystem that holds little else, never the default.
 */
static enum { SYNC_FLUSH, SYNC_FS, SYNC_NONE } sync_mode;

int
log_set_sync (const char *value)
{
  if (strcmp (value, "flush") == 0)
    sync_mode = SYNC_FLUSH;
  else if (strcmp (value, "fs") == 0)
    sync_mode = SYNC_FS;
  else if (strcmp (value, "none") == 0)
    sync_mode = SYNC_NONE;
  else {
    nbdkit_error ("log-sync=%s: use flush (an NBD flush syncs the log "
                  "beside the data: the default), fs (one syncfs of the "
                  "filesystem holding the log and the image) or none "
                  "(lines are written, not synced)", value);
    return -1;
  }
  return 0;
}

int
log_check_sync (int image_fd)
{
  struct stat lst, ist;

  if (sync_mode != SYNC_FS || fd < 0)
    return 0;
  if (!own_fd) {
    nbdkit_error ("log-sync=fs: the log is standard error, not a file");
    return -1;
  }
  if (image_fd < 0) {
    nbdkit_error ("log-sync=fs: only the plugin, which writes the image "
                  "itself, can sync the image and the log together");
    return -1;
  }
  if (fstat (fd, &lst) == -1 || fstat (image_fd, &ist) == -1) {
    nbdkit_error ("log-sync=fs: fstat: %m");
    return -1;
  }
  if (!S_ISREG (ist.st_mode) || ist.st_dev != lst.st_dev) {
    nbdkit_error ("log-sync=fs: the log and the image must be regular files "
                  "on one filesystem (one syncfs then covers both)");
    return -1;
  }
  return 0;
}

bool
log_flush_is_syncfs (void)
{
  return sync_mode == SYNC_FS && fd >= 0 && own_fd;
}

int
log_syncfs (void)
{
  write_out (__atomic_load_n (&next_seq, __ATOMIC_ACQUIRE) - 1);
  /* Since Linux 5.8 syncfs reports writeback errors of the filesystem,
   * the image's included.
   */
  if (syncfs (fd) == -1) {
    nbdkit_error ("log-sync=fs: syncfs: %m");
    return -1;
  }
  return 0;
}

bool
log_enabled (void)
{
  return fd >= 0;
}

bool
log_wanted (void)
{
  return fd >= 0 || watch_active ();
}

static void
write_all (const char *p, size_t left)
{
  while (left > 0) {
    ssize_t w = write (fd, p, left);
    if (w == -1) {
      if (errno == EINTR)
        continue;
      nbdkit_error ("log: write: %m: events lost");
      return;
    }
    p += w;
    left -= w;
  }
}

/* Format and write the records that are ready, in seq order, up to the
 * first that is not (its request is still copying it in).  Returns how
 * many were written.  Called with drain_lock held.
 */
static size_t
drain (void)
{
  uint64_t seq = __atomic_load_n (&consumed, __ATOMIC_RELAXED) + 1;
  size_t total = 0;

  if (out == NULL) {
    out_cap = OUT_BATCH + 65536;
    out = malloc (out_cap);
    if (out == NULL) {
      out_cap = 0;
      nbdkit_error ("log: out of memory for the writer");
    }
  }
  for (;;) {
    size_t used = 0;
    uint64_t first = seq;
    while (used < OUT_BATCH) {
      struct slot *s = &ring[seq & (SLOTS - 1)];
      if (__atomic_load_n (&s->ready, __ATOMIC_ACQUIRE) != seq)
        break;
      size_t need = log_format_room (&s->rec);
      if (need > out_cap - used) {
        if (used > 0)
          break;                /* write what we have first */
        char *n = realloc (out, need);
        if (n == NULL) {
          nbdkit_error ("log: out of memory: event %" PRIu64 " lost", seq);
          free (s->rec.heap);
          seq++;
          continue;
        }
        out = n;
        out_cap = need;
      }
      used = log_format (out + used, seq, &s->rec) - out;
      free (s->rec.heap);
      seq++;
    }
    if (seq == first)
      break;
    /* The slots are free once formatted, before the write(2). */
    __atomic_store_n (&consumed, seq - 1, __ATOMIC_RELEASE);
    if (__atomic_load_n (&space_waiting, __ATOMIC_RELAXED)) {
      pthread_mutex_lock (&lock);
      pthread_cond_broadcast (&space);
      pthread_mutex_unlock (&lock);
    }
    write_all (out, used);
    total += seq - first;

    pthread_mutex_lock (&lock);
    written_seq = seq - 1;
    if (sync_waiting)
      pthread_cond_broadcast (&written);
    pthread_mutex_unlock (&lock);
  }
  return total;
}

/* Seqs have been given that the writer has not formatted: lines
 * published, or being copied in.
 */
static bool
ring_reserved (void)
{
  return __atomic_load_n (&next_seq, __ATOMIC_SEQ_CST) - 1 >
    __atomic_load_n (&consumed, __ATOMIC_ACQUIRE);
}

static bool
ring_has_next (void)
{
  uint64_t seq = __atomic_load_n (&consumed, __ATOMIC_RELAXED) + 1;
  return __atomic_load_n (&ring[seq & (SLOTS - 1)].ready,
                          __ATOMIC_ACQUIRE) == seq;
}

static void
deadline_in (struct timespec *t, long ns)
{
  clock_gettime (CLOCK_MONOTONIC, t);
  t->tv_nsec += ns;
  if (t->tv_nsec >= 1000000000) {
    t->tv_sec++;
    t->tv_nsec -= 1000000000;
  }
}

static void *
writer_main (void *arg)
{
  /* Request threads come first: at nice 19 the writer runs mostly in
   * the time they leave, and does not preempt them when its period
   * ends.  On 2 cores at 4 KiB random writes this was worth about 6%
   * of the throughput.  It still gets its share, so it cannot starve;
   * if it lags, request threads help (see help_drain).
   */
  if (setpriority (PRIO_PROCESS, (id_t) syscall (SYS_gettid), 19) == -1)
    nbdkit_debug ("log: writer thread: setpriority: %m");
  for (;;) {
    pthread_mutex_lock (&drain_lock);
    size_t n = drain ();
    pthread_mutex_unlock (&drain_lock);

    pthread_mutex_lock (&lock);
    if (stopping && !ring_has_next ()) {
      pthread_mutex_unlock (&lock);
      break;
    }
    struct timespec t;
    bool copying = n == 0 && ring_reserved ();
    if (n > 0 || sync_waiting || space_waiting || copying) {
      /* Busy: let a period's lines gather (a flush or a full ring ends
       * the wait early; lines still being copied in, for a flush or
       * after a wake-up, are polled for briefly).
       */
      deadline_in (&t, sync_waiting || copying ? WRITER_PERIOD_NS / 20
                   : WRITER_PERIOD_NS);
      if (!stopping)
        pthread_cond_timedwait (&queued, &lock, &t);
    }
    else {
      /* Idle: sleep until a request takes seqs.  It checks
       * writer_asleep after its atomic add on next_seq, we check
       * next_seq after setting it: one of the two sees the other.  (The
       * request wakes us before it copies its lines in, and needs no
       * fence after the copy.)
       */
      __atomic_store_n (&writer_asleep, true, __ATOMIC_SEQ_CST);
      __atomic_thread_fence (__ATOMIC_SEQ_CST);
      while (!stopping && !sync_waiting && !space_waiting && !ring_reserved ()) {
        pthread_mutex_unlock (&lock);
        while (sem_wait (&wake) == -1 && errno == EINTR)
          ;
        pthread_mutex_lock (&lock);
        __atomic_store_n (&writer_asleep, true, __ATOMIC_SEQ_CST);
        __atomic_thread_fence (__ATOMIC_SEQ_CST);
      }
      __atomic_store_n (&writer_asleep, false, __ATOMIC_RELAXED);
    }
    pthread_mutex_unlock (&lock);
  }
  return NULL;
}

int
log_start (void)
{
  if (fd < 0 || writer_running)
    return 0;
  /* The writer's timed waits use the monotonic clock. */
  pthread_condattr_t attr;
  pthread_condattr_init (&attr);
  pthread_condattr_setclock (&attr, CLOCK_MONOTONIC);
  pthread_cond_init (&queued, &attr);
  pthread_condattr_destroy (&attr);
  if (sem_init (&wake, 0, 0) == -1) {
    nbdkit_error ("log: sem_init: %m");
    return -1;
  }
  int e = pthread_create (&writer, NULL, writer_main, NULL);
  if (e) {
    errno = e;
    nbdkit_error ("log: cannot start the writer thread: %m");
    return -1;
  }
  __atomic_store_n (&writer_running, true, __ATOMIC_RELEASE);
  syncer_start ();
  return 0;
}

void
log_close (void)
{
  syncer_stop ();
  if (__atomic_load_n (&writer_running, __ATOMIC_ACQUIRE)) {
    pthread_mutex_lock (&lock);
    stopping = true;
    pthread_cond_signal (&queued);
    sem_post (&wake);
    pthread_mutex_unlock (&lock);
    pthread_join (writer, NULL);        /* it writes what is left first */
    writer_running = false;
    sem_destroy (&wake);
  }
  else if (fd >= 0) {
    pthread_mutex_lock (&drain_lock);
    drain ();
    pthread_mutex_unlock (&drain_lock);
  }
  if (fd >= 0)
    nbdkit_debug ("log: %" PRIu64 " lines; the ring was full %" PRIu64
                  " times; requests drained it %" PRIu64 " times",
                  next_seq - 1, full_waits, helped);
  if (own_fd)
    close (fd);
  fd = -1;
  own_fd = false;
  sync_mode = SYNC_FLUSH;
  free (ring);
  ring = NULL;
  free (out);
  out = NULL;
  out_cap = 0;
}

/* The flush's fdatasync of the log runs on a thread of its own, so a
 * guest FLUSH waits for the log and the image side by side rather than
 * one after the other (a commit-heavy guest flushes twice per commit).
 * Tickets: a flush asks for sync number N and waits until a sync that
 * started after its lines were written has finished.
 */
static pthread_t syncer;
static bool syncer_running;
static pthread_mutex_t sync_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t sync_asked = PTHREAD_COND_INITIALIZER;
static pthread_cond_t sync_did = PTHREAD_COND_INITIALIZER;
static uint64_t sync_want, sync_done;
static int sync_errno;
static bool sync_stop;
/* Lines up to here are on disk (a sync that covered them finished):
 * a flush with nothing newer has nothing to sync.  Read and written
 * under sync_mu.
 */
static uint64_t synced_seq;
static uint64_t want_seq;       /* the newest line a sync was asked for */

static void *
syncer_main (void *arg)
{
  pthread_mutex_lock (&sync_mu);
  for (;;) {
    while (sync_done == sync_want && !sync_stop)
      pthread_cond_wait (&sync_asked, &sync_mu);
    if (sync_done == sync_want && sync_stop)
      break;
    uint64_t upto = sync_want, lines = want_seq;
    pthread_mutex_unlock (&sync_mu);
    /* A sync asked by log_sync_soon: the lines may not be written yet. */
    write_out (lines);
    int r = fdatasync (fd) == -1 && errno != EINVAL ? errno : 0;
    pthread_mutex_lock (&sync_mu);
    if (r)
      sync_errno = r;
    else if (lines > synced_seq)
      synced_seq = lines;
    sync_done = upto;
    pthread_cond_broadcast (&sync_did);
  }
  pthread_mutex_unlock (&sync_mu);
  return NULL;
}

static void
syncer_start (void)
{
  if (!own_fd || syncer_running)
    return;
  if (pthread_create (&syncer, NULL, syncer_main, NULL) == 0)
    syncer_running = true;      /* else: synced in line, as before */
}

static void
syncer_stop (void)
{
  if (!syncer_running)
    return;
  pthread_mutex_lock (&sync_mu);
  sync_stop = true;
  pthread_cond_signal (&sync_asked);
  pthread_mutex_unlock (&sync_mu);
  pthread_join (syncer, NULL);
  syncer_running = false;
}

/* Write every line numbered up to TARGET (a flush waits for them). */
static void
write_out (uint64_t target)
{
  if (__atomic_load_n (&writer_running, __ATOMIC_ACQUIRE)) {
    /* Write what is ready ourselves rather than wait for the writer's
     * turn (it runs at nice 19); then wait for lines still being copied
     * in by other requests.
     */
    if (pthread_mutex_trylock (&drain_lock) == 0) {
      drain ();
      pthread_mutex_unlock (&drain_lock);
    }
    pthread_mutex_lock (&lock);
    if (written_seq < target) {
      sync_waiting++;
      pthread_cond_signal (&queued);
      sem_post (&wake);
      while (written_seq < target)
        pthread_cond_wait (&written, &lock);
      sync_waiting--;
    }
    pthread_mutex_unlock (&lock);
  }
  else {
    pthread_mutex_lock (&drain_lock);
    drain ();
    pthread_mutex_unlock (&drain_lock);
  }
}

int
log_sync_start (uint64_t *ticket)
{
  *ticket = 0;
  if (fd < 0)
    return 0;
  const uint64_t target = __atomic_load_n (&next_seq, __ATOMIC_ACQUIRE) - 1;
  write_out (target);
  if (!own_fd || sync_mode == SYNC_NONE)
    return 0;
  if (!syncer_running) {
    if (fdatasync (fd) == -1 && errno != EINVAL) {
      nbdkit_error ("log: fdatasync: %m");
      return -1;
    }
    return 0;
  }
  pthread_mutex_lock (&sync_mu);
  if (target <= synced_seq && sync_errno == 0) {
    /* Nothing written since the last sync finished (a guest flushes
     * before its commit block too, with no new lines).
     */
    pthread_mutex_unlock (&sync_mu);
    return 0;
  }
  if (target <= want_seq && sync_done < sync_want && sync_errno == 0) {
    /* A sync asked for already (log_sync_soon) covers these lines. */
    *ticket = sync_want;
    pthread_mutex_unlock (&sync_mu);
    return 0;
  }
  *ticket = ++sync_want;
  if (target > want_seq)
    want_seq = target;
  pthread_cond_signal (&sync_asked);
  pthread_mutex_unlock (&sync_mu);
  return 0;
}

void
log_sync_soon (void)
{
  if (fd < 0 || !own_fd || sync_mode != SYNC_FLUSH || !syncer_running)
    return;
  const uint64_t target = __atomic_load_n (&next_seq, __ATOMIC_ACQUIRE) - 1;
  pthread_mutex_lock (&sync_mu);
  if (target > synced_seq && target > want_seq) {
    sync_want++;
    want_seq = target;
    pthread_cond_signal (&sync_asked);
  }
  pthread_mutex_unlock (&sync_mu);
}

int
log_sync_wait (uint64_t ticket)
{
  if (ticket == 0)
    return 0;
  pthread_mutex_lock (&sync_mu);
  while (sync_done < ticket)
    pthread_cond_wait (&sync_did, &sync_mu);
  int e = sync_errno;
  pthread_mutex_unlock (&sync_mu);
  if (e) {
    errno = e;
    nbdkit_error ("log: fdatasync: %m");
    return -1;
  }
  return 0;
}

int
log_sync (void)
{
  uint64_t t;
  if (log_sync_start (&t) == -1)
    return -1;
  return log_sync_wait (t);
}

/* --- Numbering and publishing a request's lines. --- */

/* Wait until slot SEQ is free: the writer has formatted SEQ - SLOTS. */
static void
wait_for_slot (uint64_t seq)
{
  for (;;) {
    if (seq - __atomic_load_n (&consumed, __ATOMIC_ACQUIRE) <= SLOTS)
      return;
    if (!__atomic_load_n (&writer_running, __ATOMIC_ACQUIRE)) {
      /* Before the writer starts (nbdkit has not forked yet). */
      pthread_mutex_lock (&drain_lock);
      drain ();
      pthread_mutex_unlock (&drain_lock);
      continue;
    }
    /* Full: drain it ourselves, unless the writer is at it. */
    __atomic_fetch_add (&full_waits, 1, __ATOMIC_RELAXED);
    if (pthread_mutex_trylock (&drain_lock) == 0) {
      __atomic_fetch_add (&helped, 1, __ATOMIC_RELAXED);
      drain ();
      pthread_mutex_unlock (&drain_lock);
      continue;
    }
    pthread_mutex_lock (&lock);
    space_waiting++;
    pthread_cond_signal (&queued);
    sem_post (&wake);
    while (seq - __atomic_load_n (&consumed, __ATOMIC_ACQUIRE) > SLOTS)
      pthread_cond_wait (&space, &lock);
    space_waiting--;
    pthread_mutex_unlock (&lock);
  }
}

/* The writer is at nice 19: when the CPUs are busy with other work it
 * may lag.  Past half a ring behind, the request that notices formats
 * and writes the lines itself, so the log never falls further behind
 * than that.
 */
static void
help_drain (uint64_t last)
{
  if (last - __atomic_load_n (&consumed, __ATOMIC_RELAXED) > SLOTS / 2 &&
      pthread_mutex_trylock (&drain_lock) == 0) {
    __atomic_fetch_add (&helped, 1, __ATOMIC_RELAXED);
    drain ();
    pthread_mutex_unlock (&drain_lock);
  }
}

static void
publish (uint64_t seq, const struct log_rec *r)
{
  wait_for_slot (seq);
  struct slot *s = &ring[seq & (SLOTS - 1)];
  /* Only the used part of the inline names. */
  size_t n = offsetof (struct log_rec, names);
  if (r->kind == REC_WRITE && r->heap == NULL)
    n += r->names_len;
  memcpy (&s->rec, r, n);
  __atomic_store_n (&s->ready, seq, __ATOMIC_RELEASE);
}

static void
free_heaps (struct log_batch *b)
{
  for (size_t i = 0; i < b->n; i++)
    free (b->recs[i].heap);
}

void
log_commit (struct log_batch *b)
{
  log_publish (b);
  log_kick (b);
}

void
log_kick (struct log_batch *b)
{
  uint64_t last = b->published;
  b->published = 0;
  if (last == 0 || fd < 0)
    return;
  /* Wake the writer if it sleeps for want of lines (see writer_main).
   * Any time after the atomic add on next_seq will do: the writer
   * either saw the add before it slept, or set writer_asleep before
   * this exchange (both sequentially consistent).  The first request
   * to see it asleep posts; the others need not.
   */
  if (__atomic_load_n (&writer_asleep, __ATOMIC_SEQ_CST) &&
      __atomic_exchange_n (&writer_asleep, false, __ATOMIC_SEQ_CST))
    sem_post (&wake);
  help_drain (last);
}

void
log_publish (struct log_batch *b)
{
  b->published = 0;
  if (b->n == 0 && b->lost == 0)
    goto out;

  size_t lines = b->n + (b->lost > 0);
  uint64_t seq;
  /* Watchers get their copy first (numbered in the same order), then
   * the ring takes the records (and their heap parts) for the file.
   * Both take the seqs with a sequentially consistent add: the idle
   * writer watches next_seq (see writer_main).
   */
  if (!watch_active () ||
      (seq = watch_batch (&next_seq, lines, b)) == 0)
    seq = __atomic_fetch_add (&next_seq, lines, __ATOMIC_SEQ_CST);
  if (fd < 0) {
    free_heaps (b);
    goto out;
  }
  for (size_t i = 0; i < b->n; i++)
    publish (seq++, &b->recs[i]);
  if (b->lost) {
    struct log_rec r = { .kind = REC_LOST, .position = b->lost };
    publish (seq++, &r);
  }
  b->published = seq - 1;

 out:
  if (b->recs != b->small)
    free (b->recs);
  b->recs = b->small;
  b->n = 0;
  b->cap = sizeof b->small / sizeof b->small[0];
  b->lost = 0;
}

/* --- Recording events (request threads). --- */

void
log_batch_init (struct log_batch *b)
{
  b->recs = b->small;
  b->n = 0;
  b->cap = sizeof b->small / sizeof b->small[0];
  b->lost = 0;
  b->veto_ev = NULL;
  b->veto_result = 0;
  b->veto_by = 0;
  b->published = 0;
}

bool
log_line_for (struct log_batch *b, const void *ev, int phase, int result,
              uint8_t *by, uint8_t *refused)
{
  *by = 0;
  *refused = 0;
  if (phase == FSEVENT_BEFORE) {
    if (result) {
      /* Only one veto per request: it stops the before phase. */
      unsigned who = handlers_vetoed_by ();
      b->veto_ev = ev;
      b->veto_result = result;
      b->veto_by = who ? who : HANDLERS_BY_FSEVENT;
    }
    return both_phases;
  }
  if (phase == FSEVENT_AFTER && b->veto_by && result == b->veto_result) {
    *by = b->veto_by;
    *refused = ev == b->veto_ev;
  }
  return true;
}

/* A new record with its time set, or NULL (and counted as lost). */
static struct log_rec *
new_rec (struct log_batch *b, int kind)
{
  if (b->n == b->cap) {
    size_t ncap = b->cap * 2;
    struct log_rec *n = b->recs == b->small
      ? malloc (ncap * sizeof *n) : realloc (b->recs, ncap * sizeof *n);
    if (n == NULL) {
      b->lost++;
      return NULL;
    }
    if (b->recs == b->small)
      memcpy (n, b->small, sizeof b->small);
    b->recs = n;
    b->cap = ncap;
  }
  struct log_rec *r = &b->recs[b->n++];
  struct timespec ts;
  clock_gettime (CLOCK_REALTIME, &ts);
  r->kind = kind;
  r->event = LEV_WRITE;
  r->would_deny = 0;
  r->by = 0;
  r->refused = 0;
  r->sec = ts.tv_sec;
  r->usec = ts.tv_nsec / 1000;
  r->heap = NULL;
  return r;
}

/* Drop the last record: no memory for its names or text. */
static void
lose_rec (struct log_batch *b)
{
  b->n--;
  b->lost++;
}

void
log_event (struct log_batch *b, const struct fsevent_write *ev)
{
  if (!log_wanted ())
    return;
  int result = ev->phase == FSEVENT_BEFORE ? ev->result_code : ev->status;
  uint8_t by;
  uint8_t refused;
  if (!log_line_for (b, ev, ev->phase, result, &by, &refused))
    return;
  struct log_rec *r = new_rec (b, REC_WRITE);
  if (r == NULL)
    return;
  r->phase = ev->phase;
  r->direction = ev->direction;
  r->op = ev->operation;
  r->result = result;
  r->by = by;
  r->refused = refused;
  r->ino = ev->ino;
  r->partition = ev->partition;
  r->position = ev->position;
  r->length = ev->bytes_to_write;
  r->bytes_written = ev->bytes_written;
  r->connection = ev->handle_info ? ev->handle_info->connection_id : 0;
  r->sequence = ev->sequence;
  r->would_deny = ev->would_deny > 0 && ev->would_deny < 256
    ? (uint8_t) ev->would_deny : 0;

  /* The names: file_name, then every path when there are several. */
  const char *const *all = ev->file_names;
  bool several = all && all[0] && all[1];
  size_t len = 0, count = 0;
  if (ev->file_name) {
    len += strlen (ev->file_name) + 1;
    count++;
    for (size_t i = 0; several && all[i]; i++, count++)
      len += strlen (all[i]) + 1;
  }
  if (len > UINT32_MAX) {
    lose_rec (b);
    return;
  }
  r->nnames = count;
  r->names_len = len;
  char *p = r->names;
  if (len > sizeof r->names) {
    p = r->heap = malloc (len);
    if (p == NULL) {
      lose_rec (b);
      return;
    }
  }
  if (ev->file_name) {
    size_t n = strlen (ev->file_name) + 1;
    memcpy (p, ev->file_name, n);
    p += n;
    for (size_t i = 0; several && all[i]; i++) {
      n = strlen (all[i]) + 1;
      memcpy (p, all[i], n);
      p += n;
    }
  }
}

/* A line formatted on the request path (log-format.c): LINE is
 * malloc'd, without its seq, or NULL when there was no memory for it.
 */
struct log_rec *
log_add_text (struct log_batch *b, char *line)
{
  struct log_rec *r = new_rec (b, REC_TEXT);
  if (r == NULL || line == NULL) {
    free (line);
    if (r)
      lose_rec (b);
    return NULL;
  }
  r->heap = line;
  r->nnames = r->names_len = 0;
  return r;
}
