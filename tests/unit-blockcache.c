/* tests/unit-blockcache.c: Check unit tests for plugin/blockcache.c.
 *
 * The cache must only ever return the device's bytes.  Hand-made
 * interleavings of writers and readers first, then a randomized run:
 * up to three writers at once, each stepping through begin, the device
 * write, put and end in a random order with the others and with commit
 * reads, against a simulated device; every hit must equal the device.
 */
#include <config.h>

#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <check.h>

#include "blockcache.h"
#include "unit.h"

#define BS 512
#define NBLK 16

static unsigned char dev[NBLK][BS];

static void
fill (unsigned char *b, unsigned v)
{
  memset (b, (int) (v & 0xff), BS);
  b[0] = (unsigned char) (v >> 8);
}

/* A read through the cache: the device's bytes, or a defect. */
static bool
read_block (unsigned blk)
{
  unsigned char got[BS];
  uint64_t gen;
  if (blockcache_get ((uint64_t) blk * BS, BS, got, &gen)) {
    ck_assert_msg (memcmp (got, dev[blk], BS) == 0,
                   "block %u: the cache returned bytes the device does not "
                   "hold", blk);
    return true;
  }
  blockcache_put_read (gen, (uint64_t) blk * BS, BS, dev[blk]);
  return false;
}

START_TEST (test_written_then_read)
{
  blockcache_free ();
  struct blockcache_ticket t;
  fill (dev[3], 7);
  blockcache_begin (&t, 3 * BS, BS);
  blockcache_put_written (&t, 3 * BS, BS, dev[3]);
  blockcache_end (&t);
  ck_assert (read_block (3));
  /* A write over part of it drops it. */
  blockcache_begin (&t, 3 * BS + 100, 10);
  dev[3][100] ^= 1;
  blockcache_end (&t);
  ck_assert (!read_block (3));
  ck_assert (read_block (3));     /* the read put it back */
  /* Another length at the same offset is another key. */
  unsigned char big[2 * BS];
  uint64_t gen;
  ck_assert (!blockcache_get (3 * BS, 2 * BS, big, &gen));
}
END_TEST

START_TEST (test_overlapping_writers)
{
  blockcache_free ();
  struct blockcache_ticket a, b;
  /* A began first, B while A was in flight: B's bytes may be under A's,
   * or A's under B's; neither may put.
   */
  blockcache_begin (&a, 0, BS);
  blockcache_begin (&b, 0, BS);
  fill (dev[0], 1);
  fill (dev[0], 2);
  blockcache_put_written (&b, 0, BS, dev[0]);
  blockcache_end (&b);
  fill (dev[0], 1);               /* A's write lands last */
  unsigned char abytes[BS];
  fill (abytes, 1);
  blockcache_put_written (&a, 0, BS, abytes);
  blockcache_end (&a);
  ck_assert (!read_block (0));
  /* Writers that do not overlap in time both put. */
  blockcache_free ();
  blockcache_begin (&a, 0, BS);
  fill (dev[0], 3);
  blockcache_put_written (&a, 0, BS, dev[0]);
  blockcache_end (&a);
  blockcache_begin (&b, BS, BS);
  fill (dev[1], 4);
  blockcache_put_written (&b, BS, BS, dev[1]);
  blockcache_end (&b);
  ck_assert (read_block (0));
  ck_assert (read_block (1));
}
END_TEST

START_TEST (test_read_during_write)
{
  blockcache_free ();
  struct blockcache_ticket w;
  unsigned char got[BS];
  uint64_t gen;
  /* A read that starts while a write is in flight is not kept. */
  blockcache_begin (&w, 5 * BS, BS);
  ck_assert (!blockcache_get (5 * BS, BS, got, &gen));
  blockcache_put_read (gen, 5 * BS, BS, dev[5]);
  fill (dev[5], 9);
  blockcache_end (&w);
  ck_assert (!read_block (5));
  /* Nor one with a write begun and ended between its read and put. */
  blockcache_free ();
  ck_assert (!blockcache_get (6 * BS, BS, got, &gen));
  memcpy (got, dev[6], BS);       /* the read */
  blockcache_begin (&w, 6 * BS, BS);
  fill (dev[6], 10);
  blockcache_end (&w);
  blockcache_put_read (gen, 6 * BS, BS, got);
  ck_assert (!read_block (6));
  ck_assert (read_block (6));
}
END_TEST

/* One simulated writer: steps 0 begin, 1 device write, 2 put, 3 end. */
struct writer {
  bool active;
  unsigned step, blk, n, val;
  bool failed;
  struct blockcache_ticket t;
};

START_TEST (test_random_interleavings)
{
  blockcache_free ();
  memset (dev, 0, sizeof dev);
  struct writer w[3] = { { 0 } };
  unsigned seed = 12345, val = 1;
  uint64_t hits = 0;
  for (unsigned step = 0; step < 200000; step++) {
    seed = seed * 1103515245 + 12345;
    unsigned r = (seed >> 8) % 100;
    if (r < 30) {                 /* a commit read */
      hits += read_block ((seed >> 16) % NBLK);
      continue;
    }
    struct writer *x = &w[(seed >> 16) % 3];
    if (!x->active) {
      x->active = true;
      x->step = 0;
      x->n = 1 + (seed >> 20) % 3;
      x->blk = (seed >> 12) % (NBLK - x->n + 1);
      x->val = val++;
      x->failed = (seed >> 24) % 16 == 0;
    }
    switch (x->step++) {
    case 0:
      blockcache_begin (&x->t, (uint64_t) x->blk * BS, (uint64_t) x->n * BS);
      break;
    case 1:                       /* a failed write changes some of it */
      for (unsigned i = 0; i < x->n; i++)
        if (!x->failed || i == 0)
          fill (dev[x->blk + i], x->val);
      break;
    case 2:
      if (!x->failed)
        for (unsigned i = 0; i < x->n; i++) {
          unsigned char b[BS];
          fill (b, x->val);       /* what this writer wrote */
          blockcache_put_written (&x->t, (uint64_t) (x->blk + i) * BS, BS, b);
        }
      break;
    case 3:
      blockcache_end (&x->t);
      x->active = false;
      break;
    }
  }
  /* The test means something only if the cache was used. */
  ck_assert_uint_gt (hits, 200);
  blockcache_free ();
}
END_TEST

Suite *
blockcache_suite (void)
{
  Suite *s = suite_create ("blockcache");
  TCase *tc = tcase_create ("core");
  tcase_add_test (tc, test_written_then_read);
  tcase_add_test (tc, test_overlapping_writers);
  tcase_add_test (tc, test_read_during_write);
  tcase_add_test (tc, test_random_interleavings);
  suite_add_tcase (s, tc);
  return s;
}
