/* plugin/device.h: what the engine serves, whichever front end it has.
 *
 * The plugin's device is the image file (image.c); the filter's is the
 * layer below it in nbdkit.  The engine reads the filesystem and passes
 * the guest's writes through these calls only, so one engine serves
 * both.  Every call returns 0, or -1 with errno set and the error
 * already reported with nbdkit_error.
 */
#ifndef FSEVENT_DEVICE_H
#define FSEVENT_DEVICE_H

#include <stdbool.h>
#include <stdint.h>

struct device {
  const char *name;             /* for messages: the image, or "the plugin" */
  int64_t size;                 /* bytes */
  bool writable;
  int fd;                       /* the plugin's image file; -1 in the filter */

  int (*pread) (struct device *d, void *buf, uint32_t count, uint64_t offset);
  int (*pwrite) (struct device *d, const void *buf, uint32_t count,
                 uint64_t offset, bool fua);
  int (*zero) (struct device *d, uint32_t count, uint64_t offset,
               bool may_trim, bool fast, bool fua);
  int (*trim) (struct device *d, uint32_t count, uint64_t offset, bool fua);
  int (*flush) (struct device *d);
  void *opaque;                 /* the front end's */
};

/* Read COUNT bytes at OFFSET however large COUNT is. */
static inline int
device_read (struct device *d, void *buf, uint64_t count, uint64_t offset)
{
  for (uint64_t done = 0; done < count; ) {
    uint32_t n = count - done > (1u << 30) ? (1u << 30) : (uint32_t) (count - done);
    if (d->pread (d, (char *) buf + done, n, offset + done) == -1)
      return -1;
    done += n;
  }
  return 0;
}

#endif /* FSEVENT_DEVICE_H */
