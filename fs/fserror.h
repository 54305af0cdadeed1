/* fs/fserror.h: libext2fs error codes as text. */
#ifndef FSEVENT_FSERROR_H
#define FSEVENT_FSERROR_H

#include <ext2fs/ext2fs.h>

/* Like error_message, but with the ext2 error table loaded first, so
 * that codes read "Bad magic number in super-block", not "Unknown code".
 */
extern const char *fsev_strerror (errcode_t e);

#endif
