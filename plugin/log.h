/* plugin/log.h: log=FILE, every event as one JSON line. */
#ifndef FSEVENT_LOG_H
#define FSEVENT_LOG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "fsevent.h"

extern int log_open (const char *path);     /* "-" is stderr */
extern void log_close (void);
extern bool log_enabled (void);
/* fdatasync the log (on NBD flush: acknowledged events are durable). */
extern int log_sync (void);

/* The lines of one request, formatted as its events are decided and
 * written together (log_commit) before the request is answered.
 */
struct log_batch {
  char small[2048];
  char *buf;
  size_t len, cap;
  size_t lines;
  bool oom;
};

extern void log_batch_init (struct log_batch *b);
/* Record EV (event name NAME) as it stands now: in the before phase with
 * the result all handlers decided, in the after phase with the status.
 */
extern void log_event (struct log_batch *b, const char *name,
                       const struct fsevent_write *ev);
extern void log_change (struct log_batch *b, const struct fsevent_change *ev);
extern void log_lock (struct log_batch *b, const struct fsevent_lock *ev,
                      bool unlock);
/* Bytes written to free space that never became part of a file. */
extern void log_unattributed (struct log_batch *b, unsigned partition,
                              uint64_t offset, uint64_t length,
                              const char *reason);
extern const char *log_change_name (enum fsevent_change_kind k);
extern const char *log_file_type (uint32_t mode);

/* Number the batch's lines and write them; returns once they are in the
 * file.  Frees what the batch allocated.
 */
extern void log_commit (struct log_batch *b);

#endif
