/* plugin/handlers.h: the chain of handlers and their contexts.
 *
 * Handlers are loaded .so files (handler=) and the built-in ones
 * (protect=, script=), called in command-line order.  The log (log=) is
 * not in the chain: it records each event once all handlers have
 * decided it.
 */
#ifndef FSEVENT_HANDLERS_H
#define FSEVENT_HANDLERS_H

#include <stdbool.h>
#include <stdint.h>

#include "fsevent.h"

enum on_error { ON_ERROR_DENY, ON_ERROR_ALLOW };

/* Per-connection state the chain needs. */
struct conn_contexts;

extern int handlers_load (const char *path);
/* READS_DATA: whether it looks at write buffers (loaded handlers may). */
extern int handlers_add_builtin (const struct fsevent_handler *h,
                                 bool reads_data);
/* A built-in handler that keeps file and handle contexts (as loaded
 * ones do) and needs to know which instance of it is called: while any
 * of H's callbacks runs, handlers_self is OPAQUE.
 */
extern int handlers_add_builtin_opaque (const struct fsevent_handler *h,
                                        bool reads_data, bool contexts,
                                        void *opaque);
extern __thread void *handlers_self;
/* 1 if KEY was NAME.KEY of a loaded handler (and was passed on), 0 if
 * it is not a handler's, -1 on error.
 */
extern int handlers_config (const char *key, const char *value);
extern int handlers_config_complete (void);
extern void handlers_unload (void);
extern bool handlers_active (void);
/* Loaded .so handlers and python= keep contexts; the other built-ins do not. */
extern bool handlers_need_contexts (void);
extern void handlers_set_on_error (enum on_error e);
extern const char *handlers_config_help (void);

/* Who refused an event, for the log's "by": 0 nobody, N the Nth
 * handler, or the plugin itself (out of memory before a handler could
 * decide).  Names: a built-in handler's name
 * ("protect"), unless handlers_set_by gave it another ("script:PATH"),
 * or "handler:PATH" for a loaded .so (PATH as on the command line).
 */
/* One byte in a log record: handlers are at most 64. */
enum { HANDLERS_BY_FSEVENT = 0xff };
extern int handlers_set_by (const char *name, const char *by);
/* The veto of the last before phase run on this thread that could
 * refuse its event (0 if it allowed it).
 */
extern unsigned handlers_vetoed_by (void);
extern const char *handlers_by_name (unsigned by);

/* Run the before phase of EV through the chain, stopping at the first
 * veto.  On return ev->result_code is 0 (allowed) or the errno.
 */
extern void handlers_before_write (struct fsevent_write *ev,
                                   struct conn_contexts *cc);
extern void handlers_after_write (struct fsevent_write *ev,
                                  struct conn_contexts *cc);

extern void handlers_before_change (struct fsevent_change *ev,
                                    struct conn_contexts *cc);
extern void handlers_after_change (struct fsevent_change *ev,
                                   struct conn_contexts *cc);
/* Lock events (UNLOCK false) or unlock events, in EV's phase. */
extern void handlers_lock (struct fsevent_lock *ev, bool unlock);
/* The inode was freed: its file contexts go (free_file_context). */
extern void handlers_inode_freed (unsigned partition, uint32_t ino);
/* Does any handler look at write buffers?  (Commit-time events read
 * their data back from the image only then.)
 */
extern bool handlers_want_data (void);

extern struct conn_contexts *conn_contexts_new (void);
extern void conn_contexts_free (struct conn_contexts *cc);

#endif
