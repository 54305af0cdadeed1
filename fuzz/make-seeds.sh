#!/usr/bin/env bash
# fuzz/make-seeds.sh OUTDIR [CORPUS]: write the seed corpora of the
# fuzz targets into OUTDIR/jbd2, OUTDIR/partition and OUTDIR/layout.
#
#   layout     small images made by mke2fs -d from a tree of files
#              (ext2 1k, ext3 1k with a journal, ext4 4k, ext4 with
#              inline_data, htree, bigalloc 1k, meta_bg, 2k blocks),
#              256 KiB to 2 MiB; one ext3 with transactions debugfs
#              wrote into its journal and left unreplayed.
#   jbd2       journals (the journal inode dumped by debugfs, its first
#              256 KiB: the log lies at its start) of images with
#              transactions written by debugfs jo/jw/jc: 32-bit, 64-bit,
#              csum v2 and v3, revoke blocks, a wrapped log.
#   partition  whole small disks (64-512 KiB): MBR with primaries, an
#              extended partition and logicals (sfdisk), GPT (sgdisk)
#              with named partitions, an ext2 filesystem in one; a
#              bare ext2 filesystem; a protective MBR alone.
#   update     the layout images, with patches (fuzz-update's format).
#   follow     small images with protected files and guest write
#              sequences (fuzz-follow's format), by fuzz/follow-seeds.py.
#
# With CORPUS (the e2fsprogs test images, ../shared/corpus/e2fsprogs),
# its images of at most 2 MiB are decompressed into OUTDIR/e2fsprogs
# (a layout corpus; they are never copied into the repository) and the
# journals of its j_* images dumped into OUTDIR/jbd2.  Needs mke2fs,
# debugfs, sfdisk and sgdisk (the partition seeds they make are left
# out without them).
set -euo pipefail
out="$1"
corpus="${2:-}"
export PATH="$PATH:/usr/sbin:/sbin"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$out/layout" "$out/jbd2" "$out/partition"

# --- A small tree for mke2fs -d. ---
tree="$tmp/tree"
mkdir -p "$tree/sub/deeper" "$tree/dir"
echo "hello, world" > "$tree/hello.txt"
: > "$tree/empty"
head -c 20000 /dev/urandom > "$tree/sub/twenty-k"
head -c 4097 /dev/urandom > "$tree/sub/deeper/odd"
ln "$tree/hello.txt" "$tree/sub/link"
ln -s hello.txt "$tree/fastlink"
ln -s "$(printf 'x%.0s' $(seq 1 100))" "$tree/slowlink"
for i in $(seq 1 120); do echo "$i" > "$tree/dir/file-with-a-longer-name-$i"; done
python3 - "$tree" <<'PY'
import os, sys
d = sys.argv[1]
with open(os.path.join(d, "sparse"), "wb") as f:
    f.write(b"head")
    f.seek(300 * 1024)
    f.write(b"tail")
try:
    open(os.path.join(d, "xattr"), "w").write("x\n")
    os.setxattr(os.path.join(d, "xattr"), "user.big", b"v" * 600)
except OSError:
    pass
PY

mk () {                          # mk NAME SIZE MKE2FS-OPTIONS...
    local name="$1" size="$2"
    shift 2
    rm -f "$tmp/$name"
    truncate -s "$size" "$tmp/$name"
    mke2fs -q -F "$@" -d "$tree" "$tmp/$name" >/dev/null 2>&1 ||
        { echo "make-seeds: mke2fs $* failed: $name left out" >&2; return 0; }
    cp "$tmp/$name" "$out/layout/$name"
}
mk ext2-1k.img 512K -t ext2 -b 1024 -N 256
mk ext2-1k-small-groups.img 512K -t ext2 -b 1024 -g 1024 -N 256
mk ext3-1k.img 2M -t ext3 -b 1024 -N 256
mk ext4-4k.img 1M -t ext4 -b 4096 -O ^has_journal -N 256
mk ext4-1k-inline.img 512K -t ext4 -b 1024 -O ^has_journal,inline_data -N 256
mk ext4-1k-bigalloc.img 1M -t ext4 -b 1024 -O ^has_journal,bigalloc -C 4096 -N 256
mk ext4-1k-metabg.img 1M -t ext4 -b 1024 -g 1024 -O ^has_journal,^resize_inode,meta_bg -N 256
mk ext4-2k.img 1M -t ext4 -b 2048 -O ^has_journal,^metadata_csum -N 256
mk ext4-1k-journal.img 2M -t ext4 -b 1024 -N 256

# --- Journals with transactions written by debugfs. ---
# jseed NAME JO MKE2FS-OPTIONS...: a 2 MiB image whose journal holds
# transactions debugfs wrote after "JO" (jo [-c [-v 2]]): copies of
# blocks (one starting with the jbd2 magic: escaped), revokes, and a
# last transaction left uncommitted; its journal inode dumped.
head -c 40960 /dev/urandom > "$tmp/data"
printf '\xc0\x3b\x39\x98' | dd of="$tmp/data" bs=1 seek=1024 conv=notrunc status=none
jseed () {
    local name="$1" jo="$2"
    shift 2
    rm -f "$tmp/j.img"
    truncate -s 2M "$tmp/j.img"
    mke2fs -q -F -b 1024 -N 128 "$@" "$tmp/j.img" >/dev/null 2>&1 ||
        { echo "make-seeds: mke2fs $* failed: $name left out" >&2; return 0; }
    printf '%s\n' "$jo" "jw -b 333,334 $tmp/data" "jw -r 335,336 $tmp/data" \
        "jw -b 400,401,402 $tmp/data" "jw -b 500 -c $tmp/data" \
        "jw -b 600-610 $tmp/data" "jc" > "$tmp/cmds"
    debugfs -w -f "$tmp/cmds" "$tmp/j.img" >/dev/null 2>&1 || true
    debugfs -R "dump <8> $tmp/j.dump" "$tmp/j.img" >/dev/null 2>&1
    head -c 262144 "$tmp/j.dump" > "$out/jbd2/$name"
    [ "$name" = csum3.j ] && cp "$tmp/j.img" "$out/layout/ext4-1k-unreplayed.img"
    return 0
}
jseed plain32.j jo -t ext3
jseed 64bit.j jo -t ext4 -O 64bit,^metadata_csum
jseed csum3.j "jo -c" -t ext4 -O metadata_csum
jseed csum2.j "jo -c -v 2" -t ext4 -O metadata_csum,^64bit
jseed csum1.j "jo -c" -t ext4 -O ^metadata_csum

# --- Partitioned disks. ---
if command -v sfdisk >/dev/null; then
    d="$tmp/mbr.img"; rm -f "$d"; truncate -s 512K "$d"
    printf '%s\n' 'label: dos' 'start=1, size=200, type=83' \
        'start=201, size=600, type=5' 'start=801, size=100, type=c' |
        sfdisk -q "$d" >/dev/null 2>&1 &&
    printf '%s\n' 'start=203, size=100, type=83' 'start=305, size=100, type=82' |
        sfdisk -q -a "$d" >/dev/null 2>&1 || true
    # an ext2 inside the first partition
    truncate -s 100K "$tmp/p1.img"
    mke2fs -q -F -t ext2 -b 1024 -N 16 "$tmp/p1.img" >/dev/null 2>&1 &&
        dd if="$tmp/p1.img" of="$d" bs=512 seek=1 conv=notrunc status=none
    cp "$d" "$out/partition/mbr-logicals.img"
fi
if command -v sgdisk >/dev/null; then
    d="$tmp/gpt.img"; rm -f "$d"; truncate -s 256K "$d"
    sgdisk -a 1 -n 1:34:+40K -t 1:ef00 -c 1:EFI -n 2:0:+100K -t 2:8300 \
        -c 2:root -n 3:0:0 -t 3:8200 -c 3:"swap ü" "$d" >/dev/null 2>&1 &&
    { [ -f "$tmp/p1.img" ] &&
          dd if="$tmp/p1.img" of="$d" bs=512 seek=$((34 + 80)) conv=notrunc \
             status=none; cp "$d" "$out/partition/gpt.img"; } || true
    d="$tmp/gpt-small.img"; rm -f "$d"; truncate -s 64K "$d"
    sgdisk -a 1 -n 1:34:+10K "$d" >/dev/null 2>&1 &&
        cp "$d" "$out/partition/gpt-small.img" || true
    # the protective MBR alone: its GPT wiped
    if [ -f "$out/partition/gpt-small.img" ]; then
        head -c 512 "$out/partition/gpt-small.img" > "$out/partition/protective-only.img"
        truncate -s 64K "$out/partition/protective-only.img"
    fi
fi
truncate -s 128K "$tmp/bare.img"
mke2fs -q -F -t ext2 -b 1024 -N 16 "$tmp/bare.img" >/dev/null 2>&1 &&
    cp "$tmp/bare.img" "$out/partition/bare-ext2.img"

# --- fuzz-update: the layout images, unpatched and with patches of an
# inode's size, mode and link count and of an extent (see the target's
# input format). ---
mkdir -p "$out/update"
for f in "$out"/layout/*; do
    python3 - "$f" "$out/update/$(basename "$f")" <<'PY' || true
import re, struct, subprocess, sys
src, out = sys.argv[1], sys.argv[2]
img = open(src, "rb").read()[:262144]
sb = img[1024:2048]
bs = 1024 << struct.unpack_from("<I", sb, 24)[0]
isz = struct.unpack_from("<H", sb, 88)[0] or 128
open(out + ".0", "wb").write(bytes([0]) + img)
d = subprocess.run(["dumpe2fs", src], capture_output=True, text=True).stdout
m = re.search(r"Inode table at (\d+)", d)
if not m:
    sys.exit(0)
it = int(m.group(1))
def patch(ino, field, data):
    off = (ino - 1) * isz + field
    return struct.pack("<HHB", it + off // bs, off % bs, len(data)) + data
seeds = [patch(12, 4, b"\x10\x00"), patch(12, 0, b"\xff\x81"),
         patch(2, 26, b"\x05\x00"), patch(12, 60, b"\x00\x00\x00\x00")]
for i, p in enumerate(seeds):
    open("%s.%d" % (out, i + 1), "wb").write(bytes([1]) + p + img)

# Real changes: what debugfs writes for a mkdir, a new file, a symlink,
# a hard link and an unlink, as patches (when they fit the format: at
# most 32 patches of at most 255 bytes, blocks below 65536), so that the
# fuzzer starts from transactions a kernel could commit.
import os, tempfile
full = open(src, "rb").read()
with tempfile.TemporaryDirectory() as t:
    data = os.path.join(t, "data")
    open(data, "wb").write(b"seed data\n" * 20)
    ops = [["mkdir /seed-dir"], ["write %s /seed-file" % data],
           ["symlink /seed-link /seed-target"],
           ["mkdir /seed-dir", "ln /seed-dir /seed-dir/again"],
           ["write %s /seed-file" % data, "ln /seed-file /seed-link2",
            "unlink /seed-file"]]
    for k, op in enumerate(ops):
        cp = os.path.join(t, "copy.img")
        open(cp, "wb").write(full)
        r = subprocess.run(["debugfs", "-w", "-f", "-", cp], input="\n".join(op) + "\n",
                           capture_output=True, text=True)
        after = open(cp, "rb").read()
        if r.returncode != 0 or len(after) != len(full) or after == full:
            continue
        runs, i, n = [], 0, len(full)
        while i < n:
            if full[i] == after[i]:
                i += 1
                continue
            j = i
            while j < n and (full[j] != after[j] or
                             any(full[x] != after[x] for x in range(j, min(j + 32, n)))):
                j += 1
            runs.append((i, j))
            i = j
        patches = []
        for a, b in runs:
            while a < b:
                e = min(b, a + 255, (a // bs + 1) * bs)
                patches.append((a, after[a:e]))
                a = e
        if len(patches) > 32 or any(a // bs > 65535 for a, _ in patches):
            continue
        enc = b"".join(struct.pack("<HHB", a // bs, a % bs, len(p)) + p
                       for a, p in patches)
        open("%s.op%d" % (out, k), "wb").write(bytes([len(patches)]) + enc + img)
PY
done

# --- fuzz-follow: images and write sequences (fuzz/follow-seeds.py). ---
python3 "$(dirname "$0")/follow-seeds.py" "$out" ||
    echo "make-seeds: fuzz-follow's seeds failed: left out" >&2

# --- The e2fsprogs corpus, referenced at run time. ---
if [ -n "$corpus" ] && [ -d "$corpus" ]; then
    mkdir -p "$out/e2fsprogs"
    for f in "$corpus"/*; do
        name="$(basename "$f")"
        case "$name" in
            *.tar.bz2) continue ;;
            *.bz2) bzip2 -dc "$f" > "$tmp/c.img" 2>/dev/null || continue ;;
            *.gz)  gzip -dc "$f" > "$tmp/c.img" 2>/dev/null || continue ;;
            *image) cp "$f" "$tmp/c.img" ;;
            *) continue ;;
        esac
        size=$(stat -c %s "$tmp/c.img")
        if [ "$size" -le 2097152 ]; then
            cp "$tmp/c.img" "$out/e2fsprogs/${name%%--*}.img"
        fi
        case "$name" in
            j_*) debugfs -R "dump <8> $tmp/c.j" "$tmp/c.img" >/dev/null 2>&1 &&
                     [ -s "$tmp/c.j" ] &&
                     head -c 262144 "$tmp/c.j" > "$out/jbd2/e2fsprogs-${name%%--*}.j"
                 rm -f "$tmp/c.j" ;;
        esac
    done
fi
echo "make-seeds: layout $(ls "$out/layout" | wc -l), update $(ls "$out/update" | wc -l), jbd2 $(ls "$out/jbd2" | wc -l)," \
     "follow $(ls "$out/follow" 2>/dev/null | wc -l)," \
     "partition $(ls "$out/partition" | wc -l)${corpus:+, e2fsprogs $(ls "$out/e2fsprogs" 2>/dev/null | wc -l)}"
