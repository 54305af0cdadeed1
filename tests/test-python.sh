#!/usr/bin/env bash
# tests/test-python.sh: python=FILE.py, handlers written in Python.
#
#  1. Vetoes: by path (return errno.EPERM), by content (result_code =
#     ENOSPC for data holding a marker), by lock (on_lock_file refuses a
#     lock taken with fsevent-ctl); zero events (buffer None); the
#     attributes of params; params and params.buffer unusable after the
#     callback.  nbdkit runs in the background (it forks after loading
#     Python).  Oracles: the image file (the blocks debugfs names), the
#     log= file, the client's errno.
#  2. A handler that raises: EIO and the traceback on stderr with
#     on-handler-error=deny (the default), the write done with allow; a
#     return value that is no errno.
#  3. Handlers that never return: python-timeout=1 makes the write fail
#     (EIO) within seconds, also when the loop catches Exception, and
#     the server goes on serving.
#  4. Contexts: a file context survives across events and connections,
#     handle contexts go at the connection's close, file contexts at
#     unload (before close()); __del__ of the context objects records it.
#  5. The examples: ransomware_guard.py, marker.py (raw NBD writes);
#     and the filter form (fsevent-python=) over the file plugin.
#  6. A kernel mount (nbdfuse + loop): the guest's in-place overwrite
#     of a file refused (the image unchanged, by debugfs); its handle and
#     file contexts go when its inode is freed (rm + sync);
#     examples/audit.py's SQLite rows
#     match the after-lines of log= exactly.

source ./functions.sh
set -x

requires nbdkit --version
requires mke2fs -V
requires debugfs -V
[ -f "$plugin" ] || fail "plugin not built: $plugin"
if [ "$have_python" != yes ]; then
    echo "SKIP: $0: python handlers were not built (no python3-embed)" >&2
    exit 77
fi
requires_python_nbd
requires "$py" -c 'import sqlite3'

d="$(tmpdir)"
export D="$d" IMG="$d/disk.img" SOCK="$d/sock" REC="$d/rec" LOG="$d/log.jsonl"
export PYTHONPATH="$d:$top_srcdir/tests"
ctl="$top_builddir/tools/fsevent-ctl"
csock="$d/ctl"
ex="$top_srcdir/examples"

# /a: 3 blocks; /b../f one block each; /secret/x one block.
mkdir -p "$d/root/secret"
head -c $((3*4096)) /dev/urandom > "$d/root/a"
for f in b c d e f; do head -c 4096 /dev/urandom > "$d/root/$f"; done
head -c 4096 /dev/urandom > "$d/root/secret/x"
mkfs_image "$d/pristine.img" 32M -t ext4 -b 4096 -d "$d/root"

cat > "$d/tp.py" <<'EOF'
import errno, os, subprocess, sys, time
import nbd
from debugfs_oracle import file_info
from nbd_client import fails

IMG, SOCK, REC = os.environ["IMG"], os.environ["SOCK"], os.environ["REC"]
BS = 4096
F = {p: file_info(IMG, p, BS) for p in
     ["/a", "/b", "/c", "/d", "/e", "/f", "/secret/x"]}

def off(path, lblk=0):
    return F[path].blocks[lblk] * BS

def connect():
    h = nbd.NBD()
    h.connect_unix(SOCK)
    return h

def on_image(o, n=BS):
    with open(IMG, "rb") as f:
        f.seek(o)
        return f.read(n)

def rec():
    try:
        return open(REC).read().splitlines()
    except FileNotFoundError:
        return []

def wait_rec(line, secs=10):
    for _ in range(int(secs * 10)):
        if line in rec():
            return
        time.sleep(0.1)
    raise AssertionError("no %r in %s" % (line, rec()))
EOF

# serve ERRFILE ARGS: nbdkit -f in the background, its stderr in ERRFILE.
serve ()
{
    local err="$1" i
    shift
    rm -f "$REC" "$LOG" "$SOCK" "$d/pid"
    cp "$d/pristine.img" "$IMG"
    nbdkit -f -U "$SOCK" -P "$d/pid" "$plugin" "$IMG" "$@" </dev/null 2>"$err" &
    for (( i = 0; i < 300; i++ )); do
        [ -s "$d/pid" ] && [ -S "$SOCK" ] && break
        sleep 0.1
    done
    [ -S "$SOCK" ] || { cat "$err"; fail "nbdkit did not start: $*"; }
    cleanup_fn "stop_nbdkit '$d/pid'"
}
# serve_daemon ARGS: nbdkit forks into the background after loading
# Python (its errors go to syslog).
serve_daemon ()
{
    rm -f "$REC" "$LOG"
    cp "$d/pristine.img" "$IMG"
    start_nbdkit "$SOCK" "$d/pid" "$plugin" "$IMG" "$@"
}
stop ()
{
    stop_nbdkit "$d/pid"
}

# --- 1. Vetoes. --------------------------------------------------------

cat > "$d/veto.py" <<'EOF'
import errno, os
REC = os.environ["REC"]
marker = b"FORBIDDEN"
kept = {}

def rec(*a):
    with open(REC, "a") as f:
        f.write(" ".join(str(x) for x in a) + "\n")

def config(key, value):
    global marker
    assert key == "marker", key
    marker = value.encode()

def before_write_file(p):
    hi = p.handle_info
    rec("before", p.event, p.phase, p.operation, p.file_name, ",".join(p.file_names),
        p.ino, p.partition, p.position, p.bytes_to_write, p.direction,
        p.sequence, hi.connection_id, hi.export_name, hi.pid,
        p.buffer is None and "nobuf" or len(p.buffer))
    kept["p"], kept["buf"] = p, p.buffer
    if p.file_name.startswith("/secret/"):
        return errno.EPERM                      # by path
    if p.buffer is not None and marker in bytes(p.buffer):
        p.result_code = errno.ENOSPC            # by content
    return None

def after_write_file(p):
    rec("after", p.file_name, p.position, p.status, p.bytes_written, p.result_code)
    # What the before-callback kept is dead now.
    for what in ("p", "buf"):
        try:
            x = kept[what]
            x.file_name if what == "p" else bytes(x)
            rec("ALIVE", what)
        except ValueError:
            rec("dead", what)

def on_lock_file(p):
    rec("lock", p.event, p.phase, p.file_name, p.ino, p.byte_offset, p.length,
        p.exclusive_lock, p.fail_immediately, p.handle_context)
    if p.file_name == "/secret/x":
        p.result_code = errno.EPERM

def on_unlock_file(p):
    rec("unlock", p.file_name, p.lock_id)
    return errno.EPERM                          # ignored: unlocks cannot be refused
EOF
serve_daemon python="$d/veto.py" python.marker=NOPE-42 log="$LOG" control="$csock"
"$py" - <<'EOF' || fail "1: vetoes"
from tp import *
h = connect()
secret, a = on_image(off("/secret/x")), on_image(off("/a", 1))
fails(errno.EPERM, h.pwrite, b"s" * BS, off("/secret/x"))
assert on_image(off("/secret/x")) == secret, "vetoed write reached the image"
fails(errno.ENOSPC, h.pwrite, b"x" * 100 + b"NOPE-42" + b"x" * (BS - 107), off("/a", 1))
assert on_image(off("/a", 1)) == a
h.pwrite(b"ok" * 2048, off("/a", 1))
assert on_image(off("/a", 1)) == b"ok" * 2048
h.zero(BS, off("/a", 2))
assert on_image(off("/a", 2)) == bytes(BS)
h.shutdown()
r = rec()
print("\n".join(r))
ia, ix = F["/a"].ino, F["/secret/x"].ino
pid = os.getpid()
assert r[0] == "before write before write /secret/x /secret/x %d 0 0 4096 inplace 0 1  %d 4096" % (ix, pid), r[0]
assert "after /secret/x 0 %d 0 0" % errno.EPERM in r
assert "before write before write /a /a %d 0 4096 4096 inplace 0 1  %d 4096" % (ia, pid) in r
assert "after /a 4096 %d 0 0" % errno.ENOSPC in r
assert "after /a 4096 0 4096 0" in r
assert "before write before zero /a /a %d 0 8192 4096 inplace 0 1  %d nobuf" % (ia, pid) in r
assert "after /a 8192 0 4096 0" in r
assert "ALIVE p" not in r and "ALIVE buf" not in r and r.count("dead p") == 4, r
EOF
# Locks, through the control socket.
rc=0
"$ctl" "$csock" lock /secret/x -n -- touch "$d/ran" 2>"$d/lockerr" || rc=$?
cat "$d/lockerr"
[ $rc -eq 1 ] && grep -q EPERM "$d/lockerr" && ! [ -e "$d/ran" ] ||
    fail "1: the lock on_lock_file refused was granted (exit $rc)"
"$ctl" "$csock" lock /a --offset 10 --length 5 --shared -- true ||
    fail "1: a lock the handler allows failed"
[ "$("$ctl" "$csock" locks | grep -c .)" -eq 1 ] || fail "1: a lock is left (the unlock was refused?)"
stop
ix="$(debugfs -R 'stat /secret/x' "$IMG" 2>/dev/null | sed -n 's/^Inode: \([0-9]*\).*/\1/p')"
ia="$(debugfs -R 'stat /a' "$IMG" 2>/dev/null | sed -n 's/^Inode: \([0-9]*\).*/\1/p')"
grep -qx "lock lock before /secret/x $ix 0 -1 True True None" "$REC" ||
    fail "1: on_lock_file of /secret/x not called as documented"
grep -qx "lock lock before /a $ia 10 5 False False None" "$REC" ||
    fail "1: on_lock_file of /a not called as documented"
grep -q "^unlock /a [1-9]" "$REC" || fail "1: on_unlock_file not called"
# The log (written by log=, not by the handler) agrees.
# One line per event (the after phase), a veto with "by":"python:PATH"
# (PATH as given) and "refused":true.
"$py" - "python:$d/veto.py" <<'EOF' || fail "1: the log does not show the vetoes"
import errno, json, os, sys
by = sys.argv[1]
L = [json.loads(l) for l in open(os.environ["LOG"])]
assert all(e.get("phase", "after") == "after" for e in L), "a before line"
w = [(e["file"], e["position"], e.get("error"), e.get("by"), e.get("refused"))
     for e in L if e["event"] == "write"]
assert len(w) == 4, w
assert ("/secret/x", 0, "EPERM", by, True) in w, w
assert ("/a", 4096, "ENOSPC", by, True) in w, w
assert ("/a", 4096, None, None, None) in w, w
assert ("/a", 8192, None, None, None) in w, w
lk = [e for e in L if e["event"] == "lock"]
assert all(e["phase"] == "after" for e in lk), lk
assert [(e.get("error"), e.get("by"), e.get("refused")) for e in lk] == \
    [("EPERM", by, True), (None, None, None)], lk
EOF
echo "1 vetoes: path EPERM, content ENOSPC, lock EPERM; zero events; params dead after the call: ok"

# --- 2. A handler that raises. -----------------------------------------

cat > "$d/boom.py" <<'EOF'
import errno
kept = []
def before_write_file(p):
    if p.file_name == "/b":
        raise RuntimeError("boom in before_write_file")
    if p.file_name == "/c":
        return "yes"                            # no errno: a failure
    if p.file_name == "/d":
        kept.append(p.buffer[:8])               # a slice kept: reported
    return 0
EOF
serve "$d/err2" python="$d/boom.py"
"$py" - <<'EOF' || { cat "$d/err2"; fail "2: deny"; }
from tp import *
h = connect()
b = on_image(off("/b"))
fails(errno.EIO, h.pwrite, b"b" * BS, off("/b"))
fails(errno.EIO, h.pwrite, b"c" * BS, off("/c"))
assert on_image(off("/b")) == b
h.pwrite(b"d" * BS, off("/d"))
h.shutdown()
EOF
stop
cat "$d/err2"
grep -q "RuntimeError: boom in before_write_file" "$d/err2" || fail "2: no traceback"
grep -q 'boom.py", line 5, in before_write_file' "$d/err2" || fail "2: the traceback has no frame"
grep -q "before_write_file: returned str" "$d/err2" || fail "2: the bad return value is not reported"
grep -q "a slice or view of params.buffer was kept past the callback" "$d/err2" ||
    fail "2: a slice of params.buffer kept past the call is not reported"
serve "$d/err2b" python="$d/boom.py" on-handler-error=allow
"$py" - <<'EOF' || { cat "$d/err2b"; fail "2: allow"; }
from tp import *
h = connect()
h.pwrite(b"b" * BS, off("/b"))
h.shutdown()
assert on_image(off("/b")) == b"b" * BS
EOF
stop
grep -q "RuntimeError: boom" "$d/err2b" || fail "2: no traceback with allow"
echo "2 raising handler: EIO + traceback (deny), written (allow): ok"

# --- 3. Handlers that never return. ------------------------------------

cat > "$d/loop.py" <<'EOF'
def before_write_file(p):
    if p.file_name == "/c":
        while True:
            pass
    if p.file_name == "/e":
        while True:
            try:
                sum(range(1000))
            except Exception:           # HandlerTimeout is no Exception
                pass
    return 0
EOF
serve "$d/err3" python="$d/loop.py" python-timeout=1
"$py" - <<'EOF' || { cat "$d/err3"; fail "3: timeout"; }
from tp import *
h = connect()
for f in ("/c", "/e"):
    before, t0 = on_image(off(f)), time.monotonic()
    fails(errno.EIO, h.pwrite, b"L" * BS, off(f))
    took = time.monotonic() - t0
    print(f, "failed after", took)
    assert 0.9 < took < 5, took
    assert on_image(off(f)) == before
h.pwrite(b"D" * BS, off("/d"))                 # still serving
assert on_image(off("/d")) == b"D" * BS
h.shutdown()
EOF
stop
cat "$d/err3"
[ "$(grep -c "fsevent.HandlerTimeout" "$d/err3")" -ge 2 ] || fail "3: no HandlerTimeout reported"
[ "$(grep -c "timed out (python-timeout=1 s)" "$d/err3")" -eq 2 ] || fail "3: not two timeouts"
echo "3 endless handlers: EIO after python-timeout=1, server alive: ok"

# --- 4. Contexts. ------------------------------------------------------

cat > "$d/ctx.py" <<'EOF'
import os
REC = os.environ["REC"]

def rec(*a):
    with open(REC, "a") as f:
        f.write(" ".join(str(x) for x in a) + "\n")

class Ctx:
    def __init__(self, kind, ino, conn=0):
        self.kind, self.ino, self.conn, self.n = kind, ino, conn, 0
    def __del__(self):
        rec("del", self.kind, self.ino, self.conn, self.n)

def after_write_file(p):
    if p.file_context is None:
        p.file_context = Ctx("file", p.ino)
    p.file_context.n += 1
    conn = p.handle_info.connection_id
    if p.handle_context is None:
        p.handle_context = Ctx("handle", p.ino, conn)
    p.handle_context.n += 1
    rec("count", p.file_name, conn, p.file_context.n, p.handle_context.n)

# The kernel case (6): contexts made at create time too.
def after_create_file(p):
    if p.file_context is None:
        p.file_context = Ctx("file", p.ino)
    rec("created", p.file_name, p.ino)

def after_delete_file(p):
    rec("deleted", p.file_name, p.ino)

def close():
    rec("close")
EOF
serve "$d/err4" python="$d/ctx.py"
"$py" - <<'EOF' || { cat "$d/err4"; fail "4: contexts"; }
from tp import *
ia, ib = F["/a"].ino, F["/b"].ino
h = connect()
h.pwrite(b"1" * BS, off("/a"))
h.pwrite(b"2" * BS, off("/a", 1))
h.pwrite(b"3" * BS, off("/b"))
h.shutdown()
# The handle contexts go with the connection, the file contexts stay.
wait_rec("del handle %d 1 2" % ia)
wait_rec("del handle %d 1 1" % ib)
h = connect()
h.pwrite(b"4" * BS, off("/a"))
wait_rec("count /a 2 3 1")
assert not [l for l in rec() if l.startswith("del file")], rec()
h.shutdown()
wait_rec("del handle %d 2 1" % ia)
EOF
stop
cat "$REC"
ia="$(debugfs -R 'stat /a' "$IMG" 2>/dev/null | sed -n 's/^Inode: \([0-9]*\).*/\1/p')"
ib="$(debugfs -R 'stat /b' "$IMG" 2>/dev/null | sed -n 's/^Inode: \([0-9]*\).*/\1/p')"
[ "$(tail -3 "$REC" | sort | paste -sd';')" = "close;del file $ia 0 3;del file $ib 0 1" ] ||
    fail "4: file contexts not released at unload before close()"
[ "$(tail -1 "$REC")" = close ] || fail "4: close() before the file contexts went"
echo "4 contexts: kept across events and connections; handle at close, file at unload: ok"

# --- 5. The examples, raw. ---------------------------------------------

serve "$d/err5" python="$ex/ransomware_guard.py" python.files=3 python.window=60
"$py" - <<'EOF' || { cat "$d/err5"; fail "5: ransomware_guard"; }
from tp import *
rnd = lambda: os.urandom(BS)
text = (b"All work and no play makes Jack a dull boy.\n" * 100)[:BS]
h = connect()
h.pwrite(text, off("/a"))                       # low entropy: not counted
h.pwrite(rnd(), off("/b"))
h.pwrite(rnd(), off("/c"))
h.pwrite(rnd(), off("/c"))                      # the same file again
d = on_image(off("/d"))
fails(errno.EPERM, h.pwrite, rnd(), off("/d"))  # the third file
assert on_image(off("/d")) == d
fails(errno.EPERM, h.pwrite, rnd(), off("/b"))  # and the others now
h.pwrite(text, off("/e"))                       # text still goes
assert on_image(off("/e")) == text
h2 = connect()                                  # another connection
h2.pwrite(rnd(), off("/f"))
h2.shutdown()
h.shutdown()
EOF
stop
grep -q "ransomware_guard: connection 1: /d: entropy 7\.[0-9]*, 3 files in 60 s: denied" "$d/err5" ||
    fail "5: ransomware_guard did not say why"

serve "$d/err5b" python="$ex/marker.py" python.marker=FORBIDDEN python.report="$d/report"
"$py" - <<'EOF' || { cat "$d/err5b"; fail "5: marker.py"; }
from tp import *
h = connect()
h.pwrite(b"a" * BS * 2, off("/a"))
h.pwrite(b"b" * 1000, off("/b"))
fails(errno.EPERM, h.pwrite, b"xxFORBIDDENxx" * 100, off("/c"))
h.shutdown()
EOF
stop
sort "$d/report" | tee "$d/report.sorted"
ia="$(debugfs -R 'stat /a' "$IMG" 2>/dev/null | sed -n 's/^Inode: \([0-9]*\).*/\1/p')"
for f in a b c; do eval "i_$f=\"\$(debugfs -R 'stat /$f' \"\$IMG\" 2>/dev/null | sed -n 's/^Inode: \([0-9]*\).*/\1/p')\""; done
[ "$(cat "$d/report.sorted")" = "$(printf '%s\n' "$i_a 8192 /a" "$i_b 1000 /b" "$i_c 0 /c" | sort)" ] ||
    fail "5: marker.py's report is wrong"
echo "5 examples: ransomware_guard vetoes the 3rd file, marker.py counts and vetoes: ok"

# --- 5b. The filter form: fsevent-python=, fsevent-python.KEY=. ---------

rm -f "$REC" "$SOCK" "$d/pid"
cp "$d/pristine.img" "$IMG"
nbdkit -f -U "$SOCK" -P "$d/pid" --filter="$filter" file "$IMG" \
    fsevent-python="$d/veto.py" fsevent-python.marker=VIA-FILTER \
    </dev/null 2>"$d/err5c" &
for (( i = 0; i < 300; i++ )); do
    [ -s "$d/pid" ] && [ -S "$SOCK" ] && break
    sleep 0.1
done
cleanup_fn "stop_nbdkit '$d/pid'"
"$py" - <<'EOF' || { cat "$d/err5c"; fail "5b: the filter form"; }
from tp import *
h = connect()
fails(errno.EPERM, h.pwrite, b"s" * BS, off("/secret/x"))
fails(errno.ENOSPC, h.pwrite, b"VIA-FILTER" * 400, off("/a"))
h.pwrite(b"fine" * 1024, off("/a"))
h.shutdown()
assert on_image(off("/a")) == b"fine" * 1024
EOF
stop
echo "5b filter form: fsevent-python= and fsevent-python.marker= veto as in the plugin: ok"

# --- 6. A kernel mount: inode freed, audit.py. ---------------------------

if [ "$(id -u)" -ne 0 ] || ! command -v nbdfuse >/dev/null ||
       ! [ -e /dev/fuse ] || ! losetup -f >/dev/null 2>&1; then
    echo "6 kernel mount: skipped (needs root, nbdfuse, /dev/fuse and a loop device)"
    exit 0
fi
mnt="$d/mnt"; fuse="$d/fuse"; sock="$SOCK"
wait_line ()
{
    local i
    for (( i = 0; i < 100; i++ )); do
        grep -qxF "$1" "$REC" 2>/dev/null && return 0
        sleep 0.1
    done
    cat "$REC"
    return 1
}
mkdir -p "$mnt" "$fuse"
rm -f "$REC" "$LOG" "$d/audit.db"
cp "$d/pristine.img" "$IMG"
cleanup_fn guest_down
# A veto on the kernel's path: in-place overwrites of /f are refused.
cat > "$d/kveto.py" <<'EOF'
import errno
def before_write_file(p):
    if p.file_name == "/f" and p.direction == "inplace":
        return errno.EPERM
EOF
guest_up_with "" "$plugin" "$IMG" python="$d/kveto.py" python="$d/ctx.py" \
    python="$ex/audit.py" python.db="$d/audit.db" python.commit=1 log="$LOG"
! dd if=/dev/urandom of="$mnt/f" bs=4096 count=1 conv=notrunc oflag=direct 2>"$d/dd.err" ||
    fail "6: the guest's in-place overwrite of /f was not refused"
cat "$d/dd.err"
echo hello > "$mnt/k"
echo more >> "$mnt/a"
mv "$mnt/b" "$mnt/b2"
sync
ik="$(stat -c %i "$mnt/k")"
wait_line "created /k $ik" || fail "6: no create event for /k"
rm "$mnt/k"
sync
wait_line "del file $ik 0 1" ||
    fail "6: the file context of /k was not released when its inode was freed"
# Its handle context too (the guest's one connection is still open),
# and before the file context.
grep -nE "^del (handle $ik [0-9]+ [1-9][0-9]*|file $ik 0 1)\$" "$REC" > "$d/dels" || :
[ "$(cut -d' ' -f2 "$d/dels" | tr '\n' ' ')" = "handle file " ] || {
    cat "$REC"
    fail "6: the handle context of /k was not released (before its file context) when its inode was freed"
}
grep -qx "deleted /k $ik" "$REC" || fail "6: no delete event"
! grep -qx close "$REC" || fail "6: close() ran already"
guest_down
[ "$nbdkit_rc" = 0 ] || fail "6: nbdkit exited with $nbdkit_rc"
grep -qx close "$REC" || fail "6: close() did not run"
# The image (debugfs, not the plugin) has /f as it was.
debugfs -R "cat /f" "$IMG" 2>/dev/null | cmp - "$d/root/f" ||
    fail "6: the refused overwrite of /f reached the image"
# audit.py's rows are exactly the after-lines of the log.
"$py" - "$d/audit.db" "$d/kveto.py" <<'EOF' || fail "6: the audit database and the log differ"
import json, os, sqlite3, sys
db = sqlite3.connect(sys.argv[1])
rows = sorted(db.execute("SELECT event, file, coalesce(new_file, ''), ino, status, "
                         "coalesce(position, -1), coalesce(length, -1) FROM events"))
L = [json.loads(l) for l in open(os.environ["LOG"])]
ev = sorted((e["event"], e["file"], e.get("new_file", ""), e["ino"],
             e["result"], e.get("position", -1),
             e.get("length", -1) if e["event"] != "write" else e["length"])
            for e in L if e["phase"] == "after")
print(len(rows), "rows,", len(ev), "after-lines")
for r in rows: print("db ", r)
for e in ev: print("log", e)
assert rows == ev
kinds = {r[0] for r in rows}
assert {"create", "write", "rename", "delete"} <= kinds, kinds
assert [r for r in rows if r[0] == "write" and r[1] == "/f" and r[4] == 1], \
    "no after-row with EPERM for the refused write to /f"
# One line per event; the refused write names the python= handler.
assert all(e.get("phase", "after") == "after" for e in L), "a before line"
assert [e for e in L if e["event"] == "write" and e["file"] == "/f"
        and e["result"] == 1 and e.get("by") == "python:" + sys.argv[2]
        and e.get("refused") is True], "no refused write to /f by " + sys.argv[2]
EOF
echo "6 kernel mount: overwrite refused; handle and file contexts released at the inode's delete; audit.db == log: ok"
