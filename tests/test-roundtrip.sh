#!/usr/bin/env bash
# tests/test-roundtrip.sh: what a client reads through the plugin is
# byte for byte the image file, and what a client writes lands byte for
# byte in the image file, over one connection and over several.

source ./functions.sh
set -x

requires nbdkit --version
requires nbdcopy --version
requires qemu-io --version
requires mke2fs -V
requires cmp --version
requires dd --version
[ -f "$plugin" ] || fail "plugin not built: $plugin"

tmp="$(tmpdir)"
sock="$tmp/sock"
pid="$tmp/pid"
uri="nbd+unix:///?socket=$sock"
size=$((64*1024*1024))

# random_fs IMAGE: a 64M ext4 image holding a few files of random data
# (about 20M of it), different every time it is called.
random_fs ()
{
    local dir
    dir="$(mktemp -d "$tmp/files.XXXXXX")"
    mkdir "$dir/sub"
    head -c 7M /dev/urandom > "$dir/big.bin"
    head -c 123457 /dev/urandom > "$dir/sub/odd.bin"
    head -c 12M /dev/urandom > "$dir/sub/bigger.bin"
    head -c 4097 /dev/urandom > "$dir/small.bin"
    echo "hello, $RANDOM" > "$dir/hello.txt"
    mkfs_image "$1" "$size" -t ext4 -b 4096 -d "$dir"
    rm -rf "$dir"
}

random_fs "$tmp/disk.img"
cp "$tmp/disk.img" "$tmp/orig.img"

# --- (a) Read the whole export out: it is the image. ----------------

nbdkit -U - "$plugin" "$tmp/disk.img" \
    --run "nbdcopy \"\$uri\" '$tmp/out.img'"
cmp "$tmp/disk.img" "$tmp/out.img" || fail "(a) copy out differs"
cmp "$tmp/orig.img" "$tmp/disk.img" || fail "(a) reading changed the image"

# Four connections at once (the plugin says can_multi_conn).  nbdcopy
# uses no more connections than threads, so ask for four of each.  It
# logs the numbers it settled on and names its handles src0, src1...:
# both prove that it really used four.
rm -f "$tmp/out.img"
start_nbdkit "$sock" "$pid" "$plugin" "$tmp/disk.img"
nbdcopy -v --connections=4 --threads=4 "$uri" "$tmp/out.img" 2>"$tmp/nbdcopy.log" ||
    { tail -20 "$tmp/nbdcopy.log"; fail "(a) nbdcopy -C 4 out failed"; }
grep -q 'connections=4 ' "$tmp/nbdcopy.log" &&
    grep -q 'src3:' "$tmp/nbdcopy.log" || fail "(a) nbdcopy did not use 4 connections"
stop_nbdkit "$pid"
cmp "$tmp/disk.img" "$tmp/out.img" || fail "(a) 4-connection copy out differs"

# --- (b) Write a whole different filesystem in: the image is it. ----

random_fs "$tmp/src.img"
! cmp -s "$tmp/src.img" "$tmp/disk.img" || fail "(b) the images are equal already"
start_nbdkit "$sock" "$pid" "$plugin" "$tmp/disk.img"
nbdcopy --flush "$tmp/src.img" "$uri"
stop_nbdkit "$pid"
cmp "$tmp/src.img" "$tmp/disk.img" || fail "(b) copy in differs"
[ "$(stat -c %s "$tmp/disk.img")" -eq "$size" ] || fail "(b) image size changed"

# Again with four connections, a third filesystem.
random_fs "$tmp/src4.img"
! cmp -s "$tmp/src4.img" "$tmp/disk.img" || fail "(b) the images are equal already"
start_nbdkit "$sock" "$pid" "$plugin" "$tmp/disk.img"
nbdcopy -v --connections=4 --threads=4 --flush "$tmp/src4.img" "$uri" 2>"$tmp/nbdcopy.log" ||
    { tail -20 "$tmp/nbdcopy.log"; fail "(b) nbdcopy -C 4 in failed"; }
grep -q 'connections=4 ' "$tmp/nbdcopy.log" &&
    grep -q 'dst3:' "$tmp/nbdcopy.log" || fail "(b) nbdcopy did not use 4 connections"
stop_nbdkit "$pid"
cmp "$tmp/src4.img" "$tmp/disk.img" || fail "(b) 4-connection copy in differs"
[ "$(stat -c %s "$tmp/disk.img")" -eq "$size" ] || fail "(b) image size changed"

# --- (c) Small writes at awkward offsets, with qemu-io. --------------

cp "$tmp/disk.img" "$tmp/expected.img"

# Each entry: OFFSET LENGTH BYTE (BYTE "z" means a write-zeroes
# request).  Later entries overlap earlier ones on purpose; the last
# write wins.
writes=(
    "0 512 0x11"                        # first sector
    "65536 65536 0xab"                  # aligned 64K
    "1000003 777 0xcd"                  # unaligned start and length
    "4095 2 0xef"                       # straddles a 4K block boundary
    "3000000 10000 0x22"
    "3004000 1000 0x33"                 # inside the previous one
    "1998000 9000 0x99"
    "2000001 5000 z"                    # unaligned zeroes over it
    "2002000 300 0x44"                  # inside the zeroes
    "8388607 1048577 0x5a"              # odd, over a 1M boundary
    "$((size - 513)) 513 0x66"          # the very end of the device
    "$((size - 1)) 1 0x77"              # the last byte
)

qemu_cmds=()
for w in "${writes[@]}"; do
    read -r off len byte <<<"$w"
    if [ "$byte" = z ]; then
        qemu_cmds+=(-c "write -z $off $len")
        byte=0
    else
        qemu_cmds+=(-c "write -P $byte $off $len")
    fi
    # The oracle: the same bytes put into a copy with dd, on the host.
    head -c "$len" /dev/zero | tr '\0' "\\$(printf '%03o' "$byte")" |
        dd of="$tmp/expected.img" bs=1M oflag=seek_bytes seek="$off" \
           conv=notrunc iflag=fullblock status=none
done
# Regions as they must read after all the writes (the overlaps resolved
# by hand, independently of the dd oracle above).
reads=(
    "0 512 0x11"
    "65536 65536 0xab"
    "1000003 777 0xcd"
    "4095 2 0xef"
    "3000000 4000 0x22"
    "3004000 1000 0x33"
    "3005000 5000 0x22"
    "1998000 2001 0x99"
    "2000001 1999 0"
    "2002000 300 0x44"
    "2002300 2701 0"
    "2005001 1999 0x99"
    "8388607 1048577 0x5a"
    "$((size - 513)) 512 0x66"
    "$((size - 1)) 1 0x77"
)
for r in "${reads[@]}"; do
    read -r off len byte <<<"$r"
    qemu_cmds+=(-c "read -P $byte $off $len")
done

start_nbdkit "$sock" "$pid" "$plugin" "$tmp/disk.img"
qemu-io -f raw "$uri" "${qemu_cmds[@]}" -c flush > "$tmp/qemu-io.log" 2>&1 ||
    { cat "$tmp/qemu-io.log"; fail "(c) qemu-io failed"; }
cat "$tmp/qemu-io.log"
! grep -qi 'fail\|error' "$tmp/qemu-io.log" || fail "(c) qemu-io reported a failure"
# A fresh connection sees the same.
qemu_reads=()
for r in "${reads[@]}"; do
    read -r off len byte <<<"$r"
    qemu_reads+=(-c "read -P $byte $off $len")
done
qemu-io -f raw -r "$uri" "${qemu_reads[@]}" > "$tmp/qemu-io.log" 2>&1 ||
    { cat "$tmp/qemu-io.log"; fail "(c) qemu-io read-back failed"; }
! grep -qi 'fail\|error' "$tmp/qemu-io.log" || fail "(c) qemu-io read-back failed"
stop_nbdkit "$pid"

# The bytes on disk: exactly the expected image, nothing else touched.
[ "$(stat -c %s "$tmp/disk.img")" -eq "$size" ] || fail "(c) image size changed"
if ! cmp "$tmp/expected.img" "$tmp/disk.img"; then
    cmp -l "$tmp/expected.img" "$tmp/disk.img" | head -20
    fail "(c) the image file is not what the client wrote"
fi
# Spot checks with od, independently of both dd and qemu-io.
[ "$(od -An -tx1 -j 4094 -N 4 "$tmp/disk.img" | tr -d ' ')" = \
  "$(od -An -tx1 -j 4094 -N 1 "$tmp/src4.img" | tr -d ' ')efef$(od -An -tx1 -j 4097 -N 1 "$tmp/src4.img" | tr -d ' ')" ] ||
    fail "(c) bytes 4094-4097 are wrong"
[ "$(od -An -tx1 -j 3003999 -N 3 "$tmp/disk.img" | tr -d ' ')" = "223333" ] ||
    fail "(c) bytes 3003999-3004001 are wrong"
[ "$(tail -c 2 "$tmp/disk.img" | od -An -tx1 | tr -d ' ')" = "6677" ] ||
    fail "(c) the last two bytes are wrong"

echo "PASS: $0"
