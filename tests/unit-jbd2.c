/* tests/unit-jbd2.c: Check unit tests for fs/jbd2.c.
 *
 * Oracles: mke2fs makes the journals, debugfs writes transactions into
 * them (jo, jw, jc) and reads them back (logdump -a), dumpe2fs decodes
 * the journal superblock.  The journal is read from the image through
 * libext2fs's block map of the journal inode.  Corruptions are applied
 * to a copy of the journal in memory after debugfs wrote it; wrapped
 * and hostile logs are built in memory.  Where a test must recompute a
 * checksum after an edit it does so with the formula the kernel
 * documents, checked first against what debugfs wrote.
 */
#include <config.h>

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <check.h>
#include <ext2fs/ext2fs.h>

#include "crc32c.h"
#include "jbd2.h"
#include "unit.h"

#define MAGIC_BYTES "\xc0\x3b\x39\x98"

/* --- Big-endian helpers for editing blocks (independent of jbd2.c). --- */

static uint32_t
get32 (const uint8_t *p)
{
  return (uint32_t) p[0] << 24 | (uint32_t) p[1] << 16 | (uint32_t) p[2] << 8 | p[3];
}

static void
put32 (uint8_t *p, uint32_t v)
{
  p[0] = v >> 24;
  p[1] = v >> 16;
  p[2] = v >> 8;
  p[3] = v;
}

static void
put16 (uint8_t *p, uint16_t v)
{
  p[0] = v >> 8;
  p[1] = v;
}

/* --- Journals in memory. --- */

struct jmem {
  uint8_t *buf;
  uint32_t bs, nblocks;
  long reads;
  long fail_after;              /* fail reads after this many; -1 never */
};

static int
mem_read (void *opaque, uint32_t jblk, void *buf)
{
  struct jmem *m = opaque;
  ck_assert_msg (jblk < m->nblocks, "read of journal block %u past %u",
                 jblk, m->nblocks);
  if (m->fail_after >= 0 && m->reads >= m->fail_after)
    return -1;
  m->reads++;
  memcpy (buf, m->buf + (size_t) jblk * m->bs, m->bs);
  return 0;
}

static uint8_t *
blk (struct jmem *m, uint32_t jblk)
{
  return m->buf + (size_t) jblk * m->bs;
}

static void
jmem_new (struct jmem *m, uint32_t bs, uint32_t nblocks)
{
  m->bs = bs;
  m->nblocks = nblocks;
  m->reads = 0;
  m->fail_after = -1;
  m->buf = calloc (nblocks, bs);
  ck_assert_ptr_nonnull (m->buf);
}

static void
jmem_copy (struct jmem *dst, const struct jmem *src)
{
  jmem_new (dst, src->bs, src->nblocks);
  memcpy (dst->buf, src->buf, (size_t) src->bs * src->nblocks);
}

/* The kernel's checksum recipes, for re-sealing edited blocks. */
static uint32_t
seed_of (const struct jmem *m)
{
  return ext2fs_crc32c_le (~0U, m->buf + 0x30, 16);
}

static void
seal_super (struct jmem *m)
{
  uint8_t *sb = blk (m, 0);
  put32 (sb + 0xFC, 0);
  put32 (sb + 0xFC, ext2fs_crc32c_le (~0U, sb, 1024));
}

static void
seal_tail (struct jmem *m, uint32_t jblk)
{
  uint8_t *b = blk (m, jblk);
  put32 (b + m->bs - 4, 0);
  put32 (b + m->bs - 4, ext2fs_crc32c_le (seed_of (m), b, m->bs));
}

static void
seal_commit (struct jmem *m, uint32_t jblk)
{
  uint8_t *b = blk (m, jblk);
  put32 (b + 16, 0);
  put32 (b + 16, ext2fs_crc32c_le (seed_of (m), b, m->bs));
}

static uint32_t
data_csum (const struct jmem *m, uint32_t seq, const uint8_t *data)
{
  uint8_t s[4];
  put32 (s, seq);
  return ext2fs_crc32c_le (ext2fs_crc32c_le (seed_of (m), s, 4), data, m->bs);
}

static void
header (uint8_t *b, uint32_t type, uint32_t seq)
{
  memcpy (b, MAGIC_BYTES, 4);
  put32 (b + 4, type);
  put32 (b + 8, seq);
}

/* A synthetic journal superblock: v2, no features unless INCOMPAT. */
static void
make_super (struct jmem *m, uint32_t first, uint32_t seq, uint32_t start,
            uint32_t incompat)
{
  uint8_t *sb = blk (m, 0);
  header (sb, FSEV_JBD2_SUPERBLOCK_V2, 0);
  put32 (sb + 12, m->bs);
  put32 (sb + 16, m->nblocks);
  put32 (sb + 20, first);
  put32 (sb + 24, seq);
  put32 (sb + 28, start);
  put32 (sb + 40, incompat);
  for (int i = 0; i < 16; i++)
    sb[0x30 + i] = 0x11 * (i + 1);
  if (incompat & 0x18) {
    sb[0x50] = 4;
    seal_super (m);
  }
}

static void
parse_super_ok (struct jmem *m, struct fsev_jsuper *js)
{
  char err[256];
  ck_assert_msg (fsev_jbd2_parse_super (blk (m, 0), m->bs, js, err, sizeof err) == 0,
                 "parse_super: %s", err);
}

/* --- Transactions collected by a walk. --- */

#define MAXT 64
struct collected {
  size_t n;
  struct fsev_jtxn t[MAXT];
  int fail_at;                  /* callback fails on this index; -1 never */
};

static int
collect_fn (const struct fsev_jtxn *txn, void *opaque)
{
  struct collected *c = opaque;
  if (c->fail_at >= 0 && (size_t) c->fail_at == c->n)
    return -1;
  ck_assert_uint_lt (c->n, MAXT);
  struct fsev_jtxn *d = &c->t[c->n++];
  *d = *txn;
  d->tags = malloc ((txn->ntags + 1) * sizeof *txn->tags);
  d->revoked = malloc ((txn->nrevoked + 1) * sizeof *txn->revoked);
  ck_assert (d->tags && d->revoked);
  if (txn->ntags)
    memcpy (d->tags, txn->tags, txn->ntags * sizeof *txn->tags);
  if (txn->nrevoked)
    memcpy (d->revoked, txn->revoked, txn->nrevoked * sizeof *txn->revoked);
  return 0;
}

static void
collected_free (struct collected *c)
{
  for (size_t i = 0; i < c->n; i++)
    fsev_jtxn_free (&c->t[i]);
  c->n = 0;
}

/* --- Real journals: mke2fs, debugfs, logdump. --- */

struct otxn {                   /* one transaction as logdump shows it */
  uint32_t seq, start, commit;
  bool committed;
  size_t ntags, nrev;
  uint64_t fsblk[512];
  uint32_t jblk[512], flags[512];
  uint64_t rev[64];
};

struct real {
  char *img;
  time_t t0, t1;                /* around the debugfs run */
  struct jmem mem;              /* the whole journal, read via bmap */
  int fd;
  blk64_t *pblk;                /* journal block -> filesystem block */
  uint32_t logdump_start, logdump_seq;
  size_t n;
  struct otxn t[16];
  /* dumpe2fs */
  uint32_t d_blocks, d_seq, d_start, d_fc;
  char d_features[256];
};

static int
file_read (void *opaque, uint32_t jblk, void *buf)
{
  struct real *r = opaque;
  ck_assert_uint_lt (jblk, r->mem.nblocks);
  ssize_t n = pread (r->fd, buf, r->mem.bs, (off_t) r->pblk[jblk] * r->mem.bs);
  return n == (ssize_t) r->mem.bs ? 0 : -1;
}

static void
load_journal (struct real *r)
{
  ext2_filsys fs;
  struct ext2_inode inode;
  errcode_t e = ext2fs_open (r->img, EXT2_FLAG_64BITS, 0, 0, unix_io_manager, &fs);
  ck_assert_msg (e == 0, "ext2fs_open %s: %ld", r->img, (long) e);
  ext2_ino_t ino = fs->super->s_journal_inum;
  ck_assert_int_eq (ext2fs_read_inode (fs, ino, &inode), 0);
  uint32_t bs = fs->blocksize;
  uint32_t n = EXT2_I_SIZE (&inode) / bs;
  r->pblk = calloc (n, sizeof *r->pblk);
  ck_assert_ptr_nonnull (r->pblk);
  for (uint32_t i = 0; i < n; i++) {
    ck_assert_int_eq (ext2fs_bmap2 (fs, ino, &inode, NULL, 0, i, NULL,
                                    &r->pblk[i]), 0);
    ck_assert_uint_ne (r->pblk[i], 0);
  }
  ext2fs_close_free (&fs);
  r->fd = open (r->img, O_RDONLY);
  ck_assert_int_ge (r->fd, 0);
  jmem_new (&r->mem, bs, n);
  for (uint32_t i = 0; i < n; i++)
    ck_assert_int_eq (file_read (r, i, blk (&r->mem, i)), 0);
}

static void
run_logdump (struct real *r)
{
  char cmd[1024], line[512];
  snprintf (cmd, sizeof cmd, "debugfs -R 'logdump -a' %s 2>/dev/null", r->img);
  FILE *p = popen (cmd, "r");
  ck_assert_ptr_nonnull (p);
  r->n = 0;
  while (fgets (line, sizeof line, p)) {
    unsigned a, b, c, f;
    unsigned long long fb;
    struct otxn *t = r->n ? &r->t[r->n - 1] : NULL;
    if (sscanf (line, "Journal starts at block %u, transaction %u", &a, &b) == 2) {
      r->logdump_start = a;
      r->logdump_seq = b;
    }
    else if (sscanf (line, "Found expected sequence %u, type %u (%*[^)]) at block %u",
                     &a, &b, &c) == 3) {
      if (t == NULL || t->seq != a || t->committed) {
        ck_assert_uint_lt (r->n, 16);
        t = &r->t[r->n++];
        memset (t, 0, sizeof *t);
        t->seq = a;
        t->start = c;
      }
      if (b == 2) {
        t->committed = true;
        t->commit = c;
      }
    }
    else if (sscanf (line, " FS block %llu logged at journal block %u (flags 0x%x)",
                     &fb, &a, &f) == 3) {
      ck_assert_ptr_nonnull (t);
      ck_assert_uint_lt (t->ntags, 512);
      t->fsblk[t->ntags] = fb;
      t->jblk[t->ntags] = a;
      t->flags[t->ntags++] = f;
    }
    else if (sscanf (line, " Revoke FS block %llu", &fb) == 1) {
      ck_assert_ptr_nonnull (t);
      ck_assert_uint_lt (t->nrev, 64);
      t->rev[t->nrev++] = fb;
    }
  }
  ck_assert_int_eq (pclose (p), 0);
}

static void
run_dumpe2fs (struct real *r)
{
  char cmd[1024], line[512];
  snprintf (cmd, sizeof cmd, "dumpe2fs -h %s 2>/dev/null", r->img);
  FILE *p = popen (cmd, "r");
  ck_assert_ptr_nonnull (p);
  r->d_features[0] = 0;
  while (fgets (line, sizeof line, p)) {
    sscanf (line, "Total journal blocks: %u", &r->d_blocks);
    sscanf (line, "Journal sequence: %x", &r->d_seq);
    sscanf (line, "Journal start: %u", &r->d_start);
    sscanf (line, "Fast commit length: %u", &r->d_fc);
    if (strncmp (line, "Journal features:", 17) == 0)
      snprintf (r->d_features, sizeof r->d_features, "%.200s", line + 17);
  }
  pclose (p);
}

/* A data file for jw: block K is filled with K+1, except block 1,
 * which starts with the jbd2 magic (so debugfs must escape it).
 */
static char *
make_data (unsigned bs, unsigned nblocks)
{
  char size[32];
  snprintf (size, sizeof size, "%u", bs * nblocks);
  char *path = unit_zero_file (size);
  uint8_t *b = malloc (bs);
  int fd = open (path, O_WRONLY);
  ck_assert_int_ge (fd, 0);
  for (unsigned k = 0; k < nblocks; k++) {
    memset (b, k + 1, bs);
    if (k == 1)
      memcpy (b, MAGIC_BYTES, 4);
    ck_assert_int_eq (pwrite (fd, b, bs, (off_t) k * bs), bs);
  }
  close (fd);
  free (b);
  return path;
}

/* Make an image with MKFS options and let debugfs write the journal
 * commands in CMDS (DATA is replaced by the data file's path).
 */
static void
make_real (struct real *r, const char *mkfs, const char *size,
           const char *cmds, unsigned bs)
{
  memset (r, 0, sizeof *r);
  r->img = unit_mkfs (mkfs, size);
  if (cmds) {
    char *data = make_data (bs, 400);
    char *script = unit_zero_file ("0");
    FILE *f = fopen (script, "w");
    ck_assert_ptr_nonnull (f);
    for (const char *p = cmds; *p; p++) {
      if (strncmp (p, "DATA", 4) == 0) {
        fputs (data, f);
        p += 3;
      }
      else
        fputc (*p, f);
    }
    fclose (f);
    char cmd[2048];
    snprintf (cmd, sizeof cmd, "debugfs -w -f %s %s >/dev/null 2>&1", script, r->img);
    r->t0 = time (NULL);
    ck_assert_msg (system (cmd) == 0, "%s failed", cmd);
    r->t1 = time (NULL);
    unit_rm (script);
    unit_rm (data);
    run_logdump (r);
  }
  run_dumpe2fs (r);
  load_journal (r);
}

static void
free_real (struct real *r)
{
  free (r->mem.buf);
  free (r->pblk);
  close (r->fd);
  unit_rm (r->img);
}

/* The transactions recovery would replay: those logdump shows, up to
 * the first without a commit block.
 */
static size_t
committed (const struct real *r)
{
  size_t n = 0;
  while (n < r->n && r->t[n].committed)
    n++;
  return n;
}

static void
assert_matches_logdump (const struct real *r, const struct collected *c,
                        const char *what)
{
  size_t n = committed (r);
  ck_assert_msg (c->n == n, "%s: walked %zu transactions, logdump has %zu "
                 "committed", what, c->n, n);
  for (size_t i = 0; i < n; i++) {
    const struct fsev_jtxn *t = &c->t[i];
    const struct otxn *o = &r->t[i];
    ck_assert_uint_eq (t->sequence, o->seq);
    ck_assert_uint_eq (t->start, o->start);
    ck_assert_uint_eq (t->commit_jblk, o->commit);
    ck_assert_uint_eq (t->next, o->commit + 1);
    ck_assert_uint_eq (t->nblocks, o->commit - o->start + 1);
    ck_assert_msg (t->ntags == o->ntags, "%s: txn %u: %zu tags, logdump %zu",
                   what, o->seq, t->ntags, o->ntags);
    for (size_t k = 0; k < o->ntags; k++) {
      ck_assert_uint_eq (t->tags[k].fsblk, o->fsblk[k]);
      ck_assert_uint_eq (t->tags[k].jblk, o->jblk[k]);
      ck_assert_int_eq (t->tags[k].escaped, (o->flags[k] & 1) != 0);
      ck_assert_msg (t->tags[k].csum_ok, "%s: txn %u tag %zu: bad checksum",
                     what, o->seq, k);
    }
    ck_assert_uint_eq (t->nrevoked, o->nrev);
    for (size_t k = 0; k < o->nrev; k++)
      ck_assert_uint_eq (t->revoked[k], o->rev[k]);
    /* debugfs 1.47 stores tv_sec with cpu_to_be32 into the 64-bit
     * field, which puts the seconds in its high half; the kernel
     * writes a true be64 (test_synthetic_wrap_64bit checks that).
     */
    uint64_t sec = t->commit_sec;
    if ((sec & 0xFFFFFFFF) == 0)
      sec >>= 32;
    ck_assert_msg ((time_t) sec >= r->t0 - 1 && (time_t) sec <= r->t1 + 1,
                   "%s: commit time %" PRIu64 " not when debugfs ran", what,
                   t->commit_sec);
    /* debugfs writes microseconds * 1000. */
    ck_assert_uint_lt (t->commit_nsec, 1000000000);
    ck_assert_uint_eq (t->commit_nsec % 1000, 0);
  }
}

/* The standard transactions: 1 = two blocks (the second escaped),
 * 2 = two revokes, 3 = three blocks, 4 = one block, never committed.
 */
static const char std_cmds[] =
  "jw -b 333,334 DATA\n"
  "jw -r 335,336 DATA\n"
  "jw -b 400,401,402 DATA\n"
  "jw -b 500 -c DATA\n"
  "jc\n";

struct scenario {
  const char *name, *mkfs, *jo;
  unsigned bs;
  bool is64, v1, v2, v3;
  unsigned tag_bytes;
};

static const struct scenario scenarios[] = {
  { "ext4 csum v3", "-t ext4 -b 4096", "jo -c", 4096, true, false, false, true, 16 },
  { "ext4 csum v2", "-t ext4 -b 4096", "jo -c -v 2", 4096, true, false, true, false, 14 },
  { "ext4 no csum", "-t ext4 -b 4096", "jo", 4096, true, false, false, false, 12 },
  { "32-bit csum v3", "-t ext4 -b 4096 -O ^64bit", "jo -c", 4096, false, false, false, true, 16 },
  { "32-bit csum v2", "-t ext4 -b 4096 -O ^64bit", "jo -c -v 2", 4096, false, false, true, false, 10 },
  { "32-bit no csum", "-t ext4 -b 4096 -O ^64bit,^metadata_csum", "jo", 4096, false, false, false, false, 8 },
  { "csum v1 1k", "-t ext4 -b 1024 -O ^metadata_csum -J size=4", "jo -c", 1024, true, true, false, false, 12 },
  { "ext3 1k", "-t ext3 -b 1024 -J size=4", "jo", 1024, false, false, false, false, 8 },
};
#define NSCENARIOS (sizeof scenarios / sizeof scenarios[0])

static void
make_scenario (struct real *r, const struct scenario *s, const char *extra)
{
  char cmds[4096];
  snprintf (cmds, sizeof cmds, "%s\n%s%s", s->jo, extra ? extra : "", std_cmds);
  make_real (r, s->mkfs, "64M", cmds, s->bs);
}

/* The checksum the parser uses is libext2fs's CRC32C, whatever the
 * CPU: lengths around the 8-byte steps, every alignment, many seeds.
 */
START_TEST (test_crc32c_matches_libext2fs)
{
  static unsigned char buf[4096 + 16];
  uint32_t x = 12345;
  for (size_t i = 0; i < sizeof buf; i++) {
    x = x * 1103515245 + 12345;
    buf[i] = x >> 16;
  }
  for (size_t off = 0; off < 8; off++)
    for (size_t n = 0; n <= 70; n++) {
      uint32_t seed = n * 2654435761u ^ off;
      ck_assert_uint_eq (fsev_crc32c (seed, buf + off, n),
                         ext2fs_crc32c_le (seed, buf + off, n));
    }
  ck_assert_uint_eq (fsev_crc32c (~0U, buf, 4096), ext2fs_crc32c_le (~0U, buf, 4096));
  ck_assert_uint_eq (fsev_crc32c (0, buf + 3, 4093), ext2fs_crc32c_le (0, buf + 3, 4093));
  /* A known value: CRC32C of "123456789" is 0xE3069283 after the usual
   * inversions (RFC 3720's check value).
   */
  ck_assert_uint_eq (~fsev_crc32c (~0U, "123456789", 9), 0xE3069283);
}
END_TEST

START_TEST (test_clean_journal)
{
  struct real r;
  struct fsev_jsuper js;
  struct collected c = { .fail_at = -1 };
  uint32_t next = 0, next_seq = 0;

  make_real (&r, "-t ext4 -b 4096", "64M", NULL, 4096);
  parse_super_ok (&r.mem, &js);
  ck_assert_uint_eq (js.maxlen, r.d_blocks);
  ck_assert_uint_eq (js.sequence, r.d_seq);
  ck_assert_uint_eq (js.start, 0);
  ck_assert_uint_eq (r.d_start, 0);
  ck_assert_int_eq (fsev_jbd2_walk (&js, file_read, &r, collect_fn, &c,
                                    &next, &next_seq), 0);
  ck_assert_uint_eq (c.n, 0);
  ck_assert_uint_eq (next, js.first);
  ck_assert_uint_eq (next_seq, js.sequence);
  free_real (&r);
}
END_TEST

START_TEST (test_real_journal)
{
  const struct scenario *s = &scenarios[_i];
  struct real r;
  struct fsev_jsuper js;
  struct collected c = { .fail_at = -1 };
  uint32_t next, next_seq;
  char err[256];

  make_scenario (&r, s, NULL);
  ck_assert_msg (r.n == 4 && committed (&r) == 3,
                 "%s: logdump shows %zu transactions", s->name, r.n);

  /* The superblock, against dumpe2fs and logdump. */
  parse_super_ok (&r.mem, &js);
  ck_assert_uint_eq (js.blocksize, s->bs);
  ck_assert_uint_eq (js.maxlen, r.d_blocks);
  ck_assert_uint_eq (js.maxlen, r.mem.nblocks);
  ck_assert_uint_eq (js.log_end, js.maxlen);
  ck_assert_uint_eq (js.sequence, r.d_seq);
  ck_assert_uint_eq (js.start, r.d_start);
  ck_assert_uint_eq (js.start, r.logdump_start);
  ck_assert_uint_eq (js.sequence, r.logdump_seq);
  ck_assert_int_eq (js.is_64bit, strstr (r.d_features, "journal_64bit") != NULL);
  ck_assert_int_eq (js.csum_v3, strstr (r.d_features, "journal_checksum_v3") != NULL);
  ck_assert_int_eq (js.csum_v2, strstr (r.d_features, "journal_checksum_v2") != NULL);
  ck_assert_int_eq (js.csum_v1, strstr (r.d_features, "journal_checksum ") != NULL ||
                    strstr (r.d_features, "journal_checksum\n") != NULL);
  ck_assert_int_eq (js.is_64bit, s->is64);
  ck_assert_int_eq (js.csum_v1, s->v1);
  ck_assert_int_eq (js.csum_v2, s->v2);
  ck_assert_int_eq (js.csum_v3, s->v3);
  ck_assert_uint_eq (js.tag_bytes, s->tag_bytes);
  ck_assert_int_eq (js.error, 0);
  if (js.csum_v2 || js.csum_v3)
    ck_assert_uint_eq (js.csum_seed, seed_of (&r.mem));

  /* The walk through the image itself. */
  ck_assert_int_eq (fsev_jbd2_walk (&js, file_read, &r, collect_fn, &c,
                                    &next, &next_seq), 3);
  assert_matches_logdump (&r, &c, s->name);
  ck_assert (c.t[0].tags[1].escaped);   /* block 1 of the data file */
  ck_assert (!c.t[0].tags[0].escaped);
  ck_assert_uint_eq (next, r.t[3].start);
  ck_assert_uint_eq (next_seq, 4);

  /* Transaction 4 was never committed: where recovery stops. */
  struct fsev_jtxn t;
  ck_assert_int_eq (fsev_jbd2_parse_txn (&js, file_read, &r, r.t[3].start, 4,
                                         &t, err, sizeof err), FSEV_J_END);
  ck_assert_ptr_nonnull (strstr (err, "no commit"));
  ck_assert_ptr_null (t.tags);
  /* Nor does transaction 3 start where transaction 1 does. */
  ck_assert_int_eq (fsev_jbd2_parse_txn (&js, file_read, &r, r.t[0].start, 3,
                                         &t, err, sizeof err), FSEV_J_END);
  collected_free (&c);
  free_real (&r);
}
END_TEST

/* A transaction spanning several descriptor blocks. */
START_TEST (test_many_tags)
{
  struct real r;
  struct fsev_jsuper js;
  struct collected c = { .fail_at = -1 };
  char cmds[4096] = "jo -c\njw -b ";
  for (unsigned i = 0; i < 300; i++)
    snprintf (cmds + strlen (cmds), sizeof cmds - strlen (cmds), "%s%u",
              i ? "," : "", 2000 + i);
  strcat (cmds, " DATA\njw -r 2100 DATA\njc\n");

  make_real (&r, "-t ext4 -b 1024 -J size=4", "64M", cmds, 1024);
  ck_assert_uint_eq (r.n, 2);
  ck_assert_uint_eq (r.t[0].ntags, 300);
  parse_super_ok (&r.mem, &js);
  ck_assert (js.csum_v3);
  ck_assert_int_eq (fsev_jbd2_walk (&js, file_read, &r, collect_fn, &c,
                                    NULL, NULL), 2);
  assert_matches_logdump (&r, &c, "many tags");
  /* More than one descriptor: the copies are not contiguous. */
  ck_assert_uint_gt (c.t[0].nblocks, 302);
  collected_free (&c);
  free_real (&r);
}
END_TEST

/* The fast-commit area ends the log only under the journal's flag. */
START_TEST (test_fast_commit_area)
{
  struct real r;
  struct fsev_jsuper js;
  char err[256];

  make_real (&r, "-t ext4 -b 4096 -O fast_commit", "64M", NULL, 4096);
  ck_assert_uint_gt (r.d_fc, 0);
  parse_super_ok (&r.mem, &js);
  ck_assert (!js.fast_commit);
  ck_assert_uint_eq (js.log_end, js.maxlen);
  uint8_t *sb = blk (&r.mem, 0);
  put32 (sb + 40, get32 (sb + 40) | 0x20);
  parse_super_ok (&r.mem, &js);
  ck_assert (js.fast_commit);
  ck_assert_uint_eq (js.num_fc_blocks, r.d_fc);
  ck_assert_uint_eq (js.log_end, r.d_blocks - r.d_fc);
  put32 (sb + 0x54, 0);         /* 0 means jbd2's default */
  parse_super_ok (&r.mem, &js);
  ck_assert_uint_eq (js.log_end, js.maxlen - 256);
  put32 (sb + 0x54, js.maxlen);
  ck_assert_int_eq (fsev_jbd2_parse_super (sb, 4096, &js, err, sizeof err), -1);
  free_real (&r);
}
END_TEST

/* --- Damage to real journals (csum v3 unless said). --- */

struct damaged {
  struct real r;
  struct fsev_jsuper js;
  struct jmem m;                /* the copy being damaged */
};

static void
damaged_open (struct damaged *d, unsigned scenario)
{
  make_scenario (&d->r, &scenarios[scenario], NULL);
  ck_assert_uint_eq (committed (&d->r), 3);
  jmem_copy (&d->m, &d->r.mem);
  parse_super_ok (&d->m, &d->js);
}

static void
damaged_close (struct damaged *d)
{
  free (d->m.buf);
  free_real (&d->r);
}

/* Walk D's copy: returns the count, checks next/next_seq. */
static int
walk_count (struct damaged *d, uint32_t want_next, uint32_t want_seq)
{
  uint32_t next, next_seq;
  int n = fsev_jbd2_walk (&d->js, mem_read, &d->m, NULL, NULL, &next, &next_seq);
  ck_assert_uint_eq (next, want_next);
  ck_assert_uint_eq (next_seq, want_seq);
  return n;
}

static enum fsev_jresult
parse3 (struct damaged *d, struct fsev_jtxn *t, char *err)
{
  return fsev_jbd2_parse_txn (&d->js, mem_read, &d->m, d->r.t[2].start, 3,
                              t, err, 256);
}

START_TEST (test_bad_descriptor_csum)
{
  struct damaged d;
  struct fsev_jtxn t;
  char err[256];

  damaged_open (&d, 0);
  blk (&d.m, d.r.t[2].start)[20] ^= 0x40;       /* a tag's block number */
  ck_assert_int_eq (parse3 (&d, &t, err), FSEV_J_CORRUPT);
  ck_assert_msg (strstr (err, "descriptor") && strstr (err, "checksum"), "%s", err);
  ck_assert_int_eq (walk_count (&d, d.r.t[2].start, 3), 2);
  damaged_close (&d);
}
END_TEST

START_TEST (test_bad_commit_csum)
{
  struct damaged d;
  struct fsev_jtxn t;
  char err[256];

  damaged_open (&d, _i);        /* csum v3, then v2 */
  blk (&d.m, d.r.t[2].commit)[200] ^= 1;
  ck_assert_int_eq (parse3 (&d, &t, err), FSEV_J_CORRUPT);
  ck_assert_msg (strstr (err, "commit") && strstr (err, "checksum"), "%s", err);
  ck_assert_int_eq (walk_count (&d, d.r.t[2].start, 3), 2);
  /* A sealed edit is fine: the checksum covers the block, not history. */
  seal_commit (&d.m, d.r.t[2].commit);
  ck_assert_int_eq (parse3 (&d, &t, err), FSEV_J_OK);
  fsev_jtxn_free (&t);
  damaged_close (&d);
}
END_TEST

START_TEST (test_bad_data_csum)
{
  struct damaged d;
  struct fsev_jtxn t;
  char err[256];

  damaged_open (&d, _i);        /* csum v3, then v2 */
  uint32_t victim = d.r.t[2].jblk[1];
  blk (&d.m, victim)[1000] ^= 0x80;
  ck_assert_int_eq (parse3 (&d, &t, err), FSEV_J_OK);
  ck_assert_uint_eq (t.ntags, 3);
  ck_assert (t.tags[0].csum_ok);
  ck_assert (!t.tags[1].csum_ok);
  ck_assert_uint_eq (t.tags[1].jblk, victim);
  ck_assert (t.tags[2].csum_ok);
  fsev_jtxn_free (&t);
  ck_assert_int_eq (walk_count (&d, d.r.t[3].start, 4), 3);

  /* Our own recipe agrees with what debugfs stored for a good copy. */
  uint32_t good = d.r.t[2].jblk[0];
  uint32_t c = data_csum (&d.m, 3, blk (&d.m, good));
  const uint8_t *tag = blk (&d.m, d.r.t[2].start) + 12;
  if (d.js.csum_v3)
    ck_assert_uint_eq (get32 (tag + 12), c);
  else
    ck_assert_uint_eq ((uint32_t) tag[4] << 8 | tag[5], c & 0xFFFF);
  damaged_close (&d);
}
END_TEST

START_TEST (test_commit_wrong_sequence)
{
  struct damaged d;
  struct fsev_jtxn t;
  char err[256];

  damaged_open (&d, 0);
  put32 (blk (&d.m, d.r.t[2].commit) + 8, 99);
  ck_assert_int_eq (parse3 (&d, &t, err), FSEV_J_END);
  ck_assert_msg (strstr (err, "no commit") && strstr (err, "99"), "%s", err);
  ck_assert_int_eq (walk_count (&d, d.r.t[2].start, 3), 2);
  damaged_close (&d);
}
END_TEST

START_TEST (test_revoke_count)
{
  struct damaged d;
  struct fsev_jtxn t;
  char err[256];
  bool csum = _i == 0;

  damaged_open (&d, csum ? 0 : 2);      /* csum v3, or none */
  uint32_t rb = d.r.t[1].start, bs = d.m.bs;
  uint32_t usable = csum ? bs - 4 : bs;
  uint8_t *b = blk (&d.m, rb);
  ck_assert_uint_eq (get32 (b + 4), FSEV_JBD2_REVOKE);
  ck_assert_uint_eq (get32 (b + 12), 16 + 2 * 8);

  /* One byte more than the block can hold. */
  put32 (b + 12, usable + 1);
  if (csum)
    seal_tail (&d.m, rb);
  ck_assert_int_eq (fsev_jbd2_parse_txn (&d.js, mem_read, &d.m, rb, 2, &t,
                                         err, sizeof err), FSEV_J_CORRUPT);
  ck_assert_msg (strstr (err, "r_count"), "%s", err);
  ck_assert_int_eq (walk_count (&d, rb, 2), 1);

  /* Exactly the block: jbd2 reads every whole record (zeros here). */
  put32 (b + 12, usable);
  if (csum)
    seal_tail (&d.m, rb);
  ck_assert_int_eq (fsev_jbd2_parse_txn (&d.js, mem_read, &d.m, rb, 2, &t,
                                         err, sizeof err), FSEV_J_OK);
  ck_assert_uint_eq (t.nrevoked, (usable - 16) / 8);
  ck_assert_uint_eq (t.revoked[0], 335);
  ck_assert_uint_eq (t.revoked[2], 0);
  fsev_jtxn_free (&t);

  /* Shorter than the header: no records, as in jbd2. */
  put32 (b + 12, 3);
  if (csum)
    seal_tail (&d.m, rb);
  ck_assert_int_eq (fsev_jbd2_parse_txn (&d.js, mem_read, &d.m, rb, 2, &t,
                                         err, sizeof err), FSEV_J_OK);
  ck_assert_uint_eq (t.nrevoked, 0);
  fsev_jtxn_free (&t);

  /* A bad tail checksum under csum v3. */
  if (csum) {
    b[100] ^= 1;
    ck_assert_int_eq (fsev_jbd2_parse_txn (&d.js, mem_read, &d.m, rb, 2, &t,
                                           err, sizeof err), FSEV_J_CORRUPT);
    ck_assert_msg (strstr (err, "revoke") && strstr (err, "checksum"), "%s", err);
  }
  damaged_close (&d);
}
END_TEST

/* Without LAST_TAG the tags go on to the end of the block, as in jbd2:
 * here the zeros after the real tags become tags too, their "copies"
 * swallow the commit block, and the transaction has no commit: END.
 */
START_TEST (test_tags_run_past_block)
{
  struct damaged d;
  struct fsev_jtxn t;
  char err[256];
  bool csum = _i == 0;

  damaged_open (&d, csum ? 0 : 2);
  uint32_t db = d.r.t[2].start;
  uint8_t *b = blk (&d.m, db);
  unsigned tb = d.js.tag_bytes;
  /* Tag 0 carries a UUID; tags 1 and 2 do not (SAME_UUID). */
  unsigned flags_off = csum ? 4 : 6;
  unsigned last = 12 + (tb + 16) + tb;
  uint32_t f = csum ? get32 (b + last + flags_off) : (uint32_t) b[last + 6] << 8 | b[last + 7];
  ck_assert_uint_eq (f, 0xA);   /* SAME_UUID | LAST_TAG */
  if (csum) {
    put32 (b + last + flags_off, 0x2);
    seal_tail (&d.m, db);
  }
  else
    put16 (b + last + flags_off, 0x2);
  ck_assert_int_eq (parse3 (&d, &t, err), FSEV_J_END);
  ck_assert_msg (strstr (err, "no commit"), "%s", err);
  ck_assert_int_eq (walk_count (&d, db, 3), 2);
  damaged_close (&d);
}
END_TEST

/* Unknown block types end the scan (jbd2: "unrecognised magic"). */
START_TEST (test_unknown_block_type)
{
  struct damaged d;
  struct fsev_jtxn t;
  char err[256];

  damaged_open (&d, 2);
  put32 (blk (&d.m, d.r.t[1].start) + 4, FSEV_JBD2_FC);
  ck_assert_int_eq (fsev_jbd2_parse_txn (&d.js, mem_read, &d.m, d.r.t[1].start,
                                         2, &t, err, sizeof err), FSEV_J_END);
  ck_assert_msg (strstr (err, "type 6"), "%s", err);
  ck_assert_int_eq (walk_count (&d, d.r.t[1].start, 2), 1);
  damaged_close (&d);
}
END_TEST

/* The real log rotated so that transaction 3 wraps at log_end: same
 * blocks, same checksums (they do not cover positions), s_start moved.
 */
START_TEST (test_real_wrap)
{
  struct damaged d;
  struct collected c = { .fail_at = -1 };
  uint32_t next, next_seq;

  damaged_open (&d, _i == 0 ? 0 : 5);
  uint32_t first = d.js.first, len = d.js.log_end - first;
  /* rot(j): where log block j goes; transaction 3's descriptor lands
   * on the second-to-last block of the log.
   */
  uint32_t k = (len + (d.js.log_end - 2) - d.r.t[2].start) % len;
#define ROT(j) (first + ((j) - first + k) % len)
  for (uint32_t j = first; j < d.js.log_end; j++)
    memcpy (blk (&d.m, ROT (j)), blk (&d.r.mem, j), d.m.bs);
  put32 (blk (&d.m, 0) + 28, ROT (d.js.start));
  if (d.js.csum_v3)
    seal_super (&d.m);
  parse_super_ok (&d.m, &d.js);
  ck_assert_uint_eq (d.js.start, ROT (d.r.t[0].start));

  ck_assert_int_eq (fsev_jbd2_walk (&d.js, mem_read, &d.m, collect_fn, &c,
                                    &next, &next_seq), 3);
  for (size_t i = 0; i < 3; i++) {
    const struct otxn *o = &d.r.t[i];
    ck_assert_uint_eq (c.t[i].start, ROT (o->start));
    ck_assert_uint_eq (c.t[i].commit_jblk, ROT (o->commit));
    ck_assert_uint_eq (c.t[i].nblocks, o->commit - o->start + 1);
    ck_assert_uint_eq (c.t[i].ntags, o->ntags);
    for (size_t t = 0; t < o->ntags; t++) {
      ck_assert_uint_eq (c.t[i].tags[t].jblk, ROT (o->jblk[t]));
      ck_assert_uint_eq (c.t[i].tags[t].fsblk, o->fsblk[t]);
      ck_assert (c.t[i].tags[t].csum_ok);
    }
  }
  /* It did wrap: descriptor at the end, data and commit at the start. */
  ck_assert_uint_eq (c.t[2].start, d.js.log_end - 2);
  ck_assert_uint_eq (c.t[2].tags[1].jblk, first);
  ck_assert_uint_lt (c.t[2].commit_jblk, c.t[2].start);
  ck_assert_uint_eq (next, ROT (d.r.t[3].start));
  ck_assert_uint_eq (next_seq, 4);
#undef ROT
  collected_free (&c);
  damaged_close (&d);
}
END_TEST

START_TEST (test_callback_and_ioerr)
{
  struct damaged d;
  struct collected c = { .fail_at = 1 };
  uint32_t next, next_seq;
  struct fsev_jtxn t;
  char err[256];

  damaged_open (&d, 0);
  ck_assert_int_eq (fsev_jbd2_walk (&d.js, mem_read, &d.m, collect_fn, &c,
                                    &next, &next_seq), -1);
  ck_assert_uint_eq (c.n, 1);
  ck_assert_uint_eq (next, d.r.t[1].start);
  ck_assert_uint_eq (next_seq, 2);
  collected_free (&c);

  /* Read errors at every point of transaction 1, and of the walk. */
  for (long k = 0; k < 4; k++) {
    d.m.reads = 0;
    d.m.fail_after = k;
    ck_assert_int_eq (fsev_jbd2_parse_txn (&d.js, mem_read, &d.m, d.r.t[0].start,
                                           1, &t, err, sizeof err), FSEV_J_IOERR);
    ck_assert_ptr_nonnull (strstr (err, "read error"));
    d.m.reads = 0;
    ck_assert_int_eq (fsev_jbd2_walk (&d.js, mem_read, &d.m, NULL, NULL,
                                      NULL, NULL), -1);
  }
  d.m.fail_after = -1;
  /* A description that parse_super would never have produced. */
  struct fsev_jsuper bad = d.js;
  bad.log_end = bad.maxlen + 1;
  ck_assert_int_eq (fsev_jbd2_parse_txn (&bad, mem_read, &d.m, d.r.t[0].start,
                                         1, &t, err, sizeof err), FSEV_J_CORRUPT);
  ck_assert_int_eq (fsev_jbd2_walk (&bad, mem_read, &d.m, NULL, NULL, NULL,
                                    NULL), 0);
  /* Outside the log. */
  ck_assert_int_eq (fsev_jbd2_parse_txn (&d.js, mem_read, &d.m, 0, 1, &t,
                                         err, sizeof err), FSEV_J_CORRUPT);
  ck_assert_int_eq (fsev_jbd2_parse_txn (&d.js, mem_read, &d.m, d.js.log_end,
                                         1, &t, err, sizeof err), FSEV_J_CORRUPT);
  damaged_close (&d);
}
END_TEST

START_TEST (test_super_refused)
{
  struct damaged d;
  struct fsev_jsuper js;
  char err[256];
  uint8_t *sb;

  damaged_open (&d, 0);
  sb = blk (&d.m, 0);
#define REFUSED(why) do {                                               \
    ck_assert_int_eq (fsev_jbd2_parse_super (sb, d.m.bs, &js, err, sizeof err), -1); \
    ck_assert_msg (strstr (err, why), "wanted \"%s\", got \"%s\"", why, err); \
    memcpy (sb, blk (&d.r.mem, 0), d.m.bs);                             \
  } while (0)
  sb[0] ^= 1;
  REFUSED ("magic");
  put32 (sb + 4, FSEV_JBD2_DESCRIPTOR);
  REFUSED ("not a superblock");
  sb[0x200] ^= 1;               /* in s_users: only the checksum notices */
  REFUSED ("checksum");
  put32 (sb + 40, get32 (sb + 40) | 0x80);
  seal_super (&d.m);
  REFUSED ("unknown incompatible");
  put32 (sb + 40, get32 (sb + 40) | 0x8);
  seal_super (&d.m);
  REFUSED ("v2 and v3");
  put32 (sb + 36, 1);
  seal_super (&d.m);
  REFUSED ("v1 and v2");
  sb[0x50] = 1;
  seal_super (&d.m);
  REFUSED ("not crc32c");
  put32 (sb + 20, 0);
  seal_super (&d.m);
  REFUSED ("first log block");
  put32 (sb + 20, d.m.nblocks);
  seal_super (&d.m);
  REFUSED ("first log block");
  put32 (sb + 28, d.m.nblocks);
  seal_super (&d.m);
  REFUSED ("log start");
  ck_assert_int_eq (fsev_jbd2_parse_super (sb, 1024, &js, err, sizeof err), -1);
  ck_assert_ptr_nonnull (strstr (err, "block size"));
  ck_assert_int_eq (fsev_jbd2_parse_super (sb, 1000, &js, err, sizeof err), -1);
#undef REFUSED
  /* Unknown compat and ro_compat bits are not a reason to refuse. */
  put32 (sb + 36, 0x80);
  put32 (sb + 44, 0x1);
  seal_super (&d.m);
  parse_super_ok (&d.m, &js);
  damaged_close (&d);
}
END_TEST

/* --- Journals built in memory. --- */

/* A v1 superblock: no features at all, whatever its fields hold. */
START_TEST (test_super_v1)
{
  struct jmem m;
  struct fsev_jsuper js;

  jmem_new (&m, 1024, 64);
  make_super (&m, 1, 7, 0, 0x10);
  put32 (blk (&m, 0) + 4, FSEV_JBD2_SUPERBLOCK_V1);
  parse_super_ok (&m, &js);
  ck_assert_uint_eq (js.feature_incompat, 0);
  ck_assert (!js.csum_v3 && !js.is_64bit);
  ck_assert_uint_eq (js.tag_bytes, 8);
  ck_assert_uint_eq (js.sequence, 7);
  free (m.buf);
}
END_TEST

/* Write a descriptor at JBLK with tags for FSBLKS (64-bit, no csum),
 * LAST_TAG on the last unless NOLAST.
 */
static void
put_descriptor (struct jmem *m, uint32_t jblk, uint32_t seq, unsigned tb,
                const uint64_t *fsblks, size_t n, bool nolast)
{
  uint8_t *b = blk (m, jblk);
  memset (b, 0, m->bs);
  header (b, FSEV_JBD2_DESCRIPTOR, seq);
  size_t off = 12;
  for (size_t i = 0; i < n; i++) {
    uint16_t flags = (i ? 2 : 0) | (i == n - 1 && !nolast ? 8 : 0);
    ck_assert_uint_le (off + tb, m->bs);
    put32 (b + off, (uint32_t) fsblks[i]);
    put16 (b + off + 6, flags);
    if (tb >= 12)
      put32 (b + off + 8, (uint32_t) (fsblks[i] >> 32));
    off += tb + (i ? 0 : 16);
  }
}

static void
put_commit (struct jmem *m, uint32_t jblk, uint32_t seq)
{
  uint8_t *b = blk (m, jblk);
  memset (b, 0, m->bs);
  header (b, FSEV_JBD2_COMMIT, seq);
}

/* 64-bit block numbers, a descriptor on the last log block, and a full
 * descriptor without LAST_TAG whose commit follows: jbd2 replays it.
 */
START_TEST (test_synthetic_wrap_64bit)
{
  struct jmem m;
  struct fsev_jsuper js;
  struct fsev_jtxn t;
  char err[256];

  jmem_new (&m, 1024, 256);
  make_super (&m, 2, 10, 255, 0x3);     /* revoke, 64bit; log 2..255 */
  parse_super_ok (&m, &js);
  ck_assert_uint_eq (js.tag_bytes, 12);
  uint64_t a[] = { 0x123456789ULL, 0xFFFFFFFF00000001ULL, 7 };
  put_descriptor (&m, 255, 10, 12, a, 3, false);
  for (int i = 0; i < 3; i++)
    memset (blk (&m, 2 + i), 0xAA, m.bs);      /* the copies */
  put_commit (&m, 5, 10);
  put32 (blk (&m, 5) + 48, 0x1);        /* commit_sec, be64 */
  put32 (blk (&m, 5) + 52, 0x23456789);
  put32 (blk (&m, 5) + 56, 999999999);
  ck_assert_int_eq (fsev_jbd2_parse_txn (&js, mem_read, &m, 255, 10, &t, err,
                                         sizeof err), FSEV_J_OK);
  ck_assert_uint_eq (t.ntags, 3);
  ck_assert_uint_eq (t.tags[0].fsblk, a[0]);
  ck_assert_uint_eq (t.tags[1].fsblk, a[1]);
  ck_assert_uint_eq (t.tags[0].jblk, 2);
  ck_assert_uint_eq (t.tags[2].jblk, 4);
  ck_assert_uint_eq (t.commit_jblk, 5);
  ck_assert_uint_eq (t.next, 6);
  ck_assert_uint_eq (t.nblocks, 5);
  ck_assert_uint_eq (t.commit_sec, 0x123456789ULL);
  ck_assert_uint_eq (t.commit_nsec, 999999999);
  fsev_jtxn_free (&t);

  /* Transaction 11: a descriptor packed to its end, no LAST_TAG. */
  size_t n = 1 + (m.bs - 12 - 12 - 16) / 12;
  uint64_t many[128];
  ck_assert_uint_eq (n, 83);    /* 12 + (12 + 16) + 82 * 12 = 1024 */
  for (size_t i = 0; i < n; i++)
    many[i] = 1000 + i;
  put_descriptor (&m, 6, 11, 12, many, n, true);
  put_commit (&m, 6 + 1 + n, 11);
  ck_assert_int_eq (fsev_jbd2_parse_txn (&js, mem_read, &m, 6, 11, &t, err,
                                         sizeof err), FSEV_J_OK);
  ck_assert_uint_eq (t.ntags, n);
  ck_assert_uint_eq (t.tags[n - 1].fsblk, 1000 + n - 1);
  fsev_jtxn_free (&t);

  uint32_t next, next_seq;
  ck_assert_int_eq (fsev_jbd2_walk (&js, mem_read, &m, NULL, NULL, &next,
                                    &next_seq), 2);
  ck_assert_uint_eq (next, 6 + 2 + n);
  ck_assert_uint_eq (next_seq, 12);
  free (m.buf);
}
END_TEST

/* Counts that would take a transaction around the log. */
START_TEST (test_longer_than_log)
{
  struct jmem m;
  struct fsev_jsuper js;
  struct fsev_jtxn t;
  char err[256];

  jmem_new (&m, 1024, 32);
  make_super (&m, 1, 1, 1, 0x1);       /* 32-bit tags, 8 bytes */
  parse_super_ok (&m, &js);
  uint64_t b[100];
  for (int i = 0; i < 100; i++)
    b[i] = i + 100;
  put_descriptor (&m, 1, 1, 8, b, 100, false);
  ck_assert_int_eq (fsev_jbd2_parse_txn (&js, mem_read, &m, 1, 1, &t, err,
                                         sizeof err), FSEV_J_CORRUPT);
  ck_assert_msg (strstr (err, "more blocks than the log"), "%s", err);

  /* Every block a revoke block of the same transaction: no commit
   * anywhere, and the parser stops after one lap.
   */
  for (uint32_t j = 1; j < 32; j++) {
    header (blk (&m, j), FSEV_JBD2_REVOKE, 1);
    put32 (blk (&m, j) + 12, 24);
    put32 (blk (&m, j) + 16, j);
  }
  m.reads = 0;
  ck_assert_int_eq (fsev_jbd2_parse_txn (&js, mem_read, &m, 5, 1, &t, err,
                                         sizeof err), FSEV_J_CORRUPT);
  ck_assert_msg (strstr (err, "no commit block within"), "%s", err);
  ck_assert_int_le (m.reads, 31);
  ck_assert_int_eq (fsev_jbd2_walk (&js, mem_read, &m, NULL, NULL, NULL, NULL), 0);

  /* A log of commit blocks of consecutive sequences, all the way round:
   * the walk stops after one lap.
   */
  for (uint32_t j = 1; j < 32; j++)
    put_commit (&m, j, j);
  uint32_t next, next_seq;
  ck_assert_int_eq (fsev_jbd2_walk (&js, mem_read, &m, NULL, NULL, &next,
                                    &next_seq), 31);
  ck_assert_uint_eq (next, 1);
  ck_assert_uint_eq (next_seq, 32);
  free (m.buf);
}
END_TEST

/* --- Fuzzing. --- */

static uint64_t rng_state;

static uint32_t
rnd (void)
{
  /* xorshift64*: reproducible from the printed seed. */
  rng_state ^= rng_state >> 12;
  rng_state ^= rng_state << 25;
  rng_state ^= rng_state >> 27;
  return (uint32_t) ((rng_state * 0x2545F4914F6CDD1DULL) >> 32);
}

static int
check_txn (const struct fsev_jtxn *t, void *opaque)
{
  const struct fsev_jsuper *js = opaque;
  uint32_t len = js->log_end - js->first;
  ck_assert (t->start >= js->first && t->start < js->log_end);
  ck_assert (t->commit_jblk >= js->first && t->commit_jblk < js->log_end);
  ck_assert (t->next >= js->first && t->next < js->log_end);
  ck_assert (t->nblocks >= 1 && t->nblocks <= len);
  ck_assert_uint_lt (t->ntags, t->nblocks);
  for (size_t i = 0; i < t->ntags; i++)
    ck_assert (t->tags[i].jblk >= js->first && t->tags[i].jblk < js->log_end);
  return 0;
}

static void
exercise (const struct fsev_jsuper *js, struct jmem *m)
{
  struct fsev_jtxn t;
  char err[256];
  uint32_t next, next_seq;

  int n = fsev_jbd2_walk (js, mem_read, m, check_txn, (void *) js, &next, &next_seq);
  ck_assert_int_ge (n, 0);
  ck_assert (next >= js->first && next < js->log_end);
  uint32_t start = js->first + rnd () % (js->log_end - js->first);
  enum fsev_jresult r = fsev_jbd2_parse_txn (js, mem_read, m, start,
                                             js->sequence + rnd () % 4, &t,
                                             err, sizeof err);
  ck_assert (r == FSEV_J_OK || r == FSEV_J_END || r == FSEV_J_CORRUPT);
  if (r == FSEV_J_OK) {
    check_txn (&t, (void *) js);
    fsev_jtxn_free (&t);
  }
  else
    ck_assert (err[0] != 0 && t.tags == NULL && t.revoked == NULL);
}

/* Random edits to the first blocks of a real journal, undone after
 * each round.
 */
START_TEST (test_fuzz_real)
{
  struct damaged d;
  struct { uint32_t jblk, off; uint8_t old; } undo[16];
  uint64_t seed = 0x9E3779B97F4A7C15ULL ^ (uint64_t) (_i + 1);

  damaged_open (&d, _i == 0 ? 0 : _i == 1 ? 5 : 4);
  rng_state = seed;
  fprintf (stderr, "jbd2 fuzz %s: seed 0x%" PRIx64 "\n",
           scenarios[_i == 0 ? 0 : _i == 1 ? 5 : 4].name, seed);
  uint32_t span = d.r.t[3].start + 3;   /* the written log and a bit */
  for (int round = 0; round < 3000; round++) {
    int nedits = 1 + rnd () % 6;
    for (int e = 0; e < nedits; e++) {
      uint32_t j = rnd () % 8 == 0 ? 0 : 1 + rnd () % span;
      uint32_t off = rnd () % 2 ? rnd () % 64 : rnd () % d.m.bs;
      uint8_t *p = blk (&d.m, j) + off;
      undo[e].jblk = j;
      undo[e].off = off;
      undo[e].old = *p;
      switch (rnd () % 4) {
      case 0: *p ^= 1 << (rnd () % 8); break;
      case 1: *p = rnd (); break;
      case 2: *p = rnd () % 16; break;      /* small counts, flags, types */
      default: *p = 0xFF; break;
      }
    }
    /* Sometimes keep the edits sealed, so they get past checksums. */
    if (d.js.csum_v3 && rnd () % 2) {
      for (uint32_t j = 1; j <= span; j++) {
        uint32_t type = get32 (blk (&d.m, j) + 4);
        if (type == 1 || type == 5)
          seal_tail (&d.m, j);
        else if (type == 2)
          seal_commit (&d.m, j);
      }
    }
    struct fsev_jsuper js2;
    char err[256];
    /* The caller checks s_maxlen against the journal inode. */
    if (fsev_jbd2_parse_super (blk (&d.m, 0), d.m.bs, &js2, err, sizeof err) == 0 &&
        js2.maxlen <= d.m.nblocks)
      exercise (&js2, &d.m);
    exercise (&d.js, &d.m);
    /* Undo in reverse, then restore whatever sealing rewrote. */
    for (int e = nedits - 1; e >= 0; e--)
      blk (&d.m, undo[e].jblk)[undo[e].off] = undo[e].old;
    if (d.js.csum_v3)
      memcpy (d.m.buf, d.r.mem.buf, (size_t) (span + 1) * d.m.bs);
  }
  damaged_close (&d);
}
END_TEST

/* Random well-formed-looking blocks in a small journal, under each tag
 * format.
 */
START_TEST (test_fuzz_synthetic)
{
  static const uint32_t incompat[] = { 0x1, 0x3, 0x9, 0xB, 0x11, 0x13 };
  struct jmem m;
  struct fsev_jsuper js;
  uint64_t seed = 0xC0FFEEULL + _i;

  rng_state = seed;
  fprintf (stderr, "jbd2 synthetic fuzz: seed 0x%" PRIx64 "\n", seed);
  jmem_new (&m, 1024, 24);
  for (int round = 0; round < 2000; round++) {
    uint32_t inc = incompat[round % 6];
    make_super (&m, 1 + rnd () % 3, 5, 0, inc);
    parse_super_ok (&m, &js);
    js.start = js.first + rnd () % (js.log_end - js.first);
    for (uint32_t j = 1; j < m.nblocks; j++) {
      uint8_t *b = blk (&m, j);
      uint32_t kind = rnd () % 8;
      memset (b, 0, m.bs);
      if (kind == 0)
        continue;
      for (uint32_t o = 12; o < m.bs; o += 4)
        put32 (b + o, rnd () % 4 ? rnd () % 64 : rnd ());
      if (kind == 1)
        continue;
      static const uint32_t types[] = { 1, 1, 2, 2, 5, 3, 6, 9 };
      header (b, types[rnd () % 8], 5 + rnd () % 3);
      if (get32 (b + 4) == 5)
        put32 (b + 12, rnd () % 2 ? 16 + rnd () % 64 : rnd () % (2 * m.bs));
      if (get32 (b + 4) == 1 && rnd () % 2)
        /* LAST_TAG somewhere early, so tags end before the block. */
        b[12 + 6 + js.tag_bytes * (rnd () % 4) + 1] |= 8;
      if (js.csum_v2 || js.csum_v3) {
        if (get32 (b + 4) == 2)
          seal_commit (&m, j);
        else if (rnd () % 4)
          seal_tail (&m, j);
      }
    }
    exercise (&js, &m);
  }
  free (m.buf);
}
END_TEST

/* --- The walk's work is one lap of the log (issue 14). --- */

struct counted {
  struct jmem *m;
  unsigned char times[256];     /* reads of each journal block */
  long total;
};

static int
counted_read (void *opaque, uint32_t jblk, void *buf)
{
  struct counted *c = opaque;
  ck_assert_uint_lt (jblk, 256);
  c->times[jblk]++;
  c->total++;
  return mem_read (c->m, jblk, buf);
}

/* A csum v3 descriptor at JBLK for N copies (SAME_UUID on all, LAST_TAG
 * on the last), sealed.  The copies' checksums are wrong: recovery
 * would skip them, but the parser reads each to check it.
 */
static void
put_descriptor_v3 (struct jmem *m, uint32_t jblk, uint32_t seq, unsigned n)
{
  uint8_t *b = blk (m, jblk);
  memset (b, 0, m->bs);
  header (b, FSEV_JBD2_DESCRIPTOR, seq);
  ck_assert_uint_le (12 + 16 * n, m->bs - 4);
  for (unsigned i = 0; i < n; i++) {
    put32 (b + 12 + 16 * i, 1000 + i);
    put32 (b + 12 + 16 * i + 4, 2 | (i == n - 1 ? 8 : 0));
  }
  seal_tail (m, jblk);
}

static void
put_commit_v3 (struct jmem *m, uint32_t jblk, uint32_t seq)
{
  put_commit (m, jblk, seq);
  seal_commit (m, jblk);
}

/* s_start 33 in a log of blocks 1..64: eight one-block transactions
 * (bogus commits, 33..40), then transaction 108 whose descriptors go
 * round the log and over those commits again, never committing.  The
 * walk used to give the last one the whole log's length, reading 72
 * blocks, the commits at 33..40 twice; now it has what is left of the
 * lap (56 blocks) and reads each block once.
 */
START_TEST (test_walk_one_lap)
{
  struct jmem m;
  struct fsev_jsuper js;
  struct counted c = { .m = &m };
  uint32_t next, next_seq;

  jmem_new (&m, 1024, 65);
  make_super (&m, 1, 100, 33, 0x10 | 0x1);     /* csum v3, revoke */
  parse_super_ok (&m, &js);
  ck_assert_uint_eq (js.log_end - js.first, 64);
  for (uint32_t j = 33; j <= 40; j++)
    put_commit_v3 (&m, j, 100 + (j - 33));
  put_descriptor_v3 (&m, 41, 108, 23);          /* copies at 42..64 */
  put_descriptor_v3 (&m, 1, 108, 62);           /* 2..63: over 33..40 */

  ck_assert_int_eq (fsev_jbd2_walk (&js, counted_read, &c, NULL, NULL,
                                    &next, &next_seq), 8);
  ck_assert_uint_eq (next, 41);
  ck_assert_uint_eq (next_seq, 108);
  ck_assert_int_le (c.total, 64);
  for (unsigned j = 0; j < 65; j++)
    ck_assert_msg (c.times[j] <= 1, "journal block %u read %u times", j,
                   c.times[j]);

  /* Alone, transaction 108 may take the whole log: it reads 64 blocks
   * (2..40 included), each once, then fails.
   */
  struct fsev_jtxn t;
  char err[256];
  memset (&c, 0, sizeof c);
  c.m = &m;
  ck_assert_int_eq (fsev_jbd2_parse_txn (&js, counted_read, &c, 41, 108, &t,
                                         err, sizeof err), FSEV_J_CORRUPT);
  ck_assert_msg (strstr (err, "more blocks than the log"), "%s", err);
  ck_assert_int_le (c.total, 64);
  for (unsigned j = 0; j < 65; j++)
    ck_assert_uint_le (c.times[j], 1);

  /* The log full of one-block transactions: one lap, each block once,
   * and the walk stops where it began.
   */
  for (uint32_t j = 1; j <= 64; j++)
    put_commit_v3 (&m, j, 100 + (j + 64 - 33) % 64);
  memset (&c, 0, sizeof c);
  c.m = &m;
  ck_assert_int_eq (fsev_jbd2_walk (&js, counted_read, &c, NULL, NULL,
                                    &next, &next_seq), 64);
  ck_assert_uint_eq (next, 33);
  ck_assert_uint_eq (next_seq, 164);
  ck_assert_int_eq (c.total, 64);

  /* ... and the same with the last one a descriptor whose commit lies
   * past s_start: the walk stops before it, having read it alone.
   */
  put_descriptor_v3 (&m, 32, 163, 3);           /* copies 33..35, commit 36 */
  memset (&c, 0, sizeof c);
  c.m = &m;
  ck_assert_int_eq (fsev_jbd2_walk (&js, counted_read, &c, NULL, NULL,
                                    &next, &next_seq), 63);
  ck_assert_uint_eq (next, 32);
  ck_assert_uint_eq (next_seq, 163);
  ck_assert_int_le (c.total, 64);
  for (unsigned j = 0; j < 65; j++)
    ck_assert_uint_le (c.times[j], 1);
  free (m.buf);
}
END_TEST

/* Random journals: no walk reads a block twice or more than the log's
 * length of blocks.
 */
START_TEST (test_walk_bound_random)
{
  static const uint32_t incompat[] = { 0x1, 0x3, 0x11, 0x13 };
  struct jmem m;
  struct fsev_jsuper js;
  struct counted c;

  rng_state = 0xB0D5EEDULL;
  jmem_new (&m, 1024, 40);
  for (int round = 0; round < 3000; round++) {
    make_super (&m, 1 + rnd () % 3, 7, 0, incompat[round % 4]);
    parse_super_ok (&m, &js);
    js.start = js.first + rnd () % (js.log_end - js.first);
    uint32_t seq = 7;
    for (uint32_t j = 1; j < m.nblocks; j++) {
      uint8_t *b = blk (&m, j);
      memset (b, 0, m.bs);
      switch (rnd () % 4) {
      case 0:                   /* a copy or garbage */
        break;
      case 1:                   /* a commit, mostly the next sequence */
        header (b, FSEV_JBD2_COMMIT, rnd () % 8 ? seq++ : rnd () % 16);
        break;
      default: {                /* a descriptor of a few copies */
        unsigned n = 1 + rnd () % 6;
        header (b, FSEV_JBD2_DESCRIPTOR, seq);
        for (unsigned i = 0; i < n; i++) {
          size_t off = 12 + (size_t) i * js.tag_bytes;
          put32 (b + off, 50 + i);
          if (js.csum_v3)
            put32 (b + off + 4, 2 | (i == n - 1 ? 8 : 0));
          else
            put16 (b + off + 6, 2 | (i == n - 1 ? 8 : 0));
        }
      }
      }
      if (js.csum_v3) {
        if (get32 (b + 4) == FSEV_JBD2_COMMIT)
          seal_commit (&m, j);
        else if (get32 (b + 4) == FSEV_JBD2_DESCRIPTOR)
          seal_tail (&m, j);
      }
    }
    js.sequence = rnd () % 2 ? 7 : 7 + rnd () % 4;
    memset (&c, 0, sizeof c);
    c.m = &m;
    uint32_t next, next_seq;
    int n = fsev_jbd2_walk (&js, counted_read, &c, check_txn, &js,
                            &next, &next_seq);
    ck_assert_int_ge (n, 0);
    ck_assert_int_le (n, js.log_end - js.first);
    ck_assert_int_le (c.total, js.log_end - js.first);
    for (unsigned j = 0; j < m.nblocks; j++)
      ck_assert_msg (c.times[j] <= 1, "round %d: block %u read %u times",
                     round, j, c.times[j]);
  }
  free (m.buf);
}
END_TEST

Suite *
jbd2_suite (void)
{
  Suite *s = suite_create ("jbd2");
  TCase *real = tcase_create ("real");
  TCase *damage = tcase_create ("damage");
  TCase *mem = tcase_create ("memory");
  TCase *fuzz = tcase_create ("fuzz");

  suite_add_tcase (s, real);
  suite_add_tcase (s, damage);
  suite_add_tcase (s, mem);
  suite_add_tcase (s, fuzz);
  tcase_set_timeout (real, 60);
  tcase_set_timeout (damage, 60);
  tcase_set_timeout (fuzz, 300);
  tcase_add_test (real, test_clean_journal);
  tcase_add_loop_test (real, test_real_journal, 0, NSCENARIOS);
  tcase_add_test (real, test_many_tags);
  tcase_add_test (real, test_fast_commit_area);
  tcase_add_test (damage, test_bad_descriptor_csum);
  tcase_add_loop_test (damage, test_bad_commit_csum, 0, 2);
  tcase_add_loop_test (damage, test_bad_data_csum, 0, 2);
  tcase_add_test (damage, test_commit_wrong_sequence);
  tcase_add_loop_test (damage, test_revoke_count, 0, 2);
  tcase_add_loop_test (damage, test_tags_run_past_block, 0, 2);
  tcase_add_test (damage, test_unknown_block_type);
  tcase_add_loop_test (damage, test_real_wrap, 0, 2);
  tcase_add_test (damage, test_callback_and_ioerr);
  tcase_add_test (damage, test_super_refused);
  tcase_add_test (mem, test_super_v1);
  tcase_add_test (mem, test_synthetic_wrap_64bit);
  tcase_add_test (mem, test_longer_than_log);
  tcase_add_test (mem, test_walk_one_lap);
  tcase_add_test (mem, test_walk_bound_random);
  tcase_add_test (mem, test_crc32c_matches_libext2fs);
  tcase_add_loop_test (fuzz, test_fuzz_real, 0, 3);
  tcase_add_loop_test (fuzz, test_fuzz_synthetic, 0, 2);
  return s;
}
