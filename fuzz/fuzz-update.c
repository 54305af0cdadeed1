/* fuzz/fuzz-update.c: libFuzzer target for the commit-time model update
 * (fs/layout-update.c, fs/layout-edit.c, fs/layout-subset.c, fs/diff.c):
 * the engine's answer to "these blocks changed" must be what a fresh
 * scan says, and a rollback must give back the model it started from.
 *
 * The input is a list of block patches, then an image (as fuzz-layout's:
 * the head of a small ext2/3/4 image, zeros past it):
 *
 *   u8 n                      patches (n % 33 of them are used)
 *   n x { u16 block, u16 offset, u8 len, len bytes }   little-endian
 *   image
 *
 * The old view is the image, the new one the image with the patches
 * applied; the changed blocks are the patched ones.  The model of the
 * old view is built, updated in place (fsev_update), and then:
 *   - if the update says it is done: a fresh build of the new view must
 *     equal the updated model (runs, maxend, inode records, xattr
 *     owners, names as sets), and the events of fsev_diff on the
 *     update's two small models must be those of fsev_diff between
 *     fresh builds of the two views, in order (kinds, inodes, names,
 *     replaced inodes, attribute bits but the block and xattr ones,
 *     which the update finds by reading the inodes);
 *   - either way, after a rollback the model must equal a fresh build
 *     of the old view.
 * A difference aborts (a finding), as do the sanitizers' reports.
 * FUZZ_UPDATE_DEBUG=1 in the environment says, for a replayed input,
 * what the update answered and what differs.
 */
#include <config.h>

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "diff.h"
#include "layout-internal.h"
#include "layout-update.h"
#include "source.h"

#define MAX_PATCHES 32
#define MAX_DEVICE (64u << 20)

struct patch {
  uint64_t offset;
  uint8_t len;
  const uint8_t *bytes;
};

struct view {
  const uint8_t *image;
  size_t size;                  /* of the image part of the input */
  uint64_t device_size;
  const struct patch *p;        /* NULL: the old view */
  unsigned np;
};

static int
view_read (void *opaque, void *buf, size_t count, uint64_t offset)
{
  const struct view *v = opaque;
  if (offset > v->device_size || count > v->device_size - offset)
    abort ();                   /* source.h: never past SIZE */
  size_t have = offset < v->size ? v->size - offset : 0;
  if (have > count)
    have = count;
  if (have)
    memcpy (buf, v->image + offset, have);
  memset ((char *) buf + have, 0, count - have);
  for (unsigned i = 0; v->p && i < v->np; i++) {
    uint64_t s = v->p[i].offset, e = s + v->p[i].len;
    uint64_t from = s > offset ? s : offset;
    uint64_t to = e < offset + count ? e : offset + count;
    if (from < to)
      memcpy ((char *) buf + (from - offset), v->p[i].bytes + (from - s),
              to - from);
  }
  return 0;
}

static void
quiet (void *opaque, const char *msg)
{
  (void) opaque;
  (void) msg;
}

static struct fsev_layout *
build (struct view *v)
{
  char err[256];
  struct fsev_source src = { .read = view_read, .opaque = v,
                             .size = v->device_size };
  struct fsev_build_options o = { .warn = quiet, .no_allocated_gaps = true };
  return fsev_layout_build (&src, &o, err, sizeof err);
}

/* By child and parent; the names of one (child, parent) group are
 * compared as a multiset below.
 */
static int
cmp_link (const void *a, const void *b)
{
  const struct fsev_link *x = a, *y = b;
  if (x->child != y->child)
    return x->child < y->child ? -1 : 1;
  return x->parent < y->parent ? -1 : x->parent > y->parent;
}

/* The names of A and B as sets of (child, parent, name), whatever order
 * their links were added in.
 */
/* FUZZ_UPDATE_DEBUG: the links of M that N lacks (by child, parent,
 * name; quadratic, for replays only).
 */
static void
show_missing_links (const char *what, const struct fsev_layout *M,
                    const struct fsev_layout *N)
{
  for (size_t i = 0; i < M->names.nlinks; i++) {
    const struct fsev_link *l = &M->names.links[i];
    bool found = false;
    for (size_t j = 0; j < N->names.nlinks && !found; j++) {
      const struct fsev_link *k = &N->names.links[j];
      found = k->child == l->child && k->parent == l->parent &&
        k->name_len == l->name_len &&
        (l->name_len == 0 || memcmp (M->names.pool + l->name_off,
                                     N->names.pool + k->name_off, l->name_len) == 0);
    }
    if (!found)
      fprintf (stderr, "  only in the %s: link %u <- %u \"%.*s\"\n", what,
               l->child, l->parent, (int) l->name_len,
               l->name_len ? M->names.pool + l->name_off : "");
  }
}

static bool
same_names (const struct fsev_layout *A, const struct fsev_layout *B)
{
  if (getenv ("FUZZ_UPDATE_DEBUG")) {
    show_missing_links ("model", A, B);
    show_missing_links ("scan", B, A);
  }
  if (A->names.nlinks != B->names.nlinks)
    return false;
  size_t n = A->names.nlinks;
  struct fsev_link *a = malloc ((n ? n : 1) * sizeof *a);
  struct fsev_link *b = malloc ((n ? n : 1) * sizeof *b);
  if (a == NULL || b == NULL) {
    free (a);
    free (b);
    return true;                /* no memory: nothing to say */
  }
  memcpy (a, A->names.links, n * sizeof *a);
  memcpy (b, B->names.links, n * sizeof *b);
  qsort (a, n, sizeof *a, cmp_link);
  qsort (b, n, sizeof *b, cmp_link);
  bool same = true;
  for (size_t i = 0; i < n && same; i++) {
    /* Links of one (child, parent) may come in any order: compare the
     * group's names as multisets by trying every pairing.
     */
    size_t j = i;
    while (j < n && a[j].child == a[i].child && a[j].parent == a[i].parent)
      j++;
    for (size_t k = i; k < j && same; k++) {
      if (b[k].child != a[i].child || b[k].parent != a[i].parent) {
        same = false;
        break;
      }
      bool found = false;
      for (size_t m = i; m < j && !found; m++)
        found = a[k].name_len == b[m].name_len &&
          memcmp (A->names.pool + a[k].name_off, B->names.pool + b[m].name_off,
                  a[k].name_len) == 0;
      same = found;
    }
    i = j - 1;
  }
  free (a);
  free (b);
  return same;
}

static bool
same_model (const struct fsev_layout *A, const struct fsev_layout *B)
{
  bool dbg = getenv ("FUZZ_UPDATE_DEBUG") != NULL;
  if (dbg && A->names.nlinks != B->names.nlinks)
    fprintf (stderr, "fuzz-update: links %zu/%zu\n", A->names.nlinks,
             B->names.nlinks);
  if (A->nruns != B->nruns || A->ninodes != B->ninodes ||
      A->nxattrs != B->nxattrs) {
    if (dbg) {
      fprintf (stderr, "fuzz-update: counts: runs %zu/%zu inodes %zu/%zu "
               "xattrs %zu/%zu\n", A->nruns, B->nruns, A->ninodes,
               B->ninodes, A->nxattrs, B->nxattrs);
      for (size_t i = 0, j = 0; i < A->ninodes || j < B->ninodes; ) {
        uint32_t a = i < A->ninodes ? A->inodes[i].ino : UINT32_MAX;
        uint32_t b = j < B->ninodes ? B->inodes[j].ino : UINT32_MAX;
        if (a == b) { i++; j++; continue; }
        fprintf (stderr, "  inode %u only in the %s\n", a < b ? a : b,
                 a < b ? "model" : "scan");
        if (a < b) i++; else j++;
      }
    }
    return false;
  }
  for (size_t i = 0; i < A->nruns; i++)
    if (memcmp (&A->runs[i], &B->runs[i], sizeof A->runs[i]) != 0 ||
        A->maxend[i] != B->maxend[i]) {
      if (dbg)
        fprintf (stderr, "fuzz-update: run %zu: %llu+%u role %u owner %u aux %u "
                 "flags %u / %llu+%u role %u owner %u aux %u flags %u; maxend "
                 "%llu/%llu\n", i,
                 (unsigned long long) A->runs[i].pblk, A->runs[i].len,
                 A->runs[i].role, A->runs[i].owner, A->runs[i].aux,
                 A->runs[i].flags, (unsigned long long) B->runs[i].pblk,
                 B->runs[i].len, B->runs[i].role, B->runs[i].owner,
                 B->runs[i].aux, B->runs[i].flags,
                 (unsigned long long) A->maxend[i], (unsigned long long) B->maxend[i]);
      return false;
    }
  if (A->ninodes &&
      memcmp (A->inodes, B->inodes, A->ninodes * sizeof *A->inodes) != 0)
    return false;
  if (A->nxattrs &&
      memcmp (A->xattrs, B->xattrs, A->nxattrs * sizeof *A->xattrs) != 0)
    return false;
  return same_names (A, B);
}

/* --- The events: the delta's against a whole diff. --- */

/* What an event says, with paths rather than link indexes (the small
 * models and the whole ones number their names differently).  The
 * block and xattr bits are left out: the commit-time update finds
 * them by reading the inodes, a whole diff from the runs (the plugin
 * documents the difference).
 */
#define PATH_MAX_LEN 1024

struct said {
  int kind;
  uint32_t ino, replaced;
  unsigned changed;
  bool reused;
  char old_path[PATH_MAX_LEN], new_path[PATH_MAX_LEN];   /* "": none */
};

static void
path_of (const struct fsev_layout *M, uint32_t ino, int link, char *buf)
{
  buf[0] = 0;
  if (link >= 0 && fsev_layout_path (M, ino, link, buf, PATH_MAX_LEN) <= 0)
    strcpy (buf, "?");
}

static size_t
said_of (const struct fsev_layout *A, const struct fsev_layout *B,
         const struct fsev_change *ch, size_t n, struct said *out)
{
  size_t k = 0;
  for (size_t i = 0; i < n; i++) {
    unsigned changed = ch[i].changed & ~(FSEV_ATTR_BLOCKS | FSEV_ATTR_XATTR);
    if (ch[i].kind == FSEV_SET_ATTRIBUTES && changed == 0)
      continue;
    struct said *s = &out[k++];
    s->kind = ch[i].kind, s->ino = ch[i].ino, s->replaced = ch[i].replaced_ino;
    s->changed = changed, s->reused = ch[i].reused;
    path_of (A, ch[i].ino, ch[i].old_link, s->old_path);
    path_of (B, ch[i].ino, ch[i].new_link, s->new_path);
  }
  return k;
}

/* Is PATH a path of INO in M? */
static bool
has_path (const struct fsev_layout *M, uint32_t ino, const char *path)
{
  char buf[PATH_MAX_LEN];
  int n = fsev_layout_path (M, ino, 0, buf, sizeof buf);
  for (int i = 0; i < n; i++)
    if (fsev_layout_path (M, ino, i, buf, sizeof buf) > 0 &&
        strcmp (buf, path) == 0)
      return true;
  return false;
}

/* X (the delta's) says what Y (the whole diff's) says.  An inode with
 * several names may be named by another of them (which one is the
 * first depends on the model's order): any path it has on that side
 * will do.
 */
static bool
same_said (const struct said *x, const struct said *y,
           const struct fsev_layout *O, const struct fsev_layout *F)
{
  if (x->kind != y->kind || x->ino != y->ino || x->replaced != y->replaced ||
      x->changed != y->changed || x->reused != y->reused ||
      !x->old_path[0] != !y->old_path[0] || !x->new_path[0] != !y->new_path[0])
    return false;
  return (strcmp (x->old_path, y->old_path) == 0 ||
          has_path (O, x->ino, x->old_path)) &&
    (strcmp (x->new_path, y->new_path) == 0 ||
     has_path (F, x->ino, x->new_path));
}

static void
show_said (const char *who, const struct said *s)
{
  fprintf (stderr, "  %s: kind %d ino %u \"%s\" -> \"%s\" replaced %u "
           "changed %#x%s\n", who, s->kind, s->ino, s->old_path, s->new_path,
           s->replaced, s->changed, s->reused ? " reused" : "");
}

/* The events of the delta (the small models) must be those of a whole
 * diff between fresh scans of the two views, in the same order.
 */
static bool
same_events (const struct fsev_layout *A, const struct fsev_layout *B,
             const struct fsev_layout *O, const struct fsev_layout *F)
{
  struct fsev_change *cd = NULL, *cf = NULL;
  ssize_t nd = fsev_diff (A, B, NULL, NULL, &cd);
  ssize_t nf = fsev_diff (O, F, NULL, NULL, &cf);
  bool same = true;
  if (nd >= 0 && nf >= 0) {
    struct said *sd = calloc (nd + 1, sizeof *sd), *sf = calloc (nf + 1, sizeof *sf);
    if (sd && sf) {
      size_t kd = said_of (A, B, cd, nd, sd), kf = said_of (O, F, cf, nf, sf);
      same = kd == kf;
      for (size_t i = 0; same && i < kd; i++)
        same = same_said (&sd[i], &sf[i], O, F);
      if (!same && getenv ("FUZZ_UPDATE_DEBUG")) {
        fprintf (stderr, "fuzz-update: events: %zu from the delta, %zu from "
                 "a whole diff\n", kd, kf);
        for (size_t i = 0; i < kd; i++)
          show_said ("delta", &sd[i]);
        for (size_t i = 0; i < kf; i++)
          show_said ("whole", &sf[i]);
      }
    }
    free (sd);
    free (sf);
  }
  if (nd > 0)
    free (cd);
  if (nf > 0)
    free (cf);
  return same;
}

int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
  if (size < 1)
    return 0;
  unsigned n = data[0] % (MAX_PATCHES + 1);
  size_t pos = 1;
  struct patch p[MAX_PATCHES];
  uint16_t blocks[MAX_PATCHES], offs[MAX_PATCHES];
  unsigned np = 0;
  for (unsigned i = 0; i < n; i++) {
    if (pos + 5 > size)
      return 0;
    blocks[np] = (uint16_t) (data[pos] | data[pos + 1] << 8);
    offs[np] = (uint16_t) (data[pos + 2] | data[pos + 3] << 8);
    uint8_t len = data[pos + 4];
    pos += 5;
    if (pos + len > size)
      return 0;
    p[np] = (struct patch) { .len = len, .bytes = data + pos };
    pos += len;
    np++;
  }
  struct view old = { .image = data + pos, .size = size - pos };
  if (old.size < 2048)
    return 0;
  /* The device: what the superblock says, bounded. */
  const uint8_t *sb = old.image + 1024;
  uint32_t log_bs = sb[24] | sb[25] << 8 | sb[26] << 16 | (uint32_t) sb[27] << 24;
  uint32_t blocks_lo = sb[4] | sb[5] << 8 | sb[6] << 16 | (uint32_t) sb[7] << 24;
  if (log_bs > 6)
    return 0;
  uint64_t bs = 1024u << log_bs, dev = (uint64_t) blocks_lo * bs;
  if (dev > MAX_DEVICE)
    return 0;
  if (dev < old.size)
    dev = old.size;
  old.device_size = dev;
  uint64_t changed[2 * MAX_PATCHES];   /* a patch may cross a block end */
  unsigned nchanged = 0;
  for (unsigned i = 0; i < np; i++) {
    p[i].offset = (uint64_t) blocks[i] * bs + offs[i] % bs;
    if (p[i].offset + p[i].len > dev)
      p[i].len = p[i].offset >= dev ? 0 : (uint8_t) (dev - p[i].offset);
    changed[nchanged++] = p[i].offset / bs;
    if (p[i].len && (p[i].offset + p[i].len - 1) / bs != p[i].offset / bs)
      changed[nchanged++] = (p[i].offset + p[i].len - 1) / bs;
  }
  struct view neu = old;
  neu.p = p;
  neu.np = np;

  struct fsev_layout *L = build (&old);
  if (L == NULL) {
    if (getenv ("FUZZ_UPDATE_DEBUG"))
      fprintf (stderr, "fuzz-update: the old view does not build\n");
    return 0;
  }
  char err[256];
  struct fsev_source src_old = { .read = view_read, .opaque = &old, .size = dev };
  struct fsev_source src_new = { .read = view_read, .opaque = &neu, .size = dev };
  struct fsev_updater *u = fsev_updater_open (L, &src_old, err, sizeof err);
  if (u == NULL) {
    if (getenv ("FUZZ_UPDATE_DEBUG"))
      fprintf (stderr, "fuzz-update: updater: %s\n", err);
    fsev_layout_free (L);
    return 0;
  }
  struct fsev_update up;
  enum fsev_update_result r = fsev_update (L, u, &src_old, &src_new, changed,
                                           nchanged, 0, &up, err, sizeof err);
  if (getenv ("FUZZ_UPDATE_DEBUG"))
    fprintf (stderr, "fuzz-update: %u patches: %s%s\n"
             "  blocks %zu inodes %zu dirs %zu undo %zu\n", np,
             r == FSEV_UPDATE_DONE ? "done"
             : r == FSEV_UPDATE_RESCAN ? "rescan: " : "no memory",
             r == FSEV_UPDATE_RESCAN ? err : "",
             up.blocks, up.inodes, up.dirs, up.undo.n);
  if (r == FSEV_UPDATE_DONE) {
    struct fsev_layout *F = build (&neu);
    if (F && !same_model (L, F))
      abort ();                 /* the update is not what a scan says */
    struct fsev_layout *O = F ? build (&old) : NULL;
    if (O && !same_events (up.before, up.after, O, F))
      abort ();                 /* the delta's events are not a diff's */
    fsev_layout_free (O);
    fsev_layout_free (F);
    fsev_update_rollback (L, &up);
  }
  /* Rolled back (or never changed): the old model again. */
  struct fsev_layout *O = build (&old);
  if (O && !same_model (L, O))
    abort ();
  fsev_layout_free (O);
  fsev_updater_close (u);
  fsev_layout_free (L);
  return 0;
}
