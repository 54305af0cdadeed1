/* plugin/follow-check.c: -D fsevent.check=1: after every commit, the
 * overlay against a fresh replay of the journal and the model against a
 * fresh scan of the committed view, field by field.
 */
#include <config.h>

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define NBDKIT_API_VERSION 2
#include <nbdkit-plugin.h>

#include "diff.h"
#include "device.h"
#include "epoch.h"
#include "follow.h"
#include "handlers.h"
#include "jbd2.h"
#include "locks.h"
#include "layout-internal.h"
#include "layout-update.h"
#include "overlay.h"
#include "paths.h"
#include "pending.h"
#include "util.h"
#include "writes.h"
#include "follow-internal.h"

/* The names of INO in L, sorted, as one comparable string. */
static char *
names_key (const struct fsev_layout *L, uint32_t ino, size_t *len)
{
  unsigned n = fsev_layout_names (L, ino, NULL, 0);
  struct fsev_name *v = calloc (n ? n : 1, sizeof *v);
  char *out = NULL;
  size_t cap = 0;
  *len = 0;
  if (v == NULL)
    return NULL;
  fsev_layout_names (L, ino, v, n);
  /* Order-free: a name set, not the order links were found in. */
  for (unsigned i = 1; i < n; i++)
    for (unsigned j = i; j > 0; j--) {
      struct fsev_name *x = &v[j - 1], *y = &v[j];
      size_t m = x->len < y->len ? x->len : y->len;
      int c = x->parent != y->parent ? (x->parent < y->parent ? -1 : 1)
        : memcmp (x->name, y->name, m) ? memcmp (x->name, y->name, m)
        : (x->len > y->len) - (x->len < y->len);
      if (c <= 0)
        break;
      struct fsev_name t = *x; *x = *y; *y = t;
    }
  for (unsigned i = 0; i < n; i++) {
    if (fsev_grow ((void **) &out, &cap, *len + v[i].len + 16, 1) == -1) {
      free (out);
      free (v);
      return NULL;
    }
    *len += (size_t) snprintf (out + *len, 16, "%u/", v[i].parent);
    memcpy (out + *len, v[i].name, v[i].len);
    *len += v[i].len;
    out[(*len)++] = 0;
  }
  free (v);
  return out ? out : strdup ("");
}

/* What differs between the model M and a fresh scan F, field by field,
 * or NULL.
 */
static const char *
model_differs (struct volume *vol, const struct fsev_layout *M,
               const struct fsev_layout *F)
{
  static __thread char msg[256];
  for (size_t i = 0; i < M->nruns || i < F->nruns; i++) {
    if (i >= M->nruns || i >= F->nruns) {
      const struct run *r = i < M->nruns ? &M->runs[i] : &F->runs[i];
      snprintf (msg, sizeof msg, "the model has %zu block runs, a fresh scan "
                "%zu; the %s has run %zu more: block %" PRIu64 "+%" PRIu32
                " role %u owner %" PRIu32, M->nruns, F->nruns,
                i < M->nruns ? "model" : "scan", i, r->pblk, r->len, r->role,
                r->owner);
      return msg;
    }
    if (memcmp (&M->runs[i], &F->runs[i], sizeof M->runs[i]) != 0 ||
        M->maxend[i] != F->maxend[i]) {
      snprintf (msg, sizeof msg, "run %zu differs from a fresh scan's: block "
                "%" PRIu64 "+%" PRIu32 " role %u owner %" PRIu32 " vs block %"
                PRIu64 "+%" PRIu32 " role %u owner %" PRIu32, i,
                M->runs[i].pblk, M->runs[i].len, M->runs[i].role,
                M->runs[i].owner, F->runs[i].pblk, F->runs[i].len,
                F->runs[i].role, F->runs[i].owner);
      return msg;
    }
  }
  if (M->ninodes != F->ninodes)
    return "the model's inodes in use differ from a fresh scan's (count)";
  for (size_t i = 0; i < M->ninodes; i++)
    if (memcmp (&M->inodes[i], &F->inodes[i], sizeof M->inodes[i]) != 0) {
      snprintf (msg, sizeof msg, "inode %" PRIu32 " differs from a fresh "
                "scan's", M->inodes[i].ino);
      return msg;
    }
  if (M->nxattrs != F->nxattrs ||
      (M->nxattrs && memcmp (M->xattrs, F->xattrs,
                             M->nxattrs * sizeof *M->xattrs) != 0))
    return "the model's xattr block owners differ from a fresh scan's";
  /* Names, inode by inode, over the children either side has. */
  for (int side = 0; side < 2; side++) {
    const struct fsev_layout *X = side ? M : F;
    for (size_t i = 0; i < X->names.nlinks; i++) {
      uint32_t ino = X->names.links[i].child;
      if (i && X->names.links[i - 1].child == ino)
        continue;
      size_t la, lb;
      char *a = names_key (M, ino, &la), *b = names_key (F, ino, &lb);
      bool same = a && b && la == lb && memcmp (a, b, la) == 0;
      free (a);
      free (b);
      if (!same) {
        snprintf (msg, sizeof msg, "the names of inode %" PRIu32 " differ "
                  "from a fresh scan's (%u in the model, %u in the scan)", ino,
                  names_count (&M->names, ino), names_count (&F->names, ino));
        return msg;
      }
    }
  }
  if (M->names.nlinks != F->names.nlinks)
    return "the model's names differ from a fresh scan's (count)";
  struct fsev_change *ch;
  ssize_t n = fsev_diff (M, F, follow_was_named, vol, &ch);
  if (n > 0)
    free (ch);
  if (n != 0)
    return "the model differs from a fresh scan (namespace diff)";
  return NULL;
}

/* -D fsevent.check=1: the overlay against a fresh replay of the
 * journal from its tail, and the model against a fresh scan.
 */
void
follow_check_model (struct volume *vol)
{
  char err[256];
  struct view raw = { .vol = vol };
  struct jview jv = { .v = &raw, .L = vol->layout };
  struct fsev_overlay *saved = vol->overlay;
  const char *what = NULL;

  vol->overlay = fsev_overlay_new (vol->bs);
  if (vol->overlay == NULL) {
    vol->overlay = saved;
    return;
  }
  if (vol->journalled && vol->js.start != 0 &&
      fsev_jbd2_walk (&vol->js, view_jread, &jv, view_replay_txn, &jv, NULL, NULL) < 0)
    what = "the journal does not replay";
  struct fsev_overlay *fresh = vol->overlay;
  vol->overlay = saved;
  /* Entries must match; blocks already home may be missing from either
   * side only if home holds the same bytes.
   */
  unsigned char a[65536], b[65536];
  for (size_t i = 0; what == NULL && i < saved->n && vol->bs <= sizeof a; i++) {
    const struct fsev_overlay_entry *e = &saved->e[i];
    const struct fsev_overlay_entry *f = fsev_overlay_find (fresh, e->fsblk);
    fsev_overlay_read_entry (saved, e, view_raw, &raw, a);
    if (f)
      fsev_overlay_read_entry (fresh, f, view_raw, &raw, b);
    else
      view_raw (&raw, b, vol->bs, e->fsblk * vol->bs);
    if (memcmp (a, b, vol->bs) != 0)
      what = "the overlay differs from a fresh replay of the journal";
  }
  if (what == NULL) {
    struct view cv = { .vol = vol, .ov = fresh };
    struct fsev_layout *L2 = view_scan (&cv, err, sizeof err);
    if (L2 == NULL)
      what = "the committed view does not scan";
    else {
      what = model_differs (vol, vol->layout, L2);
      fsev_layout_free (L2);
    }
  }
  fsev_overlay_free (fresh);
  if (what) {
    vol->stats.check_failures++;
    nbdkit_error ("%s%.0u%smodel check failed after transaction %" PRIu32
                  ": %s", vol->partition ? "partition " : "", vol->partition,
                  vol->partition ? ": " : "", vol->head_seq - 1, what);
  }
  else
    VDEBUG (vol, "model check passed (%zu overlay blocks)", vol->overlay->n);
}
