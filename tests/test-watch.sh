#!/usr/bin/env bash
# tests/test-watch.sh: fsevent-ctl watch (WATCH on control=), driven by
# libnbd raw writes to a bare ext4 image (debugfs says which blocks
# belong to which file):
#  1. Two watchers of everything (JSON) see exactly the log's lines
#     (one per event, after phase, vetoes included with "by" and
#     "refused"), byte for byte, seq and all.
#  2. Filters: --format=text --event write GLOB (only the protected
#     file's writes, one short line each, EPERM), --event lock,unlock
#     (only the lock events of an fsevent-ctl lock), --partition 1 on a
#     bare filesystem (nothing).
#  3. A stalled watcher (connects, asks, never reads) with a 16 KiB
#     buffer (WATCH buffer=16384): 3000 writes still finish
#     in time; when it reads at last it gets one {"dropped":N} line, and
#     its lines plus N are every decided event.
#  4. A watcher that disconnects mid-stream: nbdkit cleans it up (its
#     debug message), the guest goes on, the other watchers too.
#  5. Without log=: watchers still get the events, and the undecided
#     line of a refused commit (garbage over the superblock).
#  6. Bad WATCH arguments: ERR EINVAL, and the plugin goes on.

source ./functions.sh
set -x

requires nbdkit --version
requires mke2fs -V
requires debugfs -V
requires timeout --version
[ -f "$plugin" ] || fail "plugin not built: $plugin"
ctl="$top_builddir/tools/fsevent-ctl"
[ -x "$ctl" ] || fail "fsevent-ctl not built: $ctl"
requires_python_nbd
export DEBUGFS_PAGER=__none__ PAGER=cat

d="$(tmpdir)"
mkdir -p "$d/root/etc"
head -c 8192 /dev/urandom > "$d/root/a"
head -c 4096 /dev/urandom > "$d/root/etc/passwd"
mkfs_image "$d/disk.img" 32M -t ext4 -b 4096 -d "$d/root"
first_block ()
{
    debugfs -R "bmap $1 0" "$d/disk.img" 2>/dev/null
}
A="$(first_block /a)"
P="$(first_block /etc/passwd)"
[ -n "$A" ] && [ -n "$P" ] || fail "debugfs gave no blocks"
export A P SOCK="$d/sock" CTL="$d/ctl"

start_nbdkit "$d/sock" "$d/pid" -f -v "$plugin" "$d/disk.img" \
    control="$d/ctl" log="$d/log.jsonl" protect='/etc/**' \
    2>"$d/nbdkit.err" &
for (( i = 0; i < 100; i++ )); do [ -S "$d/ctl" ] && break; sleep 0.1; done
[ -S "$d/ctl" ] || fail "no control socket"

watch_pids=()
watch ()
{
    local out="$1"
    shift
    "$ctl" "$d/ctl" watch "$@" > "$out" 2>"$out.err" &
    watch_pids+=($!)
    cleanup_fn "kill $! 2>/dev/null"
}
watch "$d/w1" ; watch "$d/w2"
watch "$d/wtext" --format=text --event write '/etc/**'
watch "$d/wlock" --event lock,unlock
watch "$d/wpart" --partition 1

# The stalled watcher and the one that leaves mid-stream: raw sockets.
cat > "$d/rawwatch.py" <<'EOF'
import os, socket, sys, time
mode, out = sys.argv[1], sys.argv[2]
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
s.connect(os.environ["CTL"])
s.sendall(b"WATCH buffer=16384\n" if mode == "stalled" else b"WATCH\n")
f = s.makefile("rb")
assert f.readline() == b"OK\n"
open(out + ".ready", "w").close()
if mode == "leave":
    # Read 5 lines, then go.
    got = [f.readline() for _ in range(5)]
    open(out, "wb").write(b"".join(got))
    s.close()
    sys.exit(0)
# stalled: read nothing until told to, then everything until quiet.
while not os.path.exists(out + ".go"):
    time.sleep(0.1)
s.settimeout(3)
data = b""
try:
    while True:
        b = s.recv(65536)
        if not b:
            break
        data += b
except socket.timeout:
    pass
open(out, "wb").write(data)
EOF
"$py" "$d/rawwatch.py" stalled "$d/wstall" & stall_pid=$!
cleanup_fn "kill $stall_pid 2>/dev/null"
"$py" "$d/rawwatch.py" leave "$d/wleave" & leave_pid=$!
cleanup_fn "kill $leave_pid 2>/dev/null"
for (( i = 0; i < 100; i++ )); do
    [ -e "$d/wstall.ready" ] && [ -e "$d/wleave.ready" ] && break
    sleep 0.1
done
[ -e "$d/wstall.ready" ] && [ -e "$d/wleave.ready" ] || fail "raw watchers did not start"
sleep 0.5   # the fsevent-ctl watchers too

# Writes: 3000 to /a (allowed), 20 to /etc/passwd (denied), a lock.
cat > "$d/writes.py" <<'EOF'
import errno, os, sys, time
import nbd
from nbd_client import fails
A, P, N = int(os.environ["A"]), int(os.environ["P"]), int(sys.argv[1])
h = nbd.NBD()
h.connect_unix(os.environ["SOCK"])
t = time.time()
for i in range(N):
    h.pwrite(bytes([i % 256]) * 512, A * 4096 + (i % 16) * 512)
    if i % 150 == 0:
        fails(errno.EPERM, h.pwrite, b"z" * 4096, P * 4096)
print("%d writes in %.2f s" % (N, time.time() - t))
h.shutdown()
EOF
export PYTHONPATH="$top_srcdir/tests"
timeout 120 "$py" "$d/writes.py" 3000 || fail "the guest's writes did not go on (a stalled watcher held them?)"
"$ctl" "$d/ctl" lock /a --length 100 -- true || fail "lock failed"

wait $leave_pid || fail "the leaving watcher failed"
sleep 1
grep -q "a watcher left" "$d/nbdkit.err" || fail "no watcher was cleaned up"
# The guest goes on after it left, and the rest still watch.
timeout 60 "$py" "$d/writes.py" 10 || fail "writes after a watcher left"
sleep 0.5
touch "$d/wstall.go"
wait $stall_pid || fail "the stalled watcher failed"
"$ctl" "$d/ctl" stats --prometheus > "$d/prom" || fail "stats --prometheus"

# Bad arguments.
for bad in "--event nosuch" "--partition x" "relative/glob" "--buffer 1K"; do
    if "$ctl" "$d/ctl" watch $bad > "$d/bad.out" 2>&1; then
        fail "watch $bad succeeded"
    fi
    cat "$d/bad.out"
done
printf 'WATCH events=nosuch\n' | timeout 5 "$py" -c '
import os, socket, sys
s = socket.socket(socket.AF_UNIX); s.connect(os.environ["CTL"])
s.sendall(b"WATCH events=nosuch\n"); r = s.makefile("rb").readline()
assert r.startswith(b"ERR EINVAL "), r' || fail "bad WATCH not refused"

sleep 0.5
stop_nbdkit "$d/pid"
sleep 0.5
for p in "${watch_pids[@]}"; do
    # Each fsevent-ctl watch ends (status 0) when nbdkit goes.
    wait "$p" || fail "a watcher exited with $?"
done
cat "$d/w1.err" "$d/wtext.err" || :

"$py" - "$d" <<'EOF'
import json, sys
d = sys.argv[1]
log = [l for l in open(d + "/log.jsonl")]
decided = [l for l in log if json.loads(l).get("phase") in ("after", None)]
# One line per event: the log holds no before lines, and the watchers
# get every line of it.
assert not any(json.loads(l).get("phase") == "before" for l in log)
assert decided == log
w1 = open(d + "/w1").readlines()
w2 = open(d + "/w2").readlines()
print(len(log), "log lines,", len(decided), "decided,", len(w1), "watched")
if w1 != decided:
    import difflib
    sys.stdout.writelines(list(difflib.unified_diff(decided, w1, "log", "w1"))[:40])
assert w1 == decided, "watcher 1 differs from the log's decided lines"
assert w2 == decided, "watcher 2 differs from the log's decided lines"
writes = [json.loads(l) for l in decided if json.loads(l)["event"] == "write"]
assert len(writes) == 3000 + 10 + 20 + 1, len(writes)
for e in writes:
    if e["file"] == "/etc/passwd":
        assert e["result"] == 1 and e["error"] == "EPERM", e
        assert e["by"] == "protect" and e["refused"] is True, e
    else:
        assert e["result"] == 0 and "by" not in e and "refused" not in e, e

text = open(d + "/wtext").read().splitlines()
denied = [e for e in writes if e["file"] == "/etc/passwd"]
assert len(text) == len(denied) == 21, (len(text), len(denied))
for t in text:
    f = t.split(" ")
    assert f[1:] == ["write", "/etc/passwd", "0+4096", "EPERM"], t

locks = [json.loads(l) for l in open(d + "/wlock")]
assert [e["event"] for e in locks] == ["lock", "unlock"], locks
assert all(e["phase"] == "after" and e["file"] == "/a" for e in locks)
assert open(d + "/wpart").read() == "", "partition 1 of a bare filesystem"

# The one that left read 5 lines: the log's first 5 decided.
assert open(d + "/wleave").readlines() == decided[:5]

# The stalled one: lines in order, one dropped record, all accounted for.
st = open(d + "/wstall").read().splitlines()
drops = [json.loads(l)["dropped"] for l in st if l.startswith('{"dropped"')]
lines = [l for l in st if not l.startswith('{"dropped"')]
print("stalled watcher:", len(lines), "lines, dropped", drops)
assert len(drops) >= 1 and sum(drops) > 0, drops
assert len(lines) + sum(drops) == len(decided), (len(lines), sum(drops), len(decided))
seqs = [json.loads(l)["seq"] for l in lines]
assert seqs == sorted(seqs)
assert set(lines) <= set(l.rstrip("\n") for l in decided)

# stats --prometheus parses: HELP and TYPE before each sample.
prom = open(d + "/prom").read().splitlines()
samples = {}
i = 0
while i < len(prom):
    h, t, s = prom[i:i + 3]
    assert h.startswith("# HELP fsevent_"), h
    name = h.split(" ")[2]
    assert t == "# TYPE %s %s" % (name, t.split(" ")[3]) and t.split(" ")[3] in ("counter", "gauge"), t
    k, v = s.split(" ")
    assert k == name and (not name.endswith("_total") or t.endswith("counter"))
    samples[k] = float(v)
    i += 3
print(samples)
assert samples["fsevent_events_total"] >= 3031
assert samples["fsevent_vetoes_total"] == 21
assert samples["fsevent_locks"] == 0
assert samples["fsevent_requests_total"] >= 3031
assert samples["fsevent_events_write_total"] == 3031
assert samples["fsevent_events_lock_total"] == 1
assert samples["fsevent_events_unlock_total"] == 1
assert samples["fsevent_events_rename_total"] == 0
assert 5 <= samples["fsevent_watchers"] <= 6
assert "# TYPE fsevent_watchers gauge" in prom
EOF

# 5. Without log=.
rm -f "$d/w3"
start_nbdkit "$d/sock" "$d/pid2" "$plugin" "$d/disk.img" control="$d/ctl" \
    protect="/etc/**"
watch "$d/w3" --event write
watch "$d/w4" --event undecided
sleep 0.5
timeout 60 "$py" "$d/writes.py" 5 || fail "writes without log="
# Garbage over the primary superblock: a commit point whose view does
# not parse, refused (EIO) as undecided.
"$py" - <<'EOF' || fail "garbage over the superblock was not refused"
import os, nbd
h = nbd.NBD()
h.connect_unix(os.environ["SOCK"])
try:
    h.pwrite(os.urandom(1024), 1024)
except nbd.Error as e:
    print("refused:", e)
else:
    raise SystemExit("the garbage superblock was accepted")
EOF
sleep 0.5
stop_nbdkit "$d/pid2"
sleep 0.3
n="$(grep -c '"phase":"after"' "$d/w3" || :)"
[ "$n" = 6 ] || fail "without log=: $n after-events watched, expected 6"
n="$(grep -c '"file":"/etc/passwd".*"error":"EPERM","by":"protect","refused":true}' "$d/w3" || :)"
[ "$n" = 1 ] || fail "without log=: $n refused writes by protect watched, expected 1"
grep -q '"event":"undecided".*"error":"EIO"' "$d/w4" ||
    { cat "$d/w4"; fail "without log=: no undecided line watched"; }
! grep -v '"event":"undecided"' "$d/w4" || fail "--event undecided let other lines through"
echo OK
