/* tests/unit.c: the Check unit-test runner and its shared helpers. */
#include <config.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <unistd.h>
#include <sys/stat.h>

#include <check.h>

#include "fsinfo.h"
#include "source.h"
#include "unit.h"

static char *
new_temp_file (void)
{
  const char *dir = getenv ("TMPDIR");
  char *path;

  if (asprintf (&path, "%s/fsevent-unit-XXXXXX", dir ? dir : "/tmp") == -1)
    ck_abort_msg ("asprintf failed");
  int fd = mkstemp (path);
  ck_assert_msg (fd >= 0, "mkstemp %s failed", path);
  close (fd);
  return path;
}

char *
unit_zero_file (const char *size)
{
  char *path = new_temp_file ();
  char cmd[512];

  snprintf (cmd, sizeof cmd, "truncate -s %s %s", size, path);
  ck_assert_msg (system (cmd) == 0, "%s failed", cmd);
  return path;
}

char *
unit_mkfs (const char *options, const char *size)
{
  char *path = unit_zero_file (size);
  char cmd[1024];

  snprintf (cmd, sizeof cmd, "mke2fs -q -F %s %s >/dev/null", options, path);
  ck_assert_msg (system (cmd) == 0, "%s failed", cmd);
  return path;
}

char *
unit_mkfs_tree (const char *options, const char *script, const char *size)
{
  const char *tmp = getenv ("TMPDIR");
  char dir[256], cmd[4096];

  snprintf (dir, sizeof dir, "%s/fsevent-unit-tree-XXXXXX", tmp ? tmp : "/tmp");
  ck_assert_ptr_nonnull (mkdtemp (dir));
  snprintf (cmd, sizeof cmd, "cd %s && %s", dir, script);
  ck_assert_msg (system (cmd) == 0, "%s failed", cmd);
  char *path = unit_zero_file (size);
  snprintf (cmd, sizeof cmd, "mke2fs -q -F %s -d %s %s >/dev/null",
            options, dir, path);
  ck_assert_msg (system (cmd) == 0, "%s failed", cmd);
  snprintf (cmd, sizeof cmd, "rm -rf %s", dir);
  ck_assert_int_eq (system (cmd), 0);
  return path;
}

int
unit_probe (const char *path, struct fsev_fsinfo *info, char *err,
            size_t errlen)
{
  struct fsev_fd_source fdsrc;
  struct fsev_source src;
  struct stat st;
  int fd = open (path, O_RDONLY | O_CLOEXEC);

  ck_assert_msg (fd >= 0 && fstat (fd, &st) == 0, "open %s failed", path);
  fsev_source_from_fd (&src, &fdsrc, fd, 0, st.st_size);
  int r = fsev_fsinfo_probe (&src, path, info, err, errlen);
  close (fd);
  return r;
}

void
unit_rm (char *path)
{
  unlink (path);
  free (path);
}

int
main (void)
{
  SRunner *sr = srunner_create (fsinfo_suite ());
  srunner_add_suite (sr, layout_suite ());
  srunner_add_suite (sr, jbd2_suite ());
  srunner_add_suite (sr, diff_suite ());
  srunner_add_suite (sr, overlay_suite ());
  srunner_add_suite (sr, pending_suite ());
  srunner_add_suite (sr, blockcache_suite ());
  srunner_add_suite (sr, sort_suite ());
  srunner_add_suite (sr, partition_suite ());
  int failed;

  srunner_run_all (sr, CK_NORMAL);
  failed = srunner_ntests_failed (sr);
  srunner_free (sr);
  return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
