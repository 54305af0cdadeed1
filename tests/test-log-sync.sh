#!/usr/bin/env bash
# log-sync=flush|fs|none: what an NBD flush does to make the log's lines
# durable, seen in the server's system calls (strace -y names each
# descriptor's file), and the lines being in the file when the flush
# returns in every mode.  Bad combinations are refused at start-up.
source ./functions.sh
set -x

requires nbdkit --version
requires mke2fs -V
requires debugfs -V
requires strace -V
requires /usr/bin/python3 -c 'import nbd'

d="$(tmpdir)"
mkdir "$d/seed"
echo "some data" > "$d/seed/f"
mkfs_image "$d/disk.img" 32M -t ext4 -b 4096 -d "$d/seed"
blk="$(debugfs -R 'bmap /f 0' "$d/disk.img" 2>/dev/null)"
[ "$blk" -gt 0 ] || fail "no block for /f"

# run MODE: one write into /f, one flush, under strace; the client
# checks that the log has the write's line as soon as the flush returns.
run () {
    local mode="$1"
    rm -f "$d/log" "$d/trace"
    strace -f -y -qq -e signal=none -e trace=fdatasync,fsync,syncfs -o "$d/trace" \
        nbdkit -U - "$plugin" "$d/disk.img" log="$d/log" \
        ${mode:+log-sync=$mode} \
        --run "/usr/bin/python3 -c '
import json, nbd, sys
h = nbd.NBD(); h.connect_uri(sys.argv[1])
h.pwrite(b\"X\", $((blk * 4096)))
h.flush()
lines = open(\"$d/log\").read().splitlines()
assert len(lines) == 1, lines
e = json.loads(lines[0])
assert e[\"file\"] == \"/f\" and e[\"phase\"] == \"after\", e
h.shutdown()' \"\$uri\"" ||
        fail "log-sync=${mode:-(default)}: the run failed"
    cat "$d/trace"
}

# Calls in the trace on the image and on the log.
count () {                      # count SYSCALL FILE
    grep -c -E "^[0-9]+ +$1\([0-9]+<$2>" "$d/trace" || true
}

# The default (flush): the image and the log are each fdatasync'ed.
run ""
[ "$(count fdatasync "$d/disk.img")" -ge 1 ] || fail "flush: the image was not synced"
[ "$(count fdatasync "$d/log")" -ge 1 ] || fail "flush: the log was not synced"
[ "$(count syncfs "$d/log")" -eq 0 ] || fail "flush: syncfs used"
run flush
[ "$(count fdatasync "$d/log")" -ge 1 ] || fail "log-sync=flush: the log was not synced"

# fs: one syncfs (through the log's descriptor) and no fdatasync at all.
run fs
[ "$(count syncfs "$d/log")" -ge 1 ] || fail "log-sync=fs: no syncfs"
! grep -q "fdatasync(" "$d/trace" || fail "log-sync=fs: an fdatasync too"

# none: the image is synced, the log is not (but it was written: run
# checked the line).
run none
[ "$(count fdatasync "$d/disk.img")" -ge 1 ] || fail "log-sync=none: the image was not synced"
[ "$(count fdatasync "$d/log")" -eq 0 ] || fail "log-sync=none: the log was synced"
! grep -q "syncfs(" "$d/trace" || fail "log-sync=none: syncfs used"

# Refused: an unknown mode; fs with the log on another filesystem, on
# stderr, or in the filter (the layer below writes the image).
refused () {                    # refused MESSAGE nbdkit-args...
    local msg="$1"
    shift
    if nbdkit -U - "$@" --run true 2>"$d/err"; then
        fail "accepted: $*"
    fi
    cat "$d/err"
    grep -q -- "$msg" "$d/err" || fail "no '$msg' for: $*"
}
refused "log-sync=sometimes: use flush" \
    "$plugin" "$d/disk.img" log="$d/log" log-sync=sometimes
refused "log-sync=fs: the log is standard error" \
    "$plugin" "$d/disk.img" log=- log-sync=fs
refused "log-sync=fs: only the plugin" \
    --filter="$filter" file "$d/disk.img" log="$d/log" log-sync=fs
if [ -d /dev/shm ] && [ "$(stat -c %d /dev/shm)" != "$(stat -c %d "$d")" ]; then
    shm="$(mktemp /dev/shm/fsevent-log-sync.XXXXXX)"
    cleanup_fn "rm -f '$shm'"
    refused "log-sync=fs: the log and the image must be regular files on one filesystem" \
        "$plugin" "$d/disk.img" log="$shm" log-sync=fs
else
    echo "note: /dev/shm is on the test directory's filesystem: the" \
         "two-filesystem refusal is not checked here"
fi
echo "ok"
