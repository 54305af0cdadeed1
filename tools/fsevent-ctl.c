/* tools/fsevent-ctl.c: a command-line client for the control socket of
 * the fsevent plugin (control=PATH).
 *
 * It takes byte-range locks and runs a command while holding one (like
 * flock(1)) or holds one in the background, releases locks, lists
 * them, prints the plugin's statistics and reads a file's committed
 * content.  The protocol is lines of text of at most 4096 bytes; every
 * request gets a reply that ends with "OK ..." or "ERR ERRNAME
 * message", and a connection holding a lock may receive an unsolicited
 * "RELEASED ID" line at any time.  See fsevent-ctl(1).
 *
 * Nothing the server sends is trusted: lines are bounded, fields are
 * checked, and every wait for the server has a deadline unless the user
 * asked to wait (LOCK with --wait or without --fail-immediately, and
 * --hold).
 */
#include <config.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <sys/types.h>
#include <sys/un.h>
#include <sys/wait.h>

#define MAX_LINE 4096           /* a protocol line, newline included */
#define BUF_SIZE 65536          /* receive buffer (CAT data goes through it) */
#define EXIT_USAGE 2

static const char *progname = "fsevent-ctl";
static const char *socket_path;
static int64_t timeout_ms = 30000; /* --timeout; -1: none */

static void
usage (FILE *f)
{
  fprintf (f,
           "usage: %s [--timeout SECONDS] SOCKET COMMAND [ARGS]\n"
           "Talk to the control socket of nbdkit-fsevent-plugin (control=SOCKET).\n"
           "\n"
           "  lock PATH [LOCK-OPTIONS] -- COMMAND [ARGS]\n"
           "                   lock a byte range of PATH, run COMMAND, unlock;\n"
           "                   exit with COMMAND's status\n"
           "  lock PATH [LOCK-OPTIONS] --hold\n"
           "                   lock, print the lock's ID and hold the lock in\n"
           "                   the background until it is unlocked\n"
           "  unlock ID        release lock ID\n"
           "  locks            list the locks held\n"
           "  stats [--prometheus]\n"
           "                   print the plugin's counters (in Prometheus's\n"
           "                   text exposition format)\n"
           "  watch [--partition N] [--event TYPE,...] [--format=json|text]\n"
           "        [--buffer SIZE] [GLOB...]\n"
           "                   print decided events as they happen, one line each\n"
           "  cat PATH         write PATH's committed content to stdout\n"
           "\n"
           "LOCK-OPTIONS:\n"
           "  -o, --offset N           first byte (default 0)\n"
           "  -l, --length N           bytes, or -1/eof for up to the end of\n"
           "                           the file (default -1)\n"
           "  -s, --shared             shared lock (default: exclusive)\n"
           "  -x, --exclusive          exclusive lock\n"
           "  -n, --fail-immediately   fail if the range is locked\n"
           "  -w, --wait SECONDS       wait at most SECONDS for a conflicting\n"
           "                           lock (default: for ever)\n"
           "  --hold                   hold the lock in the background\n"
           "N takes the suffixes K, M, G, T (powers of 1024).\n"
           "\n"
           "  --timeout SECONDS   how long to wait for each reply (default 30,\n"
           "                      0: for ever)\n"
           "  --help, --version\n"
           "See fsevent-ctl(1).\n", progname);
}

static void __attribute__ ((format (printf, 1, 2)))
say (const char *fs, ...);

/* After a specific usage error message: a pointer to --help. */
static int
usage_error (void)
{
  fprintf (stderr, "Try '%s --help'.\n", progname);
  return EXIT_USAGE;
}

static void
say (const char *fs, ...)
{
  va_list ap;

  fprintf (stderr, "%s: ", progname);
  va_start (ap, fs);
  vfprintf (stderr, fs, ap);
  va_end (ap);
  fputc ('\n', stderr);
}

static void *
xmalloc (size_t n)
{
  void *p = malloc (n);
  if (p == NULL) {
    say ("out of memory");
    exit (1);
  }
  return p;
}

/* Copy S into OUT (OUTSIZE bytes, > 4) with backslashes and control
 * bytes escaped (\\, \xNN), so that what the server sends cannot play
 * with the terminal.  Truncated with "..." when it does not fit.
 * Returns OUT.
 */
static char *
escape_to (char *out, size_t outsize, const char *s)
{
  size_t o = 0;

  for (const unsigned char *p = (const unsigned char *) s; *p; p++) {
    char tmp[5];
    if (*p == '\\')
      strcpy (tmp, "\\\\");
    else if (*p < 0x20 || *p == 0x7f)
      snprintf (tmp, sizeof tmp, "\\x%02x", *p);
    else {
      tmp[0] = *p;
      tmp[1] = '\0';
    }
    size_t n = strlen (tmp);
    /* Keep room for "..." unless this is the last byte and fits. */
    if (o + n + 4 > outsize && !(p[1] == '\0' && o + n + 1 <= outsize)) {
      strcpy (out + o, "...");
      return out;
    }
    memcpy (out + o, tmp, n);
    o += n;
  }
  out[o] = '\0';
  return out;
}

static char *
escape_dup (const char *s)
{
  size_t size = strlen (s) * 4 + 5;
  return escape_to (xmalloc (size), size, s);
}

/* Strict decimal, digits only: what the protocol sends. */
static int
parse_u64 (const char *s, uint64_t *out)
{
  uint64_t v = 0;

  if (*s == '\0')
    return -1;
  for (; *s; s++) {
    if (*s < '0' || *s > '9')
      return -1;
    unsigned d = *s - '0';
    if (v > (UINT64_MAX - d) / 10)
      return -1;
    v = v * 10 + d;
  }
  *out = v;
  return 0;
}

/* A user's byte count: decimal with an optional K/M/G/T suffix, at most
 * INT64_MAX.
 */
static int
parse_size (const char *s, int64_t *out)
{
  char digits[32];
  size_t n = strspn (s, "0123456789");
  unsigned shift = 0;
  uint64_t v;

  if (n == 0 || n >= sizeof digits)
    return -1;
  memcpy (digits, s, n);
  digits[n] = '\0';
  switch (s[n]) {
  case '\0': break;
  case 'k': case 'K': shift = 10; break;
  case 'm': case 'M': shift = 20; break;
  case 'g': case 'G': shift = 30; break;
  case 't': case 'T': shift = 40; break;
  default: return -1;
  }
  if (shift && s[n + 1] != '\0')
    return -1;
  if (parse_u64 (digits, &v) == -1 || v > ((uint64_t) INT64_MAX >> shift))
    return -1;
  *out = (int64_t) (v << shift);
  return 0;
}

/* SECONDS (fractions allowed, >= 0) to milliseconds, rounded up so that
 * a small positive wait never becomes "do not wait".
 */
static int
parse_seconds (const char *s, int64_t *ms)
{
  char *end;
  double v;

  if (*s == '\0' || *s == ' ' || *s == '\t')
    return -1;
  errno = 0;
  v = strtod (s, &end);
  if (errno || end == s || *end != '\0' || !(v >= 0 && v <= 1e12))
    return -1;
  double m = v * 1000;
  *ms = (int64_t) m;
  if ((double) *ms < m)
    ++*ms;
  return 0;
}

static int64_t
now_ms (void)
{
  struct timespec ts;

  clock_gettime (CLOCK_MONOTONIC, &ts);
  return (int64_t) ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* An absolute deadline MS milliseconds from now; -1 (none) if MS < 0. */
static int64_t
deadline_in (int64_t ms)
{
  return ms < 0 ? -1 : now_ms () + ms;
}

/* Milliseconds left until DEADLINE, for poll (2). */
static int
poll_wait (int64_t deadline)
{
  if (deadline < 0)
    return -1;
  int64_t left = deadline - now_ms ();
  if (left < 0)
    return 0;
  return left > INT_MAX ? INT_MAX : (int) left;
}

/* The connection to the server.  Unread bytes are buf[pos..len). */
struct conn {
  int fd;
  size_t pos, len;
  uint64_t held;                /* the lock this connection holds, or 0 */
  bool released;                /* the server sent "RELEASED held" */
  char buf[BUF_SIZE];
};

static struct conn conn = { .fd = -1 };

static int
connect_server (struct conn *c)
{
  struct sockaddr_un addr = { .sun_family = AF_UNIX };
  size_t len = strlen (socket_path);

  if (len == 0 || len >= sizeof addr.sun_path) {
    say ("%s: socket path must be 1 to %zu bytes long", socket_path,
         sizeof addr.sun_path - 1);
    return -1;
  }
  memcpy (addr.sun_path, socket_path, len + 1);

  int fd = socket (AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd == -1) {
    say ("socket: %s", strerror (errno));
    return -1;
  }
  /* Never let the socket be stdin, stdout or stderr, even if the caller
   * started us with those closed: our output must not reach the server.
   */
  if (fd <= 2) {
    int nfd = fcntl (fd, F_DUPFD_CLOEXEC, 3);
    if (nfd == -1) {
      say ("fcntl: %s", strerror (errno));
      close (fd);
      return -1;
    }
    close (fd);
    fd = nfd;
  }
  /* Bounds connect (2) when the listen queue is full, and every send. */
  if (timeout_ms > 0) {
    struct timeval tv = { .tv_sec = timeout_ms / 1000,
                          .tv_usec = (timeout_ms % 1000) * 1000 };
    if (setsockopt (fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv) == -1) {
      say ("setsockopt: %s", strerror (errno));
      close (fd);
      return -1;
    }
  }
  if (connect (fd, (struct sockaddr *) &addr, sizeof addr) == -1) {
    if (errno == EAGAIN)
      say ("%s: timed out connecting", socket_path);
    else
      say ("%s: %s", socket_path, strerror (errno));
    close (fd);
    return -1;
  }
  c->fd = fd;
  c->pos = c->len = 0;
  return 0;
}

static int
send_all (int fd, const char *p, size_t n)
{
  while (n > 0) {
    ssize_t r = send (fd, p, n, MSG_NOSIGNAL);
    if (r == -1) {
      if (errno == EINTR)
        continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK)
        say ("%s: timed out sending a request", socket_path);
      else
        say ("%s: send: %s", socket_path, strerror (errno));
      return -1;
    }
    p += r;
    n -= r;
  }
  return 0;
}

/* Format a request line, check that it fits in a protocol line and send
 * it.  The caller has checked that no field holds a newline.
 */
static int __attribute__ ((format (printf, 2, 3)))
request (struct conn *c, const char *fs, ...)
{
  char line[MAX_LINE + 1];
  va_list ap;

  va_start (ap, fs);
  int n = vsnprintf (line, sizeof line, fs, ap);
  va_end (ap);
  if (n < 0 || n + 1 > MAX_LINE) {
    say ("%s: request too long (a request line is at most %d bytes)",
         socket_path, MAX_LINE);
    return -1;
  }
  line[n] = '\n';
  return send_all (c->fd, line, n + 1);
}

/* Read whatever the server has sent into the buffer, waiting until
 * DEADLINE (-1: for ever).  Returns the number of bytes read, 0 at end
 * of file, -1 on error or timeout (reported).
 */
static ssize_t
fill (struct conn *c, int64_t deadline)
{
  if (c->pos > 0) {
    memmove (c->buf, c->buf + c->pos, c->len - c->pos);
    c->len -= c->pos;
    c->pos = 0;
  }
  if (c->len == sizeof c->buf) {
    say ("%s: receive buffer full", socket_path); /* cannot happen */
    return -1;
  }
  for (;;) {
    struct pollfd p = { .fd = c->fd, .events = POLLIN };
    int r = poll (&p, 1, poll_wait (deadline));
    if (r == -1) {
      if (errno == EINTR)
        continue;
      say ("%s: poll: %s", socket_path, strerror (errno));
      return -1;
    }
    if (r == 0) {
      say ("%s: timed out waiting for the server", socket_path);
      return -1;
    }
    ssize_t n = read (c->fd, c->buf + c->len, sizeof c->buf - c->len);
    if (n == -1) {
      if (errno == EINTR || errno == EAGAIN)
        continue;
      say ("%s: read: %s", socket_path, strerror (errno));
      return -1;
    }
    c->len += n;
    return n;
  }
}

/* Take one complete line out of the buffer into LINE, without its
 * newline.  Returns 1 if there was one, 0 if more bytes are needed, -1
 * (reported) if it is longer than the protocol allows or holds a NUL.
 */
static int
take_line (struct conn *c, char line[MAX_LINE])
{
  size_t avail = c->len - c->pos;
  const char *start = c->buf + c->pos;
  const char *nl = memchr (start, '\n', avail < MAX_LINE ? avail : MAX_LINE);

  if (nl == NULL) {
    if (avail >= MAX_LINE) {
      say ("%s: malformed reply: line longer than %d bytes", socket_path,
           MAX_LINE);
      return -1;
    }
    return 0;
  }
  size_t n = nl - start;
  if (memchr (start, '\0', n) != NULL) {
    say ("%s: malformed reply: line holds a NUL byte", socket_path);
    return -1;
  }
  memcpy (line, start, n);
  line[n] = '\0';
  c->pos += n + 1;
  return 1;
}

/* Returns 1 with a line, 0 at end of file between lines, -1 on error. */
static int
read_line (struct conn *c, char line[MAX_LINE], int64_t deadline)
{
  for (;;) {
    int r = take_line (c, line);
    if (r != 0)
      return r;
    ssize_t n = fill (c, deadline);
    if (n == -1)
      return -1;
    if (n == 0) {
      if (c->len > c->pos) {
        say ("%s: the server closed the connection in the middle of a line",
             socket_path);
        return -1;
      }
      return 0;
    }
  }
}

/* "RELEASED ID": the server's notice that lock ID was released. */
static bool
is_released (const char *line, uint64_t *id)
{
  return strncmp (line, "RELEASED ", 9) == 0 && parse_u64 (line + 9, id) == 0;
}

/* The next line of a reply, skipping "RELEASED ID" notices (they may
 * come at any time).  Returns 0, or -1 (reported) on error, timeout or
 * end of file.
 */
static int
reply_line (struct conn *c, char line[MAX_LINE], int64_t deadline)
{
  for (;;) {
    int r = read_line (c, line, deadline);
    if (r == 0)
      say ("%s: the server closed the connection", socket_path);
    if (r <= 0)
      return -1;
    uint64_t id;
    if (is_released (line, &id)) {
      if (c->held != 0 && id == c->held)
        c->released = true;
      continue;
    }
    return 0;
  }
}

static bool
is_ok (const char *line)
{
  return strcmp (line, "OK") == 0 || strncmp (line, "OK ", 3) == 0;
}

static void
malformed (const char *req, const char *line)
{
  char esc[256];

  say ("%s: malformed reply to %s: \"%s\"", socket_path, req,
       escape_to (esc, sizeof esc, line));
}

/* If LINE is "ERR ERRNAME [message]", point NAME and MESSAGE into it
 * and return 1; if it is not an ERR line return 0; if it is a malformed
 * one, report it and return -1.
 */
static int
split_err (char *line, const char *req, const char **name,
           const char **message)
{
  if (strncmp (line, "ERR", 3) != 0 || (line[3] != ' ' && line[3] != '\0'))
    return 0;
  char *p = line + 4;
  size_t n = line[3] ? strspn (p, "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_") : 0;
  if (n == 0 || (p[n] != ' ' && p[n] != '\0')) {
    malformed (req, line);
    return -1;
  }
  *message = p[n] ? p + n + 1 : "";
  p[n] = '\0';
  *name = p;
  return 1;
}

/* "fsevent-ctl: WHAT: MESSAGE (ERRNAME)". */
static void
report_err (const char *what, const char *name, const char *message)
{
  static char esc[4 * MAX_LINE + 8];

  if (*message)
    say ("%s: %s (%s)", what, escape_to (esc, sizeof esc, message), name);
  else
    say ("%s: %s", what, name);
}

/* Handle the final line of a reply that is not "OK": an error or a
 * malformed line.  Always returns 1 (the exit status).
 */
static int
not_ok (char *line, const char *req, const char *what)
{
  const char *name, *message;
  int r = split_err (line, req, &name, &message);

  if (r == 1)
    report_err (what, name, message);
  else if (r == 0)
    malformed (req, line);
  return 1;
}

/* Split the first N space-separated, non-empty fields off LINE into
 * F[]; *REST gets what follows the next space (the last field, which
 * may hold spaces).  Returns 0 or -1.
 */
static int
split_fields (char *line, int n, char **f, char **rest)
{
  char *p = line;

  for (int i = 0; i < n; i++) {
    char *sp = strchr (p, ' ');
    if (sp == NULL || sp == p)
      return -1;
    *sp = '\0';
    f[i] = p;
    p = sp + 1;
  }
  *rest = p;
  return 0;
}

static int
write_all (int fd, const char *p, size_t n)
{
  while (n > 0) {
    ssize_t r = write (fd, p, n);
    if (r == -1) {
      if (errno == EINTR)
        continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) {
        /* A non-blocking stdout handed down to us: wait, don't spin. */
        struct pollfd pf = { .fd = fd, .events = POLLOUT };
        if (poll (&pf, 1, -1) == -1 && errno != EINTR)
          return -1;
        continue;
      }
      return -1;
    }
    p += r;
    n -= r;
  }
  return 0;
}

/* Report a failed write to stdout, except a reader that went away
 * (EPIPE, like "| head"), which only makes the exit status 1.
 */
static int
stdout_error (void)
{
  if (errno != EPIPE)
    say ("write error on standard output: %s", strerror (errno));
  return 1;
}

static int
flush_stdout (void)
{
  if (fflush (stdout) == EOF || ferror (stdout))
    return stdout_error ();
  return 0;
}

static bool
has_newline (const char *cmd, const char *path)
{
  if (strchr (path, '\n') == NULL)
    return false;
  say ("%s: PATH holds a newline, which the protocol cannot carry", cmd);
  return true;
}

/* unlock ID */
static int
cmd_unlock (int argc, char **argv)
{
  uint64_t id;
  char line[MAX_LINE], what[64];

  if (argc != 1) {
    say ("unlock: give one lock ID");
    return usage_error ();
  }
  if (parse_u64 (argv[0], &id) == -1 || id == 0) {
    say ("unlock: bad lock ID '%s'", argv[0]);
    return EXIT_USAGE;
  }
  snprintf (what, sizeof what, "unlock %" PRIu64, id);
  if (connect_server (&conn) == -1 ||
      request (&conn, "UNLOCK %" PRIu64, id) == -1 ||
      reply_line (&conn, line, deadline_in (timeout_ms)) == -1)
    return 1;
  if (is_ok (line))
    return 0;
  return not_ok (line, "UNLOCK", what);
}

/* locks: "LOCK ID INO OFFSET LENGTH MODE PATH" lines, then "OK". */
enum { COL_ID, COL_INO, COL_OFFSET, COL_LENGTH, COL_MODE, COL_PATH, NCOLS };

static int
cmd_locks (int argc, char **argv)
{
  static const char *const header[NCOLS] = {
    "ID", "INODE", "OFFSET", "LENGTH", "MODE", "PATH"
  };
  char line[MAX_LINE];
  char *(*rows)[NCOLS] = NULL;
  size_t nrows = 0, cap = 0;
  size_t width[NCOLS];
  int64_t deadline = deadline_in (timeout_ms);

  if (argc != 0) {
    say ("locks: takes no arguments");
    return usage_error ();
  }
  if (connect_server (&conn) == -1 || request (&conn, "LOCKS") == -1)
    return 1;
  for (;;) {
    if (reply_line (&conn, line, deadline) == -1)
      return 1;
    if (is_ok (line))
      break;
    char *f[6], *path, copy[MAX_LINE];
    uint64_t id, ino, offset, length = 0;
    bool eof;
    strcpy (copy, line);
    if (split_fields (copy, 6, f, &path) == -1 || strcmp (f[0], "LOCK") != 0)
      return not_ok (line, "LOCKS", "locks");
    eof = strcmp (f[4], "-1") == 0;
    if (parse_u64 (f[1], &id) == -1 || id == 0 ||
        parse_u64 (f[2], &ino) == -1 ||
        parse_u64 (f[3], &offset) == -1 || offset > INT64_MAX ||
        (!eof && (parse_u64 (f[4], &length) == -1 || length > INT64_MAX)) ||
        *path == '\0') {
      malformed ("LOCKS", line);
      return 1;
    }
    if (nrows == cap) {
      cap = cap ? cap * 2 : 16;
      rows = realloc (rows, cap * sizeof *rows);
      if (rows == NULL) {
        say ("out of memory");
        return 1;
      }
    }
    char num[24];
    snprintf (num, sizeof num, "%" PRIu64, id);
    rows[nrows][COL_ID] = strdup (num);
    snprintf (num, sizeof num, "%" PRIu64, ino);
    rows[nrows][COL_INO] = strdup (num);
    snprintf (num, sizeof num, "%" PRIu64, offset);
    rows[nrows][COL_OFFSET] = strdup (num);
    if (eof)
      strcpy (num, "eof");
    else
      snprintf (num, sizeof num, "%" PRIu64, length);
    rows[nrows][COL_LENGTH] = strdup (num);
    rows[nrows][COL_MODE] = escape_dup (f[5]);
    rows[nrows][COL_PATH] = escape_dup (path);
    for (int i = 0; i < NCOLS; i++)
      if (rows[nrows][i] == NULL) {
        say ("out of memory");
        return 1;
      }
    nrows++;
  }

  for (int i = 0; i < NCOLS; i++) {
    width[i] = strlen (header[i]);
    for (size_t r = 0; r < nrows; r++)
      if (strlen (rows[r][i]) > width[i])
        width[i] = strlen (rows[r][i]);
  }
  for (size_t r = 0; r <= nrows; r++) {
    const char *const *cell = r == 0 ? header : (const char *const *) rows[r - 1];
    /* Numbers to the right, words to the left, PATH unpadded. */
    printf ("%*s %*s %*s %*s %-*s %s\n",
            (int) width[COL_ID], cell[COL_ID],
            (int) width[COL_INO], cell[COL_INO],
            (int) width[COL_OFFSET], cell[COL_OFFSET],
            (int) width[COL_LENGTH], cell[COL_LENGTH],
            (int) width[COL_MODE], cell[COL_MODE], cell[COL_PATH]);
  }
  for (size_t r = 0; r < nrows; r++)
    for (int i = 0; i < NCOLS; i++)
      free (rows[r][i]);
  free (rows);
  return flush_stdout ();
}

/* Is S a number Prometheus takes (decimal, optionally signed, with a
 * fraction or exponent)?
 */
static bool
is_number (const char *s)
{
  char *end;
  if (*s == '\0')
    return false;
  errno = 0;
  (void) strtod (s, &end);
  return *end == '\0' && strspn (s, "0123456789+-.eE") == strlen (s);
}

/* The fields that only ever grow; every other is a gauge. */
static bool
is_counter (const char *name)
{
  static const char *const counters[] = {
    "requests", "events", "vetoes", "transactions", "transactions_vetoed",
    "transactions_not_followed", "unattributed_bytes",
  };
  for (size_t i = 0; i < sizeof counters / sizeof counters[0]; i++)
    if (strcmp (name, counters[i]) == 0)
      return true;
  return strncmp (name, "events_", 7) == 0;
}

/* One field in the text exposition format: fsevent_NAME (anything but
 * [a-zA-Z0-9_] made '_'), counters with _total.  Fields whose value is
 * no number are left out.
 */
static int
prometheus_field (FILE *f, const char *name, const char *value)
{
  char metric[MAX_LINE + 16];
  size_t n = 0;
  if (!is_number (value))
    return 0;
  n += snprintf (metric, sizeof metric, "fsevent_");
  for (const char *p = name; *p && n < sizeof metric - 8; p++)
    metric[n++] = (*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
      (*p >= '0' && *p <= '9') || *p == '_' ? *p : '_';
  metric[n] = '\0';
  bool counter = is_counter (name);
  if (counter && (n < 6 || strcmp (metric + n - 6, "_total") != 0))
    strcpy (metric + n, "_total");
  fprintf (f, "# HELP %s nbdkit-fsevent STATS field ", metric);
  for (const char *p = name; *p; p++)
    fputc (*p == '\\' ? '/' : *p, f);
  fputs (".\n", f);
  fprintf (f, "# TYPE %s %s\n", metric, counter ? "counter" : "gauge");
  fprintf (f, "%s %s\n", metric, value);
  return 0;
}

/* stats: "NAME VALUE" lines, then "OK"; printed as they are (or in
 * Prometheus's format), once the whole reply has arrived and been
 * checked.
 */
static int
cmd_stats (int argc, char **argv)
{
  char line[MAX_LINE];
  char *out = NULL;
  size_t len = 0, cap = 0;
  int64_t deadline = deadline_in (timeout_ms);
  bool prometheus = false;

  if (argc == 1 && strcmp (argv[0], "--prometheus") == 0)
    prometheus = true;
  else if (argc != 0) {
    say ("stats: takes no arguments but --prometheus");
    return usage_error ();
  }
  if (connect_server (&conn) == -1 || request (&conn, "STATS") == -1)
    return 1;
  for (;;) {
    if (reply_line (&conn, line, deadline) == -1)
      return 1;
    if (is_ok (line))
      break;
    char *sp = strchr (line, ' ');
    if (sp == NULL || sp == line || sp[1] == '\0' ||
        strncmp (line, "ERR ", 4) == 0)
      return not_ok (line, "STATS", "stats");
    for (const unsigned char *p = (const unsigned char *) line; *p; p++)
      if (*p < 0x20 || *p == 0x7f) {
        malformed ("STATS", line);
        return 1;
      }
    size_t n = strlen (line);
    if (len + n + 2 > cap) {
      cap = (len + n + 2) * 2;
      out = realloc (out, cap);
      if (out == NULL) {
        say ("out of memory");
        return 1;
      }
    }
    memcpy (out + len, line, n);
    len += n;
    out[len++] = '\n';
  }
  int r = 0;
  if (prometheus) {
    char *save = NULL;
    if (out)
      out[len] = '\0';
    for (char *l = out ? strtok_r (out, "\n", &save) : NULL; l;
         l = strtok_r (NULL, "\n", &save)) {
      char *sp = strchr (l, ' ');
      *sp = '\0';
      prometheus_field (stdout, l, sp + 1);
    }
    r = flush_stdout ();
  }
  else if (write_all (STDOUT_FILENO, out ? out : "", len) == -1)
    r = stdout_error ();
  free (out);
  return r;
}

/* watch [--partition N] [--event TYPE,...] [--format=json|text] [GLOB...]:
 * "WATCH ARGS", "OK", then event lines until either side closes.  The
 * lines go to stdout as they come (JSON as the log has them; text with
 * every name escaped by the server, and checked here for control
 * bytes all the same).
 */
static int
cmd_watch (int argc, char **argv)
{
  static const struct option opts[] = {
    { "partition", required_argument, NULL, 'p' },
    { "event", required_argument, NULL, 'e' },
    { "events", required_argument, NULL, 'e' },
    { "format", required_argument, NULL, 'f' },
    { "buffer", required_argument, NULL, 'b' },
    { NULL, 0, NULL, 0 }
  };
  char req[MAX_LINE], line[MAX_LINE];
  size_t n = snprintf (req, sizeof req, "WATCH");
  char events[1024] = "";
  bool text = false;
  int opt;

  optind = 0;                   /* argv[0] is the first argument */
  while ((opt = getopt_long (argc + 1, argv - 1, "+p:e:f:b:", opts, NULL)) != -1) {
    switch (opt) {
    case 'b': {
      int64_t bytes;
      if (parse_size (optarg, &bytes) == -1 || bytes < 4096 ||
          bytes > 64 * 1024 * 1024) {
        say ("watch: --buffer is from 4K to 64M bytes");
        return EXIT_USAGE;
      }
      n += snprintf (req + n, sizeof req - n, " buffer=%" PRId64, bytes);
      break;
    }
    case 'p': {
      uint64_t part;
      if (parse_u64 (optarg, &part) == -1 || part > 9999) {
        say ("watch: bad --partition '%s'", optarg);
        return EXIT_USAGE;
      }
      n += snprintf (req + n, sizeof req - n, " partition=%" PRIu64, part);
      break;
    }
    case 'e':
      if (strspn (optarg, "abcdefghijklmnopqrstuvwxyz_,") != strlen (optarg) ||
          strlen (events) + strlen (optarg) + 2 > sizeof events) {
        say ("watch: bad --event '%s'", optarg);
        return EXIT_USAGE;
      }
      if (*events)
        strcat (events, ",");
      strcat (events, optarg);
      break;
    case 'f':
      if (strcmp (optarg, "json") != 0 && strcmp (optarg, "text") != 0) {
        say ("watch: --format is json or text");
        return EXIT_USAGE;
      }
      text = strcmp (optarg, "text") == 0;
      break;
    default:
      return usage_error ();
    }
  }
  if (*events)
    n += snprintf (req + n, sizeof req - n, " events=%s", events);
  if (text)
    n += snprintf (req + n, sizeof req - n, " format=text");
  for (int i = optind - 1; i < argc; i++) {
    const char *g = argv[i];
    if (g[0] != '/' && g[0] != '*') {
      say ("watch: GLOB '%s' must start with '/' (paths in the filesystem)", g);
      return EXIT_USAGE;
    }
    if (strpbrk (g, " \n") != NULL) {
      say ("watch: GLOB '%s' holds a space or newline, which the protocol "
           "cannot carry (match it with '?')", g);
      return EXIT_USAGE;
    }
    n += snprintf (req + n, sizeof req - n, " %s", g);
  }
  if (n + 1 >= MAX_LINE) {
    say ("watch: too many globs (a request line is at most %d bytes)",
         MAX_LINE);
    return EXIT_USAGE;
  }
  if (connect_server (&conn) == -1 || request (&conn, "%s", req) == -1 ||
      reply_line (&conn, line, deadline_in (timeout_ms)) == -1)
    return 1;
  if (!is_ok (line))
    return not_ok (line, "WATCH", "watch");

  /* Stream: what is buffered, then what comes, until end of file. */
  for (;;) {
    size_t avail = conn.len - conn.pos;
    if (avail > 0) {
      const char *p = conn.buf + conn.pos;
      if (text)
        for (size_t i = 0; i < avail; i++)
          if (((unsigned char) p[i] < 0x20 && p[i] != '\n') || p[i] == 0x7f) {
            say ("%s: malformed event line: control byte", socket_path);
            return 1;
          }
      if (write_all (STDOUT_FILENO, p, avail) == -1)
        return stdout_error ();
      conn.pos = conn.len = 0;
    }
    ssize_t r = fill (&conn, -1);
    if (r == -1)
      return 1;
    if (r == 0)
      return 0;                 /* the server went (nbdkit stopped) */
  }
}

/* cat PATH: "DATA SIZE", SIZE bytes, "OK". */
static int
cmd_cat (int argc, char **argv)
{
  char line[MAX_LINE], what[MAX_LINE + 8];
  uint64_t size, done = 0;

  if (argc != 1) {
    say ("cat: give one PATH");
    return usage_error ();
  }
  const char *path = argv[0];
  if (*path == '\0') {
    say ("cat: PATH is empty");
    return EXIT_USAGE;
  }
  if (has_newline ("cat", path))
    return 1;
  snprintf (what, sizeof what, "cat %s", path);
  if (connect_server (&conn) == -1 ||
      request (&conn, "CAT %s", path) == -1 ||
      reply_line (&conn, line, deadline_in (timeout_ms)) == -1)
    return 1;
  if (strncmp (line, "DATA ", 5) != 0 || parse_u64 (line + 5, &size) == -1)
    return not_ok (line, "CAT", what);

  /* The data: what is already buffered, then straight from the socket.
   * The timeout applies to each wait, not to the whole transfer.
   */
  while (done < size) {
    if (conn.pos == conn.len) {
      conn.pos = conn.len = 0;
      ssize_t n = fill (&conn, deadline_in (timeout_ms));
      if (n == -1)
        return 1;
      if (n == 0) {
        say ("%s: the server closed the connection after %" PRIu64
             " of %" PRIu64 " bytes of %s", socket_path, done, size, path);
        return 1;
      }
    }
    size_t n = conn.len - conn.pos;
    if (n > size - done)
      n = size - done;
    if (write_all (STDOUT_FILENO, conn.buf + conn.pos, n) == -1)
      return stdout_error ();
    conn.pos += n;
    done += n;
  }
  if (reply_line (&conn, line, deadline_in (timeout_ms)) == -1)
    return 1;
  if (is_ok (line))
    return 0;
  return not_ok (line, "CAT", what);
}

/* SIGCHLD while COMMAND runs: wake the poll loop (self-pipe). */
static int child_pipe[2] = { -1, -1 };

static void
on_sigchld (int sig)
{
  int saved = errno;
  char b = 0;
  ssize_t r = write (child_pipe[1], &b, 1);
  (void) r;
  errno = saved;
}

/* Watch the connection while COMMAND runs: notice "RELEASED ID" and
 * the server closing it.  Returns false once there is no point in
 * watching any more.
 */
static bool
watch_connection (const char *what)
{
  char line[MAX_LINE];
  ssize_t n = fill (&conn, 0);

  if (n == 0) {
    if (!conn.released)
      say ("%s: warning: the server closed the connection: the lock is "
           "no longer held", what);
    conn.released = true;
    return false;
  }
  if (n == -1)
    return false;
  for (;;) {
    int r = take_line (&conn, line);
    if (r == 0)
      return true;
    if (r == -1)
      return false;
    uint64_t id;
    if (is_released (line, &id) && id == conn.held) {
      say ("%s: warning: lock %" PRIu64 " was released by another "
           "client while the command runs", what, id);
      conn.released = true;
    }
    else
      malformed ("LOCK (unsolicited)", line);
  }
}

/* Run COMMAND while the lock is held, then unlock.  Returns COMMAND's
 * exit status, 128+N if signal N killed it, 126 or 127 if it could not
 * be run.
 */
static int
run_command (char **command, const char *what)
{
  struct sigaction sa = { .sa_handler = on_sigchld,
                          .sa_flags = SA_RESTART | SA_NOCLDSTOP };
  struct sigaction ign = { .sa_handler = SIG_IGN };
  struct sigaction old_int, old_quit, old_chld;
  int status;
  char line[MAX_LINE];

  if (pipe2 (child_pipe, O_CLOEXEC | O_NONBLOCK) == -1) {
    say ("pipe: %s", strerror (errno));
    return 1;
  }
  sigemptyset (&sa.sa_mask);
  sigemptyset (&ign.sa_mask);
  /* Like system (3): ^C and ^\ go to COMMAND; we stay to unlock. */
  if (sigaction (SIGCHLD, &sa, &old_chld) == -1 ||
      sigaction (SIGINT, &ign, &old_int) == -1 ||
      sigaction (SIGQUIT, &ign, &old_quit) == -1) {
    say ("sigaction: %s", strerror (errno));
    return 1;
  }
  fflush (NULL);
  pid_t pid = fork ();
  if (pid == -1) {
    say ("fork: %s", strerror (errno));
    return 1;
  }
  if (pid == 0) {
    struct sigaction dfl = { .sa_handler = SIG_DFL };
    sigemptyset (&dfl.sa_mask);
    sigaction (SIGINT, &dfl, NULL);
    sigaction (SIGQUIT, &dfl, NULL);
    sigaction (SIGPIPE, &dfl, NULL);
    sigaction (SIGCHLD, &dfl, NULL);
    execvp (command[0], command);
    int e = errno;
    say ("%s: %s", command[0], strerror (e));
    _exit (e == ENOENT ? 127 : 126);
  }

  bool watching = true;
  for (;;) {
    pid_t w = waitpid (pid, &status, WNOHANG);
    if (w == pid)
      break;
    if (w == -1 && errno != EINTR) {
      say ("waitpid: %s", strerror (errno));
      return 1;
    }
    struct pollfd p[2] = {
      { .fd = child_pipe[0], .events = POLLIN },
      { .fd = watching ? conn.fd : -1, .events = POLLIN },
    };
    if (poll (p, 2, -1) == -1) {
      if (errno == EINTR)
        continue;
      say ("poll: %s", strerror (errno));
      return 1;
    }
    if (p[0].revents) {
      char drain[64];
      while (read (child_pipe[0], drain, sizeof drain) > 0)
        ;
    }
    if (watching && p[1].revents)
      watching = watch_connection (what);
  }
  sigaction (SIGINT, &old_int, NULL);
  sigaction (SIGQUIT, &old_quit, NULL);
  sigaction (SIGCHLD, &old_chld, NULL);

  int r;
  if (WIFEXITED (status))
    r = WEXITSTATUS (status);
  else if (WIFSIGNALED (status))
    r = 128 + WTERMSIG (status);
  else
    r = 1;

  /* Unlock.  Closing the connection would release the lock too, so a
   * failure here is only a warning: the exit status stays COMMAND's.
   */
  if (!conn.released) {
    char unlock_what[64];
    snprintf (unlock_what, sizeof unlock_what, "warning: unlock %" PRIu64,
              conn.held);
    if (request (&conn, "UNLOCK %" PRIu64, conn.held) == 0 &&
        reply_line (&conn, line, deadline_in (timeout_ms)) == 0 &&
        !is_ok (line))
      not_ok (line, "UNLOCK", unlock_what);
  }
  close (conn.fd);
  conn.fd = -1;
  return r;
}

/* Close every descriptor from FIRST up. */
static void
close_from (int first)
{
#ifdef SYS_close_range
  if (syscall (SYS_close_range, (unsigned) first, ~0U, 0) == 0)
    return;
#endif
  long max = sysconf (_SC_OPEN_MAX);
  if (max < 0 || max > 65536)
    max = 65536;
  for (int fd = first; fd < max; fd++)
    close (fd);
}

/* The background process of --hold: detach, then keep the connection
 * (and so the lock) until the server says "RELEASED ID" or closes it.
 */
static void __attribute__ ((noreturn))
hold_in_background (void)
{
  char line[MAX_LINE];
  uint64_t id;

  if (setsid () == -1)
    _exit (1);
  int null = open ("/dev/null", O_RDWR | O_NOCTTY);
  if (null == -1 || dup2 (null, 0) == -1 || dup2 (null, 1) == -1 ||
      dup2 (null, 2) == -1)
    _exit (1);
  if (conn.fd != 3) {
    if (dup2 (conn.fd, 3) == -1)
      _exit (1);
    conn.fd = 3;
  }
  close_from (4);
  if (chdir ("/") == -1)
    _exit (1);
  for (;;) {
    int r = read_line (&conn, line, -1);
    if (r <= 0)
      _exit (r == 0 ? 0 : 1);
    if (is_released (line, &id) && id == conn.held)
      _exit (0);
  }
}

/* lock PATH [options] (-- COMMAND [ARGS] | --hold) */
static int
cmd_lock (int argc, char **argv)
{
  const char *path = NULL;
  int64_t offset = 0, length = -1, wait_ms = -1;
  bool shared = false, fail_now = false, wait_given = false, hold = false;
  char **command = NULL;
  char what[MAX_LINE + 8], line[MAX_LINE];

  for (int i = 0; i < argc; i++) {
    const char *a = argv[i], *val = NULL;
    const char *eq = strchr (a, '=');
    char name[32];

    if (strcmp (a, "--") == 0) {
      if (i + 1 < argc)
        command = &argv[i + 1];
      break;
    }
    if (a[0] != '-' || a[1] == '\0') {
      if (path == NULL) {
        path = a;
        continue;
      }
      command = &argv[i];       /* COMMAND without "--", as flock (1) */
      break;
    }
    /* --name=value or --name value */
    if (a[1] == '-' && eq != NULL && (size_t) (eq - a) < sizeof name) {
      memcpy (name, a, eq - a);
      name[eq - a] = '\0';
      val = eq + 1;
      a = name;
    }
    bool takes_value =
      !strcmp (a, "--offset") || !strcmp (a, "-o") ||
      !strcmp (a, "--length") || !strcmp (a, "-l") ||
      !strcmp (a, "--wait") || !strcmp (a, "-w");
    if (takes_value && val == NULL) {
      if (i + 1 >= argc) {
        say ("lock: %s needs a value", a);
        return EXIT_USAGE;
      }
      val = argv[++i];
    }
    else if (!takes_value && val != NULL) {
      say ("lock: %s takes no value", a);
      return EXIT_USAGE;
    }

    if (!strcmp (a, "--offset") || !strcmp (a, "-o")) {
      if (parse_size (val, &offset) == -1) {
        say ("lock: bad offset '%s'", val);
        return EXIT_USAGE;
      }
    }
    else if (!strcmp (a, "--length") || !strcmp (a, "-l")) {
      if (!strcmp (val, "-1") || !strcmp (val, "eof"))
        length = -1;
      else if (parse_size (val, &length) == -1) {
        say ("lock: bad length '%s'", val);
        return EXIT_USAGE;
      }
    }
    else if (!strcmp (a, "--wait") || !strcmp (a, "-w")) {
      if (parse_seconds (val, &wait_ms) == -1) {
        say ("lock: bad number of seconds '%s'", val);
        return EXIT_USAGE;
      }
      wait_given = true;
    }
    else if (!strcmp (a, "--shared") || !strcmp (a, "-s"))
      shared = true;
    else if (!strcmp (a, "--exclusive") || !strcmp (a, "-x"))
      shared = false;
    else if (!strcmp (a, "--fail-immediately") || !strcmp (a, "-n"))
      fail_now = true;
    else if (!strcmp (a, "--hold"))
      hold = true;
    else {
      say ("lock: unknown option '%s'", a);
      return usage_error ();
    }
  }
  if (path == NULL || *path == '\0') {
    say ("lock: PATH is missing");
    return usage_error ();
  }
  if (hold == (command != NULL)) {
    say ("lock: give either -- COMMAND or --hold");
    return EXIT_USAGE;
  }
  if (fail_now && wait_given) {
    say ("lock: --fail-immediately and --wait exclude each other");
    return EXIT_USAGE;
  }
  if (fail_now)
    wait_ms = 0;
  if (has_newline ("lock", path))
    return 1;
  snprintf (what, sizeof what, "lock %s", path);

  /* The reply to LOCK may take WAIT, then the usual timeout. */
  int64_t deadline = -1;
  if (wait_ms >= 0 && timeout_ms >= 0)
    deadline = deadline_in (wait_ms + timeout_ms);
  if (connect_server (&conn) == -1 ||
      request (&conn, "LOCK %" PRId64 " %" PRId64 " %s %" PRId64 " %s",
               offset, length, shared ? "shared" : "exclusive", wait_ms,
               path) == -1 ||
      reply_line (&conn, line, deadline) == -1)
    return 1;
  if (strncmp (line, "OK ", 3) != 0) {
    const char *name, *message;
    int r = split_err (line, "LOCK", &name, &message);
    if (r == 0)
      malformed ("LOCK", line);
    else if (r == 1 && strcmp (name, "EAGAIN") == 0)
      say ("%s: busy (%s)", what, name);
    else if (r == 1 && strcmp (name, "ETIMEDOUT") == 0)
      say ("%s: timed out (%s)", what, name);
    else if (r == 1)
      report_err (what, name, message);
    return 1;
  }
  if (parse_u64 (line + 3, &conn.held) == -1 || conn.held == 0) {
    malformed ("LOCK", line);
    return 1;
  }

  if (!hold)
    return run_command (command, what);

  /* --hold: the lock is held by this connection; hand it to a
   * background process, then say its ID.  If the ID cannot be said,
   * nobody could unlock it: take the lock back.
   */
  fflush (NULL);
  pid_t pid = fork ();
  if (pid == -1) {
    say ("fork: %s", strerror (errno));
    return 1;
  }
  if (pid == 0)
    hold_in_background ();
  printf ("%" PRIu64 "\n", conn.held);
  if (flush_stdout () != 0) {
    kill (pid, SIGKILL);
    waitpid (pid, NULL, 0);
    return 1;
  }
  return 0;
}

int
main (int argc, char *argv[])
{
  static const struct option long_opts[] = {
    { "timeout", required_argument, NULL, 't' },
    { "help", no_argument, NULL, 'h' },
    { "version", no_argument, NULL, 'V' },
    { NULL, 0, NULL, 0 }
  };
  static const struct {
    const char *name;
    int (*fn) (int argc, char **argv);
  } commands[] = {
    { "lock", cmd_lock },
    { "unlock", cmd_unlock },
    { "locks", cmd_locks },
    { "stats", cmd_stats },
    { "cat", cmd_cat },
    { "watch", cmd_watch },
  };
  int opt;

  /* "+": options end at SOCKET; the rest belongs to the command. */
  while ((opt = getopt_long (argc, argv, "+hV", long_opts, NULL)) != -1) {
    switch (opt) {
    case 't':
      if (parse_seconds (optarg, &timeout_ms) == -1) {
        say ("bad --timeout '%s'", optarg);
        return EXIT_USAGE;
      }
      if (timeout_ms == 0)
        timeout_ms = -1;
      break;
    case 'h':
      usage (stdout);
      return flush_stdout ();
    case 'V':
      printf ("%s %s\n", progname, PACKAGE_VERSION);
      return flush_stdout ();
    default:
      return usage_error ();
    }
  }
  if (argc - optind < 2) {
    usage (stderr);
    return EXIT_USAGE;
  }
  socket_path = argv[optind];

  /* Writes to a closed pipe or socket fail with EPIPE instead. */
  struct sigaction ign = { .sa_handler = SIG_IGN };
  sigemptyset (&ign.sa_mask);
  sigaction (SIGPIPE, &ign, NULL);

  for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
    if (strcmp (argv[optind + 1], commands[i].name) == 0)
      return commands[i].fn (argc - optind - 2, argv + optind + 2);
  say ("unknown command '%s'", argv[optind + 1]);
  return usage_error ();
}
