#!/usr/bin/env bash
# tests/test-events.sh: write events, as libnbd clients cause them and
# the log= file records them, checked against debugfs (which file owns
# which device block, i_size, inode numbers, every name of a hard-linked
# inode) and against the image file itself:
#  - the exact events of aligned, unaligned, multi-block, two-file,
#    file+free-space, past-i_size, metadata, zero and trim requests;
#  - one line per event (the after phase, with the outcome), and with
#    log-phases=both a before line too: both formats for every request
#    kind and for vetoes;
#  - vetoes (protect=): the client's errno, the lines (result, error,
#    "by" naming the handler, "refused" on the refused event), and an
#    image that stays byte-identical;
#  - the example C handler (examples/marker.c): vetoes, errno, and its
#    per-file byte counts;
#  - 4 parallel writers: one event per request, no lost or torn lines;
#  - bad parameters are refused with a clear message.
#
# FSEVENT_BACKEND picks the front end: "plugin" (the default: nbdkit
# fsevent IMAGE), or the filter over nbdkit's file plugin ("file"), an
# in-memory disk ("memory": the data plugin, loaded with the image),
# qemu-nbd through the nbd plugin ("nbd") or a script through the sh
# plugin ("sh", tests/sh-disk.sh).  The same checks run on each;
# tests/test-filter.sh runs them all.

source ./functions.sh
set -x

requires nbdkit --version
requires mke2fs -V
requires debugfs -V
requires cmp --version
requires timeout --version
[ -f "$plugin" ] || fail "plugin not built: $plugin"
BACKEND="${FSEVENT_BACKEND:-plugin}"
export BACKEND
case "$BACKEND" in
    plugin) ;;
    file|memory|sh) [ -f "$filter" ] || fail "filter not built: $filter" ;;
    nbd) [ -f "$filter" ] || fail "filter not built: $filter"
         requires qemu-nbd --version ;;
    *) fail "FSEVENT_BACKEND=$BACKEND: use plugin, file, memory, nbd or sh" ;;
esac
marker_so="$top_builddir/examples/.libs/marker.so"
[ -f "$marker_so" ] || fail "example handler not built: $marker_so"
fsmap="$top_builddir/tools/fsevent-map"
[ -x "$fsmap" ] || fail "fsevent-map not built: $fsmap"

requires_python_nbd

tmp="$(tmpdir)"
export TMP="$tmp"
export IMG="$tmp/disk.img"
export SOCK="$tmp/sock"
export LOG="$tmp/events.jsonl"
export PYTHONPATH="$tmp:$top_srcdir/tests"
T0="$(date +%s)"
export T0
# after (the default: one line per event) or both (log-phases=both).
export PHASES=after
pid="$tmp/pid"

# --- The image. -------------------------------------------------------
# /a is 3 blocks + 100 bytes, /b one block, /dir/c three blocks,
# /dir/a-link a second name of /a, /big 4 MiB for the parallel writers.
mkdir -p "$tmp/root/dir"
head -c $((3*4096 + 100)) /dev/urandom > "$tmp/root/a"
head -c 4096 /dev/urandom > "$tmp/root/b"
head -c $((3*4096)) /dev/urandom > "$tmp/root/dir/c"
ln "$tmp/root/a" "$tmp/root/dir/a-link"
head -c $((4*1024*1024)) /dev/urandom > "$tmp/root/big"
mkfs_image "$tmp/pristine.img" 64M -t ext4 -b 4096 -d "$tmp/root"
cp --sparse=always "$tmp/pristine.img" "$IMG"

# The inode table of group 0, from the layout model (the plugin's own
# map): a metadata region that must never give events.
"$fsmap" "$IMG" > "$tmp/map.jsonl"
INODE_TABLE="$("$py" -c '
import json, sys
for l in open(sys.argv[1]):
    s = json.loads(l)
    if s["role"] == "inode_table":
        print(s["offset"], s["length"]); break
' "$tmp/map.jsonl")"
export INODE_TABLE
[ -n "$INODE_TABLE" ] || fail "fsevent-map shows no inode table"

# Shared Python: the debugfs oracle, the log reader and checks.
cat > "$tmp/fsev.py" <<'EOF'
import datetime, errno, json, os, re, subprocess, time
import nbd

IMG = os.environ["IMG"]
SOCK = os.environ["SOCK"]
LOG = os.environ["LOG"]
BS = 4096
T0 = int(os.environ["T0"])
PHASES = os.environ.get("PHASES", "after")
BY = None           # who vetoes in this run: "protect", "handler:PATH"

from debugfs_oracle import File, debugfs as _debugfs, file_info as _file_info

def debugfs(cmd):
    return _debugfs(IMG, cmd)

# --- The oracle: debugfs, never the plugin. ---
def file_info(path):
    return _file_info(IMG, path, BS)

NAMES = ["/a", "/b", "/dir/c", "/big"]
F = {n: file_info(n) for n in NAMES}
assert F["/a"].names == ["/a", "/dir/a-link"], F["/a"].names
assert F["/a"].size == 3 * BS + 100 and F["/b"].size == BS
OWNER = {}                      # device block -> (file, logical block)
for n in NAMES:
    for i, b in enumerate(F[n].blocks):
        assert b not in OWNER, b
        OWNER[b] = (n, i)

def is_free(blk):
    out = debugfs("testb %d" % blk)
    return "not in use" in out

def dev(name, lblk, within=0):
    """Device offset of byte WITHIN of logical block LBLK of NAME."""
    return F[name].blocks[lblk] * BS + within

def segments(off, length):
    """(file, position, length) of every file-data run in the range, in
    device order, merged where file and device are both contiguous."""
    segs = []
    end = off + length
    while off < end:
        blk = off // BS
        n = min(end, (blk + 1) * BS) - off
        if blk in OWNER:
            name, lblk = OWNER[blk]
            pos = lblk * BS + off % BS
            if segs and segs[-1][0] == name and segs[-1][3] == off and \
               segs[-1][1] + segs[-1][2] == pos:
                segs[-1] = (name, segs[-1][1], segs[-1][2] + n, off + n)
            else:
                segs.append((name, pos, n, off + n))
        off += n
    return [s[:3] for s in segs]

# --- Expected events. ---
def ev(name, pos, length, phase, op="write", result=0, written=None):
    e = {"name": name, "event": "write", "phase": phase, "ino": F[name].ino,
         "position": pos, "length": length, "direction": "inplace",
         "op": op, "partition": 0, "result": result}
    if result:
        e["error"] = errno.errorcode[result]
    if phase == "after":
        e["bytes_written"] = length if written is None else written
    return e

def vetoed(e, refused):
    """After line E of a vetoed request: who vetoed, and whether E's
    event is the one refused."""
    assert BY, "set fsev.BY for a run with vetoes"
    e["by"] = BY
    if refused:
        e["refused"] = True
    return e

def lines(before, after):
    """The lines of a request: with log-phases=both its before lines
    then its after lines, else only the after lines."""
    return before + after if PHASES == "both" else after

def pair(name, pos, length, op="write", result=0):
    """The lines of a one-event request."""
    a = ev(name, pos, length, "after", op, result, 0 if result else length)
    if result:
        vetoed(a, True)
    return lines([ev(name, pos, length, "before", op, result)], [a])

def expected(off, length, op="write", deny=lambda name: 0):
    """The lines of a request, from the oracle: its events are decided
    until the first veto; each of those gets an after line (and, with
    log-phases=both, a before line)."""
    before, err = [], 0
    for name, pos, n in segments(off, length):
        r = deny(name)
        before.append(ev(name, pos, n, "before", op, r))
        if r:
            err = r
            break
    after = [dict(ev(e["name"], e["position"], e["length"], "after", op, err,
                     0 if err else e["length"])) for e in before]
    if err:
        for i, a in enumerate(after):
            vetoed(a, i == len(after) - 1)
    return lines(before, after)

# --- The log. ---
TIME_RE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")
BEFORE_KEYS = {"seq", "time", "event", "phase", "file", "ino", "position",
               "length", "direction", "op", "partition", "connection",
               "result"}

def check_line(e):
    keys = set(BEFORE_KEYS)
    if e.get("phase") == "after":
        keys.add("bytes_written")
    if e.get("result"):
        keys.add("error")
    if "by" in e:
        # A veto's after lines only; "refused" on the event refused.
        assert e["phase"] == "after" and e["result"], e
        assert type(e["by"]) is str and e["by"], e
        keys.add("by")
        if "refused" in e:
            assert e["refused"] is True, e
            keys.add("refused")
    else:
        assert "refused" not in e, e
    if e.get("phase") == "before":
        assert PHASES == "both", ("a before line without log-phases=both", e)
    if "paths" in e:
        keys.add("paths")
    assert set(e) == keys, ("keys", sorted(e), sorted(keys))
    assert TIME_RE.match(e["time"]), e["time"]
    t = datetime.datetime.strptime(e["time"], "%Y-%m-%dT%H:%M:%S.%fZ")
    t = t.replace(tzinfo=datetime.timezone.utc).timestamp()
    assert T0 - 5 <= t <= time.time() + 5, ("time out of range", e["time"])
    for k in ("seq", "ino", "position", "length", "partition", "connection",
              "result"):
        assert type(e[k]) is int and e[k] >= 0, (k, e)
    if "paths" in e:
        assert len(e["paths"]) >= 2 and e["file"] == e["paths"][0], e

def sync_log():
    f = nbd.NBD()
    f.connect_unix(SOCK)
    f.flush()
    f.shutdown()

class Log:
    """Reads the log as it grows; every line is checked, seq must go
    1, 2, 3, ... in the order of the lines."""
    def __init__(self, path=LOG):
        self.path, self.pos, self.seq = path, 0, 0
    def new(self):
        # The log is written by a thread of its own; an NBD flush returns
        # once every event before it is in the file.
        sync_log()
        with open(self.path, "rb") as f:
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
            out.append(e)
        return out

def compare(got, exp, what=""):
    def show():
        return "%s\n got: %s\n expected: %s" % (
            what, "\n      ".join(map(json.dumps, got)),
            "\n      ".join(map(json.dumps, exp)))
    assert len(got) == len(exp), show()
    for g, x in zip(got, exp):
        g2 = {k: v for k, v in g.items()
              if k not in ("seq", "time", "connection", "file", "paths")}
        x2 = dict(x)
        name = x2.pop("name")
        assert g2 == x2, show()
        names = F[name].names
        if len(names) > 1:
            assert sorted(g["paths"]) == names, show()
            assert g["file"] in names, show()
        else:
            assert "paths" not in g and g["file"] == name, show()
    if got:
        assert len({g["connection"] for g in got}) == 1, show()
    print("ok:", what, "(%d events)" % len(got))

# --- Client. ---
def connect():
    h = nbd.NBD()
    h.connect_unix(SOCK)
    return h

from nbd_client import fails

def rnd(n):
    while True:
        b = os.urandom(n)
        if b"FORBIDDEN" not in b:
            return b

# In memory, the disk is read back from the plugin below, through the
# filter's reads (which pass straight down); elsewhere from the file.
def on_image(off, n):
    if os.environ["BACKEND"] == "memory":
        h = nbd.NBD()
        h.connect_unix(SOCK)
        try:
            return h.pread(n, off)
        finally:
            h.shutdown()
    with open(IMG, "rb") as f:
        f.seek(off)
        return f.read(n)

def same_image(copy):
    if os.environ["BACKEND"] == "memory":
        size = os.path.getsize(copy)
        with open(copy, "rb") as f:
            for off in range(0, size, 1 << 20):
                n = min(1 << 20, size - off)
                assert on_image(off, n) == f.read(n), \
                    "the disk changed at %d: %s" % (off, copy)
        return
    r = subprocess.run(["cmp", IMG, copy])
    assert r.returncode == 0, "the image changed: cmp %s %s" % (IMG, copy)
EOF

# serve [plugin args]: a fresh copy of the image and a fresh log, served
# by the front end and backend of this run.
serve ()
{
    cp --sparse=always "$tmp/pristine.img" "$IMG"
    rm -f "$LOG"
    [ "$PHASES" = after ] || set -- log-phases="$PHASES" "$@"
    case "$BACKEND" in
        plugin) start_nbdkit "$SOCK" "$pid" "$plugin" "$IMG" log="$LOG" "$@" ;;
        file) start_nbdkit "$SOCK" "$pid" --filter="$filter" file "$IMG" \
                           log="$LOG" "$@" ;;
        memory) start_nbdkit "$SOCK" "$pid" --filter="$filter" data "<$IMG" \
                             log="$LOG" "$@" ;;
        sh) start_nbdkit "$SOCK" "$pid" --filter="$filter" \
                         sh "$top_srcdir/tests/sh-disk.sh" file="$IMG" \
                         log="$LOG" "$@" ;;
        nbd)
            rm -f "$tmp/qsock" "$tmp/qpid"
            qemu-nbd --fork --persistent --pid-file="$tmp/qpid" \
                     --socket="$tmp/qsock" -f raw --cache=none "$IMG"
            cleanup_fn "stop_qemu_nbd"
            start_nbdkit "$SOCK" "$pid" --filter="$filter" \
                         nbd socket="$tmp/qsock" log="$LOG" "$@" ;;
    esac
}

stop_qemu_nbd ()
{
    [ -s "$tmp/qpid" ] || return 0
    local qpid i
    qpid="$(cat "$tmp/qpid")"
    kill "$qpid" 2>/dev/null
    for (( i = 0; i < 100; i++ )); do
        kill -0 "$qpid" 2>/dev/null || break
        sleep 0.1
    done
    rm -f "$tmp/qpid"
}

# stop: the server goes; a disk in memory is first copied out to $IMG,
# so that the checks after it read what the plugin below held.
stop ()
{
    if [ "$BACKEND" = memory ]; then
        nbdcopy "nbd+unix:///?socket=$SOCK" "$IMG" ||
            fail "cannot copy the disk out of memory"
    fi
    stop_nbdkit "$pid"
    stop_qemu_nbd
}

# --- Events of every kind of request. -----------------------------------

# Both formats: one line per event (the default), and log-phases=both.
for PHASES in after both; do
echo "=== log-phases=$PHASES"
serve
"$py" - <<'EOF'
from fsev import *
A, B, C = F["/a"], F["/b"], F["/dir/c"]
log = Log()
h = connect()

# (a) A 4096-byte write into the middle block of /a.
d = rnd(BS)
h.pwrite(d, dev("/a", 1))
compare(log.new(), pair("/a", BS, BS), "(a) aligned block of /a")
assert on_image(dev("/a", 1), BS) == d

# Two contiguous blocks: one event (if the blocks are contiguous).
if A.blocks[1] == A.blocks[0] + 1:
    h.pwrite(rnd(2 * BS), dev("/a", 0))
    compare(log.new(), pair("/a", 0, 2 * BS), "(a2) two blocks of /a")

# (b) 100 unaligned bytes at position 10 of /b.
d = rnd(100)
h.pwrite(d, dev("/b", 0, 10))
compare(log.new(), pair("/b", 10, 100), "(b) unaligned write in /b")
assert on_image(dev("/b", 0, 10), 100) == d

# (c) From the middle of /a's last block into the block after it: one
# event per file, none for free space.
nxt = A.blocks[3] + 1
off = dev("/a", 3, 2048)
if nxt in OWNER:
    name, lblk = OWNER[nxt]
    print("(c) the block after /a's last is %s block %d" % (name, lblk))
    exp = lines([ev("/a", 3 * BS + 2048, 2048, "before"),
                 ev(name, lblk * BS, 2048, "before")],
                [ev("/a", 3 * BS + 2048, 2048, "after"),
                 ev(name, lblk * BS, 2048, "after")])
else:
    assert is_free(nxt), "block %d after /a is neither a file's nor free" % nxt
    print("(c) the block after /a's last is free space")
    exp = pair("/a", 3 * BS + 2048, 2048)
assert expected(off, BS) == exp          # the generic oracle agrees
d = rnd(BS)
h.pwrite(d, off)
compare(log.new(), exp, "(c) /a's last block and the next block")
assert on_image(off, BS) == d

# (d) A file block and free space after it: one event, only the file's
# bytes.  Then free space alone: no event.
for name in NAMES:
    last = F[name].blocks[-1]
    if is_free(last + 1):
        break
else:
    raise AssertionError("no file is followed by a free block")
lblk = len(F[name].blocks) - 1
print("(d) %s's last block %d is followed by free space" % (name, last))
h.pwrite(rnd(2 * BS + 300), last * BS)
compare(log.new(), pair(name, lblk * BS, BS), "(d) file block + free space")
h.pwrite(rnd(BS + 1), (last + 1) * BS + 5)
compare(log.new(), [], "(d2) free space only")

# (e) Across i_size in /a's last block (i_size is 3 blocks + 100):
# the event covers the whole range, its length goes past i_size.
h.pwrite(rnd(200), dev("/a", 3, 12))
compare(log.new(), pair("/a", 3 * BS + 12, 200), "(e) across i_size")
assert file_info("/a").size == 3 * BS + 100

# (f) Metadata: a block of the inode table (from fsevent-map) and /a's
# own inode (from debugfs imap), rewritten with their own bytes.
it_off, it_len = map(int, os.environ["INODE_TABLE"].split())
h.pwrite(bytes(h.pread(BS, it_off)), it_off)
m = re.search(r"located at block (\d+), offset 0x([0-9a-f]+)",
              debugfs("imap <%d>" % A.ino))
ioff = int(m.group(1)) * BS + int(m.group(2), 16)
assert it_off <= ioff < it_off + it_len, (ioff, it_off, it_len)
h.pwrite(bytes(h.pread(256, ioff)), ioff)
compare(log.new(), [], "(f) inode table")
h.pwrite(bytes(h.pread(BS, 0)), 0)
compare(log.new(), [], "(f2) superblock")

# (g) Zero and trim over file blocks.
h.zero(BS, dev("/b", 0))
compare(log.new(), pair("/b", 0, BS, "zero"), "(g) zero /b")
assert h.pread(BS, dev("/b", 0)) == bytes(BS)
h.zero(BS, dev("/dir/c", 2), nbd.CMD_FLAG_NO_HOLE)
compare(log.new(), pair("/dir/c", 2 * BS, BS, "zero"), "(g2) zero NO_HOLE")
h.trim(BS, dev("/dir/c", 1))
compare(log.new(), pair("/dir/c", BS, BS, "trim"), "(g3) trim /dir/c")
h.trim(100, dev("/a", 2, 50))
compare(log.new(), pair("/a", 2 * BS + 50, 100, "trim"), "(g4) unaligned trim")

# Reads, flush and cache give no events.
h.pread(BS, dev("/a", 0))
h.flush()
h.cache(BS, dev("/a", 0))
h.pwrite(rnd(10), dev("/b", 0), nbd.CMD_FLAG_FUA)
compare(log.new(), pair("/b", 0, 10), "FUA write")

# (h) Every /a event named both /a and /dir/a-link (checked by compare);
# look at one line as written.
h.pwrite(rnd(1), dev("/a", 0))
evs = log.new()
assert sorted(evs[0]["paths"]) == ["/a", "/dir/a-link"], evs[0]
assert evs[0]["file"] == evs[0]["paths"][0], evs[0]
print("ok: (h) paths", evs[0]["paths"])
h.shutdown()
print("final seq", log.seq)
EOF
stop
e2fsck -fn "$IMG"                 # only data blocks were written

# --- Vetoes: protect=. ---------------------------------------------------

serve protect='/dir/**'
cp --sparse=always "$IMG" "$tmp/before.img"
"$py" - <<'EOF'
import fsev
from fsev import *
fsev.BY = "protect"
log = Log()
h = connect()
copy = os.environ["TMP"] + "/before.img"

# A write to /dir/c: EPERM at the client, nothing on the image.
fails(errno.EPERM, h.pwrite, rnd(BS), dev("/dir/c", 0))
compare(log.new(), pair("/dir/c", 0, BS, "write", errno.EPERM),
        "protect=/dir/**: /dir/c")
same_image(copy)
fails(errno.EPERM, h.zero, BS, dev("/dir/c", 1))
compare(log.new(), pair("/dir/c", BS, BS, "zero", errno.EPERM), "zero /dir/c")
fails(errno.EPERM, h.trim, BS, dev("/dir/c", 1))
compare(log.new(), pair("/dir/c", BS, BS, "trim", errno.EPERM), "trim /dir/c")
same_image(copy)

# One request from /b (allowed) to /dir/c (protected): it fails as a
# whole and /b keeps its bytes.  Whatever lies between them (/big,
# with mke2fs's layout, and the block of /dir) is in the request too:
# file data with new bytes, anything else with its own.
lo = min(F["/b"].blocks[0], F["/dir/c"].blocks[0])
hi = max(F["/b"].blocks[0], F["/dir/c"].blocks[0])
assert hi - lo <= 2048, ("/b and /dir/c are far apart", lo, hi)
data = bytearray(h.pread((hi - lo + 1) * BS, lo * BS))
for blk in range(lo, hi + 1):
    if blk in OWNER:
        data[(blk - lo) * BS:(blk - lo + 1) * BS] = rnd(BS)
deny = lambda name: errno.EPERM if name.startswith("/dir/") else 0
exp = expected(lo * BS, len(data), deny=deny)
names = [e["name"] for e in exp]
assert "/b" in names and "/dir/c" in names and exp[-1]["result"] == errno.EPERM
fails(errno.EPERM, h.pwrite, bytes(data), lo * BS)
compare(log.new(), exp, "/b + /dir/c in one request")
same_image(copy)

# A file outside /dir is still writable.
d = rnd(BS)
h.pwrite(d, dev("/b", 0))
compare(log.new(), pair("/b", 0, BS), "/b is not protected")
assert on_image(dev("/b", 0), BS) == d
h.shutdown()
EOF
stop
done
PHASES=after

# protect=GLOB ALLOWED DENIED: a plain glob, a hard link, FNM_PATHNAME.
protect_case ()
{
    serve protect="$1"
    cp --sparse=always "$IMG" "$tmp/before.img"
    ALLOWED="$2" DENIED="$3" GLOB="$1" "$py" - <<'EOF'
import fsev
from fsev import *
fsev.BY = "protect"
log = Log()
h = connect()
glob, allowed, denied = os.environ["GLOB"], os.environ["ALLOWED"], os.environ["DENIED"]
for name in denied.split():
    fails(errno.EPERM, h.pwrite, rnd(BS), dev(name, 0))
    compare(log.new(), pair(name, 0, BS, "write", errno.EPERM),
            "protect=%s denies %s" % (glob, name))
same_image(os.environ["TMP"] + "/before.img")
for name in allowed.split():
    d = rnd(BS)
    h.pwrite(d, dev(name, 0))
    compare(log.new(), pair(name, 0, BS), "protect=%s allows %s" % (glob, name))
    assert on_image(dev(name, 0), BS) == d
h.shutdown()
EOF
    stop
}
protect_case /b "/a /dir/c /big" "/b"
protect_case /dir/a-link "/b /dir/c" "/a"   # the other name of /a
protect_case '/*' "/dir/c" "/a /b /big"     # * does not cross /
protect_case '/dir/c' "/a /b" "/dir/c"

# --- The example handler: examples/marker.c. ----------------------------

serve handler="$marker_so" marker.marker=FORBIDDEN marker.report="$tmp/report"
MARKER="$marker_so" "$py" - <<'EOF'
import fsev
from fsev import *
fsev.BY = "handler:" + os.environ["MARKER"]    # its path, as given
log = Log()
h = connect()
bad = lambda n: rnd(n // 2) + b"FORBIDDEN" + rnd(n - n // 2 - 9)

h.pwrite(rnd(BS), dev("/a", 0))                          # allowed: 4096
got = log.new()
compare(got, pair("/a", 0, BS), "marker: clean write")
afile = got[0]["file"]                                   # /a's first name
fails(errno.EPERM, h.pwrite, bad(BS), dev("/a", 1))      # denied
compare(log.new(), pair("/a", BS, BS, "write", errno.EPERM), "marker: denied")
h.pwrite(rnd(100), dev("/a", 2, 5))                      # allowed: 100
compare(log.new(), pair("/a", 2 * BS + 5, 100), "marker: 100 bytes")
h.pwrite(rnd(10), dev("/b", 0, 7))                       # allowed: 10
compare(log.new(), pair("/b", 7, 10), "marker: /b")
fails(errno.EPERM, h.pwrite, bad(BS), dev("/dir/c", 0))  # denied
compare(log.new(), pair("/dir/c", 0, BS, "write", errno.EPERM), "marker: /dir/c")
h.zero(BS, dev("/dir/c", 2))                             # no data: allowed
compare(log.new(), pair("/dir/c", 2 * BS, BS, "zero"), "marker: zero")
fails(errno.EPERM, h.pwrite, bad(2 * BS), dev("/big", 10))  # only denied
compare(log.new(), pair("/big", 10 * BS, 2 * BS, "write", errno.EPERM),
        "marker: /big")
# A request over two files with the marker in the second one's part
# only: the whole request fails, and the first file's part is not
# counted.
nxt = F["/a"].blocks[3] + 1
if nxt in OWNER:
    off = dev("/a", 3, 2048)
    d = rnd(2048) + b"FORBIDDEN" + rnd(2048 - 9)
    second = OWNER[nxt][0]
    exp = expected(off, BS, deny=lambda n: errno.EPERM if n == second else 0)
    assert [e["name"] for e in exp] == ["/a", second], exp
    assert [e.get("refused") for e in exp] == [None, True], exp
    fails(errno.EPERM, h.pwrite, d, off)
    compare(log.new(), exp, "marker: two files, the marker in the second")
h.shutdown()
# What the report must say.
open(os.environ["TMP"] + "/report.expected", "w").write(
    "%d %d %s\n%d %d %s\n%d %d %s\n%d %d %s\n" % (
        F["/a"].ino, 4096 + 100, afile, F["/b"].ino, 10, "/b",
        F["/dir/c"].ino, 4096, "/dir/c", F["/big"].ino, 0, "/big"))
EOF
stop
cat "$tmp/report"
sort -n "$tmp/report" > "$tmp/report.sorted"
sort -n "$tmp/report.expected" | cmp - "$tmp/report.sorted" ||
    fail "marker report: expected $(cat "$tmp/report.expected")"

# marker.errno=13: EACCES in the log and for every handler; NBD has no
# EACCES, so nbdkit sends it to the client as EINVAL.
serve handler="$marker_so" marker.marker=FORBIDDEN marker.errno=13
MARKER="$marker_so" "$py" - <<'EOF'
import fsev
from fsev import *
fsev.BY = "handler:" + os.environ["MARKER"]
log = Log()
h = connect()
fails(errno.EINVAL, h.pwrite, b"xxFORBIDDENxx", dev("/b", 0))
compare(log.new(), pair("/b", 0, 13, "write", errno.EACCES), "marker.errno=13")
assert log.new() == []
h.pwrite(b"fine", dev("/b", 0))
compare(log.new(), pair("/b", 0, 4), "marker.errno=13: clean write")
h.shutdown()
EOF
stop

# --- Parallel writers. ---------------------------------------------------

serve handler="$marker_so" marker.report="$tmp/report"
"$py" - <<'EOF'
from fsev import *
import threading, collections
BIG = F["/big"]
assert len(BIG.blocks) == 1024
N, PER = 4, 200
data = {i: rnd(BS) for i in range(N * PER)}   # logical block -> bytes
errors = []
barrier = threading.Barrier(N)

def writer(t):
    try:
        h = connect()
        barrier.wait()
        for lblk in range(t, N * PER, N):       # interleaved blocks
            h.pwrite(data[lblk], dev("/big", lblk))
        h.shutdown()
    except BaseException as e:
        errors.append(e)

threads = [threading.Thread(target=writer, args=(t,)) for t in range(N)]
for t in threads: t.start()
for t in threads: t.join()
assert not errors, errors

evs = Log().new()                   # every line JSON, seq 1, 2, ... N
assert len(evs) == N * PER, len(evs)  # one line per write
assert [e["seq"] for e in evs] == list(range(1, N * PER + 1))
seen = collections.Counter()
conns = collections.Counter()
for e in evs:
    assert e["file"] == "/big" and e["ino"] == BIG.ino, e
    assert e["length"] == BS and e["position"] % BS == 0, e
    assert e["op"] == "write" and e["result"] == 0, e
    assert e["phase"] == "after" and e["bytes_written"] == BS, e
    assert "by" not in e, e
    seen[e["position"]] += 1
    conns[e["connection"]] += 1
want = {lblk * BS for lblk in range(N * PER)}
assert set(seen) == want
assert set(seen.values()) == {1}
assert sorted(conns.values()) == [PER] * N, conns
# Did the connections really interleave?  (informative only)
runs = sum(1 for a, b in zip(evs, evs[1:]) if a["connection"] != b["connection"])
print("connection changes in the log:", runs)
for lblk, d in data.items():
    assert on_image(dev("/big", lblk), BS) == d, lblk
open(os.environ["TMP"] + "/report.expected", "w").write(
    "%d %d /big\n" % (BIG.ino, N * PER * BS))
EOF
stop
cmp "$tmp/report.expected" "$tmp/report" ||
    fail "parallel: marker report $(cat "$tmp/report")"

# --- Bad parameters. -----------------------------------------------------

# refused NAME REGEX [plugin args...]: nbdkit exits non-zero (not by a
# signal, not a hang), never serves, and says REGEX on stderr.
refused ()
{
    local name="$1" regex="$2" rc=0
    shift 2
    local front=("$plugin" "$tmp/pristine.img")
    [ "$BACKEND" = plugin ] ||
        front=(--filter="$filter" file "$tmp/pristine.img")
    timeout 60 nbdkit -U "$tmp/$name.sock" "${front[@]}" "$@" \
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
refused on-error 'on-handler-error=maybe: use deny or allow' on-handler-error=maybe
refused log-phases 'log-phases=before: use after \(one line per event' \
    log="$tmp/refused.jsonl" log-phases=before
refused no-so 'handler=/nonexistent\.so: .*No such file' handler=/nonexistent.so
refused not-handler "handler=.*nbdkit-fsevent-plugin\.so: not an fsevent handler" \
    handler="$plugin"
refused marker-unknown 'marker: unknown parameter unknown' \
    handler="$marker_so" marker.unknown=1
refused marker-errno 'marker: errno=x: not an errno number' \
    handler="$marker_so" marker.errno=x
refused no-handler "unknown parameter 'marker\.marker'" marker.marker=X
refused relative "protect=relative: paths in the filesystem start with '/'" \
    protect=relative
refused twice "a handler named 'marker' is loaded already" \
    handler="$marker_so" handler="$marker_so"

echo "PASS: $0"
