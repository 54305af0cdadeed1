/* tests/unit-diff.c: Check unit tests for fs/diff.c.
 *
 * Oracle: mkfs.ext4 -d makes image A from a small tree; a copy of it is
 * changed with debugfs -w (mkdir, write, ln, unlink, rm, rmdir, sif,
 * expand) into image B.  The changes fsev_diff reports between the
 * layouts of A and B are compared with the list the test expects from
 * the debugfs commands it ran, with inode numbers, generations and
 * types read back with debugfs stat.  The order is checked against the
 * one diff.h promises (by kind; creates parents first, deletes children
 * first; otherwise by inode), computed here independently.
 */
#include <config.h>

#include <fcntl.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/stat.h>
#include <sys/types.h>

#include <check.h>

#include "diff.h"
#include "layout.h"
#include "source.h"
#include "unit.h"

/* --- Images A and B. --- */

struct side {
  int fd;
  struct fsev_fd_source fdsrc;
  struct fsev_source src;
  struct fsev_layout *L;
};

struct fx {
  char dir[256];
  char a[320], b[320];          /* image paths */
  struct side A, B;
  struct fsev_change *c;
  ssize_t n;
};

static void
sh (const char *fmt, ...)
{
  char cmd[8192];
  va_list ap;
  va_start (ap, fmt);
  int len = vsnprintf (cmd, sizeof cmd, fmt, ap);
  va_end (ap);
  ck_assert_int_lt (len, (int) sizeof cmd);
  ck_assert_msg (system (cmd) == 0, "command failed: %s", cmd);
}

/* Every test's directory lies in this one, made before the tests run
 * and removed after, by the runner (so even a failed test's is).
 */
static char diff_root[200];

static void
root_setup (void)
{
  const char *tmp = getenv ("TMPDIR");
  snprintf (diff_root, sizeof diff_root, "%s/fsevent-diff-XXXXXX",
            tmp ? tmp : "/tmp");
  ck_assert_ptr_nonnull (mkdtemp (diff_root));
}

static void
root_teardown (void)
{
  sh ("rm -rf %s", diff_root);
}

/* Make image A from a tree in which SCRIPT ran, and B as its copy. */
static void
fx_make (struct fx *f, const char *script)
{
  memset (f, 0, sizeof *f);
  f->A.fd = f->B.fd = -1;
  snprintf (f->dir, sizeof f->dir, "%s/test-XXXXXX", diff_root);
  ck_assert_ptr_nonnull (mkdtemp (f->dir));
  snprintf (f->a, sizeof f->a, "%s/a.img", f->dir);
  snprintf (f->b, sizeof f->b, "%s/b.img", f->dir);
  sh ("cd %s && mkdir tree && cd tree && { %s; }", f->dir, script);
  /* Host files for debugfs write. */
  sh ("cd %s && head -c 5000 /dev/urandom > d5000 && printf hello > d5 && "
      ": > d0", f->dir);
  sh ("mkfs.ext4 -q -F -b 4096 -d %s/tree %s 32M >/dev/null 2>&1",
      f->dir, f->a);
  sh ("cp %s %s", f->a, f->b);
}

/* Run debugfs -w -f on image B with the commands CMDS (one a line, run
 * in %s/ so host files can be named by their bare names).  Fails the
 * test if debugfs complains about any of them.
 */
static void fx_debugfs_img (struct fx *f, const char *img, const char *cmds);

static void
fx_debugfs (struct fx *f, const char *cmds)
{
  fx_debugfs_img (f, f->b, cmds);
}

static void
fx_debugfs_img (struct fx *f, const char *img, const char *cmds)
{
  char path[400], line[1024];
  snprintf (path, sizeof path, "%s/cmds", f->dir);
  FILE *fp = fopen (path, "w");
  ck_assert_ptr_nonnull (fp);
  fputs (cmds, fp);
  fclose (fp);
  sh ("cd %s && debugfs -w -f cmds %s >out 2>err", f->dir, img);
  snprintf (path, sizeof path, "%s/err", f->dir);
  fp = fopen (path, "r");
  ck_assert_ptr_nonnull (fp);
  while (fgets (line, sizeof line, fp)) {
    unsigned maj;
    /* The banner, "debugfs 1.47.0 (5-Feb-2023)", is all it may print. */
    if (sscanf (line, "debugfs %u.", &maj) == 1 || line[0] == '\n')
      continue;
    fclose (fp);
    ck_abort_msg ("debugfs complained: %s(commands:\n%s)", line, cmds);
  }
  fclose (fp);
}

/* A field of debugfs stat PATH on image IMG ('a' or 'b'). */
struct stat_out {
  unsigned ino, generation, links;
  char type[32];
  bool found;
};

static struct stat_out
fx_stat (const struct fx *f, char img, const char *path)
{
  char cmd[1024], line[1024];
  struct stat_out s = { 0 };
  snprintf (cmd, sizeof cmd, "debugfs -R 'stat \"%s\"' %s 2>/dev/null",
            path, img == 'a' ? f->a : f->b);
  FILE *p = popen (cmd, "r");
  ck_assert_ptr_nonnull (p);
  while (fgets (line, sizeof line, p)) {
    if (sscanf (line, "Inode: %u Type: %31s", &s.ino, s.type) == 2)
      s.found = true;
    sscanf (line, "Generation: %u", &s.generation);
    sscanf (line, "Links: %u", &s.links);
  }
  pclose (p);
  return s;
}

static uint32_t
ino_of (const struct fx *f, char img, const char *path)
{
  struct stat_out s = fx_stat (f, img, path);
  ck_assert_msg (s.found, "debugfs stat %s on image %c found nothing",
                 path, img);
  return s.ino;
}

static void
side_open (struct side *s, const char *img)
{
  struct stat st;
  char err[256];
  s->fd = open (img, O_RDONLY);
  ck_assert_int_ge (s->fd, 0);
  ck_assert_int_eq (fstat (s->fd, &st), 0);
  fsev_source_from_fd (&s->src, &s->fdsrc, s->fd, 0, st.st_size);
  s->L = fsev_layout_build (&s->src, NULL, err, sizeof err);
  ck_assert_msg (s->L != NULL, "layout of %s: %s", img, err);
}

static void
fx_diff (struct fx *f)
{
  if (f->A.L == NULL)
    side_open (&f->A, f->a);
  side_open (&f->B, f->b);
  f->n = fsev_diff (f->A.L, f->B.L, NULL, NULL, &f->c);
  ck_assert_int_ge (f->n, 0);
}

static void
fx_done (struct fx *f)
{
  free (f->c);
  if (f->A.L) fsev_layout_free (f->A.L);
  if (f->B.L) fsev_layout_free (f->B.L);
  if (f->A.fd >= 0) close (f->A.fd);
  if (f->B.fd >= 0) close (f->B.fd);
  sh ("rm -rf %s", f->dir);
}

/* --- Expected changes. --- */

static const char *
kind_name (enum fsev_change_kind k)
{
  switch (k) {
  case FSEV_CREATE: return "create";
  case FSEV_DELETE: return "delete";
  case FSEV_LINK: return "link";
  case FSEV_UNLINK: return "unlink";
  case FSEV_RENAME: return "rename";
  case FSEV_SET_SIZE: return "set_size";
  case FSEV_SET_ATTRIBUTES: return "set_attributes";
  }
  return "?";
}

/* The order diff.h promises, written out here rather than taken from
 * fsev_change_rank.
 */
static int
want_rank (enum fsev_change_kind k)
{
  static const enum fsev_change_kind order[] = {
    FSEV_CREATE, FSEV_RENAME, FSEV_LINK, FSEV_SET_SIZE,
    FSEV_SET_ATTRIBUTES, FSEV_UNLINK, FSEV_DELETE,
  };
  for (int i = 0; i < 7; i++)
    if (order[i] == k)
      return i;
  ck_abort_msg ("unknown kind %d", (int) k);
  return -1;
}

struct want {
  enum fsev_change_kind kind;
  uint32_t ino;
  const char *old_path;         /* name in A (old_link), NULL for -1 */
  const char *new_path;         /* name in B (new_link), NULL for -1 */
  uint32_t replaced;
  unsigned changed;
  /* filled in by sort_wants */
  int key, seq;
  bool early;                   /* delete of a number created again */
};

static int
depth (const char *path)
{
  int d = 0;
  for (; path && *path; path++)
    d += *path == '/';
  return d;
}

static int
cmp_want (const void *x, const void *y)
{
  const struct want *a = x, *b = y;
  int ra = a->early ? -1 : want_rank (a->kind);
  int rb = b->early ? -1 : want_rank (b->kind);
  if (ra != rb) return ra < rb ? -1 : 1;
  if (a->key != b->key) return a->key < b->key ? -1 : 1;
  if (a->ino != b->ino) return a->ino < b->ino ? -1 : 1;
  return a->seq - b->seq;
}

/* Put W in the promised order: the delete of an inode number that is
 * created again in the same step first of all; then kind; creates by
 * depth (parents first), deletes by decreasing depth (children first);
 * then by inode; then as listed.
 */
static void
sort_wants (struct want *w, size_t n)
{
  for (size_t i = 0; i < n; i++) {
    w[i].early = false;
    if (w[i].kind == FSEV_DELETE)
      for (size_t j = 0; j < n; j++)
        if (w[j].kind == FSEV_CREATE && w[j].ino == w[i].ino)
          w[i].early = true;
    w[i].seq = (int) i;
    w[i].key = w[i].kind == FSEV_CREATE ? depth (w[i].new_path)
      : w[i].kind == FSEV_DELETE ? -depth (w[i].old_path) : 0;
  }
  qsort (w, n, sizeof *w, cmp_want);
}

static void
link_path (const struct fsev_layout *L, uint32_t ino, int link, char *buf,
           size_t len)
{
  if (link < 0) {
    snprintf (buf, len, "-");
    return;
  }
  int r = fsev_layout_path (L, ino, (unsigned) link, buf, len);
  if (r <= link)
    snprintf (buf, len, "<bad link %d of %d>", link, r);
}

static void
format_change (const struct fx *f, const struct fsev_change *c, char *buf,
               size_t len)
{
  char op[1024], np[1024];
  link_path (f->A.L, c->ino, c->old_link, op, sizeof op);
  link_path (f->B.L, c->ino, c->new_link, np, sizeof np);
  snprintf (buf, len, "%s ino=%u old=%s new=%s replaced=%u changed=%#x",
            kind_name (c->kind), c->ino, op, np, c->replaced_ino, c->changed);
}

static void
format_want (const struct want *w, char *buf, size_t len)
{
  snprintf (buf, len, "%s ino=%u old=%s new=%s replaced=%u changed=%#x",
            kind_name (w->kind), w->ino, w->old_path ? w->old_path : "-",
            w->new_path ? w->new_path : "-", w->replaced, w->changed);
}

/* Compare what fsev_diff said with W (sorted here first). */
static void
fx_check (struct fx *f, struct want *w, size_t nw)
{
  char got[16384] = "", exp[16384] = "", line[2200];
  sort_wants (w, nw);
  for (ssize_t i = 0; i < f->n; i++) {
    format_change (f, &f->c[i], line, sizeof line);
    snprintf (got + strlen (got), sizeof got - strlen (got), "  %s\n", line);
  }
  for (size_t i = 0; i < nw; i++) {
    format_want (&w[i], line, sizeof line);
    snprintf (exp + strlen (exp), sizeof exp - strlen (exp), "  %s\n", line);
  }
  ck_assert_msg (strcmp (got, exp) == 0 && (size_t) f->n == nw,
                 "changes differ\nexpected:\n%sgot:\n%s", exp, got);

  /* The inode pointers: the model's own records of the inode. */
  for (ssize_t i = 0; i < f->n; i++) {
    const struct fsev_change *c = &f->c[i];
    const struct fsev_inode *ia = fsev_layout_inode (f->A.L, c->ino);
    const struct fsev_inode *ib = fsev_layout_inode (f->B.L, c->ino);
    if (c->kind == FSEV_DELETE) {
      ck_assert_ptr_eq (c->old_inode, ia);
      ck_assert_ptr_null (c->new_inode);
    }
    else if (c->kind == FSEV_CREATE) {
      ck_assert_ptr_eq (c->new_inode, ib);
      ck_assert (c->old_inode == NULL || c->old_inode == ia);
    }
    else if (c->old_link == -1 && c->old_inode == NULL) {
      /* the link or size of an inode created here (maybe reusing the
       * number of one freed here)
       */
      ck_assert (c->kind == FSEV_LINK || c->kind == FSEV_SET_SIZE);
      ck_assert_ptr_eq (c->new_inode, ib);
    }
    else {
      ck_assert_ptr_eq (c->old_inode, ia);
      ck_assert_ptr_eq (c->new_inode, ib);
    }
    if (c->old_inode)
      ck_assert_uint_eq (c->old_inode->ino, c->ino);
    if (c->new_inode)
      ck_assert_uint_eq (c->new_inode->ino, c->ino);
  }
}

#define W(k, i, o, n_, ...) \
  { .kind = (k), .ino = (i), .old_path = (o), .new_path = (n_), __VA_ARGS__ }

#define CHECK(f, ...) do {                                          \
    struct want w_[] = { __VA_ARGS__ };                             \
    fx_check ((f), w_, sizeof w_ / sizeof w_[0]);                   \
  } while (0)

static void
check_none (struct fx *f)
{
  char line[2200];
  if (f->n != 0) {
    format_change (f, &f->c[0], line, sizeof line);
    ck_abort_msg ("expected no changes, got %zd, first: %s", f->n, line);
  }
}

/* --- Tests. --- */

START_TEST (test_diff_identical)
{
  struct fx f;
  fx_make (&f, "echo x > a && mkdir d && echo y > d/b && ln a d/c");
  fx_diff (&f);
  check_none (&f);
  /* A layout against itself. */
  struct fsev_change *c;
  ck_assert_int_eq (fsev_diff (f.A.L, f.A.L, NULL, NULL, &c), 0);
  free (c);
  fx_done (&f);
}
END_TEST

START_TEST (test_diff_create)
{
  struct fx f;
  fx_make (&f, "echo x > a");
  /* A directory, a file in it with data, an empty file, a file with two
   * names, a symlink.
   */
  fx_debugfs (&f,
              "mkdir n\n"
              "mkdir n/m\n"
              "write d5000 n/m/f\n"
              "write d0 e\n"
              "write d5 two\n"
              "ln two n/two2\n"
              "sif two links_count 2\n"
              "symlink s /a\n"
              /* in use but never named: nothing to report yet */
              "write d5 ghost\n"
              "unlink ghost\n");
  uint32_t n = ino_of (&f, 'b', "/n"), m = ino_of (&f, 'b', "/n/m");
  uint32_t ff = ino_of (&f, 'b', "/n/m/f"), e = ino_of (&f, 'b', "/e");
  uint32_t two = ino_of (&f, 'b', "/two"), s = ino_of (&f, 'b', "/s");
  fx_diff (&f);
  CHECK (&f,
         W (FSEV_CREATE, n, NULL, "/n"),
         W (FSEV_CREATE, m, NULL, "/n/m"),
         W (FSEV_CREATE, ff, NULL, "/n/m/f"),
         W (FSEV_CREATE, e, NULL, "/e"),
         W (FSEV_CREATE, two, NULL, "/two"),
         W (FSEV_LINK, two, NULL, "/n/two2"),
         W (FSEV_CREATE, s, NULL, "/s"));
  /* The create carries the size (no set_size); a fast symlink's size
   * is its target's length.
   */
  for (ssize_t i = 0; i < f.n; i++) {
    uint64_t want = f.c[i].ino == ff ? 5000 : f.c[i].ino == two ? 5
      : f.c[i].ino == s ? 2 : f.c[i].ino == e ? 0 : 4096;
    ck_assert_uint_eq (f.c[i].new_inode->size, want);
  }
  /* The new inodes come from the new model. */
  for (ssize_t i = 0; i < f.n; i++)
    if (f.c[i].kind == FSEV_CREATE)
      ck_assert_ptr_null (f.c[i].old_inode);
  fx_done (&f);
}
END_TEST

START_TEST (test_diff_delete)
{
  struct fx f;
  fx_make (&f, "echo x > a && echo y > b && mkdir -p d/e && echo z > d/e/x "
           "&& echo w > d/y");
  uint32_t b = ino_of (&f, 'a', "/b"), d = ino_of (&f, 'a', "/d");
  uint32_t e = ino_of (&f, 'a', "/d/e"), x = ino_of (&f, 'a', "/d/e/x");
  uint32_t y = ino_of (&f, 'a', "/d/y");
  /* Parents have lower numbers than children here, so only the depth
   * order can put the children's deletes first.
   */
  ck_assert_uint_lt (d, e);
  ck_assert_uint_lt (e, x);
  fx_debugfs (&f,
              "rm b\n"
              "rm d/e/x\n"
              "rmdir d/e\n"
              "rm d/y\n"
              "rmdir d\n");
  ck_assert (!fx_stat (&f, 'b', "/d").found);
  fx_diff (&f);
  CHECK (&f,
         W (FSEV_DELETE, b, "/b", NULL),
         W (FSEV_DELETE, d, "/d", NULL),
         W (FSEV_DELETE, e, "/d/e", NULL),
         W (FSEV_DELETE, x, "/d/e/x", NULL),
         W (FSEV_DELETE, y, "/d/y", NULL));
  fx_done (&f);
}
END_TEST

START_TEST (test_diff_kill_file)
{
  /* kill_file frees the inode but leaves its name: the name now points
   * at a free inode, which the model does not hold.
   */
  struct fx f;
  fx_make (&f, "echo x > a && echo y > k");
  uint32_t k = ino_of (&f, 'a', "/k");
  fx_debugfs (&f, "kill_file k\n");
  fx_diff (&f);
  CHECK (&f, W (FSEV_DELETE, k, "/k", NULL));
  fx_done (&f);
}
END_TEST

START_TEST (test_diff_link_unlink)
{
  struct fx f;
  fx_make (&f, "echo x > a && head -c 3000 /dev/urandom > f && ln f g && "
           "mkdir d && ln f d/h && echo o > orph");
  uint32_t a = ino_of (&f, 'a', "/a"), fi = ino_of (&f, 'a', "/f");
  uint32_t orph = ino_of (&f, 'a', "/orph");
  ck_assert_uint_eq (fx_stat (&f, 'a', "/f").links, 3);
  fx_debugfs (&f,
              "ln a d/a2\n"
              "ln a a3\n"
              "sif a links_count 3\n"
              "unlink g\n"
              "unlink d/h\n"
              "sif f links_count 1\n"
              /* its last name goes, the inode stays (open, orphan) */
              "unlink orph\n");
  fx_diff (&f);
  /* The names, and the link count as an attribute of its own (a guest
   * may write the count alone).
   */
  CHECK (&f,
         W (FSEV_LINK, a, NULL, "/a3"),
         W (FSEV_LINK, a, NULL, "/d/a2"),
         W (FSEV_SET_ATTRIBUTES, a, "/a", "/a", .changed = FSEV_ATTR_LINKS),
         W (FSEV_SET_ATTRIBUTES, fi, "/f", "/f", .changed = FSEV_ATTR_LINKS),
         W (FSEV_UNLINK, fi, "/g", NULL),
         W (FSEV_UNLINK, fi, "/d/h", NULL),
         W (FSEV_UNLINK, orph, "/orph", NULL));
  fx_done (&f);
}
END_TEST

START_TEST (test_diff_rename)
{
  struct fx f;
  fx_make (&f, "echo o > old && mkdir d && mkdir e && echo m > d/mv && "
           "echo s > src && echo v > victim && "
           "echo s2 > src2 && echo v2 > v2a && ln v2a v2b && "
           "echo l > lk && echo t > tgt");
  uint32_t old = ino_of (&f, 'a', "/old"), mv = ino_of (&f, 'a', "/d/mv");
  uint32_t src = ino_of (&f, 'a', "/src"), vic = ino_of (&f, 'a', "/victim");
  uint32_t src2 = ino_of (&f, 'a', "/src2"), v2 = ino_of (&f, 'a', "/v2a");
  uint32_t lk = ino_of (&f, 'a', "/lk"), tgt = ino_of (&f, 'a', "/tgt");
  uint32_t d = ino_of (&f, 'a', "/d");
  fx_debugfs (&f,
              /* plain rename, and a move to another directory */
              "ln old new\n"
              "unlink old\n"
              "ln d/mv e/mv\n"
              "unlink d/mv\n"
              /* rename over a file with one name: it is freed */
              "rm victim\n"
              "ln src victim\n"
              "unlink src\n"
              /* rename over one of two names of a file: it loses one */
              "unlink v2a\n"
              "sif v2b links_count 1\n"
              "ln src2 v2a\n"
              "unlink src2\n"
              /* a new hard link over a freed file's name */
              "rm tgt\n"
              "ln lk tgt\n"
              "sif lk links_count 2\n"
              /* a directory renamed */
              "ln d dd\n"
              "unlink d\n");
  fx_diff (&f);
  CHECK (&f,
         W (FSEV_RENAME, old, "/old", "/new"),
         W (FSEV_RENAME, mv, "/d/mv", "/e/mv"),
         W (FSEV_RENAME, src, "/src", "/victim", .replaced = vic),
         W (FSEV_RENAME, src2, "/src2", "/v2a", .replaced = v2),
         W (FSEV_RENAME, d, "/d", "/dd"),
         W (FSEV_LINK, lk, NULL, "/tgt", .replaced = tgt),
         W (FSEV_SET_ATTRIBUTES, lk, "/lk", "/lk", .changed = FSEV_ATTR_LINKS),
         W (FSEV_SET_ATTRIBUTES, v2, "/v2a", "/v2b", .changed = FSEV_ATTR_LINKS),
         W (FSEV_UNLINK, v2, "/v2a", NULL),
         W (FSEV_DELETE, vic, "/victim", NULL),
         W (FSEV_DELETE, tgt, "/tgt", NULL));
  fx_done (&f);
}
END_TEST

START_TEST (test_diff_attributes)
{
  struct fx f;
  fx_make (&f, "head -c 5000 /dev/urandom > sz && echo m > mo && "
           "echo u > ug && echo t > ti && echo n > ns && echo c > cr && "
           "echo f > fl && echo k > kf && mkdir dir && mkdir big && "
           "echo g > grow");
  uint32_t sz = ino_of (&f, 'a', "/sz"), mo = ino_of (&f, 'a', "/mo");
  uint32_t ug = ino_of (&f, 'a', "/ug"), ti = ino_of (&f, 'a', "/ti");
  uint32_t ns = ino_of (&f, 'a', "/ns"), cr = ino_of (&f, 'a', "/cr");
  uint32_t fl = ino_of (&f, 'a', "/fl"), dir = ino_of (&f, 'a', "/dir");
  uint32_t grow = ino_of (&f, 'a', "/grow");
  fx_debugfs (&f,
              "sif sz size 3\n"
              "sif grow size 100000\n"
              "sif mo mode 0100600\n"
              "sif ug uid 5\n"
              "sif ug gid 7\n"
              "sif ti mtime 20200101120000\n"
              "sif ti atime 20200101120000\n"
              /* nanoseconds only (the extra field holds ns << 2) */
              "sif ns ctime_extra 400\n"
              "sif cr crtime 20010203040506\n"
              /* a flag users set (nodump), and one only the kernel
               * sets (htree index): only the first counts
               */
              "sif fl flags 0x80040\n"
              "sif kf flags 0x81000\n"
              /* directories: mode and uid count, size does not */
              "sif dir mode 040700\n"
              "sif dir uid 9\n"
              "expand_dir big\n"
              "sif dir size 8192\n");
  fx_diff (&f);
  CHECK (&f,
         W (FSEV_SET_SIZE, sz, "/sz", "/sz"),
         W (FSEV_SET_SIZE, grow, "/grow", "/grow"),
         W (FSEV_SET_ATTRIBUTES, mo, "/mo", "/mo", .changed = FSEV_ATTR_MODE),
         W (FSEV_SET_ATTRIBUTES, ug, "/ug", "/ug",
           .changed = FSEV_ATTR_UID | FSEV_ATTR_GID),
         W (FSEV_SET_ATTRIBUTES, ti, "/ti", "/ti",
           .changed = FSEV_ATTR_MTIME | FSEV_ATTR_ATIME),
         W (FSEV_SET_ATTRIBUTES, ns, "/ns", "/ns", .changed = FSEV_ATTR_CTIME),
         W (FSEV_SET_ATTRIBUTES, cr, "/cr", "/cr", .changed = FSEV_ATTR_CRTIME),
         W (FSEV_SET_ATTRIBUTES, fl, "/fl", "/fl", .changed = FSEV_ATTR_FLAGS),
         W (FSEV_SET_ATTRIBUTES, dir, "/dir", "/dir",
           .changed = FSEV_ATTR_MODE | FSEV_ATTR_UID));
  /* The inodes carry the new values. */
  for (ssize_t i = 0; i < f.n; i++) {
    const struct fsev_change *c = &f.c[i];
    if (c->ino == sz && c->kind == FSEV_SET_SIZE) {
      ck_assert_uint_eq (c->old_inode->size, 5000);
      ck_assert_uint_eq (c->new_inode->size, 3);
    }
    if (c->ino == ug) {
      ck_assert_uint_eq (c->new_inode->uid, 5);
      ck_assert_uint_eq (c->new_inode->gid, 7);
    }
    if (c->ino == ns)
      ck_assert_uint_eq (c->new_inode->ctime_ns, 100);
    if (c->ino == mo)
      ck_assert_uint_eq (c->new_inode->mode, 0100600);
  }
  fx_done (&f);
}
END_TEST

START_TEST (test_diff_reuse)
{
  /* z's inode is freed and given to a new file: a delete and a create,
   * told apart by the generation; w's inode is freed and given to a
   * directory with the same generation: told apart by the type.  The
   * created file has a lower number than its new parent, so only the
   * depth order puts the parent first.
   */
  struct fx f;
  fx_make (&f, "echo z > z && echo w > w && echo k > keep");
  uint32_t z = ino_of (&f, 'a', "/z"), w = ino_of (&f, 'a', "/w");
  fx_debugfs (&f,
              "mkdir n\n"
              "rm z\n"
              "write d5 n/f\n"
              "sif n/f generation 77\n"
              "rm w\n"
              "mkdir w2\n");
  uint32_t n = ino_of (&f, 'b', "/n");
  ck_assert_uint_eq (ino_of (&f, 'b', "/n/f"), z);
  ck_assert_uint_eq (ino_of (&f, 'b', "/w2"), w);
  ck_assert_uint_lt (z, n);
  ck_assert_uint_ne (fx_stat (&f, 'a', "/z").generation, 77);
  ck_assert_uint_eq (fx_stat (&f, 'b', "/w2").generation,
                     fx_stat (&f, 'a', "/w").generation);
  fx_diff (&f);
  CHECK (&f,
         W (FSEV_CREATE, n, NULL, "/n"),
         W (FSEV_CREATE, z, NULL, "/n/f"),
         W (FSEV_CREATE, w, NULL, "/w2"),
         W (FSEV_DELETE, z, "/z", NULL),
         W (FSEV_DELETE, w, "/w", NULL));
  for (ssize_t i = 0; i < f.n; i++) {
    if (f.c[i].kind == FSEV_CREATE)
      ck_assert_ptr_null (f.c[i].old_inode);
    if (f.c[i].kind == FSEV_DELETE)
      ck_assert_ptr_null (f.c[i].new_inode);
  }
  fx_done (&f);
}
END_TEST

START_TEST (test_diff_create_over)
{
  /* A new file takes the name of one freed in the same step:
   * debugfs "rm v; write x v".  The freed number goes to another new
   * file (with a new generation), so v's new inode has another number.
   */
  struct fx f;
  fx_make (&f, "echo v > v && echo k > keep");
  uint32_t v = ino_of (&f, 'a', "/v");
  fx_debugfs (&f,
              "rm v\n"
              "write d5 filler\n"
              "sif filler generation 9\n"
              "write d0 v\n");
  ck_assert_uint_eq (ino_of (&f, 'b', "/filler"), v);
  uint32_t nv = ino_of (&f, 'b', "/v");
  ck_assert_uint_ne (nv, v);
  fx_diff (&f);
  CHECK (&f,
         W (FSEV_CREATE, v, NULL, "/filler"),
         W (FSEV_CREATE, nv, NULL, "/v", .replaced = v),
         W (FSEV_DELETE, v, "/v", NULL));
  fx_done (&f);
}
END_TEST

START_TEST (test_diff_many_links)
{
  /* A file with 70 names loses one of them.  Only that unlink
   * happened, whatever the number of names.
   */
  struct fx f;
  fx_make (&f, "echo x > h0 && for i in $(seq 1 69); do ln h0 h$i; done");
  uint32_t h = ino_of (&f, 'a', "/h0");
  ck_assert_uint_eq (fx_stat (&f, 'a', "/h0").links, 70);
  /* Drop the name the model lists fourth. */
  side_open (&f.A, f.a);
  char name[256], cmds[512];
  ck_assert_int_eq (fsev_layout_path (f.A.L, h, 3, name, sizeof name), 70);
  snprintf (cmds, sizeof cmds, "unlink %s\nsif h0 links_count 69\n", name);
  if (strcmp (name, "/h0") == 0)
    snprintf (cmds, sizeof cmds, "unlink %s\nsif h1 links_count 69\n", name);
  fx_debugfs (&f, cmds);
  fx_diff (&f);
  CHECK (&f, W (FSEV_UNLINK, h, name, NULL),
         W (FSEV_SET_ATTRIBUTES, h, "/h0", "/h0", .changed = FSEV_ATTR_LINKS));
  fx_done (&f);
}
END_TEST

static bool
was_named_fn (uint32_t ino, void *opaque)
{
  uint32_t *named = opaque;
  named[1]++;                   /* calls */
  return ino == named[0];
}

START_TEST (test_diff_was_named)
{
  /* Image A holds an inode in use without a name (its name was
   * removed, as when ext2 writes a rename's removal first); B names
   * it.  Created, unless WAS_NAMED says it had a name before: a link.
   */
  struct fx f;
  fx_make (&f, "echo k > keep");
  fx_debugfs_img (&f, f.a, "write d5 orph\n");
  uint32_t orph = ino_of (&f, 'a', "/orph");
  fx_debugfs_img (&f, f.a, "unlink orph\n");
  ck_assert (!fx_stat (&f, 'a', "/orph").found);
  sh ("cp %s %s", f.a, f.b);
  fx_debugfs (&f, "write d0 fresh\n");
  uint32_t fresh = ino_of (&f, 'b', "/fresh");
  char cmds[256];
  snprintf (cmds, sizeof cmds, "ln <%u> named\n", orph);
  fx_debugfs (&f, cmds);
  ck_assert_uint_eq (ino_of (&f, 'b', "/named"), orph);

  fx_diff (&f);
  CHECK (&f,
         W (FSEV_CREATE, orph, NULL, "/named"),
         W (FSEV_CREATE, fresh, NULL, "/fresh"));
  ck_assert_ptr_nonnull (f.c[0].old_inode);   /* it was in use in A */
  free (f.c);

  uint32_t named[2] = { orph, 0 };
  f.n = fsev_diff (f.A.L, f.B.L, was_named_fn, named, &f.c);
  CHECK (&f,
         W (FSEV_CREATE, fresh, NULL, "/fresh"),
         W (FSEV_LINK, orph, NULL, "/named"));
  ck_assert_uint_ge (named[1], 1);
  /* Asked only about inodes that were in use in A: the new one is
   * created whatever WAS_NAMED says.
   */
  free (f.c);
  uint32_t all[2] = { fresh, 0 };
  f.n = fsev_diff (f.A.L, f.B.L, was_named_fn, all, &f.c);
  CHECK (&f,
         W (FSEV_CREATE, orph, NULL, "/named"),
         W (FSEV_CREATE, fresh, NULL, "/fresh"));
  fx_done (&f);
}
END_TEST

START_TEST (test_diff_everything)
{
  /* One step with every kind, to check the order across kinds. */
  struct fx f;
  fx_make (&f, "echo a > a && head -c 5000 /dev/urandom > f && ln f g && "
           "echo o > old && echo s > src && echo v > victim && "
           "head -c 5000 /dev/urandom > sz && echo t > attr && "
           "mkdir -p d/e && echo x > d/e/x && echo z > z");
  uint32_t a = ino_of (&f, 'a', "/a"), fi = ino_of (&f, 'a', "/f");
  uint32_t old = ino_of (&f, 'a', "/old"), src = ino_of (&f, 'a', "/src");
  uint32_t vic = ino_of (&f, 'a', "/victim"), sz = ino_of (&f, 'a', "/sz");
  uint32_t attr = ino_of (&f, 'a', "/attr"), d = ino_of (&f, 'a', "/d");
  uint32_t e = ino_of (&f, 'a', "/d/e"), x = ino_of (&f, 'a', "/d/e/x");
  uint32_t z = ino_of (&f, 'a', "/z");
  fx_debugfs (&f,
              "mkdir n\n"
              "rm z\n"
              "write d5 n/f\n"
              "sif n/f generation 5\n"
              "ln a a2\n"
              "sif a links_count 2\n"
              "unlink g\n"
              "sif f links_count 1\n"
              "ln old new\n"
              "unlink old\n"
              "rm victim\n"
              "ln src victim\n"
              "unlink src\n"
              "sif sz size 3\n"
              "sif attr mode 0100600\n"
              "sif attr uid 5\n"
              "rm d/e/x\n"
              "rmdir d/e\n"
              "rmdir d\n");
  uint32_t n = ino_of (&f, 'b', "/n");
  fx_diff (&f);
  CHECK (&f,
         W (FSEV_CREATE, n, NULL, "/n"),
         W (FSEV_CREATE, z, NULL, "/n/f"),
         W (FSEV_RENAME, old, "/old", "/new"),
         W (FSEV_RENAME, src, "/src", "/victim", .replaced = vic),
         W (FSEV_LINK, a, NULL, "/a2"),
         W (FSEV_SET_SIZE, sz, "/sz", "/sz"),
         W (FSEV_SET_ATTRIBUTES, a, "/a", "/a", .changed = FSEV_ATTR_LINKS),
         W (FSEV_SET_ATTRIBUTES, fi, "/f", "/f", .changed = FSEV_ATTR_LINKS),
         W (FSEV_SET_ATTRIBUTES, attr, "/attr", "/attr",
           .changed = FSEV_ATTR_MODE | FSEV_ATTR_UID),
         W (FSEV_UNLINK, fi, "/g", NULL),
         W (FSEV_DELETE, x, "/d/e/x", NULL),
         W (FSEV_DELETE, e, "/d/e", NULL),
         W (FSEV_DELETE, d, "/d", NULL),
         W (FSEV_DELETE, vic, "/victim", NULL),
         W (FSEV_DELETE, z, "/z", NULL));
  /* The ranks agree with that order (but for the delete of a reused
   * number, which comes first of all).
   */
  for (ssize_t i = 1; i < f.n; i++)
    if (!(f.c[i - 1].kind == FSEV_DELETE && i - 1 == 0))
      ck_assert_int_le (fsev_change_rank (f.c[i - 1].kind),
                        fsev_change_rank (f.c[i].kind));
  fx_done (&f);
}
END_TEST

START_TEST (test_diff_rank)
{
  static const enum fsev_change_kind order[] = {
    FSEV_CREATE, FSEV_RENAME, FSEV_LINK, FSEV_SET_SIZE,
    FSEV_SET_ATTRIBUTES, FSEV_UNLINK, FSEV_DELETE,
  };
  for (int i = 1; i < 7; i++)
    ck_assert_int_lt (fsev_change_rank (order[i - 1]),
                      fsev_change_rank (order[i]));
}
END_TEST

static bool
have_tools (void)
{
  return system ("command -v mkfs.ext4 >/dev/null 2>&1 && "
                 "command -v debugfs >/dev/null 2>&1") == 0;
}

Suite *
diff_suite (void)
{
  Suite *s = suite_create ("diff");
  TCase *mem = tcase_create ("rank");
  TCase *img = tcase_create ("images");

  tcase_add_test (mem, test_diff_rank);
  suite_add_tcase (s, mem);
  if (!have_tools ()) {
    fprintf (stderr, "SKIP: diff image tests: mkfs.ext4 or debugfs missing\n");
    return s;
  }
  tcase_set_timeout (img, 120);
  tcase_add_unchecked_fixture (img, root_setup, root_teardown);
  tcase_add_test (img, test_diff_identical);
  tcase_add_test (img, test_diff_create);
  tcase_add_test (img, test_diff_delete);
  tcase_add_test (img, test_diff_kill_file);
  tcase_add_test (img, test_diff_link_unlink);
  tcase_add_test (img, test_diff_rename);
  tcase_add_test (img, test_diff_attributes);
  tcase_add_test (img, test_diff_reuse);
  tcase_add_test (img, test_diff_create_over);
  tcase_add_test (img, test_diff_many_links);
  tcase_add_test (img, test_diff_was_named);
  tcase_add_test (img, test_diff_everything);
  suite_add_tcase (s, img);
  return s;
}
