/* plugin/log-format.c: the JSON lines of log=.
 *
 * A write event's record is formatted by whoever drains the ring (the
 * writer thread, mostly) into a buffer sized beforehand
 * (log_format_room), so the hot path has no bounds checks.  The rare
 * events (namespace changes, locks, unattributed bytes) are formatted
 * on the request path into a growing buffer (struct text) and queued
 * as text.  Lines are stored without their seq, which log_format puts
 * in front.
 */
#include <config.h>

#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "errnames.h"
#include "handlers.h"
#include "log.h"
#include "log-format.h"

static char *
put_u64 (char *p, uint64_t v)
{
  char tmp[24];
  size_t i = sizeof tmp;
  do {
    tmp[--i] = '0' + v % 10;
    v /= 10;
  } while (v);
  memcpy (p, tmp + i, sizeof tmp - i);
  return p + (sizeof tmp - i);
}

#define PUTLIT(p, lit) (memcpy ((p), (lit), sizeof (lit) - 1), \
                        (p) + sizeof (lit) - 1)

static char *
put_str (char *p, const char *s)
{
  size_t n = strlen (s);
  memcpy (p, s, n);
  return p + n;
}

/* A JSON string: at most 6 bytes out per byte in, plus the quotes.
 * Names are bytes, not always UTF-8: anything but printable ASCII is
 * escaped as \u00XX.
 */
static char *
put_json_string (char *p, const char *s)
{
  static const char hex[] = "0123456789abcdef";
  const unsigned char *q = (const unsigned char *) s;
  *p++ = '"';
  for (; *q; q++) {
    if (*q >= 0x20 && *q < 0x7f && *q != '"' && *q != '\\')
      *p++ = *q;
    else if (*q == '"' || *q == '\\') {
      *p++ = '\\';
      *p++ = *q;
    }
    else {
      p = PUTLIT (p, "\\u00");
      *p++ = hex[*q >> 4];
      *p++ = hex[*q & 15];
    }
  }
  *p++ = '"';
  return p;
}

/* "2026-11-21T05:39:12", remade only when the second changes. */
static const char *
second_string (int64_t t)
{
  static __thread int64_t cached = INT64_MIN;
  static __thread char buf[32];
  if (t != cached) {
    struct tm tm;
    time_t tt = (time_t) t;
    if (gmtime_r (&tt, &tm) == NULL ||
        strftime (buf, sizeof buf, "%Y-%m-%dT%H:%M:%S", &tm) == 0)
      strcpy (buf, "1970-01-01T00:00:00");
    cached = t;
  }
  return buf;
}

/* "time":"...Z" (no comma in front): at most 40 bytes. */
static char *
put_time_field (char *p, int64_t sec, uint32_t usec)
{
  p = PUTLIT (p, "\"time\":\"");
  p = put_str (p, second_string (sec));
  *p++ = '.';
  for (int i = 5; i >= 0; i--, usec /= 10)
    p[i] = '0' + usec % 10;
  p += 6;
  return PUTLIT (p, "Z\"");
}

/* ,"result":N[,"error":"ENAME"][,"by":"NAME"[,"refused":true]]}\n:
 * at most 64 bytes plus by_room (BY).
 */
static char *
put_result (char *p, int result, unsigned by, bool refused)
{
  p = PUTLIT (p, ",\"result\":");
  p = put_u64 (p, result < 0 ? 0 : (uint64_t) result);
  if (result) {
    p = PUTLIT (p, ",\"error\":\"");
    p = put_str (p, errno_name (result));
    *p++ = '"';
  }
  if (by) {
    p = PUTLIT (p, ",\"by\":");
    p = put_json_string (p, handlers_by_name (by));
    if (refused)
      p = PUTLIT (p, ",\"refused\":true");
  }
  return PUTLIT (p, "}\n");
}

static size_t
by_room (unsigned by)
{
  return by ? 32 + 6 * strlen (handlers_by_name (by)) : 0;
}

static const char *const directions[] = { "inplace", "commit", "journal" };
static const char *const operations[] = { "write", "zero", "trim" };

/* The most a record can take formatted. */
size_t
log_format_room (const struct log_rec *r)
{
  switch (r->kind) {
  case REC_WRITE: return 512 + 6 * (size_t) r->names_len + 4 * r->nnames +
      by_room (r->by);
  case REC_TEXT: return 32 + strlen (r->heap);
  default: return 128;
  }
}

char *
log_format (char *p, uint64_t seq, const struct log_rec *r)
{
  p = PUTLIT (p, "{\"seq\":");
  p = put_u64 (p, seq);
  *p++ = ',';
  if (r->kind == REC_TEXT)
    return put_str (p, r->heap);
  if (r->kind == REC_LOST) {
    p = PUTLIT (p, "\"error\":\"ENOMEM\",\"lost_events\":");
    p = put_u64 (p, r->position);
    return PUTLIT (p, "}\n");
  }

  p = put_time_field (p, r->sec, r->usec);
  p = PUTLIT (p, ",\"event\":\"write\"");
  if (r->phase == FSEVENT_BEFORE)
    p = PUTLIT (p, ",\"phase\":\"before\"");
  else
    p = PUTLIT (p, ",\"phase\":\"after\"");
  if (r->nnames > 0) {
    const char *s = r->heap ? r->heap : r->names;
    p = PUTLIT (p, ",\"file\":");
    p = put_json_string (p, s);
    if (r->nnames > 1) {
      p = PUTLIT (p, ",\"paths\":[");
      for (uint32_t i = 1; i < r->nnames; i++) {
        s += strlen (s) + 1;
        if (i > 1)
          *p++ = ',';
        p = put_json_string (p, s);
      }
      *p++ = ']';
    }
  }
  p = PUTLIT (p, ",\"ino\":");
  p = put_u64 (p, r->ino);
  p = PUTLIT (p, ",\"position\":");
  p = put_u64 (p, r->position);
  p = PUTLIT (p, ",\"length\":");
  p = put_u64 (p, r->length);
  p = PUTLIT (p, ",\"direction\":\"");
  p = put_str (p, r->direction < 3 ? directions[r->direction] : "?");
  p = PUTLIT (p, "\",\"op\":\"");
  p = put_str (p, r->op < 3 ? operations[r->op] : "?");
  p = PUTLIT (p, "\",\"partition\":");
  p = put_u64 (p, r->partition);
  p = PUTLIT (p, ",\"connection\":");
  p = put_u64 (p, r->connection);
  if (r->phase == FSEVENT_AFTER) {
    p = PUTLIT (p, ",\"bytes_written\":");
    p = put_u64 (p, r->bytes_written);
  }
  if (r->sequence) {
    p = PUTLIT (p, ",\"sequence\":");
    p = put_u64 (p, r->sequence);
  }
  if (r->would_deny) {
    p = PUTLIT (p, ",\"would_deny\":\"");
    p = put_str (p, errno_name (r->would_deny));
    *p++ = '"';
  }
  return put_result (p, r->result, r->by, r->refused);
}

/* --- The rare events, formatted on the request path. --- */

struct text {
  char *buf;
  size_t len, cap;
  bool oom;
  char small[1024];
  /* For watchers (watch.c): what the line is about. */
  uint8_t event, phase;
  unsigned partition;
  const char *file, *new_file;
  const char *const *files;
  uint64_t position, length;    /* unattributed: where */
  int would_deny;
};

static void
text_init (struct text *t)
{
  t->buf = t->small;
  t->len = 0;
  t->cap = sizeof t->small;
  t->oom = false;
  t->event = LEV_LOST;
  t->phase = LOG_NO_PHASE;
  t->partition = 0;
  t->file = t->new_file = NULL;
  t->files = NULL;
  t->position = t->length = 0;
  t->would_deny = 0;
}

/* Room for N more bytes (and a NUL); false once out of memory. */
static bool
text_room (struct text *t, size_t n)
{
  if (t->oom)
    return false;
  if (t->cap - t->len > n)
    return true;
  size_t ncap = (t->cap + n + 1) * 2;
  char *nb = t->buf == t->small ? malloc (ncap) : realloc (t->buf, ncap);
  if (nb == NULL) {
    t->oom = true;
    return false;
  }
  if (t->buf == t->small)
    memcpy (nb, t->small, t->len);
  t->buf = nb;
  t->cap = ncap;
  return true;
}

static void
text_put (struct text *t, const char *s, size_t n)
{
  if (text_room (t, n)) {
    memcpy (t->buf + t->len, s, n);
    t->len += n;
  }
}
#define PUT(t, lit) text_put ((t), (lit), sizeof (lit) - 1)

static void
text_string (struct text *t, const char *s)
{
  if (text_room (t, 6 * strlen (s) + 2))
    t->len = put_json_string (t->buf + t->len, s) - t->buf;
}

static void
text_u64 (struct text *t, const char *key, uint64_t v)
{
  PUT (t, ",\"");
  text_put (t, key, strlen (key));
  PUT (t, "\":");
  if (text_room (t, 24))
    t->len = put_u64 (t->buf + t->len, v) - t->buf;
}

/* "time":...,"event":NAME[,"phase":...][,"file":...,"paths":[...]] */
static void
text_head (struct text *t, unsigned lev, int phase,
           const char *file, const char *const *files)
{
  const char *name = log_event_type_name (lev);
  t->event = lev;
  t->phase = phase < 0 ? LOG_NO_PHASE : (uint8_t) phase;
  t->file = file;
  t->files = files;
  struct timespec ts;
  clock_gettime (CLOCK_REALTIME, &ts);
  if (text_room (t, 64))
    t->len = put_time_field (t->buf + t->len, ts.tv_sec,
                             ts.tv_nsec / 1000) - t->buf;
  PUT (t, ",\"event\":\"");
  text_put (t, name, strlen (name));
  PUT (t, "\"");
  if (phase == FSEVENT_BEFORE)
    PUT (t, ",\"phase\":\"before\"");
  else if (phase == FSEVENT_AFTER)
    PUT (t, ",\"phase\":\"after\"");
  if (file == NULL)
    return;
  PUT (t, ",\"file\":");
  text_string (t, file);
  if (files && files[0] && files[1]) {
    PUT (t, ",\"paths\":[");
    for (size_t i = 0; files[i]; i++) {
      if (i)
        PUT (t, ",");
      text_string (t, files[i]);
    }
    PUT (t, "]");
  }
}

/* Hands the finished line to the batch; after its NUL come the names a
 * watcher's globs match: the file (or ""), the new file (or ""), then
 * every path when there are several.
 */
static void
text_take (struct log_batch *b, struct text *t, int result, uint8_t by,
           uint8_t refused)
{
  const char *fixed[2] = { t->file ? t->file : "",
                           t->new_file ? t->new_file : "" };
  size_t nfiles = 0, names_len = strlen (fixed[0]) + strlen (fixed[1]) + 2;
  if (t->files && t->files[0] && t->files[1])
    for (; t->files[nfiles]; nfiles++)
      names_len += strlen (t->files[nfiles]) + 1;
  char *line = t->oom ? NULL : malloc (t->len + 1 + names_len);
  if (line) {
    memcpy (line, t->buf, t->len);
    line[t->len] = '\0';
    char *p = line + t->len + 1;
    for (size_t i = 0; i < 2 + nfiles; i++) {
      const char *s = i < 2 ? fixed[i] : t->files[i - 2];
      size_t n = strlen (s) + 1;
      memcpy (p, s, n);
      p += n;
    }
  }
  struct log_rec *r = log_add_text (b, line);
  if (r) {
    r->event = t->event;
    r->phase = t->phase;
    r->partition = t->partition;
    r->result = result;
    r->by = by;
    r->refused = refused;
    r->nnames = 2 + nfiles;
    r->names_len = names_len;
    r->position = t->position;
    r->length = t->length;
    r->would_deny = t->would_deny > 0 && t->would_deny < 256
      ? (uint8_t) t->would_deny : 0;
  }
  if (t->buf != t->small)
    free (t->buf);
}

/* Ends the line of a decision with its result. */
static void
text_done (struct log_batch *b, struct text *t, int result, uint8_t by,
           uint8_t refused)
{
  if (text_room (t, 64 + by_room (by)))
    t->len = put_result (t->buf + t->len, result, by, refused) - t->buf;
  text_take (b, t, result, by, refused);
}

static const char *const change_names[] = {
  "create", "delete", "link", "unlink", "rename", "set_size",
  "set_attributes",
};

const char *
log_event_type_name (unsigned lev)
{
  static const char *const others[] = { "lock", "unlock", "unattributed",
                                        "lost", "undecided" };
  if (lev == LEV_WRITE)
    return "write";
  if (lev >= LEV_CHANGE && lev < LEV_LOCK)
    return change_names[lev - LEV_CHANGE];
  if (lev < LEV_COUNT)
    return others[lev - LEV_LOCK];
  return NULL;
}

const char *
log_attr_name (unsigned bit)
{
  static const char *const names[] = {
    "mode", "uid", "gid", "flags", "atime", "mtime", "ctime", "crtime",
    "links", "blocks", "xattr",
  };
  return bit < sizeof names / sizeof names[0] ? names[bit] : NULL;
}

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
text_str (struct text *t, const char *key, const char *v)
{
  PUT (t, ",\"");
  text_put (t, key, strlen (key));
  PUT (t, "\":\"");
  text_put (t, v, strlen (v));
  PUT (t, "\"");
}

static void
text_bool (struct text *t, const char *key, bool v)
{
  PUT (t, ",\"");
  text_put (t, key, strlen (key));
  if (v)
    PUT (t, "\":true");
  else
    PUT (t, "\":false");
}

static void
text_mode (struct text *t, uint32_t mode)
{
  char m[8];
  snprintf (m, sizeof m, "%04o", mode & 07777);
  text_str (t, "mode", m);
}

static void
text_time (struct text *t, const char *key, const struct fsevent_time *ft)
{
  char buf[64];
  struct tm tm;
  time_t sec = (time_t) ft->sec;
  if (gmtime_r (&sec, &tm) == NULL)
    return;
  size_t n = strftime (buf, sizeof buf, "%Y-%m-%dT%H:%M:%S", &tm);
  snprintf (buf + n, sizeof buf - n, ".%09" PRIu32 "Z",
            ft->nsec % 1000000000);
  text_str (t, key, buf);
}

void
log_change (struct log_batch *b, const struct fsevent_change *ev)
{
  if (!log_wanted ())
    return;
  int result = ev->phase == FSEVENT_BEFORE ? ev->result_code : ev->status;
  uint8_t by;
  uint8_t refused;
  if (!log_line_for (b, ev, ev->phase, result, &by, &refused))
    return;
  const struct fsevent_attributes *a = &ev->attributes;
  const struct fsevent_attributes *o = &ev->old_attributes;
  struct text t;

  text_init (&t);
  text_head (&t, (unsigned) ev->kind < 7 ? LEV_CHANGE + ev->kind : LEV_LOST,
             (int) ev->phase, ev->file_name, ev->file_names);
  t.new_file = ev->new_file_name;
  t.partition = ev->partition;
  if (ev->new_file_name) {
    PUT (&t, ",\"new_file\":");
    text_string (&t, ev->new_file_name);
  }
  text_u64 (&t, "ino", ev->ino);
  switch (ev->kind) {
  case FSEVENT_CREATE:
    text_str (&t, "type", log_file_type (a->mode));
    text_mode (&t, a->mode);
    text_u64 (&t, "uid", a->uid);
    text_u64 (&t, "gid", a->gid);
    text_u64 (&t, "size", a->size);
    break;
  case FSEVENT_DELETE:
    text_str (&t, "type", log_file_type (o->mode));
    break;
  case FSEVENT_SET_SIZE:
    text_u64 (&t, "old_size", o->size);
    text_u64 (&t, "size", a->size);
    break;
  case FSEVENT_SET_ATTRIBUTES: {
    PUT (&t, ",\"changed\":[");
    bool first = true;
    for (unsigned i = 0; log_attr_name (i); i++)
      if (ev->changed & (1u << i)) {
        const char *name = log_attr_name (i);
        if (!first)
          PUT (&t, ",");
        first = false;
        PUT (&t, "\"");
        text_put (&t, name, strlen (name));
        PUT (&t, "\"");
      }
    PUT (&t, "]");
    text_bool (&t, "timestamps_only", ev->timestamps_only);
    if (ev->changed & FSEVENT_ATTR_MODE) text_mode (&t, a->mode);
    if (ev->changed & FSEVENT_ATTR_UID) text_u64 (&t, "uid", a->uid);
    if (ev->changed & FSEVENT_ATTR_GID) text_u64 (&t, "gid", a->gid);
    if (ev->changed & FSEVENT_ATTR_FLAGS) text_u64 (&t, "flags", a->flags);
    if (ev->changed & FSEVENT_ATTR_ATIME) text_time (&t, "atime", &a->atime);
    if (ev->changed & FSEVENT_ATTR_MTIME) text_time (&t, "mtime", &a->mtime);
    if (ev->changed & FSEVENT_ATTR_CTIME) text_time (&t, "ctime", &a->ctime);
    if (ev->changed & FSEVENT_ATTR_CRTIME)
      text_time (&t, "crtime", &a->crtime);
    if (ev->changed & FSEVENT_ATTR_LINKS) text_u64 (&t, "links", a->links);
    if (ev->changed & FSEVENT_ATTR_BLOCKS) text_bool (&t, "blocks", true);
    if (ev->changed & FSEVENT_ATTR_XATTR) text_bool (&t, "xattr", true);
    break;
  }
  default:
    break;
  }
  if (ev->replaced_ino) {
    text_u64 (&t, "replaced_ino", ev->replaced_ino);
    if (ev->replaced_file_name) {
      PUT (&t, ",\"replaced\":");
      text_string (&t, ev->replaced_file_name);
    }
  }
  text_u64 (&t, "partition", ev->partition);
  if (ev->sequence)
    text_u64 (&t, "sequence", ev->sequence);
  if (ev->would_deny) {
    text_str (&t, "would_deny", errno_name (ev->would_deny));
    t.would_deny = ev->would_deny;
  }
  text_done (b, &t, result, by, refused);
}

void
log_lock (struct log_batch *b, const struct fsevent_lock *ev, bool unlock)
{
  if (!log_wanted ())
    return;
  int result = ev->phase == FSEVENT_BEFORE ? ev->result_code : ev->status;
  uint8_t by;
  uint8_t refused;
  if (!log_line_for (b, ev, ev->phase, result, &by, &refused))
    return;
  struct text t;

  text_init (&t);
  text_head (&t, unlock ? LEV_UNLOCK : LEV_LOCK, (int) ev->phase,
             ev->file_name, ev->file_names);
  t.partition = ev->partition;
  text_u64 (&t, "ino", ev->ino);
  text_u64 (&t, "offset", ev->byte_offset);
  if (ev->length < 0)
    PUT (&t, ",\"length\":-1");
  else
    text_u64 (&t, "length", (uint64_t) ev->length);
  text_bool (&t, "exclusive", ev->exclusive_lock);
  if (!unlock)
    text_bool (&t, "fail_immediately", ev->fail_immediately);
  if (ev->lock_id)
    text_u64 (&t, "lock_id", ev->lock_id);
  text_u64 (&t, "partition", ev->partition);
  text_u64 (&t, "connection",
            ev->handle_info ? ev->handle_info->connection_id : 0);
  text_done (b, &t, result, by, refused);
}

void
log_unattributed (struct log_batch *b, unsigned partition, uint64_t offset,
                  uint64_t length, const char *reason)
{
  if (!log_wanted ())
    return;
  struct text t;

  text_init (&t);
  text_head (&t, LEV_UNATTRIBUTED, -1, NULL, NULL);
  t.partition = partition;
  t.position = offset;
  t.length = length;
  text_u64 (&t, "partition", partition);
  text_u64 (&t, "device_offset", offset);
  text_u64 (&t, "length", length);
  text_str (&t, "reason", reason);
  /* No result: this is a record of what happened, not a decision. */
  PUT (&t, "}\n");
  text_take (b, &t, 0, 0, 0);
}

void
log_undecided (struct log_batch *b, unsigned partition, uint64_t sequence,
               const char *reason, int result)
{
  if (!log_wanted ())
    return;
  struct text t;

  text_init (&t);
  text_head (&t, LEV_UNDECIDED, -1, NULL, NULL);
  text_u64 (&t, "partition", partition);
  if (sequence)
    text_u64 (&t, "sequence", sequence);
  text_str (&t, "reason", reason);
  text_done (b, &t, result, 0, 0);
}
