#!/usr/bin/env bash
# tests/test-script-handler.sh: script=PATH, the handler in any language.
# Small scripts in the test directory record what they are given (the
# arguments, a checksum of stdin, the FSEVENT_* environment) or answer
# allow, deny, not handled, fail or hang; libnbd clients check what
# reaches them and the image file what reaches the disk.

source ./functions.sh
set -x

requires nbdkit --version
requires mke2fs -V
requires debugfs -V
requires cmp --version
requires sha256sum --version
requires pgrep -V
[ -f "$plugin" ] || fail "plugin not built: $plugin"

requires_python_nbd

tmp="$(tmpdir)"
export TMP="$tmp"
export IMG="$tmp/disk.img"
export SOCK="$tmp/sock"
export LOG="$tmp/events.jsonl"
export REC="$tmp/record"
export PYTHONPATH="$tmp:$top_srcdir/tests"
pid="$tmp/pid"

# /a: 3 blocks + 100 bytes, also called /dir/a-link; /b: one block.
mkdir -p "$tmp/root/dir"
head -c $((3*4096 + 100)) /dev/urandom > "$tmp/root/a"
head -c 4096 /dev/urandom > "$tmp/root/b"
ln "$tmp/root/a" "$tmp/root/dir/a-link"
mkfs_image "$tmp/pristine.img" 32M -t ext4 -b 4096 -d "$tmp/root"

# --- The scripts. ------------------------------------------------------

# Allows everything and records each call: its arguments, the sha256 of
# its stdin and its environment.
cat > "$tmp/record.sh" <<EOF
#!/usr/bin/env bash
sum=\$(sha256sum | cut -d' ' -f1)
printf '%s|%s|%s|%s|%s|%s|%s\n' "\$*" "\$sum" "\$FSEVENT_OPERATION" \\
    "\${FSEVENT_PATHS//\$'\n'/,}" "\$FSEVENT_CONNECTION" \\
    "\${FSEVENT_EXPORT_NAME-unset}" "\$FSEVENT_PARTITION" >> '$REC'
exit 0
EOF
# Denies before_write with the errno name and message in $tmp/deny;
# records after_write's STATUS.
cat > "$tmp/deny.sh" <<EOF
#!/usr/bin/env bash
if [ "\$1" = before_write ]; then
    cat '$tmp/deny' >&2
    exit 1
fi
echo "\$*" >> '$REC'
exit 0
EOF
# Exits with the status in $tmp/status (or dies by SIGKILL).
cat > "$tmp/status.sh" <<EOF
#!/usr/bin/env bash
echo "\$1" >> '$REC'
s=\$(cat '$tmp/status')
[ "\$s" = kill ] && kill -KILL \$\$
echo "exiting with \$s" >&2
exit \$s
EOF
# Hangs in before_write, in a child process with a name of its own.
sleeper="$tmp/fsevent-sleep-$$-$RANDOM"
ln -s "$(command -v sleep)" "$sleeper"
cat > "$tmp/hang.sh" <<EOF
#!/usr/bin/env bash
[ "\$1" = before_write ] && '$sleeper' 30
exit 0
EOF
chmod +x "$tmp"/*.sh

# --- Python helpers. ---------------------------------------------------

cat > "$tmp/fsev_sh.py" <<'EOF'
import errno, hashlib, json, os, re, subprocess, time
import nbd

IMG, SOCK, LOG, REC = (os.environ[k] for k in ("IMG", "SOCK", "LOG", "REC"))
BS = 4096

from debugfs_oracle import debugfs as _debugfs, file_info as _file_info

def debugfs(cmd):
    return _debugfs(IMG, cmd)

def file_info(path):
    return _file_info(IMG, path, BS)

A, B = file_info("/a"), file_info("/b")
assert A.names == ["/a", "/dir/a-link"] and len(A.blocks) == 4
assert len(B.blocks) == 1

def dev(f, lblk, within=0):
    return f.blocks[lblk] * BS + within

LAST = None                     # the latest connection, for Log.new

def connect():
    global LAST
    h = nbd.NBD()
    h.connect_unix(SOCK)
    LAST = h
    return h

from nbd_client import fails

def on_image(off, n):
    with open(IMG, "rb") as f:
        f.seek(off)
        return f.read(n)

def same_image(copy):
    assert subprocess.run(["cmp", IMG, copy]).returncode == 0, "image changed"

def sha(b):
    return hashlib.sha256(b).hexdigest()

def records():
    """The lines the scripts appended since the last call."""
    try:
        with open(REC) as f:
            lines = f.read().splitlines()
    except FileNotFoundError:
        lines = []
    os.truncate(REC, 0) if lines else None
    return lines

class Log:
    def __init__(self):
        self.pos = 0
    def new(self):
        # The log is written by a thread of its own; an NBD flush returns
        # once every event before it is in the file.
        if LAST is not None:
            LAST.flush()
        with open(LOG, "rb") as f:
            f.seek(self.pos)
            data = f.read()
        self.pos += len(data)
        return [json.loads(l) for l in data.decode().splitlines()]

def results(evs):
    """(phase, file, position, length, result, by) of each log line.
    Every request here has one event: a vetoed one's line names who
    refused it ("by") and says it was the event refused."""
    out = []
    for e in evs:
        if "by" in e:
            assert e["phase"] == "after" and e["result"], e
            assert e["refused"] is True, e
        else:
            assert "refused" not in e, e
        out.append((e["phase"], e["file"], e["position"], e["length"],
                    e["result"], e.get("by")))
    return out

def line(file, pos, n, result=0, script=None):
    """The line of a one-event request (one line per event, the
    default); SCRIPT (a name in $TMP) refused it if RESULT."""
    by = "script:%s/%s" % (os.environ["TMP"], script) if result else None
    return [("after", file, pos, n, result, by)]
EOF

# serve [plugin args]: a fresh image, log and record file.  nbdkit runs
# in the foreground (in the background of this shell) so that its
# messages stay on its stderr, which is $tmp/nbdkit.err.
serve ()
{
    local i
    cp --sparse=always "$tmp/pristine.img" "$IMG"
    cp --sparse=always "$tmp/pristine.img" "$tmp/before.img"
    rm -f "$LOG" "$REC" "$SOCK" "$pid"
    nbdkit -f -U "$SOCK" -P "$pid" "$plugin" "$IMG" log="$LOG" "$@" \
        2>>"$tmp/nbdkit.err" &
    cleanup_fn "stop_nbdkit '$pid'"
    for (( i = 0; i < 300; i++ )); do
        [ -s "$pid" ] && [ -S "$SOCK" ] && return 0
        sleep 0.1
    done
    cat "$tmp/nbdkit.err"
    fail "nbdkit did not start: $*"
}

# --- Exit 0: allow; what the script is given. -------------------------

# With log-phases=both: a before and an after line per event.
serve script="$tmp/record.sh" log-phases=both
"$py" - <<'EOF'
from fsev_sh import *
h = connect()
log = Log()
empty = sha(b"")

def rec(phase, file, pos, n, ino, data, op="write", status=None, paths=None):
    args = "%s %s %d %d %d inplace" % (phase, file, pos, n, ino)
    if status is not None:
        args += " %s" % status
    paths = paths or [file]
    return "|".join([args, sha(data), op, ",".join(paths), "1", "", "0"])

# A block of /a: FILE is the first of FSEVENT_PATHS, which has both names.
d = os.urandom(BS)
h.pwrite(d, dev(A, 1))
got = records()
print("\n".join(got))
first = got[0].split()[1]
assert first in A.names, got
paths = [first] + [n for n in A.names if n != first]
assert got == [rec("before_write", first, BS, BS, A.ino, d, paths=paths),
               rec("after_write", first, BS, BS, A.ino, d, status=0,
                   paths=paths)], got
assert on_image(dev(A, 1), BS) == d
assert results(log.new()) == [("before", first, BS, BS, 0, None),
                              ("after", first, BS, BS, 0, None)]

# 100 unaligned bytes at position 10 of /b.
d = os.urandom(100)
h.pwrite(d, dev(B, 0, 10))
got = records()
assert got == [rec("before_write", "/b", 10, 100, B.ino, d),
               rec("after_write", "/b", 10, 100, B.ino, d, status=0)], got
assert on_image(dev(B, 0, 10), 100) == d

# Two files in one request (if /b follows /a's last block): one run
# each, each with its own part of the data.
if B.blocks[0] == A.blocks[3] + 1:
    d = os.urandom(BS)
    h.pwrite(d, dev(A, 3, 2048))
    got = records()
    assert got == [
        rec("before_write", first, 3 * BS + 2048, 2048, A.ino, d[:2048], paths=paths),
        rec("before_write", "/b", 0, 2048, B.ino, d[2048:]),
        rec("after_write", first, 3 * BS + 2048, 2048, A.ino, d[:2048], status=0, paths=paths),
        rec("after_write", "/b", 0, 2048, B.ino, d[2048:], status=0)], got
    print("ok: two files in one request")

# Zero and trim: FSEVENT_OPERATION says so, stdin is empty.
h.zero(BS, dev(B, 0))
got = records()
assert got == [rec("before_write", "/b", 0, BS, B.ino, b"", op="zero"),
               rec("after_write", "/b", 0, BS, B.ino, b"", op="zero", status=0)], got
assert on_image(dev(B, 0), BS) == bytes(BS)
h.trim(BS, dev(A, 2))
got = records()
assert got == [rec("before_write", first, 2 * BS, BS, A.ino, b"", op="trim", paths=paths),
               rec("after_write", first, 2 * BS, BS, A.ino, b"", op="trim", status=0, paths=paths)], got

# Metadata: no event, the script does not run.
h.pwrite(bytes(h.pread(BS, 0)), 0)
assert records() == []

# A second connection has its own FSEVENT_CONNECTION.
h2 = connect()
h2.pwrite(b"x", dev(B, 0))
got = records()
assert [g.split("|")[4] for g in got] == ["2", "2"], got
h2.shutdown()
h.shutdown()
print("ok: allow-all script")
EOF
stop_nbdkit "$pid"

# --- Exit 1: deny, with the errno named on stderr. ---------------------

serve script="$tmp/deny.sh"
"$py" - <<'EOF'
from fsev_sh import *
h = connect()
log = Log()
before = os.environ["TMP"] + "/before.img"
deny = os.environ["TMP"] + "/deny"
first = None

# name on stderr, errno the client sees (NBD carries only EPERM, EIO,
# ENOMEM, EINVAL, ENOSPC, EOVERFLOW, ENOTSUP and ESHUTDOWN: nbdkit sends
# any other errno as EINVAL), errno in the log and in after_write.
for text, client, logged in (
        ("EACCES not today", errno.EINVAL, errno.EACCES),
        ("EPERM Not allowed", errno.EPERM, errno.EPERM),
        ("eperm lower case", errno.EPERM, errno.EPERM),
        ("ENOSPC", errno.ENOSPC, errno.ENOSPC),
        ("EWHATEVER unknown name", errno.EIO, errno.EIO),
        ("", errno.EIO, errno.EIO)):
    open(deny, "w").write(text + "\n")
    fails(client, h.pwrite, os.urandom(BS), dev(B, 0))
    same_image(before)
    evs = log.new()
    assert results(evs) == line("/b", 0, BS, logged, "deny.sh"), (text, evs)
    assert evs[0]["error"] == errno.errorcode[logged], evs
    assert evs[0]["bytes_written"] == 0, evs
    got = records()
    assert got == ["after_write /b 0 %d %d inplace %s" %
                   (BS, B.ino, errno.errorcode[logged])], (text, got)
    print("ok: deny with %r" % text)
h.shutdown()
EOF
stop_nbdkit "$pid"

# --- Exit 2 (not handled), 3 (a failure), a signal. ---------------------

rm -f "$tmp/nbdkit.err"
serve script="$tmp/status.sh"
"$py" - <<'EOF'
from fsev_sh import *
h = connect()
log = Log()
before = os.environ["TMP"] + "/before.img"
status = os.environ["TMP"] + "/status"

open(status, "w").write("3")
fails(errno.EIO, h.pwrite, os.urandom(BS), dev(B, 0))
same_image(before)
# A script that fails (on-handler-error=deny) refuses the event.
assert results(log.new()) == line("/b", 0, BS, errno.EIO, "status.sh")
assert records() == ["before_write", "after_write"]

open(status, "w").write("kill")
fails(errno.EIO, h.pwrite, os.urandom(BS), dev(B, 0))
same_image(before)
assert results(log.new()) == line("/b", 0, BS, errno.EIO, "status.sh")
records()

open(status, "w").write("2")
d = os.urandom(BS)
h.pwrite(d, dev(B, 0))
assert on_image(dev(B, 0), BS) == d
assert results(log.new()) == line("/b", 0, BS)
assert records() == ["before_write", "after_write"]
h.shutdown()
print("ok: exit 2, 3 and a signal")
EOF
stop_nbdkit "$pid"

serve script="$tmp/status.sh" on-handler-error=allow
"$py" - <<'EOF'
from fsev_sh import *
h = connect()
log = Log()
status = os.environ["TMP"] + "/status"
for s in ("3", "kill", "2"):
    open(status, "w").write(s)
    d = os.urandom(BS)
    h.pwrite(d, dev(B, 0))
    assert on_image(dev(B, 0), BS) == d, s
    assert results(log.new()) == line("/b", 0, BS), s
    assert records() == ["before_write", "after_write"], s
h.shutdown()
print("ok: on-handler-error=allow")
EOF
stop_nbdkit "$pid"
# Either way the failures were reported as errors.
cat "$tmp/nbdkit.err"
[ "$(grep -c "error: script .*status.sh before_write: exit status 3: exiting with 3" "$tmp/nbdkit.err")" -eq 2 ] ||
    fail "exit status 3 was not reported"
[ "$(grep -c "error: script .*status.sh before_write: killed by signal 9" "$tmp/nbdkit.err")" -eq 2 ] ||
    fail "the signal was not reported"

# --- A script that hangs: script-timeout=. ------------------------------

# hang_case [plugin args]: the write fails with EIO (ALLOW=1: succeeds)
# after 1 to 3 seconds, and no sleeping child is left.
hang_case ()
{
    serve script="$tmp/hang.sh" script-timeout=1 "$@"
    SLEEPER="$sleeper" "$py" - <<'EOF'
from fsev_sh import *
allow = os.environ.get("ALLOW") == "1"
h = connect()
log = Log()
d = os.urandom(BS)
# Half-way through the write, the script's sleep must be running.
import threading
seen = []
def look():
    time.sleep(0.5)
    seen.append(subprocess.run(["pgrep", "-f", os.environ["SLEEPER"]]).returncode)
th = threading.Thread(target=look)
th.start()
t = time.monotonic()
if allow:
    h.pwrite(d, dev(B, 0))
else:
    fails(errno.EIO, h.pwrite, d, dev(B, 0))
t = time.monotonic() - t
print("the write took %.2f s" % t)
th.join()
assert seen == [0], "the sleeper was not running during the write"
assert 0.9 <= t <= 3.0, t
r = 0 if allow else errno.EIO
assert results(log.new()) == line("/b", 0, BS, r, "hang.sh")
if allow:
    assert on_image(dev(B, 0), BS) == d
else:
    same_image(os.environ["TMP"] + "/before.img")
# No sleeper left (give init a moment to reap the orphan).
for i in range(10):
    p = subprocess.run(["pgrep", "-f", os.environ["SLEEPER"]])
    if p.returncode == 1:
        break
    time.sleep(0.1)
else:
    subprocess.run(["pgrep", "-af", os.environ["SLEEPER"]])
    raise AssertionError("the script's sleep is still running")
h.shutdown()
print("ok: hang, allow=%s" % allow)
EOF
    stop_nbdkit "$pid"
}
ALLOW=0 hang_case
ALLOW=1 hang_case on-handler-error=allow
[ "$(grep -c "error: script .*hang.sh before_write timed out after 1 s (/b)" "$tmp/nbdkit.err")" -eq 2 ] ||
    fail "the timeouts were not reported"
! pgrep -af -- "$sleeper" || fail "a sleeper is left"

# --- Bad script parameters. ---------------------------------------------

refused ()
{
    local name="$1" regex="$2" rc=0
    shift 2
    timeout 60 nbdkit -U "$tmp/$name.sock" "$plugin" "$tmp/pristine.img" "$@" \
        --run "touch '$tmp/$name.ran'" 2>"$tmp/$name.err" || rc=$?
    cat "$tmp/$name.err"
    [ "$rc" -ne 0 ] && [ "$rc" -lt 124 ] || fail "$name: exit status $rc"
    [ ! -e "$tmp/$name.ran" ] || fail "$name: the server started"
    grep -Eq -- "$regex" "$tmp/$name.err" || fail "$name: stderr does not match /$regex/"
}
refused missing 'nonexistent' script="$tmp/nonexistent.sh"
refused dir 'not a regular file' script="$tmp"
cp "$tmp/record.sh" "$tmp/noexec.sh"; chmod -x "$tmp/noexec.sh"
refused noexec 'not executable' script="$tmp/noexec.sh"
refused twice 'script= can be given only once' \
    script="$tmp/record.sh" script="$tmp/deny.sh"
for t in 0 -1 abc nan inf 1e9; do
    refused "timeout$t" "script-timeout=$t: expected a number of seconds" \
        script="$tmp/record.sh" script-timeout="$t"
done

echo "PASS: $0"
