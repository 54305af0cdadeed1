/* examples/marker.c: an example fsevent handler.
 *
 * It counts the bytes written to each file (in the file context, freed
 * when the plugin unloads) and denies any write whose data contains a
 * configured marker string.
 *
 *   nbdkit fsevent disk.img handler=.../marker.so \
 *          marker.marker=FORBIDDEN marker.report=/tmp/counts.txt
 *
 * Parameters (NAME.KEY=VALUE, NAME being "marker"):
 *   marker.marker=STRING  deny writes whose data contains STRING
 *   marker.errno=N        the errno to deny with (default EPERM)
 *   marker.report=FILE    at unload, write "INO BYTES PATH" per file
 */
#define _GNU_SOURCE              /* memmem */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <fsevent.h>

static char *marker;
static int deny_errno = EPERM;
static FILE *report;

struct counts {
  uint64_t bytes;
  char path[256];
};

static int
marker_config (const char *key, const char *value)
{
  if (strcmp (key, "marker") == 0) {
    free (marker);
    marker = strdup (value);
    return marker ? 0 : -1;
  }
  if (strcmp (key, "errno") == 0) {
    char *end;
    long e = strtol (value, &end, 10);
    if (*end || e <= 0 || e > 4095) {
      fprintf (stderr, "marker: errno=%s: not an errno number\n", value);
      return -1;
    }
    deny_errno = (int) e;
    return 0;
  }
  if (strcmp (key, "report") == 0) {
    report = fopen (value, "w");
    if (report == NULL) {
      perror (value);
      return -1;
    }
    return 0;
  }
  fprintf (stderr, "marker: unknown parameter %s\n", key);
  return -1;
}

static int
marker_before_write (struct fsevent_write *ev)
{
  /* memmem finds the marker in the new data (not across two events). */
  if (marker && ev->buffer &&
      memmem (ev->buffer, ev->bytes_to_write, marker, strlen (marker)))
    ev->result_code = deny_errno;
  return 0;
}

static int
marker_after_write (struct fsevent_write *ev)
{
  struct counts *c = *ev->file_context;
  if (c == NULL) {
    c = calloc (1, sizeof *c);
    if (c == NULL)
      return -1;
    snprintf (c->path, sizeof c->path, "%s", ev->file_name);
    *ev->file_context = c;
  }
  /* Callbacks about one inode never run at once: no lock needed. */
  c->bytes += ev->bytes_written;
  return 0;
}

static void
marker_free_file_context (void *context, uint32_t ino)
{
  struct counts *c = context;
  if (report)
    fprintf (report, "%" PRIu32 " %" PRIu64 " %s\n", ino, c->bytes, c->path);
  free (c);
}

static void
marker_unload (void)
{
  if (report)
    fclose (report);
  free (marker);
}

static struct fsevent_handler handler = {
  .name = "marker",
  .description = "count bytes per file; deny writes containing a marker",
  .config = marker_config,
  .config_help = "marker.marker=STRING marker.errno=N marker.report=FILE",
  .before_write = marker_before_write,
  .after_write = marker_after_write,
  .free_file_context = marker_free_file_context,
  .unload = marker_unload,
};

FSEVENT_REGISTER_HANDLER (handler)
