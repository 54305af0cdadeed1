/* plugin/blockcache.c: the recently used device blocks a commit point
 * reads again (see blockcache.h for why it can be trusted).
 *
 * A few dozen slots, replaced in turn, found by a linear scan: the
 * working set is one transaction and the one before it.
 */
#include <config.h>

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "blockcache.h"

#define SLOTS 64
#define MAX_BLOCK 65536

struct slot {
  uint64_t offset;
  uint32_t len;                 /* 0: empty */
  uint32_t cap;
  unsigned char *data;
};

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static struct slot slots[SLOTS];
static unsigned next_slot;
static unsigned used;           /* slots with len != 0 */
static uint64_t writers_begun;  /* every begin counts one */
static unsigned in_flight;      /* writers between begin and end */
static uint64_t hits, misses;

static void
drop_overlapping (uint64_t offset, uint64_t count)
{
  if (used == 0)
    return;
  for (unsigned i = 0; i < SLOTS; i++) {
    struct slot *s = &slots[i];
    if (s->len && s->offset < offset + count && offset < s->offset + s->len) {
      s->len = 0;
      used--;
    }
  }
}

/* Called with the lock held. */
static void
put (uint64_t offset, uint32_t len, const void *data)
{
  if (len == 0 || len > MAX_BLOCK)
    return;
  /* Never two copies of a block: replace the one there. */
  drop_overlapping (offset, len);
  struct slot *s = &slots[next_slot];
  if (s->cap < len) {
    unsigned char *d = realloc (s->data, len);
    if (d == NULL)
      return;                   /* not cached: reads go to the device */
    s->data = d;
    s->cap = len;
  }
  if (s->len)
    used--;
  memcpy (s->data, data, len);
  s->offset = offset;
  s->len = len;
  used++;
  next_slot = (next_slot + 1) % SLOTS;
}

void
blockcache_begin (struct blockcache_ticket *t, uint64_t offset, uint64_t count)
{
  pthread_mutex_lock (&lock);
  drop_overlapping (offset, count);
  t->alone = in_flight == 0;
  t->gen = ++writers_begun;
  in_flight++;
  pthread_mutex_unlock (&lock);
}

void
blockcache_end (struct blockcache_ticket *t)
{
  (void) t;
  pthread_mutex_lock (&lock);
  in_flight--;
  pthread_mutex_unlock (&lock);
}

void
blockcache_put_written (const struct blockcache_ticket *t, uint64_t offset,
                        uint32_t len, const void *data)
{
  pthread_mutex_lock (&lock);
  /* Alone from begin to now: nobody else's bytes can be on the device
   * there.  (A writer that began earlier and was still in flight, or
   * one that began since, may have written the same block after us.)
   */
  if (t->alone && writers_begun == t->gen)
    put (offset, len, data);
  pthread_mutex_unlock (&lock);
}

void
blockcache_put_read (uint64_t gen, uint64_t offset, uint32_t len,
                     const void *data)
{
  pthread_mutex_lock (&lock);
  /* No write in flight when the read began, none begun since. */
  if (gen != BLOCKCACHE_NO_GEN && gen == writers_begun && in_flight == 0)
    put (offset, len, data);
  pthread_mutex_unlock (&lock);
}

bool
blockcache_get (uint64_t offset, uint32_t len, void *buf, uint64_t *gen)
{
  bool hit = false;
  pthread_mutex_lock (&lock);
  if (used) {
    for (unsigned i = 0; i < SLOTS; i++) {
      const struct slot *s = &slots[i];
      if (s->len == len && s->offset == offset) {
        memcpy (buf, s->data, len);
        hit = true;
        break;
      }
    }
  }
  if (hit)
    hits++;
  else {
    misses++;
    *gen = in_flight ? BLOCKCACHE_NO_GEN : writers_begun;
  }
  pthread_mutex_unlock (&lock);
  return hit;
}

void
blockcache_stats (uint64_t *h, uint64_t *m)
{
  pthread_mutex_lock (&lock);
  *h = hits;
  *m = misses;
  pthread_mutex_unlock (&lock);
}

void
blockcache_free (void)
{
  pthread_mutex_lock (&lock);
  for (unsigned i = 0; i < SLOTS; i++) {
    free (slots[i].data);
    slots[i] = (struct slot) { 0 };
  }
  used = 0;
  pthread_mutex_unlock (&lock);
}
