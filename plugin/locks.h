/* plugin/locks.h: byte-range locks taken by host tools (control=).
 *
 * A lock is bound to an inode (it follows renames) and a byte range;
 * LENGTH -1 means to the end of the file, whatever its size becomes.
 * Locks conflict as LockFileEx's do: shared with shared is fine, an
 * exclusive lock conflicts with any other.  Guest writes never take
 * locks; they are held back while a lock covers what they would change
 * (see locks_wait_clear).
 */
#ifndef FSEVENT_LOCKS_H
#define FSEVENT_LOCKS_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#define LOCK_TO_EOF UINT64_MAX  /* the end of a LENGTH -1 range */

struct lock_info {
  uint64_t id;
  unsigned partition;
  uint32_t ino;
  uint64_t offset;
  int64_t length;               /* -1: to the end of the file */
  bool exclusive;
  uid_t uid;                    /* of the connection that took it */
  const char *path;             /* as it was given */
};

/* The owner of a lock is told when someone else releases it. */
typedef void (*lock_released_fn) (void *owner, uint64_t id);
extern void locks_set_notify (lock_released_fn fn);

/* lock-wait= (milliseconds) and lock-mode=fail. */
extern void locks_set_guest_wait (int ms);
extern void locks_set_guest_fail (bool fail);
/* How long a held-back guest write waits, in ms: 0 with lock-mode=fail. */
extern int locks_guest_wait (void);
/* Lock ID, if UID (or BY, its owner) may release it: FN gets a copy of
 * it (under the table's mutex: FN must only copy).  0 or -errno.
 */
extern int locks_find (uint64_t id, void *by, uid_t uid,
                       void (*fn) (const struct lock_info *, void *),
                       void *opaque);
/* The locks of OWNER (FN must only copy). */
extern void locks_list_owner (void *owner,
                              void (*fn) (const struct lock_info *, void *),
                              void *opaque);

/* Take a lock for OWNER, waiting up to WAIT_MS for conflicting locks
 * to go (0: fail at once with EAGAIN; -1: forever; ETIMEDOUT after).
 * Returns the new lock's id (> 0), or -errno.
 */
extern int64_t locks_take (void *owner, uid_t uid, unsigned partition,
                           uint32_t ino,
                           const char *path, uint64_t offset, int64_t length,
                           bool exclusive, int wait_ms);
/* Release lock ID, asked by a connection of UID (root may release any
 * lock, others only locks taken by the same uid).  FN is called with the
 * lock before it goes (unlock events); its owner is notified if it is
 * not BY.  Returns 0 or -errno (ENOENT, EPERM).
 */
extern int locks_release (uint64_t id, void *by, uid_t uid,
                          void (*fn) (const struct lock_info *, void *),
                          void *opaque);
/* Release every lock of OWNER (its connection closed); FN is called for
 * each (unlock events), then the lock is gone.
 */
extern void locks_release_owner (void *owner,
                                 void (*fn) (const struct lock_info *, void *),
                                 void *opaque);

/* Is any lock held at all?  (Cheap: the write path asks every time.) */
extern bool locks_any (void);
/* Does a lock cover bytes [POS, END) of inode INO of PARTITION (END may
 * be LOCK_TO_EOF)?  Fills *ID with one that does.
 */
extern bool locks_covers (unsigned partition, uint32_t ino, uint64_t pos,
                          uint64_t end, uint64_t *id);
/* Wait until lock ID is released, or DEADLINE_MS (a CLOCK_MONOTONIC
 * time in ms; -1 never) passes.  0, or ETIMEDOUT.
 */
extern int locks_wait_id (uint64_t id, int64_t deadline_ms);
extern int64_t locks_now_ms (void);

/* Every held lock, for LOCKS.  FN must not call back into locks_*. */
extern void locks_list (void (*fn) (const struct lock_info *, void *),
                        void *opaque);
extern uint64_t locks_count (void);
/* At unload, once no control connection is left: every lock and the
 * table go.
 */
extern void locks_free_all (void);

#endif
