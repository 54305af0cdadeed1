#!/usr/bin/python3
"""tests/follow_oracle.py: the workload and the oracle of
tests/test-follow-kernel.sh (journal following: file events of a real
kernel mount, checked against what the workload did).

Three modes:

  follow_oracle.py populate ROOT
      Write the initial tree (files that are in the image before nbdkit
      starts, made with mke2fs -d ROOT).

  follow_oracle.py workload --mnt MNT --root ROOT --log LOG --truth OUT
      Run the scripted workload on the mounted filesystem MNT and write
      the ground truth (every operation, the namespace after each sync,
      the expected content of every file) to OUT.  LOG is the plugin's
      log=FILE, read only to note where each sync falls in it.

  follow_oracle.py --log LOG --image IMG --truth TRUTH.json
                   [--nbdkit-stderr FILE] [--report FILE] [--max N]
      Check a finished run (after umount and nbdkit's exit): the log
      against the truth, the image with debugfs and e2fsck.  Exit 0 when
      every check passes, 1 otherwise.  Usable on a saved run.

  follow_oracle.py selftest --image IMG --truth TRUTH.json
      Check the oracle: on a log made up from TRUTH as a correct plugin
      would write it (one transaction per epoch) it must find nothing,
      and on broken copies of that log exactly what was broken.

The checks:
  0 log format: JSON lines, seq 1..N, one after line per event (with
    --phases both, as for log-phases=both: before/after pairs), results,
    "sequence" present exactly where it must be, commit order and the
    order of events within a transaction;
  1 data: every byte the workload wrote (and that was committed) is
    covered by a successful write event of its inode at the right
    position; bytes of files written exactly once, exactly once; the
    file named by each write event is a name of the inode at the time;
  2 namespace: every create, rename, link, unlink, delete, truncate
    (set_size) and chmod/chown/touch/chattr (set_attributes) reported
    exactly once with the right names and values, nothing reported that
    the workload did not do (on ext2, pairs that cancel out within one
    epoch excepted: see Oracle.pair_transients), and replaying the
    events reproduces the namespace (names, sizes, modes, owners) the
    workload saw after every sync;
  3 unattributed: no unattributed bytes unless justified;
  4 image: e2fsck -fn clean, debugfs shows what the workload made, no
    "model check failed" from the plugin.
"""
import argparse
import hashlib
import json
import os
import random
import re
import socket
import stat
import subprocess
import sys
import tempfile
import time

BS = 4096
ORDER = ("create", "rename", "link", "set_size", "write", "set_attributes",
         "unlink", "delete")
RANK = {e: i for i, e in enumerate(ORDER)}
NS = ("create", "rename", "link", "unlink", "delete")
TIMESTAMPS = {"atime", "mtime", "ctime", "crtime"}
ATTRS = {"mode", "uid", "gid", "flags", "links", "blocks", "xattr"} | TIMESTAMPS
TYPES = ("file", "directory", "symlink", "chardev", "blockdev", "fifo",
         "socket")


# ---------------------------------------------------------------------
# Byte ranges: sorted lists of disjoint half-open [a, b).

def iv_norm(ivs):
    out = []
    for a, b in sorted((a, b) for a, b in ivs if b > a):
        if out and a <= out[-1][1]:
            out[-1][1] = max(out[-1][1], b)
        else:
            out.append([a, b])
    return [tuple(x) for x in out]


def iv_minus(A, B):
    out = []
    B = iv_norm(B)
    for a, b in iv_norm(A):
        cur = a
        for c, d in B:
            if d <= cur or c >= b:
                continue
            if c > cur:
                out.append((cur, c))
            cur = max(cur, d)
            if cur >= b:
                break
        if cur < b:
            out.append((cur, b))
    return out


def iv_and(A, B):
    return iv_minus(A, iv_minus(A, B))


def iv_len(ivs):
    return sum(b - a for a, b in ivs)


def fmt_ivs(ivs, limit=4):
    s = ", ".join("%d..%d" % (a, b - 1) for a, b in ivs[:limit])
    if len(ivs) > limit:
        s += ", ... (%d ranges)" % len(ivs)
    return "bytes " + s + " (%d bytes)" % iv_len(ivs)


# ---------------------------------------------------------------------
# populate: the files in the image before nbdkit starts.

def data(seed, n):
    return random.Random(seed).randbytes(n)


PRE = {  # path: (seed, size)
    "/pre/over": (101, 65536),
    "/pre/keep": (102, 10000),
    "/pre/ren": (103, 5000),
    "/pre/trunc": (104, 40000),
    "/pre/hl": (105, 7000),
    "/pre/victim": (106, 3000),
    "/pre/open": (107, 10000),
    "/pre/tree/a/b/c1": (108, 2000),
    "/pre/tree/a/f": (109, 100),
    "/pre/tree/g": (110, 9000),
    # Never touched by the workload: test-follow-kernel serves this tree
    # with protect=, so a false event on it (a state that never existed)
    # is vetoed and shows as a failed event and a damaged guest.
    "/guarded/keep.conf": (111, 3000),
    "/guarded/sub/deep.conf": (112, 20000),
}
PRE_LINKS = {"/pre/hl2": "/pre/hl"}


def populate(root):
    for path, (seed, size) in PRE.items():
        p = root + path
        os.makedirs(os.path.dirname(p), exist_ok=True)
        with open(p, "wb") as f:
            f.write(data(seed, size))
    for new, old in PRE_LINKS.items():
        os.link(root + old, root + new)


# ---------------------------------------------------------------------
# The workload.  Every method does one thing on the mount and records
# what the log must show for it.

def ftype(mode):
    for test, name in ((stat.S_ISREG, "file"), (stat.S_ISDIR, "directory"),
                       (stat.S_ISLNK, "symlink"), (stat.S_ISCHR, "chardev"),
                       (stat.S_ISBLK, "blockdev"), (stat.S_ISFIFO, "fifo"),
                       (stat.S_ISSOCK, "socket")):
        if test(mode):
            return name
    return "?"


class FileModel:
    """What the workload knows of one regular file (one inode)."""

    def __init__(self, content, created_epoch, initial=False):
        self.content = bytearray(content)
        self.created_epoch = created_epoch
        self.required = []          # bytes written by the workload
        nblk = (len(content) + BS - 1) // BS
        self.initial = set(range(nblk)) if initial else set()
        self.committed = set()      # blocks allocated and committed
        self.pending = set()        # blocks written since the last commit
        self.once = not initial     # written exactly once so far
        self.write_step = None
        self.clean_since_write = False


class Workload:
    def __init__(self, mnt, root, log, variant, journal):
        self.mnt = mnt.rstrip("/")
        self.root = root
        self.log = log
        self.variant = variant
        self.journal = journal
        self.ops = []
        self.epochs = []
        self.files = {}             # ino -> FileModel
        self.held = {}              # fd -> ino (files held open)
        self.orphans = set()        # inos unlinked while held open
        self.epoch = 0
        self.epoch_name = "mount"
        self.step_id = 0
        self.step_name = "mount"
        self.volatile = set()
        self.seed = 1000

    # --- helpers ------------------------------------------------------
    def p(self, path):
        return self.mnt + path

    def lst(self, path):
        return os.lstat(self.p(path))

    def ino(self, path):
        return self.lst(path).st_ino

    def rnd(self, n):
        self.seed += 1
        return data(self.seed, n)

    def op(self, kind, **kw):
        o = {"op": kind, "epoch": self.epoch, "step": self.step_name}
        o.update(kw)
        self.ops.append(o)
        return o

    def step(self, name):
        self.step_id += 1
        self.step_name = name

    def names_of(self, ino):
        out = []
        for dirpath, dirs, files in os.walk(self.mnt):
            for n in dirs + files:
                full = os.path.join(dirpath, n)
                if os.lstat(full).st_ino == ino:
                    out.append(full[len(self.mnt):])
        return sorted(out)

    # --- epochs -------------------------------------------------------
    def log_seq(self):
        """The last seq in the log, once the log has stopped growing."""
        last, stable, t0 = -1, 0, time.time()
        while stable < 3 and time.time() - t0 < 20:
            size = os.path.getsize(self.log) if os.path.exists(self.log) else 0
            stable = stable + 1 if size == last else 0
            last = size
            time.sleep(0.05)
        seq = 0
        if last > 0:
            with open(self.log, "rb") as f:
                f.seek(max(0, last - 65536))
                tail = f.read(last - max(0, last - 65536))
            for line in reversed(tail.split(b"\n")):
                try:
                    seq = json.loads(line)["seq"]
                    break
                except Exception:
                    continue
        return seq

    def snapshot(self):
        snap = {}
        for dirpath, dirs, files in os.walk(self.mnt):
            for n in [""] + dirs + files:
                full = os.path.join(dirpath, n) if n else dirpath
                if not n and dirpath != self.mnt:
                    continue
                st = os.lstat(full)
                path = full[len(self.mnt):] or "/"
                snap[path] = [st.st_ino, ftype(st.st_mode),
                              "%04o" % stat.S_IMODE(st.st_mode),
                              st.st_uid, st.st_gid, st.st_size, st.st_nlink]
        return snap

    def sync(self):
        """End the epoch: sync (a full journal commit), wait for the
        log, record where the epoch ends in it and the namespace."""
        t = time.time()
        os.sync()
        seq = self.log_seq()
        for m in self.files.values():
            m.committed |= m.pending
            m.pending = set()
            m.clean_since_write = True
        self.epochs.append({"index": self.epoch, "name": self.epoch_name,
                            "seq": seq, "snapshot": self.snapshot(),
                            "orphans": sorted(self.orphans),
                            "sync_seconds": round(time.time() - t, 3)})
        self.epoch += 1

    def phase(self, name):
        self.epoch_name = name
        self.step("")

    # --- data ---------------------------------------------------------
    def _record_write(self, ino, path, pos, buf):
        m = self.files[ino]
        n = len(buf)
        end = pos + n
        old = len(m.content)
        if end > old:
            m.content.extend(b"\0" * (end - old))
        m.content[pos:end] = buf
        # kinds, block by block
        parts = []
        for blk in range(pos // BS, (end + BS - 1) // BS):
            a, b = max(pos, blk * BS), min(end, (blk + 1) * BS)
            if blk in m.initial:
                kind = "overwrite-initial"
            elif blk in m.committed:
                kind = "overwrite"
            else:
                kind = "new"
            if parts and parts[-1][0] == kind and parts[-1][2] == a:
                parts[-1][2] = b
            else:
                parts.append([kind, a, b])
            if blk not in m.initial and blk not in m.committed:
                m.pending.add(blk)
        # written exactly once?
        if iv_and(m.required, [(pos, end)]) or \
           (m.write_step is not None and
            (m.write_step != self.step_id or m.clean_since_write)):
            m.once = False
        m.write_step = self.step_id
        m.clean_since_write = False
        m.required = iv_norm(m.required + [(pos, end)])
        o = self.op("write", ino=ino, path=path, position=pos, length=n,
                    parts=[[k, a, b - a] for k, a, b in parts],
                    may_vanish=False)
        if ino in self.orphans:
            o["orphan"] = True      # written after its last name went

    def _fsynced(self, ino):
        m = self.files[ino]
        m.committed |= m.pending
        m.pending = set()
        m.clean_since_write = True
        for o in self.ops:
            if o["op"] == "write" and o["ino"] == ino:
                o["fsynced"] = True

    def create(self, path, content=b"", chunk=1 << 20, fsync=False,
               mode=0o644):
        fd = os.open(self.p(path), os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
        st = os.fstat(fd)
        self.op("create", path=path, ino=st.st_ino, type="file",
                mode="%04o" % stat.S_IMODE(st.st_mode), uid=st.st_uid,
                gid=st.st_gid)
        self.files[st.st_ino] = FileModel(b"", self.epoch)
        pos = 0
        while pos < len(content):
            buf = content[pos:pos + chunk]
            os.pwrite(fd, buf, pos)
            self._record_write(st.st_ino, path, pos, buf)
            pos += len(buf)
        if fsync:
            os.fsync(fd)
            self._fsynced(st.st_ino)
        os.close(fd)
        return st.st_ino

    def pwrite(self, path, pos, buf, fsync=False, fd=None):
        own = fd is None
        if own:
            fd = os.open(self.p(path), os.O_WRONLY)
        ino = os.fstat(fd).st_ino
        os.pwrite(fd, buf, pos)
        self._record_write(ino, path, pos, buf)
        if fsync:
            os.fsync(fd)
            self._fsynced(ino)
        if own:
            os.close(fd)

    def append(self, path, buf, fsync=False):
        self.pwrite(path, self.lst(path).st_size, buf, fsync)

    def truncate(self, path, size):
        st = self.lst(path)
        m = self.files[st.st_ino]
        os.truncate(self.p(path), size)
        old = st.st_size
        if size < len(m.content):
            del m.content[size:]
        else:
            m.content.extend(b"\0" * (size - len(m.content)))
        m.required = iv_minus(m.required, [(size, 1 << 62)])
        keep = (size + BS - 1) // BS
        for s in (m.initial, m.committed, m.pending):
            for blk in [b for b in s if b >= keep]:
                s.discard(blk)
        m.once = False
        # Writes of this epoch not yet committed lose what is cut off.
        for o in self.ops:
            if o["op"] == "write" and o["ino"] == st.st_ino and \
               o["epoch"] == self.epoch and not o.get("fsynced"):
                o["parts"] = [[k, a, min(n, size - a)]
                              for k, a, n in o["parts"] if a < size]
        self.op("set_size", path=path, ino=st.st_ino, old_size=old,
                size=size)

    # --- namespace ----------------------------------------------------
    def mkdir(self, path, mode=0o755):
        os.mkdir(self.p(path), mode)
        st = self.lst(path)
        self.op("create", path=path, ino=st.st_ino, type="directory",
                mode="%04o" % stat.S_IMODE(st.st_mode), uid=st.st_uid,
                gid=st.st_gid)

    def symlink(self, target, path):
        os.symlink(target, self.p(path))
        st = self.lst(path)
        self.op("create", path=path, ino=st.st_ino, type="symlink",
                mode="%04o" % stat.S_IMODE(st.st_mode), uid=st.st_uid,
                gid=st.st_gid, size=len(target.encode()))

    def special(self, path, kind):
        p = self.p(path)
        if kind == "fifo":
            os.mkfifo(p, 0o644)
        elif kind == "chardev":
            os.mknod(p, stat.S_IFCHR | 0o600, os.makedev(1, 3))
        elif kind == "blockdev":
            os.mknod(p, stat.S_IFBLK | 0o600, os.makedev(7, 0))
        elif kind == "socket":
            s = socket.socket(socket.AF_UNIX)
            s.bind(p)
            s.close()
        st = self.lst(path)
        self.op("create", path=path, ino=st.st_ino, type=kind,
                mode="%04o" % stat.S_IMODE(st.st_mode), uid=st.st_uid,
                gid=st.st_gid)

    def _freed(self, ino, path, orphan=False):
        """INO is freed now (its last name PATH, or ""); ORPHAN: it was
        unlinked while held open."""
        o = self.op("delete", path=path, ino=ino)
        if path:
            # The name goes in one handle, the inode in the next
            # (evict): a commit may fall between them.
            o["alt"] = [[{"op": "unlink", "path": path, "ino": ino},
                         {"op": "delete", "path": "", "ino": ino}]]
        if ino in self.files:
            m = self.files[ino]
            if orphan:
                # Where its blocks can be recognised in the image after
                # it is freed: the sha256 of each block not in the image
                # at start-up (the tail past the end of file is zero).
                o["orphan_blocks"] = {
                    str(blk): hashlib.sha256(bytes(
                        m.content[blk * BS:(blk + 1) * BS]).ljust(
                            BS, b"\0")).hexdigest()
                    for blk in range((len(m.content) + BS - 1) // BS)
                    if blk not in m.initial}
            for w in self.ops:
                if w["op"] == "write" and w["ino"] == ino and \
                   w["epoch"] == self.epoch and not w.get("fsynced"):
                    w["may_vanish"] = True
                    self.volatile.add(self.epoch)
            del self.files[ino]
        return o

    def _name_gone(self, path, st):
        """The name PATH of the inode ST was removed."""
        if stat.S_ISDIR(st.st_mode) or st.st_nlink <= 1:
            if st.st_ino in self.held.values():
                self.op("unlink", path=path, ino=st.st_ino, orphaned=True)
                self.orphans.add(st.st_ino)
            else:
                self._freed(st.st_ino, path)
        else:
            self.op("unlink", path=path, ino=st.st_ino)

    def rename(self, old, new):
        st = self.lst(old)
        try:
            victim = self.lst(new)
        except FileNotFoundError:
            victim = None
        os.rename(self.p(old), self.p(new))
        o = self.op("rename", path=old, new_path=new, ino=st.st_ino,
                    directory=stat.S_ISDIR(st.st_mode))
        if victim is not None:
            o["replaced_ino"] = victim.st_ino
            self._name_gone(new, victim)

    def link(self, old, new):
        ino = self.ino(old)
        names = self.names_of(ino)
        os.link(self.p(old), self.p(new))
        self.op("link", path=old, new_path=new, ino=ino, names=names)

    def unlink(self, path):
        st = self.lst(path)
        os.unlink(self.p(path))
        self._name_gone(path, st)

    def rmdir(self, path):
        st = self.lst(path)
        os.rmdir(self.p(path))
        self._freed(st.st_ino, path)

    def rmtree(self, path):
        for dirpath, dirs, files in os.walk(self.p(path), topdown=False):
            rel = dirpath[len(self.mnt):]
            for n in sorted(files):
                self.unlink(rel + "/" + n)
            for n in sorted(dirs):
                self.rmdir(rel + "/" + n)
        self.rmdir(path)

    def open_held(self, path):
        fd = os.open(self.p(path), os.O_RDWR)
        self.held[fd] = os.fstat(fd).st_ino
        return fd

    def close_held(self, fd):
        ino = self.held.pop(fd)
        os.close(fd)
        if ino in self.orphans and ino not in self.held.values():
            self.orphans.discard(ino)
            # Unlinked in this epoch: either one delete with the last
            # name, or the unlink and then a nameless delete.
            for i in range(len(self.ops) - 1, -1, -1):
                u = self.ops[i]
                if u["op"] == "unlink" and u["ino"] == ino and \
                   u.get("orphaned"):
                    break
            if u["epoch"] == self.epoch:
                del self.ops[i]
                self._freed(ino, u["path"], orphan=True)
            else:
                self._freed(ino, "", orphan=True)

    # --- attributes ---------------------------------------------------
    def chmod(self, path, mode):
        os.chmod(self.p(path), mode)
        self.op("set_attributes", path=path, ino=self.ino(path),
                attr="mode", value="%04o" % mode)

    def chown(self, path, uid, gid):
        os.chown(self.p(path), uid, gid, follow_symlinks=False)
        ino = self.ino(path)
        self.op("set_attributes", path=path, ino=ino, attr="uid", value=uid)
        self.op("set_attributes", path=path, ino=ino, attr="gid", value=gid)

    def utime(self, path, t):
        os.utime(self.p(path), (t, t))
        ino = self.ino(path)
        self.op("set_attributes", path=path, ino=ino, attr="mtime", value=t)
        self.op("set_attributes", path=path, ino=ino, attr="atime", value=t)

    def chattr(self, path, flag):
        subprocess.run(["chattr", flag, self.p(path)], check=True)
        self.op("set_attributes", path=path, ino=self.ino(path),
                attr="flags", value=None)

    # --- the script ---------------------------------------------------
    def initial(self):
        for path, (seed, size) in PRE.items():
            st = self.lst(path)
            with open(self.root + path, "rb") as f:
                self.files[st.st_ino] = FileModel(f.read(), 0, initial=True)
        self.sync()

    def run(self):
        self.initial()

        self.phase("create")   # many operations, no sync between them
        for d in ("/a", "/a/sub", "/b", "/t", "/t/x", "/t/x/y"):
            self.mkdir(d)
        self.step("files")
        self.create("/a/f1", self.rnd(5000))
        self.create("/a/f2", self.rnd(12288), fsync=True)
        self.create("/b/g", self.rnd(3))
        self.create("/a/open2", self.rnd(6000))
        self.create("/b/x2", self.rnd(2000))
        self.step("8 MiB")
        self.create("/a/big", self.rnd(8 << 20))
        self.step("sparse")
        fd = os.open(self.p("/b/sparse"), os.O_WRONLY | os.O_CREAT, 0o644)
        os.close(fd)
        st = self.lst("/b/sparse")
        self.op("create", path="/b/sparse", ino=st.st_ino, type="file",
                mode="0644", uid=0, gid=0)
        self.files[st.st_ino] = FileModel(b"", self.epoch)
        self.dd("/b/sparse", self.rnd(4096), 1 << 20)         # dd seek=
        self.dd("/b/sparse", self.rnd(5000), (3 << 20) + 100)
        self.step("special files")
        self.symlink("f1", "/a/sl")
        self.symlink("x" * 100 + "/target", "/a/slong")
        for kind in ("fifo", "chardev", "blockdev", "socket"):
            self.special("/b/" + kind, kind)
        self.step("tree")
        for i in range(5):
            self.create("/t/x/y/f%d" % i, self.rnd(100 + 1000 * i))
        self.create("/t/x/z", self.rnd(4096))
        self.step("1000 files")
        self.mkdir("/many")
        for i in range(1000):
            self.create("/many/f%04d" % i, self.rnd(1 + (i * 7919) % 3000))
        self.sync()

        self.phase("write")
        self.step("append")
        self.append("/a/f1", self.rnd(6000))       # 5000..10999
        self.step("overwrite")
        self.pwrite("/a/f2", 4096, self.rnd(4096))
        self.pwrite("/pre/over", 4096, self.rnd(4096), fsync=True)
        self.pwrite("/pre/over", 20000, self.rnd(100))
        self.pwrite("/pre/keep", 3, self.rnd(10))
        self.step("fill a hole")
        self.dd("/b/sparse", self.rnd(4096), 2 << 20)
        self.sync()

        self.phase("truncate up")
        self.truncate("/b/g", 100000)
        self.truncate("/pre/trunc", 50000)
        self.sync()

        self.phase("truncate down")
        self.truncate("/a/f2", 5000)
        self.truncate("/pre/trunc", 1000)
        self.sync()

        self.phase("append after truncate")
        self.append("/pre/trunc", self.rnd(9000))
        self.append("/a/f2", self.rnd(100), fsync=True)
        self.sync()

        self.phase("rename")
        self.rename("/a/f1", "/a/f1r")              # within a directory
        self.rename("/b/g", "/a/sub/g")             # across directories
        self.rename("/t/x", "/b/x")                 # a directory
        self.rename("/pre/ren", "/a/ren")           # a file from the image
        self.rename("/b/x2", "/pre/victim")         # over an existing file
        self.sync()

        self.phase("link")
        self.link("/a/f1r", "/b/f1link")
        self.link("/a/big", "/a/sub/biglink")
        self.link("/pre/keep", "/b/keeplink")
        self.sync()

        self.phase("unlink")
        self.unlink("/b/f1link")                    # the inode lives on
        self.unlink("/a/big")                       # the inode lives on
        self.unlink("/a/sub/g")                     # closed: deleted
        self.rename("/a/ren", "/pre/hl")            # over a hard-linked file
        self.sync()

        self.phase("unlink open file")
        fd = self.open_held("/pre/open")
        self.unlink("/pre/open")
        self.sync()

        self.phase("write unlinked file, close")
        self.pwrite(None, 0, self.rnd(4096), fd=fd)
        self.pwrite(None, 10000, self.rnd(5000), fd=fd, fsync=True)
        self.close_held(fd)
        self.step("unlink, write, close, no sync")
        fd = self.open_held("/a/open2")
        self.unlink("/a/open2")
        self.pwrite(None, 6000, self.rnd(3000), fd=fd)
        self.close_held(fd)
        self.sync()

        self.phase("attributes")
        self.chmod("/a/f1r", 0o600)
        self.chown("/a/sub/biglink", 1000, 1000)
        self.chmod("/b", 0o700)
        self.chown("/b", 1000, 100)
        self.utime("/b/sparse", 978307200)          # touch -d 2001-01-01
        self.chattr("/pre/keep", "+d")
        self.sync()

        self.phase("rm trees")
        self.rmtree("/b/x")
        self.rmtree("/pre/tree")
        self.rmdir("/t")
        self.sync()

        self.phase("mkdir tree")
        for d in ("/m", "/m/n", "/m/n/o"):
            self.mkdir(d)
        self.create("/m/n/o/file", self.rnd(100))
        self.sync()

        self.phase("rmdir tree")
        self.rmtree("/m")
        self.sync()

        self.phase("mixed, fsync only")
        self.mkdir("/c")
        for i in range(100):
            self.rename("/many/f%04d" % i, "/many/r%04d" % i)
        self.step("fsync'd files")
        for i in range(20):
            self.create("/c/n%02d" % i, self.rnd(500 + 700 * i), fsync=True)
            self.unlink("/many/f%04d" % (200 + i))
            self.link("/many/f%04d" % (300 + i), "/c/l%02d" % i)
        self.step("attributes, sizes, overwrites")
        for i in range(10):
            self.chmod("/many/f%04d" % (400 + i), 0o640)
            p = "/many/f%04d" % (500 + i)
            self.truncate(p, self.lst(p).st_size // 2)
            self.pwrite("/many/f%04d" % (600 + i), 0, self.rnd(10))
        self.sync()

    def dd(self, path, buf, seek):
        """dd conv=notrunc oflag=seek_bytes seek=SEEK."""
        subprocess.run(["dd", "of=" + self.p(path), "bs=%d" % len(buf),
                        "seek=%d" % seek, "oflag=seek_bytes",
                        "conv=notrunc", "status=none"],
                       input=buf, check=True)
        self._record_write(self.ino(path), path, seek, buf)

    def truth(self):
        files = {}
        for ino, m in self.files.items():
            files[str(ino)] = {
                "size": len(m.content),
                "sha256": hashlib.sha256(m.content).hexdigest(),
                "required": m.required,
                "once": m.once,
                "created_epoch": m.created_epoch,
            }
        return {"version": 1, "variant": self.variant,
                "journal": self.journal, "block_size": BS,
                "kernel": os.uname().release,
                "epochs": self.epochs, "ops": self.ops, "files": files,
                "volatile_epochs": sorted(self.volatile)}


def workload_main(argv):
    ap = argparse.ArgumentParser(prog="follow_oracle.py workload")
    ap.add_argument("--mnt", required=True)
    ap.add_argument("--root", required=True)
    ap.add_argument("--log", required=True)
    ap.add_argument("--truth", required=True)
    ap.add_argument("--variant", default="?")
    ap.add_argument("--no-journal", action="store_true")
    a = ap.parse_args(argv)
    os.umask(0o022)
    w = Workload(a.mnt, a.root, a.log, a.variant, not a.no_journal)
    t0 = time.time()
    try:
        w.run()
    finally:
        t = w.truth()
        t["workload_seconds"] = round(time.time() - t0, 2)
        with open(a.truth, "w") as f:
            json.dump(t, f)
    print("workload: %d operations in %d epochs, %.1f s" %
          (len(w.ops), len(w.epochs), time.time() - t0))


# ---------------------------------------------------------------------
# The oracle.

class Report:
    def __init__(self, max_lines):
        self.max = max_lines
        self.items = []             # (check, category, message)
        self.notes = []
        self.summary = {}           # check -> [lines]

    def fail(self, check, category, msg):
        self.items.append((check, category, msg))

    def note(self, check, msg):
        self.notes.append((check, msg))

    def info(self, check, msg):
        self.summary.setdefault(check, []).append(msg)

    def failed(self, check=None):
        return [i for i in self.items if check is None or i[0] == check]

    def render(self, full=False):
        out = []
        titles = {0: "log format", 1: "data coverage",
                  2: "namespace events", 3: "unattributed bytes",
                  4: "image, e2fsck, model check"}
        for c in range(5):
            fails = self.failed(c)
            out.append("check %d %-28s %s" % (
                c, titles[c] + " " + "." * (26 - len(titles[c])),
                "FAIL (%d problems)" % len(fails) if fails else "PASS"))
            for s in self.summary.get(c, []):
                out.append("    " + s)
            cats = {}
            for _, cat, msg in fails:
                cats.setdefault(cat, []).append(msg)
            for cat, msgs in cats.items():
                out.append("    [%s] %d:" % (cat, len(msgs)))
                lim = len(msgs) if full else self.max
                for m in msgs[:lim]:
                    out.append("      " + m)
                if len(msgs) > lim:
                    out.append("      ... and %d more" % (len(msgs) - lim))
            for cc, m in self.notes:
                if cc == c:
                    out.append("    note: " + m)
        return "\n".join(out)


def load_log(path, rep):
    evs = []
    with open(path, "rb") as f:
        for n, raw in enumerate(f, 1):
            try:
                e = json.loads(raw)
                assert isinstance(e, dict)
            except Exception:
                rep.fail(0, "not JSON", "line %d: %r" % (n, raw[:120]))
                continue
            e["_line"] = n
            evs.append(e)
    return evs


def show(e):
    keys = ("seq", "event", "phase", "file", "new_file", "ino",
            "replaced_ino", "position", "length", "direction", "sequence",
            "old_size", "size", "changed", "reason", "device_offset",
            "result", "error")
    return "{" + ", ".join("%s: %s" % (k, json.dumps(e[k]))
                           for k in keys if k in e) + "}"


class Oracle:
    def __init__(self, args):
        self.a = args
        self.rep = Report(args.max)
        with open(args.truth) as f:
            self.t = json.load(f)
        self.evs = load_log(args.log, self.rep)
        # log-phases=both: a before and an after line per event; else
        # (the default) the after line only.
        self.both = getattr(args, "phases", "after") == "both"
        self.epochs = self.t["epochs"]
        self.bounds = [e["seq"] for e in self.epochs]
        # epoch of each line: 0 = mount (before the workload), k = the
        # k-th epoch of the workload, len(epochs) = umount and after.
        for e in self.evs:
            e["_epoch"] = self.epoch_of(e.get("seq", 0))
        self.after = [e for e in self.evs if e.get("phase") == "after"]
        self.ok = [e for e in self.after if e.get("result") == 0]
        # Documented limitations, accepted only in their variant and
        # shape, each printed as a note:
        #  ext2 (no journal, metadata written in any order, decided at
        #    the guest's flush): a write naming "" before the inode's
        #    first name is written; the deletes of a tree whose top
        #    entry went first, named through "<ino P>" (P the unlinked
        #    directory); transient namespace events that cancel out in
        #    one epoch (a directory block rewritten between two states,
        #    or a block added to a directory still holding the stale
        #    entries of a deleted one): a link and an unlink of the same
        #    inode and name, in either order, and a create and then a
        #    delete of an inode under a stale name (ending in "/." or
        #    "/..", or a name the workload never had), replayed as
        #    nothing.  A rename as a link and an unlink of the inode in
        #    one epoch (how ext2 came out when every metadata write was
        #    a commit point) is a failure since the engine decides ext2
        #    at the guest's flush: --ext2-split-renames accepts it again
        #    as a note, for looking at an older plugin.
        #  ext4-fast_commit (fast commits not parsed): bytes appended
        #    and fsync'd to a file unlinked while open and freed before
        #    the next full commit reported as unattributed
        #    (journal-clean or shutdown), not as a write.
        self.variant = self.t.get("variant")
        self.ext2 = self.variant == "ext2" and not self.t["journal"]
        self.split_renames = self.ext2 and \
            getattr(args, "ext2_split_renames", False)
        self.fc = self.variant == "ext4-fast_commit"
        self.pair_of = {}           # id(link or unlink) -> (link, unlink, op)
        self.transient = {}         # id(event) -> its cancelling pair (ext2)
        self._truth_names = None
        self.fc_justified = set()   # id() of unattributed events

    def epoch_of(self, seq):
        for k, b in enumerate(self.bounds):
            if seq <= b:
                return k
        return len(self.bounds)

    def where(self, o):
        """Where the workload did O: epoch, and step within it."""
        w = self.ename(o["epoch"])
        return w + " / " + o["step"] if o.get("step") else w

    def ename(self, k):
        if k >= len(self.epochs):
            return "E%d umount" % k
        return "E%d %s" % (k, self.epochs[k]["name"])

    def seq_range(self, k):
        lo = self.bounds[k - 1] if k > 0 else 0
        hi = self.bounds[k] if k < len(self.bounds) else 1 << 62
        return lo, hi

    # --- check 0 ------------------------------------------------------
    def check_format(self):
        R = self.rep
        seqs = [e.get("seq") for e in self.evs]
        if seqs != list(range(1, len(seqs) + 1)):
            bad = next(i for i, s in enumerate(seqs) if s != i + 1)
            R.fail(0, "seq", "seq is not 1, 2, 3, ...: line %d has seq %r"
                   % (bad + 1, seqs[bad]))
        journal = self.t["journal"]
        pairs = {}
        counts = {}
        for e in self.evs:
            ev = e.get("event")
            counts[ev] = counts.get(ev, 0) + 1
            if ev == "unattributed":
                for k in ("device_offset", "length", "reason"):
                    if k not in e:
                        R.fail(0, "fields", "unattributed without %s: %s"
                               % (k, show(e)))
                if e.get("reason") not in ("trim", "freed", "journal-clean",
                                           "shutdown"):
                    R.fail(0, "fields", "unknown reason: " + show(e))
                continue
            if ev not in RANK:
                R.fail(0, "fields", "unknown event: " + show(e))
                continue
            if e.get("phase") not in ("before", "after"):
                R.fail(0, "fields", "bad phase: " + show(e))
                continue
            if e["phase"] == "before" and not self.both:
                R.fail(0, "fields", "a before line without log-phases=both: "
                       + show(e))
                continue
            for k in ("time", "file", "ino", "result"):
                if k not in e:
                    R.fail(0, "fields", "no %s: %s" % (k, show(e)))
            if e.get("phase") == "after" and e.get("result") != 0:
                R.fail(0, "failed events", "after-phase result %r: %s"
                       % (e.get("result"), show(e)))
            if e.get("result") and "error" not in e:
                R.fail(0, "fields", "result without error: " + show(e))
            needs_seq = ev != "write" or e.get("direction") in ("commit",
                                                                "journal")
            if journal and needs_seq and "sequence" not in e:
                R.fail(0, "sequence", "no \"sequence\" on a journaled "
                       "filesystem: " + show(e))
            if not journal and "sequence" in e:
                R.fail(0, "sequence", "\"sequence\" without a journal: "
                       + show(e))
            if ev == "write" and e.get("direction") not in ("inplace",
                                                            "commit",
                                                            "journal"):
                R.fail(0, "fields", "bad direction: " + show(e))
            if ev == "create":
                if e.get("type") not in TYPES:
                    R.fail(0, "fields", "create with bad type: " + show(e))
                if not re.fullmatch(r"[0-7]{4}", str(e.get("mode"))):
                    R.fail(0, "fields", "create with bad mode %r: %s"
                           % (e.get("mode"), show(e)))
                for k in ("uid", "gid", "size"):
                    if not isinstance(e.get(k), int):
                        R.fail(0, "fields", "create without %s: %s"
                               % (k, show(e)))
            if ev in ("link", "rename") and "new_file" not in e:
                R.fail(0, "fields", "%s without new_file: %s" % (ev, show(e)))
            if ev == "set_size" and not (isinstance(e.get("old_size"), int)
                                         and isinstance(e.get("size"), int)):
                R.fail(0, "fields", "set_size without sizes: " + show(e))
            if ev == "set_attributes":
                ch = e.get("changed")
                if not isinstance(ch, list) or not ch or \
                   not set(ch) <= ATTRS:
                    R.fail(0, "fields", "bad changed: " + show(e))
                else:
                    tso = set(ch) <= TIMESTAMPS
                    if e.get("timestamps_only") is not tso:
                        R.fail(0, "fields", "timestamps_only should be %s: %s"
                               % (json.dumps(tso), show(e)))
                    for k in ch:
                        if k not in e:
                            R.fail(0, "fields", "changed %s without its value"
                                   ": %s" % (k, show(e)))
            key = tuple(json.dumps(e.get(k)) for k in (
                "event", "ino", "file", "new_file", "position", "length",
                "direction", "sequence", "replaced_ino", "old_size", "size",
                "changed"))
            pairs.setdefault(key, {"before": [], "after": []})[
                e["phase"]].append(e)
        unpaired = 0
        for key, p in (pairs.items() if self.both else ()):
            b, a = p["before"], p["after"]
            if len(b) != len(a) or any(x["seq"] > y["seq"]
                                       for x, y in zip(b, a)):
                unpaired += 1
                ex = (b or a)[0]
                R.fail(0, "pairs", "%d before and %d after lines for %s"
                       % (len(b), len(a), show(ex)))
        # Commit order, and the order within one transaction.
        runs = []
        for e in self.evs:
            if "sequence" not in e or e.get("event") not in RANK:
                continue
            if runs and runs[-1][0] == e["sequence"]:
                runs[-1][1].append(e)
            else:
                runs.append((e["sequence"], [e]))
        prev = None
        for s, run in runs:
            if prev is not None and s < prev:
                R.fail(0, "order", "transaction %s logged after %s (seq %d)"
                       % (s, prev, run[0]["seq"]))
            prev = s if prev is None else max(prev, s)
            phases = [e["phase"] for e in run]
            if "after" in phases and "before" in phases[phases.index("after"):]:
                R.fail(0, "order", "transaction %s: a before line after an "
                       "after line (seq %d..%d)"
                       % (s, run[0]["seq"], run[-1]["seq"]))
            for ph in ("before", "after"):
                evs = [e for e in run if e["phase"] == ph]
                # An inode number freed and used again in the same
                # transaction has its delete first of all (the spec).
                created = {e.get("ino") for e in evs
                           if e["event"] == "create"}
                reused = [e for e in evs if e["event"] == "delete" and
                          e.get("ino") in created]
                if reused:
                    head = evs[:len(reused)]
                    if head != reused:
                        x = next(e for e in head if e not in reused)
                        d = next(e for e in reused if e not in head)
                        R.fail(0, "order", "transaction %s: delete of the "
                               "reused inode number %s (seq %d) not first "
                               "of all: %s (seq %d) comes before it" % (
                                   s, d.get("ino"), d["seq"], x["event"],
                                   x["seq"]))
                    else:
                        R.note(0, "transaction %s: the delete of reused "
                               "inode number(s) %s first of all (%s)" % (
                                   s, ", ".join(str(e.get("ino"))
                                                for e in reused), ph))
                ranks = [(RANK[e["event"]], e) for e in evs
                         if not any(e is r for r in reused)]
                for (r1, e1), (r2, e2) in zip(ranks, ranks[1:]):
                    if r2 < r1:
                        R.fail(0, "order", "transaction %s: %s (seq %d) "
                               "before %s (seq %d)" % (
                                   s, e1["event"], e1["seq"], e2["event"],
                                   e2["seq"]))
                        break
        R.info(0, "%d lines: %s" % (len(self.evs), ", ".join(
            "%s %d" % kv for kv in sorted(counts.items(), key=str))))

    # --- names --------------------------------------------------------
    def names_at(self, k):
        """ino -> set of names in the snapshot at the end of epoch K."""
        k = min(k, len(self.epochs) - 1)
        cache = self.__dict__.setdefault("_names", {})
        if k not in cache:
            out = {}
            for path, v in self.epochs[k]["snapshot"].items():
                out.setdefault(v[0], set()).add(path)
            cache[k] = out
        return cache[k]

    # --- check 1 ------------------------------------------------------
    def check_data(self):
        R = self.rep
        writes = {}
        for e in self.ok:
            if e.get("event") == "write":
                writes.setdefault(e["ino"], []).append(e)
        deletes = {}
        for o in self.t["ops"]:
            if o["op"] == "delete":
                deletes.setdefault(o["ino"], []).append(o["epoch"])
        stats = {}
        late = 0
        fc_cands = []               # (op, missing ranges, its delete op)

        def incarnation_end(ino, epoch):
            ds = [d for d in deletes.get(ino, []) if d >= epoch]
            return self.seq_range(min(ds))[1] if ds else 1 << 62

        for oi, o in enumerate(self.t["ops"]):
            if o["op"] != "write":
                continue
            lo = self.seq_range(o["epoch"])[0]
            epoch_end = self.seq_range(o["epoch"])[1]
            hi = incarnation_end(o["ino"], o["epoch"])
            evs = [e for e in writes.get(o["ino"], [])
                   if lo < e["seq"] <= hi]
            cov = iv_norm([(e["position"], e["position"] + e["length"])
                           for e in evs])
            cov_in_epoch = iv_norm([(e["position"], e["position"] +
                                     e["length"]) for e in evs
                                    if e["seq"] <= epoch_end])
            for kind, a, n in o["parts"]:
                if n <= 0 or o["may_vanish"]:
                    continue
                st = stats.setdefault(kind, [0, 0, 0, 0])
                st[0] += 1
                st[2] += n
                miss = iv_minus([(a, a + n)], cov)
                fcd = self.fc_orphan_delete(oi) if miss and kind == "new" \
                    else None
                if fcd is not None:
                    fc_cands.append((o, miss, fcd))     # decided below
                elif miss:
                    R.fail(1, "missing: " + kind, "%s (ino %d), %s: %s not "
                           "covered by any write event" % (
                               o["path"] or "(unlinked)", o["ino"],
                               self.where(o), fmt_ivs(miss)))
                else:
                    st[1] += 1
                    if iv_minus([(a, a + n)], cov_in_epoch):
                        late += 1
                st[3] += n - iv_len(miss)
        if fc_cands:
            self.fc_match(fc_cands)
        for kind in ("overwrite-initial", "overwrite", "new"):
            if kind in stats:
                st = stats[kind]
                R.info(1, "%-17s %4d/%d ranges covered, %d/%d bytes" % (
                    kind + ":", st[1], st[0], st[3], st[2]))
        R.info(1, "(overwrite-initial: blocks in the image at start-up; "
               "overwrite: blocks allocated and committed during the run; "
               "new: newly allocated blocks)")
        if late:
            R.note(1, "%d ranges were covered only by events after the "
                   "sync that ended their epoch (late, e.g. at a "
                   "checkpoint)" % late)

        # Every byte of the final content of every file; files written
        # once, exactly once.
        final_ino = {}
        for path, v in self.epochs[-1]["snapshot"].items():
            final_ino.setdefault(v[0], []).append(path)
        once_files = dup_files = 0
        for sino, f in self.t["files"].items():
            ino = int(sino)
            start = self.seq_range(f["created_epoch"])[0]
            creates = [e["seq"] for e in self.ok if e.get("event") ==
                       "create" and e.get("ino") == ino]
            if creates:
                start = max(start, max(creates) - 1)
            evs = [e for e in writes.get(ino, []) if e["seq"] > start]
            req = iv_and([tuple(x) for x in f["required"]],
                         [(0, f["size"])])
            path = sorted(final_ino.get(ino, ["(ino %d)" % ino]))[0]
            cov = iv_norm([(e["position"], e["position"] + e["length"])
                           for e in evs])
            miss = iv_minus(req, cov)
            if miss:
                R.fail(1, "final content not covered", "%s (ino %d, size "
                       "%d): %s of its final content" % (
                           path, ino, f["size"], fmt_ivs(miss)))
            if f["once"] and req:
                once_files += 1
                pts = []
                for e in evs:
                    for a, b in iv_and([(e["position"], e["position"] +
                                         e["length"])], req):
                        pts.append((a, b, e["seq"]))
                pts.sort()
                dups = []
                for i, (a, b, s) in enumerate(pts):
                    for a2, b2, s2 in pts[i + 1:]:
                        if a2 >= b:
                            break
                        dups.append((max(a, a2), min(b, b2), s, s2))
                if dups:
                    dup_files += 1
                    a, b, s, s2 = dups[0]
                    R.fail(1, "written once, reported more than once",
                           "%s (ino %d): bytes %d..%d covered by seq %d and "
                           "seq %d%s" % (path, ino, a, b - 1, s, s2,
                                         " (+%d more overlaps)" %
                                         (len(dups) - 1) if len(dups) > 1
                                         else ""))
        R.info(1, "%d files written exactly once by the workload, %d of "
               "them reported more than once" % (once_files, dup_files))

        # The file named by each write event.
        bad = 0
        for e in self.ok:
            if e.get("event") != "write":
                continue
            k = e["_epoch"]
            ok_names = set()
            for kk in (k - 1, k):
                if kk >= 0:
                    ok_names |= self.names_at(kk).get(e["ino"], set())
            if not ok_names:
                ok_names = {""}
            if self.ext2 and e["file"] == "" and k > 0 and \
               not self.names_at(k - 1).get(e["ino"]) and \
               self.names_at(k).get(e["ino"]):
                R.note(1, "ext2: write to ino %d named \"\" in %s: the "
                       "data reached the disk before the inode's first "
                       "name (%s): %s" % (
                           e["ino"], self.ename(k), ", ".join(sorted(
                               self.names_at(k)[e["ino"]])), show(e)))
                continue
            if e["file"] not in ok_names:
                bad += 1
                R.fail(1, "wrong file name", "write event names %s but ino "
                       "%d is called %s in %s: %s" % (
                           json.dumps(e["file"]), e["ino"],
                           " or ".join(sorted(json.dumps(n)
                                              for n in ok_names)),
                           self.ename(k), show(e)))

    # --- ext4-fast_commit: data of an unlinked open file ---------------
    def fc_orphan_delete(self, oi):
        """On ext4-fast_commit, for the write op at index OI: if it wrote
        (and fsync'd) a file after it was unlinked while open, and the
        file was freed in the same epoch, its delete op; else None."""
        ops = self.t["ops"]
        o = ops[oi]
        if not self.fc or not o.get("fsynced"):
            return None
        ino = o["ino"]
        d = next((x for x in ops[oi + 1:] if x["ino"] == ino and
                  x["op"] in ("create", "delete")), None)
        if d is None or d["op"] != "delete" or d["epoch"] != o["epoch"]:
            return None
        if "orphan_blocks" in d:
            return d if o.get("orphan") else None
        for x in reversed(ops[:oi]):       # truths of older workloads
            if x["ino"] == ino and x["op"] in ("create", "delete"):
                return None
            if x["ino"] == ino and x["op"] == "unlink" and \
               x.get("orphaned"):
                return d
        return None

    def fc_match(self, cands):
        """The bytes of CANDS (ext4-fast_commit, see fc_orphan_delete)
        missing from the write events must be in unattributed events
        (journal-clean or shutdown): the blocks they were in, recognised
        in the image by their content; or, when that cannot be done,
        as many block-aligned unattributed bytes as those blocks."""
        R = self.rep
        need = {}                   # (ino, blk) -> [sha256 or None, epoch]
        for o, miss, d in cands:
            hashes = d.get("orphan_blocks")
            for a, b in miss:
                for blk in range(a // BS, (b - 1) // BS + 1):
                    h = hashes.get(str(blk)) if hashes is not None else None
                    need.setdefault((o["ino"], blk), [h, o["epoch"]])
        first = min(ep for _, ep in need.values())
        un = [e for e in self.evs if e.get("event") == "unattributed" and
              e.get("reason") in ("journal-clean", "shutdown") and
              e["_epoch"] >= first and
              isinstance(e.get("device_offset"), int) and
              isinstance(e.get("length"), int) and e["length"] > 0]
        aligned = [e for e in un if e["device_offset"] % BS == 0 and
                   e["length"] % BS == 0]
        where = {}                  # (ino, blk) -> device block
        how = "content"
        img = getattr(self.a, "image", None)
        if all(h is not None for h, _ in need.values()) and img and \
           os.path.exists(img):
            dev = {}                # device block -> (event, sha256)
            with open(img, "rb") as f:
                for e in aligned:
                    for db in range(e["device_offset"] // BS,
                                    (e["device_offset"] + e["length"]) // BS):
                        f.seek(db * BS)
                        dev[db] = (e, hashlib.sha256(
                            f.read(BS).ljust(BS, b"\0")).hexdigest())
            taken = set()
            for key, (h, ep) in sorted(need.items()):
                db = next((db for db, (e, sh) in sorted(dev.items())
                           if db not in taken and sh == h and
                           e["_epoch"] >= ep), None)
                if db is not None:
                    taken.add(db)
                    where[key] = db
            for e in aligned:
                dbs = range(e["device_offset"] // BS,
                            (e["device_offset"] + e["length"]) // BS)
                if all(db in taken for db in dbs):
                    self.fc_justified.add(id(e))
            # A block found in an event that is not all ours: not found.
            ok_dbs = {db for e in aligned if id(e) in self.fc_justified
                      for db in range(e["device_offset"] // BS,
                                      (e["device_offset"] + e["length"])
                                      // BS)}
            where = {k: db for k, db in where.items() if db in ok_dbs}
        else:
            how = "size"
            if un and len(aligned) == len(un) and \
               sum(e["length"] for e in un) == len(need) * BS:
                for e in un:
                    self.fc_justified.add(id(e))
                where = {k: None for k in need}
        for o, miss, d in cands:
            blks = sorted({blk for a, b in miss
                           for blk in range(a // BS, (b - 1) // BS + 1)})
            lost = [blk for blk in blks if (o["ino"], blk) not in where]
            what = "%s (ino %d), %s: %s" % (
                o["path"] or "(unlinked)", o["ino"], self.where(o),
                fmt_ivs(miss))
            if lost:
                R.fail(1, "missing: new", "%s not covered by any write "
                       "event, nor (ext4-fast_commit, unlinked open file "
                       "freed before a full commit) by unattributed "
                       "events: block(s) %s of the file not found" % (
                           what, ", ".join(map(str, lost))))
            elif how == "content":
                R.note(1, "ext4-fast_commit: %s: no write event (written "
                       "to a file unlinked while open, fsync'd: a fast "
                       "commit only, and freed before the next full "
                       "commit); reported as unattributed: file block(s) "
                       "%s = device block(s) %s (content matched)" % (
                           what, ", ".join(map(str, blks)),
                           ", ".join(str(where[(o["ino"], blk)])
                                     for blk in blks)))
            else:
                R.note(1, "ext4-fast_commit: %s: no write event (written "
                       "to a file unlinked while open, fsync'd: a fast "
                       "commit only, and freed before the next full "
                       "commit); unattributed bytes equal to its %d "
                       "block(s) (their place not verified)" % (
                           what, len(blks)))

    # --- check 2 ------------------------------------------------------
    def check_namespace(self):
        R = self.rep
        nep = len(self.epochs)
        by_epoch = {}
        for e in self.ok:
            if e.get("event") in NS + ("set_size", "set_attributes"):
                by_epoch.setdefault(e["_epoch"], []).append(e)
        ops_by_epoch = {}
        for o in self.t["ops"]:
            ops_by_epoch.setdefault(o["epoch"], []).append(o)
        totals = {}
        for k in range(nep + 1):
            evs = by_epoch.get(k, [])
            ops = ops_by_epoch.get(k, [])
            self.match_epoch(k, ops, evs, totals)
        R.info(2, "reported/expected: " + ", ".join(
            "%s %d/%d" % (op, v[1], v[0]) for op, v in sorted(totals.items())))
        self.replay()

    def pattern(self, o):
        """The event an op must give: (event, ino, fields that must be
        equal)."""
        op = o["op"]
        if op == "create":
            return ("create", o["ino"], {"file": o["path"]})
        if op == "rename":
            f = {"file": o["path"], "new_file": o["new_path"]}
            if "replaced_ino" in o:
                f["replaced_ino"] = o["replaced_ino"]
            return ("rename", o["ino"], f)
        if op == "link":
            return ("link", o["ino"], {"new_file": o["new_path"]})
        if op in ("unlink", "delete"):
            return (op, o["ino"], {"file": o["path"]})
        if op == "set_size":
            return ("set_size", o["ino"], {"size": o["size"],
                                           "old_size": o["old_size"]})
        raise ValueError(op)

    def describe(self, o):
        op = o["op"]
        if op in ("rename", "link"):
            return "%s %s -> %s (ino %d)" % (op, o["path"], o["new_path"],
                                             o["ino"])
        if op == "set_size":
            return "set_size %s (ino %d) %d -> %d" % (
                o["path"], o["ino"], o["old_size"], o["size"])
        return "%s %s (ino %d)" % (op, json.dumps(o["path"]), o["ino"])

    # --- ext2 -----------------------------------------------------------
    @staticmethod
    def unlinks_of(evs):
        """ino -> [(seq, file)] of the unlink events in EVS."""
        unl = {}
        for e in evs:
            if e.get("event") == "unlink":
                unl.setdefault(e.get("ino"), []).append((e["seq"],
                                                         e.get("file")))
        return unl

    @staticmethod
    def resolve(name, seq, unl):
        """NAME with each leading "<ino P>" (a directory nobody names:
        on ext2 its entry was removed first) replaced by the name of P
        in its unlink event before SEQ (UNL: see unlinks_of); None if
        there is none."""
        for _ in range(16):
            m = re.match(r"<ino (\d+)>(/.*)\Z", name or "")
            if not m:
                return name
            prev = [f for s, f in unl.get(int(m.group(1)), []) if s < seq]
            if not prev:
                return None
            name = prev[-1] + m.group(2)
        return None

    def pair_renames(self, k, ns_ops, result, paired, idx, used):
        """ext2: a rename old -> new of I not reported as a rename may be
        a link (file: a name of I, or "", or new; new_file: new;
        replaced_ino: the rename's, or none when the replaced inode went
        first) and an unlink (file: old) of I, in either order, in the
        same epoch."""
        for i, o in enumerate(ns_ops):
            if i in result or i in paired or o["op"] != "rename":
                continue
            ino = o["ino"]
            names = {"", o["path"], o["new_path"]} | \
                self.names_at(k).get(ino, set())
            if k > 0:
                names |= self.names_at(k - 1).get(ino, set())
            links = [e for e in idx.get(("link", ino), [])
                     if id(e) not in used and
                     e.get("new_file") == o["new_path"] and
                     e.get("file") in names and
                     e.get("replaced_ino") in (None, o.get("replaced_ino"))]
            unls = [e for e in idx.get(("unlink", ino), [])
                    if id(e) not in used and e.get("file") == o["path"]]
            if links and unls:
                ln, un = links[0], unls[0]
                used.add(id(ln))
                used.add(id(un))
                paired[i] = (ln, un)
                self.pair_of[id(ln)] = self.pair_of[id(un)] = (ln, un, o)

    def truth_names(self):
        """Every name the workload had at any time."""
        if self._truth_names is None:
            names = set()
            for ep in self.epochs:
                names |= set(ep["snapshot"])
            for o in self.t["ops"]:
                for f in ("path", "new_path"):
                    if o.get(f):
                        names.add(o[f])
                names |= set(o.get("names", []))
            self._truth_names = names
        return self._truth_names

    def stale_name(self, name):
        """A directory entry that is no name of the workload: "." or
        ".." (a block of a deleted directory, reused), or a name the
        workload never had."""
        return isinstance(name, str) and name.startswith("/") and (
            name.endswith("/.") or name.endswith("/..") or
            name not in self.truth_names())

    def pair_transients(self, k, evs, result, used):
        """ext2: namespace events that cancel out within epoch K (the
        state committed between two metadata writes was transient): a
        link and an unlink of the same inode and name (link: new_file,
        unlink: file), in either order; a create of an inode under a
        stale name (see stale_name) and a later delete of it (file: the
        same name, or ""), both in epoch K.  Only events that no
        operation of the workload claims (RESULT, USED) are paired, and
        the copies of a link or unlink an operation matched more than
        once (each with an opposite event of its own).  Each pair is
        recorded in self.transient (the replay skips it) and noted."""
        R = self.rep
        free = {}

        def key(e):
            return (e.get("ino"), e.get("new_file") if e["event"] == "link"
                    else e.get("file"))
        for e in evs:
            if id(e) not in used and e["event"] in ("link", "unlink"):
                free.setdefault((e["event"],) + key(e), []).append(e)
        pairs = []

        def opposite(e):
            other = "unlink" if e["event"] == "link" else "link"
            lst = free.get((other,) + key(e))
            if not lst:
                return None
            o = lst.pop(0)
            used.add(id(o))
            return o
        for alt, found, exact in result.values():
            if not exact:
                continue
            for x, c in zip(alt, found):
                if x["op"] not in ("link", "unlink") or len(c) < 2:
                    continue
                keep = c[:1]
                for e in c[1:]:
                    o = opposite(e)
                    if o is None:
                        keep.append(e)
                    else:
                        pairs.append((e, o))
                c[:] = keep
        for (kind, ino, name), lst in list(free.items()):
            while kind == "link" and lst:
                o = opposite(lst[0])
                if o is None:
                    break
                e = lst.pop(0)
                used.add(id(e))
                pairs.append((e, o))
        for c in evs:
            if id(c) in used or c["event"] != "create" or \
               not self.stale_name(c.get("file")):
                continue
            d = next((e for e in evs if id(e) not in used and
                      e["event"] == "delete" and
                      e.get("ino") == c.get("ino") and
                      e.get("file") in (c.get("file"), "") and
                      e["seq"] > c["seq"]), None)
            if d is not None:
                used.add(id(c))
                used.add(id(d))
                pairs.append((c, d))
        for a, b in sorted(pairs, key=lambda p: min(p[0]["seq"],
                                                    p[1]["seq"])):
            a, b = sorted((a, b), key=lambda e: e["seq"])
            self.transient[id(a)] = self.transient[id(b)] = (a, b)
            R.note(2, "ext2: %s: transient %s and %s of %s (ino %s), "
                   "cancelled within the epoch (metadata blocks written "
                   "between two states): %s; %s" % (
                       self.ename(k), a["event"], b["event"],
                       json.dumps(key(a)[1]),
                       a.get("ino"), show(a), show(b)))

    def match_epoch(self, k, ops, evs, totals):
        R = self.rep
        where = self.ename(k)
        idx = {}
        for e in evs:
            idx.setdefault((e["event"], e.get("ino")), []).append(e)
        used = set()
        unl = self.unlinks_of(evs)

        def same(e, f, v):
            if e.get(f) == v:
                return True
            # ext2: a name through a directory whose entry went first.
            return self.ext2 and f == "file" and \
                e["event"] in ("unlink", "delete") and \
                self.resolve(e.get(f), e["seq"], unl) == v

        def find(pat, exact):
            ev, ino, fields = pat
            cands = [e for e in idx.get((ev, ino), [])
                     if id(e) not in used]
            if exact:
                cands = [e for e in cands
                         if all(same(e, f, v) for f, v in fields.items())]
            return cands

        ns_ops = [o for o in ops if o["op"] in NS + ("set_size",)]
        result = {}
        paired = {}
        for exact in (True, None, False):
            if exact is None:
                if self.split_renames:
                    self.pair_renames(k, ns_ops, result, paired, idx, used)
                if self.ext2:
                    self.pair_transients(k, evs, result, used)
                continue
            for i, o in enumerate(ns_ops):
                if i in result or i in paired:
                    continue
                alts = [[o]] + o.get("alt", [])
                for alt in alts:
                    found = [find(self.pattern(x), exact) for x in alt]
                    if all(found):
                        for x, c in zip(alt, found):
                            for e in (c if exact else c[:1]):
                                used.add(id(e))
                        result[i] = (alt, found, exact)
                        break
        for i, o in enumerate(ns_ops):
            t = totals.setdefault(o["op"], [0, 0])
            t[0] += 1
            if i in paired:
                t[1] += 1
                ln, un = paired[i]
                R.note(2, "ext2: %s: %s reported as a link and an unlink "
                       "(the new and the old directory entry written "
                       "apart): %s; %s" % (
                           where, self.describe(o), show(ln), show(un)))
                continue
            if i not in result:
                alt = " (or %s)" % " + ".join(self.describe(x) for x in
                                              o["alt"][0]) \
                    if o.get("alt") else ""
                R.fail(2, "missing " + o["op"], "%s: no %s event%s" % (
                    self.where(o), self.describe(o), alt))
                continue
            alt, found, exact = result[i]
            t[1] += 1
            if len(alt) > 1 or alt[0] is not o:
                R.note(2, "%s: %s reported as %s: %s" % (
                    where, self.describe(o), " + ".join(
                        self.describe(x) for x in alt), "; ".join(
                            show(c[0]) for c in found)))
            for x, c in zip(alt, found):
                if exact and self.ext2:
                    for e in c:
                        if "file" in self.pattern(x)[2] and \
                           e.get("file") != x["path"]:
                            R.note(2, "ext2: %s: %s named through the "
                                   "unlinked directory that held it: %s"
                                   % (where, self.describe(x), show(e)))
                if exact and len(c) > 1:
                    R.fail(2, "duplicated", "%s: %s reported %d times: %s"
                           % (where, self.describe(x), len(c),
                              "; ".join(show(e) for e in c[:3])))
                if not exact:
                    R.fail(2, "wrong fields", "%s: %s reported as %s" % (
                        where, self.describe(x), show(c[0])))
                e = c[0]
                if x["op"] == "create":
                    for f in ("type", "mode", "uid", "gid", "size"):
                        if f in x and e.get(f) != x[f]:
                            R.fail(2, "wrong fields", "%s: %s has %s %s, "
                                   "expected %s" % (where, self.describe(x),
                                                    f, json.dumps(e.get(f)),
                                                    json.dumps(x[f])))
                if x["op"] == "link" and e.get("file") not in x["names"]:
                    R.fail(2, "wrong fields", "%s: %s: file %s is not an "
                           "existing name (%s)" % (
                               where, self.describe(x),
                               json.dumps(e.get("file")),
                               ", ".join(x["names"])))
        # set_attributes
        want = {}
        for o in ops:
            if o["op"] == "set_attributes":
                want.setdefault(o["ino"], {})[o["attr"]] = o
        sa = [e for e in evs if e["event"] == "set_attributes"]
        for ino, attrs in want.items():
            mine = [e for e in sa if e.get("ino") == ino]
            for attr, o in attrs.items():
                t = totals.setdefault("set_attributes " + attr, [0, 0])
                t[0] += 1
                got = [e for e in mine if attr in (e.get("changed") or [])]
                what = "set_attributes %s of %s (ino %d)" % (attr, o["path"],
                                                             ino)
                if not got:
                    R.fail(2, "missing set_attributes", "%s: no %s" % (
                        self.where(o), what))
                    continue
                t[1] += 1
                for e in got:
                    used.add(id(e))
                if attr in ("mode", "uid", "gid", "flags") and len(got) > 1:
                    R.fail(2, "duplicated", "%s: %s reported %d times" % (
                        where, what, len(got)))
                e = got[-1]
                if attr in ("mode", "uid", "gid") and e.get(attr) != o["value"]:
                    R.fail(2, "wrong fields", "%s: %s: value %s, expected %s"
                           % (where, what, json.dumps(e.get(attr)),
                              json.dumps(o["value"])))
                if attr in ("mtime", "atime") and \
                   not any(x.get("timestamps_only") for x in got):
                    R.fail(2, "wrong fields", "%s: %s: not timestamps_only"
                           % (where, what))
        # What nobody asked for.
        written = {o["ino"] for o in ops
                   if o["op"] in ("write", "create", "delete")}
        for e in evs:
            if id(e) in used:
                continue
            ev = e["event"]
            if ev in NS:
                R.fail(2, "unexpected " + ev, "%s: %s" % (where, show(e)))
            elif ev == "set_size":
                if e.get("ino") not in written:
                    R.fail(2, "unexpected set_size", "%s: %s (no write, "
                           "create or truncate of this inode)" % (
                               where, show(e)))
            elif ev == "set_attributes":
                ch = set(e.get("changed") or [])
                exp = set(want.get(e.get("ino"), {}))
                bad = (ch & {"mode", "uid", "gid"}) - exp
                if bad:
                    R.fail(2, "unexpected set_attributes", "%s: %s changes "
                           "%s" % (where, show(e), ",".join(sorted(bad))))
                elif "flags" in ch and "flags" not in exp:
                    R.note(2, "%s: flags changed without chattr: %s" % (
                        where, show(e)))

    def replay(self):
        """Apply the events of each epoch to the namespace at its start;
        the result must be the namespace at its end."""
        R = self.rep
        nep = len(self.epochs)
        bad_epochs = []
        for k in range(1, nep + 1):
            start = self.epochs[k - 1]
            end = self.epochs[min(k, nep - 1)]
            st = {}
            for path, v in start["snapshot"].items():
                ino, typ, mode, uid, gid, size, nlink = v
                s = st.setdefault(ino, {"names": set(), "type": typ,
                                        "mode": mode, "uid": uid, "gid": gid,
                                        "size": size})
                s["names"].add(path)
            for ino in start.get("orphans", []):
                st.setdefault(ino, {"names": set(), "type": "file",
                                    "mode": None, "uid": None, "gid": None,
                                    "size": None})
            lo, hi = self.seq_range(k)
            evs = [e for e in self.ok if lo < e["seq"] <= hi and
                   e.get("event") in NS + ("set_size", "set_attributes")]
            problems = []

            def rename_paths(old, new):
                for s in st.values():
                    s["names"] = {new + n[len(old):]
                                  if n.startswith(old + "/") else n
                                  for n in s["names"]}
            owner = lambda path: next((i for i, s in st.items()
                                       if path in s["names"]), None)
            done = set()
            both = []
            unl = {}
            for n, e in enumerate(evs):
                if id(e) in done:
                    continue
                ev, ino = e["event"], e.get("ino")
                f, nf = e.get("file"), e.get("new_file")
                s = st.get(ino)
                if id(e) in self.transient:
                    # ext2: one of a pair that cancels out (check 2's
                    # matching): nothing.
                    if ev == "unlink":
                        unl.setdefault(ino, []).append((e["seq"], f))
                    continue
                if id(e) in self.pair_of:
                    # ext2: a rename as a link and an unlink (check 2's
                    # matching): the rename, where the first of them is.
                    ln, un, _ = self.pair_of[id(e)]
                    done.add(id(ln))
                    done.add(id(un))
                    e = dict(ln, event="rename", file=un.get("file"))
                    ev, f, nf = "rename", e["file"], e.get("new_file")
                if self.ext2 and ev in ("unlink", "delete"):
                    if ev == "unlink":
                        unl.setdefault(ino, []).append((e["seq"], f))
                    f = self.resolve(f, e["seq"], unl)
                if ev == "create" and s is not None:
                    # An inode freed and used again in one transaction:
                    # its delete comes last in the transaction (the
                    # order of the spec), but happened first.
                    d = next((x for x in evs[n + 1:]
                              if x["event"] == "delete" and
                              id(x) not in self.transient and
                              x.get("ino") == ino and
                              x.get("sequence") == e.get("sequence")), None)
                    if d is not None:
                        done.add(id(d))
                        del st[ino]
                        s = None
                if ev == "create":
                    if s is not None:
                        problems.append("create of live ino: " + show(e))
                    if owner(f) is not None:
                        problems.append("create over existing %s (ino %s): "
                                        "%s" % (f, owner(f), show(e)))
                    st[ino] = {"names": {f}, "type": e.get("type"),
                               "mode": e.get("mode"), "uid": e.get("uid"),
                               "gid": e.get("gid"), "size": e.get("size"),
                               "created": e}
                    continue
                if s is None:
                    problems.append("%s of unknown ino: %s" % (ev, show(e)))
                    continue
                if ev == "rename":
                    if f not in s["names"]:
                        problems.append("rename of %s, not a name of ino %d"
                                        ": %s" % (f, ino, show(e)))
                    o = owner(nf)
                    if o is not None and o != e.get("replaced_ino"):
                        problems.append("rename over %s (ino %d) without "
                                        "replaced_ino: %s" % (nf, o, show(e)))
                    if o is not None:
                        st[o]["names"].discard(nf)
                    s["names"].discard(f)
                    s["names"].add(nf)
                    if s["type"] == "directory":
                        rename_paths(f, nf)
                elif ev == "link":
                    if owner(nf) is not None:
                        problems.append("link over existing %s: %s" % (
                            nf, show(e)))
                    s["names"].add(nf)
                elif ev == "unlink":
                    s["names"].discard(f)
                elif ev == "delete":
                    if f and f in s["names"] and len(s["names"]) > 1:
                        problems.append("delete of ino with other names %s: "
                                        "%s" % (sorted(s["names"]), show(e)))
                    del st[ino]
                elif ev == "set_size":
                    if s["type"] == "directory":
                        problems.append("set_size of a directory: " + show(e))
                    c = s.get("created")
                    if c is not None and c.get("sequence") == \
                       e.get("sequence") and c.get("size") == e.get("size") \
                       and e.get("old_size") != s["size"]:
                        # The create has the size at the commit, and a
                        # set_size from the size before it: one or the
                        # other, not both.
                        both.append((c, e))
                    elif s["size"] is not None and \
                            e.get("old_size") != s["size"]:
                        problems.append("set_size old_size %s, but the size "
                                        "was %s: %s" % (e.get("old_size"),
                                                        s["size"], show(e)))
                    s["size"] = e.get("size")
                elif ev == "set_attributes":
                    for a in ("mode", "uid", "gid"):
                        if a in (e.get("changed") or []):
                            s[a] = e.get(a)
            # Compare with the namespace at the end of the epoch.
            want = {}
            for path, v in end["snapshot"].items():
                want.setdefault(v[0], {"names": set(), "v": v})["names"].add(
                    path)
            got = {i: s for i, s in st.items() if s["names"]}
            for ino in sorted(set(want) | set(got)):
                w, g = want.get(ino), got.get(ino)
                if w is None:
                    problems.append("ino %d: events leave %s, the "
                                    "filesystem has no such file" % (
                                        ino, sorted(g["names"])))
                    continue
                if g is None:
                    problems.append("ino %d: the filesystem has %s, the "
                                    "events have no such file" % (
                                        ino, sorted(w["names"])))
                    continue
                if w["names"] != g["names"]:
                    problems.append("ino %d: names %s after the events, %s "
                                    "on the filesystem" % (
                                        ino, sorted(g["names"]),
                                        sorted(w["names"])))
                _, typ, mode, uid, gid, size, _ = w["v"]
                diffs = []
                for a, val in (("type", typ), ("mode", mode), ("uid", uid),
                               ("gid", gid)):
                    if g[a] != val:
                        diffs.append("%s %s (filesystem %s)" % (
                            a, json.dumps(g[a]), json.dumps(val)))
                if typ in ("file", "symlink") and g["size"] != size:
                    diffs.append("size %s (filesystem %s)" % (g["size"],
                                                              size))
                if diffs:
                    problems.append("ino %d %s: after the events %s" % (
                        ino, sorted(w["names"])[0], ", ".join(diffs)))
            if both:
                c, e = both[0]
                R.fail(2, "create and set_size disagree", "%s: %d inodes are "
                       "created with size S and given a set_size %s -> S in "
                       "the same transaction (one of the two is wrong), e.g. "
                       "%s (ino %d): create seq %d size %s, set_size seq %d "
                       "%s -> %s" % (self.ename(k), len(both),
                                     e.get("old_size"), e.get("file"),
                                     e["ino"], c["seq"], c.get("size"),
                                     e["seq"], e.get("old_size"),
                                     e.get("size")))
            if problems:
                bad_epochs.append(k)
                R.fail(2, "replay", "%s: %d differences; first: %s" % (
                    self.ename(k), len(problems), problems[0]))
                for p in problems[1:3]:
                    R.fail(2, "replay", "%s: ... %s" % (self.ename(k), p))
        bad_epochs = sorted(set(bad_epochs) | {
            int(m.split()[0][1:]) for c, cat, m in R.failed(2)
            if cat == "create and set_size disagree"})
        R.info(2, "replay of the events reproduces the namespace after "
               "%d of %d epochs" % (nep - len(bad_epochs), nep))

    # --- check 3 ------------------------------------------------------
    def check_unattributed(self):
        R = self.rep
        un = [e for e in self.evs if e.get("event") == "unattributed"]
        vol = set(self.t.get("volatile_epochs", []))
        just = unjust = 0
        for e in un:
            k = e["_epoch"]
            if e.get("reason") == "freed" and k in vol:
                just += e.get("length", 0)
                R.note(3, "justified (%s wrote to a file freed before its "
                       "data was committed): %s" % (self.ename(k), show(e)))
            elif id(e) in self.fc_justified:
                just += e.get("length", 0)
                R.note(3, "justified (ext4-fast_commit: data fsync'd to a "
                       "file unlinked while open and freed before a full "
                       "commit, see check 1): %s: %s" % (self.ename(k),
                                                         show(e)))
            else:
                unjust += e.get("length", 0)
                R.fail(3, "unjustified", "%s: %s" % (self.ename(k), show(e)))
        R.info(3, "%d unattributed events: %d bytes justified, %d bytes "
               "not (must be 0)" % (len(un), just, unjust))
        # Where the unjustified bytes are in the image now.
        bad = [e for e in un if not (e.get("reason") == "freed" and
                                     e["_epoch"] in vol) and
               id(e) not in self.fc_justified]
        if bad and os.path.exists(self.a.image):
            blocks = sorted({e["device_offset"] // BS for e in bad
                             if isinstance(e.get("device_offset"), int)})[:50]
            own = {}
            if blocks:
                out = debugfs_batch(self.a.image, ["icheck " + " ".join(
                    str(b) for b in blocks)])[0]
                for line in out.splitlines()[1:]:
                    p = line.split("\t")
                    if len(p) == 2 and p[0].strip().isdigit():
                        own[int(p[0])] = p[1].strip()
            for b in blocks:
                R.note(3, "block %d (device offset %d) is now: %s" % (
                    b, b * BS, own.get(b, "?")))

    # --- check 4 ------------------------------------------------------
    def check_image(self):
        R = self.rep
        img = self.a.image
        r = subprocess.run(["e2fsck", "-fn", img], stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True)
        if r.returncode != 0:
            R.fail(4, "e2fsck", "e2fsck -fn exit %d: %s" % (
                r.returncode, " | ".join(r.stdout.strip().splitlines()[-8:])))
        else:
            R.info(4, "e2fsck -fn: clean")
        if self.a.nbdkit_stderr:
            try:
                text = open(self.a.nbdkit_stderr, errors="replace").read()
            except OSError as ex:
                text = ""
                R.fail(4, "nbdkit", "cannot read %s: %s" % (
                    self.a.nbdkit_stderr, ex))
            for line in text.splitlines():
                low = line.lower()
                if "model check failed" in low:
                    R.fail(4, "model check failed", line.strip())
                elif "fsevent_debug_check" in line:
                    R.fail(4, "model check not run", "the plugin has no "
                           "-D fsevent.check: %s" % line.strip())
                elif "error" in low:
                    R.fail(4, "nbdkit error", line.strip())
        self.check_debugfs()

    def check_debugfs(self):
        """The image after umount (debugfs) must hold what the workload
        made: every name with its inode, type, mode, owner and size, and
        every regular file's content."""
        R = self.rep
        img = self.a.image
        want = self.epochs[-1]["snapshot"]
        got = {"/": None}
        todo = ["/"]
        types = {0o100000: "file", 0o040000: "directory",
                 0o120000: "symlink", 0o020000: "chardev",
                 0o060000: "blockdev", 0o010000: "fifo",
                 0o140000: "socket"}
        while todo:
            out = debugfs_batch(img, ['ls -p "%s"' % d for d in todo])
            nxt = []
            for d, text in zip(todo, out):
                for line in text.splitlines():
                    parts = line.split("/")
                    if len(parts) < 8:
                        continue
                    ino, mode = int(parts[1]), int(parts[2], 8)
                    name = "/".join(parts[5:-2])
                    if ino == 0 or name in ("", ".", ".."):
                        continue        # unused entries (lost+found)
                    path = (d.rstrip("/") + "/" + name)
                    typ = types.get(mode & 0o170000, "?")
                    size = int(parts[-2]) if parts[-2] else None
                    got[path] = [ino, typ, "%04o" % (mode & 0o7777),
                                 int(parts[3]), int(parts[4]), size]
                    if typ == "directory":
                        nxt.append(path)
            todo = nxt
        got.pop("/")
        diffs = []
        for path in sorted(set(want) | set(got)):
            if path == "/":
                continue
            w, g = want.get(path), got.get(path)
            if w is None or g is None:
                diffs.append("%s: %s in the image, %s for the workload" % (
                    path, "present" if g else "absent",
                    "present" if w else "absent"))
                continue
            cmp = w[:5] + ([w[5]] if w[1] in ("file", "symlink") else [])
            if g[:len(cmp)] != cmp:
                diffs.append("%s: image %s, workload %s" % (path, g[:len(cmp)],
                                                          cmp))
        for d in diffs[:20]:
            R.fail(4, "image differs from the workload's view", d)
        # Content.
        files = self.t["files"]
        paths = {}
        for path, v in want.items():
            if v[1] == "file" and str(v[0]) in files:
                paths.setdefault(v[0], path)
        bad = 0
        with tempfile.TemporaryDirectory() as tmp:
            items = sorted(paths.items())
            debugfs_batch(img, ['dump "%s" "%s/%d"' % (p, tmp, ino)
                                for ino, p in items])
            for ino, p in items:
                f = files[str(ino)]
                try:
                    with open("%s/%d" % (tmp, ino), "rb") as fh:
                        h = hashlib.sha256(fh.read()).hexdigest()
                except OSError:
                    h = None
                if h != f["sha256"]:
                    bad += 1
                    R.fail(4, "content differs", "%s (ino %d): the image's "
                           "content is not what the workload wrote" % (p, ino))
        R.info(4, "debugfs: %d names, %d files' content compared, %d "
               "differ" % (len(got), len(paths), bad))

    def run(self, image=True):
        self.check_format()
        self.check_data()
        self.check_namespace()
        self.check_unattributed()
        if image:
            self.check_image()
        return self.rep


def debugfs_batch(img, cmds):
    """Run debugfs once with CMDS; return each command's output."""
    with tempfile.NamedTemporaryFile("w", suffix=".cmds") as f:
        f.write("\n".join(cmds) + "\n")
        f.flush()
        r = subprocess.run(["debugfs", "-f", f.name, img],
                           stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                           text=True, errors="replace")
    outs, cur = [], None
    for line in r.stdout.splitlines():
        if line.startswith("debugfs: "):
            if cur is not None:
                outs.append("\n".join(cur))
            cur = []
        elif cur is not None:
            cur.append(line)
    if cur is not None:
        outs.append("\n".join(cur))
    assert len(outs) == len(cmds), ("debugfs", len(outs), len(cmds))
    return outs


def check_main(argv):
    ap = argparse.ArgumentParser(
        prog="follow_oracle.py",
        description="Check a finished run of test-follow-kernel.sh.")
    ap.add_argument("--log", required=True, help="the plugin's log=FILE")
    ap.add_argument("--image", required=True, help="the image, after umount")
    ap.add_argument("--truth", required=True, help="the workload's truth")
    ap.add_argument("--nbdkit-stderr", help="nbdkit's stderr (--log=stderr)")
    ap.add_argument("--report", help="write the full report here too")
    ap.add_argument("--max", type=int, default=12,
                    help="lines shown per category (default 12)")
    ap.add_argument("--phases", choices=("after", "both"), default="after",
                    help="the plugin's log-phases= (default after)")
    ap.add_argument("--ext2-split-renames", action="store_true",
                    help="ext2: accept a rename reported as a link and an "
                    "unlink in one epoch (a note, not a failure)")
    a = ap.parse_args(argv)
    o = Oracle(a)
    rep = o.run()
    t = o.t
    head = "variant %s (kernel %s): %d operations, %d epochs, %d log lines" % (
        t["variant"], t["kernel"], len(t["ops"]), len(t["epochs"]),
        len(o.evs))
    print(head)
    print(rep.render())
    names = ("format", "data", "namespace", "unattributed", "image")
    print("summary: " + ", ".join(
        "%s %s" % (n, "FAIL" if rep.failed(c) else "PASS")
        for c, n in enumerate(names)))
    if a.report:
        with open(a.report, "w") as f:
            f.write(head + "\n" + rep.render(full=True) + "\n")
    return 1 if rep.failed() else 0


# ---------------------------------------------------------------------
# selftest: the oracle on a log made up from the truth, as a correct
# engine would write it, and on broken copies of that log.

def synth(t, both):
    """The events a correct engine gives for the truth T: one
    transaction per epoch, with before lines if BOTH (log-phases=both).
    Returns a list of (epoch, [events])."""
    journal = t["journal"]
    epochs = t["epochs"]
    out = []
    for k in range(1, len(epochs)):
        before, after = epochs[k - 1]["snapshot"], epochs[k]["snapshot"]
        names0, names1 = {}, {}
        for p, v in before.items():
            names0.setdefault(v[0], set()).add(p)
        for p, v in after.items():
            names1.setdefault(v[0], set()).add(p)
        size1 = {v[0]: v[5] for v in after.values()}
        size0 = {v[0]: v[5] for v in before.values()}
        typ = {v[0]: v[1] for v in list(before.values()) +
               list(after.values())}
        evs, attrs, created, truncated = [], {}, set(), set()
        ops = [o for o in t["ops"] if o["epoch"] == k]
        for o in ops:
            op, ino = o["op"], o["ino"]
            if op == "create":
                created.add(ino)
                size = o.get("size", size1.get(ino, 0))
                if o["type"] == "directory":
                    size = BS
                evs.append({"event": "create", "file": o["path"], "ino": ino,
                            "type": o["type"], "mode": o["mode"],
                            "uid": o["uid"], "gid": o["gid"], "size": size})
            elif op == "rename":
                e = {"event": "rename", "file": o["path"],
                     "new_file": o["new_path"], "ino": ino}
                if "replaced_ino" in o:
                    e["replaced_ino"] = o["replaced_ino"]
                evs.append(e)
            elif op == "link":
                evs.append({"event": "link", "file": o["names"][0],
                            "new_file": o["new_path"], "ino": ino})
            elif op in ("unlink", "delete"):
                evs.append({"event": op, "file": o["path"], "ino": ino})
            elif op == "set_size":
                truncated.add(ino)
                evs.append({"event": "set_size", "file": o["path"],
                            "ino": ino, "old_size": o["old_size"],
                            "size": o["size"]})
            elif op == "set_attributes":
                a = attrs.setdefault(ino, {"event": "set_attributes",
                                           "file": o["path"], "ino": ino,
                                           "changed": ["ctime"],
                                           "ctime": 1})
                a["changed"].append(o["attr"])
                a[o["attr"]] = 64 if o["attr"] == "flags" else o["value"]
            elif op == "write" and not o["may_vanish"]:
                ok = names0.get(ino, set()) | names1.get(ino, set())
                name = o["path"] if o["path"] in ok else \
                    (sorted(ok)[0] if ok else "")
                for kind, a, n in o["parts"]:
                    if n > 0:
                        evs.append({"event": "write", "file": name,
                                    "ino": ino, "position": a, "length": n,
                                    "direction": "inplace"
                                    if kind.startswith("overwrite")
                                    else "commit"})
        for a in attrs.values():
            a["timestamps_only"] = set(a["changed"]) <= TIMESTAMPS
            evs.append(a)
        for ino in sorted(size1):
            if typ.get(ino) in ("file", "symlink") and ino in size0 and \
               ino not in truncated and ino not in created and \
               size0[ino] != size1[ino]:
                evs.append({"event": "set_size", "file": sorted(
                    names1[ino])[0], "ino": ino, "old_size": size0[ino],
                    "size": size1[ino]})
        # An inode number freed and used again in the transaction: its
        # delete first of all (the spec).
        reborn = {e["ino"] for e in evs if e["event"] == "create"}
        evs.sort(key=lambda e: -1 if e["event"] == "delete" and
                 e["ino"] in reborn else RANK[e["event"]])
        lines = []
        for ph in ("before", "after") if both else ("after",):
            for e in evs:
                x = dict(e, phase=ph, result=0)
                if journal and (e["event"] != "write" or
                                e["direction"] != "inplace"):
                    x["sequence"] = 1000 + k
                lines.append(x)
        out.append((k, lines))
    return out


def write_synth(t, epochs_lines, path):
    """Write the lines, give them seq and time; return a copy of T
    whose epochs end where they end in this log."""
    t = json.loads(json.dumps(t))
    seq = 0
    ends = {}
    with open(path, "w") as f:
        for k, lines in epochs_lines:
            for x in lines:
                seq += 1
                y = {"seq": seq, "time": "2026-01-01T00:00:00.000000Z"}
                y.update(x)
                f.write(json.dumps(y) + "\n")
            ends[k] = seq
    last = 0
    for k, ep in enumerate(t["epochs"]):
        last = ends.get(k, last)
        ep["seq"] = last
    return t


def selftest_main(argv):
    ap = argparse.ArgumentParser(prog="follow_oracle.py selftest")
    ap.add_argument("--image", required=True)
    ap.add_argument("--truth", required=True)
    ap.add_argument("--phases", choices=("after", "both"), default="after")
    a = ap.parse_args(argv)
    both = a.phases == "both"
    with open(a.truth) as f:
        t0 = json.load(f)
    base = synth(t0, both)
    failures = 0

    def run(name, lines, want):
        nonlocal failures
        with tempfile.TemporaryDirectory() as tmp:
            t = write_synth(t0, lines, tmp + "/log")
            with open(tmp + "/truth", "w") as f:
                json.dump(t, f)
            args = argparse.Namespace(log=tmp + "/log", image=a.image,
                                      truth=tmp + "/truth",
                                      nbdkit_stderr=None, report=None,
                                      max=5, phases=a.phases)
            rep = Oracle(args).run(image=lines is base)
        got = {(c, cat) for c, cat, _ in rep.failed()}
        ok = got == want
        failures += not ok
        print("selftest %-32s %s" % (name, "ok" if ok else "WRONG"))
        if not ok:
            print("  expected failures %s, got %s" % (sorted(want),
                                                      sorted(got)))
            if not want:
                print(rep.render())

    def mutate(fn):
        m = json.loads(json.dumps(base))
        fn(m)
        return m

    def find(m, pred):
        for k, lines in m:
            for i, x in enumerate(lines):
                if pred(x):
                    return lines, i
        raise LookupError

    run("correct log", base, set())

    def drop_create(m):
        lines, i = find(m, lambda x: x["event"] == "create")
        key = {k: v for k, v in lines[i].items() if k != "phase"}
        lines[:] = [x for x in lines if
                    {k: v for k, v in x.items() if k != "phase"} != key]
    run("a create missing", mutate(drop_create), {(2, "missing create"),
                                                  (2, "replay")})

    def twice(lines, i):
        """Log the event at I (its first line) twice."""
        if not both:
            lines.insert(i + 1, dict(lines[i]))
            return
        key = {k: v for k, v in lines[i].items() if k != "phase"}
        j = next(j for j, x in enumerate(lines) if x["phase"] == "after" and
                 {k: v for k, v in x.items() if k != "phase"} == key)
        lines.insert(j + 1, dict(lines[j]))
        lines.insert(i + 1, dict(lines[i]))

    def dup_rename(m):
        twice(*find(m, lambda x: x["event"] == "rename"))
    run("a rename twice", mutate(dup_rename), {(2, "duplicated"),
                                               (2, "replay")})

    def wrong_name(m):
        lines, i = find(m, lambda x: x["event"] == "rename")
        for x in lines:
            if x.get("ino") == lines[i]["ino"] and x["event"] == "rename":
                x["new_file"] = x["new_file"] + ".wrong"
    run("a rename to the wrong name", mutate(wrong_name),
        {(2, "wrong fields"), (2, "replay")})

    def drop_write(m):
        lines, i = find(m, lambda x: x["event"] == "write" and
                        x["length"] == 1 << 20)
        key = {k: v for k, v in lines[i].items() if k != "phase"}
        lines[:] = [x for x in lines if
                    {k: v for k, v in x.items() if k != "phase"} != key]
    run("1 MiB of new data missing", mutate(drop_write),
        {(1, "missing: new"), (1, "final content not covered")})

    def dup_write(m):
        twice(*find(m, lambda x: x["event"] == "write" and
                    x["length"] == 1 << 20))
    run("1 MiB of new data twice", mutate(dup_write),
        {(1, "written once, reported more than once")})

    def unattributed(m):
        m[-1][1].append({"event": "unattributed", "device_offset": 1 << 20,
                         "length": 4096, "reason": "shutdown"})
    run("unattributed bytes", mutate(unattributed), {(3, "unjustified")})

    def disorder(m):
        k, lines = next((k, l) for k, l in m
                        if any(x["event"] == "delete" for x in l))
        lines.reverse()
    if both:
        run("a transaction out of order", mutate(disorder),
            {(0, "order"), (0, "pairs")} if t0["journal"] else
            {(0, "pairs")})
    elif t0["journal"]:
        run("a transaction out of order", mutate(disorder), {(0, "order")})

    def no_after(m):
        lines, i = find(m, lambda x: x["event"] == "link" and
                        x["phase"] == "after")
        del lines[i]
    run("an after line missing", mutate(no_after),
        ({(0, "pairs")} if both else set()) |
        {(2, "missing link"), (2, "replay")})
    if not both:
        def a_before(m):
            lines, i = find(m, lambda x: x["event"] == "link")
            lines.insert(i, dict(lines[i], phase="before"))
        run("a before line (log-phases=after)", mutate(a_before),
            {(0, "fields")})

    # The documented limitations: accepted in their variant only.
    ext2 = t0.get("variant") == "ext2" and not t0["journal"]
    fc = t0.get("variant") == "ext4-fast_commit"

    def resort(lines):
        """Each phase in the order of the spec (a stable sort)."""
        lines.sort(key=lambda x: (x["phase"] != "before",
                                  RANK.get(x["event"], 99)))

    def replace_ev(m, pred, fn, epoch=None):
        """Replace every line that PRED picks by FN(line) (a list), in
        the first epoch (or in EPOCH) where there are some."""
        for k, lines in m:
            if epoch in (None, k) and any(pred(x) for x in lines):
                lines[:] = [y for x in lines
                            for y in (fn(x) if pred(x) else [x])]
                resort(lines)
                return

    ren = next((o for o in t0["ops"] if o["op"] == "rename" and
                not o["directory"] and "replaced_ino" not in o), None)

    def split_rename(wrong=""):
        def fn(m):
            def halves(x):
                return [dict(x, event="link"),
                        {k: v for k, v in x.items() if k != "new_file"} |
                        {"event": "unlink", "file": x["file"] + wrong}]
            replace_ev(m, lambda x: x["event"] == "rename" and
                       x["ino"] == ren["ino"] and
                       x["file"] == ren["path"], halves)
        return fn
    if ren is not None:
        run("a rename as link + unlink", mutate(split_rename()),
            {(2, "missing rename"),
                                (2, "unexpected link"),
                                (2, "unexpected unlink")})
        run("... with a wrong old name", mutate(split_rename(".wrong")),
            {(2, "missing rename"), (2, "unexpected link"),
             (2, "unexpected unlink"), (2, "replay")})

    def nameless_write(epoch_name):
        def fn(m):
            k = next(i for i, ep in enumerate(t0["epochs"])
                     if ep["name"] == epoch_name)
            w = next(o for o in t0["ops"] if o["op"] == "write" and
                     o["epoch"] == k and o["path"] == "/a/f1")
            replace_ev(m, lambda x: x["event"] == "write" and
                       x["ino"] == w["ino"], lambda x: [dict(x, file="")],
                       epoch=k)
        return fn
    run("a new file's write named \"\"", mutate(nameless_write("create")),
        set() if ext2 else {(1, "wrong file name")})
    run("an old file's write named \"\"", mutate(nameless_write("write")),
        {(1, "wrong file name")})

    rk = next((i for i, ep in enumerate(t0["epochs"])
               if ep["name"] == "rmdir tree"), None)
    top = next((o for o in t0["ops"] if o["op"] == "delete" and
                o["epoch"] == rk and o["path"] == "/m"), None)

    def disconnected(unlink_top):
        def fn(m):
            def sub(x):
                if x["ino"] == top["ino"]:
                    if not unlink_top:
                        return [x]
                    return [dict(x, event="unlink"), dict(x, file="")]
                return [dict(x, file="<ino %d>%s" % (
                    top["ino"], x["file"][len("/m"):]))]
            replace_ev(m, lambda x: x["event"] == "delete" and
                       x["file"].startswith("/m"), sub)
        return fn
    if top is not None:
        run("a tree deleted after its top entry", mutate(disconnected(True)),
            set() if ext2 else {(2, "wrong fields")})
        run("... named through a live directory",
            mutate(disconnected(False)), {(2, "wrong fields")})

    # ext2: transient namespace events that cancel out in one epoch.
    # Two files untouched in epochs k and k + 1, a directory, an inode
    # number nobody has, a name the workload had but not then.
    snaps = [ep["snapshot"] for ep in t0["epochs"]]

    def names(k):
        out = {}
        for path, v in snaps[k].items():
            out.setdefault(v[0], set()).add(path)
        return out
    tr = None
    for k in range(1, len(snaps) - 1):
        busy = {o["ino"] for o in t0["ops"] if o["epoch"] in (k, k + 1)}
        n0, n1, n2 = names(k - 1), names(k), names(k + 1)
        quiet = sorted((sorted(ns)[0], ino) for ino, ns in n0.items()
                       if len(ns) == 1 and ino not in busy and
                       n1.get(ino) == ns == n2.get(ino) and
                       snaps[k][sorted(ns)[0]][1] == "file")
        if len(quiet) >= 2:
            allnames = set().union(*map(set, snaps)) | {
                o.get(f) for o in t0["ops"] for f in ("path", "new_path")}
            had = sorted(n for n in allnames if n and n not in snaps[k - 1]
                         and n not in snaps[k] and "/." not in n)
            tr = {"k": k, "f1": quiet[0], "f2": quiet[-1],
                  "dir": os.path.dirname(quiet[0][0]),
                  "ino": 1000 + max(max(v[0] for v in sn.values())
                                    for sn in snaps),
                  "had": had[0] if had else None}
            break

    def add(m, k, evs):
        """EVS (no "sequence": they are not the engine's order) at the
        end of each phase of epoch K."""
        for kk, lines in m:
            if kk == k:
                n = sum(x["phase"] == "before" for x in lines)
                lines[:] = lines[:n] + [dict(e, phase="before", result=0)
                                        for e in evs if both] + \
                    lines[n:] + [dict(e, phase="after", result=0)
                                 for e in evs]

    def ln(f, ino):
        return {"event": "link", "file": f, "new_file": f, "ino": ino}

    def ul(f, ino):
        return {"event": "unlink", "file": f, "ino": ino}

    def cr(f, ino):
        return {"event": "create", "file": f, "ino": ino,
                "type": "directory", "mode": "0755", "uid": 0, "gid": 0,
                "size": BS}

    def dl(f, ino):
        return {"event": "delete", "file": f, "ino": ino}

    if tr is not None:
        k, (p1, i1), (p2, i2), x = tr["k"], tr["f1"], tr["f2"], tr["ino"]
        nseq = {(0, "sequence")} if t0["journal"] else set()
        strict = {(2, "unexpected link"), (2, "unexpected unlink"),
                  (2, "unexpected create"), (2, "unexpected delete"),
                  (2, "replay")} | nseq
        run("transients that cancel out", mutate(lambda m: add(m, k, [
            ln(p1, i1), ul(p1, i1),             # link over existing, undone
            ul(p2, i2), ln(p2, i2),             # unlink, undone
            cr(tr["dir"] + "/.", x), dl(tr["dir"] + "/.", x),
            cr(tr["dir"] + "/.stale", x + 1), dl("", x + 1)])),
            set() if ext2 else strict)
        run("... a link not undone", mutate(lambda m: add(m, k, [
            ln(p1, i1), ul(p2, i2), ln(p2, i2)])),
            {(2, "unexpected link"), (2, "replay")} | nseq |
            (set() if ext2 else {(2, "unexpected unlink")}))
        run("... undone in the next epoch", mutate(lambda m: (
            add(m, k, [ul(p1, i1)]), add(m, k + 1, [ln(p1, i1)]))),
            {(2, "unexpected link"), (2, "unexpected unlink"),
             (2, "replay")} | nseq)
        run("... a stale create deleted later", mutate(lambda m: (
            add(m, k, [cr(tr["dir"] + "/.", x)]),
            add(m, k + 1, [dl(tr["dir"] + "/.", x)]))),
            {(2, "unexpected create"), (2, "unexpected delete"),
             (2, "replay")} | nseq)
        lk = next((o for o in t0["ops"] if o["op"] == "link"), None)
        if lk is not None:
            run("... a new link undone and redone", mutate(
                lambda m: add(m, lk["epoch"], [
                    ul(lk["new_path"], lk["ino"]),
                    ln(lk["new_path"], lk["ino"])])),
                set() if ext2 else {(2, "duplicated"),
                                    (2, "unexpected unlink")} | nseq)
        if tr["had"] is not None:
            run("... create + delete of a real name", mutate(
                lambda m: add(m, k, [cr(tr["had"], x), dl(tr["had"], x)])),
                {(2, "unexpected create"), (2, "unexpected delete")} | nseq)

    ow = next((o for o in t0["ops"] if o["op"] == "write" and
               o.get("orphan") and o.get("fsynced") and
               any(k == "new" for k, _, n in o["parts"] if n > 0)), None)
    dl = ow and next((o for o in t0["ops"] if o["op"] == "delete" and
                      o["ino"] == ow["ino"] and o["epoch"] == ow["epoch"] and
                      "orphan_blocks" in o), None)
    if dl is not None:
        parts = [(a, n) for k, a, n in ow["parts"] if k == "new" and n > 0]
        blks = sorted({b for a, n in parts
                       for b in range(a // BS, (a + n - 1) // BS + 1)})
        want = {dl["orphan_blocks"][str(b)] for b in blks}
        found = {}
        zero = bytes(BS)
        with open(a.image, "rb") as f:
            db = 0
            while len(found) < len(want):
                buf = f.read(BS)
                if not buf:
                    break
                if buf != zero:
                    h = hashlib.sha256(buf.ljust(BS, b"\0")).hexdigest()
                    if h in want:
                        found.setdefault(h, db)
                db += 1

        def orphan_unattributed(offsets):
            def fn(m):
                for k, lines in m:
                    lines[:] = [x for x in lines if not (
                        x["event"] == "write" and x["ino"] == ow["ino"] and
                        k == ow["epoch"] and
                        (x["position"], x["length"]) in parts)]
                m[-1][1].extend({"event": "unattributed",
                                 "device_offset": off, "length": BS,
                                 "reason": "journal-clean"}
                                for off in offsets)
            return fn
        broken = {(1, "missing: new"), (3, "unjustified")}
        if len(found) == len(want):
            run("fsync'd orphan data unattributed",
                mutate(orphan_unattributed(
                    [found[dl["orphan_blocks"][str(b)]] * BS
                     for b in blks])),
                set() if fc else broken)
        else:
            print("selftest %-32s skipped (its blocks are not in the image)"
                  % "fsync'd orphan data unattributed")
        run("... but elsewhere", mutate(orphan_unattributed(
            [(1 << 20) + i * BS for i in range(len(blks))])), broken)
    print("selftest: %s" % ("PASS" if not failures else
                            "%d WRONG" % failures))
    return 1 if failures else 0


def main():
    if len(sys.argv) > 1 and sys.argv[1] == "selftest":
        return selftest_main(sys.argv[2:])
    if len(sys.argv) > 1 and sys.argv[1] == "populate":
        populate(sys.argv[2])
        return 0
    if len(sys.argv) > 1 and sys.argv[1] == "workload":
        workload_main(sys.argv[2:])
        return 0
    return check_main(sys.argv[1:])


if __name__ == "__main__":
    sys.exit(main())
