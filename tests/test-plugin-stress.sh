#!/usr/bin/env bash
# The write path under load with every kind of handler at once (log,
# protect, a C handler, a script): parallel writers on several
# connections, zero and trim, vetoes.  nbdkit must stay up, answer every
# request, write every event to the log, and report nothing on stderr.
# Run from a sanitizer build directory (_build-asan/tests), the plugin
# is built with ASan+UBSan: nbdkit then runs with the sanitizer runtime
# preloaded, and any report fails the test.  scripts/sanitize does not
# run it: with the runtime preloaded, nbdkit hangs at exit in
# libp11-kit's destructor (waiting on glibc's locale lock), after the
# test has checked everything.
source ./functions.sh
set -x

requires nbdkit --version
requires mke2fs -V
requires debugfs -V
requires_python_nbd
marker_so="$top_builddir/examples/.libs/marker.so"
[ -f "$plugin" ] || fail "plugin not built: $plugin"
[ -f "$marker_so" ] || fail "example handler not built: $marker_so"

d="$(tmpdir)"
mkdir -p "$d/seed/etc"
head -c 4M /dev/urandom > "$d/seed/big"
head -c 64K /dev/urandom > "$d/seed/etc/secret"
mkfs_image "$d/disk.img" 64M -t ext4 -b 4096 -d "$d/seed"
big=$(( $(debugfs -R 'bmap /big 0' "$d/disk.img" 2>/dev/null) * 4096 ))
secret=$(( $(debugfs -R 'bmap /etc/secret 0' "$d/disk.img" 2>/dev/null) * 4096 ))
cat > "$d/script.sh" <<'SH'
#!/bin/sh
exit 2
SH
chmod +x "$d/script.sh"

# A plugin built with ASan needs the runtime loaded first in nbdkit.
preload=
if ldd "$plugin" | grep -q libasan; then
    preload="$(gcc -print-file-name=libasan.so) $(gcc -print-file-name=libubsan.so)"
fi
LD_PRELOAD="$preload" ASAN_OPTIONS="detect_leaks=1:verify_asan_link_order=0" \
UBSAN_OPTIONS="print_stacktrace=1" \
    nbdkit -f -U "$d/sock" -P "$d/pid" "$plugin" "$d/disk.img" \
        log="$d/log" protect=/etc/secret \
        handler="$marker_so" marker.marker=FORBIDDEN \
        2> "$d/nbdkit.err" &
cleanup_fn "stop_nbdkit '$d/pid'"
for (( i = 0; i < 300; i++ )); do
    [ -S "$d/sock" ] && [ -s "$d/pid" ] && break
    sleep 0.1
done
[ -S "$d/sock" ] || { cat "$d/nbdkit.err"; fail "nbdkit did not start"; }

SOCK="$d/sock" BIG=$big SECRET=$secret "$py" - <<'PY'
import errno, os, threading, nbd
sock, big, secret = os.environ["SOCK"], int(os.environ["BIG"]), int(os.environ["SECRET"])
errors = []
def worker(t):
    try:
        h = nbd.NBD(); h.connect_unix(sock)
        for i in range(300):
            off = big + ((t * 300 + i) % 1024) * 4096
            if i % 50 == 7:
                h.zero(4096, off)
            elif i % 50 == 9:
                h.trim(4096, off)
            elif i % 50 == 11:
                try:
                    h.pwrite(b"FORBIDDEN" * 10, off)
                    errors.append("marker write allowed")
                except nbd.Error as e:
                    assert e.errnum == errno.EPERM
            elif i % 50 == 13:
                try:
                    h.pwrite(b"x" * 100, secret + 10)
                    errors.append("protected write allowed")
                except nbd.Error as e:
                    assert e.errnum == errno.EPERM
            else:
                h.pwrite(os.urandom(4096), off)
        h.flush()
        h.shutdown()
    except Exception as e:
        errors.append(repr(e))
ts = [threading.Thread(target=worker, args=(t,)) for t in range(6)]
for t in ts: t.start()
for t in ts: t.join()
assert not errors, errors
print("6 x 300 requests done")
PY

stop_nbdkit "$d/pid"
cat "$d/nbdkit.err"
! grep -E "AddressSanitizer|LeakSanitizer|runtime error" "$d/nbdkit.err" ||
    fail "sanitizer report from the plugin"
! grep -E "error" "$d/nbdkit.err" || fail "nbdkit reported errors"
# 1800 requests, every one an event about one file: one line each (its
# outcome).
lines=$(wc -l < "$d/log")
[ "$lines" -eq 1800 ] || fail "expected 1800 log lines, got $lines"
"$py" - "$d/log" <<'PY'
import json, sys
seqs = [json.loads(l)["seq"] for l in open(sys.argv[1])]
assert seqs == list(range(1, len(seqs) + 1)), "seq is not 1..n in file order"
print("log ok")
PY
