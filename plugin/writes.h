/* plugin/writes.h: the write path.  Every pwrite, zero and trim is split
 * into segments with the layout model; overwrites of file data become
 * write events that the handlers decide before anything reaches the
 * image.
 */
#ifndef FSEVENT_WRITES_H
#define FSEVENT_WRITES_H

#include <stdbool.h>
#include <stdint.h>

#include "fsevent.h"
#include "layout.h"

struct conn_contexts;

struct conn {
  struct fsevent_handle_info info;
  struct conn_contexts *contexts;
};

/* Bytes written per role since start-up (all connections). */
extern uint64_t writes_role_bytes[FSEV_ROLE_COUNT];

struct device;
extern void writes_init (struct device *dev);
extern int writes_pwrite (struct conn *c, const void *buf, uint32_t count,
                          uint64_t offset, bool fua);
extern int writes_zero (struct conn *c, uint32_t count, uint64_t offset,
                        bool may_trim, bool fast, bool fua);
extern int writes_trim (struct conn *c, uint32_t count, uint64_t offset,
                        bool fua);
extern void writes_log_stats (void);
/* In-place write events decided, and requests vetoed, since start-up. */
extern uint64_t writes_events (void);
extern uint64_t writes_vetoes (void);
/* Write, zero and trim requests since start-up. */
extern uint64_t writes_requests (void);
/* Decided events by kind: 0 write (in place and at commits), 1 + enum
 * fsevent_change_kind, 8 lock, 9 unlock (as log-format.h's LEV_*).
 */
#define WRITES_EVENT_KINDS 10
extern void writes_count_events (unsigned kind, uint64_t n);
extern uint64_t writes_event_count (unsigned kind);

/* Decide and write home every volume's held ext2 metadata (the guest
 * flushed): 0, or -1 with errno (a veto's, or why it could not).
 */
extern int writes_commit_epochs (struct conn *conn);

#endif
