#!/usr/bin/env bash
# tests/test-follow-recovery.sh: an image whose journal needs recovery
# is replayed into the committed view, never into the image.
#
# debugfs writes a committed transaction that renames /a.txt to
# /b.txt (a new copy of the root directory block) without writing it
# home.  Served with log=, an in-place write to the file's data must be
# attributed to /b.txt (the committed view), while the image still says
# /a.txt (debugfs, which does not replay) and is byte-identical apart
# from the written block.

source ./functions.sh
set -x

requires mke2fs -V
requires debugfs -V
requires cmp --version
requires_python_nbd
[ -f "$plugin" ] || fail "plugin not built: $plugin"

d="$(tmpdir)"
img="$d/disk.img"
mkdir -p "$d/root"
head -c 8192 /dev/urandom > "$d/root/a.txt"
# No metadata_csum: the edited directory block needs no new checksum.
mkfs_image "$img" 32M -t ext4 -b 4096 -O ^metadata_csum -d "$d/root"

# The root directory's block, with the name changed in place.
dirblk="$(debugfs -R 'blocks /' "$img" 2>/dev/null | awk '{print $1}')"
[ -n "$dirblk" ] || fail "no root directory block"
dd if="$img" of="$d/dir.blk" bs=4096 skip="$dirblk" count=1 status=none
"$py" - "$d/dir.blk" <<'EOF'
import sys
p = sys.argv[1]
b = bytearray(open(p, "rb").read())
i = b.find(b"a.txt")
assert i > 0 and b.find(b"a.txt", i + 1) < 0, "a.txt not found once"
b[i:i + 5] = b"b.txt"
open(p, "wb").write(b)
EOF
printf 'jo\njw -b %s %s\njc\n' "$dirblk" "$d/dir.blk" > "$d/cmds"
debugfs -w -f "$d/cmds" "$img"
dumpe2fs -h "$img" 2>/dev/null | grep -q needs_recovery ||
    fail "debugfs did not leave a journal that needs recovery"
cp "$img" "$d/before.img"

datablk="$(debugfs -R 'blocks /a.txt' "$img" 2>/dev/null | awk '{print $1}')"
[ -n "$datablk" ] || fail "no data block for /a.txt"

log="$d/events.jsonl"
start_nbdkit "$d/sock" "$d/pid" "$plugin" "$img" log="$log" \
             -D fsevent.check=1 --log=stderr -v 2> "$d/nbdkit.err"
"$py" - "$d/sock" "$datablk" <<'EOF'
import nbd, sys
h = nbd.NBD()
h.connect_unix(sys.argv[1])
h.pwrite(b"R" * 4096, int(sys.argv[2]) * 4096)
h.flush()
h.shutdown()
EOF
stop_nbdkit "$d/pid"

cat "$log"
grep -q "committed transactions replayed" "$d/nbdkit.err" ||
    fail "nbdkit did not say it replayed the journal"
if grep -q "model check failed" "$d/nbdkit.err"; then
    fail "model check failed"
fi
"$py" - "$log" <<'EOF'
import json, sys
evs = [json.loads(l) for l in open(sys.argv[1])]
w = [e for e in evs if e["event"] == "write"]
assert len(w) == 1, evs         # one line per event: the outcome
for e in w:
    assert e["file"] == "/b.txt", ("not attributed to the committed name", e)
    assert e["position"] == 0 and e["length"] == 4096 and e["result"] == 0, e
assert all(e["event"] == "write" for e in evs), evs
EOF

# The image: still /a.txt (nothing was replayed into it), and every
# byte but the written block as it was.
debugfs -R 'ls -l /' "$img" 2>/dev/null | grep -q ' a.txt' ||
    fail "the image was changed: /a.txt is gone"
dumpe2fs -h "$img" 2>/dev/null | grep -q needs_recovery ||
    fail "the journal was replayed into the image"
cmp <(dd if="$img" bs=4096 count="$datablk" status=none) \
    <(dd if="$d/before.img" bs=4096 count="$datablk" status=none) ||
    fail "the image changed before the written block"
cmp <(dd if="$img" bs=4096 skip=$((datablk + 1)) status=none) \
    <(dd if="$d/before.img" bs=4096 skip=$((datablk + 1)) status=none) ||
    fail "the image changed after the written block"
echo "recovery replayed into the committed view only: ok"
