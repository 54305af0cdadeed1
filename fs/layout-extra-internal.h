/* fs/layout-extra-internal.h: what layout-update.c and layout-extra.c
 * share: reading a view, a file's data map piece compared field by field,
 * the inline-data flag.
 */
#ifndef FSEVENT_LAYOUT_EXTRA_INTERNAL_H
#define FSEVENT_LAYOUT_EXTRA_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "source.h"

#define INLINE_DATA_FL 0x10000000   /* EXT4_INLINE_DATA_FL */

/* A read of view V; what lies past its end reads as zeros. */
static inline int
vread (const struct fsev_source *v, void *buf, size_t count, uint64_t off)
{
  if (off > v->size || count > v->size - off) {
    memset (buf, 0, count);
    return 0;
  }
  return v->read (v->opaque, buf, count, off);
}

struct lmap { uint64_t lblk, pblk, len, flags; };   /* no padding */

static inline bool
same_lmaps (const struct lmap *a, const struct lmap *b, size_t n)
{
  for (size_t i = 0; i < n; i++)
    if (a[i].lblk != b[i].lblk || a[i].pblk != b[i].pblk ||
        a[i].len != b[i].len || a[i].flags != b[i].flags)
      return false;
  return true;
}

#endif /* FSEVENT_LAYOUT_EXTRA_INTERNAL_H */
