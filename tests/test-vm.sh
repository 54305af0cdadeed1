#!/usr/bin/env bash
# tests/test-vm.sh: a QEMU guest (scripts/vm: Debian's kernel, a busybox
# initramfs) on a partitioned disk served by fsevent, with the guest's
# own ext4 and virtio-blk drivers doing the writes.
#
# Variants (env VM_VARIANTS, default all four):
#   gpt-plugin        GPT: 1 = EFI System (vfat, 32 MiB), 2 = Linux (ext4,
#                     200 MiB); the fsevent plugin serves the raw disk
#   gpt-python        the same, with a Python handler (python=
#                     tests/vm_guard.py) instead of protect= (see below);
#                     skipped when the plugin was built without Python
#   mbr-plugin        MBR: 1 = vfat (type c), 2 = extended, 5 = logical
#                     ext4; the fsevent plugin serves the raw disk
#   gpt-filter-qcow2  the GPT disk as qcow2 served by qemu-nbd, with
#                     fsevent as a filter on top (nbdkit nbd socket=...)
# and, only when named in VM_VARIANTS:
#   bare-plugin       no partition table: the ext4 filesystem is the whole
#                     disk (/dev/vda, "partition":0 in the log), no vfat
#
# The ext4 filesystem is made offline with mke2fs -d and holds, among
# others, /etc/protected.conf (protect= covers it).  The guest mounts the
# vfat partition read-only and the ext4 one read-write and: creates
# /data/new.txt and a 1 MiB file /data/big.bin (a known pattern), appends
# to /data/log.txt, renames /data/old-name.txt within its directory and
# /data/move-me.txt to /archive/, removes /data/delete-me.txt, syncs;
# last it appends to /etc/protected.conf and syncs.  That change must be
# vetoed at its journal commit: the guest's journal aborts, ext4 goes
# read-only, and the guest script carries on (and umounts if it can).
#
# After the guest has powered off and the servers have stopped (and the
# qcow2 image is converted back to raw):
#   - the log: write events on partition N (2 for GPT, 5 for MBR) whose
#     positions cover the new files and the appended bytes; create,
#     rename (with new_file) and unlink/delete events with the right
#     names; a vetoed ("result":1, "error":"EPERM") event for
#     /etc/protected.conf and no change of it let through; no file event
#     on another partition;
#   - the image: /etc/protected.conf byte-identical, the new, appended
#     and renamed files with the right content and the removed ones gone
#     (debugfs on the extracted partition, with its journal replayed);
#     e2fsck -fn clean; the vfat partition bit for bit unchanged.
#
# gpt-python: tests/vm_guard.py vetoes (EPERM) every change to
# /etc/protected.conf by path, as protect= would, and every write whose
# data holds a marker string; it records each after-event it sees in a
# file of its own (python.record=), its file context carrying its vetoes
# from the before to the after callback and counting each inode's
# events and names, its handle context counting a connection's bytes
# per inode.  Its guest also makes /data/content.txt (two 4 KiB blocks,
# committed by the syncs) and then overwrites it in place with O_DIRECT:
# block 1 with other allowed text, then block 0 with the marker.  A
# write to blocks that a file already owns is decided on the write
# request itself, so that dd fails at once (EIO in the guest) and the
# journal goes on; new data is decided at the journal commit that maps
# it, where a veto would abort the journal, so the content veto is kept
# to this deterministic case.  Checked besides the above (the vetoes now
# "by":"python:.../vm_guard.py"): the log and the record both show
# block 0's write refused and block 1's let through, in place; the
# record passes the log's checks and matches the log's after-lines
# event for event ("refused" included); per inode its events are
# numbered 1, 2, ... (the file context lives across transactions), the
# renamed files' contexts saw both names, and /data/delete-me.txt's
# context goes when its inode is freed, before the protected file's
# events; on the image block 0 is still the allowed text.
#
# Environment:
#   VM_VARIANTS="gpt-plugin mbr-plugin"   run only these variants
#   VM_SERVER=file    serve with plain "nbdkit file" (and "nbdkit nbd"
#                     for the qcow2 variant) instead of fsevent: every
#                     image check runs (with the protected file's append
#                     expected to go through), the event checks are
#                     skipped (said so); for checking the test itself
#   VM_FSEVENT_ARGS   extra arguments for nbdkit in the fsevent variants
#   VM_ACCEL, VM_CACHE_DIR, VM_KERNEL   passed on to scripts/vm
#   KEEP=1            keep the directories of failing variants (printed)

source ./functions.sh

requires qemu-system-x86_64 --version
requires nbdkit --version
requires cpio --version
requires sgdisk --version
requires sfdisk --version
requires partx --version
requires mkfs.vfat --help
requires mke2fs -V
requires debugfs -V
requires e2fsck -V
requires dumpe2fs -V
requires sha256sum --version
requires /usr/bin/python3 -c 'import json'
have_kernel ()
{
    local k
    for k in /boot/vmlinuz-*; do
        [ -r "$k" ] && [ -f "/lib/modules/${k#/boot/vmlinuz-}/modules.dep" ] && return 0
    done
    return 1
}
if ! have_kernel; then
    echo "SKIP: $0: no readable /boot/vmlinuz-VERSION with /lib/modules/VERSION (Debian package linux-image-amd64)" >&2
    exit 77
fi
if ! [ -x /bin/busybox ] || ldd /bin/busybox >/dev/null 2>&1; then
    echo "SKIP: $0: no static /bin/busybox (Debian package busybox-static)" >&2
    exit 77
fi
[ -f "$plugin" ] || fail "plugin not built: $plugin"
py=/usr/bin/python3
vm="$scripts/vm"
[ -x "$vm" ] || fail "missing $vm"
filter_so="$top_builddir/plugin/.libs/nbdkit-fsevent-filter.so"
export DEBUGFS_PAGER=__none__ PAGER=cat
# The initramfs cache goes with the build.
export VM_CACHE_DIR="${VM_CACHE_DIR:-$top_builddir/vm}"

server="${VM_SERVER:-fsevent}"
case "$server" in
    fsevent|file) ;;
    *) fail "VM_SERVER must be fsevent or file, not $server" ;;
esac
[ "$server" = fsevent ] ||
    echo "NOTE: VM_SERVER=$server: plain servers, the event checks are skipped"

all_variants="gpt-plugin gpt-python mbr-plugin gpt-filter-qcow2"
variants="${VM_VARIANTS:-$all_variants}"
work="$(tmpdir)"
keepdir=

# --- What every variant starts from. --------------------------------------

# The ext4 tree, made offline.
root="$work/root"
mkdir -p "$root/etc" "$root/data" "$root/archive"
printf '# /etc/protected.conf: protect= covers this file\nsecret=%s\n' \
    "$(head -c 24 /dev/urandom | base64)" > "$root/etc/protected.conf"
printf 'line %d\n' $(seq 1 50) > "$root/data/log.txt"
echo "the file that is renamed in its directory" > "$root/data/old-name.txt"
head -c 10000 /dev/urandom > "$root/data/move-me.txt"
echo "the file that the guest removes" > "$root/data/delete-me.txt"
echo "archive" > "$root/archive/README"
mkdir -p "$root/var/empty"
ext4img="$work/ext4.img"
truncate -s 200M "$ext4img"
# Inode tables and journal initialised, so that no lazy-init thread of
# the guest writes while it runs.
mke2fs -q -F -t ext4 -b 4096 -E lazy_itable_init=0,lazy_journal_init=0 \
    -L fsevent-vm -d "$root" "$ext4img" >/dev/null
vfatimg="$work/vfat.img"
truncate -s 32M "$vfatimg"
mkfs.vfat -n FSEVENTEFI "$vfatimg" >/dev/null

# What the guest writes, as the host expects to find it.
expect="$work/expect"
mkdir -p "$expect"
echo "hello from the guest" > "$expect/new.txt"
seq 1 300000 | head -c 1049810 > "$expect/big.bin"
{ cat "$root/data/log.txt"; echo "appended by the guest"; } > "$expect/log.txt"
# gpt-python's /data/content.txt: the guest writes v1 (8 KiB), then v2's
# block over block 1 and the marker's over block 0 (refused by fsevent).
marker=FORBIDDEN-CONTENT
yes "allowed content v1" | head -c 8192 > "$work/content.v1"
yes "allowed content v2" | head -c 4096 > "$work/content.v2"
yes "$marker" | head -c 4096 > "$work/content.marker"

# The guest's script (busybox sh -e): $1 the ext4 partition, $2 the vfat
# one, $3 a marker string for /data/content.txt's writes (gpt-python).
# The protected file goes last: its veto ends the journal.
guest="$work/guest.sh"
cat > "$guest" <<'EOF'
ext4="$1" vfat="${2:-}" marker="${3:-}"
echo "guest: ext4 on $ext4, vfat on ${vfat:-none}"
ls -l /dev/vda*
mkdir -p /mnt/vfat /mnt/ext4
if [ -n "$vfat" ]; then
    mount -t vfat -o ro "$vfat" /mnt/vfat
    echo "vfat: $(ls -a /mnt/vfat | wc -l) entries"
    umount /mnt/vfat
fi
mount -t ext4 "$ext4" /mnt/ext4
cd /mnt/ext4
cat etc/protected.conf > /dev/null
echo "hello from the guest" > data/new.txt
[ -z "$marker" ] || yes "allowed content v1" | head -c 8192 > data/content.txt
seq 1 300000 | head -c 1049810 > data/big.bin
sync -d data/big.bin
echo "appended by the guest" >> data/log.txt
sync
mv data/old-name.txt data/new-name.txt
mv data/move-me.txt archive/moved.txt
rm data/delete-me.txt
sync -f .
sync
if [ -n "$marker" ]; then
    # In place, each block one write request (O_DIRECT): v2's over
    # block 1, then the marker's over block 0.
    yes "allowed content v2" | head -c 4096 > /tmp/v2.blk
    yes "$marker" | head -c 4096 > /tmp/marker.blk
    dd if=/tmp/v2.blk of=data/content.txt bs=4096 seek=1 count=1 conv=notrunc oflag=direct
    r=0
    dd if=/tmp/marker.blk of=data/content.txt bs=4096 count=1 conv=notrunc oflag=direct || r=$?
    echo "CONTENT-MARKER-DD=$r"
    sync
fi
sha256sum data/new.txt data/big.bin data/log.txt data/new-name.txt archive/moved.txt
echo "GUEST-WORKLOAD-DONE"
# The protected file: the append itself only reaches the page cache; its
# data and its journal commit are what fsevent vetoes.
r=0; echo x >> etc/protected.conf || r=$?; echo "PROTECTED-APPEND=$r"
r=0; sync -d etc/protected.conf || r=$?; echo "PROTECTED-FDATASYNC=$r"
r=0; sync -f . || r=$?; echo "PROTECTED-SYNCFS=$r"
sync
echo "MOUNT-STATE: $(grep ' /mnt/ext4 ' /proc/mounts || echo none)"
dmesg | grep -E 'EXT4-fs|JBD2|jbd2|Aborting|I/O error|critical' | tail -n 20 || :
cd /
r=0; umount /mnt/ext4 || r=$?; echo "UMOUNT=$r"
echo "GUEST-END"
EOF

# The log (or gpt-python's record) against what the guest did.  OPTIONS
# (JSON): "by", who vetoes (default protect); "vetoed_writes" and
# "inplace_writes", [FILE, POSITION, LENGTH] of in-place writes refused
# by "by" and let through; "log": LOG, the file is vm_guard.py's record,
# also checked against LOG's after-lines and for its contexts.
cat > "$work/check_log.py" <<'EOF'
import json, sys
logf, part, sizes_json = sys.argv[1], int(sys.argv[2]), sys.argv[3]
sizes = json.loads(sizes_json)
opts = json.loads(sys.argv[4]) if len(sys.argv) > 4 else {}
BY = opts.get("by", "protect")
PROT = "/etc/protected.conf"
evs = [json.loads(l) for l in open(logf).read().splitlines() if l.strip()]
print("%s: %d lines" % ("record" if "log" in opts else "log", len(evs)))
assert [e["seq"] for e in evs] == list(range(1, len(evs) + 1)), "seq is not 1..N"
errors = []
def check(cond, msg):
    if not cond:
        errors.append(msg)
        print("FAIL:", msg)

files = [e for e in evs if "phase" in e]          # file events
unattr = [e for e in evs if e["event"] == "unattributed"]
print("file events: %d, unattributed: %d (%d bytes)" %
      (len(files), len(unattr), sum(e["length"] for e in unattr)))
for e in files + unattr:
    if e.get("partition") != part:
        check(False, "event on partition %s, not %d: %s" % (e.get("partition"), part, json.dumps(e)))
        break

def names(e):
    return {e.get("file")} | set(e.get("paths", []))
def ok_after(e):
    return e["phase"] == "after" and e["result"] == 0

def covered(path, lo, hi):
    ivs = sorted((e["position"], e["position"] + e["length"]) for e in files
                 if e["event"] == "write" and ok_after(e) and path in names(e))
    at = lo
    for a, b in ivs:
        if a > at:
            break
        at = max(at, b)
    return at >= hi, ivs

for path, (lo, hi) in sorted(sizes.items()):
    full, ivs = covered(path, lo, hi)
    print("write %s [%d, %d): %d events%s" % (path, lo, hi, len(ivs), "" if full else " NOT COVERED"))
    check(full, "bytes [%d, %d) of %s not covered by successful write events: %s" % (lo, hi, path, ivs))

def have(kind, pred, what):
    hit = [e for e in files if e["event"] == kind and ok_after(e) and pred(e)]
    print("%s %s: %d" % (kind, what, len(hit)))
    check(hit, "no successful %s event of %s" % (kind, what))

have("create", lambda e: e["file"] == "/data/new.txt" and e.get("type") == "file", "/data/new.txt")
have("create", lambda e: e["file"] == "/data/big.bin" and e.get("type") == "file", "/data/big.bin")
have("rename", lambda e: e["file"] == "/data/old-name.txt" and e.get("new_file") == "/data/new-name.txt",
     "/data/old-name.txt -> /data/new-name.txt")
have("rename", lambda e: e["file"] == "/data/move-me.txt" and e.get("new_file") == "/archive/moved.txt",
     "/data/move-me.txt -> /archive/moved.txt")
gone = [e for e in files if e["event"] in ("unlink", "delete") and ok_after(e)
        and e.get("file") == "/data/delete-me.txt"]
print("unlink/delete /data/delete-me.txt: %d" % len(gone))
check(gone, "no successful unlink or delete event of /data/delete-me.txt")
lo, hi = sizes["/data/log.txt"]
have("set_size", lambda e: e["file"] == "/data/log.txt" and e.get("old_size") == lo and e.get("size") == hi,
     "/data/log.txt %d -> %d" % (lo, hi))

def touches(e):
    return PROT in names(e) or e.get("new_file") == PROT or e.get("replaced") == PROT
def atime_only(e):
    return e["event"] == "set_attributes" and set(e.get("changed", [])) <= {"atime"}
# One line per event: a vetoed request's lines name the vetoer, and the
# event refused says so.
check(all(e["phase"] == "after" for e in files), "a before line without log-phases=both")
vetoes = [e for e in files if e.get("refused")]
def inplace(e, spec):
    return (e["event"] == "write" and e.get("direction") == "inplace" and
            [e["file"], e["position"], e["length"]] == spec)
vetoed_writes = opts.get("vetoed_writes", [])
for e in vetoes:
    print("veto:", json.dumps(e))
    check(e["result"] == 1 and e.get("error") == "EPERM", "a veto that is not EPERM: %s" % json.dumps(e))
    check(e.get("by") == BY, "a veto not by %s: %s" % (BY, json.dumps(e)))
    check(touches(e) or any(inplace(e, w) for w in vetoed_writes),
          "a veto of something else than %s: %s" % (PROT, json.dumps(e)))
check(any(touches(e) for e in vetoes), "no vetoed (EPERM) event of %s" % PROT)
let = [e for e in files if touches(e) and e["result"] == 0 and not atime_only(e)]
check(not let, "changes of %s let through: %s" % (PROT, [json.dumps(e) for e in let]))
for w in vetoed_writes:
    check([e for e in vetoes if inplace(e, w)], "no refused in-place write %s" % w)
for w in opts.get("inplace_writes", []):
    check([e for e in files if inplace(e, w) and ok_after(e)], "no in-place write %s let through" % w)

if "log" in opts:
    # vm_guard.py's record: the log's after-lines, event for event.
    def key(e):
        return (e["event"], e.get("file"), e.get("new_file"), e.get("replaced"), e["ino"],
                e["partition"], e.get("position"), e.get("length"), e.get("direction"),
                e.get("type"), e.get("size"), e["result"], bool(e.get("refused")))
    log = [json.loads(l) for l in open(opts["log"]) if l.strip()]
    mine = sorted(map(key, files))
    theirs = sorted(key(e) for e in log if e.get("phase") == "after")
    for k in sorted(set(mine) ^ set(theirs)):
        print("only in the %s:" % ("record" if k in mine else "log"), k)
    check(mine == theirs, "the record and the log's after-lines differ")
    # The file context: each inode's events numbered 1, 2, ... until it
    # goes (a "context" line saying how many it saw and under what names).
    n, ctx = {}, {}
    for e in evs:
        i = (e.get("partition"), e.get("ino"))
        if e["event"] == "context":
            seen = n.pop(i, 0)
            check(seen == e["events"], "context %s: %d events, not %d" % (i, e["events"], seen))
            ctx.setdefault(e["names"][0] if e["names"] else "", []).append(e)
        elif "phase" in e:
            n[i] = n.get(i, 0) + 1
            check(e["n"] == n[i], "event %d of inode %s numbered %d: %s" % (n[i], i, e["n"], json.dumps(e)))
    check(not n, "file contexts never released: %s" % n)
    for old, new in [("/data/old-name.txt", "/data/new-name.txt"), ("/data/move-me.txt", "/archive/moved.txt")]:
        c = ctx.get(old, [])
        print("context %s: %s" % (old, [x["names"] for x in c]))
        check(len(c) == 1 and c[0]["names"] == [old, new], "the file context of %s did not see %s" % (old, new))
    c = ctx.get("/data/delete-me.txt", [])
    first_prot = min([e["seq"] for e in vetoes if touches(e)] or [0])
    print("context /data/delete-me.txt: %s" % [(x["seq"], x["names"]) for x in c])
    check(len(c) == 1 and c[0]["seq"] < first_prot,
          "the file context of /data/delete-me.txt did not go when its inode was freed")
    # The handle context: a connection's bytes written per inode.
    total = {}
    for e in files:
        if e["event"] == "write":
            i = (e["connection"], e["partition"], e["ino"])
            total[i] = total.get(i, 0) + e["bytes_written"]
            check(e["conn_bytes"] == total[i], "conn_bytes %d, not %d: %s" % (e["conn_bytes"], total[i], json.dumps(e)))
    check(evs[-1]["event"] == "close", "the record does not end with close()")
sys.exit(1 if errors else 0)
EOF

# --- One variant. ----------------------------------------------------------

# part_geom DISK NR: "START SECTORS" of partition NR (512-byte sectors).
part_geom ()
{
    partx -g -o NR,START,SECTORS "$1" | awk -v n="$2" '$1 == n { print $2, $3 }'
}
# extract DISK NR OUT: partition NR of DISK into OUT (- for stdout).
extract ()
{
    local g
    g="$(part_geom "$1" "$2")"
    [ -n "$g" ] || fail "no partition $2 on $1"
    set -- "$1" "$2" "$3" $g
    if [ "$3" = - ]; then
        dd if="$1" bs=1M iflag=skip_bytes,count_bytes \
           skip=$(( $4 * 512 )) count=$(( $5 * 512 )) status=none
    else
        dd if="$1" of="$3" bs=1M iflag=skip_bytes,count_bytes \
           skip=$(( $4 * 512 )) count=$(( $5 * 512 )) conv=sparse status=none
    fi
}

# serve SOCKET PIDFILE WHAT NBDKIT-ARGS...: start_nbdkit, but failing
# at once (with nbdkit's messages and WHAT) when nbdkit refuses to start.
# Its stderr goes to $d/nbdkit.err.
serve ()
{
    local sock="$1" pidfile="$2" what="$3" i
    shift 3
    rm -f "$sock" "$pidfile"
    echo "nbdkit $*"
    nbdkit -U "$sock" -P "$pidfile" --log=stderr "$@" 2>>"$d/nbdkit.err" ||
        fail "$v: nbdkit did not start: $what"
    cleanup_fn "stop_nbdkit '$pidfile'"
    for (( i = 0; i < 300; i++ )); do
        [ -s "$pidfile" ] && [ -S "$sock" ] && return 0
        sleep 0.1
    done
    fail "$v: nbdkit did not start: $what"
}

# run_variant NAME DIR: in a subshell of its own (its cleanups run when
# it ends).  Exit 0 pass, 1 fail, 77 skip.
run_variant ()
{
    local v="$1" d="$2" extnum disk="$2/disk.img" log="$2/events.jsonl"
    local qcow='' qsock="$2/qsock" sock="$2/sock" g t0 t1 rc
    # gpt-python: the handler, its record and the guest's marker.
    local guard='' record="$2/record.jsonl" vmarker=''
    case "$v" in
        gpt-*) extnum=2 ;;
        mbr-*) extnum=5 ;;
        bare-plugin) extnum=0 ;;
        *) echo "unknown variant $v" >&2; return 1 ;;
    esac
    case "$v" in
        *-filter-qcow2)
            command -v qemu-nbd >/dev/null && command -v qemu-img >/dev/null ||
                { echo "SKIP: $v: requires qemu-nbd and qemu-img (Debian package qemu-utils)" >&2; return 77; }
            if [ "$server" = fsevent ] && ! [ -f "$filter_so" ]; then
                echo "SKIP: $v: the filter form is not built: $filter_so" >&2
                return 77
            fi ;;
        *-python)
            if [ "$server" = fsevent ] && [ "$have_python" != yes ]; then
                echo "SKIP: $v: python handlers were not built (no python3-embed)" >&2
                return 77
            fi
            guard="$top_srcdir/tests/vm_guard.py" vmarker="$marker" ;;
    esac

    _cleanups=()
    trap '_run_cleanups' EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
    set -e

    # The disk: partition table, then the filesystems dd'd into place.
    rm -f "$disk"
    truncate -s 256M "$disk"
    [ $extnum -ne 0 ] || cp --sparse=always "$ext4img" "$disk"
    case "$v" in
        gpt-*)
            sgdisk -n 1:2048:+32M -t 1:ef00 -c 1:EFI \
                   -n 2:0:+200M -t 2:8300 -c 2:data "$disk" >/dev/null ||
                fail "$v: sgdisk failed" ;;
        mbr-*)
            # 1: FAT32 LBA; 2: extended over the rest; 5: its first
            # logical partition.
            sfdisk -q "$disk" <<EOT
label: dos
start=2048, size=65536, type=c
type=5
size=409600, type=83
EOT
            ;;
    esac
    [ $extnum -eq 0 ] || partx -g -o NR,START,SECTORS,TYPE "$disk"
    for n in $([ $extnum -eq 0 ] || echo 1 $extnum); do
        g="$(part_geom "$disk" $n)"
        [ -n "$g" ] || fail "$v: no partition $n"
        set -- $g
        if [ $n = 1 ]; then src="$vfatimg"; else src="$ext4img"; fi
        [ $(( $2 * 512 )) -ge "$(stat -c %s "$src")" ] || fail "$v: partition $n is too small"
        dd if="$src" of="$disk" bs=1M oflag=seek_bytes seek=$(( $1 * 512 )) \
           conv=notrunc,sparse status=none
    done
    [ $extnum -eq 0 ] || vfat_sum="$(extract "$disk" 1 - | sha256sum)"

    # The servers.
    local nbdkit_args=()
    if [ "$server" = fsevent ]; then
        # The vetoer: protect=, or gpt-python's handler in its stead.
        local vetoer=(protect=/etc/protected.conf)
        [ -z "$guard" ] ||
            vetoer=(python="$guard" python.protect=/etc/protected.conf
                    python.marker="$marker" python.record="$record")
        # shellcheck disable=SC2206
        nbdkit_args=(log="$log" "${vetoer[@]}" -D fsevent.check=1
                     ${VM_FSEVENT_ARGS:-})
    fi
    case "$v" in
        *-plugin|*-python)
            if [ "$server" = fsevent ]; then
                serve "$sock" "$d/pid" "does the plugin serve partitioned disks?" \
                      "$plugin" "$disk" "${nbdkit_args[@]}"
            else
                serve "$sock" "$d/pid" "nbdkit file" file "$disk"
            fi ;;
        *-filter-qcow2)
            qcow="$d/disk.qcow2"
            qemu-img convert -f raw -O qcow2 "$disk" "$qcow"
            rm -f "$disk"
            rm -f "$qsock" "$d/qpid"
            qemu-nbd --fork --pid-file="$d/qpid" --socket="$qsock" -f qcow2 \
                     --cache=none --persistent --shared=4 "$qcow" 2>"$d/qemu-nbd.err" ||
                { cat "$d/qemu-nbd.err"; fail "$v: qemu-nbd did not start"; }
            cleanup_fn "stop_nbdkit '$d/qpid'"
            if [ "$server" = fsevent ]; then
                serve "$sock" "$d/pid" "the fsevent filter over nbd" \
                      --filter="$filter_so" nbd socket="$qsock" "${nbdkit_args[@]}"
            else
                serve "$sock" "$d/pid" "nbdkit nbd" nbd socket="$qsock"
            fi ;;
    esac

    # The guest, in the background so that the watchdog's TERM stops it
    # at once (bash would wait for a foreground command to end first).
    t0=$(date +%s%N)
    rc=0
    "$vm" --socket "$sock" --script "$guest" --console "$d/console" \
          --timeout 400 --mem 512 --cpus 1 -- "/dev/vda${extnum#0}" \
          "$([ $extnum -eq 0 ] || echo /dev/vda1)" "$vmarker" > "$d/guest.out" &
    local vmpid=$!
    cleanup_fn "kill $vmpid 2>/dev/null; wait $vmpid 2>/dev/null"
    wait $vmpid || rc=$?
    t1=$(date +%s%N)
    sed 's/^/  guest| /' "$d/guest.out"
    wall="$(( (t1 - t0) / 1000000 ))"
    printf '%s: guest run (boot, workload, power-off) %d.%03d s\n' "$v" \
        $((wall / 1000)) $((wall % 1000)) | tee "$d/time"
    [ $rc -eq 0 ] || { tail -n 30 "$d/console"; fail "$v: scripts/vm exited $rc"; }
    grep -q '^GUEST-WORKLOAD-DONE' "$d/guest.out" || fail "$v: the guest workload did not finish"
    grep -q '^GUEST-END' "$d/guest.out" || fail "$v: the guest script did not reach its end"

    # Stop the servers (their last writes are on the image then).
    stop_nbdkit "$d/pid"
    if [ -n "$qcow" ]; then
        stop_nbdkit "$d/qpid"
        qemu-img convert -f qcow2 -O raw "$qcow" "$disk"
    fi
    ! grep -E "model check failed|MODEL CHECK FAILURES|AddressSanitizer|runtime error" \
         "$d/nbdkit.err" || fail "$v: nbdkit reported a model check failure or a crash"
    [ -z "$guard" ] || ! grep -E "Traceback|kept past the callback|timed out" "$d/nbdkit.err" ||
        fail "$v: the Python handler failed"

    # What the guest saw of the veto.
    local guest_err=
    grep -Eq '^PROTECTED-(FDATASYNC|SYNCFS)=[1-9]' "$d/guest.out" && guest_err+="sync error; "
    grep -Eq '^MOUNT-STATE: .* (ro|ro,[^ ]*) ' "$d/guest.out" && guest_err+="read-only; "
    grep -Eq 'Aborting journal|EXT4-fs error|I/O error' "$d/console" && guest_err+="kernel error; "
    echo "$v: the guest saw: ${guest_err:-no error}"
    if [ "$server" = fsevent ]; then
        [ -n "$guest_err" ] || fail "$v: the guest saw no error from the vetoed change"
    else
        [ -z "$guest_err" ] || fail "$v: the guest saw an error with a plain server: $guest_err"
    fi
    # gpt-python: the marker's in-place write refused on its request.
    if [ -n "$vmarker" ]; then
        g="$(sed -n 's/^CONTENT-MARKER-DD=//p' "$d/guest.out")"
        echo "$v: the guest's dd of the marker exited ${g:-?}"
        if [ "$server" = fsevent ]; then
            case "$g" in ''|0) fail "$v: the marker's write was not refused" ;; esac
        else
            [ "$g" = 0 ] || fail "$v: the marker's write failed with a plain server"
        fi
    fi

    # The vfat partition: untouched.
    if [ $extnum -ne 0 ]; then
        [ "$(extract "$disk" 1 - | sha256sum)" = "$vfat_sum" ] ||
            fail "$v: the vfat partition changed"
        echo "$v: vfat partition unchanged"
    fi

    # The ext4 partition, as it is and as the next mount sees it.  After
    # the veto the journal was aborted with committed transactions not
    # yet checkpointed: the image needs recovery, and e2fsck -fn skips
    # that and then compares stale home blocks ("Free blocks count
    # wrong" and the like).  So the content checks and the strict
    # e2fsck -fn run on a copy whose journal has been replayed (e2fsck
    # -E journal_only: the recovery alone, no repairs); on the image as
    # it is e2fsck -fn must be clean unless it needs recovery.
    if [ $extnum -eq 0 ]; then
        cp --sparse=always "$disk" "$d/ext4.img"
    else
        extract "$disk" $extnum "$d/ext4.img"
    fi
    cp --sparse=always "$d/ext4.img" "$d/ext4.replayed"
    local needs_recovery=
    dumpe2fs -h "$d/ext4.img" 2>/dev/null | grep -q '^Filesystem features:.*needs_recovery' &&
        needs_recovery=yes
    if [ -n "$needs_recovery" ]; then
        echo "$v: the ext4 partition needs journal recovery; replaying it on a copy"
        e2fsck -E journal_only -y "$d/ext4.replayed" || :
    fi
    local e2=0
    e2fsck -fn "$d/ext4.img" > "$d/e2fsck.out" 2>&1 || e2=$?
    sed 's/^/  e2fsck -fn| /' "$d/e2fsck.out"
    if [ $e2 -ne 0 ] && [ -z "$needs_recovery" ]; then
        fail "$v: e2fsck -fn on the ext4 partition exits $e2"
    fi
    e2fsck -fn "$d/ext4.replayed" > "$d/e2fsck-replayed.out" 2>&1 ||
        { cat "$d/e2fsck-replayed.out"; fail "$v: e2fsck -fn after journal recovery exits $?"; }
    echo "$v: e2fsck -fn clean${needs_recovery:+ (after journal recovery; on the image as it is: exit $e2)}"

    # got PATH: the file's content on the replayed copy into $d/got.
    got ()
    {
        debugfs -R "cat $1" "$d/ext4.replayed" > "$d/got" 2>"$d/got.err" || :
    }
    absent ()
    {
        debugfs -R "stat $1" "$d/ext4.replayed" 2>&1 | grep -q "File not found" ||
            fail "$v: $1 is still on the image"
    }
    got /etc/protected.conf
    if [ "$server" = fsevent ]; then
        cmp "$root/etc/protected.conf" "$d/got" ||
            fail "$v: /etc/protected.conf changed on the image"
    else
        # A plain server lets the append through.
        cmp <(cat "$root/etc/protected.conf"; echo x) "$d/got" ||
            fail "$v: /etc/protected.conf is not the original plus the guest's append"
    fi
    got /data/new.txt; cmp "$expect/new.txt" "$d/got" || fail "$v: /data/new.txt is wrong"
    got /data/big.bin; cmp "$expect/big.bin" "$d/got" || fail "$v: /data/big.bin is wrong"
    got /data/log.txt; cmp "$expect/log.txt" "$d/got" || fail "$v: /data/log.txt is wrong"
    got /data/new-name.txt; cmp "$root/data/old-name.txt" "$d/got" ||
        fail "$v: /data/new-name.txt is wrong"
    got /archive/moved.txt; cmp "$root/data/move-me.txt" "$d/got" ||
        fail "$v: /archive/moved.txt is wrong"
    absent /data/old-name.txt
    absent /data/move-me.txt
    absent /data/delete-me.txt
    if [ -n "$vmarker" ]; then
        # Block 0 as first written (fsevent) or the marker's (a plain
        # server), block 1 the in-place rewrite.
        got /data/content.txt
        if [ "$server" = fsevent ]; then
            cmp <(head -c 4096 "$work/content.v1"; cat "$work/content.v2") "$d/got"
        else
            cmp <(cat "$work/content.marker" "$work/content.v2") "$d/got"
        fi || fail "$v: /data/content.txt is wrong"
    fi
    echo "$v: image content as expected"

    # The log.
    if [ "$server" = fsevent ]; then
        [ -s "$log" ] || fail "$v: the event log is empty"
        local old new sizes
        old="$(stat -c %s "$root/data/log.txt")"
        new="$(stat -c %s "$expect/log.txt")"
        sizes="{\"/data/new.txt\": [0, $(stat -c %s "$expect/new.txt")],"
        sizes+=" \"/data/big.bin\": [0, $(stat -c %s "$expect/big.bin")],"
        sizes+=" \"/data/log.txt\": [$old, $new]"
        local opts='{}' writes
        if [ -n "$guard" ]; then
            sizes+=", \"/data/content.txt\": [0, 8192]"
            writes="\"vetoed_writes\": [[\"/data/content.txt\", 0, 4096]],"
            writes+=" \"inplace_writes\": [[\"/data/content.txt\", 4096, 4096]]"
            opts="{\"by\": \"python:$guard\", $writes}"
        fi
        sizes+="}"
        "$py" "$work/check_log.py" "$log" $extnum "$sizes" "$opts" > "$d/check.out" 2>&1 ||
            { cat "$d/check.out"; fail "$v: the event log is wrong"; }
        sed 's/^/  log| /' "$d/check.out"
        if [ -n "$guard" ]; then
            # The handler's own record: the same checks, and the log's
            # after-lines, and its contexts.
            [ -s "$record" ] || fail "$v: the handler's record is empty"
            opts="{\"by\": \"vm_guard\", \"log\": \"$log\", $writes}"
            "$py" "$work/check_log.py" "$record" $extnum "$sizes" "$opts" > "$d/check-record.out" 2>&1 ||
                { cat "$d/check-record.out"; fail "$v: the Python handler's record is wrong"; }
            sed 's/^/  record| /' "$d/check-record.out"
        fi
    else
        echo "$v: event checks skipped (VM_SERVER=$server)"
    fi
    return 0
}

results=()
failed=0 ran=0
for v in $variants; do
    d="$work/$v"
    mkdir -p "$d"
    echo "=== $v ==="
    set +e
    ( run_variant "$v" "$d" )
    rc=$?
    set -e
    case $rc in
        0) res=PASS; ran=$((ran + 1)) ;;
        77) res=SKIP ;;
        *) res=FAIL; ran=$((ran + 1)); failed=$((failed + 1))
           echo "--- $v: nbdkit stderr (last 20 lines):"
           tail -n 20 "$d/nbdkit.err" 2>/dev/null || :
           if [ -n "${KEEP:-}" ]; then
               [ -n "$keepdir" ] ||
                   keepdir="$(mktemp -d "${KEEP_DIR:-${TMPDIR:-/tmp}}/fsevent-vm.XXXXXX")"
               rm -f "$d/sock" "$d/qsock"
               cp -a --sparse=always "$d" "$keepdir/$v"
           fi ;;
    esac
    results+=("$(printf '%-18s %s  %s' "$v" "$res" "$(cat "$d/time" 2>/dev/null | sed 's/^[^:]*: //')")")
done

echo "=== results (server: $server) ==="
printf '%s\n' "${results[@]}"
[ -z "$keepdir" ] || echo "directories of failing variants kept in $keepdir"
[ $failed -eq 0 ] || fail "$failed of $ran variants failed"
if [ $ran -eq 0 ]; then
    echo "SKIP: $0: no variant could run" >&2
    exit 77
fi
echo "PASS: $0"
