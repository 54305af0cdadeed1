/* fs/overlay.c: the committed overlay (see overlay.h). */
#include <config.h>

#include <errno.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "overlay.h"
#include "sort.h"
#include "util.h"

struct fsev_overlay *
fsev_overlay_new (unsigned block_size)
{
  struct fsev_overlay *o = calloc (1, sizeof *o);
  if (o)
    o->block_size = block_size;
  return o;
}

void
fsev_overlay_free (struct fsev_overlay *o)
{
  if (o == NULL)
    return;
  for (size_t i = 0; i < o->n; i++)
    free (o->e[i].copy);
  free (o->e);
  free (o->by_src);
  free (o);
}

static int
rebuild_by_src (struct fsev_overlay *o);

struct fsev_overlay *
fsev_overlay_clone (const struct fsev_overlay *o)
{
  struct fsev_overlay *c = fsev_overlay_new (o->block_size);
  if (c == NULL)
    return NULL;
  if (o->n) {
    c->e = malloc (o->n * sizeof *c->e);
    if (c->e == NULL)
      goto fail;
    c->cap = o->n;
    for (size_t i = 0; i < o->n; i++) {
      c->e[i] = o->e[i];
      c->e[i].copy = NULL;
      c->n = i + 1;
      if (o->e[i].copy) {
        c->e[i].copy = malloc (o->block_size);
        if (c->e[i].copy == NULL)
          goto fail;
        memcpy (c->e[i].copy, o->e[i].copy, o->block_size);
      }
    }
  }
  if (rebuild_by_src (c) == -1)
    goto fail;
  return c;
 fail:
  fsev_overlay_free (c);
  return NULL;
}

static int
cmp_u64 (const void *a, const void *b)
{
  uint64_t x = *(const uint64_t *) a, y = *(const uint64_t *) b;
  return x < y ? -1 : x > y;
}

/* by_src, the entries without a private copy in order of their copy's
 * device block, for fsev_overlay_refers.  Sorted as (src, index) pairs
 * by the stable radix sort: no comparator, so no shared state.  (It
 * was qsort with the overlay in a static for the comparator, which
 * raced when two partitions' followers committed at once: each holds
 * only its own overlay's lock.)
 */
struct src_index {
  uint64_t src;
  uint64_t i;
};

static int
rebuild_by_src (struct fsev_overlay *o)
{
  free (o->by_src);
  o->by_src = NULL;
  o->nsrc = 0;
  if (o->n == 0)
    return 0;
  size_t *by_src = malloc (o->n * sizeof *by_src);
  struct src_index *pairs = malloc (o->n * sizeof *pairs);
  if (by_src == NULL || pairs == NULL) {
    free (by_src);
    free (pairs);
    return -1;
  }
  size_t n = 0;
  for (size_t i = 0; i < o->n; i++)
    if (o->e[i].copy == NULL)
      pairs[n++] = (struct src_index) { .src = o->e[i].src, .i = i };
  if (fsev_radix_sort (pairs, n, sizeof *pairs,
                       offsetof (struct src_index, src), 8) == -1) {
    free (by_src);
    free (pairs);
    return -1;
  }
  for (size_t k = 0; k < n; k++)
    by_src[k] = pairs[k].i;
  free (pairs);
  o->by_src = by_src;
  o->nsrc = n;
  return 0;
}

/* A tag about to enter the overlay, with its place in the log. */
struct incoming {
  struct fsev_overlay_entry e;
  size_t order;
};

static int
cmp_incoming (const void *a, const void *b)
{
  const struct incoming *x = a, *y = b;
  if (x->e.fsblk != y->e.fsblk)
    return x->e.fsblk < y->e.fsblk ? -1 : 1;
  return x->order < y->order ? -1 : x->order > y->order;
}

static bool
in_sorted (const uint64_t *v, size_t n, uint64_t x)
{
  return n && bsearch (&x, v, n, sizeof *v, cmp_u64) != NULL;
}

int
fsev_overlay_apply (struct fsev_overlay *o, const struct fsev_jtxn *txn,
                    uint64_t (*jmap) (void *, uint32_t), void *jmap_opaque,
                    uint64_t fs_blocks)
{
  uint64_t *rev = NULL;
  struct incoming *in = NULL;
  struct fsev_overlay_entry *out = NULL;
  size_t nin = 0;

  if (txn->nrevoked) {
    rev = malloc (txn->nrevoked * sizeof *rev);
    if (rev == NULL)
      goto oom;
    memcpy (rev, txn->revoked, txn->nrevoked * sizeof *rev);
    qsort (rev, txn->nrevoked, sizeof *rev, cmp_u64);
  }
  if (txn->ntags) {
    in = malloc (txn->ntags * sizeof *in);
    if (in == NULL)
      goto oom;
  }
  for (size_t i = 0; i < txn->ntags; i++) {
    const struct fsev_jtag *t = &txn->tags[i];
    uint64_t src = jmap (jmap_opaque, t->jblk);
    /* Recovery skips damaged copies and revoked blocks; a home outside
     * the filesystem or a copy we cannot locate has nowhere to go.
     */
    if (!t->csum_ok || t->fsblk >= fs_blocks || src == 0 ||
        in_sorted (rev, txn->nrevoked, t->fsblk))
      continue;
    in[nin++] = (struct incoming) {
      .e = { .fsblk = t->fsblk, .src = src, .seq = txn->sequence,
             .escaped = t->escaped },
      .order = i,
    };
  }
  if (nin > 1)
    qsort (in, nin, sizeof *in, cmp_incoming);
  /* Within one transaction the last copy of a block wins. */
  size_t k = 0;
  for (size_t i = 0; i < nin; i++) {
    if (k > 0 && in[k - 1].e.fsblk == in[i].e.fsblk)
      k--;
    in[k++] = in[i];
  }
  nin = k;

  /* Merge: old entries not revoked and not replaced, and the new ones. */
  size_t cap = o->n + nin;
  out = malloc ((cap ? cap : 1) * sizeof *out);
  if (out == NULL)
    goto oom;
  size_t i = 0, j = 0, n = 0;
  while (i < o->n || j < nin) {
    if (j >= nin || (i < o->n && o->e[i].fsblk < in[j].e.fsblk)) {
      struct fsev_overlay_entry *e = &o->e[i++];
      if (in_sorted (rev, txn->nrevoked, e->fsblk)) {
        free (e->copy);
        continue;
      }
      out[n++] = *e;
    }
    else {
      if (i < o->n && o->e[i].fsblk == in[j].e.fsblk)
        free (o->e[i++].copy);
      out[n++] = in[j++].e;
    }
  }
  free (o->e);
  o->e = out;
  o->n = n;
  o->cap = cap;
  free (rev);
  free (in);
  return rebuild_by_src (o);

 oom:
  free (rev);
  free (in);
  errno = ENOMEM;
  return -1;
}

/* First index in e whose home is at or after FSBLK. */
static size_t
first_home (const struct fsev_overlay *o, uint64_t fsblk)
{
  size_t lo = 0, hi = o->n;
  while (lo < hi) {
    size_t mid = lo + (hi - lo) / 2;
    if (o->e[mid].fsblk < fsblk)
      lo = mid + 1;
    else
      hi = mid;
  }
  return lo;
}

const struct fsev_overlay_entry *
fsev_overlay_find (const struct fsev_overlay *o, uint64_t fsblk)
{
  size_t lo = first_home (o, fsblk);
  return lo < o->n && o->e[lo].fsblk == fsblk ? &o->e[lo] : NULL;
}

int
fsev_overlay_read_entry (const struct fsev_overlay *o,
                         const struct fsev_overlay_entry *e,
                         fsev_devread_fn read, void *opaque, void *buf)
{
  if (e->copy) {
    memcpy (buf, e->copy, o->block_size);
    return 0;
  }
  if (read (opaque, buf, o->block_size, e->src * o->block_size) == -1)
    return -1;
  if (e->escaped) {             /* jbd2 zeroed the magic it would have shown */
    static const unsigned char magic[4] = { 0xc0, 0x3b, 0x39, 0x98 };
    memcpy (buf, magic, sizeof magic);
  }
  return 0;
}

int
fsev_overlay_patch (const struct fsev_overlay *o, fsev_devread_fn read,
                    void *opaque, void *buf, size_t count, uint64_t offset)
{
  const uint64_t bs = o->block_size;
  if (o->n == 0 || count == 0)
    return 0;
  uint64_t first = offset / bs, last = (offset + count - 1) / bs;
  size_t lo = first_home (o, first);
  unsigned char *tmp = NULL;
  for (size_t i = lo; i < o->n && o->e[i].fsblk <= last; i++) {
    const struct fsev_overlay_entry *e = &o->e[i];
    uint64_t bstart = e->fsblk * bs;
    uint64_t from = bstart > offset ? bstart : offset;
    uint64_t to = bstart + bs < offset + count ? bstart + bs : offset + count;
    if (from == bstart && to == bstart + bs) {
      /* The whole block: straight into place (the usual case). */
      if (fsev_overlay_read_entry (o, e, read, opaque,
                                   (char *) buf + (bstart - offset)) == -1) {
        free (tmp);
        return -1;
      }
      continue;
    }
    if (tmp == NULL && (tmp = malloc (bs)) == NULL)
      return -1;
    if (fsev_overlay_read_entry (o, e, read, opaque, tmp) == -1) {
      free (tmp);
      return -1;
    }
    memcpy ((char *) buf + (from - offset), tmp + (from - bstart), to - from);
  }
  free (tmp);
  return 0;
}

/* First index in by_src whose copy is at or after device block B. */
static size_t
first_src (const struct fsev_overlay *o, uint64_t b)
{
  size_t lo = 0, hi = o->nsrc;
  while (lo < hi) {
    size_t mid = lo + (hi - lo) / 2;
    if (o->e[o->by_src[mid]].src < b)
      lo = mid + 1;
    else
      hi = mid;
  }
  return lo;
}

bool
fsev_overlay_covers (const struct fsev_overlay *o, uint64_t offset,
                     uint64_t count)
{
  const uint64_t bs = o->block_size;
  if (o->n == 0 || count == 0)
    return false;
  uint64_t first = offset / bs, last = (offset + count - 1) / bs;
  if (last - first >= o->n)
    return false;
  size_t lo = first_home (o, first);
  /* One entry per block, sorted: covered when the entries run on
   * without a gap from FIRST to LAST.
   */
  for (uint64_t b = first; b <= last; b++, lo++)
    if (lo >= o->n || o->e[lo].fsblk != b)
      return false;
  return true;
}

bool
fsev_overlay_refers (const struct fsev_overlay *o, uint64_t offset,
                     uint64_t count)
{
  if (o->nsrc == 0 || count == 0)
    return false;
  uint64_t first = offset / o->block_size;
  uint64_t last = (offset + count - 1) / o->block_size;
  size_t i = first_src (o, first);
  return i < o->nsrc && o->e[o->by_src[i]].src <= last;
}

int
fsev_overlay_materialize (struct fsev_overlay *o, fsev_devread_fn read,
                          void *opaque, uint64_t offset, uint64_t count)
{
  if (!fsev_overlay_refers (o, offset, count))
    return 0;
  uint64_t first = offset / o->block_size;
  uint64_t last = (offset + count - 1) / o->block_size;
  for (size_t i = first_src (o, first);
       i < o->nsrc && o->e[o->by_src[i]].src <= last; i++) {
    struct fsev_overlay_entry *e = &o->e[o->by_src[i]];
    unsigned char *copy = malloc (o->block_size);
    if (copy == NULL)
      return -1;
    if (fsev_overlay_read_entry (o, e, read, opaque, copy) == -1) {
      free (copy);
      rebuild_by_src (o);       /* the ones copied so far are done */
      return -1;
    }
    e->copy = copy;
  }
  return rebuild_by_src (o);
}

void
fsev_overlay_expire (struct fsev_overlay *o, uint32_t tail, bool all,
                     void (*fn) (const struct fsev_overlay_entry *, void *),
                     void *opaque)
{
  size_t n = 0;
  for (size_t i = 0; i < o->n; i++) {
    struct fsev_overlay_entry *e = &o->e[i];
    if (all || fsev_seq_before (e->seq, tail)) {
      if (fn)
        fn (e, opaque);
      free (e->copy);
      continue;
    }
    o->e[n++] = *e;
  }
  o->n = n;
  rebuild_by_src (o);           /* shrinking: cannot fail for lack of
                                   memory in a way that matters: on
                                   failure by_src is empty and refers()
                                   answers false */
}
