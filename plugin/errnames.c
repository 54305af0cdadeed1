/* plugin/errnames.c: errno names. */
#include <config.h>

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "errnames.h"

static const struct { int err; const char *name; } names[] = {
  { EPERM, "EPERM" }, { ENOENT, "ENOENT" }, { EIO, "EIO" }, { E2BIG, "E2BIG" },
  { ESRCH, "ESRCH" }, { EINTR, "EINTR" }, { ECHILD, "ECHILD" },
  { ENXIO, "ENXIO" }, { EBADF, "EBADF" }, { EAGAIN, "EAGAIN" },
  { ENOMEM, "ENOMEM" }, { EACCES, "EACCES" }, { EFAULT, "EFAULT" },
  { EBUSY, "EBUSY" }, { EEXIST, "EEXIST" }, { EXDEV, "EXDEV" },
  { ENODEV, "ENODEV" }, { ENOTDIR, "ENOTDIR" }, { EISDIR, "EISDIR" },
  { EINVAL, "EINVAL" }, { ENFILE, "ENFILE" }, { EMFILE, "EMFILE" },
  { ETXTBSY, "ETXTBSY" }, { EFBIG, "EFBIG" }, { ENOSPC, "ENOSPC" },
  { ESPIPE, "ESPIPE" }, { EROFS, "EROFS" }, { EMLINK, "EMLINK" },
  { EPIPE, "EPIPE" }, { ERANGE, "ERANGE" }, { EDEADLK, "EDEADLK" },
  { ENAMETOOLONG, "ENAMETOOLONG" }, { ENOLCK, "ENOLCK" },
  { ENOSYS, "ENOSYS" }, { ENOTEMPTY, "ENOTEMPTY" }, { ELOOP, "ELOOP" },
  { ENOTSUP, "ENOTSUP" }, { EOPNOTSUPP, "EOPNOTSUPP" },
  { EOVERFLOW, "EOVERFLOW" }, { ESHUTDOWN, "ESHUTDOWN" },
  { ETIMEDOUT, "ETIMEDOUT" }, { EDQUOT, "EDQUOT" }, { ECANCELED, "ECANCELED" },
};

const char *
errno_name (int err)
{
  static __thread char buf[16];
  for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
    if (names[i].err == err)
      return names[i].name;
  snprintf (buf, sizeof buf, "E%d", err);
  return buf;
}

int
errno_from_name (const char *name, int len)
{
  for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
    if ((int) strlen (names[i].name) == len &&
        strncmp (names[i].name, name, len) == 0)
      return names[i].err;
  return 0;
}
