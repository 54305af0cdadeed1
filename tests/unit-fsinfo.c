/* tests/unit-fsinfo.c: Check unit tests for fs/fsinfo.c.
 *
 * The oracle is mke2fs itself: each test makes a filesystem with known
 * options and checks that the probe reports exactly those.
 */
#include <config.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <check.h>

#include "fsinfo.h"
#include "unit.h"

START_TEST (test_ext4_defaults)
{
  char *img = unit_mkfs ("-t ext4 -b 4096 -L unitlabel", "32M");
  struct fsev_fsinfo info;
  char err[256];

  ck_assert_int_eq (unit_probe (img, &info, err, sizeof err), 0);
  ck_assert_str_eq (info.type, "ext4");
  ck_assert_uint_eq (info.block_size, 4096);
  ck_assert_uint_eq (info.cluster_size, 4096);
  ck_assert_uint_eq (info.blocks_count, 8192);
  ck_assert_uint_eq (info.fs_bytes, 32 * 1024 * 1024);
  ck_assert_int_eq (info.has_journal, 1);
  ck_assert_int_eq (info.journal_external, 0);
  ck_assert_int_eq (info.needs_recovery, 0);
  ck_assert_str_eq (info.label, "unitlabel");
  ck_assert_ptr_nonnull (strstr (info.features, "extent"));
  ck_assert_ptr_nonnull (strstr (info.features, "has_journal"));
  unit_rm (img);
}
END_TEST

START_TEST (test_ext3_and_ext2)
{
  struct fsev_fsinfo info;
  char err[256];
  char *img3 = unit_mkfs ("-t ext3 -b 1024", "8M");
  char *img2 = unit_mkfs ("-t ext2 -b 2048", "8M");

  ck_assert_int_eq (unit_probe (img3, &info, err, sizeof err), 0);
  ck_assert_str_eq (info.type, "ext3");
  ck_assert_uint_eq (info.block_size, 1024);
  ck_assert_int_eq (info.has_journal, 1);
  ck_assert_ptr_null (strstr (info.features, "extent"));

  ck_assert_int_eq (unit_probe (img2, &info, err, sizeof err), 0);
  ck_assert_str_eq (info.type, "ext2");
  ck_assert_uint_eq (info.block_size, 2048);
  ck_assert_uint_eq (info.blocks_count, 4096);
  ck_assert_int_eq (info.has_journal, 0);
  unit_rm (img3);
  unit_rm (img2);
}
END_TEST

START_TEST (test_bigalloc)
{
  char *img = unit_mkfs ("-t ext4 -b 4096 -O bigalloc -C 65536", "64M");
  struct fsev_fsinfo info;
  char err[256];

  ck_assert_int_eq (unit_probe (img, &info, err, sizeof err), 0);
  ck_assert_uint_eq (info.block_size, 4096);
  ck_assert_uint_eq (info.cluster_size, 65536);
  unit_rm (img);
}
END_TEST

START_TEST (test_not_ext)
{
  char *img = unit_zero_file ("4M");
  struct fsev_fsinfo info;
  char err[256];

  ck_assert_int_eq (unit_probe (img, &info, err, sizeof err), -1);
  ck_assert_ptr_nonnull (strstr (err, "not an ext2/ext3/ext4 filesystem (no ext2 superblock magic"));
  unit_rm (img);
}
END_TEST

START_TEST (test_too_small)
{
  char *img = unit_zero_file ("1500");
  struct fsev_fsinfo info;
  char err[256];

  ck_assert_int_eq (unit_probe (img, &info, err, sizeof err), -1);
  ck_assert_ptr_nonnull (strstr (err, "too small to hold a superblock"));
  ck_assert_ptr_nonnull (strstr (err, img));
  unit_rm (img);
}
END_TEST

START_TEST (test_journal_device)
{
  char *img = unit_mkfs ("-O journal_dev -b 4096", "8M");
  struct fsev_fsinfo info;
  char err[256];

  ck_assert_int_eq (unit_probe (img, &info, err, sizeof err), -1);
  ck_assert_ptr_nonnull (strstr (err, "journal device"));
  unit_rm (img);
}
END_TEST

Suite *
fsinfo_suite (void)
{
  Suite *s = suite_create ("fsinfo");
  TCase *tc = tcase_create ("probe");

  tcase_set_timeout (tc, 60);
  tcase_add_test (tc, test_ext4_defaults);
  tcase_add_test (tc, test_ext3_and_ext2);
  tcase_add_test (tc, test_bigalloc);
  tcase_add_test (tc, test_not_ext);
  tcase_add_test (tc, test_too_small);
  tcase_add_test (tc, test_journal_device);
  suite_add_tcase (s, tc);
  return s;
}
