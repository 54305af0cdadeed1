/* fuzz/fuzz-partition.c: libFuzzer target for fs/partition.c.
 *
 * The input is the head of a disk: an MBR or GPT table and whatever
 * follows.  The device is the input, or, when the input's last byte
 * says so, a device of up to 64 times its size that reads as zeros
 * past the input (so tables that point far away, and a GPT whose
 * backup is missing, are reached too).  It reads the table and probes
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
    d.device_size = (uint64_t) size * (1 + (data[size - 1] & 0x3F));
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
  return 0;
}
