/* tests/unit.h: helpers shared by the Check unit tests. */
#ifndef FSEVENT_UNIT_H
#define FSEVENT_UNIT_H

#include <check.h>

/* Make a filesystem with mke2fs OPTIONS in a new temporary file of SIZE
 * (a truncate(1) size).  Returns the path (free with unit_rm).  Fails
 * the test if mke2fs fails.
 */
extern char *unit_mkfs (const char *options, const char *size);
/* A new temporary file of SIZE zero bytes. */
extern char *unit_zero_file (const char *size);
extern void unit_rm (char *path);

/* One function per suite; unit.c runs them all. */
extern Suite *fsinfo_suite (void);

#endif
