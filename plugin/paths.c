/* plugin/paths.c: every path of an inode, for events and the log. */
#include <config.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "layout-internal.h"
#include "paths.h"
#include "util.h"

static void
path_n (const struct fsev_layout *L, uint32_t ino, unsigned n,
        char *path, size_t len)
{
  if (fsev_layout_path (L, ino, n, path, len) < 0)
    snprintf (path, len, "<path too long>");
}

char **
paths_of (const struct fsev_layout *L, uint32_t ino)
{
  char path[4096];
  int n = fsev_layout_path (L, ino, 0, path, sizeof path);
  if (n == 0 && ino == L->root_ino) {  /* the root has no name of its own */
    n = 1;
    strcpy (path, "/");
  }
  if (n < 0) {
    n = 1;
    snprintf (path, sizeof path, "<path too long>");
  }

  /* The strings, one after another, then the array pointing at them. */
  char *strings = NULL;
  size_t len = 0, cap = 0;
  for (int i = 0; i < n; i++) {
    if (i > 0)
      path_n (L, ino, (unsigned) i, path, sizeof path);
    size_t l = strlen (path) + 1;
    if (fsev_grow ((void **) &strings, &cap, len + l, 1) == -1) {
      free (strings);
      return NULL;
    }
    memcpy (strings + len, path, l);
    len += l;
  }
  char **names = malloc ((n + 1) * sizeof (char *) + len);
  if (names == NULL) {
    free (strings);
    return NULL;
  }
  char *p = (char *) (names + n + 1);
  if (len)
    memcpy (p, strings, len);
  free (strings);
  for (int i = 0; i < n; i++) {
    names[i] = p;
    p += strlen (p) + 1;
  }
  names[n] = NULL;
  return names;
}

char *
path_of_link (const struct fsev_layout *L, uint32_t ino, int n)
{
  char path[4096] = "";
  if (ino == L->root_ino && fsev_layout_names (L, ino, NULL, 0) == 0)
    strcpy (path, "/");
  else if (n >= 0)
    path_n (L, ino, (unsigned) n, path, sizeof path);
  return strdup (path);
}
