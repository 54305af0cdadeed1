#!/usr/bin/env bash
# log= into a pipe whose reader stalls: the ring fills, requests wait
# for it (or drain it themselves) and nothing is lost or reordered.
# Oracles: every write's line (one per event), seq 1..N in file order,
# nbdkit's own count of full-ring waits, and the bytes on the image.
source ./functions.sh
set -x

requires nbdkit --version
requires mke2fs -V
requires debugfs -V
requires mkfifo --version
requires_python_nbd

d="$(tmpdir)"
mkdir "$d/seed"
head -c $((16 * 1024 * 1024)) /dev/urandom > "$d/seed/big"
mkfs_image "$d/disk.img" 64M -t ext4 -b 4096 -d "$d/seed"
blk="$(debugfs -R 'bmap /big 0' "$d/disk.img" 2>/dev/null)"
last="$(debugfs -R 'bmap /big 4095' "$d/disk.img" 2>/dev/null)"
[ "$blk" -gt 0 ] && [ "$last" -eq $((blk + 4095)) ] ||
    fail "/big is not one run of blocks: $blk..$last"

# The reader opens the pipe (nbdkit's open of log= waits for it), then
# reads nothing for 3 s: 40,000 writes make 40,000 lines (one per
# event), more than the ring's 16,384 slots and the pipe's 64 KiB (the
# flush at 3/4 comes when the ring is full).
mkfifo "$d/fifo"
$py -c '
import sys, time
f = open(sys.argv[1], "rb")
time.sleep(3)
open(sys.argv[2], "wb").write(f.read())' "$d/fifo" "$d/log" &
reader=$!

start_nbdkit "$d/sock" "$d/pid" --log=stderr -v "$plugin" "$d/disk.img" \
    log="$d/fifo" 2>"$d/nbdkit.err"

writes=40000
uri="nbd+unix:///?socket=$d/sock" off=$((blk * 4096)) n=$writes \
    $py - "$d/expect" <<'PY'
import nbd, os, sys
h = nbd.NBD(); h.connect_uri(os.environ["uri"])
off, n = int(os.environ["off"]), int(os.environ["n"])
image = {}
inflight = []
for i in range(n):
    # Writes in flight together never share a block (NBD does not order
    # them): 7919 is prime to 4096, so any 4096 in a row are distinct.
    b = i * 7919 % 4096
    data = bytes([i % 251 + 1]) * 4096
    image[b] = data
    inflight.append(h.aio_pwrite(nbd.Buffer.from_bytearray(bytearray(data)),
                                 off + b * 4096))
    while h.aio_in_flight() >= 16:
        h.poll(-1)
    if i == n * 3 // 4:
        h.flush()                   # a flush while the ring is full
for c in inflight:
    while not h.aio_command_completed(c):
        h.poll(-1)
h.flush()
h.shutdown()
with open(sys.argv[1], "w") as f:
    for b, data in sorted(image.items()):
        f.write("%d %d\n" % (b, data[0]))
PY
stop_nbdkit "$d/pid"
wait "$reader" || fail "the log reader failed"

$py - "$d/log" "$writes" <<'PY'
import json, sys
lines = open(sys.argv[1]).read().splitlines()
n = int(sys.argv[2])
assert len(lines) == n, (len(lines), n)
for i, line in enumerate(lines, 1):
    e = json.loads(line)
    assert e["seq"] == i, (i, e)
    assert e["file"] == "/big" and e["length"] == 4096 and e["result"] == 0, e
    assert e["phase"] == "after" and e["bytes_written"] == 4096, e
print("ok:", len(lines), "lines, seq 1..%d in order" % len(lines))
PY

# The ring really was full (else this test proves nothing about it).
grep -E 'log: [0-9]+ lines; the ring was full [1-9][0-9]* times' \
    "$d/nbdkit.err" || fail "the ring never filled: $(grep 'log:' "$d/nbdkit.err")"

# Every acknowledged write is on the image.
debugfs -R "dump /big $d/big.out" "$d/disk.img" 2>/dev/null
$py - "$d/big.out" "$d/expect" <<'PY'
import sys
data = open(sys.argv[1], "rb").read()
for line in open(sys.argv[2]):
    b, v = map(int, line.split())
    assert data[b * 4096:(b + 1) * 4096] == bytes([v]) * 4096, b
print("ok: every written block is on the image")
PY
