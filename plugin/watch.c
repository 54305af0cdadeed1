/* plugin/watch.c: WATCH on the control socket (fsevent-ctl watch).
 *
 * A watcher is a view, the log is the record.  The log's hook
 * (log_commit, through watch_batch) formats each decided line once
 * (the log's own formatter, log-format.c, for JSON) and appends it to
 * the buffer of every watcher whose filters it passes, under one mutex
 * that only watchers and that hook take.  It never waits for a
 * watcher: a buffer holds at most WATCH_BUFFER bytes; past that, lines
 * are dropped and counted, and the watcher later gets one
 * {"dropped":N} line where they would have been.  The connection's own
 * thread sends the buffer (swapped out whole, so a second buffer of
 * that size may be on its way to the socket) and sees the peer go.
 *
 * Decided lines only: the after phase of writes, changes and locks
 * (their result known, vetoes included), unattributed bytes, and the
 * log's "lost" records.  Before-phase lines are the log's alone.
 */
#include <config.h>

#include <errno.h>
#include <fcntl.h>
#include <fnmatch.h>
#include <inttypes.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define NBDKIT_API_VERSION 2
#include <nbdkit-plugin.h>

#include "errnames.h"
#include "log.h"
#include "log-format.h"
#include "watch.h"

NBDKIT_DLL_PUBLIC int fsevent_debug_watch_buffer = WATCH_BUFFER;

struct watcher {
  struct watcher *next;
  /* Filters, fixed once registered. */
  int partition;                /* -1: any */
  uint32_t events;              /* bits 1 << LEV_*; every one if 0 */
  char **globs;                 /* without a trailing subtree mark */
  bool *subtree;
  size_t nglobs;
  bool text;                    /* format=text */
  /* Under wlock. */
  char *buf;
  size_t len, cap, limit;
  uint64_t dropped;
  int wake[2];
};

static pthread_mutex_t wlock = PTHREAD_MUTEX_INITIALIZER;
static struct watcher *watchers;
static unsigned nwatchers;      /* atomic */

bool
watch_active (void)
{
  return __atomic_load_n (&nwatchers, __ATOMIC_RELAXED) != 0;
}

unsigned
watch_count (void)
{
  return __atomic_load_n (&nwatchers, __ATOMIC_RELAXED);
}

/* --- Filters. --- */

static bool
decided (const struct log_rec *r)
{
  if (r->kind == REC_LOST)
    return true;
  if (r->kind == REC_WRITE)
    return r->phase == FSEVENT_AFTER;
  return r->phase == FSEVENT_AFTER || r->phase == LOG_NO_PHASE;
}

/* The record's names (NUL-separated, r->nnames of them). */
static const char *
rec_names (const struct log_rec *r)
{
  if (r->kind == REC_TEXT)
    return r->heap + strlen (r->heap) + 1;
  return r->heap ? r->heap : r->names;
}

static bool
glob_match (const struct watcher *w, const char *name)
{
  if (*name == '\0')
    return false;
  for (size_t i = 0; i < w->nglobs; i++)
    if (fnmatch (w->globs[i], name,
                 FNM_PATHNAME | (w->subtree[i] ? FNM_LEADING_DIR : 0)) == 0 ||
        (w->subtree[i] && w->globs[i][0] == '\0'))
      return true;
  return false;
}

static bool
wants (const struct watcher *w, const struct log_rec *r)
{
  if (r->kind == REC_LOST)
    return true;                /* about every kind: always told */
  if (w->partition >= 0 && r->partition != (unsigned) w->partition)
    return false;
  if (w->events && !(w->events & (UINT32_C (1) << r->event)))
    return false;
  if (w->nglobs == 0)
    return true;
  const char *s = rec_names (r);
  for (uint32_t i = 0; i < r->nnames; i++, s += strlen (s) + 1)
    if (glob_match (w, s))
      return true;
  return false;
}

/* --- Formatting. --- */

/* A name for a terminal: printable ASCII as it is, "\\" and any other
 * byte as \xNN.  At most 4 bytes out per byte in.
 */
static char *
put_name (char *p, const char *s)
{
  static const char hex[] = "0123456789abcdef";
  for (const unsigned char *q = (const unsigned char *) s; *q; q++)
    if (*q >= 0x20 && *q < 0x7f && *q != '\\')
      *p++ = *q;
    else {
      *p++ = '\\';
      *p++ = 'x';
      *p++ = hex[*q >> 4];
      *p++ = hex[*q & 15];
    }
  return p;
}

/* format=text, one short line:
 * "HH:MM:SS.uuuuuu EVENT [N:]FILE[ -> NEW][ POS+LEN] RESULT[ would_deny=E]"
 * (ROOM from text_room is always enough).
 */
static size_t
format_text (char *p, size_t room, const struct log_rec *r)
{
  char *start = p;
  if (r->kind == REC_LOST)
    return snprintf (p, room, "lost %" PRIu64 " events (out of memory)\n",
                     r->position);
  struct tm tm;
  time_t t = (time_t) r->sec;
  char when[16] = "?";
  if (gmtime_r (&t, &tm))
    strftime (when, sizeof when, "%H:%M:%S", &tm);
  const char *names = rec_names (r);
  const char *file = r->nnames > 0 ? names : "";
  const char *nfile = r->kind == REC_TEXT && r->nnames > 1
    ? names + strlen (names) + 1 : "";
  const char *ev = log_event_type_name (r->event);
  p += sprintf (p, "%s.%06" PRIu32 " %s", when, r->usec, ev ? ev : "?");
  if (*file) {
    *p++ = ' ';
    if (r->partition)
      p += sprintf (p, "%u:", r->partition);
    p = put_name (p, file);
  }
  if (*nfile) {
    p += sprintf (p, " -> ");
    p = put_name (p, nfile);
  }
  if (r->kind == REC_WRITE || r->event == LEV_UNATTRIBUTED)
    p += sprintf (p, " %" PRIu64 "+%" PRIu64, r->position, r->length);
  if (r->event != LEV_UNATTRIBUTED)
    p += sprintf (p, " %s", r->result ? errno_name (r->result) : "ok");
  if (r->would_deny)
    p += sprintf (p, " would_deny=%s", errno_name (r->would_deny));
  *p++ = '\n';
  return p - start;
}

static size_t
text_room (const struct log_rec *r)
{
  return 256 + (r->kind == REC_LOST ? 0 : 4 * (size_t) r->names_len);
}

/* --- The hook. --- */

static void
append (struct watcher *w, const char *line, size_t n)
{
  char drop[64];
  size_t dn = 0;
  if (w->dropped)
    dn = w->text
      ? (size_t) snprintf (drop, sizeof drop, "dropped %" PRIu64
                           " events (this watcher was too slow)\n", w->dropped)
      : (size_t) snprintf (drop, sizeof drop, "{\"dropped\":%" PRIu64 "}\n",
                           w->dropped);
  size_t need = w->len + dn + n;
  if (need > w->limit) {
    w->dropped++;
    return;
  }
  if (need > w->cap) {
    size_t ncap = w->cap ? w->cap : 65536;
    while (ncap < need)
      ncap *= 2;
    if (ncap > w->limit)
      ncap = w->limit;
    char *nb = realloc (w->buf, ncap);
    if (nb == NULL) {
      w->dropped++;
      return;
    }
    w->buf = nb;
    w->cap = ncap;
  }
  memcpy (w->buf + w->len, drop, dn);
  memcpy (w->buf + w->len + dn, line, n);
  w->len += dn + n;
  w->dropped = 0;
}

/* Give record R (line SEQ) to every watcher that wants it, formatted
 * at most once per format.  TMP is a scratch buffer of TMPCAP bytes.
 */
static void
deliver (uint64_t seq, const struct log_rec *r, char **tmp, size_t *tmpcap)
{
  size_t jlen = 0, tlen = 0;
  char *json = NULL, *text = NULL;
  char tbuf[1024];
  for (struct watcher *w = watchers; w; w = w->next) {
    if (!wants (w, r))
      continue;
    if (w->text && text == NULL) {
      size_t room = text_room (r);
      text = room <= sizeof tbuf ? tbuf : malloc (room);
      if (text == NULL) {
        w->dropped++;
        continue;
      }
      tlen = format_text (text, room, r);
    }
    if (!w->text && json == NULL) {
      size_t room = log_format_room (r) + 32;
      if (room > *tmpcap) {
        char *n = realloc (*tmp, room);
        if (n == NULL) {
          w->dropped++;
          continue;
        }
        *tmp = n;
        *tmpcap = room;
      }
      json = *tmp;
      jlen = log_format (json, seq, r) - json;
    }
    if (w->len == 0 && w->dropped == 0) {
      char b = 0;
      if (write (w->wake[1], &b, 1) == -1) {
        /* Full: a wake-up is pending anyway. */
      }
    }
    if (w->text)
      append (w, text, tlen);
    else
      append (w, json, jlen);
  }
  if (text && text != tbuf)
    free (text);
}

uint64_t
watch_batch (uint64_t *next_seq, size_t lines, const struct log_batch *b)
{
  char *tmp = NULL;
  size_t tmpcap = 0;

  pthread_mutex_lock (&wlock);
  if (watchers == NULL) {
    pthread_mutex_unlock (&wlock);
    return 0;
  }
  uint64_t seq = __atomic_fetch_add (next_seq, lines, __ATOMIC_SEQ_CST);
  for (size_t i = 0; i < b->n; i++)
    if (decided (&b->recs[i]))
      deliver (seq + i, &b->recs[i], &tmp, &tmpcap);
  if (b->lost) {
    struct log_rec r = { .kind = REC_LOST, .position = b->lost };
    deliver (seq + b->n, &r, &tmp, &tmpcap);
  }
  pthread_mutex_unlock (&wlock);
  free (tmp);
  return seq;
}

/* --- A watcher's connection. --- */

static void
free_watcher (struct watcher *w)
{
  for (size_t i = 0; i < w->nglobs; i++)
    free (w->globs[i]);
  free (w->globs);
  free (w->subtree);
  free (w->buf);
  if (w->wake[0] >= 0)
    close (w->wake[0]);
  if (w->wake[1] >= 0)
    close (w->wake[1]);
  free (w);
}

static int
send_str (int fd, const char *s)
{
  size_t len = strlen (s);
  while (len > 0) {
    ssize_t n = send (fd, s, len, MSG_NOSIGNAL);
    if (n == -1 && errno == EINTR)
      continue;
    if (n <= 0)
      return -1;
    s += n;
    len -= n;
  }
  return 0;
}

static int
refuse (int fd, struct watcher *w, const char *msg)
{
  char line[512];
  snprintf (line, sizeof line, "ERR EINVAL %s\n", msg);
  send_str (fd, line);
  free_watcher (w);
  return -1;
}

/* ARGS: [partition=N] [events=TYPE,...] [format=json|text] [GLOB...] */
static int
parse_args (struct watcher *w, char *args, const char **why)
{
  char *save = NULL;
  for (char *tok = strtok_r (args, " ", &save); tok;
       tok = strtok_r (NULL, " ", &save)) {
    if (strncmp (tok, "partition=", 10) == 0) {
      char *end;
      errno = 0;
      long n = strtol (tok + 10, &end, 10);
      if (errno || *end || end == tok + 10 || n < 0 || n > 9999) {
        *why = "partition=N: a partition number (0: a bare filesystem)";
        return -1;
      }
      w->partition = (int) n;
    }
    else if (strncmp (tok, "events=", 7) == 0) {
      char *s2 = NULL;
      for (char *e = strtok_r (tok + 7, ",", &s2); e;
           e = strtok_r (NULL, ",", &s2)) {
        unsigned lev;
        for (lev = 0; lev < LEV_COUNT; lev++)
          if (strcmp (e, log_event_type_name (lev)) == 0)
            break;
        if (lev == LEV_COUNT) {
          *why = "events=: write, create, delete, link, unlink, rename, "
            "set_size, set_attributes, lock, unlock, unattributed, lost, "
            "undecided";
          return -1;
        }
        w->events |= UINT32_C (1) << lev;
      }
    }
    else if (strncmp (tok, "buffer=", 7) == 0) {
      char *end;
      errno = 0;
      unsigned long long n = strtoull (tok + 7, &end, 10);
      if (errno || *end || end == tok + 7 || n < 4096 ||
          n > WATCH_BUFFER_MAX) {
        *why = "buffer=BYTES: from 4096 to 67108864";
        return -1;
      }
      w->limit = n;
    }
    else if (strcmp (tok, "format=json") == 0)
      w->text = false;
    else if (strcmp (tok, "format=text") == 0)
      w->text = true;
    else if (tok[0] == '/' || tok[0] == '*') {
      char **ng = realloc (w->globs, (w->nglobs + 1) * sizeof *ng);
      if (ng)
        w->globs = ng;
      bool *ns = ng ? realloc (w->subtree, (w->nglobs + 1) * sizeof *ns) : NULL;
      if (ns)
        w->subtree = ns;
      size_t len = strlen (tok);
      bool sub = len >= 3 && strcmp (tok + len - 3, "/**") == 0;
      char *g = ns ? strndup (tok, sub ? len - 3 : len) : NULL;
      if (g == NULL) {
        *why = "out of memory";
        return -1;
      }
      w->globs[w->nglobs] = g;
      w->subtree[w->nglobs] = sub;
      w->nglobs++;
    }
    else {
      *why = "usage: WATCH [partition=N] [events=TYPE,...] "
        "[format=json|text] [buffer=BYTES] [GLOB...] "
        "(globs start with '/')";
      return -1;
    }
  }
  /* The log's "lost" records always come. */
  if (w->events)
    w->events |= UINT32_C (1) << LEV_LOST;
  return 0;
}

int
watch_serve (int fd, int stop_fd, char *args)
{
  struct watcher *w = calloc (1, sizeof *w);
  if (w == NULL)
    return -1;
  w->partition = -1;
  w->wake[0] = w->wake[1] = -1;
  w->limit = fsevent_debug_watch_buffer > 0
    ? (size_t) fsevent_debug_watch_buffer : WATCH_BUFFER;
  const char *why = NULL;
  if (parse_args (w, args, &why) == -1)
    return refuse (fd, w, why);
  if (pipe2 (w->wake, O_CLOEXEC | O_NONBLOCK) == -1)
    return refuse (fd, w, "cannot make a pipe");

  pthread_mutex_lock (&wlock);
  w->next = watchers;
  watchers = w;
  __atomic_fetch_add (&nwatchers, 1, __ATOMIC_RELAXED);
  pthread_mutex_unlock (&wlock);
  nbdkit_debug ("control: a watcher joined (%u now)",
                __atomic_load_n (&nwatchers, __ATOMIC_RELAXED));

  char *out = NULL;
  size_t out_cap = 0, out_len = 0, out_off = 0;
  bool ok = send_str (fd, "OK\n") == 0;
  bool stopping = false;
  struct timespec until = { 0 };
  while (ok) {
    if (out_off == out_len) {
      /* Take what is queued: swap buffers. */
      pthread_mutex_lock (&wlock);
      if (w->len == 0 && w->dropped) {
        char line[64];
        int n = w->text
          ? snprintf (line, sizeof line, "dropped %" PRIu64
                      " events (this watcher was too slow)\n", w->dropped)
          : snprintf (line, sizeof line, "{\"dropped\":%" PRIu64 "}\n",
                      w->dropped);
        if (w->cap < (size_t) n) {
          char *nb = realloc (w->buf, 65536);
          if (nb) {
            w->buf = nb;
            w->cap = 65536;
          }
        }
        if (w->cap >= (size_t) n) {
          memcpy (w->buf, line, n);
          w->len = n;
          w->dropped = 0;
        }
      }
      char *tb = w->buf;
      size_t tc = w->cap;
      out_len = w->len;
      w->buf = out;
      w->cap = out_cap;
      w->len = 0;
      out = tb;
      out_cap = tc;
      out_off = 0;
      pthread_mutex_unlock (&wlock);
    }
    int timeout = -1;
    if (stopping) {
      /* nbdkit is going: what is queued goes out if the peer takes it
       * within half a second (control_stop waits a second for us).
       */
      struct timespec now;
      clock_gettime (CLOCK_MONOTONIC, &now);
      timeout = (int) ((until.tv_sec - now.tv_sec) * 1000 +
                       (until.tv_nsec - now.tv_nsec) / 1000000);
      if (out_off == out_len || timeout <= 0)
        break;
    }
    struct pollfd pfd[3] = {
      { .fd = fd, .events = POLLIN | (out_off < out_len ? POLLOUT : 0) },
      { .fd = w->wake[0], .events = POLLIN },
      { .fd = stop_fd, .events = POLLIN },
    };
    if (poll (pfd, stopping ? 1 : 3, timeout) == -1) {
      if (errno == EINTR)
        continue;
      break;
    }
    if (!stopping && pfd[2].revents) {
      stopping = true;
      clock_gettime (CLOCK_MONOTONIC, &until);
      until.tv_nsec += 500000000;
      if (until.tv_nsec >= 1000000000) {
        until.tv_sec++;
        until.tv_nsec -= 1000000000;
      }
      continue;
    }
    if (pfd[0].revents & (POLLHUP | POLLERR))
      break;
    if (pfd[0].revents & POLLIN) {
      /* Anything the peer sends is ignored; end of file ends the watch. */
      char junk[256];
      ssize_t n = recv (fd, junk, sizeof junk, MSG_DONTWAIT);
      if (n == 0 || (n == -1 && errno != EAGAIN && errno != EINTR))
        break;
    }
    if (pfd[1].revents & POLLIN) {
      char junk[64];
      while (read (w->wake[0], junk, sizeof junk) > 0)
        ;
    }
    if ((pfd[0].revents & POLLOUT) && out_off < out_len) {
      ssize_t n = send (fd, out + out_off, out_len - out_off,
                        MSG_DONTWAIT | MSG_NOSIGNAL);
      if (n > 0)
        out_off += n;
      else if (n == -1 && errno != EAGAIN && errno != EINTR)
        break;
    }
  }

  pthread_mutex_lock (&wlock);
  for (struct watcher **pp = &watchers; *pp; pp = &(*pp)->next)
    if (*pp == w) {
      *pp = w->next;
      break;
    }
  __atomic_fetch_sub (&nwatchers, 1, __ATOMIC_RELAXED);
  pthread_mutex_unlock (&wlock);
  nbdkit_debug ("control: a watcher left (%u now)",
                __atomic_load_n (&nwatchers, __ATOMIC_RELAXED));
  free (out);
  free_watcher (w);
  return -1;
}
