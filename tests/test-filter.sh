#!/usr/bin/env bash
# tests/test-filter.sh: the fsevent filter over other nbdkit plugins.
#
# 1. The event tests of the plugin (test-events.sh: exact events for
#    known writes, vetoes with an unchanged disk, the example handler,
#    parallel writers, bad parameters) run again with the filter over
#    nbdkit's file plugin, an in-memory disk (the data plugin loaded
#    with the image), qemu-nbd through the nbd plugin, and a script
#    through the sh plugin (tests/sh-disk.sh).
# 2. A backend whose writes fail: a kernel mount through the filter
#    over tests/sh-disk.sh with fail=commit, where every jbd2 commit
#    block the guest writes fails with EIO.  The guest creates a file
#    and syncs.  The before events of the commit are decided (result
#    0), the after events report the failure (status 5, EIO), nothing
#    is recorded as committed (no model check fails, and the next commit
#    is not made on top of a model that holds the file), and the file
#    is not on the disk (debugfs after journal recovery on a copy).

source ./functions.sh
set -x

requires nbdkit --version
requires qemu-nbd --version
requires nbdcopy --version
requires_python_nbd
[ -f "$filter" ] || fail "filter not built: $filter"

# --- 1. The event tests over every backend. ---------------------------
for backend in file memory nbd sh; do
    echo "=== test-events.sh over the $backend backend"
    FSEVENT_BACKEND=$backend bash "$top_srcdir/tests/test-events.sh" ||
        fail "test-events.sh failed over the $backend backend"
done

# --- 2. A backend whose commit blocks fail. -----------------------------
requires_root
requires test -e /dev/fuse
requires test -e /dev/loop-control
requires grep -qw ext4 /proc/filesystems
requires nbdfuse --version
requires fusermount3 -V
requires losetup --version
requires debugfs -V
requires e2fsck -V

d="$(tmpdir)"
img="$d/disk.img"
sock="$d/sock"
mnt="$d/mnt"
fuse="$d/fuse"
mkdir -p "$mnt" "$fuse" "$d/root"
echo "already here" > "$d/root/old.txt"
mkfs_image "$img" 16M -t ext4 -b 4096 -d "$d/root"
cp "$img" "$d/before.img"
mounted= dev= fuse_pid= nbdkit_pid=
cleanup_fn guest_down

guest_up_with "" --filter="$filter" \
    sh "$top_srcdir/tests/sh-disk.sh" file="$img" fail=commit \
    log="$d/log" -D fsevent.check=1
echo "new content" > "$mnt/new.txt" || :
sync || :
sync -f "$mnt" || :
guest_down
cat "$d/kmsg"

grep -q "injected: a jbd2 commit block" "$d/nbdkit.err" ||
    fail "no commit block reached the backend (nothing was tested)"
! grep -q "model check failed" "$d/nbdkit.err" || fail "model check failed"
"$py" - "$d/log" <<'EOF'
import json, sys
lines = [json.loads(l) for l in open(sys.argv[1])]
creates = [e for e in lines if e["event"] == "create" and e["file"] == "/new.txt"]
assert creates, "no create event for /new.txt"
# One line per event, with its outcome.
assert all(e.get("phase", "after") == "after" for e in lines), "a before line"
after = creates
# Every create of /new.txt that was decided ended with EIO: the commit
# block carrying it never reached the disk.  Not a veto (the handlers
# allowed it): no "by".
assert after and all(e["result"] == 5 and e.get("error") == "EIO" and
                     "by" not in e and "refused" not in e
                     for e in after), after
# No event of any kind says a change to /new.txt committed.
ok = [e for e in lines if e.get("phase") == "after" and e.get("result") == 0 and
      ("/new.txt" in (e.get("file"), e.get("new_file")))]
assert not ok, ok
print("ok: %d create events, all failed with EIO" % len(after))
EOF

# The disk as the next mount sees it: no /new.txt, /old.txt intact.
cp "$img" "$d/replayed.img"
e2fsck -fy "$d/replayed.img" >/dev/null 2>&1 || :
debugfs -R "stat /new.txt" "$d/replayed.img" 2>&1 | grep -q "File not found" ||
    fail "/new.txt reached the disk although its commit failed"
[ "$(debugfs -R "cat /old.txt" "$d/replayed.img" 2>/dev/null)" = "already here" ] ||
    fail "/old.txt changed"
e2fsck -fn "$d/replayed.img" || fail "e2fsck after recovery"

echo "PASS: $0"
