/* plugin/handlers.c: load handlers, pass them their parameters, call
 * them in order, and keep their file and handle contexts.
 *
 * Contexts: one entry per inode (file contexts) and one per connection
 * and inode (handle contexts), each with a slot per handler.  The
 * callbacks about one inode run under that inode's entry lock, so a
 * handler never sees two events about the same file at once; events
 * about different files run in parallel.
 */
#include <config.h>

#include <dlfcn.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NBDKIT_API_VERSION 2
#include <nbdkit-plugin.h>

#include "handlers.h"

#define MAX_HANDLERS 64

struct handler {
  const struct fsevent_handler *h;
  size_t size;                  /* the handler's struct_size */
  void *dl;                     /* NULL for built-ins */
  bool reads_data;              /* it may look at write buffers */
  bool contexts;                /* it keeps file and handle contexts */
  void *opaque;                 /* built-ins: handlers_self while called */
  char *path;
  char *by;                     /* its name in log lines ("by") */
};

__thread void *handlers_self;

/* Set handlers_self for the callback of HD about to be called. */
#define SELF(hd) (handlers_self = (hd)->opaque)

static struct handler handlers[MAX_HANDLERS];
static size_t nhandlers;
static size_t nloaded;          /* of them, those with contexts (.so files, python=) */
static enum on_error on_error = ON_ERROR_DENY;

/* Does handler H have the callback FIELD? (older handlers are shorter) */
#define HAS(hd, field) \
  ((hd)->size >= offsetof (struct fsevent_handler, field) + \
   sizeof ((hd)->h->field) && (hd)->h->field != NULL)

bool
handlers_active (void)
{
  return nhandlers > 0;
}

bool
handlers_need_contexts (void)
{
  return nloaded > 0;
}

void
handlers_set_on_error (enum on_error e)
{
  on_error = e;
}

static int
add (const struct fsevent_handler *h, void *dl, const char *path,
     bool reads_data, bool contexts, void *opaque)
{
  if (nhandlers >= MAX_HANDLERS) {
    nbdkit_error ("too many handlers (at most %d)", MAX_HANDLERS);
    return -1;
  }
  if (h->name == NULL || h->name[0] == '\0' || strchr (h->name, '.') ||
      strchr (h->name, '=')) {
    nbdkit_error ("%s: a handler needs a name without '.' or '='", path);
    return -1;
  }
  for (size_t i = 0; i < nhandlers; i++)
    if (strcmp (handlers[i].h->name, h->name) == 0) {
      nbdkit_error ("%s: a handler named '%s' is loaded already",
                    path, h->name);
      return -1;
    }
  handlers[nhandlers] = (struct handler) {
    .h = h, .size = h->struct_size, .dl = dl, .path = strdup (path),
    .reads_data = reads_data, .contexts = contexts, .opaque = opaque,
  };
  if (dl && handlers[nhandlers].path &&
      asprintf (&handlers[nhandlers].by, "handler:%s", path) == -1)
    handlers[nhandlers].by = NULL;
  nhandlers++;
  if (contexts)
    nloaded++;
  return 0;
}

int
handlers_add_builtin (const struct fsevent_handler *h, bool reads_data)
{
  return add (h, NULL, h->name, reads_data, false, NULL);
}

int
handlers_add_builtin_opaque (const struct fsevent_handler *h, bool reads_data,
                             bool contexts, void *opaque)
{
  return add (h, NULL, h->name, reads_data, contexts, opaque);
}

int
handlers_set_by (const char *name, const char *by)
{
  for (size_t i = 0; i < nhandlers; i++)
    if (strcmp (handlers[i].h->name, name) == 0) {
      char *s = strdup (by);
      if (s == NULL) {
        nbdkit_error ("strdup: %m");
        return -1;
      }
      free (handlers[i].by);
      handlers[i].by = s;
      return 0;
    }
  return 0;
}

/* Who vetoed in the last before phase that could veto on this thread
 * (see handlers.h).
 */
static __thread unsigned last_by;

unsigned
handlers_vetoed_by (void)
{
  return last_by;
}

const char *
handlers_by_name (unsigned by)
{
  if (by == HANDLERS_BY_FSEVENT)
    return "fsevent";
  if (by == 0 || by > nhandlers)
    return "?";
  const struct handler *hd = &handlers[by - 1];
  return hd->by ? hd->by : hd->h->name;
}

int
handlers_load (const char *path)
{
  void *dl = dlopen (path, RTLD_NOW | RTLD_LOCAL);
  if (dl == NULL) {
    nbdkit_error ("handler=%s: %s", path, dlerror ());
    return -1;
  }
  const struct fsevent_handler *(*init) (void) =
    (const struct fsevent_handler *(*) (void)) dlsym (dl, "fsevent_handler_init");
  if (init == NULL) {
    nbdkit_error ("handler=%s: not an fsevent handler "
                  "(no fsevent_handler_init: use FSEVENT_REGISTER_HANDLER)", path);
    dlclose (dl);
    return -1;
  }
  const struct fsevent_handler *h = init ();
  if (h == NULL || h->api_version < 1 || h->api_version > FSEVENT_API_VERSION ||
      h->struct_size < offsetof (struct fsevent_handler, before_write)) {
    nbdkit_error ("handler=%s: handler API version %d is not supported "
                  "(this plugin has version %d)", path,
                  h ? h->api_version : 0, FSEVENT_API_VERSION);
    dlclose (dl);
    return -1;
  }
  if (add (h, dl, path, true, true, NULL) == -1) {
    dlclose (dl);
    return -1;
  }
  nbdkit_debug ("handler=%s: loaded '%s' (API version %d)", path, h->name,
                h->api_version);
  return 0;
}

int
handlers_config (const char *key, const char *value)
{
  const char *dot = strchr (key, '.');
  if (dot == NULL)
    return 0;
  for (size_t i = 0; i < nhandlers; i++) {
    struct handler *hd = &handlers[i];
    size_t n = strlen (hd->h->name);
    if ((size_t) (dot - key) != n || strncmp (key, hd->h->name, n) != 0)
      continue;
    if (!HAS (hd, config)) {
      nbdkit_error ("handler '%s' takes no parameters (%s)", hd->h->name, key);
      return -1;
    }
    SELF (hd);
    return hd->h->config (dot + 1, value) == -1 ? -1 : 1;
  }
  return 0;
}

int
handlers_config_complete (void)
{
  for (size_t i = 0; i < nhandlers; i++)
    if (HAS (&handlers[i], config_complete) &&
        (SELF (&handlers[i]), handlers[i].h->config_complete ()) == -1)
      return -1;
  return 0;
}

/* --- Contexts. --- */

/* Contexts are per inode of a partition: KEY is partition << 32 | ino. */
#define KEY(partition, ino) ((uint64_t) (partition) << 32 | (ino))
#define KEY_INO(key) ((uint32_t) (key))

struct ctx_entry {
  struct ctx_entry *next;
  uint64_t key;
  pthread_mutex_t lock;         /* serialises callbacks about this inode */
  void *slot[];                 /* one per handler */
};

#define BUCKETS 4096
#define LOCKS 64                /* bucket locks: parallel requests rarely meet */

struct ctx_table {
  pthread_mutex_t lock[LOCKS];  /* lock[i] protects buckets b with b % LOCKS == i */
  struct ctx_entry *bucket[BUCKETS];
};

static struct ctx_table file_contexts;
static pthread_once_t file_contexts_once = PTHREAD_ONCE_INIT;

static void
table_init (struct ctx_table *t)
{
  for (size_t i = 0; i < LOCKS; i++)
    pthread_mutex_init (&t->lock[i], NULL);
}

static void
file_contexts_init (void)
{
  table_init (&file_contexts);
}

/* Every connection's handle contexts, listed so that a freed inode
 * releases its contexts in all of them: a QEMU guest keeps one NBD
 * connection for its whole life, and a reused inode number must not
 * inherit a deleted file's context.
 */
struct conn_contexts {
  struct ctx_table t;
  struct conn_contexts *prev, *next;
};
static pthread_mutex_t conns_lock = PTHREAD_MUTEX_INITIALIZER;
static struct conn_contexts *conns;

static struct ctx_entry *
ctx_get (struct ctx_table *t, uint64_t key)
{
  struct ctx_entry **b = &t->bucket[key % BUCKETS], *e;
  pthread_mutex_t *lock = &t->lock[key % BUCKETS % LOCKS];

  pthread_mutex_lock (lock);
  for (e = *b; e; e = e->next)
    if (e->key == key)
      break;
  if (e == NULL) {
    e = calloc (1, sizeof *e + nhandlers * sizeof e->slot[0]);
    if (e) {
      e->key = key;
      pthread_mutex_init (&e->lock, NULL);
      e->next = *b;
      *b = e;
    }
  }
  pthread_mutex_unlock (lock);
  return e;
}

static void
ctx_free_all (struct ctx_table *t, bool file)
{
  for (size_t i = 0; i < BUCKETS; i++) {
    struct ctx_entry *e = t->bucket[i];
    while (e) {
      struct ctx_entry *next = e->next;
      for (size_t h = 0; h < nhandlers; h++) {
        if (e->slot[h] == NULL)
          continue;
        SELF (&handlers[h]);
        if (file && HAS (&handlers[h], free_file_context))
          handlers[h].h->free_file_context (e->slot[h], KEY_INO (e->key));
        else if (!file && HAS (&handlers[h], free_handle_context))
          handlers[h].h->free_handle_context (e->slot[h], KEY_INO (e->key));
      }
      pthread_mutex_destroy (&e->lock);
      free (e);
      e = next;
    }
    t->bucket[i] = NULL;
  }
}

struct conn_contexts *
conn_contexts_new (void)
{
  struct conn_contexts *cc = calloc (1, sizeof *cc);
  if (cc == NULL)
    return NULL;
  table_init (&cc->t);
  pthread_mutex_lock (&conns_lock);
  cc->next = conns;
  if (conns)
    conns->prev = cc;
  conns = cc;
  pthread_mutex_unlock (&conns_lock);
  return cc;
}

void
conn_contexts_free (struct conn_contexts *cc)
{
  if (cc == NULL)
    return;
  pthread_mutex_lock (&conns_lock);
  if (cc->prev)
    cc->prev->next = cc->next;
  else
    conns = cc->next;
  if (cc->next)
    cc->next->prev = cc->prev;
  pthread_mutex_unlock (&conns_lock);
  ctx_free_all (&cc->t, false);
  for (size_t i = 0; i < LOCKS; i++)
    pthread_mutex_destroy (&cc->t.lock[i]);
  free (cc);
}

/* --- Calling the chain. --- */

/* A handler failed (returned -1, or gave a result code that is no
 * errno).  What that means is on-handler-error=.
 */
static void
handler_failed (const struct handler *hd, const char *callback, uint32_t ino,
                bool before, int *result_code, const char *what)
{
  nbdkit_error ("handler '%s' failed in %s for inode %u: %s",
                hd->h->name, callback, ino, what);
  if (before && on_error == ON_ERROR_DENY)
    *result_code = EIO;
}

/* Only loaded handlers have contexts (and need the per-inode
 * serialisation); the built-in ones keep no state per file.  Returns
 * false (and sets *RESULT in the before phase) when out of memory.
 */
static bool
enter (uint64_t key, struct conn_contexts *cc, bool before, int *result,
       struct ctx_entry **fe, struct ctx_entry **he)
{
  *fe = *he = NULL;
  if (nloaded == 0)
    return true;
  pthread_once (&file_contexts_once, file_contexts_init);
  *fe = ctx_get (&file_contexts, key);
  *he = cc ? ctx_get (&cc->t, key) : NULL;
  if (*fe == NULL) {
    nbdkit_error ("out of memory for handler contexts");
    if (before)
      *result = ENOMEM;
    return false;
  }
  pthread_mutex_lock (&(*fe)->lock);
  return true;
}

static void
leave (struct ctx_entry *fe)
{
  if (fe)
    pthread_mutex_unlock (&fe->lock);
}

/* Check what a before-callback gave back; true if it vetoed. */
static bool
check_before (const struct handler *hd, const char *callback, uint32_t ino,
              int r, int *result_code)
{
  if (r == -1) {
    *result_code = 0;
    handler_failed (hd, callback, ino, true, result_code, "it returned -1");
  }
  else if (r != 0 || *result_code < 0 || *result_code > 4095) {
    *result_code = 0;
    handler_failed (hd, callback, ino, true, result_code, "malformed result");
  }
  return *result_code != 0;
}

/* One event of any type, as the chain sees it: where its shared fields
 * are, and how to call a handler about it.
 */
struct call {
  unsigned partition;
  uint32_t ino;
  int *result_code;
  void ***file_context, ***handle_context;
  bool before;
  bool can_veto;                /* before phase of an event that may be refused */
  /* Call HD's callback for this event; -2 if HD has none.  *NAME gets
   * the callback's name (for errors).
   */
  int (*invoke) (const struct handler *hd, void *ev, bool before,
                 const char **name);
  void *ev;
};

static void
run_chain (struct call *c, struct conn_contexts *cc)
{
  struct ctx_entry *fe, *he;

  if (c->before)
    *c->result_code = 0;
  if (c->can_veto)
    last_by = 0;
  if (nhandlers == 0)
    return;
  if (!enter (KEY (c->partition, c->ino), cc, c->can_veto, c->result_code,
              &fe, &he)) {
    if (c->can_veto)
      last_by = HANDLERS_BY_FSEVENT;
    return;
  }
  for (size_t i = 0; i < nhandlers; i++) {
    const struct handler *hd = &handlers[i];
    const char *name = "";

    *c->file_context = fe ? &fe->slot[i] : NULL;
    *c->handle_context = he ? &he->slot[i] : NULL;
    if (c->can_veto)
      *c->result_code = 0;
    SELF (hd);
    int r = c->invoke (hd, c->ev, c->before, &name);
    if (r == -2)
      continue;                 /* it has no such callback */
    if (c->can_veto) {
      if (check_before (hd, name, c->ino, r, c->result_code)) {
        last_by = i + 1;
        break;                  /* vetoed: later handlers are not asked */
      }
    }
    else if (r != 0)
      handler_failed (hd, name, c->ino, false, c->result_code,
                      "it returned -1");
  }
  *c->file_context = *c->handle_context = NULL;
  if (!c->can_veto)
    *c->result_code = 0;        /* nothing to refuse in this phase */
  leave (fe);
}

static int
invoke_write (const struct handler *hd, void *ev, bool before,
              const char **name)
{
  if (before) {
    *name = "before_write";
    return HAS (hd, before_write) ? hd->h->before_write (ev) : -2;
  }
  *name = "after_write";
  return HAS (hd, after_write) ? hd->h->after_write (ev) : -2;
}

static int
invoke_change (const struct handler *hd, void *ev, bool before,
               const char **name)
{
  if (before) {
    *name = "before_change";
    return HAS (hd, before_change) ? hd->h->before_change (ev) : -2;
  }
  *name = "after_change";
  return HAS (hd, after_change) ? hd->h->after_change (ev) : -2;
}

static int
invoke_lock (const struct handler *hd, void *ev, bool before,
             const char **name)
{
  if (before) {
    *name = "before_lock";
    return HAS (hd, before_lock) ? hd->h->before_lock (ev) : -2;
  }
  *name = "after_lock";
  return HAS (hd, after_lock) ? hd->h->after_lock (ev) : -2;
}

static int
invoke_unlock (const struct handler *hd, void *ev, bool before,
               const char **name)
{
  if (before) {
    *name = "before_unlock";
    return HAS (hd, before_unlock) ? hd->h->before_unlock (ev) : -2;
  }
  *name = "after_unlock";
  return HAS (hd, after_unlock) ? hd->h->after_unlock (ev) : -2;
}

static void
write_chain (struct fsevent_write *ev, struct conn_contexts *cc, bool before)
{
  struct call c = {
    .partition = ev->partition, .ino = ev->ino,
    .result_code = &ev->result_code,
    .file_context = &ev->file_context, .handle_context = &ev->handle_context,
    .before = before, .can_veto = before, .invoke = invoke_write, .ev = ev,
  };
  run_chain (&c, cc);
}

static void
change_chain (struct fsevent_change *ev, struct conn_contexts *cc, bool before)
{
  struct call c = {
    .partition = ev->partition, .ino = ev->ino,
    .result_code = &ev->result_code,
    .file_context = &ev->file_context, .handle_context = &ev->handle_context,
    .before = before, .can_veto = before, .invoke = invoke_change, .ev = ev,
  };
  run_chain (&c, cc);
}

void
handlers_before_write (struct fsevent_write *ev, struct conn_contexts *cc)
{
  write_chain (ev, cc, true);
}

void
handlers_after_write (struct fsevent_write *ev, struct conn_contexts *cc)
{
  write_chain (ev, cc, false);
}

void
handlers_before_change (struct fsevent_change *ev, struct conn_contexts *cc)
{
  change_chain (ev, cc, true);
}

void
handlers_after_change (struct fsevent_change *ev, struct conn_contexts *cc)
{
  change_chain (ev, cc, false);
}

/* A lock may be refused in its before phase; an unlock never is.  A
 * control connection is no NBD connection: no handle context.
 */
void
handlers_lock (struct fsevent_lock *ev, bool unlock)
{
  bool before = ev->phase == FSEVENT_BEFORE;
  void **no_handle = NULL;
  struct call c = {
    .partition = ev->partition, .ino = ev->ino,
    .result_code = &ev->result_code,
    .file_context = &ev->file_context, .handle_context = &no_handle,
    .before = before, .can_veto = before && !unlock,
    .invoke = unlock ? invoke_unlock : invoke_lock, .ev = ev,
  };
  run_chain (&c, NULL);
  ev->handle_context = NULL;
}

/* Take KEY's entry out of T and free its contexts (FILE: file
 * contexts, else handle contexts).
 */
static void
ctx_drop (struct ctx_table *t, uint64_t key, bool file)
{
  pthread_mutex_t *lock = &t->lock[key % BUCKETS % LOCKS];
  pthread_mutex_lock (lock);
  struct ctx_entry **p = &t->bucket[key % BUCKETS], *e;
  while ((e = *p) != NULL && e->key != key)
    p = &e->next;
  if (e)
    *p = e->next;
  pthread_mutex_unlock (lock);
  if (e == NULL)
    return;
  for (size_t h = 0; h < nhandlers; h++) {
    if (e->slot[h] == NULL)
      continue;
    SELF (&handlers[h]);
    if (file && HAS (&handlers[h], free_file_context))
      handlers[h].h->free_file_context (e->slot[h], KEY_INO (key));
    else if (!file && HAS (&handlers[h], free_handle_context))
      handlers[h].h->free_handle_context (e->slot[h], KEY_INO (key));
  }
  pthread_mutex_destroy (&e->lock);
  free (e);
}

/* Called at the commit that frees the inode (the model held
 * exclusively: no write of any connection is using a context then).
 * Handle contexts go first, then the file context.
 */
void
handlers_inode_freed (unsigned partition, uint32_t ino)
{
  if (nloaded == 0)
    return;
  pthread_once (&file_contexts_once, file_contexts_init);
  const uint64_t key = KEY (partition, ino);
  pthread_mutex_lock (&conns_lock);
  for (struct conn_contexts *cc = conns; cc; cc = cc->next)
    ctx_drop (&cc->t, key, false);
  pthread_mutex_unlock (&conns_lock);
  ctx_drop (&file_contexts, key, true);
}

bool
handlers_want_data (void)
{
  for (size_t i = 0; i < nhandlers; i++)
    if (handlers[i].reads_data)
      return true;
  return false;
}

void
handlers_unload (void)
{
  if (nloaded)
    ctx_free_all (&file_contexts, true);
  for (size_t i = nhandlers; i-- > 0; ) {
    struct handler *hd = &handlers[i];
    SELF (hd);
    if (HAS (hd, unload))
      hd->h->unload ();
    if (hd->dl)
      dlclose (hd->dl);
    free (hd->path);
    free (hd->by);
  }
  nhandlers = nloaded = 0;
  handlers_self = NULL;
}
