#!/usr/bin/env bash
# tests/test-follow-script.sh: script= gets the namespace, attribute and
# commit-time write events of the journal that the plugin follows,
# through a real kernel mount (nbdfuse + loop) of an ext4 image.
#
# The script (bash, written here) appends its arguments to a record
# file, denies before_rename to /deny-target with "EPERM no renames
# there" and exits 2 (not handled) for any method it does not know.
# Run 1: mkdir /d, create /d/f, rename it /d/g, chmod, truncate, ln,
# rm, with a sync after each step; after each sync the record must hold
# the calls of that step with the right arguments (inode numbers from
# debugfs on a copy of the image whose journal has been replayed, that
# is what the guest committed), and every after_* call STATUS 0.
# Run 2, on a fresh image: renaming /victim to /deny-target is denied:
# the guest sees an error and the image keeps the old name.

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
requires cmp --version
requires truncate --version
requires sha256sum --version
requires sync --version
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
rec="$d/record"
mkdir -p "$mnt" "$fuse" "$d/root"
echo "victim" > "$d/root/victim"
truncate -s 64M "$pristine"
mkfs.ext4 -q -F -b 4096 -d "$d/root" "$pristine"
head -c 10000 /dev/urandom > "$d/data"

# --- The script. --------------------------------------------------------

cat > "$d/handler.sh" <<EOF
#!/usr/bin/env bash
# Records each call (writes: with the sha256 of the data on stdin),
# denies renames to /deny-target, does not handle what it does not know.
line="\$*"
case "\$1" in
    before_write|after_write) line+="|\$(sha256sum | cut -d' ' -f1)" ;;
esac
echo "\$line" >> '$rec'
case "\$1" in
    before_rename)
        if [ "\$3" = /deny-target ]; then
            echo "EPERM no renames there" >&2
            exit 1
        fi
        exit 0 ;;
    before_write|after_write|before_create|after_create|\\
    before_delete|after_delete|before_link|after_link|\\
    before_unlink|after_unlink|after_rename|\\
    before_set_size|after_set_size|\\
    before_set_attributes|after_set_attributes)
        exit 0 ;;
    *)
        exit 2 ;;
esac
EOF
chmod +x "$d/handler.sh"

# --- One guest (guest_down and kmsgs are in functions.sh). ---------------

nbdkit_pid='' fuse_pid='' dev='' mounted=''


guest_up ()
{
    cp --sparse=always "$pristine" "$img"
    rm -f "$d/log" "$rec"
    guest_up_with "" "$plugin" "$img" script="$d/handler.sh" log="$d/log" \
        -D fsevent.check=1
}

cleanup_fn 'guest_down >/dev/null 2>&1'

# server_ok: nbdkit exited cleanly, no model check failure, no crash.
server_ok ()
{
    grep -E "model check failed|MODEL CHECK FAILURES|AddressSanitizer|runtime error" \
         "$d/nbdkit.err" && fail "$1: nbdkit reported a model check failure or a crash"
    [ "$nbdkit_rc" = 0 ] ||
        { tail -30 "$d/nbdkit.err"; fail "$1: nbdkit exited with status $nbdkit_rc"; }
    grep -q "model check passed" "$d/nbdkit.err" ||
        fail "$1: -D fsevent.check=1 never checked the model"
    ! grep "error: script" "$d/nbdkit.err" || fail "$1: the script failed"
}

# snapshot: what the guest has committed so far, for debugfs: a copy
# of the image with its journal replayed.
snapshot ()
{
    cp --sparse=always "$img" "$d/snap.img"
    e2fsck -E journal_only -y "$d/snap.img" >/dev/null 2>&1 || :
}
ino_of ()                       # PATH [IMAGE]
{
    debugfs -R "stat $1" "${2:-$d/snap.img}" 2>/dev/null |
        sed -n 's/^Inode: *\([0-9]*\) .*/\1/p'
}

# step NAME COMMAND: run COMMAND in the guest (in $mnt), sync, and
# leave the script's calls in $d/NAME.rec.
step ()
{
    : > "$rec"
    (cd "$mnt" && umask 022 && eval "$2") || fail "$1: '$2' failed in the guest"
    sync || fail "$1: sync failed"
    sync -f "$mnt" || fail "$1: sync -f failed"
    mv "$rec" "$d/$1.rec"
    touch "$rec"
    echo "--- $1: the script saw:"
    cat "$d/$1.rec"
    snapshot
}

# expect NAME PYTHON-ARGS...: check $d/NAME.rec (see check.py).
cat > "$d/check.py" <<'EOF'
import hashlib, sys
recf, what = sys.argv[1], sys.argv[2]
args = sys.argv[3:]
lines = open(recf).read().splitlines()
calls = [l.split("|")[0].split(" ") for l in lines]
shas = [l.split("|")[1] if "|" in l else None for l in lines]

def fail(msg):
    print("\n".join(lines))
    sys.exit("FAIL: %s: %s" % (what, msg))

KNOWN = {p + "_" + k for p in ("before", "after") for k in
         ("write", "create", "delete", "link", "unlink", "rename", "set_size",
          "set_attributes")}
for c in calls:
    if c[0] not in KNOWN:       # the script said "not handled" (exit 2)
        print("a method this test does not know:", " ".join(c))
        continue
    # after_* have the before arguments and STATUS last.
    if c[0].startswith("after_") and c[-1] != "0":
        fail("after call with STATUS %s: %s" % (c[-1], " ".join(c)))

def has(*want):
    want = [str(w) for w in want]
    if want not in [c for c in calls]:
        fail("no call %s" % " ".join(want))
    # and its after call, with STATUS 0
    after = ["after_" + want[0][len("before_"):]] + want[1:] + ["0"]
    if after not in calls:
        fail("no call %s" % " ".join(after))
    return calls.index(want)

def attrs(file, ino, needed):
    for c in calls:
        if c[:3] == ["before_set_attributes", file, str(ino)] and \
           set(needed) <= set(c[3].split(",")):
            has(*c)
            return
    fail("no before_set_attributes %s %s with %s in CHANGED" %
         (file, ino, ",".join(needed)))

def commit_data(file, ino, data):
    """before_write FILE POS LEN INO commit, covering all of DATA, each
    with its part of DATA on stdin (and the after calls)."""
    got = []
    for c, sha in zip(calls, shas):
        if c[0] == "before_write" and c[1] == file:
            if c[4] != str(ino) or c[5] != "commit":
                fail("write event %s" % " ".join(c))
            pos, n = int(c[2]), int(c[3])
            if sha != hashlib.sha256(data[pos:pos + n]).hexdigest():
                fail("the data of %s is not what the guest wrote" % " ".join(c))
            has(*c)
            got.append((pos, n))
    got.sort()
    end = 0
    for pos, n in got:
        if pos != end:
            fail("commit writes of %s: %s do not cover 0..%d" % (file, got, len(data)))
        end = pos + n
    if end != len(data):
        fail("commit writes of %s: %s do not cover 0..%d" % (file, got, len(data)))

op = args[0]
if op == "create":            # create D_INO F_INO DATAFILE
    d_ino, f_ino, data = args[1], args[2], open(args[3], "rb").read()
    i = has("before_create", "/d", d_ino, "directory", "0755", "0", "0")
    j = has("before_create", "/d/f", f_ino, "file", "0644", "0", "0")
    if not i < j:
        fail("/d/f created before its directory")
    commit_data("/d/f", f_ino, data)
elif op == "rename":          # rename INO
    has("before_rename", "/d/f", "/d/g", args[1], "0")
elif op == "change":          # change INO OLD NEW
    ino = args[1]
    attrs("/d/g", ino, ["mode"])
    has("before_set_size", "/d/g", ino, args[2], args[3])
    has("before_link", "/d/g", "/d/h", ino)
elif op == "unlink":          # unlink INO
    has("before_unlink", "/d/h", args[1])
elif op == "delete":          # delete INO
    has("before_delete", "/d/g", args[1])
else:
    fail("bad op " + op)
print("ok:", what)
EOF
expect ()
{
    "$py" "$d/check.py" "$d/$1.rec" "$@" || fail "$1: the script's calls are wrong"
}

# --- Run 1: what the script sees. ----------------------------------------

guest_up
: > "$rec"

step create "mkdir d && cp '$d/data' d/f"
d_ino="$(ino_of /d)"; f_ino="$(ino_of /d/f)"
[ -n "$d_ino" ] && [ -n "$f_ino" ] || fail "debugfs does not find /d and /d/f after the commit"
[ "$f_ino" = "$(stat -c %i "$mnt/d/f")" ] || fail "debugfs and the guest disagree on /d/f's inode"
debugfs -R "cat /d/f" "$d/snap.img" 2>/dev/null | cmp - "$d/data" ||
    fail "/d/f is not on the image after the commit"
expect create create "$d_ino" "$f_ino" "$d/data"

step rename "mv d/f d/g"
[ "$(ino_of /d/g)" = "$f_ino" ] || fail "/d/g is not inode $f_ino after the rename"
[ -z "$(ino_of /d/f)" ] || fail "/d/f is still there after the rename"
expect rename rename "$f_ino"

step change "chmod 640 d/g && truncate -s 5000 d/g && ln d/g d/h"
[ "$(ino_of /d/h)" = "$f_ino" ] || fail "/d/h is not a link to inode $f_ino"
debugfs -R "stat /d/g" "$d/snap.img" 2>/dev/null | grep -Eq "Mode: +0640 " ||
    fail "the chmod is not on the image"
expect change change "$f_ino" 10000 5000

step unlink "rm d/h"
[ -z "$(ino_of /d/h)" ] || fail "/d/h is still there after rm"
expect unlink unlink "$f_ino"

step delete "rm d/g"
[ -z "$(ino_of /d/g)" ] || fail "/d/g is still there after rm"
debugfs -R "testi <$f_ino>" "$d/snap.img" 2>&1 | grep -q "not in use" ||
    fail "inode $f_ino is still in use after the last rm"
expect delete delete "$f_ino"

guest_down
[ "$umount_rc" = 0 ] || fail "run 1: umount failed"
server_ok "run 1"
e2fsck -fn "$img" || fail "run 1: e2fsck -fn exits $?"
# The script never exited 2 here (it knows every method); the plugin
# must not have treated anything as a failure or a denial.
! grep -E "denied|exit status" "$d/nbdkit.err" || fail "run 1: a denial or a script failure"

# --- Run 2: a denied rename. ---------------------------------------------

guest_up
victim_ino="$(ino_of /victim "$img")"
[ -n "$victim_ino" ] || fail "no /victim on the image"
: > "$rec"
cmd_rc=0 sync_rc=0 syncfs_rc=0
mv "$mnt/victim" "$mnt/deny-target" || cmd_rc=$?
sync || sync_rc=$?
sync -f "$mnt" || syncfs_rc=$?
cat "$rec"
guest_down
cat "$d/kmsg"
err=
[ $cmd_rc -eq 0 ] || err+="mv exit $cmd_rc; "
[ $sync_rc -eq 0 ] || err+="sync exit $sync_rc; "
[ $syncfs_rc -eq 0 ] || err+="sync -f exit $syncfs_rc; "
[ "$umount_rc" = 0 ] || err+="umount exit $umount_rc; "
grep -q "I/O error" "$d/kmsg" && err+="kernel: I/O error; "
grep -q "Aborting journal" "$d/kmsg" && err+="kernel: journal aborted; "
grep -Eq "read-only|Read-only|emergency" "$d/kmsg" && err+="kernel: read-only; "
[ -n "$err" ] || fail "run 2: the guest saw no error from the denied rename"
echo "run 2: the guest saw: $err"
server_ok "run 2"

# The script denied it, with its message, and heard of the failure.
grep -Fx "before_rename /victim /deny-target $victim_ino 0" "$rec" ||
    fail "run 2: the script was not asked about the rename"
grep -Fx "after_rename /victim /deny-target $victim_ino 0 EPERM" "$rec" ||
    fail "run 2: no after_rename with STATUS EPERM"
grep -E "denied /victim with EPERM: no renames there" "$d/nbdkit.err" ||
    fail "run 2: nbdkit did not report the script's denial"
# One line for the event: its outcome, who refused it, and that it was
# the event refused.
grep '"event":"rename","phase":"after","file":"/victim","new_file":"/deny-target".*"error":"EPERM","by":"script:'"$d/handler.sh"'","refused":true}' "$d/log" ||
    fail "run 2: the log has no vetoed rename"
! grep '"phase":"before"' "$d/log" || fail "run 2: a before line without log-phases=both"
# The image keeps the old name, as it is and after journal recovery.
snapshot
for i in "$img" "$d/snap.img"; do
    debugfs -R "ls -l /" "$i" 2>/dev/null > "$d/ls"
    cat "$d/ls"
    grep -Eq " victim *\$" "$d/ls" || fail "run 2: /victim is gone from $i"
    ! grep -q "deny-target" "$d/ls" || fail "run 2: /deny-target is on $i"
    [ "$(ino_of /victim "$i")" = "$victim_ino" ] || fail "run 2: /victim changed inode on $i"
done
debugfs -R "cat /victim" "$img" 2>/dev/null | cmp - "$d/root/victim" ||
    fail "run 2: /victim changed"
e2fsck -fn "$img" || fail "run 2: e2fsck -fn exits $?"

! losetup -a | grep -q "$fuse/nbd" || fail "loop device left behind"
! mountpoint -q "$fuse" || fail "nbdfuse left mounted"

echo "PASS: $0"
