/* plugin/errnames.h: errno values by name and back ("EPERM" <-> 1), for
 * the log and for script handlers, which answer as nbdkit's sh plugin
 * does ("EPERM message" on stderr).
 */
#ifndef FSEVENT_ERRNAMES_H
#define FSEVENT_ERRNAMES_H

extern const char *errno_name (int err);   /* "E<number>" if unknown */
extern int errno_from_name (const char *name, int len); /* 0 if unknown */

#endif
