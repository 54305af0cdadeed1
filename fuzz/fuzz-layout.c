/* fuzz/fuzz-layout.c: libFuzzer target for the layout model
 * (fs/layout-build.c, fs/layout-query.c, fs/names.c, fs/fsinfo.c).
 *
 * The input is a small ext2/3/4 image held in memory and read through
 * a struct fsev_source callback (fs/source.h), as the plugin reads the
 * disk.  The device is as large as the superblock says the filesystem
 * is (at most 64 MiB), or the input if that is larger; past the input
 * it reads as zeros.  So inputs can be the head of an image, where the
 * metadata lies, and mutations are not spent on file data.  It probes it (fsev_fsinfo_probe), builds the model
 * (fsev_layout_build) and queries the result: segments of the whole
 * image and of a few ranges, the paths and names of the first inodes,
 * a path lookup of each path found, their data runs, the journal's
 * blocks, xattr owners.  Besides the sanitizers' reports it aborts
 * when a lookup breaks layout.h's contract: a segment outside the
 * range asked for, an empty one, an unknown role, or segments that are
 * not DUP going back.
 *
 * To keep executions fast, images whose superblock claims more than
 * 2^20 blocks or 2^18 inodes are skipped (libext2fs would allocate
 * bitmaps for all of them; that cost is libext2fs's, not the model's).
 */
#include <config.h>

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fsinfo.h"
#include "layout.h"
#include "source.h"

struct mem {
  const uint8_t *data;
  size_t size;                  /* of the input */
  uint64_t device_size;
};

static int
mem_read (void *opaque, void *buf, size_t count, uint64_t offset)
{
  const struct mem *m = opaque;
  if (offset > m->device_size || count > m->device_size - offset)
    abort ();                   /* source.h: never past SIZE */
  size_t have = offset < m->size ? m->size - offset : 0;
  if (have > count)
    have = count;
  if (have)
    memcpy (buf, m->data + offset, have);
  memset ((char *) buf + have, 0, count - have);
  return 0;
}

static void
quiet (void *opaque, const char *msg)
{
  (void) opaque;
  (void) msg;
}

struct seg_check {
  uint64_t offset, end;
  uint64_t done;                /* end of the last segment not DUP */
  unsigned count;
};

static int
seg_fn (const struct fsev_segment *s, void *opaque)
{
  struct seg_check *c = opaque;
  if (s->length == 0 || s->offset < c->offset || s->offset > c->end ||
      s->length > c->end - s->offset || s->role >= FSEV_ROLE_COUNT ||
      fsev_role_name (s->role) == NULL)
    abort ();
  if (!(s->flags & FSEV_SEG_DUP)) {
    if (s->offset < c->done)
      abort ();
    c->done = s->offset + s->length;
  }
  return ++c->count >= 100000;  /* enough of one range */
}

static void
lookup (const struct fsev_layout *L, uint64_t offset, uint64_t length)
{
  struct seg_check c = { .offset = offset, .end = offset + length,
                         .done = offset };
  fsev_layout_lookup (L, offset, length, seg_fn, &c);
}

static int
blocks_fn (uint64_t lblk, uint64_t pblk, uint64_t len, bool unwritten,
           void *opaque)
{
  (void) lblk;
  (void) pblk;
  (void) unwritten;
  (void) opaque;
  if (len == 0)
    abort ();
  return 0;
}

static uint32_t
le32 (const uint8_t *p)
{
  return p[0] | (uint32_t) p[1] << 8 | (uint32_t) p[2] << 16 |
    (uint32_t) p[3] << 24;
}

int LLVMFuzzerTestOneInput (const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
  if (size < 2048)
    return 0;
  /* The superblock at 1024: s_inodes_count, s_blocks_count_lo/hi. */
  const uint8_t *sb = data + 1024;
  uint64_t blocks = le32 (sb + 4);
  if (size >= 1024 + 0x150 + 4)
    blocks |= (uint64_t) le32 (sb + 0x150) << 32;
  if (le32 (sb + 0) > (1u << 18) || blocks > (1u << 20))
    return 0;

  /* s_log_block_size at 24: the filesystem's size in bytes. */
  uint32_t log_bs = le32 (sb + 24);
  uint64_t fs_size = log_bs <= 6 ? blocks << (10 + log_bs) : 0;
  if (fs_size > 64u << 20)
    fs_size = 64u << 20;
  struct mem m = { .data = data, .size = size,
                   .device_size = fs_size > size ? fs_size : size };
  struct fsev_source src = { .read = mem_read, .opaque = &m,
                             .size = m.device_size };
  struct fsev_fsinfo info;
  char err[256];
  (void) fsev_fsinfo_probe (&src, "fuzz", &info, err, sizeof err);

  struct fsev_build_options opts = { .warn = quiet, .max_warnings = 20 };
  struct fsev_layout *L = fsev_layout_build (&src, &opts, err, sizeof err);
  if (L == NULL)
    return 0;

  uint64_t fs_bytes = fsev_layout_fs_bytes (L);
  unsigned bs = fsev_layout_block_size (L);
  lookup (L, 0, m.device_size);
  lookup (L, 0, fs_bytes + 4096);
  lookup (L, 1000, 5000);
  if (fs_bytes > 3 * (uint64_t) bs)
    lookup (L, fs_bytes - 2 * (uint64_t) bs - 7, 3 * (uint64_t) bs);

  size_t ninodes;
  const struct fsev_inode *inodes = fsev_layout_inodes (L, &ninodes);
  char path[4096];
  for (size_t i = 0; i < ninodes && i < 64; i++) {
    uint32_t ino = inodes[i].ino;
    if (fsev_layout_inode (L, ino) != &inodes[i])
      abort ();
    int npaths = fsev_layout_path (L, ino, 0, path, sizeof path);
    for (int k = 0; k < npaths && k < 4; k++) {
      if (fsev_layout_path (L, ino, k, path, sizeof path) < 0)
        break;
      if (memchr (path, 0, sizeof path) == NULL)
        abort ();
      (void) fsev_layout_lookup_path (L, path);
    }
    char tiny[8];
    (void) fsev_layout_path (L, ino, 0, tiny, sizeof tiny);
    struct fsev_name names[8];
    unsigned nn = fsev_layout_names (L, ino, names, 8);
    for (unsigned k = 0; k < nn && k < 8; k++)
      if (names[k].len > 0 && names[k].name == NULL)
        abort ();
    fsev_layout_file_blocks (L, ino, blocks_fn, NULL);
  }
  (void) fsev_layout_lookup_path (L, "/");
  (void) fsev_layout_lookup_path (L, "/lost+found/x");
  (void) fsev_layout_lookup_path (L, "//a/../b/");
  (void) fsev_layout_lookup_path (L, "");
  (void) fsev_layout_inode (L, 0);
  (void) fsev_layout_inode (L, UINT32_MAX);
  (void) fsev_layout_path (L, 0, 0, path, sizeof path);
  (void) fsev_layout_path (L, UINT32_MAX, 0, path, sizeof path);

  if (fsev_layout_journal_ino (L)) {
    for (uint32_t j = 0; j < 64; j++)
      (void) fsev_layout_journal_pblk (L, j);
    (void) fsev_layout_journal_pblk (L, UINT32_MAX);
  }
  uint32_t owners[4];
  for (uint64_t off = 0; off < m.device_size && off < 64 * (uint64_t) bs;
       off += bs)
    (void) fsev_layout_xattr_owners (L, off, owners, 4);

  struct fsev_layout_stats st;
  fsev_layout_get_stats (L, &st);
  (void) fsev_layout_fs_type (L);
  (void) fsev_layout_external_journal (L);
  fsev_layout_free (L);
  return 0;
}
