#!/usr/bin/env python3
# fuzz/follow-seeds.py OUTDIR: the seed corpus of fuzz-follow (the input
# format is described at the top of fuzz/fuzz-follow.c), written into
# OUTDIR/follow.  Called by fuzz/make-seeds.sh; needs mke2fs and debugfs.
#
# Each seed is a small 1 KiB-block image (ext4 with metadata_csum and a
# journal, ext3 with a journal, ext2) holding /p/secret and /p/big (the
# protected files), /d/x and /d/y (not protected; /d/x's inode shares
# an inode-table block with /p/secret's), and a list of writes the way
# a guest's kernel sends them:
#
#   mount      the superblock marked needs_recovery, the journal
#              superblock made live (s_start, csum v3 on ext4)
#   jtxn CMDS  what debugfs CMDS change, as one jbd2 transaction: new
#              data blocks first, the logged copies and their
#              descriptor, a flush, the commit block (FUA), the
#              checkpoint (home writes), a flush, the journal's tail
#              moved on
#   home CMDS  the same changes written home directly (ext2: held until
#              the flush that follows; ext3/4: no transaction at all)
#   inplace    an overwrite of a file's first data block
#   revive     a harmless transaction commits and is checkpointed; its
#              logged copy is then rewritten (the protected inode
#              changed too, checksums made good) and the journal
#              superblock pointed back at it: what recovery would
#              replay changes behind the engine's back
#
# Changes that protect= must refuse (chmod, rm, rename of /p/secret, a
# rename or unlink of /p, an in-place write of /p/secret) and ones it
# must let through (an unprotected file created, appended, chmod'ed).
import os
import struct
import subprocess
import sys
import tempfile

MAGIC = 0xC03B3998
BS = 1024

# --- crc32c as jbd2 computes it (the raw CRC, no final inversion). ---
_T = []
for _i in range(256):
    _c = _i
    for _ in range(8):
        _c = (_c >> 1) ^ 0x82F63B78 if _c & 1 else _c >> 1
    _T.append(_c)


def crc32c(crc, data):
    for b in data:
        crc = _T[(crc ^ b) & 0xFF] ^ (crc >> 8)
    return crc


def be32(v):
    return struct.pack(">I", v & 0xFFFFFFFF)


def run(*cmd, **kw):
    return subprocess.run(cmd, capture_output=True, text=True, **kw).stdout


def debugfs(img, cmds, write=True):
    with tempfile.NamedTemporaryFile("w", delete=False) as f:
        f.write("\n".join(cmds) + "\n")
    try:
        args = ["debugfs"] + (["-w"] if write else []) + ["-f", f.name, img]
        return subprocess.run(args, capture_output=True, text=True,
                              env=dict(os.environ, DEBUGFS_PAGER="__none__")).stdout
    finally:
        os.unlink(f.name)


class Image:
    """An image file, its bytes, and (if it has one) its journal."""

    def __init__(self, path):
        self.path = path
        self.data = bytearray(open(path, "rb").read())
        sb = self.data[1024:2048]
        self.incompat = struct.unpack_from("<I", sb, 0x60)[0]
        self.ro_compat = struct.unpack_from("<I", sb, 0x64)[0]
        self.csum = bool(self.ro_compat & 0x400)         # metadata_csum
        self.is64 = bool(self.incompat & 0x80)
        self.jblocks = []
        if struct.unpack_from("<I", sb, 0x5C)[0] & 0x4:  # has_journal
            out = run("debugfs", "-R", "blocks <8>", path)
            self.jblocks = [int(x) for x in out.split()]
        if self.jblocks:
            jsb = self.data[self.jblocks[0] * BS:self.jblocks[0] * BS + BS]
            self.jfirst = struct.unpack_from(">I", jsb, 0x14)[0]
            self.jseq = struct.unpack_from(">I", jsb, 0x18)[0]
            self.uuid = bytes(jsb[0x30:0x40])
            self.seed = crc32c(0xFFFFFFFF, self.uuid)

    def block(self, n):
        return bytes(self.data[n * BS:(n + 1) * BS])

    def in_use(self, blocks):
        out = debugfs(self.path, ["testb %d" % b for b in blocks], write=False)
        return {b for b in blocks if "Block %d marked in use" % b in out}


# --- The input format (fuzz/fuzz-follow.c). ---
OP_WRITE, OP_FUA, OP_ZERO, OP_ZERO_TRIM, OP_TRIM, OP_FLUSH = range(6)


class Seed:
    def __init__(self, img, flags=0x1, veto=0):
        self.img = img
        self.flags = flags
        self.veto = veto
        self.reqs = []

    def write(self, blk, data, fua=False, off=0):
        self.reqs.append(struct.pack("<BBHHH", OP_FUA if fua else OP_WRITE, 0,
                                     blk, off, len(data)) + bytes(data))

    def flush(self):
        self.reqs.append(struct.pack("<BBHHH", OP_FLUSH, 0, 0, 0, 0))

    def encode(self):
        d = self.img.data
        # The image as runs of non-zero bytes (16-byte granules; gaps
        # shorter than 32 bytes are kept in).
        runs, cur = [], None
        for off in range(0, len(d), 16):
            if any(d[off:off + 16]):
                if cur and off - cur[1] <= 32:
                    cur[1] = off + 16
                else:
                    if cur:
                        runs.append(cur)
                    cur = [off, off + 16]
        if cur:
            runs.append(cur)
        out = struct.pack("<BBHH", self.flags, self.veto, len(d) // 1024, len(runs))
        for a, b in runs:
            out += struct.pack("<IH", a, b - a) + bytes(d[a:b])
        return out + b"".join(self.reqs)


def jsb_block(img, start, seq, features):
    """The journal superblock with s_start, s_sequence and (ext4) the
    features the kernel sets at mount, its checksum made good."""
    b = bytearray(img.block(img.jblocks[0]))
    struct.pack_into(">I", b, 0x18, seq)
    struct.pack_into(">I", b, 0x1C, start)
    if features:
        incompat = struct.unpack_from(">I", b, 0x28)[0] | 0x10  # CSUM_V3
        if img.is64:
            incompat |= 0x2
        struct.pack_into(">I", b, 0x28, incompat)
        b[0x50] = 4                                           # crc32c
        struct.pack_into(">I", b, 0xFC, 0)
        struct.pack_into(">I", b, 0xFC, crc32c(0xFFFFFFFF, b[:1024]))
    return b


def txn_blocks(img, seq, copies, csum):
    """Descriptor, logged copies and commit block of transaction SEQ
    logging COPIES [(home block, bytes)]."""
    desc = bytearray(BS)
    desc[0:12] = be32(MAGIC) + be32(1) + be32(seq)
    off = 12
    logged = []
    for i, (home, data) in enumerate(copies):
        data = bytearray(data)
        flags = 0
        if data[0:4] == be32(MAGIC):
            flags |= 1                                    # ESCAPE
            data[0:4] = bytes(4)
        if i > 0:
            flags |= 2                                    # SAME_UUID
        if i == len(copies) - 1:
            flags |= 8                                    # LAST_TAG
        c = crc32c(crc32c(img.seed, be32(seq)), data) if csum else 0
        if csum:                                          # csum v3 tag
            tag = be32(home) + be32(flags) + be32(home >> 32) + be32(c)
        else:
            tag = be32(home) + struct.pack(">HH", 0, flags)
            if img.is64:
                tag += be32(home >> 32)
        desc[off:off + len(tag)] = tag
        off += len(tag)
        if not flags & 2:
            desc[off:off + 16] = img.uuid
            off += 16
        logged.append(bytes(data))
    if csum:
        desc[BS - 4:] = be32(crc32c(img.seed, desc[:BS - 4] + bytes(4)))
    commit = bytearray(BS)
    commit[0:12] = be32(MAGIC) + be32(2) + be32(seq)
    struct.pack_into(">QI", commit, 48, 1700000000, 0)
    if csum:
        commit[16:20] = be32(crc32c(img.seed, commit))
    return bytes(desc), logged, bytes(commit)


def changed(a, b_path, cmds):
    """Apply debugfs CMDS to a copy of A: (the new image, the blocks
    that differ)."""
    tmp = b_path
    open(tmp, "wb").write(a.data)
    debugfs(tmp, cmds)
    b = Image(tmp)
    diff = [n for n in range(len(a.data) // BS) if a.block(n) != b.block(n)]
    return b, diff


class Guest:
    """Writes as a guest's kernel sends them, into SEED."""

    def __init__(self, seed):
        self.s = seed
        self.img = seed.img
        self.jpos = self.img.jfirst if self.img.jblocks else 0
        self.seq = self.img.jseq if self.img.jblocks else 0
        self.csum = self.img.csum

    def mount(self):
        img = self.img
        sb = bytearray(img.block(1))
        struct.pack_into("<I", sb, 0x60, img.incompat | 0x4)   # needs_recovery
        if img.csum:
            struct.pack_into("<I", sb, 0x3FC, crc32c(0xFFFFFFFF, sb[:0x3FC]))
        self.s.write(1, sb, fua=True)
        self.s.write(img.jblocks[0], jsb_block(img, self.jpos, self.seq, self.csum),
                     fua=True)

    def jtxn(self, b, diff, checkpoint=True, move_tail=True):
        """One transaction carrying B's changed blocks; returns where
        its descriptor and copies lie (journal blocks)."""
        img = self.img
        used = img.in_use(diff)
        data = [n for n in diff if n not in used]
        meta = [n for n in diff if n in used]
        for n in data:                     # ordered mode: data first
            self.s.write(n, b.block(n))
        desc, logged, commit = txn_blocks(img, self.seq, [(n, b.block(n)) for n in meta],
                                          self.csum)
        # The logged copies before their descriptor (the order between
        # them is free until the flush): a descriptor written later is
        # resealed over the copies the device then holds.
        where = self.jpos
        for i, c in enumerate(logged):
            self.s.write(img.jblocks[where + 1 + i], c)
        self.s.write(img.jblocks[where], desc)
        self.jpos += 1 + len(logged)
        self.s.flush()
        self.s.write(img.jblocks[self.jpos], commit, fua=True)
        self.jpos += 1
        self.seq += 1
        if checkpoint:
            for n in meta:
                self.s.write(n, b.block(n))
            self.s.flush()
            if move_tail:
                self.s.write(img.jblocks[0], jsb_block(img, self.jpos, self.seq, self.csum),
                             fua=True)
        return where, meta

    def home(self, b, diff):
        for n in diff:
            self.s.write(n, b.block(n))
        self.s.flush()


def make_image(tmp, kind):
    path = os.path.join(tmp, kind + ".img")
    if os.path.exists(path):
        os.unlink(path)
    with open(path, "wb") as f:
        f.truncate(2 << 20 if kind != "ext2" else 1 << 20)
    opts = {"ext4": ["-t", "ext4", "-I", "256"],
            "ext3": ["-t", "ext3", "-I", "256"],
            "ext2": ["-t", "ext2", "-I", "128"]}[kind]
    r = subprocess.run(["mke2fs", "-q", "-F", "-b", "1024", "-N", "64",
                        "-U", "4f1b2c3d-0000-4000-8000-0123456789ab",
                        "-E", "hash_seed=4f1b2c3d-0000-4000-8000-0123456789ab"]
                       + opts + [path], capture_output=True,
                       env=dict(os.environ, E2FSPROGS_FAKE_TIME="1700000000"))
    if r.returncode != 0:
        return None
    secret = os.path.join(tmp, "secret")
    open(secret, "w").write("root:x:0:0:root:/root:/bin/bash\n" * 40)   # 1360 bytes
    big = os.path.join(tmp, "big")
    open(big, "wb").write(bytes((i * 7 + 3) & 0xFF for i in range(5000)))
    small = os.path.join(tmp, "small")
    open(small, "w").write("unprotected\n")
    # Inodes in this order: /p 12, /p/secret 13, /p/big 14, /d 15,
    # /d/x 16 (the same inode-table block as 13 with 256-byte inodes),
    # /d/y 17.
    debugfs(path, ["mkdir /p", "write %s /p/secret" % secret, "write %s /p/big" % big,
                   "mkdir /d", "write %s /d/x" % small, "write %s /d/y" % small])
    return Image(path)


def main():
    out = os.path.join(sys.argv[1], "follow")
    os.makedirs(out, exist_ok=True)
    tmp = tempfile.mkdtemp()
    try:
        seeds = {}
        for kind in ("ext4", "ext3"):
            a = make_image(tmp, kind)
            if a is None or not a.jblocks:
                print("follow-seeds: mke2fs %s failed: left out" % kind, file=sys.stderr)
                continue
            b_path = os.path.join(tmp, "b.img")
            big = os.path.join(tmp, "big")
            # Protected: refused at the commit (flags bits 1-2: the glob).
            for name, cmds, glob in [
                    ("chmod", ["sif /p/secret mode 0100777"], 0),
                    ("chown", ["sif /p/secret uid 1000"], 1),
                    ("truncate", ["sif /p/secret size 0"], 0),
                    ("rm", ["rm /p/secret"], 2),
                    ("rename", ["ln /p/secret /d/s", "unlink /p/secret"], 0),
                    ("rename-parent", ["ln /p /q", "unlink /p"], 0),
                    ("unlink-parent", ["unlink /p"], 0),
                    ("replace", ["unlink /p/secret", "ln /d/x /p/secret"], 3),
                    ("hardlink-write", ["ln /p/secret /d/h"], 0),
                    ("big-extend", ["write %s /p/big2" % big, "unlink /p/big"], 1)]:
                b, diff = changed(a, b_path, cmds)
                s = Seed(a, flags=0x1 | glob << 1)
                g = Guest(s)
                g.mount()
                g.jtxn(b, diff)
                s.flush()
                seeds["%s-j-%s" % (kind, name)] = s
            # Not protected: let through (one with a handler that vetoes
            # every other event, one with -D fsevent.check=1).
            for name, cmds, veto, check in [
                    ("create", ["write %s /d/new" % big], 0, 0),
                    ("chmod-x", ["sif /d/x mode 0100600"], 0, 1),
                    ("rm-y", ["rm /d/y"], 0x55, 0),
                    ("mkdir", ["mkdir /d/sub", "write %s /d/sub/f" % big], 0, 1)]:
                b, diff = changed(a, b_path, cmds)
                s = Seed(a, flags=0x1 | check << 3, veto=veto)
                g = Guest(s)
                g.mount()
                g.jtxn(b, diff)
                s.flush()
                seeds["%s-j-%s" % (kind, name)] = s
            # Two transactions, the second before the first's checkpoint.
            b1, d1 = changed(a, b_path, ["sif /d/x mode 0100600"])
            s = Seed(a)
            g = Guest(s)
            g.mount()
            g.jtxn(b1, d1, checkpoint=False)
            b2, d2 = changed(b1, b_path, ["sif /p/secret mode 0100600"])
            g.jtxn(b2, d2)
            seeds["%s-j-two" % kind] = s
            # Home writes without a transaction.
            for name, cmds in [("chmod", ["sif /p/secret mode 0100777"]),
                               ("chmod-x", ["sif /d/x mode 0100600"])]:
                b, diff = changed(a, b_path, cmds)
                s = Seed(a)
                g = Guest(s)
                g.mount()
                g.home(b, diff)
                seeds["%s-home-%s" % (kind, name)] = s
            # In-place data writes.
            secret_blk = int(run("debugfs", "-R", "bmap /p/secret 0", a.path).split()[0])
            x_blk = int(run("debugfs", "-R", "bmap /d/x 0", a.path).split()[0])
            for name, blk in [("secret", secret_blk), ("x", x_blk)]:
                s = Seed(a)
                Guest(s).mount()
                s.write(blk, bytes(range(256)) * 4)
                s.flush()
                seeds["%s-inplace-%s" % (kind, name)] = s
            # Revive: a harmless transaction, checkpointed, its copy then
            # rewritten with /p/secret changed too, the tail moved back.
            b1, d1 = changed(a, b_path, ["sif /d/x mode 0100600"])
            b2, _ = changed(a, b_path, ["sif /d/x mode 0100600",
                                        "sif /p/secret mode 0104777"])
            s = Seed(a)
            g = Guest(s)
            g.mount()
            seq = g.seq
            where, meta = g.jtxn(b1, d1)
            desc, logged, _ = txn_blocks(a, seq, [(n, b2.block(n)) for n in meta], a.csum)
            for i, c in enumerate(logged):
                s.write(a.jblocks[where + 1 + i], c)
            s.write(a.jblocks[where], desc)
            s.write(a.jblocks[0], jsb_block(a, where, seq, a.csum), fua=True)
            s.flush()
            seeds["%s-revive" % kind] = s
            # Nothing but a mount.
            s = Seed(a)
            Guest(s).mount()
            s.flush()
            seeds["%s-mount" % kind] = s
            # ext4 with the fast_commit feature whose journal does not
            # have the flag yet (mke2fs's; the kernel sets it at mount):
            # the last 256 blocks are log to jbd2 recovery, and a
            # transaction committed there must be decided.
            if kind == "ext4":
                f = Image(a.path)
                sb = bytearray(f.data[1024:2048])
                struct.pack_into("<I", sb, 0x5C, struct.unpack_from("<I", sb, 0x5C)[0] | 0x400)
                struct.pack_into("<I", sb, 0x3FC, crc32c(0xFFFFFFFF, sb[:0x3FC]))
                f.data[1024:2048] = sb
                open(f.path, "wb").write(f.data)
                b, diff = changed(f, b_path, ["sif /p/secret mode 0100777"])
                s = Seed(f)
                g = Guest(s)
                g.jpos = len(f.jblocks) - 100
                g.mount()
                g.jtxn(b, diff, checkpoint=False)
                s.flush()
                seeds["ext4-fc-area-unflagged"] = s

        a = make_image(tmp, "ext2")
        if a is not None:
            b_path = os.path.join(tmp, "b.img")
            for name, cmds in [("chmod", ["sif /p/secret mode 0100777"]),
                               ("rm", ["rm /p/secret"]),
                               ("rename-parent", ["ln /p /q", "unlink /p"]),
                               ("create", ["write %s /d/new" % os.path.join(tmp, "big")]),
                               ("chmod-x", ["sif /d/x mode 0100600"])]:
                b, diff = changed(a, b_path, cmds)
                s = Seed(a, flags=0x1 | (8 if name == "create" else 0))
                Guest(s).home(b, diff)
                seeds["ext2-%s" % name] = s
            secret_blk = int(run("debugfs", "-R", "bmap /p/secret 0", a.path).split()[0])
            s = Seed(a)
            s.write(secret_blk, b"x" * 1024, fua=True)
            seeds["ext2-inplace-secret"] = s
        for name, s in seeds.items():
            open(os.path.join(out, name), "wb").write(s.encode())
        print("follow-seeds: %d seeds" % len(seeds))
    finally:
        subprocess.run(["rm", "-rf", tmp])


if __name__ == "__main__":
    main()
