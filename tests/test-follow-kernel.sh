#!/usr/bin/env bash
# tests/test-follow-kernel.sh: journal following through a real kernel
# mount.  For each filesystem variant (ext4, ext4 with fast_commit, ext4
# mounted data=journal, ext3, ext2) a 256 MiB image with a few files in
# it is served by the plugin with log= and -D fsevent.check=1, attached
# (nbdfuse + loop, or nbd-client) and mounted; a scripted workload
# (tests/follow_oracle.py workload: create, append, overwrite, truncate
# up and down, renames within and across directories and over existing
# files, hard links, unlink of open and closed files, mkdir/rmdir trees,
# chmod/chown/touch/chattr, a sparse write, an 8 MiB file, 1000 small
# files; with and without sync and fsync between phases) writes down
# what it did.  After umount and nbdkit's exit, tests/follow_oracle.py
# checks the log against that ground truth (every byte written covered
# by a write event, every namespace operation reported exactly once,
# no unattributed bytes) and the image with debugfs and e2fsck.
# A tree the workload never touches (/guarded) is served with protect=:
# an event for a state that never existed would be vetoed there, and a
# vetoed event fails the run (on ext2, decided at the guest's flush, a
# rename must come out as a rename too).
# The log has one line per event (the default), except on ext3, which
# runs with log-phases=both (before and after lines, checked in pairs).
# Documented limitations are accepted only in their variant and exact
# shape, each printed as a "note:" line: on ext2 (metadata written in
# any order) a write named "" before the inode's first name reached the
# disk, a deleted
# tree named through its already unlinked top directory ("<ino P>/..."),
# transient namespace events that cancel out within one sync epoch (the
# state committed between two metadata block writes: a link and an
# unlink of the same inode and name in either order, a create and a
# delete of an inode under a stale entry such as "D/." or "D/.." or a
# name the workload never had), replayed as nothing;
# on ext4-fast_commit the fsync'd data of a file unlinked while open
# and freed before the next full commit as unattributed bytes (the very
# blocks, found in the image by their content).
#
# Environment:
#   FOLLOW_VARIANTS="ext4 ext2"  run only these variants
#   KEEP=1       keep the artefacts (image, log, truth, nbdkit's stderr,
#                report) of failing variants, in a directory printed at
#                the end (under $KEEP_DIR, default $TMPDIR or /tmp)
#   TRACE=1      also log every NBD request (nbdkit-log-filter)
#
# Rerun the oracle on a kept run:
#   python3 tests/follow_oracle.py --log DIR/events.jsonl \
#       --image DIR/disk.img --truth DIR/truth.json \
#       --nbdkit-stderr DIR/nbdkit.err [--phases both]   (ext3)

source ./functions.sh

requires_root
requires test -e /dev/fuse
requires test -e /dev/loop-control
requires nbdkit --version
requires nbdfuse --version
requires mke2fs -V
requires debugfs -V
requires e2fsck -V
requires command -v chattr
requires dd --version
requires grep -qw ext4 /proc/filesystems
requires /usr/bin/python3 -c 'import random; random.Random(1).randbytes(1)'
[ -f "$plugin" ] || fail "plugin not built: $plugin"
py=/usr/bin/python3
oracle="$top_srcdir/tests/follow_oracle.py"
[ -f "$oracle" ] || fail "missing $oracle"

all_variants="ext4 ext4-fast_commit ext4-data=journal ext3 ext2"
variants="${FOLLOW_VARIANTS:-$all_variants}"
work="$(tmpdir)"
keepdir=

# run_variant NAME DIR: one variant, in a subshell of its own (so that
# its cleanups run when it ends, pass or fail).  Exit 0 pass, 1 fail,
# 77 skip.
run_variant ()
{
    local v="$1" d="$2" mkfs=() mopts='' journal='' phases=after
    case "$v" in
        ext4) mkfs=(-t ext4) ;;
        ext4-fast_commit)
            [ -e /sys/fs/ext4/features/fast_commit ] ||
                { echo "SKIP: $v: the kernel has no ext4 fast_commit" >&2; return 77; }
            mkfs=(-t ext4 -O fast_commit) ;;
        ext4-data=journal) mkfs=(-t ext4); mopts=data=journal ;;
        ext3)
            grep -qw ext3 /proc/filesystems ||
                { echo "SKIP: $v: the kernel cannot mount ext3" >&2; return 77; }
            mkfs=(-t ext3); phases=both ;;
        ext2)
            grep -qw ext2 /proc/filesystems ||
                { echo "SKIP: $v: the kernel cannot mount ext2" >&2; return 77; }
            mkfs=(-t ext2); journal=--no-journal ;;
        *) echo "unknown variant $v" >&2; return 1 ;;
    esac

    _cleanups=()
    trap '_run_cleanups' EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
    set -e

    local img="$d/disk.img" log="$d/events.jsonl" mnt="$d/mnt"
    local t0 t1 t2 t3 dev
    detached=
    t0=$(date +%s%N)
    "$py" "$oracle" populate "$d/root"
    mkfs_image "$img" 256M "${mkfs[@]}" -b 4096 -d "$d/root"

    local filter=()
    [ -z "${TRACE:-}" ] || filter=(--filter=log)
    start_nbdkit "$d/sock" "$d/pid" --log=stderr -D fsevent.check=1 \
        "${filter[@]}" "$plugin" file="$img" log="$log" log-phases="$phases" \
        protect=/guarded protect='/guarded/**' \
        ${TRACE:+logfile="$d/trace.log"} 2>"$d/nbdkit.err"
    dev="$("$scripts/attach" ${mopts:+-o "$mopts"} "$d/sock" "$mnt")"
    cleanup_fn '[ -n "$detached" ] || { umount "'"$mnt"'" 2>/dev/null; "'"$scripts"'/detach" "'"$dev"'"; }'
    t1=$(date +%s%N)

    "$py" "$oracle" workload --mnt "$mnt" --root "$d/root" --log "$log" \
        --truth "$d/truth.json" --variant "$v" $journal
    cat "/proc/fs/jbd2/${dev##*/}-8/info" > "$d/jbd2-info" 2>/dev/null || :
    t2=$(date +%s%N)

    "$scripts/detach" "$mnt"
    detached=yes
    stop_nbdkit "$d/pid"
    t3=$(date +%s%N)

    local status=0
    "$py" "$oracle" --log "$log" --image "$img" --truth "$d/truth.json" \
        --nbdkit-stderr "$d/nbdkit.err" --report "$d/report.txt" \
        --phases "$phases" \
        > "$d/oracle.out" 2>&1 || status=$?
    cat "$d/oracle.out"
    # The oracle itself, on a log made up from this run's truth as a
    # correct plugin would write it, and on broken copies of that log:
    # it must pass the first and find what is wrong with the others.
    "$py" "$oracle" selftest --image "$img" --truth "$d/truth.json" \
        --phases "$phases" \
        > "$d/selftest.out" ||
        { cat "$d/selftest.out"; echo "FAIL: $v: the oracle's selftest failed"; status=1; }
    grep '^summary:' "$d/oracle.out" > "$d/summary" || :
    printf '%s: times: mkfs+start+mount %.1f s, workload %.1f s, umount+stop %.1f s, oracle %.1f s\n' \
        "$v" "$(( (t1 - t0) / 1000000 ))e-3" "$(( (t2 - t1) / 1000000 ))e-3" \
        "$(( (t3 - t2) / 1000000 ))e-3" \
        "$(( ($(date +%s%N) - t3) / 1000000 ))e-3"
    if [ -s "$d/jbd2-info" ]; then
        echo "$v: jbd2: $(head -1 "$d/jbd2-info")," \
            "$(grep -E 'handles per|logged blocks per' "$d/jbd2-info" | sed 's/^ *//' | paste -sd, -)"
    fi
    return $status
}

results=()
failed=0 ran=0
for v in $variants; do
    d="$work/$v"
    mkdir -p "$d"
    echo "=== $v ==="
    s=$(date +%s)
    set +e
    ( run_variant "$v" "$d" )
    rc=$?
    set -e
    secs=$(( $(date +%s) - s ))
    case $rc in
        0) res=PASS; ran=$((ran + 1)) ;;
        77) res=SKIP ;;
        *) res=FAIL; ran=$((ran + 1)); failed=$((failed + 1))
           echo "--- $v: nbdkit stderr (last 20 lines):"
           tail -20 "$d/nbdkit.err" 2>/dev/null || :
           if [ -n "${KEEP:-}" ]; then
               [ -n "$keepdir" ] ||
                   keepdir="$(mktemp -d "${KEEP_DIR:-${TMPDIR:-/tmp}}/fsevent-follow.XXXXXX")"
               rmdir "$d/mnt" 2>/dev/null; rm -rf "${d:?}/sock" "${d:?}/root"
               cp -a --sparse=always "$d" "$keepdir/$v"
           fi ;;
    esac
    results+=("$(printf '%-18s %s  %4d s  %s' "$v" "$res" "$secs" \
        "$(sed 's/^summary: //' "$d/summary" 2>/dev/null)")")
done

echo "=== results ==="
printf '%s\n' "${results[@]}"
if [ -n "$keepdir" ]; then
    echo "artefacts of failing variants kept in $keepdir; rerun the oracle with:"
    echo "  $py $oracle --log $keepdir/VARIANT/events.jsonl --image $keepdir/VARIANT/disk.img --truth $keepdir/VARIANT/truth.json --nbdkit-stderr $keepdir/VARIANT/nbdkit.err"
fi
[ $failed -eq 0 ] || fail "$failed of $ran variants failed"
if [ $ran -eq 0 ]; then
    echo "SKIP: $0: no variant could run" >&2
    exit 77
fi
echo "PASS: $0"
