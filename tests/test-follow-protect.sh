#!/usr/bin/env bash
# tests/test-follow-protect.sh: protect= against every kind of change a
# guest can make to a file, through a real kernel mount (nbdfuse + loop)
# of an ext4 image, with the journal followed.
#
# The image holds /etc/secret and /etc/secret2 (both protected),
# /etc/other and /data/x.  Each attempt gets a fresh copy of the image
# and a fresh server, makes ONE change to /etc/secret and syncs.  The
# change is vetoed at the journal commit that would make it, so that
# commit block never reaches the image, the guest's journal aborts and
# ext4 goes read-only: the guest must see an error (the command's
# status, sync's, or the kernel's messages about its device), the log
# must hold the veto (the refused event's line, one per event, with
# "error":"EPERM", "by":"protect" and "refused":true, of the right
# kind), and after the server stops debugfs must find both protected
# files byte-identical with unchanged inodes, on the image as it is and
# on a copy whose journal has been replayed (what the next mount sees).
# Controls: a change to the unprotected /etc/other goes through and is
# logged; reading the protected file works (an atime-only update is let
# through and does not abort the journal).  Last, renaming the
# directory above the protected file (and so changing it unprotected
# under another path, and renaming it back) must be vetoed too.

source ./functions.sh
set -x

requires_root
requires test -e /dev/fuse
requires test -e /dev/loop-control
requires grep -qw ext4 /proc/filesystems
requires nbdkit --version
requires nbdfuse --version
requires fusermount3 -V
requires losetup --version
requires mount --version
requires umount --version
requires findmnt --version
requires dmesg
requires mkfs.ext4 -V
requires debugfs -V
requires e2fsck -V
requires dumpe2fs -V
requires dd --version
requires cmp --version
requires truncate --version
requires fallocate --version
requires test -x "$(command -v chattr)"
requires sync --version
requires paste --version
requires awk 'BEGIN { exit 0 }'
[ -f "$plugin" ] || fail "plugin not built: $plugin"
py=
for p in /usr/bin/python3 python3; do
    if "$p" -c 'import json' >/dev/null 2>&1; then py="$p"; break; fi
done
[ -n "$py" ] || requires python3 -c 'import json'
export DEBUGFS_PAGER=__none__ PAGER=cat

d="$(tmpdir)"
pristine="$d/pristine.img"
img="$d/disk.img"
mnt="$d/mnt"
fuse="$d/fuse"
sock="$d/sock"
summary="$d/summary"
mkdir -p "$mnt" "$fuse"
# One line per attempt that passed, shown at the end whatever happens.
cleanup_fn "echo 'Attempts that passed:'; cat '$summary' 2>/dev/null"

mkdir -p "$d/root/etc" "$d/root/data"
head -c 6000 /dev/urandom > "$d/root/etc/secret"
head -c 3000 /dev/urandom > "$d/root/etc/secret2"
echo "other file" > "$d/root/etc/other"
echo "x" > "$d/root/data/x"
truncate -s 64M "$pristine"
mkfs.ext4 -q -F -b 4096 -d "$d/root" "$pristine"
head -c 4096 /dev/urandom > "$d/new-block"

# --- What must not change. ---------------------------------------------

# meta IMG PATH: the inode of PATH as debugfs sees it, every field that
# protect= must keep (atime apart), one per line; "missing" if none.
meta ()
{
    debugfs -R "stat $2" "$1" > "$d/stat" 2>/dev/null || :
    if ! [ -s "$d/stat" ]; then echo missing; return; fi
    sed -n \
        -e 's/^Inode: *\([0-9]*\) .*Type: *\([a-z]*\) .*Mode: *\([0-7]*\) .*Flags: *\(0x[0-9a-f]*\).*/ino=\1 type=\2 mode=\3 flags=\4/p' \
        -e 's/^User: *\([0-9]*\) *Group: *\([0-9]*\) .*Size: *\([0-9]*\).*/uid=\1 gid=\2 size=\3/p' \
        -e 's/^Links: *\([0-9]*\) .*/links=\1/p' \
        -e 's/^ *\(ctime\|mtime\|crtime\): *\(0x[0-9a-f:]*\).*/\1=\2/p' "$d/stat"
    echo "blocks=$(debugfs -R "blocks $2" "$1" 2>/dev/null)"
}
atime ()
{
    debugfs -R "stat $2" "$1" 2>/dev/null |
        sed -n 's/^ *atime: *\(0x[0-9a-f:]*\).*/\1/p'
}

for f in secret secret2; do
    meta "$pristine" /etc/$f > "$d/meta-$f"
    cat "$d/meta-$f"
    grep -q '^ino=[0-9]' "$d/meta-$f" || fail "debugfs cannot stat /etc/$f on the pristine image"
    debugfs -R "cat /etc/$f" "$pristine" > "$d/pristine-$f" 2>/dev/null
    cmp "$d/root/etc/$f" "$d/pristine-$f" || fail "mkfs -d did not copy /etc/$f"
done
secret_ino="$(sed -n 's/^ino=\([0-9]*\) .*/\1/p' "$d/meta-secret")"
secret2_ino="$(sed -n 's/^ino=\([0-9]*\) .*/\1/p' "$d/meta-secret2")"

# What the log says was allowed, for a failure message.
changed_how ()
{
    echo "Allowed by the plugin (from the log):"
    grep '"result":0' "$d/log" || :
}

# unchanged IMG WHAT: both protected files byte-identical, same inode.
unchanged ()
{
    local f
    for f in secret secret2; do
        debugfs -R "cat /etc/$f" "$1" > "$d/got-$f" 2>"$d/got-$f.err" || :
        cmp "$d/pristine-$f" "$d/got-$f" ||
            { cat "$d/got-$f.err"; changed_how; fail "$attempt: /etc/$f changed on $2"; }
        meta "$1" /etc/$f > "$d/got-meta-$f"
        diff "$d/meta-$f" "$d/got-meta-$f" ||
            { changed_how; fail "$attempt: the inode of /etc/$f changed on $2"; }
    done
}

# --- One guest: serve, attach, mount; and take it all down. -----------

nbdkit_pid='' fuse_pid='' dev='' mounted=''


# guest_up [mount options]: a fresh copy of the image, served and
# mounted on $mnt.
guest_up ()
{
    cp --sparse=always "$pristine" "$img"
    rm -f "$d/log"
    guest_name="$attempt" guest_up_with "${1:-}" "$plugin" "$img" \
        protect=/etc/secret protect=/etc/secret2 log="$d/log" \
        -D fsevent.check=1
    cmp "$d/root/etc/other" "$mnt/etc/other" || fail "$attempt: /etc/other is not readable"
}

cleanup_fn 'guest_down >/dev/null 2>&1'

# The log: the veto of the right kind on /etc/secret, nothing changed
# of either protected file, and what the controls need.
cat > "$d/check_log.py" <<'EOF'
import json, sys
logf, attempt, mode, specs, ino, ino2 = sys.argv[1:7]
specs = specs.split(",") if specs else []
ino, ino2 = int(ino), int(ino2)  # of /etc/secret and /etc/secret2
PROT = ("/etc/secret", "/etc/secret2")
try:
    lines = open(logf).read().splitlines()
except FileNotFoundError:
    lines = []
evs = [json.loads(l) for l in lines]
assert [e["seq"] for e in evs] == list(range(1, len(evs) + 1)), "seq"

def touches(e, p):
    return p in (e.get("file"), e.get("new_file"), e.get("replaced")) or \
        p in e.get("paths", [])

def atime_only(e):
    return e["event"] == "set_attributes" and set(e["changed"]) <= {"atime"}

def show(e):
    if "phase" not in e:        # e.g. unattributed bytes
        return json.dumps(e)
    s = "%s %s %s" % (e["phase"], e["event"], e.get("file"))
    if "new_file" in e: s += " -> " + e["new_file"]
    if "changed" in e: s += " " + ",".join(e["changed"])
    if "direction" in e: s += " " + e["direction"]
    return s + " " + (e.get("error") or str(e["result"]))

for e in evs:
    print(show(e))
evs = [e for e in evs if "phase" in e]
# By path, and by inode (whatever the file is called by then).
bad = [e for e in evs
       if (any(touches(e, p) for p in PROT) or e.get("ino") in (ino, ino2))
       and not atime_only(e) and e["result"] == 0]
assert not bad, ("%s: a change to a protected file was allowed" % attempt, bad)
# One line per event (the after phase): a veto's lines say who vetoed,
# and the event refused says so.
assert all(e["phase"] == "after" for e in evs), "a before line"
for e in evs:
    if e["result"] != 0:
        assert e.get("by") == "protect", ("failed, not by protect", e)
    else:
        assert "by" not in e and "refused" not in e, e
vetoes = [e for e in evs if e.get("refused")]
def above(e, p):                # a rename of a directory above P
    return e["event"] == "rename" and p.startswith(e["file"].rstrip("/") + "/")

for e in vetoes:
    assert e["error"] == "EPERM" and e["result"] == 1, ("veto is not EPERM", e)
    assert any(touches(e, p) or above(e, p) for p in PROT), \
        ("veto of an unprotected file", e)

def matches(e, spec):
    """SPEC is KIND[:A+B]: A+B are attributes that set_attributes must
    have changed, or set_size's old and new size."""
    kind, _, args = spec.partition(":")
    args = args.split("+") if args else []
    S = "/etc/secret"
    if e["event"] != kind:
        return False
    if kind == "create":
        return e["file"] == S
    if kind == "rename":        # of it, over it, or of a directory above it
        return (e["ino"] == ino and e["file"] == S) or \
            (e.get("replaced_ino") == ino and e["new_file"] == S and
             e.get("replaced") == S) or above(e, S)
    if kind == "link":
        return e["ino"] == ino and e["file"] == S
    if e["ino"] != ino or not touches(e, S):
        return False
    if kind == "set_attributes":
        return set(args) <= set(e["changed"])
    if kind == "set_size" and args:
        return [e["old_size"], e["size"]] == [int(a) for a in args]
    return True

if mode == "deny":
    for e in vetoes:
        print("veto:", json.dumps(e))
    hit = [e for e in vetoes if any(matches(e, s) for s in specs)]
    assert hit, ("%s: no refused line with EPERM on /etc/secret matching %s"
                 % (attempt, " or ".join(specs)))
    # A veto ends the transaction's before phase: one refused per commit.
    seqs = [e["sequence"] for e in vetoes if "sequence" in e]
    assert len(seqs) == len(set(seqs)), \
        ("more than one event refused in a transaction", vetoes)
    print("VETOED", " ".join(sorted({e["event"] for e in vetoes})))
elif mode == "read":
    assert not vetoes, ("%s: vetoes" % attempt, vetoes)
    at = [e for e in evs if e["phase"] == "after" and atime_only(e) and
          touches(e, "/etc/secret") and e["result"] == 0]
    assert at, "%s: no atime-only set_attributes of /etc/secret let through" % attempt
    print("VETOED none; atime-only updates of /etc/secret let through:", len(at))
elif mode == "control":
    assert not vetoes, ("%s: vetoes" % attempt, vetoes)
    def ok(kind, pred=lambda e: True):
        assert any(e["phase"] == "after" and e["event"] == kind and
                   e.get("file") == "/etc/other" and e["result"] == 0 and pred(e)
                   for e in evs), "%s: no successful %s of /etc/other" % (attempt, kind)
    ok("set_size", lambda e: e["old_size"] == 11 and e["size"] == 16)
    ok("set_attributes", lambda e: "mode" in e["changed"] and e["mode"] == "0600")
    ok("write", lambda e: e["direction"] in ("commit", "inplace"))
    print("VETOED none; /etc/other changes logged")
EOF

# attempt NAME MODE SPECS COMMAND [MOUNT-OPTIONS]: one guest, one
# attempt, then every check.  MODE is deny, read or control; SPECS
# (deny) the vetoes of which one must be logged, comma-separated
# KIND[:A+B] (see matches in check_log.py).  A summary line goes to
# $summary.
attempt ()
{
    attempt="$1"
    local mode="$2" kinds="$3" cmd="$4" mopts="${5:-}"
    local cmd_rc sync_rc syncfs_rc opts ro err e2 state vetoed notes
    echo "=== $attempt: $cmd"
    guest_up "$mopts"
    cmd_rc=0 sync_rc=0 syncfs_rc=0
    (cd "$mnt" && eval "$cmd") || cmd_rc=$?
    sync || sync_rc=$?
    sync -f "$mnt" || syncfs_rc=$?
    opts="$(findmnt -n -o OPTIONS --mountpoint "$mnt")"
    ro=no
    case ",$opts," in *,ro,*|*emergency_ro*) ro=yes ;; esac
    [ "$mode" != read ] || cmp "$d/root/etc/secret" "$d/read-secret" ||
        fail "$attempt: reading /etc/secret in the guest gave other bytes"
    [ "$mode" = deny ] || [ $ro = no ] || fail "$attempt: the guest went read-only"
    [ "$mode" = deny ] || [ $cmd_rc -eq 0 ] || fail "$attempt: the command failed ($cmd_rc)"
    if [ "$mode" = read ]; then
        # The journal still works after the read.
        echo y > "$mnt/data/y" && sync -f "$mnt" ||
            fail "$attempt: writing /data/y after reading failed"
    fi
    guest_down
    cat "$d/kmsg"
    err=
    [ $cmd_rc -eq 0 ] || err+="command exit $cmd_rc; "
    [ $sync_rc -eq 0 ] || err+="sync exit $sync_rc; "
    [ $syncfs_rc -eq 0 ] || err+="sync -f exit $syncfs_rc; "
    [ $ro = no ] || err+="mount read-only ($opts); "
    [ "$umount_rc" = 0 ] || err+="umount exit $umount_rc; "
    grep -q "I/O error" "$d/kmsg" && err+="kernel: I/O error; "
    grep -q "Aborting journal" "$d/kmsg" && err+="kernel: journal aborted; "
    grep -Eq "read-only|Read-only|emergency" "$d/kmsg" && err+="kernel: read-only; "
    grep -q "EXT4-fs error" "$d/kmsg" && err+="kernel: EXT4-fs error; "
    # The protected files first: the image as it is, and as the next
    # mount will see it (journal recovery on a copy).
    unchanged "$img" "the image"
    cp --sparse=always "$img" "$d/replayed.img"
    e2fsck -E journal_only -y "$d/replayed.img" || :
    unchanged "$d/replayed.img" "the image after journal recovery"

    # The server: no crash, no model check failure.
    grep -E "model check failed|MODEL CHECK FAILURES|AddressSanitizer|runtime error" \
         "$d/nbdkit.err" && fail "$attempt: nbdkit reported a model check failure or a crash"
    [ "$nbdkit_rc" = 0 ] || { tail -30 "$d/nbdkit.err"; fail "$attempt: nbdkit exited with status $nbdkit_rc"; }
    grep -q "model check passed" "$d/nbdkit.err" ||
        fail "$attempt: -D fsevent.check=1 never checked the model"
    grep "vetoed at" "$d/nbdkit.err" || :

    # The log.
    "$py" "$d/check_log.py" "$d/log" "$attempt" "$mode" "$kinds" "$secret_ino" \
          "$secret2_ino" > "$d/log.out" ||
        { cat "$d/log.out"; cat "$d/log"; fail "$attempt: the log is wrong"; }
    cat "$d/log.out"
    vetoed="$(sed -n 's/^VETOED //p' "$d/log.out")"

    # The guest: an error of some kind when (and only when) vetoed.
    if [ "$mode" = deny ]; then
        [ -n "$err" ] || fail "$attempt: the guest saw no error"
    else
        [ -z "$err" ] || fail "$attempt: the guest saw an error: $err"
    fi

    # The filesystem.  After a veto the image still needs recovery (the
    # transactions committed before it were never checkpointed) and
    # e2fsck -fn skips that; the kernel's direct superblock write at
    # umount may carry free counts of the vetoed transaction, which
    # e2fsck reports ("Free blocks count wrong") without failing.  The
    # recovered copy has the error flag of the aborted journal ("clean
    # with errors"): e2fsck -fn exits 0 on it too, and both must.
    dumpe2fs -h "$img" > "$d/dumpe2fs" 2>/dev/null || :
    state="$(sed -n 's/^Filesystem state: *//p' "$d/dumpe2fs")"
    grep -q '^Filesystem features:.*needs_recovery' "$d/dumpe2fs" && state+=", needs_recovery"
    state+="$(sed -n 's/^Journal errno: */, journal errno /p' "$d/dumpe2fs")"
    state+=", after recovery: $(dumpe2fs -h "$d/replayed.img" 2>/dev/null |
                                 sed -n 's/^Filesystem state: *//p')"
    e2=0
    e2fsck -fn "$img" > "$d/e2fsck.out" 2>&1 || e2=$?
    cat "$d/e2fsck.out"
    [ $e2 -eq 0 ] || fail "$attempt: e2fsck -fn exits $e2"
    e2fsck -fn "$d/replayed.img" ||
        fail "$attempt: e2fsck -fn after journal recovery exits $?"
    if [ "$mode" = read ]; then
        [ "$(atime "$d/replayed.img" /etc/secret)" != "$(atime "$pristine" /etc/secret)" ] ||
            fail "$attempt: the atime-only update did not reach the image"
    fi
    if [ "$mode" = control ]; then
        debugfs -R "cat /etc/other" "$d/replayed.img" > "$d/got-other" 2>/dev/null
        cmp <(cat "$d/root/etc/other"; echo more) "$d/got-other" ||
            fail "$attempt: the append to /etc/other is not on the image"
        meta "$d/replayed.img" /etc/other | grep -q "mode=0600 " ||
            fail "$attempt: the chmod of /etc/other is not on the image"
    fi
    # What e2fsck said beyond its passes, on one line.
    notes="$(grep -Ev '^(e2fsck [0-9]|Pass [0-9]|Fix\? no|$)|files \(' "$d/e2fsck.out" |
             sed 's/Warning: skipping journal recovery.*/skipped journal recovery/' |
             paste -sd ';' - || :)"
    printf '%-11s guest: %s| vetoed: %s | image: identical; e2fsck -fn %s%s; state: %s\n' \
        "$attempt" "${err:-no error; }" "${vetoed:-?}" "$e2" "${notes:+ ($notes)}" \
        "$state" >> "$summary"
    rm -f "$d/replayed.img"
}

# The kind of veto each attempt must meet (see matches in check_log.py).
# Where the guest's kernel may split the attempt over two commits (the
# replacements), either commit's veto will do.
S=/etc/secret
attempt a-overwrite deny write \
    "dd if='$d/new-block' of=.$S bs=4096 count=1 conv=notrunc oflag=direct"
attempt b-append deny set_size:6000+6002 "echo x >> .$S"
attempt c-truncate deny set_size:6000+0 "truncate -s 0 .$S"
attempt d-chmod deny set_attributes:mode "chmod 600 .$S"
attempt e-chown deny set_attributes:uid+gid "chown 1:1 .$S"
attempt f-touch deny set_attributes:mtime "touch .$S"
attempt g-rm deny delete "rm .$S"
attempt h-mv-over deny rename "mv ./etc/other .$S"
attempt i-mv-away deny rename "mv .$S ./etc/moved"
attempt j-ln deny link "ln .$S ./data/hardlink"
attempt k1-rm-new deny create,delete "rm .$S && echo new > .$S"
attempt k2-cp-mv deny create,rename \
    "cp ./etc/other .$S.tmp && mv .$S.tmp .$S"
# More of the same kinds: inode flags, and blocks past EOF (the size
# stays, the times change).
attempt m-chattr deny set_attributes:flags "chattr +i .$S"
attempt n-falloc deny set_attributes:mtime "fallocate -n -l 1M .$S"
# Controls.
attempt read read "" "cat .$S > '$d/read-secret' && cat .${S}2 > /dev/null" strictatime
attempt control control "" "echo more >> ./etc/other && chmod 600 ./etc/other"
# (l), last so that the others report first: renaming a directory above
# the protected file moves it off its protected path, where it can be
# changed and then moved back.  The rename of /etc must be vetoed.
attempt l-mv-parent deny rename \
    "mv ./etc ./etc2 && sync && echo pwned > ./etc2/secret && sync && mv ./etc2 ./etc"

# Nothing left behind.
! losetup -a | grep -q "$fuse/nbd" || fail "loop device left behind"
! mountpoint -q "$fuse" || fail "nbdfuse left mounted"

echo "PASS: $0"
