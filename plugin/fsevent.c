/* plugin/fsevent.c: the nbdkit plugin "fsevent".
 *
 * It serves an ext2/3/4 image read-write.  This file holds the nbdkit
 * glue: parameters, start-up checks and the callbacks, which pass the
 * I/O to image.c.  The plugin never writes to the image by itself: only
 * client writes change it.
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

#include "builtins.h"
#include "control.h"
#include "follow.h"
#include "fsinfo.h"
#include "handlers.h"
#include "image.h"
#include "layout.h"
#include "locks.h"
#include "log.h"
#include "source.h"
#include "writes.h"

#define THREAD_MODEL NBDKIT_THREAD_MODEL_PARALLEL

static char *filename;          /* file= */
static struct image image = { .fd = -1 };
static struct fsev_fsinfo fsinfo;
static struct fsev_fd_source fdsrc;
static struct fsev_source source;       /* the image, as fs/ reads it */
static struct fsev_layout *layout;      /* built at start-up */

static int
fsevent_after_fork (void)
{
  return control_start ();
}

static void
fsevent_unload (void)
{
  control_stop ();
  if (layout) {
    writes_log_stats ();
    follow_fini ();             /* owns the layout */
    layout = NULL;
  }
  handlers_unload ();
  log_close ();
  image_close (&image);
  free (filename);
}

static int
fsevent_config (const char *key, const char *value)
{
  if (strcmp (key, "file") == 0) {
    if (filename) {
      nbdkit_error ("file= given more than once");
      return -1;
    }
    filename = nbdkit_realpath (value);
    if (filename == NULL)
      return -1;
    return 0;
  }
  /* Handlers are called in the order they appear on the command line. */
  if (strcmp (key, "handler") == 0)
    return handlers_load (value);
  if (strcmp (key, "log") == 0)
    return log_open (value);
  if (strcmp (key, "protect") == 0) {
    static bool added;
    if (!added && handlers_add_builtin (&protect_handler, false) == -1)
      return -1;
    added = true;
    return protect_add (value);
  }
  if (strcmp (key, "script") == 0) {
    if (script_set (value) == -1)
      return -1;
    return handlers_add_builtin (&script_handler, true);
  }
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
  nbdkit_error ("unknown parameter '%s' (see nbdkit-fsevent-plugin(1))", key);
  return -1;
}

static int
fsevent_config_complete (void)
{
  if (filename == NULL) {
    nbdkit_error ("you must give the image: nbdkit fsevent file=IMAGE");
    return -1;
  }
  return handlers_config_complete ();
}

#define fsevent_config_help \
  "[file=]IMAGE         (required) The ext2/3/4 image or block device to serve.\n" \
  "handler=PATH.so      Load a handler (repeatable); NAME.KEY=VALUE configures it.\n" \
  "log=FILE|-           Log every event as JSON Lines.\n" \
  "protect=GLOB         Deny every change to matching paths (repeatable).\n" \
  "script=PATH          Run PATH for every event (nbdkit-sh-plugin style).\n" \
  "script-timeout=SECS  How long a script may take (default 10).\n" \
  "on-handler-error=deny|allow  What a failed handler means (default deny).\n" \
  "control=SOCKET       Serve host tools (fsevent-ctl): locks, stats, cat.\n" \
  "lock-wait=SECS       How long a guest write waits for a lock (default 30).\n" \
  "lock-mode=wait|fail  fail: a locked write fails at once (EIO)."

static void
layout_warning (void *opaque, const char *msg)
{
  nbdkit_debug ("%s: layout: warning: %s", filename, msg);
}

static int
fsevent_get_ready (void)
{
  char err[512];

  if (image_open (&image, filename) == -1)
    return -1;
  fsev_source_from_fd (&source, &fdsrc, image.fd, 0, image.size);

  /* Identify the filesystem first, so that a wrong image is refused
   * before anything else happens.
   */
  if (fsev_fsinfo_probe (&source, filename, &fsinfo, err, sizeof err) == -1) {
    nbdkit_error ("%s", err);
    return -1;
  }
  /* The guest would write past the end of the device: refuse. */
  if ((uint64_t) image.size < fsinfo.fs_bytes) {
    nbdkit_error ("%s is %" PRIi64 " bytes but its filesystem claims %"
                  PRIu64 " bytes: the image is truncated", filename,
                  image.size, fsinfo.fs_bytes);
    return -1;
  }

  nbdkit_debug ("%s: %s, %s, %s, block size %u%s, %" PRIu64 " blocks "
                "(%" PRIu64 " free), %" PRIu32 " inodes (%" PRIu32 " free), "
                "%" PRIu32 " groups, uuid %s%s%s",
                filename, image.is_block ? "block device" : "regular file",
                image.writable ? "read-write" : "read-only",
                fsinfo.type, fsinfo.block_size,
                fsinfo.cluster_size != fsinfo.block_size ? " (bigalloc)" : "",
                fsinfo.blocks_count, fsinfo.free_blocks,
                fsinfo.inodes_count, fsinfo.free_inodes, fsinfo.groups,
                fsinfo.uuid, fsinfo.label[0] ? ", label " : "", fsinfo.label);
  nbdkit_debug ("%s: features: %s", filename, fsinfo.features);
  if (fsinfo.has_journal)
    nbdkit_debug ("%s: journal: %s%s", filename,
                  fsinfo.journal_external ? "external device" : "internal",
                  fsinfo.needs_recovery ? ", needs recovery (replayed into "
                  "the committed view, never into the image)" : "");

  struct fsev_build_options opts = { .warn = layout_warning };
  layout = fsev_layout_build (&source, &opts, err, sizeof err);
  if (layout == NULL) {
    nbdkit_error ("%s: %s", filename, err);
    return -1;
  }
  struct fsev_layout_stats st;
  fsev_layout_get_stats (layout, &st);
  writes_init (&image);
  nbdkit_debug ("%s: layout: built in %.3f s: %" PRIu64 " runs, %" PRIu64
                " files (%" PRIu64 " directories), %" PRIu64 " names, "
                "%.1f KiB of memory, %" PRIu64 " warnings",
                filename, st.build_seconds, st.runs, st.files, st.directories,
                st.links, st.memory / 1024.0, st.warnings);
  struct fsev_layout *l = layout;
  layout = NULL;                /* follow owns it now */
  if (follow_init (&image, l) == -1) {
    follow_fini ();
    return -1;
  }
  layout = l;                   /* non-NULL: follow_fini at unload */
  return 0;
}

static void
fsevent_dump_plugin (void)
{
  printf ("fsevent_version=%s\n", PACKAGE_VERSION);
}

/* Per-connection handle: who the client is, and its handle contexts. */
struct handle {
  struct conn conn;
  char *export_name;
};

static void *
fsevent_open (int readonly)
{
  static uint64_t next_id;
  struct handle *h = calloc (1, sizeof *h);
  if (h == NULL) {
    nbdkit_error ("calloc: %m");
    return NULL;
  }
  h->export_name = strdup (nbdkit_export_name () ? : "");
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
  return h;
}

static void
fsevent_close (void *handle)
{
  struct handle *h = handle;
  conn_contexts_free (h->conn.contexts);
  free (h->export_name);
  free (h);
}

static int64_t
fsevent_get_size (void *handle)
{
  return image.size;
}

static int
fsevent_block_size (void *handle,
                    uint32_t *minimum, uint32_t *preferred, uint32_t *maximum)
{
  *minimum = 1;
  /* The filesystem's block is the unit the guest should write in. */
  *preferred = fsinfo.block_size >= 512 ? fsinfo.block_size : 4096;
  *maximum = 0xffffffff;
  return 0;
}

static int
fsevent_can_write (void *handle)
{
  return image.writable;
}

static int
fsevent_can_flush (void *handle)
{
  return 1;
}

static int
fsevent_can_fua (void *handle)
{
  return NBDKIT_FUA_NATIVE;
}

static int
fsevent_can_multi_conn (void *handle)
{
  return 1;                     /* one fd: a flush covers every connection */
}

static int
fsevent_can_trim (void *handle)
{
  return 1;
}

static int
fsevent_can_zero (void *handle)
{
  return 1;
}

static int
fsevent_can_fast_zero (void *handle)
{
  return 1;
}

static int
fsevent_can_extents (void *handle)
{
  return !image.is_block;
}

static int
fsevent_can_cache (void *handle)
{
  return NBDKIT_CACHE_NATIVE;
}

static int
fsevent_pread (void *handle, void *buf, uint32_t count, uint64_t offset,
               uint32_t flags)
{
  return image_pread (&image, buf, count, offset);
}

static int
fsevent_pwrite (void *handle, const void *buf, uint32_t count,
                uint64_t offset, uint32_t flags)
{
  struct handle *h = handle;
  return writes_pwrite (&h->conn, buf, count, offset, flags & NBDKIT_FLAG_FUA);
}

static int
fsevent_flush (void *handle, uint32_t flags)
{
  /* The events of acknowledged writes are as durable as the writes. */
  if (log_sync () == -1)
    return -1;
  return image_flush (&image);
}

static int
fsevent_trim (void *handle, uint32_t count, uint64_t offset, uint32_t flags)
{
  struct handle *h = handle;
  return writes_trim (&h->conn, count, offset, flags & NBDKIT_FLAG_FUA);
}

static int
fsevent_zero (void *handle, uint32_t count, uint64_t offset, uint32_t flags)
{
  struct handle *h = handle;
  return writes_zero (&h->conn, count, offset,
                      flags & NBDKIT_FLAG_MAY_TRIM,
                      flags & NBDKIT_FLAG_FAST_ZERO,
                      flags & NBDKIT_FLAG_FUA);
}

static int
fsevent_extents (void *handle, uint32_t count, uint64_t offset,
                 uint32_t flags, struct nbdkit_extents *extents)
{
  return image_extents (&image, count, offset, flags & NBDKIT_FLAG_REQ_ONE,
                        extents);
}

static int
fsevent_cache (void *handle, uint32_t count, uint64_t offset, uint32_t flags)
{
  return image_cache (&image, count, offset);
}

static struct nbdkit_plugin plugin = {
  .name              = "fsevent",
  .longname          = "nbdkit fsevent plugin",
  .version           = PACKAGE_VERSION,
  .description       = "serve an ext2/3/4 image with file-level write events",
  .unload            = fsevent_unload,
  .config            = fsevent_config,
  .config_complete   = fsevent_config_complete,
  .config_help       = fsevent_config_help,
  .magic_config_key  = "file",
  .get_ready         = fsevent_get_ready,
  .after_fork        = fsevent_after_fork,
  .dump_plugin       = fsevent_dump_plugin,
  .open              = fsevent_open,
  .close             = fsevent_close,
  .get_size          = fsevent_get_size,
  .block_size        = fsevent_block_size,
  .can_write         = fsevent_can_write,
  .can_flush         = fsevent_can_flush,
  .can_fua           = fsevent_can_fua,
  .can_multi_conn    = fsevent_can_multi_conn,
  .can_trim          = fsevent_can_trim,
  .can_zero          = fsevent_can_zero,
  .can_fast_zero     = fsevent_can_fast_zero,
  .can_extents       = fsevent_can_extents,
  .can_cache         = fsevent_can_cache,
  .pread             = fsevent_pread,
  .pwrite            = fsevent_pwrite,
  .flush             = fsevent_flush,
  .trim              = fsevent_trim,
  .zero              = fsevent_zero,
  .extents           = fsevent_extents,
  .cache             = fsevent_cache,
  .errno_is_preserved = 1,
};

NBDKIT_REGISTER_PLUGIN (plugin)
