/* tests/unit-sort.c: Check unit tests for fs/sort.c.
 *
 * fsev_radix_sort must be a stable sort whatever the input: its output
 * is compared with qsort ordered by (key, input position), on arrays in
 * order but for a few peaks and dips, shuffled ones, and everything
 * between, with duplicate keys and 4- and 8-byte keys.
 */
#include <config.h>

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <check.h>

#include "sort.h"
#include "unit.h"

/* 24 bytes, like a run: key at 0 (8 bytes) or at 8 (4 bytes). */
struct e24 {
  uint64_t key8;
  uint32_t key4;
  uint32_t pos;                 /* input position: the stability oracle */
  uint64_t payload;
};

static uint64_t rng;

static uint64_t
rnd (void)
{
  rng ^= rng << 13;
  rng ^= rng >> 7;
  rng ^= rng << 17;
  return rng;
}

static int key8_first;

static int
cmp_ref (const void *x, const void *y)
{
  const struct e24 *a = x, *b = y;
  uint64_t ka = key8_first ? a->key8 : a->key4;
  uint64_t kb = key8_first ? b->key8 : b->key4;
  if (ka != kb)
    return ka < kb ? -1 : 1;
  return a->pos < b->pos ? -1 : a->pos > b->pos;
}

/* Fill N elements: in order with step 0..3 (duplicates), then disturb
 * PERMILLE of them (peaks, dips, or swaps), or shuffle all.
 */
static void
fill (struct e24 *v, size_t n, unsigned permille, int shuffle, uint64_t span)
{
  uint64_t k = 0;
  for (size_t i = 0; i < n; i++) {
    k += rnd () % 4;
    v[i].key8 = k % span;
    v[i].key4 = (uint32_t) (k % span);
    v[i].payload = rnd ();
  }
  for (size_t i = 0; i < n * permille / 1000; i++) {
    size_t at = rnd () % n;
    switch (rnd () % 3) {
    case 0:                     /* a peak */
      v[at].key8 = k + rnd () % 1000;
      break;
    case 1:                     /* a dip */
      v[at].key8 = rnd () % (v[at].key8 + 1);
      break;
    default: {                  /* a swap */
      size_t b = rnd () % n;
      uint64_t t = v[at].key8; v[at].key8 = v[b].key8; v[b].key8 = t;
    }
    }
    v[at].key4 = (uint32_t) v[at].key8;
  }
  if (shuffle)
    for (size_t i = n; i > 1; i--) {
      size_t j = rnd () % i;
      struct e24 t = v[i - 1]; v[i - 1] = v[j]; v[j] = t;
    }
  for (size_t i = 0; i < n; i++)
    v[i].pos = (uint32_t) i;
}

static void
check_one (size_t n, unsigned permille, int shuffle, uint64_t span, int k8)
{
  struct e24 *v = malloc ((n ? n : 1) * sizeof *v);
  struct e24 *ref = malloc ((n ? n : 1) * sizeof *ref);
  ck_assert (v && ref);
  fill (v, n, permille, shuffle, span);
  memcpy (ref, v, n * sizeof *v);
  key8_first = k8;
  qsort (ref, n, sizeof *ref, cmp_ref);
  ck_assert_int_eq (fsev_radix_sort (v, n, sizeof *v,
                                     k8 ? offsetof (struct e24, key8)
                                     : offsetof (struct e24, key4),
                                     k8 ? 8 : 4), 0);
  for (size_t i = 0; i < n; i++)
    ck_assert_msg (memcmp (&v[i], &ref[i], sizeof v[i]) == 0,
                   "n=%zu permille=%u shuffle=%d span=%llu key8=%d: "
                   "element %zu is input %u (key %llu), expected input %u "
                   "(key %llu)", n, permille, shuffle,
                   (unsigned long long) span, k8, i, v[i].pos,
                   (unsigned long long) (k8 ? v[i].key8 : v[i].key4),
                   ref[i].pos,
                   (unsigned long long) (k8 ? ref[i].key8 : ref[i].key4));
  free (v);
  free (ref);
}

START_TEST (test_sort_stable)
{
  static const size_t sizes[] = { 0, 1, 2, 100, 4095, 4096, 5000, 50000 };
  static const unsigned disturb[] = { 0, 1, 10, 50, 70, 200 };
  rng = 0x9e3779b97f4a7c15ULL;
  for (size_t s = 0; s < sizeof sizes / sizeof *sizes; s++)
    for (size_t d = 0; d < sizeof disturb / sizeof *disturb; d++)
      for (int k8 = 0; k8 < 2; k8++) {
        check_one (sizes[s], disturb[d], 0, UINT64_MAX, k8);
        check_one (sizes[s], disturb[d], 0, 7, k8);    /* many equal keys */
      }
  for (int k8 = 0; k8 < 2; k8++) {
    check_one (50000, 0, 1, UINT64_MAX, k8);
    check_one (50000, 0, 1, 3, k8);
  }
}
END_TEST

/* A descending array, one peak at the front, one dip at the end. */
START_TEST (test_sort_shapes)
{
  size_t n = 20000;
  struct e24 *v = malloc (n * sizeof *v), *ref = malloc (n * sizeof *ref);
  ck_assert (v && ref);
  for (int shape = 0; shape < 3; shape++) {
    for (size_t i = 0; i < n; i++) {
      v[i] = (struct e24) { .pos = (uint32_t) i };
      v[i].key8 = shape == 0 ? n - i : shape == 1 ? (i == 0 ? 1u << 30 : i)
        : (i == n - 1 ? 0 : i + 1);
    }
    memcpy (ref, v, n * sizeof *v);
    key8_first = 1;
    qsort (ref, n, sizeof *ref, cmp_ref);
    ck_assert_int_eq (fsev_radix_sort (v, n, sizeof *v,
                                       offsetof (struct e24, key8), 8), 0);
    ck_assert (memcmp (v, ref, n * sizeof *v) == 0);
  }
  free (v);
  free (ref);
}
END_TEST

Suite *
sort_suite (void)
{
  Suite *s = suite_create ("sort");
  TCase *tc = tcase_create ("core");
  tcase_set_timeout (tc, 60);
  tcase_add_test (tc, test_sort_stable);
  tcase_add_test (tc, test_sort_shapes);
  suite_add_tcase (s, tc);
  return s;
}
