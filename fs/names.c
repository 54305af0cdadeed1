/* fs/names.c: inode -> path(s). */
#include <config.h>

#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "names.h"
#include "sort.h"
#include "util.h"

/* A path never has more components than this; deeper means a cycle. */
#define MAX_DEPTH 4096

int
names_reserve (struct fsev_names *names, size_t nlinks)
{
  /* A name is 16 bytes on average in real trees. */
  if (fsev_grow ((void **) &names->links, &names->links_cap, nlinks,
            sizeof *names->links) == -1 ||
      fsev_grow ((void **) &names->pool, &names->pool_cap, nlinks * 16, 1) == -1)
    return -1;
  return 0;
}

int
names_add (struct fsev_names *names, uint32_t parent, uint32_t child,
           const char *name, size_t len)
{
  if (names->pool_len + len > UINT32_MAX)
    return -1;
  if (fsev_grow ((void **) &names->links, &names->links_cap,
            names->nlinks + 1, sizeof *names->links) == -1 ||
      fsev_grow ((void **) &names->pool, &names->pool_cap,
            names->pool_len + len, 1) == -1)
    return -1;
  names->links[names->nlinks++] = (struct fsev_link) {
    .child = child, .parent = parent,
    .name_off = (uint32_t) names->pool_len, .name_len = (uint32_t) len,
  };
  if (len)
    memcpy (names->pool + names->pool_len, name, len);
  names->pool_len += len;
  return 0;
}

int
names_finish (struct fsev_names *names)
{
  /* By child; links of one inode keep the order the directories were
   * read in (stable sort), so "the first path" is deterministic.
   */
  if (fsev_radix_sort (names->links, names->nlinks, sizeof *names->links,
                       offsetof (struct fsev_link, child),
                       sizeof names->links->child) == -1)
    return -1;
  /* Give back what the growth left over. */
  if (names->nlinks && names->nlinks < names->links_cap) {
    void *p = realloc (names->links, names->nlinks * sizeof *names->links);
    if (p) {
      names->links = p;
      names->links_cap = names->nlinks;
    }
  }
  if (names->pool_len && names->pool_len < names->pool_cap) {
    void *p = realloc (names->pool, names->pool_len);
    if (p) {
      names->pool = p;
      names->pool_cap = names->pool_len;
    }
  }
  return 0;
}

void
names_free (struct fsev_names *names)
{
  free (names->links);
  free (names->pool);
  memset (names, 0, sizeof *names);
}

/* Index of the first link of INO, and how many there are. */
static size_t
first_link (const struct fsev_names *names, uint32_t ino, unsigned *count)
{
  size_t lo = 0, hi = names->nlinks;
  while (lo < hi) {
    size_t mid = lo + (hi - lo) / 2;
    if (names->links[mid].child < ino)
      lo = mid + 1;
    else
      hi = mid;
  }
  size_t end = lo;
  while (end < names->nlinks && names->links[end].child == ino)
    end++;
  *count = (unsigned) (end - lo);
  return lo;
}

const struct fsev_link *
names_link (const struct fsev_names *names, uint32_t ino, unsigned n)
{
  unsigned count;
  size_t i = first_link (names, ino, &count);
  return n < count ? &names->links[i + n] : NULL;
}

unsigned
names_count (const struct fsev_names *names, uint32_t ino)
{
  unsigned count;
  first_link (names, ino, &count);
  return count;
}

int
names_path (const struct fsev_names *names, uint32_t ino, unsigned n,
            uint32_t root, char *buf, size_t buflen)
{
  unsigned count;
  size_t i = first_link (names, ino, &count);
  size_t pos = buflen;          /* the path is built backwards from the end */

  if (buflen == 0)
    return -1;
  buf[--pos] = '\0';
  if (n >= count)
    return -1;                  /* callers ask only for names that exist */
  const struct fsev_link *l = &names->links[i + n];
  for (unsigned depth = 0; ; depth++) {
    if (depth >= MAX_DEPTH) {
      static const char loop[] = "<loop>";
      if (pos < sizeof loop - 1) return -1;
      pos -= sizeof loop - 1;
      memcpy (buf + pos, loop, sizeof loop - 1);
      break;
    }
    if (pos < l->name_len + 1)
      return -1;
    pos -= l->name_len;
    if (l->name_len)
      memcpy (buf + pos, names->pool + l->name_off, l->name_len);
    buf[--pos] = '/';
    if (l->parent == root)
      break;
    unsigned pc;
    size_t pi = first_link (names, l->parent, &pc);
    if (pc == 0) {              /* a parent nobody names: disconnected */
      char tag[32];
      int len = snprintf (tag, sizeof tag, "<ino %u>", l->parent);
      if (pos < (size_t) len) return -1;
      pos -= len;
      memcpy (buf + pos, tag, len);
      break;
    }
    l = &names->links[pi];
  }
  memmove (buf, buf + pos, buflen - pos);
  return 0;
}
