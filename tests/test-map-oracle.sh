#!/usr/bin/env bash
# tests/test-map-oracle.sh: fsevent-map agrees with e2fsprogs on every
# block of generated images.
#
# For each image, tests/map-oracle.py builds the expected role and owner
# of every block from dumpe2fs (fixed metadata, free space) and debugfs
# (stat, icheck, ncheck: block maps, owners, names) and compares it with
# what fsevent-map prints.  The images cover ext2/3/4, block sizes 1k,
# 4k and 64k, indirect maps up to TIND, extent trees of depth 2 and 3, htree
# directories, inline data, bigalloc (1k, 2k and 4k blocks), meta_bg, mmp, quota and orphan
# file inodes, a fast-commit journal, hard links, sparse files, blocks
# past EOF, unwritten extents, a shared xattr block and an image file
# larger than its filesystem; and an ext4 partition of a GPT disk
# (mapped on the disk, checked against the partition copied out with
# dd).  No mount, no root.

source ./functions.sh

requires python3 --version
requires mke2fs -V
requires debugfs -V
requires dumpe2fs -V
requires e2fsck -V
requires truncate --version

map="$top_builddir/tools/fsevent-map"
oracle="$top_srcdir/tests/map-oracle.py"
[ -x "$map" ] || fail "fsevent-map not built: $map"

tmp="$(tmpdir)"
start=$SECONDS
failed=()

# oracle IMAGE: run the oracle, remember a failure and go on, so that
# one run reports every image.
oracle ()
{
    local rc=0
    python3 "$oracle" --map "$map" "$1" || rc=$?
    [ $rc -eq 0 ] || failed+=("$(basename "$1") (exit $rc)")
}

# oracle_partition IMAGE DISK N: the same for IMAGE, partition N of
# DISK copied out; fsevent-map maps DISK itself.
oracle_partition ()
{
    local rc=0
    python3 "$oracle" --map "$map" --device "$2" --partition "$3" "$1" ||
        rc=$?
    [ $rc -eq 0 ] || failed+=("$(basename "$1") (exit $rc)")
}

# debugfs_w IMAGE CMD...: run write commands on IMAGE, fail on any error.
debugfs_w ()
{
    local img="$1" out
    shift
    printf '%s\n' "$@" > "$tmp/cmds"
    out="$(debugfs -w -f "$tmp/cmds" "$img" 2>&1 >/dev/null |
           grep -v '^debugfs [0-9]' || true)"
    [ -z "$out" ] || fail "debugfs -w on $img: $out"
}

# fsck_clean IMAGE: the image must be consistent (e2fsck -fn finds
# nothing), or the oracle would be comparing against garbage.
fsck_clean ()
{
    e2fsck -fn "$1" >"$tmp/fsck.log" 2>&1 ||
        { cat "$tmp/fsck.log"; fail "e2fsck -fn $1 found problems"; }
}

# fsck_fix IMAGE: let e2fsck -fy finish what mke2fs -d or debugfs left
# undone (quota usage, free counts); exit 1 means "fixed".
fsck_fix ()
{
    e2fsck -fy "$1" >"$tmp/fsck.log" 2>&1 || [ $? -le 1 ] ||
        { cat "$tmp/fsck.log"; fail "e2fsck -fy $1 failed"; }
}

# acl_block IMAGE PATH: the xattr block ("File ACL") of PATH.
acl_block ()
{
    debugfs -R "stat $2" "$1" 2>/dev/null |
        sed -n 's/^File ACL: \([0-9]*\).*/\1/p'
}

# make_tree DIR [OPTIONS]: a seed tree for mke2fs -d.  OPTIONS are
# words: many (a directory of 3000 small files), frag=BS (a file of
# thousands of one-block data islands of BS bytes: a deep extent tree),
# tind=BYTES (a sparse file with one byte at offset BYTES), big5m.
make_tree ()
{
    python3 - "$@" <<'EOF'
import os, sys
d = sys.argv[1]
opts = dict((o.split("=") + [""])[:2] for o in sys.argv[2:])
rnd = open("/dev/urandom", "rb")
def put(path, data):
    path = os.path.join(d, path)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)
put("hello.txt", b"hello, world\n")
put("empty", b"")
put("one", b"1")
put("big300k", rnd.read(300 * 1024 + 17))       # DIND with 1k blocks
put("sub/odd4097", rnd.read(4097))
put("sub/deeper/exact8k", rnd.read(8192))
put("sp ace", b"a name with a space\n")
put("caf\u00e9", b"utf-8 name\n")
put('quo"te\\back', b"json escapes\n")
# Hard links: three names in three directories.
put("links/a", b"shared by three names\n")
os.link(os.path.join(d, "links/a"), os.path.join(d, "links/b"))
os.link(os.path.join(d, "links/a"), os.path.join(d, "sub/deeper/c"))
# Symlinks: fast (in the inode) and slow (a data block).
os.symlink("hello.txt", os.path.join(d, "fastlink"))
os.symlink("x" * 200, os.path.join(d, "slowlink"))
os.mkfifo(os.path.join(d, "fifo"))
# Sparse: data islands at odd offsets, then a long hole to i_size.
with open(os.path.join(d, "sparse"), "wb") as f:
    f.write(b"head" * 25)
    f.seek(3 * 1024 * 1024 + 100)
    f.write(rnd.read(5000))
    f.seek(7 * 1024 * 1024 - 1)
    f.write(b"e")
    f.truncate(9 * 1024 * 1024 + 3)
# Extended attributes too big for the inode: they go to a block.
try:
    for n in ("xattr1", "xattr2"):
        put(n, b"has a big xattr\n")
        os.setxattr(os.path.join(d, n), "user.big", b"v" * 700)
except OSError as e:
    print("make_tree: no user xattrs here (%s): skipping them" % e,
          file=sys.stderr)
    for n in ("xattr1", "xattr2"):
        os.remove(os.path.join(d, n))
if "big5m" in opts:
    put("sub/big5m", rnd.read(5 * 1024 * 1024 + 12345))  # DIND with 4k
if "many" in opts:
    for i in range(3000):
        put("many/file-%04d.txt" % i, b"small file %d\n" % i)
if "frag" in opts:
    bs, _, count = opts["frag"].partition(":")
    bs = int(bs)
    count = int(count) if count else (4096 if bs < 4096 else 5120)
    with open(os.path.join(d, "frag"), "wb") as f:
        for i in range(count):
            f.seek(2 * i * bs)
            f.write(b"%08d" % i * (bs // 8))
if "tind" in opts:
    with open(os.path.join(d, "tind"), "wb") as f:
        f.seek(int(opts["tind"]))
        f.write(b"t")
if "inline" in opts:
    for i in range(60):
        put("smalldir/s%02d" % i, b"%d" % i)
EOF
}

# share_xattr IMAGE BS: make /xattr2 use /xattr1's xattr block (same
# content), free its own and set the block's refcount to 2: a shared
# xattr block, as the kernel makes them.  Only without metadata_csum
# (the refcount is under the block's checksum).
share_xattr ()
{
    local img="$1" bs="$2" xa xb
    xa="$(acl_block "$img" /xattr1)"
    xb="$(acl_block "$img" /xattr2)"
    [ -n "$xa" ] && [ "$xa" -ne 0 ] && [ -n "$xb" ] && [ "$xb" -ne 0 ] || {
        echo "share_xattr: no xattr blocks in $img: skipped" >&2
        return 0
    }
    debugfs_w "$img" "sif /xattr2 file_acl $xa" "freeb $xb"
    python3 - "$img" $((xa * bs + 4)) <<'EOF'
import struct, sys
with open(sys.argv[1], "r+b") as f:
    f.seek(int(sys.argv[2]))
    (ref,) = struct.unpack("<I", f.read(4))
    assert ref == 1, ref
    f.seek(int(sys.argv[2]))
    f.write(struct.pack("<I", 2))
EOF
    # debugfs freeb clears the bitmap bit but leaves the free counts.
    fsck_fix "$img"
}

# --- ext2, 1k blocks: indirect maps up to TIND, shared xattr block. ---
img="$tmp/ext2-1k.img"
make_tree "$tmp/t1" tind=$((70 * 1024 * 1024))
mkfs_image "$img" 32M -t ext2 -b 1024 -d "$tmp/t1"
share_xattr "$img" 1024
fsck_clean "$img"
oracle "$img"

# --- ext3, 4k blocks: indirect + journal, DIND and TIND, initialised
# blocks past EOF (debugfs fallocate past i_size on an indirect file). ---
img="$tmp/ext3-4k.img"
make_tree "$tmp/t2" big5m tind=$((5 * 1024 * 1024 * 1024))
mkfs_image "$img" 64M -t ext3 -b 4096 -g 4096 -d "$tmp/t2"
fsck_clean "$img"
# e2fsck wants i_size to cover the blocks of an indirect-mapped file,
# but the kernel leaves such blocks after a crash: map them anyway.
debugfs_w "$img" "fallocate /hello.txt 0 20"
oracle "$img"

# --- ext4, 4k blocks, defaults (flex_bg, 64bit, metadata_csum,
# huge_file, dir_index): an htree of 3000 names (e2fsck -D indexes the
# directory mke2fs -d wrote linearly), a depth-2 extent tree, unwritten
# extents inside and past i_size. ---
img="$tmp/ext4-4k.img"
make_tree "$tmp/t3" many big5m frag=4096
truncate -s 1M "$tmp/t3/prealloc"
mkfs_image "$img" 256M -t ext4 -b 4096 -g 8192 -d "$tmp/t3"
e2fsck -fyD "$img" >/dev/null 2>&1 || [ $? -le 1 ] || fail "e2fsck -fyD $img"
debugfs_w "$img" "fallocate /prealloc 0 255" "fallocate /hello.txt 0 20"
debugfs -R "htree /many" "$img" 2>/dev/null | grep -q "Root node dump" ||
    fail "/many is not an htree"
fsck_clean "$img"
oracle "$img"

# --- ext4 with inline_data: small files and directories in the inode. ---
img="$tmp/ext4-inline.img"
make_tree "$tmp/t4" inline
mkfs_image "$img" 32M -t ext4 -b 4096 -O inline_data -d "$tmp/t4"
fsck_clean "$img"
oracle "$img"

# --- ext4, 1k blocks, with quota and orphan file inodes and a
# fast-commit journal; an extent tree of depth 3; the image file is larger
# than the filesystem (an 'outside' tail that is not a whole block). ---
img="$tmp/ext4-1k.img"
make_tree "$tmp/t5" frag=1024:30000 tind=$((70 * 1024 * 1024))
mkfs_image "$img" 64M -t ext4 -b 1024 -O quota,orphan_file,fast_commit \
    -d "$tmp/t5"
fsck_fix "$img"                 # mke2fs -d leaves the quota usage at 0
fsck_clean "$img"
truncate -s $((65 * 1024 * 1024 + 123)) "$img"
# 30000 one-block extents do not fit a tree of depth 2 with 1k blocks.
# debugfs prints "LEVEL/ DEPTH" first on each line.
depth="$(debugfs -R 'ex /frag' "$img" 2>/dev/null | awk '$1 ~ /^[0-9]+\/$/ { print $2; exit }')"
[ "$depth" = 3 ] || fail "ext4-1k: /frag has an extent tree of depth '$depth', not 3"
oracle "$img"

# --- ext4, 64k blocks (mke2fs warns: not mountable here). ---
img="$tmp/ext4-64k.img"
make_tree "$tmp/t6" big5m
mkfs_image "$img" 512M -t ext4 -b 65536 -g 2048 -d "$tmp/t6"
debugfs_w "$img" "fallocate /hello.txt 0 3"
fsck_clean "$img"
oracle "$img"

# --- ext4 bigalloc: 16k clusters (3 groups) and 64k clusters; the
# unused blocks of allocated clusters are free but allocated. ---
img="$tmp/ext4-bigalloc16k.img"
make_tree "$tmp/t7" big5m frag=4096
mkfs_image "$img" 1280M -t ext4 -b 4096 -O bigalloc -C 16384 -d "$tmp/t7"
fsck_clean "$img"
oracle "$img"

img="$tmp/ext4-bigalloc64k.img"
make_tree "$tmp/t8"
mkfs_image "$img" 128M -t ext4 -b 4096 -O bigalloc -C 65536 -d "$tmp/t8"
fsck_clean "$img"
oracle "$img"

# --- bigalloc with 1k and 2k blocks.  With 1k blocks s_first_data_block
# is 0 but the superblock lies at block 1 (issue 14: it was mapped at
# byte 0 and block 1 as free).  16k clusters in one group, as the issue
# had it; 2k clusters in five groups without flex_bg, where the resize
# inode's backup entries lie one block past dumpe2fs's reserved GDT
# blocks (an e2fsprogs inconsistency the oracle knows about: see
# resize_backup_shift in map-oracle.py); 4k clusters with meta_bg; 2k
# blocks with 8k clusters in three groups. ---
make_tree "$tmp/t11"
img="$tmp/ext4-bigalloc-1k-c16k.img"
mkfs_image "$img" 64M -t ext4 -b 1024 -O bigalloc -C 16384 -d "$tmp/t11"
fsck_clean "$img"
oracle "$img"

img="$tmp/ext4-bigalloc-1k-c2k.img"
mkfs_image "$img" 72M -t ext4 -b 1024 -O bigalloc,^flex_bg -C 2048 \
    -d "$tmp/t11"
fsck_clean "$img"
oracle "$img"

img="$tmp/ext4-bigalloc-1k-c4k-metabg.img"
mkfs_image "$img" 40M -t ext4 -b 1024 -O bigalloc,meta_bg,^resize_inode \
    -C 4096 -d "$tmp/t11"
fsck_clean "$img"
oracle "$img"

img="$tmp/ext4-bigalloc-2k-c8k.img"
mkfs_image "$img" 300M -t ext4 -b 2048 -O bigalloc -C 8192 -d "$tmp/t11"
fsck_clean "$img"
oracle "$img"

# --- ext4 meta_bg without resize inode, 1k blocks, small groups (four
# meta groups), with an MMP block. ---
img="$tmp/ext4-metabg.img"
make_tree "$tmp/t9"
mkfs_image "$img" 64M -t ext4 -b 1024 -g 1024 -N 4096 \
    -O meta_bg,^resize_inode,mmp -d "$tmp/t9"
fsck_clean "$img"
oracle "$img"

# --- A GPT disk made by sgdisk: an EFI system partition (vfat) and a
# Linux partition holding an ext4 filesystem 1M smaller than it (an
# 'outside' tail).  fsevent-map maps the disk; the oracle reads the
# partition copied out with dd.  Without --partition the tool maps
# partition 2 alone, with device offsets, and says why it skipped
# partition 1. ---
if command -v sgdisk >/dev/null && command -v sfdisk >/dev/null &&
        command -v mkfs.vfat >/dev/null; then
    disk="$tmp/gpt-disk.img"
    truncate -s 80M "$disk"
    sgdisk -n 1:2048:+8M -t 1:ef00 -c 1:EFI -n 2:0:+65M -t 2:8300 \
           -c 2:root "$disk" >/dev/null
    # part N FIELD: start or size (sectors) of partition N, per sfdisk.
    part ()
    {
        sfdisk --json "$disk" | python3 -c '
import json, sys
for p in json.load(sys.stdin)["partitiontable"]["partitions"]:
    if p["node"].endswith(sys.argv[1]):
        print(p[sys.argv[2]])' "$1" "$2"
    }
    truncate -s 8M "$tmp/esp.img"
    mkfs.vfat "$tmp/esp.img" >/dev/null
    dd if="$tmp/esp.img" of="$disk" bs=512 seek="$(part 1 start)" \
       conv=notrunc status=none
    make_tree "$tmp/t10" big5m
    mkfs_image "$tmp/root.img" 64M -t ext4 -b 4096 -d "$tmp/t10"
    fsck_clean "$tmp/root.img"
    pstart="$(part 2 start)" psize="$(part 2 size)"
    dd if="$tmp/root.img" of="$disk" bs=512 seek="$pstart" conv=notrunc \
       status=none
    dd if="$disk" of="$tmp/gpt-part2.img" bs=512 skip="$pstart" \
       count="$psize" status=none
    cmp -n $((64 << 20)) "$tmp/root.img" "$tmp/gpt-part2.img" ||
        fail "the partition copied out is not the filesystem copied in"
    oracle_partition "$tmp/gpt-part2.img" "$disk" 2
    # ... and notices a map off by one sector.
    cat > "$tmp/shift-map" <<EOF
#!/bin/sh
"$map" "\$@" | python3 -c '
import json, sys
for line in sys.stdin:
    s = json.loads(line)
    s["offset"] += 512
    print(json.dumps(s))
'
EOF
    chmod +x "$tmp/shift-map"
    if python3 "$oracle" --map "$tmp/shift-map" --details 2 --device "$disk" \
            --partition 2 "$tmp/gpt-part2.img" > "$tmp/shift.log" 2>&1; then
        cat "$tmp/shift.log"
        fail "the oracle did not notice a partition's map off by 512 bytes"
    fi
    grep -q 'FAIL:.*coverage' "$tmp/shift.log" ||
        { cat "$tmp/shift.log"; fail "the oracle failed for another reason"; }

    "$map" "$disk" > "$tmp/disk.jsonl" 2> "$tmp/disk.err" ||
        { cat "$tmp/disk.err"; fail "fsevent-map $disk failed"; }
    grep -q "^fsevent-map: $disk: partition 1 (vfat, .*: skipped: " \
         "$tmp/disk.err" ||
        { cat "$tmp/disk.err"; fail "fsevent-map did not say why it skipped partition 1"; }
    [ "$(grep -vc ': partition 1 (vfat' "$tmp/disk.err")" = 0 ] ||
        { cat "$tmp/disk.err"; fail "fsevent-map $disk: unexpected stderr"; }
    python3 - "$tmp/disk.jsonl" $((pstart * 512)) $((psize * 512)) <<'EOF' ||
import json, sys
start, size = int(sys.argv[2]), int(sys.argv[3])
end = start
for line in open(sys.argv[1]):
    s = json.loads(line)
    assert s["partition"] == 2, s
    assert s["offset"] == end, (s, end)
    end = s["offset"] + s["length"]
assert end == start + size, (end, start + size)
EOF
        fail "fsevent-map $disk: segments not partition 2's, in order"

    # Refusals: a partition that is not ext, one that does not exist, a
    # table whose primary and backup GPT headers are both damaged.
    for p in 1 3; do
        rc=0
        "$map" --partition $p "$disk" > "$tmp/p.out" 2> "$tmp/p.err" || rc=$?
        [ $rc = 1 ] && [ ! -s "$tmp/p.out" ] &&
            grep -q "^fsevent-map: $disk: .*partition $p" "$tmp/p.err" ||
            { cat "$tmp/p.err"; fail "--partition $p: exit $rc"; }
    done
    python3 - "$disk" <<'EOF'
import sys
with open(sys.argv[1], "r+b") as f:
    for at in (512 + 60, 80 * 1024 * 1024 - 512 + 60):   # the disk GUID
        f.seek(at)
        b = f.read(1)[0]
        f.seek(at)
        f.write(bytes([b ^ 0xff]))
EOF
    rc=0
    "$map" "$disk" > "$tmp/p.out" 2> "$tmp/p.err" || rc=$?
    [ $rc = 1 ] && [ ! -s "$tmp/p.out" ] &&
        grep -q "^fsevent-map: $disk: partition table: GPT header CRC mismatch and backup header unusable" "$tmp/p.err" ||
        { cat "$tmp/p.err"; fail "damaged GPT: exit $rc"; }
else
    echo "test-map-oracle: sgdisk, sfdisk or mkfs.vfat missing:" \
         "partitioned disk not tested" >&2
fi

# --- The oracle catches a wrong map: a fake fsevent-map that moves one
# data block's position must fail. ---
cat > "$tmp/bad-map" <<EOF
#!/bin/sh
"$map" "\$@" | python3 -c '
import json, sys
done = False
for line in sys.stdin:
    s = json.loads(line)
    if not done and s["role"] == "data" and s["length"] >= 2048:
        s["position"] += 1024
        done = True
    print(json.dumps(s))
'
EOF
chmod +x "$tmp/bad-map"
if python3 "$oracle" --map "$tmp/bad-map" --details 2 "$tmp/ext2-1k.img" \
        > "$tmp/bad.log" 2>&1; then
    cat "$tmp/bad.log"
    fail "the oracle did not notice a wrong position"
fi
grep -q 'FAIL:.*position' "$tmp/bad.log" ||
    { cat "$tmp/bad.log"; fail "the oracle failed for another reason"; }

echo "test-map-oracle: $((SECONDS - start))s"
[ ${#failed[@]} -eq 0 ] || fail "mismatches on: ${failed[*]}"
