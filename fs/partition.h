/* fs/partition.h: MBR and GPT partition tables, read as hostile input.
 *
 * A disk image may hold a filesystem at offset 0 or a partition table
 * with filesystems inside.  This finds the partitions, and what each
 * one holds, so that a caller can put a struct fsev_source over one of
 * them.  Every byte read is treated as hostile: allocations are
 * bounded, arithmetic is checked, and nothing past the device's end is
 * ever read or returned.
 *
 * Only 512-byte logical sectors are supported: a table written for a
 * 4K-sector device would be misread (its LBAs are 4096 bytes each), so
 * such devices are out of scope.
 */
#ifndef FSEVENT_PARTITION_H
#define FSEVENT_PARTITION_H

#include <stddef.h>
#include <stdint.h>

enum fsev_pt_scheme { FSEV_PT_NONE, FSEV_PT_MBR, FSEV_PT_GPT };

/* Limits on what a table may make us read or allocate. */
#define FSEV_PT_MAX_LOGICAL 128          /* MBR logical partitions */
#define FSEV_PT_MAX_GPT_ENTRIES 4096     /* GPT entries in a header */
#define FSEV_PT_MAX_GPT_ENTRY_SIZE 4096  /* bytes per GPT entry */
#define FSEV_PT_MAX_GPT_ARRAY (1024 * 1024) /* bytes of GPT entry array */

struct fsev_partition {
  unsigned number;       /* as Linux numbers them: MBR primaries 1-4,
                          * logicals 5, 6, ...; GPT entry index + 1 */
  uint64_t offset;       /* bytes from the start of the device */
  uint64_t length;       /* bytes */
  uint8_t mbr_type;      /* MBR type byte (0 for GPT) */
  char gpt_type[37];     /* GPT type GUID, lower-case text ("" for MBR) */
  char gpt_uuid[37];     /* GPT unique partition GUID ("" for MBR) */
  char name[72*3+1];     /* GPT partition name as UTF-8 ("" for MBR) */
  const char *fs;        /* what its first bytes hold: see fsev_probe_fs,
                          * or "extended" for an MBR extended partition
                          * (the container of the logicals) */
};

struct fsev_ptable {
  enum fsev_pt_scheme scheme;
  unsigned sector_size;  /* 512 */
  size_t n;
  struct fsev_partition *parts;   /* sorted by number */
};

/* READ reads COUNT bytes at device OFFSET: 0, or -1 with errno (the
 * contract of struct fsev_source's read); it is never asked for bytes
 * past DEVICE_SIZE.  WARN (may be NULL) gets one message per thing
 * ignored: a bad entry, a loop in the EBR chain, a GPT falling back to
 * its backup header ...
 *
 * Returns 0 and fills OUT: scheme NONE with n == 0 when the device has
 * no partition table (a bare ext2/3/4 or FAT filesystem at offset 0, a
 * zeroed device, one smaller than a sector).  Returns -1 with a
 * message in ERR when the table cannot be trusted: a protective MBR
 * without a usable GPT, a partition past the end of the device,
 * overlapping partitions, a read error.  OUT is then empty, so
 * fsev_ptable_free on it is harmless either way.
 */
extern int fsev_ptable_read (int (*read) (void *, void *, size_t, uint64_t),
                             void *opaque, uint64_t device_size,
                             void (*warn) (void *, const char *),
                             void *warn_opaque,
                             struct fsev_ptable *out,
                             char *err, size_t errlen);
extern void fsev_ptable_free (struct fsev_ptable *pt);

/* What the bytes at OFFSET..OFFSET+LENGTH hold: "ext2", "ext3",
 * "ext4" (the names blkid gives by the superblock's features), "jbd"
 * (an ext external journal device), "vfat", "swap", "LVM2_member" or
 * "unknown".  Reads only inside the range; never fails: "unknown" on
 * read errors.
 */
extern const char *fsev_probe_fs (int (*read) (void *, void *, size_t,
                                               uint64_t),
                                  void *opaque, uint64_t offset,
                                  uint64_t length);

/* "none", "mbr", "gpt". */
extern const char *fsev_pt_scheme_name (enum fsev_pt_scheme s);

/* CRC-32 as GPT uses it (IEEE 802.3 polynomial, reflected, the zlib
 * convention): pass 0 to start, the previous result to continue.
 */
extern uint32_t fsev_crc32 (uint32_t crc, const void *buf, size_t len);

#endif /* FSEVENT_PARTITION_H */
