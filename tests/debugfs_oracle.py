"""tests/debugfs_oracle.py: where a file's blocks are and what it is
called, from debugfs (the independent oracle), never from the plugin.
Shared by the Python parts of the event tests."""
import re
import subprocess


def debugfs(img, cmd):
    r = subprocess.run(["debugfs", "-R", cmd, img], stdout=subprocess.PIPE,
                       stderr=subprocess.DEVNULL, text=True)
    assert r.returncode == 0, (cmd, r.returncode)
    return r.stdout


class File:
    """ino, size, blocks (physical, by logical block) and names (every
    hard link, sorted) of one file."""


def file_info(img, path, bs):
    f = File()
    st = debugfs(img, "stat " + path)
    f.ino = int(re.search(r"Inode: (\d+)", st).group(1))
    f.size = int(re.search(r"Size: (\d+)", st).group(1))
    f.blocks = [int(b) for b in debugfs(img, "blocks " + path).split()]
    assert len(f.blocks) == (f.size + bs - 1) // bs, (path, f.size, f.blocks)
    # bmap, block by block, must agree (small files only: it is slow).
    if len(f.blocks) <= 8:
        bm = [int(debugfs(img, "bmap %s %d" % (path, i)).strip())
              for i in range(len(f.blocks))]
        assert bm == f.blocks, (path, bm, f.blocks)
    names = []
    for line in debugfs(img, "ncheck %d" % f.ino).splitlines()[1:]:
        i, name = line.split("\t", 1)
        assert int(i) == f.ino, line
        names.append("/" + name.lstrip("/"))  # debugfs prints "//a"
    f.names = sorted(names)
    assert path in f.names, (path, f.names)
    return f
