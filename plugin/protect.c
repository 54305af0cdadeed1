/* plugin/protect.c: protect=GLOB, deny every change to matching paths.
 *
 * GLOB is matched with fnmatch(3) and FNM_PATHNAME against every path
 * of the file (a hard link does not get around it); "DIR/" followed by
 * "**" matches DIR and everything below it.  "N:GLOB" applies to
 * partition N only; a plain GLOB to every followed filesystem.
 */
#include <config.h>

#include <errno.h>
#include <fnmatch.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define NBDKIT_API_VERSION 2
#include <nbdkit-plugin.h>

#include "builtins.h"

struct glob {
  unsigned partition;           /* 0: any */
  char *pattern;                /* without the trailing subtree mark */
  bool subtree;                 /* it had one */
};

static struct glob *globs;
static size_t nglobs;
/* protect-mode=audit: decide as ever, but let the change through and
 * mark the event (would_deny) instead of vetoing it.
 */
static bool audit;

int
protect_set_mode (const char *mode)
{
  if (strcmp (mode, "enforce") == 0 || strcmp (mode, "audit") == 0) {
    audit = strcmp (mode, "audit") == 0;
    return 0;
  }
  nbdkit_error ("protect-mode=%s: use enforce or audit", mode);
  return -1;
}

/* The decision: a veto, or in audit mode a mark. */
static void
deny (int *result_code, int *would_deny)
{
  if (audit)
    *would_deny = EPERM;
  else
    *result_code = EPERM;
}

int
protect_add (const char *glob)
{
  unsigned partition = 0;
  size_t digits = strspn (glob, "0123456789");
  if (digits > 0 && glob[digits] == ':') {
    unsigned long n = strtoul (glob, NULL, 10);
    if (digits > 4 || n == 0) {
      nbdkit_error ("protect=%s: N:GLOB needs a partition number from 1",
                    glob);
      return -1;
    }
    partition = (unsigned) n;
    glob += digits + 1;
  }
  if (glob[0] != '/' && glob[0] != '*') {
    nbdkit_error ("protect=%s: paths in the filesystem start with '/'", glob);
    return -1;
  }
  struct glob *ng = realloc (globs, (nglobs + 1) * sizeof *ng);
  if (ng == NULL) {
    nbdkit_error ("realloc: %m");
    return -1;
  }
  globs = ng;
  size_t len = strlen (glob);
  bool subtree = len >= 3 && strcmp (glob + len - 3, "/**") == 0;
  globs[nglobs].pattern = strndup (glob, subtree ? len - 3 : len);
  globs[nglobs].subtree = subtree;
  globs[nglobs].partition = partition;
  if (globs[nglobs].pattern == NULL) {
    nbdkit_error ("strdup: %m");
    return -1;
  }
  nglobs++;
  return 0;
}

static bool
matches (const struct glob *g, const char *path)
{
  if (fnmatch (g->pattern, path, FNM_PATHNAME) == 0)
    return true;
  if (!g->subtree)
    return false;
  /* A subtree: does some leading part of PATH, ending before a '/',
   * match DIR?
   */
  char prefix[4096];
  for (const char *p = strchr (path + 1, '/'); p; p = strchr (p + 1, '/')) {
    size_t n = p - path;
    if (n >= sizeof prefix)
      break;
    memcpy (prefix, path, n);
    prefix[n] = '\0';
    if (fnmatch (g->pattern, prefix, FNM_PATHNAME) == 0)
      return true;
  }
  return g->pattern[0] == '\0';  /* the subtree of "/": everything */
}

/* Could G match something below directory DIR?  The pattern's first
 * components, as many as DIR has, must match DIR (a subtree pattern
 * that matches DIR or above already matches everything below).
 */
static bool
matches_below (const struct glob *g, const char *dir)
{
  if (matches (g, dir))
    return true;
  size_t comps = 0;
  for (const char *p = dir; *p; p++)
    comps += *p == '/';
  if (strcmp (dir, "/") == 0)
    return true;                /* everything is below the root */
  /* The pattern cut after COMPS components, if it has more. */
  const char *p = g->pattern;
  size_t seen = 0;
  for (; *p; p++)
    if (*p == '/' && ++seen == comps + 1)
      break;
  if (*p != '/')
    return false;               /* no deeper components */
  char prefix[4096];
  size_t n = p - g->pattern;
  if (n >= sizeof prefix)
    return true;                /* too long to tell: deny */
  memcpy (prefix, g->pattern, n);
  prefix[n] = '\0';
  return fnmatch (prefix, dir, FNM_PATHNAME) == 0;
}

static bool
any_matches (unsigned partition, const char *const *names, const char *other,
             const char *third)
{
  for (size_t i = 0; i < nglobs; i++) {
    if (globs[i].partition && globs[i].partition != partition)
      continue;
    for (size_t n = 0; names && names[n]; n++)
      if (matches (&globs[i], names[n]))
        return true;
    if ((other && matches (&globs[i], other)) ||
        (third && matches (&globs[i], third)))
      return true;
  }
  return false;
}

static int
protect_before_write (struct fsevent_write *ev)
{
  if (any_matches (ev->partition, ev->file_names, NULL, NULL))
    deny (&ev->result_code, &ev->would_deny);
  return 0;
}

/* Every change to a protected path: to its data, size, attributes,
 * names, and a new file or a rename landing on it.  Reading a file
 * updates its access time: that alone is let through, so that reading
 * a protected file never fails the guest's journal.
 */
static int
protect_before_change (struct fsevent_change *ev)
{
  if (ev->kind == FSEVENT_SET_ATTRIBUTES &&
      (ev->changed & ~FSEVENT_ATTR_ATIME) == 0)
    return 0;
  if (any_matches (ev->partition, ev->file_names, ev->new_file_name,
                   ev->replaced_file_name))
    deny (&ev->result_code, &ev->would_deny);
  /* Moving a directory moves everything below it: a protected file
   * must not leave its path that way, nor arrive at one.
   */
  if (ev->kind == FSEVENT_RENAME && S_ISDIR (ev->old_attributes.mode))
    for (size_t i = 0; i < nglobs && ev->result_code == 0 &&
           ev->would_deny == 0; i++)
      if ((globs[i].partition == 0 || globs[i].partition == ev->partition) &&
          (matches_below (&globs[i], ev->file_name) ||
           (ev->new_file_name &&
            matches_below (&globs[i], ev->new_file_name))))
        deny (&ev->result_code, &ev->would_deny);
  return 0;
}

int
protect_check_partitions (bool (*followed) (unsigned))
{
  for (size_t i = 0; i < nglobs; i++)
    if (globs[i].partition && !followed (globs[i].partition)) {
      nbdkit_error ("protect=%u:%s%s: no followed filesystem on partition %u "
                    "(it would protect nothing)", globs[i].partition,
                    globs[i].pattern, globs[i].subtree ? "/**" : "",
                    globs[i].partition);
      return -1;
    }
  return 0;
}

bool
protect_any (void)
{
  return nglobs > 0;
}

bool
protect_covers_path (unsigned partition, const char *path)
{
  for (size_t i = 0; i < nglobs; i++)
    if ((globs[i].partition == 0 || globs[i].partition == partition) &&
        matches_below (&globs[i], path))   /* which matches PATH too */
      return true;
  return false;
}

static void
protect_unload (void)
{
  for (size_t i = 0; i < nglobs; i++)
    free (globs[i].pattern);
  free (globs);
  globs = NULL;
  nglobs = 0;
}

const struct fsevent_handler protect_handler = {
  .api_version = FSEVENT_API_VERSION,
  .struct_size = sizeof (struct fsevent_handler),
  .name = "protect",
  .description = "deny every change to files whose path matches protect=",
  .before_write = protect_before_write,
  .before_change = protect_before_change,
  .unload = protect_unload,
};
