/* tests/unit-partition.c: Check unit tests for fs/partition.c.
 *
 * Oracles: sfdisk and sgdisk write the tables, and sfdisk --json says
 * where every partition is; mke2fs, mkfs.vfat and mkswap write what
 * the partitions hold (each made in a file of its own and copied in
 * with dd at the offset sfdisk gives).  LVM2 labels are written by
 * hand (lvm2 is rarely installed): "LABELONE" and "LVM2 001" in
 * sector 1, as pvcreate puts them.  Hostile tables are edits of real
 * ones in memory; where a test edits a GPT field behind a CRC it
 * recomputes the CRC with fsev_crc32, checked first against the
 * standard check value and against what sgdisk wrote.
 */
#include <config.h>

#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <check.h>

#include "partition.h"
#include "unit.h"

#define SEC 512

/* --- Little-endian helpers, independent of partition.c. --- */

static uint32_t
get32 (const uint8_t *p)
{
  return p[0] | (uint32_t) p[1] << 8 | (uint32_t) p[2] << 16 |
    (uint32_t) p[3] << 24;
}

static uint64_t
get64 (const uint8_t *p)
{
  return get32 (p) | (uint64_t) get32 (p + 4) << 32;
}

static void
put32 (uint8_t *p, uint32_t v)
{
  for (int i = 0; i < 4; i++)
    p[i] = v >> (8 * i);
}

static void
put64 (uint8_t *p, uint64_t v)
{
  put32 (p, v);
  put32 (p + 4, v >> 32);
}

/* --- A device in memory. --- */

struct dev {
  uint8_t *buf;
  uint64_t size;                /* what the reader is told */
  uint64_t alloc;               /* bytes in BUF */
  bool past_end;                /* a read went past SIZE */
  bool fail;                    /* every read fails with EIO */
  int fail_after;               /* or every read after this many; -1 never */
};

static int
dev_read (void *opaque, void *buf, size_t count, uint64_t offset)
{
  struct dev *d = opaque;

  if (offset > d->size || count > d->size - offset) {
    d->past_end = true;
    errno = EIO;
    return -1;
  }
  if (d->fail || d->fail_after == 0) {
    errno = EIO;
    return -1;
  }
  if (d->fail_after > 0)
    d->fail_after--;
  memcpy (buf, d->buf + offset, count);
  return 0;
}

static void
dev_zero (struct dev *d, uint64_t size)
{
  d->buf = calloc (size ? size : 1, 1);
  ck_assert_ptr_nonnull (d->buf);
  d->size = d->alloc = size;
  d->past_end = d->fail = false;
  d->fail_after = -1;
}

static void
dev_load (struct dev *d, const char *path)
{
  FILE *f = fopen (path, "rb");

  ck_assert_msg (f != NULL, "open %s: %s", path, strerror (errno));
  ck_assert_int_eq (fseek (f, 0, SEEK_END), 0);
  long size = ftell (f);
  ck_assert_int_ge (size, 0);
  rewind (f);
  dev_zero (d, size);
  ck_assert_uint_eq (fread (d->buf, 1, size, f), (size_t) size);
  fclose (f);
}

static uint8_t *
sector (struct dev *d, uint64_t lba)
{
  ck_assert_uint_le ((lba + 1) * SEC, d->alloc);
  return d->buf + lba * SEC;
}

/* --- Warnings, and reading a table. --- */

/* ck_assert records every check that passes (a message to the runner):
 * too slow for the fuzz loop, so its paths check this way.
 */
#define must(cond) do {                                                 \
    if (!(cond))                                                        \
      ck_abort_msg ("%s:%d: '%s' failed", __FILE__, __LINE__, #cond);   \
  } while (0)

struct warns {
  int n;
  char all[8192];
};

static void
collect (void *opaque, const char *msg)
{
  struct warns *w = opaque;
  size_t used = strlen (w->all);

  must (msg != NULL && msg[0] != '\0');
  w->n++;
  snprintf (w->all + used, sizeof w->all - used, "%s\n", msg);
}

/* fsev_ptable_read on D; the result, with W and ERR filled. */
static int
ptable (struct dev *d, struct fsev_ptable *pt, struct warns *w, char *err,
        size_t errlen)
{
  memset (w, 0, sizeof *w);
  int r = fsev_ptable_read (dev_read, d, d->size, collect, w, pt, err, errlen);
  must (!d->past_end);           /* no read past the end */
  must (r == 0 || r == -1);
  if (r == -1)
    must (err[0] != '\0' && pt->n == 0 && pt->parts == NULL);
  return r;
}

#define ck_assert_has(s, sub) \
  ck_assert_msg (strstr ((s), (sub)) != NULL, "'%s' not in '%s'", (sub), (s))

/* --- Images made by the real tools. --- */

static char tdir[256];

static void
tmp_setup (void)
{
  const char *tmp = getenv ("TMPDIR");
  snprintf (tdir, sizeof tdir, "%s/fsevent-unit-pt-XXXXXX", tmp ? tmp : "/tmp");
  ck_assert_ptr_nonnull (mkdtemp (tdir));
}

static void
tmp_teardown (void)
{
  char cmd[300];
  snprintf (cmd, sizeof cmd, "rm -rf '%s'", tdir);
  if (system (cmd) != 0)
    fprintf (stderr, "unit-partition: %s failed\n", cmd);
}

/* Run a shell command in the test's directory; fail the test if it
 * fails.  The tools live in sbin.
 */
static void __attribute__ ((format (printf, 1, 2)))
sh (const char *fmt, ...)
{
  char cmd[4096], *full;
  va_list ap;

  va_start (ap, fmt);
  vsnprintf (cmd, sizeof cmd, fmt, ap);
  va_end (ap);
  ck_assert_int_ne (asprintf (&full, "cd '%s' && PATH=\"$PATH:/usr/sbin:"
                              "/sbin\" && { %s ; } >/dev/null 2>sh.err",
                              tdir, cmd), -1);
  int r = system (full);
  free (full);
  if (r != 0) {
    char err[1024] = "", path[300];
    snprintf (path, sizeof path, "%s/sh.err", tdir);
    FILE *f = fopen (path, "r");
    if (f) {
      size_t n = fread (err, 1, sizeof err - 1, f);
      err[n] = '\0';
      fclose (f);
    }
    ck_abort_msg ("'%s' failed (status %d): %s", cmd, r, err);
  }
}

static char *
path_of (const char *name)
{
  char *p;
  ck_assert_int_ne (asprintf (&p, "%s/%s", tdir, name), -1);
  return p;
}

/* What sfdisk --json says about the table of image NAME. */
struct sfpart {
  unsigned number;
  uint64_t start, size;         /* sectors */
  char type[64], uuid[64], name[256];
};
struct sftable {
  char label[16];
  size_t n;
  struct sfpart p[64];
};

/* The value of "KEY": in FROM..TO, a string (with \" and \\ undone) or
 * a number as text.
 */
static bool
json_field (const char *from, const char *to, const char *key, char *val,
            size_t len)
{
  char pat[64];
  snprintf (pat, sizeof pat, "\"%s\":", key);
  const char *k = strstr (from, pat);
  size_t o = 0;

  if (k == NULL || k >= to)
    return false;
  k += strlen (pat);
  while (*k == ' ')
    k++;
  if (*k == '"') {
    for (k++; *k && *k != '"' && o + 1 < len; k++) {
      if (*k == '\\' && k[1])
        k++;
      val[o++] = *k;
    }
  }
  else {
    for (; *k && strchr (",} \n", *k) == NULL && o + 1 < len; k++)
      val[o++] = *k;
  }
  val[o] = '\0';
  return true;
}

static void
sfdisk_json (const char *img, struct sftable *t)
{
  char *json = path_of ("sfdisk.json");
  sh ("sfdisk --json '%s' > '%s'", img, json);
  struct dev d;
  dev_load (&d, json);
  char *text = realloc (d.buf, d.size + 1);
  ck_assert_ptr_nonnull (text);
  text[d.size] = '\0';

  memset (t, 0, sizeof *t);
  ck_assert (json_field (text, text + d.size, "label", t->label,
                         sizeof t->label));
  const char *p = strstr (text, "\"partitions\"");
  while (p && (p = strstr (p, "\"node\"")) != NULL) {
    const char *next = strstr (p + 1, "\"node\"");
    const char *end = next ? next : text + d.size;
    char val[256];
    ck_assert_uint_lt (t->n, 64);
    struct sfpart *s = &t->p[t->n++];
    ck_assert (json_field (p, end, "node", val, sizeof val));
    size_t l = strlen (val);
    while (l > 0 && isdigit ((unsigned char) val[l - 1]))
      l--;
    s->number = atoi (val + l);
    ck_assert (json_field (p, end, "start", val, sizeof val));
    s->start = strtoull (val, NULL, 10);
    ck_assert (json_field (p, end, "size", val, sizeof val));
    s->size = strtoull (val, NULL, 10);
    ck_assert (json_field (p, end, "type", s->type, sizeof s->type));
    json_field (p, end, "uuid", s->uuid, sizeof s->uuid);
    json_field (p, end, "name", s->name, sizeof s->name);
    p = end;
  }
  free (text);
  free (json);
}

static void
lower (char *s)
{
  for (; *s; s++)
    *s = tolower ((unsigned char) *s);
}

/* PT must list exactly what sfdisk --json lists for IMG. */
static void
check_against_sfdisk (const char *img, const struct fsev_ptable *pt)
{
  struct sftable t;

  sfdisk_json (img, &t);
  ck_assert_str_eq (fsev_pt_scheme_name (pt->scheme),
                    strcmp (t.label, "dos") == 0 ? "mbr" : t.label);
  ck_assert_uint_eq (pt->sector_size, 512);
  ck_assert_uint_eq (pt->n, t.n);
  for (size_t i = 0; i < t.n; i++) {
    const struct fsev_partition *p = &pt->parts[i];
    struct sfpart *s = &t.p[i];
    ck_assert_uint_eq (p->number, s->number);
    ck_assert_uint_eq (p->offset, s->start * SEC);
    ck_assert_uint_eq (p->length, s->size * SEC);
    if (pt->scheme == FSEV_PT_MBR) {
      ck_assert_uint_eq (p->mbr_type, strtoul (s->type, NULL, 16));
      ck_assert_str_eq (p->gpt_type, "");
      ck_assert_str_eq (p->name, "");
    }
    else {
      lower (s->type);
      lower (s->uuid);
      ck_assert_uint_eq (p->mbr_type, 0);
      ck_assert_str_eq (p->gpt_type, s->type);
      ck_assert_str_eq (p->gpt_uuid, s->uuid);
      ck_assert_str_eq (p->name, s->name);
    }
    ck_assert_ptr_nonnull (p->fs);
  }
}

/* Make a filesystem with SHELL_MKFS (run on file "part") of SIZE and
 * copy it into IMG at partition NUMBER's start, per sfdisk.
 */
static void
fill_partition (const char *img, unsigned number, const char *size,
                const char *shell_mkfs)
{
  struct sftable t;
  sfdisk_json (img, &t);
  for (size_t i = 0; i < t.n; i++) {
    if (t.p[i].number == number) {
      sh ("rm -f part && truncate -s %s part && chmod 600 part && %s && "
          "dd if=part of='%s' bs=512 seek=%" PRIu64 " conv=notrunc "
          "status=none", size, shell_mkfs, img, t.p[i].start);
      return;
    }
  }
  ck_abort_msg ("no partition %u in %s", number, img);
}

/* An LVM2 physical volume label in sector 1 of the range at BYTE. */
static void
write_lvm_label (const char *img, uint64_t byte)
{
  uint8_t label[32] = "LABELONE";
  memcpy (label + 24, "LVM2 001", 8);
  FILE *f = fopen (img, "r+b");
  ck_assert_ptr_nonnull (f);
  ck_assert_int_eq (fseek (f, byte + SEC, SEEK_SET), 0);
  ck_assert_uint_eq (fwrite (label, 1, sizeof label, f), sizeof label);
  fclose (f);
}

/* A 64M MBR disk: primaries 1, 2, 4, extended 3 holding logicals 5-7. */
static char *
make_mbr (bool with_filesystems)
{
  char *img = path_of ("mbr.img");
  sh ("truncate -s 64M mbr.img && printf 'label: dos\\n,8M,83\\n,4M,c\\n"
      ",40M,5\\n,4M,83\\n,4M,82\\n,8M,83\\n,4M,8e\\n' | sfdisk -q mbr.img");
  if (with_filesystems) {
    fill_partition (img, 1, "8M", "mke2fs -q -F -t ext4 part");
    fill_partition (img, 2, "4M", "mkfs.vfat part");
    fill_partition (img, 4, "4M", "mke2fs -q -F -t ext2 part");
    fill_partition (img, 5, "4M", "mkswap part");
    fill_partition (img, 6, "8M", "mke2fs -q -F -t ext3 part");
    struct sftable t;
    sfdisk_json (img, &t);
    write_lvm_label (img, t.p[6].start * SEC);
  }
  return img;
}

/* A 8M GPT disk by sgdisk: an EFI system partition and a Linux one. */
static char *
make_gpt (bool with_filesystems)
{
  char *img = path_of ("gpt.img");
  sh ("truncate -s 8M gpt.img && sgdisk -n 1:2048:+2M -t 1:ef00 -c 1:EFI "
      "-n 2:0:0 -t 2:8300 -c '2:Linux root' gpt.img");
  if (with_filesystems) {
    fill_partition (img, 1, "2M", "mkfs.vfat part");
    fill_partition (img, 2, "4M", "mke2fs -q -F -t ext4 part");
  }
  return img;
}

/* --- CRC-32. --- */

START_TEST (test_crc32)
{
  /* The standard check value, and continuing a CRC piecewise. */
  ck_assert_uint_eq (fsev_crc32 (0, "123456789", 9), 0xcbf43926);
  ck_assert_uint_eq (fsev_crc32 (fsev_crc32 (0, "1234", 4), "56789", 5),
                     0xcbf43926);
  ck_assert_uint_eq (fsev_crc32 (0, "", 0), 0);
  /* A bit-at-a-time CRC of every single byte value. */
  for (unsigned b = 0; b < 256; b++) {
    uint32_t c = 0xffffffff ^ b;
    for (int k = 0; k < 8; k++)
      c = (c >> 1) ^ (c & 1 ? 0xedb88320 : 0);
    uint8_t byte = b;
    ck_assert_uint_eq (fsev_crc32 (0, &byte, 1), ~c);
  }
  ck_assert_str_eq (fsev_pt_scheme_name (FSEV_PT_NONE), "none");
  ck_assert_str_eq (fsev_pt_scheme_name (FSEV_PT_MBR), "mbr");
  ck_assert_str_eq (fsev_pt_scheme_name (FSEV_PT_GPT), "gpt");
}
END_TEST

/* --- Real tables. --- */

START_TEST (test_mbr_sfdisk)
{
  char *img = make_mbr (true);
  struct dev d;
  struct fsev_ptable pt;
  struct warns w;
  char err[256];

  dev_load (&d, img);
  ck_assert_int_eq (ptable (&d, &pt, &w, err, sizeof err), 0);
  ck_assert_msg (w.n == 0, "warnings: %s", w.all);
  ck_assert_int_eq (pt.scheme, FSEV_PT_MBR);
  check_against_sfdisk (img, &pt);
  static const char *const fs[] = {
    "ext4", "vfat", "extended", "ext2", "swap", "ext3", "LVM2_member",
  };
  ck_assert_uint_eq (pt.n, 7);
  for (size_t i = 0; i < pt.n; i++)
    ck_assert_str_eq (pt.parts[i].fs, fs[i]);
  fsev_ptable_free (&pt);
  ck_assert_uint_eq (pt.n, 0);
  fsev_ptable_free (&pt);       /* twice is harmless */
  free (d.buf);
  free (img);
}
END_TEST

START_TEST (test_mbr_empty)
{
  char *img = path_of ("empty.img");
  struct dev d;
  struct fsev_ptable pt;
  struct warns w;
  char err[256];

  sh ("truncate -s 4M empty.img && echo 'label: dos' | sfdisk -q empty.img");
  dev_load (&d, img);
  ck_assert_int_eq (ptable (&d, &pt, &w, err, sizeof err), 0);
  ck_assert_int_eq (pt.scheme, FSEV_PT_MBR);
  ck_assert_uint_eq (pt.n, 0);
  ck_assert_int_eq (w.n, 0);
  check_against_sfdisk (img, &pt);
  fsev_ptable_free (&pt);
  free (d.buf);
  free (img);
}
END_TEST

START_TEST (test_gpt_sfdisk)
{
  /* Entry 4 left unused: numbers follow the entry index, with a gap. */
  char *img = path_of ("g.img");
  struct dev d;
  struct fsev_ptable pt;
  struct warns w;
  char err[256];

  sh ("truncate -s 16M g.img && printf 'label: gpt\\n"
      "g.img1 : size=2M, type=U, name=esp\\n"
      "g.img2 : size=4M, type=L, name=\"root fs\"\\n"
      "g.img3 : size=1M, type=S, name=swap\\n"
      "g.img5 : type=L, name=data\\n' | sfdisk -q g.img");
  fill_partition (img, 3, "1M", "mkswap part");
  dev_load (&d, img);
  ck_assert_int_eq (ptable (&d, &pt, &w, err, sizeof err), 0);
  ck_assert_msg (w.n == 0, "warnings: %s", w.all);
  ck_assert_int_eq (pt.scheme, FSEV_PT_GPT);
  check_against_sfdisk (img, &pt);
  ck_assert_uint_eq (pt.n, 4);
  ck_assert_uint_eq (pt.parts[3].number, 5);
  ck_assert_str_eq (pt.parts[0].gpt_type, "c12a7328-f81f-11d2-ba4b-00a0c93ec93b");
  ck_assert_str_eq (pt.parts[1].name, "root fs");
  ck_assert_str_eq (pt.parts[2].fs, "swap");
  ck_assert_str_eq (pt.parts[3].fs, "unknown");
  fsev_ptable_free (&pt);
  free (d.buf);
  free (img);
}
END_TEST

START_TEST (test_gpt_sgdisk)
{
  char *img = make_gpt (true);
  struct dev d;
  struct fsev_ptable pt;
  struct warns w;
  char err[256];

  dev_load (&d, img);
  /* sgdisk's CRCs are what ours computes. */
  const uint8_t *h = sector (&d, 1);
  uint8_t copy[92];
  memcpy (copy, h, 92);
  memset (copy + 16, 0, 4);
  ck_assert_uint_eq (fsev_crc32 (0, copy, 92), get32 (h + 16));
  ck_assert_uint_eq (fsev_crc32 (0, sector (&d, get64 (h + 72)),
                                 get32 (h + 80) * get32 (h + 84)),
                     get32 (h + 88));

  ck_assert_int_eq (ptable (&d, &pt, &w, err, sizeof err), 0);
  ck_assert_msg (w.n == 0, "warnings: %s", w.all);
  check_against_sfdisk (img, &pt);
  ck_assert_uint_eq (pt.n, 2);
  ck_assert_str_eq (pt.parts[0].name, "EFI");
  ck_assert_str_eq (pt.parts[0].fs, "vfat");
  ck_assert_str_eq (pt.parts[1].name, "Linux root");
  ck_assert_str_eq (pt.parts[1].gpt_type, "0fc63daf-8483-4772-8e79-3d69d8477de4");
  ck_assert_str_eq (pt.parts[1].fs, "ext4");
  fsev_ptable_free (&pt);
  free (d.buf);
  free (img);
}
END_TEST

START_TEST (test_gpt_unicode_name)
{
  /* A BMP character, one outside it (a surrogate pair), and a name of
   * the full 36 units.
   */
  char *img = path_of ("u.img");
  struct dev d;
  struct fsev_ptable pt;
  struct warns w;
  char err[256];

  sh ("truncate -s 8M u.img && sgdisk -n 1:2048:+1M -c '1:caf\xc3\xa9 "
      "\xe2\x98\x83 \xf0\x9d\x84\x9e x' -n 2:0:+1M "
      "-c 2:abcdefghijklmnopqrstuvwxyz0123456789 u.img");
  dev_load (&d, img);
  ck_assert_int_eq (ptable (&d, &pt, &w, err, sizeof err), 0);
  check_against_sfdisk (img, &pt);
  ck_assert_str_eq (pt.parts[0].name,
                    "caf\xc3\xa9 \xe2\x98\x83 \xf0\x9d\x84\x9e x");
  ck_assert_str_eq (pt.parts[1].name, "abcdefghijklmnopqrstuvwxyz0123456789");
  fsev_ptable_free (&pt);

  /* A lone surrogate becomes U+FFFD. */
  uint8_t *e = sector (&d, 2);
  e[56] = 0x00, e[57] = 0xdc;
  e[58] = 'z', e[59] = 0;
  e[60] = 0, e[61] = 0;
  struct dev m = d;
  uint8_t *h = sector (&m, 1);
  put32 (h + 88, fsev_crc32 (0, e, get32 (h + 80) * get32 (h + 84)));
  put32 (h + 16, 0);
  put32 (h + 16, fsev_crc32 (0, h, get32 (h + 12)));
  ck_assert_int_eq (ptable (&m, &pt, &w, err, sizeof err), 0);
  ck_assert_str_eq (pt.parts[0].name, "\xef\xbf\xbdz");
  fsev_ptable_free (&pt);
  free (d.buf);
  free (img);
}
END_TEST

/* --- Bare filesystems and small devices: no table. --- */

static void
expect_none (struct dev *d, int warnings)
{
  struct fsev_ptable pt;
  struct warns w;
  char err[256];

  ck_assert_int_eq (ptable (d, &pt, &w, err, sizeof err), 0);
  ck_assert_int_eq (pt.scheme, FSEV_PT_NONE);
  ck_assert_uint_eq (pt.n, 0);
  ck_assert_ptr_null (pt.parts);
  ck_assert_uint_eq (pt.sector_size, 512);
  ck_assert_msg (w.n == warnings, "%d warnings, not %d: %s", w.n, warnings,
                 w.all);
  fsev_ptable_free (&pt);
}

START_TEST (test_bare_ext4)
{
  char *img = unit_mkfs ("-t ext4", "16M");
  struct dev d;

  dev_load (&d, img);
  expect_none (&d, 0);
  ck_assert_str_eq (fsev_probe_fs (dev_read, &d, 0, d.size), "ext4");
  free (d.buf);
  unit_rm (img);
}
END_TEST

START_TEST (test_bare_ext4_stale_mbr)
{
  /* An MBR (signature and sane entries) over a bare ext4: the
   * superblock wins, with a warning.
   */
  char *img = unit_mkfs ("-t ext4", "64M");
  char *mbr = make_mbr (false);
  struct dev d, m;

  dev_load (&d, img);
  dev_load (&m, mbr);
  memcpy (sector (&d, 0), sector (&m, 0), SEC);
  expect_none (&d, 1);
  free (d.buf);
  free (m.buf);
  free (mbr);
  unit_rm (img);
}
END_TEST

START_TEST (test_bare_vfat)
{
  /* FAT12/16 and FAT32 boot sectors end with 0x55AA, with zeroes where
   * MBR entries would be; mkfs.fat --mbr writes a fake entry from
   * sector 0 over the whole disk.
   */
  static const char *const opts[] = { "", "-F 32", "--mbr=y", "-F 32 --mbr=y" };
  char *img = path_of ("v.img");

  for (size_t i = 0; i < sizeof opts / sizeof opts[0]; i++) {
    struct dev d;
    sh ("rm -f v.img && truncate -s 40M v.img && mkfs.vfat %s v.img", opts[i]);
    dev_load (&d, img);
    ck_assert_uint_eq (sector (&d, 0)[510], 0x55);
    expect_none (&d, 0);
    ck_assert_str_eq (fsev_probe_fs (dev_read, &d, 0, d.size), "vfat");
    free (d.buf);
  }
  free (img);
}
END_TEST

START_TEST (test_small_devices)
{
  struct dev d;

  /* Zeroes; shorter than a sector; exactly one sector. */
  static const uint64_t sizes[] = { 1 << 20, 0, 1, 100, 511, 512, 1023, 1536 };
  for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
    dev_zero (&d, sizes[i]);
    expect_none (&d, 0);
    ck_assert_str_eq (fsev_probe_fs (dev_read, &d, 0, d.size), "unknown");
    free (d.buf);
  }

  /* One sector holding an MBR whose partition cannot fit. */
  struct fsev_ptable pt;
  struct warns w;
  char err[256];
  dev_zero (&d, 512);
  uint8_t *s = sector (&d, 0);
  s[510] = 0x55, s[511] = 0xaa;
  s[446 + 4] = 0x83;
  put32 (s + 446 + 8, 1);
  put32 (s + 446 + 12, 1);
  ck_assert_int_eq (ptable (&d, &pt, &w, err, sizeof err), -1);
  ck_assert_has (err, "partition 1 extends past the end of the device");

  /* Two sectors with a protective MBR: no room for a backup. */
  free (d.buf);
  dev_zero (&d, 1024);
  s = sector (&d, 0);
  s[510] = 0x55, s[511] = 0xaa;
  s[446 + 4] = 0xee;
  put32 (s + 446 + 8, 1);
  put32 (s + 446 + 12, 1);
  ck_assert_int_eq (ptable (&d, &pt, &w, err, sizeof err), -1);
  ck_assert_has (err, "GPT header missing at LBA 1 and backup header "
                 "unusable (the device is too small)");
  free (d.buf);
}
END_TEST

/* --- Hostile MBRs. --- */

static void
set_entry (uint8_t *sec, int slot, uint8_t boot, uint8_t type,
           uint32_t start, uint32_t size)
{
  uint8_t *e = sec + 446 + 16 * slot;
  memset (e, 0, 16);
  e[0] = boot;
  e[4] = type;
  put32 (e + 8, start);
  put32 (e + 12, size);
}

/* The EBRs of the first extended partition in D, in chain order (read
 * the simple way: the image is one sfdisk wrote).
 */
static int
ebrs_of (struct dev *d, uint64_t lba[8])
{
  uint8_t *mbr = sector (d, 0);
  uint64_t ext = 0;
  int n = 0;

  for (int i = 0; i < 4; i++)
    if (mbr[446 + 16 * i + 4] == 0x05)
      ext = get32 (mbr + 446 + 16 * i + 8);
  ck_assert_uint_ne (ext, 0);
  for (uint64_t at = ext; n < 8;) {
    lba[n++] = at;
    uint8_t *link = sector (d, at) + 446 + 16;
    if (link[4] == 0)
      break;
    at = ext + get32 (link + 8);
  }
  return n;
}

START_TEST (test_ebr_cycle)
{
  char *img = make_mbr (false);
  struct dev d;
  struct fsev_ptable pt;
  struct warns w;
  char err[256];
  uint64_t ebr[8];

  dev_load (&d, img);
  ck_assert_int_eq (ebrs_of (&d, ebr), 3);
  uint32_t ext_start = ebr[0];

  /* The last EBR links back to the first. */
  set_entry (sector (&d, ebr[2]), 1, 0, 0x05, 0, 2048);
  ck_assert_int_eq (ptable (&d, &pt, &w, err, sizeof err), 0);
  ck_assert_uint_eq (pt.n, 7);
  ck_assert_int_eq (w.n, 1);
  ck_assert_has (w.all, "loop in the EBR chain of extended partition 3");
  fsev_ptable_free (&pt);

  /* The second links to itself. */
  set_entry (sector (&d, ebr[2]), 1, 0, 0, 0, 0);
  set_entry (sector (&d, ebr[1]), 1, 0, 0x05, ebr[1] - ext_start, 2048);
  ck_assert_int_eq (ptable (&d, &pt, &w, err, sizeof err), 0);
  ck_assert_uint_eq (pt.n, 6);
  ck_assert_int_eq (w.n, 1);
  ck_assert_has (w.all, "loop in the EBR chain");
  fsev_ptable_free (&pt);
  free (d.buf);
  free (img);
}
END_TEST

START_TEST (test_ebr_link_outside)
{
  char *img = make_mbr (false);
  struct dev d;
  struct fsev_ptable pt;
  struct warns w;
  char err[256];
  uint64_t ebr[8];

  dev_load (&d, img);
  ebrs_of (&d, ebr);
  uint8_t *saved = malloc (d.alloc);
  memcpy (saved, d.buf, d.alloc);
  /* Past the extended partition (40M = 81920 sectors), then far past
   * the device; then into logical 5.
   */
  static const uint32_t rel[] = { 81920, 0xfffffff0 };
  for (int i = 0; i < 2; i++) {
    set_entry (sector (&d, ebr[0]), 1, 0, 0x05, rel[i], 2048);
    ck_assert_int_eq (ptable (&d, &pt, &w, err, sizeof err), 0);
    ck_assert_uint_eq (pt.n, 5);
    ck_assert_uint_eq (pt.parts[4].number, 5);
    ck_assert_int_eq (w.n, 1);
    ck_assert_has (w.all, "points outside extended partition 3");
    fsev_ptable_free (&pt);
  }
  set_entry (sector (&d, ebr[0]), 1, 0, 0x05, 2048 + 10, 2048);
  ck_assert_int_eq (ptable (&d, &pt, &w, err, sizeof err), 0);
  ck_assert_uint_eq (pt.n, 5);
  ck_assert_has (w.all, "points inside partition 5");
  fsev_ptable_free (&pt);

  /* An EBR without a logical: the next logical takes its number. */
  memcpy (sector (&d, ebr[0]) + 446 + 16, saved + ebr[0] * SEC + 446 + 16, 16);
  set_entry (sector (&d, ebr[1]), 0, 0, 0x05, 2048, 100);
  ck_assert_int_eq (ptable (&d, &pt, &w, err, sizeof err), 0);
  ck_assert_uint_eq (pt.n, 6);
  ck_assert_uint_eq (pt.parts[5].number, 6);
  ck_assert_uint_eq (pt.parts[5].offset, (ebr[2] + 2048) * SEC);
  ck_assert_has (w.all, "the first entry is an extended partition");
  fsev_ptable_free (&pt);
  memcpy (sector (&d, ebr[1]), saved + ebr[1] * SEC, SEC);

  /* A link without an extended type, and an EBR without signature. */
  set_entry (sector (&d, ebr[0]), 1, 0, 0x83, ebr[1] - ebr[0], 2048);
  ck_assert_int_eq (ptable (&d, &pt, &w, err, sizeof err), 0);
  ck_assert_uint_eq (pt.n, 5);
  ck_assert_has (w.all, "not an extended type");
  fsev_ptable_free (&pt);
  set_entry (sector (&d, ebr[0]), 1, 0, 0x05, ebr[1] - ebr[0], 2048);
  sector (&d, ebr[1])[510] = 0;
  ck_assert_int_eq (ptable (&d, &pt, &w, err, sizeof err), 0);
  ck_assert_uint_eq (pt.n, 5);
  ck_assert_has (w.all, "has no 0x55AA signature");
  fsev_ptable_free (&pt);
  free (saved);
  free (d.buf);
  free (img);
}
END_TEST

START_TEST (test_logical_outside)
{
  char *img = make_mbr (false);
  struct dev d;
  struct fsev_ptable pt;
  struct warns w;
  char err[256];
  uint64_t ebr[8];

  dev_load (&d, img);
  ebrs_of (&d, ebr);
  uint8_t *saved = malloc (d.alloc);
  memcpy (saved, d.buf, d.alloc);

  /* Past the end of the extended partition. */
  set_entry (sector (&d, ebr[1]), 0, 0, 0x83, 2048, 81920);
  ck_assert_int_eq (ptable (&d, &pt, &w, err, sizeof err), -1);
  ck_assert_has (err, "partition 6 (sectors");
  ck_assert_has (err, "extends past its extended partition 3");

  /* Over its own EBR. */
  set_entry (sector (&d, ebr[1]), 0, 0, 0x83, 0, 100);
  ck_assert_int_eq (ptable (&d, &pt, &w, err, sizeof err), -1);
  ck_assert_has (err, "partition 6 starts on its own EBR");

  /* Over an EBR visited before it: the chain goes 0, 2, 1 and the
   * logical of EBR 1 reaches over EBR 2.
   */
  memcpy (d.buf, saved, d.alloc);
  set_entry (sector (&d, ebr[0]), 1, 0, 0x05, ebr[2] - ebr[0], 2048);
  set_entry (sector (&d, ebr[2]), 1, 0, 0x05, ebr[1] - ebr[0], 2048);
  set_entry (sector (&d, ebr[1]), 1, 0, 0, 0, 0);
  set_entry (sector (&d, ebr[1]), 0, 0, 0x83, 2048, ebr[2] - ebr[1]);
  ck_assert_int_eq (ptable (&d, &pt, &w, err, sizeof err), -1);
  char want[64];
  snprintf (want, sizeof want, "partition 7 covers the EBR at sector %"
            PRIu64, ebr[2]);
  ck_assert_has (err, want);

  /* Logicals overlapping: logical 5 placed inside logical 6. */
  memcpy (d.buf, saved, d.alloc);
  set_entry (sector (&d, ebr[0]), 0, 0, 0x83, ebr[1] - ebr[0] + 2058, 100);
  ck_assert_int_eq (ptable (&d, &pt, &w, err, sizeof err), -1);
  ck_assert_has (err, "partitions 5 and 6 overlap");
  free (saved);
  free (d.buf);
  free (img);
}
END_TEST

START_TEST (test_mbr_primary_errors)
{
  char *img = make_mbr (false);
  struct dev d;
  struct fsev_ptable pt;
  struct warns w;
  char err[256];

  dev_load (&d, img);
  uint8_t *mbr = sector (&d, 0);
  uint8_t saved[SEC];
  memcpy (saved, mbr, SEC);

  /* Past the end: by its size, then by the device shrinking. */
  put32 (mbr + 446 + 16 + 12, 200000);
  ck_assert_int_eq (ptable (&d, &pt, &w, err, sizeof err), -1);
  ck_assert_has (err, "partition 2 extends past the end of the device");
  memcpy (mbr, saved, SEC);
  d.size = 54 << 20;
  ck_assert_int_eq (ptable (&d, &pt, &w, err, sizeof err), -1);
  ck_assert_has (err, "partition 4 extends past the end of the device");
  d.size = 64 << 20;
  /* A partition table whose last partition ends in a partial sector. */
  d.size = (53 << 20) + (4 << 20) - 1;
  ck_assert_int_eq (ptable (&d, &pt, &w, err, sizeof err), -1);
  ck_assert_has (err, "partition 4 extends past the end of the device");
  d.size = 64 << 20;

  /* Overlapping primaries. */
  put32 (mbr + 446 + 16 + 8, 2049);
  ck_assert_int_eq (ptable (&d, &pt, &w, err, sizeof err), -1);
  ck_assert_has (err, "partitions 1 and 2 overlap");
  memcpy (mbr, saved, SEC);

  /* Starting at sector 0. */
  put32 (mbr + 446 + 8, 0);
  ck_assert_int_eq (ptable (&d, &pt, &w, err, sizeof err), -1);
  ck_assert_has (err, "partition 1 starts at sector 0");
  memcpy (mbr, saved, SEC);

  /* A bad boot flag: not a partition table at all. */
  mbr[446 + 32] = 0x12;
  expect_none (&d, 1);
  memcpy (mbr, saved, SEC);

  /* Odd entries are skipped with a warning. */
  set_entry (mbr, 3, 0, 0x83, 0, 0);
  ck_assert_int_eq (ptable (&d, &pt, &w, err, sizeof err), 0);
  ck_assert_uint_eq (pt.n, 6);
  ck_assert_int_eq (w.n, 1);
  ck_assert_has (w.all, "MBR entry 4: type 0x83 but no sectors");
  fsev_ptable_free (&pt);
  free (d.buf);
  free (img);
}
END_TEST

START_TEST (test_many_logicals)
{
  /* 200 logicals of one sector each, every one after its EBR. */
  struct dev d;
  struct fsev_ptable pt;
  struct warns w;
  char err[256];
  const uint32_t ext = 8, n = 200;

  dev_zero (&d, (ext + 2 * n + 8) * SEC);
  uint8_t *mbr = sector (&d, 0);
  mbr[510] = 0x55, mbr[511] = 0xaa;
  set_entry (mbr, 0, 0x80, 0x83, 1, 7);
  set_entry (mbr, 1, 0, 0x0f, ext, 2 * n);
  for (uint32_t i = 0; i < n; i++) {
    uint8_t *e = sector (&d, ext + 2 * i);
    e[510] = 0x55, e[511] = 0xaa;
    set_entry (e, 0, 0, 0x83, 1, 1);
    if (i + 1 < n)
      set_entry (e, 1, 0, 0x05, 2 * (i + 1), 2);
  }
  ck_assert_int_eq (ptable (&d, &pt, &w, err, sizeof err), 0);
  ck_assert_uint_eq (pt.n, 2 + FSEV_PT_MAX_LOGICAL);
  ck_assert_int_eq (w.n, 1);
  ck_assert_has (w.all, "more than 128 logical partitions");
  for (size_t i = 2; i < pt.n; i++) {
    ck_assert_uint_eq (pt.parts[i].number, 5 + i - 2);
    ck_assert_uint_eq (pt.parts[i].offset, (ext + 2 * (i - 2) + 1) * SEC);
    ck_assert_uint_eq (pt.parts[i].length, SEC);
  }
  ck_assert_str_eq (pt.parts[1].fs, "extended");
  fsev_ptable_free (&pt);
  free (d.buf);
}
END_TEST

/* --- Hostile GPTs. --- */

/* The header at LBA in D: its entry array's CRC, then its own. */
static void
gpt_fix (struct dev *d, uint64_t lba)
{
  uint8_t *h = sector (d, lba);
  uint64_t bytes = (uint64_t) get32 (h + 80) * get32 (h + 84);
  uint64_t at = get64 (h + 72);

  if (bytes <= (1 << 20) && at < d->alloc / SEC &&
      bytes <= d->alloc - at * SEC)
    put32 (h + 88, fsev_crc32 (0, d->buf + at * SEC, bytes));
  uint32_t hs = get32 (h + 12);
  put32 (h + 16, 0);
  put32 (h + 16, fsev_crc32 (0, h, hs >= 92 && hs <= SEC ? hs : 92));
}

/* Entry I (from 0) of the array of the header at LBA. */
static uint8_t *
gpt_entry (struct dev *d, uint64_t lba, unsigned i)
{
  uint8_t *h = sector (d, lba);
  return sector (d, get64 (h + 72)) + i * get32 (h + 84);
}

/* Apply EDIT to both headers or both arrays, then fix the CRCs. */
#define BOTH(d, lba, stmt) do {                                 \
    uint64_t lbas_[2] = { 1, (d)->alloc / SEC - 1 };            \
    for (int k_ = 0; k_ < 2; k_++) {                            \
      uint64_t lba = lbas_[k_];                                 \
      stmt;                                                     \
      gpt_fix ((d), lba);                                       \
    }                                                           \
  } while (0)

START_TEST (test_gpt_header_crc)
{
  char *img = make_gpt (false);
  struct dev d;
  struct fsev_ptable pt, good;
  struct warns w;
  char err[256];

  dev_load (&d, img);
  ck_assert_int_eq (ptable (&d, &good, &w, err, sizeof err), 0);
  uint64_t last = d.size / SEC - 1;

  /* Primary damaged: the backup gives the same table. */
  sector (&d, 1)[60] ^= 1;
  ck_assert_int_eq (ptable (&d, &pt, &w, err, sizeof err), 0);
  ck_assert_int_eq (w.n, 1);
  ck_assert_has (w.all, "primary GPT header unusable (header CRC mismatch): "
                 "using the backup header");
  ck_assert_uint_eq (pt.n, good.n);
  ck_assert_mem_eq (pt.parts, good.parts, pt.n * sizeof *pt.parts);
  fsev_ptable_free (&pt);

  /* Both. */
  sector (&d, last)[60] ^= 1;
  ck_assert_int_eq (ptable (&d, &pt, &w, err, sizeof err), -1);
  ck_assert_has (err, "GPT header CRC mismatch and backup header unusable "
                 "(header CRC mismatch)");

  /* The primary missing, the backup damaged. */
  memset (sector (&d, 1), 0, SEC);
  ck_assert_int_eq (ptable (&d, &pt, &w, err, sizeof err), -1);
  ck_assert_has (err, "GPT header missing at LBA 1 and backup header "
                 "unusable (header CRC mismatch)");

  /* Primary good, backup damaged: a warning. */
  free (d.buf);
  dev_load (&d, img);
  sector (&d, last)[60] ^= 1;
  ck_assert_int_eq (ptable (&d, &pt, &w, err, sizeof err), 0);
  ck_assert_int_eq (w.n, 1);
  ck_assert_has (w.all, "backup GPT header unusable (header CRC mismatch)");
  fsev_ptable_free (&pt);

  /* The header claims to be elsewhere. */
  free (d.buf);
  dev_load (&d, img);
  put64 (sector (&d, 1) + 24, 5);
  gpt_fix (&d, 1);
  ck_assert_int_eq (ptable (&d, &pt, &w, err, sizeof err), 0);
  ck_assert_has (w.all, "says it is at LBA 5");
  fsev_ptable_free (&pt);

  fsev_ptable_free (&good);
  free (d.buf);
  free (img);
}
END_TEST

START_TEST (test_gpt_array_crc)
{
  char *img = make_gpt (false);
  struct dev d;
  struct fsev_ptable pt;
  struct warns w;
  char err[256];

  dev_load (&d, img);
  gpt_entry (&d, 1, 1)[60] ^= 0x20;
  ck_assert_int_eq (ptable (&d, &pt, &w, err, sizeof err), 0);
  ck_assert_int_eq (w.n, 1);
  ck_assert_has (w.all, "primary GPT header unusable (partition entry array "
                 "CRC mismatch)");
  ck_assert_str_eq (pt.parts[1].name, "Linux root");
  fsev_ptable_free (&pt);

  gpt_entry (&d, d.size / SEC - 1, 0)[60] ^= 0x20;
  ck_assert_int_eq (ptable (&d, &pt, &w, err, sizeof err), -1);
  ck_assert_has (err, "GPT partition entry array CRC mismatch and backup "
                 "header unusable (partition entry array CRC mismatch)");
  free (d.buf);
  free (img);
}
END_TEST

START_TEST (test_gpt_header_fields)
{
  char *img = make_gpt (false);
  struct dev d;
  struct fsev_ptable pt;
  struct warns w;
  char err[256];
  /* One or two 32-bit header fields, and the complaint. */
  static const struct {
    int off;
    uint32_t value;
    int off2;
    uint32_t value2;
    const char *msg;
  } cases[] = {
    { 80, 0xffffffff, 0, 0,
      "too many partition entries (4294967295, at most 4096)" },
    { 80, 4097, 0, 0, "too many partition entries (4097" },
    { 84, 0, 0, 0, "bad partition entry size 0" },
    { 84, 0x80000000, 0, 0, "bad partition entry size 2147483648" },
    { 84, 0xfffffff8, 0, 0, "bad partition entry size 4294967288" },
    { 84, 132, 0, 0, "bad partition entry size 132" },
    { 84, 4104, 0, 0, "bad partition entry size 4104" },
    { 80, 4096, 84, 512, "partition entry array too large (2097152 bytes" },
    { 12, 0, 0, 0, "header size 0 not in 92-512" },
    { 12, 513, 0, 0, "header size 513 not in 92-512" },
  };
  dev_load (&d, img);
  uint8_t *saved = malloc (d.alloc);
  memcpy (saved, d.buf, d.alloc);
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    /* In the primary only: the backup serves. */
    memcpy (d.buf, saved, d.alloc);
    put32 (sector (&d, 1) + cases[i].off, cases[i].value);
    if (cases[i].off2)
      put32 (sector (&d, 1) + cases[i].off2, cases[i].value2);
    gpt_fix (&d, 1);
    ck_assert_int_eq (ptable (&d, &pt, &w, err, sizeof err), 0);
    ck_assert_uint_eq (pt.n, 2);
    ck_assert_int_eq (w.n, 1);
    ck_assert_has (w.all, cases[i].msg);
    fsev_ptable_free (&pt);
    /* In both: an error naming both. */
    BOTH (&d, lba, {
        put32 (sector (&d, lba) + cases[i].off, cases[i].value);
        if (cases[i].off2)
          put32 (sector (&d, lba) + cases[i].off2, cases[i].value2);
      });
    ck_assert_int_eq (ptable (&d, &pt, &w, err, sizeof err), -1);
    ck_assert_has (err, cases[i].msg);
    ck_assert_has (err, "and backup header unusable");
  }

  /* The entry array over usable sectors, past the end, over LBA 1; the
   * usable range inverted or over the header.
   */
  static const struct {
    int off;
    uint64_t value;
    const char *msg;
  } cases64[] = {
    { 72, 2048, "overlaps a header or the usable LBAs" },
    { 72, 1, "overlaps a header or the usable LBAs" },
    { 72, UINT64_MAX - 3, "is past the end of the device" },
    { 40, 20000, "bad usable range" },
    { 40, 0, "bad usable range" },
  };
  for (size_t i = 0; i < sizeof cases64 / sizeof cases64[0]; i++) {
    memcpy (d.buf, saved, d.alloc);
    BOTH (&d, lba, put64 (sector (&d, lba) + cases64[i].off, cases64[i].value));
    ck_assert_int_eq (ptable (&d, &pt, &w, err, sizeof err), -1);
    ck_assert_has (err, cases64[i].msg);
  }

  /* No entries at all is a valid, empty table. */
  memcpy (d.buf, saved, d.alloc);
  BOTH (&d, lba, put32 (sector (&d, lba) + 80, 0));
  ck_assert_int_eq (ptable (&d, &pt, &w, err, sizeof err), 0);
  ck_assert_int_eq (pt.scheme, FSEV_PT_GPT);
  ck_assert_uint_eq (pt.n, 0);
  fsev_ptable_free (&pt);
  free (saved);
  free (d.buf);
  free (img);
}
END_TEST

START_TEST (test_gpt_entries)
{
  char *img = make_gpt (false);
  struct dev d;
  struct fsev_ptable pt;
  struct warns w;
  char err[256];

  dev_load (&d, img);
  uint8_t *saved = malloc (d.alloc);
  memcpy (saved, d.buf, d.alloc);
  const uint64_t sectors = d.size / SEC;

  /* Past the end of the device. */
  BOTH (&d, lba, put64 (gpt_entry (&d, lba, 1) + 40, sectors + 5));
  ck_assert_int_eq (ptable (&d, &pt, &w, err, sizeof err), -1);
  ck_assert_has (err, "partition 2 extends past the end of the device");
  BOTH (&d, lba, put64 (gpt_entry (&d, lba, 1) + 40, UINT64_MAX));
  ck_assert_int_eq (ptable (&d, &pt, &w, err, sizeof err), -1);
  ck_assert_has (err, "partition 2 extends past the end of the device");

  /* The same by the device shrinking: the backup header is gone too. */
  memcpy (d.buf, saved, d.alloc);
  d.size = 6 << 20;
  ck_assert_int_eq (ptable (&d, &pt, &w, err, sizeof err), -1);
  ck_assert_has (err, "partition 2 extends past the end of the device");
  d.size = d.alloc;

  /* Outside the usable LBAs (over the entry array). */
  memcpy (d.buf, saved, d.alloc);
  BOTH (&d, lba, put64 (gpt_entry (&d, lba, 0) + 32, 10));
  ck_assert_int_eq (ptable (&d, &pt, &w, err, sizeof err), -1);
  ck_assert_has (err, "partition 1 (LBAs 10-6143) lies outside the usable LBAs");

  /* Overlapping. */
  memcpy (d.buf, saved, d.alloc);
  BOTH (&d, lba, put64 (gpt_entry (&d, lba, 1) + 32, 6000));
  ck_assert_int_eq (ptable (&d, &pt, &w, err, sizeof err), -1);
  ck_assert_has (err, "partitions 1 and 2 overlap");
  /* Entry 9 inside entry 2 (and, out of order, before it). */
  memcpy (d.buf, saved, d.alloc);
  BOTH (&d, lba, {
      memcpy (gpt_entry (&d, lba, 8), gpt_entry (&d, lba, 1), 128);
      put64 (gpt_entry (&d, lba, 8) + 32, 7000);
      put64 (gpt_entry (&d, lba, 8) + 40, 7001);
    });
  ck_assert_int_eq (ptable (&d, &pt, &w, err, sizeof err), -1);
  ck_assert_has (err, "partitions 2 and 9 overlap");

  /* Ending before it starts: skipped with a warning.  One sector is
   * fine.
   */
  memcpy (d.buf, saved, d.alloc);
  BOTH (&d, lba, put64 (gpt_entry (&d, lba, 1) + 40, 6143));
  ck_assert_int_eq (ptable (&d, &pt, &w, err, sizeof err), 0);
  ck_assert_uint_eq (pt.n, 1);
  ck_assert_int_eq (w.n, 1);
  ck_assert_has (w.all, "GPT entry 2 ends (LBA 6143) before it starts");
  fsev_ptable_free (&pt);
  BOTH (&d, lba, put64 (gpt_entry (&d, lba, 1) + 40, 6144));
  ck_assert_int_eq (ptable (&d, &pt, &w, err, sizeof err), 0);
  ck_assert_uint_eq (pt.n, 2);
  ck_assert_uint_eq (pt.parts[1].length, SEC);
  fsev_ptable_free (&pt);
  free (saved);
  free (d.buf);
  free (img);
}
END_TEST

START_TEST (test_gpt_protective)
{
  char *img = make_gpt (false);
  struct dev d;
  struct fsev_ptable pt;
  struct warns w;
  char err[256];

  dev_load (&d, img);
  uint8_t *saved = malloc (d.alloc);
  memcpy (saved, d.buf, d.alloc);

  /* A protective MBR and no GPT. */
  memset (sector (&d, 1), 0, SEC);
  memset (sector (&d, d.size / SEC - 1), 0, SEC);
  ck_assert_int_eq (ptable (&d, &pt, &w, err, sizeof err), -1);
  ck_assert_has (err, "GPT header missing at LBA 1 and backup header "
                 "unusable (header missing at LBA 16383)");

  /* A GPT without protective MBR is ignored, as Linux ignores it. */
  memcpy (d.buf, saved, d.alloc);
  memset (sector (&d, 0), 0, SEC);
  expect_none (&d, 1);
  memcpy (d.buf, saved, d.alloc);
  set_entry (sector (&d, 0), 0, 0, 0x83, 1, 100);
  ck_assert_int_eq (ptable (&d, &pt, &w, err, sizeof err), 0);
  ck_assert_int_eq (pt.scheme, FSEV_PT_MBR);
  ck_assert_has (w.all, "no protective (0xEE) entry: GPT ignored");
  fsev_ptable_free (&pt);

  /* A hybrid MBR (0xEE in any slot) is a GPT. */
  memcpy (d.buf, saved, d.alloc);
  memcpy (sector (&d, 0) + 446 + 48, sector (&d, 0) + 446, 16);
  set_entry (sector (&d, 0), 0, 0x80, 0x0c, 2048, 4096);
  ck_assert_int_eq (ptable (&d, &pt, &w, err, sizeof err), 0);
  ck_assert_int_eq (pt.scheme, FSEV_PT_GPT);
  ck_assert_uint_eq (pt.n, 2);
  fsev_ptable_free (&pt);
  free (saved);
  free (d.buf);
  free (img);
}
END_TEST

/* Read errors at every step, on both kinds of table: an error with a
 * message, nothing leaked (under ASan).  And no WARN callback at all.
 */
START_TEST (test_read_errors)
{
  char *imgs[2] = { make_mbr (true), make_gpt (true) };
  struct fsev_ptable pt;
  struct warns w;
  char err[256];

  for (int i = 0; i < 2; i++) {
    struct dev d;
    dev_load (&d, imgs[i]);
    int ok = 0;
    for (int n = 0; n < 40; n++) {
      d.fail_after = n;
      int r = ptable (&d, &pt, &w, err, sizeof err);
      if (r == -1)
        ck_assert_has (err, "Input/output error");
      else
        ok++;               /* reads past N were the fs probes' */
      fsev_ptable_free (&pt);
    }
    ck_assert_int_gt (ok, 0);
    d.fail_after = -1;
    sector (&d, 1)[0] ^= 1;
    ck_assert_int_eq (fsev_ptable_read (dev_read, &d, d.size, NULL, NULL,
                                        &pt, err, sizeof err), 0);
    fsev_ptable_free (&pt);
    free (d.buf);
    free (imgs[i]);
  }
}
END_TEST

/* --- What a range holds. --- */

START_TEST (test_probe_fs)
{
  static const struct {
    const char *opts, *want;
  } ext[] = {
    { "-t ext2", "ext2" },
    { "-t ext3", "ext3" },
    { "-t ext4", "ext4" },
    { "-t ext4 -O ^64bit,^extent,^flex_bg,^huge_file,^dir_nlink,^extra_isize,"
      "^metadata_csum", "ext3" },
    { "-t ext2 -O extent", "ext4" },
    { "-O journal_dev -b 4096", "jbd" },
  };
  struct dev d, big;

  for (size_t i = 0; i < sizeof ext / sizeof ext[0]; i++) {
    char *img = unit_mkfs (ext[i].opts, "8M");
    dev_load (&d, img);
    ck_assert_str_eq (fsev_probe_fs (dev_read, &d, 0, d.size), ext[i].want);
    /* Too short a range to hold the superblock. */
    ck_assert_str_eq (fsev_probe_fs (dev_read, &d, 0, 2047), "unknown");
    /* Inside a larger device, at an offset. */
    dev_zero (&big, d.size + (3 << 20));
    memcpy (big.buf + (1 << 20), d.buf, d.size);
    ck_assert_str_eq (fsev_probe_fs (dev_read, &big, 1 << 20, d.size),
                      ext[i].want);
    ck_assert_str_eq (fsev_probe_fs (dev_read, &big, 0, big.size), "unknown");
    ck_assert (!big.past_end);
    free (big.buf);
    /* Read errors. */
    d.fail = true;
    ck_assert_str_eq (fsev_probe_fs (dev_read, &d, 0, d.size), "unknown");
    free (d.buf);
    unit_rm (img);
  }

  /* Swap, LVM2, a range reaching past the device is never read. */
  dev_zero (&d, 1 << 20);
  memcpy (d.buf + 4096 - 10, "SWAPSPACE2", 10);
  ck_assert_str_eq (fsev_probe_fs (dev_read, &d, 0, d.size), "swap");
  ck_assert_str_eq (fsev_probe_fs (dev_read, &d, 0, 4095), "unknown");
  memset (d.buf, 0, d.size);
  memcpy (d.buf + 65536 + 512, "LABELONE", 8);
  memcpy (d.buf + 65536 + 512 + 24, "LVM2 001", 8);
  ck_assert_str_eq (fsev_probe_fs (dev_read, &d, 65536, 4096), "LVM2_member");
  ck_assert_str_eq (fsev_probe_fs (dev_read, &d, 0, 4096), "unknown");
  free (d.buf);
}
END_TEST

START_TEST (test_probe_swap_tool)
{
  char *img = path_of ("s.img");
  struct dev d;

  sh ("truncate -s 4M s.img && chmod 600 s.img && mkswap s.img");
  dev_load (&d, img);
  ck_assert_str_eq (fsev_probe_fs (dev_read, &d, 0, d.size), "swap");
  expect_none (&d, 0);
  free (d.buf);
  free (img);
}
END_TEST

/* --- Fuzz: random damage to real tables must never crash, read past
 * the device or return a partition that does not fit.
 */

static uint64_t rng_state;

static uint64_t
rng (void)
{
  /* xorshift64*: reproducible from the printed seed. */
  rng_state ^= rng_state >> 12;
  rng_state ^= rng_state << 25;
  rng_state ^= rng_state >> 27;
  return rng_state * 0x2545F4914F6CDD1DULL;
}

static void
check_invariants (const struct fsev_ptable *pt, uint64_t size)
{
  must (pt->sector_size == 512);
  must (pt->scheme != FSEV_PT_NONE || (pt->n == 0 && pt->parts == NULL));
  for (size_t i = 0; i < pt->n; i++) {
    const struct fsev_partition *p = &pt->parts[i];
    must (p->length > 0 && p->length % SEC == 0);
    must (p->offset > 0 && p->offset % SEC == 0);
    must (p->offset <= size && p->length <= size - p->offset);
    must (p->fs != NULL);
    must (memchr (p->name, '\0', sizeof p->name) != NULL);
    must (memchr (p->gpt_type, '\0', sizeof p->gpt_type) != NULL);
    must (i == 0 || p->number > pt->parts[i - 1].number);
    must (p->number >= 1 && (pt->scheme == FSEV_PT_GPT || p->number <= 4 +
                             FSEV_PT_MAX_LOGICAL));
    for (size_t j = 0; j < i; j++) {
      const struct fsev_partition *q = &pt->parts[j];
      bool overlap = p->offset < q->offset + q->length &&
        q->offset < p->offset + p->length;
      if (strcmp (q->fs, "extended") == 0 && p->number >= 5)
        continue;               /* a logical inside its container */
      if (overlap)
        ck_abort_msg ("partitions %u and %u overlap", q->number, p->number);
    }
  }
}

static void
fuzz (const char *img, int iterations, bool fix_gpt)
{
  struct dev d;
  struct fsev_ptable pt;
  struct warns w;
  char err[256];
  int results[3] = { 0 };

  dev_load (&d, img);
  const uint64_t sectors = d.alloc / SEC;
  uint8_t *saved = malloc (d.alloc);
  memcpy (saved, d.buf, d.alloc);
  /* Where tables live: sectors 0-33, the last 33, and every sector
   * with a 0x55AA signature (the EBRs).
   */
  uint64_t hot[64];
  int nhot = 0;
  for (uint64_t s = 34; s < sectors - 33 && nhot < 64; s++)
    if (d.buf[s * SEC + 510] == 0x55 && d.buf[s * SEC + 511] == 0xaa)
      hot[nhot++] = s;

  for (int it = 0; it < iterations; it++) {
    /* Undone after each run: the bytes flipped, the headers fixed. */
    uint64_t where[8];
    uint8_t was[8], hdr[2][SEC];
    int flips = 1 + rng () % 8;
    for (int f = 0; f < flips; f++) {
      uint64_t s;
      switch (rng () % 4) {
      case 0: s = 0; break;
      case 1: s = 1 + rng () % 33; break;
      case 2: s = sectors - 1 - rng () % 33; break;
      default: s = nhot ? hot[rng () % nhot] : 0; break;
      }
      /* Mostly in the structures: headers and entries are at the
       * start of their sectors.
       */
      uint64_t o = s * SEC + (rng () % 2 ? rng () % 128 : rng () % SEC);
      where[f] = o;
      was[f] = d.buf[o];
      if (rng () % 2)
        d.buf[o] ^= 1 << (rng () % 8);
      else
        d.buf[o] = rng ();
    }
    bool fixed = fix_gpt && rng () % 2;
    if (fixed) {
      memcpy (hdr[0], sector (&d, 1), SEC);
      memcpy (hdr[1], sector (&d, sectors - 1), SEC);
      gpt_fix (&d, 1);
      gpt_fix (&d, sectors - 1);
    }
    d.size = rng () % 8 == 0 ? rng () % (d.alloc + 1) : d.alloc;
    int r = ptable (&d, &pt, &w, err, sizeof err);
    if (r == 0)
      check_invariants (&pt, d.size);
    results[r == -1 ? 2 : pt.scheme == FSEV_PT_NONE ? 0 : 1]++;
    fsev_ptable_free (&pt);
    if (fixed) {
      memcpy (sector (&d, 1), hdr[0], SEC);
      memcpy (sector (&d, sectors - 1), hdr[1], SEC);
    }
    for (int f = flips - 1; f >= 0; f--)
      d.buf[where[f]] = was[f];
  }
  must (memcmp (d.buf, saved, d.alloc) == 0);
  fprintf (stderr, "partition fuzz %s: %d iterations: %d none, %d tables, "
           "%d errors\n", strrchr (img, '/') + 1, iterations, results[0],
           results[1], results[2]);
  /* The damage must have reached every outcome. */
  ck_assert_int_gt (results[1], 0);
  ck_assert_int_gt (results[2], 0);
  free (saved);
  free (d.buf);
}

START_TEST (test_fuzz)
{
  uint64_t seed = 0x5DEECE66DULL * (uint64_t) (_i + 1) ^ 0x9E3779B97F4A7C15ULL;
  rng_state = seed;
  fprintf (stderr, "partition fuzz %d: seed 0x%" PRIx64 "\n", _i, seed);
  char *mbr = make_mbr (true);
  char *gpt = make_gpt (true);
  fuzz (mbr, 3000, false);
  fuzz (gpt, 3000, true);
  free (mbr);
  free (gpt);
}
END_TEST

static bool
have_tools (void)
{
  return system ("PATH=\"$PATH:/usr/sbin:/sbin\"; "
                 "for t in sfdisk sgdisk mkfs.vfat mkswap mke2fs; do "
                 "command -v $t >/dev/null 2>&1 || exit 1; done") == 0;
}

Suite *
partition_suite (void)
{
  Suite *s = suite_create ("partition");
  TCase *mem = tcase_create ("memory");
  TCase *img = tcase_create ("images");
  TCase *fz = tcase_create ("fuzz");

  tcase_add_test (mem, test_crc32);
  tcase_add_test (mem, test_many_logicals);
  suite_add_tcase (s, mem);
  if (!have_tools ()) {
    fprintf (stderr, "SKIP: partition image tests: sfdisk, sgdisk, "
             "mkfs.vfat, mkswap or mke2fs missing\n");
    return s;
  }
  tcase_set_timeout (img, 120);
  tcase_add_checked_fixture (img, tmp_setup, tmp_teardown);
  tcase_add_test (img, test_mbr_sfdisk);
  tcase_add_test (img, test_mbr_empty);
  tcase_add_test (img, test_gpt_sfdisk);
  tcase_add_test (img, test_gpt_sgdisk);
  tcase_add_test (img, test_gpt_unicode_name);
  tcase_add_test (img, test_bare_ext4);
  tcase_add_test (img, test_bare_ext4_stale_mbr);
  tcase_add_test (img, test_bare_vfat);
  tcase_add_test (img, test_small_devices);
  tcase_add_test (img, test_ebr_cycle);
  tcase_add_test (img, test_ebr_link_outside);
  tcase_add_test (img, test_logical_outside);
  tcase_add_test (img, test_mbr_primary_errors);
  tcase_add_test (img, test_gpt_header_crc);
  tcase_add_test (img, test_gpt_array_crc);
  tcase_add_test (img, test_gpt_header_fields);
  tcase_add_test (img, test_gpt_entries);
  tcase_add_test (img, test_gpt_protective);
  tcase_add_test (img, test_read_errors);
  tcase_add_test (img, test_probe_fs);
  tcase_add_test (img, test_probe_swap_tool);
  suite_add_tcase (s, img);
  tcase_set_timeout (fz, 300);
  tcase_add_checked_fixture (fz, tmp_setup, tmp_teardown);
  tcase_add_loop_test (fz, test_fuzz, 0, 2);
  suite_add_tcase (s, fz);
  return s;
}
