#!/usr/bin/env python3
# tests/map-oracle.py: check fsevent-map against dumpe2fs and debugfs on
# every block of an ext2/3/4 image.
#
# The oracle knows nothing of our code.  It builds the expected role and
# owner of every block from e2fsprogs alone:
#
#   dumpe2fs IMAGE      superblocks, group descriptors, reserved GDT
#                       blocks, bitmaps and inode tables per group, the
#                       free block ranges and the free inodes;
#   debugfs stat <N>    for every inode in use (the inode bitmap): its
#                       type, size, xattr block ("File ACL") and block
#                       map (EXTENTS with ETB tree blocks and [u]nwritten
#                       extents, or BLOCKS with IND/DIND/TIND);
#   debugfs icheck      every block that is not free, mapped to the inode
#                       owning it: a second, independent owner map that
#                       must agree with the one built from stat (free
#                       blocks are left out: icheck is quadratic, and no
#                       stat block map may claim a free block anyway);
#   debugfs ncheck      every name (hard link) of every owner.
#
# Then it runs fsevent-map on the whole image, cuts its segments at block
# boundaries and compares every piece with the expected block: role,
# group, backup, owner inode, path(s), position in the file, EOF split,
# unwritten, journal part, allocated.  It also checks that the segments
# are ordered, contiguous, cover the image file exactly and end with one
# "outside" segment when the file is larger than the filesystem.
#
# Usage: map-oracle.py --map PATH/fsevent-map [--details N] [-v] IMAGE
#        map-oracle.py --map ... --device DISK --partition N IMAGE
#
# With --device, IMAGE is partition N of the partitioned DISK, copied
# out (with dd): e2fsprogs read IMAGE, fsevent-map maps DISK with
# --partition N, and its segments, moved back by the partition's start
# (from sfdisk --json DISK), must agree with IMAGE's blocks and all say
# "partition": N.  Without, every segment must say "partition": 0.
# Exit status: 0 all blocks agree, 1 mismatches, 2 the oracle itself
# failed (a tool failed, or debugfs and dumpe2fs disagree).
#
# Python 3 standard library only.

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict

ENV = dict(os.environ, LC_ALL="C", PAGER="__none__", DEBUGFS_PAGER="__none__")
ENV["PATH"] = ENV.get("PATH", "") + ":/usr/sbin:/sbin"

# debugfs reads -f files with fgets into a BUFSIZ (8192) buffer: longer
# lines would be cut into two commands.
MAX_CMD_LINE = 7000

FIXED_ROLES = ("superblock", "group_descriptors", "reserved_gdt",
               "block_bitmap", "inode_bitmap", "inode_table")
OWNED_ROLES = ("journal", "extent_tree", "indirect", "directory", "xattr",
               "data")
FLAG_KEYS = ("backup", "beyond_eof", "unwritten", "allocated", "dup")

# The keys a segment of each role may have (fsevent-map(1), OUTPUT).
COMMON_KEYS = {"offset", "length", "role", "partition"} | set(FLAG_KEYS)
ROLE_KEYS = {r: {"group"} for r in FIXED_ROLES}
ROLE_KEYS["inode_table"] = {"group", "first_ino", "last_ino"}
ROLE_KEYS.update({r: {"ino", "path", "paths"} for r in OWNED_ROLES})
for r in ("data", "directory", "journal"):
    ROLE_KEYS[r] = ROLE_KEYS[r] | {"position"}
ROLE_KEYS["journal"] = ROLE_KEYS["journal"] | {"part"}
ROLE_KEYS["xattr"] = ROLE_KEYS["xattr"] | {"inos", "owners"}
for r in ("free", "outside", "mmp"):
    ROLE_KEYS[r] = set()

verbose = False


class OracleError(Exception):
    pass


def log(msg):
    if verbose:
        print("map-oracle: " + msg, file=sys.stderr)


def run(cmd, check=True):
    """Run CMD; return (stdout, stderr) decoded as latin-1, so that every
    byte of a file name maps to one character (the same one fsevent-map's
    \\u00XX escapes decode to)."""
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       env=ENV)
    out = p.stdout.decode("latin-1")
    err = p.stderr.decode("latin-1")
    if check and p.returncode != 0:
        raise OracleError("%s failed (exit %d): %s" %
                          (" ".join(cmd[:3]), p.returncode, err.strip()[-2000:]))
    return out, err


def parse_ranges(text):
    """'1-5, 9, 12-13' -> [(1, 5), (9, 9), (12, 13)]"""
    out = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        if "-" in part:
            a, b = part.split("-", 1)
            out.append((int(a), int(b)))
        else:
            out.append((int(part), int(part)))
    return out


# --- dumpe2fs ---------------------------------------------------------------

def parse_dumpe2fs(text):
    hdr = {}
    groups = []
    g = None
    for line in text.splitlines():
        m = re.match(r"^Group (\d+): \(Blocks (\d+)-(\d+)\)", line)
        if m:
            g = {"n": int(m.group(1)), "start": int(m.group(2)),
                 "end": int(m.group(3)), "super": None, "primary": False,
                 "gdt": None, "gdt_meta": None, "rgdt": None, "bbitmap": None,
                 "ibitmap": None, "itable": None, "free_blocks": [],
                 "free_inodes": []}
            groups.append(g)
            continue
        if g is None:
            m = re.match(r"^([A-Za-z][^:]*):\s*(.*)$", line)
            if m and m.group(1) not in hdr:
                hdr[m.group(1).strip()] = m.group(2).strip()
            continue
        m = re.search(r"(Primary|Backup) superblock at (\d+)", line)
        if m:
            g["super"] = int(m.group(2))
            g["primary"] = m.group(1) == "Primary"
        m = re.search(r"Group descriptors at (\d+)-(\d+)", line)
        if m:
            g["gdt"] = (int(m.group(1)), int(m.group(2)))
        m = re.search(r"Group descriptor at (\d+)", line)
        if m:
            g["gdt_meta"] = int(m.group(1))
        m = re.search(r"Reserved GDT blocks at (\d+)-(\d+)", line)
        if m:
            g["rgdt"] = (int(m.group(1)), int(m.group(2)))
        m = re.search(r"Block bitmap at (\d+)", line)
        if m:
            g["bbitmap"] = int(m.group(1))
        m = re.search(r"Inode bitmap at (\d+)", line)
        if m:
            g["ibitmap"] = int(m.group(1))
        m = re.search(r"Inode table at (\d+)-(\d+)", line)
        if m:
            g["itable"] = (int(m.group(1)), int(m.group(2)))
        m = re.match(r"^\s+Free blocks: ?(.*)$", line)
        if m:
            g["free_blocks"] = parse_ranges(m.group(1))
        m = re.match(r"^\s+Free inodes: ?(.*)$", line)
        if m:
            g["free_inodes"] = parse_ranges(m.group(1))
    if not groups:
        raise OracleError("dumpe2fs printed no groups")

    def num(key, default=None):
        v = hdr.get(key)
        if v is None:
            if default is None:
                raise OracleError("dumpe2fs: no '%s'" % key)
            return default
        return int(v.split()[0])

    fs = {
        "blocks": num("Block count"),
        "bs": num("Block size"),
        "first_block": num("First block"),
        "inodes": num("Inode count"),
        "ipg": num("Inodes per group"),
        "inode_size": num("Inode size", 128),
        "cluster": num("Cluster size", 0) or num("Block size"),
        "desc_size": num("Group descriptor size", 32),
        "features": set(hdr.get("Filesystem features", "").split()),
        "journal_ino": num("Journal inode", 0),
        "journal_total": num("Total journal blocks", 0),
        "journal_fc": num("Fast commit length", 0),
        "mmp_block": num("MMP block number", 0),
        "groups": groups,
        "hdr": hdr,
    }
    fs["ratio"] = fs["cluster"] // fs["bs"]
    fs["ipb"] = fs["bs"] // fs["inode_size"]
    specials = {1: "<bad blocks>", 5: "<boot loader>", 6: "<undelete>",
                7: "<resize>", 9: "<exclude>"}
    if fs["journal_ino"]:
        specials[fs["journal_ino"]] = "<journal>"
    for key, name in (("User quota inode", "<quota:user>"),
                      ("Group quota inode", "<quota:group>"),
                      ("Project quota inode", "<quota:project>"),
                      ("Orphan file inode", "<orphan file>")):
        if num(key, 0):
            specials[num(key, 0)] = name
    fs["specials"] = specials
    return fs


def free_blocks(fs):
    """The set of free blocks.  With bigalloc dumpe2fs prints cluster
    ranges by their blocks: up to 1.47.0 a range ends at the FIRST block
    of its last cluster, later at the last; both mean whole clusters."""
    r = fs["ratio"]
    free = bytearray(fs["blocks"])
    for g in fs["groups"]:
        for a, b in g["free_blocks"]:
            if r > 1:
                a = a // r * r
                b = b // r * r + r - 1
            b = min(b, fs["blocks"] - 1)
            if a <= b:
                free[a:b + 1] = b"\x01" * (b - a + 1)
    return free


def inodes_in_use(fs):
    used = []
    for g in fs["groups"]:
        first = g["n"] * fs["ipg"] + 1
        last = first + fs["ipg"] - 1
        free = set()
        for a, b in g["free_inodes"]:
            free.update(range(a, b + 1))
        used.extend(i for i in range(first, last + 1) if i not in free)
    return used


# --- debugfs ----------------------------------------------------------------

def debugfs_batch(image, commands, tmpdir):
    """Run COMMANDS (lines) with debugfs -f; return {index: output}."""
    path = os.path.join(tmpdir, "cmds")
    with open(path, "w", encoding="latin-1") as f:
        for c in commands:
            assert len(c) < MAX_CMD_LINE, "debugfs line too long"
            f.write(c + "\n")
    out, err = run(["debugfs", "-f", path, image])
    res = {}
    cur = None
    buf = []
    it = iter(commands)
    expect = next(it, None)
    idx = -1
    for line in out.split("\n"):
        if expect is not None and line == "debugfs: " + expect:
            if cur is not None:
                res[cur] = "\n".join(buf)
            idx += 1
            cur = idx
            buf = []
            expect = next(it, None)
            continue
        if cur is not None:
            buf.append(line)
    if cur is not None:
        res[cur] = "\n".join(buf)
    if len(res) != len(commands):
        raise OracleError("debugfs ran %d of %d commands: %s" %
                          (len(res), len(commands), err.strip()[-2000:]))
    errs = [l for l in err.splitlines()
            if l.strip() and not l.startswith("debugfs ")]
    if errs:
        # On a clean image debugfs has nothing to complain about: what
        # it says means its answers cannot be trusted.
        raise OracleError("debugfs -f %s: %s" % (commands[0][:40],
                                                 "; ".join(errs[:5])))
    return res


def chunk_commands(cmd, args):
    lines, cur = [], []
    n = len(cmd)
    for a in args:
        s = str(a)
        if cur and n + 1 + len(s) >= MAX_CMD_LINE:
            lines.append(cmd + " " + " ".join(cur))
            cur, n = [], len(cmd)
        cur.append(s)
        n += 1 + len(s)
    if cur:
        lines.append(cmd + " " + " ".join(cur))
    return lines


ITEM_RE = re.compile(r"\((ETB\d+|IND|DIND|TIND|(\d+)(?:-(\d+))?(\[u\])?)\):"
                     r"(\d+)(?:-(\d+))?")


def parse_stat(text):
    """One `stat <N>` output -> dict."""
    st = {"type": None, "size": 0, "acl": 0, "flags": 0, "map": None,
          "items": [], "inline": False, "links": 0}
    m = re.search(r"Type: (.*?)\s+Mode:", text)
    if m:
        st["type"] = m.group(1).strip()
    m = re.search(r"Flags: (0x[0-9a-fA-F]+)", text)
    if m:
        st["flags"] = int(m.group(1), 16)
    m = re.search(r"^User:.*?\bSize: (\d+)", text, re.M)
    if m:
        st["size"] = int(m.group(1))
    m = re.search(r"^File ACL: (\d+)", text, re.M)
    if m:
        st["acl"] = int(m.group(1))
    m = re.search(r"^Links: (\d+)", text, re.M)
    if m:
        st["links"] = int(m.group(1))
    if re.search(r"^Size of inline data:", text, re.M):
        st["inline"] = True
    lines = text.split("\n")
    for i, line in enumerate(lines):
        if line.strip() in ("EXTENTS:", "BLOCKS:"):
            st["map"] = line.strip()[:-1]
            body = []
            for l in lines[i + 1:]:
                if not l.strip() or l.startswith("TOTAL:"):
                    break
                body.append(l)
            body = " ".join(body)
            pos = 0
            for im in ITEM_RE.finditer(body):
                gap = body[pos:im.start()].strip().strip(",").strip()
                if gap:
                    raise OracleError("cannot parse block map near %r" % gap)
                pos = im.end()
                kind = im.group(1)
                p0 = int(im.group(5))
                p1 = int(im.group(6)) if im.group(6) else p0
                if kind.startswith("ETB") or kind in ("IND", "DIND", "TIND"):
                    st["items"].append((kind, None, p0, p1, False))
                else:
                    l0 = int(im.group(2))
                    l1 = int(im.group(3)) if im.group(3) else l0
                    if l1 - l0 != p1 - p0:
                        raise OracleError("uneven range %s" % im.group(0))
                    st["items"].append(("DATA", l0, p0, p1, bool(im.group(4))))
            if body[pos:].strip().strip(","):
                raise OracleError("cannot parse block map tail %r" %
                                  body[pos:pos + 80])
            break
    return st


def normpath(p):
    return re.sub(r"/+", "/", p)


# --- the expected model -----------------------------------------------------

class Info:
    """What a run of blocks is, shared by its blocks; a block's entry in
    the model is (Info, index of the block in the run)."""
    __slots__ = ("role", "group", "backup", "ino", "lblk0", "size",
                 "unwritten", "part", "first_ino0", "allocated", "owners",
                 "what")

    def __init__(self, role, **kw):
        self.role = role
        self.group = kw.get("group")
        self.backup = kw.get("backup", False)
        self.ino = kw.get("ino")
        self.lblk0 = kw.get("lblk0")
        self.size = kw.get("size")
        self.unwritten = kw.get("unwritten", False)
        self.part = kw.get("part")
        self.first_ino0 = kw.get("first_ino0")
        self.allocated = kw.get("allocated", False)
        self.owners = kw.get("owners")
        self.what = kw.get("what", role)


FREE = Info("free")
FREE_ALLOCATED = Info("free", allocated=True)


class Model:
    def __init__(self, fs):
        self.fs = fs
        self.n = fs["blocks"]
        self.exp = [None] * self.n
        self.oracle_errors = []

    def put(self, first, count, info, step=1):
        if first < 0 or first + count > self.n:
            self.oracle_errors.append(
                "%s at blocks %d+%d lies outside the filesystem (%d blocks)"
                % (info.what, first, count, self.n))
            return
        exp = self.exp
        for k in range(count):
            b = first + k
            old = exp[b]
            if old is not None:
                self.oracle_errors.append(
                    "block %d claimed twice: %s (ino %s) and %s (ino %s)"
                    % (b, old[0].what, old[0].ino, info.what, info.ino))
                continue
            exp[b] = (info, k * step)


def build_fixed(model, fs):
    bs, ipb = fs["bs"], fs["ipb"]
    per = bs // fs["desc_size"]
    for g in fs["groups"]:
        n = g["n"]
        if g["super"] is not None:
            if n == 0:
                # The boot block(s) before the superblock go with it.
                model.put(0, g["super"] + 1,
                          Info("superblock", group=0, what="superblock 0"))
            else:
                model.put(g["super"], 1, Info("superblock", group=n,
                                              backup=True))
        if g["gdt"]:
            a, b = g["gdt"]
            model.put(a, b - a + 1, Info("group_descriptors", group=n,
                                         backup=n != 0))
        if g["gdt_meta"] is not None:
            # meta_bg: the first group of each meta group holds the
            # primary copy, its second and last group the backups.
            model.put(g["gdt_meta"], 1,
                      Info("group_descriptors", group=n,
                           backup=n % per != 0))
        if g["rgdt"]:
            a, b = g["rgdt"]
            model.put(a, b - a + 1, Info("reserved_gdt", group=n,
                                         backup=n != 0))
        if g["bbitmap"] is not None:
            model.put(g["bbitmap"], 1, Info("block_bitmap", group=n))
        if g["ibitmap"] is not None:
            model.put(g["ibitmap"], 1, Info("inode_bitmap", group=n))
        if g["itable"]:
            a, b = g["itable"]
            model.put(a, b - a + 1,
                      Info("inode_table", group=n,
                           first_ino0=n * fs["ipg"] + 1), step=ipb)
    if fs["mmp_block"]:
        model.put(fs["mmp_block"], 1, Info("mmp"))


def journal_part(fs, lblk):
    total, fc = fs["journal_total"], fs["journal_fc"]
    if lblk == 0:
        return "superblock"
    if total == 0:
        return "log"
    if lblk < total - fc:
        return "log"
    if lblk < total:
        return "fast_commit"
    return None


def resize_backup_shift(fs):
    """e2fsprogs disagrees with itself on 1 KiB-block bigalloc: there
    s_first_data_block is 0 but the superblock lies at block 1.
    ext2fs_super_and_bgd_loc2 (dumpe2fs, e2fsck, our model) puts a
    backup group's reserved GDT blocks right after its descriptors,
    but the resize inode mke2fs writes (res_gdt.c: primary + group *
    blocks per group, with the primary counted from block 1) lists each
    backup one block further on: past the last one, on the next
    block (the group's block bitmap without flex_bg).  dumpe2fs is the
    oracle for fixed metadata; the resize inode's backup entries are
    accepted one block off.  Returns the set of backup reserved GDT
    blocks whose resize inode entry is shifted (empty elsewhere)."""
    if not (fs["bs"] == 1024 and fs["ratio"] > 1 and fs["first_block"] == 0
            and "resize_inode" in fs["features"]):
        return set()
    backups = set()
    for g in fs["groups"]:
        if g["n"] != 0 and g["rgdt"]:
            backups.update(range(g["rgdt"][0], g["rgdt"][1] + 1))
    return backups


def build_inodes(model, fs, stats):
    jino = fs["journal_ino"]
    xattr_owners = defaultdict(list)
    rgdt = set()
    for g in fs["groups"]:
        if g["rgdt"]:
            rgdt.update(range(g["rgdt"][0], g["rgdt"][1] + 1))
    shifted = resize_backup_shift(fs)
    for ino in sorted(stats):
        st = stats[ino]
        if st["acl"]:
            xattr_owners[st["acl"]].append(ino)
        for kind, l0, p0, p1, unwritten in st["items"]:
            count = p1 - p0 + 1
            if ino == 7 and kind != "DIND":
                # The resize inode: its IND blocks are the primary
                # reserved GDT blocks, its data the backups.
                for b in range(p0, p1 + 1):
                    if kind != "IND" and b - 1 in shifted:
                        continue
                    e = model.exp[b] if 0 <= b < model.n else None
                    if b not in rgdt or e is None or \
                            e[0].role != "reserved_gdt":
                        model.oracle_errors.append(
                            "resize inode block %d (%s) is not a reserved "
                            "GDT block in dumpe2fs" % (b, kind))
                continue
            if kind.startswith("ETB"):
                model.put(p0, 1, Info("extent_tree", ino=ino,
                                      what="extent_tree"))
            elif kind in ("IND", "DIND", "TIND"):
                model.put(p0, 1, Info("indirect", ino=ino,
                                      what="indirect " + kind))
            elif ino == jino:
                # Split by journal part, block by block (few pieces).
                b = p0
                while b <= p1:
                    lb = l0 + (b - p0)
                    part = journal_part(fs, lb)
                    e = b
                    while e + 1 <= p1 and \
                            journal_part(fs, l0 + (e + 1 - p0)) == part:
                        e += 1
                    model.put(b, e - b + 1,
                              Info("journal", ino=ino, lblk0=lb, part=part))
                    b = e + 1
            elif st["type"] == "directory":
                model.put(p0, count, Info("directory", ino=ino, lblk0=l0))
            else:
                model.put(p0, count, Info("data", ino=ino, lblk0=l0,
                                          size=st["size"],
                                          unwritten=unwritten))
    if 7 in stats and "resize_inode" in fs["features"]:
        mapped = set()
        for kind, l0, p0, p1, _ in stats[7]["items"]:
            if kind != "DIND":
                mapped.update(range(p0, p1 + 1))
        mapped.update(b - 1 for b in list(mapped) if b - 1 in shifted)
        for b in sorted(rgdt - mapped)[:20]:
            model.oracle_errors.append("reserved GDT block %d is not in "
                                       "the resize inode's map" % b)
    for blk, owners in sorted(xattr_owners.items()):
        model.put(blk, 1, Info("xattr", ino=min(owners),
                               owners=sorted(owners)))


def build_free(model, fs, free):
    exp = model.exp
    for b in range(model.n):
        if free[b]:
            if exp[b] is not None:
                model.oracle_errors.append(
                    "block %d is free in dumpe2fs but is %s (ino %s)"
                    % (b, exp[b][0].what, exp[b][0].ino))
            else:
                exp[b] = (FREE, 0)
        elif exp[b] is None:
            exp[b] = (FREE_ALLOCATED, 0)


def cross_check_icheck(model, fs, owner_of):
    """icheck's owner of every non-free block against the model."""
    bad = 0
    shifted = resize_backup_shift(fs)
    for b, ino in owner_of.items():
        info = model.exp[b][0]
        if (ino is None and b in shifted) or (ino == 7 and b - 1 in shifted):
            continue            # see resize_backup_shift
        if info.role in OWNED_ROLES:
            want = info.ino
        elif info.role == "reserved_gdt" and \
                "resize_inode" in fs["features"]:
            want = 7        # the resize inode maps every one of them
        else:
            want = None
        if ino != want:
            bad += 1
            if bad <= 20:
                model.oracle_errors.append(
                    "icheck: block %d belongs to inode %s, but stat and "
                    "dumpe2fs say %s (ino %s)" % (b, ino, info.what, want))
    if bad > 20:
        model.oracle_errors.append("icheck: %d disagreements in all" % bad)


# --- fsevent-map ------------------------------------------------------------

class Mismatches:
    """Every mismatch is counted; the first LIMIT are kept in detail.  A
    mismatch on the block after the last detailed one, of the same kind
    and with the same message but for its numbers, joins it as a run
    ("and the next N blocks") instead of taking a detail of its own."""

    def __init__(self, limit):
        self.limit = limit
        self.items = []             # [first block, last block, kind, msg, shape]
        self.kinds = Counter()
        self.blocks = set()
        self.dropped = 0

    def add(self, block, kind, msg):
        self.kinds[kind] += 1
        if block is not None:
            self.blocks.add(block)
        shape = (kind, re.sub(r"\d+", "#", msg))
        last = self.items[-1] if self.items else None
        if last is not None and block is not None and last[1] is not None \
                and block == last[1] + 1 and last[4] == shape:
            last[1] = block
        elif len(self.items) < self.limit:
            self.items.append([block, block, kind, msg, shape])
        else:
            self.dropped += 1

    def __len__(self):
        return sum(self.kinds.values())


def describe(info, k, bs):
    d = {"role": info.role}
    if info.role in FIXED_ROLES:
        d["group"] = info.group
        if info.backup:
            d["backup"] = True
    if info.role == "inode_table":
        d["first_ino"] = info.first_ino0 + k
    if info.ino is not None:
        d["ino"] = info.ino
    if info.lblk0 is not None:
        d["position"] = (info.lblk0 + k) * bs
    if info.size is not None:
        d["i_size"] = info.size
    for key in ("unwritten", "allocated"):
        if getattr(info, key):
            d[key] = True
    if info.part:
        d["part"] = info.part
    if info.owners and len(info.owners) > 1:
        d["inos"] = info.owners
    return json.dumps(d)


def compare(fs, model, segs, image_size, names, mm):
    bs, isz, ipg = fs["bs"], fs["inode_size"], fs["ipg"]
    fs_bytes = fs["blocks"] * bs
    exp = model.exp
    end_covered = 0
    prev_off = -1
    checked_paths = set()
    stats = Counter()

    # Coverage and order.
    for i, s in enumerate(segs):
        off, ln = s["offset"], s["length"]
        if ln <= 0:
            mm.add(off // bs, "coverage", "segment %d has length %d: %s"
                   % (i, ln, json.dumps(s)))
        if off != end_covered:
            kind = "coverage"
            if s.get("dup") and off == prev_off:
                kind = "dup"
            mm.add(off // bs, kind, "segment %d starts at %d, expected %d "
                   "(previous ends there): %s"
                   % (i, off, end_covered, json.dumps(s)))
        prev_off = off
        end_covered = max(end_covered, off + ln)
    if end_covered != image_size:
        mm.add(None, "coverage", "segments end at %d, the image file has %d "
               "bytes" % (end_covered, image_size))
    outside = [s for s in segs if s["role"] == "outside"]
    if image_size > fs_bytes:
        if len(outside) != 1 or outside[0]["offset"] != fs_bytes or \
                outside[0]["offset"] + outside[0]["length"] != image_size or \
                segs[-1] is not outside[0]:
            mm.add(None, "outside", "expected one last 'outside' segment "
                   "[%d, %d), got %s" % (fs_bytes, image_size,
                                         json.dumps(outside)))
    elif outside:
        mm.add(None, "outside", "'outside' segments although the image is "
               "not larger than the filesystem: %s" % json.dumps(outside))

    for s in segs:
        role = s["role"]
        off, ln = s["offset"], s["length"]
        end = off + ln
        if role == "outside":
            if off < fs_bytes:
                mm.add(off // bs, "outside", "'outside' segment inside the "
                       "filesystem: %s" % json.dumps(s))
            continue
        if end > fs_bytes:
            mm.add(off // bs, "outside", "segment crosses the end of the "
                   "filesystem (%d): %s" % (fs_bytes, json.dumps(s)))
            end = fs_bytes
        if role not in ROLE_KEYS:
            mm.add(off // bs, "format", "unknown role: %s" % json.dumps(s))
            continue
        extra = set(s) - COMMON_KEYS - ROLE_KEYS[role]
        if extra:
            mm.add(off // bs, "format", "unexpected keys %s for role %s: %s"
                   % (sorted(extra), role, json.dumps(s)))
        for key in FLAG_KEYS:
            if key in s and s[key] is not True:
                mm.add(off // bs, "format", "%s is not true: %s"
                       % (key, json.dumps(s)))
        if s.get("dup"):
            mm.add(off // bs, "dup", "dup segment on a clean image: %s"
                   % json.dumps(s))

        # Segment-level checks.
        if role == "inode_table":
            fi = s.get("first_ino")
            if fi is None or s.get("group") != (fi - 1) // ipg:
                mm.add(off // bs, "group", "inode_table group %s does not "
                       "hold first_ino %s: %s" % (s.get("group"), fi,
                                                  json.dumps(s)))
            li = s.get("last_ino")
            if fi is not None and li is not None and \
                    li - fi + 1 != (ln + isz - 1) // isz and ln % isz == 0:
                mm.add(off // bs, "inode_range", "first_ino..last_ino %s..%s "
                       "is not the %d inodes of %d bytes: %s"
                       % (fi, li, ln // isz, ln, json.dumps(s)))
            # The last inode of the segment, from the oracle.
            lb = (end - 1) // bs
            e = exp[lb]
            if e[0].role == "inode_table" and li is not None:
                want = e[0].first_ino0 + e[1] + ((end - 1) % bs) // isz
                if want != li:
                    mm.add(lb, "inode_range", "last_ino %s, expected %d: %s"
                           % (li, want, json.dumps(s)))
        if role in OWNED_ROLES:
            ino = s.get("ino")
            key = (ino, s.get("path"), tuple(s.get("paths") or ()))
            if key not in checked_paths:
                checked_paths.add(key)
                check_path(fs, s, names, mm)

        # Fast path: a long free segment over free blocks.
        if role == "free" and off % bs == 0 and end % bs == 0:
            want = FREE_ALLOCATED if s.get("allocated") else FREE
            b0, b1 = off // bs, end // bs
            if all(exp[b][0] is want for b in range(b0, b1)):
                stats["blocks"] += b1 - b0
                continue

        # Piece by piece: cut at block boundaries.
        o = off
        while o < end:
            b = o // bs
            pe = min(end, (b + 1) * bs)
            check_piece(fs, s, o, pe - o, exp[b], b, mm)
            stats["pieces"] += 1
            o = pe
    return stats


def check_path(fs, s, names, mm):
    ino = s.get("ino")
    b = s["offset"] // fs["bs"]
    want = names.get(ino, [])
    got = s.get("path", "<missing>")
    if ino == 2 and not want:
        want = ["/"]
    if not want:
        special = fs["specials"].get(ino)
        if special is not None:
            if got != special:
                mm.add(b, "path", "inode %s: path %r, expected %r: %s"
                       % (ino, got, special, json.dumps(s)))
        elif got is not None:
            mm.add(b, "path", "inode %s has no name in ncheck, path should "
                   "be null: %s" % (ino, json.dumps(s)))
        if "paths" in s:
            mm.add(b, "path", "inode %s: paths without names: %s"
                   % (ino, json.dumps(s)))
        return
    if got not in want:
        mm.add(b, "path", "inode %s: path %r is not one of ncheck's %r"
               % (ino, got, want[:10]))
    if len(want) > 1:
        paths = s.get("paths")
        if paths is None or sorted(paths) != sorted(want):
            mm.add(b, "paths", "inode %s: paths %r, ncheck says %r"
                   % (ino, paths, sorted(want)[:10]))
    elif "paths" in s and s["paths"] != want:
        mm.add(b, "paths", "inode %s: paths %r for one name %r"
               % (ino, s["paths"], want))


def check_piece(fs, s, o, ln, e, b, mm):
    bs, isz = fs["bs"], fs["inode_size"]
    info, k = e
    role = s["role"]
    soff = s["offset"]

    def bad(kind, what, want, got):
        mm.add(b, kind, "block %d bytes [%d,+%d): %s: expected %s, got %s\n"
               "      expected %s\n      got      %s"
               % (b, o, ln, what, want, got, describe(info, k, bs),
                  json.dumps(s)))

    if role != info.role:
        bad("role", "role", info.role, role)
        return
    if role in FIXED_ROLES:
        if role == "inode_table":
            fi = s.get("first_ino")
            got_first = (fi + (o - soff) // isz) if fi is not None else None
            want_first = info.first_ino0 + k + (o - b * bs) // isz
            if got_first != want_first:
                bad("inode_range", "first inode of the piece", want_first,
                    got_first)
        elif s.get("group") != info.group:
            bad("group", "group", info.group, s.get("group"))
        if bool(s.get("backup")) != info.backup:
            bad("backup", "backup", info.backup, bool(s.get("backup")))
    elif s.get("backup"):
        bad("backup", "backup", False, True)
    if role in OWNED_ROLES:
        if s.get("ino") != info.ino:
            bad("ino", "owner inode", info.ino, s.get("ino"))
            return
    elif "ino" in s:
        bad("ino", "owner inode", None, s.get("ino"))
    if role in ("data", "directory", "journal"):
        pos = s.get("position")
        got = pos + (o - soff) if pos is not None else None
        want = (info.lblk0 + k) * bs + (o - b * bs)
        if got != want:
            bad("position", "position", want, got)
    elif "position" in s:
        bad("position", "position", None, s.get("position"))
    if role == "data":
        pos = (info.lblk0 + k) * bs + (o - b * bs)
        if pos < info.size < pos + ln:
            bad("eof_split", "segment not split at i_size %d" % info.size,
                "a split", "no split")
        want = pos >= info.size
        if bool(s.get("beyond_eof")) != want:
            bad("beyond_eof", "beyond_eof (i_size %d)" % info.size, want,
                bool(s.get("beyond_eof")))
    elif s.get("beyond_eof"):
        bad("beyond_eof", "beyond_eof", False, True)
    if bool(s.get("unwritten")) != info.unwritten:
        bad("unwritten", "unwritten", info.unwritten,
            bool(s.get("unwritten")))
    if bool(s.get("allocated")) != info.allocated:
        bad("allocated", "allocated", info.allocated,
            bool(s.get("allocated")))
    if s.get("part") != info.part:
        bad("part", "journal part", info.part, s.get("part"))
    if role == "xattr":
        want = info.owners if len(info.owners) > 1 else None
        got = s.get("inos")
        if (sorted(got) if got else None) != want:
            bad("inos", "xattr owners", want, got)


# --- main -------------------------------------------------------------------

def partition_start(device, number, size):
    """Partition NUMBER's first byte in DEVICE, per sfdisk; its size must
    be SIZE (the copy's)."""
    out, _ = run(["sfdisk", "--json", device])
    table = json.loads(out)["partitiontable"]
    unit = table.get("sectorsize", 512)
    for p in table["partitions"]:
        if int(re.search(r"(\d+)$", p["node"]).group(1)) == number:
            if p["size"] * unit != size:
                raise OracleError("partition %d of %s has %d bytes, the "
                                  "image %d" % (number, device,
                                                p["size"] * unit, size))
            return p["start"] * unit
    raise OracleError("sfdisk lists no partition %d in %s" % (number, device))


def main():
    global verbose
    ap = argparse.ArgumentParser(
        description="Check fsevent-map against dumpe2fs and debugfs on "
        "every block of an ext2/3/4 image.")
    ap.add_argument("--map", required=True, help="the fsevent-map binary")
    ap.add_argument("--details", type=int, default=20,
                    help="mismatches to print in detail (default 20)")
    ap.add_argument("-v", "--verbose", action="store_true")
    ap.add_argument("--device", help="the partitioned disk IMAGE came from")
    ap.add_argument("--partition", type=int, default=0,
                    help="IMAGE's partition number in --device")
    ap.add_argument("image")
    args = ap.parse_args()
    verbose = args.verbose
    image = args.image
    t0 = time.time()

    try:
        with tempfile.TemporaryDirectory(prefix="map-oracle.") as tmp:
            return check_image(args, image, tmp, t0)
    except OracleError as e:
        print("map-oracle: %s: ORACLE ERROR: %s" % (image, e), file=sys.stderr)
        return 2


def check_image(args, image, tmp, t0):
    name = os.path.basename(image)
    image_size = os.stat(image).st_size

    # 1. dumpe2fs: fixed metadata, free blocks, inodes in use.
    out, _ = run(["dumpe2fs", image])
    fs = parse_dumpe2fs(out)
    bs = fs["bs"]
    model = Model(fs)
    build_fixed(model, fs)
    free = free_blocks(fs)
    used_inodes = inodes_in_use(fs)
    log("%s: %d blocks of %d, %d groups, %d inodes in use" %
        (name, fs["blocks"], bs, len(fs["groups"]), len(used_inodes)))

    # 2. debugfs icheck: the owner of every block that is not free.
    nonfree = [b for b in range(fs["blocks"]) if not free[b]]
    cmds = chunk_commands("icheck", nonfree)
    res = debugfs_batch(image, cmds, tmp)
    owner_of = {}
    for i in range(len(cmds)):
        for line in res[i].splitlines():
            m = re.match(r"^(\d+)\t(\d+|<block not found>)$", line)
            if m:
                owner_of[int(m.group(1))] = (int(m.group(2))
                                             if m.group(2).isdigit() else None)
    missing = [b for b in nonfree if b not in owner_of]
    if missing:
        raise OracleError("icheck did not answer for %d blocks (first %d)" %
                          (len(missing), missing[0]))
    icheck_owners = set(v for v in owner_of.values() if v is not None)
    log("icheck: %d blocks in %d commands, %d owners (%.1fs)" %
        (len(nonfree), len(cmds), len(icheck_owners), time.time() - t0))

    # 3. debugfs stat: every inode in use, and every icheck owner.
    stat_inodes = sorted(set(used_inodes) | icheck_owners)
    res = debugfs_batch(image, ["stat <%d>" % i for i in stat_inodes],
                               tmp)
    stats = {}
    for i, ino in enumerate(stat_inodes):
        st = parse_stat(res[i])
        if st["type"] is None:
            raise OracleError("cannot parse stat <%d>: %r" %
                              (ino, res[i][:300]))
        stats[ino] = st
    for ino in icheck_owners:
        if ino not in used_inodes:
            model.oracle_errors.append("icheck: inode %d owns blocks but is "
                                       "free in the inode bitmap" % ino)

    # 4. debugfs ncheck: the names of every inode that owns something.
    owners = sorted(ino for ino, st in stats.items()
                    if st["items"] or st["acl"])
    names = defaultdict(list)
    if owners:
        cmds = chunk_commands("ncheck", owners)
        res = debugfs_batch(image, cmds, tmp)
        for i in range(len(cmds)):
            for line in res[i].splitlines():
                m = re.match(r"^(\d+)\t(.*)$", line)
                if m and m.group(1) != "Inode":
                    names[int(m.group(1))].append(normpath(m.group(2)))
        for ino in owners:
            names[ino] = sorted(set(names[ino]))
            st = stats[ino]
            if st["type"] != "directory" and names[ino] and \
                    len(names[ino]) != st["links"]:
                model.oracle_errors.append(
                    "ncheck found %d names for inode %d with %d links"
                    % (len(names[ino]), ino, st["links"]))
    log("stat + ncheck: %d inodes, %d owners (%.1fs)" %
        (len(stats), len(owners), time.time() - t0))

    # 5. The expected model.
    build_inodes(model, fs, stats)
    build_free(model, fs, free)
    cross_check_icheck(model, fs, owner_of)
    if model.oracle_errors:
        for e in model.oracle_errors[:50]:
            print("map-oracle: %s: oracle: %s" % (name, e), file=sys.stderr)
        raise OracleError("%d inconsistencies between debugfs and dumpe2fs"
                          % len(model.oracle_errors))

    # 6. fsevent-map, on the whole disk for a partition.
    base = 0
    if args.device:
        base = partition_start(args.device, args.partition, image_size)
        out, err = run([args.map, "--partition", str(args.partition),
                        args.device])
    else:
        out, err = run([args.map, image])
    segs = []
    for n, line in enumerate(out.splitlines()):
        try:
            segs.append(json.loads(line))
        except ValueError as e:
            raise OracleError("fsevent-map line %d is not JSON (%s): %r" %
                              (n + 1, e, line[:200]))
    mm = Mismatches(args.details)
    for s in segs:
        if s.get("partition") != args.partition:
            mm.add(None, "partition", "segment of partition %r, expected %d: "
                   "%s" % (s.get("partition"), args.partition, json.dumps(s)))
        if isinstance(s.get("offset"), int):
            if s["offset"] < base:
                mm.add(None, "partition", "segment before the partition's "
                       "start %d: %s" % (base, json.dumps(s)))
            s["offset"] -= base
    for w in err.splitlines():
        if w.strip():
            mm.add(None, "warning", "fsevent-map warned on a clean image: "
                   + w)
    cstats = compare(fs, model, segs, image_size, names, mm)

    roles = Counter(info.role for info, _ in model.exp)
    summary = ", ".join("%s %d" % (r, c) for r, c in sorted(roles.items()))
    # What the image exercised, for the log.
    flags = []
    kinds = Counter(kind for ino, st in stats.items() if ino != 7
                    for kind, *_ in st["items"])
    for kind in ("IND", "DIND", "TIND"):
        if kinds[kind]:
            flags.append(kind)
    etb = max([int(kind[3:]) for st in stats.values()
               for kind, *_ in st["items"] if kind.startswith("ETB")] or [-1])
    if etb >= 0:
        flags.append("extent depth %d" % (etb + 1))
    if any(st["flags"] & 0x1000 for st in stats.values()):
        flags.append("htree")
    if any(st["inline"] for st in stats.values()):
        flags.append("inline data")
    if any(info.unwritten for info, _ in model.exp):
        flags.append("unwritten")
    if any(info.role == "data" and (info.lblk0 + k) * bs >= info.size
           for info, k in model.exp):
        flags.append("blocks past EOF")
    if any(info.owners and len(info.owners) > 1 for info, _ in model.exp):
        flags.append("shared xattr")
    if any(len(v) > 1 for v in names.values()):
        flags.append("hard links")
    if any(info is FREE_ALLOCATED for info, _ in model.exp):
        flags.append("free allocated")
    if any(info.part == "fast_commit" for info, _ in model.exp):
        flags.append("fast commit")
    if any(info.role == "mmp" for info, _ in model.exp):
        flags.append("mmp")
    if any(info.role == "group_descriptors" for info, _ in model.exp) and \
            any(g["gdt_meta"] is not None for g in fs["groups"]):
        flags.append("meta_bg")
    specials = sorted(set(fs["specials"][i] for i in owners
                          if i in fs["specials"] and not names.get(i)))
    if specials:
        flags.append(" ".join(specials))
    if image_size > fs["blocks"] * bs:
        flags.append("outside")
    print("map-oracle: %s: %d-byte blocks x %d, %d segments, %d inodes "
          "owning blocks [%s]%s (%.1fs)"
          % (name, bs, fs["blocks"], len(segs), len(owners), summary,
             (" +" + ", ".join(flags)) if flags else "", time.time() - t0))
    if len(mm) == 0:
        print("map-oracle: %s: PASS: all %d blocks agree" %
              (name, fs["blocks"]))
        return 0
    print("map-oracle: %s: FAIL: %d mismatches on %d blocks (%s)" %
          (name, len(mm), len(mm.blocks),
           ", ".join("%s %d" % kv for kv in sorted(mm.kinds.items()))))
    for first, last, kind, msg, _ in mm.items:
        print("  [%s] %s" % (kind, msg))
        if last != first:
            print("      ... and the same on the next %d blocks, to block %d"
                  % (last - first, last))
    if mm.dropped:
        print("  ... and %d more mismatches" % mm.dropped)
    # Every mismatching block, as ranges.
    blocks = sorted(mm.blocks)
    ranges = []
    for b in blocks:
        if ranges and ranges[-1][1] == b - 1:
            ranges[-1][1] = b
        else:
            ranges.append([b, b])
    text = ", ".join("%d" % a if a == b else "%d-%d" % (a, b)
                     for a, b in ranges)
    print("  mismatching blocks: %s" % (text[:4000] +
                                        (" ..." if len(text) > 4000 else "")))
    return 1


if __name__ == "__main__":
    sys.exit(main())
