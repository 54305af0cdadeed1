#!/usr/bin/env bash
# tests/test-partitions.sh: partitioned disks, as libnbd clients write
# to them and the log= file records it, checked against oracles that
# are not the plugin: sfdisk --json (where each partition is), debugfs
# and e2fsck on each partition extracted with dd (which file owns which
# block), the bytes of the image file, and a small C handler built here
# that records each event's device_offset.
#
#  1. GPT (sgdisk): p1 vfat, p2 and p3 ext4, adjacent.  Exact events of
#     writes into files of p2 and p3 (partition 2 or 3, paths relative
#     to the partition, device-absolute device_offset); a write into the
#     vfat partition and into the GPT area gives no event and lands; the
#     table is read once (garbage written over it later changes nothing).
#     Free space: unattributed lines (trim, shutdown) at device offsets.
#  2. One request across the end of p2 and the start of p3: events of
#     both partitions in one request (also zero and trim); with
#     protect=3:FILE (and protect=2:FILE) the whole request fails with
#     EPERM and neither partition changes.  Four parallel writers on p2
#     and p3.  2b: partitions at odd sectors (not 4096-aligned), GPT
#     numbers 1 and 4, 1024- and 4096-byte blocks, a request across both.
#  3. protect=2:/x.txt denies /x.txt in p2 only; protect=/x.txt both.
#  4. partition=3 follows p3 only; partition=1 (vfat) and partition=9
#     are refused with a clear message.
#  5. MBR (sfdisk): p1 ext2 (smaller than its partition), extended p2
#     with logicals p5 ext3 and p6 swap: events carry partition 1 or 5,
#     p6 and the bytes past p1's filesystem are served untouched;
#     partition=5; partition=2 (extended) and 6 (swap) refused.
#  6. Hostile tables: a bad primary GPT header (the backup is used, with
#     a warning), both GPT headers bad, an MBR partition past the end of
#     the image, a partition smaller than its filesystem, a loop in the
#     EBR chain, overlapping partitions; and a bare ext4 image
#     (partition 0).
#  7. The control socket (lock-mode=fail) with two followed partitions:
#     a lock on 3:/x.txt fails guest writes to p3's /x.txt with EIO, not
#     to p2's; a plain path is refused (name a partition); cat N:/PATH
#     reads the right partition's file.
#  8. Where root, FUSE and loop devices are at hand: a kernel guest with
#     p2 and p3 mounted at once (journal commits, create, delete,
#     rename, O_DIRECT overwrite): every event names its own partition.
#
# Every server runs with -D fsevent.check=1; its stderr must report no
# error (a failed model check is one) and no crash.

source ./functions.sh
set -x

requires nbdkit --version
requires mke2fs -V
requires debugfs -V
requires e2fsck -V
requires dumpe2fs -V
requires blkid -V
requires sgdisk --version
requires sfdisk --version
requires mkfs.vfat --help
requires mkswap --version
requires dd --version
requires cmp --version
requires sha256sum --version
requires timeout --version
[ -f "$plugin" ] || fail "plugin not built: $plugin"
ctl="$top_builddir/tools/fsevent-ctl"
[ -x "$ctl" ] || fail "fsevent-ctl not built: $ctl"
requires_python_nbd
export DEBUGFS_PAGER=__none__ PAGER=cat

tmp="$(tmpdir)"
export TMP="$tmp"
export IMG="$tmp/disk.img"          # the copy being served
export SOCK="$tmp/sock"
export LOG="$tmp/events.jsonl"
export DEVOFF="$tmp/devoff.txt"     # the C handler's record
export PYTHONPATH="$tmp:$top_srcdir/tests"
T0="$(date +%s)"
export T0
pid="$tmp/pid"

# --- A handler that records device_offset (not in the log). ------------
# One line per call: PHASE PARTITION DEVICE_OFFSET LENGTH POSITION INO
# FILE.  Without a C compiler those checks are left out.
handler_args=()
if cc --version >/dev/null 2>&1; then
    cat > "$tmp/devoff.c" <<'EOF'
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <fsevent.h>

static FILE *out;
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;

static int
devoff_config (const char *key, const char *value)
{
  if (strcmp (key, "out") != 0)
    return -1;
  out = fopen (value, "a");
  return out ? 0 : -1;
}

static int
put (const struct fsevent_write *ev, const char *phase)
{
  if (out == NULL)
    return 0;
  pthread_mutex_lock (&lock);
  fprintf (out, "%s %u %" PRIu64 " %" PRIu64 " %" PRIu64 " %" PRIu32 " %s\n",
           phase, ev->partition, ev->device_offset, ev->bytes_to_write,
           ev->position, ev->ino, ev->file_name);
  fflush (out);
  pthread_mutex_unlock (&lock);
  return 0;
}
static int devoff_before (struct fsevent_write *ev) { return put (ev, "before"); }
static int devoff_after (struct fsevent_write *ev) { return put (ev, "after"); }
static void devoff_unload (void) { if (out) fclose (out); }

static struct fsevent_handler handler = {
  .name = "devoff",
  .config = devoff_config,
  .before_write = devoff_before,
  .after_write = devoff_after,
  .unload = devoff_unload,
};
FSEVENT_REGISTER_HANDLER (handler)
EOF
    cc -shared -fPIC -Wall -Werror -I"$top_srcdir/include" \
       -o "$tmp/devoff.so" "$tmp/devoff.c" -lpthread ||
        fail "cannot build the device_offset handler"
    # First on the command line: it sees every before event, even one
    # that protect= then vetoes.
    handler_args=(handler="$tmp/devoff.so" devoff.out="$DEVOFF")
else
    echo "no C compiler: device_offset is not checked"
    export DEVOFF=
fi

# --- Building disks. ---------------------------------------------------

# sum_outside DISK START SECTORS: a checksum of DISK without the
# partition (so that writing a partition is seen to stay inside it).
sum_outside ()
{
    { head -c $(( $2 * 512 )) "$1"; tail -c +$(( ($2 + $3) * 512 + 1 )) "$1"; } |
        sha256sum
}

# extract DISK START SECTORS OUT: a partition, copied out with dd.
extract ()
{
    dd if="$1" of="$4" bs=512 skip="$2" count="$3" status=none
}

# part_ok DISK START SECTORS ROOT: the partition, extracted, passes
# e2fsck and holds ROOT's files byte for byte (debugfs cat).
part_ok ()
{
    local f
    extract "$1" "$2" "$3" "$tmp/check.img"
    e2fsck -fn "$tmp/check.img" >/dev/null 2>&1 || return 1
    ( cd "$4" && find . -type f ) | while read -r f; do
        debugfs -R "cat ${f#.}" "$tmp/check.img" 2>/dev/null |
            cmp -s - "$4/$f" || exit 1
    done
}

# mkfs_at DISK START SECTORS ROOT [mke2fs options]: a filesystem of
# type $fstype (default ext4), block size $fsbs (default 4096) and
# $fs_kib KiB (default: the whole partition), with ROOT's files,
# written in place with mke2fs -E offset= (checked: the rest of the
# disk keeps its bytes, the image its size, and the partition extracted
# with dd passes e2fsck and holds the files); where that does not work,
# built in a file of its own and copied in with dd conv=notrunc.  Fails
# if neither works (for instance when ROOT does not fit).
mkfs_at ()
{
    local disk="$1" start="$2" sectors="$3" root="$4" sum size
    shift 4
    sum="$(sum_outside "$disk" "$start" "$sectors")"
    size="$(stat -c %s "$disk")"
    if mke2fs -q -F -t "${fstype:-ext4}" -b "${fsbs:-4096}" \
              -E offset=$((start * 512)),nodiscard -d "$root" "$@" \
              "$disk" "${fs_kib:-$((sectors / 2))}k" >/dev/null 2>&1 &&
       [ "$(stat -c %s "$disk")" = "$size" ] &&
       [ "$(sum_outside "$disk" "$start" "$sectors")" = "$sum" ] &&
       part_ok "$disk" "$start" "$sectors" "$root"; then
        mkfs_how="mke2fs -E offset"
        return 0
    fi
    echo "mke2fs -E offset=$((start * 512)) failed (or the files do not fit): a file and dd"
    rm -f "$tmp/fs.img"
    truncate -s $((sectors * 512)) "$tmp/fs.img"
    mke2fs -q -F -t "${fstype:-ext4}" -b "${fsbs:-4096}" -d "$root" "$@" \
           "$tmp/fs.img" "${fs_kib:-$((sectors / 2))}k" >/dev/null 2>&1 ||
        return 1
    dd if="$tmp/fs.img" of="$disk" bs=512 seek="$start" conv=notrunc status=none
    [ "$(stat -c %s "$disk")" = "$size" ] &&
        [ "$(sum_outside "$disk" "$start" "$sectors")" = "$sum" ] &&
        part_ok "$disk" "$start" "$sectors" "$root" || return 1
    mkfs_how="a file and dd"
}

# mkfs_full DISK START SECTORS ROOT: as mkfs_at, with ROOT/tail as
# large as fits, so that the filesystem is full and its last block is
# (most likely) a file's.  The free block count comes from a scratch
# filesystem without tail; then the largest tail that mke2fs accepts.
mkfs_full ()
{
    local disk="$1" start="$2" sectors="$3" root="$4" free n bs="${fsbs:-4096}"
    rm -f "$root/tail" "$tmp/scratch.img"
    truncate -s $((sectors * 512)) "$tmp/scratch.img"
    mke2fs -q -F -t ext4 -b "$bs" -d "$root" "$tmp/scratch.img" >/dev/null
    free="$(dumpe2fs -h "$tmp/scratch.img" 2>/dev/null |
            sed -n 's/^Free blocks: *//p')"
    rm -f "$tmp/scratch.img"
    [ -n "$free" ] || fail "dumpe2fs: no free block count"
    head -c $(( (free + 2) * bs )) /dev/urandom > "$root/tail"
    for (( n = free + 2; n >= free - 16; n-- )); do
        truncate -s $((n * bs)) "$root/tail"
        if mkfs_at "$disk" "$start" "$sectors" "$root"; then
            echo "tail: $n blocks ($free free without it)"
            return 0
        fi
    done
    fail "no size of tail fits in $disk at sector $start"
}

# part_vars DISK PREFIX: PREFIX<N>s and PREFIX<N>n, the start and size
# (sectors) of every partition N, from sfdisk --json (the oracle for the
# table): eval "$(part_vars disk.img g)".
part_vars ()
{
    sfdisk --json "$1" | "$py" -c '
import json, re, sys
t = json.load(sys.stdin)["partitiontable"]
assert t.get("sectorsize", 512) == 512, t
for p in t["partitions"]:
    n = int(re.search(r"(\d+)$", p["node"]).group(1))
    print("%s%ds=%d %s%dn=%d" % (sys.argv[1], n, p["start"],
                                 sys.argv[1], n, p["size"]))
' "$2"
}

# Random bytes ending in a non-zero byte: mke2fs -d leaves an all-zero
# block out as a hole, and a random 1-byte last block is zero one time
# in 256 (the oracle then found 2 blocks for a 8,193-byte file).
rnd_file () {
    head -c "$(($2 - 1))" /dev/urandom > "$1"
    printf '\x5a' >> "$1"
}

# --- The GPT disk. -------------------------------------------------------
# p1 EFI system partition (vfat, 8 MiB), p2 and p3 ext4 (40 MiB each),
# p3 starting at the sector after p2's last.
gpt="$tmp/gpt.img"
truncate -s 90M "$gpt"
sgdisk -n 1:2048:+8M -t 1:ef00 -c 1:EFI \
       -n 2:0:+40M -t 2:8300 -c 2:root \
       -n 3:0:+40M -t 3:8300 -c 3:data "$gpt" >/dev/null
sfdisk --json "$gpt"
eval "$(part_vars "$gpt" g)"
[ $(( g2s + g2n )) -eq "$g3s" ] || fail "sgdisk did not make p2 and p3 adjacent"
mkfs.vfat -n EFI --offset "$g1s" "$gpt" $(( g1n / 2 )) >/dev/null 2>&1 ||
    fail "mkfs.vfat --offset failed"
# p2: /x.txt, /a, /dir/d and a tail that fills it.  p3: another /x.txt
# (same path, other bytes), /b, /dir/d.
mkdir -p "$tmp/r2/dir" "$tmp/r3/dir"
rnd_file "$tmp/r2/x.txt" $((3 * 4096 + 10))
rnd_file "$tmp/r2/a" $((5 * 4096))
rnd_file "$tmp/r2/dir/d" $((2 * 4096))
rnd_file "$tmp/r3/x.txt" $((3 * 4096 + 10))
rnd_file "$tmp/r3/b" $((4 * 4096))
rnd_file "$tmp/r3/dir/d" $((2 * 4096))
rnd_file "$tmp/r3/big" $((256 * 4096))
mkfs_full "$gpt" "$g2s" "$g2n" "$tmp/r2"
echo "p2 built with $mkfs_how"
mkfs_at "$gpt" "$g3s" "$g3n" "$tmp/r3" || fail "cannot build p3"
echo "p3 built with $mkfs_how"
sgdisk -v "$gpt" || fail "sgdisk -v: the GPT is damaged"
extract "$gpt" "$g1s" "$g1n" "$tmp/gpt-p1.img"
extract "$gpt" "$g2s" "$g2n" "$tmp/gpt-p2.img"
extract "$gpt" "$g3s" "$g3n" "$tmp/gpt-p3.img"
e2fsck -fn "$tmp/gpt-p2.img"
e2fsck -fn "$tmp/gpt-p3.img"
blkid -p "$tmp/gpt-p1.img" 2>/dev/null | grep -q 'TYPE="vfat"' ||
    fail "p1 is not vfat"
GPT_FILES="2:/x.txt 2:/a 2:/dir/d 2:/tail 3:/x.txt 3:/b 3:/dir/d 3:/big"

# --- Shared Python: the oracle, the log and the handler's record. -------
cat > "$tmp/pt.py" <<'EOF'
import datetime, errno, json, os, re, subprocess, time
import nbd
from debugfs_oracle import debugfs, file_info

TMP = os.environ["TMP"]
IMG = os.environ["IMG"]
SOCK = os.environ["SOCK"]
LOG = os.environ["LOG"]
DEVOFF = os.environ.get("DEVOFF")
# The disk the oracle reads: the one served (gpt, mbr, bare), or ORACLE
# where that one is damaged on purpose.
DISK = os.environ.get("ORACLE") or os.environ["DISK"]
PRISTINE = os.path.join(TMP, DISK + ".img")
BS = 4096
T0 = int(os.environ["T0"])
# The server's log-phases=: after (the default, one line per event) or
# both (a before line too).
PHASES = os.environ.get("PHASES", "after")

# --- Where the partitions are: sfdisk, never the plugin. ---
def table(img):
    """{number: (offset, length, type)} in bytes, from sfdisk --json;
    {} for a disk without a table."""
    r = subprocess.run(["sfdisk", "--json", img], stdout=subprocess.PIPE,
                       stderr=subprocess.DEVNULL, text=True)
    if r.returncode != 0 or not r.stdout.strip():
        return {}
    t = json.loads(r.stdout)["partitiontable"]
    assert t.get("sectorsize", 512) == 512, t
    return {int(re.search(r"(\d+)$", p["node"]).group(1)):
            (p["start"] * 512, p["size"] * 512, p["type"])
            for p in t["partitions"]}

PARTS = table(PRISTINE)
SIZE = os.path.getsize(PRISTINE)

def base(n):
    return PARTS[n][0] if n else 0

def plen(n):
    return PARTS[n][1] if n else SIZE

def pimg(n):
    """The partition as dd copied it out of the pristine disk."""
    return PRISTINE if n == 0 else os.path.join(TMP, "%s-p%d.img" % (DISK, n))

# --- Which file owns which block: debugfs on each partition. ---
BSZ = {}        # partition -> its filesystem's block size
F = {}          # (partition, path) -> File
OWNER = {}      # (partition, filesystem block) -> (path, logical block)
for spec in os.environ.get("FILES", "").split():
    n, path = spec.split(":", 1)
    n = int(n)
    if n not in BSZ:
        BSZ[n] = int(re.search(r"Block size: *(\d+)",
                               debugfs(pimg(n), "stats")).group(1))
    F[n, path] = f = file_info(pimg(n), path, BSZ[n])
    for i, b in enumerate(f.blocks):
        assert (b + 1) * BSZ[n] <= plen(n), (n, path, b)
        assert (n, b) not in OWNER, (n, b)
        OWNER[n, b] = (path, i)

def dev(n, path, lblk, within=0):
    """Device offset of byte WITHIN of logical block LBLK of N:PATH."""
    return base(n) + F[n, path].blocks[lblk] * BSZ[n] + within

def file_blocks(n):
    return sorted(b for m, b in OWNER if m == n)

def where(off):
    """The partition (with files the oracle knows) holding byte OFF."""
    for n in BSZ:
        if base(n) <= off < base(n) + plen(n):
            return n
    return None

def segments(off, length):
    """(partition, path, position, length, device_offset) of every run
    of file data in the range, merged where file and device are both
    contiguous.  Partitions need not start on a block boundary of the
    device."""
    segs = []
    end = off + length
    while off < end:
        n = where(off)
        if n is None:
            off = min([base(m) for m in BSZ if base(m) > off] + [end])
            continue
        bs = BSZ[n]
        blk = (off - base(n)) // bs
        k = min(end, base(n) + (blk + 1) * bs, base(n) + plen(n)) - off
        if (n, blk) in OWNER:
            path, lblk = OWNER[n, blk]
            pos = lblk * bs + (off - base(n)) % bs
            s = segs[-1] if segs else None
            if s and s[:2] == (n, path) and s[4] + s[3] == off and \
               s[2] + s[3] == pos:
                segs[-1] = (n, path, s[2], s[3] + k, s[4])
            else:
                segs.append((n, path, pos, k, off))
        off += k
    return segs

# --- Expected events. ---
def ev(n, path, pos, length, phase, op="write", result=0, written=None,
       devoff=None):
    e = {"name": (n, path), "event": "write", "phase": phase,
         "ino": F[n, path].ino, "position": pos, "length": length,
         "direction": "inplace", "op": op, "partition": n, "result": result,
         "devoff": devoff}
    if result:
        e["error"] = errno.errorcode[result]
    if phase == "after":
        e["bytes_written"] = length if written is None else written
    return e

def expected(off, length, op="write", deny=lambda n, path: 0):
    """A request's events, from the oracle: before events until the first
    veto, then an after event for each of those."""
    before, err = [], 0
    for n, path, pos, k, d in segments(off, length):
        r = deny(n, path)
        before.append(ev(n, path, pos, k, "before", op, r, devoff=d))
        if r:
            err = r
            break
    after = [ev(*e["name"], e["position"], e["length"], "after", op, err,
                0 if err else e["length"], e["devoff"]) for e in before]
    if err:
        # Who vetoed (only protect= does here), and the event refused.
        for a in after:
            a["by"] = "protect"
        after[-1]["refused"] = True
    return before + after

def logged(exp):
    """The log lines of the events EXP (both phases, as the handlers
    see them): the after lines, and with log-phases=both the before
    lines too."""
    return [x for x in exp if PHASES == "both" or x["phase"] == "after"]

def pair(n, path, lblk, within, length, op="write", result=0):
    """The events of a request inside one block of one file."""
    return expected(dev(n, path, lblk, within), length, op,
                    lambda *a: result)

# --- The log. ---
TIME_RE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")
WRITE_KEYS = {"seq", "time", "event", "phase", "file", "ino", "position",
              "length", "direction", "op", "partition", "connection",
              "result"}

def check_line(e):
    assert TIME_RE.match(e["time"]), e["time"]
    t = datetime.datetime.strptime(e["time"], "%Y-%m-%dT%H:%M:%S.%fZ")
    t = t.replace(tzinfo=datetime.timezone.utc).timestamp()
    assert T0 - 5 <= t <= time.time() + 5, ("time out of range", e["time"])
    assert type(e.get("partition")) is int, e
    if e["event"] == "unattributed":
        assert set(e) == {"seq", "time", "event", "partition",
                          "device_offset", "length", "reason"}, e
        return
    if e["event"] != "write":
        return
    keys = set(WRITE_KEYS)
    if e["phase"] == "after":
        keys.add("bytes_written")
    else:
        assert PHASES == "both", ("a before line", e)
    if e["result"]:
        keys.add("error")
    if "by" in e:
        assert e["phase"] == "after" and e["result"], e
        keys.add("by")
    if "refused" in e:
        assert "by" in e and e["refused"] is True, e
        keys.add("refused")
    if "paths" in e:
        keys.add("paths")
    assert set(e) == keys, ("keys", sorted(e), sorted(keys))

def sync_log():
    f = nbd.NBD()
    f.connect_unix(SOCK)
    f.flush()
    f.shutdown()

class Log:
    """The log as it grows (seq 1, 2, 3, ... in the order of the lines)
    and the handler's record with it."""
    def __init__(self):
        self.pos = self.seq = self.hpos = 0
    def new(self, events=("write",), sync=True):
        if sync:
            sync_log()
        with open(LOG, "rb") as f:
            f.seek(self.pos)
            data = f.read()
        self.pos += len(data)
        assert data == b"" or data.endswith(b"\n"), data[-200:]
        out = []
        for line in data.decode().splitlines():
            e = json.loads(line)
            check_line(e)
            self.seq += 1
            assert e["seq"] == self.seq, ("seq", e["seq"], self.seq)
            if e["event"] in events:
                out.append(e)
        return out
    def handler(self):
        if not DEVOFF:
            return None
        with open(DEVOFF) as f:
            f.seek(self.hpos)
            data = f.read()
        self.hpos += len(data)
        out = []
        for line in data.splitlines():
            ph, n, d, k, pos, ino, name = line.split(" ", 6)
            out.append((ph, int(n), int(d), int(k), int(pos), int(ino), name))
        return out

def show(got, exp):
    return "\n got: %s\n expected: %s" % (
        "\n      ".join(map(json.dumps, got)),
        "\n      ".join(json.dumps({k: v for k, v in x.items() if k != "name"})
                        + " " + "%d:%s" % x["name"] for x in exp))

def compare(log, exp, what):
    """The log's new write lines are those of the events EXP exactly (and
    the handler saw them with EXP's device offsets)."""
    got = log.new()
    lx = logged(exp)
    msg = what + show(got, lx)
    assert len(got) == len(lx), msg
    for g, x in zip(got, lx):
        g2 = {k: v for k, v in g.items()
              if k not in ("seq", "time", "connection", "file", "paths")}
        x2 = {k: v for k, v in x.items() if k not in ("name", "devoff")}
        assert g2 == x2, msg
        assert g["file"] == x["name"][1] and "paths" not in g, msg
    if got:
        assert len({g["connection"] for g in got}) == 1, msg
    h = log.handler()
    if h is not None:
        hx = [(x["phase"], x["partition"], x["devoff"], x["length"],
               x["position"], x["ino"], x["name"][1]) for x in exp]
        assert h == hx, "%s: handler saw\n %s\nexpected\n %s" % (what, h, hx)
    print("ok:", what, "(%d events)" % len(got))
    return got

def unattributed(log):
    """The new lines, unattributed ones only: (partition, device_offset,
    length, reason)."""
    new = log.new(("write", "unattributed"))
    assert all(e["event"] == "unattributed" for e in new), new
    return [(e["partition"], e["device_offset"], e["length"], e["reason"])
            for e in new]

def free_run(n, count):
    """COUNT free blocks in a row of partition N, after its files
    (debugfs ffb)."""
    out = debugfs(pimg(n), "ffb %d %d" % (count, file_blocks(n)[-1] + 1))
    b = [int(x) for x in out.split(":", 1)[1].split()]
    assert b == list(range(b[0], b[0] + count)), out
    return b[0]

# --- Client. ---
def connect():
    h = nbd.NBD()
    h.connect_unix(SOCK)
    return h

from nbd_client import fails

def rnd(k):
    return os.urandom(k)

def on_image(off, k):
    with open(IMG, "rb") as f:
        f.seek(off)
        return f.read(k)

def same_image(copy):
    r = subprocess.run(["cmp", IMG, copy])
    assert r.returncode == 0, "the image changed: cmp %s %s" % (IMG, copy)

def new_bytes(off, data):
    """DATA (the disk's own bytes at OFF) with new bytes in file data."""
    data = bytearray(data)
    for n, path, pos, k, d in segments(off, len(data)):
        data[d - off:d - off + k] = rnd(k)
    return bytes(data)

def span(a=2, b=3, deny=None):
    """One request across the end of partition A and the start of B
    (adjacent): from A's last file block (its last block, where a file
    owns it) to B's first file block, new bytes in file data and their
    own elsewhere.  (offset, data, expected events)."""
    assert base(a) + plen(a) == base(b), "not adjacent: %d %d" % (a, b)
    lo, hi = file_blocks(a)[-1], file_blocks(b)[0]
    off = base(a) + lo * BSZ[a]
    end = base(b) + (hi + 1) * BSZ[b]
    print("span: p%d block %d %s, p%d block %d %s; %d bytes between" %
          (a, lo, OWNER[a, lo], b, hi, OWNER[b, hi],
           base(b) + hi * BSZ[b] - off - BSZ[a]))
    if base(a) + (lo + 1) * BSZ[a] != base(b):
        print("span: p%d's last block is not a file's: free space too" % a)
    h = connect()
    data = new_bytes(off, h.pread(end - off, off))
    h.shutdown()
    exp = expected(off, len(data), deny=deny or (lambda *x: 0))
    return off, data, exp
EOF

# serve DISK NAME [plugin args]: a fresh copy of DISK served (log=,
# -D fsevent.check=1, the device_offset handler), its stderr in
# $tmp/NAME.err.  FILES names the files the oracle knows, N:/PATH.
serve ()
{
    export DISK="$1"
    srv="$2"
    shift 2
    cp --sparse=always "$tmp/$DISK.img" "$IMG"
    rm -f "$LOG"
    [ -z "$DEVOFF" ] || : > "$DEVOFF"
    start_nbdkit "$SOCK" "$pid" --log=stderr "$plugin" "$IMG" \
        "${handler_args[@]}" log="$LOG" -D fsevent.check=1 "$@" \
        2>"$tmp/$srv.err"
}

# stop: the server goes; it must have reported no error (a failed
# model check is one) and no crash.
stop ()
{
    stop_nbdkit "$pid"
    cat "$tmp/$srv.err"
    ! grep -Eiq 'error|model check failed|assertion|Segmentation|AddressSanitizer' \
      "$tmp/$srv.err" || fail "$srv: the server reported a failure"
}

# refused NAME REGEX IMAGE [plugin args...]: nbdkit exits non-zero (not
# by a signal, not a hang), never serves, and says REGEX on stderr.
refused ()
{
    local name="$1" regex="$2" image="$3" rc=0
    shift 3
    timeout 60 nbdkit -U "$tmp/$name.sock" "$plugin" "$image" "$@" \
        --run "touch '$tmp/$name.ran'" >"$tmp/$name.out" 2>"$tmp/$name.err" ||
        rc=$?
    cat "$tmp/$name.err"
    [ "$rc" -ne 0 ] || fail "$name: nbdkit exited with status 0"
    [ "$rc" -ne 124 ] || fail "$name: nbdkit hung"
    [ "$rc" -lt 126 ] || fail "$name: nbdkit died abnormally ($rc)"
    [ ! -e "$tmp/$name.ran" ] || fail "$name: the server started"
    grep -Eq -- "$regex" "$tmp/$name.err" ||
        fail "$name: stderr does not match /$regex/"
}

# check_shutdown_lines: the log's unattributed lines at shutdown are
# $tmp/unattributed.expected (a JSON list).
check_shutdown_lines ()
{
    "$py" - <<'EOF'
from pt import *
got = [[e["partition"], e["device_offset"], e["length"], e["reason"]]
       for e in Log().new(("unattributed",), sync=False)
       if e["reason"] == "shutdown"]
exp = json.load(open(TMP + "/unattributed.expected"))
assert got == exp, ("unattributed at shutdown", got, exp)
print("ok: unattributed at shutdown", got)
EOF
}

# ======================================================================
# 1. GPT: events of p2 and p3, nothing for vfat and the table.
# ======================================================================
export FILES="$GPT_FILES"
serve gpt events
"$py" - <<'EOF'
from pt import *
log = Log()
h = connect()
print("partitions:", PARTS)
assert sorted(PARTS) == [1, 2, 3], PARTS

# A whole block of p2's /x.txt, then 100 bytes inside p3's /x.txt.
d = rnd(BS)
h.pwrite(d, dev(2, "/x.txt", 1))
compare(log, pair(2, "/x.txt", 1, 0, BS), "p2 /x.txt block 1")
assert on_image(dev(2, "/x.txt", 1), BS) == d
d = rnd(100)
h.pwrite(d, dev(3, "/x.txt", 2, 17))
compare(log, pair(3, "/x.txt", 2, 17, 100), "p3 /x.txt 100 bytes")
assert on_image(dev(3, "/x.txt", 2, 17), 100) == d
# The same file-system block number in both partitions is another file.
print("p2 /x.txt block 0 is fs block %d, p3's is %d" %
      (F[2, "/x.txt"].blocks[0], F[3, "/x.txt"].blocks[0]))

# Two blocks of p3's /b, a zero in p2's /dir/d, a trim in p3's /dir/d.
if F[3, "/b"].blocks[2] == F[3, "/b"].blocks[1] + 1:
    h.pwrite(rnd(2 * BS), dev(3, "/b", 1))
    compare(log, expected(dev(3, "/b", 1), 2 * BS), "p3 /b two blocks")
h.zero(BS, dev(2, "/dir/d", 0))
compare(log, pair(2, "/dir/d", 0, 0, BS, "zero"), "p2 /dir/d zero")
assert on_image(dev(2, "/dir/d", 0), BS) == bytes(BS)
h.trim(BS, dev(3, "/dir/d", 1))
compare(log, pair(3, "/dir/d", 1, 0, BS, "trim"), "p3 /dir/d trim")

# p1 (vfat): no event, the bytes land.  Past its boot sector and FATs
# (the middle of the partition).
p1 = base(1) + PARTS[1][1] // 2
d = rnd(3 * BS)
h.pwrite(d, p1)
compare(log, [], "p1 (vfat)")
assert on_image(p1, 3 * BS) == d

# The GPT area (LBA 0-33): the boot code of the protective MBR gets new
# bytes, LBA 1-33 (header and entries) their own.  No event; the bytes
# land: the plugin lets writes to the table through, untouched (and,
# below, does not re-read it).
d = rnd(440)
h.pwrite(d, 0)
gpt_area = bytes(h.pread(33 * 512, 512))
h.pwrite(gpt_area, 512)
compare(log, [], "GPT area, LBA 0-33")
assert on_image(0, 440) == d and on_image(512, 33 * 512) == gpt_area
# Free space between the table and p1 (LBA 34-2047), and the backup
# GPT at the end of the disk: no event either.
h.pwrite(rnd(BS), 34 * 512)
size = h.get_size()
h.pwrite(bytes(h.pread(33 * 512, size - 33 * 512)), size - 33 * 512)
compare(log, [], "gap before p1, backup GPT")

# A request over p1's last block and p2's first (its superblock, with
# its own bytes): nothing.
off = base(2) - 2048
h.pwrite(bytes(h.pread(4096, off)), off)
compare(log, [], "end of p1 + start of p2")

# Free space of p3 (debugfs ffb): no write event.  A trim of half of it
# gives an unattributed line at once, the other half one at shutdown;
# device_offset is the device's.
fb = free_run(3, 2)
foff = base(3) + fb * BS
h.pwrite(rnd(2 * BS), foff)
compare(log, [], "p3 free space")
h.trim(BS, foff)
u = unattributed(log)
assert u == [(3, foff, BS, "trim")], u
print("ok: unattributed trim", u)
open(TMP + "/unattributed.expected", "w").write(
    json.dumps([[3, foff + BS, BS, "shutdown"]]))

# The table is read once: garbage over the primary GPT entries changes
# nothing for the partitions.
h.pwrite(rnd(32 * 512), 2 * 512)
d = rnd(BS)
h.pwrite(d, dev(3, "/x.txt", 0))
compare(log, pair(3, "/x.txt", 0, 0, BS), "p3 after garbage over the GPT")
assert on_image(dev(3, "/x.txt", 0), BS) == d
h.shutdown()
print("final seq", log.seq)
EOF
stop
check_shutdown_lines
# Only file data (and vfat, and the table) were written: both ext
# partitions, copied out, are still clean.
for n in 2 3; do
    extract "$IMG" "$(eval echo \$g${n}s)" "$(eval echo \$g${n}n)" "$tmp/after.img"
    e2fsck -fn "$tmp/after.img" || fail "partition $n is damaged after case 1"
done

# ======================================================================
# 2. One request across the end of p2 and the start of p3.
# ======================================================================
serve gpt span
cp --sparse=always "$IMG" "$tmp/before.img"
"$py" - <<'EOF'
from pt import *
log = Log()
h = connect()

# The last 2048 bytes of p2 and the first 2048 of p3 (its boot sector
# and superblock, with their own bytes).
off = base(3) - 2048
d = new_bytes(off, h.pread(4096, off))
exp = expected(off, 4096)
assert all(e["partition"] == 2 for e in exp)
h.pwrite(bytes(d), off)
compare(log, exp, "last 2048 bytes of p2 + first 2048 of p3")
assert on_image(off, BS) == d
# A trim and a zero over the last 2048 bytes of p2 and the first 1024 of
# p3 (its boot sector, unused by ext4).
for op, fn in (("trim", h.trim), ("zero", h.zero)):
    fn(3072, base(3) - 2048)
    compare(log, expected(base(3) - 2048, 3072, op),
            "%s across p2 and p3" % op)
assert on_image(base(3) - 2048, 3072) == bytes(3072)

off, data, exp = span()
parts = sorted({e["partition"] for e in exp})
assert parts == [2, 3], ("the oracle's span is not in two partitions", exp)
h.pwrite(data, off)
got = compare(log, exp, "one request, p2 and p3")
assert {g["partition"] for g in got} == {2, 3}
assert on_image(off, len(data)) == data
h.shutdown()
EOF
stop
for n in 2 3; do
    extract "$IMG" "$(eval echo \$g${n}s)" "$(eval echo \$g${n}n)" "$tmp/after.img"
    e2fsck -fn "$tmp/after.img" || fail "partition $n is damaged after case 2"
done

# protect=N:FILE on the file the span touches in partition N: the whole
# request fails and neither partition changes.  p3 with log-phases=both
# (a before and an after line per event), p2 with one line per event.
for n in 3 2; do
    phases=after
    [ $n = 2 ] || phases=both
    pfile="$(FILES="$GPT_FILES" DISK=gpt N=$n "$py" -c '
import os
from pt import *
n = int(os.environ["N"])
print(OWNER[(3, file_blocks(3)[0]) if n == 3 else (2, file_blocks(2)[-1])][0])')"
    serve gpt "span-protect-$n" protect="$n:$pfile" log-phases=$phases
    cp --sparse=always "$IMG" "$tmp/before.img"
    PHASES=$phases N=$n PFILE="$pfile" "$py" - <<'EOF'
from pt import *
n, pfile = int(os.environ["N"]), os.environ["PFILE"]
log = Log()
h = connect()
deny = lambda m, path: errno.EPERM if (m, path) == (n, pfile) else 0
off, data, exp = span(deny=deny)
print("protect=%d:%s: %d events expected" % (n, pfile, len(exp)))
assert exp[len(exp) // 2 - 1]["result"] == errno.EPERM
fails(errno.EPERM, h.pwrite, data, off)
compare(log, exp, "span with protect=%d:%s" % (n, pfile))
same_image(TMP + "/before.img")
# The other partition's files are still writable.
other = 2 if n == 3 else 3
d = rnd(10)
h.pwrite(d, dev(other, "/x.txt", 0, 5))
compare(log, pair(other, "/x.txt", 0, 5, 10), "p%d still writable" % other)
h.shutdown()
EOF
    stop
done

# Parallel writers, two on p2's /tail and two on p3's /big: every event
# once, with its own partition and device offset, no lost or torn line.
serve gpt parallel
"$py" - <<'EOF'
from pt import *
import collections, threading
N, PER = 4, 128
jobs = {t: [(2 if t % 2 == 0 else 3, "/tail" if t % 2 == 0 else "/big", i)
            for i in range(t // 2, 2 * PER, 2)] for t in range(N)}
errors = []
barrier = threading.Barrier(N)

def writer(t):
    try:
        h = connect()
        barrier.wait()
        for n, path, lblk in jobs[t]:
            h.pwrite(rnd(BS), dev(n, path, lblk))
        h.shutdown()
    except BaseException as e:
        errors.append(e)

threads = [threading.Thread(target=writer, args=(t,)) for t in range(N)]
for t in threads: t.start()
for t in threads: t.join()
assert not errors, errors
log = Log()
evs = log.new()
exp = collections.Counter()
for t in range(N):
    for n, path, lblk in jobs[t]:
        for e in logged(pair(n, path, lblk, 0, BS)):
            exp[json.dumps({k: v for k, v in e.items()
                            if k not in ("name", "devoff")}, sort_keys=True)] += 1
got = collections.Counter(
    json.dumps({k: v for k, v in e.items()
                if k not in ("seq", "time", "connection", "file")},
               sort_keys=True) for e in evs)
assert got == exp, ("parallel: the events differ", got - exp, exp - got)
assert all(e["file"] == ("/tail" if e["partition"] == 2 else "/big")
           for e in evs)
hl = log.handler()
if hl is not None:
    hexp = collections.Counter()
    for t in range(N):
        for n, path, lblk in jobs[t]:
            for e in pair(n, path, lblk, 0, BS):
                hexp[(e["phase"], n, e["devoff"], BS, e["position"],
                      e["ino"], path)] += 1
    assert collections.Counter(hl) == hexp, "parallel: device offsets differ"
print("ok: parallel writers, %d events" % len(evs))
EOF
stop

# ======================================================================
# 2b. Partitions that do not start on a 4096-byte boundary of the disk
# (sectors 2049 and 43009), a gap in the GPT's numbers (1 and 4), and a
# filesystem of 1024-byte blocks (p1, full to its last block) next to
# one of 4096 (p4).
# ======================================================================
odd="$tmp/odd.img"
truncate -s 48M "$odd"
sgdisk -a 1 -n 1:2049:+20M -t 1:8300 -n 4:0:+20M -t 4:8300 "$odd" >/dev/null
sfdisk --json "$odd"
eval "$(part_vars "$odd" o)"
[ $(( o1s + o1n )) -eq "$o4s" ] || fail "odd: p1 and p4 are not adjacent"
mkdir -p "$tmp/o1" "$tmp/o4"
rnd_file "$tmp/o1/x.txt" $((3 * 1024 + 10))
rnd_file "$tmp/o1/k" $((8 * 1024))
rnd_file "$tmp/o4/x.txt" $((2 * 4096 + 10))
fsbs=1024 mkfs_full "$odd" "$o1s" "$o1n" "$tmp/o1"
echo "odd p1 built with $mkfs_how"
mkfs_at "$odd" "$o4s" "$o4n" "$tmp/o4" || fail "cannot build odd p4"
echo "odd p4 built with $mkfs_how"
extract "$odd" "$o1s" "$o1n" "$tmp/odd-p1.img"
extract "$odd" "$o4s" "$o4n" "$tmp/odd-p4.img"
export FILES="1:/x.txt 1:/k 1:/tail 4:/x.txt"
serve odd odd
"$py" - <<'EOF'
from pt import *
log = Log()
h = connect()
assert sorted(PARTS) == [1, 4], PARTS
assert base(1) % 4096 == 512 and base(4) % 4096 == 512, PARTS
assert BSZ == {1: 1024, 4: 4096}, BSZ
# One 1024-byte block of p1's /x.txt.
d = rnd(1024)
h.pwrite(d, dev(1, "/x.txt", 1))
compare(log, pair(1, "/x.txt", 1, 0, 1024), "odd p1 /x.txt block 1")
assert on_image(dev(1, "/x.txt", 1), 1024) == d
# 4096 bytes at a 4096-byte boundary of the device inside /k: parts of
# up to five of its blocks.
off = (dev(1, "/k", 2) // 4096) * 4096
h.pwrite(new_bytes(off, h.pread(4096, off)), off)
compare(log, expected(off, 4096), "odd p1 /k, device-aligned 4096 bytes")
# p4's blocks are 4096 bytes but not at 4096-byte boundaries of the
# device: a whole block, then a device-aligned 4096 bytes across two.
d = rnd(4096)
h.pwrite(d, dev(4, "/x.txt", 0))
compare(log, pair(4, "/x.txt", 0, 0, 4096), "odd p4 /x.txt block 0")
assert on_image(dev(4, "/x.txt", 0), 4096) == d
off = (dev(4, "/x.txt", 1) // 4096) * 4096
h.pwrite(new_bytes(off, h.pread(4096, off)), off)
compare(log, expected(off, 4096), "odd p4 /x.txt, device-aligned 4096 bytes")
# Across p1's last block (1024 bytes, /tail's or free) and p4's start.
off, data, exp = span(1, 4)
h.pwrite(data, off)
compare(log, exp, "odd: one request, p1 and p4")
assert sorted({e["partition"] for e in exp}) == [1, 4]
# Free space of p4, unattributed at shutdown, at an offset of the device
# that is not a multiple of 4096.
foff = base(4) + free_run(4, 3) * 4096
h.pwrite(rnd(3 * 4096 - 100), foff + 100)
compare(log, [], "odd p4 free space")
open(TMP + "/unattributed.expected", "w").write(
    json.dumps([[4, foff + 100, 3 * 4096 - 100, "shutdown"]]))
h.shutdown()
EOF
stop
check_shutdown_lines
extract "$IMG" "$o1s" "$o1n" "$tmp/after.img"
e2fsck -fn "$tmp/after.img" || fail "odd p1 is damaged"
extract "$IMG" "$o4s" "$o4n" "$tmp/after.img"
e2fsck -fn "$tmp/after.img" || fail "odd p4 is damaged"
refused odd-part3 'partition=3: .*has no such partition \(it has: 1 ext4, 4 ext4\)' \
    "$odd" partition=3

# ======================================================================
# 2c. Partition numbers out of the disk's order: p2 first on the disk,
# p1 right after it.  A request across both is split in device order
# (and their models locked in that order); a veto in p1 fails it whole.
# ======================================================================
rev="$tmp/rev.img"
truncate -s 48M "$rev"
sgdisk -n 2:2048:+20M -t 2:8300 -n 1:0:+20M -t 1:8300 "$rev" >/dev/null
sfdisk --json "$rev"
eval "$(part_vars "$rev" r)"
[ $(( r2s + r2n )) -eq "$r1s" ] || fail "rev: p2 and p1 are not adjacent"
mkdir -p "$tmp/r1" "$tmp/r2"
rnd_file "$tmp/r1/x.txt" $((2 * 4096 + 10))
rnd_file "$tmp/r2/x.txt" $((2 * 4096 + 10))
mkfs_full "$rev" "$r2s" "$r2n" "$tmp/r2"
mkfs_at "$rev" "$r1s" "$r1n" "$tmp/r1" || fail "cannot build rev p1"
extract "$rev" "$r1s" "$r1n" "$tmp/rev-p1.img"
extract "$rev" "$r2s" "$r2n" "$tmp/rev-p2.img"
export FILES="1:/x.txt 2:/x.txt 2:/tail"
for deny in none p1; do
    if [ $deny = p1 ]; then
        serve rev rev-$deny protect=1:/x.txt
    else
        serve rev rev-$deny
    fi
    cp --sparse=always "$IMG" "$tmp/before.img"
    DENY=$deny "$py" - <<'EOF'
from pt import *
log = Log()
h = connect()
assert base(2) < base(1), PARTS
if os.environ["DENY"] == "none":
    off, data, exp = span(2, 1)
    h.pwrite(data, off)
    compare(log, exp, "rev: one request, p2 then p1")
    assert [e["partition"] for e in exp if e["phase"] == "before"][0] == 2
    assert sorted({e["partition"] for e in exp}) == [1, 2]
else:
    deny = lambda m, path: errno.EPERM if (m, path) == (1, "/x.txt") else 0
    off, data, exp = span(2, 1, deny=deny)
    fails(errno.EPERM, h.pwrite, data, off)
    compare(log, exp, "rev: protect=1:/x.txt fails the request whole")
    same_image(TMP + "/before.img")
h.shutdown()
EOF
    stop
done

# ======================================================================
# 3. protect=2:/x.txt against protect=/x.txt.
# ======================================================================
export FILES="$GPT_FILES"
# protect_case GLOB FILE DENIED ALLOWED: the partitions whose FILE is
# denied and allowed; /a (p2) and /b (p3) are never protected.
protect_case ()
{
    serve gpt "protect-${1//[:\/*]/_}" protect="$1"
    cp --sparse=always "$IMG" "$tmp/before.img"
    GLOB="$1" PFILE="$2" DENIED="$3" ALLOWED="$4" "$py" - <<'EOF'
from pt import *
glob, pfile = os.environ["GLOB"], os.environ["PFILE"]
log = Log()
h = connect()
for n in map(int, os.environ["DENIED"].split()):
    fails(errno.EPERM, h.pwrite, rnd(BS), dev(n, pfile, 0))
    compare(log, pair(n, pfile, 0, 0, BS, "write", errno.EPERM),
            "protect=%s denies %d:%s" % (glob, n, pfile))
    fails(errno.EPERM, h.zero, 100, dev(n, pfile, 1, 8))
    compare(log, pair(n, pfile, 1, 8, 100, "zero", errno.EPERM),
            "protect=%s denies a zero in %d:%s" % (glob, n, pfile))
same_image(TMP + "/before.img")
for n in map(int, os.environ["ALLOWED"].split()):
    d = rnd(BS)
    h.pwrite(d, dev(n, pfile, 0))
    compare(log, pair(n, pfile, 0, 0, BS),
            "protect=%s allows %d:%s" % (glob, n, pfile))
    assert on_image(dev(n, pfile, 0), BS) == d
for n, other in ((2, "/a"), (3, "/b")):
    h.pwrite(rnd(BS), dev(n, other, 0))
    compare(log, pair(n, other, 0, 0, BS), "protect=%s allows %d:%s"
            % (glob, n, other))
h.shutdown()
EOF
    stop
}
protect_case 2:/x.txt /x.txt "2" "3"
protect_case 3:/x.txt /x.txt "3" "2"
protect_case /x.txt /x.txt "2 3" ""
protect_case '3:/dir/**' /dir/d "3" "2"
protect_case '/dir/**' /dir/d "2 3" ""

# ======================================================================
# 4. partition=N.
# ======================================================================
serve gpt only-3 partition=3
"$py" - <<'EOF'
from pt import *
log = Log()
h = connect()
d = rnd(BS)
h.pwrite(d, dev(2, "/x.txt", 0))
compare(log, [], "partition=3: a write to p2's /x.txt")
assert on_image(dev(2, "/x.txt", 0), BS) == d
off, data, exp = span()
h.pwrite(data, off)
compare(log, [e for e in exp if e["partition"] == 3],
        "partition=3: the span gives p3's events only")
h.pwrite(rnd(BS), dev(3, "/b", 0))
compare(log, pair(3, "/b", 0, 0, BS), "partition=3: p3's /b")
h.shutdown()
EOF
stop
# A plain protect= glob with partition=3 only reaches p3; 2:GLOB is
# about a partition that is not followed.
serve gpt only-3-protect partition=3 protect=/x.txt
"$py" - <<'EOF'
from pt import *
log = Log()
h = connect()
h.pwrite(rnd(BS), dev(2, "/x.txt", 0))
compare(log, [], "partition=3 protect=/x.txt: p2 is not followed")
fails(errno.EPERM, h.pwrite, rnd(BS), dev(3, "/x.txt", 0))
compare(log, pair(3, "/x.txt", 0, 0, BS, "write", errno.EPERM),
        "partition=3 protect=/x.txt: p3 denied")
h.shutdown()
EOF
stop
refused part-vfat 'partition=1: .*partition 1 holds vfat, not an ext2/3/4' \
    "$tmp/gpt.img" partition=1
refused part-none 'partition=9: .*has no such partition \(it has: 1 vfat, 2 ext4, 3 ext4\)' \
    "$tmp/gpt.img" partition=9
refused part-zero 'partition=0: a partition number from 1' \
    "$tmp/gpt.img" partition=0
refused part-bare 'partition=1: .*has no partition table' \
    "$tmp/gpt-p2.img" partition=1
# protect=N:GLOB must name a followed partition: a typo would protect
# nothing.
refused protect-none 'protect=9:/x\.txt: no followed filesystem on partition 9' \
    "$tmp/gpt.img" protect=9:/x.txt
refused protect-vfat 'protect=1:/x\.txt: no followed filesystem on partition 1' \
    "$tmp/gpt.img" protect=1:/x.txt

# ======================================================================
# 5. MBR: primary, extended, logicals.
# ======================================================================
mbr="$tmp/mbr.img"
truncate -s 72M "$mbr"
sfdisk "$mbr" <<'EOF'
label: dos
start=2048, size=24MiB, type=83
start=51200, type=5
size=24MiB, type=83
size=8MiB, type=82
EOF
sfdisk --json "$mbr"
eval "$(part_vars "$mbr" m)"
mkdir -p "$tmp/m1" "$tmp/m5/sub"
rnd_file "$tmp/m1/x.txt" $((2 * 4096))
rnd_file "$tmp/m5/x.txt" $((2 * 4096 + 1))
rnd_file "$tmp/m5/sub/e" $((3 * 4096))
# p1 ext2, 1 MiB smaller than its partition; p5 ext3.
fstype=ext2 fs_kib=$(( m1n / 2 - 1024 )) mkfs_at "$mbr" "$m1s" "$m1n" "$tmp/m1" ||
    fail "cannot build mbr p1"
fstype=ext3 mkfs_at "$mbr" "$m5s" "$m5n" "$tmp/m5" || fail "cannot build mbr p5"
head -c $((m6n * 512)) /dev/zero > "$tmp/swap.img"
chmod 600 "$tmp/swap.img"
mkswap "$tmp/swap.img" >/dev/null
dd if="$tmp/swap.img" of="$mbr" bs=512 seek="$m6s" conv=notrunc status=none
extract "$mbr" "$m1s" "$m1n" "$tmp/mbr-p1.img"
extract "$mbr" "$m5s" "$m5n" "$tmp/mbr-p5.img"
extract "$mbr" "$m6s" "$m6n" "$tmp/mbr-p6.img"
blkid -p "$tmp/mbr-p6.img" 2>/dev/null | grep -q 'TYPE="swap"' || fail "p6 is not swap"
sfdisk --json "$mbr" | grep -c '"node"' | grep -qx 4 ||
    fail "sfdisk does not see 4 partitions on the MBR disk"
export FILES="1:/x.txt 5:/x.txt 5:/sub/e"
serve mbr mbr
"$py" - <<'EOF'
from pt import *
log = Log()
h = connect()
assert sorted(PARTS) == [1, 2, 5, 6], PARTS
d = rnd(BS)
h.pwrite(d, dev(5, "/x.txt", 1))
compare(log, pair(5, "/x.txt", 1, 0, BS), "mbr p5 /x.txt")
assert on_image(dev(5, "/x.txt", 1), BS) == d
h.pwrite(rnd(300), dev(5, "/sub/e", 2, 3000))
compare(log, pair(5, "/sub/e", 2, 3000, 300), "mbr p5 /sub/e, two blocks")
h.pwrite(rnd(BS), dev(1, "/x.txt", 0))
compare(log, pair(1, "/x.txt", 0, 0, BS), "mbr p1 /x.txt (ext2)")
# The last MiB of p1, past the end of its filesystem, and a request
# from the filesystem's last block (free) into it: no event; at
# shutdown the free block is unattributed, the bytes past the end of
# the filesystem are nobody's business.
fs_end = base(1) + PARTS[1][1] - 1024 * 1024
last = (fs_end - base(1)) // BS - 1
assert "not in use" in debugfs(pimg(1), "testb %d" % last)
d = rnd(3 * BS)
h.pwrite(d, fs_end + 10 * BS)
h.pwrite(bytes(h.pread(2 * BS, fs_end - BS)), fs_end - BS)
compare(log, [], "mbr p1 past the end of its filesystem")
assert on_image(fs_end + 10 * BS, 3 * BS) == d
# p6 (swap): its header page and a page in the middle; nothing.
sw = base(6)
d = rnd(BS)
h.pwrite(bytes(h.pread(BS, sw)), sw)
h.pwrite(d, sw + PARTS[6][1] // 2)
compare(log, [], "mbr p6 (swap)")
assert on_image(sw + PARTS[6][1] // 2, BS) == d
# The EBRs (the sector before each logical partition) and the MBR.
for n in (5, 6):
    h.pwrite(bytes(h.pread(512, base(n) - 512)), base(n) - 512)
h.pwrite(bytes(h.pread(512, 0)), 0)
compare(log, [], "mbr EBRs and MBR")
h.shutdown()
open(TMP + "/unattributed.expected", "w").write(
    json.dumps([[1, fs_end - BS, BS, "shutdown"]]))
EOF
stop
check_shutdown_lines
cmp <(extract "$IMG" "$m6s" 8 /dev/stdout) <(head -c 4096 "$tmp/mbr-p6.img") ||
    fail "the swap header changed"
extract "$IMG" "$m1s" "$m1n" "$tmp/after.img"
e2fsck -fn "$tmp/after.img" || fail "mbr p1 is damaged"
extract "$IMG" "$m5s" "$m5n" "$tmp/after.img"
e2fsck -fn "$tmp/after.img" || fail "mbr p5 is damaged"
serve mbr mbr-only-5 partition=5
"$py" - <<'EOF'
from pt import *
log = Log()
h = connect()
h.pwrite(rnd(BS), dev(1, "/x.txt", 1))
compare(log, [], "mbr partition=5: p1 not followed")
h.pwrite(rnd(BS), dev(5, "/sub/e", 1))
compare(log, pair(5, "/sub/e", 1, 0, BS), "mbr partition=5: p5")
h.shutdown()
EOF
stop
refused mbr-extended 'partition=2: .*partition 2 holds .*not an ext2/3/4' \
    "$mbr" partition=2
refused mbr-swap 'partition=6: .*partition 6 holds swap, not an ext2/3/4' \
    "$mbr" partition=6

# ======================================================================
# 6. Hostile tables; a bare image.
# ======================================================================
# (a) The primary GPT header's CRC no longer matches (a byte of its disk
# GUID flipped): served from the backup, with a warning naming it.
cp "$gpt" "$tmp/gpt-bad1.img"
"$py" - "$tmp/gpt-bad1.img" <<'EOF'
import sys
with open(sys.argv[1], "r+b") as f:
    f.seek(512 + 56)
    b = f.read(1)
    f.seek(512 + 56)
    f.write(bytes([b[0] ^ 0xff]))
EOF
! sgdisk -v "$tmp/gpt-bad1.img" >/dev/null 2>&1 ||
    echo "note: sgdisk -v does not mind the primary header"
sfdisk --json "$tmp/gpt-bad1.img" >/dev/null 2>&1 ||
    echo "note: sfdisk cannot read the table with a bad primary header"
export FILES="$GPT_FILES"
serve gpt-bad1 gpt-bad1
grep -Ei 'warning: .*primary GPT header.*backup' "$tmp/gpt-bad1.err" ||
    { cat "$tmp/gpt-bad1.err"; fail "no warning about the backup GPT header"; }
ORACLE=gpt "$py" - <<'EOF'
from pt import *
log = Log()
h = connect()
h.pwrite(rnd(BS), dev(3, "/x.txt", 0))
compare(log, pair(3, "/x.txt", 0, 0, BS), "bad primary GPT: p3")
h.pwrite(rnd(BS), dev(2, "/a", 4))
compare(log, pair(2, "/a", 4, 0, BS), "bad primary GPT: p2")
h.shutdown()
EOF
stop

# (b) Both GPT headers bad.  The documented behaviour is a clear error
# ("GPT header ... and backup header unusable"); a warning and serving
# would also do, but never a crash or a hang.
cp "$tmp/gpt-bad1.img" "$tmp/gpt-bad2.img"
"$py" - "$tmp/gpt-bad2.img" <<'EOF'
import os, sys
size = os.path.getsize(sys.argv[1])
with open(sys.argv[1], "r+b") as f:
    f.seek(size - 512 + 56)
    b = f.read(1)
    f.seek(size - 512 + 56)
    f.write(bytes([b[0] ^ 0xff]))
EOF
rc=0
timeout 60 nbdkit -U "$tmp/bad2.sock" "$plugin" "$tmp/gpt-bad2.img" \
    --run "touch '$tmp/bad2.ran'" >/dev/null 2>"$tmp/bad2.err" || rc=$?
cat "$tmp/bad2.err"
[ $rc -ne 124 ] || fail "both GPT headers bad: nbdkit hung"
[ $rc -lt 126 ] || fail "both GPT headers bad: nbdkit died abnormally ($rc)"
if [ $rc -ne 0 ]; then
    echo "both GPT headers bad: an error (status $rc)"
    [ ! -e "$tmp/bad2.ran" ] || fail "both GPT headers bad: served, then failed"
    grep -Eiq 'error.*GPT.*backup header unusable' "$tmp/bad2.err" ||
        fail "both GPT headers bad: the error does not say so"
else
    echo "both GPT headers bad: served, with a warning"
    grep -Eiq 'warning.*GPT' "$tmp/bad2.err" ||
        fail "both GPT headers bad: served without a warning"
fi

# (c) An MBR whose first partition runs past the end of the image (the
# table made for 72 MiB, the image cut to 16 MiB): a clear error.
cp "$mbr" "$tmp/mbr-short.img"
truncate -s 16M "$tmp/mbr-short.img"
refused mbr-short 'partition 1 extends past the end of the device' \
    "$tmp/mbr-short.img"
# Only the extended partition (and so its logicals) past the end; p1 is
# whole.  Documented as an error; a warning would do, never a crash.
cp "$mbr" "$tmp/mbr-short2.img"
truncate -s $(( (m5s + 8) * 512 )) "$tmp/mbr-short2.img"
rc=0
timeout 60 nbdkit -U "$tmp/short2.sock" "$plugin" "$tmp/mbr-short2.img" \
    --run "touch '$tmp/short2.ran'" >/dev/null 2>"$tmp/short2.err" || rc=$?
cat "$tmp/short2.err"
[ $rc -ne 124 ] || fail "mbr-short2: nbdkit hung"
[ $rc -lt 126 ] || fail "mbr-short2: nbdkit died abnormally ($rc)"
grep -Eiq '(error|warning).*partition 2 .*past the end' "$tmp/short2.err" ||
    fail "mbr-short2: no clear error or warning"

# (d) A bare ext4 image: no table, partition 0.
cp "$tmp/gpt-p3.img" "$tmp/bare.img"
export FILES="0:/x.txt 0:/b"
serve bare bare
"$py" - <<'EOF'
from pt import *
log = Log()
h = connect()
assert PARTS == {}, PARTS
d = rnd(BS)
h.pwrite(d, dev(0, "/x.txt", 1))
compare(log, pair(0, "/x.txt", 1, 0, BS), "bare image: partition 0")
assert on_image(dev(0, "/x.txt", 1), BS) == d
h.pwrite(rnd(20), dev(0, "/b", 3, 4000))
compare(log, pair(0, "/b", 3, 4000, 20), "bare image: /b")
h.shutdown()
EOF
stop

# (e) A partition smaller than its filesystem (p3's entry cut to 20 MiB
# after mkfs): p3 is served unwatched, with a warning, p2 is followed;
# with partition=3 it is an error.
cp "$gpt" "$tmp/gpt-small3.img"
sgdisk -d 3 -n 3:"$g3s":+20M -t 3:8300 "$tmp/gpt-small3.img" >/dev/null
export FILES="$GPT_FILES"
serve gpt-small3 gpt-small3
grep -Eq 'warning: .*partition 3 is [0-9]+ bytes but its filesystem claims [0-9]+ bytes' \
     "$tmp/gpt-small3.err" || fail "gpt-small3: no warning about p3"
ORACLE=gpt "$py" - <<'EOF'
from pt import *
log = Log()
h = connect()
assert dev(3, "/x.txt", 2) < base(3) + 20 * 1024 * 1024
d = rnd(BS)
h.pwrite(d, dev(3, "/x.txt", 2))
compare(log, [], "p3 smaller than its filesystem: not followed")
assert on_image(dev(3, "/x.txt", 2), BS) == d
h.pwrite(rnd(BS), dev(2, "/x.txt", 2))
compare(log, pair(2, "/x.txt", 2, 0, BS), "p3 smaller than its filesystem: p2")
h.shutdown()
EOF
stop
refused small3 'partition 3 is [0-9]+ bytes but its filesystem claims [0-9]+ bytes' \
    "$tmp/gpt-small3.img" partition=3

# (f) An EBR chain with a loop: p6's EBR links back to p5's.  A warning;
# p5 and p6 are still there (found before the loop) and p5 followed.
cp "$mbr" "$tmp/mbr-loop.img"
"$py" - "$tmp/mbr-loop.img" "$m2s" <<'EOF'
import struct, sys
img, ext = sys.argv[1], int(sys.argv[2])
with open(img, "r+b") as f:
    f.seek(ext * 512)
    ebr5 = f.read(512)
    assert ebr5[510:] == b"\x55\xaa"
    typ, rel = ebr5[446 + 16 + 4], struct.unpack_from("<I", ebr5, 446 + 16 + 8)[0]
    assert typ in (0x05, 0x0f, 0x85) and rel > 0, (typ, rel)
    # p6's EBR: its link entry back to the first EBR (relative sector 0).
    f.seek((ext + rel) * 512 + 446 + 16)
    f.write(struct.pack("<B3sB3sII", 0, b"\0\0\0", 0x05, b"\0\0\0", 0, 2048))
EOF
export FILES="1:/x.txt 5:/x.txt 5:/sub/e"
serve mbr-loop mbr-loop
grep -Eq 'warning: .*loop in the EBR chain' "$tmp/mbr-loop.err" ||
    fail "mbr-loop: no warning about the loop"
ORACLE=mbr "$py" - <<'EOF'
from pt import *
log = Log()
h = connect()
h.pwrite(rnd(BS), dev(5, "/x.txt", 0))
compare(log, pair(5, "/x.txt", 0, 0, BS), "EBR loop: p5 still followed")
h.shutdown()
EOF
stop

# (g) Two primary MBR partitions that overlap (entries written by hand,
# an ext4 in the first): a clear error.
truncate -s 32M "$tmp/mbr-overlap.img"
mkfs_at "$tmp/mbr-overlap.img" 2048 20480 "$tmp/m1" || fail "mbr-overlap: mkfs"
"$py" - "$tmp/mbr-overlap.img" <<'EOF'
import struct, sys
with open(sys.argv[1], "r+b") as f:
    f.seek(446)
    for start, size in ((2048, 20480), (16384, 32768)):
        f.write(struct.pack("<B3sB3sII", 0, b"\0\0\0", 0x83, b"\0\0\0",
                            start, size))
    f.seek(510)
    f.write(b"\x55\xaa")
EOF
sfdisk --json "$tmp/mbr-overlap.img" >/dev/null 2>&1 || :
refused mbr-overlap 'partitions 1 and 2 overlap' "$tmp/mbr-overlap.img"

# ======================================================================
# 7. The control socket with two followed partitions.
# ======================================================================
export FILES="$GPT_FILES"
csock="$tmp/ctl"
serve gpt control control="$csock" lock-mode=fail
for (( i = 0; i < 100; i++ )); do [ -S "$csock" ] && break; sleep 0.1; done
[ -S "$csock" ] || fail "no control socket"
# cat N:/PATH: each partition's own /x.txt (debugfs on the extracted
# partitions is the oracle).
for n in 2 3; do
    "$ctl" "$csock" cat "$n:/x.txt" > "$tmp/cat$n" || fail "cat $n:/x.txt"
    debugfs -R "cat /x.txt" "$tmp/gpt-p$n.img" 2>/dev/null | cmp - "$tmp/cat$n" ||
        fail "cat $n:/x.txt is not p$n's /x.txt"
done
# A plain path: an error that says to name a partition.
rc=0
"$ctl" "$csock" lock /x.txt -n -- true 2>"$tmp/plain.err" || rc=$?
cat "$tmp/plain.err"
[ $rc -ne 0 ] || fail "lock /x.txt (no partition) succeeded"
grep -q 'N:/PATH' "$tmp/plain.err" || fail "lock /x.txt: the error does not say to name a partition"
rc=0
"$ctl" "$csock" cat /x.txt >/dev/null 2>"$tmp/plain.err" || rc=$?
[ $rc -ne 0 ] && grep -q 'N:/PATH' "$tmp/plain.err" ||
    fail "cat /x.txt (no partition): $(cat "$tmp/plain.err")"
rc=0
"$ctl" "$csock" lock 1:/x.txt -n -- true 2>"$tmp/p1.err" || rc=$?
cat "$tmp/p1.err"
[ $rc -ne 0 ] || fail "lock 1:/x.txt (vfat) succeeded"
"$ctl" "$csock" lock 2:/nonexistent -n -- true 2>"$tmp/noent.err" &&
    fail "lock 2:/nonexistent succeeded"
cat "$tmp/noent.err"

id="$("$ctl" "$csock" lock 3:/x.txt --hold)" || fail "lock 3:/x.txt --hold"
"$ctl" "$csock" locks | tee "$tmp/locks"
[ "$(grep -c 'x.txt' "$tmp/locks")" -eq 1 ] || fail "locks: not one lock on x.txt"
cp --sparse=always "$IMG" "$tmp/before.img"
"$py" - <<'EOF'
from pt import *
log = Log()
h = connect()
# p3's /x.txt is locked: lock-mode=fail, EIO at once.
t = time.time()
fails(errno.EIO, h.pwrite, rnd(BS), dev(3, "/x.txt", 1))
assert time.time() - t < 5, "lock-mode=fail waited %.1f s" % (time.time() - t)
evs = log.new()
assert all(e["partition"] == 3 and e["result"] != 0 for e in evs), evs
print("locked write: %d events" % len(evs), evs)
log.handler()
same_image(TMP + "/before.img")
# p2's /x.txt, the same path, is not.
d = rnd(BS)
h.pwrite(d, dev(2, "/x.txt", 1))
compare(log, pair(2, "/x.txt", 1, 0, BS), "lock on 3:/x.txt, 2:/x.txt writable")
assert on_image(dev(2, "/x.txt", 1), BS) == d
# Another file of p3 is not held back either.
h.pwrite(rnd(BS), dev(3, "/b", 0))
compare(log, pair(3, "/b", 0, 0, BS), "lock on 3:/x.txt, 3:/b writable")
h.shutdown()
EOF
"$ctl" "$csock" unlock "$id" || fail "unlock $id"
"$py" - <<'EOF'
from pt import *
log = Log()
log.new(("write", "lock", "unlock"))          # what came before
log.handler()
h = connect()
d = rnd(BS)
h.pwrite(d, dev(3, "/x.txt", 1))
compare(log, pair(3, "/x.txt", 1, 0, BS), "3:/x.txt after the unlock")
assert on_image(dev(3, "/x.txt", 1), BS) == d
h.shutdown()
EOF
# The lock and unlock lines name partition 3.
"$py" - <<'EOF'
import json, os
locks = [json.loads(l) for l in open(os.environ["LOG"])]
locks = [e for e in locks if e["event"] in ("lock", "unlock")]
print(locks)
assert locks and all(e["partition"] == 3 and e["file"] == "/x.txt"
                     for e in locks), locks
EOF
stop

# ======================================================================
# 8. A kernel guest (root, FUSE and loop devices only): p2 and p3 of the
# served disk mounted at once through nbdfuse and two loop devices with
# --offset/--sizelimit (so the kernel's I/O reaches the plugin at
# device offsets).  Journal commits in p3 (a new file, a rename), an
# O_DIRECT overwrite in p3, a deleted and a new file in p2: each event
# names its own partition; afterwards debugfs and e2fsck on each
# extracted partition.
# ======================================================================
kernel_ok=yes
for t in "test $(id -u) -eq 0" "test -e /dev/fuse" "test -e /dev/loop-control" \
         "nbdfuse --version" "fusermount3 -V" "losetup --version" \
         "mountpoint --version" "grep -qw ext4 /proc/filesystems"; do
    $t >/dev/null 2>&1 || { kernel_ok=; echo "SKIP: case 8 needs: $t"; break; }
done
if [ -n "$kernel_ok" ]; then
    k="$(tmpdir)"
    mkdir -p "$k/fuse" "$k/m2" "$k/m3"
    fuse_pid= kdevs=() kmounts=()
    kernel_down ()
    {
        local m dv i
        for m in "${kmounts[@]}"; do
            umount "$m" || { sleep 1; umount "$m" || umount -l "$m" || :; }
        done
        kmounts=()
        for dv in "${kdevs[@]}"; do
            # Only our loop device: never one someone else got since.
            [ "$(backing "$dv")" != "$k/fuse/nbd" ] || losetup -d "$dv" || :
            for (( i = 0; i < 100; i++ )); do
                [ "$(backing "$dv")" = "$k/fuse/nbd" ] || break
                sleep 0.1
            done
        done
        kdevs=()
        if [ -n "$fuse_pid" ]; then
            for (( i = 0; i < 50; i++ )); do
                fusermount3 -u "$k/fuse" 2>/dev/null && break
                mountpoint -q "$k/fuse" || break
                sleep 0.2
            done
            for (( i = 0; i < 100; i++ )); do
                kill -0 $fuse_pid 2>/dev/null || break
                sleep 0.1
            done
            kill $fuse_pid 2>/dev/null || :
            wait $fuse_pid 2>/dev/null || :
            fuse_pid=
        fi
    }
    cleanup_fn 'kernel_down >/dev/null 2>&1'
    export FILES="$GPT_FILES"
    serve gpt kernel
    nbdfuse -P "$k/fuse.pid" "$k/fuse/nbd" --unix "$SOCK" </dev/null 2>"$k/nbdfuse.err" &
    fuse_pid=$!
    for (( i = 0; i < 300; i++ )); do
        [ -s "$k/fuse.pid" ] && [ -e "$k/fuse/nbd" ] && break
        sleep 0.1
    done
    [ -e "$k/fuse/nbd" ] || { cat "$k/nbdfuse.err"; fail "case 8: nbdfuse did not start"; }
    for n in 2 3; do
        eval "s=\$g${n}s c=\$g${n}n"
        dv="$(losetup --direct-io=on -f --show -o $((s * 512)) --sizelimit $((c * 512)) "$k/fuse/nbd" 2>/dev/null)" ||
            dv="$(losetup -f --show -o $((s * 512)) --sizelimit $((c * 512)) "$k/fuse/nbd")"
        kdevs+=("$dv")
        mount -t ext4 "$dv" "$k/m$n" || fail "case 8: cannot mount p$n ($dv)"
        kmounts+=("$k/m$n")
    done
    rnd_file "$k/new.txt" 20000
    rnd_file "$k/blk" 4096
    cp "$k/new.txt" "$k/m3/new.txt"
    mv "$k/m3/b" "$k/m3/b2"
    rm "$k/m2/tail"                   # p2 is full
    sync
    echo "p2" > "$k/m2/p2new"
    sync
    dd if="$k/blk" of="$k/m3/x.txt" bs=4096 count=1 conv=notrunc oflag=direct status=none
    sync
    kernel_down
    stop
    "$py" - <<'EOF'
import json, os
evs = [json.loads(l) for l in open(os.environ["LOG"])]
for e in evs:
    print(" ", e["event"], e.get("phase", ""), e["partition"], e.get("file"),
          e.get("new_file", ""), e.get("position", ""), e.get("length", ""),
          e.get("direction", ""), e["result"] if "result" in e else "")
for e in evs:
    assert e["partition"] in (2, 3), e
    name = e.get("file", "")
    if name in ("/new.txt", "/b", "/x.txt"):
        assert e["partition"] == 3, e
    if name in ("/p2new", "/tail"):
        assert e["partition"] == 2, e
un = [e for e in evs if e["event"] == "unattributed"]
assert not un, un
def has(**kw):
    return [e for e in evs if all(e.get(k) == v for k, v in kw.items())]
assert has(event="create", file="/new.txt", partition=3, phase="after"), "no create of 3:/new.txt"
assert has(event="create", file="/p2new", partition=2, phase="after"), "no create of 2:/p2new"
assert has(event="delete", file="/tail", partition=2, phase="after"), "no delete of 2:/tail"
assert has(event="rename", file="/b", new_file="/b2", partition=3, phase="after"), "no rename 3:/b"
cover = set()
for e in has(event="write", file="/new.txt", partition=3, phase="after", result=0):
    cover.update(range(e["position"], e["position"] + e["length"]))
assert set(range(20000)) <= cover, "3:/new.txt's 20000 bytes are not all in write events"
assert has(event="write", file="/x.txt", partition=3, phase="after", position=0,
           length=4096, result=0), "no write event for the O_DIRECT overwrite of 3:/x.txt"
print("ok: kernel guest, %d log lines" % len(evs))
EOF
    extract "$IMG" "$g3s" "$g3n" "$tmp/after.img"
    e2fsck -fn "$tmp/after.img" || fail "case 8: p3 is damaged"
    debugfs -R "cat /new.txt" "$tmp/after.img" 2>/dev/null | cmp - "$k/new.txt" ||
        fail "case 8: 3:/new.txt on the image"
    debugfs -R "cat /x.txt" "$tmp/after.img" 2>/dev/null | head -c 4096 | cmp - "$k/blk" ||
        fail "case 8: 3:/x.txt on the image"
    extract "$IMG" "$g2s" "$g2n" "$tmp/after.img"
    e2fsck -fn "$tmp/after.img" || fail "case 8: p2 is damaged"
    [ "$(debugfs -R "cat /p2new" "$tmp/after.img" 2>/dev/null)" = p2 ] ||
        fail "case 8: 2:/p2new on the image"
fi

echo "PASS: $0"
