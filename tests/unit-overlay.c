/* tests/unit-overlay.c: Check unit tests for fs/overlay.c.
 *
 * No journal is needed: transactions are struct fsev_jtxn values made
 * here, the "device" is a buffer (filesystem blocks first, then the
 * journal's blocks), and the oracle is a plain per-block model of what
 * jbd2 recovery would leave: for each home block, the last good copy
 * logged for it and not revoked since.
 */
#include <config.h>

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <check.h>

#include "jbd2.h"
#include "overlay.h"
#include "unit.h"

#define BS 1024u
#define FS_BLOCKS 32u           /* home blocks 0..31 */
#define JSTART 40u              /* journal block j: device block JSTART+j */
#define JLEN 24u                /* journal blocks mapped */
#define DEV_BLOCKS (JSTART + JLEN)

static const unsigned char MAGIC[4] = { 0xc0, 0x3b, 0x39, 0x98 };

struct dev {
  unsigned char buf[DEV_BLOCKS * BS];
  long reads;
  bool fail;
  long fail_from;               /* reads from this one on fail; 0 never */
};

static int
dev_read (void *opaque, void *buf, size_t count, uint64_t offset)
{
  struct dev *d = opaque;
  ck_assert_uint_le (offset + count, sizeof d->buf);
  d->reads++;
  if (d->fail || (d->fail_from > 0 && d->reads >= d->fail_from))
    return -1;
  memcpy (buf, d->buf + offset, count);
  return 0;
}

static uint64_t
jmap (void *opaque, uint32_t jblk)
{
  (void) opaque;
  return jblk < JLEN ? JSTART + jblk : 0;
}

/* Home block B holds bytes b*7+i; journal block J holds 0x80+J+i*3
 * except its first 4 bytes, zero (as jbd2 leaves an escaped copy).
 */
static void
dev_init (struct dev *d)
{
  memset (d, 0, sizeof *d);
  for (unsigned b = 0; b < FS_BLOCKS; b++)
    for (unsigned i = 0; i < BS; i++)
      d->buf[b * BS + i] = (unsigned char) (b * 7 + i);
  for (unsigned j = 0; j < JLEN; j++)
    for (unsigned i = 0; i < BS; i++)
      d->buf[(JSTART + j) * BS + i] =
        i < 4 ? 0 : (unsigned char) (0x80 + j + i * 3);
}

static unsigned char *
dblk (struct dev *d, uint64_t blk)
{
  return d->buf + blk * BS;
}

#define TAG(fs, j, ...) \
  ((struct fsev_jtag) { .fsblk = (fs), .jblk = (j), .csum_ok = true, \
                        __VA_ARGS__ })
/* A copy whose checksum fails. */
#define BADTAG(fs, j) \
  ((struct fsev_jtag) { .fsblk = (fs), .jblk = (j), .csum_ok = false })

static struct fsev_jtxn
txn (uint32_t seq, struct fsev_jtag *tags, size_t ntags, uint64_t *rev,
     size_t nrev)
{
  return (struct fsev_jtxn) {
    .sequence = seq, .tags = tags, .ntags = ntags, .revoked = rev,
    .nrevoked = nrev,
  };
}

static void
apply (struct fsev_overlay *o, struct fsev_jtxn t)
{
  ck_assert_int_eq (fsev_overlay_apply (o, &t, jmap, NULL, FS_BLOCKS), 0);
}

static void
check_entry (const struct fsev_overlay *o, uint64_t fsblk, uint32_t jblk,
             uint32_t seq, bool escaped)
{
  const struct fsev_overlay_entry *e = fsev_overlay_find (o, fsblk);
  ck_assert_msg (e != NULL, "no entry for block %llu",
                 (unsigned long long) fsblk);
  ck_assert_uint_eq (e->fsblk, fsblk);
  ck_assert_uint_eq (e->src, JSTART + jblk);
  ck_assert_uint_eq (e->seq, seq);
  ck_assert_int_eq (e->escaped, escaped);
}

static void
check_sorted (const struct fsev_overlay *o)
{
  for (size_t i = 1; i < o->n; i++)
    ck_assert_uint_lt (o->e[i - 1].fsblk, o->e[i].fsblk);
}

/* The committed content of journal block J (with the magic put back if
 * ESCAPED), computed from the device, not through the overlay.
 */
static void
jcontent (struct dev *d, uint32_t j, bool escaped, unsigned char *out)
{
  memcpy (out, dblk (d, JSTART + j), BS);
  if (escaped)
    memcpy (out, MAGIC, 4);
}

static void check_by_src (const struct fsev_overlay *o);

START_TEST (test_overlay_apply_tags)
{
  struct fsev_overlay *o = fsev_overlay_new (BS);
  ck_assert_ptr_nonnull (o);
  ck_assert_ptr_null (fsev_overlay_find (o, 0));

  struct fsev_jtag t[] = {
    TAG (3, 0),
    TAG (1, 1, .escaped = true),
    BADTAG (5, 2),       /* damaged: recovery skips it */
    TAG (FS_BLOCKS, 3),                 /* home outside the filesystem */
    TAG (1000, 3),
    TAG (3, 4),                         /* the later copy of 3 wins */
    TAG (7, JLEN + 5),                  /* copy not mapped */
    TAG (9, 6),
    BADTAG (9, 7),       /* a damaged later copy: the
                                           earlier good one stays */
    TAG (FS_BLOCKS - 1, 8),
    TAG (0, 9),
  };
  apply (o, txn (10, t, sizeof t / sizeof t[0], NULL, 0));
  ck_assert_uint_eq (o->n, 5);
  check_sorted (o);
  check_entry (o, 0, 9, 10, false);
  check_entry (o, 1, 1, 10, true);
  check_entry (o, 3, 4, 10, false);
  check_entry (o, 9, 6, 10, false);
  check_entry (o, FS_BLOCKS - 1, 8, 10, false);
  ck_assert_ptr_null (fsev_overlay_find (o, 5));
  ck_assert_ptr_null (fsev_overlay_find (o, 7));
  ck_assert_ptr_null (fsev_overlay_find (o, 2));
  ck_assert_ptr_null (fsev_overlay_find (o, FS_BLOCKS));
  ck_assert_ptr_null (fsev_overlay_find (o, 1000));
  ck_assert_ptr_null (fsev_overlay_find (o, UINT64_MAX));
  for (size_t i = 0; i < o->n; i++)
    ck_assert_ptr_null (o->e[i].copy);

  /* An empty transaction changes nothing. */
  apply (o, txn (11, NULL, 0, NULL, 0));
  ck_assert_uint_eq (o->n, 5);
  check_entry (o, 3, 4, 10, false);

  /* A later transaction's copy replaces an earlier one. */
  struct fsev_jtag t2[] = { TAG (3, 10, .escaped = true), TAG (4, 11) };
  apply (o, txn (12, t2, 2, NULL, 0));
  ck_assert_uint_eq (o->n, 6);
  check_sorted (o);
  check_entry (o, 3, 10, 12, true);
  check_entry (o, 4, 11, 12, false);
  check_entry (o, 1, 1, 10, true);
  fsev_overlay_free (o);
  fsev_overlay_free (NULL);
}
END_TEST

START_TEST (test_overlay_revoke)
{
  struct fsev_overlay *o = fsev_overlay_new (BS);
  struct fsev_jtag t1[] = { TAG (1, 0), TAG (2, 1), TAG (3, 2), TAG (4, 3) };
  apply (o, txn (100, t1, 4, NULL, 0));
  ck_assert_uint_eq (o->n, 4);

  /* Revokes drop earlier copies, and copies of the same transaction;
   * revoking what is not there is harmless.
   */
  uint64_t rev[] = { 9, 2, 4, 20 };
  struct fsev_jtag t2[] = { TAG (9, 4), TAG (5, 5) };
  apply (o, txn (101, t2, 2, rev, 4));
  ck_assert_uint_eq (o->n, 3);
  check_sorted (o);
  check_entry (o, 1, 0, 100, false);
  check_entry (o, 3, 2, 100, false);
  check_entry (o, 5, 5, 101, false);
  ck_assert_ptr_null (fsev_overlay_find (o, 2));
  ck_assert_ptr_null (fsev_overlay_find (o, 4));
  ck_assert_ptr_null (fsev_overlay_find (o, 9));

  /* A later transaction logs a revoked block again: it counts. */
  struct fsev_jtag t3[] = { TAG (2, 6) };
  apply (o, txn (102, t3, 1, NULL, 0));
  check_entry (o, 2, 6, 102, false);

  /* A revoke of an entry that has a private copy frees it (ASan). */
  struct dev d;
  dev_init (&d);
  ck_assert_int_eq (fsev_overlay_materialize (o, dev_read, &d,
                                              (JSTART + 0) * BS, BS), 0);
  ck_assert_ptr_nonnull (fsev_overlay_find (o, 1)->copy);
  uint64_t rev2[] = { 1 };
  apply (o, txn (103, NULL, 0, rev2, 1));
  ck_assert_ptr_null (fsev_overlay_find (o, 1));
  ck_assert_uint_eq (o->n, 3);
  /* And a replaced one too. */
  ck_assert_int_eq (fsev_overlay_materialize (o, dev_read, &d,
                                              (JSTART + 2) * BS, BS), 0);
  ck_assert_ptr_nonnull (fsev_overlay_find (o, 3)->copy);
  struct fsev_jtag t4[] = { TAG (3, 7) };
  apply (o, txn (104, t4, 1, NULL, 0));
  check_entry (o, 3, 7, 104, false);
  ck_assert_ptr_null (fsev_overlay_find (o, 3)->copy);
  fsev_overlay_free (o);
}
END_TEST

/* The bytes [OFF, OFF+COUNT) as the overlay should show them: the home
 * blocks, with the copies in MAP (jblk per home block, -1 for none).
 */
static void
expected_view (struct dev *d, const int *map, const bool *esc,
               uint64_t off, size_t count, unsigned char *out)
{
  unsigned char blk[BS];
  uint64_t have = UINT64_MAX;   /* the block in BLK */
  for (size_t k = 0; k < count; k++) {
    uint64_t p = off + k, b = p / BS;
    if (b < FS_BLOCKS && map[b] >= 0) {
      if (have != b)
        jcontent (d, (uint32_t) map[b], esc[b], blk);
      have = b;
      out[k] = blk[p % BS];
    }
    else
      out[k] = d->buf[p];
  }
}

START_TEST (test_overlay_patch)
{
  struct dev d;
  dev_init (&d);
  struct fsev_overlay *o = fsev_overlay_new (BS);
  struct fsev_jtag t[] = {
    TAG (3, 0), TAG (4, 1, .escaped = true), TAG (6, 2), TAG (31, 3),
  };
  apply (o, txn (1, t, 4, NULL, 0));
  int map[FS_BLOCKS];
  bool esc[FS_BLOCKS] = { false };
  for (unsigned b = 0; b < FS_BLOCKS; b++)
    map[b] = -1;
  map[3] = 0; map[4] = 1; map[6] = 2; map[31] = 3;
  esc[4] = true;

  /* read_entry: the escaped one gets the magic back, big-endian. */
  unsigned char buf[BS], want[BS];
  ck_assert_int_eq (fsev_overlay_read_entry (o, fsev_overlay_find (o, 4),
                                             dev_read, &d, buf), 0);
  ck_assert_mem_eq (buf, "\xc0\x3b\x39\x98", 4);
  ck_assert_mem_eq (buf + 4, dblk (&d, JSTART + 1) + 4, BS - 4);
  ck_assert_int_eq (fsev_overlay_read_entry (o, fsev_overlay_find (o, 3),
                                             dev_read, &d, buf), 0);
  ck_assert_mem_eq (buf, dblk (&d, JSTART + 0), BS);
  ck_assert_mem_eq (buf, "\0\0\0\0", 4);

  /* Every range that starts and ends anywhere in blocks 2..7 or
   * 29..31, at a few offsets inside blocks.
   */
  static const unsigned in_blk[] = { 0, 1, 3, 4, 5, 511, BS - 1 };
  const size_t NIB = sizeof in_blk / sizeof in_blk[0];
  static unsigned char got[FS_BLOCKS * BS], exp[FS_BLOCKS * BS];
  for (unsigned b0 = 2; b0 < FS_BLOCKS; b0 = b0 == 7 ? 29 : b0 + 1)
    for (size_t i0 = 0; i0 < NIB; i0++)
      for (unsigned b1 = b0; b1 < FS_BLOCKS; b1 = b1 == 7 ? 29 : b1 + 1)
        for (size_t i1 = 0; i1 < NIB; i1++) {
          uint64_t off = (uint64_t) b0 * BS + in_blk[i0];
          uint64_t end = (uint64_t) b1 * BS + in_blk[i1] + 1;
          if (end <= off)
            continue;
          size_t count = end - off;
          memcpy (got, d.buf + off, count);
          ck_assert_int_eq (fsev_overlay_patch (o, dev_read, &d, got, count,
                                                off), 0);
          expected_view (&d, map, esc, off, count, exp);
          ck_assert_msg (memcmp (got, exp, count) == 0,
                         "patch [%llu, +%zu) differs",
                         (unsigned long long) off, count);
        }

  /* The whole filesystem at once. */
  memcpy (got, d.buf, FS_BLOCKS * BS);
  ck_assert_int_eq (fsev_overlay_patch (o, dev_read, &d, got,
                                        FS_BLOCKS * BS, 0), 0);
  expected_view (&d, map, esc, 0, FS_BLOCKS * BS, exp);
  ck_assert_mem_eq (got, exp, FS_BLOCKS * BS);
  ck_assert_mem_eq (got + 4 * BS, "\xc0\x3b\x39\x98", 4);

  /* Ranges the overlay does not touch are left alone, read nothing. */
  d.reads = 0;
  memset (buf, 0xee, sizeof buf);
  memset (want, 0xee, sizeof want);
  ck_assert_int_eq (fsev_overlay_patch (o, dev_read, &d, buf, BS, 5 * BS), 0);
  ck_assert_int_eq (fsev_overlay_patch (o, dev_read, &d, buf, 0, 3 * BS), 0);
  ck_assert_int_eq (fsev_overlay_patch (o, dev_read, &d, buf, 3 * BS - 1,
                                        0), 0);
  ck_assert_mem_eq (buf, want, BS);
  ck_assert_int_eq (d.reads, 0);

  /* A failing read is reported. */
  d.fail = true;
  ck_assert_int_eq (fsev_overlay_patch (o, dev_read, &d, got, BS, 3 * BS), -1);
  d.fail = false;
  fsev_overlay_free (o);

  /* An empty overlay patches nothing. */
  o = fsev_overlay_new (BS);
  memcpy (got, d.buf, BS);
  ck_assert_int_eq (fsev_overlay_patch (o, dev_read, &d, got, BS, 0), 0);
  ck_assert_mem_eq (got, d.buf, BS);
  fsev_overlay_free (o);
}
END_TEST

START_TEST (test_overlay_refers_materialize)
{
  struct dev d;
  dev_init (&d);
  struct fsev_overlay *o = fsev_overlay_new (BS);
  struct fsev_jtag t[] = {
    TAG (3, 0), TAG (4, 1, .escaped = true), TAG (6, 5), TAG (8, 6),
  };
  apply (o, txn (1, t, 4, NULL, 0));
  const uint64_t J = JSTART * BS;

  /* Which device bytes hold copies: journal blocks 0, 1, 5, 6. */
  ck_assert (fsev_overlay_refers (o, J, 1));
  ck_assert (fsev_overlay_refers (o, J + BS + 1000, 1));
  ck_assert (!fsev_overlay_refers (o, J + 2 * BS, 3 * BS));
  ck_assert (fsev_overlay_refers (o, J + 2 * BS, 3 * BS + 1));
  ck_assert (fsev_overlay_refers (o, J + 5 * BS - 1, 2));
  ck_assert (!fsev_overlay_refers (o, 0, J));
  ck_assert (!fsev_overlay_refers (o, J + 7 * BS, 100 * BS));
  ck_assert (!fsev_overlay_refers (o, J, 0));
  /* The home blocks are not copies. */
  ck_assert (!fsev_overlay_refers (o, 3 * BS, BS));

  /* Which home ranges the overlay holds whole: blocks 3, 4, 6, 8. */
  ck_assert (fsev_overlay_covers (o, 3 * BS, BS));
  ck_assert (fsev_overlay_covers (o, 3 * BS, 2 * BS));
  ck_assert (fsev_overlay_covers (o, 3 * BS + 7, 2 * BS - 7));
  ck_assert (fsev_overlay_covers (o, 8 * BS + BS - 1, 1));
  ck_assert (!fsev_overlay_covers (o, 3 * BS, 2 * BS + 1));   /* 5 is not */
  ck_assert (!fsev_overlay_covers (o, 5 * BS, BS));
  ck_assert (!fsev_overlay_covers (o, 6 * BS, 3 * BS));       /* nor 7 */
  ck_assert (!fsev_overlay_covers (o, 3 * BS - 1, 2));        /* nor 2 */
  ck_assert (!fsev_overlay_covers (o, 9 * BS, BS));
  ck_assert (!fsev_overlay_covers (o, 0, 100 * BS));
  ck_assert (!fsev_overlay_covers (o, 3 * BS, 0));

  /* Nothing there: nothing read, nothing copied. */
  d.reads = 0;
  ck_assert_int_eq (fsev_overlay_materialize (o, dev_read, &d, J + 2 * BS,
                                              3 * BS), 0);
  ck_assert_int_eq (d.reads, 0);
  for (size_t i = 0; i < o->n; i++)
    ck_assert_ptr_null (o->e[i].copy);

  /* The guest is about to overwrite a few bytes of journal block 1. */
  unsigned char before4[BS], before3[BS], buf[BS];
  jcontent (&d, 1, true, before4);
  jcontent (&d, 0, false, before3);
  ck_assert_int_eq (fsev_overlay_materialize (o, dev_read, &d, J + BS + 10,
                                              5), 0);
  ck_assert_ptr_nonnull (fsev_overlay_find (o, 4)->copy);
  ck_assert_ptr_null (fsev_overlay_find (o, 3)->copy);
  ck_assert_ptr_null (fsev_overlay_find (o, 6)->copy);
  check_by_src (o);
  ck_assert (!fsev_overlay_refers (o, J + BS, BS));
  ck_assert (fsev_overlay_refers (o, J, 2 * BS));

  /* It does: the overlay still shows the old copy, magic included. */
  memset (dblk (&d, JSTART + 1), 0x55, BS);
  memset (buf, 0, sizeof buf);
  ck_assert_int_eq (fsev_overlay_patch (o, dev_read, &d, buf, BS, 4 * BS), 0);
  ck_assert_mem_eq (buf, before4, BS);
  ck_assert_mem_eq (buf, "\xc0\x3b\x39\x98", 4);
  /* Block 3 was not materialized: its copy is still read from the
   * journal, so a change there shows.
   */
  ck_assert_int_eq (fsev_overlay_patch (o, dev_read, &d, buf, BS, 3 * BS), 0);
  ck_assert_mem_eq (buf, before3, BS);
  memset (dblk (&d, JSTART + 0), 0x66, BS);
  ck_assert_int_eq (fsev_overlay_patch (o, dev_read, &d, buf, BS, 3 * BS), 0);
  ck_assert_mem_eq (buf, dblk (&d, JSTART + 0), BS);

  /* A failing read leaves the entry without a copy. */
  d.fail = true;
  ck_assert_int_eq (fsev_overlay_materialize (o, dev_read, &d, J + 5 * BS,
                                              BS), -1);
  d.fail = false;
  ck_assert_ptr_null (fsev_overlay_find (o, 6)->copy);

  /* All of the journal: no copy refers to it any more. */
  unsigned char before6[BS], before8[BS];
  jcontent (&d, 5, false, before6);
  jcontent (&d, 6, false, before8);
  ck_assert_int_eq (fsev_overlay_materialize (o, dev_read, &d, J,
                                              JLEN * BS), 0);
  ck_assert_uint_eq (o->nsrc, 0);
  ck_assert (!fsev_overlay_refers (o, 0, DEV_BLOCKS * BS));
  memset (dblk (&d, JSTART), 0x77, JLEN * BS);
  ck_assert_int_eq (fsev_overlay_patch (o, dev_read, &d, buf, BS, 6 * BS), 0);
  ck_assert_mem_eq (buf, before6, BS);
  ck_assert_int_eq (fsev_overlay_patch (o, dev_read, &d, buf, BS, 8 * BS), 0);
  ck_assert_mem_eq (buf, before8, BS);
  ck_assert_int_eq (fsev_overlay_patch (o, dev_read, &d, buf, BS, 4 * BS), 0);
  ck_assert_mem_eq (buf, before4, BS);
  fsev_overlay_free (o);
}
END_TEST

struct seen {
  uint64_t fsblk[64];
  uint32_t seq[64];
  bool had_copy[64];
  unsigned n;
};

static void
seen_fn (const struct fsev_overlay_entry *e, void *opaque)
{
  struct seen *s = opaque;
  ck_assert_uint_lt (s->n, 64);
  s->fsblk[s->n] = e->fsblk;
  s->seq[s->n] = e->seq;
  s->had_copy[s->n] = e->copy != NULL;
  s->n++;
}

START_TEST (test_overlay_expire)
{
  ck_assert (fsev_seq_before (0xffffffffu, 0));
  ck_assert (fsev_seq_before (0xfffffff0u, 5));
  ck_assert (!fsev_seq_before (0, 0xffffffffu));
  ck_assert (!fsev_seq_before (5, 5));
  ck_assert (fsev_seq_before (4, 5));

  struct dev d;
  dev_init (&d);
  struct fsev_overlay *o = fsev_overlay_new (BS);
  struct fsev_jtag t1[] = { TAG (10, 0) }, t2[] = { TAG (5, 1), TAG (11, 2) };
  struct fsev_jtag t3[] = { TAG (2, 3) }, t4[] = { TAG (20, 4) };
  apply (o, txn (0xfffffffeu, t1, 1, NULL, 0));
  apply (o, txn (0xffffffffu, t2, 2, NULL, 0));
  apply (o, txn (0, t3, 1, NULL, 0));
  apply (o, txn (1, t4, 1, NULL, 0));
  ck_assert_uint_eq (o->n, 5);
  /* One expiring entry has a private copy (freed: ASan). */
  ck_assert_int_eq (fsev_overlay_materialize (o, dev_read, &d,
                                              (JSTART + 1) * BS, BS), 0);
  ck_assert_ptr_nonnull (fsev_overlay_find (o, 5)->copy);

  /* Tail 0: the two transactions before the wrap are gone. */
  struct seen s = { .n = 0 };
  fsev_overlay_expire (o, 0, false, seen_fn, &s);
  ck_assert_uint_eq (s.n, 3);
  ck_assert_uint_eq (s.fsblk[0], 5);
  ck_assert_uint_eq (s.seq[0], 0xffffffffu);
  ck_assert (s.had_copy[0]);
  ck_assert_uint_eq (s.fsblk[1], 10);
  ck_assert_uint_eq (s.seq[1], 0xfffffffeu);
  ck_assert_uint_eq (s.fsblk[2], 11);
  ck_assert_uint_eq (s.seq[2], 0xffffffffu);
  ck_assert_uint_eq (o->n, 2);
  check_sorted (o);
  check_entry (o, 2, 3, 0, false);
  check_entry (o, 20, 4, 1, false);
  ck_assert_ptr_null (fsev_overlay_find (o, 10));
  ck_assert_ptr_null (fsev_overlay_find (o, 11));
  /* Their journal blocks are no longer referred to. */
  ck_assert (!fsev_overlay_refers (o, JSTART * BS, 3 * BS));
  ck_assert (fsev_overlay_refers (o, JSTART * BS, 4 * BS));

  /* The same tail again: nothing more; no callback is fine too. */
  s.n = 0;
  fsev_overlay_expire (o, 0, false, seen_fn, &s);
  ck_assert_uint_eq (s.n, 0);
  fsev_overlay_expire (o, 1, false, NULL, NULL);
  ck_assert_uint_eq (o->n, 1);
  check_entry (o, 20, 4, 1, false);

  /* all: everything, whatever the tail. */
  apply (o, txn (2, t1, 1, NULL, 0));
  s.n = 0;
  fsev_overlay_expire (o, 0, true, seen_fn, &s);
  ck_assert_uint_eq (s.n, 2);
  ck_assert_uint_eq (s.fsblk[0], 10);
  ck_assert_uint_eq (s.seq[0], 2);
  ck_assert_uint_eq (s.fsblk[1], 20);
  ck_assert_uint_eq (o->n, 0);
  ck_assert (!fsev_overlay_refers (o, 0, DEV_BLOCKS * BS));
  ck_assert_ptr_null (fsev_overlay_find (o, 10));
  /* And it is still usable. */
  apply (o, txn (3, t3, 1, NULL, 0));
  check_entry (o, 2, 3, 3, false);
  fsev_overlay_free (o);
}
END_TEST

START_TEST (test_overlay_clone)
{
  struct dev d;
  dev_init (&d);
  struct fsev_overlay *o = fsev_overlay_new (BS);
  struct fsev_jtag t[] = {
    TAG (3, 0), TAG (4, 1, .escaped = true), TAG (6, 2), TAG (8, 3),
  };
  apply (o, txn (50, t, 4, NULL, 0));
  ck_assert_int_eq (fsev_overlay_materialize (o, dev_read, &d,
                                              (JSTART + 1) * BS, BS), 0);
  unsigned char view_o[FS_BLOCKS * BS], view_c[FS_BLOCKS * BS];
  unsigned char now[FS_BLOCKS * BS];
  memcpy (view_o, d.buf, sizeof view_o);
  ck_assert_int_eq (fsev_overlay_patch (o, dev_read, &d, view_o,
                                        sizeof view_o, 0), 0);

  struct fsev_overlay *c = fsev_overlay_clone (o);
  ck_assert_ptr_nonnull (c);
  ck_assert_uint_eq (c->n, o->n);
  ck_assert_uint_eq (c->nsrc, o->nsrc);
  ck_assert_uint_eq (c->block_size, BS);
  /* Its own copies. */
  ck_assert_ptr_nonnull (fsev_overlay_find (c, 4)->copy);
  ck_assert_ptr_ne (fsev_overlay_find (c, 4)->copy,
                    fsev_overlay_find (o, 4)->copy);
  memcpy (view_c, d.buf, sizeof view_c);
  ck_assert_int_eq (fsev_overlay_patch (c, dev_read, &d, view_c,
                                        sizeof view_c, 0), 0);
  ck_assert_mem_eq (view_c, view_o, sizeof view_c);

  /* Change the clone: a new copy, a replaced one, a revoke. */
  uint64_t rev[] = { 4, 6 };
  struct fsev_jtag t2[] = { TAG (3, 5), TAG (10, 6) };
  apply (c, txn (51, t2, 2, rev, 2));
  ck_assert_uint_eq (c->n, 3);
  check_entry (c, 3, 5, 51, false);
  check_entry (c, 10, 6, 51, false);
  ck_assert_ptr_null (fsev_overlay_find (c, 4));
  /* The original did not move. */
  ck_assert_uint_eq (o->n, 4);
  check_entry (o, 3, 0, 50, false);
  check_entry (o, 4, 1, 50, true);
  check_entry (o, 6, 2, 50, false);
  ck_assert_ptr_null (fsev_overlay_find (o, 10));
  memcpy (now, d.buf, sizeof now);
  ck_assert_int_eq (fsev_overlay_patch (o, dev_read, &d, now, sizeof now,
                                        0), 0);
  ck_assert_mem_eq (now, view_o, sizeof now);
  ck_assert (!fsev_overlay_refers (o, (JSTART + 5) * BS, 2 * BS));
  ck_assert (fsev_overlay_refers (c, (JSTART + 5) * BS, 2 * BS));

  /* Change the original: materialize all, expire all; the clone keeps
   * its entries (and its copies are not freed under it: ASan).
   */
  struct fsev_overlay *c2 = fsev_overlay_clone (o);
  ck_assert_int_eq (fsev_overlay_materialize (o, dev_read, &d,
                                              JSTART * BS, JLEN * BS), 0);
  ck_assert_ptr_null (fsev_overlay_find (c2, 3)->copy);
  ck_assert_uint_eq (c2->nsrc, 3);
  fsev_overlay_expire (o, 0, true, NULL, NULL);
  ck_assert_uint_eq (o->n, 0);
  ck_assert_uint_eq (c2->n, 4);
  memcpy (now, d.buf, sizeof now);
  ck_assert_int_eq (fsev_overlay_patch (c2, dev_read, &d, now, sizeof now,
                                        0), 0);
  ck_assert_mem_eq (now, view_o, sizeof now);

  /* A clone of an empty overlay. */
  struct fsev_overlay *c3 = fsev_overlay_clone (o);
  ck_assert_ptr_nonnull (c3);
  ck_assert_uint_eq (c3->n, 0);
  fsev_overlay_free (c3);
  fsev_overlay_free (c2);
  fsev_overlay_free (c);
  fsev_overlay_free (o);
}
END_TEST

/* The overlay's index of journal copies agrees with its entries: an
 * entry is in by_src exactly when it has no private copy.
 */
static void
check_by_src (const struct fsev_overlay *o)
{
  size_t without = 0;
  for (size_t i = 0; i < o->n; i++)
    without += o->e[i].copy == NULL;
  ck_assert_msg (o->nsrc == without,
                 "by_src lists %zu entries, %zu have no private copy",
                 o->nsrc, without);
  for (size_t i = 0; i < o->nsrc; i++) {
    ck_assert_uint_lt (o->by_src[i], o->n);
    ck_assert_msg (o->e[o->by_src[i]].copy == NULL,
                   "by_src lists block %llu, which has a private copy",
                   (unsigned long long) o->e[o->by_src[i]].fsblk);
  }
  for (size_t i = 0; i < o->n; i++) {
    const struct fsev_overlay_entry *e = &o->e[i];
    bool other = false;          /* another entry still reads that block */
    for (size_t k = 0; k < o->n; k++)
      other |= o->e[k].copy == NULL && o->e[k].src == e->src;
    ck_assert_msg (fsev_overlay_refers (o, e->src * BS, BS) == other,
                   "refers (journal copy of block %llu) is %d, copy %p",
                   (unsigned long long) e->fsblk,
                   fsev_overlay_refers (o, e->src * BS, BS), (void *) e->copy);
  }
}

START_TEST (test_overlay_materialize_partial_failure)
{
  /* The guest's write covers two copies; reading the second fails. */
  struct dev d;
  dev_init (&d);
  struct fsev_overlay *o = fsev_overlay_new (BS);
  struct fsev_jtag t[] = { TAG (3, 0), TAG (4, 1), TAG (5, 2) };
  apply (o, txn (1, t, 3, NULL, 0));
  check_by_src (o);
  d.fail_from = 2;
  ck_assert_int_eq (fsev_overlay_materialize (o, dev_read, &d, JSTART * BS,
                                              2 * BS), -1);
  d.fail_from = 0;
  const unsigned char *copy3 = fsev_overlay_find (o, 3)->copy;
  /* Retrying succeeds, and must not copy block 3 again (the first copy
   * would leak).
   */
  ck_assert_int_eq (fsev_overlay_materialize (o, dev_read, &d, JSTART * BS,
                                              2 * BS), 0);
  if (copy3)
    ck_assert_msg (fsev_overlay_find (o, 3)->copy == copy3,
                   "block 3 was copied before the failure (by_src still "
                   "listed it) and copied again: the first copy leaked");
  check_by_src (o);

  /* Whatever was copied before a failure, the index must say so at
   * once (refers () decides whether the guest's write goes ahead).
   */
  fsev_overlay_free (o);
  o = fsev_overlay_new (BS);
  apply (o, txn (1, t, 3, NULL, 0));
  d.fail_from = d.reads + 2;
  ck_assert_int_eq (fsev_overlay_materialize (o, dev_read, &d, JSTART * BS,
                                              2 * BS), -1);
  d.fail_from = 0;
  check_by_src (o);
  ck_assert_ptr_nonnull (fsev_overlay_find (o, 3)->copy);  /* read 4: ok */
  ck_assert_ptr_null (fsev_overlay_find (o, 4)->copy);     /* read 5 failed */
  ck_assert_ptr_null (fsev_overlay_find (o, 5)->copy);     /* not in range */
  fsev_overlay_free (o);
}
END_TEST

/* --- Randomized against the model. --- */

struct model {
  bool present[FS_BLOCKS];
  uint32_t jblk[FS_BLOCKS], seq[FS_BLOCKS];
  bool esc[FS_BLOCKS];
  bool snap_valid[FS_BLOCKS];
  unsigned char snap[FS_BLOCKS][BS];    /* materialized content */
};

static void
model_content (struct dev *d, const struct model *m, unsigned b,
               unsigned char *out)
{
  if (m->snap_valid[b])
    memcpy (out, m->snap[b], BS);
  else
    jcontent (d, m->jblk[b], m->esc[b], out);
}

struct expire_check {
  const struct model *m;
  bool seen[FS_BLOCKS];
  unsigned n;
};

static void
expire_fn (const struct fsev_overlay_entry *e, void *opaque)
{
  struct expire_check *x = opaque;
  ck_assert_uint_lt (e->fsblk, FS_BLOCKS);
  ck_assert (x->m->present[e->fsblk]);
  ck_assert (!x->seen[e->fsblk]);
  ck_assert_uint_eq (e->seq, x->m->seq[e->fsblk]);
  x->seen[e->fsblk] = true;
  x->n++;
}

START_TEST (test_overlay_random)
{
  static struct dev d;
  static struct model m;
  static unsigned char got[DEV_BLOCKS * BS], exp[DEV_BLOCKS * BS];
  unsigned seed = 12345u + (unsigned) _i;
  dev_init (&d);
  memset (&m, 0, sizeof m);
  struct fsev_overlay *o = fsev_overlay_new (BS);
  uint32_t seq = 0xffffff00u, tail = seq;
  /* How often the interesting cases came up. */
  unsigned n_materialized = 0, n_patched_copies = 0, n_expired = 0;

  for (int step = 0; step < 3000; step++) {
    int op = rand_r (&seed) % 10;
    if (op < 4) {                       /* a transaction */
      struct fsev_jtag tags[12];
      uint64_t rev[4];
      size_t nt = (size_t) rand_r (&seed) % 12;
      size_t nr = (size_t) rand_r (&seed) % 4;
      for (size_t i = 0; i < nr; i++)
        rev[i] = (uint64_t) rand_r (&seed) % (FS_BLOCKS + 2);
      for (size_t i = 0; i < nt; i++)
        tags[i] = (struct fsev_jtag) {
          .fsblk = (uint64_t) rand_r (&seed) % (FS_BLOCKS + 3),
          .jblk = (uint32_t) rand_r (&seed) % (JLEN + 2),
          .escaped = rand_r (&seed) % 3 == 0,
          .csum_ok = rand_r (&seed) % 6 != 0,
        };
      struct fsev_jtxn t = txn (seq, tags, nt, rev, nr);
      ck_assert_int_eq (fsev_overlay_apply (o, &t, jmap, NULL, FS_BLOCKS), 0);
      /* The model: revokes first, then each usable tag in log order. */
      for (size_t i = 0; i < nr; i++)
        if (rev[i] < FS_BLOCKS)
          m.present[rev[i]] = false;
      for (size_t i = 0; i < nt; i++) {
        bool revoked = false;
        for (size_t k = 0; k < nr; k++)
          revoked |= rev[k] == tags[i].fsblk;
        if (!tags[i].csum_ok || tags[i].fsblk >= FS_BLOCKS ||
            tags[i].jblk >= JLEN || revoked)
          continue;
        unsigned b = (unsigned) tags[i].fsblk;
        m.present[b] = true;
        m.jblk[b] = tags[i].jblk;
        m.esc[b] = tags[i].escaped;
        m.seq[b] = seq;
        m.snap_valid[b] = false;
      }
      seq++;
    }
    else if (op < 6) {                  /* the guest writes the journal */
      uint64_t first = JSTART + (uint64_t) rand_r (&seed) % JLEN;
      uint64_t nblk = 1 + (uint64_t) rand_r (&seed) % 3;
      if (first + nblk > DEV_BLOCKS)
        nblk = DEV_BLOCKS - first;
      uint64_t off = first * BS + (uint64_t) rand_r (&seed) % 16;
      uint64_t count = nblk * BS - (off - first * BS);
      bool refers = false;
      for (unsigned b = 0; b < FS_BLOCKS; b++)
        if (m.present[b] && !m.snap_valid[b] &&
            JSTART + m.jblk[b] >= off / BS &&
            JSTART + m.jblk[b] <= (off + count - 1) / BS)
          refers = true;
      ck_assert_int_eq (fsev_overlay_refers (o, off, count), refers);
      ck_assert_int_eq (fsev_overlay_materialize (o, dev_read, &d, off,
                                                  count), 0);
      for (unsigned b = 0; b < FS_BLOCKS; b++)
        if (m.present[b] && !m.snap_valid[b] &&
            JSTART + m.jblk[b] >= off / BS &&
            JSTART + m.jblk[b] <= (off + count - 1) / BS) {
          jcontent (&d, m.jblk[b], m.esc[b], m.snap[b]);
          m.snap_valid[b] = true;
          n_materialized++;
        }
      ck_assert (!fsev_overlay_refers (o, off, count));
      for (uint64_t k = 0; k < count; k++)
        d.buf[off + k] = (unsigned char) rand_r (&seed);
    }
    else if (op < 8) {                  /* a read */
      uint64_t off = (uint64_t) rand_r (&seed) % (FS_BLOCKS * BS);
      uint64_t count = 1 + (uint64_t) rand_r (&seed) % (6 * BS);
      if (off + count > FS_BLOCKS * BS)
        count = FS_BLOCKS * BS - off;
      memcpy (got, d.buf + off, count);
      ck_assert_int_eq (fsev_overlay_patch (o, dev_read, &d, got, count,
                                            off), 0);
      unsigned char blk[BS];
      uint64_t have = UINT64_MAX;
      for (uint64_t k = 0; k < count; k++) {
        uint64_t p = off + k, b = p / BS;
        if (m.present[b]) {
          if (have != b) {
            model_content (&d, &m, (unsigned) b, blk);
            n_patched_copies += m.snap_valid[b];
          }
          have = b;
          exp[k] = blk[p % BS];
        }
        else
          exp[k] = d.buf[p];
      }
      ck_assert_msg (memcmp (got, exp, count) == 0,
                     "step %d: patch [%llu, +%llu) differs from the model",
                     step, (unsigned long long) off,
                     (unsigned long long) count);
    }
    else if (op < 9) {                  /* a checkpoint moves the tail */
      uint32_t span = seq - tail;
      uint32_t newtail =
        tail + (span ? (uint32_t) rand_r (&seed) % (span + 1) : 0);
      bool all = rand_r (&seed) % 8 == 0;
      struct expire_check x = { .m = &m };
      fsev_overlay_expire (o, newtail, all, expire_fn, &x);
      unsigned want = 0;
      for (unsigned b = 0; b < FS_BLOCKS; b++)
        if (m.present[b] && (all || fsev_seq_before (m.seq[b], newtail))) {
          ck_assert_msg (x.seen[b], "step %d: block %u not expired", step, b);
          m.present[b] = false;
          want++;
        }
      ck_assert_uint_eq (x.n, want);
      n_expired += want;
      tail = all ? seq : newtail;
    }
    else {                              /* swap in a clone */
      struct fsev_overlay *c = fsev_overlay_clone (o);
      ck_assert_ptr_nonnull (c);
      fsev_overlay_free (o);
      o = c;
    }

    /* The entries are the model's, sorted.  (Checked without
     * ck_assert, which records every call: too slow here.)
     */
    size_t n = 0;
    for (unsigned b = 0; b < FS_BLOCKS; b++) {
      const struct fsev_overlay_entry *e = fsev_overlay_find (o, b);
      if ((e != NULL) != m.present[b])
        ck_abort_msg ("step %d: block %u: entry %p, model %d", step, b,
                      (void *) e, m.present[b]);
      if (!e)
        continue;
      n++;
      if (e->seq != m.seq[b] || (e->copy != NULL) != m.snap_valid[b] ||
          (!m.snap_valid[b] && (e->src != JSTART + m.jblk[b] ||
                                e->escaped != m.esc[b])))
        ck_abort_msg ("step %d: block %u: entry seq %u src %llu esc %d "
                      "copy %p; model seq %u jblk %u esc %d materialized %d",
                      step, b, e->seq, (unsigned long long) e->src,
                      e->escaped, (void *) e->copy, m.seq[b], m.jblk[b],
                      m.esc[b], m.snap_valid[b]);
    }
    if (o->n != n)
      ck_abort_msg ("step %d: %zu entries, model %zu", step, o->n, n);
    for (size_t i = 1; i < o->n; i++)
      if (o->e[i - 1].fsblk >= o->e[i].fsblk)
        ck_abort_msg ("step %d: entries not sorted at %zu", step, i);
  }
  ck_assert (seq - 0xffffff00u > 500);  /* it did wrap */
  ck_assert_uint_gt (n_materialized, 100);
  ck_assert_uint_gt (n_patched_copies, 30);
  ck_assert_uint_gt (n_expired, 100);
  fsev_overlay_free (o);
}
END_TEST

/* Two overlays rebuilt at once in two threads, as two partitions'
 * followers commit at once, each under its own lock only.  by_src was
 * sorted by qsort with the overlay in a static for the comparator:
 * one thread's sort then compared the other overlay's entries (wrong
 * order, or indices past its end).  Each thread checks its own
 * by_src after every rebuild; the overlays differ in size so that a
 * mixup shows.  Checks failing in a thread are reported by ck_assert
 * from that thread (Check runs each test in a forked child).
 */
struct race {
  unsigned n;                   /* tags per transaction */
  uint64_t base;                /* device block of journal block 0 */
  unsigned rounds;
  int bad;                      /* set on the first inconsistency */
};

static uint64_t
race_jmap (void *opaque, uint32_t jblk)
{
  const struct race *r = opaque;
  return r->base + jblk;
}

static void *
race_thread (void *arg)
{
  struct race *r = arg;
  struct fsev_overlay *o = fsev_overlay_new (BS);
  struct fsev_jtag *tags = calloc (r->n, sizeof *tags);
  if (o == NULL || tags == NULL) {
    r->bad = 1;
    goto out;
  }
  for (unsigned round = 0; round < r->rounds && !r->bad; round++) {
    /* Home blocks in order, their copies in reverse order (and shifted
     * by the round), so that by_src is a real permutation.
     */
    for (unsigned i = 0; i < r->n; i++)
      tags[i] = (struct fsev_jtag) {
        .fsblk = i, .jblk = (r->n - 1 - i + round) % r->n, .csum_ok = true,
      };
    struct fsev_jtxn t = {
      .sequence = round + 1, .tags = tags, .ntags = r->n,
    };
    if (fsev_overlay_apply (o, &t, race_jmap, r, r->n) != 0 ||
        o->nsrc != o->n || o->n != r->n)
      r->bad = 1;
    for (size_t k = 0; k < o->nsrc && !r->bad; k++) {
      if (o->by_src[k] >= o->n ||
          (k > 0 && o->e[o->by_src[k - 1]].src > o->e[o->by_src[k]].src))
        r->bad = 1;
    }
    fsev_overlay_expire (o, 0, true, NULL, NULL);
    if (o->n != 0 || o->nsrc != 0)
      r->bad = 1;
  }
 out:
  free (tags);
  fsev_overlay_free (o);
  return NULL;
}

START_TEST (test_overlay_concurrent_rebuild)
{
  struct race r[2] = {
    { .n = 700, .base = 100000, .rounds = 1500 },
    { .n = 3, .base = 5000000, .rounds = 300000 },
  };
  pthread_t th[2];
  for (int i = 0; i < 2; i++)
    ck_assert_int_eq (pthread_create (&th[i], NULL, race_thread, &r[i]), 0);
  for (int i = 0; i < 2; i++)
    ck_assert_int_eq (pthread_join (th[i], NULL), 0);
  ck_assert_msg (r[0].bad == 0, "overlay of 700: by_src inconsistent");
  ck_assert_msg (r[1].bad == 0, "overlay of 3: by_src inconsistent");
}
END_TEST

Suite *
overlay_suite (void)
{
  Suite *s = suite_create ("overlay");
  TCase *tc = tcase_create ("overlay");

  tcase_set_timeout (tc, 120);
  tcase_add_test (tc, test_overlay_apply_tags);
  tcase_add_test (tc, test_overlay_revoke);
  tcase_add_test (tc, test_overlay_patch);
  tcase_add_test (tc, test_overlay_refers_materialize);
  tcase_add_test (tc, test_overlay_expire);
  tcase_add_test (tc, test_overlay_clone);
  tcase_add_test (tc, test_overlay_materialize_partial_failure);
  tcase_add_loop_test (tc, test_overlay_random, 0, 4);
  tcase_add_test (tc, test_overlay_concurrent_rebuild);
  suite_add_tcase (s, tc);
  return s;
}
