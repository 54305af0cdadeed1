/* tests/unit.c: the Check unit-test runner and its shared helpers. */
#include <config.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <check.h>

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
  int failed;

  srunner_run_all (sr, CK_NORMAL);
  failed = srunner_ntests_failed (sr);
  srunner_free (sr);
  return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
