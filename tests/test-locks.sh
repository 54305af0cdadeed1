#!/usr/bin/env bash
# tests/test-locks.sh: byte-range locks from host tools (control=,
# fsevent-ctl) against a real kernel mount (nbdfuse + loop) of an ext4
# image.  Each case has its own oracle, independent of the plugin:
#
#  1. A consistent copy under a live guest: a guest loop rewrites
#     /data/file in place (64 KiB O_DIRECT writes, version N is the line
#     "%07d\n" % N repeated), timing each write; the test copies the
#     file with "fsevent-ctl lock ... -- sh -c 'sleep 1; fsevent-ctl cat'"
#     several times.  Each copy must be exactly one version, the one the
#     guest's timestamps say the file had when the lock was taken; a
#     write started while the lock was held must complete only after
#     the unlock, and succeed; after umount debugfs must find the last
#     version written, and e2fsck -fn must be clean.  The log must not
#     show a write to the locked file between the lock and its unlock.
#  2. Shared and exclusive conflicts (byte ranges exact to the byte),
#     --wait's timeout, a waiting lock granted when the holder lets go,
#     --hold processes that go when their lock is unlocked.
#  3. A holder killed with SIGKILL: its lock goes with its connection,
#     and a write it held back (another NBD connection) goes through.
#  4. A locked file renamed in the guest: the lock follows the inode, a
#     guest write under the new name is held back until the unlock, and
#     cat works under the new name (and not under the old one).
#  5. script= refusing a lock (before_lock, exit 1, "EPERM no"): EPERM,
#     no lock, the refusal logged, the handler's arguments as documented.
#     Then, with a before_unlock that takes 1 s, a write held back by the
#     lock must not be decided or logged before the unlock's events.
#  6. lock-mode=fail: a guest write to the locked range fails at once;
#     other ranges and other files are not delayed (timed); the image has
#     exactly the writes that succeeded.  lock-mode=fail must hold
#     whether lock-wait= comes before or after it.
#  7. lock-wait=2: a held-back guest write fails with EIO after about
#     2 s; meanwhile another NBD connection's writes to other files and
#     to other ranges of the same file are not held up (nor the guest's,
#     where the loop device does direct I/O).
#  8. Malformed and oversized control requests (a raw socket client):
#     E2BIG and a close past 4096 bytes, EINVAL for bad numbers, unknown
#     commands and NUL bytes, and the plugin goes on serving; connections
#     from another uid (nobody) are refused, at connect or by the plugin.
#
# Failures that do not stop the other cases (the plugin's own bugs,
# mostly) are reported together at the end.

source ./functions.sh
set -x

requires_root
requires test -e /dev/fuse
requires test -e /dev/loop-control
requires grep -qw ext4 /proc/filesystems
requires nbdkit --version
requires nbdfuse --version
requires fusermount3 -V
requires losetup --version
requires mount --version
requires umount --version
requires mountpoint --version
requires mkfs.ext4 -V
requires debugfs -V
requires e2fsck -V
requires dd --version
requires cmp --version
requires truncate --version
requires sync --version
requires pgrep -V
requires stat --version
requires timeout --version
requires paste --version
requires tee --version
requires runuser --version
requires id nobody
requires awk 'BEGIN { exit 0 }'
[ -f "$plugin" ] || fail "plugin not built: $plugin"
ctl="$top_builddir/tools/fsevent-ctl"
requires test -x "$ctl"
requires_python_nbd
requires runuser -u nobody -- "$py" -c 'import socket'
export DEBUGFS_PAGER=__none__ PAGER=cat

d="$(tmpdir)"
pristine="$d/pristine.img"
summary="$d/summary"
cleanup_fn "echo 'Cases that passed:'; cat '$summary' 2>/dev/null"
passed () { echo "$*" >> "$summary"; }
# A failure that need not stop the other cases: reported at the end.
bugs=()
defer_fail () { echo "DEFERRED FAILURE: $*" >&2; bugs+=("$*"); echo "FAILED: $*" >> "$summary"; }

now () { date +%s.%N; }
# elapsed T0: seconds since T0; between A B LO HI: LO <= B-A <= HI.
elapsed () { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.3f\n", b - a }'; }
between () { awk -v a="$1" -v b="$2" -v lo="$3" -v hi="$4" \
                 'BEGIN { exit !(b - a >= lo && b - a <= hi) }'; }
# le A B: A <= B (as numbers).
le () { awk -v a="$1" -v b="$2" 'BEGIN { exit !(a <= b) }'; }

# --- The image. ---------------------------------------------------------

mkdir -p "$d/root/data"
# /data/file: version 0 of case 1.
yes 0000000 | head -c 65536 > "$d/root/data/file"
for f in a nolock; do echo "$f" > "$d/root/data/$f"; done
head -c 16384 /dev/urandom > "$d/root/data/r"
head -c 65536 /dev/urandom > "$d/root/data/f6"
head -c 16384 /dev/urandom > "$d/root/data/g6"
head -c 65536 /dev/urandom > "$d/root/data/f7"
head -c 16384 /dev/urandom > "$d/root/data/g7"
truncate -s 64M "$pristine"
mkfs.ext4 -q -F -b 4096 -d "$d/root" "$pristine"

# The oracle for inodes and blocks: debugfs on the pristine image.
ino_of () { debugfs -R "stat $1" "$pristine" 2>/dev/null |
                sed -n 's/^Inode: *\([0-9]*\) .*/\1/p'; }
# dev_off PATH BLOCK: the device offset of a file's block.
dev_off ()
{
    local b
    b="$(debugfs -R "bmap $1 $2" "$pristine" 2>/dev/null)"
    [[ $b =~ ^[1-9][0-9]*$ ]] || fail "debugfs cannot map block $2 of $1: $b"
    echo $(( b * 4096 ))
}
for f in file a r; do
    eval "ino_$f=\$(ino_of /data/$f)"
    [ -n "$(eval echo \$ino_$f)" ] || fail "debugfs cannot stat /data/$f"
done
ino_nolock="$(ino_of /data/nolock)"

# A block of new bytes.
blk () { head -c 4096 /dev/urandom > "$d/$1"; }

# --- One guest at a time: serve, attach, mount; take it all down. ------

nbdkit_pid='' fuse_pid='' dev='' mounted='' g=''

# serve NAME [nbdkit parameters]: a fresh copy of the image served with
# control= and log= in a new directory $g (no guest).
serve ()
{
    local i name="$1"
    shift
    g="$(tmpdir)"
    img="$g/disk.img" sock="$g/sock" csock="$g/ctl" log="$g/log"
    mnt="$g/mnt" fuse="$g/fuse"
    mkdir -p "$mnt" "$fuse"
    cp --sparse=always "$pristine" "$img"
    nbdkit -f -v -U "$sock" -P "$g/pid" "$plugin" "$img" \
        control="$csock" log="$log" -D fsevent.check=1 "$@" \
        </dev/null 2>"$g/nbdkit.err" &
    nbdkit_pid=$!
    for (( i = 0; i < 300; i++ )); do
        [ -s "$g/pid" ] && [ -S "$sock" ] && [ -S "$csock" ] && break
        kill -0 $nbdkit_pid 2>/dev/null || break
        sleep 0.1
    done
    [ -S "$csock" ] || { tail -20 "$g/nbdkit.err"; fail "$name: nbdkit did not start"; }
}

# guest_up NAME [nbdkit parameters]: serve, then mount it on $mnt.  The
# loop device uses direct I/O where it can (else a write held back
# holds up every later request of the device in the guest's kernel).
guest_up ()
{
    local i
    serve "$@"
    nbdfuse -P "$g/fuse.pid" "$fuse/nbd" --unix "$sock" \
        </dev/null 2>"$g/nbdfuse.err" &
    fuse_pid=$!
    for (( i = 0; i < 300; i++ )); do
        [ -s "$g/fuse.pid" ] && [ -e "$fuse/nbd" ] && break
        kill -0 $fuse_pid 2>/dev/null || break
        sleep 0.1
    done
    [ -e "$fuse/nbd" ] || { cat "$g/nbdfuse.err"; fail "$1: nbdfuse did not start"; }
    dev="$(losetup --direct-io=on -f --show "$fuse/nbd" 2>/dev/null)" ||
        dev="$(losetup -f --show "$fuse/nbd")"
    [ -b "$dev" ] || fail "$1: losetup did not give a block device: $dev"
    dio="$(losetup -n -O DIO "$dev" | tr -d ' ')"
    mount "$dev" "$mnt" || fail "$1: mount $dev failed"
    mounted=yes
}


# guest_down [cleanup]: unmount, detach, stop nbdfuse and nbdkit,
# whatever state the guest is in; then (unless called at exit, where a
# failure would skip the other cleanups) the server must have exited
# cleanly without failing a model check.
guest_down ()
{
    local i rc=0
    if [ -n "$mounted" ]; then
        umount "$mnt" || { sleep 1; umount "$mnt" || umount -l "$mnt" || :; }
        mounted=
    fi
    if [ -n "$dev" ]; then
        if [ "$(backing "$dev")" = "$fuse/nbd" ]; then losetup -d "$dev" || :; fi
        for (( i = 0; i < 100; i++ )); do
            [ "$(backing "$dev")" = "$fuse/nbd" ] || break
            sleep 0.1
        done
        dev=
    fi
    if [ -n "$fuse_pid" ]; then
        for (( i = 0; i < 50; i++ )); do
            fusermount3 -u "$fuse" 2>/dev/null && break
            mountpoint -q "$fuse" || break
            sleep 0.2
        done
        kill $fuse_pid 2>/dev/null || :
        wait $fuse_pid 2>/dev/null || :
        fuse_pid=
    fi
    if [ -n "$nbdkit_pid" ]; then
        stop_nbdkit "$g/pid"
        wait $nbdkit_pid || rc=$?
        nbdkit_pid=
        [ "${1:-}" != cleanup ] || return 0
        grep -E "model check failed|MODEL CHECK FAILURES|AddressSanitizer|runtime error" \
             "$g/nbdkit.err" && fail "nbdkit reported a model check failure or a crash"
        [ $rc -eq 0 ] || { tail -30 "$g/nbdkit.err"; fail "nbdkit exited with status $rc"; }
    fi
}
cleanup_fn 'guest_down cleanup >/dev/null 2>&1'

# fsck NAME: e2fsck -fn on the image after guest_down must be clean.
fsck ()
{
    e2fsck -fn "$img" > "$g/e2fsck.out" 2>&1 ||
        { cat "$g/e2fsck.out"; fail "$1: e2fsck -fn exits $?"; }
}

# file_on_image PATH OUT: the file's bytes on the stopped image.
file_on_image ()
{
    rm -f "$2"
    debugfs -R "dump $1 $2" "$img" 2>/dev/null
    [ -f "$2" ] || fail "debugfs cannot dump $1"
}

# nolocks WHAT: the plugin holds no lock.
nolocks ()
{
    "$ctl" "$csock" locks > "$g/locks" || fail "$1: fsevent-ctl locks failed"
    [ "$(grep -c . "$g/locks")" -eq 1 ] || { cat "$g/locks"; fail "$1: locks are held"; }
}

# guest_dd NAME SRC FILE BLOCK [dd args]: an in-place O_DIRECT overwrite
# of one 4 KiB block of a file in the guest, in the background; $g/NAME.t0
# and .t1 hold its start and end, .rc its status.
guest_dd ()
{
    local n="$1" src="$2" f="$3" b="$4"
    rm -f "$g/$n".*
    ( now > "$g/$n.t0"
      rc=0
      dd if="$src" of="$mnt$f" bs=4096 count=1 seek="$b" conv=notrunc \
         oflag=direct status=none 2>"$g/$n.err" || rc=$?
      now > "$g/$n.t1"
      echo $rc > "$g/$n.rc" ) &
    eval "pid_${n//[^a-zA-Z0-9]/_}=$!"
}
# dd_done NAME: wait for it; its status in $dd_rc, its time in $dd_took.
dd_done ()
{
    local v="pid_${1//[^a-zA-Z0-9]/_}"
    wait "${!v}" || :
    dd_rc="$(cat "$g/$1.rc")"
    dd_took="$(awk -v a="$(cat "$g/$1.t0")" -v b="$(cat "$g/$1.t1")" \
                   'BEGIN { printf "%.3f", b - a }')"
}

# The raw protocol client (cases 8 and the held-back log check).
cat > "$d/proto.py" <<'EOF'
import errno, socket, sys, time

def connect(path):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(10)
    s.connect(path)
    return s

class Conn:
    def __init__(self, path):
        self.s = connect(path)
        self.buf = b""
    def line(self):
        while b"\n" not in self.buf:
            try:
                b = self.s.recv(65536)
            except ConnectionResetError:
                b = b""
            if not b:
                return None             # closed
            self.buf += b
        l, _, self.buf = self.buf.partition(b"\n")
        return l.decode("utf-8", "replace")
    def reply(self):
        """Every line up to the final OK or ERR line."""
        out = []
        while True:
            l = self.line()
            if l is None:
                return out, None
            if l.startswith("OK") or l.startswith("ERR "):
                return out, l
            out.append(l)
    def ask(self, req):
        self.s.sendall(req if isinstance(req, bytes) else req.encode() + b"\n")
        return self.reply()
    def closed(self):
        """The server closed the connection (within the timeout)."""
        try:
            return self.s.recv(1) == b""
        except ConnectionResetError:
            return True

fails = []
def check(cond, what):
    print(("ok   " if cond else "FAIL ") + what)
    if not cond:
        fails.append(what)

mode, path = sys.argv[1:3]
if mode == "malformed":
    # Over 4096 bytes: E2BIG, and the connection goes.
    c = Conn(path)
    c.s.sendall(b"X" * 4999 + b"\n")
    _, r = c.reply()
    check(r is not None and r.startswith("ERR E2BIG "), "5000-byte line: %r" % r)
    check(c.closed(), "5000-byte line: connection closed")
    c = Conn(path)
    c.s.sendall(b"LOCKS " + b"Y" * 4090 + b"\n")        # 4097 bytes
    _, r = c.reply()
    check(r is not None and r.startswith("ERR E2BIG "), "4097-byte line: %r" % r)
    check(c.closed(), "4097-byte line: connection closed")
    # Exactly 4096 bytes with the newline: a request like any other.
    c = Conn(path)
    _, r = c.ask(b"Z" * 4095 + b"\n")
    check(r == "ERR EINVAL unknown command", "4096-byte line: %r" % r)
    # Bad requests: EINVAL (the connection stays).
    bad = [
        "LOCK x 10 exclusive 0 /data/a",
        "LOCK -1 10 exclusive 0 /data/a",
        "LOCK 0 0 exclusive 0 /data/a",
        "LOCK 0 -2 exclusive 0 /data/a",
        "LOCK 0 1O exclusive 0 /data/a",
        "LOCK 0 10 exclusivex 0 /data/a",
        "LOCK 0 10 Exclusive 0 /data/a",
        "LOCK 0 10 exclusive -2 /data/a",
        "LOCK 0 10 exclusive 1.5 /data/a",
        "LOCK 0 10 exclusive 99999999999 /data/a",
        "LOCK 99999999999999999999 10 exclusive 0 /data/a",
        "LOCK 0 99999999999999999999 exclusive 0 /data/a",
        "LOCK  0 10 exclusive 0 /data/a",
        "LOCK 0 10 exclusive 0",
        "LOCK 0 10 exclusive",
        "LOCK",
        "UNLOCK x",
        "UNLOCK 0",
        "UNLOCK -1",
        "UNLOCK ",
        "UNLOCK 99999999999999999999",
    ]
    c = Conn(path)
    for req in bad:
        _, r = c.ask(req)
        check(r is not None and r.startswith("ERR EINVAL "), "%r: %r" % (req, r))
    for req in ["FROB", "", "lock 0 10 exclusive 0 /data/a", "LOCKS now", " LOCKS"]:
        _, r = c.ask(req)
        check(r == "ERR EINVAL unknown command", "%r: %r" % (req, r))
    for req, e in [("LOCK 0 10 exclusive 0 /data/nope", "ENOENT"),
                   ("LOCK 0 10 exclusive 0 data/a", None),
                   ("UNLOCK 123456", "ENOENT"),
                   ("CAT /data", "EISDIR"),
                   ("CAT /nope", "ENOENT")]:
        _, r = c.ask(req)
        check(r is not None and r.startswith("ERR " + (e + " " if e else "")),
              "%r: %r" % (req, r))
    # Two requests in one write, each answered.
    c.s.sendall(b"STATS\nLOCKS\n")
    out, r = c.reply()
    check(r == "OK" and any(l.startswith("locks 0") for l in out), "pipelined STATS: %r" % out)
    out, r = c.reply()
    check(r == "OK" and out == [], "pipelined LOCKS: %r %r" % (out, r))
    # A NUL byte: EINVAL, and nothing is locked.
    c = Conn(path)
    _, r = c.ask(b"LOCK 0 10 exclusive 0 /data/a\0junk\n")
    check(r is not None and r.startswith("ERR EINVAL "), "NUL byte: %r" % r)
    c = Conn(path)
    _, r = c.ask(b"LOC\0KS\n")
    check(r is not None and r.startswith("ERR EINVAL "), "NUL byte in the command: %r" % r)
    # Still serving, nothing locked.
    c = Conn(path)
    out, r = c.ask("LOCKS")
    check(r == "OK" and out == [], "LOCKS afterwards: %r %r" % (out, r))
    out, r = c.ask("LOCK 0 10 exclusive 0 /data/a")
    check(r is not None and r.startswith("OK ") and r[3:].isdigit(), "a good LOCK afterwards: %r" % r)
    out, r = c.ask("UNLOCK " + r[3:] if r and r.startswith("OK ") else "UNLOCK 1")
    check(r == "OK", "UNLOCK afterwards: %r" % r)
elif mode == "other-user":
    # MUST is "eperm" when connect() must succeed (and so the plugin
    # itself refuse), "any" when EACCES at connect() will do too.
    must = sys.argv[3]
    try:
        c = Conn(path)
    except PermissionError as e:
        print("connect: %s" % e)
        check(must == "any", "refused at connect (EACCES)")
        sys.exit(1 if fails else 0)
    try:
        out, r = c.ask("LOCK 0 -1 exclusive 0 /data/a")
    except (BrokenPipeError, ConnectionResetError) as e:
        out, r = [], c.line()
    check(r is not None and r.startswith("ERR EPERM "), "another uid: %r %r" % (out, r))
    check(c.closed(), "another uid: connection closed")
else:
    sys.exit("unknown mode " + mode)
sys.exit(1 if fails else 0)
EOF

cat > "$d/nbdrw.py" <<'EOF'
# Rewrite OFFSET..+4096 with the bytes already there, through a new NBD
# connection; print how long the write took.  Exit 1 if it failed (and
# print the time and the error all the same).
import nbd, sys, time
h = nbd.NBD()
h.connect_unix(sys.argv[1])
off = int(sys.argv[2])
buf = h.pread(4096, off)
t0 = time.time()
try:
    h.pwrite(buf, off)
except nbd.Error as e:
    print("%.3f %s" % (time.time() - t0, e))
    sys.exit(1)
print("%.3f" % (time.time() - t0))
h.shutdown()
EOF

# ======================================================================
# Guest A: cases 1-4 and 8, with the default lock-wait (30 s).
# ======================================================================
guest_up A
[ "$(stat -c %a "$csock")" = 600 ] || fail "the control socket is not mode 0600"

# --- Case 1: consistent copies under a live guest. --------------------

cat > "$d/writer.py" <<'EOF'
# The guest: rewrite FILE in place, 64 KiB O_DIRECT writes, version N
# being "%07d\n" % N repeated, until STOP exists.  One line per write:
# VERSION START END ERRNO (0: written whole).
import mmap, os, sys, time
path, out, stop = sys.argv[1:4]
fd = os.open(path, os.O_WRONLY | os.O_DIRECT)
buf = mmap.mmap(-1, 65536)
f = open(out, "w", buffering=1)
v = 0
while not os.path.exists(stop):
    v += 1
    buf[:] = (b"%07d\n" % v) * 8192
    t0 = time.time()
    try:
        err = 0 if os.pwrite(fd, buf, 0) == 65536 else -1
    except OSError as e:
        err = e.errno
    t1 = time.time()
    f.write("%d %.6f %.6f %d\n" % (v, t0, t1, err))
    time.sleep(0.005)
EOF

"$py" "$d/writer.py" "$mnt/data/file" "$d/writes" "$d/stop" &
writer_pid=$!
cleanup_fn "touch '$d/stop'; kill $writer_pid 2>/dev/null"
for (( i = 0; i < 100; i++ )); do
    [ -s "$d/writes" ] && [ "$(grep -c . "$d/writes")" -ge 5 ] && break
    sleep 0.1
done
[ "$(grep -c . "$d/writes")" -ge 5 ] || fail "case 1: the guest's writer does not write"

copies=5
for (( i = 1; i <= copies; i++ )); do
    c="$d/copy$i"
    mkdir -p "$c"
    rc=0
    now > "$c/req"
    "$ctl" "$csock" lock /data/file -- sh -c \
        'date +%s.%N > "$1/in"; sleep 1; "$2" "$3" cat /data/file > "$1/copy"; echo $? > "$1/cat.rc"; date +%s.%N > "$1/out"' \
        sh "$c" "$ctl" "$csock" || rc=$?
    now > "$c/exit"
    [ $rc -eq 0 ] || fail "case 1: fsevent-ctl lock ... cat exits $rc"
    [ "$(cat "$c/cat.rc")" = 0 ] || fail "case 1: fsevent-ctl cat exits $(cat "$c/cat.rc")"
    sleep 0.3
done
touch "$d/stop"
wait $writer_pid || fail "case 1: the guest's writer failed"
nolocks "case 1"

cat > "$d/check_copies.py" <<'EOF'
import json, sys
d, copies, ino, logf = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
W = []
for l in open(d + "/writes"):
    v, t0, t1, err = l.split()
    W.append((int(v), float(t0), float(t1), int(err)))
bad = [w for w in W if w[3] != 0]
assert not bad, ("guest writes failed", bad)
print("%d guest writes, %.1f ms each (median)" %
      (len(W), 1000 * sorted(w[2] - w[1] for w in W)[len(W) // 2]))
def version(b):
    line = b[:8]
    assert len(b) == 65536 and line * 8192 == b and line[7:] == b"\n" and \
        line[:7].isdigit(), "not one whole version"
    return int(line[:7])
for i in range(1, copies + 1):
    c = "%s/copy%d/" % (d, i)
    t_req, t_in, t_out, t_exit = (float(open(c + n).read())
                                  for n in ("req", "in", "out", "exit"))
    try:
        v = version(open(c + "copy", "rb").read())
    except AssertionError as e:
        raise AssertionError("copy %d: %s" % (i, e))
    assert v == 0 or any(w[0] == v for w in W), ("copy %d: version %d never written" % (i, v))
    # The lock was granted between t_req and t_in: the writer, which
    # writes one version after the other, blocks in the first write that
    # reaches the plugin after that and stays blocked until the unlock
    # (after t_out).  So the copy must be the last version written before
    # t_out, the next one must be the held one, and no write may end
    # between the grant (plus 300 ms for one in flight then, on a loaded
    # machine) and t_out.
    done = [w for w in W if w[2] < t_out]
    want = max([w[0] for w in done] or [0])
    under = [w for w in done if w[2] > t_in + 0.3]
    held = [w for w in W if w[1] < t_out <= w[2]]
    if v != want or under or len(held) != 1 or held[0][0] != want + 1:
        print("copy %d: version %d; lock asked %.3f, held %.3f..%.3f, "
              "fsevent-ctl exit %.3f; writes around:" % (i, v, t_req, t_in, t_out, t_exit))
        for w in W:
            if t_req - 0.05 < w[2] and w[1] < t_exit + 3:
                print("  v%d %.3f..%.3f err %d" % w)
    assert v == want, ("copy %d: version %d, but version %d was the last "
                       "written before the unlock" % (i, v, want))
    assert not under, ("copy %d: writes done under the lock" % i, under)
    assert len(held) == 1 and held[0][0] == want + 1, \
        ("copy %d: the writer was not held at the unlock" % i, held)
    h = held[0]
    assert h[2] <= t_exit + 2, ("copy %d: version %d held until %.3f, "
                                "%.3f s after the unlock" % (i, h[0], h[2], h[2] - t_exit))
    print("copy %d: version %d; version %d held back %.3f s, done %.3f s after "
          "the command ended" % (i, v, h[0], h[2] - h[1], h[2] - t_out))
last = max(w[0] for w in W)
print("LAST", last)

# The log (one line per event): every lock and unlock; no write to the
# file between a lock and its unlock.  A write in flight when the lock
# was asked for is logged before the lock's line (the lock waits until
# every request in flight is done and logged); the writes it held back
# are logged after the unlock's line (the unlock's events come before
# the lock goes).
evs = [json.loads(l) for l in open(logf)]
assert [e["seq"] for e in evs] == list(range(1, len(evs) + 1)), "seq"
assert all(e.get("phase", "after") == "after" for e in evs), "a before line"
granted = [e for e in evs if e["event"] == "lock" and e["phase"] == "after"
           and e["ino"] == ino and e["result"] == 0]
unlocked = [e for e in evs if e["event"] == "unlock" and e["phase"] == "after"
            and e["ino"] == ino]
assert len(granted) == copies and len(unlocked) == copies, (len(granted), len(unlocked))
wrong = []
for g in granted:
    u = [e for e in unlocked if e["lock_id"] == g["lock_id"]]
    assert len(u) == 1, ("lock %d: unlock lines" % g["lock_id"], u)
    inside = [e for e in evs if g["seq"] < e["seq"] < u[0]["seq"] and
              e["event"] == "write" and e.get("ino") == ino]
    if inside:
        wrong.append("lock %d (seq %d..%d): %s" % (
            g["lock_id"], g["seq"], u[0]["seq"],
            ", ".join("seq %d %s %s" % (e["seq"], e["phase"], e["time"]) for e in inside)))
for w in wrong:
    print("LOG-ORDER", w)
EOF
"$py" "$d/check_copies.py" "$d" $copies "$ino_file" "$log" > "$d/copies.out" 2>&1 ||
    { cat "$d/copies.out"; fail "case 1: the copies or the log are wrong"; }
cat "$d/copies.out"
last="$(sed -n 's/^LAST //p' "$d/copies.out")"
if grep -q '^LOG-ORDER' "$d/copies.out"; then
    defer_fail "case 1: the log shows a held-back write to the locked file before the unlock that released it: $(sed -n 's/^LOG-ORDER //p' "$d/copies.out" | paste -sd ';' -)"
fi

# --- Case 2: conflicts. ------------------------------------------------

# lock_fails WHAT ERRNAME LOCK-ARGS: fsevent-ctl lock must exit 1 with
# ERRNAME in its message, having run nothing.
lock_fails ()
{
    local what="$1" en="$2" rc=0
    shift 2
    rm -f "$g/ran"
    "$ctl" "$csock" lock "$@" -- touch "$g/ran" 2>"$g/err" || rc=$?
    cat "$g/err"
    [ $rc -eq 1 ] || fail "case 2: $what: exit $rc, not 1"
    grep -q "$en" "$g/err" || fail "case 2: $what: no $en in the message"
    ! [ -e "$g/ran" ] || fail "case 2: $what: the command ran"
}
lock_ok ()
{
    local what="$1" rc=0
    shift
    rm -f "$g/ran"
    "$ctl" "$csock" lock "$@" -- touch "$g/ran" || rc=$?
    [ $rc -eq 0 ] && [ -e "$g/ran" ] || fail "case 2: $what: exit $rc"
}
s1="$("$ctl" "$csock" lock /data/a --shared --hold)" || fail "case 2: shared lock 1"
s2="$("$ctl" "$csock" lock /data/a --shared --hold)" || fail "case 2: shared lock 2"
"$ctl" "$csock" locks | tee "$g/locks"
[ "$(awk -v i="$ino_a" '$2 == i && $3 == 0 && $4 == "eof" && $5 == "shared"' "$g/locks" |
     wc -l)" -eq 2 ] || fail "case 2: locks does not list the two shared locks"
lock_ok "a third shared lock" /data/a --shared -n
t0="$(now)"
lock_fails "exclusive vs shared, -n" EAGAIN /data/a --fail-immediately
lock_fails "exclusive vs shared, -n, a small range" EAGAIN /data/a --offset 1 --length 1 -n
between "$t0" "$(now)" 0 5 || fail "case 2: -n did not fail at once"
"$ctl" "$csock" unlock "$s1"
"$ctl" "$csock" unlock "$s2"
nolocks "case 2"
# The --hold processes hear of it and go.
for (( i = 0; i < 50; i++ )); do
    pgrep -f "$csock lock /data/a --shared --hold" > /dev/null || break
    sleep 0.1
done
! pgrep -af "$csock lock /data/a --shared --hold" ||
    fail "case 2: a --hold process outlived its lock"
x="$("$ctl" "$csock" lock /data/a --offset 4096 --length 4096 --hold)" ||
    fail "case 2: exclusive lock of 4096+4096"
lock_fails "shared vs exclusive, -n" EAGAIN /data/a --shared -n
lock_fails "exclusive vs exclusive, -n, overlapping by a byte" EAGAIN \
           /data/a --offset 8191 --length 1 -n
lock_fails "exclusive vs exclusive, -n, to EOF" EAGAIN /data/a --offset 100 -n
lock_ok "the bytes before the range" /data/a --offset 0 --length 4096 -n
lock_ok "the bytes after the range" /data/a --offset 8192 --length 4096 -n
lock_ok "another file" /data/r -n
t0="$(now)"
lock_fails "--wait 1.5" ETIMEDOUT /data/a --wait 1.5
took="$(elapsed "$t0")"
between "$t0" "$(now)" 1.4 6 || fail "case 2: --wait 1.5 timed out after $took s"
# A waiting lock gets it when the holder lets go.
rm -f "$g/got"
"$ctl" "$csock" lock /data/a --shared -- sh -c "date +%s.%N > '$g/got'" &
waiter=$!
sleep 1
! [ -e "$g/got" ] && kill -0 $waiter || fail "case 2: the waiting lock did not wait"
t_unlock="$(now)"
"$ctl" "$csock" unlock "$x"
wait $waiter || fail "case 2: the waiting lock failed ($?)"
between "$t_unlock" "$(cat "$g/got")" 0 5 ||
    fail "case 2: the waiting lock came $(cat "$g/got") - $t_unlock after the unlock"
nolocks "case 2"
passed "2 conflicts: shared+shared ok; exclusive vs any EAGAIN at once; ranges exact to the byte; --wait 1.5 ETIMEDOUT after $took s; waiter granted at the unlock"

# --- Case 3: a holder killed with SIGKILL. -----------------------------

"$ctl" "$csock" lock /data/a -- sleep 100 &
holder=$!
for (( i = 0; i < 50; i++ )); do
    "$ctl" "$csock" locks | grep -q " exclusive /data/a" && break
    sleep 0.1
done
"$ctl" "$csock" locks | grep -q " exclusive /data/a" || fail "case 3: the lock was not taken"
lock_fails "while the holder lives" EAGAIN /data/a -n
# A write held back by it (another NBD connection rewriting the block of
# /data/a with its own bytes) must go through once the holder is gone.
"$py" "$d/nbdrw.py" "$sock" "$(dev_off /data/a 0)" > "$g/rw3.out" 2>&1 &
rw=$!
sleep 0.5
kill -0 $rw 2>/dev/null || { cat "$g/rw3.out"; fail "case 3: the NBD write to /data/a was not held back"; }
child="$(pgrep -P $holder sleep)" || :
kill -9 $holder
wait $holder 2>/dev/null || :
t0="$(now)"
wait $rw || { cat "$g/rw3.out"; fail "case 3: the held-back NBD write failed after the kill"; }
rw_after="$(elapsed "$t0")"
le "$rw_after" 1 || fail "case 3: the held-back write ended $rw_after s after the kill"
for (( i = 0; i < 50; i++ )); do
    [ "$("$ctl" "$csock" locks | grep -c .)" -eq 1 ] && break
    sleep 0.1
done
took="$(elapsed "$t0")"
[ -z "$child" ] || kill $child 2>/dev/null || :
nolocks "case 3 (after kill -9 of the holder)"
lock_ok "exclusive after the holder died" /data/a -n
"$py" - "$log" "$ino_a" <<'EOF' || fail "case 3: no unlock line for the killed holder's lock"
import json, sys
evs = [json.loads(l) for l in open(sys.argv[1])]
ino = int(sys.argv[2])
got = [e for e in evs if e["event"] == "lock" and e["phase"] == "after"
       and e["ino"] == ino and e["exclusive"] and e["length"] == -1
       and not e["fail_immediately"] and e["result"] == 0]
for g in got:
    assert any(e["event"] == "unlock" and e.get("lock_id") == g["lock_id"]
               for e in evs), g
EOF
passed "3 SIGKILLed holder: lock gone ${took} s after the kill, the write it held back done ${rw_after} s after, exclusive -n then ok"

# --- Case 4: a locked file renamed in the guest. -----------------------

blk new-r
id="$("$ctl" "$csock" lock /data/r --hold)" || fail "case 4: lock /data/r"
t0="$(now)"
mv "$mnt/data/r" "$mnt/data/r2"
sync -f "$mnt"
between "$t0" "$(now)" 0 5 || fail "case 4: the rename was held up"
"$ctl" "$csock" locks | tee "$g/locks"
awk -v id="$id" -v i="$ino_r" '$1 == id && $2 == i { f = 1 } END { exit !f }' "$g/locks" ||
    fail "case 4: locks does not show lock $id on inode $ino_r after the rename"
guest_dd r4 "$d/new-r" /data/r2 1
sleep 1.5
! [ -e "$g/r4.t1" ] || fail "case 4: the write to the renamed file was not held back"
t_unlock="$(now)"
"$ctl" "$csock" unlock "$id"
dd_done r4
[ "$dd_rc" = 0 ] || { cat "$g/r4.err"; fail "case 4: the held-back write failed"; }
le "$t_unlock" "$(cat "$g/r4.t1")" || fail "case 4: the write ended before the unlock"
between "$t_unlock" "$(cat "$g/r4.t1")" 0 5 || fail "case 4: the write ended long after the unlock"
"$ctl" "$csock" cat /data/r2 > "$d/r2.cat" || fail "case 4: cat /data/r2"
cat "$d/root/data/r" > "$d/r2.want"
dd if="$d/new-r" of="$d/r2.want" bs=4096 seek=1 conv=notrunc status=none
cmp "$d/r2.want" "$d/r2.cat" || fail "case 4: cat /data/r2 is not the file as written"
if "$ctl" "$csock" cat /data/r > /dev/null 2>"$g/err"; then
    fail "case 4: cat of the old name still works"
fi
grep -q ENOENT "$g/err" || fail "case 4: cat of the old name: not ENOENT"
passed "4 rename: lock follows inode $ino_r; write to the new name held ${dd_took} s, done $(awk -v a="$t_unlock" -v b="$(cat "$g/r4.t1")" 'BEGIN{printf "%.3f", b-a}') s after the unlock; cat /data/r2 right, /data/r ENOENT"

# --- Case 8: malformed requests, other users. -------------------------

"$py" "$d/proto.py" malformed "$csock" > "$d/proto.out" 2>&1 || :
cat "$d/proto.out"
grep -q '^ok   UNLOCK afterwards' "$d/proto.out" || fail "case 8: the raw client did not finish"
! grep -q '^FAIL' "$d/proto.out" ||
    defer_fail "case 8: the control socket mishandles requests: $(sed -n 's/^FAIL //p' "$d/proto.out" | paste -sd ';' -)"
nolocks "case 8"
"$ctl" "$csock" stats | grep -q '^locks 0$' || fail "case 8: stats"
# As nobody, first as things are (the socket is 0600 in a 0700 directory),
# then with the way open, so that the plugin's own check is what refuses.
# (proto.py comes on stdin: nobody cannot read the test's directory.)
lines_before="$(grep -c '"event":"lock"' "$log")"
runuser -u nobody -- "$py" - other-user "$csock" any < "$d/proto.py" ||
    fail "case 8: a connection from nobody was not refused"
chmod 0711 "$_testdir" "$g"
chmod 0666 "$csock"
rc=0
runuser -u nobody -- "$py" - other-user "$csock" eperm < "$d/proto.py" || rc=$?
chmod 0700 "$_testdir" "$g"
chmod 0600 "$csock"
[ $rc -eq 0 ] || fail "case 8: the plugin let a connection from nobody through"
nolocks "case 8 (nobody)"
[ "$(grep -c '"event":"lock"' "$log")" -eq "$lines_before" ] ||
    fail "case 8: a lock request from nobody reached the handlers"
# The guest still works.
echo after > "$mnt/data/after"
sync -f "$mnt" || fail "case 8: the guest cannot sync any more"
[ "$("$ctl" "$csock" cat /data/after)" = after ] || fail "case 8: cat /data/after"
passed "8 malformed: $(grep -c '^ok' "$d/proto.out") checks ok, $(grep -c '^FAIL' "$d/proto.out") failed (over-long lines closed at 4097 and 5000 bytes, 4096 accepted, bad numbers/unknown/NUL EINVAL), plugin keeps serving; nobody refused (EACCES at connect; ERR EPERM with the socket opened up)"

guest_down
file_on_image /data/file "$d/final"
cmp <(yes "$(printf %07d "$last")" | head -c 65536) "$d/final" ||
    fail "case 1: /data/file on the image is not version $last, the last written"
file_on_image /data/r2 "$d/r2.final"
cmp "$d/r2.want" "$d/r2.final" || fail "case 4: /data/r2 on the image"
fsck "guest A"
passed "1 copies: $(grep -c '^copy' "$d/copies.out") consistent copies under $(sed -n 's/ guest writes.*//p' "$d/copies.out") guest writes; writes under the lock held until the unlock; image = last version $last; e2fsck clean"
sed -n 's/^copy/  copy/p' "$d/copies.out" >> "$summary"

# ======================================================================
# Case 5: a handler refuses a lock (no guest needed).
# ======================================================================
cat > "$d/handler.sh" <<EOF
#!/bin/sh
echo "\$*" >> '$d/calls'
case "\$1:\$2" in
    before_lock:/data/nolock) echo "EPERM no" >&2; exit 1 ;;
    before_unlock:/data/r) sleep 1; echo "\$* done" >> '$d/calls' ;;
esac
exit 2
EOF
chmod +x "$d/handler.sh"
serve E script="$d/handler.sh"
rc=0
"$ctl" "$csock" lock /data/nolock -n -- touch "$g/ran" 2>"$g/err" || rc=$?
cat "$g/err"
[ $rc -eq 1 ] || fail "case 5: the refused lock exits $rc"
grep -q EPERM "$g/err" || fail "case 5: the refusal is not EPERM"
! [ -e "$g/ran" ] || fail "case 5: the command ran"
nolocks "case 5"
"$ctl" "$csock" lock /data/a --shared --offset 4096 --length 100 -- true ||
    fail "case 5: a lock the handler lets through failed"
cat "$d/calls"
grep -qx "before_lock /data/nolock $ino_nolock 0 -1 exclusive fail_immediately" "$d/calls" ||
    fail "case 5: before_lock of /data/nolock not called as documented"
grep -qx "after_lock /data/nolock $ino_nolock 0 -1 exclusive fail_immediately EPERM" "$d/calls" ||
    fail "case 5: after_lock of /data/nolock without the EPERM status"
grep -qx "before_lock /data/a $ino_a 4096 100 shared wait" "$d/calls" ||
    fail "case 5: before_lock of /data/a not called as documented"
! grep -q "unlock /data/nolock" "$d/calls" || fail "case 5: an unlock of the refused lock"
# The unlock's events and the guest writes it releases: a write held
# back by the lock (another NBD connection rewriting a block of /data/r
# with its own bytes) must not be decided, nor logged, before the
# unlock's before phase (here a handler that takes 1 s).
id="$("$ctl" "$csock" lock /data/r --hold)" || fail "case 5: lock /data/r"
"$py" "$d/nbdrw.py" "$sock" "$(dev_off /data/r 0)" > "$g/nbdrw.out" &
rw=$!
sleep 0.5
kill -0 $rw 2>/dev/null || fail "case 5: the NBD write to /data/r was not held back"
"$ctl" "$csock" unlock "$id"
wait $rw || fail "case 5: the NBD write to /data/r failed"
grep -n "/data/r " "$d/calls"
"$py" - "$log" "$ino_r" "$id" > "$g/order.out" <<'EOF' || :
import json, sys
evs = [json.loads(l) for l in open(sys.argv[1])]
ino, lid = int(sys.argv[2]), int(sys.argv[3])
u = [e["seq"] for e in evs if e["event"] == "unlock" and e.get("lock_id") == lid]
w = [e["seq"] for e in evs if e["event"] == "write" and e["ino"] == ino]
assert u and w, (u, w)
print("unlock lines at seq %s, the released write's line at seq %s" % (u, w))
if min(w) < min(u):
    print("WRONG ORDER")
EOF
cat "$g/order.out"
grep -q "^unlock lines" "$g/order.out" || fail "case 5: no unlock or write lines in the log"
if grep -q "WRONG ORDER" "$g/order.out"; then
    defer_fail "case 5: the write released by an unlock is logged (and decided) before the unlock's own events, while before_unlock still runs: $(head -1 "$g/order.out"); handler calls: $(grep "/data/r " "$d/calls" | awk '{ print $1, $2, $NF }' | paste -sd ';' -)"
    order5="WRONG ORDER"
else
    order5="unlock logged before the write it released"
fi
stop_nbdkit "$g/pid"
wait $nbdkit_pid || fail "case 5: nbdkit exited with status $?"
nbdkit_pid=
"$py" - "$log" "$ino_nolock" "$d/handler.sh" <<'EOF' || fail "case 5: the log"
import json, sys
evs = [json.loads(l) for l in open(sys.argv[1])]
ino = int(sys.argv[2])
mine = [e for e in evs if e.get("file") == "/data/nolock"]
print(mine)
# One line: the lock's outcome, and who refused it.
assert [(e["event"], e["phase"], e["ino"], e["result"], e.get("error"),
         "lock_id" in e, e.get("by"), e.get("refused"))
        for e in mine] == [("lock", "after", ino, 1, "EPERM", False,
                            "script:" + sys.argv[3], True)], mine
EOF
passed "5 script refusal: fsevent-ctl exit 1 EPERM, no lock, handler args as documented, one log line EPERM by script:PATH; slow before_unlock: $order5"

# ======================================================================
# Case 6: lock-mode=fail.
# ======================================================================
guest_up F lock-mode=fail
for b in x y z w v gg; do blk "$b"; done
id="$("$ctl" "$csock" lock /data/f6 --offset 0 --length 16K --hold)" || fail "case 6: lock"
notes=
# t_dd NAME WANT-RC SRC FILE BLOCK: one guest write, at most 1 s.
t_dd ()
{
    guest_dd "$1" "$3" "$4" "$5"
    dd_done "$1"
    cat "$g/$1.err"
    [ "$dd_rc" "$2" 0 ] || fail "case 6: $1 ($4 block $5): exit $dd_rc"
    le "$dd_took" 1 || fail "case 6: $1 ($4 block $5) took $dd_took s"
    notes+="$1 $dd_took s; "
}
t_dd in-range-0 -ne "$d/x" /data/f6 0
grep -q "Input/output error" "$g/in-range-0.err" || fail "case 6: not EIO"
t_dd in-range-2 -ne "$d/y" /data/f6 2
t_dd past-range -eq "$d/z" /data/f6 4
t_dd further -eq "$d/w" /data/f6 8
t_dd other-file -eq "$d/gg" /data/g6 0
"$ctl" "$csock" unlock "$id"
t_dd after-unlock -eq "$d/v" /data/f6 2
guest_down
file_on_image /data/f6 "$d/f6.final"
cp "$d/root/data/f6" "$d/f6.want"
dd if="$d/v" of="$d/f6.want" bs=4096 seek=2 conv=notrunc status=none
dd if="$d/z" of="$d/f6.want" bs=4096 seek=4 conv=notrunc status=none
dd if="$d/w" of="$d/f6.want" bs=4096 seek=8 conv=notrunc status=none
cmp "$d/f6.want" "$d/f6.final" || fail "case 6: /data/f6 on the image"
file_on_image /data/g6 "$d/g6.final"
cmp <(cat "$d/gg"; tail -c +4097 "$d/root/data/g6") "$d/g6.final" ||
    fail "case 6: /data/g6 on the image"
fsck "case 6"
passed "6 lock-mode=fail: ${notes}image right, e2fsck clean"

# lock-mode=fail does not depend on where lock-wait= is: a held write
# fails at once either way (another NBD connection, no guest).
for args in "lock-wait=5 lock-mode=fail" "lock-mode=fail lock-wait=5"; do
    serve "F2 $args" $args
    id="$("$ctl" "$csock" lock /data/f6 --hold)" || fail "case 6 ($args): lock"
    rc=0
    out="$(timeout 20 "$py" "$d/nbdrw.py" "$sock" "$(dev_off /data/f6 0)" 2>&1)" || rc=$?
    echo "$args: $out"
    [ $rc -eq 1 ] && [[ $out = *EIO* ]] || fail "case 6 ($args): the held write did not fail with EIO: $out"
    t="${out%% *}"
    if le "$t" 1; then
        notes6b+="$args: EIO in $t s; "
    else
        defer_fail "case 6: with '$args' a write to a locked range waits $t s before EIO: lock-mode=fail is lost when lock-wait= comes after it"
        notes6b+="$args: EIO after $t s (WRONG); "
    fi
    stop_nbdkit "$g/pid"
    wait $nbdkit_pid || fail "case 6 ($args): nbdkit exited with status $?"
    nbdkit_pid=
done
passed "6 parameter order: $notes6b"

# ======================================================================
# Case 7: lock-wait=2.
# ======================================================================
guest_up G lock-wait=2
blk x7; blk v7; blk g7new
id="$("$ctl" "$csock" lock /data/f7 --offset 0 --length 16K --hold)" || fail "case 7: lock"
guest_dd held "$d/x7" /data/f7 1
sleep 0.5
! [ -e "$g/held.t1" ] || fail "case 7: the write was not held back"
# Meanwhile: other files and other ranges, by another NBD connection...
for w in "/data/f7 8" "/data/g7 1" "/data/f7 4"; do
    set -- $w
    t="$(timeout 5 "$py" "$d/nbdrw.py" "$sock" "$(dev_off $1 $2)")" ||
        fail "case 7: NBD write to $1 block $2 failed or hung while a write was held"
    le "$t" 0.5 || fail "case 7: NBD write to $1 block $2 took $t s while a write was held"
    notes7+="nbd $1 block $2 ${t} s; "
done
# ... and by the guest (the loop device must not serialize: DIO).
if [ "$dio" = 1 ]; then
    guest_dd other "$d/g7new" /data/g7 0
    dd_done other
    [ "$dd_rc" = 0 ] && le "$dd_took" 1 ||
        fail "case 7: the guest's write to /data/g7 (exit $dd_rc) took $dd_took s while a write was held"
    notes7+="guest /data/g7 ${dd_took} s; "
fi
! [ -e "$g/held.t1" ] || fail "case 7: the held write ended too early"
dd_done held
cat "$g/held.err"
[ "$dd_rc" != 0 ] || fail "case 7: the held write succeeded under the lock"
grep -q "Input/output error" "$g/held.err" || fail "case 7: the held write did not fail with EIO"
awk -v t="$dd_took" 'BEGIN { exit !(t >= 1.8 && t <= 4) }' ||
    fail "case 7: the held write failed after $dd_took s, not about 2"
held_took="$dd_took"
grep -q "still held after lock-wait" "$g/nbdkit.err" || fail "case 7: no lock-wait error from nbdkit"
"$ctl" "$csock" locks | grep -q " /data/f7$" || fail "case 7: the lock went"
"$ctl" "$csock" unlock "$id"
guest_dd after "$d/v7" /data/f7 1
dd_done after
[ "$dd_rc" = 0 ] || fail "case 7: the write after the unlock failed"
guest_down
file_on_image /data/f7 "$d/f7.final"
cp "$d/root/data/f7" "$d/f7.want"
dd if="$d/v7" of="$d/f7.want" bs=4096 seek=1 conv=notrunc status=none
cmp "$d/f7.want" "$d/f7.final" || fail "case 7: /data/f7 on the image"
file_on_image /data/g7 "$d/g7.final"
if [ "$dio" = 1 ]; then
    cmp <(cat "$d/g7new"; tail -c +4097 "$d/root/data/g7") "$d/g7.final" ||
        fail "case 7: /data/g7 on the image"
else
    cmp "$d/root/data/g7" "$d/g7.final" || fail "case 7: /data/g7 on the image"
fi
fsck "case 7"
passed "7 lock-wait=2: held write EIO after ${held_took} s; meanwhile ${notes7}image right, e2fsck clean"

# Nothing left behind.
! losetup -a | grep -q "$d" || fail "loop device left behind"
[ ${#bugs[@]} -eq 0 ] || fail "${#bugs[@]} deferred failure(s): $(printf '%s\n' "${bugs[@]}")"
echo "PASS: $0"
