/* plugin/control.c: control=PATH, the socket host tools talk to.
 *
 * A Unix stream socket, mode 0600; peers whose uid is neither root nor
 * ours are refused.  One thread per connection (at most MAX_CONNS),
 * line-based requests of at most MAX_LINE bytes (see the man page for
 * the protocol).  A connection's locks go when it closes, so a tool
 * that crashes never leaves a file frozen.
 */
#include <config.h>

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <stdarg.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#define NBDKIT_API_VERSION 2
#include <nbdkit-plugin.h>

#include "control.h"
#include "errnames.h"
#include "follow.h"
#include "handlers.h"
#include "locks.h"
#include "log.h"
#include "log-format.h"
#include "volumes.h"
#include "watch.h"
#include "writes.h"

#define MAX_LINE 4096
#define MAX_CONNS 64

static char *path;
static int listen_fd = -1;
static int stop_pipe[2] = { -1, -1 };
static pthread_t acceptor;
static bool running;
static unsigned nconns;                 /* atomically */

struct cconn {
  int fd;
  int wake[2];                  /* a lock of ours was released elsewhere */
  pthread_mutex_t lock;         /* protects released */
  uint64_t *released;
  size_t nreleased, released_cap;
  struct fsevent_handle_info info;
};

int
control_set_path (const char *p)
{
  if (path) {
    nbdkit_error ("control= given more than once");
    return -1;
  }
  path = nbdkit_absolute_path (p);
  if (path == NULL)
    return -1;
  if (strlen (path) >= sizeof ((struct sockaddr_un *) 0)->sun_path) {
    nbdkit_error ("control=%s: the path is too long for a Unix socket", p);
    return -1;
  }
  return 0;
}

bool
control_enabled (void)
{
  return path != NULL;
}

/* --- Replies. --- */

static int
send_all (int fd, const void *buf, size_t len)
{
  const char *p = buf;
  while (len > 0) {
    ssize_t w = send (fd, p, len, MSG_NOSIGNAL);
    if (w == -1) {
      if (errno == EINTR)
        continue;
      return -1;
    }
    p += w;
    len -= w;
  }
  return 0;
}

static int __attribute__ ((format (printf, 2, 3)))
reply (struct cconn *c, const char *fmt, ...)
{
  char line[MAX_LINE + 64];
  va_list ap;
  va_start (ap, fmt);
  int n = vsnprintf (line, sizeof line - 1, fmt, ap);
  va_end (ap);
  if (n < 0)
    return -1;
  if ((size_t) n > sizeof line - 2)
    n = sizeof line - 2;
  line[n++] = '\n';
  return send_all (c->fd, line, n);
}

static int
reply_err (struct cconn *c, int err, const char *msg)
{
  return reply (c, "ERR %s %s", errno_name (err), msg);
}

/* --- Lock events. --- */

/* LB: the event's batch, the same for both phases (its after line
 * names who vetoed the before phase).
 */
static void
lock_event (struct cconn *c, struct log_batch *lb, struct fsevent_lock *ev,
            bool unlock, enum fsevent_phase phase)
{
  ev->phase = phase;
  if (phase == FSEVENT_AFTER)
    writes_count_events (unlock ? 9 : 8, 1);
  handlers_lock (ev, unlock);
  log_lock (lb, ev, unlock);
  log_commit (lb);
}

static void
fill_lock_event (struct fsevent_lock *ev, const struct lock_info *l,
                 char **names, const struct fsevent_handle_info *hi)
{
  *ev = (struct fsevent_lock) {
    .struct_size = sizeof *ev,
    .partition = l->partition,
    .ino = l->ino,
    .file_name = l->path,
    .file_names = (const char *const *) names,
    .byte_offset = l->offset,
    .length = l->length,
    .exclusive_lock = l->exclusive,
    .lock_id = l->id,
    .handle_info = hi,
  };
}

/* Unlock events of locks that went away (copied out of the lock table
 * first: handlers never run under its mutex).
 */
struct gone_lock {
  struct lock_info info;
  char *path;
};

struct gone_list {
  struct gone_lock *v;
  size_t n, cap;
};

static void
collect_gone (const struct lock_info *l, void *opaque)
{
  struct gone_list *g = opaque;
  struct gone_lock *nv = realloc (g->v, (g->n + 1) * sizeof *nv);
  if (nv == NULL)
    return;                     /* the lock still goes; its event is lost */
  g->v = nv;
  g->v[g->n].info = *l;
  g->v[g->n].path = strdup (l->path);
  g->v[g->n].info.path = g->v[g->n].path ? g->v[g->n].path : "";
  g->n++;
}

static void
unlock_events (struct cconn *c, struct gone_list *g, enum fsevent_phase phase)
{
  for (size_t i = 0; i < g->n; i++) {
    struct fsevent_lock ev;
    struct log_batch lb;
    fill_lock_event (&ev, &g->v[i].info, NULL, &c->info);
    log_batch_init (&lb);
    lock_event (c, &lb, &ev, true, phase);
  }
}

static void
free_gone (struct gone_list *g)
{
  for (size_t i = 0; i < g->n; i++)
    free (g->v[i].path);
  free (g->v);
}

/* The owner of a lock released by someone else hears of it. */
static void
notify_released (void *owner, uint64_t id)
{
  struct cconn *c = owner;
  pthread_mutex_lock (&c->lock);
  uint64_t *nv = realloc (c->released, (c->nreleased + 1) * sizeof *nv);
  if (nv) {
    c->released = nv;
    c->released[c->nreleased++] = id;
  }
  pthread_mutex_unlock (&c->lock);
  char b = 0;
  if (write (c->wake[1], &b, 1) == -1) {
    /* The pipe is full: a wake-up is pending anyway. */
  }
}

/* --- Commands. --- */

static bool
parse_u64 (const char *s, uint64_t *v)
{
  char *end;
  if (*s < '0' || *s > '9')
    return false;
  errno = 0;
  unsigned long long x = strtoull (s, &end, 10);
  if (errno || *end)
    return false;
  *v = x;
  return true;
}

static bool
parse_i64 (const char *s, int64_t *v)
{
  char *end;
  if (*s == '\0')
    return false;
  errno = 0;
  long long x = strtoll (s, &end, 10);
  if (errno || *end)
    return false;
  *v = x;
  return true;
}

/* Split LINE into at most N fields at single spaces; the last field
 * takes the rest of the line.  Returns the number of fields.
 */
static size_t
split (char *line, char **f, size_t n)
{
  size_t k = 0;
  char *p = line;
  while (k < n && *p) {
    f[k++] = p;
    if (k == n)
      break;
    char *sp = strchr (p, ' ');
    if (sp == NULL)
      break;
    *sp = '\0';
    p = sp + 1;
  }
  return k;
}

static int
cmd_lock (struct cconn *c, char *args)
{
  char *f[5];
  uint64_t offset;
  int64_t length, wait;
  if (split (args, f, 5) != 5 || !parse_u64 (f[0], &offset) ||
      !parse_i64 (f[1], &length) || length < -1 || length == 0 ||
      (strcmp (f[2], "shared") != 0 && strcmp (f[2], "exclusive") != 0) ||
      !parse_i64 (f[3], &wait) || wait < -1 || wait > INT32_MAX)
    return reply_err (c, EINVAL, "usage: LOCK OFFSET LENGTH|-1 "
                      "shared|exclusive WAIT-MS|0|-1 PATH");
  const char *p = f[4];
  bool exclusive = strcmp (f[2], "exclusive") == 0;
  /* Its LOCKS line (numbers and all) must fit in MAX_LINE too. */
  if (strlen (p) > MAX_LINE - 128)
    return reply_err (c, ENAMETOOLONG, "path too long");

  uint32_t ino;
  char **names;
  const char *why;
  int err;
  struct volume *vol = volumes_resolve (p, &p, &err, &why);
  if (vol == NULL)
    return reply_err (c, err, why);
  int r = follow_resolve (vol, p, &ino, &names);
  if (r < 0)
    return reply_err (c, -r, r == -ENOENT ? "no such file in the filesystem"
                      : "cannot resolve the path");
  unsigned part = volume_partition (vol);
  struct lock_info l = { .partition = part, .ino = ino, .offset = offset,
                         .length = length, .exclusive = exclusive, .path = p };
  struct fsevent_lock ev;
  struct log_batch lb;
  fill_lock_event (&ev, &l, names, &c->info);
  ev.fail_immediately = wait == 0;
  log_batch_init (&lb);
  lock_event (c, &lb, &ev, false, FSEVENT_BEFORE);
  int veto = ev.result_code;
  int64_t id = 0;
  if (veto == 0) {
    id = locks_take (c, c->info.uid < 0 ? 0 : (uid_t) c->info.uid, part,
                     ino, p,
                     offset, length, exclusive, (int) wait);
    /* A guest write that looked for locks before this one existed may
     * still be under way: wait for every request in flight (they hold
     * the model shared until their I/O is done and logged), so that
     * once we answer OK nothing changes the range any more.
     */
    if (id > 0) {
      follow_lock_exclusive (vol);
      follow_unlock (vol);
    }
    ev.status = id < 0 ? (int) -id : 0;
    ev.lock_id = id > 0 ? (uint64_t) id : 0;
  }
  else
    ev.status = veto;
  ev.result_code = 0;
  lock_event (c, &lb, &ev, false, FSEVENT_AFTER);
  free (names);
  if (veto)
    return reply_err (c, veto, "refused by a handler");
  if (id < 0)
    return reply_err (c, (int) -id,
                      id == -EAGAIN ? "a conflicting lock is held"
                      : id == -ETIMEDOUT ? "timed out waiting for a "
                      "conflicting lock" : "cannot lock");
  return reply (c, "OK %" PRId64, id);
}

/* Unlock events come before the lock goes: the writes it held back are
 * decided (and logged) after them.  An unlock cannot be refused.
 */
static int
cmd_unlock (struct cconn *c, char *args)
{
  uint64_t id;
  uid_t uid = c->info.uid < 0 ? (uid_t) -1 : (uid_t) c->info.uid;
  if (!parse_u64 (args, &id) || id == 0)
    return reply_err (c, EINVAL, "usage: UNLOCK ID");
  struct gone_list g = { 0 };
  int r = locks_find (id, c, uid, collect_gone, &g);
  if (r == 0) {
    unlock_events (c, &g, FSEVENT_BEFORE);
    unlock_events (c, &g, FSEVENT_AFTER);
    r = locks_release (id, c, uid, NULL, NULL);
  }
  free_gone (&g);
  if (r < 0)
    return reply_err (c, -r, r == -ENOENT ? "no such lock"
                      : "not your lock");
  return reply (c, "OK");
}

static int
cmd_locks (struct cconn *c)
{
  struct gone_list g = { 0 };
  locks_list (collect_gone, &g);
  int r = 0;
  for (size_t i = 0; i < g.n && r == 0; i++) {
    const struct lock_info *l = &g.v[i].info;
    char part[16] = "";
    if (l->partition)
      snprintf (part, sizeof part, "%u:", l->partition);
    r = reply (c, "LOCK %" PRIu64 " %" PRIu32 " %" PRIu64 " %" PRId64
               " %s %s%s", l->id, l->ino, l->offset, l->length,
               l->exclusive ? "exclusive" : "shared", part, l->path);
  }
  free_gone (&g);
  return r ? r : reply (c, "OK");
}

static int
cmd_stats (struct cconn *c)
{
  uint64_t txns = 0, vetoed = 0, unattributed = 0, not_followed = 0;
  uint64_t pending = 0;
  for (size_t i = 0; i < volumes_count (); i++) {
    follow_get_stats (volumes_get (i), &txns, &vetoed, &unattributed,
                      &not_followed);
    pending += follow_pending_bytes (volumes_get (i));
  }
  if (reply (c, "events %" PRIu64, writes_events ()) ||
      reply (c, "vetoes %" PRIu64, writes_vetoes ()) ||
      reply (c, "transactions %" PRIu64, txns) ||
      reply (c, "transactions_vetoed %" PRIu64, vetoed) ||
      reply (c, "transactions_not_followed %" PRIu64, not_followed) ||
      reply (c, "pending_bytes %" PRIu64, pending) ||
      reply (c, "unattributed_bytes %" PRIu64, unattributed) ||
      reply (c, "locks %" PRIu64, locks_count ()) ||
      reply (c, "requests %" PRIu64, writes_requests ()) ||
      reply (c, "watchers %u", watch_count ()))
    return -1;
  for (unsigned k = 0; k < WRITES_EVENT_KINDS; k++)
    if (reply (c, "events_%s %" PRIu64, log_event_type_name (k),
               writes_event_count (k)))
      return -1;
  /* Per volume: how long commit points held its model exclusively, and
   * how the model followed them (in place, or by a full scan).
   */
  for (size_t i = 0; i < volumes_count (); i++) {
    struct volume *vol = volumes_get (i);
    struct follow_hold h;
    follow_lock_shared (vol);
    follow_get_hold (vol, &h);
    follow_unlock (vol);
    char pfx[32] = "";
    if (volume_partition (vol))
      snprintf (pfx, sizeof pfx, "partition%u_", volume_partition (vol));
    if (reply (c, "%scommits %" PRIu64, pfx, h.commits) ||
        reply (c, "%scommits_incremental %" PRIu64, pfx, h.incremental) ||
        reply (c, "%scommits_rescanned %" PRIu64, pfx, h.rescans) ||
        reply (c, "%scommit_hold_p50_us %" PRIu64, pfx, h.p50_ns / 1000) ||
        reply (c, "%scommit_hold_p99_us %" PRIu64, pfx, h.p99_ns / 1000) ||
        reply (c, "%scommit_hold_max_us %" PRIu64, pfx, h.max_ns / 1000))
      return -1;
  }
  return reply (c, "OK");
}

static int
cat_header (void *opaque, uint64_t size)
{
  return reply (opaque, "DATA %" PRIu64, size);
}

static int
cat_out (void *opaque, const void *buf, size_t n)
{
  struct cconn *c = opaque;
  return send_all (c->fd, buf, n);
}

static int
cmd_cat (struct cconn *c, const char *p)
{
  const char *why;
  int err;
  struct volume *vol = volumes_resolve (p, &p, &err, &why);
  if (vol == NULL)
    return reply_err (c, err, why);
  int r = follow_cat (vol, p, cat_header, cat_out, c);
  if (r == -EPIPE)
    return -1;                  /* the peer went; so do we */
  if (r < 0)
    return reply_err (c, -r, r == -ENOENT ? "no such file in the filesystem"
                      : r == -EISDIR ? "a directory"
                      : r == -ENOTSUP ? "inline data is not supported"
                      : "cannot read the file");
  return reply (c, "OK");
}

static int
dispatch (struct cconn *c, char *line)
{
  if (strncmp (line, "LOCK ", 5) == 0)
    return cmd_lock (c, line + 5);
  if (strncmp (line, "UNLOCK ", 7) == 0)
    return cmd_unlock (c, line + 7);
  if (strcmp (line, "LOCKS") == 0)
    return cmd_locks (c);
  if (strcmp (line, "STATS") == 0)
    return cmd_stats (c);
  if (strncmp (line, "CAT ", 4) == 0)
    return cmd_cat (c, line + 4);
  /* The connection streams events from here on, until it closes. */
  if (strcmp (line, "WATCH") == 0 || strncmp (line, "WATCH ", 6) == 0)
    return watch_serve (c->fd, stop_pipe[0], line + 5);
  return reply_err (c, EINVAL, "unknown command");
}

/* --- Connections. --- */

static int
send_released (struct cconn *c)
{
  char b[64];
  while (read (c->wake[0], b, sizeof b) > 0)
    ;
  pthread_mutex_lock (&c->lock);
  uint64_t *ids = c->released;
  size_t n = c->nreleased;
  c->released = NULL;
  c->nreleased = 0;
  pthread_mutex_unlock (&c->lock);
  int r = 0;
  for (size_t i = 0; i < n && r == 0; i++)
    r = reply (c, "RELEASED %" PRIu64, ids[i]);
  free (ids);
  return r;
}

static void *
serve (void *arg)
{
  struct cconn *c = arg;
  char *buf = malloc (MAX_LINE + 1);
  size_t len = 0;

  while (buf) {
    struct pollfd pfd[3] = {
      { .fd = c->fd, .events = POLLIN },
      { .fd = c->wake[0], .events = POLLIN },
      { .fd = stop_pipe[0], .events = POLLIN },
    };
    if (poll (pfd, 3, -1) == -1) {
      if (errno == EINTR)
        continue;
      break;
    }
    if (pfd[2].revents)
      break;
    if ((pfd[1].revents & POLLIN) && send_released (c) == -1)
      break;
    if (!(pfd[0].revents & (POLLIN | POLLHUP | POLLERR)))
      continue;
    ssize_t n = read (c->fd, buf + len, MAX_LINE - len);
    if (n == -1 && errno == EINTR)
      continue;
    if (n <= 0)
      break;
    len += n;
    /* Every complete line. */
    char *start = buf, *nl;
    bool bad = false;
    while ((nl = memchr (start, '\n', len - (start - buf))) != NULL) {
      if (memchr (start, '\0', nl - start) != NULL) {
        reply_err (c, EINVAL, "NUL byte in request");
        bad = true;
        break;
      }
      *nl = '\0';
      if (nl > start && nl[-1] == '\r')
        nl[-1] = '\0';
      if (dispatch (c, start) == -1) {
        bad = true;
        break;
      }
      start = nl + 1;
    }
    if (bad)
      break;
    len -= start - buf;
    memmove (buf, start, len);
    if (len == MAX_LINE) {
      reply_err (c, E2BIG, "request too long");
      break;
    }
  }
  free (buf);

  /* Its locks go with it (their events first, as for UNLOCK). */
  struct gone_list g = { 0 };
  locks_list_owner (c, collect_gone, &g);
  unlock_events (c, &g, FSEVENT_BEFORE);
  unlock_events (c, &g, FSEVENT_AFTER);
  locks_release_owner (c, NULL, NULL);
  free_gone (&g);
  close (c->fd);
  close (c->wake[0]);
  close (c->wake[1]);
  pthread_mutex_destroy (&c->lock);
  free (c->released);
  free (c);
  __atomic_fetch_sub (&nconns, 1, __ATOMIC_RELAXED);
  return NULL;
}

static void
accept_one (void)
{
  int fd = accept4 (listen_fd, NULL, NULL, SOCK_CLOEXEC);
  if (fd == -1)
    return;
  struct ucred cr;
  socklen_t crlen = sizeof cr;
  if (getsockopt (fd, SOL_SOCKET, SO_PEERCRED, &cr, &crlen) == -1 ||
      (cr.uid != 0 && cr.uid != getuid ())) {
    const char msg[] = "ERR EPERM connections from this user are refused\n";
    send_all (fd, msg, sizeof msg - 1);
    nbdkit_debug ("control: refused a connection from uid %d",
                  (int) cr.uid);
    close (fd);
    return;
  }
  if (__atomic_fetch_add (&nconns, 1, __ATOMIC_RELAXED) >= MAX_CONNS) {
    __atomic_fetch_sub (&nconns, 1, __ATOMIC_RELAXED);
    const char msg[] = "ERR EBUSY too many control connections\n";
    send_all (fd, msg, sizeof msg - 1);
    close (fd);
    return;
  }
  struct cconn *c = calloc (1, sizeof *c);
  if (c == NULL || pipe2 (c->wake, O_CLOEXEC | O_NONBLOCK) == -1) {
    free (c);
    close (fd);
    __atomic_fetch_sub (&nconns, 1, __ATOMIC_RELAXED);
    return;
  }
  static uint64_t next_id = 1;
  c->fd = fd;
  pthread_mutex_init (&c->lock, NULL);
  c->info = (struct fsevent_handle_info) {
    /* Numbered apart from NBD connections, from 2^32 up. */
    .connection_id = (UINT64_C (1) << 32) + next_id++,
    .export_name = "control",
    .pid = cr.pid, .uid = cr.uid, .gid = cr.gid,
  };
  pthread_t t;
  pthread_attr_t a;
  pthread_attr_init (&a);
  pthread_attr_setdetachstate (&a, PTHREAD_CREATE_DETACHED);
  if (pthread_create (&t, &a, serve, c) != 0) {
    close (c->wake[0]);
    close (c->wake[1]);
    pthread_mutex_destroy (&c->lock);
    free (c);
    close (fd);
    __atomic_fetch_sub (&nconns, 1, __ATOMIC_RELAXED);
  }
  pthread_attr_destroy (&a);
}

static void *
accept_loop (void *arg)
{
  for (;;) {
    struct pollfd pfd[2] = {
      { .fd = listen_fd, .events = POLLIN },
      { .fd = stop_pipe[0], .events = POLLIN },
    };
    if (poll (pfd, 2, -1) == -1) {
      if (errno == EINTR)
        continue;
      break;
    }
    if (pfd[1].revents)
      break;
    if (pfd[0].revents & POLLIN)
      accept_one ();
  }
  return NULL;
}

int
control_start (void)
{
  if (path == NULL || running)
    return 0;
  struct stat st;
  if (lstat (path, &st) == 0) {
    if (!S_ISSOCK (st.st_mode)) {
      nbdkit_error ("control=%s: exists and is not a socket", path);
      return -1;
    }
    unlink (path);              /* a stale socket of an earlier run */
  }
  struct sockaddr_un addr = { .sun_family = AF_UNIX };
  strcpy (addr.sun_path, path);
  listen_fd = socket (AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (listen_fd == -1 ||
      bind (listen_fd, (struct sockaddr *) &addr, sizeof addr) == -1 ||
      chmod (path, 0600) == -1 ||
      listen (listen_fd, 16) == -1 ||
      pipe2 (stop_pipe, O_CLOEXEC) == -1) {
    nbdkit_error ("control=%s: %m", path);
    if (listen_fd >= 0)
      close (listen_fd);
    listen_fd = -1;
    return -1;
  }
  locks_set_notify (notify_released);
  if (pthread_create (&acceptor, NULL, accept_loop, NULL) != 0) {
    nbdkit_error ("control=%s: cannot start its thread", path);
    return -1;
  }
  running = true;
  nbdkit_debug ("control socket %s ready", path);
  return 0;
}

void
control_stop (void)
{
  if (running) {
    char b = 0;
    if (write (stop_pipe[1], &b, 1) == -1)
      nbdkit_debug ("control: stop: %m");
    pthread_join (acceptor, NULL);
    /* Connection threads see the stop pipe too and close; give them a
     * moment, they hold nothing nbdkit's unload needs except locks.
     */
    for (int i = 0; i < 100 && __atomic_load_n (&nconns, __ATOMIC_RELAXED); i++)
      usleep (10000);
    running = false;
  }
  if (listen_fd >= 0)
    close (listen_fd);
  listen_fd = -1;
  if (path)
    unlink (path);
  free (path);
  path = NULL;
}
