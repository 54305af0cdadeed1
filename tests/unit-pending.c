/* tests/unit-pending.c: Check unit tests for plugin/pending.c.
 *
 * Hand-made cases, then a randomized run against a byte bitmap of a
 * 1 MiB space: after every step the normalised set must be exactly the
 * runs of the bitmap, and every removal must report exactly the runs it
 * cleared.
 */
#include <config.h>

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <check.h>

#include "pending.h"
#include "unit.h"

struct pieces {
  struct prange v[256];
  size_t n;
};

static void
piece_fn (uint64_t offset, uint64_t length, void *opaque)
{
  struct pieces *p = opaque;
  ck_assert_uint_lt (p->n, 256);
  p->v[p->n++] = (struct prange) { offset, length };
}

/* The set is exactly the ranges R (normalised). */
static void
check_set (struct pending *p, const struct prange *r, size_t n)
{
  char got[4096] = "", exp[4096] = "";
  uint64_t total = 0;
  for (size_t i = 0; i < p->n; i++)
    snprintf (got + strlen (got), sizeof got - strlen (got), " [%llu,+%llu)",
              (unsigned long long) p->v[i].offset,
              (unsigned long long) p->v[i].length);
  for (size_t i = 0; i < n; i++) {
    snprintf (exp + strlen (exp), sizeof exp - strlen (exp), " [%llu,+%llu)",
              (unsigned long long) r[i].offset,
              (unsigned long long) r[i].length);
    total += r[i].length;
  }
  ck_assert_msg (strcmp (got, exp) == 0, "set:%s, expected:%s", got, exp);
  ck_assert_uint_eq (p->n, n);
  ck_assert_uint_eq (p->sorted, p->n);
  ck_assert_uint_eq (p->bytes, total);
}

#define SET(p, ...) do {                                        \
    struct prange r_[] = { __VA_ARGS__ };                       \
    check_set ((p), r_, sizeof r_ / sizeof r_[0]);              \
  } while (0)

static void
check_pieces (const struct pieces *got, const struct prange *r, size_t n)
{
  ck_assert_uint_eq (got->n, n);
  for (size_t i = 0; i < n; i++) {
    ck_assert_uint_eq (got->v[i].offset, r[i].offset);
    ck_assert_uint_eq (got->v[i].length, r[i].length);
  }
}

#define PIECES(g, ...) do {                                     \
    struct prange r_[] = { __VA_ARGS__ };                       \
    check_pieces ((g), r_, sizeof r_ / sizeof r_[0]);           \
  } while (0)

START_TEST (test_pending_add_normalise)
{
  struct pending p = { 0 };

  pending_normalise (&p);               /* empty */
  ck_assert_uint_eq (p.n, 0);
  ck_assert_uint_eq (p.bytes, 0);

  ck_assert_int_eq (pending_add (&p, 100, 10), 0);
  ck_assert_int_eq (pending_add (&p, 50, 10), 0);
  ck_assert_int_eq (pending_add (&p, 55, 10), 0);       /* overlaps 50 */
  ck_assert_int_eq (pending_add (&p, 0, 0), 0);         /* nothing */
  ck_assert_int_eq (pending_add (&p, 65, 5), 0);        /* continues 55 */
  ck_assert_int_eq (pending_add (&p, 110, 5), 0);       /* touches 100 */
  ck_assert_int_eq (pending_add (&p, 200, 10), 0);
  ck_assert_int_eq (pending_add (&p, 202, 3), 0);       /* inside 200 */
  ck_assert_int_eq (pending_add (&p, 190, 10), 0);      /* touches 200 */
  ck_assert_int_eq (pending_add (&p, 300, 1), 0);
  ck_assert_int_eq (pending_add (&p, 299, 3), 0);       /* covers 300 */
  pending_normalise (&p);
  SET (&p, { 50, 20 }, { 100, 15 }, { 190, 20 }, { 299, 3 });
  pending_normalise (&p);               /* idempotent */
  SET (&p, { 50, 20 }, { 100, 15 }, { 190, 20 }, { 299, 3 });

  /* A sequential write after normalising: still normalised, counted. */
  ck_assert_int_eq (pending_add (&p, 302, 8), 0);
  SET (&p, { 50, 20 }, { 100, 15 }, { 190, 20 }, { 299, 11 });

  /* One range swallowing all. */
  ck_assert_int_eq (pending_add (&p, 10, 1000), 0);
  pending_normalise (&p);
  SET (&p, { 10, 1000 });

  /* The same range many times. */
  for (int i = 0; i < 100; i++)
    ck_assert_int_eq (pending_add (&p, 2000, 7), 0);
  pending_normalise (&p);
  SET (&p, { 10, 1000 }, { 2000, 7 });
  pending_free (&p);
  ck_assert_ptr_null (p.v);
  ck_assert_uint_eq (p.n, 0);
}
END_TEST

static void
make (struct pending *p, const struct prange *r, size_t n)
{
  memset (p, 0, sizeof *p);
  for (size_t i = n; i-- > 0; )       /* backwards: normalise must sort */
    ck_assert_int_eq (pending_add (p, r[i].offset, r[i].length), 0);
  pending_normalise (p);
}

#define MAKE(p, ...) do {                                       \
    struct prange r_[] = { __VA_ARGS__ };                       \
    make ((p), r_, sizeof r_ / sizeof r_[0]);                   \
  } while (0)

START_TEST (test_pending_remove)
{
  struct pending p;
  struct pieces g;

  /* A hole in the middle of one range: it splits. */
  MAKE (&p, { 0, 100 }, { 200, 50 });
  g.n = 0;
  ck_assert_uint_eq (pending_remove (&p, 40, 10, piece_fn, &g), 10);
  PIECES (&g, { 40, 10 });
  SET (&p, { 0, 40 }, { 50, 50 }, { 200, 50 });
  /* And the second half again: the split pieces are usable. */
  g.n = 0;
  ck_assert_uint_eq (pending_remove (&p, 60, 5, piece_fn, &g), 5);
  PIECES (&g, { 60, 5 });
  SET (&p, { 0, 40 }, { 50, 10 }, { 65, 35 }, { 200, 50 });
  pending_free (&p);

  /* Across several ranges, trimming both ends. */
  MAKE (&p, { 0, 10 }, { 20, 10 }, { 40, 10 }, { 60, 10 });
  g.n = 0;
  ck_assert_uint_eq (pending_remove (&p, 5, 40, piece_fn, &g), 20);
  PIECES (&g, { 5, 5 }, { 20, 10 }, { 40, 5 });
  SET (&p, { 0, 5 }, { 45, 5 }, { 60, 10 });
  pending_free (&p);

  /* Exactly whole ranges, from gap to gap. */
  MAKE (&p, { 0, 10 }, { 20, 10 }, { 40, 10 });
  g.n = 0;
  ck_assert_uint_eq (pending_remove (&p, 10, 40, piece_fn, &g), 20);
  PIECES (&g, { 20, 10 }, { 40, 10 });
  SET (&p, { 0, 10 });
  pending_free (&p);

  /* The start of a range, the end of a range. */
  MAKE (&p, { 100, 100 });
  g.n = 0;
  ck_assert_uint_eq (pending_remove (&p, 100, 10, piece_fn, &g), 10);
  ck_assert_uint_eq (pending_remove (&p, 190, 10, piece_fn, &g), 10);
  ck_assert_uint_eq (pending_remove (&p, 50, 60, piece_fn, &g), 0);
  ck_assert_uint_eq (pending_remove (&p, 170, 100, piece_fn, &g), 20);
  PIECES (&g, { 100, 10 }, { 190, 10 }, { 170, 20 });
  SET (&p, { 110, 60 });
  /* Everything. */
  g.n = 0;
  ck_assert_uint_eq (pending_remove (&p, 0, UINT64_MAX / 2, piece_fn, &g), 60);
  PIECES (&g, { 110, 60 });
  ck_assert_uint_eq (p.n, 0);
  ck_assert_uint_eq (p.bytes, 0);
  pending_free (&p);

  /* Without a callback. */
  MAKE (&p, { 0, 10 }, { 20, 10 });
  ck_assert_uint_eq (pending_remove (&p, 5, 20, NULL, NULL), 10);
  SET (&p, { 0, 5 }, { 25, 5 });
  ck_assert_uint_eq (pending_remove (&p, 1, 2, NULL, NULL), 2);
  SET (&p, { 0, 1 }, { 3, 2 }, { 25, 5 });
  pending_free (&p);
}
END_TEST

START_TEST (test_pending_remove_nothing)
{
  struct pending p;
  struct pieces g = { .n = 0 };

  /* An empty set. */
  memset (&p, 0, sizeof p);
  ck_assert_uint_eq (pending_remove (&p, 0, 100, piece_fn, &g), 0);
  ck_assert_uint_eq (p.n, 0);

  MAKE (&p, { 10, 10 }, { 30, 10 });
  /* In a gap, before all, after all, touching but not overlapping. */
  ck_assert_uint_eq (pending_remove (&p, 20, 10, piece_fn, &g), 0);
  ck_assert_uint_eq (pending_remove (&p, 0, 10, piece_fn, &g), 0);
  ck_assert_uint_eq (pending_remove (&p, 40, 1000, piece_fn, &g), 0);
  ck_assert_uint_eq (pending_remove (&p, 1000, 10, piece_fn, &g), 0);
  /* Zero length at an edge of a range. */
  ck_assert_uint_eq (pending_remove (&p, 10, 0, piece_fn, &g), 0);
  ck_assert_uint_eq (pending_remove (&p, 20, 0, piece_fn, &g), 0);
  ck_assert_uint_eq (g.n, 0);
  SET (&p, { 10, 10 }, { 30, 10 });
  pending_free (&p);
}
END_TEST

START_TEST (test_pending_remove_zero_inside)
{
  /* Zero length strictly inside a range: nothing is removed, so
   * nothing should be reported and the range should stay whole.
   */
  struct pending p;
  struct pieces g = { .n = 0 };
  MAKE (&p, { 10, 10 }, { 30, 10 });
  ck_assert_uint_eq (pending_remove (&p, 15, 0, piece_fn, &g), 0);
  char cb[64] = "none";
  if (g.n)
    snprintf (cb, sizeof cb, "[%llu,+%llu)",
              (unsigned long long) g.v[0].offset,
              (unsigned long long) g.v[0].length);
  ck_assert_msg (g.n == 0 && p.n == 2,
                 "remove (15, 0) from {[10,+10) [30,+10)}: %zu callback(s), "
                 "first %s; %zu ranges left, the first [%llu,+%llu)",
                 g.n, cb, p.n, (unsigned long long) p.v[0].offset,
                 (unsigned long long) p.v[0].length);
  SET (&p, { 10, 10 }, { 30, 10 });
  pending_free (&p);
}
END_TEST

/* --- Randomized against a bitmap. --- */

/* ck_assert records its location on every call (a write to the
 * runner): too slow in the loops below, which check this way instead.
 */
#define REQUIRE(cond, ...) \
  do { if (!(cond)) ck_abort_msg (__VA_ARGS__); } while (0)

#define SPACE (1u << 20)

static unsigned char *bitmap;           /* one byte per byte of space */

struct rcheck {
  uint64_t off, len;
  uint64_t last_end;                    /* end of the previous piece */
  uint64_t total;
  size_t n;
};

static void
rpiece_fn (uint64_t offset, uint64_t length, void *opaque)
{
  struct rcheck *c = opaque;
  REQUIRE (length > 0, "empty piece at %llu", (unsigned long long) offset);
  REQUIRE (offset >= c->off && offset + length <= c->off + c->len,
           "piece [%llu,+%llu) outside the range removed",
           (unsigned long long) offset, (unsigned long long) length);
  /* In order, disjoint and not touching: each piece is a whole run. */
  REQUIRE (c->n == 0 || offset > c->last_end,
           "pieces out of order or touching");
  /* Every byte was pending, and the run is maximal inside the range. */
  for (uint64_t k = offset; k < offset + length; k++) {
    REQUIRE (bitmap[k] == 1, "byte %llu reported but not pending",
                   (unsigned long long) k);
    bitmap[k] = 2;                      /* reported */
  }
  if (offset > c->off)
    REQUIRE (bitmap[offset - 1] != 1, "piece not maximal on the left");
  if (offset + length < c->off + c->len)
    REQUIRE (bitmap[offset + length] != 1, "piece not maximal on the right");
  c->last_end = offset + length;
  c->total += length;
  c->n++;
}

/* Where in [FROM, TO) the bitmap first differs from V, or TO. */
static uint64_t
first_not (uint64_t from, uint64_t to, unsigned char v)
{
  for (uint64_t k = from; k < to; k++)
    if (bitmap[k] != v)
      return k;
  return to;
}

/* The set is exactly the runs of the bitmap. */
static void
check_bitmap (const struct pending *p, uint64_t model_bytes)
{
  uint64_t pos = 0, bad;
  ck_assert_uint_eq (p->sorted, p->n);
  for (size_t i = 0; i < p->n; i++) {
    const struct prange *r = &p->v[i];
    REQUIRE (r->length > 0 && r->offset + r->length <= SPACE,
             "bad range %zu", i);
    REQUIRE (i == 0 || r->offset > pos,
                   "ranges %zu and %zu overlap or touch", i - 1, i);
    bad = first_not (pos, r->offset, 0);
    REQUIRE (bad == r->offset, "byte %llu pending but not in the set",
                   (unsigned long long) bad);
    pos = r->offset + r->length;
    bad = first_not (r->offset, pos, 1);
    REQUIRE (bad == pos, "byte %llu in the set but not pending",
                   (unsigned long long) bad);
  }
  bad = first_not (pos, SPACE, 0);
  ck_assert_msg (bad == SPACE, "byte %llu pending but not in the set",
                 (unsigned long long) bad);
  ck_assert_uint_eq (p->bytes, model_bytes);
}

START_TEST (test_pending_random)
{
  unsigned seed = 777u + (unsigned) _i;
  struct pending p = { 0 };
  uint64_t bytes = 0;

  bitmap = calloc (SPACE, 1);
  ck_assert_ptr_nonnull (bitmap);
  for (int step = 0; step < 4000; step++) {
    int op = rand_r (&seed) % 8;
    /* Mostly small ranges, sometimes big ones; sometimes sequential. */
    uint64_t maxlen = rand_r (&seed) % 8 == 0 ? SPACE / 4 : 4096;
    uint64_t off = (uint64_t) rand_r (&seed) % SPACE;
    uint64_t len = (uint64_t) rand_r (&seed) % maxlen;
    if (off + len > SPACE)
      len = SPACE - off;
    if (op < 4) {
      if (op == 0 && p.n > 0) {         /* continue the last request */
        off = p.v[p.n - 1].offset + p.v[p.n - 1].length;
        if (off >= SPACE)
          continue;
        if (off + len > SPACE)
          len = SPACE - off;
      }
      REQUIRE (pending_add (&p, off, len) == 0, "pending_add failed");
      for (uint64_t k = off; k < off + len; k++)
        if (!bitmap[k]) {
          bitmap[k] = 1;
          bytes++;
        }
    }
    else if (op < 7) {
      /* (Zero lengths are test_pending_remove_zero_inside's.) */
      if (len == 0)
        continue;
      pending_normalise (&p);
      uint64_t want = 0;
      for (uint64_t k = off; k < off + len; k++)
        want += bitmap[k] == 1;
      struct rcheck c = { .off = off, .len = len };
      uint64_t got = pending_remove (&p, off, len, rpiece_fn, &c);
      ck_assert_uint_eq (got, want);
      ck_assert_uint_eq (c.total, want);
      /* Everything pending in the range was reported. */
      for (uint64_t k = off; k < off + len; k++) {
        REQUIRE (bitmap[k] != 1, "byte %llu removed but not reported",
                 (unsigned long long) k);
        bitmap[k] = 0;
      }
      bytes -= want;
      check_bitmap (&p, bytes);
    }
    else {
      pending_normalise (&p);
      check_bitmap (&p, bytes);
    }
  }
  pending_normalise (&p);
  check_bitmap (&p, bytes);
  pending_free (&p);
  free (bitmap);
  bitmap = NULL;
}
END_TEST

Suite *
pending_suite (void)
{
  Suite *s = suite_create ("pending");
  TCase *tc = tcase_create ("pending");

  tcase_set_timeout (tc, 120);
  tcase_add_test (tc, test_pending_add_normalise);
  tcase_add_test (tc, test_pending_remove);
  tcase_add_test (tc, test_pending_remove_nothing);
  tcase_add_test (tc, test_pending_remove_zero_inside);
  tcase_add_loop_test (tc, test_pending_random, 0, 3);
  suite_add_tcase (s, tc);
  return s;
}
