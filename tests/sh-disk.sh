#!/usr/bin/env bash
# tests/sh-disk.sh: a disk for nbdkit's sh plugin (nbdkit-sh-plugin(3)),
# kept in a file, with write failures on demand; the backend below the
# fsevent filter in the tests.
#
#   nbdkit --filter=fsevent sh tests/sh-disk.sh file=DISK [fail=WHAT]
#
# fail=commit: a write whose first block is a jbd2 commit block fails
#              with EIO (the journal never commits);
# fail=OFFSET: a write covering byte OFFSET of the disk fails with EIO.
# Requests run in parallel: dd on distinct ranges of one file is safe.
set -e
method="$1"
state="$tmpdir"                 # per-run directory the sh plugin gives us

case "$method" in
    config)
        case "$2" in
            file) realpath -- "$3" > "$state/file" ;;
            fail) printf '%s\n' "$3" > "$state/fail" ;;
            *) echo "unknown parameter $2" >&2; exit 1 ;;
        esac ;;
    config_complete)
        [ -s "$state/file" ] || { echo "file=DISK is required" >&2; exit 1; } ;;
    thread_model) echo parallel ;;
    open) echo handle ;;
    get_size) stat -L -c %s -- "$(cat "$state/file")" ;;
    can_write|can_flush|can_trim|can_zero) exit 0 ;;
    can_fast_zero|can_extents|can_multi_conn) exit 3 ;;
    can_cache) echo emulate ;;
    pread)
        dd if="$(cat "$state/file")" iflag=skip_bytes,count_bytes \
           skip="$4" count="$3" bs=64K status=none ;;
    pwrite)
        f="$(cat "$state/file")"
        fail="$(cat "$state/fail" 2>/dev/null || true)"
        data="$state/data.$$"
        cat > "$data"
        if [ "$fail" = commit ] &&
               [ "$(head -c 8 "$data" | od -An -tx1 | tr -d ' \n')" = \
                 c03b399800000002 ]; then
            rm -f "$data"
            echo "EIO injected: a jbd2 commit block at $4" >&2
            exit 1
        fi
        if [ -n "$fail" ] && [ "$fail" != commit ] &&
               [ "$fail" -ge "$4" ] && [ "$fail" -lt $(( $4 + $3 )) ]; then
            rm -f "$data"
            echo "EIO injected: a write over byte $fail" >&2
            exit 1
        fi
        dd of="$f" oflag=seek_bytes conv=notrunc seek="$4" bs=64K \
           status=none < "$data"
        rm -f "$data" ;;
    zero|trim)                  # a trimmed range reads back as zeroes
        head -c "$3" /dev/zero |
            dd of="$(cat "$state/file")" oflag=seek_bytes conv=notrunc \
               seek="$4" bs=64K status=none ;;
    flush) sync -- "$(cat "$state/file")" ;;
    *) exit 2 ;;
esac
