/* tests/unit.h: helpers shared by the Check unit tests. */
#ifndef FSEVENT_UNIT_H
#define FSEVENT_UNIT_H

#include <check.h>

/* Make a filesystem with mke2fs OPTIONS in a new temporary file of SIZE
 * (a truncate(1) size).  Returns the path (free with unit_rm).  Fails
 * the test if mke2fs fails.
 */
extern char *unit_mkfs (const char *options, const char *size);
/* The same, with the image populated by mke2fs -d from a directory in
 * which the shell command SCRIPT has run.
 */
extern char *unit_mkfs_tree (const char *options, const char *script,
                             const char *size);
/* A new temporary file of SIZE zero bytes. */
extern char *unit_zero_file (const char *size);
extern void unit_rm (char *path);

/* fsev_fsinfo_probe on the file at PATH. */
struct fsev_fsinfo;
extern int unit_probe (const char *path, struct fsev_fsinfo *info,
                       char *err, size_t errlen);

/* One function per suite; unit.c runs them all. */
extern Suite *fsinfo_suite (void);
extern Suite *layout_suite (void);
extern Suite *jbd2_suite (void);
extern Suite *diff_suite (void);
extern Suite *overlay_suite (void);
extern Suite *pending_suite (void);
extern Suite *blockcache_suite (void);
extern Suite *sort_suite (void);
extern Suite *partition_suite (void);

#endif
