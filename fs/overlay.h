/* fs/overlay.h: the committed overlay.
 *
 * The committed view of a journalled filesystem is the image plus the
 * blocks of every transaction that has committed but is not yet known
 * to be written home: what jbd2 recovery would replay.  An entry says
 * where the committed copy of a filesystem block lies: normally its
 * copy in the journal (no data is copied), or a private copy taken
 * when the guest is about to overwrite that journal block.
 *
 * Entries are kept sorted by block number; the overlay holds at most
 * one entry per journal block, so it stays small and is rebuilt by
 * copying at each transaction (which also makes a tentative apply,
 * undone by a veto, free of bookkeeping).
 */
#ifndef FSEVENT_OVERLAY_H
#define FSEVENT_OVERLAY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "jbd2.h"

/* Read device bytes (the layer under the overlay).  0 or -1. */
typedef int (*fsev_devread_fn) (void *opaque, void *buf, size_t count,
                                uint64_t offset);

struct fsev_overlay_entry {
  uint64_t fsblk;               /* home block */
  uint64_t src;                 /* device block of the journal copy */
  uint32_t seq;                 /* transaction that logged it */
  bool escaped;                 /* the copy's magic was escaped */
  unsigned char *copy;          /* private copy, or NULL: read src */
};

struct fsev_overlay {
  unsigned block_size;
  struct fsev_overlay_entry *e; /* sorted by fsblk */
  size_t n, cap;
  size_t *by_src;               /* indices of entries without a copy,
                                   sorted by src */
  size_t nsrc;
};

extern struct fsev_overlay *fsev_overlay_new (unsigned block_size);
extern struct fsev_overlay *fsev_overlay_clone (const struct fsev_overlay *o);
extern void fsev_overlay_free (struct fsev_overlay *o);

/* Apply a committed transaction: its revokes drop earlier copies, its
 * tags (those whose checksum holds, with a home inside FS_BLOCKS)
 * become the committed copies.  JMAP maps a journal block to its device
 * block (0 if unmapped).  Returns 0, or -1 on out of memory.
 */
extern int fsev_overlay_apply (struct fsev_overlay *o,
                               const struct fsev_jtxn *txn,
                               uint64_t (*jmap) (void *, uint32_t),
                               void *jmap_opaque, uint64_t fs_blocks);

/* The entry for FSBLK, or NULL. */
extern const struct fsev_overlay_entry *
fsev_overlay_find (const struct fsev_overlay *o, uint64_t fsblk);

/* The committed content of entry E into BUF (block_size bytes). */
extern int fsev_overlay_read_entry (const struct fsev_overlay *o,
                                    const struct fsev_overlay_entry *e,
                                    fsev_devread_fn read, void *opaque,
                                    void *buf);

/* Replace, in BUF (COUNT device bytes from OFFSET), every block the
 * overlay holds by its committed content.
 */
extern int fsev_overlay_patch (const struct fsev_overlay *o,
                               fsev_devread_fn read, void *opaque,
                               void *buf, size_t count, uint64_t offset);

/* True if an entry's copy lies in device bytes [OFFSET, OFFSET+COUNT). */
/* Every block of [OFFSET, OFFSET + COUNT) has a committed copy: a read
 * of the committed view there needs nothing from the image.
 */
extern bool fsev_overlay_covers (const struct fsev_overlay *o,
                                 uint64_t offset, uint64_t count);
extern bool fsev_overlay_refers (const struct fsev_overlay *o,
                                 uint64_t offset, uint64_t count);
/* Give those entries private copies (read through READ), before the
 * guest overwrites the journal blocks they point to.  0 or -1.
 */
extern int fsev_overlay_materialize (struct fsev_overlay *o,
                                     fsev_devread_fn read, void *opaque,
                                     uint64_t offset, uint64_t count);

/* Remove the entries logged before transaction TAIL (all of them if
 * ALL), calling FN first for each (e.g. to compare it with home).
 */
extern void fsev_overlay_expire (struct fsev_overlay *o, uint32_t tail,
                                 bool all,
                                 void (*fn) (const struct fsev_overlay_entry *,
                                             void *),
                                 void *opaque);

/* jbd2 sequence numbers wrap: A is before B. */
static inline bool
fsev_seq_before (uint32_t a, uint32_t b)
{
  return (int32_t) (a - b) < 0;
}

#endif /* FSEVENT_OVERLAY_H */
