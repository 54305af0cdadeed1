/* plugin/follow-journal.c: finding commit points in the guest's
 * writes: which requests need the model exclusively (a commit block,
 * the journal superblock, a journal block the overlay still needs, a
 * metadata change outside the journal), whether data is a checkpoint
 * already decided, and reading the transactions a commit block closes
 * into the next overlay and the list of blocks they change.
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

/* --- Which requests need the exclusive path. --- */

bool
role_is_metadata (enum fsev_role r)
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
void
io_new_bytes (const struct io *io, void *buf, uint64_t offset, uint64_t len)
{
  if (io->op == FSEVENT_OP_WRITE)
    memcpy (buf, (const char *) io->buf + (offset - io->offset), len);
  else
    memset (buf, 0, len);
}

/* Which bytes a piece of a block is compared with. */
enum against {
  AGAINST_IMAGE_UNLESS_HELD,    /* the image, for blocks the overlay does
                                   not hold (held ones are checkpoints) */
  AGAINST_COMMITTED_COPY,       /* the overlay's copy, for blocks it holds */
  AGAINST_IMAGE_IN_LIVE_LOG,    /* the image, for journal blocks of
                                   transactions that may be replayed */
};

/* Journal block JBLK: inside the log of transactions that have
 * committed and may still be replayed (from the tail the journal
 * superblock names to where the next transaction starts)?
 */
static bool
in_live_log (const struct volume *vol, uint32_t jblk)
{
  if (!vol->journalled || !vol->head_known || vol->js.start == 0 ||
      jblk < vol->js.first || jblk >= vol->js.log_end)
    return false;
  uint32_t tail = vol->js.start, head = vol->head;
  if (tail <= head)
    return jblk >= tail && jblk < head;
  return jblk >= tail || jblk < head;     /* the log wraps */
}

/* Are journal blocks START .. NEXT - 1 (a transaction, wrapping at the
 * log's end) all inside the live log, in order from its tail?
 */
static bool
txn_in_live_log (const struct volume *vol, uint32_t start, uint32_t next)
{
  uint32_t first = vol->js.first, end = vol->js.log_end;
  if (end <= first || start < first || start >= end || next < first ||
      next >= end)
    return false;
  uint32_t last = next == first ? end - 1 : next - 1;
  if (!in_live_log (vol, start) || !in_live_log (vol, last))
    return false;
  /* Distances from the tail, around the log. */
  uint64_t len = end - first, tail = vol->js.start - first;
  uint64_t ds = (start - first + len - tail) % len;
  uint64_t dl = (last - first + len - tail) % len;
  return ds <= dl;
}

void
journal_track (struct volume *vol, const struct jtrack *v, size_t n)
{
  for (size_t i = 0; i < n; i++) {
    if (!txn_in_live_log (vol, v[i].start, v[i].next))
      continue;
    if (fsev_grow ((void **) &vol->tracked, &vol->tracked_cap,
                   vol->ntracked + 1, sizeof *vol->tracked) == -1) {
      vol->ntracked = 0;        /* forgotten: a tail there is read again */
      return;
    }
    vol->tracked[vol->ntracked++] = v[i];
  }
}

void
journal_prune (struct volume *vol)
{
  size_t k = 0;
  for (size_t i = 0; i < vol->ntracked; i++)
    if (txn_in_live_log (vol, vol->tracked[i].start, vol->tracked[i].next))
      vol->tracked[k++] = vol->tracked[i];
  vol->ntracked = k;
}

/* Do A and B lay out and check the log alike (what fs/jbd2.c's parser
 * reads them by; not INCOMPAT_REVOKE, which jbd2 sets at its first
 * revoke record)?
 */
bool
journal_same_format (const struct fsev_jsuper *a, const struct fsev_jsuper *b)
{
  return a->blocksize == b->blocksize && a->maxlen == b->maxlen &&
    a->first == b->first && a->log_end == b->log_end &&
    a->is_64bit == b->is_64bit && a->csum_v2 == b->csum_v2 &&
    a->csum_v3 == b->csum_v3 && a->tag_bytes == b->tag_bytes &&
    a->csum_seed == b->csum_seed;
}

/* Would recovery from the tail NJ names replay only what was decided
 * here (as the plan P stands)?  Yes when the tail is where the next
 * transaction starts (nothing to replay), or the start of a tracked
 * transaction: from there on, recovery reads tracked transactions
 * whose blocks nobody changed (io_rewrites_live_log refuses it) up to
 * the head.
 */
static bool
journal_tail_known (const struct volume *vol, const struct follow_plan *p,
                    const struct fsev_jsuper *nj)
{
  if (!journal_same_format (&vol->js, nj))
    return false;
  bool head_known = p->new_head || vol->head_known;
  uint32_t head = p->new_head ? p->head : vol->head;
  uint32_t head_seq = p->new_head ? p->head_seq : vol->head_seq;
  if (head_known && nj->start == head && nj->sequence == head_seq)
    return true;
  for (size_t i = 0; i < vol->ntracked; i++)
    if (vol->tracked[i].seq == nj->sequence &&
        vol->tracked[i].start == nj->start)
      return true;
  return false;
}

/* Does IO give any block piece of SEG other bytes than what WHAT says
 * it is compared with?  (True as well when that cannot be read.)
 */
static bool
io_differs (struct volume *vol, const struct io *io,
            const struct fsev_segment *seg, enum against what)
{
  unsigned char cur[65536], neu[65536];
  if (what == AGAINST_COMMITTED_COPY && vol->overlay->n == 0)
    return false;
  if (vol->bs > sizeof cur)
    return true;
  struct view v = { .vol = vol };
  for (uint64_t off = seg->offset; off < seg->offset + seg->length; ) {
    uint64_t blk = off / vol->bs;
    uint64_t end = (blk + 1) * vol->bs;
    if (end > seg->offset + seg->length)
      end = seg->offset + seg->length;
    const unsigned char *old = cur;
    const struct fsev_overlay_entry *e = NULL;
    bool look;
    switch (what) {
    case AGAINST_IMAGE_UNLESS_HELD:
      look = fsev_overlay_find (vol->overlay, blk) == NULL;
      break;
    case AGAINST_COMMITTED_COPY:
      look = (e = fsev_overlay_find (vol->overlay, blk)) != NULL;
      break;
    default:
      look = in_live_log (vol, (uint32_t) ((seg->position + (off - seg->offset))
                                           / vol->bs));
      break;
    }
    if (look) {
      if (e) {
        if (fsev_overlay_read_entry (vol->overlay, e, view_raw, &v, cur) == -1)
          return true;
        old = cur + (off - blk * vol->bs);
      }
      else if (view_raw (&v, cur, end - off, off) == -1)
        return true;
      io_new_bytes (io, neu, off, end - off);
      if (memcmp (old, neu, end - off) != 0)
        return true;
    }
    off = end;
  }
  return false;
}

/* Does IO change the committed content of a metadata block that the
 * overlay does not hold?
 */
bool
io_changes_metadata (struct volume *vol, const struct io *io,
                     const struct fsev_segment *seg)
{
  return io_differs (vol, io, seg, AGAINST_IMAGE_UNLESS_HELD);
}

/* Does IO write home a block the overlay holds with other bytes than
 * its committed copy?
 */
bool
io_rewrites_committed (struct volume *vol, const struct io *io,
                       const struct fsev_segment *seg)
{
  return io_differs (vol, io, seg, AGAINST_COMMITTED_COPY);
}

/* Does IO change the journal blocks of a transaction that may still
 * be replayed?
 */
bool
io_rewrites_live_log (struct volume *vol, const struct io *io,
                      const struct fsev_segment *seg)
{
  return io_differs (vol, io, seg, AGAINST_IMAGE_IN_LIVE_LOG);
}

/* Does the epoch hold any block of [OFFSET, OFFSET+LEN)?  (Model held.) */
bool
follow_epoch_touches (const struct volume *vol, uint64_t offset, uint64_t len)
{
  if (vol->epoch.n == 0 || len == 0)
    return false;
  for (uint64_t b = offset / vol->bs; b <= (offset + len - 1) / vol->bs; b++)
    if (epoch_get (&vol->epoch, b))
      return true;
  return false;
}

/* Is there a commit block among IO's whole blocks in SEG? */
/* The first bytes of the block at OFFSET as it will be after IO: from
 * the request when it covers them, else the image with the request on
 * top (a guest may write a commit block in pieces).  False on a read
 * error.
 */
bool
journal_block_head (const struct volume *vol, const struct io *io,
                    uint64_t offset, unsigned char head[64])
{
  if (io->offset <= offset && offset + 64 <= io->offset + io->count) {
    memcpy (head, (const char *) io->buf + (offset - io->offset), 64);
    return true;
  }
  struct view v = { .vol = (struct volume *) vol, .io = io };
  return view_raw (&v, head, 64, offset) == 0;
}

bool
io_has_commit_block (const struct volume *vol, const struct io *io,
                  const struct fsev_segment *seg)
{
  if (io->op != FSEVENT_OP_WRITE)
    return false;
  for (uint64_t off = seg->offset / vol->bs * vol->bs;
       off < seg->offset + seg->length; off += vol->bs) {
    uint32_t type, seq;
    unsigned char blk[64];
    if (journal_block_head (vol, io, off, blk) &&
        fsev_jbd2_header (blk, &type, &seq) && type == FSEV_JBD2_COMMIT)
      return true;
  }
  return false;
}

/* Is journal segment SEG wholly in the fast-commit area, as the journal
 * superblock followed here has it?  The model's FSEV_SEG_JOURNAL_FC is
 * not the answer: the model carves the area out as soon as the
 * filesystem has the fast_commit feature (mke2fs reserves it), but
 * jbd2 recovery reads the log up to s_maxlen until the journal's own
 * flag is set (at mount): a commit block written there before would be
 * replayed, unexamined (fuzz-follow found it:
 * fuzz/regress/fuzz-follow/commit-in-unflagged-fc-area.bin).
 */
static bool
seg_is_fast_commit (const struct volume *vol, const struct fsev_segment *seg)
{
  return (seg->flags & FSEV_SEG_JOURNAL_FC) &&
    seg->position / vol->bs >= vol->js.log_end;
}

bool
follow_segment_needs_exclusive (struct volume *vol, const struct io *io,
                                const struct fsev_segment *seg)
{
  if (seg->role == FSEV_ROLE_JOURNAL) {
    if (!vol->journalled)
      return vol->journal_unfollowed && (seg->flags & FSEV_SEG_JOURNAL_SB);
    if (seg_is_fast_commit (vol, seg))
      return false;             /* fast commits: followed at full commits */
    if (seg->flags & FSEV_SEG_JOURNAL_SB)
      return true;
    return fsev_overlay_refers (vol->overlay, seg->offset, seg->length) ||
      io_has_commit_block (vol, io, seg) ||
      io_rewrites_live_log (vol, io, seg);
  }
  if (role_is_metadata (seg->role))
    return io_changes_metadata (vol, io, seg) ||
      io_rewrites_committed (vol, io, seg) ||
      (!vol->journalled && follow_epoch_touches (vol, seg->offset, seg->length));
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
    if (e == NULL || fsev_overlay_read_entry (vol->overlay, e, view_raw, &v, cur) == -1)
      return false;
    io_new_bytes (io, neu, off, end - off);
    if (memcmp (cur + (off - blk * vol->bs), neu, end - off) != 0)
      return false;
    off = end;
  }
  return true;
}

bool
journal_find_txn (struct jview *jv, uint32_t cjblk, uint32_t seq,
          uint32_t hint, bool hint_ok, struct fsev_jtxn *txn)
{
  struct volume *vol = jv->v->vol;
  char err[256];
  if (hint_ok) {
    enum fsev_jresult r = fsev_jbd2_parse_txn (&vol->js, view_jread, jv, hint, seq, txn,
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
    if (view_jread (jv, pos, buf) == -1)
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
  enum fsev_jresult r = fsev_jbd2_parse_txn (&vol->js, view_jread, jv, start, seq, txn,
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

void
prep_add_blocks (struct prep *pr, uint64_t first, uint64_t n)
{
  for (uint64_t b = first; b < first + n; b++) {
    if (fsev_grow ((void **) &pr->blocks, &pr->blocks_cap, pr->nblocks + 1,
                   sizeof *pr->blocks) == -1) {
      pr->oom = true;
      return;
    }
    pr->blocks[pr->nblocks++] = b;
  }
}

struct fsev_overlay *
plan_next_overlay (struct follow_plan *p)
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
  if (fsev_overlay_read_entry (x->ov, e, view_raw, x->raw, a) == -1 ||
      view_raw (x->raw, b, vol->bs, e->fsblk * vol->bs) == -1 ||
      memcmp (a, b, vol->bs) != 0)
    x->differs = true;
}

void
prep_refuse (struct prep *pr, const char *why)
{
  if (pr->refuse_why == NULL)
    pr->refuse_why = why;
}

/* TXN (PR's from now on) takes effect with this request: its copies
 * go into the next overlay, the blocks it changes into the list the
 * model update reads.  0, or -1 when out of memory (PR->oom).
 */
static int
prep_add_txn (struct prep *pr, struct fsev_jtxn *txn)
{
  struct follow_plan *p = pr->p;
  struct volume *vol = p->vol;
  /* Found twice (its commit block, and a new tail that points at it):
   * decided once.
   */
  for (size_t k = 0; k < pr->ntxns; k++)
    if (pr->txns[k].sequence == txn->sequence &&
        pr->txns[k].start == txn->start &&
        pr->txns[k].commit_jblk == txn->commit_jblk) {
      fsev_jtxn_free (txn);
      return 0;
    }
  struct fsev_overlay *ov = plan_next_overlay (p);
  if (ov == NULL ||
      fsev_overlay_apply (ov, txn, view_jmap, &pr->jv, vol->layout->fs_blocks) == -1 ||
      fsev_grow ((void **) &pr->txns, &pr->cap, pr->ntxns + 1,
                 sizeof *pr->txns) == -1) {
    fsev_jtxn_free (txn);
    pr->oom = true;
    return -1;
  }
  pr->txns[pr->ntxns++] = *txn;
  for (size_t k = 0; k < txn->ntags; k++)
    if (txn->tags[k].csum_ok)
      prep_add_blocks (pr, txn->tags[k].fsblk, 1);
  for (size_t k = 0; k < txn->nrevoked; k++)
    prep_add_blocks (pr, txn->revoked[k], 1);
  p->sequence = txn->sequence;
  p->ntxns++;
  return 0;
}

/* A deep copy of T into C: 0 or -1. */
static int
jtxn_copy (const struct fsev_jtxn *t, struct fsev_jtxn *c)
{
  *c = *t;
  c->tags = NULL;
  c->revoked = NULL;
  if (t->ntags && (c->tags = malloc (t->ntags * sizeof *c->tags)) == NULL)
    return -1;
  if (t->nrevoked &&
      (c->revoked = malloc (t->nrevoked * sizeof *c->revoked)) == NULL) {
    free (c->tags);
    return -1;
  }
  if (t->ntags)
    memcpy (c->tags, t->tags, t->ntags * sizeof *c->tags);
  if (t->nrevoked)
    memcpy (c->revoked, t->revoked, t->nrevoked * sizeof *c->revoked);
  return 0;
}

struct tail_walk {
  struct prep *pr;
  bool tracked;                 /* stopped at a tracked transaction */
};

static int
tail_txn (const struct fsev_jtxn *txn, void *opaque)
{
  struct tail_walk *w = opaque;
  const struct volume *vol = w->pr->p->vol;
  for (size_t i = 0; i < vol->ntracked; i++)
    if (vol->tracked[i].seq == txn->sequence &&
        vol->tracked[i].start == txn->start) {
      w->tracked = true;        /* from here on, decided already */
      return -1;
    }
  struct fsev_jtxn c;
  if (jtxn_copy (txn, &c) == -1) {
    w->pr->oom = true;
    return -1;
  }
  return prep_add_txn (w->pr, &c);
}

/* The guest wrote journal superblock NJ, whose tail (s_start,
 * s_sequence) is not one journal_tail_known vouches for: what recovery
 * would replay from there is read now and decided with this request,
 * as a commit block's transaction is.  Without this a guest could let
 * a harmless transaction commit, rewrite its logged copies once it was
 * checkpointed (the log is no longer live there), then move the tail
 * back onto it: recovery would replay the rewritten copies, which
 * nobody decided (fuzz-follow's revive seeds found it; regression
 * inputs fuzz/regress/fuzz-follow/revive-*).  Likewise a tail pointed
 * at log blocks no commit block brought here, or a journal superblock
 * that changes how the log is checked (checksum features, UUID).
 */
static void
prep_walk_tail (struct prep *pr, const struct fsev_jsuper *nj)
{
  struct follow_plan *p = pr->p;
  struct volume *vol = p->vol;
  struct tail_walk w = { pr, false };
  uint32_t next, next_seq;
  int n = fsev_jbd2_walk (nj, view_jread, &pr->jv, tail_txn, &w, &next, &next_seq);
  if (n < 0) {
    if (!w.tracked && !pr->oom)
      prep_refuse (pr, "the journal cannot be read from the tail its new "
                   "superblock names");
    return;
  }
  if (n > 0)
    VDEBUG (vol, "journal: the new tail (block %" PRIu32 ", sequence %"
            PRIu32 ") makes %d transactions replayable: decided now",
            nj->start, nj->sequence, n);
  if (n > 0 && !vol->head_known && !p->new_head) {
    p->new_head = true;
    p->head = next;
    p->head_seq = next_seq;
  }
}

int
prep_segment (const struct fsev_segment *seg, void *opaque)
{
  struct prep *pr = opaque;
  struct follow_plan *p = pr->p;
  struct volume *vol = p->vol;
  const struct io *io = pr->io;

  if (role_is_metadata (seg->role)) {
    /* A legitimate checkpoint writes home what the journal committed,
     * byte for byte; anything else is a change nobody decided.
     */
    if (vol->journalled && io_rewrites_committed (vol, io, seg))
      prep_refuse (pr, "a home write of a block differs from its "
                   "committed journal copy");
    if (io_changes_metadata (vol, io, seg) ||
        (!vol->journalled && follow_epoch_touches (vol, seg->offset, seg->length))) {
      pr->meta_changed = true;
      prep_add_blocks (pr, seg->offset / vol->bs,
                  (seg->offset + seg->length + vol->bs - 1) / vol->bs -
                  seg->offset / vol->bs);
    }
    return 0;
  }
  if (seg->role == FSEV_ROLE_JOURNAL && !vol->journalled &&
      vol->journal_unfollowed && (seg->flags & FSEV_SEG_JOURNAL_SB)) {
    /* The journal was not followed from start-up (its superblock did
     * not parse).  Its log is then nobody's business as long as no
     * recovery would read it; a superblock that parses would make it
     * one (a guest writes a good superblock, then a transaction:
     * jbd2 recovery replays it, undecided; fuzz-follow found it,
     * fuzz/regress/fuzz-follow/unfollowed-journal-made-valid.bin).
     * Following a journal from there is not done: refused.
     */
    char err[256];
    struct fsev_jsuper nj;
    unsigned char *buf = malloc (vol->bs);
    if (buf == NULL) {
      pr->oom = true;
      return -1;
    }
    if (view_raw (pr->jv.v, buf, vol->bs, vol->jsb_offset) == -1 ||
        fsev_jbd2_parse_super (buf, vol->bs, &nj, err, sizeof err) == 0)
      prep_refuse (pr, "a write makes the journal superblock, which did not "
                   "parse at start-up, one that parses: that journal is not "
                   "followed");
    free (buf);
    /* Still a block the model reads: where the journal's runs are cut
     * (its log, its fast-commit area) comes from it.  Changed, it is
     * decided like metadata (and the update scans again); left out,
     * the model kept the old cut (fuzz-follow: zeroing it moved the
     * cut in a fresh scan, not in the model).
     */
    if (io_changes_metadata (vol, io, seg) ||
        follow_epoch_touches (vol, seg->offset, seg->length)) {
      pr->meta_changed = true;
      prep_add_blocks (pr, seg->offset / vol->bs,
                       (seg->offset + seg->length + vol->bs - 1) / vol->bs -
                       seg->offset / vol->bs);
    }
    return 0;
  }
  if (seg->role != FSEV_ROLE_JOURNAL || !vol->journalled ||
      seg_is_fast_commit (vol, seg))
    return 0;

  if (seg->flags & FSEV_SEG_JOURNAL_SB) {
    char err[256];
    unsigned char *buf = malloc (vol->bs);
    if (buf == NULL) {
      pr->oom = true;
      return -1;
    }
    int r = view_raw (pr->jv.v, buf, vol->bs, vol->jsb_offset);
    struct fsev_jsuper nj;
    if (r == 0 && fsev_jbd2_parse_super (buf, vol->bs, &nj, err, sizeof err) == 0) {
      struct fsev_overlay *ov = plan_next_overlay (p);
      if (ov) {
        struct expire_check x = { .raw = pr->jv.v, .ov = ov };
        fsev_overlay_expire (ov, nj.sequence, nj.start == 0, check_expired, &x);
        if (x.differs)
          pr->rescan = true;
      }
      /* The journal's areas are part of the model. */
      if (nj.maxlen != vol->js.maxlen || nj.first != vol->js.first ||
          nj.log_end != vol->js.log_end)
        pr->rescan = true;
      /* And they are a scan's reading of the superblock on the image:
       * when what this write replaces did not parse (a guest wrote a
       * broken one, kept out of vol->js but read by the scans since),
       * the model is scanned again even if the new one equals the last
       * good one (fuzz-follow found it:
       * fuzz/regress/fuzz-follow/jsb-valid-again-model-check.bin).
       */
      else {
        struct view before = { .vol = vol };
        struct fsev_jsuper oj;
        if (view_raw (&before, buf, vol->bs, vol->jsb_offset) == -1 ||
            fsev_jbd2_parse_super (buf, vol->bs, &oj, err, sizeof err) == -1)
          pr->rescan = true;
      }
      /* What recovery would replay from the new tail must have been
       * decided (prep_walk_tail).
       */
      if (nj.start != 0 && !journal_tail_known (vol, p, &nj))
        prep_walk_tail (pr, &nj);
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
    else {
      VDEBUG (vol, "journal: the guest wrote a journal superblock that "
              "does not parse (%s): kept the last good one",
              r == 0 ? err : "read error");
      /* The model's journal areas are a scan's reading of the journal
       * superblock on the image, which that scan may still take (it
       * checks less than jbd2 does): scanned again, so that the model
       * stays what a fresh scan makes of the committed view.
       */
      pr->rescan = true;
    }
    free (buf);
    return 0;
  }

  /* The log.  Committed transactions that may still be replayed are
   * never rewritten by a guest's kernel (it moves the tail first).
   */
  if (io_rewrites_live_log (vol, io, seg))
    prep_refuse (pr, "a write changes a committed transaction in the "
                 "journal before its checkpoint");
  if (io->op != FSEVENT_OP_WRITE)
    return 0;
  /* Commit blocks among the blocks the request writes, whole or in
   * part (assembled with what the image holds).
   */
  for (uint64_t off = seg->offset / vol->bs * vol->bs;
       off < seg->offset + seg->length; off += vol->bs) {
    uint32_t type, seq;
    unsigned char head[64];
    if (!journal_block_head (vol, io, off, head) ||
        !fsev_jbd2_header (head, &type, &seq) || type != FSEV_JBD2_COMMIT)
      continue;
    uint32_t cjblk = (uint32_t) ((seg->position + (off - seg->offset)) / vol->bs);
    uint32_t hint = p->new_head ? p->head : vol->head;
    bool hint_ok = (p->new_head || vol->head_known) &&
      (p->new_head ? p->head_seq : vol->head_seq) == seq;
    struct fsev_jtxn txn;
    if (!journal_find_txn (&pr->jv, cjblk, seq, hint, hint_ok, &txn)) {
      vol->stats.not_followed++;
      prep_refuse (pr, "a commit block whose transaction cannot be read");
      continue;
    }
    uint32_t txn_next = txn.next;
    if (prep_add_txn (pr, &txn) == -1)
      return -1;
    p->new_head = true;
    p->head = txn_next;
    p->head_seq = seq + 1;
  }
  return 0;
}
