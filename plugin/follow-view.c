/* plugin/follow-view.c: the views a volume reads: the raw image (with
 * a request not yet written on top), the committed view (plus the
 * overlay of committed journal blocks, and on ext2 the held epoch),
 * journal blocks by number, and a full scan of a view (start-up, and
 * the fallback); and the block cache one commit point's views share.
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

#include "blockcache.h"
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

bool
follow_was_named (uint32_t ino, void *opaque)
{
  const struct volume *vol = opaque;
  return ino < vol->named_bits && (vol->named[ino / 8] & (1u << (ino % 8)));
}

void
follow_remember_names (struct volume *vol, const struct fsev_layout *L)
{
  size_t n;
  const struct fsev_inode *in = fsev_layout_inodes (L, &n);
  for (size_t i = 0; i < n; i++)
    if (in[i].ino < vol->named_bits && fsev_layout_names (L, in[i].ino, NULL, 0))
      vol->named[in[i].ino / 8] |= 1u << (in[i].ino % 8);
}


/* --- Reading the views. --- */


/* --- The request's block cache (see struct vcache). --- */

static const unsigned char *
vcache_find (const struct vcache *c, uint64_t offset)
{
  for (unsigned i = 0; i < c->n; i++)
    if (c->off[i] == offset)
      return c->data + (size_t) i * c->bs;
  return NULL;
}

static bool
vcache_ready (struct vcache *c, struct volume *vol)
{
  if (c->data)
    return true;
  const unsigned bs = vol->bs;
  if (c->vol != vol || bs == 0 || bs > VCACHE_BYTES / 2)
    return false;
  /* The volume's buffers: the block size never changes under a model. */
  if (vol->vcache_data == NULL) {
    vol->vcache_data = malloc (VCACHE_BYTES);
    vol->vcache_off = malloc (VCACHE_BYTES / bs * sizeof *vol->vcache_off);
    if (vol->vcache_data == NULL || vol->vcache_off == NULL) {
      free (vol->vcache_data);
      free (vol->vcache_off);
      vol->vcache_data = NULL;
      vol->vcache_off = NULL;
      return false;             /* no cache: reads go to the device */
    }
  }
  c->bs = bs;
  c->cap = VCACHE_BYTES / bs;
  c->data = vol->vcache_data;
  c->off = vol->vcache_off;
  return true;
}

/* Read the block at volume offset OFFSET into the cache's next slot:
 * 0, or -1 when the cache is full (nothing read) or the read fails.
 */
static int
vcache_fill (struct vcache *c, struct volume *vol, uint64_t offset)
{
  if (c->n == c->cap)
    return -1;
  unsigned char *at = c->data + (size_t) c->n * c->bs;
  uint64_t gen;
  if (blockcache_get (vol->offset + offset, c->bs, at, &gen))
    c->kept++;
  else {
    if (device_read (vol->dev, at, c->bs, vol->offset + offset) == -1)
      return -1;
    blockcache_put_read (gen, vol->offset + offset, c->bs, at);
    c->reads++;
  }
  c->off[c->n++] = offset;
  return 0;
}

void
vcache_free (struct vcache *c)
{
  if (c->data && fsevent_debug_commit_timing)
    nbdkit_debug ("commit: block cache: %u blocks, %" PRIu64 " reads, %"
                  PRIu64 " from the recent blocks, %" PRIu64 " hits",
                  c->n, c->reads, c->kept, c->hits);
  c->data = NULL;                /* the volume's: kept for the next one */
  c->off = NULL;
  c->n = c->cap = 0;
}

/* The device's bytes for a read of a view: through the cache when the
 * view has one and the read lies in one block (a group descriptor or a
 * byte of a bitmap is read with its whole block, which the next such
 * read finds).
 */
static int
view_device_read (const struct view *v, void *buf, size_t count, uint64_t offset)
{
  struct vcache *c = v->cache;
  unsigned bs = v->vol->bs;
  uint64_t in = bs ? offset % bs : 0, blk = offset - in;
  if (c && count && in + count <= bs && vcache_ready (c, v->vol)) {
    const unsigned char *hit = vcache_find (c, blk);
    if (hit) {
      c->hits++;
      memcpy (buf, hit + in, count);
      return 0;
    }
    if (vcache_fill (c, v->vol, blk) == 0) {
      memcpy (buf, c->data + (size_t) (c->n - 1) * bs + in, count);
      return 0;
    }
    uint64_t gen;               /* the request's cache is full */
    if (count == bs && blockcache_get (v->vol->offset + offset, bs, buf, &gen))
      return 0;
  }
  return device_read (v->vol->dev, buf, count, v->vol->offset + offset);
}

/* The image with the request's bytes on top. */
int
view_raw (void *opaque, void *buf, size_t count, uint64_t offset)
{
  const struct view *v = opaque;
  const struct io *io = v->io;
  /* A range the request covers whole is the request's bytes: reading
   * the image under it would only be overwritten (and a commit block
   * written where the image has a hole costs the host a page of zeros).
   */
  bool covered = io && io->offset <= offset &&
    offset + count <= io->offset + io->count;
  if (!covered) {
    if (view_device_read (v, buf, count, offset) == -1)
      return -1;
    if (v->with_epoch)
      epoch_patch (&v->vol->epoch, buf, count, offset);
  }
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
int
view_committed (void *opaque, void *buf, size_t count, uint64_t offset)
{
  const struct view *v = opaque;
  /* Blocks the overlay holds whole come from the journal alone: the
   * image's bytes under them would only be overwritten.
   */
  if (!(v->ov && fsev_overlay_covers (v->ov, offset, count)) &&
      view_raw (opaque, buf, count, offset) == -1)
    return -1;
  if (v->ov && fsev_overlay_patch (v->ov, view_raw, opaque, buf, count,
                                   offset) == -1)
    return -1;
  return 0;
}


int
view_jread (void *opaque, uint32_t jblk, void *buf)
{
  const struct jview *j = opaque;
  uint64_t pblk = fsev_layout_journal_pblk (j->L, jblk);
  if (pblk == 0) {
    errno = EIO;
    return -1;
  }
  /* No read-ahead past the block asked for: the log beyond a
   * transaction is cold on the host, and reading it made the slowest
   * commits (p99 hold 0.51 ms against 0.21 ms on a 1,000,000-file
   * image, scripts/bench-commit-hold).
   */
  const unsigned bs = j->v->vol->bs;
  return view_raw (j->v, buf, bs, pblk * bs);
}

uint64_t
view_jmap (void *opaque, uint32_t jblk)
{
  const struct jview *j = opaque;
  return fsev_layout_journal_pblk (j->L, jblk);
}

static void
view_build_warning (void *opaque, const char *msg)
{
  const struct volume *vol = opaque;
  nbdkit_debug ("partition %u: layout: warning: %s", vol->partition, msg);
}

/* Scan the committed view V. */
struct fsev_layout *
view_scan (struct view *v, char *err, size_t errlen)
{
  struct volume *vol = v->vol;
  struct fsev_source src = {
    .read = view_committed, .opaque = v, .size = vol->length,   /* a resize may have grown it */
  };
  struct fsev_build_options opts = {
    .warn = view_build_warning, .opaque = vol, .max_warnings = 20,
    .no_allocated_gaps = true,
  };
  return fsev_layout_build (&src, &opts, err, errlen);
}

/* --- Start and end. --- */

int
view_replay_txn (const struct fsev_jtxn *txn, void *opaque)
{
  struct jview *j = opaque;
  return fsev_overlay_apply (j->v->vol->overlay, txn, view_jmap, j, j->L->fs_blocks);
}
