/* plugin/watch.h: WATCH on the control socket, a live view of the
 * decided events (see watch.c).
 */
#ifndef FSEVENT_WATCH_H
#define FSEVENT_WATCH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "log.h"

/* The bytes of lines a watcher may have queued before new ones are
 * dropped (and counted); -D fsevent.watch_buffer=N changes it (tests).
 */
#define WATCH_BUFFER (1024 * 1024)
/* What WATCH buffer=BYTES may ask for. */
#define WATCH_BUFFER_MAX (64 * 1024 * 1024)
extern int fsevent_debug_watch_buffer;

/* Is anybody watching?  (One atomic load: the request path asks.) */
extern bool watch_active (void);
/* How many. */
extern unsigned watch_count (void);

/* The log's hook (log_commit): number the batch's LINES lines from
 * *NEXT_SEQ (an atomic add, in the order watchers see them) and give
 * every watcher a copy of the decided ones that pass its filters.
 * Returns the first seq, or 0 if nobody watches any more (the caller
 * numbers them itself).  Never waits for a watcher.
 */
extern uint64_t watch_batch (uint64_t *next_seq, size_t lines,
                             const struct log_batch *b);

/* Serve "WATCH ARGS" on the control connection FD until the peer goes
 * or STOP_FD becomes readable.  Replies "ERR ..." to bad arguments or
 * "OK", then streams.  Returns -1 (the connection is over).
 */
extern int watch_serve (int fd, int stop_fd, char *args);

#endif
