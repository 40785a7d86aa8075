package partition

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"

	"github.com/asrlinux/asr/internal/aligned"
)

// Resized is a partition table adjusted for a larger disk.
type Resized struct {
	// Head is the disk's first bytes with the adjusted table: the
	// protective MBR and primary GPT header (and, when a partition grew,
	// the entries), or the MBR. Where the table changed it is a copy in
	// aligned memory (see package aligned): a restore writes it, its
	// first chunk, past the page cache as it is.
	Head []byte
	// Backup holds the GPT backup entries and header, to be written at
	// BackupOff (the end of the new disk); nil for an MBR.
	Backup    []byte
	BackupOff int64
	// Grown is the partition Resize enlarged, as it is now; nil if none.
	Grown *Partition
	// Changed is false when the table needed nothing: no GPT backup to
	// move and no partition to grow.
	Changed bool
}

// ErrNoGrow says the last partition cannot be enlarged: it is not the last
// thing on the disk's table, or the table cannot say so.
var ErrNoGrow = errors.New("the last partition cannot be grown")

// Resize adjusts the partition table in head, the first bytes of a disk
// image of oldSize bytes, for a disk of newSize bytes. A GPT's backup
// header and entries move to the end of the new disk and its last usable
// sector follows them, so the result is a valid GPT. With grow, the
// partition that ends last is enlarged to the last usable sector (rounded
// down to a MiB boundary), in a GPT or an MBR. head must hold the GPT
// entries; Resize does not modify it. A head with no partition table is
// returned unchanged.
func Resize(head []byte, oldSize, newSize int64, grow bool) (*Resized, error) {
	if newSize < oldSize {
		return nil, fmt.Errorf("new disk of %d bytes is smaller than the image's %d", newSize, oldSize)
	}
	t := Parse(head)
	switch t.Scheme {
	case GPT:
		return resizeGPT(head, t, oldSize, newSize, grow)
	case MBR:
		if !grow {
			return &Resized{Head: head}, nil
		}
		return growMBR(head, t, newSize)
	}
	return &Resized{Head: head}, nil
}

func resizeGPT(head []byte, t *Table, oldSize, newSize int64, grow bool) (*Resized, error) {
	ss := int64(t.SectorSize)
	out := aligned.Clone(head) // see Resized.Head
	h := out[ss:]
	hsize := int64(binary.LittleEndian.Uint32(h[12:]))
	entLBA := int64(binary.LittleEndian.Uint64(h[72:]))
	n := int64(binary.LittleEndian.Uint32(h[80:]))
	esz := int64(binary.LittleEndian.Uint32(h[84:]))
	entLen := n * esz
	if entLBA < 2 || entLen <= 0 || entLBA*ss+entLen > int64(len(out)) {
		return nil, fmt.Errorf("GPT entries at sector %d (%d bytes) are not in the first %d bytes of the image", entLBA, entLen, len(out))
	}
	entSectors := (entLen + ss - 1) / ss
	newLast := newSize/ss - 1
	newLastUsable := newLast - entSectors - 1
	backupLBA := int64(binary.LittleEndian.Uint64(h[32:]))
	lastUsable := int64(binary.LittleEndian.Uint64(h[48:]))
	res := &Resized{Head: out}
	if backupLBA == newLast && !grow {
		return &Resized{Head: head}, nil
	}
	if newLastUsable < lastUsable {
		return nil, fmt.Errorf("GPT's last usable sector %d lies beyond the new disk's %d", lastUsable, newLastUsable)
	}
	entries := out[entLBA*ss : entLBA*ss+entLen]
	if grow {
		// The partition that ends last.
		best := -1
		var bestEnd int64
		for i := range n {
			e := entries[i*esz:]
			if bytes.Equal(e[:16], make([]byte, 16)) {
				continue
			}
			if end := int64(binary.LittleEndian.Uint64(e[40:])); best < 0 || end > bestEnd {
				best, bestEnd = int(i), end
			}
		}
		if best < 0 {
			return nil, fmt.Errorf("%w: the GPT has no partitions", ErrNoGrow)
		}
		e := entries[int64(best)*esz:]
		first := int64(binary.LittleEndian.Uint64(e[32:]))
		align := max(1, (1<<20)/ss)
		end := (newLastUsable+1)/align*align - 1
		if end < bestEnd {
			end = newLastUsable
		}
		binary.LittleEndian.PutUint64(e[40:], uint64(end))
		res.Grown = &Partition{Number: best + 1, Start: first * ss, Size: (end - first + 1) * ss, Type: gptType(e[:16]), Name: utf16Name(e[56:128])}
	}
	entCRC := crc32.ChecksumIEEE(entries)

	// Primary header: the backup's new place and the new usable end.
	binary.LittleEndian.PutUint64(h[32:], uint64(newLast))
	binary.LittleEndian.PutUint64(h[48:], uint64(newLastUsable))
	binary.LittleEndian.PutUint32(h[88:], entCRC)
	sealGPTHeader(h[:hsize])

	// Backup: the same entries, then the header pointing back at them.
	bh := bytes.Clone(h[:hsize])
	binary.LittleEndian.PutUint64(bh[24:], uint64(newLast))
	binary.LittleEndian.PutUint64(bh[32:], binary.LittleEndian.Uint64(h[24:]))
	binary.LittleEndian.PutUint64(bh[72:], uint64(newLast-entSectors))
	sealGPTHeader(bh)
	res.Backup = make([]byte, (entSectors+1)*ss)
	copy(res.Backup, entries)
	copy(res.Backup[entSectors*ss:], bh)
	res.BackupOff = (newLast - entSectors) * ss

	// The protective MBR covers the whole disk, up to what 32 bits hold.
	if out[510] == 0x55 && out[511] == 0xAA {
		for i := range 4 {
			e := out[446+16*i:]
			if e[4] == 0xEE {
				binary.LittleEndian.PutUint32(e[12:], uint32(min(newSize/512-1, 0xFFFFFFFF)))
			}
		}
	}
	res.Changed = true
	return res, nil
}

func sealGPTHeader(h []byte) {
	clear(h[16:20])
	binary.LittleEndian.PutUint32(h[16:], crc32.ChecksumIEEE(h))
}

func growMBR(head []byte, t *Table, newSize int64) (*Resized, error) {
	out := aligned.Clone(head) // see Resized.Head
	best := -1
	var bestEnd int64
	for i := range 4 {
		e := out[446+16*i:]
		start := int64(binary.LittleEndian.Uint32(e[8:]))
		size := int64(binary.LittleEndian.Uint32(e[12:]))
		if e[4] == 0 || size == 0 {
			continue
		}
		if end := start + size; best < 0 || end > bestEnd {
			best, bestEnd = i, end
		}
	}
	e := out[446+16*best:]
	switch e[4] {
	case 0x05, 0x0f, 0x85:
		return nil, fmt.Errorf("%w: partition %d is an extended partition (its logical partitions are not grown)", ErrNoGrow, best+1)
	}
	start := int64(binary.LittleEndian.Uint32(e[8:]))
	end := min(newSize/512, 1<<32) // sectors; an MBR counts at most 2^32
	end = end / 2048 * 2048        // MiB alignment
	if end <= bestEnd {
		return &Resized{Head: head}, nil
	}
	binary.LittleEndian.PutUint32(e[12:], uint32(end-start))
	// The CHS end of a partition past 8 GiB is the conventional maximum.
	e[5], e[6], e[7] = 0xFE, 0xFF, 0xFF
	p := Partition{Number: best + 1, Start: start * 512, Size: (end - start) * 512, Type: mbrType(e[4])}
	return &Resized{Head: out, Grown: &p, Changed: true}, nil
}
