/* plugin/python.h: python=FILE.py, handlers written in Python, run by
 * one CPython interpreter embedded in the plugin (see python.c and
 * nbdkit-fsevent-python(3)).  Without python3-embed at configure time
 * these fail with an error (python-none.c).
 */
#ifndef FSEVENT_PYTHON_H
#define FSEVENT_PYTHON_H

/* python=FILE.py: load the module and add it to the handler chain. */
extern int python_load (const char *path);
/* python.KEY=VALUE: to config(KEY, VALUE) of the last python= module. */
extern int python_config (const char *key, const char *value);
/* python-timeout=SECONDS (0: none). */
extern int python_set_timeout (const char *seconds);
/* After nbdkit forked: the interpreter's state, the watchdog thread. */
extern int python_after_fork (void);

#endif
