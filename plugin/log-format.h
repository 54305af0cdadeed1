/* plugin/log-format.h: between the log's ring (log.c) and its JSON
 * formatting (log-format.c).
 */
#ifndef FSEVENT_LOG_FORMAT_H
#define FSEVENT_LOG_FORMAT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "log.h"

enum { REC_WRITE, REC_TEXT, REC_LOST };     /* struct log_rec kind */

/* struct log_rec event: what a line is about (watchers filter on it). */
enum {
  LEV_WRITE = 0,
  LEV_CHANGE = 1,               /* + enum fsevent_change_kind (7 kinds) */
  LEV_LOCK = 8, LEV_UNLOCK, LEV_UNATTRIBUTED, LEV_LOST, LEV_UNDECIDED,
  LEV_COUNT
};
/* struct log_rec phase of a line that is no decision (unattributed). */
#define LOG_NO_PHASE 255

/* "write", "create", ..., "unattributed", "lost", "undecided"; NULL if
 * out of range.
 */
extern const char *log_event_type_name (unsigned lev);

/* The most bytes log_format can write for R. */
extern size_t log_format_room (const struct log_rec *r);
/* Format R as line SEQ at P; returns the end. */
extern char *log_format (char *p, uint64_t seq, const struct log_rec *r);
/* Queue a line formatted on the request path (malloc'd, no seq), or
 * count it lost if LINE is NULL.  Returns its record (to fill in the
 * event, phase, result, partition and names after the line) or NULL.
 */
extern struct log_rec *log_add_text (struct log_batch *b, char *line);
/* Whether the event EV in PHASE with RESULT gets a line (the before
 * phase only with log-phases=both; it notes a veto in B), and for an
 * after line who vetoed (*BY, 0 if nobody) and whether EV was the event
 * refused (*REFUSED).
 */
extern bool log_line_for (struct log_batch *b, const void *ev, int phase,
                          int result, uint8_t *by, uint8_t *refused);

#endif
