/* plugin/engine.c: parameters, start-up and the client-facing calls of
 * the engine both front ends share (see engine.h).
 */
#include <config.h>

#include <errno.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NBDKIT_API_VERSION 2
#include <nbdkit-plugin.h>

#include "blockcache.h"
#include "builtins.h"
#include "control.h"
#include "device.h"
#include "engine.h"
#include "handlers.h"
#include "follow.h"
#include "locks.h"
#include "log.h"
#include "python.h"
#include "volumes.h"
#include "writes.h"

static struct device *device;   /* set by engine_start */
/* protect= put the built-in protect handler in the chain (once).
 * engine_stop unloads the chain, so it clears this too: an engine
 * configured again after a stop (fuzz/fuzz-follow.c does, per input)
 * gets the handler back.
 */
static bool protect_added;

int
engine_config (const char *key, const char *value)
{
  if (strcmp (key, "partition") == 0)
    return volumes_set_partition (value);
  /* Handlers are called in the order they appear on the command line. */
  if (strcmp (key, "handler") == 0)
    return handlers_load (value);
  if (strcmp (key, "log") == 0)
    return log_open (value);
  if (strcmp (key, "log-phases") == 0)
    return log_set_phases (value);
  if (strcmp (key, "log-sync") == 0)
    return log_set_sync (value);
  if (strcmp (key, "protect") == 0) {
    if (!protect_added && handlers_add_builtin (&protect_handler, false) == -1)
      return -1;
    protect_added = true;
    return protect_add (value);
  }
  if (strcmp (key, "protect-mode") == 0)
    return protect_set_mode (value);
  if (strcmp (key, "script") == 0) {
    if (script_set (value) == -1 ||
        handlers_add_builtin (&script_handler, true) == -1)
      return -1;
    /* Log lines name it with its path, as given ("by"). */
    char *by;
    if (asprintf (&by, "script:%s", value) == -1) {
      nbdkit_error ("asprintf: %m");
      return -1;
    }
    int r = handlers_set_by (script_handler.name, by);
    free (by);
    return r;
  }
  if (strcmp (key, "python") == 0)
    return python_load (value);
  if (strcmp (key, "python-timeout") == 0)
    return python_set_timeout (value);
  /* python.KEY=VALUE: the config() of the last python= module. */
  if (strncmp (key, "python.", 7) == 0 && key[7])
    return python_config (key + 7, value);
  if (strcmp (key, "control") == 0)
    return control_set_path (value);
  if (strcmp (key, "lock-wait") == 0) {
    char *end;
    errno = 0;
    double secs = strtod (value, &end);
    if (errno || *end || end == value || secs < 0 || secs > 86400) {
      nbdkit_error ("lock-wait=%s: a number of seconds from 0 to 86400", value);
      return -1;
    }
    locks_set_guest_wait ((int) (secs * 1000));
    return 0;
  }
  if (strcmp (key, "lock-mode") == 0) {
    if (strcmp (value, "fail") == 0 || strcmp (value, "wait") == 0)
      locks_set_guest_fail (strcmp (value, "fail") == 0);
    else {
      nbdkit_error ("lock-mode=%s: use wait or fail", value);
      return -1;
    }
    return 0;
  }
  if (strcmp (key, "script-timeout") == 0)
    return script_set_timeout (value);
  if (strcmp (key, "on-unparseable") == 0)
    return follow_set_on_unparseable (value) == -1 ? -1 : 0;
  if (strcmp (key, "on-handler-error") == 0) {
    if (strcmp (value, "deny") == 0)
      handlers_set_on_error (ON_ERROR_DENY);
    else if (strcmp (value, "allow") == 0)
      handlers_set_on_error (ON_ERROR_ALLOW);
    else {
      nbdkit_error ("on-handler-error=%s: use deny or allow", value);
      return -1;
    }
    return 0;
  }
  /* NAME.KEY=VALUE goes to the loaded handler called NAME. */
  int r = handlers_config (key, value);
  if (r != 0)
    return r == 1 ? 0 : -1;
  return 1;
}

int
engine_config_complete (void)
{
  return handlers_config_complete ();
}

/* Where the model built at start-up and the kernel may see different
 * files (follow_paths_in_doubt): an inode a directory names while the
 * bitmap says it is free (ext4_iget does not read the bitmap; the model
 * holds only inodes in use, so writes to its blocks would be free
 * space), or a directory whose entries the model ignores.  On a
 * protected path, or above one, protect= could not hold: refuse to
 * start.  (fuzz-follow found such images; see fuzz/open.  A guest
 * cannot make these states while the engine runs: each is a namespace
 * change the engine decides.)
 */
static int
refuse_in_doubt (unsigned partition, const char *path, const char *why,
                 void *opaque)
{
  if (!protect_covers_path (partition, path))
    return 0;
  char where[32] = "";
  if (partition)
    snprintf (where, sizeof where, "partition %u: ", partition);
  nbdkit_error ("protect=: %s%s: %s: fsevent cannot follow it, so it "
                "cannot protect it (the filesystem is inconsistent: check "
                "it with e2fsck)", where, path, why);
  return 1;
}

int
engine_start (struct device *dev)
{
  device = dev;
  nbdkit_debug ("%s: %" PRIi64 " bytes, %s", dev->name, dev->size,
                dev->writable ? "read-write" : "read-only");
  if (log_check_sync (dev->fd) == -1)
    return -1;
  writes_init (dev);
  if (volumes_start (dev) == -1)
    return -1;
  /* protect=N:GLOB on a partition not followed would protect nothing. */
  if (protect_check_partitions (volumes_followed) == -1)
    return -1;
  /* A protected path whose inode the model cannot follow: refused.
   * (Without protect= there is nothing to walk the names for.)
   */
  for (size_t i = 0; protect_any () && i < volumes_count (); i++) {
    int r = follow_paths_in_doubt (volumes_get (i), refuse_in_doubt, NULL);
    if (r == -1)
      nbdkit_error ("out of memory while checking protect=");
    if (r)
      return -1;
  }
  return 0;
}

int
engine_after_fork (void)
{
  if (log_start () == -1 || python_after_fork () == -1)
    return -1;
  return control_start ();
}

void
engine_stop (void)
{
  control_stop ();
  locks_free_all ();            /* their owners (control connections) are gone */
  if (device) {
    writes_log_stats ();
    volumes_stop ();
    uint64_t hits, misses;
    blockcache_stats (&hits, &misses);
    if (hits || misses)
      nbdkit_debug ("recent blocks: %" PRIu64 " commit reads found, %"
                    PRIu64 " read from the device", hits, misses);
    blockcache_free ();
    device = NULL;
  }
  /* The log first: lines still in its ring name handlers ("by"). */
  log_close ();
  handlers_unload ();
  protect_added = false;
}

unsigned
engine_block_size (void)
{
  unsigned bs = volumes_block_size ();
  return bs >= 512 ? bs : 4096;
}

/* Per connection: who the client is, and its handle contexts. */
struct engine_conn {
  struct conn conn;             /* first: engine_open returns &it */
  char *export_name;
};

struct conn *
engine_open (const char *export_name)
{
  static uint64_t next_id;
  struct engine_conn *h = calloc (1, sizeof *h);
  if (h == NULL) {
    nbdkit_error ("calloc: %m");
    return NULL;
  }
  h->export_name = strdup (export_name ? export_name : "");
  h->conn.info = (struct fsevent_handle_info) {
    .connection_id = __atomic_add_fetch (&next_id, 1, __ATOMIC_RELAXED),
    .export_name = h->export_name,
    /* Only Unix sockets tell who the peer is; -1 otherwise. */
    .pid = nbdkit_peer_pid (), .uid = nbdkit_peer_uid (),
    .gid = nbdkit_peer_gid (),
  };
  if (handlers_need_contexts ())
    h->conn.contexts = conn_contexts_new ();
  if (h->export_name == NULL ||
      (handlers_need_contexts () && h->conn.contexts == NULL)) {
    nbdkit_error ("out of memory");
    free (h->export_name);
    free (h);
    return NULL;
  }
  return &h->conn;
}

void
engine_close (struct conn *c)
{
  struct engine_conn *h = (struct engine_conn *) c;
  if (h == NULL)
    return;
  conn_contexts_free (h->conn.contexts);
  free (h->export_name);
  free (h);
}

int
engine_pwrite (struct conn *c, const void *buf, uint32_t count,
               uint64_t offset, uint32_t flags)
{
  return writes_pwrite (c, buf, count, offset, flags & NBDKIT_FLAG_FUA);
}

int
engine_zero (struct conn *c, uint32_t count, uint64_t offset, uint32_t flags)
{
  return writes_zero (c, count, offset, flags & NBDKIT_FLAG_MAY_TRIM,
                      flags & NBDKIT_FLAG_FAST_ZERO, flags & NBDKIT_FLAG_FUA);
}

int
engine_trim (struct conn *c, uint32_t count, uint64_t offset, uint32_t flags)
{
  return writes_trim (c, count, offset, flags & NBDKIT_FLAG_FUA);
}

int
engine_flush (struct conn *c)
{
  /* ext2: the metadata held since the last flush is decided now. */
  if (volumes_any_held () && writes_commit_epochs (c) == -1)
    return -1;
  /* The log's lines are durable when the flush returns, like the data:
   * both are synced side by side, or by one syncfs (log-sync=fs).
   */
  if (log_flush_is_syncfs ())
    return log_syncfs ();
  uint64_t ticket;
  if (log_sync_start (&ticket) == -1)
    return -1;
  int r = device->flush (device);
  int e = errno;
  if (log_sync_wait (ticket) == -1)
    return -1;
  errno = e;
  return r;
}
