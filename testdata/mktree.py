#!/usr/bin/env python3
"""mktree.py DIR MIB SEED: fill DIR with a system-like tree of about MIB MiB.

Deterministic for a given MIB and SEED. Sizes follow a root filesystem's
shape (about 33 KiB on average): most files are a few KiB, one in a hundred
is MiBs, one in two thousand tens of MiBs;
about a fifth of each file is text (compressible), the rest random bytes.
Also: folders three deep, symlinks, hard links, user xattrs, a few sparse
files, FIFOs, and modes and owners other than root's. Prints one line:
items=N bytes=N.
"""
import os
import random
import sys


def main():
    root, mib, seed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    rng = random.Random(seed)
    budget = mib << 20
    total = items = 0
    dirs = []
    for a in range(12):
        for b in range(12):
            for c in range(6):
                d = os.path.join(root, "d%02d" % a, "s%02d" % b, "t%d" % c)
                os.makedirs(d, exist_ok=True)
                dirs.append(d)
    items += 12 + 12 * 12 + len(dirs)
    files = []
    n = 0
    while total < budget:
        r = rng.random()
        if r < 0.85:
            size = rng.randint(0, 12 << 10)
        elif r < 0.99:
            size = rng.randint(12 << 10, 128 << 10)
        elif r < 0.9995:
            size = rng.randint(128 << 10, 2 << 20)
        else:
            size = rng.randint(2 << 20, 32 << 20)
        size = min(size, budget - total)
        p = os.path.join(rng.choice(dirs), "f%06d" % n)
        n += 1
        text = size // 5
        with open(p, "wb") as f:
            line = ("line %d of a file of the benchmark tree\n" % n).encode()
            f.write((line * (text // len(line) + 1))[:text])
            f.write(rng.randbytes(size - text))
        os.chmod(p, rng.choice([0o644, 0o644, 0o755, 0o600, 0o640]))
        if rng.random() < 0.05:
            os.chown(p, 1000, 1000)
        if rng.random() < 0.01:
            os.setxattr(p, "user.bench", b"value %d" % n)
        files.append(p)
        total += size
        items += 1
    for i in range(min(2000, len(files) // 10)):
        t = rng.choice(files)
        os.symlink(os.path.relpath(t, os.path.dirname(t)), t + ".link%d" % i)
        items += 1
    for i in range(min(500, len(files) // 40)):
        t = rng.choice(files)
        os.link(t, t + ".hard%d" % i)
        items += 1
    # rsync -aHAX fills holes (it keeps them only with -S): small sparse
    # files, so that the benchmark does not hinge on them.
    for i in range(2):
        p = os.path.join(root, "sparse%d.img" % i)
        with open(p, "wb") as f:
            f.truncate(16 << 20)
            for k in range(8):
                f.seek(k * (2 << 20))
                f.write(rng.randbytes(64 << 10))
        total += 8 * (64 << 10)
        items += 1
    for i in range(4):
        os.mkfifo(os.path.join(root, "fifo%d" % i), 0o600)
        items += 1
    print("items=%d bytes=%d" % (items, total))


main()
