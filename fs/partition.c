/* fs/partition.c: MBR and GPT partition tables, read as hostile input.
 *
 * Policy for what a table may say (see partition.h for the contract):
 *
 *  - How entries are found may go wrong and be ignored with a warning:
 *    a link out of the extended partition (or into a logical) or a
 *    loop in the EBR chain, more than 128 logicals, an EBR without
 *    signature (the chain stops there); a primary GPT header or entry
 *    array that fails its checks (the backup is used instead); an
 *    entry that is half empty (an MBR type without sectors) or
 *    inverted (a GPT entry ending before it starts): skipped.
 *
 *  - What the entries that were found say is never guessed at: a
 *    partition past the end of the device, overlapping partitions, a
 *    logical outside its extended partition or over an EBR, a GPT
 *    partition outside the usable LBAs, a protective MBR without a
 *    usable GPT are errors.  A wrong guess would attribute writes to
 *    the wrong filesystem.
 *
 *  - Sector 0 that is also a filesystem's boot sector (an ext
 *    superblock follows at byte 1024, or it is a FAT, NTFS or exFAT
 *    boot sector, which end with 0x55AA too) is no table, unless it is
 *    a protective MBR followed by a GPT header, or (FAT) its entries
 *    make sense as a table.  A sector 0 with 0x55AA but a boot flag
 *    other than 0x00 or 0x80 is no table either (with a warning).
 *
 * 512-byte sectors only (see partition.h).
 */
#include <config.h>

#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <ext2fs/ext2fs.h>

#include "fsinfo.h"
#include "partition.h"

#define SECTOR 512
#define MBR_TABLE 446                   /* offset of the 4 entries */
#define EXT_MAGIC_OFFSET 1080           /* 1024 + s_magic */
#define GPT_HEADER_MIN 92
#define GPT_ENTRY_NAME 56               /* offset of the UTF-16LE name */
#define GPT_NAME_UNITS 36
/* EBRs followed in all, whether or not they hold a logical. */
#define MAX_EBRS (2 * FSEV_PT_MAX_LOGICAL)

typedef int (*read_fn) (void *, void *, size_t, uint64_t);

static uint16_t
le16 (const uint8_t *p)
{
  return p[0] | (uint16_t) p[1] << 8;
}

static uint32_t
le32 (const uint8_t *p)
{
  return p[0] | (uint32_t) p[1] << 8 | (uint32_t) p[2] << 16 |
    (uint32_t) p[3] << 24;
}

static uint64_t
le64 (const uint8_t *p)
{
  return le32 (p) | (uint64_t) le32 (p + 4) << 32;
}

/* The table-driven CRC, four bits at a time: 16 constants instead of
 * a 256-entry table built at run time (no initialisation to race on).
 * Entry i is the CRC register after shifting nibble i through.
 */
static const uint32_t crc_nibble[16] = {
  0x00000000, 0x1db71064, 0x3b6e20c8, 0x26d930ac,
  0x76dc4190, 0x6b6b51f4, 0x4db26158, 0x5005713c,
  0xedb88320, 0xf00f9344, 0xd6d6a3e8, 0xcb61b38c,
  0x9b64c2b0, 0x86d3d2d4, 0xa00ae278, 0xbdbdf21c,
};

uint32_t
fsev_crc32 (uint32_t crc, const void *buf, size_t len)
{
  const uint8_t *p = buf;

  crc = ~crc;
  while (len--) {
    crc ^= *p++;
    crc = (crc >> 4) ^ crc_nibble[crc & 15];
    crc = (crc >> 4) ^ crc_nibble[crc & 15];
  }
  return ~crc;
}

const char *
fsev_pt_scheme_name (enum fsev_pt_scheme s)
{
  switch (s) {
  case FSEV_PT_MBR: return "mbr";
  case FSEV_PT_GPT: return "gpt";
  default: return "none";
  }
}

/* --- What a range holds ------------------------------------------------ */

/* Read N bytes at REL inside the range OFFSET..OFFSET+LENGTH, or fail. */
static int
range_read (read_fn rd, void *opaque, uint64_t offset, uint64_t length,
            uint64_t rel, void *buf, size_t n)
{
  uint64_t at;

  if (rel > length || n > length - rel ||
      __builtin_add_overflow (offset, rel, &at))
    return -1;
  return rd (opaque, buf, n, at);
}

/* An ext2/3/4 superblock (1024 bytes): the magic, and fields sane
 * enough that two bytes of chance are not taken for a filesystem.
 */
static bool
ext_superblock (const uint8_t *sb)
{
  return le16 (sb + 56) == EXT2_SUPER_MAGIC &&
    le32 (sb + 24) <= 6 &&                /* s_log_block_size: <= 64K */
    le32 (sb + 76) <= 1;                  /* s_rev_level */
}

static const char *
ext_type (const uint8_t *sb)
{
  struct ext2_super_block s;

  if (le32 (sb + 96) & EXT3_FEATURE_INCOMPAT_JOURNAL_DEV)
    return "jbd";
  memset (&s, 0, sizeof s);
  s.s_feature_compat = le32 (sb + 92);
  s.s_feature_incompat = le32 (sb + 96);
  s.s_feature_ro_compat = le32 (sb + 100);
  return fsev_fsinfo_type (&s);
}

static bool
power_of_two (unsigned v)
{
  return v != 0 && (v & (v - 1)) == 0;
}

/* A FAT boot sector: a jump, then a BIOS parameter block whose fields
 * are all in range.  MBR boot code that starts with a jump (GRUB's
 * does) leaves the BPB zero, which fails here.
 */
static bool
fat_boot_sector (const uint8_t *s)
{
  unsigned bps = le16 (s + 11), spc = s[13], media = s[21];
  bool jump = (s[0] == 0xeb && s[2] == 0x90) || s[0] == 0xe9;
  uint32_t total = le16 (s + 19) ? le16 (s + 19) : le32 (s + 32);
  uint32_t fat_size = le16 (s + 22) ? le16 (s + 22) : le32 (s + 36);

  return jump && bps >= 512 && bps <= 4096 && power_of_two (bps) &&
    power_of_two (spc) && le16 (s + 14) >= 1 && s[16] >= 1 && s[16] <= 4 &&
    (media == 0xf0 || media >= 0xf8) && total != 0 && fat_size != 0;
}

/* The boot sector of a filesystem FAT is not the only one with 0x55AA:
 * NTFS and exFAT say who they are after the jump.
 */
static bool
fs_boot_sector (const uint8_t *s)
{
  return fat_boot_sector (s) || memcmp (s + 3, "NTFS    ", 8) == 0 ||
    memcmp (s + 3, "EXFAT   ", 8) == 0;
}

const char *
fsev_probe_fs (read_fn rd, void *opaque, uint64_t offset, uint64_t length)
{
  uint8_t buf[1024];

  if (range_read (rd, opaque, offset, length, 1024, buf, 1024) == 0 &&
      ext_superblock (buf))
    return ext_type (buf);

  /* Swap: the signature ends the first page, whatever the page size of
   * the machine that ran mkswap.
   */
  static const unsigned pages[] = { 4096, 8192, 16384, 65536 };
  for (size_t i = 0; i < sizeof pages / sizeof pages[0]; i++) {
    if (range_read (rd, opaque, offset, length, pages[i] - 10, buf, 10) == 0 &&
        (memcmp (buf, "SWAPSPACE2", 10) == 0 ||
         memcmp (buf, "SWAP-SPACE", 10) == 0))
      return "swap";
  }

  /* LVM2 puts its label in sector 1, but may use any of the first 4. */
  for (unsigned s = 0; s < 4; s++) {
    if (range_read (rd, opaque, offset, length, s * SECTOR, buf, SECTOR) == 0 &&
        memcmp (buf, "LABELONE", 8) == 0 && memcmp (buf + 24, "LVM2 001", 8) == 0)
      return "LVM2_member";
  }

  if (range_read (rd, opaque, offset, length, 0, buf, SECTOR) == 0 &&
      fat_boot_sector (buf))
    return "vfat";
  return "unknown";
}

/* --- Reading a table --------------------------------------------------- */

struct reader {
  read_fn read;
  void *opaque;
  uint64_t size;                /* bytes */
  uint64_t sectors;             /* whole sectors */
  void (*warn) (void *, const char *);
  void *warn_opaque;
  char *err;
  size_t errlen;
  struct fsev_ptable *out;
  size_t cap;
};

static void __attribute__ ((format (printf, 2, 3)))
warnf (struct reader *r, const char *fmt, ...)
{
  char msg[512];
  va_list ap;

  if (r->warn == NULL)
    return;
  va_start (ap, fmt);
  vsnprintf (msg, sizeof msg, fmt, ap);
  va_end (ap);
  r->warn (r->warn_opaque, msg);
}

static int __attribute__ ((format (printf, 2, 3)))
errorf (struct reader *r, const char *fmt, ...)
{
  va_list ap;

  if (r->errlen > 0) {
    va_start (ap, fmt);
    vsnprintf (r->err, r->errlen, fmt, ap);
    va_end (ap);
  }
  return -1;
}

/* Read COUNT bytes at sector LBA, all inside the device. */
static int
read_at (struct reader *r, void *buf, size_t count, uint64_t lba)
{
  if (lba > r->sectors || count > (r->sectors - lba) * SECTOR)
    return errorf (r, "reading %zu bytes at sector %" PRIu64 ": past the "
                   "end of the device", count, lba);
  if (r->read (r->opaque, buf, count, lba * SECTOR) == -1)
    return errorf (r, "reading sector %" PRIu64 ": %s", lba,
                   strerror (errno));
  return 0;
}

/* A new partition in OUT, zeroed but for NUMBER. */
static struct fsev_partition *
add_part (struct reader *r, unsigned number, uint64_t lba, uint64_t sectors)
{
  if (r->out->n == r->cap)
    return NULL;                /* cannot happen: CAP is the bound */
  struct fsev_partition *p = &r->out->parts[r->out->n++];
  memset (p, 0, sizeof *p);
  p->number = number;
  p->offset = lba * SECTOR;
  p->length = sectors * SECTOR;
  return p;
}

struct span {
  uint64_t start, end;          /* bytes, END exclusive */
  unsigned number;
};

static int
span_cmp (const void *a, const void *b)
{
  const struct span *x = a, *y = b;
  if (x->start != y->start)
    return x->start < y->start ? -1 : 1;
  return x->number < y->number ? -1 : x->number > y->number;
}

/* Error if any two of the partitions in OUT numbered FROM..TO overlap. */
static int
check_overlaps (struct reader *r, unsigned from, unsigned to)
{
  struct fsev_ptable *pt = r->out;
  struct span *s = malloc ((pt->n ? pt->n : 1) * sizeof *s);
  size_t n = 0;

  if (s == NULL)
    return errorf (r, "out of memory");
  for (size_t i = 0; i < pt->n; i++) {
    if (pt->parts[i].number >= from && pt->parts[i].number <= to)
      s[n++] = (struct span) { pt->parts[i].offset,
                               pt->parts[i].offset + pt->parts[i].length,
                               pt->parts[i].number };
  }
  qsort (s, n, sizeof *s, span_cmp);
  /* Sorted by start, a range overlaps an earlier one iff it starts
   * before the furthest end seen so far.
   */
  size_t far = 0;
  for (size_t i = 1; i < n; i++) {
    if (s[i].start < s[far].end) {
      unsigned a = s[far].number, b = s[i].number;
      free (s);
      return errorf (r, "partitions %u and %u overlap",
                     a < b ? a : b, a < b ? b : a);
    }
    if (s[i].end > s[far].end)
      far = i;
  }
  free (s);
  return 0;
}

/* --- MBR --------------------------------------------------------------- */

struct mbr_entry {
  uint8_t boot, type;
  uint32_t start, sectors;
};

static void
mbr_entries (const uint8_t *sec, struct mbr_entry e[4])
{
  for (int i = 0; i < 4; i++) {
    const uint8_t *p = sec + MBR_TABLE + 16 * i;
    e[i] = (struct mbr_entry) { p[0], p[4], le32 (p + 8), le32 (p + 12) };
  }
}

static bool
mbr_signature (const uint8_t *sec)
{
  return sec[510] == 0x55 && sec[511] == 0xaa;
}

static bool
is_extended (uint8_t type)
{
  return type == 0x05 || type == 0x0f || type == 0x85;
}

static bool
mbr_empty (const struct mbr_entry *e)
{
  return e->type == 0 || e->sectors == 0;
}

/* Could sector 0's entries be a partition table at all?  Used where
 * the sector is also a filesystem's boot sector, to tell a real table
 * from boot code or a FAT "superfloppy" (whose fake entry, if any,
 * starts at sector 0).
 */
static bool
mbr_plausible (const struct reader *r, const struct mbr_entry e[4])
{
  int used = 0;

  for (int i = 0; i < 4; i++) {
    if (e[i].boot != 0 && e[i].boot != 0x80)
      return false;
    if (mbr_empty (&e[i]))
      continue;
    used++;
    if (e[i].start == 0 || (uint64_t) e[i].start + e[i].sectors > r->sectors)
      return false;
    for (int j = 0; j < i; j++) {
      if (!mbr_empty (&e[j]) && e[j].start < e[i].start + (uint64_t) e[i].sectors &&
          e[i].start < e[j].start + (uint64_t) e[j].sectors)
        return false;
    }
  }
  return used > 0;
}

/* An MBR entry that is not empty yet not a partition either. */
static void
warn_odd_entry (struct reader *r, const char *where, int slot,
                const struct mbr_entry *e)
{
  if (e->type != 0 && e->sectors == 0)
    warnf (r, "%s entry %d: type 0x%02x but no sectors: ignored",
           where, slot, e->type);
  else if (e->type == 0 && e->sectors != 0)
    warnf (r, "%s entry %d: %" PRIu32 " sectors but type 0 (unused): "
           "ignored", where, slot, e->sectors);
}

/* Follow the EBR chain of extended partition EXT, adding its logicals.
 * EBR LBAs visited so far (in every chain) are in EBRS.
 */
static int
read_ebr_chain (struct reader *r, const struct fsev_partition *ext,
                unsigned *nlogical, uint64_t *ebrs, size_t *nebrs)
{
  const uint64_t ext_lba = ext->offset / SECTOR;
  const uint64_t ext_sectors = ext->length / SECTOR;
  const size_t first_logical = r->out->n;
  uint64_t rel = 0;             /* of the next EBR, from EXT_LBA */
  uint8_t sec[SECTOR];

  for (bool first = true;; first = false) {
    if (rel >= ext_sectors) {
      warnf (r, "EBR link to sector %" PRIu64 " points outside extended "
             "partition %u (sectors %" PRIu64 "-%" PRIu64 "): the rest of "
             "its chain is ignored", ext_lba + rel, ext->number, ext_lba,
             ext_lba + ext_sectors - 1);
      break;
    }
    const uint64_t ebr = ext_lba + rel;
    bool loop = false;
    for (size_t i = 0; i < *nebrs; i++)
      loop |= ebrs[i] == ebr;
    if (loop) {
      warnf (r, "loop in the EBR chain of extended partition %u (back to "
             "sector %" PRIu64 "): the rest of the chain is ignored",
             ext->number, ebr);
      break;
    }
    /* A link into a logical found already is garbage, not an EBR. */
    for (size_t i = first_logical; i < r->out->n; i++) {
      const struct fsev_partition *p = &r->out->parts[i];
      if (ebr >= p->offset / SECTOR && ebr < (p->offset + p->length) / SECTOR) {
        warnf (r, "EBR link to sector %" PRIu64 " points inside partition "
               "%u: the rest of the chain is ignored", ebr, p->number);
        loop = true;
        break;
      }
    }
    if (loop)
      break;
    if (*nlogical == FSEV_PT_MAX_LOGICAL) {
      warnf (r, "more than %d logical partitions: the rest are ignored",
             FSEV_PT_MAX_LOGICAL);
      break;
    }
    if (*nebrs == MAX_EBRS) {
      warnf (r, "more than %d EBRs: the rest are ignored", MAX_EBRS);
      break;
    }
    if (read_at (r, sec, SECTOR, ebr) == -1)
      return -1;
    if (!mbr_signature (sec)) {
      /* An extended partition without logicals may have no EBR. */
      static const uint8_t zero[SECTOR];
      if (!first || memcmp (sec, zero, SECTOR) != 0)
        warnf (r, "EBR at sector %" PRIu64 " has no 0x55AA signature: the "
               "rest of the chain of extended partition %u is ignored",
               ebr, ext->number);
      break;
    }
    ebrs[(*nebrs)++] = ebr;

    char where[64];
    struct mbr_entry e[4];
    snprintf (where, sizeof where, "EBR at sector %" PRIu64, ebr);
    mbr_entries (sec, e);
    if (!mbr_empty (&e[0]) && is_extended (e[0].type))
      warnf (r, "%s: the first entry is an extended partition, not a "
             "logical one: ignored", where);
    else if (!mbr_empty (&e[0])) {
      unsigned number = 5 + *nlogical;
      /* Relative to this EBR: start 0 would put the logical over it. */
      uint64_t start = ebr + e[0].start, end = start + e[0].sectors;
      if (e[0].start == 0)
        return errorf (r, "partition %u starts on its own EBR (sector %"
                       PRIu64 ")", number, ebr);
      if (end > ext_lba + ext_sectors)
        return errorf (r, "partition %u (sectors %" PRIu64 "-%" PRIu64
                       ") extends past its extended partition %u (sectors %"
                       PRIu64 "-%" PRIu64 ")", number, start, end - 1,
                       ext->number, ext_lba, ext_lba + ext_sectors - 1);
      struct fsev_partition *p = add_part (r, number, start, e[0].sectors);
      if (p == NULL)
        return errorf (r, "too many partitions");
      p->mbr_type = e[0].type;
      (*nlogical)++;
    }
    else
      warn_odd_entry (r, where, 1, &e[0]);
    for (int i = 2; i < 4; i++) {
      if (e[i].type != 0 || e[i].sectors != 0)
        warnf (r, "%s: entry %d is not used in an EBR: ignored", where, i + 1);
    }
    if (mbr_empty (&e[1])) {
      warn_odd_entry (r, where, 2, &e[1]);
      break;
    }
    if (!is_extended (e[1].type)) {
      warnf (r, "%s: the link entry has type 0x%02x, not an extended type: "
             "the rest of the chain is ignored", where, e[1].type);
      break;
    }
    rel = e[1].start;
  }

  /* A logical found after an EBR may still lie over it. */
  for (size_t i = first_logical; i < r->out->n; i++) {
    const struct fsev_partition *p = &r->out->parts[i];
    for (size_t j = 0; j < *nebrs; j++) {
      if (ebrs[j] >= p->offset / SECTOR &&
          ebrs[j] < (p->offset + p->length) / SECTOR)
        return errorf (r, "partition %u covers the EBR at sector %" PRIu64,
                       p->number, ebrs[j]);
    }
  }
  return 0;
}

static int
read_mbr (struct reader *r, const struct mbr_entry e[4])
{
  struct fsev_ptable *pt = r->out;
  uint64_t ebrs[MAX_EBRS];
  size_t nebrs = 0;
  unsigned nlogical = 0;

  r->cap = 4 + FSEV_PT_MAX_LOGICAL;
  pt->parts = calloc (r->cap, sizeof *pt->parts);
  if (pt->parts == NULL)
    return errorf (r, "out of memory");
  pt->scheme = FSEV_PT_MBR;

  for (int i = 0; i < 4; i++) {
    unsigned number = i + 1;
    if (mbr_empty (&e[i])) {
      warn_odd_entry (r, "MBR", i + 1, &e[i]);
      continue;
    }
    if (e[i].start == 0)
      return errorf (r, "partition %u starts at sector 0, over the "
                     "partition table", number);
    if ((uint64_t) e[i].start + e[i].sectors > r->sectors)
      return errorf (r, "partition %u extends past the end of the device "
                     "(sectors %" PRIu32 "-%" PRIu64 ", the device has %"
                     PRIu64 ")", number, e[i].start,
                     (uint64_t) e[i].start + e[i].sectors - 1, r->sectors);
    struct fsev_partition *p = add_part (r, number, e[i].start, e[i].sectors);
    p->mbr_type = e[i].type;
  }
  if (check_overlaps (r, 1, 4) == -1)
    return -1;
  for (size_t i = 0, n = pt->n; i < n; i++) {
    if (is_extended (pt->parts[i].mbr_type)) {
      struct fsev_partition ext = pt->parts[i];
      if (read_ebr_chain (r, &ext, &nlogical, ebrs, &nebrs) == -1)
        return -1;
    }
  }
  return check_overlaps (r, 5, UINT_MAX);
}

/* --- GPT --------------------------------------------------------------- */

struct gpt_header {
  uint64_t lba;                 /* where it is */
  uint64_t alternate_lba;
  uint64_t first_usable, last_usable;
  uint64_t entries_lba;
  uint32_t num_entries, entry_size;
  uint8_t *array;               /* num_entries * entry_size bytes */
};

static bool
gpt_signature (const uint8_t *sec)
{
  return memcmp (sec, "EFI PART", 8) == 0;
}

/* Does the sector range [A, A+N) contain LBA? */
static bool
contains (uint64_t a, uint64_t n, uint64_t lba)
{
  return lba >= a && lba - a < n;
}

/* Load and check the header at LBA and its entry array.  Returns 0, 1
 * with the reason in WHY if it is unusable, or -1 on a read error.
 */
static int
gpt_load (struct reader *r, uint64_t lba, struct gpt_header *h,
          char *why, size_t whylen)
{
  uint8_t sec[SECTOR];

  memset (h, 0, sizeof *h);
  if (lba >= r->sectors) {
    snprintf (why, whylen, "header LBA %" PRIu64 " is past the end of the "
              "device", lba);
    return 1;
  }
  if (read_at (r, sec, SECTOR, lba) == -1)
    return -1;
  if (!gpt_signature (sec)) {
    /* "Missing": no "EFI PART" signature. */
    snprintf (why, whylen, "header missing at LBA %" PRIu64, lba);
    return 1;
  }
  uint32_t hsize = le32 (sec + 12);
  if (hsize < GPT_HEADER_MIN || hsize > SECTOR) {
    snprintf (why, whylen, "header size %" PRIu32 " not in %d-%d",
              hsize, GPT_HEADER_MIN, SECTOR);
    return 1;
  }
  uint32_t crc = le32 (sec + 16);
  memset (sec + 16, 0, 4);
  if (fsev_crc32 (0, sec, hsize) != crc) {
    snprintf (why, whylen, "header CRC mismatch");
    return 1;
  }
  h->lba = lba;
  h->alternate_lba = le64 (sec + 32);
  h->first_usable = le64 (sec + 40);
  h->last_usable = le64 (sec + 48);
  h->entries_lba = le64 (sec + 72);
  h->num_entries = le32 (sec + 80);
  h->entry_size = le32 (sec + 84);
  if (le64 (sec + 24) != lba) {
    snprintf (why, whylen, "header at LBA %" PRIu64 " says it is at LBA %"
              PRIu64, lba, le64 (sec + 24));
    return 1;
  }
  if (h->first_usable > h->last_usable || h->first_usable < 2 ||
      contains (h->first_usable, h->last_usable - h->first_usable + 1, lba)) {
    snprintf (why, whylen, "header has a bad usable range (LBAs %" PRIu64
              "-%" PRIu64 ")", h->first_usable, h->last_usable);
    return 1;
  }
  if (h->entry_size < 128 || h->entry_size % 8 != 0 ||
      h->entry_size > FSEV_PT_MAX_GPT_ENTRY_SIZE) {
    snprintf (why, whylen, "header has a bad partition entry size %" PRIu32
              " (not a multiple of 8 from 128 to %d)", h->entry_size,
              FSEV_PT_MAX_GPT_ENTRY_SIZE);
    return 1;
  }
  if (h->num_entries > FSEV_PT_MAX_GPT_ENTRIES) {
    snprintf (why, whylen, "header has too many partition entries (%"
              PRIu32 ", at most %d)", h->num_entries,
              FSEV_PT_MAX_GPT_ENTRIES);
    return 1;
  }
  /* Both bounded above: no overflow. */
  size_t bytes = (size_t) h->num_entries * h->entry_size;
  if (bytes > FSEV_PT_MAX_GPT_ARRAY) {
    snprintf (why, whylen, "partition entry array too large (%zu bytes, "
              "at most %d)", bytes, FSEV_PT_MAX_GPT_ARRAY);
    return 1;
  }
  uint64_t asec = (bytes + SECTOR - 1) / SECTOR;
  if (asec > 0) {
    uint64_t a = h->entries_lba;
    if (a > r->sectors || asec > r->sectors - a) {
      snprintf (why, whylen, "partition entry array (LBA %" PRIu64 ", %"
                PRIu64 " sectors) is past the end of the device", a, asec);
      return 1;
    }
    /* The array may not hold the MBR, a header or usable sectors. */
    if (a < 2 || contains (a, asec, lba) ||
        (a <= h->last_usable && h->first_usable < a + asec)) {
      snprintf (why, whylen, "partition entry array (LBAs %" PRIu64 "-%"
                PRIu64 ") overlaps a header or the usable LBAs", a,
                a + asec - 1);
      return 1;
    }
  }
  h->array = malloc (bytes ? bytes : 1);
  if (h->array == NULL)
    return errorf (r, "out of memory");
  if (bytes > 0 && read_at (r, h->array, bytes, h->entries_lba) == -1) {
    free (h->array);
    h->array = NULL;
    return -1;
  }
  if (fsev_crc32 (0, h->array, bytes) != le32 (sec + 88)) {
    free (h->array);
    h->array = NULL;
    snprintf (why, whylen, "partition entry array CRC mismatch");
    return 1;
  }
  return 0;
}

/* GUIDs on disk: three little-endian fields, then eight bytes as is. */
static void
guid_text (const uint8_t *g, char out[37])
{
  snprintf (out, 37, "%08" PRIx32 "-%04x-%04x-%02x%02x-"
            "%02x%02x%02x%02x%02x%02x", le32 (g), le16 (g + 4), le16 (g + 6),
            g[8], g[9], g[10], g[11], g[12], g[13], g[14], g[15]);
}

/* The UTF-16LE name as UTF-8, up to the first NUL.  A lone surrogate
 * becomes U+FFFD.  36 units make at most 108 bytes.
 */
static void
gpt_name (const uint8_t *p, char *out, size_t outlen)
{
  size_t o = 0;

  for (int i = 0; i < GPT_NAME_UNITS; i++) {
    uint32_t c = le16 (p + 2 * i);
    if (c == 0)
      break;
    if (c >= 0xd800 && c < 0xdc00 && i + 1 < GPT_NAME_UNITS &&
        le16 (p + 2 * i + 2) >= 0xdc00 && le16 (p + 2 * i + 2) < 0xe000) {
      c = 0x10000 + ((c - 0xd800) << 10) + (le16 (p + 2 * i + 2) - 0xdc00);
      i++;
    }
    else if (c >= 0xd800 && c < 0xe000)
      c = 0xfffd;
    uint8_t u[4];
    size_t n;
    if (c < 0x80)
      u[0] = c, n = 1;
    else if (c < 0x800)
      u[0] = 0xc0 | c >> 6, u[1] = 0x80 | (c & 0x3f), n = 2;
    else if (c < 0x10000)
      u[0] = 0xe0 | c >> 12, u[1] = 0x80 | ((c >> 6) & 0x3f),
        u[2] = 0x80 | (c & 0x3f), n = 3;
    else
      u[0] = 0xf0 | c >> 18, u[1] = 0x80 | ((c >> 12) & 0x3f),
        u[2] = 0x80 | ((c >> 6) & 0x3f), u[3] = 0x80 | (c & 0x3f), n = 4;
    if (o + n >= outlen)
      break;
    memcpy (out + o, u, n);
    o += n;
  }
  out[o] = '\0';
}

/* When the primary is good, say if the backup is not: the next
 * damage to the primary would lose the table.
 */
static int
gpt_check_backup (struct reader *r, const struct gpt_header *primary)
{
  struct gpt_header b;
  char why[256];

  if (primary->alternate_lba == primary->lba) {
    warnf (r, "the primary GPT header names itself as the backup: no "
           "backup header");
    return 0;
  }
  int s = gpt_load (r, primary->alternate_lba, &b, why, sizeof why);
  free (b.array);
  if (s == 1)
    warnf (r, "backup GPT header unusable (%s)", why);
  return s == -1 ? -1 : 0;
}

static int
read_gpt (struct reader *r)
{
  struct fsev_ptable *pt = r->out;
  struct gpt_header h;
  char why[256], bwhy[256];
  int s;

  s = gpt_load (r, 1, &h, why, sizeof why);
  if (s == -1)
    return -1;
  if (s == 1) {
    /* The backup header is in the device's last sector. */
    if (r->sectors < 3)
      snprintf (bwhy, sizeof bwhy, "the device is too small");
    else if ((s = gpt_load (r, r->sectors - 1, &h, bwhy, sizeof bwhy)) == -1)
      return -1;
    if (s != 0)
      return errorf (r, "GPT %s and backup header unusable (%s)", why, bwhy);
    warnf (r, "primary GPT header unusable (%s): using the backup header "
           "at LBA %" PRIu64, why, h.lba);
  }
  else if (gpt_check_backup (r, &h) == -1) {
    free (h.array);
    return -1;
  }

  pt->scheme = FSEV_PT_GPT;
  r->cap = h.num_entries;
  pt->parts = calloc (r->cap ? r->cap : 1, sizeof *pt->parts);
  if (pt->parts == NULL) {
    free (h.array);
    return errorf (r, "out of memory");
  }
  static const uint8_t unused[16];
  int ret = 0;
  for (uint32_t i = 0; i < h.num_entries && ret == 0; i++) {
    const uint8_t *e = h.array + (size_t) i * h.entry_size;
    unsigned number = i + 1;
    uint64_t first = le64 (e + 32), last = le64 (e + 40);

    if (memcmp (e, unused, 16) == 0)
      continue;
    if (last < first) {
      warnf (r, "GPT entry %u ends (LBA %" PRIu64 ") before it starts (LBA %"
             PRIu64 "): ignored", number, last, first);
      continue;
    }
    if (last >= r->sectors)
      ret = errorf (r, "partition %u extends past the end of the device "
                    "(LBAs %" PRIu64 "-%" PRIu64 ", the device has %" PRIu64
                    " sectors)", number, first, last, r->sectors);
    else if (first < h.first_usable || last > h.last_usable)
      ret = errorf (r, "partition %u (LBAs %" PRIu64 "-%" PRIu64 ") lies "
                    "outside the usable LBAs %" PRIu64 "-%" PRIu64, number,
                    first, last, h.first_usable, h.last_usable);
    else {
      /* LAST < SECTORS, so neither product overflows. */
      struct fsev_partition *p = add_part (r, number, first, last - first + 1);
      guid_text (e, p->gpt_type);
      guid_text (e + 16, p->gpt_uuid);
      gpt_name (e + GPT_ENTRY_NAME, p->name, sizeof p->name);
    }
  }
  free (h.array);
  if (ret == -1)
    return -1;
  return check_overlaps (r, 1, UINT_MAX);
}

/* --- Which table, if any ----------------------------------------------- */

/* Returns 0 with OUT filled, or -1.  OUT->parts may be set either way. */
static int
read_table (struct reader *r)
{
  uint8_t s0[SECTOR], s1[SECTOR];
  struct mbr_entry e[4];

  if (r->sectors < 1)
    return 0;                   /* no room for a table */
  if (read_at (r, s0, SECTOR, 0) == -1)
    return -1;
  bool gpt_at_1 = false, ext = false;
  if (r->sectors >= 2) {
    if (read_at (r, s1, SECTOR, 1) == -1)
      return -1;
    gpt_at_1 = gpt_signature (s1);
  }
  if (r->sectors >= 4) {
    uint8_t sb[1024];
    if (read_at (r, sb, sizeof sb, 2) == -1)
      return -1;
    ext = ext_superblock (sb);
  }

  if (!mbr_signature (s0)) {
    if (gpt_at_1)
      warnf (r, "LBA 1 holds a GPT header but sector 0 is no protective "
             "MBR (no 0x55AA signature): GPT ignored");
    return 0;
  }
  mbr_entries (s0, e);
  bool protective = false;
  for (int i = 0; i < 4; i++)
    protective |= e[i].type == 0xee;
  bool fs_boot = ext || fs_boot_sector (s0);

  /* GPT, whose header at LBA 1 and array from LBA 2 on cover where an
   * ext superblock would be; but 0xEE in a FAT boot sector's code is
   * not a protective MBR unless a GPT header follows.
   */
  if (protective && (!fs_boot || gpt_at_1))
    return read_gpt (r);
  if (fs_boot) {
    if (ext) {
      if (!protective && mbr_plausible (r, e))
        warnf (r, "sector 0 holds a partition table, but byte %d an ext "
               "superblock: taken as a bare ext filesystem",
               EXT_MAGIC_OFFSET);
      return 0;
    }
    if (protective || !mbr_plausible (r, e))
      return 0;                 /* a FAT (NTFS, exFAT) boot sector */
  }
  for (int i = 0; i < 4; i++) {
    if (e[i].boot != 0 && e[i].boot != 0x80) {
      warnf (r, "sector 0 ends with 0x55AA, but MBR entry %d has boot flag "
             "0x%02x: not a partition table", i + 1, e[i].boot);
      return 0;
    }
  }
  if (gpt_at_1)
    warnf (r, "LBA 1 holds a GPT header but the MBR has no protective "
           "(0xEE) entry: GPT ignored");
  return read_mbr (r, e);
}

int
fsev_ptable_read (read_fn rd, void *opaque, uint64_t device_size,
                  void (*warn) (void *, const char *), void *warn_opaque,
                  struct fsev_ptable *out, char *err, size_t errlen)
{
  struct reader r = {
    .read = rd, .opaque = opaque, .size = device_size,
    .sectors = device_size / SECTOR, .warn = warn, .warn_opaque = warn_opaque,
    .err = err, .errlen = errlen, .out = out,
  };

  memset (out, 0, sizeof *out);
  out->scheme = FSEV_PT_NONE;
  out->sector_size = SECTOR;
  if (errlen > 0)
    err[0] = '\0';
  if (read_table (&r) == -1) {
    fsev_ptable_free (out);
    return -1;
  }
  for (size_t i = 0; i < out->n; i++) {
    struct fsev_partition *p = &out->parts[i];
    p->fs = out->scheme == FSEV_PT_MBR && is_extended (p->mbr_type) ?
      "extended" : fsev_probe_fs (rd, opaque, p->offset, p->length);
  }
  return 0;
}

void
fsev_ptable_free (struct fsev_ptable *pt)
{
  free (pt->parts);
  pt->parts = NULL;
  pt->n = 0;
  pt->scheme = FSEV_PT_NONE;
}
