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
  char *path;
};

static struct handler handlers[MAX_HANDLERS];
static size_t nhandlers;
static size_t nloaded;          /* of them, loaded .so files: they get contexts */
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
add (const struct fsevent_handler *h, void *dl, const char *path)
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
  };
  nhandlers++;
  return 0;
}

int
handlers_add_builtin (const struct fsevent_handler *h)
{
  return add (h, NULL, h->name);
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
  if (add (h, dl, path) == -1) {
    dlclose (dl);
    return -1;
  }
  nloaded++;
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
    return hd->h->config (dot + 1, value) == -1 ? -1 : 1;
  }
  return 0;
}

int
handlers_config_complete (void)
{
  for (size_t i = 0; i < nhandlers; i++)
    if (HAS (&handlers[i], config_complete) &&
        handlers[i].h->config_complete () == -1)
      return -1;
  return 0;
}

/* --- Contexts. --- */

struct ctx_entry {
  struct ctx_entry *next;
  uint32_t ino;
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

struct conn_contexts {
  struct ctx_table t;
};

static struct ctx_entry *
ctx_get (struct ctx_table *t, uint32_t ino)
{
  struct ctx_entry **b = &t->bucket[ino % BUCKETS], *e;
  pthread_mutex_t *lock = &t->lock[ino % BUCKETS % LOCKS];

  pthread_mutex_lock (lock);
  for (e = *b; e; e = e->next)
    if (e->ino == ino)
      break;
  if (e == NULL) {
    e = calloc (1, sizeof *e + nhandlers * sizeof e->slot[0]);
    if (e) {
      e->ino = ino;
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
        if (file && HAS (&handlers[h], free_file_context))
          handlers[h].h->free_file_context (e->slot[h], e->ino);
        else if (!file && HAS (&handlers[h], free_handle_context))
          handlers[h].h->free_handle_context (e->slot[h], e->ino);
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
  if (cc)
    table_init (&cc->t);
  return cc;
}

void
conn_contexts_free (struct conn_contexts *cc)
{
  if (cc == NULL)
    return;
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
enter (uint32_t ino, struct conn_contexts *cc, bool before, int *result,
       struct ctx_entry **fe, struct ctx_entry **he)
{
  *fe = *he = NULL;
  if (nloaded == 0)
    return true;
  pthread_once (&file_contexts_once, file_contexts_init);
  *fe = ctx_get (&file_contexts, ino);
  *he = cc ? ctx_get (&cc->t, ino) : NULL;
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

static void
call_chain (struct fsevent_write *ev, struct conn_contexts *cc, bool before)
{
  struct ctx_entry *fe, *he;

  if (!enter (ev->ino, cc, before, &ev->result_code, &fe, &he))
    return;
  for (size_t i = 0; i < nhandlers; i++) {
    const struct handler *hd = &handlers[i];

    ev->file_context = fe ? &fe->slot[i] : NULL;
    ev->handle_context = he ? &he->slot[i] : NULL;
    if (before) {
      if (!HAS (hd, before_write))
        continue;
      ev->result_code = 0;
      if (check_before (hd, "before_write", ev->ino,
                        hd->h->before_write (ev), &ev->result_code))
        break;                  /* vetoed: later handlers are not asked */
    }
    else if (HAS (hd, after_write) && hd->h->after_write (ev) != 0)
      handler_failed (hd, "after_write", ev->ino, false, &ev->result_code,
                      "it returned -1");
  }
  ev->file_context = ev->handle_context = NULL;
  leave (fe);
}

static void
call_chain_change (struct fsevent_change *ev, struct conn_contexts *cc,
                   bool before)
{
  struct ctx_entry *fe, *he;

  if (!enter (ev->ino, cc, before, &ev->result_code, &fe, &he))
    return;
  for (size_t i = 0; i < nhandlers; i++) {
    const struct handler *hd = &handlers[i];

    ev->file_context = fe ? &fe->slot[i] : NULL;
    ev->handle_context = he ? &he->slot[i] : NULL;
    if (before) {
      if (!HAS (hd, before_change))
        continue;
      ev->result_code = 0;
      if (check_before (hd, "before_change", ev->ino,
                        hd->h->before_change (ev), &ev->result_code))
        break;
    }
    else if (HAS (hd, after_change) && hd->h->after_change (ev) != 0)
      handler_failed (hd, "after_change", ev->ino, false, &ev->result_code,
                      "it returned -1");
  }
  ev->file_context = ev->handle_context = NULL;
  leave (fe);
}

void
handlers_before_write (struct fsevent_write *ev, struct conn_contexts *cc)
{
  ev->result_code = 0;
  if (nhandlers)
    call_chain (ev, cc, true);
}

void
handlers_after_write (struct fsevent_write *ev, struct conn_contexts *cc)
{
  if (nhandlers)
    call_chain (ev, cc, false);
}

void
handlers_before_change (struct fsevent_change *ev, struct conn_contexts *cc)
{
  ev->result_code = 0;
  if (nhandlers)
    call_chain_change (ev, cc, true);
}

void
handlers_after_change (struct fsevent_change *ev, struct conn_contexts *cc)
{
  if (nhandlers)
    call_chain_change (ev, cc, false);
}

/* Lock events: KIND 0 lock, 1 unlock. */
static void
call_chain_lock (struct fsevent_lock *ev, bool before, bool unlock)
{
  struct ctx_entry *fe, *he;

  if (!enter (ev->ino, NULL, before, &ev->result_code, &fe, &he))
    return;
  for (size_t i = 0; i < nhandlers; i++) {
    const struct handler *hd = &handlers[i];
    int (*cb) (struct fsevent_lock *) = NULL;
    const char *name;

    if (unlock && before && HAS (hd, before_unlock))
      cb = hd->h->before_unlock, name = "before_unlock";
    else if (unlock && !before && HAS (hd, after_unlock))
      cb = hd->h->after_unlock, name = "after_unlock";
    else if (!unlock && before && HAS (hd, before_lock))
      cb = hd->h->before_lock, name = "before_lock";
    else if (!unlock && !before && HAS (hd, after_lock))
      cb = hd->h->after_lock, name = "after_lock";
    else
      continue;
    ev->file_context = fe ? &fe->slot[i] : NULL;
    ev->handle_context = NULL;
    if (before && !unlock) {
      ev->result_code = 0;
      if (check_before (hd, name, ev->ino, cb (ev), &ev->result_code))
        break;
    }
    else if (cb (ev) != 0)
      handler_failed (hd, name, ev->ino, false, &ev->result_code,
                      "it returned -1");
  }
  ev->file_context = NULL;
  if (unlock)
    ev->result_code = 0;        /* an unlock cannot be refused */
  leave (fe);
}

void
handlers_lock (struct fsevent_lock *ev, bool unlock)
{
  if (ev->phase == FSEVENT_BEFORE)
    ev->result_code = 0;
  if (nhandlers)
    call_chain_lock (ev, ev->phase == FSEVENT_BEFORE, unlock);
}

void
handlers_inode_freed (uint32_t ino)
{
  if (nloaded == 0)
    return;
  pthread_once (&file_contexts_once, file_contexts_init);
  struct ctx_table *t = &file_contexts;
  pthread_mutex_t *lock = &t->lock[ino % BUCKETS % LOCKS];
  pthread_mutex_lock (lock);
  struct ctx_entry **p = &t->bucket[ino % BUCKETS], *e;
  while ((e = *p) != NULL && e->ino != ino)
    p = &e->next;
  if (e)
    *p = e->next;
  pthread_mutex_unlock (lock);
  if (e == NULL)
    return;
  for (size_t h = 0; h < nhandlers; h++)
    if (e->slot[h] && HAS (&handlers[h], free_file_context))
      handlers[h].h->free_file_context (e->slot[h], ino);
  pthread_mutex_destroy (&e->lock);
  free (e);
}

bool
handlers_want_data (void)
{
  for (size_t i = 0; i < nhandlers; i++)
    if (handlers[i].dl || strcmp (handlers[i].h->name, "protect") != 0)
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
    if (HAS (hd, unload))
      hd->h->unload ();
    if (hd->dl)
      dlclose (hd->dl);
    free (hd->path);
  }
  nhandlers = 0;
}
