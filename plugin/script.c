/* plugin/script.c: script=PATH, a handler written in any language.
 *
 * Each event runs the script once, following nbdkit-sh-plugin(3):
 *
 *   PATH before_write FILE POSITION LENGTH INO DIRECTION
 *   PATH after_write  FILE POSITION LENGTH INO DIRECTION STATUS
 *
 * The data of a write is on stdin (zero and trim: stdin is /dev/null),
 * FSEVENT_OPERATION, FSEVENT_PATHS (one per line), FSEVENT_CONNECTION,
 * FSEVENT_EXPORT_NAME and FSEVENT_PARTITION are in the environment,
 * and the script's stdout goes to nbdkit's stderr.  Exit status:
 *   0  allow
 *   1  deny: stderr is "ENAME message" (an unknown name means EIO);
 *      ignored (logged) in after_write
 *   2  not handled: allow
 * Any other status, a signal or script-timeout= (default 10 s) is a
 * handler failure: on-handler-error= decides.
 *
 * Cost: a process per event (about a millisecond, more for a big
 * script), which is fine for tests and scripting but not for
 * throughput: write a handler=.so for that.
 */
#include <config.h>

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define NBDKIT_API_VERSION 2
#include <nbdkit-plugin.h>

#include "builtins.h"
#include "errnames.h"
#include "log.h"

/* posix_spawn_file_actions_addclosefrom_np appeared in glibc 2.34. */
#ifdef __GLIBC_PREREQ
# if __GLIBC_PREREQ (2, 34)
#  define HAVE_ADDCLOSEFROM 1
# endif
#endif

#define ERR_MAX 4096            /* stderr kept for the verdict and the log */
#define MAX_TIMEOUT 86400       /* seconds: a longer wait is a mistake */
#define TICK_MS 100             /* how often to look for the exit without pidfd */

/* Set while nbdkit reads its configuration, read-only afterwards: the
 * events of several threads share them without a lock.
 */
static char *script;            /* absolute path */
static double timeout = 10;     /* seconds */
static bool have_stderr;        /* fd 2 was open at script=: nbdkit keeps it */

int
script_set (const char *path)
{
  struct stat st;

  if (script) {
    nbdkit_error ("script=%s: script= can be given only once", path);
    return -1;
  }
  char *abs = nbdkit_realpath (path); /* reports its own error */
  if (abs == NULL)
    return -1;
  if (stat (abs, &st) == -1) {
    nbdkit_error ("script=%s: %m", path);
    goto err;
  }
  /* access() alone would accept a directory (and anything for root). */
  if (!S_ISREG (st.st_mode)) {
    nbdkit_error ("script=%s: not a regular file", path);
    goto err;
  }
  if (access (abs, X_OK) == -1) {
    nbdkit_error ("script=%s: not executable: %m", path);
    goto err;
  }
  /* Looked at once: if fd 2 were closed now, a pipe of another event
   * could take its number while we spawn.
   */
  have_stderr = fcntl (STDERR_FILENO, F_GETFD) != -1;
  script = abs;
  return 0;

 err:
  free (abs);
  return -1;
}

int
script_set_timeout (const char *seconds)
{
  char *end;

  errno = 0;
  double t = strtod (seconds, &end);
  /* !(t > 0) also rejects NaN; the upper bound rejects infinity. */
  if (errno != 0 || end == seconds || *end != '\0' ||
      !(t > 0) || t > MAX_TIMEOUT) {
    nbdkit_error ("script-timeout=%s: expected a number of seconds "
                  "greater than 0 and at most %d (e.g. 0.5)",
                  seconds, MAX_TIMEOUT);
    return -1;
  }
  timeout = t;
  return 0;
}

static void
script_unload (void)
{
  free (script);
  script = NULL;
}

/* --- Running the script. --- */

static int64_t
now_ns (void)
{
  struct timespec ts;

  clock_gettime (CLOCK_MONOTONIC, &ts);
  return (int64_t) ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* Milliseconds to the deadline, rounded up so that poll does not spin
 * just before it; 0 once it has passed.
 */
static int
ms_left (int64_t deadline)
{
  int64_t ns = deadline - now_ns ();
  if (ns <= 0)
    return 0;
  int64_t ms = (ns + 999999) / 1000000;
  return ms > INT_MAX ? INT_MAX : (int) ms;
}

/* Move a pipe end above 0-2 (nbdkit may run with them closed), so that
 * the dup2s in the child cannot overwrite one another.
 */
static int
fd_high (int fd)
{
  if (fd >= 3)
    return fd;
  int nfd = fcntl (fd, F_DUPFD_CLOEXEC, 3);
  close (fd);
  return nfd;
}

/* pipe2 with O_CLOEXEC, so that a child spawned by another thread at the
 * same time does not inherit our ends (it would hold our stdin open).
 */
static int
make_pipe (int fds[2])
{
  if (pipe2 (fds, O_CLOEXEC) == -1)
    return -1;
  fds[0] = fd_high (fds[0]);
  fds[1] = fd_high (fds[1]);
  if (fds[0] == -1 || fds[1] == -1) {
    if (fds[0] >= 0) close (fds[0]);
    if (fds[1] >= 0) close (fds[1]);
    return -1;
  }
  return 0;
}

static void
close_fd (int *fd)
{
  if (*fd >= 0) {
    close (*fd);
    *fd = -1;
  }
}

/* posix_spawn rather than fork: it is vfork-like (no copy of nbdkit's
 * page tables), reports exec errors as its result, and the child is in
 * its own process group before it runs, so there is no window in which
 * kill (-pid) could miss it.
 */
static int
spawn (char *const argv[], char *const envp[], int in_fd, int err_fd,
       pid_t *pid)
{
  posix_spawn_file_actions_t fa;
  posix_spawnattr_t attr;
  sigset_t mask, dfl;
  int r;

  r = posix_spawn_file_actions_init (&fa);
  if (r != 0)
    goto out;
  r = posix_spawnattr_init (&attr);
  if (r != 0) {
    posix_spawn_file_actions_destroy (&fa);
    goto out;
  }

  /* Order matters: stdout takes nbdkit's stderr before fd 2 changes. */
  if (have_stderr)
    r = posix_spawn_file_actions_adddup2 (&fa, STDERR_FILENO, STDOUT_FILENO);
  else
    r = posix_spawn_file_actions_addopen (&fa, STDOUT_FILENO, "/dev/null",
                                          O_WRONLY, 0);
  if (r == 0)
    r = in_fd >= 0
      ? posix_spawn_file_actions_adddup2 (&fa, in_fd, STDIN_FILENO)
      : posix_spawn_file_actions_addopen (&fa, STDIN_FILENO, "/dev/null",
                                          O_RDONLY, 0);
  if (r == 0)
    r = posix_spawn_file_actions_adddup2 (&fa, err_fd, STDERR_FILENO);
#ifdef HAVE_ADDCLOSEFROM
  /* Also fds opened elsewhere in nbdkit without O_CLOEXEC. */
  if (r == 0)
    r = posix_spawn_file_actions_addclosefrom_np (&fa, 3);
#endif

  /* Own process group, so that a timeout kills its children too; no
   * blocked signals; SIGPIPE back to default (nbdkit ignores it and a
   * shell cannot undo an inherited SIG_IGN).
   */
  sigemptyset (&mask);
  sigemptyset (&dfl);
  sigaddset (&dfl, SIGPIPE);
  if (r == 0)
    r = posix_spawnattr_setflags (&attr, POSIX_SPAWN_SETPGROUP |
                                  POSIX_SPAWN_SETSIGMASK |
                                  POSIX_SPAWN_SETSIGDEF);
  if (r == 0)
    r = posix_spawnattr_setpgroup (&attr, 0);
  if (r == 0)
    r = posix_spawnattr_setsigmask (&attr, &mask);
  if (r == 0)
    r = posix_spawnattr_setsigdefault (&attr, &dfl);
  if (r == 0)
    r = posix_spawn (pid, script, &fa, &attr, argv, envp);

  posix_spawnattr_destroy (&attr);
  posix_spawn_file_actions_destroy (&fa);
 out:
  if (r != 0) {
    errno = r;
    nbdkit_error ("script %s %s: cannot run it: %m", script, argv[1]);
    return -1;
  }
  return 0;
}

struct outcome {
  int status;                   /* from waitpid */
  bool timed_out;
  size_t errlen;
  char err[ERR_MAX + 1];        /* the start of stderr, '\0'-terminated */
};

/* Read what stderr has now.  Returns false at EOF or on error. */
static bool
read_stderr (int fd, struct outcome *o)
{
  char scratch[4096];

  for (;;) {
    /* Past ERR_MAX, keep draining so the script never blocks on a full
     * pipe, but throw the bytes away.
     */
    char *p = o->errlen < ERR_MAX ? o->err + o->errlen : scratch;
    size_t n = o->errlen < ERR_MAX ? ERR_MAX - o->errlen : sizeof scratch;
    ssize_t r = read (fd, p, n);
    if (r > 0) {
      if (p != scratch)
        o->errlen += r;
      continue;
    }
    if (r == -1 && errno == EINTR)
      continue;
    return r == -1 && errno == EAGAIN;
  }
}

/* Run the script with ARGV and ENVP, DATA (LEN bytes, or NULL) on its
 * stdin.  Returns 0 with *O filled once the script has exited or timed
 * out, -1 after an error (reported).  The script is always reaped.
 */
static int
run (char *const argv[], char *const envp[], const void *data, uint64_t len,
     struct outcome *o)
{
  int in[2] = { -1, -1 }, err[2] = { -1, -1 }, pidfd = -1;
  int64_t deadline = now_ns () + (int64_t) (timeout * 1e9);
  uint64_t done = 0;
  bool reaped = false, failed = false, epipe = false, pipe_was_pending = false;
  sigset_t pipeset, oldmask;
  pid_t pid;

  memset (o, 0, sizeof *o);
  if ((data && make_pipe (in) == -1) || make_pipe (err) == -1) {
    nbdkit_error ("script %s %s: pipe: %m", script, argv[1]);
    close_fd (&in[0]);
    close_fd (&in[1]);
    return -1;
  }
  if ((in[1] >= 0 && fcntl (in[1], F_SETFL, O_NONBLOCK) == -1) ||
      fcntl (err[0], F_SETFL, O_NONBLOCK) == -1 ||
      spawn (argv, envp, in[0], err[1], &pid) == -1) {
    close_fd (&in[0]);
    close_fd (&in[1]);
    close_fd (&err[0]);
    close_fd (&err[1]);
    return -1;
  }
  close_fd (&in[0]);
  close_fd (&err[1]);
  if (in[1] >= 0 && len == 0)
    close_fd (&in[1]);

  /* A pidfd tells poll when the script exits even if something it
   * started still holds stderr open; without one, look every TICK_MS.
   */
#ifdef SYS_pidfd_open
  pidfd = syscall (SYS_pidfd_open, pid, 0);
#endif

  /* SIGPIPE: nbdkit ignores it, but rather than rely on (or change) the
   * process-wide setting, block it in this thread while we write and
   * take back the one that a write to a gone reader raises.
   */
  sigemptyset (&pipeset);
  sigaddset (&pipeset, SIGPIPE);
  if (data) {
    sigset_t pending;
    pthread_sigmask (SIG_BLOCK, &pipeset, &oldmask);
    if (sigpending (&pending) == 0)
      pipe_was_pending = sigismember (&pending, SIGPIPE);
  }

  while (!reaped) {
    struct pollfd pfd[3];
    int nfds = 0, in_i = -1, err_i = -1, pid_i = -1;
    int ms = ms_left (deadline);

    if (ms == 0) {
      o->timed_out = true;
      break;
    }
    if (pidfd < 0 && ms > TICK_MS)
      ms = TICK_MS;
    if (in[1] >= 0) {
      in_i = nfds;
      pfd[nfds++] = (struct pollfd) { .fd = in[1], .events = POLLOUT };
    }
    if (err[0] >= 0) {
      err_i = nfds;
      pfd[nfds++] = (struct pollfd) { .fd = err[0], .events = POLLIN };
    }
    if (pidfd >= 0) {
      pid_i = nfds;
      pfd[nfds++] = (struct pollfd) { .fd = pidfd, .events = POLLIN };
    }
    if (poll (pfd, nfds, ms) == -1) {
      if (errno == EINTR)
        continue;
      nbdkit_error ("script %s %s: poll: %m", script, argv[1]);
      failed = true;
      break;
    }

    if (in_i >= 0 && pfd[in_i].revents) {
      uint64_t n = len - done;
      ssize_t r = write (in[1], (const char *) data + done,
                         n > 1024 * 1024 ? 1024 * 1024 : n);
      if (r > 0)
        done += r;
      else if (r == -1 && errno != EAGAIN && errno != EINTR) {
        /* EPIPE: the script need not read all of stdin. */
        if (errno == EPIPE)
          epipe = true;
        else
          nbdkit_debug ("script %s %s: write to stdin: %m", script, argv[1]);
        close_fd (&in[1]);
      }
      if (done == len)
        close_fd (&in[1]);
    }
    if (err_i >= 0 && pfd[err_i].revents && !read_stderr (err[0], o))
      close_fd (&err[0]);
    if (pidfd < 0 || (pid_i >= 0 && pfd[pid_i].revents)) {
      pid_t w = waitpid (pid, &o->status, WNOHANG);
      if (w == pid)
        reaped = true;
      else if (w == -1 && errno != EINTR) {
        /* Someone else reaped it: its id may be reused, do not kill. */
        nbdkit_error ("script %s %s: waitpid: %m", script, argv[1]);
        reaped = failed = true;
      }
    }
  }

  if (!reaped) {
    /* Timeout or error: kill the whole group (a `sleep` the script
     * started too) while the unreaped leader still reserves its id.
     */
    kill (-pid, SIGKILL);
    while (waitpid (pid, &o->status, 0) == -1 && errno == EINTR)
      ;
  }
  else if (err[0] >= 0 && !failed)
    /* What the script wrote before it exited is in the pipe already; a
     * child it left behind may hold stderr open, so take only that.
     */
    read_stderr (err[0], o);
  o->err[o->errlen] = '\0';

  close_fd (&in[1]);
  close_fd (&err[0]);
  if (pidfd >= 0)
    close (pidfd);
  if (data) {
    if (epipe && !pipe_was_pending) {
      static const struct timespec zero = { 0, 0 };
      sigtimedwait (&pipeset, NULL, &zero);
    }
    pthread_sigmask (SIG_SETMASK, &oldmask, NULL);
  }
  return failed ? -1 : 0;
}

/* --- The handler. --- */

static const char *
direction_name (enum fsevent_direction d)
{
  switch (d) {
  case FSEVENT_INPLACE: return "inplace";
  case FSEVENT_COMMIT: return "commit";
  case FSEVENT_JOURNAL: return "journal";
  }
  return "unknown";
}

static const char *
operation_name (enum fsevent_operation op)
{
  switch (op) {
  case FSEVENT_OP_WRITE: return "write";
  case FSEVENT_OP_ZERO: return "zero";
  case FSEVENT_OP_TRIM: return "trim";
  }
  return "unknown";
}

/* The variables we set; inherited ones of the same name are dropped. */
static const char *const our_vars[] = {
  "FSEVENT_OPERATION=", "FSEVENT_PATHS=", "FSEVENT_CONNECTION=",
  "FSEVENT_EXPORT_NAME=", "FSEVENT_PARTITION=", "FSEVENT_WOULD_DENY=",
};
#define NR_VARS (sizeof our_vars / sizeof our_vars[0])

struct env {
  char **envp;
  char *own[NR_VARS];
};

static void
env_free (struct env *e)
{
  for (size_t i = 0; i < NR_VARS; i++)
    free (e->own[i]);
  free (e->envp);
}

static char *var (const char *fmt, ...)
  __attribute__ ((format (printf, 1, 2)));

static char *
var (const char *fmt, ...)
{
  va_list ap;
  char *s;

  va_start (ap, fmt);
  if (vasprintf (&s, fmt, ap) == -1)
    s = NULL;
  va_end (ap);
  return s;
}

/* Built before the spawn, as the child may not allocate.  Reading
 * environ without a lock is fine: nbdkit does not change it once
 * serving.
 */
static int
env_build (struct env *e, const char *file_name,
           const char *const *file_names, const char *operation,
           const struct fsevent_handle_info *hi, unsigned partition,
           int would_deny)
{
  const char *name = file_name ? file_name : "";
  size_t n = 0, len = strlen (name) + 1;

  memset (e, 0, sizeof *e);
  for (size_t i = 0; file_names && file_names[i]; i++)
    len += strlen (file_names[i]) + 1;
  char *paths = malloc (len);
  if (paths == NULL)
    goto err;
  if (file_names == NULL)
    strcpy (paths, name);
  else {
    char *p = paths;
    *p = '\0';
    for (size_t i = 0; file_names[i]; i++)
      p += sprintf (p, "%s%s", i ? "\n" : "", file_names[i]);
  }
  e->own[0] = var ("FSEVENT_OPERATION=%s", operation);
  e->own[1] = var ("FSEVENT_PATHS=%s", paths);
  free (paths);
  if (hi) {
    e->own[2] = var ("FSEVENT_CONNECTION=%" PRIu64, hi->connection_id);
    e->own[3] = var ("FSEVENT_EXPORT_NAME=%s",
                     hi->export_name ? hi->export_name : "");
  }
  e->own[4] = var ("FSEVENT_PARTITION=%u", partition);
  /* protect-mode=audit: what protect= would have done. */
  if (would_deny)
    e->own[5] = var ("FSEVENT_WOULD_DENY=%s", errno_name (would_deny));
  if (e->own[0] == NULL || e->own[1] == NULL || e->own[4] == NULL ||
      (hi && (e->own[2] == NULL || e->own[3] == NULL)) ||
      (would_deny && e->own[5] == NULL))
    goto err;

  for (char **v = environ; *v; v++)
    n++;
  e->envp = malloc ((n + NR_VARS + 1) * sizeof *e->envp);
  if (e->envp == NULL)
    goto err;
  n = 0;
  for (char **v = environ; *v; v++) {
    bool ours = false;
    for (size_t i = 0; i < NR_VARS && !ours; i++)
      ours = strncmp (*v, our_vars[i], strlen (our_vars[i])) == 0;
    if (!ours)
      e->envp[n++] = *v;
  }
  for (size_t i = 0; i < NR_VARS; i++)
    if (e->own[i])
      e->envp[n++] = e->own[i];
  e->envp[n] = NULL;
  return 0;

 err:
  nbdkit_error ("script %s: environment: %m", script);
  env_free (e);
  return -1;
}

/* Trim trailing white space (the newline of echo) for the log. */
static void
chomp (struct outcome *o)
{
  while (o->errlen > 0 &&
         strchr (" \t\r\n", o->err[o->errlen - 1]) != NULL)
    o->err[--o->errlen] = '\0';
}

/* Exit 1: "ENAME message", the name case-insensitive as in nbdkit's sh
 * plugin; anything else is EIO with the whole text as the message.
 */
static int
parse_denial (const char *text, const char **msg)
{
  const char *p = text + strspn (text, " \t\r\n");
  size_t n = strcspn (p, " \t\r\n");
  char name[32];
  int err = 0;

  if (n > 0 && n < sizeof name) {
    for (size_t i = 0; i < n; i++)
      name[i] = p[i] >= 'a' && p[i] <= 'z' ? p[i] - 'a' + 'A' : p[i];
    err = errno_from_name (name, (int) n);
  }
  if (err == 0) {
    *msg = p;
    return EIO;
  }
  p += n;
  *msg = p + strspn (p, " \t\r\n");
  return err;
}

/* Run the script for one event: ARGV[1] is the method, ARGV[2] the
 * file.  In the before phase a denial sets *RESULT_CODE.
 */
static int
run_event (char *const argv[], const char *file_name,
           const char *const *file_names, const char *operation,
           const struct fsevent_handle_info *hi, unsigned partition,
           int would_deny, const void *data, uint64_t len, bool before,
           int *result_code)
{
  const char *phase = argv[1];
  struct outcome *o;
  struct env e;
  int r;

  o = malloc (sizeof *o);       /* 4 KiB: not on a thread's stack */
  if (o == NULL) {
    nbdkit_error ("script %s %s: malloc: %m", script, phase);
    return -1;
  }
  if (env_build (&e, file_name, file_names, operation, hi, partition,
                 would_deny) == -1) {
    free (o);
    return -1;
  }
  r = run (argv, e.envp, data, len, o);
  env_free (&e);
  if (r == -1)
    goto out;
  chomp (o);

  r = -1;
  if (o->timed_out)
    nbdkit_error ("script %s %s timed out after %g s (%s)",
                  script, phase, timeout, argv[2]);
  else if (WIFSIGNALED (o->status))
    nbdkit_error ("script %s %s: killed by signal %d%s%s", script, phase,
                  WTERMSIG (o->status), o->errlen ? ": " : "", o->err);
  else if (!WIFEXITED (o->status))
    nbdkit_error ("script %s %s: unexpected wait status 0x%x",
                  script, phase, (unsigned) o->status);
  else {
    switch (WEXITSTATUS (o->status)) {
    case 0:                     /* allow */
    case 2:                     /* not handled */
      if (o->errlen)
        nbdkit_debug ("script %s %s: %s", script, phase, o->err);
      r = 0;
      break;
    case 1: {
      const char *msg;
      int err = parse_denial (o->err, &msg);
      if (before) {
        *result_code = err;
        nbdkit_debug ("script %s %s denied %s with %s: %s",
                      script, phase, argv[2], errno_name (err),
                      *msg ? msg : "(no message)");
      }
      else
        nbdkit_debug ("script %s %s: exit status 1 ignored: %s",
                      script, phase, o->err);
      r = 0;
      break;
    }
    default:
      nbdkit_error ("script %s %s: exit status %d%s%s", script, phase,
                    WEXITSTATUS (o->status), o->errlen ? ": " : "", o->err);
    }
  }

 out:
  free (o);
  return r;
}

static int
call (struct fsevent_write *ev, bool before)
{
  const char *phase = before ? "before_write" : "after_write";
  char pos[24], len[24], ino[24];

  if (script == NULL)           /* not configured: nothing to ask */
    return 0;

  snprintf (pos, sizeof pos, "%" PRIu64, ev->position);
  snprintf (len, sizeof len, "%" PRIu64, ev->bytes_to_write);
  snprintf (ino, sizeof ino, "%" PRIu32, ev->ino);
  char *const argv[] = {
    script, (char *) phase, (char *) (ev->file_name ? ev->file_name : ""),
    pos, len, ino, (char *) direction_name (ev->direction),
    before ? NULL : (char *) (ev->status ? errno_name (ev->status) : "0"),
    NULL,
  };
  bool has_data = ev->operation == FSEVENT_OP_WRITE && ev->buffer != NULL;
  return run_event (argv, ev->file_name, ev->file_names,
                    operation_name (ev->operation), ev->handle_info,
                    ev->partition, ev->would_deny,
                    has_data ? ev->buffer : NULL,
                    has_data ? ev->bytes_to_write : 0, before,
                    &ev->result_code);
}

/* Namespace and attribute changes:
 *   PATH before_create FILE INO TYPE MODE UID GID
 *   PATH before_delete FILE INO
 *   PATH before_link   FILE NEW_FILE INO
 *   PATH before_unlink FILE INO
 *   PATH before_rename FILE NEW_FILE INO REPLACED_INO
 *   PATH before_set_size FILE INO OLD_SIZE NEW_SIZE
 *   PATH before_set_attributes FILE INO CHANGED (comma-separated names)
 * and after_* with the same arguments and STATUS last.
 */
static int
call_change (struct fsevent_change *ev, bool before)
{
  static const char *const kinds[] = {
    "create", "delete", "link", "unlink", "rename", "set_size",
    "set_attributes" };
  char method[32], a[6][32], changed[96] = "";
  char *argv[12];
  size_t n = 0;

  if (script == NULL || (unsigned) ev->kind >= 7)
    return 0;
  snprintf (method, sizeof method, "%s_%s", before ? "before" : "after",
            kinds[ev->kind]);
  argv[n++] = script;
  argv[n++] = method;
  argv[n++] = (char *) (ev->file_name ? ev->file_name : "");
  if (ev->kind == FSEVENT_LINK || ev->kind == FSEVENT_RENAME)
    argv[n++] = (char *) (ev->new_file_name ? ev->new_file_name : "");
  snprintf (a[0], sizeof a[0], "%" PRIu32, ev->ino);
  argv[n++] = a[0];
  switch (ev->kind) {
  case FSEVENT_CREATE:
    argv[n++] = (char *) (S_ISDIR (ev->attributes.mode) ? "directory"
                          : S_ISREG (ev->attributes.mode) ? "file"
                          : S_ISLNK (ev->attributes.mode) ? "symlink"
                          : S_ISCHR (ev->attributes.mode) ? "chardev"
                          : S_ISBLK (ev->attributes.mode) ? "blockdev"
                          : S_ISFIFO (ev->attributes.mode) ? "fifo"
                          : S_ISSOCK (ev->attributes.mode) ? "socket" : "unknown");
    snprintf (a[1], sizeof a[1], "%04o", ev->attributes.mode & 07777);
    snprintf (a[2], sizeof a[2], "%" PRIu32, ev->attributes.uid);
    snprintf (a[3], sizeof a[3], "%" PRIu32, ev->attributes.gid);
    argv[n++] = a[1]; argv[n++] = a[2]; argv[n++] = a[3];
    break;
  case FSEVENT_RENAME:
    snprintf (a[1], sizeof a[1], "%" PRIu32, ev->replaced_ino);
    argv[n++] = a[1];
    break;
  case FSEVENT_SET_SIZE:
    snprintf (a[1], sizeof a[1], "%" PRIu64, ev->old_attributes.size);
    snprintf (a[2], sizeof a[2], "%" PRIu64, ev->attributes.size);
    argv[n++] = a[1]; argv[n++] = a[2];
    break;
  case FSEVENT_SET_ATTRIBUTES:
    for (unsigned i = 0; log_attr_name (i); i++)
      if (ev->changed & (1u << i)) {
        if (changed[0])
          strcat (changed, ",");
        strcat (changed, log_attr_name (i));
      }
    argv[n++] = changed;
    break;
  default:
    break;
  }
  if (!before)
    argv[n++] = (char *) (ev->status ? errno_name (ev->status) : "0");
  argv[n] = NULL;
  return run_event (argv, ev->file_name, ev->file_names, kinds[ev->kind],
                    ev->handle_info, ev->partition, ev->would_deny,
                    NULL, 0, before,
                    &ev->result_code);
}

/* Locks:
 *   PATH before_lock FILE INO OFFSET LENGTH MODE WAIT
 *   PATH after_lock FILE INO OFFSET LENGTH MODE WAIT STATUS
 *   PATH before_unlock / after_unlock FILE INO OFFSET LENGTH MODE [STATUS]
 * MODE is shared or exclusive, LENGTH -1 means to the end of the file,
 * WAIT is "fail_immediately" or "wait".
 */
static int
call_lock (struct fsevent_lock *ev, bool before, bool unlock)
{
  char method[32], ino[24], off[24], len[24];
  char *argv[12];
  size_t n = 0;

  if (script == NULL)
    return 0;
  snprintf (method, sizeof method, "%s_%s", before ? "before" : "after",
            unlock ? "unlock" : "lock");
  snprintf (ino, sizeof ino, "%" PRIu32, ev->ino);
  snprintf (off, sizeof off, "%" PRIu64, ev->byte_offset);
  snprintf (len, sizeof len, "%" PRId64, ev->length);
  argv[n++] = script;
  argv[n++] = method;
  argv[n++] = (char *) (ev->file_name ? ev->file_name : "");
  argv[n++] = ino;
  argv[n++] = off;
  argv[n++] = len;
  argv[n++] = (char *) (ev->exclusive_lock ? "exclusive" : "shared");
  if (!unlock)
    argv[n++] = (char *) (ev->fail_immediately ? "fail_immediately" : "wait");
  if (!before)
    argv[n++] = (char *) (ev->status ? errno_name (ev->status) : "0");
  argv[n] = NULL;
  int ignored = 0;
  return run_event (argv, ev->file_name, ev->file_names,
                    unlock ? "unlock" : "lock", ev->handle_info,
                    ev->partition, 0, NULL, 0, before && !unlock,
                    before && !unlock ? &ev->result_code : &ignored);
}

static int script_before_lock (struct fsevent_lock *ev) { return call_lock (ev, true, false); }
static int script_after_lock (struct fsevent_lock *ev) { return call_lock (ev, false, false); }
static int script_before_unlock (struct fsevent_lock *ev) { return call_lock (ev, true, true); }
static int script_after_unlock (struct fsevent_lock *ev) { return call_lock (ev, false, true); }

static int
script_before_change (struct fsevent_change *ev)
{
  return call_change (ev, true);
}

static int
script_after_change (struct fsevent_change *ev)
{
  return call_change (ev, false);
}

static int
script_before_write (struct fsevent_write *ev)
{
  return call (ev, true);
}

static int
script_after_write (struct fsevent_write *ev)
{
  return call (ev, false);
}

const struct fsevent_handler script_handler = {
  .api_version = FSEVENT_API_VERSION,
  .struct_size = sizeof (struct fsevent_handler),
  .name = "script",
  .description = "run script= for every event (nbdkit sh plugin style)",
  .before_write = script_before_write,
  .after_write = script_after_write,
  .before_change = script_before_change,
  .after_change = script_after_change,
  .before_lock = script_before_lock,
  .after_lock = script_after_lock,
  .before_unlock = script_before_unlock,
  .after_unlock = script_after_unlock,
  .unload = script_unload,
};
