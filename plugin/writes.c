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

#include "blockcache.h"
#include "control.h"
#include "device.h"
#include "follow.h"
#include "handlers.h"
#include "locks.h"
#include "log.h"
#include "paths.h"
#include "util.h"
#include "volumes.h"
#include "writes.h"

uint64_t writes_role_bytes[FSEV_ROLE_COUNT];
static uint64_t nevents, nvetoes;
static uint64_t nrequests;
static uint64_t nkind[WRITES_EVENT_KINDS];

uint64_t writes_events (void) { return __atomic_load_n (&nevents, __ATOMIC_RELAXED); }
uint64_t writes_vetoes (void) { return __atomic_load_n (&nvetoes, __ATOMIC_RELAXED); }
uint64_t writes_requests (void) { return __atomic_load_n (&nrequests, __ATOMIC_RELAXED); }

void
writes_count_events (unsigned kind, uint64_t n)
{
  if (kind < WRITES_EVENT_KINDS)
    __atomic_fetch_add (&nkind[kind], n, __ATOMIC_RELAXED);
}

/* In-place write events are counted in nevents (no second atomic add
 * per request); nkind[0] has those decided at commits.
 */
uint64_t
writes_event_count (unsigned kind)
{
  if (kind >= WRITES_EVENT_KINDS)
    return 0;
  return __atomic_load_n (&nkind[kind], __ATOMIC_RELAXED) +
    (kind == 0 ? writes_events () : 0);
}

static struct device *device;

void
writes_init (struct device *dev)
{
  device = dev;
}

/* One event and the storage of its names. */
struct event {
  struct fsevent_write ev;
  char **names;                 /* NULL-terminated array and the strings,
                                   one allocation */
};

struct collect {
  struct volume *vol;
  unsigned partition;
  uint64_t vol_offset;          /* where the volume starts on the device */
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
  /* Most requests have a free range or two: no malloc for those. */
  struct free_range few_free[4];
  bool oom;
  bool journal;                 /* the request writes the journal */
};

static int
collect_segment (const struct fsev_segment *seg, void *opaque)
{
  struct collect *c = opaque;

  if (c->count)
    __atomic_fetch_add (&writes_role_bytes[seg->role], seg->length,
                        __ATOMIC_RELAXED);
  if (seg->role == FSEV_ROLE_JOURNAL)
    c->journal = true;
  if (seg->role == FSEV_ROLE_FREE) {
    /* Harmless now; it may become a file's data at a commit. */
    if (c->free_ranges == NULL) {
      c->free_ranges = c->few_free;
      c->free_cap = sizeof c->few_free / sizeof *c->few_free;
    }
    else if (c->nfree == c->free_cap && c->free_ranges == c->few_free) {
      struct free_range *v = malloc (2 * c->free_cap * sizeof *v);
      if (v == NULL) {
        c->oom = true;
        return -1;
      }
      memcpy (v, c->few_free, sizeof c->few_free);
      c->free_ranges = v;
      c->free_cap *= 2;
    }
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
        follow_segment_needs_exclusive (c->vol, c->io, seg))
      c->need_exclusive = true;
    return 0;
  }
  if (!c->want_events || follow_is_checkpoint (c->vol, c->io, seg))
    return 0;

  /* Extend the previous event when this continues it (a block split at
   * i_size, or an unwritten extent next to a written one).
   */
  if (c->n > 0) {
    struct fsevent_write *p = &c->events[c->n - 1].ev;
    if (p->ino == seg->ino &&
        p->device_offset + p->bytes_to_write == c->vol_offset + seg->offset &&
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
    .partition = c->partition,
    .ino = seg->ino,
    .position = seg->position,
    .buffer = c->buf ? c->buf + (seg->offset - c->offset) : NULL,
    .bytes_to_write = seg->length,
    .device_offset = c->vol_offset + seg->offset,
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
  if (c->free_ranges != c->few_free)
    free (c->free_ranges);
  c->events = NULL;
  c->free_ranges = NULL;
  c->n = c->cap = c->nfree = c->free_cap = 0;
}

static int
device_io (const struct io *io)
{
  switch (io->op) {
  case FSEVENT_OP_WRITE:
    return device->pwrite (device, io->buf, io->count, io->offset, io->fua);
  case FSEVENT_OP_ZERO:
    return device->zero (device, io->count, io->offset, io->may_trim,
                         io->fast, io->fua);
  case FSEVENT_OP_TRIM:
    return device->trim (device, io->count, io->offset, io->fua);
  }
  errno = EINVAL;
  return -1;
}

/* Every change the guest makes to a followed volume passes here: the
 * block cache forgets the range first, and learns the journal blocks a
 * write put there (the commit that follows reads them).  Requests that
 * no follower sees go to device_io alone: the cache only ever holds
 * volume blocks, and only while someone follows.
 */
static int
do_io (const struct io *io)
{
  struct blockcache_ticket t;
  blockcache_begin (&t, io->offset, io->count);
  int r = device_io (io);
  if (r == 0 && io->op == FSEVENT_OP_WRITE && io->cache_bs &&
      io->offset >= io->cache_base) {
    const uint64_t bs = io->cache_bs;
    uint64_t b = (io->offset - io->cache_base + bs - 1) / bs;
    for (uint64_t at = io->cache_base + b * bs;
         at + bs <= io->offset + io->count; at += bs)
      blockcache_put_written (&t, at, (uint32_t) bs,
                              (const char *) io->buf + (at - io->offset));
  }
  int e = errno;
  blockcache_end (&t);
  errno = e;
  return r;
}

/* Do IO except the filesystem blocks the parts' plans hold back (ext2
 * metadata waiting for the guest's flush): the pieces in between go to
 * the device as they came.
 */
struct part;
static int
do_io_parts (const struct io *io, const struct part *parts, size_t n);

/* The part of a request inside one followed volume (almost always
 * the whole request; two parts when it crosses a partition boundary).
 */
struct part {
  struct volume *vol;
  struct io io;                 /* volume offsets */
  struct collect c;
  struct follow_plan *plan;
  bool exclusive;               /* take this volume's model exclusively */
  size_t decided;               /* events whose before phase ran */
};

static int
do_io_parts (const struct io *io, const struct part *parts, size_t n)
{
  /* Held device ranges, in order (parts are in device order). */
  uint64_t held_off[64], held_len[64];
  size_t nh = 0;
  for (size_t i = 0; i < n; i++) {
    size_t k = follow_plan_held (parts[i].plan, NULL, 0);
    if (k == 0)
      continue;
    uint64_t *blocks = malloc (k * sizeof *blocks);
    if (blocks == NULL) {
      errno = ENOMEM;
      return -1;
    }
    follow_plan_held (parts[i].plan, blocks, k);
    uint64_t bs = follow_block_size (parts[i].vol);
    uint64_t vo = volume_offset (parts[i].vol);
    for (size_t j = 0; j < k; j++) {
      uint64_t off = vo + blocks[j] * bs;
      if (nh && held_off[nh - 1] + held_len[nh - 1] == off)
        held_len[nh - 1] += bs;
      else if (nh < sizeof held_off / sizeof *held_off) {
        held_off[nh] = off;
        held_len[nh++] = bs;
      }
      else {
        free (blocks);
        nbdkit_error ("a request holding more than %zu metadata ranges",
                      sizeof held_off / sizeof *held_off);
        errno = EIO;
        return -1;
      }
    }
    free (blocks);
  }
  if (nh == 0)
    return do_io (io);
  /* The pieces between held ranges. */
  uint64_t pos = io->offset, end = io->offset + io->count;
  for (size_t h = 0; h <= nh && pos < end; h++) {
    uint64_t stop = h < nh ? held_off[h] : end;
    if (stop > end)
      stop = end;
    if (stop > pos) {
      struct io piece = *io;
      piece.offset = pos;
      piece.count = (uint32_t) (stop - pos);
      if (io->buf)
        piece.buf = (const char *) io->buf + (pos - io->offset);
      if (do_io (&piece) == -1)
        return -1;
    }
    if (h < nh && held_off[h] + held_len[h] > pos)
      pos = held_off[h] + held_len[h];
  }
  return 0;
}

static void
part_start (struct part *pt, struct conn *conn, bool count)
{
  pt->c = (struct collect) {
    .vol = pt->vol,
    .partition = volume_partition (pt->vol),
    .vol_offset = volume_offset (pt->vol),
    .want_events = true,
    .exclusive = pt->exclusive,
    .io = &pt->io, .op = pt->io.op, .buf = pt->io.buf,
    .offset = pt->io.offset, .conn = conn, .count = count,
  };
  pt->plan = NULL;
  fsev_layout_lookup (follow_layout (pt->vol), pt->io.offset, pt->io.count,
                      collect_segment, &pt->c);
}

static void
parts_unlock (struct part *parts, size_t n)
{
  for (size_t i = n; i-- > 0; ) {
    follow_plan_discard (parts[i].plan);
    parts[i].plan = NULL;
    free_events (&parts[i].c);
    follow_unlock (parts[i].vol);
  }
}

/* Lock and look up every part: shared, or exclusive where a commit
 * point needs it.  Loops until the parts that need the exclusive path
 * hold it (the model may move while we wait).  0, or an errno with
 * nothing held.
 */
static int
parts_lock (struct part *parts, size_t n, struct conn *conn, bool count)
{
  for (;;) {
    bool again = false;
    for (size_t i = 0; i < n; i++) {
      if (parts[i].exclusive)
        follow_lock_exclusive (parts[i].vol);
      else
        follow_lock_shared (parts[i].vol);
      part_start (&parts[i], conn, count);
      if (parts[i].c.need_exclusive)
        again = parts[i].exclusive = true;
    }
    bool oom = false;
    for (size_t i = 0; i < n; i++)
      oom |= parts[i].c.oom;
    if (oom) {
      parts_unlock (parts, n);
      nbdkit_error ("out of memory for write events");
      return ENOMEM;
    }
    if (!again)
      break;
    parts_unlock (parts, n);
    count = false;              /* counted already */
  }
  /* The in-place events are named now, with the model the request
   * found: a commit point's plan may update the model in place (the
   * same request may remove the very names these bytes were written
   * under, and the events must still carry them; fuzz-follow found
   * in-place writes to a protected file named "" that way).
   */
  for (size_t i = 0; i < n; i++) {
    const struct fsev_layout *layout = follow_layout (parts[i].vol);
    for (size_t k = 0; k < parts[i].c.n; k++)
      if (name_event (layout, &parts[i].c.events[k]) == -1) {
        parts_unlock (parts, n);
        nbdkit_error ("out of memory for write events");
        return ENOMEM;
      }
  }
  for (size_t i = 0; i < n; i++) {
    if (!parts[i].exclusive)
      continue;
    int err = 0;
    parts[i].plan = follow_prepare (parts[i].vol, &parts[i].io, conn, &err);
    if (parts[i].plan == NULL) {
      parts_unlock (parts, n);
      return err ? err : EIO;
    }
  }
  return 0;
}

/* Does a host tool's lock hold back any change the request makes? */
static bool
parts_locked (struct part *parts, size_t n, uint64_t *id)
{
  if (!locks_any ())
    return false;
  for (size_t i = 0; i < n; i++) {
    const struct collect *c = &parts[i].c;
    for (size_t k = 0; k < c->n; k++)
      if (locks_covers (c->partition, c->events[k].ev.ino,
                        c->events[k].ev.position,
                        c->events[k].ev.position +
                        c->events[k].ev.bytes_to_write, id))
        return true;
    if (parts[i].plan && follow_plan_locked (parts[i].plan, id))
      return true;
  }
  return false;
}

/* Parts kept on the stack; a request over more partitions allocates. */
#define STACK_PARTS 4

static int handle_parts (struct conn *conn, const struct io *io,
                         struct part *parts, size_t n);

static int
handle_request (struct conn *conn, const struct io *io)
{
  __atomic_fetch_add (&nrequests, 1, __ATOMIC_RELAXED);
  /* Nobody to tell (no handler, no log, no control socket), or no
   * followed filesystem here: serve like nbdkit file.
   */
  if (!handlers_active () && !log_enabled () && !control_enabled ())
    return device_io (io);      /* no commit point ever reads the cache */
  size_t first;
  size_t n = volumes_in_range (io->offset, io->count, &first);
  if (n == 0)
    return device_io (io);      /* no cached block lies outside volumes */
  /* An ext2 epoch at its bound is decided first, as at a flush. */
  for (size_t i = 0; i < n; i++) {
    struct volume *vol = volumes_get (first + i);
    if (follow_epoch_full (vol)) {
      int e = follow_epoch_commit (vol, conn);
      if (e) {
        errno = e;
        return -1;
      }
    }
  }

  struct part stack[STACK_PARTS];
  struct part *parts = n <= STACK_PARTS ? stack : calloc (n, sizeof *parts);
  if (parts == NULL) {
    nbdkit_error ("out of memory for a request over %zu partitions", n);
    errno = ENOMEM;
    return -1;
  }
  for (size_t i = 0; i < n; i++) {
    struct volume *vol = volumes_get (first + i);
    uint64_t vo = volume_offset (vol), vl = volume_length (vol);
    uint64_t from = io->offset > vo ? io->offset : vo;
    uint64_t to = io->offset + io->count < vo + vl ? io->offset + io->count
      : vo + vl;
    parts[i] = (struct part) { .vol = vol };
    parts[i].io = *io;
    parts[i].io.buf = io->buf ? (const char *) io->buf + (from - io->offset)
      : NULL;
    parts[i].io.count = (uint32_t) (to - from);
    parts[i].io.offset = from - vo;
  }
  int r = handle_parts (conn, io, parts, n);
  if (parts != stack) {
    int e = errno;
    free (parts);
    errno = e;
  }
  return r;
}

static int
handle_parts (struct conn *conn, const struct io *io, struct part *parts,
              size_t n)
{
  struct log_batch lb;
  int r, err = 0, veto = 0;
  int64_t deadline = 0;         /* for held-back writes; 0: not yet */
  struct part *vetoer = NULL;
  size_t vetoed_at = 0;

 again:
  err = parts_lock (parts, n, conn, deadline == 0);
  if (err) {
    errno = err;
    return -1;
  }

  /* A host tool's lock holds back every change to its range: wait for
   * it without holding the models (other files go on), then start over.
   */
  uint64_t id;
  if (parts_locked (parts, n, &id)) {
    parts_unlock (parts, n);
    int wait = locks_guest_wait ();
    if (deadline == 0)
      deadline = wait < 0 ? -1 : locks_now_ms () + wait;
    nbdkit_debug ("write at %" PRIu64 " held back by lock %" PRIu64,
                  io->offset, id);
    if (wait == 0 || locks_wait_id (id, deadline) == ETIMEDOUT) {
      nbdkit_error ("write at %" PRIu64 " (%" PRIu32 " bytes) failed: lock %"
                    PRIu64 " still held after lock-wait", io->offset,
                    io->count, id);
      errno = EIO;
      return -1;
    }
    goto again;
  }

  log_batch_init (&lb);
  /* Before: every handler decides every event; the first veto wins. */
  for (size_t i = 0; i < n && veto == 0; i++) {
    struct collect *c = &parts[i].c;
    for (size_t k = 0; k < c->n && veto == 0; k++) {
      struct event *e = &c->events[k];
      handlers_before_write (&e->ev, conn->contexts);
      veto = e->ev.result_code;
      log_event (&lb, &e->ev);
      parts[i].decided++;
      if (veto) {
        vetoer = &parts[i];
        vetoed_at = k;
      }
    }
  }
  for (size_t i = 0; i < n && veto == 0; i++)
    veto = follow_plan_before (parts[i].plan, &lb);

  size_t ndecided = 0;
  for (size_t i = 0; i < n; i++)
    ndecided += parts[i].decided;
  __atomic_fetch_add (&nevents, ndecided, __ATOMIC_RELAXED);
  if (veto) {
    __atomic_fetch_add (&nvetoes, 1, __ATOMIC_RELAXED);
    r = -1;
    err = veto;
    if (vetoer) {
      const struct fsevent_write *ev = &vetoer->c.events[vetoed_at].ev;
      nbdkit_debug ("write to %s (partition %u, inode %" PRIu32 ") at %"
                    PRIu64 " vetoed: %s", ev->file_name, ev->partition,
                    ev->ino, ev->position, strerror (veto));
    }
  }
  else {
    /* A small write to one volume's journal: the commit that closes
     * its transaction reads these blocks back (blockcache.h).
     */
    struct io wio = *io;
    if (n == 1 && parts[0].c.journal && io->op == FSEVENT_OP_WRITE &&
        io->count <= BLOCKCACHE_MAX_WRITE) {
      wio.cache_bs = (uint32_t) follow_block_size (parts[0].vol);
      wio.cache_base = volume_offset (parts[0].vol);
    }
    r = do_io_parts (&wio, parts, n);
    err = r == -1 ? errno : 0;
  }

  bool commits = false;
  for (size_t i = 0; i < n; i++) {
    struct collect *c = &parts[i].c;
    commits |= r == 0 && follow_plan_commits (parts[i].plan);
    /* The commit point's decisions take effect with the request. */
    follow_plan_finish (parts[i].plan, &lb, err);
    parts[i].plan = NULL;
    if (r == 0) {
      for (size_t k = 0; k < c->nfree; k++) {
        if (io->op == FSEVENT_OP_TRIM)
          follow_pending_drop (parts[i].vol, c->free_ranges[k].offset,
                               c->free_ranges[k].length, "trim", &lb);
        else
          follow_pending_add (parts[i].vol, c->free_ranges[k].offset,
                              c->free_ranges[k].length);
      }
    }
    /* After: every event whose before phase ran learns what happened. */
    for (size_t k = 0; k < parts[i].decided; k++) {
      struct fsevent_write *ev = &c->events[k].ev;
      ev->phase = FSEVENT_AFTER;
      ev->status = err;
      ev->bytes_written = r == 0 ? ev->bytes_to_write : 0;
      ev->result_code = 0;
      handlers_after_write (ev, conn->contexts);
      log_event (&lb, ev);
    }
  }
  log_publish (&lb);            /* numbered before the client hears, and
                                   in commit order */
  parts_unlock (parts, n);
  log_kick (&lb);               /* the writer's mutex: outside the model */
  if (commits)
    log_sync_soon ();           /* the flush that follows finds it done */
  if (r == -1)
    errno = err;
  return r;
}

int
writes_commit_epochs (struct conn *conn)
{
  int first = 0;
  /* Every volume's epoch: one refusal does not keep the others. */
  for (size_t i = 0; i < volumes_count (); i++) {
    int e = follow_epoch_commit (volumes_get (i), conn);
    if (e && first == 0)
      first = e;
  }
  if (first) {
    errno = first;
    return -1;
  }
  return 0;
}

/* A FUA request is a flush point too: what the guest held back must be
 * decided and on the device before it hears back.
 */
static int
handle_fua (struct conn *conn, const struct io *io)
{
  int r = handle_request (conn, io);
  if (r == 0 && io->fua && volumes_any_held ()) {
    if (writes_commit_epochs (conn) == -1 || device->flush (device) == -1)
      return -1;
  }
  return r;
}

int
writes_pwrite (struct conn *conn, const void *buf, uint32_t count,
               uint64_t offset, bool fua)
{
  struct io io = { .op = FSEVENT_OP_WRITE, .buf = buf, .count = count,
                   .offset = offset, .fua = fua };
  return handle_fua (conn, &io);
}

int
writes_zero (struct conn *conn, uint32_t count, uint64_t offset,
             bool may_trim, bool fast, bool fua)
{
  struct io io = { .op = FSEVENT_OP_ZERO, .count = count, .offset = offset,
                   .may_trim = may_trim, .fast = fast, .fua = fua };
  return handle_fua (conn, &io);
}

int
writes_trim (struct conn *conn, uint32_t count, uint64_t offset, bool fua)
{
  struct io io = { .op = FSEVENT_OP_TRIM, .count = count, .offset = offset,
                   .fua = fua };
  return handle_fua (conn, &io);
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
