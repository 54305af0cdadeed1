/* plugin/writes.c: the write path.
 *
 * A request is split into segments with the layout model.  Segments of
 * file data in blocks the filesystem already owns become write events
 * (direction "inplace"), one per file and contiguous range.  Every
 * handler decides each event before the request touches the image; one
 * veto fails the whole request and nothing of it is written.  After the
 * I/O, the after-phase events carry its status.
 *
 * Writes into metadata, the journal or free space are committed as they
 * are and counted by role: deciding them at the journal commit that
 * gives them file-level meaning is the journal follower's job, which
 * hooks in at collect_segment, where those roles are only counted now.
 */
#include <config.h>

#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#define NBDKIT_API_VERSION 2
#include <nbdkit-plugin.h>

#include "handlers.h"
#include "log.h"
#include "util.h"
#include "writes.h"

uint64_t writes_role_bytes[FSEV_ROLE_COUNT];

static struct image *image;
static const struct fsev_layout *layout;

void
writes_init (struct image *img, const struct fsev_layout *l)
{
  image = img;
  layout = l;
}

/* One event and the storage of its names. */
struct event {
  struct fsevent_write ev;
  char **names;                 /* NULL-terminated array and the strings,
                                   one allocation */
};

struct collect {
  bool want_events;
  enum fsevent_operation op;
  const char *buf;              /* the request's data, or NULL */
  uint64_t offset;              /* the request's offset */
  struct conn *conn;
  struct event *events;
  size_t n, cap;
  bool oom;
};

static int
collect_segment (const struct fsev_segment *seg, void *opaque)
{
  struct collect *c = opaque;

  __atomic_fetch_add (&writes_role_bytes[seg->role], seg->length,
                      __ATOMIC_RELAXED);
  if (!c->want_events || seg->role != FSEV_ROLE_DATA)
    return 0;

  /* Extend the previous event when this continues it (a block split at
   * i_size, or an unwritten extent next to a written one).
   */
  if (c->n > 0) {
    struct fsevent_write *p = &c->events[c->n - 1].ev;
    if (p->ino == seg->ino &&
        p->device_offset + p->bytes_to_write == seg->offset &&
        p->position + p->bytes_to_write == seg->position) {
      p->bytes_to_write += seg->length;
      return 0;
    }
  }
  if (fsev_grow ((void **) &c->events, &c->cap, c->n + 1,
                 sizeof *c->events) == -1) {
    c->oom = true;
    return -1;
  }
  struct event *e = &c->events[c->n++];
  memset (e, 0, sizeof *e);
  e->ev = (struct fsevent_write) {
    .struct_size = sizeof e->ev,
    .phase = FSEVENT_BEFORE,
    .direction = FSEVENT_INPLACE,
    .operation = c->op,
    .ino = seg->ino,
    .position = seg->position,
    .buffer = c->buf ? c->buf + (seg->offset - c->offset) : NULL,
    .bytes_to_write = seg->length,
    .device_offset = seg->offset,
    .handle_info = &c->conn->info,
  };
  return 0;
}

/* Every path of the event's inode, for handlers and the log, in one
 * allocation: the NULL-terminated array, then the strings.
 */
static int
name_event (struct event *e)
{
  char path[4096];
  int n = fsev_layout_path (layout, e->ev.ino, 0, path, sizeof path);
  if (n < 0) {
    n = 1;
    snprintf (path, sizeof path, "<path too long>");
  }

  /* The strings, one after another, then the array pointing at them. */
  char *strings = NULL;
  size_t len = 0, cap = 0;
  for (int i = 0; i < n; i++) {
    if (i > 0 &&
        fsev_layout_path (layout, e->ev.ino, i, path, sizeof path) < 0)
      snprintf (path, sizeof path, "<path too long>");
    size_t l = strlen (path) + 1;
    if (fsev_grow ((void **) &strings, &cap, len + l, 1) == -1) {
      free (strings);
      return -1;
    }
    memcpy (strings + len, path, l);
    len += l;
  }
  e->names = malloc ((n + 1) * sizeof (char *) + len);
  if (e->names == NULL) {
    free (strings);
    return -1;
  }
  char *p = (char *) (e->names + n + 1);
  if (len)
    memcpy (p, strings, len);
  free (strings);
  for (int i = 0; i < n; i++) {
    e->names[i] = p;
    p += strlen (p) + 1;
  }
  e->names[n] = NULL;
  e->ev.file_name = n > 0 ? e->names[0] : "";
  e->ev.file_names = (const char *const *) e->names;
  return 0;
}

static void
free_events (struct collect *c)
{
  for (size_t i = 0; i < c->n; i++)
    free (c->events[i].names);
  free (c->events);
}

/* The I/O itself, once the request is allowed. */
struct io {
  enum fsevent_operation op;
  const void *buf;
  uint32_t count;
  uint64_t offset;
  bool may_trim, fast, fua;
};

static int
do_io (const struct io *io)
{
  switch (io->op) {
  case FSEVENT_OP_WRITE:
    return image_pwrite (image, io->buf, io->count, io->offset, io->fua);
  case FSEVENT_OP_ZERO:
    return image_zero (image, io->count, io->offset, io->may_trim, io->fast,
                       io->fua);
  case FSEVENT_OP_TRIM:
    return image_trim (image, io->count, io->offset, io->fua);
  }
  errno = EINVAL;
  return -1;
}

static int
handle_request (struct conn *conn, const struct io *io)
{
  struct collect c = {
    .want_events = handlers_active () || log_enabled (),
    .op = io->op, .buf = io->buf, .offset = io->offset, .conn = conn,
  };

  fsev_layout_lookup (layout, io->offset, io->count, collect_segment, &c);
  if (c.oom) {
    free_events (&c);
    nbdkit_error ("out of memory for write events");
    errno = ENOMEM;
    return -1;
  }
  if (c.n == 0) {               /* touches no file: costs one lookup */
    free (c.events);
    return do_io (io);
  }

  /* Before: every handler decides every event; the first veto wins. */
  struct log_batch lb;
  log_batch_init (&lb);
  size_t decided = 0;
  int veto = 0;
  for (size_t i = 0; i < c.n && veto == 0; i++) {
    struct event *e = &c.events[i];
    if (name_event (e) == -1) {
      nbdkit_error ("out of memory for write events");
      veto = ENOMEM;
      break;
    }
    handlers_before_write (&e->ev, conn->contexts);
    veto = e->ev.result_code;
    log_event (&lb, "write", &e->ev);
    decided++;
  }

  int r, err = 0;
  if (veto) {
    r = -1;
    err = veto;
    nbdkit_debug ("write to %s (inode %" PRIu32 ") at %" PRIu64 " vetoed: %s",
                  c.events[decided - 1].ev.file_name,
                  c.events[decided - 1].ev.ino,
                  c.events[decided - 1].ev.position, strerror (veto));
  }
  else {
    r = do_io (io);
    err = r == -1 ? errno : 0;
  }

  /* After: every event whose before phase ran learns what happened. */
  for (size_t i = 0; i < decided; i++) {
    struct fsevent_write *ev = &c.events[i].ev;
    ev->phase = FSEVENT_AFTER;
    ev->status = err;
    ev->bytes_written = r == 0 ? ev->bytes_to_write : 0;
    ev->result_code = 0;
    handlers_after_write (ev, conn->contexts);
    log_event (&lb, "write", ev);
  }
  log_commit (&lb);             /* in the file before the client hears */
  free_events (&c);
  if (r == -1)
    errno = err;
  return r;
}

int
writes_pwrite (struct conn *conn, const void *buf, uint32_t count,
               uint64_t offset, bool fua)
{
  struct io io = { .op = FSEVENT_OP_WRITE, .buf = buf, .count = count,
                   .offset = offset, .fua = fua };
  return handle_request (conn, &io);
}

int
writes_zero (struct conn *conn, uint32_t count, uint64_t offset,
             bool may_trim, bool fast, bool fua)
{
  struct io io = { .op = FSEVENT_OP_ZERO, .count = count, .offset = offset,
                   .may_trim = may_trim, .fast = fast, .fua = fua };
  return handle_request (conn, &io);
}

int
writes_trim (struct conn *conn, uint32_t count, uint64_t offset, bool fua)
{
  struct io io = { .op = FSEVENT_OP_TRIM, .count = count, .offset = offset,
                   .fua = fua };
  return handle_request (conn, &io);
}

void
writes_log_stats (void)
{
  for (int i = 0; i < FSEV_ROLE_COUNT; i++) {
    uint64_t b = __atomic_load_n (&writes_role_bytes[i], __ATOMIC_RELAXED);
    if (b)
      nbdkit_debug ("bytes written to %s: %" PRIu64, fsev_role_name (i), b);
  }
}
