/* plugin/python.c: python=FILE.py, handlers written in Python.
 *
 * One CPython interpreter is embedded in the plugin; each python=
 * module is imported once (at the parameter, so that python.KEY=VALUE
 * can reach its config()) and becomes one handler in the chain, in
 * command-line order with handler=, protect= and script=.  Its
 * callbacks get one object, fsevent.Params, whose attributes are read
 * from the C event when asked for (a handler that looks at nothing
 * pays for nothing); params.buffer is a read-only memoryview over the
 * C buffer, released when the callback returns.
 *
 * Threads: the interpreter's GIL is released once initialised
 * (PyEval_SaveThread) and taken per callback (PyGILState_Ensure), so
 * Python runs one callback at a time while the rest of the request
 * path runs in parallel.  python-timeout= (default 10 s) is enforced by
 * a watchdog thread that raises fsevent.HandlerTimeout (a
 * BaseException, so "except Exception" does not swallow it) in the
 * overdue callback with PyThreadState_SetAsyncExc, again every tick
 * until it returns; the call is then a handler failure
 * (on-handler-error= decides: deny by default, EIO).  Code blocked in C
 * (time.sleep, a read) sees the exception only when it is back in
 * Python.
 *
 * Contexts: params.file_context and params.handle_context hold any
 * Python object, stored as a strong reference in the engine's context
 * slots (handlers.c) and released (Py_DECREF, under the GIL) when the
 * inode is freed, the connection closes or the plugin unloads.
 */
#include <Python.h>
#include <structseq.h>

#include <config.h>

#include <dlfcn.h>
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define NBDKIT_API_VERSION 2
#include <nbdkit-plugin.h>

#include "fsevent.h"
#include "handlers.h"
#include "log.h"
#include "python.h"

#define MAX_MODULES 16

/* The callbacks a module may define, by the engine's event kinds.
 * Change kinds map to CB_BEFORE_CREATE + 2 * kind (+ 1 after).
 */
enum cb {
  CB_BEFORE_WRITE, CB_AFTER_WRITE,
  CB_BEFORE_CREATE, CB_AFTER_CREATE, CB_BEFORE_DELETE, CB_AFTER_DELETE,
  CB_BEFORE_LINK, CB_AFTER_LINK, CB_BEFORE_UNLINK, CB_AFTER_UNLINK,
  CB_BEFORE_RENAME, CB_AFTER_RENAME, CB_BEFORE_SET_SIZE, CB_AFTER_SET_SIZE,
  CB_BEFORE_SET_ATTRIBUTES, CB_AFTER_SET_ATTRIBUTES,
  CB_BEFORE_LOCK, CB_AFTER_LOCK, CB_BEFORE_UNLOCK, CB_AFTER_UNLOCK,
  NCB
};

static const struct {
  const char *name;
  enum cb cb;
} callbacks[] = {
  { "before_write_file", CB_BEFORE_WRITE },
  { "on_write_file", CB_BEFORE_WRITE },     /* CBFS Connect's name */
  { "after_write_file", CB_AFTER_WRITE },
  { "before_create_file", CB_BEFORE_CREATE },
  { "after_create_file", CB_AFTER_CREATE },
  { "before_delete_file", CB_BEFORE_DELETE },
  { "after_delete_file", CB_AFTER_DELETE },
  { "before_link", CB_BEFORE_LINK },
  { "after_link", CB_AFTER_LINK },
  { "before_unlink", CB_BEFORE_UNLINK },
  { "after_unlink", CB_AFTER_UNLINK },
  { "before_rename_or_move_file", CB_BEFORE_RENAME },
  { "after_rename_or_move_file", CB_AFTER_RENAME },
  { "before_set_file_size", CB_BEFORE_SET_SIZE },
  { "after_set_file_size", CB_AFTER_SET_SIZE },
  { "before_set_file_attributes", CB_BEFORE_SET_ATTRIBUTES },
  { "after_set_file_attributes", CB_AFTER_SET_ATTRIBUTES },
  { "on_lock_file", CB_BEFORE_LOCK },
  { "after_lock_file", CB_AFTER_LOCK },
  { "on_unlock_file", CB_BEFORE_UNLOCK },
  { "after_unlock_file", CB_AFTER_UNLOCK },
};
#define NCALLBACKS (sizeof callbacks / sizeof callbacks[0])

struct pymod {
  char *path;                   /* absolute */
  char name[64];                /* the handler's name: python:STEM */
  PyObject *module;
  PyObject *cb[NCB];            /* callables, or NULL */
  const char *cb_name[NCB];     /* the name the module used */
  PyObject *config, *config_complete, *close;
  struct fsevent_handler h;
};

static struct pymod mods[MAX_MODULES];

static const char *
cb_path (const struct pymod *m)
{
  return m->path;
}

static const char *
cb_label (const struct pymod *m, int cb)
{
  return m->cb_name[cb];
}
static size_t nmods, nlive;
static PyThreadState *main_ts;  /* the interpreter's, while released */
static pid_t init_pid;
static double timeout = 10;     /* python-timeout=, seconds; 0: none */
static PyObject *format_exception; /* traceback.format_exception */
static PyObject *HandlerTimeout;
static PyTypeObject *HandleInfoType, *AttributesType;

/* --- Errors. --- */

/* Report the Python exception that is set (with its traceback) through
 * nbdkit_error, one line at a time, and clear it.  GIL held.
 */
static void
report_exception (const char *what)
{
  PyObject *type, *value, *tb;

  PyErr_Fetch (&type, &value, &tb);
  if (type == NULL) {
    nbdkit_error ("%s: failed without an exception", what);
    return;
  }
  PyErr_NormalizeException (&type, &value, &tb);
  PyObject *lines = format_exception
    ? PyObject_CallFunctionObjArgs (format_exception, type,
                                    value ? value : Py_None,
                                    tb ? tb : Py_None, NULL)
    : NULL;
  PyObject *text = lines ? PyUnicode_Join (NULL, lines) : NULL;
  const char *s = text ? PyUnicode_AsUTF8 (text) : NULL;
  if (s == NULL) {
    PyErr_Clear ();
    PyObject *str = value ? PyObject_Str (value) : NULL;
    const char *v = str ? PyUnicode_AsUTF8 (str) : NULL;
    if (v == NULL)
      PyErr_Clear ();
    nbdkit_error ("%s: %s: %s", what, ((PyTypeObject *) type)->tp_name,
                  v ? v : "?");
    Py_XDECREF (str);
  }
  else {
    nbdkit_error ("%s: Python exception:", what);
    /* One nbdkit_error per line: nbdkit prefixes each. */
    while (*s) {
      size_t n = strcspn (s, "\n");
      nbdkit_error ("%.*s", (int) n, s);
      s += n + (s[n] == '\n');
    }
  }
  Py_XDECREF (text);
  Py_XDECREF (lines);
  Py_XDECREF (type);
  Py_XDECREF (value);
  Py_XDECREF (tb);
}

/* --- The watchdog (python-timeout=). --- */

/* One per thread that has run a callback; never freed before unload
 * (the watchdog may look at one whose thread has gone), reused.
 */
struct watch {
  struct watch *next;
  unsigned long tid;            /* PyThread_get_thread_ident of the owner */
  int64_t start;                /* ns, 0: not in a callback (atomic) */
  uint64_t gen;                 /* callbacks started (atomic) */
  bool fired;                   /* HandlerTimeout raised in this one (GIL) */
  bool free;                    /* its thread has gone (watch_lock) */
  const struct pymod *m;        /* the callback running (GIL) */
  enum cb cb;
  PyThreadState *ts;            /* its thread's, kept (see pin) */
};

static pthread_mutex_t watch_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t watch_cond;
static struct watch *watches;
static pthread_key_t watch_key;
static bool watch_key_made;
static pthread_t watchdog;
static bool watchdog_running, watchdog_stop;

static int64_t
now_ns (void)
{
  struct timespec ts;
  clock_gettime (CLOCK_MONOTONIC, &ts);
  return (int64_t) ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static bool finalized;

/* At the exit of a thread that ran callbacks: its thread state goes
 * (the last PyGILState reference, see pin), its watch is free for the
 * next thread.
 */
static void
watch_release (void *p)
{
  struct watch *w = p;
  if (finalized)
    return;
  if (w->ts) {
    /* Not PyGILState_Release: glibc has cleared Python's own thread
     * key already (it clears every key of an exiting thread).
     */
    PyEval_RestoreThread (w->ts);
    PyThreadState_Clear (w->ts);
    PyThreadState_DeleteCurrent ();
    w->ts = NULL;
  }
  pthread_mutex_lock (&watch_lock);
  w->free = true;
  pthread_mutex_unlock (&watch_lock);
}

/* This thread's watch (GIL held), or NULL without memory.  The first
 * time, its PyGILState thread state is pinned with one more reference:
 * PyGILState_Release would otherwise delete it at the end of every
 * callback, and a new one (and its frame stack, an mmap) would be made
 * for the next.  watch_release drops that reference.
 */
static struct watch *
watch_get (void)
{
  struct watch *w = pthread_getspecific (watch_key);
  if (w)
    return w;
  pthread_mutex_lock (&watch_lock);
  for (w = watches; w; w = w->next)
    if (w->free)
      break;
  if (w == NULL) {
    w = calloc (1, sizeof *w);
    if (w) {
      w->next = watches;
      watches = w;
    }
  }
  if (w) {
    w->free = false;
    w->tid = PyThread_get_thread_ident ();
  }
  pthread_mutex_unlock (&watch_lock);
  if (w) {
    PyGILState_Ensure ();         /* the pin: never released here */
    w->ts = PyGILState_GetThisThreadState ();
    pthread_setspecific (watch_key, w);
  }
  return w;
}

/* Overdue callbacks get HandlerTimeout, every tick until they return. */
static void *
watchdog_run (void *arg)
{
  int64_t limit = (int64_t) (timeout * 1e9);
  int64_t tick = limit / 4;
  if (tick > 100000000) tick = 100000000;
  if (tick < 5000000) tick = 5000000;

  pthread_mutex_lock (&watch_lock);
  while (!watchdog_stop) {
    struct timespec ts;
    clock_gettime (CLOCK_MONOTONIC, &ts);
    int64_t t = (int64_t) ts.tv_sec * 1000000000 + ts.tv_nsec + tick;
    ts.tv_sec = t / 1000000000;
    ts.tv_nsec = t % 1000000000;
    pthread_cond_timedwait (&watch_cond, &watch_lock, &ts);
    if (watchdog_stop)
      break;

    /* Candidates, seen without the GIL; checked again under it. */
    struct { struct watch *w; uint64_t gen; } late[64];
    size_t n = 0;
    int64_t now = now_ns ();
    for (struct watch *w = watches; w && n < 64; w = w->next) {
      int64_t start = __atomic_load_n (&w->start, __ATOMIC_ACQUIRE);
      if (start && now - start > limit)
        late[n++] = (typeof (late[0])) {
          w, __atomic_load_n (&w->gen, __ATOMIC_ACQUIRE) };
    }
    if (n == 0)
      continue;
    /* Never wait for the GIL holding watch_lock (watch_get takes it
     * with the GIL).  The watches themselves are never freed.
     */
    pthread_mutex_unlock (&watch_lock);
    PyGILState_STATE g = PyGILState_Ensure ();
    for (size_t i = 0; i < n; i++) {
      struct watch *w = late[i].w;
      /* Under the GIL the callback cannot end or begin. */
      if (w->start == 0 || w->gen != late[i].gen)
        continue;
      if (!w->fired)
        nbdkit_error ("python %s %s: running for more than python-timeout=%g s: "
                      "raising fsevent.HandlerTimeout in it", w->m->path,
                      w->m->cb_name[w->cb], timeout);
      w->fired = true;
      PyThreadState_SetAsyncExc (w->tid, HandlerTimeout);
    }
    PyGILState_Release (g);
    pthread_mutex_lock (&watch_lock);
  }
  pthread_mutex_unlock (&watch_lock);
  return NULL;
}

int
python_set_timeout (const char *seconds)
{
  char *end;
  errno = 0;
  double t = strtod (seconds, &end);
  if (errno || end == seconds || *end || !(t >= 0) || t > 86400) {
    nbdkit_error ("python-timeout=%s: a number of seconds from 0 (none) "
                  "to 86400", seconds);
    return -1;
  }
  timeout = t;
  return 0;
}

/* --- fsevent.Params and the buffer behind params.buffer. --- */

/* Exports the C buffer of one callback; refuses once it has returned. */
typedef struct {
  PyObject_HEAD
  const void *buf;
  Py_ssize_t len;
} BufferRef;

static int
bufref_getbuffer (PyObject *self, Py_buffer *view, int flags)
{
  BufferRef *b = (BufferRef *) self;
  if (b->buf == NULL) {
    PyErr_SetString (PyExc_ValueError,
                     "params.buffer used after its callback returned");
    view->obj = NULL;
    return -1;
  }
  return PyBuffer_FillInfo (view, self, (void *) b->buf, b->len, 1, flags);
}

static PyBufferProcs bufref_as_buffer = { bufref_getbuffer, NULL };

static PyTypeObject BufferRefType = {
  PyVarObject_HEAD_INIT (NULL, 0)
  .tp_name = "fsevent._BufferRef",
  .tp_basicsize = sizeof (BufferRef),
  .tp_flags = Py_TPFLAGS_DEFAULT,
  .tp_as_buffer = &bufref_as_buffer,
  .tp_new = NULL,
};

enum kind { K_WRITE, K_CHANGE, K_LOCK };

typedef struct {
  PyObject_HEAD
  enum kind kind;
  bool unlock;
  void *ev;                     /* NULL once the callback returned */
  PyObject *view;               /* the memoryview given out, or NULL */
  BufferRef *ref;
} Params;

static PyTypeObject ParamsType;

#define EV(p, type) ((struct type *) (p)->ev)
#define FIELD(p, f)                                             \
  ((p)->kind == K_WRITE ? EV (p, fsevent_write)->f :            \
   (p)->kind == K_CHANGE ? EV (p, fsevent_change)->f :          \
   EV (p, fsevent_lock)->f)

static bool
valid (Params *p)
{
  if (p->ev)
    return true;
  PyErr_SetString (PyExc_ValueError,
                   "params used after its callback returned");
  return false;
}

static PyObject *
str_or_none (const char *s)
{
  if (s == NULL)
    Py_RETURN_NONE;
  return PyUnicode_DecodeFSDefault (s);
}

static PyObject *
get_event (Params *p, void *c)
{
  static const char *const kinds[] = {
    "create", "delete", "link", "unlink", "rename", "set_size",
    "set_attributes" };
  if (!valid (p)) return NULL;
  switch (p->kind) {
  case K_WRITE: return PyUnicode_FromString ("write");
  case K_LOCK: return PyUnicode_FromString (p->unlock ? "unlock" : "lock");
  case K_CHANGE: {
    unsigned k = EV (p, fsevent_change)->kind;
    return PyUnicode_FromString (k < 7 ? kinds[k] : "unknown");
  }
  }
  Py_RETURN_NONE;
}

static PyObject *
get_phase (Params *p, void *c)
{
  if (!valid (p)) return NULL;
  return PyUnicode_FromString (FIELD (p, phase) == FSEVENT_BEFORE
                               ? "before" : "after");
}

static PyObject *
get_file_name (Params *p, void *c)
{
  if (!valid (p)) return NULL;
  const char *s = FIELD (p, file_name);
  return PyUnicode_DecodeFSDefault (s ? s : "");
}

static PyObject *
get_file_names (Params *p, void *c)
{
  if (!valid (p)) return NULL;
  const char *const *names = FIELD (p, file_names);
  if (names == NULL) {
    const char *s = FIELD (p, file_name);
    return Py_BuildValue ("(N)", PyUnicode_DecodeFSDefault (s ? s : ""));
  }
  Py_ssize_t n = 0;
  while (names[n])
    n++;
  PyObject *t = PyTuple_New (n);
  for (Py_ssize_t i = 0; t && i < n; i++) {
    PyObject *s = PyUnicode_DecodeFSDefault (names[i]);
    if (s == NULL) {
      Py_DECREF (t);
      return NULL;
    }
    PyTuple_SET_ITEM (t, i, s);
  }
  return t;
}

#define GET_ULL(name, expr)                                     \
  static PyObject *                                             \
  get_##name (Params *p, void *c)                               \
  {                                                             \
    if (!valid (p)) return NULL;                                \
    return PyLong_FromUnsignedLongLong (expr);                  \
  }

GET_ULL (ino, FIELD (p, ino))
GET_ULL (partition, FIELD (p, partition))

static PyObject *
get_sequence (Params *p, void *c)
{
  if (!valid (p)) return NULL;
  if (p->kind == K_LOCK) Py_RETURN_NONE;
  return PyLong_FromUnsignedLongLong (p->kind == K_WRITE
                                      ? EV (p, fsevent_write)->sequence
                                      : EV (p, fsevent_change)->sequence);
}

static PyObject *
get_status (Params *p, void *c)
{
  if (!valid (p)) return NULL;
  return PyLong_FromLong (FIELD (p, status));
}

static PyObject *
get_result_code (Params *p, void *c)
{
  if (!valid (p)) return NULL;
  return PyLong_FromLong (FIELD (p, result_code));
}

static int
set_result_code (Params *p, PyObject *v, void *c)
{
  if (!valid (p)) return -1;
  long e = v ? PyLong_AsLong (v) : 0;
  if (e == -1 && PyErr_Occurred ())
    return -1;
  if (e < 0 || e > 4095) {
    PyErr_SetString (PyExc_ValueError, "result_code: an errno, 0 to 4095");
    return -1;
  }
  switch (p->kind) {
  case K_WRITE: EV (p, fsevent_write)->result_code = e; break;
  case K_CHANGE: EV (p, fsevent_change)->result_code = e; break;
  case K_LOCK: EV (p, fsevent_lock)->result_code = e; break;
  }
  return 0;
}

/* Contexts: the slot holds a strong reference (or NULL for None). */
static PyObject *
get_slot (void **slot)
{
  PyObject *o = slot ? *slot : NULL;
  if (o == NULL)
    Py_RETURN_NONE;
  Py_INCREF (o);
  return o;
}

static int
set_slot (void **slot, PyObject *v, const char *what)
{
  if (slot == NULL) {
    PyErr_Format (PyExc_AttributeError,
                  "this event has no %s (lock events come from a control "
                  "connection, not an NBD one)", what);
    return -1;
  }
  PyObject *old = *slot;
  if (v == Py_None)
    v = NULL;
  Py_XINCREF (v);
  *slot = v;
  Py_XDECREF (old);
  return 0;
}

static PyObject *
get_file_context (Params *p, void *c)
{
  if (!valid (p)) return NULL;
  return get_slot (FIELD (p, file_context));
}

static int
set_file_context (Params *p, PyObject *v, void *c)
{
  if (!valid (p)) return -1;
  return set_slot (FIELD (p, file_context), v, "file_context");
}

static PyObject *
get_handle_context (Params *p, void *c)
{
  if (!valid (p)) return NULL;
  return get_slot (FIELD (p, handle_context));
}

static int
set_handle_context (Params *p, PyObject *v, void *c)
{
  if (!valid (p)) return -1;
  return set_slot (FIELD (p, handle_context), v, "handle_context");
}

static PyObject *
get_handle_info (Params *p, void *c)
{
  if (!valid (p)) return NULL;
  const struct fsevent_handle_info *hi = FIELD (p, handle_info);
  if (hi == NULL)
    Py_RETURN_NONE;
  PyObject *o = PyStructSequence_New (HandleInfoType);
  if (o == NULL)
    return NULL;
  PyStructSequence_SET_ITEM (o, 0, PyLong_FromUnsignedLongLong (hi->connection_id));
  PyStructSequence_SET_ITEM (o, 1, str_or_none (hi->export_name));
  PyStructSequence_SET_ITEM (o, 2, PyLong_FromLongLong (hi->pid));
  PyStructSequence_SET_ITEM (o, 3, PyLong_FromLongLong (hi->uid));
  PyStructSequence_SET_ITEM (o, 4, PyLong_FromLongLong (hi->gid));
  for (int i = 0; i < 5; i++)
    if (PyStructSequence_GET_ITEM (o, i) == NULL) {
      Py_DECREF (o);
      return NULL;
    }
  return o;
}

/* Write events. */
#define GET_W(name, expr)                                       \
  static PyObject *                                             \
  get_##name (Params *p, void *c)                               \
  {                                                             \
    if (!valid (p)) return NULL;                                \
    if (p->kind != K_WRITE) Py_RETURN_NONE;                     \
    struct fsevent_write *w = EV (p, fsevent_write);            \
    return expr;                                                \
  }

GET_W (position, PyLong_FromUnsignedLongLong (w->position))
GET_W (bytes_to_write, PyLong_FromUnsignedLongLong (w->bytes_to_write))
GET_W (bytes_written, PyLong_FromUnsignedLongLong (w->bytes_written))
GET_W (device_offset, PyLong_FromUnsignedLongLong (w->device_offset))
GET_W (direction, PyUnicode_FromString (w->direction == FSEVENT_INPLACE ? "inplace"
                                        : w->direction == FSEVENT_COMMIT ? "commit"
                                        : w->direction == FSEVENT_JOURNAL ? "journal"
                                        : "unknown"))
GET_W (operation, PyUnicode_FromString (w->operation == FSEVENT_OP_WRITE ? "write"
                                        : w->operation == FSEVENT_OP_ZERO ? "zero"
                                        : w->operation == FSEVENT_OP_TRIM ? "trim"
                                        : "unknown"))

static PyObject *
get_buffer (Params *p, void *c)
{
  if (!valid (p)) return NULL;
  if (p->kind != K_WRITE) Py_RETURN_NONE;
  struct fsevent_write *w = EV (p, fsevent_write);
  if (w->buffer == NULL || w->bytes_to_write > PY_SSIZE_T_MAX)
    Py_RETURN_NONE;
  if (p->view == NULL) {
    BufferRef *b = PyObject_New (BufferRef, &BufferRefType);
    if (b == NULL)
      return NULL;
    b->buf = w->buffer;
    b->len = (Py_ssize_t) w->bytes_to_write;
    p->view = PyMemoryView_FromObject ((PyObject *) b);
    if (p->view == NULL) {
      Py_DECREF (b);
      return NULL;
    }
    p->ref = b;
  }
  Py_INCREF (p->view);
  return p->view;
}

/* Change events. */
#define GET_C(name, expr)                                       \
  static PyObject *                                             \
  get_##name (Params *p, void *c)                               \
  {                                                             \
    if (!valid (p)) return NULL;                                \
    if (p->kind != K_CHANGE) Py_RETURN_NONE;                    \
    struct fsevent_change *ch = EV (p, fsevent_change);         \
    return expr;                                                \
  }

static PyObject *
attributes (const struct fsevent_attributes *a)
{
  PyObject *o = PyStructSequence_New (AttributesType);
  if (o == NULL)
    return NULL;
  const struct fsevent_time *t[] = { &a->atime, &a->mtime, &a->ctime, &a->crtime };
  PyStructSequence_SET_ITEM (o, 0, PyLong_FromUnsignedLong (a->mode));
  PyStructSequence_SET_ITEM (o, 1, PyLong_FromUnsignedLong (a->uid));
  PyStructSequence_SET_ITEM (o, 2, PyLong_FromUnsignedLong (a->gid));
  PyStructSequence_SET_ITEM (o, 3, PyLong_FromUnsignedLong (a->flags));
  PyStructSequence_SET_ITEM (o, 4, PyLong_FromUnsignedLong (a->links));
  PyStructSequence_SET_ITEM (o, 5, PyLong_FromUnsignedLongLong (a->size));
  for (int i = 0; i < 4; i++)
    PyStructSequence_SET_ITEM (o, 6 + i,
                               PyFloat_FromDouble (t[i]->sec + t[i]->nsec / 1e9));
  for (int i = 0; i < 10; i++)
    if (PyStructSequence_GET_ITEM (o, i) == NULL) {
      Py_DECREF (o);
      return NULL;
    }
  return o;
}

static PyObject *
changed_names (unsigned changed)
{
  PyObject *l = PyList_New (0);
  for (unsigned i = 0; l && log_attr_name (i); i++)
    if (changed & (1u << i)) {
      PyObject *s = PyUnicode_FromString (log_attr_name (i));
      if (s == NULL || PyList_Append (l, s) == -1) {
        Py_XDECREF (s);
        Py_DECREF (l);
        return NULL;
      }
      Py_DECREF (s);
    }
  if (l == NULL)
    return NULL;
  PyObject *t = PyList_AsTuple (l);
  Py_DECREF (l);
  return t;
}

GET_C (new_file_name, str_or_none (ch->new_file_name))
GET_C (replaced_file_name, str_or_none (ch->replaced_file_name))
GET_C (replaced_ino, PyLong_FromUnsignedLong (ch->replaced_ino))
GET_C (old_attributes, attributes (&ch->old_attributes))
GET_C (new_attributes, attributes (&ch->attributes))
GET_C (changed, changed_names (ch->changed))
GET_C (timestamps_only, PyBool_FromLong (ch->timestamps_only))

/* Lock events. */
#define GET_L(name, expr)                                       \
  static PyObject *                                             \
  get_##name (Params *p, void *c)                               \
  {                                                             \
    if (!valid (p)) return NULL;                                \
    if (p->kind != K_LOCK) Py_RETURN_NONE;                      \
    struct fsevent_lock *l = EV (p, fsevent_lock);              \
    return expr;                                                \
  }

GET_L (byte_offset, PyLong_FromUnsignedLongLong (l->byte_offset))
GET_L (length, PyLong_FromLongLong (l->length))
GET_L (exclusive_lock, PyBool_FromLong (l->exclusive_lock))
GET_L (fail_immediately, PyBool_FromLong (l->fail_immediately))
GET_L (lock_id, PyLong_FromUnsignedLongLong (l->lock_id))

#define RO(name, doc) { #name, (getter) get_##name, NULL, doc, NULL }
static PyGetSetDef params_getset[] = {
  RO (event, "write, create, delete, link, unlink, rename, set_size, "
      "set_attributes, lock or unlock"),
  RO (phase, "before or after"),
  RO (file_name, "the path (first path of the inode; \"\" if none)"),
  RO (file_names, "every path of the inode (hard links), a tuple"),
  RO (ino, "the inode number"),
  RO (partition, "the partition (0: a bare filesystem)"),
  RO (sequence, "the jbd2 transaction (0 for inplace writes and on ext2)"),
  RO (status, "after: 0, or the errno the change failed with"),
  { "result_code", (getter) get_result_code, (setter) set_result_code,
    "before: set to an errno to veto", NULL },
  { "file_context", (getter) get_file_context, (setter) set_file_context,
    "any object, per inode", NULL },
  { "handle_context", (getter) get_handle_context, (setter) set_handle_context,
    "any object, per (connection, inode)", NULL },
  RO (handle_info, "the NBD connection: connection_id, export_name, pid, uid, gid"),
  RO (position, "write: byte offset in the file"),
  RO (buffer, "write: the new bytes, a read-only memoryview valid during the call"),
  RO (bytes_to_write, "write: the length"),
  RO (bytes_written, "after write: bytes_to_write, or 0 if it failed"),
  RO (device_offset, "write: where the bytes go on the device"),
  RO (direction, "write: inplace, commit or journal"),
  RO (operation, "write: write, zero or trim"),
  RO (new_file_name, "rename, link: the new path"),
  RO (replaced_file_name, "rename, link: the path replaced, or None"),
  RO (replaced_ino, "rename, link: the inode replaced, or 0"),
  RO (old_attributes, "change: the attributes before"),
  RO (new_attributes, "change: the attributes after"),
  { "attributes", (getter) get_new_attributes, NULL,
    "change: the attributes after (new_attributes)", NULL },
  RO (changed, "set_attributes: the names of what changed"),
  RO (timestamps_only, "set_attributes: only times changed"),
  RO (byte_offset, "lock: first byte"),
  RO (length, "lock: bytes, -1 to the end of the file"),
  RO (exclusive_lock, "lock: exclusive (else shared)"),
  RO (fail_immediately, "lock: must not wait"),
  RO (lock_id, "lock: its id (after a lock, and unlock)"),
  { NULL }
};

static void
params_dealloc (Params *p)
{
  Py_XDECREF (p->view);
  Py_XDECREF (p->ref);
  PyObject_Free (p);
}

static PyObject *
params_repr (Params *p)
{
  if (p->ev == NULL)
    return PyUnicode_FromString ("<fsevent.Params (returned)>");
  const char *f = FIELD (p, file_name);
  return PyUnicode_FromFormat ("<fsevent.Params %s ino %u>", f ? f : "",
                               (unsigned) FIELD (p, ino));
}

static PyTypeObject ParamsType = {
  PyVarObject_HEAD_INIT (NULL, 0)
  .tp_name = "fsevent.Params",
  .tp_basicsize = sizeof (Params),
  .tp_flags = Py_TPFLAGS_DEFAULT,
  .tp_doc = "One event, for the duration of one callback.",
  .tp_dealloc = (destructor) params_dealloc,
  .tp_repr = (reprfunc) params_repr,
  .tp_getset = params_getset,
};

/* After the callback: the memoryview is released (using it raises
 * ValueError), and a view derived from it can no longer be had.
 */
struct pymod;
static const char *cb_path (const struct pymod *m);
static const char *cb_label (const struct pymod *m, int cb);

static void
params_end (Params *p, const struct pymod *m, int cb)
{
  p->ev = NULL;
  if (p->view) {
    PyObject *r = PyObject_CallMethod (p->view, "release", NULL);
    if (r == NULL) {
      PyErr_Clear ();
      nbdkit_error ("python %s %s: a view of params.buffer was kept past the "
                    "callback (copy it with bytes() instead); it points at "
                    "memory that is reused", cb_path (m), cb_label (m, cb));
    }
    Py_XDECREF (r);
    Py_CLEAR (p->view);
  }
  if (p->ref) {
    /* Anything still holding it (a slice of the view) is flagged. */
    if (Py_REFCNT (p->ref) > 1)
      nbdkit_error ("python %s %s: a slice or view of params.buffer was kept "
                    "past the callback (copy it with bytes() instead); it "
                    "points at memory that is reused", cb_path (m), cb_label (m, cb));
    p->ref->buf = NULL;
    Py_CLEAR (p->ref);
  }
}

/* --- The module "fsevent". --- */

static PyStructSequence_Field handle_info_fields[] = {
  { "connection_id", "unique for the life of the plugin" },
  { "export_name", "as the client asked for it" },
  { "pid", "the client process, -1 if unknown" },
  { "uid", NULL }, { "gid", NULL }, { NULL }
};
static PyStructSequence_Desc handle_info_desc = {
  "fsevent.HandleInfo", "The NBD connection of an event.",
  handle_info_fields, 5,
};
static PyStructSequence_Field attributes_fields[] = {
  { "mode", NULL }, { "uid", NULL }, { "gid", NULL }, { "flags", NULL },
  { "links", NULL }, { "size", NULL }, { "atime", NULL }, { "mtime", NULL },
  { "ctime", NULL }, { "crtime", NULL }, { NULL }
};
static PyStructSequence_Desc attributes_desc = {
  "fsevent.Attributes", "An inode's attributes (times in seconds).",
  attributes_fields, 10,
};

static struct PyModuleDef fsevent_moddef = {
  PyModuleDef_HEAD_INIT, "fsevent",
  "The nbdkit-fsevent plugin's side of python= handlers.", -1, NULL,
  NULL, NULL, NULL, NULL,
};

static PyObject *
fsevent_modinit (void)
{
  PyObject *m = PyModule_Create (&fsevent_moddef);
  if (m == NULL)
    return NULL;
  if (PyType_Ready (&ParamsType) < 0 || PyType_Ready (&BufferRefType) < 0)
    goto err;
  HandleInfoType = PyStructSequence_NewType (&handle_info_desc);
  AttributesType = PyStructSequence_NewType (&attributes_desc);
  HandlerTimeout = PyErr_NewExceptionWithDoc
    ("fsevent.HandlerTimeout",
     "Raised in a callback that runs past python-timeout=.",
     PyExc_BaseException, NULL);
  if (HandleInfoType == NULL || AttributesType == NULL || HandlerTimeout == NULL)
    goto err;
  Py_INCREF (&ParamsType);
  Py_INCREF (HandlerTimeout);
  Py_INCREF (HandleInfoType);
  Py_INCREF (AttributesType);
  if (PyModule_AddObject (m, "Params", (PyObject *) &ParamsType) < 0 ||
      PyModule_AddObject (m, "HandlerTimeout", HandlerTimeout) < 0 ||
      PyModule_AddObject (m, "HandleInfo", (PyObject *) HandleInfoType) < 0 ||
      PyModule_AddObject (m, "Attributes", (PyObject *) AttributesType) < 0)
    goto err;
  return m;
 err:
  Py_DECREF (m);
  return NULL;
}

/* --- Calling a module. --- */

/* Call M's callback CB about EV.  Returns 0, or -1 for a handler
 * failure (exception, timeout, a return value that is no errno).
 */
static int
call (struct pymod *m, enum cb cb, enum kind kind, void *ev, bool unlock,
      bool can_veto, int *result_code)
{
  PyObject *fn = m->cb[cb];
  char what[96];
  int ret = 0;

  if (fn == NULL)
    return 0;
  PyGILState_STATE g = PyGILState_Ensure ();
  what[0] = '\0';
#define WHAT() (what[0] ? what : (snprintf (what, sizeof what, "%s %s", \
                                            m->path, m->cb_name[cb]), what))
  Params *p = PyObject_New (Params, &ParamsType);
  if (p == NULL) {
    report_exception (WHAT ());
    PyGILState_Release (g);
    return -1;
  }
  p->kind = kind;
  p->unlock = unlock;
  p->ev = ev;
  p->view = NULL;
  p->ref = NULL;

  struct watch *w = watch_get ();
  if (w && timeout == 0)
    w = NULL;
  if (w) {
    w->m = m;
    w->cb = cb;
    w->fired = false;
    __atomic_add_fetch (&w->gen, 1, __ATOMIC_RELEASE);
    __atomic_store_n (&w->start, now_ns (), __ATOMIC_RELEASE);
  }
  PyObject *r = PyObject_CallOneArg (fn, (PyObject *) p);
  bool fired = false;
  if (w) {
    __atomic_store_n (&w->start, 0, __ATOMIC_RELEASE);
    fired = w->fired;
    if (fired)                  /* one may be pending still */
      PyThreadState_SetAsyncExc (w->tid, NULL);
  }
  params_end (p, m, cb);
  Py_DECREF (p);

  if (fired) {
    if (r == NULL)
      report_exception (WHAT ());
    nbdkit_error ("python %s: timed out (python-timeout=%g s)", WHAT (), timeout);
    ret = -1;
  }
  else if (r == NULL) {
    report_exception (WHAT ());
    ret = -1;
  }
  else if (r != Py_None) {
    /* A non-zero int is the errno to veto with. */
    long e = PyLong_Check (r) && !PyBool_Check (r) ? PyLong_AsLong (r) : -1;
    if (e == -1 && PyErr_Occurred ())
      PyErr_Clear ();
    if (e < 0 || e > 4095) {
      nbdkit_error ("python %s: returned %s: return None, 0 or an errno",
                    WHAT (), Py_TYPE (r)->tp_name);
      ret = -1;
    }
    else if (e > 0 && can_veto)
      *result_code = e;
  }
  Py_XDECREF (r);
  PyGILState_Release (g);
  return ret;
#undef WHAT
}

static struct pymod *
self (void)
{
  return handlers_self;
}

static int
py_before_write (struct fsevent_write *ev)
{
  return call (self (), CB_BEFORE_WRITE, K_WRITE, ev, false, true,
               &ev->result_code);
}

static int
py_after_write (struct fsevent_write *ev)
{
  return call (self (), CB_AFTER_WRITE, K_WRITE, ev, false, false,
               &ev->result_code);
}

static int
py_change (struct fsevent_change *ev, bool before)
{
  if ((unsigned) ev->kind > FSEVENT_SET_ATTRIBUTES)
    return 0;
  enum cb cb = CB_BEFORE_CREATE + 2 * ev->kind + !before;
  return call (self (), cb, K_CHANGE, ev, false, before, &ev->result_code);
}

static int py_before_change (struct fsevent_change *ev) { return py_change (ev, true); }
static int py_after_change (struct fsevent_change *ev) { return py_change (ev, false); }

static int
py_before_lock (struct fsevent_lock *ev)
{
  return call (self (), CB_BEFORE_LOCK, K_LOCK, ev, false, true,
               &ev->result_code);
}

static int
py_after_lock (struct fsevent_lock *ev)
{
  return call (self (), CB_AFTER_LOCK, K_LOCK, ev, false, false,
               &ev->result_code);
}

/* An unlock cannot be refused: result_code and return are ignored. */
static int
py_before_unlock (struct fsevent_lock *ev)
{
  return call (self (), CB_BEFORE_UNLOCK, K_LOCK, ev, true, false,
               &ev->result_code);
}

static int
py_after_unlock (struct fsevent_lock *ev)
{
  return call (self (), CB_AFTER_UNLOCK, K_LOCK, ev, true, false,
               &ev->result_code);
}

/* Contexts: the last reference may run __del__, so under the GIL. */
static void
py_free_context (void *context, uint32_t ino)
{
  if (context == NULL || !Py_IsInitialized ())
    return;
  PyGILState_STATE g = PyGILState_Ensure ();
  Py_DECREF ((PyObject *) context);
  if (PyErr_Occurred ())
    report_exception ("python: releasing a context");
  PyGILState_Release (g);
}

static int
call_simple (struct pymod *m, PyObject *fn, const char *name,
             const char *key, const char *value)
{
  char what[96];
  snprintf (what, sizeof what, "%s %s", m->path, name);
  PyGILState_STATE g = PyGILState_Ensure ();
  PyObject *r = key ? PyObject_CallFunction (fn, "ss", key, value)
    : PyObject_CallNoArgs (fn);
  int ret = 0;
  if (r == NULL) {
    report_exception (what);
    ret = -1;
  }
  Py_XDECREF (r);
  PyGILState_Release (g);
  return ret;
}

static int
py_config_complete (void)
{
  struct pymod *m = self ();
  return m->config_complete
    ? call_simple (m, m->config_complete, "config_complete", NULL, NULL) : 0;
}

static void
finalize (void)
{
  pthread_mutex_lock (&watch_lock);
  watchdog_stop = true;
  pthread_cond_signal (&watch_cond);
  pthread_mutex_unlock (&watch_lock);
  if (watchdog_running) {
    pthread_join (watchdog, NULL);
    watchdog_running = false;
  }
  /* This thread's pinned state goes now; other threads' with
   * Py_FinalizeEx (nbdkit has joined its threads by now).
   */
  struct watch *mine = watch_key_made ? pthread_getspecific (watch_key) : NULL;
  if (mine) {
    pthread_setspecific (watch_key, NULL);
    watch_release (mine);
  }
  PyEval_RestoreThread (main_ts);
  main_ts = NULL;
  Py_CLEAR (format_exception);
  if (Py_FinalizeEx () == -1)
    nbdkit_error ("python: flushing buffered output failed at exit");
  finalized = true;
  if (watch_key_made) {
    pthread_key_delete (watch_key);
    watch_key_made = false;
  }
  pthread_mutex_lock (&watch_lock);
  while (watches) {
    struct watch *w = watches;
    watches = w->next;
    free (w);
  }
  pthread_mutex_unlock (&watch_lock);
}

/* close() of the module, then (after the last) the interpreter goes. */
static void
py_unload (void)
{
  struct pymod *m = self ();
  if (m->close)
    call_simple (m, m->close, "close", NULL, NULL);
  PyGILState_STATE g = PyGILState_Ensure ();
  for (size_t i = 0; i < NCB; i++)
    Py_CLEAR (m->cb[i]);
  Py_CLEAR (m->config);
  Py_CLEAR (m->config_complete);
  Py_CLEAR (m->close);
  Py_CLEAR (m->module);
  PyGILState_Release (g);
  free (m->path);
  m->path = NULL;
  if (--nlive == 0)
    finalize ();
}

/* --- Start-up. --- */

static int
init_interpreter (void)
{
  if (Py_IsInitialized ()) {
    nbdkit_error ("python=: a Python interpreter is running in this nbdkit "
                  "already (the fsevent plugin and filter both?)");
    return -1;
  }
  /* Extension modules (math, _sqlite3) are not linked with libpython:
   * its symbols must be global, and nbdkit loaded us with RTLD_LOCAL.
   */
  Dl_info info;
  if (dladdr ((void *) Py_InitializeEx, &info) && info.dli_fname &&
      dlopen (info.dli_fname, RTLD_NOW | RTLD_GLOBAL | RTLD_NOLOAD) == NULL)
    nbdkit_debug ("python: cannot make %s global: %s", info.dli_fname,
                  dlerror ());

  if (PyImport_AppendInittab ("fsevent", fsevent_modinit) == -1) {
    nbdkit_error ("python: cannot register the fsevent module");
    return -1;
  }
  /* No signal handlers: SIGINT and the others stay nbdkit's. */
  Py_InitializeEx (0);
  if (!Py_IsInitialized ()) {
    nbdkit_error ("python: cannot initialise the interpreter");
    return -1;
  }
  PyObject *tb = PyImport_ImportModule ("traceback");
  if (tb) {
    format_exception = PyObject_GetAttrString (tb, "format_exception");
    Py_DECREF (tb);
  }
  PyObject *fsev = PyImport_ImportModule ("fsevent");
  if (fsev == NULL || format_exception == NULL) {
    report_exception ("python: start-up");
    Py_XDECREF (fsev);
    return -1;
  }
  Py_DECREF (fsev);
  pthread_condattr_t ca;
  pthread_condattr_init (&ca);
  pthread_condattr_setclock (&ca, CLOCK_MONOTONIC);
  pthread_cond_init (&watch_cond, &ca);
  pthread_condattr_destroy (&ca);
  if (!watch_key_made && pthread_key_create (&watch_key, watch_release) == 0)
    watch_key_made = true;
  init_pid = getpid ();
  /* From now on every use takes the GIL with PyGILState_Ensure. */
  main_ts = PyEval_SaveThread ();
  return 0;
}

/* Import PATH as a module named after its file; its directory goes on
 * sys.path (for modules of its own).  GIL held.
 */
static PyObject *
import_file (const char *path, const char *stem)
{
  PyObject *mod = NULL, *util = NULL, *spec = NULL;
  char *dir = strdup (path);
  if (dir == NULL)
    return PyErr_NoMemory ();
  char *slash = strrchr (dir, '/');
  if (slash)
    *(slash == dir ? slash + 1 : slash) = '\0';

  PyObject *sys_path = PySys_GetObject ("path");   /* borrowed */
  PyObject *d = PyUnicode_DecodeFSDefault (dir);
  free (dir);
  if (d == NULL)
    return NULL;
  if (sys_path && PySequence_Contains (sys_path, d) == 0)
    PyList_Insert (sys_path, 0, d);
  Py_DECREF (d);

  util = PyImport_ImportModule ("importlib.util");
  if (util == NULL)
    goto out;
  spec = PyObject_CallMethod (util, "spec_from_file_location", "ss",
                              stem, path);
  if (spec == NULL)
    goto out;
  if (spec == Py_None) {
    PyErr_Format (PyExc_ImportError, "cannot import %s", path);
    goto out;
  }
  mod = PyObject_CallMethod (util, "module_from_spec", "O", spec);
  if (mod == NULL)
    goto out;
  PyObject *modules = PyImport_GetModuleDict ();   /* borrowed */
  if (PyDict_SetItemString (modules, stem, mod) == -1)
    goto fail;
  PyObject *loader = PyObject_GetAttrString (spec, "loader");
  if (loader == NULL)
    goto fail;
  PyObject *r = PyObject_CallMethod (loader, "exec_module", "O", mod);
  Py_DECREF (loader);
  if (r == NULL) {
    PyObject *t, *v, *tb;
    PyErr_Fetch (&t, &v, &tb);
    PyDict_DelItemString (modules, stem);
    PyErr_Clear ();
    PyErr_Restore (t, v, tb);
    goto fail;
  }
  Py_DECREF (r);
  goto out;
 fail:
  Py_CLEAR (mod);
 out:
  Py_XDECREF (spec);
  Py_XDECREF (util);
  return mod;
}

int
python_load (const char *path)
{
  if (nmods >= MAX_MODULES) {
    nbdkit_error ("python=%s: at most %d python= modules", path, MAX_MODULES);
    return -1;
  }
  char *abs = nbdkit_realpath (path);
  if (abs == NULL)
    return -1;
  for (size_t i = 0; i < nmods; i++)
    if (mods[i].path && strcmp (mods[i].path, abs) == 0) {
      nbdkit_error ("python=%s: loaded already (each module is loaded once)",
                    path);
      free (abs);
      return -1;
    }
  if (nmods == 0 && init_interpreter () == -1) {
    free (abs);
    return -1;
  }

  struct pymod *m = &mods[nmods];
  memset (m, 0, sizeof *m);
  m->path = abs;
  /* The module's name: its file name without .py, '.' -> '_'. */
  const char *base = strrchr (abs, '/') ? strrchr (abs, '/') + 1 : abs;
  char stem[48];
  snprintf (stem, sizeof stem, "%s", base);
  char *dot = strrchr (stem, '.');
  if (dot && strcmp (dot, ".py") == 0)
    *dot = '\0';
  for (char *s = stem; *s; s++)
    if (*s == '.' || *s == '=' || *s == '-')
      *s = '_';
  snprintf (m->name, sizeof m->name, "python:%s", stem);

  PyGILState_STATE g = PyGILState_Ensure ();
  int ret = -1;
  char what[96];
  snprintf (what, sizeof what, "python=%s", path);
  /* Registered under its name, it must not replace a module that is
   * there already (a file called json.py, or two called guard.py).
   */
  if (PyDict_GetItemString (PyImport_GetModuleDict (), stem) != NULL) {
    nbdkit_error ("%s: a module named '%s' is loaded already: rename the file",
                  what, stem);
    goto out;
  }
  m->module = import_file (abs, stem);
  if (m->module == NULL) {
    report_exception (what);
    goto out;
  }
  for (size_t i = 0; i < NCALLBACKS; i++) {
    PyObject *fn = PyObject_GetAttrString (m->module, callbacks[i].name);
    if (fn == NULL) {
      PyErr_Clear ();
      continue;
    }
    if (!PyCallable_Check (fn)) {
      nbdkit_error ("%s: %s is not callable", what, callbacks[i].name);
      Py_DECREF (fn);
      goto out;
    }
    enum cb cb = callbacks[i].cb;
    if (m->cb[cb]) {
      nbdkit_error ("%s: defines both %s and %s (the same event)", what,
                    m->cb_name[cb], callbacks[i].name);
      Py_DECREF (fn);
      goto out;
    }
    m->cb[cb] = fn;
    m->cb_name[cb] = callbacks[i].name;
  }
  const char *names[] = { "config", "config_complete", "close" };
  PyObject **slots[] = { &m->config, &m->config_complete, &m->close };
  for (size_t i = 0; i < 3; i++) {
    *slots[i] = PyObject_GetAttrString (m->module, names[i]);
    if (*slots[i] == NULL)
      PyErr_Clear ();
    else if (!PyCallable_Check (*slots[i])) {
      nbdkit_error ("%s: %s is not callable", what, names[i]);
      goto out;
    }
  }
  ret = 0;
 out:
  if (ret == -1) {
    for (size_t i = 0; i < NCB; i++)
      Py_CLEAR (m->cb[i]);
    Py_CLEAR (m->config);
    Py_CLEAR (m->config_complete);
    Py_CLEAR (m->close);
    Py_CLEAR (m->module);
  }
  PyGILState_Release (g);
  if (ret == -1) {
    free (m->path);
    m->path = NULL;
    if (nmods == 0 && nlive == 0)
      finalize ();
    return -1;
  }

  /* Only the callbacks it has: the chain skips the others for free. */
  bool before_change = false, after_change = false;
  for (enum cb c = CB_BEFORE_CREATE; c <= CB_AFTER_SET_ATTRIBUTES; c += 2) {
    before_change |= m->cb[c] != NULL;
    after_change |= m->cb[c + 1] != NULL;
  }
  m->h = (struct fsevent_handler) {
    .api_version = FSEVENT_API_VERSION,
    .struct_size = sizeof (struct fsevent_handler),
    .name = m->name,
    .description = "a python= module",
    .config_complete = py_config_complete,
    .before_write = m->cb[CB_BEFORE_WRITE] ? py_before_write : NULL,
    .after_write = m->cb[CB_AFTER_WRITE] ? py_after_write : NULL,
    .free_file_context = py_free_context,
    .free_handle_context = py_free_context,
    .unload = py_unload,
    .before_change = before_change ? py_before_change : NULL,
    .after_change = after_change ? py_after_change : NULL,
    .before_lock = m->cb[CB_BEFORE_LOCK] ? py_before_lock : NULL,
    .after_lock = m->cb[CB_AFTER_LOCK] ? py_after_lock : NULL,
    .before_unlock = m->cb[CB_BEFORE_UNLOCK] ? py_before_unlock : NULL,
    .after_unlock = m->cb[CB_AFTER_UNLOCK] ? py_after_unlock : NULL,
  };
  nmods++;
  nlive++;
  /* Commit-time writes read their data back only for handlers that
   * look at writes.
   */
  bool reads_data = m->cb[CB_BEFORE_WRITE] || m->cb[CB_AFTER_WRITE];
  if (handlers_add_builtin_opaque (&m->h, reads_data, true, m) == -1) {
    /* A name clash with a loaded handler: unload it again. */
    nmods--;
    handlers_self = m;
    py_unload ();
    return -1;
  }
  /* Log lines name it with its path, as given ("by"). */
  char *by;
  if (asprintf (&by, "python:%s", path) == -1) {
    nbdkit_error ("asprintf: %m");
    return -1;
  }
  int r = handlers_set_by (m->name, by);
  free (by);
  if (r == -1)
    return -1;
  nbdkit_debug ("python=%s: loaded as handler '%s'", path, m->name);
  return 0;
}

int
python_config (const char *key, const char *value)
{
  if (nmods == 0 || mods[nmods - 1].path == NULL) {
    nbdkit_error ("python.%s: give python=FILE.py before its parameters", key);
    return -1;
  }
  struct pymod *m = &mods[nmods - 1];
  if (m->config == NULL) {
    nbdkit_error ("python.%s: %s has no config(key, value)", key, m->path);
    return -1;
  }
  return call_simple (m, m->config, "config", key, value);
}

int
python_after_fork (void)
{
  if (nlive == 0)
    return 0;
  if (getpid () != init_pid) {
    /* nbdkit forked into the background after we started Python. */
    PyEval_RestoreThread (main_ts);
    PyOS_AfterFork_Child ();
    main_ts = PyEval_SaveThread ();
    init_pid = getpid ();
  }
  if (timeout > 0 && !watchdog_running) {
    watchdog_stop = false;
    int e = pthread_create (&watchdog, NULL, watchdog_run, NULL);
    if (e) {
      errno = e;
      nbdkit_error ("python: watchdog thread: %m");
      return -1;
    }
    watchdog_running = true;
  }
  return 0;
}
