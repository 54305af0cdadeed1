/* fs/sort.c: stable LSD radix sort, 11 bits a pass, only as many
 * passes as the largest key needs.
 */
#include <config.h>

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "sort.h"

#define BITS 11
#define BUCKETS (1u << BITS)

static inline uint64_t
key_of (const char *elem, size_t key_offset, size_t key_bytes)
{
  if (key_bytes == 4) {
    uint32_t k;
    memcpy (&k, elem + key_offset, 4);
    return k;
  }
  uint64_t k;
  memcpy (&k, elem + key_offset, 8);
  return k;
}

int
fsev_radix_sort (void *base, size_t n, size_t size,
                 size_t key_offset, size_t key_bytes)
{
  char *a = base, *b;
  uint64_t max = 0, prev = 0;
  int sorted = 1;

  for (size_t i = 0; i < n; i++) {
    uint64_t k = key_of (a + i * size, key_offset, key_bytes);
    if (k < prev)
      sorted = 0;
    prev = k;
    if (k > max)
      max = k;
  }
  if (sorted)
    return 0;

  b = malloc (n * size);
  if (b == NULL)
    return -1;

  size_t count[BUCKETS];
  char *src = a, *dst = b;
  for (unsigned shift = 0; shift < 64 && (max >> shift) != 0; shift += BITS) {
    memset (count, 0, sizeof count);
    for (size_t i = 0; i < n; i++)
      count[(key_of (src + i * size, key_offset, key_bytes) >> shift)
            & (BUCKETS - 1)]++;
    size_t sum = 0;
    for (unsigned d = 0; d < BUCKETS; d++) {
      size_t c = count[d];
      count[d] = sum;
      sum += c;
    }
    for (size_t i = 0; i < n; i++) {
      const char *e = src + i * size;
      unsigned d = (key_of (e, key_offset, key_bytes) >> shift)
        & (BUCKETS - 1);
      memcpy (dst + count[d]++ * size, e, size);
    }
    char *t = src; src = dst; dst = t;
  }
  if (src != a)
    memcpy (a, src, n * size);
  free (b);
  return 0;
}
