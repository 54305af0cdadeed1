/* plugin/fsevent.c: the nbdkit plugin "fsevent", the engine's front end
 * over an image file or block device.
 *
 * It serves a disk image (MBR, GPT) or a bare ext2/3/4 filesystem
 * read-write.  This file holds the nbdkit glue: file=, the device
 * (image.c) and the callbacks; writes go to the engine (engine.c).  The
 * plugin never writes to the image by itself: only client writes change
 * it.
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

#include "device.h"
#include "engine.h"
#include "image.h"
#include "volumes.h"

#define THREAD_MODEL NBDKIT_THREAD_MODEL_PARALLEL

static char *filename;          /* file= */
static struct image image = { .fd = -1 };
static struct device device;

static int
fsevent_after_fork (void)
{
  return engine_after_fork ();
}

static void
fsevent_unload (void)
{
  engine_stop ();
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
  int r = engine_config (key, value);
  if (r == 1) {
    nbdkit_error ("unknown parameter '%s' (see nbdkit-fsevent-plugin(1))", key);
    return -1;
  }
  return r;
}

static int
fsevent_config_complete (void)
{
  if (filename == NULL) {
    nbdkit_error ("you must give the image: nbdkit fsevent file=IMAGE");
    return -1;
  }
  return engine_config_complete ();
}

#define fsevent_config_help \
  "[file=]IMAGE         (required) The disk or filesystem image, or block device.\n" \
  "script=PATH          Run PATH for every event (nbdkit-sh-plugin style).\n" \
  ENGINE_CONFIG_HELP

/* The device: the image file, through image.c. */
static int
dev_pread (struct device *d, void *buf, uint32_t count, uint64_t offset)
{
  return image_pread (d->opaque, buf, count, offset);
}

static int
dev_pwrite (struct device *d, const void *buf, uint32_t count,
            uint64_t offset, bool fua)
{
  return image_pwrite (d->opaque, buf, count, offset, fua);
}

static int
dev_zero (struct device *d, uint32_t count, uint64_t offset, bool may_trim,
          bool fast, bool fua)
{
  return image_zero (d->opaque, count, offset, may_trim, fast, fua);
}

static int
dev_trim (struct device *d, uint32_t count, uint64_t offset, bool fua)
{
  return image_trim (d->opaque, count, offset, fua);
}

static int
dev_flush (struct device *d)
{
  return image_flush (d->opaque);
}

static int
fsevent_get_ready (void)
{
  if (image_open (&image, filename) == -1)
    return -1;
  nbdkit_debug ("%s: %s", filename,
                image.is_block ? "block device" : "regular file");
  device = (struct device) {
    .name = filename, .size = image.size, .writable = image.writable,
    .fd = image.fd,
    .pread = dev_pread, .pwrite = dev_pwrite, .zero = dev_zero,
    .trim = dev_trim, .flush = dev_flush, .opaque = &image,
  };
  return engine_start (&device);
}

static void
fsevent_dump_plugin (void)
{
  printf ("fsevent_version=%s\n", PACKAGE_VERSION);
}

static void *
fsevent_open (int readonly)
{
  return engine_open (nbdkit_export_name ());
}

static void
fsevent_close (void *handle)
{
  engine_close (handle);
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
  *preferred = engine_block_size ();
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
  if (image_pread (&image, buf, count, offset) == -1)
    return -1;
  volumes_patch_read (buf, count, offset);    /* ext2: held metadata */
  return 0;
}

static int
fsevent_pwrite (void *handle, const void *buf, uint32_t count,
                uint64_t offset, uint32_t flags)
{
  return engine_pwrite (handle, buf, count, offset, flags);
}

static int
fsevent_flush (void *handle, uint32_t flags)
{
  return engine_flush (handle);
}

static int
fsevent_trim (void *handle, uint32_t count, uint64_t offset, uint32_t flags)
{
  return engine_trim (handle, count, offset, flags);
}

static int
fsevent_zero (void *handle, uint32_t count, uint64_t offset, uint32_t flags)
{
  return engine_zero (handle, count, offset, flags);
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
