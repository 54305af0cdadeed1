#!/usr/bin/env bash
# tests/test-events-kernel.sh: write events and a veto through a real
# kernel mount (nbdfuse + loop, or nbd-client, as scripts/attach does).
# The image has /etc/secret (protected) and /data/free.txt; in-place
# O_DIRECT overwrites of one block of each must fail and succeed
# respectively, the log must show the event of the one that succeeded,
# and after nbdkit stops, debugfs must find /etc/secret byte-identical
# to the original and the new bytes in /data/free.txt.

source ./functions.sh
set -x

requires_root
requires test -e /dev/fuse
requires test -e /dev/loop-control
requires nbdfuse --version
requires debugfs -V
requires e2fsck -V
requires dd --version
requires cmp --version
requires grep -qw ext4 /proc/filesystems
[ -f "$plugin" ] || fail "plugin not built: $plugin"
py=
for p in /usr/bin/python3 python3; do
    if "$p" -c 'import json' >/dev/null 2>&1; then py="$p"; break; fi
done
[ -n "$py" ] || requires python3 -c 'import json'

d="$(tmpdir)"
img="$d/disk.img"
log="$d/events.jsonl"
mnt="$d/mnt"

mkdir -p "$d/root/etc" "$d/root/data"
head -c 16384 /dev/urandom > "$d/root/etc/secret"
head -c 16384 /dev/urandom > "$d/root/data/free.txt"
mkfs_image "$img" 64M -t ext4 -b 4096 -d "$d/root"
# What dd writes: saved first, so that it can be compared afterwards.
head -c 4096 /dev/urandom > "$d/new-secret"
head -c 4096 /dev/urandom > "$d/new-free"

start_nbdkit "$d/sock" "$d/pid" "$plugin" "$img" log="$log" protect=/etc/secret
dev="$("$scripts/attach" "$d/sock" "$mnt")"
# At exit, unless detached below (the device may be someone else's then).
detached=
cleanup_fn '[ -n "$detached" ] || "$scripts/detach" "$dev" 2>/dev/null'

[ -b "$dev" ] || fail "attach did not give a block device: $dev"
cmp "$d/root/etc/secret" "$mnt/etc/secret"
cmp "$d/root/data/free.txt" "$mnt/data/free.txt"

# An in-place overwrite of block 1 of the unprotected file succeeds...
dd if="$d/new-free" of="$mnt/data/free.txt" bs=4096 count=1 seek=1 \
   conv=notrunc oflag=direct ||
    fail "overwriting /data/free.txt failed"
# ... and of the protected file fails (the veto reaches dd as EIO).
if dd if="$d/new-secret" of="$mnt/etc/secret" bs=4096 count=1 seek=1 \
      conv=notrunc oflag=direct; then
    fail "overwriting the protected /etc/secret succeeded"
fi
dmesg 2>/dev/null | tail -5 || :

# Unmount and detach.  The failed write may have made ext4 unhappy, so
# if detach fails, take it down by hand (the cleanup tries again).
if ! "$scripts/detach" "$mnt"; then
    umount "$mnt" || umount -l "$mnt" || :
    "$scripts/detach" "$dev" || fail "cannot detach $dev"
fi
detached=yes
stop_nbdkit "$d/pid"

# The log: the events of the write to /data/free.txt, and of
# /etc/secret nothing but vetoes.
cat "$log"
"$py" - "$log" <<'EOF'
import json, sys
alll = [json.loads(l) for l in open(sys.argv[1])]
assert [e["seq"] for e in alll] == list(range(1, len(alll) + 1)), "seq"
# The in-place writes; the commits that follow carry the files' new
# times (set_attributes), vetoed for /etc/secret: the whole transaction
# with it (fail-closed), which test-follow-protect checks in depth.
evs = [e for e in alll if e["event"] == "write"]
others = [e for e in alll if e["event"] != "write"]
assert {e["event"] for e in others} <= {"set_attributes"}, others
# One line per event: the after line, with the outcome and who vetoed.
assert all(e["phase"] == "after" for e in alll), "a before line"
assert all(e["result"] == 1 and e["by"] == "protect" for e in others
           if e["file"] == "/etc/secret"), others
assert {e["file"] for e in evs} <= {"/data/free.txt", "/etc/secret"}, evs
free = [e for e in evs if e["file"] == "/data/free.txt"]
want = [("after", 4096, 4096, 0, 4096)]
got = [(e["phase"], e["position"], e["length"], e["result"],
        e.get("bytes_written")) for e in free]
print("/data/free.txt:", got)
for w in want:
    assert w in got, ("missing event", w)
secret = [e for e in evs if e["file"] == "/etc/secret"]
print("/etc/secret:", [(e["phase"], e["position"], e["length"], e["result"])
                       for e in secret])
assert secret, "no event for /etc/secret"
for e in secret:
    assert e["result"] == 1 and e["error"] == "EPERM", e
    assert e["by"] == "protect" and e["refused"] is True, e
    assert e.get("bytes_written", 0) == 0, e
    assert 0 <= e["position"] < 16384, e
assert any(e["position"] <= 4096 < e["position"] + e["length"]
           for e in secret), "no veto of block 1 of /etc/secret"
EOF

# The image (debugfs is the oracle).  e2fsck may find problems after
# the I/O error; it is shown, not required to be clean.
e2fsck -fn "$img" || echo "e2fsck: status $? (not required to be clean here)"
debugfs -R "dump /etc/secret $d/got-secret" "$img"
cmp "$d/root/etc/secret" "$d/got-secret" || fail "/etc/secret changed on the image"
debugfs -R "dump /data/free.txt $d/got-free" "$img"
[ "$(stat -c %s "$d/got-free")" -eq 16384 ] || fail "/data/free.txt changed size"
cmp <(dd if="$d/got-free" bs=4096 skip=1 count=1 status=none) "$d/new-free" ||
    fail "block 1 of /data/free.txt is not what dd wrote"
cmp <(dd if="$d/got-free" bs=4096 count=1 status=none) \
    <(dd if="$d/root/data/free.txt" bs=4096 count=1 status=none) ||
    fail "block 0 of /data/free.txt changed"
cmp <(dd if="$d/got-free" bs=4096 skip=2 status=none) \
    <(dd if="$d/root/data/free.txt" bs=4096 skip=2 status=none) ||
    fail "blocks 2-3 of /data/free.txt changed"

# Nothing left behind.
! losetup -a | grep -q "$d" || fail "loop device left behind"
! pgrep -f "nbdfuse .*$d" || fail "nbdfuse left behind"

echo "PASS: $0"
