/* fs/names.h: inode -> path(s), from one pass over every directory.
 *
 * Each directory entry is one link (parent, name, child).  Links are
 * sorted by child, so the paths of an inode (one per hard link) are
 * found by binary search and built by walking parents up to the root,
 * never by rescanning directories.
 */
#ifndef FSEVENT_NAMES_H
#define FSEVENT_NAMES_H

#include <stddef.h>
#include <stdint.h>

struct fsev_link {
  uint32_t child;
  uint32_t parent;
  uint32_t name_off;            /* into the name pool */
  uint32_t name_len;
};

struct fsev_names {
  struct fsev_link *links;
  size_t nlinks, links_cap;
  char *pool;
  size_t pool_len, pool_cap;
  size_t garbage;               /* pool bytes of removed links */
};

/* Make room for NLINKS links up front.  Returns 0, or -1 on out of
 * memory.
 */
extern int names_reserve (struct fsev_names *names, size_t nlinks);
/* Returns 0, or -1 on out of memory. */
extern int names_add (struct fsev_names *names, uint32_t parent,
                      uint32_t child, const char *name, size_t len);
/* Sort for lookups; call once after the last names_add.  Returns 0, or
 * -1 on out of memory.
 */
extern int names_finish (struct fsev_names *names);
extern void names_free (struct fsev_names *names);

/* How many names INO has. */
extern unsigned names_count (const struct fsev_names *names, uint32_t ino);
/* The N-th link of INO, or NULL. */
extern const struct fsev_link *names_link (const struct fsev_names *names,
                                           uint32_t ino, unsigned n);
/* Build the N-th path of INO into BUF ("/a/b").  Returns 0, or -1 if
 * BUF is too small.  A broken chain (a parent with no name of its own)
 * starts the path with "<ino N>"; a cycle gives "<loop>/...".
 */
extern int names_path (const struct fsev_names *names, uint32_t ino,
                       unsigned n, uint32_t root, char *buf, size_t buflen);

#endif
