/* plugin/volumes.c: which filesystems on the device are followed.
 *
 * The partition table is read once, at start-up, through the device
 * (so the filter reads it through the layer below).  Every ext2/3/4
 * partition gets its own model and journal follower (follow.c); the
 * others are named under -v and served untouched.
 */
#include <config.h>

#include <errno.h>
#include <stdarg.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NBDKIT_API_VERSION 2
#include <nbdkit-plugin.h>

#include "device.h"
#include "follow.h"
#include "fsinfo.h"
#include "layout.h"
#include "partition.h"
#include "source.h"
#include "util.h"
#include "volumes.h"

static struct volume **vols;    /* sorted by device offset */
static size_t nvols, vols_cap;
static unsigned only_partition; /* partition=N; 0: all */
static unsigned min_block_size;

int
volumes_set_partition (const char *value)
{
  char *end;
  errno = 0;
  unsigned long n = strtoul (value, &end, 10);
  if (errno || end == value || *end || n == 0 || n > 4096 ||
      value[0] == '-' || value[0] == '+') {
    nbdkit_error ("partition=%s: a partition number from 1 (as Linux numbers "
                  "them: /dev/vda1 is 1)", value);
    return -1;
  }
  if (only_partition) {
    nbdkit_error ("partition= given more than once");
    return -1;
  }
  only_partition = (unsigned) n;
  return 0;
}

/* Bytes of the device from OFFSET on, as fs/ reads them. */
struct dev_slice {
  struct device *dev;
  uint64_t offset;
};

static int
slice_read (void *opaque, void *buf, size_t count, uint64_t offset)
{
  const struct dev_slice *s = opaque;
  return device_read (s->dev, buf, count, s->offset + offset);
}

static void
warning (const char *fmt, ...)
{
  va_list ap;
  va_start (ap, fmt);
  fprintf (stderr, "nbdkit: fsevent: warning: ");
  vfprintf (stderr, fmt, ap);
  fprintf (stderr, "\n");
  va_end (ap);
}

static void
ptable_warning (void *opaque, const char *msg)
{
  const struct device *dev = opaque;
  warning ("%s: partition table: %s", dev->name, msg);
}

static void
layout_warning (void *opaque, const char *msg)
{
  nbdkit_debug ("%s: layout: warning: %s", (const char *) opaque, msg);
}

/* Follow the filesystem at OFFSET..OFFSET+LENGTH.  STRICT: a filesystem
 * we cannot follow is an error; otherwise a warning, and its bytes are
 * served untouched.  0 or -1.
 */
static int
follow_one (struct device *dev, unsigned partition, uint64_t offset,
            uint64_t length, bool strict)
{
  char name[512], err[512];
  if (partition)
    snprintf (name, sizeof name, "%s partition %u", dev->name, partition);
  else
    snprintf (name, sizeof name, "%s", dev->name);
  struct dev_slice slice = { dev, offset };
  struct fsev_source src = { .read = slice_read, .opaque = &slice,
                             .size = length };
  struct fsev_fsinfo fsinfo;

  /* Identify the filesystem first, so that a wrong image is refused
   * before anything else happens.
   */
  if (fsev_fsinfo_probe (&src, name, &fsinfo, err, sizeof err) == -1) {
    if (strict) {
      nbdkit_error ("%s", err);
      return -1;
    }
    warning ("%s (not followed: its writes pass unwatched)", err);
    return 0;
  }
  /* The guest would write past the end of the device: refuse. */
  if (length < fsinfo.fs_bytes) {
    if (partition == 0 || strict) {
      nbdkit_error ("%s is %" PRIu64 " bytes but its filesystem claims %"
                    PRIu64 " bytes: the %s is truncated", name, length,
                    fsinfo.fs_bytes, partition ? "partition" : "image");
      return -1;
    }
    warning ("%s is %" PRIu64 " bytes but its filesystem claims %" PRIu64
             " bytes (not followed: its writes pass unwatched)", name,
             length, fsinfo.fs_bytes);
    return 0;
  }

  /* The kernel does not mount a filesystem whose first inode that is
   * not reserved lies outside 11..s_inodes_count; nor may we follow
   * one.  The model would name files in inodes below it, which the
   * namespace diff does not watch (reserved inodes): their changes
   * would go undecided, and e2fsck from a backup superblock would
   * bring them back (fuzz-follow found it:
   * fuzz/regress/fuzz-follow/first-ino-past-inodes.bin).
   */
  if (fsinfo.first_ino < EXT2_GOOD_OLD_FIRST_INO ||
      fsinfo.first_ino > fsinfo.inodes_count) {
    if (strict) {
      nbdkit_error ("%s: the superblock's first inode %" PRIu32 " lies "
                    "outside %d..%" PRIu32 " (the kernel would not mount "
                    "it: repair it with e2fsck first)", name,
                    fsinfo.first_ino, EXT2_GOOD_OLD_FIRST_INO,
                    fsinfo.inodes_count);
      return -1;
    }
    warning ("%s: the superblock's first inode %" PRIu32 " lies outside "
             "%d..%" PRIu32 " (not followed: its writes pass unwatched)",
             name, fsinfo.first_ino, EXT2_GOOD_OLD_FIRST_INO,
             fsinfo.inodes_count);
    return 0;
  }

  nbdkit_debug ("%s: %s, block size %u%s, %" PRIu64 " blocks "
                "(%" PRIu64 " free), %" PRIu32 " inodes (%" PRIu32 " free), "
                "%" PRIu32 " groups, uuid %s%s%s",
                name, fsinfo.type, fsinfo.block_size,
                fsinfo.cluster_size != fsinfo.block_size ? " (bigalloc)" : "",
                fsinfo.blocks_count, fsinfo.free_blocks,
                fsinfo.inodes_count, fsinfo.free_inodes, fsinfo.groups,
                fsinfo.uuid, fsinfo.label[0] ? ", label " : "", fsinfo.label);
  nbdkit_debug ("%s: features: %s", name, fsinfo.features);
  if (fsinfo.has_journal)
    nbdkit_debug ("%s: journal: %s%s", name,
                  fsinfo.journal_external ? "external device" : "internal",
                  fsinfo.needs_recovery ? ", needs recovery (replayed into "
                  "the committed view, never into the image)" : "");

  struct fsev_build_options opts = { .warn = layout_warning, .opaque = name,
                                     .no_allocated_gaps = true };
  struct fsev_layout *layout = fsev_layout_build (&src, &opts, err, sizeof err);
  if (layout == NULL) {
    if (strict) {
      nbdkit_error ("%s: %s", name, err);
      return -1;
    }
    warning ("%s: %s (not followed: its writes pass unwatched)", name, err);
    return 0;
  }
  struct fsev_layout_stats st;
  fsev_layout_get_stats (layout, &st);
  nbdkit_debug ("%s: layout: built in %.3f s: %" PRIu64 " runs, %" PRIu64
                " files (%" PRIu64 " directories), %" PRIu64 " names, "
                "%.1f KiB of memory, %" PRIu64 " warnings",
                name, st.build_seconds, st.runs, st.files, st.directories,
                st.links, st.memory / 1024.0, st.warnings);

  if (fsev_grow ((void **) &vols, &vols_cap, nvols + 1, sizeof *vols) == -1) {
    fsev_layout_free (layout);
    nbdkit_error ("out of memory");
    return -1;
  }
  struct volume *vol = follow_init (dev, partition, offset, length, layout);
  if (vol == NULL)
    return -1;
  vols[nvols++] = vol;
  if (min_block_size == 0 || fsinfo.block_size < min_block_size)
    min_block_size = fsinfo.block_size;
  return 0;
}

static bool
is_ext (const char *fs)
{
  return fs && (strcmp (fs, "ext2") == 0 || strcmp (fs, "ext3") == 0 ||
                strcmp (fs, "ext4") == 0);
}

static int
by_offset (const void *a, const void *b)
{
  uint64_t x = volume_offset (*(struct volume *const *) a);
  uint64_t y = volume_offset (*(struct volume *const *) b);
  return x < y ? -1 : x > y;
}

int
volumes_start (struct device *dev)
{
  char err[512];
  struct fsev_ptable pt;
  struct dev_slice whole = { dev, 0 };

  if (fsev_ptable_read (slice_read, &whole, (uint64_t) dev->size,
                        ptable_warning, dev, &pt, err, sizeof err) == -1) {
    nbdkit_error ("%s: partition table: %s", dev->name, err);
    return -1;
  }
  if (pt.scheme == FSEV_PT_NONE) {
    fsev_ptable_free (&pt);
    if (only_partition) {
      nbdkit_error ("partition=%u: %s has no partition table", only_partition,
                    dev->name);
      return -1;
    }
    return follow_one (dev, 0, 0, (uint64_t) dev->size, true);
  }

  nbdkit_debug ("%s: %s partition table, %zu partitions", dev->name,
                fsev_pt_scheme_name (pt.scheme), pt.n);
  char list[1024] = "";
  size_t ll = 0;
  bool found = false;
  int r = 0;
  for (size_t i = 0; i < pt.n && r == 0; i++) {
    const struct fsev_partition *p = &pt.parts[i];
    bool follow = is_ext (p->fs) &&
      (only_partition == 0 || only_partition == p->number);
    char type[64];
    if (pt.scheme == FSEV_PT_GPT)
      snprintf (type, sizeof type, "type %s", p->gpt_type);
    else
      snprintf (type, sizeof type, "type 0x%02x", p->mbr_type);
    nbdkit_debug ("partition %u: %s at %" PRIu64 ", %" PRIu64 " bytes, %s%s%s"
                  "%s: %s", p->number, p->fs, p->offset, p->length, type,
                  p->name[0] ? ", name \"" : "", p->name,
                  p->name[0] ? "\"" : "",
                  follow ? "followed" : "served untouched");
    if (ll < sizeof list - 1)
      ll += snprintf (list + ll, sizeof list - ll, "%s%u %s",
                      ll ? ", " : "", p->number, p->fs);
    if (only_partition == p->number) {
      found = true;
      if (!is_ext (p->fs)) {
        nbdkit_error ("partition=%u: %s partition %u holds %s, not an "
                      "ext2/3/4 filesystem", only_partition, dev->name,
                      p->number, p->fs);
        r = -1;
        break;
      }
    }
    if (follow)
      r = follow_one (dev, p->number, p->offset, p->length,
                      only_partition != 0);
  }
  fsev_ptable_free (&pt);
  if (r == -1)
    return -1;
  if (only_partition && !found) {
    nbdkit_error ("partition=%u: %s has no such partition (it has: %s)",
                  only_partition, dev->name, list[0] ? list : "none");
    return -1;
  }
  /* Partition numbers need not follow the disk's order; requests are
   * split, and models locked, in device order.
   */
  qsort (vols, nvols, sizeof *vols, by_offset);
  if (nvols == 0) {
    nbdkit_error ("%s: no ext2/3/4 filesystem to follow in its partitions "
                  "(%s)", dev->name, list[0] ? list : "none");
    return -1;
  }
  return 0;
}

void
volumes_stop (void)
{
  for (size_t i = 0; i < nvols; i++)
    follow_fini (vols[i]);
  free (vols);
  vols = NULL;
  nvols = vols_cap = 0;
  min_block_size = 0;           /* a later start measures again */
}

size_t volumes_count (void) { return nvols; }
struct volume *volumes_get (size_t i) { return i < nvols ? vols[i] : NULL; }
unsigned volumes_block_size (void) { return min_block_size; }

size_t
volumes_in_range (uint64_t offset, uint64_t count, size_t *first)
{
  size_t n = 0;
  for (size_t i = 0; i < nvols; i++) {
    uint64_t vo = volume_offset (vols[i]), vl = volume_length (vols[i]);
    if (offset < vo + vl && vo < offset + count) {
      if (n++ == 0)
        *first = i;
    }
    else if (n)
      break;                    /* sorted and apart: no more */
  }
  return n;
}

struct volume *
volumes_resolve (const char *spec, const char **path, int *err,
                 const char **why)
{
  const char *colon = strchr (spec, ':');
  if (colon && colon > spec && strspn (spec, "0123456789") ==
      (size_t) (colon - spec)) {
    unsigned long n = strtoul (spec, NULL, 10);
    *path = colon + 1;
    for (size_t i = 0; i < nvols; i++)
      if (volume_partition (vols[i]) == n)
        return vols[i];
    *err = ENOENT;
    *why = "no followed filesystem on that partition";
    return NULL;
  }
  *path = spec;
  if (nvols == 1)
    return vols[0];
  *err = EINVAL;
  *why = "several filesystems are followed: name one as N:/PATH";
  return NULL;
}

bool
volumes_followed (unsigned partition)
{
  for (size_t i = 0; i < nvols; i++)
    if (volume_partition (vols[i]) == partition)
      return true;
  return false;
}

bool
volumes_any_held (void)
{
  for (size_t i = 0; i < nvols; i++)
    if (follow_holds (vols[i]))
      return true;
  return false;
}

void
volumes_patch_read (void *buf, uint32_t count, uint64_t offset)
{
  size_t first, n;
  if (!volumes_any_held () ||
      (n = volumes_in_range (offset, count, &first)) == 0)
    return;
  for (size_t i = first; i < first + n; i++) {
    uint64_t vo = volume_offset (vols[i]), vl = volume_length (vols[i]);
    uint64_t from = offset > vo ? offset : vo;
    uint64_t to = offset + count < vo + vl ? offset + count : vo + vl;
    if (from < to)
      follow_patch_read (vols[i], (char *) buf + (from - offset), to - from,
                         from - vo);
  }
}
