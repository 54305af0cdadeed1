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
/* 1.1: namespace and attribute events (before_change/after_change),
 * and the transaction sequence in write events.
 * 1.2: lock and unlock events (before_lock/after_lock,
 * before_unlock/after_unlock).
 * 1.3: would_deny in write and change events (protect-mode=audit).
 * 1.4: set_attributes also reports the link count (FSEVENT_ATTR_LINKS),
 * what the file's bytes are (FSEVENT_ATTR_BLOCKS: its block map inside
 * the file, or its inline content, changed) and its extended attributes
 * (FSEVENT_ATTR_XATTR).
 */
#define FSEVENT_API_MINOR 4

/* Does the plugin's event EV have FIELD?  Fields added after 1.0 are
 * read only when this is true: a plugin older than the handler passes
 * smaller structures (struct_size says how big).
 */
#define FSEVENT_HAS_FIELD(ev, field) \
  ((ev)->struct_size >= offsetof (__typeof__ (*(ev)), field) + \
   sizeof ((ev)->field))

enum fsevent_phase {
  FSEVENT_BEFORE = 0,          /* decided before the change is committed */
  FSEVENT_AFTER = 1,           /* the change was attempted: see status */
};

/* Where a write's data comes from. */
enum fsevent_direction {
  FSEVENT_INPLACE = 0,         /* overwrite of a block the file already owns */
  FSEVENT_COMMIT = 1,          /* new data, decided at the journal commit
                                  that maps it into the file */
  FSEVENT_JOURNAL = 2,         /* data logged in the journal (data=journal),
                                  decided at its commit */
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
   * connection closes or the inode is freed (every connection's).
   */
  void **handle_context;
  const struct fsevent_handle_info *handle_info;
  /* 1.1: the jbd2 transaction (commit, journal), 0 for inplace. */
  uint64_t sequence;
  /* 1.3: with protect-mode=audit, the errno (EPERM) that protect=
   * would have vetoed this event with; 0 otherwise.  Set in the before
   * phase (seen by the handlers after protect= in the chain) and kept
   * in the after phase.  Check FSEVENT_HAS_FIELD (ev, would_deny).
   */
  int would_deny;
};

/* 1.1: namespace and attribute changes, decided at the journal commit
 * that makes them (on ext2: at the metadata write).
 */
enum fsevent_change_kind {
  FSEVENT_CREATE = 0,          /* a new file, directory, symlink, node */
  FSEVENT_DELETE = 1,          /* the inode is freed */
  FSEVENT_LINK = 2,            /* a name added: new_file_name */
  FSEVENT_UNLINK = 3,          /* a name removed from an inode that lives on */
  FSEVENT_RENAME = 4,          /* file_name became new_file_name */
  FSEVENT_SET_SIZE = 5,        /* old_attributes.size -> attributes.size */
  FSEVENT_SET_ATTRIBUTES = 6,  /* see changed */
};

/* Bits of fsevent_change.changed. */
#define FSEVENT_ATTR_MODE   0x01
#define FSEVENT_ATTR_UID    0x02
#define FSEVENT_ATTR_GID    0x04
#define FSEVENT_ATTR_FLAGS  0x08
#define FSEVENT_ATTR_ATIME  0x10
#define FSEVENT_ATTR_MTIME  0x20
#define FSEVENT_ATTR_CTIME  0x40
#define FSEVENT_ATTR_CRTIME 0x80
#define FSEVENT_ATTR_TIMES  0xf0
/* 1.4: */
#define FSEVENT_ATTR_LINKS  0x100   /* the link count (attributes.links) */
#define FSEVENT_ATTR_BLOCKS 0x200   /* what the file's bytes are: blocks
                                       inside both the old and the new size
                                       moved, a hole made or filled, an
                                       unwritten extent made readable, or
                                       the inline content (a fast symlink's
                                       target, inline data) rewritten:
                                       a remap, even with size and times
                                       kept */
#define FSEVENT_ATTR_XATTR  0x400   /* extended attributes (ACLs, security
                                       labels): added, removed or changed */

struct fsevent_time {
  int64_t sec;
  uint32_t nsec;
};

struct fsevent_attributes {
  uint32_t mode;               /* type and permission bits (st_mode) */
  uint32_t uid, gid;
  uint32_t flags;              /* chattr flags */
  uint32_t links;
  uint64_t size;
  struct fsevent_time atime, mtime, ctime, crtime;
};

struct fsevent_change {
  size_t struct_size;          /* sizeof (struct fsevent_change) of the plugin */
  enum fsevent_phase phase;
  enum fsevent_change_kind kind;
  unsigned partition;
  uint32_t ino;
  /* The path the change is about: for create the new path, for the
   * others the path before the change ("" if it had none).
   */
  const char *file_name;
  const char *const *file_names; /* every path before (create: after) */
  const char *new_file_name;   /* rename, link: the new path; else NULL */
  uint32_t replaced_ino;       /* rename/link over another inode's name */
  const char *replaced_file_name; /* its path, or NULL */
  struct fsevent_attributes old_attributes;  /* zero for create */
  struct fsevent_attributes attributes;      /* zero for delete */
  unsigned changed;            /* set_attributes: FSEVENT_ATTR_* */
  int timestamps_only;         /* set_attributes: only times changed */
  uint64_t sequence;           /* the jbd2 transaction, 0 on ext2 */
  int status;                  /* after: 0, or why the commit failed */
  int result_code;             /* before: set to an errno to veto */
  void **file_context;
  void **handle_context;       /* of the connection that wrote the commit */
  const struct fsevent_handle_info *handle_info;
  /* 1.3: as in struct fsevent_write. */
  int would_deny;
};

/* 1.2: a byte-range lock taken or released by a host tool through the
 * plugin's control socket (CBFS Connect's LockFile / UnlockFile).
 */
struct fsevent_lock {
  size_t struct_size;          /* sizeof (struct fsevent_lock) of the plugin */
  enum fsevent_phase phase;
  unsigned partition;
  uint32_t ino;
  const char *file_name;       /* the path the tool gave */
  const char *const *file_names; /* every path of the inode */
  uint64_t byte_offset;
  int64_t length;              /* -1: to the end of the file */
  int exclusive_lock;          /* 0: shared */
  int fail_immediately;        /* lock: 1 if it must not wait */
  uint64_t lock_id;            /* after a successful lock, and unlock */
  int status;                  /* after: 0, or why the lock failed */
  int result_code;             /* before lock: set to an errno to refuse */
  void **file_context;
  void **handle_context;       /* NULL: a control connection is no NBD one */
  const struct fsevent_handle_info *handle_info; /* the control peer */
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

  /* 1.1: namespace and attribute changes (see enum
   * fsevent_change_kind).  A before-veto fails the journal commit:
   * the whole transaction never commits.  Handlers built against 1.0
   * do not have these and are not called for them.
   */
  int (*before_change) (struct fsevent_change *ev);
  int (*after_change) (struct fsevent_change *ev);

  /* 1.2: locks.  A before_lock veto refuses the lock (the tool gets
   * the errno); unlock events cannot be refused (a lock is released when
   * its tool goes, whatever the handlers say).
   */
  int (*before_lock) (struct fsevent_lock *ev);
  int (*after_lock) (struct fsevent_lock *ev);
  int (*before_unlock) (struct fsevent_lock *ev);
  int (*after_unlock) (struct fsevent_lock *ev);

  /* Room for the events to come: new callbacks are added after this
   * point, so older handlers keep working.
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
