/* plugin/image.h: raw I/O on the served image (a file or a block device).
 *
 * These are the plain serving operations, with the semantics of
 * nbdkit's file plugin.  Every function returns 0 on success or -1 with
 * errno set and the error already reported with nbdkit_error.
 */
#ifndef FSEVENT_IMAGE_H
#define FSEVENT_IMAGE_H

#include <stdbool.h>
#include <stdint.h>

struct nbdkit_extents;

struct image {
  char *path;
  int fd;
  bool writable;        /* opened O_RDWR */
  bool is_block;        /* a block device, not a regular file */
  int64_t size;         /* bytes */
  /* Capabilities discovered at run time; cleared when the kernel says no. */
  bool can_punch_hole;
  bool can_zero_range;
};

extern int image_open (struct image *img, const char *path);
extern void image_close (struct image *img);

extern int image_pread (struct image *img, void *buf,
                        uint32_t count, uint64_t offset);
extern int image_pwrite (struct image *img, const void *buf,
                         uint32_t count, uint64_t offset, bool fua);
extern int image_flush (struct image *img);
extern int image_trim (struct image *img,
                       uint32_t count, uint64_t offset, bool fua);
extern int image_zero (struct image *img, uint32_t count, uint64_t offset,
                       bool may_trim, bool fast, bool fua);
extern int image_extents (struct image *img, uint32_t count, uint64_t offset,
                          bool req_one, struct nbdkit_extents *extents);
extern int image_cache (struct image *img, uint32_t count, uint64_t offset);

#endif /* FSEVENT_IMAGE_H */
