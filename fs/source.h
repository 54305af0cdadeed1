/* fs/source.h: where the filesystem's bytes come from.
 *
 * A source is a read callback over a device of a known size.  The
 * model never reads the image any other way, so a partition inside a
 * disk, the layer below an nbdkit filter, or (later) an overlay of
 * committed journal blocks can sit underneath without the model
 * knowing.
 */
#ifndef FSEVENT_SOURCE_H
#define FSEVENT_SOURCE_H

#include <stddef.h>
#include <stdint.h>

#include <ext2fs/ext2fs.h>

struct fsev_source {
  /* Read COUNT bytes at OFFSET (relative to the filesystem's start).
   * Returns 0, or -1 with errno set.  Reads past SIZE never happen.
   */
  int (*read) (void *opaque, void *buf, size_t count, uint64_t offset);
  void *opaque;
  uint64_t size;                /* bytes available to the filesystem */
};

/* A source reading file descriptor FD from byte OFFSET on, for SIZE
 * bytes.  FDSRC is caller-owned storage that must outlive the source.
 */
struct fsev_fd_source {
  int fd;
  uint64_t offset;
};
extern void fsev_source_from_fd (struct fsev_source *src,
                                 struct fsev_fd_source *fdsrc,
                                 int fd, uint64_t offset, uint64_t size);

/* Open the filesystem on SRC read-only with libext2fs, through an
 * io_manager that reads only from SRC and refuses every write.
 * FLAGS are extra ext2fs_open2 flags.
 */
extern errcode_t fsev_source_open_fs (const struct fsev_source *src,
                                      int flags, ext2_filsys *ret);

#endif /* FSEVENT_SOURCE_H */
