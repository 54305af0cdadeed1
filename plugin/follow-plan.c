/* plugin/follow-plan.c: deciding a commit point: the next model
 * (updated in place by fs/layout-update.c, or scanned), the events that
 * follow from it (namespace changes from the diff of the touched
 * inodes, new data from the pending bytes the new model gives to files,
 * data=journal copies), the handlers' before phase, and after the I/O,
 * the plan taking effect (or being rolled back) and the after phase.
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

struct item *
plan_new_item (struct follow_plan *p)
{
  if (fsev_grow ((void **) &p->items, &p->cap, p->n + 1, sizeof *p->items) == -1) {
    p->oom = true;
    return NULL;
  }
  struct item *it = &p->items[p->n++];
  memset (it, 0, sizeof *it);
  return it;
}

void
plan_free (struct follow_plan *p)
{
  if (p == NULL)
    return;
  fsev_journal_place_free (p->journal_before);
  if (p->updated)
    fsev_update_rollback (p->vol->layout, &p->up);
  else
    free (p->up.extra);         /* found after a full scan */
  for (size_t i = 0; i < p->nheld; i++)
    free (p->held[i].data);
  free (p->held);
  for (size_t i = 0; i < p->n; i++) {
    free (p->items[i].names);
    free (p->items[i].file);
    free (p->items[i].new_file);
    free (p->items[i].data);
  }
  free (p->items);
  free (p->track);
  fsev_overlay_free (p->ov);
  fsev_layout_free (p->L);
  pending_free (&p->kept);
  free (p);
}

static void
plan_set_attrs (struct fsevent_attributes *a, const struct fsev_inode *i)
{
  if (i == NULL)
    return;
  *a = (struct fsevent_attributes) {
    .mode = i->mode, .uid = i->uid, .gid = i->gid, .flags = i->flags,
    .links = i->links, .size = i->size,
    .atime = { i->atime, i->atime_ns }, .mtime = { i->mtime, i->mtime_ns },
    .ctime = { i->ctime, i->ctime_ns }, .crtime = { i->crtime, i->crtime_ns },
  };
}

/* A namespace change as an event item. */
static void
plan_add_change (struct follow_plan *p, const struct fsev_layout *A,
            const struct fsev_layout *B, const struct fsev_change *ch)
{
  struct item *it = plan_new_item (p);
  if (it == NULL)
    return;
  it->is_change = true;
  it->rank = fsev_change_rank (ch->kind);
  struct fsevent_change *c = &it->c;
  *c = (struct fsevent_change) {
    .struct_size = sizeof *c,
    .phase = FSEVENT_BEFORE,
    .partition = p->vol->partition,
    .ino = ch->ino,
    .replaced_ino = ch->replaced_ino,
    .changed = ch->changed,
    .timestamps_only = ch->kind == FSEV_SET_ATTRIBUTES &&
      (ch->changed & ~FSEV_ATTR_TIMES) == 0,
    .sequence = p->sequence,
    .handle_info = &p->conn->info,
  };
  switch (ch->kind) {
  case FSEV_CREATE: c->kind = FSEVENT_CREATE; break;
  case FSEV_DELETE: c->kind = FSEVENT_DELETE; break;
  case FSEV_LINK: c->kind = FSEVENT_LINK; break;
  case FSEV_UNLINK: c->kind = FSEVENT_UNLINK; break;
  case FSEV_RENAME: c->kind = FSEVENT_RENAME; break;
  case FSEV_SET_SIZE: c->kind = FSEVENT_SET_SIZE; break;
  case FSEV_SET_ATTRIBUTES: c->kind = FSEVENT_SET_ATTRIBUTES; break;
  }
  plan_set_attrs (&c->old_attributes, ch->old_inode);
  plan_set_attrs (&c->attributes, ch->new_inode);

  /* Paths: a new name is found in the new model, an old one in the old. */
  switch (ch->kind) {
  case FSEV_CREATE:
    it->names = paths_of (B, ch->ino);
    it->file = path_of_link (B, ch->ino, ch->new_link);
    break;
  case FSEV_LINK:
    it->names = paths_of (B, ch->ino);
    it->file = fsev_layout_names (A, ch->ino, NULL, 0) && ch->old_inode
      ? path_of_link (A, ch->ino, 0) : path_of_link (B, ch->ino, 0);
    it->new_file = path_of_link (B, ch->ino, ch->new_link);
    break;
  case FSEV_RENAME:
    it->names = paths_of (A, ch->ino);
    it->file = path_of_link (A, ch->ino, ch->old_link);
    it->new_file = path_of_link (B, ch->ino, ch->new_link);
    break;
  case FSEV_UNLINK:
  case FSEV_DELETE:
    it->names = paths_of (A, ch->ino);
    it->file = path_of_link (A, ch->ino, ch->old_link);
    it->freed_inode = ch->kind == FSEV_DELETE;
    break;
  case FSEV_SET_SIZE:
  case FSEV_SET_ATTRIBUTES:
    /* Named before (or, for a new file, only now). */
    if (ch->old_link >= 0 || ch->new_link < 0) {
      it->names = paths_of (A, ch->ino);
      it->file = path_of_link (A, ch->ino, ch->old_link);
    }
    else {
      it->names = paths_of (B, ch->ino);
      it->file = path_of_link (B, ch->ino, ch->new_link);
    }
    break;
  }
  if (it->names == NULL || it->file == NULL ||
      ((ch->kind == FSEV_LINK || ch->kind == FSEV_RENAME) && it->new_file == NULL)) {
    p->oom = true;
    return;
  }
  c->file_name = it->file;
  c->file_names = (const char *const *) it->names;
  c->new_file_name = it->new_file;
  if (ch->replaced_ino)
    c->replaced_file_name = it->new_file;
}

/* New data given to a file at this commit: one event per contiguous
 * (inode, position) range.
 */
static void
plan_add_data (struct follow_plan *p, const struct fsev_layout *B,
          enum fsevent_direction dir, uint32_t ino, uint64_t position,
          uint64_t offset, uint64_t length)
{
  offset += p->vol->offset;     /* events carry device offsets */
  if (p->n > 0) {
    struct item *last = &p->items[p->n - 1];
    struct fsevent_write *w = &last->w;
    if (!last->is_change && w->direction == dir && w->ino == ino &&
        w->device_offset + w->bytes_to_write == offset &&
        w->position + w->bytes_to_write == position) {
      w->bytes_to_write += length;
      return;
    }
  }
  struct item *it = plan_new_item (p);
  if (it == NULL)
    return;
  it->rank = 4;
  it->w = (struct fsevent_write) {
    .struct_size = sizeof it->w,
    .phase = FSEVENT_BEFORE,
    .direction = dir,
    .operation = FSEVENT_OP_WRITE,
    .partition = p->vol->partition,
    .ino = ino,
    .position = position,
    .bytes_to_write = length,
    .device_offset = offset,
    .sequence = p->sequence,
    .handle_info = &p->conn->info,
  };
  it->names = paths_of (B, ino);
  if (it->names == NULL) {
    p->oom = true;
    return;
  }
  it->w.file_name = it->names[0] ? it->names[0] : "";
  it->w.file_names = (const char *const *) it->names;
}

/* Pending bytes that the new model B gives to files become commit
 * events; what is still free stays pending.
 */
struct sift {
  struct follow_plan *p;
  const struct fsev_layout *B;
};

static int
sift_segment (const struct fsev_segment *seg, void *opaque)
{
  struct sift *s = opaque;
  struct follow_plan *p = s->p;
  if (seg->role == FSEV_ROLE_FREE) {
    if (pending_add (&p->kept, seg->offset, seg->length) == -1)
      p->oom = true;
  }
  else if (seg->role == FSEV_ROLE_DATA && !(seg->flags & FSEV_SEG_BEYOND_EOF) &&
           !(seg->flags & FSEV_SEG_DUP)) {
    plan_add_data (p, s->B, FSEVENT_COMMIT, seg->ino, seg->position, seg->offset,
              seg->length);
  }
  /* Anything else (metadata, past the end of a file) is owned now but
   * is no file data: nothing to attribute.
   */
  return 0;
}

/* Logged data blocks (data=journal) that B gives to files. */
struct jdata {
  struct follow_plan *p;
  const struct fsev_layout *B;
};

static int
jdata_segment (const struct fsev_segment *seg, void *opaque)
{
  struct jdata *j = opaque;
  if (seg->role == FSEV_ROLE_DATA && !(seg->flags & FSEV_SEG_BEYOND_EOF) &&
      !(seg->flags & FSEV_SEG_DUP))
    plan_add_data (j->p, j->B, FSEVENT_JOURNAL, seg->ino, seg->position,
              seg->offset, seg->length);
  return 0;
}

/* Find and parse the transaction whose commit block for SEQ is at
 * journal block CJBLK.  Normally it starts where the last one ended;
 * otherwise (first transaction after mount) walk back to its start.
 */
bool
plan_undecided (struct follow_plan *p, const char *why)
{
  /* Fail closed: a change nobody could look at is refused while anyone
   * is looking (on-unparseable=allow lets it through, for guests that
   * run mkfs or resize2fs).
   */
  struct volume *vol = p->vol;
  bool refuse = handlers_active () && !follow_allow_unparseable;
  VDEBUG (vol, "%s: %s", why, refuse ? "refused (EIO)"
          : "let through, the model stays as it was");
  vol->stats.undecided++;
  p->undecidable = true;
  struct log_batch lb;
  log_batch_init (&lb);
  log_undecided (&lb, vol->partition, p->sequence, why, refuse ? EIO : 0);
  log_commit (&lb);
  return refuse;
}

/* fsev_diff_extra's callbacks: the volume's announced names, and what
 * the update (or the comparison of whole models) found beyond records.
 */
struct extra_ctx {
  struct volume *vol;
  const struct fsev_update *up;
};

static bool
was_named_x (uint32_t ino, void *opaque)
{
  const struct extra_ctx *x = opaque;
  return follow_was_named (ino, x->vol);
}

static unsigned
extra_of (uint32_t ino, void *opaque)
{
  const struct extra_ctx *x = opaque;
  return fsev_update_extra (x->up, ino);
}

/* Decide a commit point: the model for the view CV (from OLDV, the
 * committed view now, through the blocks PR names), and the events the
 * change carries, in P.  0 or an errno.
 */
int
plan_decide (struct follow_plan *p, struct prep *pr, struct view *oldv,
        struct view *cv)
{
  struct volume *vol = p->vol;
  /* The next model: updated in place from what changed, or (when the
   * update cannot follow the change) scanned.  A and B are what the
   * diff compares: the touched inodes before and after, or the whole
   * models; NEXT is the whole next model, for lookups.
   */
  const struct fsev_layout *A = NULL, *B = NULL, *next = NULL;
  if (fsevent_debug_commit_timing)
    p->t_read = follow_now_ns ();
  if (pr->ntxns || pr->meta_changed || pr->rescan) {
    char msg[256] = "";
    /* Freed by plan_free on every way out. */
    fsev_journal_place_free (p->journal_before);
    p->journal_before = fsev_layout_journal_place (vol->layout);
    if (p->journal_before == NULL)
      return ENOMEM;
    uint64_t size = fsev_layout_fs_bytes (vol->layout);
    struct fsev_source src_old = { .read = view_committed, .opaque = oldv, .size = size };
    struct fsev_source src_new = { .read = view_committed, .opaque = cv, .size = size };
    if (!pr->rescan && vol->updater == NULL && !vol->no_updater) {
      vol->updater = fsev_updater_open (vol->layout, &src_old, msg, sizeof msg);
      if (vol->updater == NULL) {
        vol->no_updater = true;
        VDEBUG (vol, "commits are followed by full scans: %s", msg);
      }
    }
    if (!pr->rescan && vol->updater) {
      switch (fsev_update (vol->layout, vol->updater, &src_old, &src_new,
                           pr->blocks, pr->nblocks,
                           /* a scan of a small filesystem is cheap, but
                              not free: its diff and extras cost too */
                           vol->layout->stats.build_seconds > 0.01
                           ? vol->layout->stats.build_seconds : 0.01,
                           &p->up, msg, sizeof msg)) {
      case FSEV_UPDATE_DONE:
        p->updated = true;
        if (fsevent_debug_commit_timing)
          VDEBUG (vol, "commit: %zu blocks changed, %zu inodes re-mapped "
                  "(%u %u %u %u %u %u %u %u), %zu directories read",
                  p->up.blocks, p->up.inodes, p->up.first_inos[0],
                  p->up.first_inos[1], p->up.first_inos[2],
                  p->up.first_inos[3], p->up.first_inos[4],
                  p->up.first_inos[5], p->up.first_inos[6],
                  p->up.first_inos[7], p->up.dirs);
        A = p->up.before;
        B = p->up.after;
        next = vol->layout;
        break;
      case FSEV_UPDATE_NOMEM:
        return ENOMEM;
      case FSEV_UPDATE_RESCAN:
        pr->rescan = true;
        VDEBUG (vol, "commit: %s: full scan", msg);
        break;
      }
    }
    else if (pr->meta_changed || pr->ntxns)
      pr->rescan = true;
    if (pr->rescan) {
      vol->stats.rescans++;
      p->L = view_scan (cv, msg, sizeof msg);
      if (p->L == NULL) {
        char why[320];
        snprintf (why, sizeof why, "the committed view does not parse: %s", msg);
        if (plan_undecided (p, why))
          return EIO;
      }
      else if (fsev_layout_fs_bytes (p->L) > vol->length) {
        /* A resize past the end of what is served. */
        fsev_layout_free (p->L);
        p->L = NULL;
        if (plan_undecided (p, "the filesystem grew past the end of its "
                            "volume"))
          return EIO;
      }
      else if (fsev_layout_journal_ino (p->L) != fsev_layout_journal_ino (vol->layout) ||
               fsev_layout_journal_pblk (p->L, 0) != fsev_layout_journal_pblk (vol->layout, 0)) {
        /* The journal itself moved: what it holds would be replayed
         * unseen.  (Following a new journal is not done.)
         */
        fsev_layout_free (p->L);
        p->L = NULL;
        if (plan_undecided (p, "the journal moved to another inode or place"))
          return EIO;
      }
      else {
        A = vol->layout;
        B = next = p->L;
      }
    }
  }
  if (p->journal_before && next &&
      !fsev_journal_place_same (p->journal_before, next)) {
    /* The journal inode's blocks changed, however the update got there
     * (in place or by a scan): a journal that appeared where there was
     * none, or moved, would be replayed by recovery unseen.  (Found by
     * fuzz-follow: an ext3 image whose journal inode had no blocks,
     * given some at a flush, then a transaction logged in them.)
     */
    if (p->updated) {
      fsev_update_rollback (vol->layout, &p->up);
      p->updated = false;
    }
    fsev_layout_free (p->L);
    p->L = NULL;
    if (plan_undecided (p, "the journal's inode or blocks changed (a "
                        "journal that moves or appears is not followed)"))
      return EIO;
    return 0;                   /* let through: the model stays as it was */
  }
  if (fsevent_debug_commit_timing)
    p->t_update = follow_now_ns ();
  if (next) {
    /* Namespace changes. */
    struct fsev_change *ch;
    if (p->L && fsev_extra_from_models (A, B, &p->up) == -1)
      return ENOMEM;
    /* And what the whole models do not hold (inline content, xattr
     * content), from the blocks that changed: a transaction big enough
     * to be scanned must not hide a protected file's new label.
     */
    uint64_t size = fsev_layout_fs_bytes (vol->layout);
    struct fsev_source c_old = { .read = view_committed, .opaque = oldv, .size = size };
    struct fsev_source c_new = { .read = view_committed, .opaque = cv, .size = size };
    if (p->L && fsev_extra_from_content (A, B, &c_old, &c_new, pr->blocks,
                                         pr->nblocks, &p->up) == -1)
      return ENOMEM;
    struct extra_ctx xc = { vol, &p->up };
    ssize_t nch = fsev_diff_extra (A, B, was_named_x, extra_of, &xc, &ch);
    if (nch < 0)
      return ENOMEM;
    ssize_t i = 0;
    for (; i < nch && (ch[i].reused || fsev_change_rank (ch[i].kind) < 4); i++)
      plan_add_change (p, A, B, &ch[i]);
    /* New data: pending bytes the new model gives to files. */
    pthread_mutex_lock (&vol->pending_lock);
    pending_normalise (&vol->pending);
    struct sift s = { p, next };
    for (size_t k = 0; k < vol->pending.n && !p->oom; k++)
      fsev_layout_lookup (next, vol->pending.v[k].offset, vol->pending.v[k].length,
                          sift_segment, &s);
    pthread_mutex_unlock (&vol->pending_lock);
    p->have_kept = true;
    /* Logged data (data=journal). */
    struct jdata jd = { p, next };
    for (size_t t = 0; t < pr->ntxns; t++)
      for (size_t k = 0; k < pr->txns[t].ntags; k++) {
        const struct fsev_jtag *tag = &pr->txns[t].tags[k];
        if (tag->csum_ok && tag->fsblk < next->fs_blocks)
          fsev_layout_lookup (next, tag->fsblk * vol->bs, vol->bs, jdata_segment, &jd);
      }
    for (; i < nch; i++)
      plan_add_change (p, A, B, &ch[i]);
    free (ch);
  }
  if (p->oom)
    return ENOMEM;
  if (fsevent_debug_commit_timing)
    p->t_decided = follow_now_ns ();

  /* Handlers that read data get the bytes: read back from the image
   * (pending data is there already) or from the journal's copies.
   */
  if (handlers_want_data ()) {
    for (size_t k = 0; k < p->n; k++) {
      struct item *it = &p->items[k];
      if (it->is_change || it->w.bytes_to_write > (64u << 20))
        continue;               /* huge ranges: no buffer (documented) */
      it->data = malloc (it->w.bytes_to_write ? it->w.bytes_to_write : 1);
      if (it->data == NULL)
        return ENOMEM;
      if (view_committed (cv, it->data, it->w.bytes_to_write,
                          it->w.device_offset - vol->offset) == -1)
        return EIO;
      it->w.buffer = it->data;
    }
  }
  return 0;
}

/* ext2: hold the metadata blocks of IO that PR found back in the epoch
 * (their content: the held copy or the image, with IO on top).  The
 * epoch's room is made here, so taking them in after the I/O cannot
 * fail.  0 or an errno.
 */
int
plan_hold (struct follow_plan *p, struct prep *pr, const struct io *io)
{
  struct volume *vol = p->vol;
  struct view img = { .vol = vol };
  for (size_t i = 0; i < pr->nblocks; i++) {
    uint64_t b = pr->blocks[i];
    if (p->nheld && p->held[p->nheld - 1].fsblk >= b)
      continue;                 /* blocks come in order, maybe twice */
    size_t cap = p->nheld;
    if (fsev_grow ((void **) &p->held, &cap, p->nheld + 1, sizeof *p->held) == -1)
      return ENOMEM;
    unsigned char *data = malloc (vol->bs);
    if (data == NULL)
      return ENOMEM;
    const unsigned char *cur = epoch_get (&vol->epoch, b);
    if (cur)
      memcpy (data, cur, vol->bs);
    else if (view_raw (&img, data, vol->bs, b * vol->bs) == -1) {
      free (data);
      return EIO;
    }
    uint64_t from = b * vol->bs > io->offset ? b * vol->bs : io->offset;
    uint64_t to = (b + 1) * vol->bs < io->offset + io->count
      ? (b + 1) * vol->bs : io->offset + io->count;
    if (from < to)
      io_new_bytes (io, data + (from - b * vol->bs), from, to - from);
    p->held[p->nheld++] = (struct epoch_block) { .fsblk = b, .data = data };
  }
  /* Room for all of them in the epoch now. */
  size_t cap = vol->epoch.cap;
  if (fsev_grow ((void **) &vol->epoch.v, &cap, vol->epoch.n + p->nheld,
                 sizeof *vol->epoch.v) == -1)
    return ENOMEM;
  vol->epoch.cap = cap;
  return 0;
}

struct follow_plan *
follow_prepare (struct volume *vol, const struct io *io, struct conn *conn,
                int *err)
{
  struct follow_plan *p = calloc (1, sizeof *p);
  if (p == NULL) {
    *err = ENOMEM;
    return NULL;
  }
  p->vol = vol;
  p->conn = conn;
  if (fsevent_debug_commit_timing)
    p->t_start = follow_now_ns ();
  struct vcache vc = { .vol = vol };
  struct view raw = { .vol = vol, .io = io, .cache = &vc };
  struct prep pr = { .p = p, .io = io, .jv = { .v = &raw, .L = vol->layout } };

  /* Journal blocks the overlay still needs get copies before the guest
   * overwrites them (the old content: the image without this request).
   */
  struct view old = { .vol = vol, .cache = &vc };
  if (fsev_overlay_refers (vol->overlay, io->offset, io->count) &&
      fsev_overlay_materialize (vol->overlay, view_raw, &old, io->offset,
                                io->count) == -1)
    goto oom;

  fsev_layout_lookup (vol->layout, io->offset, io->count, prep_segment, &pr);
  if (pr.oom || p->oom)
    goto oom;
  /* Where its transactions lie, for the volume's tracked list. */
  if (pr.ntxns) {
    p->track = malloc (pr.ntxns * sizeof *p->track);
    if (p->track == NULL)
      goto oom;
    for (size_t t = 0; t < pr.ntxns; t++)
      p->track[t] = (struct jtrack) { pr.txns[t].sequence, pr.txns[t].start,
                                      pr.txns[t].next };
    p->ntrack = pr.ntxns;
  }

  int e;
  if (pr.refuse_why && plan_undecided (p, pr.refuse_why))
    e = EIO;
  else if (!vol->journalled && pr.meta_changed)
    e = plan_hold (p, &pr, io);      /* decided at the guest's flush */
  else {
    struct view oldv = { .vol = vol, .ov = vol->overlay, .cache = &vc };
    struct view cv = { .vol = vol, .io = io,
                       .ov = p->ov ? p->ov : vol->overlay, .cache = &vc };
    e = plan_decide (p, &pr, &oldv, &cv);
  }
  vcache_free (&vc);
  for (size_t t = 0; t < pr.ntxns; t++)
    fsev_jtxn_free (&pr.txns[t]);
  free (pr.txns);
  free (pr.blocks);
  if (e) {
    if (e == ENOMEM)
      nbdkit_error ("out of memory while following the filesystem");
    plan_free (p);
    *err = e;
    return NULL;
  }
  return p;

 oom:
  vcache_free (&vc);
  for (size_t t = 0; t < pr.ntxns; t++)
    fsev_jtxn_free (&pr.txns[t]);
  free (pr.txns);
  free (pr.blocks);
  plan_free (p);
  nbdkit_error ("out of memory while following the journal");
  *err = ENOMEM;
  return NULL;
}

bool
follow_plan_commits (const struct follow_plan *p)
{
  return p && (p->ntxns || p->updated || p->L);
}

void
follow_plan_discard (struct follow_plan *p)
{
  plan_free (p);
}

/* Would the plan change a range a host tool has locked?  New data in
 * it, a size change below its end, the file's unlink or deletion, or a
 * rename or link replacing it.  A rename of the locked file itself is
 * fine: the lock follows the inode.
 */
bool
follow_plan_locked (const struct follow_plan *p, uint64_t *id)
{
  for (size_t i = 0; i < p->n; i++) {
    const struct item *it = &p->items[i];
    if (!it->is_change) {
      if (locks_covers (p->vol->partition, it->w.ino, it->w.position,
                        it->w.position + it->w.bytes_to_write, id))
        return true;
      continue;
    }
    const struct fsevent_change *c = &it->c;
    uint64_t lo;
    switch (c->kind) {
    case FSEVENT_SET_SIZE:
      lo = c->old_attributes.size < c->attributes.size
        ? c->old_attributes.size : c->attributes.size;
      if (locks_covers (p->vol->partition, c->ino, lo, LOCK_TO_EOF, id))
        return true;
      break;
    case FSEVENT_UNLINK:
    case FSEVENT_DELETE:
      if (locks_covers (p->vol->partition, c->ino, 0, LOCK_TO_EOF, id))
        return true;
      break;
    default:
      break;
    }
    if (c->replaced_ino && locks_covers (p->vol->partition, c->replaced_ino, 0, LOCK_TO_EOF, id))
      return true;
  }
  return false;
}

int
follow_plan_before (struct follow_plan *p, struct log_batch *lb)
{
  if (p == NULL)
    return 0;
  for (size_t i = 0; i < p->n; i++) {
    struct item *it = &p->items[i];
    int veto;
    if (it->is_change) {
      handlers_before_change (&it->c, p->conn->contexts);
      veto = it->c.result_code;
      log_change (lb, &it->c);
    }
    else {
      handlers_before_write (&it->w, p->conn->contexts);
      veto = it->w.result_code;
      log_event (lb, &it->w);
    }
    p->decided = i + 1;
    if (veto) {
      VDEBUG (p->vol, "transaction %" PRIu64 " vetoed at %s of %s: %s",
              p->sequence,
              it->is_change ? log_change_name (it->c.kind) : "write",
              it->is_change ? it->c.file_name : it->w.file_name,
              strerror (veto));
      return veto;
    }
  }
  return 0;
}

void
follow_plan_finish (struct follow_plan *p, struct log_batch *lb, int status)
{
  if (p == NULL)
    return;
  struct volume *vol = p->vol;
  if (status == 0 && p->nheld) {
    /* The request's metadata joins the epoch (room was made). */
    pthread_mutex_lock (&vol->epoch_lock);
    for (size_t i = 0; i < p->nheld; i++)
      if (epoch_take (&vol->epoch, p->held[i].fsblk, p->held[i].data) == -1)
        nbdkit_error ("out of memory holding metadata block %" PRIu64
                      " (lost)", p->held[i].fsblk);
    __atomic_store_n (&vol->held, vol->epoch.n, __ATOMIC_RELEASE);
    pthread_mutex_unlock (&vol->epoch_lock);
    free (p->held);
    p->held = NULL;
    p->nheld = 0;
  }
  bool model_changed = p->updated || p->L;
  vol->excl_is_commit |= p->ntxns || model_changed;
  uint64_t t_finish = fsevent_debug_commit_timing ? follow_now_ns () : 0;
  if (status == 0 && p->updated) {
    /* The in-place edits stand. */
    fsev_update_release (&p->up);
    p->updated = false;
    vol->stats.incremental++;
    if (fsev_edit_compact_names (vol->layout) == -1)
      nbdkit_debug ("out of memory compacting names (retried later)");
  }
  if (status == 0) {
    if (p->ov) {
      fsev_overlay_free (vol->overlay);
      vol->overlay = p->ov;
      p->ov = NULL;
    }
    if (p->L) {
      fsev_layout_free (vol->layout);
      vol->layout = p->L;
      p->L = NULL;
      /* A new geometry may come with a scan: re-open the updater. */
      fsev_updater_close (vol->updater);
      vol->updater = NULL;
      vol->no_updater = false;
    }
    {
      /* Announced names: created, linked or renamed to; forgotten when
       * the inode is freed.
       */
      for (size_t i = 0; i < p->n; i++) {
        const struct item *it = &p->items[i];
        if (!it->is_change)
          continue;
        uint32_t ino = it->c.ino;
        if (ino >= vol->named_bits)
          continue;
        if (it->freed_inode)
          vol->named[ino / 8] &= ~(1u << (ino % 8));
        else if (it->c.kind == FSEVENT_CREATE || it->c.kind == FSEVENT_LINK ||
                 it->c.kind == FSEVENT_RENAME)
          vol->named[ino / 8] |= 1u << (ino % 8);
      }
    }
    /* Transactions appended at the head leave the tracked ones (and
     * themselves) in the live log; a new tail, or a head that moved
     * any other way, may not: then every one is checked again.
     */
    bool appended = vol->head_known && p->ntrack > 0 &&
      p->track[0].start == vol->head &&
      (!p->new_head || p->head == p->track[p->ntrack - 1].next);
    for (size_t t = 1; appended && t < p->ntrack; t++)
      appended = p->track[t].start == p->track[t - 1].next;
    if (p->new_js) {
      if (!journal_same_format (&vol->js, &p->js))
        vol->ntracked = 0;      /* read another way from now on */
      vol->js = p->js;
    }
    if (p->new_head) {
      vol->head = p->head;
      vol->head_seq = p->head_seq;
      vol->head_known = true;
    }
    if (p->new_js || (p->new_head && !appended))
      journal_prune (vol);
    journal_track (vol, p->track, p->ntrack);
    vol->stats.transactions += p->ntxns;
    pthread_mutex_lock (&vol->pending_lock);
    if (p->have_kept) {
      /* What was attributed leaves the set; requests that added to it
       * meanwhile cannot exist (we hold the model exclusively).
       */
      pending_free (&vol->pending);
      vol->pending = p->kept;
      memset (&p->kept, 0, sizeof p->kept);
    }
    if (p->journal_clean) {
      struct give_up g = { vol, lb, "journal-clean" };
      pending_normalise (&vol->pending);
      for (size_t i = 0; i < vol->pending.n; i++)
        pending_given_up (vol->pending.v[i].offset, vol->pending.v[i].length, &g);
      pending_free (&vol->pending);
    }
    pthread_mutex_unlock (&vol->pending_lock);
  }
  else if (p->ntxns)
    vol->stats.vetoed += p->ntxns;

  for (size_t i = 0; i < p->decided; i++) {
    struct item *it = &p->items[i];
    writes_count_events (it->is_change ? 1 + (unsigned) it->c.kind : 0, 1);
    if (it->is_change) {
      it->c.phase = FSEVENT_AFTER;
      it->c.status = status;
      it->c.result_code = 0;
      handlers_after_change (&it->c, p->conn->contexts);
      log_change (lb, &it->c);
      if (status == 0 && it->freed_inode)
        handlers_inode_freed (vol->partition, it->c.ino);
    }
    else {
      it->w.phase = FSEVENT_AFTER;
      it->w.status = status;
      it->w.bytes_written = status == 0 ? it->w.bytes_to_write : 0;
      it->w.result_code = 0;
      if (status == 0)
        *(it->w.direction == FSEVENT_JOURNAL ? &vol->stats.journal_bytes
          : &vol->stats.commit_bytes) += it->w.bytes_to_write;
      handlers_after_write (&it->w, p->conn->contexts);
      log_event (lb, &it->w);
    }
  }
  bool changed = status == 0 && (p->ntxns || p->new_js || model_changed);
  if (fsevent_debug_commit_timing && p->t_start && model_changed)
    VDEBUG (vol, "commit timing: journal %.0f us, update %.0f us (%s), events "
            "%.0f us, handlers+I/O %.0f us, finish %.0f us; %zu events",
            (p->t_read - p->t_start) / 1e3, (p->t_update - p->t_read) / 1e3,
            p->L ? "scan" : "in place", (p->t_decided - p->t_update) / 1e3,
            (t_finish - p->t_decided) / 1e3, (follow_now_ns () - t_finish) / 1e3, p->n);
  plan_free (p);
  if (changed && fsevent_debug_check)
    follow_check_model (vol);
}
