#!/usr/bin/env bash
# tests/test-bad-input.sh: bad parameters and bad images are refused
# with a clear message and a non-zero exit status, no process is left
# behind, and the plugin never writes to an image by itself.

source ./functions.sh
set -x

requires nbdkit --version
requires nbdcopy --version
requires nbdinfo --version
requires mke2fs -V
requires debugfs -V
requires dumpe2fs -V
requires pgrep -V
requires sha256sum --version
requires timeout --version
[ -f "$plugin" ] || fail "plugin not built: $plugin"

tmp="$(tmpdir)"

# Every process this test starts has $tmp in its command line (the
# socket lives there), so that "pgrep -f $tmp" finds exactly ours even
# when other tests run the same plugin at the same time.
no_process_left ()
{
    local i
    for (( i = 0; i < 50; i++ )); do
        pgrep -f -- "$tmp" >/dev/null || return 0
        sleep 0.1
    done
    pgrep -af -- "$tmp" >&2 || :
    fail "$1: a process is left behind"
}

# expect_refused NAME REGEX [plugin args...]: nbdkit must exit with a
# non-zero status (not by a signal, and not hang), the --run command
# must never run, stderr must match the extended regex REGEX, and no
# process may be left.
expect_refused ()
{
    local name="$1" regex="$2" rc=0
    shift 2
    timeout 60 nbdkit -U "$tmp/$name.sock" "$plugin" "$@" \
        --run "touch '$tmp/$name.ran'" \
        >"$tmp/$name.out" 2>"$tmp/$name.err" || rc=$?
    cat "$tmp/$name.err"
    [ "$rc" -ne 124 ] || fail "$name: nbdkit hung (killed by timeout)"
    [ "$rc" -ne 0 ] || fail "$name: nbdkit exited with status 0"
    [ "$rc" -lt 126 ] || fail "$name: nbdkit died abnormally (status $rc)"
    [ ! -e "$tmp/$name.ran" ] || fail "$name: the server started (--run ran)"
    grep -Eq -- "$regex" "$tmp/$name.err" ||
        fail "$name: stderr does not match /$regex/"
    # A plugin error, not nbdkit failing to find or load the plugin.
    ! grep -Eq "cannot open plugin|dlopen" "$tmp/$name.err" ||
        fail "$name: the plugin did not load"
    no_process_left "$name"
}

# A good image to compare against and to derive bad ones from.
mkdir "$tmp/files"
head -c 300000 /dev/urandom > "$tmp/files/random.bin"
echo "hello, world" > "$tmp/files/hello.txt"
mkfs_image "$tmp/good.img" 32M -t ext4 -b 4096 -d "$tmp/files"

# Sanity: the good image is accepted by the same harness, otherwise
# every refusal below would prove nothing.
timeout 60 nbdkit -U "$tmp/good.sock" "$plugin" "$tmp/good.img" \
    --run "nbdinfo --size \"\$uri\" > '$tmp/good.size'"
[ "$(cat "$tmp/good.size")" -eq $((32*1024*1024)) ] ||
    fail "good image: wrong size $(cat "$tmp/good.size")"
no_process_left good

# --- Bad parameters. -------------------------------------------------

expect_refused nofile 'error:.*file='
expect_refused missing 'nonexistent\.img.*No such file or directory' \
    "$tmp/nonexistent.img"
expect_refused unknown "error:.*unknown parameter.*'foo'" \
    "$tmp/good.img" foo=bar
expect_refused twice 'file= given more than once' \
    file="$tmp/good.img" file="$tmp/good.img"
# The magic key and an explicit file= together are also "twice".
expect_refused twice-magic 'file= given more than once' \
    "$tmp/good.img" file="$tmp/good.img"

# --- Bad images. -----------------------------------------------------

mkdir "$tmp/adir"
expect_refused directory \
    "error:.*$tmp/adir.*(directory|not an ext2/ext3/ext4 filesystem|not a regular file)" \
    "$tmp/adir"

head -c 8M /dev/zero > "$tmp/zero.img"
expect_refused zero 'not an ext2/ext3/ext4 filesystem' "$tmp/zero.img"

head -c 1024 "$tmp/good.img" > "$tmp/truncated.img"
expect_refused truncated 'not an ext2/ext3/ext4 filesystem' \
    "$tmp/truncated.img"

# A filesystem larger than its image: the guest would write past the end.
head -c 64K "$tmp/good.img" > "$tmp/short.img"
expect_refused short 'the image is truncated' "$tmp/short.img"

# A FIFO must be refused, not block the start-up waiting for a writer.
mkfifo "$tmp/fifo"
expect_refused fifo 'not a regular file or a block device' "$tmp/fifo"

# Random bytes, with the superblock magic (bytes 1080-1081) forced to
# something else so that the outcome is deterministic.
head -c 8M /dev/urandom > "$tmp/random.img"
printf '\x00\x00' |
    dd of="$tmp/random.img" bs=1 seek=1080 conv=notrunc status=none
expect_refused random 'not an ext2/ext3/ext4 filesystem' "$tmp/random.img"

# Random bytes that do carry the magic: libext2fs gets to parse
# garbage.  Whatever it says, it must be a clean refusal, not a crash.
head -c 8M /dev/urandom > "$tmp/random-magic.img"
printf '\x53\xef' |
    dd of="$tmp/random-magic.img" bs=1 seek=1080 conv=notrunc status=none
expect_refused random-magic \
    'not an ext2/ext3/ext4 filesystem|cannot open as ext2/ext3/ext4|journal device' \
    "$tmp/random-magic.img"

truncate -s 16M "$tmp/journal.img"
mke2fs -q -F -O journal_dev -b 4096 "$tmp/journal.img" >/dev/null
expect_refused journal 'journal device' "$tmp/journal.img"

: > "$tmp/empty.img"
expect_refused empty 'not an ext2/ext3/ext4 filesystem' "$tmp/empty.img"

# A refusal in the usual background (daemon) mode must be reported by
# nbdkit's own exit status too, before it forks, leaving no pid file.
rc=0
timeout 60 nbdkit -U "$tmp/bg.sock" -P "$tmp/bg.pid" "$plugin" \
    "$tmp/zero.img" 2>"$tmp/bg.err" || rc=$?
cat "$tmp/bg.err"
[ "$rc" -ne 0 ] && [ "$rc" -ne 124 ] ||
    fail "background: nbdkit exited with status $rc"
grep -q 'not an ext2/ext3/ext4 filesystem' "$tmp/bg.err" ||
    fail "background: no message"
[ ! -s "$tmp/bg.pid" ] || fail "background: a pid file was written"
no_process_left background

# None of the refused images was changed.
cmp "$tmp/zero.img" <(head -c 8M /dev/zero) || fail "zero.img changed"
[ ! -s "$tmp/empty.img" ] || fail "empty.img changed"
[ "$(stat -c %s "$tmp/truncated.img")" -eq 1024 ] ||
    fail "truncated.img changed size"

# --- A protected path the model cannot follow. ----------------------

# The inode bitmap says /p/secret's inode is free while /p still names
# it: the kernel opens it by its name (ext4_iget does not read the
# bitmap), the model holds only inodes the bitmap says are in use, so
# writes to its blocks would be free space to it.  protect= on that
# path (or above it) must refuse to start; elsewhere it may serve.
mkdir -p "$tmp/pfiles/p" "$tmp/pfiles/other"
echo "secret" > "$tmp/pfiles/p/secret"
echo "other" > "$tmp/pfiles/other/file"
mkfs_image "$tmp/freed.img" 16M -t ext4 -b 4096 -d "$tmp/pfiles"
debugfs -w -R "freei /p/secret" "$tmp/freed.img"
debugfs -R "testi /p/secret" "$tmp/freed.img" 2>&1 | grep -q "is not in use" ||
    fail "could not clear /p/secret's inode bit"
debugfs -R "ncheck $(debugfs -R 'stat /p/secret' "$tmp/freed.img" 2>/dev/null |
                     sed -n 's/^Inode: *\([0-9]*\).*/\1/p')" "$tmp/freed.img" |
    grep -q "/p/secret" || fail "/p no longer names /p/secret"
expect_refused freed-file '/p/secret: the inode bitmap says its inode is free' \
    "$tmp/freed.img" protect=/p/secret
expect_refused freed-subtree '/p/secret: the inode bitmap says its inode is free' \
    "$tmp/freed.img" 'protect=/p/**'
timeout 60 nbdkit -U "$tmp/freed-other.sock" "$plugin" "$tmp/freed.img" \
    'protect=/other/**' --run "nbdinfo --size \"\$uri\" > '$tmp/freed-other.size'" ||
    fail "freed: protect= elsewhere refused to start"
[ -s "$tmp/freed-other.size" ] || fail "freed: protect= elsewhere did not serve"
no_process_left freed-other
# The root's own bit: every path is in doubt.
mkfs_image "$tmp/freedroot.img" 16M -t ext4 -b 4096 -d "$tmp/pfiles"
debugfs -w -R "freei <2>" "$tmp/freedroot.img"
expect_refused freed-root '/: the inode bitmap says its inode is free' \
    "$tmp/freedroot.img" 'protect=/other/file'

# A directory whose first entry "." names another inode: the model
# takes its entries for none (a directory not written yet), the kernel's
# lookup never reads "." and opens what it names.  Refused the same way.
mkfs_image "$tmp/nodot.img" 16M -t ext2 -b 1024 -d "$tmp/pfiles"
pblk="$(debugfs -R "blocks /p" "$tmp/nodot.img" 2>/dev/null | awk '{print $1}')"
[ -n "$pblk" ] || fail "nodot: no block for /p"
printf '\013\000\000\000' |
    dd of="$tmp/nodot.img" bs=1 seek=$((pblk * 1024)) conv=notrunc status=none
debugfs -R "ls -l /p" "$tmp/nodot.img" 2>/dev/null | grep -q secret ||
    fail "nodot: debugfs no longer lists /p/secret"
expect_refused nodot '/p: a directory whose entries fsevent does not read' \
    "$tmp/nodot.img" protect=/p/secret
timeout 60 nbdkit -U "$tmp/nodot-other.sock" "$plugin" "$tmp/nodot.img" \
    'protect=/other/**' --run "nbdinfo --size \"\$uri\" > '$tmp/nodot-other.size'" ||
    fail "nodot: protect= elsewhere refused to start"
[ -s "$tmp/nodot-other.size" ] || fail "nodot: protect= elsewhere did not serve"
no_process_left nodot-other

# --- The plugin never writes by itself. ------------------------------

# check_untouched NAME IMAGE SUM MTIME: the image's bytes and mtime are
# what they were.
check_untouched ()
{
    local now
    now="$(sha256sum < "$2")"
    [ "$now" = "$3" ] || fail "$1: the image's contents changed"
    now="$(stat -c %y "$2")"
    [ "$now" = "$4" ] || fail "$1: the image's mtime changed: $now != $4"
}

# serve_and_read NAME IMAGE [nbdkit options]: serve the image, read all
# of it and its extents from a client, and check that the copy is the
# image.
serve_and_read ()
{
    local name="$1" img="$2"
    shift 2
    timeout 120 nbdkit -U "$tmp/$name.sock" "$@" "$plugin" "$img" \
        --run "nbdcopy \"\$uri\" '$tmp/$name.copy' &&
               nbdcopy --connections=4 \"\$uri\" '$tmp/$name.copy4' &&
               nbdinfo --map \"\$uri\" > '$tmp/$name.map'" \
        2>"$tmp/$name.err" || { cat "$tmp/$name.err"; fail "$name: failed"; }
    grep -v ': debug: ' "$tmp/$name.err" || :
    cmp "$img" "$tmp/$name.copy" || fail "$name: copy differs"
    cmp "$img" "$tmp/$name.copy4" || fail "$name: 4-connection copy differs"
    [ -s "$tmp/$name.map" ] || fail "$name: no extents map"
    no_process_left "$name"
}

# An old mtime, so that any write at all would show.
touch -d '2001-02-03 04:05:06.789' "$tmp/good.img"
sum="$(sha256sum < "$tmp/good.img")"
mtime="$(stat -c %y "$tmp/good.img")"

serve_and_read ro "$tmp/good.img" -r
check_untouched ro "$tmp/good.img" "$sum" "$mtime"
serve_and_read rw "$tmp/good.img"
check_untouched rw "$tmp/good.img" "$sum" "$mtime"

# A filesystem whose journal is flagged as needing recovery: the plugin
# must report it under -v and neither replay the journal nor clear the
# flag (only e2fsck or the guest's kernel may do that).
cp "$tmp/good.img" "$tmp/recover.img"
debugfs -w -R "feature needs_recovery" "$tmp/recover.img"
dumpe2fs -h "$tmp/recover.img" | grep -q '^Filesystem features:.*needs_recovery' ||
    fail "could not build an image that needs recovery"
touch -d '2001-02-03 04:05:06.789' "$tmp/recover.img"
sum="$(sha256sum < "$tmp/recover.img")"
mtime="$(stat -c %y "$tmp/recover.img")"
serve_and_read recover "$tmp/recover.img" -v
grep -q 'journal: internal, needs recovery' "$tmp/recover.err" ||
    fail "recover: -v does not report the journal needing recovery"
check_untouched recover "$tmp/recover.img" "$sum" "$mtime"
dumpe2fs -h "$tmp/recover.img" | grep -q '^Filesystem features:.*needs_recovery' ||
    fail "recover: the needs_recovery flag was cleared"

echo "PASS: $0"
