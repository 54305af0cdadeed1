/* fs/fserror.c: libext2fs error codes as text. */
#include <config.h>

#include <pthread.h>

#include <et/com_err.h>
#include <ext2fs/ext2fs.h>

#include "fserror.h"

static pthread_once_t once = PTHREAD_ONCE_INIT;

static void
load_table (void)
{
  initialize_ext2_error_table ();
}

const char *
fsev_strerror (errcode_t e)
{
  pthread_once (&once, load_table);
  return error_message (e);
}
