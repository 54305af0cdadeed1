/* fs/jbd2.c: parse the jbd2 journal the way jbd2 recovery reads it.
 *
 * The aim is to predict exactly what recovery would replay, so where
 * the kernel tolerates something (a descriptor without LAST_TAG, a
 * revoke block whose r_count leaves a partial record) this does too,
 * and where recovery stops or fails this returns END or CORRUPT.  The
 * journal is hostile: every count and offset is checked against the
 * block, every position against the log, and no transaction may be
 * longer than the log, which bounds every loop.
 */
#include <config.h>

#include <inttypes.h>
#include <limits.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <ext2fs/ext2fs.h>

#include "crc32c.h"
#include "jbd2.h"
#include "util.h"

/* --- On-disk structures (all big-endian). --- */

struct jhdr {
  uint32_t h_magic, h_blocktype, h_sequence;
};

struct jsuper_disk {
  struct jhdr s_header;
  uint32_t s_blocksize, s_maxlen, s_first;
  uint32_t s_sequence, s_start, s_errno;
  /* Only in a version 2 superblock from here on. */
  uint32_t s_feature_compat, s_feature_incompat, s_feature_ro_compat;
  uint8_t s_uuid[16];
  uint32_t s_nr_users, s_dynsuper;
  uint32_t s_max_transaction, s_max_trans_data;
  uint8_t s_checksum_type, s_padding2[3];
  uint32_t s_num_fc_blks;
  uint32_t s_head;
  uint32_t s_padding[40];
  uint32_t s_checksum;
  uint8_t s_users[16 * 48];
};
_Static_assert (offsetof (struct jsuper_disk, s_checksum_type) == 0x50,
                "jbd2 superblock layout");
_Static_assert (offsetof (struct jsuper_disk, s_checksum) == 0xFC,
                "jbd2 superblock layout");
_Static_assert (sizeof (struct jsuper_disk) == 1024, "jbd2 superblock size");

/* Descriptor tag with csum v3. */
struct jtag3 {
  uint32_t t_blocknr, t_flags, t_blocknr_high, t_checksum;
};
/* Any other tag: only the first tag_bytes are on disk (t_blocknr_high
 * only with 64BIT; csum v2 appends 2 unused bytes).
 */
struct jtag {
  uint32_t t_blocknr;
  uint16_t t_checksum;          /* csum v2 only */
  uint16_t t_flags;
  uint32_t t_blocknr_high;
};
_Static_assert (sizeof (struct jtag3) == 16 && sizeof (struct jtag) == 12,
                "jbd2 tag layout");

struct jcommit {
  struct jhdr h;
  uint8_t h_chksum_type, h_chksum_size, h_padding[2];
  uint32_t h_chksum[8];
  uint64_t h_commit_sec;
  uint32_t h_commit_nsec;
};
_Static_assert (offsetof (struct jcommit, h_commit_sec) == 48,
                "jbd2 commit block layout");

struct jrevoke {
  struct jhdr h;
  uint32_t r_count;             /* bytes used, header included */
};

#define JBD2_TAIL_BYTES 4       /* descriptor/revoke checksum under v2/v3 */

#define COMPAT_CHECKSUM         0x1
#define INCOMPAT_REVOKE         0x1
#define INCOMPAT_64BIT          0x2
#define INCOMPAT_ASYNC_COMMIT   0x4
#define INCOMPAT_CSUM_V2        0x8
#define INCOMPAT_CSUM_V3        0x10
#define INCOMPAT_FAST_COMMIT    0x20
#define INCOMPAT_KNOWN (INCOMPAT_REVOKE | INCOMPAT_64BIT | INCOMPAT_ASYNC_COMMIT | \
                        INCOMPAT_CSUM_V2 | INCOMPAT_CSUM_V3 | INCOMPAT_FAST_COMMIT)

#define CHKSUM_CRC32C           4
#define DEFAULT_FC_BLOCKS       256

#define FLAG_ESCAPE             1
#define FLAG_SAME_UUID          2
#define FLAG_LAST_TAG           8

static void __attribute__ ((format (printf, 3, 4)))
seterr (char *err, size_t errlen, const char *fmt, ...)
{
  if (err == NULL || errlen == 0)
    return;
  va_list ap;
  va_start (ap, fmt);
  vsnprintf (err, errlen, fmt, ap);
  va_end (ap);
}

static inline uint32_t
be32 (uint32_t x)
{
  return ext2fs_be32_to_cpu (x);
}

/* jbd2's crc32c is the raw CRC (no final inversion), as libext2fs's. */
static uint32_t
crc32c (uint32_t seed, const void *p, size_t n)
{
  return fsev_crc32c (seed, p, n);
}

/* crc32c of a whole block with the 4 bytes at OFF taken as zero,
 * compared with what they hold.  BUF is restored.
 */
static bool
block_csum_ok (const struct fsev_jsuper *js, uint8_t *buf, size_t off)
{
  uint32_t provided;

  memcpy (&provided, buf + off, 4);
  memset (buf + off, 0, 4);
  uint32_t calc = crc32c (js->csum_seed, buf, js->blocksize);
  memcpy (buf + off, &provided, 4);
  return be32 (provided) == calc;
}

/* --- The superblock. --- */

int
fsev_jbd2_parse_super (const void *buf, unsigned fs_blocksize,
                       struct fsev_jsuper *js, char *err, size_t errlen)
{
  struct jsuper_disk sb;
  uint32_t type, seq;

  memset (js, 0, sizeof *js);
  memcpy (&sb, buf, sizeof sb);
  if (!fsev_jbd2_header (buf, &type, &seq)) {
    seterr (err, errlen, "journal superblock: bad magic 0x%08" PRIx32,
            be32 (sb.s_header.h_magic));
    return -1;
  }
  if (type != FSEV_JBD2_SUPERBLOCK_V1 && type != FSEV_JBD2_SUPERBLOCK_V2) {
    seterr (err, errlen, "journal superblock: block type %" PRIu32
            " is not a superblock", type);
    return -1;
  }
  /* Our buffers are blocksize bytes and the superblock must fit. */
  if (fs_blocksize < 1024 || fs_blocksize > 65536 ||
      (fs_blocksize & (fs_blocksize - 1)) != 0) {
    seterr (err, errlen, "journal: unsupported block size %u", fs_blocksize);
    return -1;
  }
  js->blocksize = be32 (sb.s_blocksize);
  js->maxlen = be32 (sb.s_maxlen);
  js->first = be32 (sb.s_first);
  js->sequence = be32 (sb.s_sequence);
  js->start = be32 (sb.s_start);
  js->error = (int32_t) be32 (sb.s_errno);
  if (js->blocksize != fs_blocksize) {
    seterr (err, errlen, "journal block size %" PRIu32 " differs from the "
            "filesystem's %u", js->blocksize, fs_blocksize);
    return -1;
  }
  if (js->first == 0 || js->first >= js->maxlen) {
    seterr (err, errlen, "journal: first log block %" PRIu32 " outside the "
            "journal (%" PRIu32 " blocks)", js->first, js->maxlen);
    return -1;
  }

  /* A version 1 superblock has no features: jbd2 ignores the fields. */
  if (type == FSEV_JBD2_SUPERBLOCK_V2) {
    js->feature_compat = be32 (sb.s_feature_compat);
    js->feature_incompat = be32 (sb.s_feature_incompat);
    js->feature_ro_compat = be32 (sb.s_feature_ro_compat);
    memcpy (js->uuid, sb.s_uuid, sizeof js->uuid);
  }
  if (js->feature_incompat & ~INCOMPAT_KNOWN) {
    seterr (err, errlen, "journal: unknown incompatible features 0x%" PRIx32,
            js->feature_incompat & ~INCOMPAT_KNOWN);
    return -1;
  }
  js->is_64bit = js->feature_incompat & INCOMPAT_64BIT;
  js->csum_v2 = js->feature_incompat & INCOMPAT_CSUM_V2;
  js->csum_v3 = js->feature_incompat & INCOMPAT_CSUM_V3;
  js->csum_v1 = js->feature_compat & COMPAT_CHECKSUM;
  js->async_commit = js->feature_incompat & INCOMPAT_ASYNC_COMMIT;
  js->fast_commit = js->feature_incompat & INCOMPAT_FAST_COMMIT;
  /* jbd2 refuses these combinations, so recovery never runs on them. */
  if (js->csum_v2 && js->csum_v3) {
    seterr (err, errlen, "journal: both checksum v2 and v3");
    return -1;
  }
  if (js->csum_v1 && (js->csum_v2 || js->csum_v3)) {
    seterr (err, errlen, "journal: both checksum v1 and v2/v3");
    return -1;
  }
  if (js->csum_v2 || js->csum_v3) {
    if (sb.s_checksum_type != CHKSUM_CRC32C) {
      seterr (err, errlen, "journal: checksum type %u is not crc32c",
              sb.s_checksum_type);
      return -1;
    }
    uint32_t provided = be32 (sb.s_checksum);
    sb.s_checksum = 0;
    uint32_t calc = crc32c (~0U, &sb, sizeof sb);
    if (provided != calc) {
      seterr (err, errlen, "journal superblock: bad checksum 0x%08" PRIx32
              " (computed 0x%08" PRIx32 ")", provided, calc);
      return -1;
    }
    js->csum_seed = crc32c (~0U, js->uuid, sizeof js->uuid);
  }

  /* The fast-commit area ends the journal only once jbd2 has set its
   * own flag (at mount); recovery reads the log up to there.
   */
  if (js->fast_commit) {
    js->num_fc_blocks = be32 (sb.s_num_fc_blks);
    if (js->num_fc_blocks == 0)
      js->num_fc_blocks = DEFAULT_FC_BLOCKS;
    if (js->num_fc_blocks >= js->maxlen - js->first) {
      seterr (err, errlen, "journal: fast-commit area (%" PRIu32 " blocks) "
              "leaves no log in %" PRIu32 " blocks", js->num_fc_blocks,
              js->maxlen);
      return -1;
    }
  }
  js->log_end = js->maxlen - js->num_fc_blocks;
  if (js->start != 0 && (js->start < js->first || js->start >= js->log_end)) {
    seterr (err, errlen, "journal: log start %" PRIu32 " outside the log "
            "(%" PRIu32 "..%" PRIu32 ")", js->start, js->first,
            js->log_end - 1);
    return -1;
  }

  if (js->csum_v3)
    js->tag_bytes = sizeof (struct jtag3);
  else {
    js->tag_bytes = sizeof (struct jtag);
    if (js->csum_v2)
      js->tag_bytes += 2;
    if (!js->is_64bit)
      js->tag_bytes -= 4;
  }
  return 0;
}

bool
fsev_jbd2_header (const void *buf, uint32_t *type, uint32_t *seq)
{
  struct jhdr h;

  memcpy (&h, buf, sizeof h);
  if (be32 (h.h_magic) != FSEV_JBD2_MAGIC)
    return false;
  *type = be32 (h.h_blocktype);
  *seq = be32 (h.h_sequence);
  return true;
}

/* --- One transaction. --- */

struct parser {
  const struct fsev_jsuper *js;
  fsev_jread_fn read;
  void *opaque;
  uint32_t seq;
  uint32_t loglen;
  uint32_t budget;              /* log blocks it may occupy (<= loglen):
                                   every block read counts against it */
  uint32_t used;                /* log blocks of this transaction so far */
  uint8_t *blk, *data;          /* the block being parsed; a logged copy */
  struct fsev_jtxn *txn;
  size_t tags_cap, revoked_cap;
  char *err;
  size_t errlen;
};

/* The log block N blocks after POS, wrapping from log_end to first. */
static uint32_t
advance (const struct fsev_jsuper *js, uint32_t pos, uint64_t n)
{
  uint64_t len = js->log_end - js->first;
  return js->first + (uint32_t) (((uint64_t) (pos - js->first) + n) % len);
}

static bool
csum_v2or3 (const struct fsev_jsuper *js)
{
  return js->csum_v2 || js->csum_v3;
}

static enum fsev_jresult
oom (struct parser *p)
{
  seterr (p->err, p->errlen, "out of memory");
  return FSEV_J_IOERR;
}

static enum fsev_jresult
parse_descriptor (struct parser *p, uint32_t pos, uint32_t *ndata)
{
  const struct fsev_jsuper *js = p->js;
  struct fsev_jtxn *txn = p->txn;
  size_t limit = js->blocksize, off = sizeof (struct jhdr);
  uint32_t n = 0;

  if (csum_v2or3 (js)) {
    limit -= JBD2_TAIL_BYTES;
    if (!block_csum_ok (js, p->blk, limit)) {
      seterr (p->err, p->errlen, "transaction %" PRIu32 ": descriptor block %"
              PRIu32 ": bad checksum", p->seq, pos);
      return FSEV_J_CORRUPT;
    }
  }
  /* As jbd2: tags while a whole one fits, up to LAST_TAG.  Without
   * LAST_TAG the block's end ends the list; its UUID may overhang.
   */
  while (off + js->tag_bytes <= limit) {
    uint32_t flags, csum;
    uint64_t fsblk;

    if (js->csum_v3) {
      struct jtag3 t;
      memcpy (&t, p->blk + off, sizeof t);
      fsblk = be32 (t.t_blocknr);
      if (js->is_64bit)
        fsblk |= (uint64_t) be32 (t.t_blocknr_high) << 32;
      flags = be32 (t.t_flags);
      csum = be32 (t.t_checksum);
    }
    else {
      struct jtag t = { 0 };
      memcpy (&t, p->blk + off,
              js->tag_bytes < sizeof t ? js->tag_bytes : sizeof t);
      fsblk = be32 (t.t_blocknr);
      if (js->is_64bit)
        fsblk |= (uint64_t) be32 (t.t_blocknr_high) << 32;
      flags = ext2fs_be16_to_cpu (t.t_flags);
      csum = ext2fs_be16_to_cpu (t.t_checksum);
    }
    if ((uint64_t) p->used + 1 + n + 1 > p->budget) {
      seterr (p->err, p->errlen, "transaction %" PRIu32 ": descriptor block %"
              PRIu32 " describes more blocks than the log holds (%" PRIu32 "%s)",
              p->seq, pos, p->budget,
              p->budget < p->loglen ? " left before the walk's start" : "");
      return FSEV_J_CORRUPT;
    }

    uint32_t jblk = advance (js, pos, 1 + (uint64_t) n);
    bool ok = true;
    /* The checksum covers the copy as logged (still escaped); a bad
     * one makes recovery skip the block, not the transaction.
     */
    if (csum_v2or3 (js)) {
      uint32_t be_seq = ext2fs_cpu_to_be32 (p->seq);
      if (p->read (p->opaque, jblk, p->data) == -1) {
        seterr (p->err, p->errlen, "journal block %" PRIu32 ": read error",
                jblk);
        return FSEV_J_IOERR;
      }
      uint32_t c = crc32c (js->csum_seed, &be_seq, sizeof be_seq);
      c = crc32c (c, p->data, js->blocksize);
      ok = js->csum_v3 ? c == csum : (c & 0xFFFF) == csum;
    }

    if (fsev_grow ((void **) &txn->tags, &p->tags_cap, txn->ntags + 1,
                   sizeof *txn->tags) == -1)
      return oom (p);
    txn->tags[txn->ntags++] = (struct fsev_jtag) {
      .fsblk = fsblk, .jblk = jblk,
      .escaped = flags & FLAG_ESCAPE, .csum_ok = ok,
    };
    n++;
    off += js->tag_bytes;
    if (!(flags & FLAG_SAME_UUID))
      off += 16;
    if (flags & FLAG_LAST_TAG)
      break;
  }
  *ndata = n;
  return FSEV_J_OK;
}

static enum fsev_jresult
parse_revoke (struct parser *p, uint32_t pos)
{
  const struct fsev_jsuper *js = p->js;
  struct fsev_jtxn *txn = p->txn;
  struct jrevoke r;
  size_t limit = js->blocksize;
  size_t rec = js->is_64bit ? 8 : 4;

  if (csum_v2or3 (js)) {
    limit -= JBD2_TAIL_BYTES;
    if (!block_csum_ok (js, p->blk, limit)) {
      seterr (p->err, p->errlen, "transaction %" PRIu32 ": revoke block %"
              PRIu32 ": bad checksum", p->seq, pos);
      return FSEV_J_CORRUPT;
    }
  }
  memcpy (&r, p->blk, sizeof r);
  uint32_t count = be32 (r.r_count);
  /* jbd2 fails recovery on this; a short count just means no records. */
  if (count > limit) {
    seterr (p->err, p->errlen, "transaction %" PRIu32 ": revoke block %"
            PRIu32 ": r_count %" PRIu32 " exceeds the %zu usable bytes",
            p->seq, pos, count, limit);
    return FSEV_J_CORRUPT;
  }
  for (size_t off = sizeof r; off + rec <= count; off += rec) {
    uint64_t blk;
    if (rec == 8) {
      uint64_t v;
      memcpy (&v, p->blk + off, 8);
      blk = ext2fs_be64_to_cpu (v);
    }
    else {
      uint32_t v;
      memcpy (&v, p->blk + off, 4);
      blk = be32 (v);
    }
    if (fsev_grow ((void **) &txn->revoked, &p->revoked_cap,
                   txn->nrevoked + 1, sizeof *txn->revoked) == -1)
      return oom (p);
    txn->revoked[txn->nrevoked++] = blk;
  }
  return FSEV_J_OK;
}

static enum fsev_jresult
parse_commit (struct parser *p, uint32_t pos)
{
  const struct fsev_jsuper *js = p->js;
  struct jcommit c;

  /* A bad commit checksum means the commit never completed.  (v1
   * checksums are not verified.)
   */
  if (csum_v2or3 (js) &&
      !block_csum_ok (js, p->blk, offsetof (struct jcommit, h_chksum))) {
    seterr (p->err, p->errlen, "transaction %" PRIu32 ": commit block %"
            PRIu32 ": bad checksum", p->seq, pos);
    return FSEV_J_CORRUPT;
  }
  memcpy (&c, p->blk, sizeof c);
  p->txn->commit_sec = ext2fs_be64_to_cpu (c.h_commit_sec);
  p->txn->commit_nsec = be32 (c.h_commit_nsec);
  p->txn->commit_jblk = pos;
  p->txn->next = advance (js, pos, 1);
  return FSEV_J_OK;
}

static enum fsev_jresult
parse_blocks (struct parser *p, uint32_t start)
{
  const struct fsev_jsuper *js = p->js;
  uint32_t pos = start;

  for (;;) {
    uint32_t type, bseq, ndata = 0;
    enum fsev_jresult r;

    if (p->used >= p->budget) {
      if (p->used == 0)
        seterr (p->err, p->errlen, "no transaction %" PRIu32 " at block %"
                PRIu32 ": the walk went all round the log", p->seq, start);
      else
        seterr (p->err, p->errlen, "transaction %" PRIu32 " from block %"
                PRIu32 ": no commit block within the log's %" PRIu32
                " blocks%s", p->seq, start, p->budget,
                p->budget < p->loglen ? " left before the walk's start" : "");
      return p->used == 0 ? FSEV_J_END : FSEV_J_CORRUPT;
    }
    if (p->read (p->opaque, pos, p->blk) == -1) {
      seterr (p->err, p->errlen, "journal block %" PRIu32 ": read error", pos);
      return FSEV_J_IOERR;
    }
    /* Recovery ends quietly at any block that is not the next one of
     * this transaction: a clean end of log, or a commit never written.
     */
    if (!fsev_jbd2_header (p->blk, &type, &bseq)) {
      if (p->used == 0)
        seterr (p->err, p->errlen, "no transaction at block %" PRIu32
                ": no jbd2 magic", pos);
      else
        seterr (p->err, p->errlen, "transaction %" PRIu32 ": no commit "
                "block (block %" PRIu32 " has no jbd2 magic)", p->seq, pos);
      return FSEV_J_END;
    }
    if (bseq != p->seq) {
      if (p->used == 0)
        seterr (p->err, p->errlen, "no transaction %" PRIu32 " at block %"
                PRIu32 ": it holds sequence %" PRIu32, p->seq, pos, bseq);
      else
        seterr (p->err, p->errlen, "transaction %" PRIu32 ": no commit "
                "block (block %" PRIu32 " holds sequence %" PRIu32 ")",
                p->seq, pos, bseq);
      return FSEV_J_END;
    }

    switch (type) {
    case FSEV_JBD2_DESCRIPTOR:
      r = parse_descriptor (p, pos, &ndata);
      break;
    case FSEV_JBD2_REVOKE:
      r = parse_revoke (p, pos);
      break;
    case FSEV_JBD2_COMMIT:
      r = parse_commit (p, pos);
      if (r == FSEV_J_OK)
        p->txn->nblocks = p->used + 1;
      return r;
    default:
      /* jbd2 ends its scan at an unknown block type too. */
      seterr (p->err, p->errlen, "transaction %" PRIu32 ": block %" PRIu32
              " has type %" PRIu32 ", not descriptor, revoke or commit",
              p->seq, pos, type);
      return FSEV_J_END;
    }
    if (r != FSEV_J_OK)
      return r;
    /* parse_descriptor kept used + 1 + ndata within the log. */
    p->used += 1 + ndata;
    pos = advance (js, pos, 1 + (uint64_t) ndata);
  }
}

/* Parse transaction SEQ at START, letting it occupy at most BUDGET
 * log blocks (at most the log's length): the blocks it reads are among
 * those, so it reads at most BUDGET of them, each at most once.
 */
static enum fsev_jresult
parse_txn_bounded (const struct fsev_jsuper *js,
                   fsev_jread_fn read, void *opaque,
                   uint32_t start, uint32_t seq, uint64_t budget,
                   struct fsev_jtxn *txn, char *err, size_t errlen)
{
  enum fsev_jresult r;

  memset (txn, 0, sizeof *txn);
  /* JS may not come from fsev_jbd2_parse_super: the walk's bounds and
   * our buffer sizes rest on these.
   */
  if (js->blocksize < 1024 || js->blocksize > 65536 ||
      js->first == 0 || js->first >= js->log_end || js->log_end > js->maxlen ||
      js->tag_bytes < 8 || js->tag_bytes > sizeof (struct jtag3)) {
    seterr (err, errlen, "journal description is not valid");
    return FSEV_J_CORRUPT;
  }
  if (start < js->first || start >= js->log_end) {
    seterr (err, errlen, "transaction %" PRIu32 ": start block %" PRIu32
            " outside the log (%" PRIu32 "..%" PRIu32 ")",
            seq, start, js->first, js->log_end - 1);
    return FSEV_J_CORRUPT;
  }

  struct parser p = {
    .js = js, .read = read, .opaque = opaque, .seq = seq,
    .loglen = js->log_end - js->first, .txn = txn,
    .err = err, .errlen = errlen,
  };
  p.budget = budget < p.loglen ? (uint32_t) budget : p.loglen;
  p.blk = malloc (js->blocksize);
  p.data = malloc (js->blocksize);
  if (p.blk == NULL || p.data == NULL)
    r = oom (&p);
  else {
    txn->sequence = seq;
    txn->start = start;
    r = parse_blocks (&p, start);
  }
  free (p.blk);
  free (p.data);
  if (r != FSEV_J_OK) {
    fsev_jtxn_free (txn);
    memset (txn, 0, sizeof *txn);
  }
  return r;
}

enum fsev_jresult
fsev_jbd2_parse_txn (const struct fsev_jsuper *js,
                     fsev_jread_fn read, void *opaque,
                     uint32_t start, uint32_t seq,
                     struct fsev_jtxn *txn, char *err, size_t errlen)
{
  return parse_txn_bounded (js, read, opaque, start, seq, UINT32_MAX,
                            txn, err, errlen);
}

void
fsev_jtxn_free (struct fsev_jtxn *txn)
{
  free (txn->tags);
  free (txn->revoked);
  txn->tags = NULL;
  txn->revoked = NULL;
  txn->ntags = txn->nrevoked = 0;
}

/* --- What recovery replays. --- */

/* With s_start == 0 the journal is clean: nothing to replay, and *NEXT
 * is s_first and *NEXT_SEQ s_sequence, what the log's header promises.
 * (After mounting a clean or recovered journal the kernel starts at
 * s_first, or s_head with journal_cycle_record, and skips one sequence
 * number; a follower should expect that.)
 *
 * The walk stops quietly at the first transaction that is not complete
 * (call fsev_jbd2_parse_txn at *NEXT to learn why).  If FN fails, *NEXT
 * is the start of the transaction it refused.
 *
 * Its work is bounded by one lap of the log: the transactions it
 * accepts and the one it stops at together occupy at most the log's
 * length from s_start (each is parsed with the blocks left before the
 * walk would come back to s_start as its budget), every block read
 * lies in that lap, and none is read twice.  A transaction that would
 * run past s_start again, into what the walk already took as older
 * transactions, is not one recovery could find in a sane log: the
 * walk stops there.  Every transaction takes at least one block, so
 * the loop ends after at most the log's length of them.
 */
int
fsev_jbd2_walk (const struct fsev_jsuper *js,
                fsev_jread_fn read, void *opaque,
                fsev_jtxn_fn fn, void *fn_opaque,
                uint32_t *next, uint32_t *next_seq)
{
  uint32_t pos = js->first, seq = js->sequence;
  uint64_t walked = 0;
  int n = 0, ret = 0;

  if (js->start != 0 && js->first < js->log_end) {
    uint64_t loglen = js->log_end - js->first;
    pos = js->start;
    /* Each transaction takes at least one block and none can be
     * longer than the log, so this ends; the bound makes it plain.
     */
    while (walked < loglen && n < INT_MAX) {
      struct fsev_jtxn txn;
      char err[256];
      enum fsev_jresult r = parse_txn_bounded (js, read, opaque, pos, seq,
                                               loglen - walked,
                                               &txn, err, sizeof err);
      if (r == FSEV_J_IOERR) {
        ret = -1;
        break;
      }
      if (r != FSEV_J_OK)
        break;
      int fr = fn ? fn (&txn, fn_opaque) : 0;
      uint32_t tnext = txn.next, tlen = txn.nblocks;
      fsev_jtxn_free (&txn);
      if (fr != 0) {
        ret = -1;
        break;
      }
      n++;
      walked += tlen;
      pos = tnext;
      seq++;
    }
  }
  if (next)
    *next = pos;
  if (next_seq)
    *next_seq = seq;
  return ret == -1 ? -1 : n;
}
