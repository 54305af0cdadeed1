/* plugin/log.h: log=FILE, every event as one JSON line. */
#ifndef FSEVENT_LOG_H
#define FSEVENT_LOG_H

#include <stdbool.h>

#include "fsevent.h"

extern int log_open (const char *path);     /* "-" is stderr */
extern void log_close (void);
extern bool log_enabled (void);
/* Record EV (event name NAME) as it stands now: in the before phase
 * with the result all handlers decided, in the after phase with the
 * status.
 */
extern void log_event (const char *name, const struct fsevent_write *ev);

#endif
