/* fsevent.h: the handler ABI of nbdkit-fsevent.
 *
 * A handler is a shared object that the fsevent plugin loads with
 * handler=PATH.so.  It sees file-level events derived from the block
 * writes a client makes to an ext2/3/4 image and, in the "before"
 * phase, can veto them: the NBD request then fails and nothing of it
 * reaches the image.  See fsevent-handler(3).
 *
 * Compatibility: structures only ever grow at the end, and carry their
 * size.  A handler built against version 1 keeps working with later
 * plugins: callbacks it does not have are never called, event fields it
 * does not know are never read by it.
 */
#ifndef FSEVENT_H
#define FSEVENT_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define FSEVENT_API_VERSION 1

enum fsevent_phase {
  FSEVENT_BEFORE = 0,          /* decided before the change is committed */
  FSEVENT_AFTER = 1,           /* the change was attempted: see status */
};

/* Where a write's data comes from. */
enum fsevent_direction {
  FSEVENT_INPLACE = 0,         /* overwrite of a block the file already owns */
  FSEVENT_COMMIT = 1,          /* reserved: new data, decided at the journal commit */
  FSEVENT_JOURNAL = 2,         /* reserved: data logged in the journal (data=journal) */
};

/* What the client asked for. */
enum fsevent_operation {
  FSEVENT_OP_WRITE = 0,        /* buffer holds the new bytes */
  FSEVENT_OP_ZERO = 1,         /* the range becomes zeroes; buffer is NULL */
  FSEVENT_OP_TRIM = 2,         /* the range is discarded; buffer is NULL */
};

/* The NBD connection an event came from ("handle" in CBFS terms: a
 * block device has no processes or file handles).
 */
struct fsevent_handle_info {
  uint64_t connection_id;      /* unique for the life of the plugin */
  const char *export_name;     /* as the client asked for it */
  int64_t pid, uid, gid;       /* the client process, -1 if unknown */
};

struct fsevent_write {
  size_t struct_size;          /* sizeof (struct fsevent_write) of the plugin */
  enum fsevent_phase phase;
  enum fsevent_direction direction;
  enum fsevent_operation operation;
  unsigned partition;          /* 0 for a bare filesystem image */
  uint32_t ino;
  const char *file_name;       /* first path, "" if the inode has none */
  const char *const *file_names; /* every path (hard links), NULL-terminated */
  uint64_t position;           /* byte offset in the file */
  const void *buffer;          /* the bytes to write (NULL for zero, trim) */
  uint64_t bytes_to_write;
  uint64_t device_offset;      /* where the bytes go on the device */
  /* After phase only. */
  uint64_t bytes_written;      /* bytes_to_write, or 0 if it failed */
  int status;                  /* 0, or the errno the request failed with */
  /* Before phase: set to an errno (e.g. EPERM) to veto.  Ignored after. */
  int result_code;
  /* Per inode, shared by every handler call about it; lives until the
   * inode is freed or the plugin unloads (then free_file_context).
   */
  void **file_context;
  /* Per (connection, inode); freed with free_handle_context when the
   * connection closes.
   */
  void **handle_context;
  const struct fsevent_handle_info *handle_info;
};

struct fsevent_handler {
  /* Filled by FSEVENT_REGISTER_HANDLER. */
  int api_version;
  size_t struct_size;

  const char *name;            /* required: also the prefix of its parameters */
  const char *description;

  /* Parameters NAME.KEY=VALUE on the nbdkit command line (after the
   * handler= that loads it) reach config as KEY, VALUE.  Return 0, or
   * -1 to make nbdkit exit with an error.
   */
  int (*config) (const char *key, const char *value);
  int (*config_complete) (void);
  const char *config_help;

  /* Write events.  Return 0; -1 means the handler failed (what that
   * means is the plugin's on-handler-error= setting).  To veto, set
   * ev->result_code in the before phase and return 0.
   */
  int (*before_write) (struct fsevent_write *ev);
  int (*after_write) (struct fsevent_write *ev);

  void (*free_file_context) (void *context, uint32_t ino);
  void (*free_handle_context) (void *context, uint32_t ino);
  void (*unload) (void);

  /* Room for the events to come (create, delete, rename, link, set
   * size, set attributes, lock, unlock): new callbacks are added after
   * this point, so version 1 handlers keep working.
   */
};

/* Every handler defines exactly one of these. */
#define FSEVENT_REGISTER_HANDLER(handler)                               \
  __attribute__ ((visibility ("default")))                              \
  const struct fsevent_handler *                                        \
  fsevent_handler_init (void)                                           \
  {                                                                     \
    (handler).api_version = FSEVENT_API_VERSION;                        \
    (handler).struct_size = sizeof (handler);                           \
    return &(handler);                                                  \
  }

#ifdef __cplusplus
}
#endif

#endif /* FSEVENT_H */
