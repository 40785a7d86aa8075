#!/usr/bin/env python3
"""hfsplus_grow.py ISO OUT SIZE: cuts the HFS+ volume out of xorriso's
hybrid ISO and makes it one that Linux's hfsplus mounts read-write, SIZE
bytes long.

Debian 12 has no mkfs.hfsplus (hfsprogs is not packaged); libisofs is the
only HFS+ writer on the machine. Its volume is made for a CD: marked
software-locked (Linux mounts it read-only), with no free block and a
catalog B-tree with no free node (Linux reserves nodes before any change,
and grows the catalog for them, so it refuses a read-write mount of a full
volume: "extend alloc file!"). This grows the volume in place, without
moving anything: the allocation file libisofs writes has room for up to
16383 more blocks (its size is rounded up to whole blocks), so the volume
can end later and the new blocks are free. Changed: the total and free
block counts, the allocation file's logical size, the software-lock bit
(cleared), the bitmap (the blocks of the allocation file itself, which
libisofs leaves free, marked used; the old last block, which held the
alternate header, freed; the new last block marked used) and the alternate
volume header, written at its new place 1024 bytes before the end. Files
and the catalog are libisofs's, byte for byte; every later change to the
volume is the kernel's.
"""
import struct
import sys


def hfs_partition(f):
    """The byte offset of the Apple_HFS partition in xorriso's Apple
    partition map (after the ISO 9660 tree, which grows with the files)."""
    head = f.read(64 << 10)
    if head[:2] != b"ER":
        return None
    bsz = struct.unpack(">H", head[2:4])[0] or 512
    for i in range(1, 64):
        e = head[i * bsz:(i + 1) * bsz]
        if len(e) < 80 or e[:2] != b"PM":
            return None
        if e[48:80].rstrip(b"\0") == b"Apple_HFS":
            start = struct.unpack(">I", e[8:12])[0] * bsz
            f.seek(start + 1024)
            return start if f.read(2) == b"H+" else None
    return None


def main():
    iso, out, size = sys.argv[1], sys.argv[2], int(sys.argv[3])
    # Read in pieces: the bench's volumes are GiBs.
    with open(iso, "rb") as f:
        off = hfs_partition(f)
        if off is None:
            sys.exit("hfsplus_grow: %s has no Apple_HFS partition in its Apple partition map" % iso)
        f.seek(off + 1024)
        h = bytearray(f.read(512))
        bs, total, free = struct.unpack(">III", h[0x28:0x34])
        if bs != 2048 or free != 0:
            sys.exit("hfsplus_grow: %s: block size %d, %d free: not the libisofs volume this expects" % (iso, bs, free))
        astart, acount = struct.unpack(">II", h[0x70 + 16:0x70 + 24])
        new = size // bs
        if new < total or new > acount * bs * 8:
            sys.exit("hfsplus_grow: %d blocks of %d do not fit between the volume's %d blocks and its allocation file's %d bits"
                     % (new, bs, total, acount * bs * 8))
        f.seek(off)
        with open(out, "wb") as o:
            left = total * bs
            while left > 0:
                chunk = f.read(min(left, 8 << 20))
                if not chunk:
                    sys.exit("hfsplus_grow: %s ends inside its HFS+ volume" % iso)
                o.write(chunk)
                left -= len(chunk)
            o.truncate(new * bs)
    with open(out, "r+b") as o:
        o.seek(astart * bs)
        bm = bytearray(o.read(acount * bs))

        def setbit(n, on):
            if on:
                bm[n // 8] |= 0x80 >> (n % 8)
            else:
                bm[n // 8] &= ~(0x80 >> (n % 8)) & 0xFF

        for n in range(astart, astart + acount):
            setbit(n, True)
        setbit(total - 1, False)
        for n in range(total, new):
            setbit(n, False)
        setbit(new - 1, True)
        used = sum(bin(x).count("1") for x in bm[:new // 8])
        used += sum(1 for n in range(new // 8 * 8, new) if bm[n // 8] & (0x80 >> (n % 8)))
        attrs = struct.unpack(">I", h[4:8])[0] & ~(1 << 15)
        struct.pack_into(">I", h, 4, attrs)
        struct.pack_into(">II", h, 0x2C, new, new - used)
        struct.pack_into(">Q", h, 0x70, (new + 7) // 8)
        o.seek(astart * bs)
        o.write(bm)
        # The old alternate header is gone; the new one is 1024 bytes
        # before the new end.
        o.seek(total * bs - 1024)
        o.write(bytes(512))
        for at in (1024, new * bs - 1024):
            o.seek(at)
            o.write(h)
    print("blocks=%d free=%d block-size=%d" % (new, new - used, bs))


main()
