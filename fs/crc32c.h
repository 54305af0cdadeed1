/* fs/crc32c.h: CRC32C as jbd2 computes it (no final inversion). */
#ifndef FSEVENT_CRC32C_H
#define FSEVENT_CRC32C_H

#include <stddef.h>
#include <stdint.h>

/* The same value as libext2fs's ext2fs_crc32c_le (SEED, P, N), with
 * the CPU's crc32 instruction where it has one.
 */
extern uint32_t fsev_crc32c (uint32_t seed, const void *p, size_t n);

#endif /* FSEVENT_CRC32C_H */
