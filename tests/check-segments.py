#!/usr/bin/env python3
# tests/check-segments.py: check fsevent-map's output for one image.
#
#   check-segments.py SIZE SEGMENTS [SUMMARY]
#
# SIZE is the image's size in bytes, SEGMENTS the output of
# "fsevent-map IMAGE", SUMMARY that of "fsevent-map --summary IMAGE".
# Every line must be a JSON object; the segments must be in order of
# offset and cover [0, SIZE) exactly, without gaps; segments may overlap
# only where the tool says so ("dup": true, bytes claimed by several
# owners).  The summary must agree with the segments.  On success it
# prints the summary's warnings count (or "-") and exits 0; otherwise
# it prints every problem found (at most 20) to stdout and exits 1.

import json
import sys

ROLES = {
    "superblock", "group_descriptors", "reserved_gdt", "block_bitmap",
    "inode_bitmap", "inode_table", "journal", "mmp", "extent_tree",
    "indirect", "directory", "xattr", "data", "free", "outside",
}
MAX_PROBLEMS = 20


def main():
    if len(sys.argv) not in (3, 4):
        sys.stderr.write("usage: check-segments.py SIZE SEGMENTS [SUMMARY]\n")
        return 2
    size = int(sys.argv[1])
    problems = []

    def problem(msg):
        if len(problems) < MAX_PROBLEMS:
            problems.append(msg)

    covered = 0                 # end of the bytes covered so far
    prev_offset = -1
    prev_dup = False
    cluster = 0                 # end of the last segment not flagged dup
    covered_dup = False         # the segment reaching COVERED is a dup
    total = 0                   # sum of lengths (dups counted each time)
    roles = {}
    nsegs = 0
    with open(sys.argv[2], "rb") as f:
        for lineno, raw in enumerate(f, 1):
            where = "segments line %d" % lineno
            try:
                seg = json.loads(raw)
            except ValueError as e:
                problem("%s: not JSON (%s): %r" % (where, e, raw[:200]))
                continue
            if not isinstance(seg, dict):
                problem("%s: not a JSON object" % where)
                continue
            off, length, role = seg.get("offset"), seg.get("length"), seg.get("role")
            if not isinstance(off, int) or not isinstance(length, int):
                problem("%s: offset/length missing or not integers" % where)
                continue
            if role not in ROLES:
                problem("%s: unknown role %r" % (where, role))
            if length <= 0:
                problem("%s: length %d is not positive" % (where, length))
            if off < prev_offset and not (seg.get("dup") and prev_dup and
                                          off >= cluster):
                # Where owners share bytes, the tool gives all the
                # segments of one owner's run before the next owner's
                # (a data run split at its file's end gives two), so
                # offsets may go back, but only among dup segments and
                # never before the end of the last segment that is not.
                problem("%s: offset %d goes back (previous %d)" %
                        (where, off, prev_offset))
            if off > covered:
                problem("%s: gap [%d, %d) not covered" % (where, covered, off))
            elif off < covered and not seg.get("dup"):
                # Overlap is allowed only between segments flagged dup.
                problem("%s: segment at %d overlaps bytes up to %d but is "
                        "not flagged dup" % (where, off, covered))
            elif off < covered and not covered_dup:
                problem("%s: overlaps a previous segment (up to %d) that "
                        "is not flagged dup" % (where, covered))
            if role == "inode_table":
                fi, li = seg.get("first_ino"), seg.get("last_ino")
                if not isinstance(fi, int) or not isinstance(li, int) or fi > li:
                    problem("%s: bad inode range %r..%r" % (where, fi, li))
            if role == "outside" and off + length != size:
                problem("%s: 'outside' does not end at the end of the image"
                        % where)
            prev_offset = off
            prev_dup = bool(seg.get("dup"))
            if not prev_dup:
                cluster = off + length
            if off + length > covered:
                covered = off + length
                covered_dup = bool(seg.get("dup"))
            total += length
            roles[role] = roles.get(role, 0) + length
            nsegs += 1
    if covered != size:
        problem("segments cover [0, %d), the image has %d bytes" %
                (covered, size))
    if size > 0 and nsegs == 0:
        problem("no segments")

    warnings = "-"
    if len(sys.argv) == 4:
        got_total = None
        with open(sys.argv[3], "rb") as f:
            for lineno, raw in enumerate(f, 1):
                where = "summary line %d" % lineno
                try:
                    rec = json.loads(raw)
                except ValueError as e:
                    problem("%s: not JSON (%s): %r" % (where, e, raw[:200]))
                    continue
                if not isinstance(rec, dict) or "role" not in rec:
                    problem("%s: not an object with a role" % where)
                    continue
                if rec["role"] == "total":
                    got_total = rec.get("bytes")
                    warnings = rec.get("warnings", "-")
                elif rec.get("bytes") != roles.get(rec["role"]):
                    problem("%s: %s has %r bytes, the segments %r" %
                            (where, rec["role"], rec.get("bytes"),
                             roles.get(rec["role"])))
        if got_total is None:
            problem("summary: no total line")
        elif got_total != total:
            problem("summary: total %r bytes, the segments add up to %d" %
                    (got_total, total))

    if problems:
        for p in problems:
            print(p)
        return 1
    print(warnings)
    return 0


if __name__ == "__main__":
    sys.exit(main())
