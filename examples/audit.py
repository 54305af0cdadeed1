# examples/audit.py: every change, once decided and done, as a row of a
# SQLite database (Python's sqlite3 module).
#
#   nbdkit fsevent disk.img python=examples/audit.py python.db=/var/log/disk.db
#   sqlite3 /var/log/disk.db 'SELECT event, file, status FROM events'
#
# Parameters:
#   python.db=FILE       the database (required); the table "events" is
#                        created if it is not there
#   python.commit=N      commit every N rows (default 64; and at close,
#                        and at least every second)
#
# It has only after-callbacks: it never refuses anything, and sees what
# the other handlers decided (status is 0, or the errno the change
# failed with, e.g. a veto).  A failure here (a full disk) is a handler
# failure like any other, but after the fact: it is logged, the change
# stands.
import sqlite3
import threading
import time

db_path = None
every = 64
db = None
lock = threading.Lock()
pending = 0
last_commit = 0.0

SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
  id INTEGER PRIMARY KEY,
  time REAL NOT NULL,         -- when the handler saw it (Unix time)
  event TEXT NOT NULL,        -- write, create, delete, link, unlink, rename,
                              -- set_size, set_attributes, lock, unlock
  file TEXT NOT NULL,
  new_file TEXT,              -- rename, link
  ino INTEGER NOT NULL,
  partition INTEGER NOT NULL,
  position INTEGER,           -- write, lock: byte offset
  length INTEGER,             -- write, lock: bytes
  size INTEGER,               -- set_size: the new size
  direction TEXT,             -- write: inplace, commit, journal
  sequence INTEGER,           -- the jbd2 transaction
  connection INTEGER,         -- the NBD connection (NULL for locks)
  status INTEGER NOT NULL     -- 0, or the errno it failed with
)"""


def config(key, value):
    global db_path, every
    if key == "db":
        db_path = value
    elif key == "commit":
        every = int(value)
    else:
        raise ValueError("unknown parameter python.%s" % key)


def config_complete():
    global db
    if db_path is None:
        raise ValueError("python.db=FILE is required")
    # Callbacks come from many threads (one at a time, the GIL and our
    # lock see to that).
    db = sqlite3.connect(db_path, check_same_thread=False)
    db.execute(SCHEMA)
    db.commit()


def record(p, position=None, length=None, size=None, new_file=None):
    global pending, last_commit
    hi = p.handle_info
    conn = hi.connection_id if hi is not None and p.event != "lock" \
        and p.event != "unlock" else None
    row = (time.time(), p.event, p.file_name, new_file, p.ino, p.partition,
           position, length, size, p.direction, p.sequence, conn, p.status)
    with lock:
        db.execute("INSERT INTO events (time, event, file, new_file, ino, "
                   "partition, position, length, size, direction, sequence, "
                   "connection, status) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
                   row)
        pending += 1
        now = time.monotonic()
        if pending >= every or now - last_commit >= 1.0:
            db.commit()
            pending = 0
            last_commit = now


def after_write_file(p):
    record(p, position=p.position, length=p.bytes_to_write)


def after_create_file(p):
    record(p)


def after_delete_file(p):
    record(p)


def after_link(p):
    record(p, new_file=p.new_file_name)


def after_unlink(p):
    record(p)


def after_rename_or_move_file(p):
    record(p, new_file=p.new_file_name)


def after_set_file_size(p):
    record(p, size=p.new_attributes.size)


def after_set_file_attributes(p):
    record(p)


def after_lock_file(p):
    record(p, position=p.byte_offset, length=p.length)


def after_unlock_file(p):
    record(p, position=p.byte_offset, length=p.length)


def close():
    if db is not None:
        with lock:
            db.commit()
            db.close()
