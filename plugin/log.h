/* plugin/log.h: log=FILE, every event as one JSON line. */
#ifndef FSEVENT_LOG_H
#define FSEVENT_LOG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "fsevent.h"

extern int log_open (const char *path);     /* "-" is stderr */
/* log-phases=after (the default: one line per event, once its outcome
 * is known) or both (a before line with the decision too).
 */
extern int log_set_phases (const char *value);
/* log-sync=flush (the default: every NBD flush fdatasyncs the log
 * beside the device), fs (one syncfs(2) of the filesystem that holds
 * both the log and the plugin's image) or none (lines are written, the
 * kernel's writeback makes them durable).
 */
extern int log_set_sync (const char *value);
/* At start: IMAGE_FD is the plugin's image, or -1 for the filter's
 * layer below.  log-sync=fs needs the image on the log's filesystem.
 */
extern int log_check_sync (int image_fd);
/* log-sync=fs is in force: a flush is log_syncfs() and nothing else. */
extern bool log_flush_is_syncfs (void);
/* Write every line numbered so far, then syncfs(2) the log's (and the
 * image's) filesystem.  0, or -1 with the error reported.
 */
extern int log_syncfs (void);
/* Start the writer thread (after nbdkit's fork). */
extern int log_start (void);
extern void log_close (void);
extern bool log_enabled (void);
/* log= is set or a watcher (watch.c) is listening: record events. */
extern bool log_wanted (void);
/* fdatasync the log (on NBD flush: acknowledged events are durable). */
extern int log_sync (void);
/* The same in two halves, so a flush can overlap the log's fdatasync
 * with the device's: start writes the lines out and asks for the sync
 * (TICKET), wait waits for it.  0, or -1 with the error reported.
 */
extern int log_sync_start (uint64_t *ticket);
extern int log_sync_wait (uint64_t ticket);
/* A commit point was answered: start syncing its lines now, without
 * waiting, so that the guest's flush after its commit block (which
 * waits for them) finds the sync done or under way.
 */
extern void log_sync_soon (void);

/* One line of the log, as a request thread records it: a write event
 * in binary (the writer thread formats it), any other event already
 * formatted (they are rare).  Names that do not fit inline go in HEAP.
 * With the ring's seq in front it takes 192 bytes, 3 cache lines; a
 * write event with a short name fills the first 2.
 */
#define LOG_NAMES_INLINE 96

struct log_rec {
  uint8_t kind;                 /* REC_WRITE, REC_TEXT, REC_LOST */
  uint8_t phase, direction, op;
  int32_t result;               /* 0 or an errno */
  uint32_t ino, partition;
  uint32_t nnames;              /* file name, then every path if > 1 */
  uint32_t names_len;           /* bytes of the NUL-terminated names */
  int64_t sec;                  /* the time it was recorded */
  uint32_t usec;
  uint8_t event;                /* LEV_* (log-format.h), for watchers */
  uint8_t would_deny;           /* protect-mode=audit: the errno, or 0 */
  uint8_t by;                   /* after: who vetoed (handlers_by_name:
                                   an index, handlers are at most 64) */
  uint8_t refused;              /* after: this event was the one refused */
  uint64_t position;            /* REC_LOST: how many lines were lost */
  uint64_t length, bytes_written, connection, sequence;
  char *heap;                   /* REC_TEXT: the line, a NUL, then its
                                   names (nnames, names_len); REC_WRITE:
                                   names longer than the inline space */
  char names[LOG_NAMES_INLINE];
};

/* The lines of one request, recorded as its events are decided and
 * numbered together (log_commit) before the request is answered.
 */
struct log_batch {
  struct log_rec *recs;
  size_t n, cap;
  uint64_t lost;                /* lines dropped for want of memory */
  /* The event refused in the before phase, if one was: its after line
   * and those of the request's other events carry "by".
   */
  const void *veto_ev;
  int veto_result;
  unsigned veto_by;
  uint64_t published;           /* log_publish: its last seq, for log_kick */
  struct log_rec small[4];
};

extern void log_batch_init (struct log_batch *b);
/* Record the write event EV as it stands now: in the before phase with
 * the result all handlers decided (a line only with log-phases=both),
 * in the after phase with the status.  Call it right after the
 * handlers ran (a veto's "by" is taken from handlers_vetoed_by).
 */
extern void log_event (struct log_batch *b, const struct fsevent_write *ev);
extern void log_change (struct log_batch *b, const struct fsevent_change *ev);
extern void log_lock (struct log_batch *b, const struct fsevent_lock *ev,
                      bool unlock);
/* Bytes written to free space that never became part of a file. */
/* A commit point that could not be decided (the committed view does
 * not parse, a transaction does not read, memory ran out): REASON, and
 * what became of the request (RESULT: an errno, or 0 when it was let
 * through under on-unparseable=allow).
 */
extern void log_undecided (struct log_batch *b, unsigned partition,
                           uint64_t sequence, const char *reason, int result);
extern void log_unattributed (struct log_batch *b, unsigned partition,
                              uint64_t offset, uint64_t length,
                              const char *reason);
/* The name of bit BIT of fsevent_change.changed ("mode", ...,
 * "links", "blocks", "xattr"), or NULL past the last.
 */
extern const char *log_attr_name (unsigned bit);
extern const char *log_change_name (enum fsevent_change_kind k);
extern const char *log_file_type (uint32_t mode);

/* Number the batch's lines and queue them for the writer thread, which
 * writes them within a few milliseconds (log_sync waits for that).
 * Frees what the batch allocated; the batch keeps what it knows of a
 * veto (a lock's before and after phases are committed apart).
 */
extern void log_commit (struct log_batch *b);
/* log_commit in two steps, for a caller that holds a volume's model
 * exclusively: log_publish numbers and queues the lines (under the
 * model, so that they are in commit order), log_kick wakes the writer
 * thread or helps it drain, after the model is let go.  The wake-up
 * takes the writer's mutex, which the writer (at nice 19) may hold
 * while the scheduler runs others: inside the model that stalled every
 * other request for milliseconds.
 */
extern void log_publish (struct log_batch *b);
extern void log_kick (struct log_batch *b);

#endif
