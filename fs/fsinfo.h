/* fs/fsinfo.h: identify an ext2/3/4 filesystem and describe it.
 *
 * This library has no nbdkit dependency so that it can be unit-tested
 * and fuzzed on its own.  It only ever reads the image.
 */
#ifndef FSEVENT_FSINFO_H
#define FSEVENT_FSINFO_H

#include <stddef.h>
#include <stdint.h>

struct fsev_fsinfo {
  const char *type;             /* "ext2", "ext3" or "ext4" */
  unsigned block_size;          /* bytes */
  unsigned cluster_size;        /* bytes (== block_size unless bigalloc) */
  uint64_t blocks_count;
  uint64_t free_blocks;
  uint32_t inodes_count;
  uint32_t free_inodes;
  uint32_t first_ino;           /* first inode that is not reserved */
  uint32_t groups;
  uint64_t fs_bytes;            /* blocks_count * block_size */
  int has_journal;
  int journal_external;         /* journal lives on another device */
  int needs_recovery;           /* the journal holds unreplayed transactions */
  char uuid[37];
  char label[17];
  char features[512];           /* space-separated feature names */
};

struct fsev_source;

/* Open the filesystem on SRC (read-only) and fill in *INFO.  NAME is
 * what messages call it.  Returns 0 on success.  On failure returns -1
 * and writes a message for the user into ERR (ERRLEN bytes).
 */
extern int fsev_fsinfo_probe (const struct fsev_source *src, const char *name,
                              struct fsev_fsinfo *info,
                              char *err, size_t errlen);

/* "ext2", "ext3" or "ext4", by the rule blkid uses: ext4 is whatever
 * needs features that ext3 does not know.
 */
struct ext2_super_block;
extern const char *fsev_fsinfo_type (const struct ext2_super_block *sb);

#endif /* FSEVENT_FSINFO_H */
