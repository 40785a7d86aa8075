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


def main():
    iso, out, size = sys.argv[1], sys.argv[2], int(sys.argv[3])
    with open(iso, "rb") as f:
        b = f.read()
    off = next((o for o in range(0, len(b) - 1536, 512) if b[o + 1024:o + 1026] == b"H+"), None)
    if off is None:
        sys.exit("hfsplus_grow: no HFS+ volume header in %s" % iso)
    h = bytearray(b[off + 1024:off + 1536])
    bs, total, free = struct.unpack(">III", h[0x28:0x34])
    if bs != 2048 or free != 0:
        sys.exit("hfsplus_grow: %s: block size %d, %d free: not the libisofs volume this expects" % (iso, bs, free))
    astart, acount = struct.unpack(">II", h[0x70 + 16:0x70 + 24])
    new = size // bs
    if new < total or new > acount * bs * 8:
        sys.exit("hfsplus_grow: %d blocks of %d do not fit between the volume's %d blocks and its allocation file's %d bits"
                 % (new, bs, total, acount * bs * 8))
    vol = bytearray(b[off:off + total * bs])
    del b
    vol.extend(bytes((new - total) * bs))
    bm = astart * bs

    def setbit(n, on):
        if on:
            vol[bm + n // 8] |= 0x80 >> (n % 8)
        else:
            vol[bm + n // 8] &= ~(0x80 >> (n % 8)) & 0xFF

    for n in range(astart, astart + acount):
        setbit(n, True)
    setbit(total - 1, False)
    vol[total * bs - 1024:total * bs - 512] = bytes(512)
    for n in range(total, new):
        setbit(n, False)
    setbit(new - 1, True)
    used = sum(bin(x).count("1") for x in vol[bm:bm + new // 8])
    used += sum(1 for n in range(new // 8 * 8, new) if vol[bm + n // 8] & (0x80 >> (n % 8)))
    attrs = struct.unpack(">I", h[4:8])[0] & ~(1 << 15)
    struct.pack_into(">I", h, 4, attrs)
    struct.pack_into(">II", h, 0x2C, new, new - used)
    struct.pack_into(">Q", h, 0x70, (new + 7) // 8)
    vol[1024:1536] = h
    vol[new * bs - 1024:new * bs - 512] = h
    with open(out, "wb") as f:
        f.write(vol)
    print("blocks=%d free=%d block-size=%d" % (new, new - used, bs))


main()
