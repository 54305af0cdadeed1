/* plugin/image.c: raw I/O on the served image.
 *
 * One file descriptor is shared by every connection and thread: pread
 * and pwrite carry their own offsets, so the thread model can stay
 * PARALLEL, and FLUSH (fdatasync) covers writes from every connection,
 * which is what makes can_multi_conn true.
 */
#include <config.h>

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <linux/falloc.h>
#include <linux/fs.h>

#define NBDKIT_API_VERSION 2
#include <nbdkit-plugin.h>

#include "image.h"
#include "util.h"

int
image_open (struct image *img, const char *path)
{
  struct stat st;

  memset (img, 0, sizeof *img);
  img->fd = -1;
  img->path = strdup (path);
  if (img->path == NULL) {
    nbdkit_error ("strdup: %m");
    return -1;
  }

  img->fd = open (path, O_RDWR | O_CLOEXEC | O_NOCTTY);
  if (img->fd >= 0)
    img->writable = true;
  else if (errno == EROFS || errno == EACCES || errno == EPERM) {
    /* Serve it read-only: nbdkit then refuses writes to the client. */
    img->fd = open (path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
  }
  if (img->fd < 0) {
    nbdkit_error ("open: %s: %m", path);
    goto err;
  }

  if (fstat (img->fd, &st) == -1) {
    nbdkit_error ("fstat: %s: %m", path);
    goto err;
  }
  if (S_ISBLK (st.st_mode)) {
    uint64_t bytes;
    if (ioctl (img->fd, BLKGETSIZE64, &bytes) == -1) {
      nbdkit_error ("ioctl BLKGETSIZE64: %s: %m", path);
      goto err;
    }
    img->is_block = true;
    img->size = (int64_t) bytes;
  }
  else if (S_ISREG (st.st_mode))
    img->size = st.st_size;
  else {
    nbdkit_error ("%s: not a regular file or a block device", path);
    errno = EINVAL;
    goto err;
  }

  img->can_punch_hole = !img->is_block;
  img->can_zero_range = !img->is_block;
  return 0;

 err:
  image_close (img);
  return -1;
}

void
image_close (struct image *img)
{
  if (img->fd >= 0)
    close (img->fd);
  img->fd = -1;
  free (img->path);
  img->path = NULL;
}

int
image_pread (struct image *img, void *buf, uint32_t count, uint64_t offset)
{
  if (fsev_pread_full (img->fd, buf, count, offset) == -1) {
    nbdkit_error ("pread: %m");
    return -1;
  }
  return 0;
}

int
image_flush (struct image *img)
{
  if (fdatasync (img->fd) == -1) {
    nbdkit_error ("fdatasync: %m");
    return -1;
  }
  return 0;
}

int
image_pwrite (struct image *img, const void *buf,
              uint32_t count, uint64_t offset, bool fua)
{
  const char *p = buf;

  while (count > 0) {
    ssize_t r = pwrite (img->fd, p, count, offset);
    if (r == -1) {
      if (errno == EINTR)
        continue;
      nbdkit_error ("pwrite: %m");
      return -1;
    }
    p += r;
    count -= r;
    offset += r;
  }
  return fua ? image_flush (img) : 0;
}

/* Try fallocate(MODE); false with errno set if it did not happen. */
static bool
try_fallocate (struct image *img, int mode, uint32_t count, uint64_t offset)
{
  if (fallocate (img->fd, mode, offset, count) == 0)
    return true;
  return false;
}

static bool
unsupported (int err)
{
  return err == EOPNOTSUPP || err == ENOSYS || err == ENODEV;
}

int
image_trim (struct image *img, uint32_t count, uint64_t offset, bool fua)
{
  if (img->is_block) {
    uint64_t range[2] = { offset, count };
    /* BLKDISCARD needs sector alignment; an unaligned trim is a no-op,
     * which NBD allows (trim is advisory).
     */
    if ((offset | count) & 511)
      return 0;
    if (ioctl (img->fd, BLKDISCARD, range) == -1 && !unsupported (errno)) {
      nbdkit_error ("ioctl BLKDISCARD: %m");
      return -1;
    }
  }
  else if (img->can_punch_hole) {
    if (!try_fallocate (img, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
                        count, offset)) {
      if (!unsupported (errno)) {
        nbdkit_error ("fallocate: punch hole: %m");
        return -1;
      }
      img->can_punch_hole = false;
    }
  }
  return fua ? image_flush (img) : 0;
}

int
image_zero (struct image *img, uint32_t count, uint64_t offset,
            bool may_trim, bool fast, bool fua)
{
  /* A punched hole reads back as zeroes. */
  if (may_trim && img->can_punch_hole) {
    if (try_fallocate (img, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
                       count, offset))
      return fua ? image_flush (img) : 0;
    if (!unsupported (errno)) {
      nbdkit_error ("fallocate: punch hole: %m");
      return -1;
    }
    img->can_punch_hole = false;
  }

  if (img->can_zero_range) {
    if (try_fallocate (img, FALLOC_FL_ZERO_RANGE, count, offset))
      return fua ? image_flush (img) : 0;
    if (!unsupported (errno)) {
      nbdkit_error ("fallocate: zero range: %m");
      return -1;
    }
    img->can_zero_range = false;
  }

  /* Filesystems without ZERO_RANGE (tmpfs): punch, then allocate again. */
  if (img->can_punch_hole) {
    if (try_fallocate (img, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
                       count, offset)) {
      if (!try_fallocate (img, 0, count, offset)) {
        nbdkit_error ("fallocate: %m");
        return -1;
      }
      return fua ? image_flush (img) : 0;
    }
    if (!unsupported (errno)) {
      nbdkit_error ("fallocate: punch hole: %m");
      return -1;
    }
    img->can_punch_hole = false;
  }

  if (img->is_block && !fast) {
    uint64_t range[2] = { offset, count };
    if (((offset | count) & 511) == 0 &&
        ioctl (img->fd, BLKZEROOUT, range) == 0)
      return fua ? image_flush (img) : 0;
  }

  /* nbdkit falls back to writing zeroes (or, for a fast zero, tells the
   * client that zeroing would not be fast).
   */
  errno = EOPNOTSUPP;
  return -1;
}

int
image_extents (struct image *img, uint32_t count, uint64_t offset,
               bool req_one, struct nbdkit_extents *extents)
{
  const uint64_t end = offset + count;

  while (offset < end) {
    off_t data = lseek (img->fd, offset, SEEK_DATA);
    if (data == -1) {
      if (errno != ENXIO) {
        nbdkit_error ("lseek: SEEK_DATA: %m");
        return -1;
      }
      /* No data from here to the end of the file: one hole. */
      return nbdkit_add_extent (extents, offset, end - offset,
                                NBDKIT_EXTENT_HOLE | NBDKIT_EXTENT_ZERO);
    }
    if ((uint64_t) data > offset) {
      if (nbdkit_add_extent (extents, offset, data - offset,
                             NBDKIT_EXTENT_HOLE | NBDKIT_EXTENT_ZERO) == -1)
        return -1;
      if (req_one)
        return 0;
      offset = data;
      if (offset >= end)
        break;
    }

    off_t hole = lseek (img->fd, offset, SEEK_HOLE);
    if (hole == -1) {
      nbdkit_error ("lseek: SEEK_HOLE: %m");
      return -1;
    }
    if ((uint64_t) hole <= offset) {    /* should not happen; be safe */
      errno = EIO;
      nbdkit_error ("lseek: SEEK_HOLE went backwards");
      return -1;
    }
    if (nbdkit_add_extent (extents, offset, hole - offset, 0) == -1)
      return -1;
    if (req_one)
      return 0;
    offset = hole;
  }
  return 0;
}

int
image_cache (struct image *img, uint32_t count, uint64_t offset)
{
  int r = posix_fadvise (img->fd, offset, count, POSIX_FADV_WILLNEED);
  if (r != 0) {
    errno = r;
    nbdkit_error ("posix_fadvise: %m");
    return -1;
  }
  return 0;
}
