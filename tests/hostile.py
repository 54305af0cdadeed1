# tests/hostile.py: the raw-write side of tests/test-hostile.sh.  A
# hostile guest writes whatever blocks it likes, with valid checksums;
# this sends the blocks in which two images differ to the server under
# test as raw libnbd pwrites, in a chosen order, and says what became
# of each write.
#
#   hostile.py send SOCK FROM TO ORDER   the blocks of TO that differ
#                                        from FROM (4096-byte blocks)
#   hostile.py diff FROM TO              the differing blocks: N,N,...
#   hostile.py bogus-commit FROM TO      TO's new commit block gets
#                                        a wrong sequence number
#   hostile.py retarget IMG BLK FROM TO  a descriptor's tag retargeted
#   hostile.py put32 IMG BLK OFF VALUE   a little-endian word written
#   hostile.py jclean IMG JSB            the journal marked empty
#   hostile.py alive SOCK                the server answers a read
#   hostile.py write SOCK BLOCK          overwrite BLOCK (must succeed)
#   hostile.py raw SOCK OFFSET FILE      write FILE's bytes at OFFSET
#
# ORDER:
#   asc, desc     one pwrite per differing block, in block order or the
#                 reverse
#   journal       blocks outside the journal first, then the journal's,
#                 commit blocks last (what a well-behaved jbd2 does)
#   commit-first  commit blocks first, then everything else in order
#   jsb-last      the log (commit blocks last) while the journal is
#                 still clean, then the journal superblock that points
#                 at it, then the rest (the filesystem's superblock)
#   split-commit  as journal, but each commit block in two 2048-byte
#                 writes
#   sub512        as journal, every block in 512-byte writes
#   ORDER-noflush any of these without the final NBD flush
#   one           a single pwrite from the first differing block to the
#                 last (the blocks in between as they are in TO)
#
# A write that the server refuses is an expected outcome (it is how a
# veto shows); it is printed, not raised.  A lost connection is: the
# server must survive whatever it is sent.
import errno
import os
import struct
import sys

import nbd

BS = 4096
JBD2_MAGIC = 0xC03B3998


def connect(sock):
    h = nbd.NBD()
    h.connect_unix(sock)
    return h


def jbd2_type(buf):
    magic, btype, seq = struct.unpack(">III", buf[:12])
    if magic != JBD2_MAGIC:
        return None
    return btype


def differing(a, b):
    sa, sb = os.path.getsize(a), os.path.getsize(b)
    assert sa == sb, ("sizes differ", sa, sb)
    out = []
    with open(a, "rb") as fa, open(b, "rb") as fb:
        blk = 0
        while True:
            x, y = fa.read(BS), fb.read(BS)
            if not x:
                break
            if x != y:
                out.append((blk, y))
            blk += 1
    return out


quiet = False


def pwrite(h, buf, off, what):
    try:
        h.pwrite(buf, off)
        if not quiet:
            print("  write %-28s ok" % what)
        return True
    except nbd.Error as e:
        name = errno.errorcode.get(e.errnum, str(e.errnum))
        print("  write %-28s refused: %s" % (what, name))
        return False


def send(sock, a, b, order):
    flush = not order.endswith("-noflush")
    order = order.replace("-noflush", "")
    blocks = differing(a, b)
    if not blocks:
        print("  (no block differs)")
        return
    commits = [(n, d) for n, d in blocks if jbd2_type(d) == 2]
    journal = [(n, d) for n, d in blocks if jbd2_type(d) in (1, 5)]
    # Journal copies of blocks have no header: a block between the
    # first and the last journal block of this change counts as one.
    jblocks = [n for n, d in blocks if jbd2_type(d) is not None]
    lo, hi = (min(jblocks), max(jblocks)) if jblocks else (0, -1)
    inj = [(n, d) for n, d in blocks
           if lo <= n <= hi and (n, d) not in commits]
    rest = [(n, d) for n, d in blocks
            if not lo <= n <= hi and (n, d) not in commits]
    h = connect(sock)
    names = [str(n) for n, _ in blocks]
    if len(names) > 24:
        names = names[:12] + ["..."] + names[-4:]
    print("  %d blocks differ: %s" % (len(blocks), " ".join(names)))
    global quiet
    quiet = len(blocks) > 24
    if order == "asc":
        seq = blocks
    elif order == "desc":
        seq = blocks[::-1]
    elif order in ("journal", "split-commit", "sub512"):
        seq = rest + inj + commits
    elif order == "jsb-last":
        jsb = [(n, d) for n, d in inj if jbd2_type(d) in (3, 4)]
        seq = [x for x in inj if x not in jsb] + commits + jsb + rest
    elif order == "commit-first":
        seq = commits + rest + inj
    elif order == "one":
        first, last = blocks[0][0], blocks[-1][0]
        with open(b, "rb") as f:
            f.seek(first * BS)
            buf = f.read((last - first + 1) * BS)
        pwrite(h, buf, first * BS, "blocks %d-%d" % (first, last))
        h.shutdown()
        return
    else:
        raise SystemExit("unknown order " + order)
    for n, d in seq:
        kind = "commit" if (n, d) in commits else \
            "journal" if (n, d) in inj else "block"
        if order == "split-commit" and kind == "commit":
            pwrite(h, d[:2048], n * BS, "commit %d, first half" % n)
            pwrite(h, d[2048:], n * BS + 2048, "commit %d, second half" % n)
        elif order == "sub512":
            for k in range(0, BS, 512):
                pwrite(h, d[k:k + 512], n * BS + k,
                       "%s %d +%d" % (kind, n, k))
        else:
            pwrite(h, d, n * BS, "%s %d" % (kind, n))
    if flush:
        try:
            h.flush()
            print("  flush                              ok")
        except nbd.Error as e:
            print("  flush                              refused: %s" %
                  errno.errorcode.get(e.errnum, str(e.errnum)))
    h.shutdown()


def main():
    cmd = sys.argv[1]
    if cmd == "send":
        send(*sys.argv[2:6])
    elif cmd == "diff":
        print(",".join(str(n) for n, _ in differing(sys.argv[2], sys.argv[3])))
    elif cmd == "bogus-commit":
        # The commit block in which TO differs from FROM gets another
        # sequence number.
        for n, d in differing(sys.argv[2], sys.argv[3]):
            if jbd2_type(d) == 2:
                seq = struct.unpack(">I", d[8:12])[0]
                with open(sys.argv[3], "r+b") as f:
                    f.seek(n * BS + 8)
                    f.write(struct.pack(">I", seq + 5))
                print("  commit block %d: sequence %d -> %d" % (n, seq, seq + 5))
                break
        else:
            raise SystemExit("no commit block")
    elif cmd == "retarget":
        # retarget IMG BLOCK FROM TO: the descriptor block at BLOCK's
        # tag for filesystem block FROM says TO instead.
        img, blk, frm, to = sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
        with open(img, "r+b") as f:
            f.seek(blk * BS)
            d = f.read(BS)
            assert jbd2_type(d) == 1, "not a descriptor block"
            k = d.find(struct.pack(">I", frm), 12)
            assert k >= 12, "no tag for block %d" % frm
            f.seek(blk * BS + k)
            f.write(struct.pack(">I", to))
        print("  descriptor %d: the tag at +%d: block %d -> %d" % (blk, k, frm, to))
    elif cmd == "put32":
        # put32 IMG BLOCK OFFSET VALUE: a little-endian 32-bit word.
        img, blk, off, v = sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
        with open(img, "r+b") as f:
            f.seek(blk * BS + off)
            f.write(struct.pack("<I", v))
    elif cmd == "jclean":
        # jclean IMG JSB: the journal superblock at block JSB says the
        # log is empty (s_start 0).
        img, blk = sys.argv[2], int(sys.argv[3])
        with open(img, "r+b") as f:
            f.seek(blk * BS)
            assert jbd2_type(f.read(12)) in (3, 4), "not a journal superblock"
            f.seek(blk * BS + 28)
            f.write(struct.pack(">I", 0))
    elif cmd == "alive":
        h = connect(sys.argv[2])
        buf = h.pread(BS, 1024)
        assert len(buf) == BS
        h.shutdown()
    elif cmd == "write":
        # The write must succeed.  Its flush may be refused once: on
        # ext2 a flush decides every metadata block held since the last
        # one, an attacker's too (a refused epoch is dropped), so the
        # write and its flush are tried again.
        h = connect(sys.argv[2])
        blk = int(sys.argv[3])
        h.pwrite(os.urandom(BS), blk * BS)
        try:
            h.flush()
        except nbd.Error as e:
            print("  the control's flush was refused (%s): the epoch held "
                  "before it; again" % errno.errorcode.get(e.errnum, e.errnum))
            h.pwrite(os.urandom(BS), blk * BS)
            h.flush()
        h.shutdown()
    elif cmd == "raw":
        h = connect(sys.argv[2])
        with open(sys.argv[4], "rb") as f:
            buf = f.read()
        ok = pwrite(h, buf, int(sys.argv[3]), "%d bytes at %s" % (len(buf), sys.argv[3]))
        h.flush()
        h.shutdown()
    else:
        raise SystemExit("unknown command " + cmd)


if __name__ == "__main__":
    main()
