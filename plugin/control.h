/* plugin/control.h: control=PATH, the socket host tools talk to
 * (fsevent-ctl): byte-range locks, stats, and a file's committed
 * content.  The protocol is in nbdkit-fsevent-plugin(1).
 */
#ifndef FSEVENT_CONTROL_H
#define FSEVENT_CONTROL_H

#include <stdbool.h>

extern int control_set_path (const char *path);
extern bool control_enabled (void);
/* Create the socket and start serving it (after nbdkit forked). */
extern int control_start (void);
extern void control_stop (void);

#endif
