/* fuzz/fuzz-follow.c: libFuzzer target for the engine's request path:
 * the journal follower and protect= (plugin/engine.c, writes.c,
 * follow*.c, protect.c, over fs/), driven the way nbdkit drives it,
 * over an in-memory device, with no nbdkit.
 *
 * The input is a small image and a sequence of guest requests:
 *
 *   u8  flags     bit 0: reseal jbd2 checksums in written blocks (below)
 *                 bits 1-2: the protect= glob, globs[] below: /p/secret,
 *                 /p and everything below it, every entry of /p,
 *                 entries of /p whose names start with s
 *                 bit 3: -D fsevent.check=1 (the engine compares its
 *                 model with a fresh scan after every commit)
 *   u8  veto      a second handler after protect vetoes the Nth event
 *                 (of any kind) of the input when bit N % 8 is set
 *   u16 kib       device size in KiB (64 KiB to 4 MiB)
 *   u16 nchunks   the image: zeros but for these chunks
 *   nchunks x { u32 offset, u16 len, len bytes }
 *   then requests, at most 64, until the input ends:
 *   { u8 op, u8 region, u16 index, u16 offset, u16 len, [len bytes] }
 *
 * (Little-endian.)  op % 8: 0, 6, 7 write; 1 write with FUA; 2 zero;
 * 3 zero with MAY_TRIM and FUA; 4 trim; 5 flush.  Writes carry their
 * bytes (at most 16 KiB); zero and trim none.  Where a request lands
 * is a filesystem block of a list picked by region % 5, plus offset
 * bytes: 0 every block (index is the block number); 1 the journal's
 * blocks in log order (index is the journal block); 2 the protected
 * files' blocks (their inode-table blocks, data, extent-tree and
 * indirect blocks), /p's and the root directory's; 3 free blocks;
 * 4 metadata blocks (superblocks, descriptors, bitmaps, inode tables,
 * directories, tree blocks, xattr blocks).  Lists 1 and 2 come from
 * the initial committed view read with libext2fs, 3 and 4 from the
 * engine's model at start-up (the first 64 blocks of each run); index
 * is taken modulo the list's length (an empty list: block index).
 * Requests are clipped to the device.  After the last request the
 * harness flushes.
 *
 * Resealing (flag bit 0) recomputes, in each whole block a write puts
 * into the journal, what csum v2/v3 checks: the journal superblock's
 * checksum, a descriptor's tag checksums (over the logged blocks, from
 * the same write or the device) and its tail, a revoke block's tail, a
 * commit block's checksum; otherwise nearly every mutated transaction
 * would only test the checksum check.  It is what a hostile guest does
 * too (debugfs writes checksums).  A descriptor is resealed over its
 * logged blocks as they are when it is written, so the seeds write the
 * copies first.
 *
 * The image should be an ext2/3/4 filesystem holding /p/secret (and
 * /p/big): fuzz/follow-seeds.py (run by fuzz/make-seeds.sh) writes
 * seeds with kernel-like transactions that protect= must refuse or
 * let through.  The engine is configured with protect=GLOB (and the
 * vetoing handler), started on the device, and sent the requests;
 * engine_stop frees everything at the end of each input (leaks are
 * findings).
 *
 * Oracles, besides the sanitizers (ASan, UBSan, leaks) and libFuzzer's
 * timeout:
 *
 * 1. The protected files never change in the committed view: the
 *    device with what jbd2 recovery would replay on top (the journal
 *    inode the superblock names, walked from s_start by fs/jbd2.c,
 *    applied by fs/overlay.c, whatever the needs_recovery flag says),
 *    read with libext2fs (checksum errors ignored, as the kernel's
 *    view of a bad checksum is not the engine's business).  Each
 *    protected path that holds a regular file in the initial view
 *    (after replaying its journal, as the engine does at start-up)
 *    must, after every request that succeeded and after the final
 *    flush, still hold it: the same inode number, mode, owner, group,
 *    size, link count, user-settable flags (chattr's: the engine
 *    leaves the others to the kernel, fs/diff.c) and bytes (up to
 *    1 MiB).  Times are not compared (reading a file updates its
 *    atime, which protect= lets through).  A directory at a protected
 *    path is not checked: an exact glob does not cover the entries
 *    made in it, nor the link count a subdirectory adds.  Nor is a
 *    file in a reserved inode (below s_first_ino): the kernel refuses
 *    to open it, and the engine does not watch it (fs/diff.c); unless
 *    s_first_ino lies past the inode count, a superblock the kernel
 *    does not mount and e2fsck repairs from a backup (s_first_ino 11).
 *    Nor is a file the engine's model does not name at that path at
 *    start-up: where an image handed over is read one way by the model
 *    and another by the kernel (an inode the bitmap calls free, a
 *    directory whose first entry is not its own ".", both of which the
 *    kernel opens), the start-up build is at fault, not the request
 *    path (fuzz/open/README; a guest cannot make either while the
 *    engine runs: both are namespace changes it decides).  protect= is
 *    the first handler and denies every change to these files, and the
 *    other handler only vetoes, so no decision ever allows a change:
 *    any difference is a finding.  A path that no longer resolves
 *    while the view opens is one too (a protected file's names must
 *    not change).  A view libext2fs cannot open is not checked (it
 *    says nothing about the file).
 * 2. The device is read only inside its size, and at most 64 times its
 *    size per request: a bound on the work, loose (a rescan reads the
 *    filesystem's metadata once; each commit block a request carries,
 *    up to 16 in 16 KiB of 1 KiB blocks, costs at most two laps of the
 *    log to find and parse its transaction; a new journal tail one
 *    more).  Over a sample of the corpus the most one request read was
 *    about half the device.
 * 3. On a journalled filesystem the engine writes nothing to the
 *    device but the request itself: the same range, the same bytes.
 *    (On ext2 a flush, a FUA request or a full epoch writes held
 *    metadata of earlier requests.)
 * 4. With flag bit 3, the engine's own model check (-D fsevent.check)
 *    must find its model equal to a fresh scan after every commit.
 *    The check's other half, the overlay against a fresh replay of the
 *    journal from its tail, is no oracle here: a guest can commit
 *    transactions that recovery would never replay (a commit block
 *    written while the journal superblock says the journal is clean,
 *    or off the chain from its tail), which the engine decides and
 *    keeps in its overlay all the same -- more than recovery would
 *    apply, all of it decided, so nothing protect= relies on.
 *
 * FUZZ_FOLLOW_DEBUG=1 in the environment prints, for a replayed input,
 * the engine's messages and each request with its outcome;
 * FUZZ_FOLLOW_DUMP=PREFIX writes the device and the committed view at
 * a finding into PREFIX.dev and PREFIX.view (and the device before the
 * first request into PREFIX.start); FUZZ_FOLLOW_LOG=FILE
 * gives the engine log=FILE (both phases); FUZZ_FOLLOW_TIMING=1 (with
 * FUZZ_FOLLOW_DEBUG) says what each commit point re-read.
 */
#include <config.h>

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NBDKIT_API_VERSION 2
#include <nbdkit-plugin.h>

#include <ext2fs/ext2fs.h>

#include "device.h"
#include "engine.h"
#include "follow.h"
#include "follow-internal.h"
#include "handlers.h"
#include "jbd2.h"
#include "log.h"
#include "overlay.h"
#include "source.h"
#include "volumes.h"

#define MIN_DEVICE (64u << 10)
#define MAX_DEVICE (4u << 20)
#define MAX_REQUESTS 64
#define MAX_WRITE (16u << 10)
#define MAX_FILE (1u << 20)
#define MAX_LIST 4096           /* blocks in a region's list */
#define READ_BOUND 64           /* device sizes read per request, at most */

int LLVMFuzzerTestOneInput (const uint8_t *data, size_t size);

static int debug = -1;

static void
dbg (const char *fmt, ...)
{
  if (debug <= 0)
    return;
  va_list ap;
  va_start (ap, fmt);
  vfprintf (stderr, fmt, ap);
  va_end (ap);
}

/* --- What nbdkit gives the plugin. --- */

/* Oracle 4: the model check's failures that compare the model with a
 * fresh scan (not those about the overlay and the journal, see the
 * header comment), and the first one's message.
 */
static unsigned model_check_failures;
static char model_check_msg[512];

void
nbdkit_verror (const char *fs, va_list args)
{
  char msg[1024];
  vsnprintf (msg, sizeof msg, fs, args);
  if (debug > 0)
    fprintf (stderr, "nbdkit: error: %s\n", msg);
  if (strstr (msg, "model check failed") &&
      !strstr (msg, "the overlay differs from a fresh replay") &&
      !strstr (msg, "the journal does not replay") &&
      !strstr (msg, "the committed view does not scan") &&
      model_check_failures++ == 0)
    snprintf (model_check_msg, sizeof model_check_msg, "%s", msg);
}

void
nbdkit_error (const char *fs, ...)
{
  va_list ap;
  va_start (ap, fs);
  nbdkit_verror (fs, ap);
  va_end (ap);
}

void
nbdkit_vdebug (const char *fs, va_list args)
{
  if (debug > 0) {
    fprintf (stderr, "nbdkit: debug: ");
    vfprintf (stderr, fs, args);
    fprintf (stderr, "\n");
  }
}

void
nbdkit_debug (const char *fs, ...)
{
  va_list ap;
  va_start (ap, fs);
  nbdkit_vdebug (fs, ap);
  va_end (ap);
}

char *
nbdkit_absolute_path (const char *path)
{
  return strdup (path);
}

char *
nbdkit_realpath (const char *path)
{
  return realpath (path, NULL);
}

int64_t nbdkit_peer_pid (void) { return -1; }
int64_t nbdkit_peer_uid (void) { return -1; }
int64_t nbdkit_peer_gid (void) { return -1; }

/* --- The device: memory. --- */

struct request {
  int op;                       /* FSEVENT_OP_*; -1: a flush */
  uint64_t offset, count;
  const unsigned char *buf;
};

struct mem {
  unsigned char *b;
  uint64_t size;
  uint64_t read_bytes;          /* in the current request */
  bool check_writes;            /* oracle 3 */
  const struct request *cur;
};

static void
io_check (struct mem *m, int op, const void *buf, uint64_t count,
          uint64_t offset)
{
  if (offset > m->size || count > m->size - offset) {
    fprintf (stderr, "fuzz-follow: the engine writes %" PRIu64 " bytes at %"
             PRIu64 ", outside the device\n", count, offset);
    abort ();
  }
  const struct request *r = m->cur;
  if (!m->check_writes || r == NULL)
    return;
  if (r->op != op || offset < r->offset ||
      offset + count > r->offset + r->count ||
      (buf && memcmp (buf, r->buf + (offset - r->offset), count) != 0)) {
    fprintf (stderr, "fuzz-follow: request op %d at %" PRIu64 " (%" PRIu64
             " bytes) reaches the device as op %d at %" PRIu64 " (%" PRIu64
             " bytes)%s\n", r->op, r->offset, r->count, op, offset, count,
             r->op == op ? " or with other bytes" : "");
    abort ();
  }
}

static int
mem_pread (struct device *d, void *buf, uint32_t count, uint64_t offset)
{
  struct mem *m = d->opaque;
  if (offset > m->size || count > m->size - offset) {
    fprintf (stderr, "fuzz-follow: the engine reads %" PRIu32 " bytes at %"
             PRIu64 ", outside the device\n", count, offset);
    abort ();
  }
  memcpy (buf, m->b + offset, count);
  m->read_bytes += count;
  return 0;
}

static int
mem_pwrite (struct device *d, const void *buf, uint32_t count,
            uint64_t offset, bool fua)
{
  struct mem *m = d->opaque;
  io_check (m, FSEVENT_OP_WRITE, buf, count, offset);
  memcpy (m->b + offset, buf, count);
  return 0;
}

static int
mem_zero (struct device *d, uint32_t count, uint64_t offset, bool may_trim,
          bool fast, bool fua)
{
  struct mem *m = d->opaque;
  io_check (m, FSEVENT_OP_ZERO, NULL, count, offset);
  memset (m->b + offset, 0, count);
  return 0;
}

static int
mem_trim (struct device *d, uint32_t count, uint64_t offset, bool fua)
{
  struct mem *m = d->opaque;
  io_check (m, FSEVENT_OP_TRIM, NULL, count, offset);
  memset (m->b + offset, 0, count);   /* the worst a trim may do */
  return 0;
}

static int
mem_flush (struct device *d)
{
  return 0;
}

/* --- Reading a filesystem in memory with libext2fs. --- */

struct memsrc {
  const unsigned char *b;
  uint64_t size;
};

static int
memsrc_read (void *opaque, void *buf, size_t count, uint64_t offset)
{
  const struct memsrc *s = opaque;
  if (offset > s->size || count > s->size - offset) {
    errno = EIO;
    return -1;
  }
  memcpy (buf, s->b + offset, count);
  return 0;
}

static ext2_filsys
open_fs (struct fsev_source *src, struct memsrc *ms, const unsigned char *b,
         uint64_t size)
{
  *ms = (struct memsrc) { b, size };
  *src = (struct fsev_source) { .read = memsrc_read, .opaque = ms,
                                .size = size };
  ext2_filsys fs;
  if (fsev_source_open_fs (src, EXT2_FLAG_IGNORE_CSUM_ERRORS, &fs) != 0)
    return NULL;
  return fs;
}

/* The journal inode of FS, as jbd2 recovery (e2fsck) finds it. */
struct jnl {
  ext2_filsys fs;
  struct ext2_inode inode;
  ext2_ino_t ino;
  const struct memsrc *dev;
  struct fsev_overlay *ov;
};

static uint64_t
jnl_map (void *opaque, uint32_t jblk)
{
  struct jnl *j = opaque;
  blk64_t p = 0;
  if (ext2fs_bmap2 (j->fs, j->ino, &j->inode, NULL, 0, jblk, NULL, &p) != 0)
    return 0;
  if (p >= ext2fs_blocks_count (j->fs->super) ||
      (p + 1) * j->fs->blocksize > j->dev->size)
    return 0;
  return p;
}

static int
jnl_read (void *opaque, uint32_t jblk, void *buf)
{
  struct jnl *j = opaque;
  uint64_t p = jnl_map (j, jblk);
  if (p == 0)
    return -1;
  memcpy (buf, j->dev->b + p * j->fs->blocksize, j->fs->blocksize);
  return 0;
}

static int
jnl_replay (const struct fsev_jtxn *txn, void *opaque)
{
  struct jnl *j = opaque;
  return fsev_overlay_apply (j->ov, txn, jnl_map, j,
                             ext2fs_blocks_count (j->fs->super));
}

/* The journal of the filesystem on DEV: parsed into *JS and mapped in
 * J (J->fs open), or false.
 */
static bool
jnl_open (struct jnl *j, struct fsev_source *src, const struct memsrc *dev,
          struct memsrc *ms, struct fsev_jsuper *js)
{
  memset (j, 0, sizeof *j);
  j->dev = dev;
  j->fs = open_fs (src, ms, dev->b, dev->size);
  if (j->fs == NULL)
    return false;
  j->ino = j->fs->super->s_journal_inum;
  unsigned char *buf = malloc (j->fs->blocksize);
  char err[256];
  if (buf == NULL || !ext2fs_has_feature_journal (j->fs->super) || j->ino == 0 ||
      j->ino > j->fs->super->s_inodes_count ||
      ext2fs_read_inode (j->fs, j->ino, &j->inode) != 0 ||
      jnl_read (j, 0, buf) == -1 ||
      fsev_jbd2_parse_super (buf, j->fs->blocksize, js, err, sizeof err) == -1) {
    free (buf);
    j->ino = 0;
    return true;                /* the filesystem, without a journal */
  }
  free (buf);
  return true;
}

/* The committed view of DEV (SIZE bytes) into VIEW: DEV with what jbd2
 * recovery would replay on top.  0, or -1 when DEV holds no filesystem
 * libext2fs opens (VIEW is then DEV).
 */
static int
committed_view (const unsigned char *dev, uint64_t size, unsigned char *view)
{
  struct memsrc d = { dev, size }, ms;
  struct fsev_source src;
  struct fsev_jsuper js;
  struct jnl j;

  memcpy (view, dev, size);
  if (!jnl_open (&j, &src, &d, &ms, &js))
    return -1;
  if (j.ino && js.start != 0) {
    j.ov = fsev_overlay_new (j.fs->blocksize);
    if (j.ov == NULL)
      abort ();
    /* A walk that fails half-way keeps what it applied (recovery
     * replays up to the transaction it cannot read).
     */
    fsev_jbd2_walk (&js, jnl_read, &j, jnl_replay, &j, NULL, NULL);
    unsigned bs = j.fs->blocksize;
    unsigned char *blk = malloc (bs);
    if (blk == NULL)
      abort ();
    for (size_t i = 0; i < j.ov->n; i++) {
      const struct fsev_overlay_entry *e = &j.ov->e[i];
      if ((e->fsblk + 1) * bs <= size &&
          fsev_overlay_read_entry (j.ov, e, memsrc_read, &d, blk) == 0)
        memcpy (view + e->fsblk * bs, blk, bs);
    }
    free (blk);
    fsev_overlay_free (j.ov);
  }
  ext2fs_close_free (&j.fs);
  return 0;
}

/* --- The protected files. --- */

static const char *const globs[4] = { "/p/secret", "/p/**", "/p/*", "/p/s*" };
/* The files each glob protects that the oracle looks at. */
static const char *const files[2] = { "/p/secret", "/p/big" };
static const bool checked[4][2] = {
  { true, false }, { true, true }, { true, true }, { true, false },
};

struct pstate {
  bool present;
  ext2_ino_t ino;
  uint16_t mode, links;
  uint32_t uid, gid, flags;
  uint64_t size;
  unsigned char *bytes;
  size_t nbytes;
};

enum { STATE_OK, STATE_NOT_FOUND, STATE_UNREADABLE };

/* PATH's inode, looked up a component at a time through directories
 * only.  (ext2fs_namei follows a symlink met on the way, and allocates
 * what its i_size says to read it: a guest's garbage size made the
 * harness, not the engine, ask for 3.5 GB.  A protected path through a
 * symlink is a changed path anyway.)  0, or -1 when it does not
 * resolve.
 */
static int
lookup_path (ext2_filsys fs, const char *path, ext2_ino_t *ino)
{
  ext2_ino_t dir = EXT2_ROOT_INO;
  const char *p = path;
  for (;;) {
    while (*p == '/')
      p++;
    const char *end = strchr (p, '/');
    size_t len = end ? (size_t) (end - p) : strlen (p);
    if (len == 0) {
      *ino = dir;
      return 0;
    }
    struct ext2_inode in;
    if (ext2fs_read_inode (fs, dir, &in) != 0 || !LINUX_S_ISDIR (in.i_mode))
      return -1;
    if (ext2fs_lookup (fs, dir, p, (int) len, NULL, &dir) != 0)
      return -1;
    if (end == NULL) {
      *ino = dir;
      return 0;
    }
    p = end;
  }
}

static int
read_state (ext2_filsys fs, const char *path, struct pstate *st)
{
  memset (st, 0, sizeof *st);
  if (lookup_path (fs, path, &st->ino) != 0)
    return STATE_NOT_FOUND;
  struct ext2_inode_large in;
  memset (&in, 0, sizeof in);
  if (ext2fs_read_inode_full (fs, st->ino, (struct ext2_inode *) &in,
                              sizeof in) != 0)
    return STATE_UNREADABLE;
  st->mode = in.i_mode;
  st->links = in.i_links_count;
  st->uid = inode_uid (in);
  st->gid = inode_gid (in);
  st->flags = in.i_flags;
  st->size = EXT2_I_SIZE (&in);
  if (LINUX_S_ISREG (st->mode)) {
    size_t want = st->size < MAX_FILE ? st->size : MAX_FILE;
    st->bytes = malloc (want ? want : 1);
    ext2_file_t f;
    unsigned got = 0;
    if (st->bytes == NULL ||
        ext2fs_file_open2 (fs, st->ino, (struct ext2_inode *) &in, 0, &f) != 0)
      return STATE_UNREADABLE;
    errcode_t e = ext2fs_file_read (f, st->bytes, want, &got);
    ext2fs_file_close (f);
    if (e != 0 || got != want)
      return STATE_UNREADABLE;
    st->nbytes = want;
  }
  st->present = true;
  return STATE_OK;
}

static const char *
state_differs (const struct pstate *a, const struct pstate *b)
{
  if (a->ino != b->ino)
    return "another inode at its path";
  if (a->mode != b->mode)
    return "its mode";
  if (a->uid != b->uid || a->gid != b->gid)
    return "its owner or group";
  if (a->size != b->size)
    return "its size";
  if (a->links != b->links)
    return "its link count";
  if ((a->flags ^ b->flags) & EXT2_FL_USER_MODIFIABLE)
    return "its flags";
  if (a->nbytes != b->nbytes ||
      (a->nbytes && memcmp (a->bytes, b->bytes, a->nbytes) != 0))
    return "its bytes";
  return NULL;
}

/* --- The regions requests land in. --- */

struct list {
  uint64_t *v;
  size_t n;
};

static void
list_add (struct list *l, uint64_t blk)
{
  if (l->n < MAX_LIST)
    l->v[l->n++] = blk;
}

static int
add_block (ext2_filsys fs, blk64_t *blocknr, e2_blkcnt_t blockcnt,
           blk64_t ref_blk, int ref_offset, void *priv)
{
  list_add (priv, *blocknr);
  return 0;
}

/* The inode-table block and every block of inode INO. */
static void
list_inode (ext2_filsys fs, ext2_ino_t ino, struct list *l)
{
  if (ino == 0 || ino > fs->super->s_inodes_count)
    return;
  dgrp_t g = ext2fs_group_of_ino (fs, ino);
  uint64_t off = (uint64_t) ((ino - 1) % fs->super->s_inodes_per_group) *
    EXT2_INODE_SIZE (fs->super);
  list_add (l, ext2fs_inode_table_loc (fs, g) + off / fs->blocksize);
  ext2fs_block_iterate3 (fs, ino, BLOCK_FLAG_READ_ONLY, NULL, add_block, l);
}

enum { R_RAW, R_JOURNAL, R_PROTECTED, R_FREE, R_META, R_COUNT };

struct regions {
  unsigned bs;
  struct list l[R_COUNT];       /* R_RAW unused */
  struct fsev_jsuper js;        /* for resealing */
  bool have_js;
};

static void
regions_build (struct regions *r, const unsigned char *view, uint64_t size,
               const bool *protect)
{
  struct memsrc d = { view, size }, ms;
  struct fsev_source src;
  struct jnl j;

  for (int i = 0; i < R_COUNT; i++) {
    r->l[i].v = malloc (MAX_LIST * sizeof *r->l[i].v);
    if (r->l[i].v == NULL)
      abort ();
  }
  if (!jnl_open (&j, &src, &d, &ms, &r->js))
    return;
  ext2_filsys fs = j.fs;
  r->bs = fs->blocksize;
  if (j.ino) {
    r->have_js = true;
    for (uint32_t b = 0; b < r->js.maxlen && b < MAX_LIST; b++) {
      uint64_t p = jnl_map (&j, b);
      if (p == 0)
        break;
      list_add (&r->l[R_JOURNAL], p);
    }
  }
  for (int i = 0; i < 2; i++) {
    ext2_ino_t ino;
    if (protect[i] && lookup_path (fs, files[i], &ino) == 0)
      list_inode (fs, ino, &r->l[R_PROTECTED]);
  }
  ext2_ino_t p;
  if (lookup_path (fs, "/p", &p) == 0)
    list_inode (fs, p, &r->l[R_PROTECTED]);
  list_inode (fs, EXT2_ROOT_INO, &r->l[R_PROTECTED]);

  ext2fs_close_free (&j.fs);
}

/* Free blocks and metadata blocks, as the engine's model at start-up
 * has them (libext2fs's bitmap code is not for hostile images: the
 * harness reads none).
 */
static int
model_segment (const struct fsev_segment *seg, void *opaque)
{
  struct regions *r = opaque;
  int which;
  switch (seg->role) {
  case FSEV_ROLE_FREE: which = R_FREE; break;
  case FSEV_ROLE_SUPERBLOCK: case FSEV_ROLE_GROUP_DESCRIPTORS:
  case FSEV_ROLE_RESERVED_GDT: case FSEV_ROLE_BLOCK_BITMAP:
  case FSEV_ROLE_INODE_BITMAP: case FSEV_ROLE_INODE_TABLE:
  case FSEV_ROLE_EXTENT_TREE: case FSEV_ROLE_INDIRECT:
  case FSEV_ROLE_DIRECTORY: case FSEV_ROLE_XATTR:
    which = R_META;
    break;
  default:
    return 0;
  }
  uint64_t first = seg->offset / r->bs;
  uint64_t last = (seg->offset + seg->length - 1) / r->bs;
  /* A long run (an inode table, free space) gives its first blocks. */
  for (uint64_t b = first; b <= last && b < first + 64; b++)
    if (r->l[which].n == 0 || r->l[which].v[r->l[which].n - 1] != b)
      list_add (&r->l[which], b);
  return 0;
}

static void
regions_from_model (struct regions *r, const struct fsev_layout *L)
{
  if (r->bs == 0 || r->bs != fsev_layout_block_size (L))
    return;
  fsev_layout_lookup (L, 0, fsev_layout_fs_bytes (L), model_segment, r);
}

static void
regions_free (struct regions *r)
{
  for (int i = 0; i < R_COUNT; i++)
    free (r->l[i].v);
}

/* --- Resealing jbd2 checksums in a write (flag bit 0). --- */

static uint32_t
get_be32 (const unsigned char *p)
{
  return (uint32_t) p[0] << 24 | (uint32_t) p[1] << 16 |
    (uint32_t) p[2] << 8 | p[3];
}

static void
put_be32 (unsigned char *p, uint32_t v)
{
  p[0] = v >> 24;
  p[1] = v >> 16;
  p[2] = v >> 8;
  p[3] = v;
}

/* The journal block at device block PBLK, or -1. */
static int64_t
jblk_of (const struct regions *r, uint64_t pblk)
{
  const struct list *l = &r->l[R_JOURNAL];
  for (size_t i = 0; i < l->n; i++)
    if (l->v[i] == pblk)
      return (int64_t) i;
  return -1;
}

/* Block PBLK as it will be once BUF (COUNT bytes at device OFFSET) is
 * written, into OUT.
 */
static void
block_after (const struct mem *m, const unsigned char *buf, uint64_t count,
             uint64_t offset, uint64_t pblk, unsigned bs, unsigned char *out)
{
  uint64_t s = pblk * bs;
  if (s + bs > m->size) {
    memset (out, 0, bs);
    return;
  }
  memcpy (out, m->b + s, bs);
  uint64_t from = s > offset ? s : offset;
  uint64_t to = s + bs < offset + count ? s + bs : offset + count;
  if (from < to)
    memcpy (out + (from - s), buf + (from - offset), to - from);
}

static void
reseal (const struct regions *r, const struct mem *m, unsigned char *buf,
        uint64_t count, uint64_t offset)
{
  unsigned bs = r->bs;
  if (!r->have_js || bs < 1024 || bs > 65536)
    return;
  /* The journal superblock first: the others use its seed. */
  struct fsev_jsuper js = r->js;
  unsigned char *tmp = malloc (bs);
  if (tmp == NULL)
    return;
  uint64_t jsb = r->l[R_JOURNAL].n ? r->l[R_JOURNAL].v[0] : 0;
  if (jsb && jsb * bs >= offset && (jsb + 1) * bs <= offset + count) {
    unsigned char *b = buf + (jsb * bs - offset);
    if (get_be32 (b) == FSEV_JBD2_MAGIC && (get_be32 (b + 0x28) & 0x18)) {
      put_be32 (b + 0xFC, 0);
      put_be32 (b + 0xFC, ext2fs_crc32c_le (~0U, b, 1024));
    }
  }
  block_after (m, buf, count, offset, jsb, bs, tmp);
  char err[256];
  struct fsev_jsuper now;
  if (jsb && fsev_jbd2_parse_super (tmp, bs, &now, err, sizeof err) == 0)
    js = now;
  if (!(js.csum_v2 || js.csum_v3) || js.log_end <= js.first) {
    free (tmp);
    return;
  }
  for (uint64_t pblk = (offset + bs - 1) / bs; (pblk + 1) * bs <= offset + count;
       pblk++) {
    unsigned char *b = buf + (pblk * bs - offset);
    int64_t jblk = jblk_of (r, pblk);
    if (jblk < js.first || jblk >= js.log_end || get_be32 (b) != FSEV_JBD2_MAGIC)
      continue;
    uint32_t type = get_be32 (b + 4), seq = get_be32 (b + 8);
    if (type == FSEV_JBD2_COMMIT) {
      put_be32 (b + 16, 0);
      put_be32 (b + 16, ext2fs_crc32c_le (js.csum_seed, b, bs));
      continue;
    }
    if (type != FSEV_JBD2_DESCRIPTOR && type != FSEV_JBD2_REVOKE)
      continue;
    if (type == FSEV_JBD2_DESCRIPTOR) {
      /* The tags as the parser walks them (fs/jbd2.c). */
      size_t off = 12, limit = bs - 4;
      uint32_t seq_be;
      put_be32 ((unsigned char *) &seq_be, seq);
      for (uint32_t n = 0; off + js.tag_bytes <= limit; n++) {
        uint32_t flags = js.csum_v3 ? get_be32 (b + off + 4)
          : (uint32_t) (b[off + 6] << 8 | b[off + 7]);
        uint32_t loglen = js.log_end - js.first;
        uint32_t lj = js.first + (uint32_t) (((uint64_t) (jblk - js.first) + 1 + n)
                                             % loglen);
        if (lj < r->l[R_JOURNAL].n) {
          block_after (m, buf, count, offset, r->l[R_JOURNAL].v[lj], bs, tmp);
          uint32_t c = ext2fs_crc32c_le (js.csum_seed, (unsigned char *) &seq_be, 4);
          c = ext2fs_crc32c_le (c, tmp, bs);
          if (js.csum_v3)
            put_be32 (b + off + 12, c);
          else {
            b[off + 4] = c >> 8;
            b[off + 5] = c;
          }
        }
        off += js.tag_bytes;
        if (!(flags & 2))
          off += 16;
        if (flags & 8)
          break;
      }
    }
    put_be32 (b + bs - 4, 0);
    put_be32 (b + bs - 4, ext2fs_crc32c_le (js.csum_seed, b, bs));
  }
  free (tmp);
}

/* --- A handler that vetoes by the input's bits. --- */

static unsigned veto_bits, nbefore;

static int
veto_write (struct fsevent_write *ev)
{
  if (veto_bits >> (nbefore++ % 8) & 1)
    ev->result_code = EPERM;
  return 0;
}

static int
veto_change (struct fsevent_change *ev)
{
  if (veto_bits >> (nbefore++ % 8) & 1)
    ev->result_code = EPERM;
  return 0;
}

static const struct fsevent_handler veto_handler = {
  .api_version = FSEVENT_API_VERSION,
  .struct_size = sizeof (struct fsevent_handler),
  .name = "veto",
  .before_write = veto_write,
  .before_change = veto_change,
};

/* --- The run. --- */

static uint16_t
le16 (const uint8_t *p)
{
  return (uint16_t) (p[0] | p[1] << 8);
}

struct oracle {
  bool on[2];                   /* files[i] is protected and present */
  struct pstate init[2];
  unsigned char *view;
  uint64_t size;
};

/* FUZZ_FOLLOW_DUMP=PREFIX: at a finding, the device into PREFIX.dev
 * and the committed view into PREFIX.view (images debugfs reads).
 */
static void
dump (const struct mem *m, const struct oracle *o)
{
  log_sync ();                  /* FUZZ_FOLLOW_LOG's lines so far */
  const char *prefix = getenv ("FUZZ_FOLLOW_DUMP");
  if (prefix == NULL)
    return;
  const char *suffix[2] = { ".dev", ".view" };
  const unsigned char *what[2] = { m->b, o->view };
  for (int i = 0; i < 2; i++) {
    char path[4096];
    snprintf (path, sizeof path, "%s%s", prefix, suffix[i]);
    FILE *f = fopen (path, "w");
    if (f == NULL || fwrite (what[i], 1, m->size, f) != m->size) {
      fprintf (stderr, "fuzz-follow: %s: cannot write it\n", path);
      if (f)
        fclose (f);
      continue;
    }
    fclose (f);
    fprintf (stderr, "fuzz-follow: wrote %s\n", path);
  }
}

static void
check (struct oracle *o, const struct mem *m, int reqno)
{
  if (!o->on[0] && !o->on[1])
    return;
  if (committed_view (m->b, m->size, o->view) == -1) {
    dbg ("fuzz-follow: after request %d the device holds no filesystem "
         "libext2fs opens: not checked\n", reqno);
    return;
  }
  struct memsrc ms;
  struct fsev_source src;
  ext2_filsys fs = open_fs (&src, &ms, o->view, o->size);
  if (fs == NULL) {
    dbg ("fuzz-follow: after request %d the committed view does not open: "
         "not checked\n", reqno);
    return;
  }
  for (int i = 0; i < 2; i++) {
    if (!o->on[i])
      continue;
    struct pstate now;
    int r = read_state (fs, files[i], &now);
    const char *what = r == STATE_NOT_FOUND ? "its path no longer resolves"
      : r == STATE_UNREADABLE ? "it cannot be read"
      : state_differs (&o->init[i], &now);
    if (what) {
      fprintf (stderr, "fuzz-follow: FINDING: after request %d, protected "
               "%s changed in the committed view: %s (inode %u mode 0%o "
               "size %llu links %u, was inode %u mode 0%o size %llu "
               "links %u)\n", reqno, files[i], what, now.ino, now.mode,
               (unsigned long long) now.size, now.links, o->init[i].ino,
               o->init[i].mode, (unsigned long long) o->init[i].size,
               o->init[i].links);
      dump (m, o);
      abort ();
    }
    free (now.bytes);
  }
  ext2fs_close_free (&fs);
}

static const char *
op_name (int op)
{
  static const char *const n[8] = { "write", "write+fua", "zero",
                                    "zero+trim+fua", "trim", "flush",
                                    "write", "write" };
  return n[op & 7];
}

int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
  if (debug == -1)
    debug = getenv ("FUZZ_FOLLOW_DEBUG") != NULL;
  if (size < 6)
    return 0;
  unsigned flags = data[0];
  veto_bits = data[1];
  nbefore = 0;
  model_check_failures = 0;
  uint64_t dev_size = (uint64_t) le16 (data + 2) * 1024;
  if (dev_size < MIN_DEVICE)
    dev_size = MIN_DEVICE;
  if (dev_size > MAX_DEVICE)
    dev_size = MAX_DEVICE;
  unsigned nchunks = le16 (data + 4);
  size_t pos = 6;

  struct mem m = { .size = dev_size };
  m.b = calloc (1, dev_size);
  struct oracle o = { .size = dev_size };
  o.view = malloc (dev_size);
  if (m.b == NULL || o.view == NULL)
    abort ();
  for (unsigned i = 0; i < nchunks && pos + 6 <= size; i++) {
    uint32_t off = (uint32_t) data[pos] | (uint32_t) data[pos + 1] << 8 |
      (uint32_t) data[pos + 2] << 16 | (uint32_t) data[pos + 3] << 24;
    size_t len = le16 (data + pos + 4);
    pos += 6;
    if (len > size - pos)
      len = size - pos;
    if (off < dev_size)
      memcpy (m.b + off, data + pos, len < dev_size - off ? len : dev_size - off);
    pos += len;
  }

  /* The engine: configured, started on the device (it identifies and
   * maps the filesystem before the harness reads anything with
   * libext2fs: a garbage superblock stops here).
   */
  unsigned g = (flags >> 1) & 3;
  struct regions reg = { 0 };
  struct device dev = {
    .name = "fuzz", .size = (int64_t) dev_size, .writable = true, .fd = -1,
    .pread = mem_pread, .pwrite = mem_pwrite, .zero = mem_zero,
    .trim = mem_trim, .flush = mem_flush, .opaque = &m,
  };
  struct conn *conn = NULL;
  const char *log = getenv ("FUZZ_FOLLOW_LOG");
  if (log && (engine_config ("log", log) != 0 ||
              engine_config ("log-phases", "both") != 0))
    abort ();
  if (engine_config ("protect", globs[g]) != 0 ||
      (veto_bits && handlers_add_builtin (&veto_handler, false) == -1) ||
      engine_config_complete () == -1)
    abort ();
  fsevent_debug_check = (flags & 8) != 0;
  /* -D fsevent.commit_timing=1 (what each commit re-read), for debugging. */
  fsevent_debug_commit_timing = debug > 0 && getenv ("FUZZ_FOLLOW_TIMING");
  if (debug && getenv ("FUZZ_FOLLOW_DUMP")) {
    /* The device before the first request, beside a finding's dump. */
    char path[4096];
    snprintf (path, sizeof path, "%s.start", getenv ("FUZZ_FOLLOW_DUMP"));
    FILE *f = fopen (path, "w");
    if (f && fwrite (m.b, 1, m.size, f) == m.size)
      dbg ("fuzz-follow: wrote %s\n", path);
    if (f)
      fclose (f);
  }
  if (engine_start (&dev) == -1) {
    dbg ("fuzz-follow: the engine does not start\n");
    goto stop;
  }
  /* The oracles look at a bare filesystem. */
  bool bare = volumes_count () == 1 && volume_offset (volumes_get (0)) == 0;
  m.check_writes = volumes_count () == 1 && volumes_get (0)->journalled;

  /* The protected files as the engine saw them at start-up (its
   * journal replayed), and where requests land.
   */
  if (bare && committed_view (m.b, m.size, o.view) == 0) {
    struct memsrc ms;
    struct fsev_source src;
    ext2_filsys fs = open_fs (&src, &ms, o.view, o.size);
    /* Every protected file libext2fs opens by its path is checked,
     * whether the engine's model names it or not: the engine refuses
     * to start where the two could differ (engine.c, refuse_in_doubt),
     * so a start with a file the model does not follow is a finding.
     */
    for (int i = 0; fs && i < 2; i++)
      if (checked[g][i] && read_state (fs, files[i], &o.init[i]) == STATE_OK &&
          LINUX_S_ISREG (o.init[i].mode) &&
          (o.init[i].ino >= EXT2_FIRST_INO (fs->super) ||
           EXT2_FIRST_INO (fs->super) > fs->super->s_inodes_count))
        o.on[i] = true;
    if (fs)
      ext2fs_close_free (&fs);
    regions_build (&reg, o.view, o.size, checked[g]);
    regions_from_model (&reg, follow_layout (volumes_get (0)));
  }
  conn = engine_open ("");
  if (conn == NULL)
    abort ();
  dbg ("fuzz-follow: device %" PRIu64 " bytes, protect=%s, checking%s%s\n",
       dev_size, globs[g], o.on[0] ? " /p/secret" : "",
       o.on[1] ? " /p/big" : "");

  unsigned char *wbuf = malloc (MAX_WRITE);
  if (wbuf == NULL)
    abort ();
  int nreq = 0;
  while (nreq < MAX_REQUESTS && pos + 8 <= size) {
    int op = data[pos] & 7;
    unsigned region = data[pos + 1] % R_COUNT;
    uint16_t index = le16 (data + pos + 2), off = le16 (data + pos + 4);
    uint64_t len = le16 (data + pos + 6);
    pos += 8;
    bool is_write = op == 0 || op == 1 || op >= 6;
    const uint8_t *bytes = data + pos;
    if (is_write) {
      if (len > size - pos)
        len = size - pos;
      pos += len;
    }
    if (len > MAX_WRITE)
      len = MAX_WRITE;
    unsigned bs = reg.bs ? reg.bs : 1024;
    uint64_t blk = index;
    if (region != R_RAW && reg.l[region].n)
      blk = reg.l[region].v[index % reg.l[region].n];
    uint64_t offset = blk * bs + off;
    if (offset >= dev_size)
      offset %= dev_size;
    if (len > dev_size - offset)
      len = dev_size - offset;
    nreq++;
    if (op != 5 && len == 0)
      continue;                 /* nbdkit never passes an empty request */

    struct request req = { .offset = offset, .count = len, .buf = wbuf };
    int r;
    m.read_bytes = 0;
    if (is_write) {
      memcpy (wbuf, bytes, len);
      if (flags & 1)
        reseal (&reg, &m, wbuf, len, offset);
      req.op = FSEVENT_OP_WRITE;
      m.cur = &req;
      r = engine_pwrite (conn, wbuf, (uint32_t) len, offset,
                         op == 1 ? NBDKIT_FLAG_FUA : 0);
    }
    else if (op == 2 || op == 3) {
      req.op = FSEVENT_OP_ZERO;
      m.cur = &req;
      r = engine_zero (conn, (uint32_t) len, offset,
                       op == 3 ? NBDKIT_FLAG_MAY_TRIM | NBDKIT_FLAG_FUA : 0);
    }
    else if (op == 4) {
      req.op = FSEVENT_OP_TRIM;
      m.cur = &req;
      r = engine_trim (conn, (uint32_t) len, offset, 0);
    }
    else
      r = engine_flush (conn);
    int e = errno;
    m.cur = NULL;
    dbg ("fuzz-follow: request %d: %s at %" PRIu64 " (block %" PRIu64 "), %"
         PRIu64 " bytes: %s%s; read %" PRIu64 " bytes; the model has "
         "/p/secret at inode %u\n", nreq, op_name (op),
         offset, offset / bs, op == 5 ? 0 : len, r == 0 ? "ok" : "refused: ",
         r == 0 ? "" : strerror (e), m.read_bytes,
         debug > 0 && volumes_count ()
         ? fsev_layout_lookup_path (follow_layout (volumes_get (0)), "/p/secret")
         : 0);
    if (m.read_bytes > READ_BOUND * dev_size) {
      fprintf (stderr, "fuzz-follow: request %d read %" PRIu64 " bytes of a %"
               PRIu64 "-byte device\n", nreq, m.read_bytes, dev_size);
      abort ();
    }
    if (r == 0)
      check (&o, &m, nreq);
  }
  free (wbuf);
  /* The guest's last flush: ext2's held metadata is decided. */
  m.read_bytes = 0;
  if (engine_flush (conn) == 0)
    check (&o, &m, nreq + 1);
  if (model_check_failures) {
    fprintf (stderr, "fuzz-follow: FINDING: the engine's model check "
             "(-D fsevent.check=1) failed %u times, first: %s\n",
             model_check_failures, model_check_msg);
    abort ();
  }
  engine_close (conn);

 stop:
  engine_stop ();
  fsevent_debug_check = fsevent_debug_commit_timing = 0;
  regions_free (&reg);
  for (int i = 0; i < 2; i++)
    free (o.init[i].bytes);
  free (o.view);
  free (m.b);
  return 0;
}
