/* fs/util.c: small helpers shared by fs/ and the plugin. */
#include <config.h>

#include <errno.h>
#include <stdlib.h>
#include <unistd.h>

#include "util.h"

int
fsev_grow (void **p, size_t *cap, size_t need, size_t elem)
{
  if (need <= *cap)
    return 0;
  size_t ncap = *cap ? *cap : 256;
  while (ncap < need) {
    if (ncap > SIZE_MAX / 2)
      return -1;
    ncap *= 2;
  }
  if (elem && ncap > SIZE_MAX / elem)
    return -1;
  void *np = realloc (*p, ncap * elem);
  if (np == NULL)
    return -1;
  *p = np;
  *cap = ncap;
  return 0;
}

int
fsev_pread_full (int fd, void *buf, size_t count, uint64_t offset)
{
  char *p = buf;

  while (count > 0) {
    ssize_t r = pread (fd, p, count, offset);
    if (r == -1) {
      if (errno == EINTR)
        continue;
      return -1;
    }
    if (r == 0) {
      errno = EIO;
      return -1;
    }
    p += r;
    count -= r;
    offset += r;
  }
  return 0;
}
