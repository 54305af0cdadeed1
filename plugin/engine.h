/* plugin/engine.h: the one engine behind both front ends.
 *
 * nbdkit-fsevent-plugin (fsevent.c) serves an image file;
 * nbdkit-fsevent-filter (filter.c) sits over any nbdkit plugin.  Both
 * hand every fsevent parameter, their device and every client write to
 * the engine, and keep only what differs: where the bytes live.
 */
#ifndef FSEVENT_ENGINE_H
#define FSEVENT_ENGINE_H

#include <stdbool.h>
#include <stdint.h>

struct device;
struct conn;

/* The engine's parameters (everything but the front end's own, such as
 * file=): 0 handled, -1 error reported, 1 not an engine parameter.
 * The help leaves out script=, whose name differs between the front
 * ends (the filter's plugin below may own script=).
 */
extern int engine_config (const char *key, const char *value);
extern int engine_config_complete (void);
#define ENGINE_CONFIG_HELP \
  "partition=N          Follow only partition N of a partitioned disk.\n" \
  "handler=PATH.so      Load a handler (repeatable); NAME.KEY=VALUE configures it.\n" \
  "log=FILE|-           Log every event as JSON Lines.\n" \
  "log-phases=after|both  One line per event (default), or before and after.\n" \
  "log-sync=flush|fs|none  How a flush makes the log durable (default flush).\n" \
  "protect=GLOB         Deny every change to matching paths (repeatable).\n" \
  "protect-mode=enforce|audit  audit: log what protect= would deny, allow it.\n" \
  "python=FILE.py       A handler written in Python (repeatable); python.KEY=VALUE.\n" \
  "python-timeout=SECS  How long a python= callback may take (default 10, 0: none).\n" \
  "script-timeout=SECS  How long a script= may take (default 10).\n" \
  "on-handler-error=deny|allow  What a failed handler means (default deny).\n" \
  "on-unparseable=deny|allow    A commit that cannot be decided (default deny).\n" \
  "control=SOCKET       Serve host tools (fsevent-ctl): locks, stats, cat.\n" \
  "lock-wait=SECS       How long a guest write waits for a lock (default 30).\n" \
  "lock-mode=wait|fail  fail: a locked write fails at once (EIO)."

/* Read the partition table and map every filesystem to follow on DEV
 * (which must outlive the engine).  0, or -1 with the error reported.
 */
extern int engine_start (struct device *dev);
/* After nbdkit forked: background threads (the control socket). */
extern int engine_after_fork (void);
/* Summaries, then everything freed; safe if never started. */
extern void engine_stop (void);

/* What clients should write in: the smallest filesystem block. */
extern unsigned engine_block_size (void);

/* A client connection: who it is, and its handle contexts. */
extern struct conn *engine_open (const char *export_name);
extern void engine_close (struct conn *c);

/* FLAGS are nbdkit's (NBDKIT_FLAG_FUA, _MAY_TRIM, _FAST_ZERO), the same
 * for plugins and filters.  0, or -1 with errno set.
 */
extern int engine_pwrite (struct conn *c, const void *buf, uint32_t count,
                          uint64_t offset, uint32_t flags);
extern int engine_zero (struct conn *c, uint32_t count, uint64_t offset,
                        uint32_t flags);
extern int engine_trim (struct conn *c, uint32_t count, uint64_t offset,
                        uint32_t flags);
/* The log of acknowledged writes is as durable as the writes. */
extern int engine_flush (struct conn *c);

#endif /* FSEVENT_ENGINE_H */
