/* plugin/epoch.h: metadata an ext2 guest has written since its last
 * FLUSH, held back from the image until then.
 *
 * ext2 has no journal and writes its metadata blocks in any order
 * between two flushes, so any one of those writes can show a state that
 * never existed (a name removed before it is added elsewhere).  The
 * guest's FLUSH (or FUA write) is the only point where its metadata is
 * meant to be consistent: the blocks wait here, reads see them (NBD
 * allows a volatile write-back cache before FLUSH), and the epoch is
 * decided as one commit at the flush, then written home.
 *
 * An epoch is a sorted array of whole blocks.  It is bounded
 * (EPOCH_MAX_BLOCKS): past that the engine decides the epoch at the
 * next write, as if the guest had flushed.
 */
#ifndef FSEVENT_EPOCH_H
#define FSEVENT_EPOCH_H

#include <stddef.h>
#include <stdint.h>

/* 16384 blocks: 64 MiB of 4 KiB blocks held at most (plus one request). */
#define EPOCH_MAX_BLOCKS 16384

struct epoch_block {
  uint64_t fsblk;
  unsigned char *data;
};

struct epoch {
  unsigned bs;
  struct epoch_block *v;        /* sorted by fsblk */
  size_t n, cap;
};

extern void epoch_init (struct epoch *e, unsigned bs);
extern void epoch_clear (struct epoch *e);

/* The held copy of FSBLK, or NULL. */
extern const unsigned char *epoch_get (const struct epoch *e, uint64_t fsblk);
/* Hold BLOCK (bs bytes) as FSBLK's content.  0, or -1 out of memory. */
extern int epoch_put (struct epoch *e, uint64_t fsblk, const void *block);
/* Hold DATA (bs bytes, malloc'd: E takes it) as FSBLK's content.
 * Cannot fail when E->cap has room for one more (see follow.c hold).
 * 0, or -1 out of memory (DATA is then freed).
 */
extern int epoch_take (struct epoch *e, uint64_t fsblk, unsigned char *data);
/* Replace in BUF (COUNT bytes at filesystem OFFSET) what E holds. */
extern void epoch_patch (const struct epoch *e, void *buf, uint64_t count,
                         uint64_t offset);

#endif
