/* fuzz/fuzz-jbd2.c: libFuzzer target for fs/jbd2.c.
 *
 * The input is a journal (the journal inode's blocks, block 0 its
 * superblock), held in memory.  The block size is the superblock's
 * s_blocksize when it is 1024, 2048 or 4096, else 1024, so that the
 * parse is not refused on that alone.  Blocks past the input read as
 * zeros (seeds are the first blocks of a journal, where the log is),
 * up to s_maxlen, at most 2^20 blocks (the callers check s_maxlen
 * against the journal inode).  When bit 0 of the input's fourth last
 * byte is set, the checksums of the superblock and of the descriptor,
 * revoke and commit blocks (csum v2/v3) are recomputed first, so that
 * mutations get past them to the parsing behind.  It parses the
 * superblock, walks the log from s_start, and parses transactions at
 * a few other places.  Besides the sanitizers' reports it aborts when
 * a result breaks jbd2.h's contract: a tag or a commit outside the
 * log, a walk that reads a block twice or more than the log's length
 * of blocks, a read outside the journal.
 */
#include <config.h>

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <ext2fs/ext2fs.h>

#include "jbd2.h"

struct journal {
  const uint8_t *data;
  size_t size;
  uint32_t bs, maxlen;
  uint32_t lap_start;           /* the walk: where its lap begins */
  uint64_t reads;
  uint8_t *times;               /* reads of each block in this walk */
};

static int
jread (void *opaque, uint32_t jblk, void *buf)
{
  struct journal *j = opaque;
  if (jblk >= j->maxlen)
    abort ();                   /* jbd2.h: 0 <= jblk < maxlen */
  uint64_t off = (uint64_t) jblk * j->bs;
  /* A block with a magic at its start fails now and then. */
  if (off < j->size && j->size - off >= 12 && j->data[off + 11] == 0xEE &&
      j->data[off + 10] == 0xEE)
    return -1;
  memset (buf, 0, j->bs);
  if (off < j->size)
    memcpy (buf, j->data + off,
            j->size - off < j->bs ? j->size - off : j->bs);
  j->reads++;
  if (j->times && j->times[jblk]++ != 0)
    abort ();                   /* the walk reads no block twice */
  return 0;
}

static void
check_txn (const struct fsev_jsuper *js, const struct fsev_jtxn *t)
{
  uint32_t len = js->log_end - js->first;
  if (t->start < js->first || t->start >= js->log_end ||
      t->commit_jblk < js->first || t->commit_jblk >= js->log_end ||
      t->next < js->first || t->next >= js->log_end ||
      t->nblocks < 1 || t->nblocks > len || t->ntags >= t->nblocks)
    abort ();
  for (size_t i = 0; i < t->ntags; i++)
    if (t->tags[i].jblk < js->first || t->tags[i].jblk >= js->log_end)
      abort ();
}

static int
walk_fn (const struct fsev_jtxn *t, void *opaque)
{
  check_txn (opaque, t);
  return 0;
}

static uint32_t
be32_at (const uint8_t *p)
{
  return (uint32_t) p[0] << 24 | (uint32_t) p[1] << 16 |
    (uint32_t) p[2] << 8 | p[3];
}

static void
put_be32 (uint8_t *p, uint32_t v)
{
  p[0] = v >> 24;
  p[1] = v >> 16;
  p[2] = v >> 8;
  p[3] = v;
}

/* Seal BUF's checksums as the kernel writes them (csum v2/v3). */
static void
reseal (uint8_t *buf, size_t size, uint32_t bs)
{
  if (!(be32_at (buf + 40) & 0x18))
    return;
  put_be32 (buf + 0xFC, 0);
  put_be32 (buf + 0xFC, ext2fs_crc32c_le (~0U, buf, 1024));
  uint32_t seed = ext2fs_crc32c_le (~0U, buf + 0x30, 16);
  for (size_t off = bs; off + bs <= size; off += bs) {
    uint8_t *b = buf + off;
    if (be32_at (b) != FSEV_JBD2_MAGIC)
      continue;
    uint32_t type = be32_at (b + 4);
    uint8_t *at = type == FSEV_JBD2_COMMIT ? b + 16 :
      type == FSEV_JBD2_DESCRIPTOR || type == FSEV_JBD2_REVOKE ?
      b + bs - 4 : NULL;
    if (at) {
      put_be32 (at, 0);
      put_be32 (at, ext2fs_crc32c_le (seed, b, bs));
    }
  }
}

int LLVMFuzzerTestOneInput (const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
  struct fsev_jsuper js;
  char err[256];

  if (size < 1024)
    return 0;
  uint32_t bs = (uint32_t) data[12] << 24 | (uint32_t) data[13] << 16 |
    (uint32_t) data[14] << 8 | data[15];
  if (bs != 1024 && bs != 2048 && bs != 4096)
    bs = 1024;
  uint8_t *copy = NULL;
  if (data[size - 4] & 1) {
    copy = malloc (size);
    if (copy == NULL)
      return 0;
    memcpy (copy, data, size);
    reseal (copy, size, bs);
    data = copy;
  }
  if (fsev_jbd2_parse_super (data, bs, &js, err, sizeof err) != 0)
    goto out;
  if (js.maxlen > (1u << 20))
    goto out;

  struct journal j = { .data = data, .size = size, .bs = bs,
                       .maxlen = js.maxlen };
  j.times = calloc (js.maxlen, 1);
  if (j.times == NULL)
    goto out;
  uint32_t next = 0, next_seq = 0;
  int n = fsev_jbd2_walk (&js, jread, &j, walk_fn, &js, &next, &next_seq);
  if (n >= 0 && (next < js.first || next >= js.log_end))
    abort ();
  if (j.reads > js.log_end - js.first)
    abort ();                   /* one lap at most */
  free (j.times);
  j.times = NULL;

  /* Transactions elsewhere: where the walk stopped, and at blocks and
   * sequences taken from the input's last bytes.
   */
  uint32_t loglen = js.log_end - js.first;
  uint32_t starts[3] = { next, js.first, js.first };
  uint32_t seqs[3] = { next_seq, js.sequence, js.sequence + 1 };
  if (size >= 8) {
    starts[2] = js.first + (data[size - 1] | data[size - 2] << 8) % loglen;
    seqs[2] = js.sequence + data[size - 3] % 4;
  }
  for (int i = 0; i < 3; i++) {
    struct fsev_jtxn t;
    j.reads = 0;
    enum fsev_jresult r = fsev_jbd2_parse_txn (&js, jread, &j, starts[i],
                                               seqs[i], &t, err, sizeof err);
    if (j.reads > loglen)
      abort ();
    if (r == FSEV_J_OK) {
      check_txn (&js, &t);
      fsev_jtxn_free (&t);
    }
    else if (t.tags != NULL || t.revoked != NULL || err[0] == 0)
      abort ();
  }
 out:
  free (copy);
  return 0;
}
