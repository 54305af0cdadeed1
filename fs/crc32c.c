/* fs/crc32c.c: CRC32C of journal blocks.
 *
 * Every commit checksums each logged block, its descriptor and its
 * commit block: on a guest that commits at every fsync that was about
 * a seventh of the commit path's CPU time with libext2fs's table-driven
 * CRC (measured with perf on scripts/bench-follow --fsync).  SSE 4.2's
 * crc32 instruction computes the same polynomial (Castagnoli, bits
 * reflected) 8 bytes at a time; without it, libext2fs's code is used.
 * Both give the raw register, no final inversion, as jbd2 wants.
 */
#include <config.h>

#include <string.h>

#include <ext2fs/ext2fs.h>

#include "crc32c.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define HAVE_CRC32_INSN 1

__attribute__ ((target ("sse4.2")))
static uint32_t
crc32c_insn (uint32_t crc, const unsigned char *p, size_t n)
{
  uint64_t c = crc;
  while (n >= 8) {
    uint64_t v;
    memcpy (&v, p, 8);          /* any alignment */
    c = __builtin_ia32_crc32di (c, v);
    p += 8;
    n -= 8;
  }
  uint32_t c32 = (uint32_t) c;
  while (n-- > 0)
    c32 = __builtin_ia32_crc32qi (c32, *p++);
  return c32;
}
#endif

uint32_t
fsev_crc32c (uint32_t seed, const void *p, size_t n)
{
#ifdef HAVE_CRC32_INSN
  static int have = -1;         /* -1: not asked yet */
  int h = __atomic_load_n (&have, __ATOMIC_RELAXED);
  if (h < 0) {
    h = __builtin_cpu_supports ("sse4.2") ? 1 : 0;
    __atomic_store_n (&have, h, __ATOMIC_RELAXED);
  }
  if (h)
    return crc32c_insn (seed, p, n);
#endif
  return ext2fs_crc32c_le (seed, p, n);
}
