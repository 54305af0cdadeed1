/* fs/layout-subset.h: a small model of a few inodes and their paths,
 * for diffing what one transaction touched (layout-subset.c).
 */
#ifndef FSEVENT_LAYOUT_SUBSET_H
#define FSEVENT_LAYOUT_SUBSET_H

#include <stddef.h>
#include <stdint.h>

#include "layout-internal.h"

/* The records of INOS (those in use) and every link of them and of the
 * directories above them.  No runs: lookups on it find nothing.  NULL
 * when out of memory; free with fsev_layout_free.
 */
extern struct fsev_layout *fsev_layout_subset (const struct fsev_layout *L,
                                               const uint32_t *inos, size_t n);

#endif
