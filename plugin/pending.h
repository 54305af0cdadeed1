/* plugin/pending.h: bytes written to free space, waiting for the commit
 * that gives them to a file.  A set of device byte ranges: adding is
 * O(1) (requests append), the set is sorted and merged when it is read.
 */
#ifndef FSEVENT_PENDING_H
#define FSEVENT_PENDING_H

#include <stddef.h>
#include <stdint.h>

struct prange {
  uint64_t offset, length;
};

struct pending {
  struct prange *v;
  size_t n, cap;
  size_t sorted;                /* v[0..sorted) is sorted and merged */
  uint64_t bytes;               /* after normalising */
};

/* 0, or -1 on out of memory (the bytes are then not tracked). */
extern int pending_add (struct pending *p, uint64_t offset, uint64_t length);
/* Sort and merge. */
extern void pending_normalise (struct pending *p);
/* Remove [OFFSET, OFFSET+LENGTH); FN (if not NULL) is told each piece
 * that was pending.  The set must be normalised.  Returns the bytes
 * removed.
 */
extern uint64_t pending_remove (struct pending *p, uint64_t offset,
                                uint64_t length,
                                void (*fn) (uint64_t, uint64_t, void *),
                                void *opaque);
extern void pending_free (struct pending *p);

#endif
