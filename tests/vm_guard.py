# tests/vm_guard.py: the python= handler of tests/test-vm.sh's gpt-python
# variant (a QEMU guest's own ext4 driver doing the writes).
#
#   python=tests/vm_guard.py python.protect=PATH python.marker=STRING
#                            python.record=FILE
#
# Vetoes (EPERM):
#   - by path: every change to PATH (its data, size, attributes other
#     than atime alone, a name of it going, coming or being replaced),
#     as protect=PATH does;
#   - by content: a write whose data holds STRING.
# Records every after-event it sees into FILE, one JSON object a line
# in the shape of log='s lines (seq, event, phase, file, paths, new_file,
# replaced, ino, partition, type, old_size, size, changed, position,
# length, direction, op, connection, result, error, and "by" and
# "refused" on the events this module refused itself), so that the test
# can check it with the same code as the log, plus:
#   n            this event's number among the after-events about the
#                inode (the file context's count)
#   conn_bytes   writes: the bytes this connection has written to the
#                inode so far (the handle context's count)
# and, as each file context goes (the inode freed, or the plugin
# unloading), {"event": "context", "ino", "partition", "names", "events"}:
# every path the inode was seen under, in order, and how many
# after-events it had.
#
# The file context also carries a veto from the before-callback to the
# after-callback of the same event (they run one after the other for an
# inode): the after line says "refused" only where this module said no,
# not on the other events that fail with the same request or commit.
import errno
import json
import re
import stat
import threading

NAME = "vm_guard"
protect = None
marker = None
record_path = None
out = None
seq = 0
lock = threading.RLock()        # __del__ may run inside a callback


def config(key, value):
    global protect, marker, record_path
    if key == "protect":
        protect = value
    elif key == "marker":
        marker = re.compile(re.escape(value.encode()))
    elif key == "record":
        record_path = value
    else:
        raise ValueError("unknown parameter python.%s" % key)


def config_complete():
    if protect is None or marker is None or record_path is None:
        raise ValueError("python.protect=, python.marker= and python.record= "
                         "are required")


def record(obj):
    global out, seq
    with lock:
        if out is None:
            out = open(record_path, "a")
        seq += 1
        out.write(json.dumps(dict(seq=seq, **obj)) + "\n")
        out.flush()


class Inode:
    """The file context: what this module saw of one inode."""
    def __init__(self, ino, partition):
        self.ino, self.partition = ino, partition
        self.names = []
        self.events = 0
        self.vetoed = set()     # (event, position) refused in the before phase

    def __del__(self):
        record({"event": "context", "ino": self.ino,
                "partition": self.partition, "names": self.names,
                "events": self.events})


def context(p):
    c = p.file_context
    if c is None:
        c = p.file_context = Inode(p.ino, p.partition)
    return c


def key(p):
    return p.event, p.position if p.event == "write" else None


# --- Before: the vetoes. ----------------------------------------------

def names_of(p):
    return {p.file_name, p.new_file_name, p.replaced_file_name} | set(p.file_names)


def refuse(p):
    context(p).vetoed.add(key(p))
    return errno.EPERM


def before_write_file(p):
    if protect in names_of(p):
        return refuse(p)
    # re searches the memoryview in place.  No buffer: a zero or trim
    # request, or commit-time data larger than the plugin reads back.
    if p.buffer is not None and marker.search(p.buffer):
        return refuse(p)
    return 0


def before_change(p):
    if protect in names_of(p):
        return refuse(p)
    return 0


def before_set_file_attributes(p):
    if protect in names_of(p) and set(p.changed) - {"atime"}:
        return refuse(p)
    return 0


before_create_file = before_delete_file = before_link = before_unlink = \
    before_rename_or_move_file = before_set_file_size = before_change


# --- After: the record. -----------------------------------------------

FILE_TYPES = {stat.S_IFREG: "file", stat.S_IFDIR: "directory",
              stat.S_IFLNK: "symlink", stat.S_IFCHR: "chardev",
              stat.S_IFBLK: "blockdev", stat.S_IFIFO: "fifo",
              stat.S_IFSOCK: "socket"}


def after(p, **extra):
    c = context(p)
    c.events += 1
    for n in [p.file_name] + list(p.file_names) + [p.new_file_name]:
        if n and n not in c.names:
            c.names.append(n)
    e = {"event": p.event, "phase": p.phase, "file": p.file_name,
         "paths": list(p.file_names), "ino": p.ino, "partition": p.partition,
         "sequence": p.sequence, "n": c.events}
    if p.new_file_name is not None:
        e["new_file"] = p.new_file_name
    if p.replaced_file_name is not None:
        e["replaced"] = p.replaced_file_name
    e.update(extra)
    e["result"] = p.status
    if p.status:
        e["error"] = errno.errorcode.get(p.status, str(p.status))
    if key(p) in c.vetoed:
        c.vetoed.discard(key(p))
        e["by"], e["refused"] = NAME, True
    record(e)


def after_write_file(p):
    hi = p.handle_info
    conn = hi.connection_id if hi is not None else None
    if p.handle_context is None:
        p.handle_context = 0
    p.handle_context += p.bytes_written
    after(p, position=p.position, length=p.bytes_to_write,
          direction=p.direction, op=p.operation, connection=conn,
          bytes_written=p.bytes_written, conn_bytes=p.handle_context)


def after_create_file(p):
    after(p, type=FILE_TYPES.get(stat.S_IFMT(p.new_attributes.mode), "unknown"),
          size=p.new_attributes.size)


def after_delete_file(p):
    after(p, type=FILE_TYPES.get(stat.S_IFMT(p.old_attributes.mode), "unknown"))


def after_set_file_size(p):
    after(p, old_size=p.old_attributes.size, size=p.new_attributes.size)


def after_set_file_attributes(p):
    after(p, changed=list(p.changed), timestamps_only=p.timestamps_only)


after_link = after_unlink = after_rename_or_move_file = after


def close():
    # Every file context has gone (and said so) before close().
    record({"event": "close"})
    with lock:
        if out is not None:
            out.close()
