#!/usr/bin/env bash
# tests/test-hostile.sh: a hostile guest that writes raw blocks.
#
# A root process in the guest can write any block of its disk, with
# valid checksums, bypassing its kernel's ext4 driver (DESIGN.md, "The
# guest is hostile").  Each attack here gets a fresh copy of a small
# ext4 image holding protected files (/etc/passwd, /etc/passwd2, and
# /etc/shadow, whose extents live in a tree block, under
# protect='/etc/**') and unprotected ones (/data/...), and a fresh
# server.  The attack is crafted on a scratch copy of the image with
# debugfs (or raw block edits); the blocks in which the copy differs
# from what the server was sent so far go to the server as raw libnbd
# pwrites (tests/hostile.py), alone, in some order, or as a jbd2
# transaction in the journal (debugfs jo/jw/jc) whose commit block goes
# last, first, or in pieces.  Then:
#
#   (a) the protected files' bytes, inodes (mode, owner, size, links,
#       flags, times, block map), xattrs and names are unchanged on the
#       image as served, and after its journal has been replayed on a
#       copy (e2fsck -fy);
#   (b) the server is alive and serving;
#   (c) an unprotected file (/data/frag, which no attack touches) is
#       still writable through it (a raw overwrite of one of its data
#       blocks succeeds and is logged as a write);
#   (d) -D fsevent.check=1 found no model check failure, no crash.
#
# An attack for which (a) fails is a hole; one for which (b), (c) or
# (d) fails has broken the server.  Both kinds that are known are listed
# in KNOWN_HOLES below: they are reported ("KNOWN_HOLE: ...") and do
# not fail the test; any other does.  A listed attack that no longer
# succeeds is reported as "FIXED: ..." (take it off the list).

source ./functions.sh

# Attacks that get through today, with where they get through: none.
# (Each of the 78 attacks below got through once; the commits that
# closed them say how.)
KNOWN_HOLES=""

requires nbdkit --version
requires mkfs.ext4 -V
requires debugfs -V
requires e2fsck -V
requires dumpe2fs -V
requires cmp --version
requires truncate --version
requires_python_nbd
[ -f "$plugin" ] || fail "plugin not built: $plugin"
hostile="$top_srcdir/tests/hostile.py"
export DEBUGFS_PAGER=__none__ PAGER=cat

d="$(tmpdir)"
img="$d/disk.img"       # what the server serves
cur="$d/cur.img"        # what the attacker has sent so far
s="$d/scratch.img"      # where the attacker crafts the next step
sock="$d/sock"
results="$d/results"
: > "$results"
cleanup_fn "echo '--- attacks:'; cat '$results'"

# --- The image. -------------------------------------------------------

mkdir -p "$d/root/etc" "$d/root/data"
printf 'root:x:0:0:root:/root:/bin/bash\n' > "$d/root/etc/passwd"
head -c 5000 /dev/urandom > "$d/root/etc/passwd2"
# Seven extents with holes between them: more than the inode's four,
# so the extents live in a tree block.
for i in 0 1 2 3 4 5 6; do
    head -c 4096 /dev/urandom |
        dd of="$d/root/etc/shadow" bs=4096 seek=$((i*2)) count=1 conv=notrunc status=none
    head -c 4096 /dev/urandom |
        dd of="$d/root/data/frag" bs=4096 seek=$((i*2)) count=1 conv=notrunc status=none
done
ln -s /usr/share/zoneinfo/UTC "$d/root/etc/localtime"   # a fast symlink
echo "unprotected" > "$d/root/data/x"
head -c 20000 /dev/urandom > "$d/root/data/big"
# --- What must not change. --------------------------------------------

PROTECTED="/etc/passwd /etc/passwd2 /etc/shadow /etc/localtime"

# state IMG: every protected file's bytes, inode, xattrs and names.
# Read with checksums ignored (debugfs -n): a checksum is the kernel's
# business, and a bitmap whose checksum no longer matches its
# descriptor must not hide an intact file from the comparison.
state ()
{
    local f ino
    debugfs () { command debugfs -n "$@"; }
    for f in $PROTECTED; do
        echo "== $f"
        debugfs -R "stat $f" "$1" > "$d/stat" 2>/dev/null || :
        if ! [ -s "$d/stat" ]; then echo missing; continue; fi
        sed -n \
            -e 's/^Inode: *\([0-9]*\) .*Type: *\([a-z]*\) .*Mode: *\([0-7]*\) .*Flags: *\(0x[0-9a-f]*\).*/ino=\1 type=\2 mode=\3 flags=\4/p' \
            -e 's/^User: *\([0-9]*\) *Group: *\([0-9]*\) .*Size: *\([0-9]*\).*/uid=\1 gid=\2 size=\3/p' \
            -e 's/^File ACL: *\([0-9]*\).*/acl=\1/p' \
            -e 's/^Links: *\([0-9]*\) .*/links=\1/p' \
            -e 's/^ *\(ctime\|mtime\|crtime\|dtime\): *\(0x[0-9a-f:]*\).*/\1=\2/p' \
            -e 's/^Fast link dest: *\(.*\)/target=\1/p' \
            -e '/^\(EXTENTS\|BLOCKS\):/,$p' "$d/stat"
        ino="$(sed -n 's/^Inode: *\([0-9]*\) .*/\1/p' "$d/stat")"
        echo "blocks=$(debugfs -R "blocks $f" "$1" 2>/dev/null)"
        echo "names=$(debugfs -R "ncheck -c $ino" "$1" 2>/dev/null | sed 1d | sort | paste -sd' ')"
        echo "xattrs:"; debugfs -R "ea_list $f" "$1" 2>/dev/null
        echo "bytes=$(debugfs -R "cat $f" "$1" 2>/dev/null | md5sum)"
    done
    unset -f debugfs
}
head -c 4096 /dev/urandom > "$d/random-block"
dfs_ro () { debugfs -R "$1" "$2" 2>/dev/null; }
ino_of () { dfs_ro "stat $1" "$pristine" | sed -n 's/^Inode: *\([0-9]*\) .*/\1/p'; }
blocks_of () { dfs_ro "blocks $1" "$pristine" | sed 's/ *$//'; }

# use_image ext4|ext2: the pristine image of that type (made once),
# and where its parts are.
use_image ()
{
    fstype="$1"
    pristine="$d/pristine-$1.img"
    if ! [ -f "$pristine" ]; then
        truncate -s 16M "$pristine"
        mkfs."$1" -F -q -b 4096 -N 256 -d "$d/root" "$pristine"
        # An unprotected file whose inode comes after the protected ones
        # (in the same inode-table block).
        debugfs -w -R "write $d/root/data/x /data/y" "$pristine" >/dev/null 2>&1
    fi
    P="$(ino_of /etc/passwd)"
    PB="$(blocks_of /etc/passwd)"
    X="$(ino_of /data/x)"
    XB="$(blocks_of /data/x)"
    BIGB="$(blocks_of /data/big | cut -d' ' -f1)"
    # The control: an unprotected file no attack touches.
    C="$(ino_of /data/frag)"
    CB="$(blocks_of /data/frag | cut -d' ' -f2)"
    # /etc/shadow's extent tree block (ext4) or indirect block (ext2).
    SETB="$(dfs_ro "stat /etc/shadow" "$pristine" |
            sed -n 's/.*(\(ETB0\|IND\)):\([0-9]*\).*/\2/p')"
    ETCB="$(blocks_of /etc)"
    # Where /etc/passwd's inode is: its inode table block, and the offset.
    read -r PIT POFF < <(dfs_ro "imap <$P>" "$pristine" |
        sed -n 's/.*located at block \([0-9]*\), offset \(0x[0-9a-f]*\).*/\1 \2/p')
    ITAB="$(dumpe2fs "$pristine" 2>/dev/null |
            sed -n 's/^ *Inode table at \([0-9]*\)-\([0-9]*\).*/\1 \2/p' | head -1)"
    echo "$1: passwd: ino $P block $PB inode at $PIT+$POFF; /data/x: ino $X block $XB;" \
         "shadow's tree block $SETB; /etc's block $ETCB; inode table $ITAB"
    for v in P PB X XB C CB BIGB SETB ETCB PIT POFF; do
        [ -n "${!v}" ] || fail "could not find $v on the pristine $1 image"
    done
    state "$pristine" > "$d/state.pristine"
    cat "$d/state.pristine"
    ! grep -q missing "$d/state.pristine" || fail "debugfs cannot read the pristine image"
}

# --- The attacker's tools. --------------------------------------------

# dfs CMD...: debugfs -w commands on the scratch copy.
dfs ()
{
    local c
    for c in "$@"; do echo "$c"; done > "$d/dfs.cmds"
    debugfs -w -f "$d/dfs.cmds" "$s" > "$d/dfs.out" 2>&1 ||
        { cat "$d/dfs.out"; fail "$attack: debugfs failed"; }
    ! grep -iE '^[a-z_]+: .*(error|invalid|not found|bad|usage)' "$d/dfs.out" ||
        fail "$attack: debugfs: $(cat "$d/dfs.cmds")"
}
# put BLOCK OFFSET FILE: raw bytes into the scratch copy.
put ()
{
    dd if="$3" of="$s" bs=1 seek=$(( $1 * 4096 + $2 )) conv=notrunc status=none
}
# send ORDER: the blocks of the scratch copy that differ from what was
# sent so far, as raw writes (see hostile.py for the orders).
send ()
{
    echo "--- send $1"
    "$py" "$hostile" send "$sock" "$cur" "$s" "$1" ||
        fail "$attack: hostile.py send failed (the server died?)"
    cp "$s" "$cur"
}
# journal ORDER: instead of writing the blocks changed on the scratch
# copy home, put them into a jbd2 transaction in the journal (debugfs
# jo/jw/jc on a copy of what was sent so far), and send that.
journal ()
{
    local blks b
    blks="$("$py" "$hostile" diff "$cur" "$s")"
    [ -n "$blks" ] || fail "$attack: nothing to journal"
    : > "$d/jdata"
    for b in ${blks//,/ }; do
        dd if="$s" bs=4096 skip="$b" count=1 status=none >> "$d/jdata"
    done
    cp "$cur" "$s"
    dfs "jo" "jw -b $blks $d/jdata" "jc"
    [ "${journal_bogus:-}" != yes ] || "$py" "$hostile" bogus-commit "$cur" "$s"
    echo "--- journal: blocks $blks"
    send "$1"
}

# --- One attack. -------------------------------------------------------

failures=0 holes=0 checks=0
nbdkit_pid=
cleanup_fn '[ -z "$nbdkit_pid" ] || kill $nbdkit_pid 2>/dev/null'

# attack NAME FUNCTION: serve a fresh copy, run FUNCTION (which crafts
# and sends), check (a) to (d).
attack ()
{
    attack="$1"
    local fn="$2" i bad= hole=
    echo "=== $attack"
    cp --sparse=always "$pristine" "$img"
    cp --sparse=always "$pristine" "$cur"
    cp --sparse=always "$pristine" "$s"
    rm -f "$d/log" "$d/pid" "$sock"
    nbdkit -f -v -U "$sock" -P "$d/pid" --log=stderr "$plugin" "$img" \
        protect='/etc/**' log="$d/log" -D fsevent.check=1 \
        </dev/null 2>"$d/nbdkit.err" &
    nbdkit_pid=$!
    for (( i = 0; i < 300; i++ )); do
        [ -s "$d/pid" ] && [ -S "$sock" ] && break
        kill -0 $nbdkit_pid 2>/dev/null || break
        sleep 0.05
    done
    [ -S "$sock" ] || { tail "$d/nbdkit.err"; fail "$attack: nbdkit did not start"; }

    "$fn"

    # (b) alive, (c) an unprotected file is writable.
    "$py" "$hostile" alive "$sock" || bad+="server not serving; "
    "$py" "$hostile" write "$sock" "$CB" || bad+="cannot write /data/frag; "
    kill $nbdkit_pid 2>/dev/null
    wait $nbdkit_pid || bad+="nbdkit exit $?; "
    nbdkit_pid=
    grep -E "vetoed|refused|undecided|does not parse" "$d/nbdkit.err" | grep -v '^nbdkit: debug: .*-D' | tail -5 || :
    "$py" - "$d/log" "$C" <<'EOF' || bad+="the write to /data/frag is not logged; "
import json, sys
evs = [json.loads(l) for l in open(sys.argv[1])]
ino = int(sys.argv[2])
for e in evs:
    if e.get("event") in ("write", "undecided", "unattributed") or e.get("result"):
        print("  log:", {k: e[k] for k in ("event", "phase", "file", "direction",
                                           "error", "result", "by", "refused",
                                           "reason") if k in e})
assert any(e.get("event") == "write" and e.get("ino") == ino and
           e.get("phase") == "after" and e.get("result") == 0 for e in evs)
EOF
    # (d); the check runs after each change let through.
    checks=$(( checks + $(grep -c "model check passed" "$d/nbdkit.err" || :) ))
    if grep -E "model check failed|MODEL CHECK FAILURES|AddressSanitizer|runtime error|Segmentation" \
            "$d/nbdkit.err"; then
        bad+="model check failure or crash; "
    fi

    # (a) on the image, and after journal replay.
    state "$img" > "$d/state.img"
    cp --sparse=always "$img" "$d/replayed.img"
    e2fsck -fy "$d/replayed.img" > "$d/e2fsck.out" 2>&1 || :
    state "$d/replayed.img" > "$d/state.replayed"
    if ! diff "$d/state.pristine" "$d/state.img" > "$d/diff.img"; then
        hole+="changed on the image; "
        cat "$d/diff.img"
    fi
    if ! diff "$d/state.pristine" "$d/state.replayed" > "$d/diff.replayed"; then
        hole+="changed after journal replay; "
        cat "$d/diff.replayed"
        grep -iE 'journal|replay|recover' "$d/e2fsck.out" || :
    fi

    local listed=no
    case " $(echo $KNOWN_HOLES) " in *" $attack "*) listed=yes ;; esac
    [ -z "$bad" ] || tail -20 "$d/nbdkit.err"
    if [ -n "$hole$bad" ]; then
        if [ $listed = yes ]; then
            echo "KNOWN_HOLE: $attack: $hole$bad" | tee -a "$results"
            holes=$((holes + 1))
        else
            echo "FAIL: $attack: ${hole:+HOLE: }$hole$bad" | tee -a "$results"
            failures=$((failures + 1))
        fi
    elif [ $listed = yes ]; then
        echo "FIXED: $attack (listed in KNOWN_HOLES, take it off)" | tee -a "$results"
    fi
    [ -n "$hole$bad" ] || echo "PASS: $attack" | tee -a "$results"
}

# --- The attacks. ------------------------------------------------------

# Data blocks.
a_data () { put "$PB" 0 "$d/random-block"; send asc; }
a_data_sub512 () { put "$PB" 0 "$d/random-block"; send sub512; }
a_shadow_data () {
    put "$(blocks_of /etc/shadow | cut -d' ' -f3)" 0 "$d/random-block"; send asc; }

# The inode.
a_chmod () { dfs "sif /etc/passwd mode 0100777"; send asc; }
a_chown () { dfs "sif /etc/passwd uid 1000" "sif /etc/passwd gid 1000"; send asc; }
a_chown_hi () { dfs "sif /etc/passwd uid_hi 1"; send asc; }
a_size () { dfs "sif /etc/passwd size 0"; send asc; }
a_size_hi () { dfs "sif /etc/passwd size_hi 1"; send asc; }
a_links0_dtime () { dfs "sif /etc/passwd links_count 0" "sif /etc/passwd dtime 0x5000000"; send asc; }
a_links_only () { dfs "sif /etc/passwd links_count 7"; send asc; }
a_flags_immutable () { dfs "sif /etc/passwd flags 0x80010"; send asc; }
a_flags_inline () { dfs "sif /etc/passwd flags 0x10080000"; send asc; }
# fs-verity and encryption flags (set by ioctls, not chattr): the file
# reads otherwise, or not at all.
a_flags_verity () { dfs "sif /etc/passwd flags 0x180000"; send asc; }
a_flags_encrypt () { dfs "sif /etc/passwd flags 0x80800"; send asc; }
# Flags the kernel sets, not chattr: extents off (the extent root read
# as block numbers).
a_flags_extents_off () { dfs "sif /etc/passwd flags 0"; send asc; }
a_mtime () { dfs "sif /etc/passwd mtime 0x12345678"; send asc; }
a_type_symlink () { dfs "sif /etc/passwd mode 0120644"; send asc; }
# A fast symlink's target (in i_block).
a_symlink_target () { dfs "sif /etc/localtime block[0] 0x6976652f"; send asc; }
# A transaction that logs the same block twice, the harmless copy
# first, the changed one last (replay applies them in order).
a_j_double_tag ()
{
    cp "$s" "$d/j3.img"
    dd if="$s" bs=4096 skip="$PIT" count=1 of="$d/jdata" status=none
    dfs "sif /etc/passwd mode 0104777"
    dd if="$s" bs=4096 skip="$PIT" count=1 status=none >> "$d/jdata"
    cp "$d/j3.img" "$s"
    dfs "jo" "jw -b $PIT,$PIT $d/jdata" "jc"
    send journal
}
# The extent root in the inode: remap the protected file to another
# file's block, or mark its extent unwritten (reads as zeros); size,
# mode and times unchanged.  i_block[5] is the first extent's start,
# i_block[4] its length (and the start's high bits).
a_remap_root () { dfs "sif /etc/passwd block[5] $BIGB"; send asc; }
a_unwritten_root () { dfs "sif /etc/passwd block[4] 0x8001"; send asc; }
# The extent tree block of /etc/shadow: its first leaf remapped.
a_remap_tree () { dfs "eo /etc/shadow" "root" "down" "replace 0 1 $BIGB" "ec"; send asc; }

# An alias: /data/x (unprotected) remapped onto /etc/passwd's block,
# then that block written as /data/x's.
a_alias_write () { dfs "sif /data/x block[5] $PB"; send asc; put "$PB" 0 "$d/random-block"; send asc; }

# Directory blocks (no inode changes: links counts stay).
a_dir_rename () { dfs "ln /etc/passwd /etc/pwned" "unlink /etc/passwd"; send asc; }
a_dir_unlink () { dfs "unlink /etc/passwd"; send asc; }
a_dir_replace_ino () { dfs "unlink /etc/passwd" "ln <$X> /etc/passwd"; send asc; }
a_dir_hardlink () { dfs "ln /etc/passwd /data/pw"; send asc; }
a_dir_rename_parent () { dfs "ln /etc /etc2" "unlink /etc"; send asc; }

# Bitmaps.
a_ibitmap_free () { dfs "freei /etc/passwd"; send asc; }
# Free the protected file's block in the bitmap, then write it as if it
# were free space.
a_bbitmap_free () { dfs "freeb $PB"; send asc; put "$PB" 0 "$d/random-block"; send asc; }

# Group descriptors: move the inode table to a copy in free space with
# the protected inode changed there; the new table first, or the
# descriptor first.
move_itable ()
{
    local first last n
    read -r first last <<< "$ITAB"
    n=$((last - first + 1))
    dd if="$s" of="$s" bs=4096 skip="$first" seek=2000 count="$n" conv=notrunc status=none
    dfs "set_bg 0 inode_table 2000" "set_bg 0 checksum calc" \
        "sif /etc/passwd mode 0100777" "sif /etc/passwd uid 666"
}
a_gdt_move_itable () { move_itable; send desc; }
a_gdt_move_itable_gd_first () { move_itable; send asc; }
# Hide every inode of the group (lazy init flag).
a_gdt_inode_uninit () { dfs "set_bg 0 flags 1" "set_bg 0 itable_unused 256" "set_bg 0 checksum calc"; send asc; }

# The superblock.
a_sb_garbage () { head -c 1024 /dev/urandom > "$d/garbage"; put 0 1024 "$d/garbage"; send asc; }
a_sb_inodes_count () { dfs "ssv inodes_count 128"; send asc; }
a_sb_first_ino () { dfs "ssv first_ino 20"; send asc; }
# Garbage first (refused), then a change of the protected inode.
a_seq_garbage_then_chmod ()
{
    head -c 1024 /dev/urandom > "$d/garbage"; put 0 1024 "$d/garbage"; send asc
    cp "$pristine" "$cur"; cp "$pristine" "$s"     # the attacker starts over
    dfs "sif /etc/passwd mode 0104777"; send asc
}

# xattrs: in the inode, and in a block of their own.
a_xattr_inode () { dfs "ea_set /etc/passwd security.evil pwned"; send asc; }
a_xattr_block ()
{
    head -c 3000 /dev/urandom | base64 -w0 | head -c 3000 > "$d/ea"
    dfs "ea_set -f $d/ea /etc/passwd user.big"; send asc
}

# The same, in a transaction that the engine decides by a full scan
# (it also touches the resize inode), whose models hold no xattr
# content.
a_j_scan_xattr_inode ()
{
    dfs "ea_set /etc/passwd security.evil pwned" "sif <7> mtime 0x5000000"
    journal journal
}
a_j_scan_xattr_block ()
{
    head -c 3000 /dev/urandom | base64 -w0 | head -c 3000 > "$d/ea"
    dfs "ea_set -f $d/ea /etc/passwd user.big" "sif <7> mtime 0x5000000"
    journal journal
}

# The journal: a transaction carrying the change, its commit block last
# (a jbd2 that behaves), in two halves, in 512-byte pieces, first.
a_j_chmod () { dfs "sif /etc/passwd mode 0100777"; journal journal; }
a_j_data () { put "$PB" 0 "$d/random-block"; journal journal; }
a_j_remove () { dfs "unlink /etc/passwd" "sif <$P> links_count 0" "sif <$P> dtime 0x5000000" "freei <$P>"; journal journal; }
a_j_gdt_move () { move_itable; journal journal; }
a_j_split_commit () { dfs "sif /etc/passwd mode 0100777"; journal split-commit; }
a_j_sub512 () { dfs "sif /etc/passwd mode 0100777"; journal sub512; }
a_j_commit_first () { dfs "sif /etc/passwd mode 0100777"; journal commit-first; }
a_j_one_write () { dfs "sif /etc/passwd mode 0100777"; journal one; }
# A commit block with the wrong sequence number.
a_j_bogus_commit ()
{
    dfs "sif /etc/passwd mode 0100777"
    journal_bogus=yes journal journal
}
# A harmless transaction (a chmod of /data/y, whose inode shares the
# inode-table block with /etc/passwd's) commits; then the journal copy
# of that block is rewritten with /etc/passwd changed, the commit
# block left as it is.
a_j_rewrite_after_commit ()
{
    local jblk
    dfs "sif /data/y mode 0100600"; journal journal
    jblk="$(dfs_ro "logdump -a" "$s" | sed -n "s/.*FS block $PIT logged at .*journal block \([0-9]*\).*/\1/p" | head -1)"
    [ -n "$jblk" ] || fail "$attack: the inode table block is not in the journal"
    jblk="$(dfs_ro "bmap <8> $jblk" "$s")"
    [ "$(( ($(dfs_ro "stat /data/y" "$s" | sed -n 's/^Inode: *\([0-9]*\) .*/\1/p') - 1) / 16 ))" = \
      "$(( (P - 1) / 16 ))" ] || fail "$attack: /data/y's inode is not in /etc/passwd's block"
    # Start over from the journal copy: the same block, passwd chmod'ed.
    cp "$s" "$d/t.img"
    dfs "sif /etc/passwd mode 0104777"
    dd if="$s" of="$d/t.img" bs=4096 skip="$PIT" seek="$jblk" count=1 conv=notrunc status=none
    cp "$d/t.img" "$s"
    send asc
}

# HOSTILE_ATTACKS="chmod j-chmod ...": only these (for debugging).
# (The same list with newlines in it is what runs, see run below.)
all_attacks="
    data data_sub512 shadow_data \
    chmod chown chown_hi size size_hi links0_dtime links_only \
    flags_immutable flags_inline flags_verity flags_encrypt flags_extents_off \
    mtime type_symlink \
    symlink_target j_double_tag \
    remap_root unwritten_root remap_tree alias_write \
    dir_rename dir_unlink dir_replace_ino dir_hardlink dir_rename_parent \
    ibitmap_free bbitmap_free \
    gdt_move_itable gdt_move_itable_gd_first gdt_inode_uninit \
    sb_garbage sb_inodes_count sb_first_ino seq_garbage_then_chmod \
    xattr_inode xattr_block j_scan_xattr_inode j_scan_xattr_block \
    j_chmod j_data j_remove j_gdt_move j_split_commit j_sub512 \
    j_commit_first j_one_write j_bogus_commit j_rewrite_after_commit \
    j_jsb_last j_retarget_tag j_home_under_overlay j_home_clean \
    j_home_revoke j_move_journal sb_journal_inum dir_remap sb_orphan extra_isize
"
# The log written while the journal is clean, its superblock (which
# makes it live) last.
a_j_jsb_last () { dfs "sif /etc/passwd mode 0100777"; journal jsb-last; }
# A harmless transaction commits (a chmod of /data/y); then its
# descriptor block is rewritten so that the logged inode-table block
# goes home onto /etc/passwd's data block.
a_j_retarget_tag ()
{
    local desc
    dfs "sif /data/y mode 0100600"; journal journal
    desc="$(dfs_ro "bmap <8> 1" "$s")"
    "$py" "$hostile" retarget "$s" "$desc" "$PIT" "$PB"
    send asc
}
# A harmless transaction commits the inode-table block of /etc/passwd
# (with /data/y chmod'ed); then the same block is written home with
# /etc/passwd changed too (the engine takes a home write of a block
# the journal holds for a checkpoint).  Replay would put the journal's
# copy back, but a guest can mount with -o noload; and (j-home-clean)
# it can then mark the journal empty so that nothing is replayed.
home_under_overlay ()
{
    dfs "sif /data/y mode 0100600"; journal journal
    dfs "sif /data/y mode 0100600" "sif /etc/passwd mode 0104777"; send asc
}
a_j_home_under_overlay () { home_under_overlay; }
a_j_home_clean ()
{
    home_under_overlay
    "$py" "$hostile" jclean "$s" "$(dfs_ro "bmap <8> 0" "$s")"
    dfs "feature -needs_recovery"
    send asc
}
# ... or commit a second transaction that revokes the block, so that
# replay leaves the home copy in place.
a_j_home_revoke ()
{
    home_under_overlay
    dfs "jo" "jw -r $PIT /dev/null" "jc"
    send journal
}

# Move the journal: a crafted journal (a committed transaction that
# changes /etc/passwd's inode) is written into free space, then the
# journal inode's extent root is pointed at it and the superblock says
# needs_recovery.  Free space first (pending), the journal inode last.
a_j_move_journal ()
{
    cp "$s" "$d/j2.img"
    cp "$s" "$d/j3.img"
    debugfs -w -R "sif /etc/passwd mode 0104777" "$d/j3.img" >/dev/null 2>&1
    dd if="$d/j3.img" bs=4096 skip="$PIT" count=1 of="$d/jdata" status=none
    printf '%s\n' jo "jw -b $PIT $d/jdata" jc > "$d/j.cmds"
    debugfs -w -f "$d/j.cmds" "$d/j2.img" >/dev/null 2>&1
    rm -f "$d/journal.bin"
    debugfs -R "dump <8> $d/journal.bin" "$d/j2.img" >/dev/null 2>&1
    dd if="$d/journal.bin" of="$s" bs=4096 seek=2048 conv=notrunc status=none
    # One extent: 1024 blocks at 2048.
    dfs "setb 2048 1024" "sif <8> block[0] 0x1f30a" "sif <8> block[1] 4" \
        "sif <8> block[3] 0" "sif <8> block[4] 1024" "sif <8> block[5] 2048" \
        "sif <8> block[6] 0" "sif <8> block[7] 0" "sif <8> block[8] 0" \
        "sif <8> block[9] 0" "sif <8> block[10] 0" "sif <8> block[11] 0" \
        "sif <8> block[IND] 0" "sif <8> block[DIND] 0" "sif <8> block[TIND] 0" \
        "feature needs_recovery"
    dfs_ro "stat <8>" "$s" | tail -2
    dfs_ro "logdump" "$s" | head -4
    send desc
}
# A directory remapped: /etc's entries copied to a free block, with the
# entry "passwd" there naming /data/x's inode; then /etc's extent root
# pointed at it (its size and times unchanged).
a_dir_remap ()
{
    dd if="$s" of="$s" bs=4096 skip="$ETCB" seek=2500 count=1 conv=notrunc status=none
    dfs "setb 2500" "sif /etc block[5] 2500" "unlink /etc/passwd" "ln <$X> /etc/passwd"
    send asc
}
# The orphan list made to start at /etc/passwd.
a_sb_orphan () { dfs "ssv last_orphan $P"; send asc; }
# The inode's extra size: the in-inode fields past 128 bytes (crtime,
# the in-inode xattrs) are read from elsewhere.
a_extra_isize () { dfs "sif /etc/passwd extra_isize 0"; send asc; }

# The journal moved by the superblock: the guest writes an ordinary,
# unprotected file whose bytes are a crafted journal (a committed
# transaction that changes /etc/passwd's inode), then points
# s_journal_inum at it and sets needs_recovery.
a_sb_journal_inum ()
{
    local j
    cp "$s" "$d/j2.img"
    cp "$s" "$d/j3.img"
    debugfs -w -R "sif /etc/passwd mode 0104777" "$d/j3.img" >/dev/null 2>&1
    dd if="$d/j3.img" bs=4096 skip="$PIT" count=1 of="$d/jdata" status=none
    printf '%s\n' jo "jw -b $PIT $d/jdata" jc > "$d/j.cmds"
    debugfs -w -f "$d/j.cmds" "$d/j2.img" >/dev/null 2>&1
    rm -f "$d/journal.bin"
    debugfs -R "dump <8> $d/journal.bin" "$d/j2.img" >/dev/null 2>&1
    # No holes (debugfs write skips zero blocks; a journal has none):
    # the log's unused blocks get bytes that are no jbd2 header.
    "$py" - "$d/journal.bin" <<'PY'
import sys
b = bytearray(open(sys.argv[1], "rb").read())
for k in range(0, len(b), 4096):
    if not any(b[k:k + 4096]):
        b[k:k + 4096] = b"\x01" * 4096
open(sys.argv[1], "wb").write(b)
PY
    dfs "write $d/journal.bin /data/journal"
    send asc
    j="$(dfs_ro "stat /data/journal" "$s" | sed -n 's/^Inode: *\([0-9]*\) .*/\1/p')"
    dfs "ssv journal_inum $j" "feature needs_recovery"
    send asc
}

# ext2: no journal; metadata writes are held in the epoch until the
# guest's flush and decided there.
a_ext2_chmod_noflush () { dfs "sif /etc/passwd mode 0104777"; send asc-noflush; }
a_ext2_remap_direct () { dfs "sif /etc/passwd block[0] $BIGB"; send asc; }
# /etc/shadow's indirect block: the entry for its block 12.
a_ext2_remap_ind () { "$py" "$hostile" put32 "$s" "$SETB" 0 "$BIGB"; send asc; }
# The data of a held chmod: the inode block (held), then the data.
a_ext2_chmod_then_data () { dfs "sif /etc/passwd mode 0100777"; put "$PB" 0 "$d/random-block"; send asc; }
ext2_attacks="
    ext2_data ext2_chmod ext2_chmod_noflush ext2_chown ext2_size ext2_links0_dtime
    ext2_remap_direct ext2_remap_ind ext2_chmod_then_data
    ext2_dir_rename ext2_dir_unlink ext2_dir_hardlink ext2_ibitmap_free
    ext2_gdt_move_itable ext2_sb_garbage ext2_xattr_block ext2_xattr_inode
"
ext4_attacks="$all_attacks"

run ()
{
    local a
    for a in "$@"; do
        a="${a//-/_}"
        case " $(echo ${HOSTILE_ATTACKS:-$ext4_attacks $ext2_attacks}) " in
            *" ${a//_/-} "*|*" $a "*) ;;
            *) continue ;;
        esac
        # The ext2 attacks are the ext4 ones on an ext2 image, or their own.
        if declare -F "a_$a" >/dev/null; then
            attack "${a//_/-}" "a_$a"
        else
            attack "${a//_/-}" "a_${a#ext2_}"
        fi
    done
}
use_image ext4
run $ext4_attacks
use_image ext2
run $ext2_attacks

echo "$failures failures, $holes known holes; the model was checked $checks times"
[ $checks -gt 0 ] || fail "-D fsevent.check=1 never checked the model"
[ $failures -eq 0 ] || fail "$failures attacks failed (see above)"
echo "PASS: $0"
