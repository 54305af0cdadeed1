/* plugin/builtins.h: the handlers built into the plugin. */
#ifndef FSEVENT_BUILTINS_H
#define FSEVENT_BUILTINS_H

#include "fsevent.h"

/* protect=GLOB (repeatable): deny every change to a matching path. */
extern int protect_add (const char *glob);
/* protect-mode=enforce|audit. */
extern int protect_set_mode (const char *mode);
/* Every protect=N:GLOB names a followed partition (after start-up). */
extern int protect_check_partitions (bool (*followed) (unsigned));
/* Is any protect= given? */
extern bool protect_any (void);
/* Does a protect= glob match PATH, or something that could be below it
 * (PATH taken for a directory)?
 */
extern bool protect_covers_path (unsigned partition, const char *path);
extern const struct fsevent_handler protect_handler;

/* script=PATH: a handler in any language (see script.c). */
extern int script_set (const char *path);
extern int script_set_timeout (const char *seconds);
extern const struct fsevent_handler script_handler;

#endif
