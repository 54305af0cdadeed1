/* plugin/blockcache.h: device blocks a commit point is likely to read
 * again, kept in memory so that it reads them without a system call.
 *
 * A commit point reads its transaction's logged blocks (which the guest
 * wrote a moment before, in requests of their own) and the previous
 * transaction's copies of the same metadata (the model's old view).
 * Both are a handful of blocks, the same ones commit after commit; a
 * pread of each was a third of a small commit's time (perf, scripts/
 * bench-follow --fsync).
 *
 * The cache holds exactly the device's bytes, and nothing else:
 *  - every device write, zero or trim is bracketed by blockcache_begin
 *    and blockcache_end, and begin drops what the range overlaps;
 *  - a writer may put the blocks it wrote only when no other writer
 *    overlapped its bracket in time (another's bytes could be the ones
 *    on the device);
 *  - a reader may put a block it read only when no write was in flight
 *    from before its read until the put (the commit path reads with the
 *    model held exclusively, while no request of the guest is between
 *    begin and end).
 * Keys are device offsets and lengths: a block of one volume is never
 * found for another.
 */
#ifndef FSEVENT_BLOCKCACHE_H
#define FSEVENT_BLOCKCACHE_H

#include <stdbool.h>
#include <stdint.h>

struct blockcache_ticket {
  uint64_t gen;                 /* the writers' count when this one began */
  bool alone;                   /* no other writer was in flight then */
};

/* A write of [OFFSET, OFFSET+COUNT) is about to reach the device. */
extern void blockcache_begin (struct blockcache_ticket *t, uint64_t offset,
                              uint64_t count);
/* ... and has (successfully or not) returned. */
extern void blockcache_end (struct blockcache_ticket *t);

/* Between begin and end, after the write succeeded: the block of LEN
 * bytes at OFFSET is now DATA on the device.
 */
extern void blockcache_put_written (const struct blockcache_ticket *t,
                                    uint64_t offset, uint32_t len,
                                    const void *data);

#define BLOCKCACHE_NO_GEN UINT64_MAX

/* Larger writes are not cached (they would only push out the rest). */
#define BLOCKCACHE_MAX_WRITE (128 * 1024)

/* Copy the block of LEN bytes at OFFSET into BUF: true on a hit.  On a
 * miss, *GEN is what a read of the device that follows at once may
 * give blockcache_put_read.
 */
extern bool blockcache_get (uint64_t offset, uint32_t len, void *buf,
                            uint64_t *gen);

/* The block read from the device after a miss that gave GEN: kept when
 * no write was in flight then and none has begun since (the commit path
 * reads with the model held exclusively, when no request can write).
 */
extern void blockcache_put_read (uint64_t gen, uint64_t offset, uint32_t len,
                                 const void *data);

/* Hits and misses, for -v. */
extern void blockcache_stats (uint64_t *hits, uint64_t *misses);

extern void blockcache_free (void);

#endif /* FSEVENT_BLOCKCACHE_H */
