#!/usr/bin/env bash
# A file with many long names (hard links) still gets whole, valid JSON
# log lines that list every name (a fixed-size line buffer once cut them).
source ./functions.sh
set -x

requires nbdkit --version
requires mke2fs -V
requires debugfs -V
requires /usr/bin/python3 -c 'import nbd'

d="$(tmpdir)"
mkdir "$d/seed"
echo "many names" > "$d/seed/f"
long="$(printf 'n%.0s' $(seq 200))"
for i in $(seq 120); do ln "$d/seed/f" "$d/seed/$long-$i"; done
mkfs_image "$d/disk.img" 32M -t ext4 -b 4096 -d "$d/seed"
blk="$(debugfs -R 'bmap /f 0' "$d/disk.img" 2>/dev/null)"
[ "$blk" -gt 0 ] || fail "no block for /f"

# One line per event (the default): the after line, with every name.
start_nbdkit "$d/sock" "$d/pid" "$plugin" "$d/disk.img" log="$d/log"
uri="nbd+unix:///?socket=$d/sock" off=$((blk * 4096)) /usr/bin/python3 -c '
import nbd, os
h = nbd.NBD(); h.connect_uri(os.environ["uri"])
h.pwrite(b"X", int(os.environ["off"]))
h.shutdown()'
stop_nbdkit "$d/pid"

/usr/bin/python3 - "$d/log" <<'PY'
import json, sys
lines = open(sys.argv[1]).read().splitlines()
assert len(lines) == 1, lines
e = json.loads(lines[0])                 # whole and valid
assert len(e["paths"]) == 121, len(e["paths"])
assert e["position"] == 0 and e["length"] == 1, e
assert e["phase"] == "after" and e["result"] == 0 and e["bytes_written"] == 1, e
print("ok: 1 line of", len(lines[0]), "bytes, 121 paths")
PY

# log-phases=both and a veto through one of the long names: the before
# and the after line, both with every name, the after one with "by".
rm -f "$d/log"
start_nbdkit "$d/sock" "$d/pid" "$plugin" "$d/disk.img" log="$d/log" \
    log-phases=both protect="/$long-7"
uri="nbd+unix:///?socket=$d/sock" off=$((blk * 4096)) /usr/bin/python3 -c '
import nbd, os
h = nbd.NBD(); h.connect_uri(os.environ["uri"])
try:
    h.pwrite(b"X", int(os.environ["off"]))
    raise SystemExit("the write to a protected name went through")
except nbd.Error as e:
    assert e.errnum == 1, e
h.shutdown()'
stop_nbdkit "$d/pid"

/usr/bin/python3 - "$d/log" <<'PY'
import json, sys
lines = open(sys.argv[1]).read().splitlines()
assert len(lines) == 2, lines
b, a = map(json.loads, lines)            # whole and valid
for e in b, a:
    assert len(e["paths"]) == 121, len(e["paths"])
    assert e["position"] == 0 and e["length"] == 1, e
    assert e["result"] == 1 and e["error"] == "EPERM", e
assert b["phase"] == "before" and "by" not in b, b
assert a["phase"] == "after" and a["bytes_written"] == 0, a
assert a["by"] == "protect" and a["refused"] is True, a
print("ok: 2 lines of", len(lines[0]), "and", len(lines[1]), "bytes, 121 paths each")
PY
