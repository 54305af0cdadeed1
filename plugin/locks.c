/* plugin/locks.c: byte-range locks taken by host tools (see locks.h).
 *
 * A short list under one mutex: locks are few (taken by people and
 * backup tools, not by the guest), and the write path only reads an
 * atomic count unless some lock is held.
 */
#include <config.h>

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "locks.h"
#include "util.h"

struct lock {
  struct lock_info info;
  void *owner;
};

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t changed;          /* a lock went away */
static pthread_once_t once = PTHREAD_ONCE_INIT;
static struct lock *locks;
static size_t nlocks, cap;
static uint64_t next_id = 1;
static uint64_t held;                   /* nlocks, read without the mutex */
static lock_released_fn notify;
static int guest_wait_ms = 30000;

static void
init (void)
{
  pthread_condattr_t a;
  pthread_condattr_init (&a);
  pthread_condattr_setclock (&a, CLOCK_MONOTONIC);
  pthread_cond_init (&changed, &a);
  pthread_condattr_destroy (&a);
}

void locks_set_notify (lock_released_fn fn) { notify = fn; }
static bool guest_fail;
void locks_set_guest_wait (int ms) { guest_wait_ms = ms; }
void locks_set_guest_fail (bool fail) { guest_fail = fail; }
int locks_guest_wait (void) { return guest_fail ? 0 : guest_wait_ms; }

int64_t
locks_now_ms (void)
{
  struct timespec ts;
  clock_gettime (CLOCK_MONOTONIC, &ts);
  return (int64_t) ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static uint64_t
end_of (uint64_t offset, int64_t length)
{
  if (length < 0 || (uint64_t) length > UINT64_MAX - offset)
    return LOCK_TO_EOF;
  return offset + (uint64_t) length;
}

static bool
overlaps (const struct lock_info *l, unsigned part, uint32_t ino,
          uint64_t pos, uint64_t end)
{
  return l->partition == part && l->ino == ino && pos < end_of (l->offset, l->length) &&
    l->offset < end;
}

/* Wait on the condition until DEADLINE (ms, -1 forever).  false on
 * timeout.
 */
static bool
wait_until (int64_t deadline)
{
  if (deadline < 0) {
    pthread_cond_wait (&changed, &mu);
    return true;
  }
  struct timespec ts = { deadline / 1000, (deadline % 1000) * 1000000 };
  return pthread_cond_timedwait (&changed, &mu, &ts) != ETIMEDOUT ||
    locks_now_ms () < deadline;
}

static const struct lock *
conflicting (unsigned part, uint32_t ino, uint64_t pos, uint64_t end,
             bool exclusive)
{
  for (size_t i = 0; i < nlocks; i++)
    if (overlaps (&locks[i].info, part, ino, pos, end) &&
        (exclusive || locks[i].info.exclusive))
      return &locks[i];
  return NULL;
}

int64_t
locks_take (void *owner, uid_t uid, unsigned part, uint32_t ino,
            const char *path,
            uint64_t offset, int64_t length, bool exclusive, int wait_ms)
{
  uint64_t end = end_of (offset, length);
  int64_t deadline = wait_ms < 0 ? -1 : locks_now_ms () + wait_ms;
  char *p = strdup (path);
  if (p == NULL)
    return -ENOMEM;

  pthread_once (&once, init);
  pthread_mutex_lock (&mu);
  while (conflicting (part, ino, offset, end, exclusive)) {
    if (wait_ms == 0 || !wait_until (deadline)) {
      bool busy = conflicting (part, ino, offset, end, exclusive) != NULL;
      if (busy) {
        pthread_mutex_unlock (&mu);
        free (p);
        return wait_ms == 0 ? -EAGAIN : -ETIMEDOUT;
      }
    }
  }
  if (fsev_grow ((void **) &locks, &cap, nlocks + 1, sizeof *locks) == -1) {
    pthread_mutex_unlock (&mu);
    free (p);
    return -ENOMEM;
  }
  uint64_t id = next_id++;
  locks[nlocks++] = (struct lock) {
    .info = { .id = id, .partition = part, .ino = ino, .offset = offset, .length = length,
              .exclusive = exclusive, .uid = uid, .path = p },
    .owner = owner,
  };
  __atomic_store_n (&held, nlocks, __ATOMIC_RELEASE);
  pthread_mutex_unlock (&mu);
  return (int64_t) id;
}

/* Remove lock I; called with the mutex held. */
static void
remove_at (size_t i)
{
  free ((char *) locks[i].info.path);
  locks[i] = locks[--nlocks];
  __atomic_store_n (&held, nlocks, __ATOMIC_RELEASE);
  pthread_cond_broadcast (&changed);
}

int
locks_release (uint64_t id, void *by, uid_t uid,
               void (*fn) (const struct lock_info *, void *), void *opaque)
{
  pthread_once (&once, init);
  pthread_mutex_lock (&mu);
  for (size_t i = 0; i < nlocks; i++) {
    if (locks[i].info.id != id)
      continue;
    if (uid != 0 && locks[i].info.uid != uid && locks[i].owner != by) {
      pthread_mutex_unlock (&mu);
      return -EPERM;
    }
    if (fn)
      fn (&locks[i].info, opaque);
    if (notify && locks[i].owner != by)
      notify (locks[i].owner, id);
    remove_at (i);
    pthread_mutex_unlock (&mu);
    return 0;
  }
  pthread_mutex_unlock (&mu);
  return -ENOENT;
}

void
locks_release_owner (void *owner,
                     void (*fn) (const struct lock_info *, void *),
                     void *opaque)
{
  pthread_once (&once, init);
  pthread_mutex_lock (&mu);
  for (size_t i = 0; i < nlocks; ) {
    if (locks[i].owner != owner) {
      i++;
      continue;
    }
    if (fn)
      fn (&locks[i].info, opaque);
    remove_at (i);
  }
  pthread_mutex_unlock (&mu);
}

bool
locks_any (void)
{
  return __atomic_load_n (&held, __ATOMIC_ACQUIRE) != 0;
}

bool
locks_covers (unsigned part, uint32_t ino, uint64_t pos, uint64_t end,
              uint64_t *id)
{
  if (!locks_any ())
    return false;
  pthread_mutex_lock (&mu);
  const struct lock *l = conflicting (part, ino, pos, end, true);
  if (l && id)
    *id = l->info.id;
  pthread_mutex_unlock (&mu);
  return l != NULL;
}

static bool
exists (uint64_t id)
{
  for (size_t i = 0; i < nlocks; i++)
    if (locks[i].info.id == id)
      return true;
  return false;
}

int
locks_wait_id (uint64_t id, int64_t deadline_ms)
{
  pthread_once (&once, init);
  pthread_mutex_lock (&mu);
  int r = 0;
  while (exists (id)) {
    if (!wait_until (deadline_ms) && exists (id)) {
      r = ETIMEDOUT;
      break;
    }
  }
  pthread_mutex_unlock (&mu);
  return r;
}

int
locks_find (uint64_t id, void *by, uid_t uid,
            void (*fn) (const struct lock_info *, void *), void *opaque)
{
  pthread_once (&once, init);
  pthread_mutex_lock (&mu);
  int r = -ENOENT;
  for (size_t i = 0; i < nlocks; i++)
    if (locks[i].info.id == id) {
      if (uid != 0 && locks[i].info.uid != uid && locks[i].owner != by)
        r = -EPERM;
      else {
        r = 0;
        if (fn)
          fn (&locks[i].info, opaque);
      }
      break;
    }
  pthread_mutex_unlock (&mu);
  return r;
}

void
locks_list_owner (void *owner, void (*fn) (const struct lock_info *, void *),
                  void *opaque)
{
  pthread_mutex_lock (&mu);
  for (size_t i = 0; i < nlocks; i++)
    if (locks[i].owner == owner)
      fn (&locks[i].info, opaque);
  pthread_mutex_unlock (&mu);
}

void
locks_list (void (*fn) (const struct lock_info *, void *), void *opaque)
{
  pthread_mutex_lock (&mu);
  for (size_t i = 0; i < nlocks; i++)
    fn (&locks[i].info, opaque);
  pthread_mutex_unlock (&mu);
}

uint64_t
locks_count (void)
{
  return __atomic_load_n (&held, __ATOMIC_ACQUIRE);
}

void
locks_free_all (void)
{
  pthread_mutex_lock (&mu);
  while (nlocks > 0)
    remove_at (nlocks - 1);
  free (locks);
  locks = NULL;
  cap = 0;
  pthread_mutex_unlock (&mu);
}
