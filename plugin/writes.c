/* plugin/writes.c: the write path.
 *
 * A request is split into segments with the layout model.  Segments of
 * file data in blocks the filesystem already owns become write events
 * (direction "inplace"), one per file and contiguous range.  Every
 * handler decides each event before the request touches the image; one
 * veto fails the whole request and nothing of it is written.  After the
 * I/O, the after-phase events carry its status.
 *
 * Writes into free space are remembered as pending; writes that make a
 * commit point (a jbd2 commit block, a metadata change outside the
 * journal) take the model exclusively and carry the decisions the
 * journal follower (follow.c) makes for them: new data, namespace and
 * attribute changes, vetoed or committed together with the request.
 */
#include <config.h>

#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#define NBDKIT_API_VERSION 2
#include <nbdkit-plugin.h>

#include "control.h"
#include "follow.h"
#include "handlers.h"
#include "locks.h"
#include "log.h"
#include "paths.h"
#include "util.h"
#include "writes.h"

uint64_t writes_role_bytes[FSEV_ROLE_COUNT];
static uint64_t nevents, nvetoes;

uint64_t writes_events (void) { return __atomic_load_n (&nevents, __ATOMIC_RELAXED); }
uint64_t writes_vetoes (void) { return __atomic_load_n (&nvetoes, __ATOMIC_RELAXED); }

static struct image *image;

void
writes_init (struct image *img)
{
  image = img;
}

/* One event and the storage of its names. */
struct event {
  struct fsevent_write ev;
  char **names;                 /* NULL-terminated array and the strings,
                                   one allocation */
};

struct collect {
  bool want_events;
  bool exclusive;               /* the model is held exclusively */
  bool need_exclusive;          /* ... and this request needs it */
  const struct io *io;
  enum fsevent_operation op;
  const char *buf;              /* the request's data, or NULL */
  uint64_t offset;              /* the request's offset */
  struct conn *conn;
  struct event *events;
  size_t n, cap;
  bool count;                   /* count bytes per role (once per request) */
  struct free_range { uint64_t offset, length; } *free_ranges;
  size_t nfree, free_cap;
  bool oom;
};

static int
collect_segment (const struct fsev_segment *seg, void *opaque)
{
  struct collect *c = opaque;

  if (c->count)
    __atomic_fetch_add (&writes_role_bytes[seg->role], seg->length,
                        __ATOMIC_RELAXED);
  if (seg->role == FSEV_ROLE_FREE) {
    /* Harmless now; it may become a file's data at a commit. */
    if (fsev_grow ((void **) &c->free_ranges, &c->free_cap, c->nfree + 1,
                   sizeof *c->free_ranges) == -1) {
      c->oom = true;
      return -1;
    }
    c->free_ranges[c->nfree++] = (struct free_range) { seg->offset, seg->length };
    return 0;
  }
  if (seg->role != FSEV_ROLE_DATA) {
    if (!c->exclusive && !c->need_exclusive &&
        follow_segment_needs_exclusive (c->io, seg))
      c->need_exclusive = true;
    return 0;
  }
  if (!c->want_events || follow_is_checkpoint (c->io, seg))
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

static int
name_event (const struct fsev_layout *layout, struct event *e)
{
  e->names = paths_of (layout, e->ev.ino);
  if (e->names == NULL)
    return -1;
  e->ev.file_name = e->names[0] ? e->names[0] : "";
  e->ev.file_names = (const char *const *) e->names;
  return 0;
}

static void
free_events (struct collect *c)
{
  for (size_t i = 0; i < c->n; i++)
    free (c->events[i].names);
  free (c->events);
  free (c->free_ranges);
  c->events = NULL;
  c->free_ranges = NULL;
  c->n = c->cap = c->nfree = c->free_cap = 0;
}

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

struct held {
  bool held;
  uint64_t id;
};

static int
handle_request (struct conn *conn, const struct io *io)
{
  struct collect c;
  struct follow_plan *plan;
  struct log_batch lb;
  int r, err = 0, veto = 0;
  size_t decided = 0;
  int64_t deadline = 0;         /* for held-back writes; 0: not yet */

  /* Nobody to tell (no handler, no log, no control socket): serve like
   * nbdkit file.
   */
  if (!handlers_active () && !log_enabled () && !control_enabled ())
    return do_io (io);

 again:
  c = (struct collect) {
    .want_events = true,
    .io = io, .op = io->op, .buf = io->buf, .offset = io->offset, .conn = conn,
    .count = deadline == 0,
  };
  plan = NULL;
  follow_lock_shared ();
  const struct fsev_layout *layout = follow_layout ();
  fsev_layout_lookup (layout, io->offset, io->count, collect_segment, &c);
  if (c.need_exclusive && !c.oom) {
    /* A commit point: wait for the writes in flight, then look again
     * (the model may have moved while we waited).
     */
    free_events (&c);
    follow_unlock ();
    follow_lock_exclusive ();
    c.exclusive = true;
    c.need_exclusive = false;
    c.count = false;
    layout = follow_layout ();
    fsev_layout_lookup (layout, io->offset, io->count, collect_segment, &c);
    if (!c.oom) {
      plan = follow_prepare (io, conn, &err);
      if (plan == NULL) {
        free_events (&c);
        follow_unlock ();
        errno = err;
        return -1;
      }
    }
  }
  if (c.oom) {
    free_events (&c);
    follow_plan_discard (plan);
    follow_unlock ();
    nbdkit_error ("out of memory for write events");
    errno = ENOMEM;
    return -1;
  }

  /* A host tool's lock holds back every change to its range: wait for
   * it without holding the model (other files go on), then start over.
   */
  if (locks_any ()) {
    struct held h = { 0 };
    for (size_t i = 0; i < c.n && !h.held; i++)
      h.held = locks_covers (c.events[i].ev.ino, c.events[i].ev.position,
                             c.events[i].ev.position +
                             c.events[i].ev.bytes_to_write, &h.id);
    if (!h.held && plan)
      h.held = follow_plan_locked (plan, &h.id);
    if (h.held) {
      free_events (&c);
      follow_plan_discard (plan);
      follow_unlock ();
      int wait = locks_guest_wait ();
      if (deadline == 0)
        deadline = wait < 0 ? -1 : locks_now_ms () + wait;
      nbdkit_debug ("write at %" PRIu64 " held back by lock %" PRIu64,
                    io->offset, h.id);
      if (wait == 0 || locks_wait_id (h.id, deadline) == ETIMEDOUT) {
        nbdkit_error ("write at %" PRIu64 " (%" PRIu32 " bytes) failed: lock %"
                      PRIu64 " still held after lock-wait", io->offset,
                      io->count, h.id);
        errno = EIO;
        return -1;
      }
      goto again;
    }
  }
  log_batch_init (&lb);
  /* Before: every handler decides every event; the first veto wins. */
  for (size_t i = 0; i < c.n && veto == 0; i++) {
    struct event *e = &c.events[i];
    if (name_event (layout, e) == -1) {
      nbdkit_error ("out of memory for write events");
      veto = ENOMEM;
      break;
    }
    handlers_before_write (&e->ev, conn->contexts);
    veto = e->ev.result_code;
    log_event (&lb, "write", &e->ev);
    decided++;
  }
  if (veto == 0)
    veto = follow_plan_before (plan, &lb);

  __atomic_fetch_add (&nevents, decided, __ATOMIC_RELAXED);
  if (veto) {
    __atomic_fetch_add (&nvetoes, 1, __ATOMIC_RELAXED);
    r = -1;
    err = veto;
    if (decided && c.events[decided - 1].ev.result_code)
      nbdkit_debug ("write to %s (inode %" PRIu32 ") at %" PRIu64
                    " vetoed: %s", c.events[decided - 1].ev.file_name,
                    c.events[decided - 1].ev.ino,
                    c.events[decided - 1].ev.position, strerror (veto));
  }
  else {
    r = do_io (io);
    err = r == -1 ? errno : 0;
  }

  /* The commit point's decisions take effect with the request. */
  follow_plan_finish (plan, &lb, err);
  if (r == 0) {
    for (size_t i = 0; i < c.nfree; i++) {
      if (io->op == FSEVENT_OP_TRIM)
        follow_pending_drop (c.free_ranges[i].offset,
                             c.free_ranges[i].length, "trim", &lb);
      else
        follow_pending_add (c.free_ranges[i].offset,
                            c.free_ranges[i].length);
    }
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
  log_commit (&lb);             /* in the file before the client hears, and
                                   in commit order */
  follow_unlock ();
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
