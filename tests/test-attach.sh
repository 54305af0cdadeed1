#!/usr/bin/env bash
# tests/test-attach.sh: scripts/attach and scripts/detach, the way users
# put an fsevent export under a kernel mount.
#
# For each way the machine has (nbd-client on /dev/nbd*, where the
# kernel has an nbd driver; nbdfuse + loop, everywhere), and for a bare
# ext4 image and partition 2 of a GPT disk: attach and mount, write a
# file, detach; then the log must hold the file's events (with the
# right partition), the file must be on the image (debugfs on the
# partition's bytes) and e2fsck must be clean.  The nbd-client way is
# skipped, saying so, only when the kernel has no nbd driver.

source ./functions.sh
set -x

requires_root
requires nbdkit --version
requires sgdisk --version
requires sfdisk --version
requires debugfs -V
requires e2fsck -V
requires_python_nbd
[ -f "$plugin" ] || fail "plugin not built: $plugin"

ways=()
if [ -e /dev/fuse ] && [ -e /dev/loop-control ] && command -v nbdfuse >/dev/null; then
    ways+=(fuse)
else
    echo "SKIP: $0: the nbdfuse + loop way: needs /dev/fuse, loop devices and nbdfuse" >&2
fi
if [ ! -b /dev/nbd0 ]; then
    modprobe nbd max_part=16 2>/dev/null || :
fi
if [ -b /dev/nbd0 ] && command -v nbd-client >/dev/null; then
    ways+=(nbd)
else
    echo "SKIP: $0: the nbd-client way: the kernel has no nbd driver" \
         "(no /dev/nbd0; modprobe nbd: $(modprobe nbd 2>&1 | head -1))" >&2
fi
[ ${#ways[@]} -gt 0 ] || { echo "SKIP: $0: no way to attach" >&2; exit 77; }

d="$(tmpdir)"
mkdir -p "$d/root"
echo "before" > "$d/root/old.txt"
mkfs_image "$d/bare.img" 32M -t ext4 -b 4096 -d "$d/root"

# GPT: p1 8 MiB (left empty), p2 the ext4 filesystem.
truncate -s 48M "$d/gpt.img"
sgdisk -n1:2048:+8M -t1:ef00 -n2:0:0 -t2:8300 "$d/gpt.img" >/dev/null
read -r p2start p2size < <(sfdisk --json "$d/gpt.img" | "$py" -c '
import json, sys
p = json.load(sys.stdin)["partitiontable"]["partitions"][1]
print(p["start"] * 512, p["size"] * 512)')
mke2fs -q -F -t ext4 -b 4096 -d "$d/root" -E offset="$p2start" "$d/gpt.img" \
    $(( p2size / 4096 ))

for way in "${ways[@]}"; do
    for kind in bare gpt; do
        name="$way-$kind"
        cp --sparse=always "$d/$kind.img" "$d/$name.img"
        rm -f "$d/$name.log"
        start_nbdkit "$d/$name.sock" "$d/$name.pid" "$plugin" "$d/$name.img" \
            log="$d/$name.log" -D fsevent.check=1
        args=(--via "$way")
        [ $kind = bare ] || args+=(--partition 2)
        "$scripts/attach" "${args[@]}" "$d/$name.sock" "$d/$name.mnt" ||
            fail "$name: attach failed"
        cleanup_fn "'$scripts/detach' '$d/$name.mnt' 2>/dev/null"
        [ "$(cat "$d/$name.mnt/old.txt")" = before ] || fail "$name: old.txt"
        echo "written through $name" > "$d/$name.mnt/new.txt"
        "$scripts/detach" "$d/$name.mnt" || fail "$name: detach failed"
        stop_nbdkit "$d/$name.pid"

        part=0 off=0
        [ $kind = bare ] || { part=2; off=$p2start; }
        # The partition's bytes, for the offline oracle.
        dd if="$d/$name.img" of="$d/$name.fs" bs=1M iflag=skip_bytes \
           skip="$off" status=none
        [ "$(debugfs -R "cat /new.txt" "$d/$name.fs" 2>/dev/null)" = \
          "written through $name" ] || fail "$name: /new.txt is not on the image"
        e2fsck -fn "$d/$name.fs" || fail "$name: e2fsck"
        "$py" - "$d/$name.log" "$part" <<'EOF' || fail "$name: events"
import json, sys
lines = [json.loads(l) for l in open(sys.argv[1])]
part = int(sys.argv[2])
new = [e for e in lines if e.get("file") == "/new.txt"]
kinds = {(e["event"], e["phase"]) for e in new}
assert ("create", "after") in kinds and ("write", "after") in kinds, kinds
assert all(e["partition"] == part for e in new), new
assert all(e["result"] == 0 for e in new), new
print("ok:", len(new), "events for /new.txt on partition", part)
EOF
    done
done

echo "PASS: $0"
