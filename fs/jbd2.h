/* fs/jbd2.h: the jbd2 journal of ext3/ext4, parsed as hostile input.
 *
 * The on-disk structures are defined here (big-endian; libext2fs-dev
 * does not install kernel-jbd.h).  The parser reads journal blocks
 * through a callback, so it can read the image, the image plus a
 * request still in flight, or a test buffer.  It never trusts a count,
 * an offset or a block number it read: every loop is bounded by the
 * journal's length.
 *
 * Journal blocks are numbered as logical blocks of the journal inode
 * ("jblk"): 0 is the journal superblock, the log runs from s_first to
 * log_end - 1 and wraps back to s_first.
 */
#ifndef FSEVENT_JBD2_H
#define FSEVENT_JBD2_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define FSEV_JBD2_MAGIC 0xC03B3998U

enum fsev_jbd2_blocktype {
  FSEV_JBD2_DESCRIPTOR = 1,
  FSEV_JBD2_COMMIT = 2,
  FSEV_JBD2_SUPERBLOCK_V1 = 3,
  FSEV_JBD2_SUPERBLOCK_V2 = 4,
  FSEV_JBD2_REVOKE = 5,
  FSEV_JBD2_FC = 6,
};

/* The journal superblock, decoded. */
struct fsev_jsuper {
  uint32_t blocksize;
  uint32_t maxlen;              /* blocks in the journal, fast-commit area included */
  uint32_t first;               /* first block of the log */
  uint32_t log_end;             /* first block past the log (maxlen - fast-commit blocks) */
  uint32_t sequence;            /* s_sequence: first transaction expected in the log */
  uint32_t start;               /* s_start: 0 when the journal is clean */
  int32_t error;                /* s_errno */
  uint32_t feature_compat, feature_incompat, feature_ro_compat;
  uint8_t uuid[16];
  uint32_t num_fc_blocks;
  bool is_64bit;                /* INCOMPAT_64BIT: 64-bit block numbers */
  bool csum_v2, csum_v3;        /* INCOMPAT_CSUM_V2 / V3: crc32c checksums */
  bool csum_v1;                 /* COMPAT_CHECKSUM (not verified) */
  bool async_commit;
  bool fast_commit;
  uint32_t csum_seed;           /* crc32c (~0, uuid) when csum_v2/v3 */
  unsigned tag_bytes;           /* size of one descriptor tag, without UUID */
};

/* Decode the journal superblock in BUF (at least 1024 bytes).  Returns
 * 0, or -1 with a message in ERR when it is not a usable jbd2
 * superblock (bad magic or type, block size other than FS_BLOCKSIZE,
 * first/maxlen out of range, unknown incompatible features, bad
 * checksum under csum v2/v3).
 */
extern int fsev_jbd2_parse_super (const void *buf, unsigned fs_blocksize,
                                  struct fsev_jsuper *js,
                                  char *err, size_t errlen);

/* The header of a jbd2 block: returns true if BUF starts with the jbd2
 * magic, filling TYPE and SEQ.
 */
extern bool fsev_jbd2_header (const void *buf, uint32_t *type, uint32_t *seq);

/* Read journal block JBLK (0 <= jblk < maxlen) into BUF (blocksize
 * bytes).  Returns 0, or -1 on an I/O error.
 */
typedef int (*fsev_jread_fn) (void *opaque, uint32_t jblk, void *buf);

/* One block logged by a transaction: its home (filesystem block) and
 * where its copy lies in the journal.
 */
struct fsev_jtag {
  uint64_t fsblk;
  uint32_t jblk;
  bool escaped;                 /* the copy's first 4 bytes were zeroed:
                                   put the magic back when reading it */
  bool csum_ok;                 /* false when csum v2/v3 says the copy is
                                   damaged (recovery skips it) */
};

struct fsev_jtxn {
  uint32_t sequence;
  uint32_t start;               /* jblk of its first block */
  uint32_t commit_jblk;         /* jblk of its commit block */
  uint32_t next;                /* jblk after the commit block, wrapped */
  uint32_t nblocks;             /* journal blocks it occupies */
  struct fsev_jtag *tags;       /* in log order */
  size_t ntags;
  uint64_t *revoked;            /* filesystem blocks revoked by it */
  size_t nrevoked;
  uint64_t commit_sec;
  uint32_t commit_nsec;
};

enum fsev_jresult {
  FSEV_J_OK,                    /* a complete, committed transaction */
  FSEV_J_END,                   /* no transaction SEQ starts there, or it
                                   has no commit block: where recovery stops */
  FSEV_J_CORRUPT,               /* it starts there but is malformed: bad
                                   checksum, bad tag count, revoke overflow... */
  FSEV_J_IOERR,                 /* the read callback failed */
};

/* Parse transaction SEQ starting at journal block START: descriptor and
 * revoke blocks (32/64-bit tags, csum v2/v3 tails and tag checksums,
 * ESCAPE, SAME_UUID, LAST_TAG), the logged blocks they describe, up to
 * its commit block (checksum verified under v2/v3), wrapping from
 * log_end - 1 to first.  Work: it reads only blocks the transaction
 * would occupy, each at most once, and at most the log's length of
 * them (log_end - first), so a hostile descriptor or a missing commit
 * costs at most one lap of the log.  On anything but FSEV_J_OK, TXN
 * holds nothing to free and ERR says why.
 */
extern enum fsev_jresult fsev_jbd2_parse_txn (const struct fsev_jsuper *js,
                                              fsev_jread_fn read, void *opaque,
                                              uint32_t start, uint32_t seq,
                                              struct fsev_jtxn *txn,
                                              char *err, size_t errlen);
extern void fsev_jtxn_free (struct fsev_jtxn *txn);

/* What recovery would replay: from s_start with s_sequence, call FN for
 * each complete transaction in order, stopping at the first that is
 * not (FSEV_J_END or FSEV_J_CORRUPT end the walk normally).  FN returns
 * 0 to go on.  Returns the number of transactions walked, or -1 on an
 * I/O error or when FN fails.  *NEXT and *NEXT_SEQ (if not NULL) get
 * where the next transaction would start and its sequence.
 *
 * Bound on its work, whatever the log holds: one lap of the log from
 * s_start.  It stops at the first block that is not the next block of
 * the expected transaction (a descriptor, revoke or commit block with
 * the expected sequence), and the transactions it accepts plus the one
 * it stops in occupy at most log_end - first blocks: a transaction
 * that would reach s_start again ends the walk.  So it calls READ at
 * most log_end - first times, never twice for one block, and calls FN
 * at most log_end - first times (every transaction takes a block at
 * least); it cannot loop.
 */
typedef int (*fsev_jtxn_fn) (const struct fsev_jtxn *txn, void *opaque);
extern int fsev_jbd2_walk (const struct fsev_jsuper *js,
                           fsev_jread_fn read, void *opaque,
                           fsev_jtxn_fn fn, void *fn_opaque,
                           uint32_t *next, uint32_t *next_seq);

#endif /* FSEVENT_JBD2_H */
