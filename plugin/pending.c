/* plugin/pending.c: the set of pending free-space bytes (pending.h). */
#include <config.h>

#include <stdlib.h>
#include <string.h>

#include "pending.h"
#include "util.h"

int
pending_add (struct pending *p, uint64_t offset, uint64_t length)
{
  if (length == 0)
    return 0;
  /* Sequential writes continue the last range: no growth. */
  if (p->n > 0) {
    struct prange *last = &p->v[p->n - 1];
    if (last->offset + last->length == offset) {
      last->length += length;
      if (p->sorted == p->n)
        p->bytes += length;
      return 0;
    }
  }
  if (fsev_grow ((void **) &p->v, &p->cap, p->n + 1, sizeof *p->v) == -1)
    return -1;
  p->v[p->n++] = (struct prange) { offset, length };
  return 0;
}

static int
cmp_range (const void *a, const void *b)
{
  const struct prange *x = a, *y = b;
  return x->offset < y->offset ? -1 : x->offset > y->offset;
}

void
pending_normalise (struct pending *p)
{
  if (p->sorted == p->n)
    return;
  qsort (p->v, p->n, sizeof *p->v, cmp_range);
  size_t out = 0;
  uint64_t bytes = 0;
  for (size_t i = 0; i < p->n; i++) {
    struct prange r = p->v[i];
    if (out > 0 && p->v[out - 1].offset + p->v[out - 1].length >= r.offset) {
      struct prange *q = &p->v[out - 1];
      uint64_t end = r.offset + r.length;
      if (end > q->offset + q->length) {
        bytes += end - (q->offset + q->length);
        q->length = end - q->offset;
      }
      continue;
    }
    p->v[out++] = r;
    bytes += r.length;
  }
  p->n = p->sorted = out;
  p->bytes = bytes;
}

uint64_t
pending_remove (struct pending *p, uint64_t offset, uint64_t length,
                void (*fn) (uint64_t, uint64_t, void *), void *opaque)
{
  uint64_t end = offset + length, removed = 0;

  if (length == 0)
    return 0;
  /* First range that ends after OFFSET. */
  size_t lo = 0, hi = p->n;
  while (lo < hi) {
    size_t mid = lo + (hi - lo) / 2;
    if (p->v[mid].offset + p->v[mid].length <= offset)
      lo = mid + 1;
    else
      hi = mid;
  }
  size_t i = lo;
  if (i < p->n && p->v[i].offset < offset &&
      p->v[i].offset + p->v[i].length > end) {
    /* A hole in the middle of one range: split it in two. */
    struct prange r = p->v[i];
    if (fsev_grow ((void **) &p->v, &p->cap, p->n + 1, sizeof *p->v) == -1)
      return 0;                 /* nothing removed: it stays pending */
    memmove (&p->v[i + 2], &p->v[i + 1], (p->n - i - 1) * sizeof *p->v);
    p->v[i] = (struct prange) { r.offset, offset - r.offset };
    p->v[i + 1] = (struct prange) { end, r.offset + r.length - end };
    p->n++;
    p->sorted = p->n;
    if (fn)
      fn (offset, length, opaque);
    p->bytes -= length < p->bytes ? length : p->bytes;
    return length;
  }
  /* Otherwise one pass: trim the ends, drop what lies inside. */
  size_t w = i;
  for (; i < p->n; i++) {
    struct prange r = p->v[i];
    uint64_t rend = r.offset + r.length;
    if (r.offset >= end) {
      p->v[w++] = r;
      continue;
    }
    uint64_t from = r.offset > offset ? r.offset : offset;
    uint64_t to = rend < end ? rend : end;
    if (fn)
      fn (from, to - from, opaque);
    removed += to - from;
    if (from > r.offset)
      p->v[w++] = (struct prange) { r.offset, from - r.offset };
    else if (to < rend)
      p->v[w++] = (struct prange) { to, rend - to };
  }
  p->n = p->sorted = w;
  p->bytes -= removed < p->bytes ? removed : p->bytes;
  return removed;
}

void
pending_free (struct pending *p)
{
  free (p->v);
  memset (p, 0, sizeof *p);
}
