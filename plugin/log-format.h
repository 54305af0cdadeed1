/* plugin/log-format.h: between the log's ring (log.c) and its JSON
 * formatting (log-format.c).
 */
#ifndef FSEVENT_LOG_FORMAT_H
#define FSEVENT_LOG_FORMAT_H

#include <stddef.h>
#include <stdint.h>

#include "log.h"

enum { REC_WRITE, REC_TEXT, REC_LOST };     /* struct log_rec kind */

/* The most bytes log_format can write for R. */
extern size_t log_format_room (const struct log_rec *r);
/* Format R as line SEQ at P; returns the end. */
extern char *log_format (char *p, uint64_t seq, const struct log_rec *r);
/* Queue a line formatted on the request path (malloc'd, no seq), or
 * count it lost if LINE is NULL.
 */
extern void log_add_text (struct log_batch *b, char *line);

#endif
