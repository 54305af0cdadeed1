/* plugin/filter.c: the nbdkit filter "fsevent", the engine's front end
 * over any nbdkit plugin (file, memory, nbd, sh, curl, ...).
 *
 * The engine needs one view of the device that lives as long as it
 * does: it maps the filesystems at start-up, before any client comes,
 * and host tools read files through the control socket between
 * requests.  So the filter opens one shared context into the plugin
 * after the fork and sends every client request through it, instead of
 * a context per connection.  The layer below must therefore not serve
 * different content per export name, and nothing but this filter
 * should write to what it serves.
 */
#include <config.h>

#include <errno.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <nbdkit-filter.h>

#include "device.h"
#include "engine.h"
#include "volumes.h"

#define THREAD_MODEL NBDKIT_THREAD_MODEL_PARALLEL

static nbdkit_next *below;      /* the shared context into the plugin */
static struct device device;

static void
fsevent_unload (void)
{
  engine_stop ();
}

/* Parameters the plugin below may share with the engine go to the
 * plugin: script= is the sh and eval plugins' script.  Every engine
 * parameter can be given as fsevent-KEY= to reach the engine whatever
 * the plugin.
 */
static int
fsevent_config (nbdkit_next_config *next, nbdkit_backend *nxdata,
                const char *key, const char *value)
{
  if (strncmp (key, "fsevent-", 8) == 0 && key[8]) {
    int r = engine_config (key + 8, value);
    if (r == 1) {
      nbdkit_error ("unknown parameter '%s' (see nbdkit-fsevent-filter(1))",
                    key);
      return -1;
    }
    return r;
  }
  if (strcmp (key, "script") == 0)
    return next (nxdata, key, value);
  int r = engine_config (key, value);
  if (r == 1)
    return next (nxdata, key, value);   /* the plugin's parameter */
  return r;
}

static int
fsevent_config_complete (nbdkit_next_config_complete *next,
                         nbdkit_backend *nxdata)
{
  if (engine_config_complete () == -1)
    return -1;
  return next (nxdata);
}

static int
fsevent_thread_model (void)
{
  return THREAD_MODEL;
}

/* The device: the plugin below, through the shared context. */
static int
dev_pread (struct device *d, void *buf, uint32_t count, uint64_t offset)
{
  int err = 0;
  if (below->pread (below, buf, count, offset, 0, &err) == -1) {
    errno = err ? err : EIO;
    return -1;
  }
  return 0;
}

static int
dev_flush (struct device *d)
{
  int err = 0;
  if (below->can_flush (below) != 1)
    return 0;
  if (below->flush (below, 0, &err) == -1) {
    errno = err ? err : EIO;
    return -1;
  }
  return 0;
}

/* FUA where the plugin can do it, else a flush after the write. */
static int
fua_flags (bool fua, bool *flush_after)
{
  *flush_after = false;
  if (!fua)
    return 0;
  if (below->can_fua (below) > NBDKIT_FUA_NONE)
    return NBDKIT_FLAG_FUA;
  *flush_after = true;
  return 0;
}

static int
dev_pwrite (struct device *d, const void *buf, uint32_t count,
            uint64_t offset, bool fua)
{
  int err = 0;
  bool flush_after;
  uint32_t flags = fua_flags (fua, &flush_after);
  if (below->pwrite (below, buf, count, offset, flags, &err) == -1) {
    errno = err ? err : EIO;
    return -1;
  }
  return flush_after ? dev_flush (d) : 0;
}

static int
dev_zero (struct device *d, uint32_t count, uint64_t offset, bool may_trim,
          bool fast, bool fua)
{
  int err = 0;
  bool flush_after;
  uint32_t flags = fua_flags (fua, &flush_after);
  if (may_trim)
    flags |= NBDKIT_FLAG_MAY_TRIM;
  if (fast)
    flags |= NBDKIT_FLAG_FAST_ZERO;
  if (below->zero (below, count, offset, flags, &err) == -1) {
    errno = err ? err : EIO;
    return -1;
  }
  return flush_after ? dev_flush (d) : 0;
}

static int
dev_trim (struct device *d, uint32_t count, uint64_t offset, bool fua)
{
  int err = 0;
  bool flush_after;
  uint32_t flags = fua_flags (fua, &flush_after);
  if (below->trim (below, count, offset, flags, &err) == -1) {
    errno = err ? err : EIO;
    return -1;
  }
  return flush_after ? dev_flush (d) : 0;
}

static int
fsevent_after_fork (nbdkit_backend *backend)
{
  below = nbdkit_next_context_open (backend, 0, "", 1);
  if (below == NULL) {
    nbdkit_error ("cannot open the plugin below the fsevent filter");
    return -1;
  }
  if (below->prepare (below) == -1) {
    nbdkit_next_context_close (below);
    below = NULL;
    nbdkit_error ("cannot prepare the plugin below the fsevent filter");
    return -1;
  }
  int64_t size = below->get_size (below);
  if (size == -1) {
    nbdkit_error ("the plugin below the fsevent filter has no size");
    return -1;
  }
  device = (struct device) {
    .name = "the plugin below",
    .size = size, .writable = below->can_write (below) == 1, .fd = -1,
    .pread = dev_pread, .pwrite = dev_pwrite, .zero = dev_zero,
    .trim = dev_trim, .flush = dev_flush,
  };
  if (engine_start (&device) == -1)
    return -1;
  return engine_after_fork ();
}

static void
fsevent_cleanup (nbdkit_backend *backend)
{
  engine_stop ();
  if (below) {
    below->finalize (below);
    nbdkit_next_context_close (below);
    below = NULL;
  }
}

/* A connection gets no context of its own into the plugin: see above. */
static void *
fsevent_open (nbdkit_next_open *next, nbdkit_context *context,
              int readonly, const char *exportname, int is_tls)
{
  return engine_open (exportname);
}

static void
fsevent_close (void *handle)
{
  engine_close (handle);
}

static int64_t
fsevent_get_size (nbdkit_next *next, void *handle)
{
  return device.size;
}

static const char *
fsevent_export_description (nbdkit_next *next, void *handle)
{
  return below->export_description (below);
}

static int
fsevent_block_size (nbdkit_next *next, void *handle, uint32_t *minimum,
                    uint32_t *preferred, uint32_t *maximum)
{
  if (below->block_size (below, minimum, preferred, maximum) == -1)
    return -1;
  if (*minimum == 0) {          /* the plugin says nothing: ours */
    *minimum = 1;
    *maximum = 0xffffffff;
  }
  /* The filesystem's block is the unit the guest should write in. */
  uint32_t bs = engine_block_size ();
  if (bs > *preferred && bs <= *maximum)
    *preferred = bs;
  return 0;
}

#define PASS(name)                                          \
  static int                                                \
  fsevent_##name (nbdkit_next *next, void *handle)          \
  {                                                         \
    return below->name (below);                             \
  }
PASS (can_write)
PASS (can_flush)
PASS (is_rotational)
PASS (can_trim)
PASS (can_zero)
PASS (can_fast_zero)
PASS (can_extents)
PASS (can_fua)
PASS (can_multi_conn)
PASS (can_cache)

static int
fsevent_pread (nbdkit_next *next, void *handle, void *buf, uint32_t count,
               uint64_t offset, uint32_t flags, int *err)
{
  if (below->pread (below, buf, count, offset, flags, err) == -1)
    return -1;
  volumes_patch_read (buf, count, offset);    /* ext2: held metadata */
  return 0;
}

static int
fsevent_pwrite (nbdkit_next *next, void *handle, const void *buf,
                uint32_t count, uint64_t offset, uint32_t flags, int *err)
{
  if (engine_pwrite (handle, buf, count, offset, flags) == -1) {
    *err = errno;
    return -1;
  }
  return 0;
}

static int
fsevent_flush (nbdkit_next *next, void *handle, uint32_t flags, int *err)
{
  if (engine_flush (handle) == -1) {
    *err = errno;
    return -1;
  }
  return 0;
}

static int
fsevent_trim (nbdkit_next *next, void *handle, uint32_t count,
              uint64_t offset, uint32_t flags, int *err)
{
  if (engine_trim (handle, count, offset, flags) == -1) {
    *err = errno;
    return -1;
  }
  return 0;
}

static int
fsevent_zero (nbdkit_next *next, void *handle, uint32_t count,
              uint64_t offset, uint32_t flags, int *err)
{
  if (engine_zero (handle, count, offset, flags) == -1) {
    *err = errno;
    return -1;
  }
  return 0;
}

static int
fsevent_extents (nbdkit_next *next, void *handle, uint32_t count,
                 uint64_t offset, uint32_t flags,
                 struct nbdkit_extents *extents, int *err)
{
  return below->extents (below, count, offset, flags, extents, err);
}

static int
fsevent_cache (nbdkit_next *next, void *handle, uint32_t count,
               uint64_t offset, uint32_t flags, int *err)
{
  return below->cache (below, count, offset, flags, err);
}

static struct nbdkit_filter filter = {
  .name               = "fsevent",
  .longname           = "nbdkit fsevent filter",
  .unload             = fsevent_unload,
  .config             = fsevent_config,
  .config_complete    = fsevent_config_complete,
  .config_help        =
    "fsevent-script=PATH  Run PATH for every event (script= is the plugin's).\n"
    "fsevent-KEY=VALUE    Any parameter below, if the plugin has a KEY too.\n"
    ENGINE_CONFIG_HELP,
  .thread_model       = fsevent_thread_model,
  .after_fork         = fsevent_after_fork,
  .cleanup            = fsevent_cleanup,
  .open               = fsevent_open,
  .close              = fsevent_close,
  .get_size           = fsevent_get_size,
  .export_description = fsevent_export_description,
  .block_size         = fsevent_block_size,
  .can_write          = fsevent_can_write,
  .can_flush          = fsevent_can_flush,
  .is_rotational      = fsevent_is_rotational,
  .can_trim           = fsevent_can_trim,
  .can_zero           = fsevent_can_zero,
  .can_fast_zero      = fsevent_can_fast_zero,
  .can_extents        = fsevent_can_extents,
  .can_fua            = fsevent_can_fua,
  .can_multi_conn     = fsevent_can_multi_conn,
  .can_cache          = fsevent_can_cache,
  .pread              = fsevent_pread,
  .pwrite             = fsevent_pwrite,
  .flush              = fsevent_flush,
  .trim               = fsevent_trim,
  .zero               = fsevent_zero,
  .extents            = fsevent_extents,
  .cache              = fsevent_cache,
};

NBDKIT_REGISTER_FILTER (filter)
