/* plugin/log.c: log=FILE.
 *
 * One JSON object per line, per event and phase.  A request's lines are
 * formatted while its events are decided (with the time of the
 * decision) and queued, numbered, under a short lock as the request
 * ends; seq therefore follows the order of the lines in the file, and
 * lines never interleave.  A writer thread of its own writes the queue
 * out every 2 ms or 64 KiB, many lines a write(2): at 150,000 requests a
 * second a write(2) per line, or a request thread waiting for one,
 * halved the throughput.  An NBD flush waits until every line queued
 * before it is written, and syncs the log with the data.
 */
#include <config.h>

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define NBDKIT_API_VERSION 2
#include <nbdkit-plugin.h>

#include "errnames.h"
#include "log.h"

static int fd = -1;
static bool own_fd;

/* The queue of lines not yet written, and the group commit state. */
/* Held for a few hundred nanoseconds per request (numbering and
 * copying its lines): spinning a moment beats sleeping on the futex and
 * the context switches that cost, with 16 requests in flight on 2 cores.
 */
static pthread_mutex_t lock = PTHREAD_ADAPTIVE_MUTEX_INITIALIZER_NP;
static pthread_cond_t written = PTHREAD_COND_INITIALIZER;
static char *queue, *spare;
static size_t queue_len, queue_cap, spare_cap;
static uint64_t seq;            /* last seq given */
static uint64_t queued_upto;    /* bytes ever queued */
static uint64_t written_upto;   /* bytes ever written (or given up on) */
static pthread_cond_t queued = PTHREAD_COND_INITIALIZER;
static pthread_t writer;
static bool writer_running, writer_idle, writer_empty, stopping;
static unsigned sync_waiting;   /* flushes waiting for the writer */
static pthread_condattr_t queued_attr;

int
log_open (const char *path)
{
  if (fd >= 0) {
    nbdkit_error ("log= given more than once");
    return -1;
  }
  if (strcmp (path, "-") == 0) {
    fd = STDERR_FILENO;
    return 0;
  }
  fd = open (path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (fd == -1) {
    nbdkit_error ("log=%s: %m", path);
    return -1;
  }
  own_fd = true;
  return 0;
}

static void
write_all (const char *p, size_t left);

/* The writer thread: write out whatever is queued, until told to stop
 * with nothing left.
 */
/* How long queued lines may wait for the writer, and how much of them
 * wakes it at once.  Waking it for every request cost more than the
 * writing.
 */
#define WRITER_PERIOD_NS 2000000        /* 2 ms */
#define WRITER_BATCH (64 * 1024)

static void *
writer_main (void *arg)
{
  pthread_mutex_lock (&lock);
  for (;;) {
    /* Sleep while there is nothing to write, or little and nobody is
     * waiting for it: at most WRITER_PERIOD_NS.
     */
    while (!stopping &&
           (queue_len == 0 || (queue_len < WRITER_BATCH && !sync_waiting))) {
      struct timespec t;
      clock_gettime (CLOCK_MONOTONIC, &t);
      t.tv_nsec += WRITER_PERIOD_NS;
      if (t.tv_nsec >= 1000000000) {
        t.tv_sec++;
        t.tv_nsec -= 1000000000;
      }
      int e;
      if (queue_len == 0) {     /* nothing at all: sleep until something */
        writer_empty = true;
        e = pthread_cond_wait (&queued, &lock);
        writer_empty = false;
        continue;
      }
      writer_idle = true;
      e = pthread_cond_timedwait (&queued, &lock, &t);
      writer_idle = false;
      if (e == ETIMEDOUT && queue_len > 0)
        break;
    }
    if (queue_len == 0) {
      if (stopping)
        break;
      continue;
    }
    char *out = queue;
    size_t out_len = queue_len, out_cap = queue_cap;
    uint64_t upto = queued_upto;
    queue = spare;
    queue_cap = spare_cap;
    queue_len = 0;
    pthread_mutex_unlock (&lock);

    write_all (out, out_len);

    pthread_mutex_lock (&lock);
    spare = out;
    spare_cap = out_cap;
    written_upto = upto;
    pthread_cond_broadcast (&written);
  }
  pthread_mutex_unlock (&lock);
  return NULL;
}

/* Started on first use, after nbdkit has forked into the background. */
static bool
start_writer (void)
{
  if (writer_running)
    return true;
  /* The writer's timed waits use the monotonic clock. */
  pthread_condattr_init (&queued_attr);
  pthread_condattr_setclock (&queued_attr, CLOCK_MONOTONIC);
  pthread_cond_destroy (&queued);
  pthread_cond_init (&queued, &queued_attr);
  int e = pthread_create (&writer, NULL, writer_main, NULL);
  if (e) {
    errno = e;
    nbdkit_error ("log: cannot start the writer thread: %m");
    return false;
  }
  writer_running = true;
  return true;
}

void
log_close (void)
{
  if (writer_running) {
    pthread_mutex_lock (&lock);
    stopping = true;
    pthread_cond_signal (&queued);
    pthread_mutex_unlock (&lock);
    pthread_join (writer, NULL);        /* it writes what is left first */
    writer_running = false;
  }
  if (own_fd)
    close (fd);
  fd = -1;
  free (queue);
  free (spare);
  queue = spare = NULL;
  queue_cap = spare_cap = queue_len = 0;
}

bool
log_enabled (void)
{
  return fd >= 0;
}

int
log_sync (void)
{
  if (fd < 0)
    return 0;
  pthread_mutex_lock (&lock);
  const uint64_t target = queued_upto;
  if (writer_running && written_upto < target) {
    sync_waiting++;
    pthread_cond_signal (&queued);
    while (written_upto < target)
      pthread_cond_wait (&written, &lock);
    sync_waiting--;
  }
  pthread_mutex_unlock (&lock);
  if (!own_fd)
    return 0;
  if (fdatasync (fd) == -1 && errno != EINVAL) {
    nbdkit_error ("log: fdatasync: %m");
    return -1;
  }
  return 0;
}

void
log_batch_init (struct log_batch *b)
{
  b->buf = b->small;
  b->len = 0;
  b->cap = sizeof b->small;
  b->lines = 0;
  b->oom = false;
}

static void __attribute__ ((format (printf, 2, 3)))
add (struct log_batch *b, const char *fmt, ...)
{
  va_list ap;
  if (b->oom)
    return;
  for (;;) {
    va_start (ap, fmt);
    int n = vsnprintf (b->buf + b->len, b->cap - b->len, fmt, ap);
    va_end (ap);
    if (n < 0) {
      b->oom = true;
      return;
    }
    if ((size_t) n < b->cap - b->len) {
      b->len += n;
      return;
    }
    /* Grow: a file with many long names still gets one whole line. */
    size_t ncap = (b->cap + n + 1) * 2;
    char *nb = b->buf == b->small ? malloc (ncap) : realloc (b->buf, ncap);
    if (nb == NULL) {
      b->oom = true;
      return;
    }
    if (b->buf == b->small)
      memcpy (nb, b->small, b->len);
    b->buf = nb;
    b->cap = ncap;
  }
}

/* Make room for N more bytes; false (and oom) if there is none. */
static bool
room (struct log_batch *b, size_t n)
{
  if (b->oom)
    return false;
  if (b->cap - b->len > n)
    return true;
  size_t ncap = (b->cap + n + 1) * 2;
  char *nb = b->buf == b->small ? malloc (ncap) : realloc (b->buf, ncap);
  if (nb == NULL) {
    b->oom = true;
    return false;
  }
  if (b->buf == b->small)
    memcpy (nb, b->small, b->len);
  b->buf = nb;
  b->cap = ncap;
  return true;
}

/* The hot path formats by hand: vsnprintf was most of the log's cost. */
static void
put (struct log_batch *b, const char *s, size_t n)
{
  if (room (b, n)) {
    memcpy (b->buf + b->len, s, n);
    b->len += n;
  }
}
#define PUT(b, lit) put ((b), (lit), sizeof (lit) - 1)

static void
put_u64 (struct log_batch *b, uint64_t v)
{
  char tmp[24];
  size_t i = sizeof tmp;
  do {
    tmp[--i] = '0' + v % 10;
    v /= 10;
  } while (v);
  put (b, tmp + i, sizeof tmp - i);
}

static void
add_string (struct log_batch *b, const char *s)
{
  const unsigned char *p = (const unsigned char *) s;
  PUT (b, "\"");
  while (*p) {
    /* Copy the plain run in one go; escape the rest. */
    size_t n = 0;
    while (p[n] >= 0x20 && p[n] < 0x7f && p[n] != '"' && p[n] != '\\')
      n++;
    if (n) {
      put (b, (const char *) p, n);
      p += n;
      continue;
    }
    if (*p == '"' || *p == '\\')
      add (b, "\\%c", *p);
    else
      add (b, "\\u%04x", *p);   /* names are bytes, not always UTF-8 */
    p++;
  }
  PUT (b, "\"");
}

/* "2026-11-21T05:39:12", remade only when the second changes. */
static const char *
second_string (time_t t)
{
  static __thread time_t cached = -1;
  static __thread char buf[32];
  if (t != cached) {
    struct tm tm;
    gmtime_r (&t, &tm);
    strftime (buf, sizeof buf, "%Y-%m-%dT%H:%M:%S", &tm);
    cached = t;
  }
  return buf;
}

static const char *const directions[] = { "inplace", "commit", "journal" };
static const char *const operations[] = { "write", "zero", "trim" };

/* Lines are stored without their seq: "\"time\":...}\n"; log_commit
 * puts "{\"seq\":N," in front of each as it queues them.
 */
/* "time":...,"event":NAME[,"phase":...][,"file":...,"paths":[...]] */
static void
put_head (struct log_batch *b, const char *name, int phase,
          const char *file, const char *const *files)
{
  struct timespec ts;
  clock_gettime (CLOCK_REALTIME, &ts);
  char usec[8];
  long us = ts.tv_nsec / 1000;
  for (int i = 5; i >= 0; i--, us /= 10)
    usec[i] = '0' + us % 10;

  PUT (b, "\"time\":\"");
  const char *sec = second_string (ts.tv_sec);
  put (b, sec, strlen (sec));
  PUT (b, ".");
  put (b, usec, 6);
  PUT (b, "Z\",\"event\":\"");
  put (b, name, strlen (name));
  PUT (b, "\"");
  if (phase == FSEVENT_BEFORE)
    PUT (b, ",\"phase\":\"before\"");
  else if (phase == FSEVENT_AFTER)
    PUT (b, ",\"phase\":\"after\"");
  if (file == NULL)
    return;
  PUT (b, ",\"file\":");
  add_string (b, file);
  if (files && files[0] && files[1]) {
    PUT (b, ",\"paths\":[");
    for (size_t i = 0; files[i]; i++) {
      if (i)
        PUT (b, ",");
      add_string (b, files[i]);
    }
    PUT (b, "]");
  }
}

static void
put_result (struct log_batch *b, int result)
{
  PUT (b, ",\"result\":");
  put_u64 (b, result < 0 ? 0 : (uint64_t) result);
  if (result) {
    const char *en = errno_name (result);
    PUT (b, ",\"error\":\"");
    put (b, en, strlen (en));
    PUT (b, "\"");
  }
  PUT (b, "}\n");
  b->lines++;
}

void
log_event (struct log_batch *b, const char *name,
           const struct fsevent_write *ev)
{
  if (fd < 0)
    return;
  int result = ev->phase == FSEVENT_BEFORE ? ev->result_code : ev->status;
  put_head (b, name, (int) ev->phase, ev->file_name, ev->file_names);
  const char *dir = (unsigned) ev->direction < 3 ? directions[ev->direction] : "?";
  const char *op = (unsigned) ev->operation < 3 ? operations[ev->operation] : "?";
  PUT (b, ",\"ino\":");
  put_u64 (b, ev->ino);
  PUT (b, ",\"position\":");
  put_u64 (b, ev->position);
  PUT (b, ",\"length\":");
  put_u64 (b, ev->bytes_to_write);
  PUT (b, ",\"direction\":\"");
  put (b, dir, strlen (dir));
  PUT (b, "\",\"op\":\"");
  put (b, op, strlen (op));
  PUT (b, "\",\"partition\":");
  put_u64 (b, ev->partition);
  PUT (b, ",\"connection\":");
  put_u64 (b, ev->handle_info ? ev->handle_info->connection_id : 0);
  if (ev->phase == FSEVENT_AFTER) {
    PUT (b, ",\"bytes_written\":");
    put_u64 (b, ev->bytes_written);
  }
  if (ev->sequence) {
    PUT (b, ",\"sequence\":");
    put_u64 (b, ev->sequence);
  }
  put_result (b, result);
}

static const char *const change_names[] = {
  "create", "delete", "link", "unlink", "rename", "set_size",
  "set_attributes",
};

const char *
log_change_name (enum fsevent_change_kind k)
{
  return (unsigned) k < sizeof change_names / sizeof change_names[0]
    ? change_names[k] : "?";
}

const char *
log_file_type (uint32_t mode)
{
  switch (mode & 0170000) {
  case 0100000: return "file";
  case 0040000: return "directory";
  case 0120000: return "symlink";
  case 0020000: return "chardev";
  case 0060000: return "blockdev";
  case 0010000: return "fifo";
  case 0140000: return "socket";
  }
  return "unknown";
}

static void
put_key_u64 (struct log_batch *b, const char *key, uint64_t v)
{
  PUT (b, ",\"");
  put (b, key, strlen (key));
  PUT (b, "\":");
  put_u64 (b, v);
}

static void
put_mode (struct log_batch *b, uint32_t mode)
{
  char m[8];
  snprintf (m, sizeof m, "%04o", mode & 07777);
  PUT (b, ",\"mode\":\"");
  put (b, m, strlen (m));
  PUT (b, "\"");
}

static void
put_time (struct log_batch *b, const char *key, const struct fsevent_time *t)
{
  char buf[64];
  struct tm tm;
  time_t sec = (time_t) t->sec;
  if (gmtime_r (&sec, &tm) == NULL)
    return;
  size_t n = strftime (buf, sizeof buf, "%Y-%m-%dT%H:%M:%S", &tm);
  snprintf (buf + n, sizeof buf - n, ".%09" PRIu32 "Z", t->nsec % 1000000000);
  PUT (b, ",\"");
  put (b, key, strlen (key));
  PUT (b, "\":\"");
  put (b, buf, strlen (buf));
  PUT (b, "\"");
}

void
log_change (struct log_batch *b, const struct fsevent_change *ev)
{
  if (fd < 0)
    return;
  int result = ev->phase == FSEVENT_BEFORE ? ev->result_code : ev->status;
  const struct fsevent_attributes *a = &ev->attributes, *o = &ev->old_attributes;

  put_head (b, log_change_name (ev->kind), (int) ev->phase, ev->file_name,
            ev->file_names);
  if (ev->new_file_name) {
    PUT (b, ",\"new_file\":");
    add_string (b, ev->new_file_name);
  }
  put_key_u64 (b, "ino", ev->ino);
  switch (ev->kind) {
  case FSEVENT_CREATE:
    PUT (b, ",\"type\":\"");
    PUT (b, "");
    put (b, log_file_type (a->mode), strlen (log_file_type (a->mode)));
    PUT (b, "\"");
    put_mode (b, a->mode);
    put_key_u64 (b, "uid", a->uid);
    put_key_u64 (b, "gid", a->gid);
    put_key_u64 (b, "size", a->size);
    break;
  case FSEVENT_DELETE:
    PUT (b, ",\"type\":\"");
    put (b, log_file_type (o->mode), strlen (log_file_type (o->mode)));
    PUT (b, "\"");
    break;
  case FSEVENT_SET_SIZE:
    put_key_u64 (b, "old_size", o->size);
    put_key_u64 (b, "size", a->size);
    break;
  case FSEVENT_SET_ATTRIBUTES: {
    static const char *const attr[] = {
      "mode", "uid", "gid", "flags", "atime", "mtime", "ctime", "crtime" };
    PUT (b, ",\"changed\":[");
    bool first = true;
    for (unsigned i = 0; i < 8; i++)
      if (ev->changed & (1u << i)) {
        if (!first)
          PUT (b, ",");
        first = false;
        PUT (b, "\"");
        put (b, attr[i], strlen (attr[i]));
        PUT (b, "\"");
      }
    PUT (b, "]");
    if (ev->timestamps_only)
      PUT (b, ",\"timestamps_only\":true");
    else
      PUT (b, ",\"timestamps_only\":false");
    if (ev->changed & FSEVENT_ATTR_MODE) put_mode (b, a->mode);
    if (ev->changed & FSEVENT_ATTR_UID) put_key_u64 (b, "uid", a->uid);
    if (ev->changed & FSEVENT_ATTR_GID) put_key_u64 (b, "gid", a->gid);
    if (ev->changed & FSEVENT_ATTR_FLAGS) put_key_u64 (b, "flags", a->flags);
    if (ev->changed & FSEVENT_ATTR_ATIME) put_time (b, "atime", &a->atime);
    if (ev->changed & FSEVENT_ATTR_MTIME) put_time (b, "mtime", &a->mtime);
    if (ev->changed & FSEVENT_ATTR_CTIME) put_time (b, "ctime", &a->ctime);
    if (ev->changed & FSEVENT_ATTR_CRTIME) put_time (b, "crtime", &a->crtime);
    break;
  }
  default:
    break;
  }
  if (ev->replaced_ino) {
    put_key_u64 (b, "replaced_ino", ev->replaced_ino);
    if (ev->replaced_file_name) {
      PUT (b, ",\"replaced\":");
      add_string (b, ev->replaced_file_name);
    }
  }
  put_key_u64 (b, "partition", ev->partition);
  if (ev->sequence)
    put_key_u64 (b, "sequence", ev->sequence);
  put_result (b, result);
}

void
log_lock (struct log_batch *b, const struct fsevent_lock *ev, bool unlock)
{
  if (fd < 0)
    return;
  int result = ev->phase == FSEVENT_BEFORE ? ev->result_code : ev->status;
  put_head (b, unlock ? "unlock" : "lock", (int) ev->phase, ev->file_name,
            ev->file_names);
  put_key_u64 (b, "ino", ev->ino);
  put_key_u64 (b, "offset", ev->byte_offset);
  if (ev->length < 0)
    PUT (b, ",\"length\":-1");
  else
    put_key_u64 (b, "length", (uint64_t) ev->length);
  if (ev->exclusive_lock)
    PUT (b, ",\"exclusive\":true");
  else
    PUT (b, ",\"exclusive\":false");
  if (!unlock) {
    if (ev->fail_immediately)
      PUT (b, ",\"fail_immediately\":true");
    else
      PUT (b, ",\"fail_immediately\":false");
  }
  if (ev->lock_id)
    put_key_u64 (b, "lock_id", ev->lock_id);
  put_key_u64 (b, "partition", ev->partition);
  put_key_u64 (b, "connection",
               ev->handle_info ? ev->handle_info->connection_id : 0);
  put_result (b, result);
}

void
log_unattributed (struct log_batch *b, unsigned partition, uint64_t offset,
                  uint64_t length, const char *reason)
{
  if (fd < 0)
    return;
  put_head (b, "unattributed", -1, NULL, NULL);
  put_key_u64 (b, "partition", partition);
  put_key_u64 (b, "device_offset", offset);
  put_key_u64 (b, "length", length);
  PUT (b, ",\"reason\":\"");
  put (b, reason, strlen (reason));
  PUT (b, "\"}\n");
  b->lines++;
}

/* Queue LEN bytes; called with the lock held.  false if out of memory. */
static bool
enqueue (const char *p, size_t len)
{
  if (queue_len + len > queue_cap) {
    size_t ncap = queue_cap ? queue_cap : 65536;
    while (ncap < queue_len + len)
      ncap *= 2;
    char *nq = realloc (queue, ncap);
    if (nq == NULL)
      return false;
    queue = nq;
    queue_cap = ncap;
  }
  memcpy (queue + queue_len, p, len);
  queue_len += len;
  queued_upto += len;
  return true;
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

void
log_commit (struct log_batch *b)
{
  if (fd < 0 || b->lines == 0)
    goto out;

  pthread_mutex_lock (&lock);
  if (b->oom) {
    char line[128];
    int n = snprintf (line, sizeof line, "{\"seq\":%" PRIu64 ",\"error\":"
                      "\"ENOMEM\",\"lost_events\":%zu}\n", ++seq, b->lines);
    enqueue (line, n);
  }
  else {
    const char *p = b->buf, *end = b->buf + b->len;
    while (p < end) {
      const char *nl = memchr (p, '\n', end - p);
      size_t n = nl ? (size_t) (nl - p) + 1 : (size_t) (end - p);
      /* "{\"seq\":N," without printf: this runs under the lock. */
      char prefix[40];
      size_t i = sizeof prefix;
      prefix[--i] = ',';
      for (uint64_t v = ++seq; v; v /= 10)
        prefix[--i] = '0' + v % 10;
      i -= 7;
      memcpy (prefix + i, "{\"seq\":", 7);
      if (!enqueue (prefix + i, sizeof prefix - i) || !enqueue (p, n)) {
        nbdkit_error ("log: out of memory: events lost");
        break;
      }
      p += n;
    }
  }
  if (start_writer ()) {
    /* Wake the writer to start a period, or early for a full batch. */
    if (writer_empty || (writer_idle && queue_len >= WRITER_BATCH))
      pthread_cond_signal (&queued);
  }
  else {
    /* No writer thread: write it ourselves, as it happens. */
    write_all (queue, queue_len);
    written_upto = queued_upto;
    queue_len = 0;
  }
  pthread_mutex_unlock (&lock);

 out:
  if (b->buf != b->small)
    free (b->buf);
  log_batch_init (b);
}
