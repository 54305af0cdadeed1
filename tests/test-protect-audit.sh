#!/usr/bin/env bash
# tests/test-protect-audit.sh: protect-mode=audit.  The protect cases of
# tests/test-follow-protect.sh (a subset: overwrite, append, truncate,
# chmod, rm, rename away, link, rename of the parent directory), each on
# a fresh image through a real kernel mount (nbdfuse + loop), with
# protect=/etc/secret protect-mode=audit.  Each change must now succeed
# in the guest (no error, no read-only remount), be on the image after
# the server stops (debugfs, on a journal-recovered copy), and be logged
# with "would_deny":"EPERM" and result 0 -- in log=, in a watcher
# (fsevent-ctl watch) and in a C handler's after phase (ABI 1.3
# would_deny, a handler built here).  No line anywhere has a veto (no
# error, no "by", no "refused").  log= writes one line per event (the
# after phase); the watcher gets exactly the log's lines.  Two cases
# run with log-phases=both: the before line carries would_deny too, and
# the watcher gets the after lines only.

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
requires findmnt --version
requires mkfs.ext4 -V
requires debugfs -V
requires e2fsck -V
requires cc --version
requires truncate --version
[ -f "$plugin" ] || fail "plugin not built: $plugin"
ctl="$top_builddir/tools/fsevent-ctl"
[ -x "$ctl" ] || fail "fsevent-ctl not built: $ctl"
py=
for p in /usr/bin/python3 python3; do
    if "$p" -c 'import json' >/dev/null 2>&1; then py="$p"; break; fi
done
[ -n "$py" ] || requires python3 -c 'import json'
export DEBUGFS_PAGER=__none__ PAGER=cat

d="$(tmpdir)"
pristine="$d/pristine.img" img="$d/disk.img" mnt="$d/mnt" fuse="$d/fuse"
sock="$d/sock"
mkdir -p "$mnt" "$fuse" "$d/root/etc" "$d/root/data"
head -c 6000 /dev/urandom > "$d/root/etc/secret"
echo "other file" > "$d/root/etc/other"
truncate -s 64M "$pristine"
mkfs.ext4 -q -F -b 4096 -d "$d/root" "$pristine"
head -c 4096 /dev/urandom > "$d/new-block"

# A C handler that writes what its after phases see of would_deny.
cat > "$d/audit.c" <<'EOF'
#include <stdio.h>
#include <fsevent.h>
static FILE *out;
static int
config (const char *key, const char *value)
{
  out = fopen (value, "a");
  if (out)
    setvbuf (out, NULL, _IOLBF, 0);
  return out ? 0 : -1;
}
static int
after_write (struct fsevent_write *ev)
{
  if (FSEVENT_HAS_FIELD (ev, would_deny))
    fprintf (out, "write %s %d %d\n", ev->file_name, ev->would_deny,
             ev->status);
  return 0;
}
static int
after_change (struct fsevent_change *ev)
{
  if (FSEVENT_HAS_FIELD (ev, would_deny))
    fprintf (out, "change %s %d %d\n", ev->file_name, ev->would_deny,
             ev->status);
  return 0;
}
static struct fsevent_handler handler = {
  .name = "audit",
  .config = config,
  .after_write = after_write,
  .after_change = after_change,
};
FSEVENT_REGISTER_HANDLER (handler)
EOF
cc -Wall -Werror -I"$top_srcdir/include" -shared -fPIC -o "$d/audit.so" "$d/audit.c"

# And a script= handler: what its after phases see of FSEVENT_WOULD_DENY.
cat > "$d/script.sh" <<EOF
#!/bin/sh
case "\$1" in after_*) echo "\$1 \$2 \${FSEVENT_WOULD_DENY:-none}" >> "$d/script.out" ;; esac
cat > /dev/null
exit 2
EOF
chmod +x "$d/script.sh"

nbdkit_pid='' fuse_pid='' dev='' mounted=''
cleanup_fn 'guest_down >/dev/null 2>&1'
cleanup_fn '[ -n "${watch_pid:-}" ] && kill $watch_pid 2>/dev/null'
cleanup_fn '[ -n "${watch2_pid:-}" ] && kill $watch2_pid 2>/dev/null'

# attempt NAME KIND CHECK COMMAND: KIND is the event that must carry
# would_deny (on /etc/secret, or a directory above it for a rename);
# CHECK a shell condition on the recovered image $r.
attempt ()
{
    local name="$1" kind="$2" check="$3" cmd="$4" r="$d/replayed.img"
    echo "=== $name: $cmd"
    cp --sparse=always "$pristine" "$img"
    rm -f "$d/log" "$d/handler.out" "$d/watch" "$d/script.out"
    guest_name="$name" guest_up_with "" "$plugin" "$img" \
        protect=/etc/secret protect-mode=audit log="$d/log" \
        ${phases:+log-phases=$phases} \
        control="$d/ctl" handler="$d/audit.so" audit.out="$d/handler.out" \
        script="$d/script.sh"
    "$ctl" "$d/ctl" watch > "$d/watch" & watch_pid=$!
    "$ctl" "$d/ctl" watch --format=text --event "$kind" '/etc/**' > "$d/watch.txt" &
    watch2_pid=$!
    sleep 0.3
    (cd "$mnt" && eval "$cmd") || fail "$name: the command failed"
    sync -f "$mnt" || fail "$name: sync -f failed"
    local opts
    opts="$(findmnt -n -o OPTIONS --mountpoint "$mnt")"
    case ",$opts," in *,ro,*) fail "$name: the guest went read-only" ;; esac
    guest_down
    wait $watch_pid || :
    wait $watch2_pid || :
    watch_pid= watch2_pid=
    [ "$umount_rc" = 0 ] || fail "$name: umount failed"
    [ "$nbdkit_rc" = 0 ] || fail "$name: nbdkit exited with $nbdkit_rc"
    ! grep -Eq "I/O error|Aborting journal|EXT4-fs error" "$d/kmsg" ||
        { cat "$d/kmsg"; fail "$name: the kernel saw errors"; }
    cp --sparse=always "$img" "$r"
    e2fsck -E journal_only -y "$r" >/dev/null 2>&1 || :
    e2fsck -fn "$r" || fail "$name: e2fsck -fn"
    eval "$check" || fail "$name: the change is not on the image"
    # The text watcher: "TIME KIND FILE[ -> NEW][ POS+LEN] ok would_deny=EPERM".
    cat "$d/watch.txt"
    grep -Eq "^[0-9:.]+ $kind /etc[^ ]*( -> [^ ]+)?( [0-9]+\+[0-9]+)? ok would_deny=EPERM\$" \
        "$d/watch.txt" || fail "$name: no text watch line with would_deny"
    ! grep -v " $kind " "$d/watch.txt" || fail "$name: --event $kind let other kinds through"
    grep -Eq "^after_$kind /etc[^ ]* EPERM\$" "$d/script.out" ||
        { cat "$d/script.out"; fail "$name: script= saw no FSEVENT_WOULD_DENY"; }
    ! grep -Eq "^after_[a-z_]+ /(data|etc/other)[^ ]* EPERM\$" "$d/script.out" ||
        fail "$name: FSEVENT_WOULD_DENY on an unprotected file"
    "$py" - "$d/log" "$d/watch" "$d/handler.out" "$kind" "${phases:-after}" <<'EOF' ||
import json, sys
log, watch, hout, kind, phases = sys.argv[1:6]
L = [json.loads(l) for l in open(log)]
W = [json.loads(l) for l in open(watch)]
S = "/etc/secret"
def about(e):
    return S in (e.get("file"), e.get("new_file"), e.get("replaced")) or \
        (e["event"] == "rename" and S.startswith(e["file"].rstrip("/") + "/"))
assert not [e for e in L if e.get("result", 0) != 0], "a veto in audit mode"
assert not [e for e in L if "by" in e or "refused" in e], "a veto in audit mode"
if phases == "after":
    assert not [e for e in L if e.get("phase") == "before"], "a before line"
for phase in ("before", "after") if phases == "both" else ("after",):
    hit = [e for e in L if e.get("phase") == phase and e["event"] == kind
           and about(e)]
    assert hit, "no %s %s line about %s" % (phase, kind, S)
    assert all(e.get("would_deny") == "EPERM" for e in hit), hit
# would_deny only where protect= matched.
for e in L:
    if "would_deny" in e:
        assert about(e) or e.get("ino") in [x.get("ino") for x in L if about(x)], e
# The watcher: the log's decided lines, would_deny and all.
assert W == [e for e in L if e.get("phase", "after") == "after"], "watch != log"
if phases == "after":
    assert W == L, "watch != log"
# The handler's after phase saw it too (status 0).
H = [l.split() for l in open(hout)]
hk = "write" if kind == "write" else "change"
assert any(h[0] == hk and h[2] == "1" and h[3] == "0" for h in H), H
print("would_deny logged:", sum("would_deny" in e for e in L), "lines")
EOF
        { cat "$d/log"; fail "$name: the log is wrong"; }
    rm -f "$r"
}

S=/etc/secret
stat_of () { debugfs -R "stat $1" "$r" 2>/dev/null; }
phases=both attempt a-overwrite write \
    'debugfs -R "cat $S" "$r" 2>/dev/null | head -c 4096 | cmp - "$d/new-block"' \
    "dd if='$d/new-block' of=.$S bs=4096 count=1 conv=notrunc oflag=direct"
attempt b-append set_size 'stat_of $S | grep -q "Size: 6002"' "echo x >> .$S"
attempt c-truncate set_size 'stat_of $S | grep -q "Size: 0$"' "truncate -s 0 .$S"
attempt d-chmod set_attributes 'stat_of $S | grep -q "Mode:  0600"' "chmod 600 .$S"
phases=both attempt g-rm delete '! debugfs -R "stat $S" "$r" 2>&1 | grep -q "^Inode:"' "rm .$S"
attempt i-mv-away rename \
    'stat_of /etc/moved | grep -q "Size: 6000" && ! stat_of $S | grep -q "^Inode:"' \
    "mv .$S ./etc/moved"
attempt j-ln link 'stat_of $S | grep -q "Links: 2"' "ln .$S ./data/hardlink"
attempt l-mv-parent rename \
    'stat_of /etc2/secret | grep -q "Size: 6000"' "mv ./etc ./etc2"

! losetup -a | grep -q "$fuse/nbd" || fail "loop device left behind"
echo "PASS: $0"
