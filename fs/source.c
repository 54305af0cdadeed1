/* fs/source.c: a read-only libext2fs io_manager over a fsev_source.
 *
 * libext2fs names its device with a string; ours carries the address
 * of the source ("fsevent-source:0x..."), the technique nbdkit's ext2
 * filter uses to put libext2fs over the layer below it.  Nothing is
 * cached here: the caller keeps its own model and reads through this
 * only while building it.
 */
#include <config.h>

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <ext2fs/ext2fs.h>

#include "source.h"
#include "util.h"

#define NAME_PREFIX "fsevent-source:"

static int
fd_read (void *opaque, void *buf, size_t count, uint64_t offset)
{
  const struct fsev_fd_source *s = opaque;
  return fsev_pread_full (s->fd, buf, count, s->offset + offset);
}

void
fsev_source_from_fd (struct fsev_source *src, struct fsev_fd_source *fdsrc,
                     int fd, uint64_t offset, uint64_t size)
{
  fdsrc->fd = fd;
  fdsrc->offset = offset;
  src->read = fd_read;
  src->opaque = fdsrc;
  src->size = size;
}

static struct struct_io_manager source_io_manager;

static errcode_t
src_open (const char *name, int flags, io_channel *channel)
{
  const struct fsev_source *src;
  io_channel io;
  void *p;

  if (strncmp (name, NAME_PREFIX, strlen (NAME_PREFIX)) != 0 ||
      sscanf (name + strlen (NAME_PREFIX), "%p", &p) != 1 || p == NULL)
    return EXT2_ET_BAD_DEVICE_NAME;
  if (flags & IO_FLAG_RW)
    return EXT2_ET_RO_UNSUPP_FEATURE;   /* this manager never writes */
  src = p;

  io = calloc (1, sizeof *io);
  if (io == NULL)
    return EXT2_ET_NO_MEMORY;
  io->name = strdup (name);
  if (io->name == NULL) {
    free (io);
    return EXT2_ET_NO_MEMORY;
  }
  io->magic = EXT2_ET_MAGIC_IO_CHANNEL;
  io->manager = &source_io_manager;
  io->block_size = 1024;
  io->refcount = 1;
  io->private_data = (void *) src;
  *channel = io;
  return 0;
}

static errcode_t
src_close (io_channel io)
{
  if (--io->refcount > 0)
    return 0;
  free (io->name);
  free (io);
  return 0;
}

static errcode_t
src_set_blksize (io_channel io, int blksize)
{
  if (blksize <= 0)
    return EXT2_ET_INVALID_ARGUMENT;
  io->block_size = blksize;
  return 0;
}

/* COUNT < 0 means -COUNT bytes, as everywhere in libext2fs. */
static errcode_t
src_read_blk64 (io_channel io, unsigned long long block, int count, void *data)
{
  const struct fsev_source *src = io->private_data;
  uint64_t offset, bytes;

  bytes = count < 0 ? (uint64_t) -(int64_t) count
                    : (uint64_t) count * io->block_size;
  if (block > UINT64_MAX / io->block_size)
    return EXT2_ET_LLSEEK_FAILED;
  offset = block * io->block_size;
  if (offset > src->size || bytes > src->size - offset) {
    /* Past the end of the device: what libext2fs calls a short read. */
    memset (data, 0, bytes);
    return EXT2_ET_SHORT_READ;
  }
  if (src->read (src->opaque, data, bytes, offset) == -1)
    return errno ? errno : EIO;
  return 0;
}

static errcode_t
src_read_blk (io_channel io, unsigned long block, int count, void *data)
{
  return src_read_blk64 (io, block, count, data);
}

static errcode_t
src_write_blk64 (io_channel io, unsigned long long block, int count,
                 const void *data)
{
  return EXT2_ET_RO_UNSUPP_FEATURE;
}

static errcode_t
src_write_blk (io_channel io, unsigned long block, int count,
               const void *data)
{
  return EXT2_ET_RO_UNSUPP_FEATURE;
}

static errcode_t
src_write_byte (io_channel io, unsigned long offset, int count,
                const void *data)
{
  return EXT2_ET_RO_UNSUPP_FEATURE;
}

static errcode_t
src_flush (io_channel io)
{
  return 0;
}

static errcode_t
src_set_option (io_channel io, const char *option, const char *arg)
{
  return EXT2_ET_INVALID_ARGUMENT;
}

static struct struct_io_manager source_io_manager = {
  .magic = EXT2_ET_MAGIC_IO_MANAGER,
  .name = "fsevent source I/O manager",
  .open = src_open,
  .close = src_close,
  .set_blksize = src_set_blksize,
  .read_blk = src_read_blk,
  .write_blk = src_write_blk,
  .flush = src_flush,
  .write_byte = src_write_byte,
  .set_option = src_set_option,
  .read_blk64 = src_read_blk64,
  .write_blk64 = src_write_blk64,
};

errcode_t
fsev_source_open_fs (const struct fsev_source *src, int flags,
                     ext2_filsys *ret)
{
  char name[64];

  snprintf (name, sizeof name, NAME_PREFIX "%p", (void *) src);
  /* No EXT2_FLAG_RW: libext2fs itself then never tries to write. */
  return ext2fs_open2 (name, NULL, (flags & ~EXT2_FLAG_RW) | EXT2_FLAG_64BITS,
                       0, 0, &source_io_manager, ret);
}
