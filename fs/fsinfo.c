/* fs/fsinfo.c: identify an ext2/3/4 filesystem with libext2fs. */
#include <config.h>

#include <errno.h>
#include <inttypes.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include <ext2fs/ext2fs.h>
#include <e2p/e2p.h>

#include "fserror.h"
#include "fsinfo.h"
#include "source.h"

/* The same rule blkid uses: ext4 is whatever needs more than ext3 knows. */
const char *
fsev_fsinfo_type (const struct ext2_super_block *sb)
{
  const uint32_t ext3_incompat = EXT3_FEATURE_INCOMPAT_RECOVER |
    EXT2_FEATURE_INCOMPAT_FILETYPE | EXT2_FEATURE_INCOMPAT_META_BG;
  const uint32_t ro_compat_btree_dir = 0x0004; /* defined, never used */
  const uint32_t ext3_ro_compat = EXT2_FEATURE_RO_COMPAT_SPARSE_SUPER |
    EXT2_FEATURE_RO_COMPAT_LARGE_FILE | ro_compat_btree_dir;

  if ((sb->s_feature_incompat & ~ext3_incompat) ||
      (sb->s_feature_ro_compat & ~ext3_ro_compat))
    return "ext4";
  if (sb->s_feature_compat & EXT3_FEATURE_COMPAT_HAS_JOURNAL)
    return "ext3";
  return "ext2";
}

/* Append the names of every feature bit set in MASK for class COMPAT. */
static void
append_features (char *buf, size_t len, int compat, uint32_t mask)
{
  for (int bit = 0; bit < 32; bit++) {
    if (!(mask & (UINT32_C (1) << bit)))
      continue;
    size_t used = strlen (buf);
    snprintf (buf + used, len - used, "%s%s", used ? " " : "",
              e2p_feature2string (compat, UINT32_C (1) << bit));
  }
}

/* Look at the primary superblock ourselves first, so that the two
 * commonest refusals (no filesystem at all, an external journal device)
 * get a precise message rather than libext2fs's generic one.
 */
static int
precheck_superblock (const struct fsev_source *src, const char *path,
                     char *err, size_t errlen)
{
  struct ext2_super_block sb;

  if (src->size < SUPERBLOCK_OFFSET + sizeof sb) {
    snprintf (err, errlen, "%s: not an ext2/ext3/ext4 filesystem "
              "(only %" PRIu64 " bytes, too small to hold a superblock)",
              path, src->size);
    return -1;
  }
  if (src->read (src->opaque, &sb, sizeof sb, SUPERBLOCK_OFFSET) == -1) {
    snprintf (err, errlen, "%s: read: %s", path, strerror (errno));
    return -1;
  }
  if (ext2fs_le16_to_cpu (sb.s_magic) != EXT2_SUPER_MAGIC) {
    snprintf (err, errlen, "%s: not an ext2/ext3/ext4 filesystem "
              "(no ext2 superblock magic at byte %d)", path,
              SUPERBLOCK_OFFSET + (int) offsetof (struct ext2_super_block,
                                                  s_magic));
    return -1;
  }
  if (ext2fs_le32_to_cpu (sb.s_feature_incompat) &
      EXT3_FEATURE_INCOMPAT_JOURNAL_DEV) {
    snprintf (err, errlen, "%s: this is an external ext3/ext4 journal "
              "device, not a filesystem", path);
    return -1;
  }
  return 0;
}

int
fsev_fsinfo_probe (const struct fsev_source *src, const char *path,
                   struct fsev_fsinfo *info, char *err, size_t errlen)
{
  ext2_filsys fs;
  errcode_t e;

  memset (info, 0, sizeof *info);
  if (precheck_superblock (src, path, err, errlen) == -1)
    return -1;
  e = fsev_source_open_fs (src, 0, &fs);
  if (e) {
    if (e == EXT2_ET_BAD_MAGIC || e == EXT2_ET_SB_CSUM_INVALID ||
        e == EXT2_ET_CORRUPT_SUPERBLOCK || e == EXT2_ET_SHORT_READ)
      snprintf (err, errlen, "%s: not an ext2/ext3/ext4 filesystem (%s)",
                path, fsev_strerror (e));
    else
      snprintf (err, errlen, "%s: cannot open as ext2/ext3/ext4: %s",
                path, fsev_strerror (e));
    return -1;
  }

  struct ext2_super_block *sb = fs->super;

  info->type = fsev_fsinfo_type (sb);
  info->block_size = fs->blocksize;
  info->cluster_size = EXT2_CLUSTER_SIZE (sb);
  info->blocks_count = ext2fs_blocks_count (sb);
  info->free_blocks = ext2fs_free_blocks_count (sb);
  info->inodes_count = sb->s_inodes_count;
  info->free_inodes = sb->s_free_inodes_count;
  info->first_ino = EXT2_FIRST_INO (sb);
  info->groups = fs->group_desc_count;
  info->fs_bytes = info->blocks_count * fs->blocksize;
  info->has_journal = ext2fs_has_feature_journal (sb);
  /* An internal journal lives in an inode; an external one does not. */
  info->journal_external = info->has_journal && sb->s_journal_inum == 0;
  info->needs_recovery = ext2fs_has_feature_journal_needs_recovery (sb);
  snprintf (info->uuid, sizeof info->uuid, "%s",
            e2p_uuid2str ((void *) sb->s_uuid));
  snprintf (info->label, sizeof info->label, "%.*s",
            (int) sizeof sb->s_volume_name, sb->s_volume_name);
  append_features (info->features, sizeof info->features,
                   E2P_FEATURE_COMPAT, sb->s_feature_compat);
  append_features (info->features, sizeof info->features,
                   E2P_FEATURE_INCOMPAT, sb->s_feature_incompat);
  append_features (info->features, sizeof info->features,
                   E2P_FEATURE_RO_INCOMPAT, sb->s_feature_ro_compat);

  ext2fs_close_free (&fs);
  return 0;
}
