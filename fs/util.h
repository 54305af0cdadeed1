/* fs/util.h: small helpers shared by fs/ and the plugin. */
#ifndef FSEVENT_UTIL_H
#define FSEVENT_UTIL_H

#include <stddef.h>
#include <stdint.h>

/* Make room for NEED elements of ELEM bytes in the array *P of capacity
 * *CAP, doubling (so that appends cost O(1) amortised) and checking for
 * overflow.  Returns 0, or -1 if out of memory (*P is then unchanged).
 */
extern int fsev_grow (void **p, size_t *cap, size_t need, size_t elem);

/* pread(2) all COUNT bytes or fail: returns 0, or -1 with errno set
 * (EIO for an unexpected end of file).
 */
extern int fsev_pread_full (int fd, void *buf, size_t count, uint64_t offset);

#endif
