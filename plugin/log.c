/* plugin/log.c: log=FILE.
 *
 * One JSON object per line, per event and phase, written with a single
 * write(2) under a lock as the event happens, so lines from parallel
 * requests never interleave and seq follows the order of the lines.
 */
#include <config.h>

#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
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
static uint64_t seq;
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;

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

void
log_close (void)
{
  if (own_fd)
    close (fd);
  fd = -1;
}

bool
log_enabled (void)
{
  return fd >= 0;
}

/* A line that grows as needed: a file with many long names still gets
 * one whole, valid JSON line.  Out of memory is remembered and the
 * line is replaced by a short one that says so.
 */
struct line {
  char small[1024];
  char *buf;
  size_t len, cap;
  bool oom;
};

static void __attribute__ ((format (printf, 2, 3)))
add (struct line *l, const char *fmt, ...)
{
  va_list ap;
  if (l->oom)
    return;
  for (;;) {
    va_start (ap, fmt);
    int n = vsnprintf (l->buf + l->len, l->cap - l->len, fmt, ap);
    va_end (ap);
    if (n < 0) {
      l->oom = true;
      return;
    }
    if ((size_t) n < l->cap - l->len) {
      l->len += n;
      return;
    }
    size_t ncap = (l->cap + n + 1) * 2;
    char *nb = l->buf == l->small ? malloc (ncap) : realloc (l->buf, ncap);
    if (nb == NULL) {
      l->oom = true;
      return;
    }
    if (l->buf == l->small)
      memcpy (nb, l->small, l->len);
    l->buf = nb;
    l->cap = ncap;
  }
}

static void
add_string (struct line *l, const char *s)
{
  add (l, "\"");
  for (const unsigned char *p = (const unsigned char *) s; *p; p++) {
    if (*p == '"' || *p == '\\')
      add (l, "\\%c", *p);
    else if (*p < 0x20 || *p >= 0x7f)
      add (l, "\\u%04x", *p);   /* names are bytes, not always UTF-8 */
    else
      add (l, "%c", *p);
  }
  add (l, "\"");
}

static const char *const directions[] = { "inplace", "commit", "journal" };
static const char *const operations[] = { "write", "zero", "trim" };

void
log_event (const char *name, const struct fsevent_write *ev)
{
  struct line l;
  struct timespec ts;
  struct tm tm;
  char when[64];

  if (fd < 0)
    return;
  int result = ev->phase == FSEVENT_BEFORE ? ev->result_code : ev->status;

  l.buf = l.small;
  l.len = 0;
  l.cap = sizeof l.small;
  l.oom = false;

  pthread_mutex_lock (&lock);
  clock_gettime (CLOCK_REALTIME, &ts);
  gmtime_r (&ts.tv_sec, &tm);
  strftime (when, sizeof when, "%Y-%m-%dT%H:%M:%S", &tm);
  add (&l, "{\"seq\":%" PRIu64 ",\"time\":\"%s.%06ldZ\",\"event\":\"%s\","
       "\"phase\":\"%s\",\"file\":", ++seq, when, ts.tv_nsec / 1000, name,
       ev->phase == FSEVENT_BEFORE ? "before" : "after");
  add_string (&l, ev->file_name);
  if (ev->file_names && ev->file_names[0] && ev->file_names[1]) {
    add (&l, ",\"paths\":[");
    for (size_t i = 0; ev->file_names[i]; i++) {
      if (i)
        add (&l, ",");
      add_string (&l, ev->file_names[i]);
    }
    add (&l, "]");
  }
  add (&l, ",\"ino\":%" PRIu32 ",\"position\":%" PRIu64 ",\"length\":%" PRIu64
       ",\"direction\":\"%s\",\"op\":\"%s\",\"partition\":%u,"
       "\"connection\":%" PRIu64,
       ev->ino, ev->position, ev->bytes_to_write,
       (unsigned) ev->direction < 3 ? directions[ev->direction] : "?",
       (unsigned) ev->operation < 3 ? operations[ev->operation] : "?",
       ev->partition, ev->handle_info ? ev->handle_info->connection_id : 0);
  if (ev->phase == FSEVENT_AFTER)
    add (&l, ",\"bytes_written\":%" PRIu64, ev->bytes_written);
  add (&l, ",\"result\":%d", result);
  if (result)
    add (&l, ",\"error\":\"%s\"", errno_name (result));
  add (&l, "}\n");

  const char *p = l.buf;
  size_t left = l.len;
  char oom_line[160];
  if (l.oom) {
    snprintf (oom_line, sizeof oom_line, "{\"seq\":%" PRIu64 ",\"event\":\"%s\","
              "\"ino\":%" PRIu32 ",\"error\":\"ENOMEM\",\"lost\":true}\n",
              seq, name, ev->ino);
    p = oom_line;
    left = strlen (oom_line);
  }
  while (left > 0) {
    ssize_t w = write (fd, p, left);
    if (w == -1) {
      if (errno == EINTR)
        continue;
      nbdkit_debug ("log: write: %m");
      break;
    }
    p += w;
    left -= w;
  }
  pthread_mutex_unlock (&lock);
  if (l.buf != l.small)
    free (l.buf);
}
