/* fs/layout-subset.c: a small model holding a few inodes and the names
 * that make their paths.
 *
 * A commit-time update diffs only the inodes the transaction touched.
 * fsev_diff compares two whole models, so it gets two small ones: the
 * touched inodes as the model had them before the update and as it has
 * them after, each with every link of those inodes and of the
 * directories above them (for paths, depth order and reachability).
 * Everything else of the model is left out.
 */
#include <config.h>

#include <stdlib.h>
#include <string.h>

#include "layout-subset.h"
#include "util.h"

static int
cmp_u32 (const void *a, const void *b)
{
  uint32_t x = *(const uint32_t *) a, y = *(const uint32_t *) b;
  return x < y ? -1 : x > y;
}

struct set {
  uint32_t *v;
  size_t n, cap;
};

/* Directories above a touched inode: a small set, kept sorted. */
static int
set_add (struct set *s, uint32_t x, bool *added)
{
  size_t lo = 0, hi = s->n;
  while (lo < hi) {
    size_t mid = lo + (hi - lo) / 2;
    if (s->v[mid] < x)
      lo = mid + 1;
    else
      hi = mid;
  }
  *added = false;
  if (lo < s->n && s->v[lo] == x)
    return 0;
  if (fsev_grow ((void **) &s->v, &s->cap, s->n + 1, sizeof *s->v) == -1)
    return -1;
  memmove (&s->v[lo + 1], &s->v[lo], (s->n - lo) * sizeof *s->v);
  s->v[lo] = x;
  s->n++;
  *added = true;
  return 0;
}

struct fsev_layout *
fsev_layout_subset (const struct fsev_layout *L, const uint32_t *inos,
                    size_t n)
{
  struct fsev_layout *S = calloc (1, sizeof *S);
  struct set names = { 0 };     /* inodes whose links are copied */
  uint32_t *work = NULL;        /* to visit */
  size_t nwork = 0, work_cap = 0;
  if (S == NULL)
    return NULL;
  S->block_size = L->block_size;
  S->fs_blocks = L->fs_blocks;
  S->fs_bytes = L->fs_bytes;
  S->inode_size = L->inode_size;
  S->inodes_per_block = L->inodes_per_block;
  S->inodes_per_group = L->inodes_per_group;
  S->root_ino = L->root_ino;
  S->first_ino = L->first_ino;
  S->inodes_count = L->inodes_count;
  S->fs_type = L->fs_type;
  S->external_journal = L->external_journal;
  S->journal_ino = L->journal_ino;
  memcpy (S->special, L->special, sizeof S->special);
  S->nspecial = L->nspecial;

  /* The records of the touched inodes, in order. */
  S->inodes = malloc ((n ? n : 1) * sizeof *S->inodes);
  if (S->inodes == NULL)
    goto oom;
  uint32_t *sorted = malloc ((n ? n : 1) * sizeof *sorted);
  if (sorted == NULL)
    goto oom;
  if (n)
    memcpy (sorted, inos, n * sizeof *sorted);
  qsort (sorted, n, sizeof *sorted, cmp_u32);
  for (size_t i = 0; i < n; i++) {
    if (i && sorted[i] == sorted[i - 1])
      continue;
    const struct fsev_inode *in = fsev_layout_inode (L, sorted[i]);
    if (in)
      S->inodes[S->ninodes++] = *in;
    bool added;
    if (set_add (&names, sorted[i], &added) == -1) {
      free (sorted);
      goto oom;
    }
    if (added) {
      if (fsev_grow ((void **) &work, &work_cap, nwork + 1, sizeof *work) == -1) {
        free (sorted);
        goto oom;
      }
      work[nwork++] = sorted[i];
    }
  }
  free (sorted);

  /* Their links, then their parents' links, up to the root.  Each
   * inode is visited once, so a loop in the names ends.
   */
  while (nwork > 0) {
    uint32_t ino = work[--nwork];
    unsigned count = names_count (&L->names, ino);
    for (unsigned k = 0; k < count; k++) {
      const struct fsev_link *l = names_link (&L->names, ino, k);
      if (names_add (&S->names, l->parent, l->child,
                     L->names.pool ? L->names.pool + l->name_off : "",
                     l->name_len) == -1)
        goto oom;
      bool added;
      if (set_add (&names, l->parent, &added) == -1)
        goto oom;
      if (added) {
        if (fsev_grow ((void **) &work, &work_cap, nwork + 1,
                       sizeof *work) == -1)
          goto oom;
        work[nwork++] = l->parent;
      }
    }
  }
  /* The scan's order of a file's links (by parent) is kept: links
   * come out of L in that order and the sort below is stable.
   */
  if (names_finish (&S->names) == -1)
    goto oom;
  free (names.v);
  free (work);
  return S;

 oom:
  free (names.v);
  free (work);
  fsev_layout_free (S);
  return NULL;
}
