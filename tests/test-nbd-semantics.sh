#!/usr/bin/env bash
# tests/test-nbd-semantics.sh: flush, FUA, trim, zero, fast zero,
# extents, cache, block size and read-only, as a client sees them,
# checked against the image file on the host (stat, dd, SEEK_DATA and
# SEEK_HOLE, qemu-img map).

source ./functions.sh
set -x

requires nbdkit --version
requires mke2fs -V
requires debugfs -V
requires dumpe2fs -V
requires qemu-img --version
requires dd --version
requires cmp --version
[ -f "$plugin" ] || fail "plugin not built: $plugin"

# nbdsh is "python3 -m nbd"; the python3 first on $PATH may not be the
# one that has the libnbd bindings, so look for one that has.
nbdsh=()
if nbdsh -c pass >/dev/null 2>&1; then
    nbdsh=(nbdsh)
else
    for py in python3 /usr/bin/python3; do
        if "$py" -c 'import nbd' >/dev/null 2>&1; then
            nbdsh=("$py" -m nbd)
            break
        fi
    done
fi
[ ${#nbdsh[@]} -gt 0 ] || requires nbdsh -c pass

tmp="$(tmpdir)"
sock="$tmp/sock"
pid="$tmp/pid"
uri="nbd+unix:///?socket=$sock"
MiB=$((1024*1024))
export IMG="$tmp/disk.img"

# Trim, zero and extents are checked through the host filesystem under
# $tmp (the image file lives there): it must punch holes, and account
# for them in st_blocks.
head -c $MiB /dev/urandom > "$tmp/probe"
requires fallocate --punch-hole --offset 0 --length $MiB "$tmp/probe"
if [ "$(stat -c %b "$tmp/probe")" -ge 2048 ]; then
    echo "SKIP: $0: the filesystem under $tmp does not free punched blocks" >&2
    exit 77
fi
rm -f "$tmp/probe"

# Helpers shared by every Python snippet below (not traced: see the file).
{ set +x; } 2>/dev/null
prelude='
import errno, json, os, nbd
IMG = os.environ["IMG"]
HOLE = nbd.STATE_HOLE | nbd.STATE_ZERO

def add(runs, off, length, flags):
    if runs and runs[-1][2] == flags and runs[-1][0] + runs[-1][1] == off:
        runs[-1] = (runs[-1][0], runs[-1][1] + length, flags)
    else:
        runs.append((off, length, flags))

def server_extents(start, end, h=h):
    """The base:allocation runs the server reports for [start, end)."""
    runs = []
    off = start
    while off < end:
        got = []
        def cb(ctx, o, ents, err):
            got.append((ctx, o, list(ents)))
            return 0
        h.block_status(end - off, off, cb)
        assert len(got) == 1, got
        ctx, o, ents = got[0]
        assert ctx == nbd.CONTEXT_BASE_ALLOCATION, ctx
        assert o == off, (o, off)
        assert len(ents) >= 2 and len(ents) % 2 == 0, ents
        for i in range(0, len(ents), 2):
            length, flags = ents[i], ents[i + 1]
            assert length > 0, ents
            assert flags in (0, HOLE), ents
            length = min(length, end - off)
            if length <= 0:
                break
            add(runs, off, length, flags)
            off += length
    return runs

def file_extents(start, end):
    """The same runs, from SEEK_DATA and SEEK_HOLE on the image file."""
    runs = []
    fd = os.open(IMG, os.O_RDONLY)
    try:
        off = start
        while off < end:
            try:
                data = min(os.lseek(fd, off, os.SEEK_DATA), end)
            except OSError as e:
                assert e.errno == errno.ENXIO, e
                data = end
            if data > off:
                add(runs, off, data - off, HOLE)
                off = data
            if off >= end:
                break
            hole = min(os.lseek(fd, off, os.SEEK_HOLE), end)
            add(runs, off, hole - off, 0)
            off = hole
    finally:
        os.close(fd)
    return runs

def is_hole(off, n):
    runs = server_extents(off, off + n)
    assert runs == [(off, n, HOLE)], ("server", runs)
    runs = file_extents(off, off + n)
    assert runs == [(off, n, HOLE)], ("file", runs)

def is_zero(off, n):
    assert h.pread(n, off) == bytearray(n), "not zero through the server"
    with open(IMG, "rb") as f:
        f.seek(off)
        assert f.read(n) == bytes(n), "not zero in the image file"

def fails(fn, *args, err=None):
    try:
        fn(*args)
    except nbd.Error as e:
        print("failed as expected:", e)
        # libnbd gives the errno by name ("EPERM").
        assert err is None or e.errno in (err, errno.errorcode[err]), (e.errno, err)
        return
    raise AssertionError("%s%r succeeded" % (fn.__name__, args))
'

{ set +x; } 2>/dev/null
echo "$prelude" > "$tmp/prelude.py"
set -x

# nbd PYTHON: run PYTHON (after the prelude) on a fresh connection.
nbd ()
{
    "${nbdsh[@]}" --base-allocation -u "$uri" \
        -c "exec(open('$tmp/prelude.py').read())" -c "$1"
}
blocks () { stat -c %b "$IMG"; }

# fs_free START COUNT: the filesystem's blocks START..START+COUNT-1 are
# all free (debugfs is the oracle), so the client may scribble there.
fs_free ()
{
    local n
    n="$(debugfs -R "testb $1 $2" "$IMG" 2>/dev/null | grep -c 'not in use')"
    [ "$n" -eq "$2" ] || fail "blocks $1+$2 are not all free ($n are)"
}

# --- Capabilities and block size. -----------------------------------

for bs in 4096 1024 2048; do
    mkfs_image "$IMG" 64M -t ext4 -b $bs
    fsbs="$(dumpe2fs -h "$IMG" 2>/dev/null | sed -n 's/^Block size: *//p')"
    [ "$fsbs" -eq "$bs" ] || fail "mke2fs made block size $fsbs, not $bs"
    start_nbdkit "$sock" "$pid" "$plugin" "$IMG"
    FSBS=$fsbs nbd '
assert h.get_size() == os.stat(IMG).st_size
assert not h.is_read_only()
for cap in ("can_flush", "can_fua", "can_trim", "can_zero", "can_fast_zero",
            "can_multi_conn", "can_cache"):
    assert getattr(h, cap)(), cap
assert h.can_meta_context(nbd.CONTEXT_BASE_ALLOCATION)
pref = h.get_block_size(nbd.SIZE_PREFERRED)
print("preferred block size", pref)
assert pref == int(os.environ["FSBS"]), pref
assert h.get_block_size(nbd.SIZE_MINIMUM) <= pref <= h.get_block_size(nbd.SIZE_MAXIMUM)
'
    stop_nbdkit "$pid"
done

# --- Write, FUA, flush, trim, zero, cache on a 4K-block image. -------

mkfs_image "$IMG" 64M -t ext4 -b 4096
size="$(stat -c %s "$IMG")"
fs_free 10240 1024                      # 40M..44M are free space
start_nbdkit "$sock" "$pid" "$plugin" "$IMG"

# FUA write, then read the bytes with dd on the host while the server
# still runs; and a write on one connection is read on another.
head -c $((64*1024 + 123)) /dev/urandom > "$tmp/fua.bin"
DATA="$tmp/fua.bin" nbd '
data = open(os.environ["DATA"], "rb").read()
h.pwrite(data, 40 * 1024 * 1024 + 7, nbd.CMD_FLAG_FUA)
h.flush()
h2 = nbd.NBD()
h2.connect_uri(h.get_uri())
h2.pwrite(b"other connection", 41 * 1024 * 1024)
assert h.pread(16, 41 * 1024 * 1024) == b"other connection"
h.flush()
h2.shutdown()
'
dd if="$IMG" iflag=skip_bytes,count_bytes skip=$((40*MiB + 7)) \
   count=$((64*1024 + 123)) status=none | cmp - "$tmp/fua.bin" ||
    fail "the FUA write is not in the image file"
[ "$(dd if="$IMG" iflag=skip_bytes,count_bytes skip=$((41*MiB)) count=16 \
      status=none)" = "other connection" ] ||
    fail "the second connection's write is not in the image file"

# Trim an aligned 1 MiB of free space that the client filled first.
head -c $MiB /dev/urandom > "$tmp/1m.bin"
fill () { DATA="$tmp/1m.bin" OFF=$1 nbd '
h.pwrite(open(os.environ["DATA"], "rb").read(), int(os.environ["OFF"]), nbd.CMD_FLAG_FUA)'; }
# The allocation must rise by at least 1 MiB (in 512-byte units) when
# filled and fall by at least 1 MiB (give or take one extent-tree
# block) when punched.
grew ()   { [ $(( $2 - $1 )) -ge 2048 ] || fail "$3: allocation $1 -> $2 did not grow by 1 MiB"; }
shrank () { [ $(( $1 - $2 )) -ge 2040 ] || fail "$3: allocation $1 -> $2 did not drop by 1 MiB"; }

off=$((42*MiB))
b0=$(blocks); fill $off; b1=$(blocks)
grew "$b0" "$b1" "fill before trim"
OFF=$off nbd '
off = int(os.environ["OFF"])
assert server_extents(off, off + 2**20) == [(off, 2**20, 0)]
h.trim(2**20, off)
h.flush()
is_hole(off, 2**20)
is_zero(off, 2**20)
'
b2=$(blocks)
shrank "$b1" "$b2" "trim"

# Zero without NO_HOLE: the plugin may punch, and does.
b0=$(blocks); fill $off; b1=$(blocks)
grew "$b0" "$b1" "fill before zero"
OFF=$off nbd '
off = int(os.environ["OFF"])
h.zero(2**20, off)
is_hole(off, 2**20)
is_zero(off, 2**20)
'
b2=$(blocks)
shrank "$b1" "$b2" "zero (may trim)"

# Zero with NO_HOLE: reads zero, allocation stays.
fill $off; b1=$(blocks)
OFF=$off nbd '
off = int(os.environ["OFF"])
h.zero(2**20, off, nbd.CMD_FLAG_NO_HOLE | nbd.CMD_FLAG_FUA)
is_zero(off, 2**20)
'
b2=$(blocks)
[ "$b2" -ge "$b1" ] || fail "zero NO_HOLE: allocation dropped $b1 -> $b2"

# Fast zero on a regular file succeeds, with and without NO_HOLE, at an
# unaligned offset too.
fill $off
OFF=$off nbd '
off = int(os.environ["OFF"])
h.zero(2**20, off, nbd.CMD_FLAG_FAST_ZERO | nbd.CMD_FLAG_NO_HOLE)
is_zero(off, 2**20)
h.pwrite(b"\xff" * 2**20, off)
h.zero(2**20, off, nbd.CMD_FLAG_FAST_ZERO)
is_zero(off, 2**20)
h.pwrite(b"\xff" * 8192, off)
h.zero(5000, off + 1001, nbd.CMD_FLAG_FAST_ZERO)
assert h.pread(8192, off) == b"\xff" * 1001 + bytes(5000) + b"\xff" * 2191
h.zero(5000, off + 1001, nbd.CMD_FLAG_FAST_ZERO | nbd.CMD_FLAG_NO_HOLE)
h.flush()
'
dd if="$IMG" iflag=skip_bytes,count_bytes skip=$off count=8192 status=none |
    cmp - <( { head -c 1001 /dev/zero | tr '\0' '\377'; head -c 5000 /dev/zero;
               head -c 2191 /dev/zero | tr '\0' '\377'; } ) ||
    fail "unaligned fast zero: wrong bytes in the image file"

# Cache, the last byte, and past the end (strict mode off, so that the
# server, not libnbd, has to refuse).
SIZE=$size nbd '
size = int(os.environ["SIZE"])
assert h.get_size() == size
h.cache(2**20, 0)
h.cache(size, 0)
h.pwrite(b"L", size - 1, nbd.CMD_FLAG_FUA)
h.pwrite(b"ab", size - 2)
assert h.pread(2, size - 2) == b"ab"
h.set_strict_mode(0)
fails(h.pwrite, b"x", size)
fails(h.pwrite, b"xy", size - 1)
fails(h.pread, 2, size - 1)
fails(h.zero, 4096, size)
fails(h.trim, 4096, size)
assert h.pread(2, size - 2) == b"ab"
h.flush()
'
[ "$(tail -c 2 "$IMG")" = "ab" ] || fail "the last two bytes are not in the image file"
[ "$(stat -c %s "$IMG")" -eq "$size" ] || fail "the image file changed size"
stop_nbdkit "$pid"

# --- Extents of a sparse image. --------------------------------------

mkfs_image "$IMG" 64M -t ext4 -b 4096
start_nbdkit "$sock" "$pid" "$plugin" "$IMG"
# Give it more shape: data far from the metadata, an odd-sized write,
# data at the very end, and a hole punched inside data.
nbd '
size = h.get_size()
h.pwrite(b"\x01" * 3 * 2**20, 20 * 2**20)
h.trim(2**20, 21 * 2**20)
h.pwrite(b"\x02", 30 * 2**20 + 5000)
h.pwrite(b"\x03" * 4096, size - 4096)
h.flush()
'
qemu-img map -U -f raw --output=json "$IMG" > "$tmp/map.json"
cat "$tmp/map.json"
MAP="$tmp/map.json" nbd '
size = h.get_size()
whole = server_extents(0, size)
print("server:", whole)
assert whole == file_extents(0, size), ("SEEK_DATA/SEEK_HOLE:", file_extents(0, size))
holes = [r for r in whole if r[2] == HOLE]
data = [r for r in whole if r[2] == 0]
assert len(holes) >= 3 and len(data) >= 3, whole
# qemu-img map, a second oracle, agrees on where the data is.
qmap = []
for e in json.load(open(os.environ["MAP"])):
    add(qmap, e["start"], e["length"], 0 if e["data"] else HOLE)
assert whole == qmap, ("qemu-img map:", qmap)
# The shape written above.
def kind(off):
    return [r[2] for r in whole if r[0] <= off < r[0] + r[1]][0]
assert kind(20 * 2**20) == 0 and kind(22 * 2**20 + 4095) == 0
assert kind(21 * 2**20) == HOLE and kind(22 * 2**20 - 1) == HOLE
assert kind(30 * 2**20 + 5000) == 0 and kind(size - 1) == 0
# Windows at unaligned offsets agree too.
for start, end in ((1, 4097), (20 * 2**20 - 3, 22 * 2**20 + 3),
                   (30 * 2**20 + 4097, 30 * 2**20 + 8193),
                   (size - 4097, size), (size - 1, size)):
    assert server_extents(start, end) == file_extents(start, end), (start, end)
# REQ_ONE returns one extent, starting where asked.
for off in (0, 21 * 2**20 + 1, 30 * 2**20 + 4096, size - 4096):
    got = []
    h.block_status(2**24 if off + 2**24 <= size else size - off, off,
                   lambda ctx, o, ents, err: got.extend(ents),
                   nbd.CMD_FLAG_REQ_ONE)
    assert len(got) == 2, got
    assert got[1] == file_extents(off, off + 1)[0][2], (off, got)
'
stop_nbdkit "$pid"

# --- Read-only (nbdkit -r). ------------------------------------------

sum="$(sha256sum < "$IMG")"
start_nbdkit "$sock" "$pid" -r "$plugin" "$IMG"
nbd '
assert h.is_read_only()
assert h.can_flush()
h.pread(4096, 0)
h.set_strict_mode(0)
fails(h.pwrite, b"x" * 512, 0, err=errno.EPERM)
fails(h.trim, 4096, 0, err=errno.EPERM)
fails(h.zero, 4096, 0, err=errno.EPERM)
h.flush()
'
stop_nbdkit "$pid"
[ "$(sha256sum < "$IMG")" = "$sum" ] || fail "-r: the image changed"

echo "PASS: $0"
