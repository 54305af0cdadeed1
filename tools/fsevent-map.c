/* tools/fsevent-map.c: print the layout model of an ext2/3/4 image.
 *
 * For a byte range of the device (default: all of it) it prints one
 * JSON object per segment: offset, length, role and owner.  It is the
 * user's view of the model the plugin reads on every write, and the
 * tests' interface to it.  A partitioned image (MBR or GPT) gets one
 * model per ext2/3/4 partition, with device-relative offsets.
 */
#include <config.h>

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <linux/fs.h>

#include "layout.h"
#include "partition.h"
#include "source.h"

#define PATH_BUF 65536

static const char *progname = "fsevent-map";

static void
usage (FILE *f)
{
  fprintf (f,
           "usage: %s [--summary] [--quiet] [--partition N] IMAGE "
           "[OFFSET [LENGTH]]\n"
           "Print the segments covering bytes OFFSET..OFFSET+LENGTH of the\n"
           "ext2/3/4 IMAGE (default: the whole device) as JSON Lines.\n"
           "A partitioned IMAGE (MBR or GPT) is mapped partition by\n"
           "partition, every ext2/3/4 one unless --partition says which.\n"
           "OFFSET and LENGTH take suffixes K, M, G, T (powers of 1024).\n"
           "  --summary        print bytes per role instead of segments\n"
           "  --quiet          do not print warnings about inconsistencies\n"
           "  --partition N    map only partition N (0: a bare filesystem)\n"
           "See fsevent-map(1).\n", progname);
}

/* A size with an optional K/M/G/T suffix; -1 on error. */
static int
parse_size (const char *s, uint64_t *out)
{
  char *end;
  errno = 0;
  unsigned long long v = strtoull (s, &end, 0);
  if (errno || end == s || *s == '-')
    return -1;
  unsigned shift = 0;
  switch (*end) {
  case '\0': break;
  case 'k': case 'K': shift = 10; end++; break;
  case 'm': case 'M': shift = 20; end++; break;
  case 'g': case 'G': shift = 30; end++; break;
  case 't': case 'T': shift = 40; end++; break;
  default: return -1;
  }
  if (*end != '\0' || (shift && v > (UINT64_MAX >> shift)))
    return -1;
  *out = (uint64_t) v << shift;
  return 0;
}

/* Write S as a JSON string.  Names are bytes, not always UTF-8: bytes
 * that cannot stand as they are become \u00XX.
 */
static void
json_string (FILE *f, const char *s)
{
  const unsigned char *p = (const unsigned char *) s;
  putc ('"', f);
  for (; *p; p++) {
    if (*p == '"' || *p == '\\')
      fprintf (f, "\\%c", *p);
    else if (*p < 0x20 || *p >= 0x7f)
      fprintf (f, "\\u%04x", *p);
    else
      putc (*p, f);
  }
  putc ('"', f);
}

struct ctx {
  const struct fsev_layout *L;
  char *path;
  bool summary;
  unsigned partition;           /* 0 for a bare filesystem */
  uint64_t base;                /* its offset in the device */
  uint64_t bytes[FSEV_ROLE_COUNT];
  uint64_t segments[FSEV_ROLE_COUNT];
};

static void
print_paths (struct ctx *c, uint32_t ino)
{
  int n = fsev_layout_path (c->L, ino, 0, c->path, PATH_BUF);
  if (n <= 0) {
    fputs (",\"path\":null", stdout);
    return;
  }
  fputs (",\"path\":", stdout);
  json_string (stdout, c->path);
  if (n > 1) {
    fputs (",\"paths\":[", stdout);
    for (int i = 0; i < n; i++) {
      if (i)
        putchar (',');
      if (fsev_layout_path (c->L, ino, i, c->path, PATH_BUF) < 0)
        strcpy (c->path, "<path too long>");
      json_string (stdout, c->path);
    }
    putchar (']');
  }
}

static int
print_segment (const struct fsev_segment *seg, void *opaque)
{
  struct ctx *c = opaque;

  c->bytes[seg->role] += seg->length;
  c->segments[seg->role]++;
  if (c->summary)
    return 0;

  printf ("{\"offset\":%" PRIu64 ",\"length\":%" PRIu64 ",\"role\":\"%s\"",
          c->base + seg->offset, seg->length, fsev_role_name (seg->role));
  switch (seg->role) {
  case FSEV_ROLE_SUPERBLOCK:
  case FSEV_ROLE_GROUP_DESCRIPTORS:
  case FSEV_ROLE_RESERVED_GDT:
  case FSEV_ROLE_BLOCK_BITMAP:
  case FSEV_ROLE_INODE_BITMAP:
    printf (",\"group\":%" PRIu32, seg->group);
    break;
  case FSEV_ROLE_INODE_TABLE:
    printf (",\"group\":%" PRIu32 ",\"first_ino\":%" PRIu32
            ",\"last_ino\":%" PRIu32, seg->group, seg->first_ino,
            seg->last_ino);
    break;
  case FSEV_ROLE_FREE:
  case FSEV_ROLE_OUTSIDE:
  case FSEV_ROLE_MMP:
    break;
  default:
    printf (",\"ino\":%" PRIu32, seg->ino);
    print_paths (c, seg->ino);
    break;
  }
  if (seg->role == FSEV_ROLE_DATA || seg->role == FSEV_ROLE_DIRECTORY ||
      seg->role == FSEV_ROLE_JOURNAL)
    printf (",\"position\":%" PRIu64, seg->position);
  if (seg->role == FSEV_ROLE_XATTR) {
    uint32_t inos[64];
    unsigned n = fsev_layout_xattr_owners (c->L, seg->offset, inos, 64);
    if (n > 1) {
      fputs (",\"inos\":[", stdout);
      for (unsigned i = 0; i < n && i < 64; i++)
        printf ("%s%" PRIu32, i ? "," : "", inos[i]);
      putchar (']');
      if (n > 64)
        printf (",\"owners\":%u", n);
    }
  }
  if (seg->flags & FSEV_SEG_JOURNAL_SB) fputs (",\"part\":\"superblock\"", stdout);
  if (seg->flags & FSEV_SEG_JOURNAL_LOG) fputs (",\"part\":\"log\"", stdout);
  if (seg->flags & FSEV_SEG_JOURNAL_FC) fputs (",\"part\":\"fast_commit\"", stdout);
  if (seg->flags & FSEV_SEG_BACKUP) fputs (",\"backup\":true", stdout);
  if (seg->flags & FSEV_SEG_BEYOND_EOF) fputs (",\"beyond_eof\":true", stdout);
  if (seg->flags & FSEV_SEG_UNWRITTEN) fputs (",\"unwritten\":true", stdout);
  if (seg->flags & FSEV_SEG_ALLOCATED) fputs (",\"allocated\":true", stdout);
  if (seg->flags & FSEV_SEG_DUP) fputs (",\"dup\":true", stdout);
  printf (",\"partition\":%u}\n", c->partition);
  return ferror (stdout) ? -1 : 0;
}

/* Warnings about a partition's filesystem say which partition. */
static void
print_warning (void *opaque, const char *msg)
{
  const unsigned *partition = opaque;

  if (partition && *partition)
    fprintf (stderr, "%s: warning: partition %u: %s\n", progname,
             *partition, msg);
  else
    fprintf (stderr, "%s: warning: %s\n", progname, msg);
}

/* What is to be mapped: a partition, or the whole device (number 0). */
struct target {
  unsigned number;
  uint64_t offset, length;
};

/* Map T's bytes in the device range OFFSET..OFFSET+LENGTH.  Returns 0,
 * 1 if its filesystem cannot be mapped (said on stderr), or -1 on a
 * write error on stdout.
 */
static int
map_target (struct ctx *c, int fd, const char *image, const struct target *t,
            uint64_t offset, uint64_t length, bool quiet)
{
  struct fsev_fd_source fdsrc;
  struct fsev_source src;
  unsigned number = t->number;
  struct fsev_build_options bo = {
    .warn = quiet ? NULL : print_warning, .opaque = &number,
  };
  char err[512];

  /* A bare filesystem takes the range as it is (bytes past the end
   * are the model's to refuse); a partition only its part of it.
   */
  uint64_t lo = offset, len = length;
  if (t->number != 0) {
    uint64_t end = UINT64_MAX - offset < length ? UINT64_MAX : offset + length;
    uint64_t pend = t->offset + t->length;
    lo = offset > t->offset ? offset : t->offset;
    uint64_t hi = end < pend ? end : pend;
    if (lo >= hi)
      return 0;                 /* nothing of it asked for */
    len = hi - lo;
    lo -= t->offset;
  }

  fsev_source_from_fd (&src, &fdsrc, fd, t->offset, t->length);
  struct fsev_layout *L = fsev_layout_build (&src, &bo, err, sizeof err);
  if (L == NULL) {
    if (t->number)
      fprintf (stderr, "%s: %s: partition %u: %s\n", progname, image,
               t->number, err);
    else
      fprintf (stderr, "%s: %s: %s\n", progname, image, err);
    return 1;
  }
  c->L = L;
  c->partition = t->number;
  c->base = t->offset;
  memset (c->bytes, 0, sizeof c->bytes);
  memset (c->segments, 0, sizeof c->segments);

  int r = fsev_layout_lookup (L, lo, len, print_segment, c);
  if (c->summary) {
    uint64_t total = 0;
    for (int i = 0; i < FSEV_ROLE_COUNT; i++) {
      total += c->bytes[i];
      if (c->segments[i])
        printf ("{\"role\":\"%s\",\"bytes\":%" PRIu64 ",\"segments\":%" PRIu64
                ",\"partition\":%u}\n", fsev_role_name (i), c->bytes[i],
                c->segments[i], t->number);
    }
    struct fsev_layout_stats s;
    fsev_layout_get_stats (L, &s);
    printf ("{\"role\":\"total\",\"bytes\":%" PRIu64 ",\"type\":\"%s\","
            "\"block_size\":%u,\"runs\":%" PRIu64 ",\"files\":%" PRIu64
            ",\"directories\":%" PRIu64 ",\"links\":%" PRIu64
            ",\"memory\":%" PRIu64 ",\"warnings\":%" PRIu64
            ",\"build_seconds\":%.6f%s,\"partition\":%u}\n", total,
            fsev_layout_fs_type (L),
            fsev_layout_block_size (L), s.runs, s.files, s.directories,
            s.links, s.memory, s.warnings, s.build_seconds,
            fsev_layout_external_journal (L) ? ",\"journal\":\"external\"" : "",
            t->number);
  }
  fsev_layout_free (L);
  c->L = NULL;
  return r != 0 || ferror (stdout) ? -1 : 0;
}

static bool
is_ext (const char *fs)
{
  return strcmp (fs, "ext2") == 0 || strcmp (fs, "ext3") == 0 ||
    strcmp (fs, "ext4") == 0;
}

/* Why partition P is not mapped. */
static const char *
why_not (const struct fsev_partition *p)
{
  if (strcmp (p->fs, "extended") == 0)
    return "an extended partition (it holds the logical ones)";
  if (strcmp (p->fs, "jbd") == 0)
    return "an external ext journal, not a filesystem";
  if (strcmp (p->fs, "unknown") == 0)
    return "no filesystem recognised";
  return "not an ext2/3/4 filesystem";
}

/* The targets in PT: every ext2/3/4 partition, or partition ONLY.
 * Says on stderr why each other one is left out.  Returns how many,
 * or -1 (said on stderr).
 */
static int
choose_targets (const char *image, const struct fsev_ptable *pt, long only,
                struct target *out)
{
  const char *scheme = fsev_pt_scheme_name (pt->scheme);
  int n = 0;

  for (size_t i = 0; i < pt->n; i++) {
    const struct fsev_partition *p = &pt->parts[i];
    if (only >= 0 && p->number != only)
      continue;
    if (!is_ext (p->fs)) {
      fprintf (stderr, "%s: %s: partition %u (%s, %" PRIu64 " bytes at %"
               PRIu64 "): %s: %s\n", progname, image, p->number, p->fs,
               p->length, p->offset, only >= 0 ? "cannot map it" : "skipped",
               why_not (p));
      if (only >= 0)
        return -1;
      continue;
    }
    out[n++] = (struct target) { p->number, p->offset, p->length };
  }
  if (only >= 0 && n == 0) {
    fprintf (stderr, "%s: %s: no partition %ld in its %s partition table "
             "(it has %zu)\n", progname, image, only, scheme, pt->n);
    return -1;
  }
  if (n == 0) {
    fprintf (stderr, "%s: %s: no ext2/3/4 filesystem in its %zu %s "
             "partitions\n", progname, image, pt->n, scheme);
    return -1;
  }
  return n;
}

int
main (int argc, char *argv[])
{
  static const struct option long_opts[] = {
    { "summary", no_argument, NULL, 's' },
    { "quiet", no_argument, NULL, 'q' },
    { "partition", required_argument, NULL, 'p' },
    { "help", no_argument, NULL, 'h' },
    { NULL, 0, NULL, 0 }
  };
  struct ctx c = { 0 };
  bool quiet = false;
  long only = -1;               /* --partition */
  int opt;

  while ((opt = getopt_long (argc, argv, "sqp:h", long_opts, NULL)) != -1) {
    switch (opt) {
    case 's': c.summary = true; break;
    case 'q': quiet = true; break;
    case 'p': {
      char *end;
      errno = 0;
      only = strtol (optarg, &end, 10);
      if (errno || end == optarg || *end != '\0' || only < 0 ||
          only > UINT_MAX) {
        fprintf (stderr, "%s: bad partition number '%s'\n", progname, optarg);
        return 2;
      }
      break;
    }
    case 'h': usage (stdout); return 0;
    default: usage (stderr); return 2;
    }
  }
  if (optind >= argc || argc - optind > 3) {
    usage (stderr);
    return 2;
  }
  const char *image = argv[optind];

  int fd = open (image, O_RDONLY | O_CLOEXEC);
  if (fd == -1) {
    fprintf (stderr, "%s: %s: %s\n", progname, image, strerror (errno));
    return 1;
  }
  struct stat st;
  uint64_t size;
  if (fstat (fd, &st) == -1) {
    fprintf (stderr, "%s: %s: %s\n", progname, image, strerror (errno));
    return 1;
  }
  if (S_ISBLK (st.st_mode)) {
    if (ioctl (fd, BLKGETSIZE64, &size) == -1) {
      fprintf (stderr, "%s: %s: %s\n", progname, image, strerror (errno));
      return 1;
    }
  }
  else if (S_ISREG (st.st_mode))
    size = st.st_size;
  else {
    fprintf (stderr, "%s: %s: not a regular file or block device\n",
             progname, image);
    return 1;
  }

  uint64_t offset = 0, length = size;
  if (argc - optind >= 2 && parse_size (argv[optind + 1], &offset) == -1) {
    fprintf (stderr, "%s: bad OFFSET '%s'\n", progname, argv[optind + 1]);
    return 2;
  }
  if (argc - optind >= 3) {
    if (parse_size (argv[optind + 2], &length) == -1) {
      fprintf (stderr, "%s: bad LENGTH '%s'\n", progname, argv[optind + 2]);
      return 2;
    }
  }
  else
    length = offset < size ? size - offset : 0;

  /* The partition table first: a bare filesystem is "no table". */
  struct fsev_fd_source fdsrc;
  struct fsev_source src;
  struct fsev_ptable pt;
  char err[512];
  fsev_source_from_fd (&src, &fdsrc, fd, 0, size);
  if (fsev_ptable_read (src.read, src.opaque, size,
                        quiet ? NULL : print_warning, NULL, &pt,
                        err, sizeof err) == -1) {
    fprintf (stderr, "%s: %s: partition table: %s\n", progname, image, err);
    return 1;
  }
  struct target *targets = calloc (pt.n ? pt.n : 1, sizeof *targets);
  c.path = malloc (PATH_BUF);
  int status = 0, ntargets = 0;
  if (targets == NULL || c.path == NULL) {
    perror ("malloc");
    status = 1;
  }
  else if (pt.scheme == FSEV_PT_NONE) {
    if (only > 0) {
      fprintf (stderr, "%s: %s: no partition table, so no partition %ld\n",
               progname, image, only);
      status = 1;
    }
    else {
      targets[0] = (struct target) { 0, 0, size };
      ntargets = 1;
    }
  }
  else if ((ntargets = choose_targets (image, &pt, only, targets)) == -1) {
    ntargets = 0;
    status = 1;
  }

  bool write_error = false;
  for (int i = 0; i < ntargets && !write_error; i++) {
    int r = map_target (&c, fd, image, &targets[i], offset, length, quiet);
    if (r == 1)
      status = 1;
    write_error = r == -1;
  }
  free (c.path);
  free (targets);
  fsev_ptable_free (&pt);
  close (fd);
  if (write_error || fflush (stdout) == EOF || ferror (stdout)) {
    fprintf (stderr, "%s: write error on standard output\n", progname);
    return 1;
  }
  return status;
}
