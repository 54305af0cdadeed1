/* plugin/epoch.c: held ext2 metadata between two guest flushes (see
 * epoch.h).
 */
#include <config.h>

#include <stdlib.h>
#include <string.h>

#include "epoch.h"
#include "util.h"

void
epoch_init (struct epoch *e, unsigned bs)
{
  memset (e, 0, sizeof *e);
  e->bs = bs;
}

void
epoch_clear (struct epoch *e)
{
  for (size_t i = 0; i < e->n; i++)
    free (e->v[i].data);
  free (e->v);
  e->v = NULL;
  e->n = e->cap = 0;
}

/* First index whose block is >= FSBLK. */
static size_t
lower (const struct epoch *e, uint64_t fsblk)
{
  size_t lo = 0, hi = e->n;
  while (lo < hi) {
    size_t mid = lo + (hi - lo) / 2;
    if (e->v[mid].fsblk < fsblk)
      lo = mid + 1;
    else
      hi = mid;
  }
  return lo;
}

const unsigned char *
epoch_get (const struct epoch *e, uint64_t fsblk)
{
  size_t i = lower (e, fsblk);
  return i < e->n && e->v[i].fsblk == fsblk ? e->v[i].data : NULL;
}

int
epoch_put (struct epoch *e, uint64_t fsblk, const void *block)
{
  size_t i = lower (e, fsblk);
  if (i < e->n && e->v[i].fsblk == fsblk) {
    memcpy (e->v[i].data, block, e->bs);
    return 0;
  }
  unsigned char *copy = malloc (e->bs);
  if (copy == NULL ||
      fsev_grow ((void **) &e->v, &e->cap, e->n + 1, sizeof *e->v) == -1) {
    free (copy);
    return -1;
  }
  memcpy (copy, block, e->bs);
  memmove (&e->v[i + 1], &e->v[i], (e->n - i) * sizeof *e->v);
  e->v[i] = (struct epoch_block) { .fsblk = fsblk, .data = copy };
  e->n++;
  return 0;
}

int
epoch_take (struct epoch *e, uint64_t fsblk, unsigned char *data)
{
  size_t i = lower (e, fsblk);
  if (i < e->n && e->v[i].fsblk == fsblk) {
    free (e->v[i].data);
    e->v[i].data = data;
    return 0;
  }
  if (fsev_grow ((void **) &e->v, &e->cap, e->n + 1, sizeof *e->v) == -1) {
    free (data);
    return -1;
  }
  memmove (&e->v[i + 1], &e->v[i], (e->n - i) * sizeof *e->v);
  e->v[i] = (struct epoch_block) { .fsblk = fsblk, .data = data };
  e->n++;
  return 0;
}

void
epoch_patch (const struct epoch *e, void *buf, uint64_t count, uint64_t offset)
{
  if (e->n == 0 || count == 0)
    return;
  uint64_t first = offset / e->bs, last = (offset + count - 1) / e->bs;
  for (size_t i = lower (e, first); i < e->n && e->v[i].fsblk <= last; i++) {
    uint64_t bs = e->bs, b0 = e->v[i].fsblk * bs;
    uint64_t from = b0 > offset ? b0 : offset;
    uint64_t to = b0 + bs < offset + count ? b0 + bs : offset + count;
    memcpy ((char *) buf + (from - offset), e->v[i].data + (from - b0), to - from);
  }
}
