/* plugin/follow.c: following the guest through its journal.
 *
 * The committed view is the image plus the overlay of committed journal
 * blocks not yet written home (fs/overlay.h).  The model (layout) is a
 * scan of that view.  At each commit point the next view is scanned,
 * compared with the current one (fs/diff.h) and with the bytes written
 * to free space since (pending), and the events that follow are decided
 * by the handlers *before* the commit block, or the metadata write on
 * ext2, reaches the image.  A veto fails that request: the transaction
 * never commits (the guest's journal aborts) and the model stays.
 *
 * Rescanning the view at each commit keeps "the model equals a fresh
 * scan" true by construction; its cost is the price of a scan per
 * commit (see the man page).
 */
#include <config.h>

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NBDKIT_API_VERSION 2
#include <nbdkit-plugin.h>

#include "diff.h"
#include "device.h"
#include "follow.h"
#include "handlers.h"
#include "jbd2.h"
#include "locks.h"
#include "layout-internal.h"
#include "overlay.h"
#include "paths.h"
#include "pending.h"
#include "util.h"
#include "writes.h"

NBDKIT_DLL_PUBLIC int fsevent_debug_check = 0;

struct follow_stats {
  uint64_t transactions, vetoed, not_followed, rescans;
  uint64_t commit_bytes, journal_bytes, unattributed_bytes;
  uint64_t check_failures;
};

/* One followed filesystem: a bare image, or one partition of a disk. */
struct volume {
  unsigned partition;           /* 0: the whole device */
  uint64_t offset, length;      /* where it lies on the device, bytes */
  struct device *dev;

  pthread_rwlock_t model_lock;
  struct fsev_layout *layout;
  struct fsev_overlay *overlay;
  unsigned bs;

  /* The journal, when there is one we can follow. */
  bool journalled;
  struct fsev_jsuper js;
  uint64_t jsb_offset;          /* filesystem bytes */
  bool head_known;
  uint32_t head, head_seq;      /* where the next transaction starts */

  pthread_mutex_t pending_lock;
  struct pending pending;       /* filesystem offsets */

  /* Inodes that have had a name announced (present at start-up, or
   * created, linked or renamed to since): one that gets a name again is
   * linked, not created (ext2 writes a rename's two directory entries at
   * two commit points).
   */
  unsigned char *named;
  uint64_t named_bits;

  struct follow_stats stats;
};

static bool
was_named (uint32_t ino, void *opaque)
{
  const struct volume *vol = opaque;
  return ino < vol->named_bits && (vol->named[ino / 8] & (1u << (ino % 8)));
}

static void
remember_names (struct volume *vol, const struct fsev_layout *L)
{
  size_t n;
  const struct fsev_inode *in = fsev_layout_inodes (L, &n);
  for (size_t i = 0; i < n; i++)
    if (in[i].ino < vol->named_bits && fsev_layout_names (L, in[i].ino, NULL, 0))
      vol->named[in[i].ino / 8] |= 1u << (in[i].ino % 8);
}


/* --- Reading the views. --- */

struct view {
  struct volume *vol;
  const struct io *io;          /* a request not yet in the image, or NULL */
  const struct fsev_overlay *ov;/* NULL: the raw image (and request) */
};

/* The image with the request's bytes on top. */
static int
raw_read (void *opaque, void *buf, size_t count, uint64_t offset)
{
  const struct view *v = opaque;
  if (device_read (v->vol->dev, buf, count, v->vol->offset + offset) == -1)
    return -1;
  const struct io *io = v->io;
  if (io) {
    uint64_t from = io->offset > offset ? io->offset : offset;
    uint64_t to = io->offset + io->count < offset + count
      ? io->offset + io->count : offset + count;
    if (from < to) {
      if (io->op == FSEVENT_OP_WRITE)
        memcpy ((char *) buf + (from - offset),
                (const char *) io->buf + (from - io->offset), to - from);
      else
        memset ((char *) buf + (from - offset), 0, to - from);
    }
  }
  return 0;
}

/* The committed view: raw, then the overlay. */
static int
committed_read (void *opaque, void *buf, size_t count, uint64_t offset)
{
  const struct view *v = opaque;
  if (raw_read (opaque, buf, count, offset) == -1)
    return -1;
  if (v->ov && fsev_overlay_patch (v->ov, raw_read, opaque, buf, count,
                                   offset) == -1)
    return -1;
  return 0;
}

struct jview {
  struct view *v;
  const struct fsev_layout *L;
};

static int
jread (void *opaque, uint32_t jblk, void *buf)
{
  const struct jview *j = opaque;
  uint64_t pblk = fsev_layout_journal_pblk (j->L, jblk);
  if (pblk == 0) {
    errno = EIO;
    return -1;
  }
  return raw_read (j->v, buf, j->v->vol->bs, pblk * j->v->vol->bs);
}

static uint64_t
jmap (void *opaque, uint32_t jblk)
{
  const struct jview *j = opaque;
  return fsev_layout_journal_pblk (j->L, jblk);
}

static void
build_warning (void *opaque, const char *msg)
{
  const struct volume *vol = opaque;
  nbdkit_debug ("partition %u: layout: warning: %s", vol->partition, msg);
}

/* Scan the committed view V. */
static struct fsev_layout *
scan (struct view *v, char *err, size_t errlen)
{
  struct volume *vol = v->vol;
  struct fsev_source src = {
    .read = committed_read, .opaque = v, .size = fsev_layout_fs_bytes (vol->layout),
  };
  struct fsev_build_options opts = {
    .warn = build_warning, .opaque = vol, .max_warnings = 20,
  };
  vol->stats.rescans++;
  return fsev_layout_build (&src, &opts, err, errlen);
}

/* --- Start and end. --- */

static int
replay_txn (const struct fsev_jtxn *txn, void *opaque)
{
  struct jview *j = opaque;
  return fsev_overlay_apply (j->v->vol->overlay, txn, jmap, j, j->L->fs_blocks);
}

/* Messages about a volume name its partition when the device has them. */
#define VDEBUG(vol, fmt, ...)                                           \
  nbdkit_debug ("%s%.0u%s" fmt, (vol)->partition ? "partition " : "",   \
                (vol)->partition, (vol)->partition ? ": " : "", ##__VA_ARGS__)

static void
volume_free (struct volume *vol)
{
  pending_free (&vol->pending);
  free (vol->named);
  fsev_overlay_free (vol->overlay);
  fsev_layout_free (vol->layout);
  pthread_rwlock_destroy (&vol->model_lock);
  pthread_mutex_destroy (&vol->pending_lock);
  free (vol);
}

struct volume *
follow_init (struct device *dev, unsigned partition, uint64_t offset,
             uint64_t length, struct fsev_layout *L)
{
  struct volume *vol = calloc (1, sizeof *vol);
  if (vol == NULL) {
    fsev_layout_free (L);
    nbdkit_error ("out of memory");
    return NULL;
  }
  vol->partition = partition;
  vol->offset = offset;
  vol->length = length;
  vol->dev = dev;
  vol->layout = L;
  vol->bs = fsev_layout_block_size (L);
  pthread_rwlockattr_t attr;
  pthread_rwlockattr_init (&attr);
  /* A commit waits for the writes in flight, not for every later one. */
  pthread_rwlockattr_setkind_np (&attr,
                                 PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
  pthread_rwlock_init (&vol->model_lock, &attr);
  pthread_rwlockattr_destroy (&attr);
  pthread_mutex_init (&vol->pending_lock, NULL);
  vol->overlay = fsev_overlay_new (vol->bs);
  vol->named_bits = (uint64_t) L->inodes_count + 1;
  vol->named = calloc (vol->named_bits / 8 + 1, 1);
  if (vol->overlay == NULL || vol->named == NULL) {
    nbdkit_error ("out of memory");
    volume_free (vol);
    return NULL;
  }
  remember_names (vol, L);

  uint64_t pblk = fsev_layout_journal_ino (L)
    ? fsev_layout_journal_pblk (L, 0) : 0;
  if (pblk == 0) {
    VDEBUG (vol, "no journal: metadata writes are the commit points");
    return vol;
  }
  unsigned char *buf = malloc (vol->bs);
  char err[256];
  struct view v = { .vol = vol };
  if (buf == NULL || raw_read (&v, buf, vol->bs, pblk * vol->bs) == -1) {
    free (buf);
    nbdkit_error ("cannot read the journal superblock");
    volume_free (vol);
    return NULL;
  }
  if (fsev_jbd2_parse_super (buf, vol->bs, &vol->js, err, sizeof err) == -1) {
    /* Followed without it: journalled metadata is then seen when it is
     * written home (checkpoint), later than its commit.
     */
    free (buf);
    VDEBUG (vol, "the journal cannot be followed (%s): metadata writes "
            "are the commit points", err);
    return vol;
  }
  free (buf);
  vol->journalled = true;
  vol->jsb_offset = pblk * vol->bs;
  vol->head_seq = vol->js.sequence;
  VDEBUG (vol, "journal: %" PRIu32 " blocks, log %" PRIu32 "..%" PRIu32
          ", sequence %" PRIu32 ", %s%s%s",
          vol->js.maxlen, vol->js.first, vol->js.log_end, vol->js.sequence,
          vol->js.start ? "needs recovery" : "clean",
          vol->js.csum_v3 ? ", csum v3" : vol->js.csum_v2 ? ", csum v2" : "",
          vol->js.fast_commit ? ", fast commit (followed at full commits)" : "");
  if (vol->js.start == 0)
    return vol;

  /* Recovery is replayed into the overlay, never into the image. */
  struct jview jv = { .v = &v, .L = L };
  uint32_t next, next_seq;
  int n = fsev_jbd2_walk (&vol->js, jread, &jv, replay_txn, &jv, &next, &next_seq);
  if (n < 0) {
    nbdkit_error ("cannot replay the journal");
    volume_free (vol);
    return NULL;
  }
  vol->head = next;
  vol->head_seq = next_seq;
  vol->head_known = true;
  VDEBUG (vol, "journal: %d committed transactions replayed into the "
          "committed view (%zu blocks)", n, vol->overlay->n);
  if (vol->overlay->n) {
    struct view cv = { .vol = vol, .ov = vol->overlay };
    struct fsev_layout *nl = scan (&cv, err, sizeof err);
    if (nl == NULL) {
      nbdkit_error ("the filesystem after journal recovery: %s", err);
      volume_free (vol);
      return NULL;
    }
    fsev_layout_free (vol->layout);
    vol->layout = nl;
  }
  return vol;
}

void
follow_fini (struct volume *vol)
{
  if (vol == NULL)
    return;
  pending_normalise (&vol->pending);
  if (vol->pending.bytes) {
    struct log_batch lb;
    log_batch_init (&lb);
    for (size_t i = 0; i < vol->pending.n; i++)
      log_unattributed (&lb, vol->partition,
                        vol->offset + vol->pending.v[i].offset,
                        vol->pending.v[i].length, "shutdown");
    log_commit (&lb);
    vol->stats.unattributed_bytes += vol->pending.bytes;
    VDEBUG (vol, "%" PRIu64 " bytes written to free space never became "
            "part of a file (unattributed)", vol->pending.bytes);
  }
  follow_log_stats (vol);
  volume_free (vol);
}

void
follow_log_stats (struct volume *vol)
{
  VDEBUG (vol, "follow: %" PRIu64 " transactions, %" PRIu64 " vetoed, %"
          PRIu64 " not followed, %" PRIu64 " rescans; attributed at "
          "commit %" PRIu64 " bytes, from the journal %" PRIu64
          " bytes; unattributed %" PRIu64 " bytes%s",
          vol->stats.transactions, vol->stats.vetoed, vol->stats.not_followed,
          vol->stats.rescans, vol->stats.commit_bytes, vol->stats.journal_bytes,
          vol->stats.unattributed_bytes,
          vol->stats.check_failures ? "; MODEL CHECK FAILURES" : "");
}

unsigned volume_partition (const struct volume *vol) { return vol->partition; }
uint64_t volume_offset (const struct volume *vol) { return vol->offset; }
uint64_t volume_length (const struct volume *vol) { return vol->length; }

void follow_lock_shared (struct volume *vol) { pthread_rwlock_rdlock (&vol->model_lock); }
void follow_lock_exclusive (struct volume *vol) { pthread_rwlock_wrlock (&vol->model_lock); }
void follow_unlock (struct volume *vol) { pthread_rwlock_unlock (&vol->model_lock); }
const struct fsev_layout *follow_layout (const struct volume *vol) { return vol->layout; }

/* --- Which requests need the exclusive path. --- */

static bool
is_metadata (enum fsev_role r)
{
  switch (r) {
  case FSEV_ROLE_SUPERBLOCK: case FSEV_ROLE_GROUP_DESCRIPTORS:
  case FSEV_ROLE_RESERVED_GDT: case FSEV_ROLE_BLOCK_BITMAP:
  case FSEV_ROLE_INODE_BITMAP: case FSEV_ROLE_INODE_TABLE:
  case FSEV_ROLE_EXTENT_TREE: case FSEV_ROLE_INDIRECT:
  case FSEV_ROLE_DIRECTORY: case FSEV_ROLE_XATTR:
    return true;
  default:
    return false;
  }
}

/* The new bytes of IO at [OFFSET, OFFSET+LEN) into BUF. */
static void
new_bytes (const struct io *io, void *buf, uint64_t offset, uint64_t len)
{
  if (io->op == FSEVENT_OP_WRITE)
    memcpy (buf, (const char *) io->buf + (offset - io->offset), len);
  else
    memset (buf, 0, len);
}

/* Does IO change the committed content of a metadata block that the
 * overlay does not hold?  (Blocks the overlay holds are checkpoints:
 * recovery would put the journal copy back anyway.)
 */
static bool
changes_metadata (struct volume *vol, const struct io *io,
                  const struct fsev_segment *seg)
{
  unsigned char old[65536], neu[65536];
  if (vol->bs > sizeof old)
    return true;
  for (uint64_t off = seg->offset; off < seg->offset + seg->length; ) {
    uint64_t blk = off / vol->bs;
    uint64_t end = (blk + 1) * vol->bs;
    if (end > seg->offset + seg->length)
      end = seg->offset + seg->length;
    if (fsev_overlay_find (vol->overlay, blk) == NULL) {
      struct view v = { .vol = vol };
      if (raw_read (&v, old, end - off, off) == -1)
        return true;
      new_bytes (io, neu, off, end - off);
      if (memcmp (old, neu, end - off) != 0)
        return true;
    }
    off = end;
  }
  return false;
}

/* Is there a commit block among IO's whole blocks in SEG? */
static bool
has_commit_block (const struct volume *vol, const struct io *io,
                  const struct fsev_segment *seg)
{
  if (io->op != FSEVENT_OP_WRITE)
    return false;
  uint64_t first = (seg->offset + vol->bs - 1) / vol->bs * vol->bs;
  for (uint64_t off = first; off + vol->bs <= seg->offset + seg->length; off += vol->bs) {
    uint32_t type, seq;
    if (fsev_jbd2_header ((const char *) io->buf + (off - io->offset),
                          &type, &seq) && type == FSEV_JBD2_COMMIT)
      return true;
  }
  return false;
}

bool
follow_segment_needs_exclusive (struct volume *vol, const struct io *io,
                                const struct fsev_segment *seg)
{
  if (seg->role == FSEV_ROLE_JOURNAL) {
    if (!vol->journalled || (seg->flags & FSEV_SEG_JOURNAL_FC))
      return false;             /* fast commits: followed at full commits */
    if (seg->flags & FSEV_SEG_JOURNAL_SB)
      return true;
    return fsev_overlay_refers (vol->overlay, seg->offset, seg->length) ||
      has_commit_block (vol, io, seg);
  }
  if (is_metadata (seg->role))
    return changes_metadata (vol, io, seg);
  return false;
}

bool
follow_is_checkpoint (struct volume *vol, const struct io *io,
                      const struct fsev_segment *seg)
{
  unsigned char cur[65536], neu[65536];
  if (vol->overlay->n == 0 || vol->bs > sizeof cur)
    return false;
  for (uint64_t off = seg->offset; off < seg->offset + seg->length; ) {
    uint64_t blk = off / vol->bs;
    uint64_t end = (blk + 1) * vol->bs;
    if (end > seg->offset + seg->length)
      end = seg->offset + seg->length;
    const struct fsev_overlay_entry *e = fsev_overlay_find (vol->overlay, blk);
    struct view v = { .vol = vol };
    if (e == NULL || fsev_overlay_read_entry (vol->overlay, e, raw_read, &v, cur) == -1)
      return false;
    new_bytes (io, neu, off, end - off);
    if (memcmp (cur + (off - blk * vol->bs), neu, end - off) != 0)
      return false;
    off = end;
  }
  return true;
}

/* --- Pending free-space bytes. --- */

void
follow_pending_add (struct volume *vol, uint64_t offset, uint64_t length)
{
  pthread_mutex_lock (&vol->pending_lock);
  if (pending_add (&vol->pending, offset, length) == -1)
    nbdkit_error ("out of memory: %" PRIu64 " bytes at %" PRIu64
                  " will not be attributed", length, offset);
  pthread_mutex_unlock (&vol->pending_lock);
}

struct give_up {
  struct volume *vol;
  struct log_batch *lb;
  const char *reason;
};

static void
given_up (uint64_t offset, uint64_t length, void *opaque)
{
  struct give_up *g = opaque;
  struct volume *vol = g->vol;
  log_unattributed (g->lb, vol->partition, vol->offset + offset, length,
                    g->reason);
  __atomic_fetch_add (&vol->stats.unattributed_bytes, length, __ATOMIC_RELAXED);
  VDEBUG (vol, "unattributed: %" PRIu64 " bytes at %" PRIu64 " (%s)",
          length, vol->offset + offset, g->reason);
}

void
follow_pending_drop (struct volume *vol, uint64_t offset, uint64_t length,
                     const char *reason, struct log_batch *lb)
{
  struct give_up g = { vol, lb, reason };
  pthread_mutex_lock (&vol->pending_lock);
  pending_normalise (&vol->pending);
  pending_remove (&vol->pending, offset, length, given_up, &g);
  pthread_mutex_unlock (&vol->pending_lock);
}

/* --- The plan of a commit point. --- */

struct item {
  bool is_change;
  int rank;
  struct fsevent_write w;
  struct fsevent_change c;
  char **names;
  char *file, *new_file;
  void *data;                   /* buffer owned by the item */
  bool freed_inode;             /* delete: drop its file contexts after */
};

struct follow_plan {
  struct volume *vol;
  struct conn *conn;
  struct fsev_overlay *ov;      /* the next overlay, or NULL: unchanged */
  struct fsev_layout *L;        /* the next model, or NULL: unchanged */
  bool new_js;
  struct fsev_jsuper js;
  bool new_head;
  uint32_t head, head_seq;
  bool journal_clean;           /* give up what is still pending */
  uint64_t sequence;
  unsigned ntxns;
  struct item *items;
  size_t n, cap, decided;
  struct pending kept;          /* pending after this commit */
  bool have_kept;
  bool oom;
};

static struct item *
new_item (struct follow_plan *p)
{
  if (fsev_grow ((void **) &p->items, &p->cap, p->n + 1, sizeof *p->items) == -1) {
    p->oom = true;
    return NULL;
  }
  struct item *it = &p->items[p->n++];
  memset (it, 0, sizeof *it);
  return it;
}

static void
free_plan (struct follow_plan *p)
{
  if (p == NULL)
    return;
  for (size_t i = 0; i < p->n; i++) {
    free (p->items[i].names);
    free (p->items[i].file);
    free (p->items[i].new_file);
    free (p->items[i].data);
  }
  free (p->items);
  fsev_overlay_free (p->ov);
  fsev_layout_free (p->L);
  pending_free (&p->kept);
  free (p);
}

static void
set_attrs (struct fsevent_attributes *a, const struct fsev_inode *i)
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
add_change (struct follow_plan *p, const struct fsev_layout *A,
            const struct fsev_layout *B, const struct fsev_change *ch)
{
  struct item *it = new_item (p);
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
  set_attrs (&c->old_attributes, ch->old_inode);
  set_attrs (&c->attributes, ch->new_inode);

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
add_data (struct follow_plan *p, const struct fsev_layout *B,
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
  struct item *it = new_item (p);
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
    add_data (p, s->B, FSEVENT_COMMIT, seg->ino, seg->position, seg->offset,
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
    add_data (j->p, j->B, FSEVENT_JOURNAL, seg->ino, seg->position,
              seg->offset, seg->length);
  return 0;
}

/* Find and parse the transaction whose commit block for SEQ is at
 * journal block CJBLK.  Normally it starts where the last one ended;
 * otherwise (first transaction after mount) walk back to its start.
 */
static bool
find_txn (struct jview *jv, uint32_t cjblk, uint32_t seq,
          uint32_t hint, bool hint_ok, struct fsev_jtxn *txn)
{
  struct volume *vol = jv->v->vol;
  char err[256];
  if (hint_ok) {
    enum fsev_jresult r = fsev_jbd2_parse_txn (&vol->js, jread, jv, hint, seq, txn,
                                               err, sizeof err);
    if (r == FSEV_J_OK && txn->commit_jblk == cjblk)
      return true;
    if (r == FSEV_J_OK)
      fsev_jtxn_free (txn);
  }
  unsigned char *buf = malloc (vol->bs);
  if (buf == NULL)
    return false;
  uint32_t loglen = vol->js.log_end - vol->js.first, pos = cjblk, start = 0;
  bool found = false;
  for (uint32_t steps = 0; steps < loglen; steps++) {
    pos = pos == vol->js.first ? vol->js.log_end - 1 : pos - 1;
    uint32_t type, s;
    if (jread (jv, pos, buf) == -1)
      break;
    if (!fsev_jbd2_header (buf, &type, &s))
      continue;                 /* a logged block */
    if (s != seq)
      break;                    /* the transaction before */
    if (type == FSEV_JBD2_DESCRIPTOR || type == FSEV_JBD2_REVOKE) {
      start = pos;
      found = true;
    }
  }
  free (buf);
  if (!found)
    return false;
  enum fsev_jresult r = fsev_jbd2_parse_txn (&vol->js, jread, jv, start, seq, txn,
                                             err, sizeof err);
  if (r == FSEV_J_OK && txn->commit_jblk == cjblk)
    return true;
  if (r == FSEV_J_OK)
    fsev_jtxn_free (txn);
  VDEBUG (vol, "journal: transaction %" PRIu32 " committing at block %"
          PRIu32 " cannot be parsed: %s", seq, cjblk,
          r == FSEV_J_OK ? "it ends elsewhere" : err);
  return false;
}

struct prep {
  struct follow_plan *p;
  const struct io *io;
  struct jview jv;
  struct fsev_jtxn *txns;
  size_t ntxns, cap;
  bool rescan;
  bool oom;
};

static struct fsev_overlay *
next_overlay (struct follow_plan *p)
{
  if (p->ov == NULL)
    p->ov = fsev_overlay_clone (p->vol->overlay);
  if (p->ov == NULL)
    p->oom = true;
  return p->ov;
}

/* Expired entries whose home does not hold the committed copy change
 * the committed view (a guest that moved its tail too early).
 */
struct expire_check {
  struct view *raw;
  const struct fsev_overlay *ov;
  bool differs;
};

static void
check_expired (const struct fsev_overlay_entry *e, void *opaque)
{
  struct expire_check *x = opaque;
  const struct volume *vol = x->raw->vol;
  unsigned char a[65536], b[65536];
  if (x->differs || vol->bs > sizeof a)
    return;
  if (fsev_overlay_read_entry (x->ov, e, raw_read, x->raw, a) == -1 ||
      raw_read (x->raw, b, vol->bs, e->fsblk * vol->bs) == -1 ||
      memcmp (a, b, vol->bs) != 0)
    x->differs = true;
}

static int
prep_segment (const struct fsev_segment *seg, void *opaque)
{
  struct prep *pr = opaque;
  struct follow_plan *p = pr->p;
  struct volume *vol = p->vol;
  const struct io *io = pr->io;

  if (is_metadata (seg->role)) {
    if (changes_metadata (vol, io, seg))
      pr->rescan = true;
    return 0;
  }
  if (seg->role != FSEV_ROLE_JOURNAL || !vol->journalled ||
      (seg->flags & FSEV_SEG_JOURNAL_FC))
    return 0;

  if (seg->flags & FSEV_SEG_JOURNAL_SB) {
    char err[256];
    unsigned char *buf = malloc (vol->bs);
    if (buf == NULL) {
      pr->oom = true;
      return -1;
    }
    int r = raw_read (pr->jv.v, buf, vol->bs, vol->jsb_offset);
    struct fsev_jsuper nj;
    if (r == 0 && fsev_jbd2_parse_super (buf, vol->bs, &nj, err, sizeof err) == 0) {
      struct fsev_overlay *ov = next_overlay (p);
      if (ov) {
        struct expire_check x = { .raw = pr->jv.v, .ov = ov };
        fsev_overlay_expire (ov, nj.sequence, nj.start == 0, check_expired, &x);
        if (x.differs)
          pr->rescan = true;
      }
      p->new_js = true;
      p->js = nj;
      if (nj.start == 0)
        p->journal_clean = true;
      else if (!vol->head_known && !p->new_head) {
        p->new_head = true;
        p->head = nj.start;
        p->head_seq = nj.sequence;
      }
    }
    else
      VDEBUG (vol, "journal: the guest wrote a journal superblock that "
              "does not parse (%s): kept the last good one",
              r == 0 ? err : "read error");
    free (buf);
    return 0;
  }

  /* The log: commit blocks among the request's whole blocks. */
  if (io->op != FSEVENT_OP_WRITE)
    return 0;
  uint64_t first = (seg->offset + vol->bs - 1) / vol->bs * vol->bs;
  for (uint64_t off = first; off + vol->bs <= seg->offset + seg->length; off += vol->bs) {
    uint32_t type, seq;
    if (!fsev_jbd2_header ((const char *) io->buf + (off - io->offset),
                           &type, &seq) || type != FSEV_JBD2_COMMIT)
      continue;
    uint32_t cjblk = (uint32_t) ((seg->position + (off - seg->offset)) / vol->bs);
    uint32_t hint = p->new_head ? p->head : vol->head;
    bool hint_ok = (p->new_head || vol->head_known) &&
      (p->new_head ? p->head_seq : vol->head_seq) == seq;
    struct fsev_jtxn txn;
    if (!find_txn (&pr->jv, cjblk, seq, hint, hint_ok, &txn)) {
      vol->stats.not_followed++;
      continue;
    }
    struct fsev_overlay *ov = next_overlay (p);
    if (ov == NULL ||
        fsev_overlay_apply (ov, &txn, jmap, &pr->jv, vol->layout->fs_blocks) == -1 ||
        fsev_grow ((void **) &pr->txns, &pr->cap, pr->ntxns + 1,
                   sizeof *pr->txns) == -1) {
      fsev_jtxn_free (&txn);
      pr->oom = true;
      return -1;
    }
    pr->txns[pr->ntxns++] = txn;
    p->new_head = true;
    p->head = txn.next;
    p->head_seq = seq + 1;
    p->sequence = seq;
    p->ntxns++;
  }
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
  struct view raw = { .vol = vol, .io = io };
  struct prep pr = { .p = p, .io = io, .jv = { .v = &raw, .L = vol->layout } };

  /* Journal blocks the overlay still needs get copies before the guest
   * overwrites them (the old content: the image without this request).
   */
  struct view old = { .vol = vol };
  if (fsev_overlay_refers (vol->overlay, io->offset, io->count) &&
      fsev_overlay_materialize (vol->overlay, raw_read, &old, io->offset,
                                io->count) == -1)
    goto oom;

  fsev_layout_lookup (vol->layout, io->offset, io->count, prep_segment, &pr);
  if (pr.oom || p->oom)
    goto oom;

  if (pr.ntxns || pr.rescan) {
    char msg[256];
    struct view cv = { .vol = vol, .io = io,
                       .ov = p->ov ? p->ov : vol->overlay };
    p->L = scan (&cv, msg, sizeof msg);
    if (p->L == NULL)
      VDEBUG (vol, "the committed view no longer holds a filesystem we can "
              "map (%s): the model stays as it was", msg);
  }
  if (p->L) {
    /* Namespace changes. */
    struct fsev_change *ch;
    ssize_t nch = fsev_diff (vol->layout, p->L, was_named, vol, &ch);
    if (nch < 0)
      goto oom;
    ssize_t i = 0;
    for (; i < nch && (ch[i].reused || fsev_change_rank (ch[i].kind) < 4); i++)
      add_change (p, vol->layout, p->L, &ch[i]);
    /* New data: pending bytes the new model gives to files. */
    pthread_mutex_lock (&vol->pending_lock);
    pending_normalise (&vol->pending);
    struct sift s = { p, p->L };
    for (size_t k = 0; k < vol->pending.n && !p->oom; k++)
      fsev_layout_lookup (p->L, vol->pending.v[k].offset, vol->pending.v[k].length,
                          sift_segment, &s);
    pthread_mutex_unlock (&vol->pending_lock);
    p->have_kept = true;
    /* Logged data (data=journal). */
    struct jdata jd = { p, p->L };
    for (size_t t = 0; t < pr.ntxns; t++)
      for (size_t k = 0; k < pr.txns[t].ntags; k++) {
        const struct fsev_jtag *tag = &pr.txns[t].tags[k];
        if (tag->csum_ok && tag->fsblk < p->L->fs_blocks)
          fsev_layout_lookup (p->L, tag->fsblk * vol->bs, vol->bs, jdata_segment, &jd);
      }
    for (; i < nch; i++)
      add_change (p, vol->layout, p->L, &ch[i]);
    free (ch);
  }
  for (size_t t = 0; t < pr.ntxns; t++)
    fsev_jtxn_free (&pr.txns[t]);
  free (pr.txns);
  pr.txns = NULL;
  if (p->oom)
    goto oom;

  /* Handlers that read data get the bytes: read back from the image
   * (pending data is there already) or from the journal's copies.
   */
  if (handlers_want_data ()) {
    struct view cv = { .vol = vol, .io = io,
                       .ov = p->ov ? p->ov : vol->overlay };
    for (size_t k = 0; k < p->n; k++) {
      struct item *it = &p->items[k];
      if (it->is_change || it->w.bytes_to_write > (64u << 20))
        continue;               /* huge ranges: no buffer (documented) */
      it->data = malloc (it->w.bytes_to_write ? it->w.bytes_to_write : 1);
      if (it->data == NULL)
        goto oom;
      if (committed_read (&cv, it->data, it->w.bytes_to_write,
                          it->w.device_offset - vol->offset) == -1) {
        *err = EIO;
        free_plan (p);
        return NULL;
      }
      it->w.buffer = it->data;
    }
  }
  return p;

 oom:
  for (size_t t = 0; t < pr.ntxns; t++)
    fsev_jtxn_free (&pr.txns[t]);
  free (pr.txns);
  free_plan (p);
  nbdkit_error ("out of memory while following the journal");
  *err = ENOMEM;
  return NULL;
}

void
follow_plan_discard (struct follow_plan *p)
{
  free_plan (p);
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

/* CAT: the file's committed content. */
struct extent {
  uint64_t lblk, pblk, len;
  bool unwritten;
};

struct extents {
  struct extent *v;
  size_t n, cap;
};

static int
add_extent (uint64_t lblk, uint64_t pblk, uint64_t len, bool unwritten,
            void *opaque)
{
  struct extents *x = opaque;
  if (fsev_grow ((void **) &x->v, &x->cap, x->n + 1, sizeof *x->v) == -1)
    return -1;
  x->v[x->n++] = (struct extent) { lblk, pblk, len, unwritten };
  return 0;
}

static int
cmp_extent (const void *a, const void *b)
{
  const struct extent *x = a, *y = b;
  return x->lblk < y->lblk ? -1 : x->lblk > y->lblk;
}

int
follow_cat (struct volume *vol, const char *path,
            int (*header) (void *, uint64_t),
            int (*out) (void *, const void *, size_t), void *opaque)
{
  struct extents x = { 0 };
  unsigned char *buf = NULL;
  int r = 0;

  follow_lock_shared (vol);
  uint32_t ino = fsev_layout_lookup_path (vol->layout, path);
  const struct fsev_inode *in = ino ? fsev_layout_inode (vol->layout, ino) : NULL;
  if (in == NULL) {
    r = -ENOENT;
    goto out;
  }
  if ((in->mode & 0170000) != 0100000) {
    r = (in->mode & 0170000) == 0040000 ? -EISDIR : -EINVAL;
    goto out;
  }
  if (in->flags & 0x10000000) { /* EXT4_INLINE_DATA_FL */
    r = -ENOTSUP;
    goto out;
  }
  buf = malloc (vol->bs);
  if (buf == NULL ||
      fsev_layout_file_blocks (vol->layout, ino, add_extent, &x) == -1) {
    r = -ENOMEM;
    goto out;
  }
  qsort (x.v, x.n, sizeof *x.v, cmp_extent);
  if (header (opaque, in->size) == -1) {
    r = -EPIPE;
    goto out;
  }
  struct view v = { .vol = vol, .ov = vol->overlay };
  size_t k = 0;
  for (uint64_t pos = 0, lblk = 0; pos < in->size; pos += vol->bs, lblk++) {
    while (k < x.n && x.v[k].lblk + x.v[k].len <= lblk)
      k++;
    size_t n = in->size - pos < vol->bs ? in->size - pos : vol->bs;
    if (k < x.n && x.v[k].lblk <= lblk && !x.v[k].unwritten) {
      if (committed_read (&v, buf, vol->bs,
                          (x.v[k].pblk + (lblk - x.v[k].lblk)) * vol->bs) == -1) {
        r = -EIO;
        goto out;
      }
    }
    else
      memset (buf, 0, vol->bs);      /* a hole, or unwritten: zeroes */
    if (out (opaque, buf, n) == -1) {
      r = -EPIPE;
      goto out;
    }
  }
 out:
  follow_unlock (vol);
  free (x.v);
  free (buf);
  return r;
}

int
follow_resolve (struct volume *vol, const char *path, uint32_t *ino,
                char ***names)
{
  follow_lock_shared (vol);
  *ino = fsev_layout_lookup_path (vol->layout, path);
  *names = *ino ? paths_of (vol->layout, *ino) : NULL;
  follow_unlock (vol);
  if (*ino == 0)
    return -ENOENT;
  return *names ? 0 : -ENOMEM;
}

uint64_t
follow_pending_bytes (struct volume *vol)
{
  pthread_mutex_lock (&vol->pending_lock);
  pending_normalise (&vol->pending);
  uint64_t b = vol->pending.bytes;
  pthread_mutex_unlock (&vol->pending_lock);
  return b;
}

void
follow_get_stats (struct volume *vol, uint64_t *transactions, uint64_t *vetoed,
                  uint64_t *unattributed, uint64_t *not_followed)
{
  /* Summed over volumes by the caller. */
  *transactions += vol->stats.transactions;
  *vetoed += vol->stats.vetoed;
  *unattributed += __atomic_load_n (&vol->stats.unattributed_bytes,
                                    __ATOMIC_RELAXED);
  *not_followed += vol->stats.not_followed;
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

/* -D fsevent.check=1: the overlay against a fresh replay of the
 * journal from its tail, and the model against a fresh scan.
 */
static void
check_model (struct volume *vol)
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
      fsev_jbd2_walk (&vol->js, jread, &jv, replay_txn, &jv, NULL, NULL) < 0)
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
    fsev_overlay_read_entry (saved, e, raw_read, &raw, a);
    if (f)
      fsev_overlay_read_entry (fresh, f, raw_read, &raw, b);
    else
      raw_read (&raw, b, vol->bs, e->fsblk * vol->bs);
    if (memcmp (a, b, vol->bs) != 0)
      what = "the overlay differs from a fresh replay of the journal";
  }
  if (what == NULL) {
    struct view cv = { .vol = vol, .ov = fresh };
    struct fsev_layout *L2 = scan (&cv, err, sizeof err);
    if (L2 == NULL)
      what = "the committed view does not scan";
    else {
      struct fsev_change *ch;
      ssize_t n = fsev_diff (vol->layout, L2, was_named, vol, &ch);
      size_t nr, nr2;
      fsev_layout_inodes (vol->layout, &nr);
      fsev_layout_inodes (L2, &nr2);
      if (n != 0 || nr != nr2 || vol->layout->nruns != L2->nruns ||
          memcmp (vol->layout->runs, L2->runs, vol->layout->nruns * sizeof *vol->layout->runs))
        what = "the model differs from a fresh scan";
      if (n > 0)
        free (ch);
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

void
follow_plan_finish (struct follow_plan *p, struct log_batch *lb, int status)
{
  if (p == NULL)
    return;
  struct volume *vol = p->vol;
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
      /* Announced names: created, linked or renamed to; forgotten when
       * the inode is freed.
       */
      for (size_t i = 0; i < p->n; i++) {
        const struct item *it = &p->items[i];
        uint32_t ino = it->c.ino;
        if (!it->is_change || ino >= vol->named_bits)
          continue;
        if (it->freed_inode)
          vol->named[ino / 8] &= ~(1u << (ino % 8));
        else if (it->c.kind == FSEVENT_CREATE || it->c.kind == FSEVENT_LINK ||
                 it->c.kind == FSEVENT_RENAME)
          vol->named[ino / 8] |= 1u << (ino % 8);
      }
    }
    if (p->new_js)
      vol->js = p->js;
    if (p->new_head) {
      vol->head = p->head;
      vol->head_seq = p->head_seq;
      vol->head_known = true;
    }
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
        given_up (vol->pending.v[i].offset, vol->pending.v[i].length, &g);
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
  bool changed = status == 0 && (p->ntxns || p->new_js);
  free_plan (p);
  if (changed && fsevent_debug_check)
    check_model (vol);
}
