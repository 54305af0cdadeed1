/* plugin/paths.h: every path of an inode, for events and the log. */
#ifndef FSEVENT_PATHS_H
#define FSEVENT_PATHS_H

#include <stdint.h>

#include "layout.h"

/* The paths of INO in LAYOUT as a NULL-terminated array, strings and
 * array in one allocation (free it with free).  NULL on out of memory.
 */
extern char **paths_of (const struct fsev_layout *layout, uint32_t ino);

/* The path of INO's name number N (as fsev_layout_names counts them),
 * as a new string; "" when N < 0.  NULL on out of memory.
 */
extern char *path_of_link (const struct fsev_layout *layout, uint32_t ino,
                           int n);

#endif
