#!/usr/bin/env bash
# A real kernel mount through the plugin: mkfs an image, serve it, attach
# it (nbdfuse + loop, or nbd-client), mount it, write files with the
# kernel's ext4 driver, unmount; then e2fsck -fn must find the image
# clean and debugfs must show exactly what was written.
source ./functions.sh
set -x

requires_root
requires test -e /dev/fuse
requires test -e /dev/loop-control
requires nbdfuse --version
requires debugfs -V
requires grep -qw ext4 /proc/filesystems

d="$(tmpdir)"
img="$d/disk.img"
mkfs_image "$img" 128M -t ext4 -b 4096

start_nbdkit "$d/sock" "$d/pid" "$plugin" "$img"
"$scripts/attach" "$d/sock" "$d/mnt"
cleanup_fn "'$scripts/detach' '$d/mnt' 2>/dev/null"

# Files of several shapes: small, multi-extent, sparse, a directory tree,
# a hard link, a symlink, a rename and a delete.
mkdir -p "$d/mnt/etc" "$d/mnt/data/deep/er"
echo "root:x:0:0:root:/root:/bin/bash" > "$d/mnt/etc/passwd"
head -c 5M /dev/urandom > "$d/expect-big"
cp "$d/expect-big" "$d/mnt/data/big"
truncate -s 10M "$d/mnt/data/sparse"
printf 'tail' | dd of="$d/mnt/data/sparse" bs=1 seek=$((9*1024*1024)) conv=notrunc status=none
ln "$d/mnt/etc/passwd" "$d/mnt/data/deep/er/passwd-link"
ln -s ../etc/passwd "$d/mnt/data/symlink"
echo "temp" > "$d/mnt/data/tmpfile"
mv "$d/mnt/data/tmpfile" "$d/mnt/data/renamed"
echo gone > "$d/mnt/data/deleted"
rm "$d/mnt/data/deleted"
sync

"$scripts/detach" "$d/mnt"
stop_nbdkit "$d/pid"

# Oracle 1: e2fsck finds nothing to fix.
e2fsck -fn "$img"

# Oracle 2: debugfs reads back exactly what the kernel wrote.
debugfs -R 'cat /etc/passwd' "$img" 2>/dev/null > "$d/got-passwd"
[ "$(cat "$d/got-passwd")" = "root:x:0:0:root:/root:/bin/bash" ] ||
    fail "/etc/passwd content differs"
debugfs -R 'dump /data/big '"$d/got-big" "$img" 2>/dev/null
cmp "$d/expect-big" "$d/got-big"
debugfs -R 'dump /data/sparse '"$d/got-sparse" "$img" 2>/dev/null
[ "$(stat -c %s "$d/got-sparse")" -eq $((10*1024*1024)) ] || fail "sparse size"
[ "$(dd if="$d/got-sparse" bs=1 skip=$((9*1024*1024)) count=4 status=none)" = tail ] ||
    fail "sparse tail"
[ "$(debugfs -R 'cat /data/renamed' "$img" 2>/dev/null)" = temp ] || fail "rename"
debugfs -R 'stat /data/deleted' "$img" 2>&1 | grep -q "File not found" ||
    fail "/data/deleted still exists"
[ "$(debugfs -R 'stat /etc/passwd' "$img" 2>/dev/null | grep -o 'Links: [0-9]*')" = "Links: 2" ] ||
    fail "hard link count"
[ "$(debugfs -R 'stat /data/symlink' "$img" 2>/dev/null | grep -o 'Fast link dest: .*')" = 'Fast link dest: "../etc/passwd"' ] ||
    fail "symlink target"

# Nothing left behind: no loop device on our fuse file, no nbdfuse.
! losetup -a | grep -q "$d" || fail "loop device left behind"
! pgrep -f "nbdfuse .*$d" || fail "nbdfuse left behind"
