/* fs/sort.h: a stable radix sort for the model's big arrays. */
#ifndef FSEVENT_SORT_H
#define FSEVENT_SORT_H

#include <stddef.h>

/* Sort N elements of SIZE bytes at BASE by the unsigned integer of
 * KEY_BYTES (4 or 8) bytes at offset KEY_OFFSET in each element.
 * Stable: equal keys keep their order.  Linear time, which matters at
 * hundreds of thousands of runs (qsort was half of the build time).
 * Returns 0, or -1 if out of memory (BASE is then unchanged).
 */
extern int fsev_radix_sort (void *base, size_t n, size_t size,
                            size_t key_offset, size_t key_bytes);

#endif
