// Package blockmap decides which parts of a disk carry data worth copying.
//
// Two methods work together. A block that reads as all zeros carries nothing
// and is restored by zeroing, not by copying (IsZero: the caller hands over
// the bytes it already holds). And a filesystem knows which of its blocks it
// uses: Build reads a disk's partition table and, for each partition, the
// allocation metadata of its filesystem (ext2/3/4 block bitmaps, FAT tables,
// NTFS's $Bitmap, exFAT's allocation bitmap, the HFS+ allocation file, the
// swap header), and returns a Map of the bytes that matter. Build reads
// the first bytes of the disk and of each partition (at most 128 KiB and 68
// KiB), then only metadata: descriptors, bitmaps, FATs; never the files.
//
// A map errs on one side only: it may call a free block used, never a used
// block free. Whatever Build does not understand (an unknown or damaged
// filesystem, the gaps between partitions) it leaves to zero detection: such
// a Region has NonZero set and counts as used throughout.
//
// The package never writes, and never decides what to do with a map: the
// image scanner and the restore engine do.
package blockmap
