/* fuzz/fuzz-partition.c: libFuzzer target for fs/partition.c.
 *
 * The input is the head of a disk: an MBR or GPT table and whatever
 * follows.  The device is the input, or, when the input's last byte
 * says so, a device of up to 64 times its size that reads as zeros
 * past the input (so tables that point far away, and a GPT whose
 * backup is missing, are reached too).  When bit 0x20 of that byte is
 * set, the GPT headers at LBA 1 and at the input's last sector get
 * their entry array and header CRCs recomputed first, so that
 * mutations get past the CRCs to the checks behind them.  It reads
 * the table and probes
 * every partition found.  Besides the sanitizers' reports it aborts on
 * a read past the device and on a result partition.h promises never
 * to give: a partition past the device's end, two overlapping (the
 * extended container aside), numbers out of order, a table returned
 * together with an error.
 */
#include <config.h>

#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "partition.h"

struct disk {
  const uint8_t *data;
  size_t size;
  uint64_t device_size;
};

static int
dread (void *opaque, void *buf, size_t count, uint64_t offset)
{
  const struct disk *d = opaque;
  if (offset > d->device_size || count > d->device_size - offset)
    abort ();                   /* never past DEVICE_SIZE */
  memset (buf, 0, count);
  if (offset < d->size)
    memcpy (buf, d->data + offset,
            d->size - offset < count ? d->size - offset : count);
  return 0;
}

static void
ignore (void *opaque, const char *msg)
{
  (void) opaque;
  (void) msg;
}

static uint32_t
get32 (const uint8_t *p)
{
  return p[0] | (uint32_t) p[1] << 8 | (uint32_t) p[2] << 16 |
    (uint32_t) p[3] << 24;
}

static void
put32 (uint8_t *p, uint32_t v)
{
  for (int i = 0; i < 4; i++)
    p[i] = v >> (8 * i);
}

/* Recompute the CRCs of a GPT header at byte OFF of BUF, if any. */
static void
reseal_gpt (uint8_t *buf, size_t size, size_t off)
{
  if (off + 512 > size || memcmp (buf + off, "EFI PART", 8) != 0)
    return;
  uint8_t *h = buf + off;
  uint64_t entries = get32 (h + 72) | (uint64_t) get32 (h + 76) << 32;
  uint64_t bytes = (uint64_t) get32 (h + 80) * get32 (h + 84);
  if (entries < size / 512 && bytes <= size - entries * 512)
    put32 (h + 88, fsev_crc32 (0, buf + entries * 512, bytes));
  uint32_t hsize = get32 (h + 12);
  if (hsize < 92 || hsize > 512)
    return;
  put32 (h + 16, 0);
  put32 (h + 16, fsev_crc32 (0, h, hsize));
}

int LLVMFuzzerTestOneInput (const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
  struct disk d = { .data = data, .size = size, .device_size = size };
  struct fsev_ptable pt;
  char err[256];

  if (size == 0)
    return 0;
  if (data[size - 1] >= 0xC0)
    d.device_size = (uint64_t) size * (1 + (data[size - 1] & 0x1F));
  uint8_t *copy = NULL;
  if (data[size - 1] & 0x20 && size >= 1024) {
    copy = malloc (size);
    if (copy == NULL)
      return 0;
    memcpy (copy, data, size);
    reseal_gpt (copy, size, 512);
    reseal_gpt (copy, size, size / 512 * 512 - 512);
    d.data = copy;
  }
  err[0] = 0;
  int r = fsev_ptable_read (dread, &d, d.device_size, ignore, NULL, &pt,
                            err, sizeof err);
  if (r == -1) {
    if (pt.n != 0 || err[0] == 0)
      abort ();
  }
  else {
    if (pt.scheme == FSEV_PT_NONE && pt.n != 0)
      abort ();
    for (size_t i = 0; i < pt.n; i++) {
      const struct fsev_partition *p = &pt.parts[i];
      if (p->length == 0 || p->offset > d.device_size ||
          p->length > d.device_size - p->offset || p->fs == NULL)
        abort ();
      if (i > 0 && pt.parts[i - 1].number >= p->number)
        abort ();
      if (memchr (p->name, 0, sizeof p->name) == NULL)
        abort ();
      if (strcmp (p->fs, "extended") != 0)
        for (size_t k = 0; k < i; k++) {
          const struct fsev_partition *q = &pt.parts[k];
          if (strcmp (q->fs, "extended") != 0 &&
              p->offset < q->offset + q->length &&
              q->offset < p->offset + p->length)
            abort ();
        }
      /* What partition.c said it holds, probed again: the same. */
      if (strcmp (p->fs, "extended") != 0 &&
          strcmp (fsev_probe_fs (dread, &d, p->offset, p->length), p->fs) != 0)
        abort ();
    }
  }
  fsev_ptable_free (&pt);
  (void) fsev_pt_scheme_name (pt.scheme);
  free (copy);
  return 0;
}
