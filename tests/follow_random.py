#!/usr/bin/python3
"""tests/follow_random.py: the randomized workload of
tests/test-follow-random.sh, and its checks.

  follow_random.py run --mnt MNT --seed S --ops N --truth TRUTH.json
      On a mounted (empty) filesystem, run N seeded random operations
      (create, append, overwrite, truncate, rename within and across
      directories and over existing files, hard link, unlink (also of
      an open file), mkdir, rmdir, symlink, chmod, chown, setxattr; with
      and without fsync of the file or of its directory, sync, syncfs),
      keeping a model of what the filesystem must hold.  At the end the
      mounted tree is compared with the model (a bug in the model shows
      here, before the image is looked at), and the model is written to
      TRUTH.json.

  follow_random.py check --image IMG --truth TRUTH.json --log LOG
      After umount: every directory of the model listed by debugfs
      ("ls -p": names, inode numbers (so hard links), modes, owners,
      sizes) and the whole tree dumped by debugfs ("rdump": contents,
      symlink targets) must match the model; a few xattrs are read back
      with "ea_get"; and the last create/rename/link events of the log
      must name paths that exist (after the renames, unlinks and deletes
      that the log reports after them).

Exit status 0 when everything matches; otherwise the differences are
printed (at most 30) and the status is 1.
"""
import argparse
import ctypes
import errno
import hashlib
import json
import os
import random
import re
import shutil
import stat
import subprocess
import sys
import tempfile

libc = ctypes.CDLL(None, use_errno=True)


def syncfs(path):
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        if libc.syncfs(fd) != 0:
            e = ctypes.get_errno()
            raise OSError(e, os.strerror(e))
    finally:
        os.close(fd)


class Inode:
    def __init__(self, kind, mode):
        self.kind = kind            # "file", "dir", "symlink"
        self.mode = mode
        self.uid = 0
        self.gid = 0
        self.data = bytearray()     # files
        self.target = ""            # symlinks
        self.xattrs = {}
        self.names = set()


class Workload:
    def __init__(self, mnt, seed, nops):
        self.mnt = mnt
        self.rng = random.Random(seed)
        self.nops = nops
        self.pool = self.rng.randbytes(1 << 18)
        self.paths = {"/": Inode("dir", 0o755)}     # path -> Inode
        self.paths["/"].names.add("/")
        self.counter = 0
        self.counts = {}
        self.syncs = 0
        self.xattr_ok = True

    # --- helpers ---
    def real(self, p):
        return self.mnt + p if p != "/" else self.mnt

    def newname(self, d):
        self.counter += 1
        base = "n%05d" % self.counter
        if self.rng.random() < 0.1:     # a longer name now and then
            base += "_" + "x" * self.rng.randint(10, 120)
        return (d.rstrip("/") + "/" + base) if d != "/" else "/" + base

    def bytes(self, n):
        if n == 0:
            return b""
        off = self.rng.randrange(0, len(self.pool) - n + 1)
        return self.pool[off:off + n]

    def size(self):
        r = self.rng.random()
        if r < 0.15:
            return 0
        if r < 0.75:
            return self.rng.randint(1, 6000)
        if r < 0.97:
            return self.rng.randint(6000, 70000)
        return self.rng.randint(70000, 200000)

    def of(self, kind):
        return sorted(p for p, i in self.paths.items() if i.kind == kind)

    def dirs(self):
        return self.of("dir")

    def children(self, d):
        pre = "/" if d == "/" else d + "/"
        return [p for p in self.paths if p != d and p.startswith(pre)
                and "/" not in p[len(pre):]]

    def pick(self, xs):
        return self.rng.choice(xs) if xs else None

    def maybe_fsync(self, fd=None, path=None):
        r = self.rng.random()
        if r < 0.30 and fd is not None:
            os.fsync(fd)
            self.syncs += 1
        elif r < 0.36 and path is not None:
            dfd = os.open(self.real(os.path.dirname(path)) or self.mnt,
                          os.O_RDONLY | os.O_DIRECTORY)
            os.fsync(dfd)
            os.close(dfd)
            self.syncs += 1
        elif r < 0.37:
            os.sync()
            self.syncs += 1
        elif r < 0.39:
            syncfs(self.mnt)
            self.syncs += 1

    def rename_tree(self, old, new):
        """Move old (and everything under it) to new in the model."""
        moved = {}
        pre = old + "/"
        for p in list(self.paths):
            if p == old or p.startswith(pre):
                moved[new + p[len(old):]] = self.paths.pop(p)
        for p, ino in moved.items():
            old_p = old + p[len(new):]
            ino.names.discard(old_p)
            ino.names.add(p)
            self.paths[p] = ino

    def drop_name(self, p):
        ino = self.paths.pop(p)
        ino.names.discard(p)

    # --- operations: each returns False when it does not apply ---
    def op_create(self):
        d = self.pick(self.dirs())
        p = self.newname(d)
        ino = Inode("file", 0o644)
        data = self.bytes(self.size())
        fd = os.open(self.real(p), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        os.write(fd, data)
        self.maybe_fsync(fd, p)
        os.close(fd)
        ino.data[:] = data
        ino.names.add(p)
        self.paths[p] = ino

    def op_append(self):
        p = self.pick(self.of("file"))
        if p is None:
            return False
        data = self.bytes(self.size())
        fd = os.open(self.real(p), os.O_WRONLY | os.O_APPEND)
        os.write(fd, data)
        self.maybe_fsync(fd, p)
        os.close(fd)
        self.paths[p].data += data

    def op_overwrite(self):
        p = self.pick(self.of("file"))
        if p is None:
            return False
        ino = self.paths[p]
        cur = len(ino.data)
        off = self.rng.randint(0, cur + (4096 if self.rng.random() < 0.2 else 0))
        if self.rng.random() < 0.1:
            off += self.rng.randint(0, 100000)      # a hole before it
        data = self.bytes(self.rng.choice([1, 100, 4096, self.rng.randint(1, 20000)]))
        fd = os.open(self.real(p), os.O_WRONLY)
        os.pwrite(fd, data, off)
        self.maybe_fsync(fd, p)
        os.close(fd)
        if off > len(ino.data):
            ino.data += bytes(off - len(ino.data))
        ino.data[off:off + len(data)] = data

    def op_truncate(self):
        p = self.pick(self.of("file"))
        if p is None:
            return False
        ino = self.paths[p]
        n = self.rng.choice([0, self.rng.randint(0, max(1, len(ino.data))),
                             len(ino.data) + self.rng.randint(1, 50000)])
        os.truncate(self.real(p), n)
        if n < len(ino.data):
            del ino.data[n:]
        else:
            ino.data += bytes(n - len(ino.data))
        if self.rng.random() < 0.2:
            fd = os.open(self.real(p), os.O_RDONLY)
            self.maybe_fsync(fd, p)
            os.close(fd)

    def op_rename(self):
        # A file, symlink or directory to a new name, in its directory or
        # another one (not below itself).
        src = self.pick([p for p in self.paths if p != "/"])
        if src is None:
            return False
        if self.rng.random() < 0.5:
            d = os.path.dirname(src)
        else:
            d = self.pick([x for x in self.dirs()
                           if x != src and not x.startswith(src + "/")])
        dst = self.newname(d)
        os.rename(self.real(src), self.real(dst))
        self.rename_tree(src, dst)
        self.maybe_fsync(None, dst)

    def op_rename_over(self):
        # A file (or symlink) over an existing file (or symlink), or a
        # directory over an existing empty directory.
        if self.rng.random() < 0.85:
            cands = [p for p in self.paths if self.paths[p].kind != "dir"]
            if len(cands) < 2:
                return False
            src, dst = self.rng.sample(sorted(cands), 2)
        else:
            ds = [p for p in self.dirs() if p != "/"]
            empty = [p for p in ds if not self.children(p)]
            src = self.pick(ds)
            if src is None:
                return False
            empty = [p for p in empty if p != src and not p.startswith(src + "/")
                     and not src.startswith(p + "/")]
            dst = self.pick(empty)
            if dst is None:
                return False
        if self.paths[src] is self.paths[dst]:
            return False            # two links of one inode: a no-op
        os.rename(self.real(src), self.real(dst))
        self.drop_name(dst)
        self.rename_tree(src, dst)
        self.maybe_fsync(None, dst)

    def op_link(self):
        src = self.pick(self.of("file"))
        if src is None:
            return False
        d = self.pick(self.dirs())
        dst = self.newname(d)
        os.link(self.real(src), self.real(dst))
        ino = self.paths[src]
        ino.names.add(dst)
        self.paths[dst] = ino
        self.maybe_fsync(None, dst)

    def op_unlink(self):
        p = self.pick([p for p in self.paths if self.paths[p].kind != "dir"])
        if p is None:
            return False
        os.unlink(self.real(p))
        self.drop_name(p)
        self.maybe_fsync(None, p)

    def op_unlink_open(self):
        # Unlink a file while it is open, write to it, close it.
        p = self.pick(self.of("file"))
        if p is None:
            return False
        fd = os.open(self.real(p), os.O_WRONLY | os.O_APPEND)
        os.unlink(self.real(p))
        ino = self.paths[p]
        self.drop_name(p)
        data = self.bytes(self.size())
        os.write(fd, data)
        ino.data += data
        self.maybe_fsync(fd, None)
        os.close(fd)

    def op_mkdir(self):
        d = self.pick(self.dirs())
        p = self.newname(d)
        os.mkdir(self.real(p), 0o755)
        ino = Inode("dir", 0o755)
        ino.names.add(p)
        self.paths[p] = ino
        self.maybe_fsync(None, p)

    def op_rmdir(self):
        p = self.pick([d for d in self.dirs() if d != "/" and not self.children(d)])
        if p is None:
            return False
        os.rmdir(self.real(p))
        self.drop_name(p)
        self.maybe_fsync(None, p)

    def op_symlink(self):
        d = self.pick(self.dirs())
        p = self.newname(d)
        # Short (fast, in the inode) and long (a block) targets.
        t = self.pick(sorted(self.paths)) or "/"
        if self.rng.random() < 0.3:
            t = t + "/" + "l" * self.rng.randint(60, 300)
        os.symlink(t, self.real(p))
        ino = Inode("symlink", 0o777)
        ino.target = t
        ino.names.add(p)
        self.paths[p] = ino
        self.maybe_fsync(None, p)

    def op_chmod(self):
        p = self.pick([p for p in self.paths if self.paths[p].kind != "symlink"])
        mode = self.rng.choice([0o600, 0o644, 0o640, 0o755, 0o700, 0o444, 0o4755])
        if self.paths[p].kind == "dir":
            mode |= 0o700           # keep it usable
        os.chmod(self.real(p), mode)
        self.paths[p].mode = mode

    def op_chown(self):
        p = self.pick(sorted(self.paths))
        uid, gid = self.rng.randint(0, 3000), self.rng.randint(0, 3000)
        os.chown(self.real(p), uid, gid, follow_symlinks=False)
        ino = self.paths[p]
        ino.uid, ino.gid = uid, gid
        if ino.kind == "file":
            ino.mode &= ~0o6000      # chown clears setuid/setgid
        self.maybe_fsync(None, p)

    def op_setxattr(self):
        if not self.xattr_ok:
            return False
        p = self.pick([p for p in self.paths if self.paths[p].kind != "symlink"])
        k = "user.k%d" % self.rng.randint(0, 5)
        v = self.bytes(self.rng.choice([1, 20, 200, 1500]))
        try:
            os.setxattr(self.real(p), k, v)
        except OSError as e:
            if e.errno in (errno.ENOTSUP, errno.EOPNOTSUPP):
                self.xattr_ok = False
                return False
            if e.errno in (errno.ENOSPC, errno.E2BIG):
                return False        # the inode and its xattr block are full
            raise
        self.paths[p].xattrs[k] = v

    def op_sync(self):
        if self.rng.random() < 0.5:
            os.sync()
        else:
            syncfs(self.mnt)
        self.syncs += 1

    OPS = [  # weight, name
        (16, "create"), (12, "append"), (10, "overwrite"), (6, "truncate"),
        (8, "rename"), (4, "rename_over"), (5, "link"), (9, "unlink"),
        (2, "unlink_open"), (5, "mkdir"), (3, "rmdir"), (4, "symlink"),
        (4, "chmod"), (3, "chown"), (4, "setxattr"), (2, "sync"),
    ]

    def run(self):
        names = [n for w, n in self.OPS]
        weights = [w for w, n in self.OPS]
        done = 0
        while done < self.nops:
            # Keep the tree bounded: fewer creates when it is big.
            name = self.rng.choices(names, weights)[0]
            nfiles = len(self.paths)
            if nfiles > 400 and name in ("create", "mkdir", "symlink", "link"):
                name = "unlink"
            if getattr(self, "op_" + name)() is False:
                continue
            self.counts[name] = self.counts.get(name, 0) + 1
            done += 1

    # --- the model against the mounted tree ---
    def compare_mounted(self):
        errs = []
        seen = set()
        for dirpath, dirnames, filenames in os.walk(self.mnt):
            rel = dirpath[len(self.mnt):] or "/"
            for n in dirnames + filenames:
                p = (rel.rstrip("/") + "/" + n)
                if p == "/lost+found":
                    continue
                seen.add(p)
        for p in set(self.paths) - {"/"} - seen:
            errs.append("mounted: %s missing" % p)
        for p in seen - set(self.paths):
            errs.append("mounted: %s not in the model" % p)
        for p in sorted(set(self.paths) & seen):
            ino = self.paths[p]
            st = os.lstat(self.real(p))
            if stat.S_IMODE(st.st_mode) != ino.mode or st.st_uid != ino.uid or st.st_gid != ino.gid:
                errs.append("mounted: %s mode/uid/gid %o/%d/%d, model %o/%d/%d" % (
                    p, stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, ino.mode, ino.uid, ino.gid))
            if ino.kind == "file":
                with open(self.real(p), "rb") as f:
                    if f.read() != bytes(ino.data):
                        errs.append("mounted: %s content differs" % p)
            elif ino.kind == "symlink" and os.readlink(self.real(p)) != ino.target:
                errs.append("mounted: %s target differs" % p)
        return errs

    def truth(self):
        inos = {}
        out = {"paths": {}, "inodes": {}, "counts": self.counts, "syncs": self.syncs}
        for p, ino in sorted(self.paths.items()):
            k = inos.setdefault(id(ino), str(len(inos)))
            out["paths"][p] = k
            if k not in out["inodes"]:
                out["inodes"][k] = {
                    "kind": ino.kind, "mode": ino.mode, "uid": ino.uid, "gid": ino.gid,
                    "size": len(ino.data) if ino.kind == "file" else None,
                    "sha256": hashlib.sha256(ino.data).hexdigest() if ino.kind == "file" else None,
                    "target": ino.target if ino.kind == "symlink" else None,
                    "xattrs": {k2: v.hex() for k2, v in ino.xattrs.items()},
                    "names": sorted(ino.names),
                }
        return out


def cmd_run(a):
    w = Workload(a.mnt, a.seed, a.ops)
    w.run()
    errs = w.compare_mounted()
    t = w.truth()
    with open(a.truth, "w") as f:
        json.dump(t, f)
    print("workload: %d ops (%s), %d syncs; %d paths, %d inodes at the end" % (
        a.ops, " ".join("%s=%d" % kv for kv in sorted(w.counts.items())),
        w.syncs, len(t["paths"]), len(t["inodes"])))
    return report(errs)


def report(errs):
    for e in errs[:30]:
        print("MISMATCH: " + e)
    if len(errs) > 30:
        print("... and %d more" % (len(errs) - 30))
    return 1 if errs else 0


def debugfs_script(img, cmds):
    with tempfile.NamedTemporaryFile("w", suffix=".debugfs") as f:
        f.write("\n".join(cmds) + "\n")
        f.flush()
        r = subprocess.run(["debugfs", "-f", f.name, img], stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE)
    assert r.returncode == 0, r.stderr
    return r.stdout.decode("utf-8", "surrogateescape")


def cmd_check(a):
    t = json.load(open(a.truth))
    paths, inodes = t["paths"], t["inodes"]
    errs = []
    dirs = sorted(p for p, k in paths.items() if inodes[k]["kind"] == "dir")

    # 1. Every directory's listing, with inode numbers, modes, owners, sizes.
    out = debugfs_script(a.image, ["ls -p %s" % d for d in dirs])
    listing = {}        # path -> (ino, mode, uid, gid, size)
    cur = None
    for line in out.splitlines():
        m = re.match(r"debugfs: ls -p (.*)$", line)
        if m:
            cur = m.group(1)
            continue
        m = re.match(r"^/(\d+)/(\d+)/(\d+)/(\d+)/(.*)/(\d*)/$", line)
        if m and cur is not None:
            name = m.group(5)
            if name in (".", "..") or (cur == "/" and name == "lost+found"):
                continue
            p = (cur.rstrip("/") + "/" + name)
            listing[p] = (int(m.group(1)), int(m.group(2), 8), int(m.group(3)),
                          int(m.group(4)), int(m.group(6)) if m.group(6) else None)
    want = set(paths) - {"/"}
    for p in sorted(want - set(listing)):
        errs.append("image: %s missing" % p)
    for p in sorted(set(listing) - want):
        errs.append("image: %s is there, the model has no such path" % p)
    kind_of = {stat.S_IFREG: "file", stat.S_IFDIR: "dir", stat.S_IFLNK: "symlink"}
    by_ino = {}
    for p in sorted(want & set(listing)):
        ino, mode, uid, gid, size = listing[p]
        m = inodes[paths[p]]
        if kind_of.get(stat.S_IFMT(mode)) != m["kind"]:
            errs.append("image: %s is mode %o, the model says %s" % (p, mode, m["kind"]))
            continue
        if m["kind"] != "symlink" and stat.S_IMODE(mode) != m["mode"]:
            errs.append("image: %s mode %o, model %o" % (p, stat.S_IMODE(mode), m["mode"]))
        if (uid, gid) != (m["uid"], m["gid"]):
            errs.append("image: %s owner %d:%d, model %d:%d" % (p, uid, gid, m["uid"], m["gid"]))
        if m["kind"] == "file" and size != m["size"]:
            errs.append("image: %s size %s, model %d" % (p, size, m["size"]))
        by_ino.setdefault(ino, set()).add(paths[p])
    # Hard links: one model inode is one image inode, and the other way.
    for ino, ks in by_ino.items():
        if len(ks) > 1:
            errs.append("image: inode %d holds model inodes %s" % (ino, sorted(ks)))
    for k, m in inodes.items():
        inos = {listing[n][0] for n in m["names"] if n in listing}
        if len(inos) > 1:
            errs.append("image: the names %s of one file are inodes %s" % (m["names"], sorted(inos)))

    # 2. Contents and symlink targets: rdump of the whole tree.
    tmp = tempfile.mkdtemp(prefix="follow-random-rdump.", dir=a.tmpdir)
    try:
        debugfs_script(a.image, ["rdump / %s" % tmp])
        root = tmp   # rdump / DIR puts the root's entries into DIR itself
        if not os.path.isdir(os.path.join(root, "lost+found")) and len(os.listdir(tmp)) == 1:
            root = os.path.join(tmp, os.listdir(tmp)[0])
        for p in sorted(want & set(listing)):
            m = inodes[paths[p]]
            q = root + p
            if m["kind"] == "file":
                try:
                    with open(q, "rb") as f:
                        h = hashlib.sha256(f.read()).hexdigest()
                except OSError as e:
                    errs.append("image: rdump %s: %s" % (p, e))
                    continue
                if h != m["sha256"]:
                    errs.append("image: %s content differs from the model" % p)
            elif m["kind"] == "symlink":
                try:
                    tgt = os.readlink(q)
                except OSError as e:
                    errs.append("image: rdump %s: %s" % (p, e))
                    continue
                if tgt != m["target"]:
                    errs.append("image: %s -> %r, model %r" % (p, tgt, m["target"]))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    # 3. A few xattrs, read back with ea_get.
    xa = [(m["names"][0], k, v) for m in inodes.values() for k, v in sorted(m["xattrs"].items())]
    xa = xa[:: max(1, len(xa) // 25)][:25]
    nx = 0
    for p, k, v in xa:
        with tempfile.NamedTemporaryFile(dir=a.tmpdir) as f:
            debugfs_script(a.image, ["ea_get -f %s %s %s" % (f.name, p, k)])
            got = open(f.name, "rb").read()
        nx += 1
        if got.hex() != v:
            errs.append("image: xattr %s of %s: %d bytes, model %d bytes, differ" % (
                k, p, len(got), len(v) // 2))

    # 4. The log's last create/rename/link events name paths that exist,
    # once the renames, unlinks and deletes reported after them apply.
    evs = []
    with open(a.log) as f:
        for line in f:
            e = json.loads(line)
            # One line per event: the after line, with the outcome (an
            # event refused or failed did not happen).
            if e.get("phase") != "after" or e.get("result", 0) != 0:
                continue
            if e.get("event") in ("create", "rename", "link", "unlink", "delete"):
                evs.append(e)
    idx = [i for i, e in enumerate(evs) if e["event"] in ("create", "rename", "link")]
    checked = 0
    for i in idx[-a.last:]:
        e = evs[i]
        p = e.get("new_file") if e["event"] in ("rename", "link") else e.get("file")
        if not p:
            errs.append("log: %s event without a path: %s" % (e["event"], e))
            continue
        gone = False
        hist = [p]                      # every path it has had
        # Within one transaction, unlink and delete name what they
        # removed as it was named before the transaction (a delete
        # comes after a rename of its directory in the same commit).
        txn, p_txn = e.get("sequence"), p
        for later in evs[i + 1:]:
            if later.get("sequence") != txn:
                txn, p_txn = later.get("sequence"), p
            f0 = later.get("file") or ""
            if not f0:
                continue
            # A delete removes every name the inode had ("paths": one
            # commit may carry all its unlinks, as an ext2 flush does).
            names = later.get("paths") or [f0] if later["event"] == "delete" else [f0]
            if later["event"] in ("unlink", "delete") and any(
                    q == n or q.startswith(n + "/") for q in (p, p_txn) for n in names):
                gone = True
                break
            if later["event"] != "rename":
                continue
            if p == f0 or p.startswith(f0 + "/"):
                p = later["new_file"] + p[len(f0):]
            else:
                # Within one commit (an ext2 flush carries many) a rename
                # names what it moves as it was named before the commit:
                # the name may be one this path had earlier (the file
                # itself, same inode) or below a directory it was in.
                for h in reversed(hist):
                    if h == f0 and later.get("ino") == e.get("ino"):
                        p = later["new_file"]
                        break
                    suffix = h[len(f0):]
                    if h.startswith(f0 + "/") and p.endswith(suffix):
                        p = later["new_file"] + suffix
                        break
                else:
                    continue
            hist.append(p)
        if gone:
            continue
        checked += 1
        if p not in paths:
            errs.append("log: the %s event (seq %s) names %s, which is not there at the end"
                        % (e["event"], e.get("seq"), p))
    print("check: %d paths and %d inodes against debugfs ls -p and rdump, %d xattrs, "
          "the last %d create/rename/link events of %d (%d still there)" % (
              len(want), len(inodes), nx, min(a.last, len(idx)), len(idx), checked))
    if len(idx) == 0:
        errs.append("log: no create/rename/link events at all")
    return report(errs)


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("--mnt", required=True)
    r.add_argument("--seed", type=int, required=True)
    r.add_argument("--ops", type=int, default=3000)
    r.add_argument("--truth", required=True)
    c = sub.add_parser("check")
    c.add_argument("--image", required=True)
    c.add_argument("--truth", required=True)
    c.add_argument("--log", required=True)
    c.add_argument("--last", type=int, default=40)
    c.add_argument("--tmpdir", default=None)
    a = ap.parse_args()
    sys.exit(cmd_run(a) if a.cmd == "run" else cmd_check(a))


if __name__ == "__main__":
    main()
