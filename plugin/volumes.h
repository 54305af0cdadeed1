/* plugin/volumes.h: the filesystems the engine follows on its device.
 *
 * A bare filesystem image is one volume, partition 0, covering the
 * device.  A disk with an MBR or GPT partition table has a volume per
 * ext2/3/4 partition (or only partition=N); its other partitions are
 * served untouched.
 */
#ifndef FSEVENT_VOLUMES_H
#define FSEVENT_VOLUMES_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct device;
struct volume;

/* partition=N (0: every ext2/3/4 partition found). */
extern int volumes_set_partition (const char *value);

/* Read the partition table of DEV, identify and map every filesystem
 * to follow.  0, or -1 with the error reported.
 */
extern int volumes_start (struct device *dev);
extern void volumes_stop (void);

extern size_t volumes_count (void);
extern struct volume *volumes_get (size_t i);     /* by device offset */
/* The smallest filesystem block size: what clients should write in. */
extern unsigned volumes_block_size (void);

/* How many volumes bytes [OFFSET, OFFSET+COUNT) of the device touch;
 * they are volumes_get (*FIRST) on, in device order.
 */
extern size_t volumes_in_range (uint64_t offset, uint64_t count,
                                size_t *first);

/* A path as host tools give it: "/etc/passwd" on the only followed
 * filesystem, or "N:/etc/passwd" on partition N.  Sets *PATH to the
 * path inside the volume.  NULL when it names no volume, with *ERR
 * (ENOENT, or EINVAL: say which partition) and *WHY set.
 */
extern struct volume *volumes_resolve (const char *spec, const char **path,
                                       int *err, const char **why);

/* Is a filesystem on PARTITION (0: a bare image) followed? */
extern bool volumes_followed (unsigned partition);

/* ext2 metadata held until the guest's flush (follow.h): is any held,
 * and client reads of COUNT bytes at device OFFSET in BUF see it.
 */
extern bool volumes_any_held (void);
extern void volumes_patch_read (void *buf, uint32_t count, uint64_t offset);

#endif /* FSEVENT_VOLUMES_H */
