# examples/marker.py: examples/marker.c in Python, the CBFS-style byte
# counter.
#
# It counts the bytes written to each file (in the file context) and
# denies any write whose data contains a configured marker string.  When
# a file's context goes (the inode is freed, or the plugin unloads) its
# count is written to the report.
#
#   nbdkit fsevent disk.img python=examples/marker.py \
#          python.marker=FORBIDDEN python.report=/tmp/counts.txt
#
# Parameters:
#   python.marker=STRING  deny writes whose data contains STRING
#   python.errno=N        the errno to deny with (default EPERM)
#   python.report=FILE    "INO BYTES PATH" per file, as each context goes
import errno
import re
import threading

marker = None
pattern = None
deny_errno = errno.EPERM
report = None
report_lock = threading.Lock()


def config(key, value):
    global marker, pattern, deny_errno, report
    if key == "marker":
        marker = value.encode()
        pattern = re.compile(re.escape(marker))
    elif key == "errno":
        deny_errno = int(value)
        if not 0 < deny_errno <= 4095:
            raise ValueError("errno=%s: not an errno number" % value)
    elif key == "report":
        report = open(value, "w")
    else:
        raise ValueError("unknown parameter python.%s" % key)


class Counts:
    """The file context: bytes written, and the path first seen."""
    def __init__(self, ino, path):
        self.ino = ino
        self.path = path
        self.bytes = 0

    def __del__(self):
        # Runs when the plugin releases the context: inode freed, unload.
        if report is not None and not report.closed:
            with report_lock:
                report.write("%d %d %s\n" % (self.ino, self.bytes, self.path))
                report.flush()


def before_write_file(p):
    # The marker in the new data (not across two events).  re searches
    # the memoryview in place: no copy of the buffer.
    if pattern is not None and p.buffer is not None and pattern.search(p.buffer):
        return deny_errno
    return 0


def after_write_file(p):
    c = p.file_context
    if c is None:
        c = p.file_context = Counts(p.ino, p.file_name)
    # Callbacks about one inode never run at once: no lock needed.
    c.bytes += p.bytes_written


def close():
    # File contexts are released before close() (see
    # nbdkit-fsevent-python(3)), so every count is in the report now.
    if report is not None:
        report.close()
