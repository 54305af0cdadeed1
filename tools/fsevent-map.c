/* tools/fsevent-map.c: print the layout model of an ext2/3/4 image.
 *
 * For a byte range of the device (default: all of it) it prints one
 * JSON object per segment: offset, length, role and owner.  It is the
 * user's view of the model the plugin reads on every write, and the
 * tests' interface to it.
 */
#include <config.h>

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <linux/fs.h>

#include "layout.h"
#include "source.h"

#define PATH_BUF 65536

static const char *progname = "fsevent-map";

static void
usage (FILE *f)
{
  fprintf (f,
           "usage: %s [--summary] [--quiet] IMAGE [OFFSET [LENGTH]]\n"
           "Print the segments covering bytes OFFSET..OFFSET+LENGTH of the\n"
           "ext2/3/4 IMAGE (default: the whole device) as JSON Lines.\n"
           "OFFSET and LENGTH take suffixes K, M, G, T (powers of 1024).\n"
           "  --summary   print bytes per role instead of segments\n"
           "  --quiet     do not print warnings about inconsistencies\n"
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
          seg->offset, seg->length, fsev_role_name (seg->role));
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
  fputs ("}\n", stdout);
  return ferror (stdout) ? -1 : 0;
}

static void
print_warning (void *opaque, const char *msg)
{
  fprintf (stderr, "%s: warning: %s\n", progname, msg);
}

int
main (int argc, char *argv[])
{
  static const struct option long_opts[] = {
    { "summary", no_argument, NULL, 's' },
    { "quiet", no_argument, NULL, 'q' },
    { "help", no_argument, NULL, 'h' },
    { NULL, 0, NULL, 0 }
  };
  struct ctx c = { 0 };
  bool quiet = false;
  int opt;

  while ((opt = getopt_long (argc, argv, "sqh", long_opts, NULL)) != -1) {
    switch (opt) {
    case 's': c.summary = true; break;
    case 'q': quiet = true; break;
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

  struct fsev_fd_source fdsrc;
  struct fsev_source src;
  struct fsev_build_options bo = { .warn = quiet ? NULL : print_warning };
  char err[512];
  fsev_source_from_fd (&src, &fdsrc, fd, 0, size);
  struct fsev_layout *L = fsev_layout_build (&src, &bo, err, sizeof err);
  if (L == NULL) {
    fprintf (stderr, "%s: %s: %s\n", progname, image, err);
    return 1;
  }
  c.L = L;
  c.path = malloc (PATH_BUF);
  if (c.path == NULL) {
    perror ("malloc");
    return 1;
  }

  int r = fsev_layout_lookup (L, offset, length, print_segment, &c);
  if (c.summary) {
    uint64_t total = 0;
    for (int i = 0; i < FSEV_ROLE_COUNT; i++) {
      total += c.bytes[i];
      if (c.segments[i])
        printf ("{\"role\":\"%s\",\"bytes\":%" PRIu64 ",\"segments\":%" PRIu64
                "}\n", fsev_role_name (i), c.bytes[i], c.segments[i]);
    }
    struct fsev_layout_stats s;
    fsev_layout_get_stats (L, &s);
    printf ("{\"role\":\"total\",\"bytes\":%" PRIu64 ",\"type\":\"%s\","
            "\"block_size\":%u,\"runs\":%" PRIu64 ",\"files\":%" PRIu64
            ",\"directories\":%" PRIu64 ",\"links\":%" PRIu64
            ",\"memory\":%" PRIu64 ",\"warnings\":%" PRIu64
            ",\"build_seconds\":%.6f%s}\n", total, fsev_layout_fs_type (L),
            fsev_layout_block_size (L), s.runs, s.files, s.directories,
            s.links, s.memory, s.warnings, s.build_seconds,
            fsev_layout_external_journal (L) ? ",\"journal\":\"external\"" : "");
  }
  free (c.path);
  fsev_layout_free (L);
  close (fd);
  if (r != 0 || fflush (stdout) == EOF || ferror (stdout)) {
    fprintf (stderr, "%s: write error on standard output\n", progname);
    return 1;
  }
  return 0;
}
