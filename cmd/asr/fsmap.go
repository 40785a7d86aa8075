package main

import (
	"fmt"

	"github.com/asrlinux/asr/internal/blockmap"
	"github.com/asrlinux/asr/internal/partition"
	"github.com/asrlinux/asr/internal/restore"
)

// areaInfo is one area of a disk and how asr found which of its bytes
// matter: `asr imagescan` prints it and `asr info` reports it.
type areaInfo struct {
	Area   string `plist:"Area"` // "partition 1", "partition table", "outside any partition", "whole disk"
	Start  int64  `plist:"Start"`
	Size   int64  `plist:"Size"`
	Method string `plist:"Method"` // "ext4 bitmap", "FAT32", "swap header", "non-zero", "partition table"
	// Used is the bytes the method calls used; for the non-zero method it
	// is the whole area, of which only the non-zero chunks are stored.
	Used     int64  `plist:"Used Bytes"`
	Note     string `plist:"Note,omitempty"`
	Fallback bool   `plist:"Fallback"` // a known filesystem whose metadata could not be used
}

// describeMap names the regions of m after the partitions that hold them.
func describeMap(m *blockmap.Map) []areaInfo {
	t := m.Table
	if t == nil {
		t = &partition.Table{Scheme: partition.None}
	}
	var out []areaInfo
	for _, r := range m.Regions {
		a := areaInfo{Start: r.Off, Size: r.Len, Method: r.Method, Used: r.UsedBytes(), Note: r.Note, Fallback: r.Fallback}
		switch {
		case r.Method == blockmap.MethodPartitionTable:
			a.Area = "partition table"
		case t.Scheme == partition.None:
			a.Area = "whole disk"
		default:
			a.Area = "outside any partition"
			for _, p := range t.Partitions {
				if r.Off >= p.Start && r.Off < p.Start+p.Size {
					a.Area = fmt.Sprintf("partition %d", p.Number)
				}
			}
		}
		out = append(out, a)
	}
	return out
}

// printAreas writes one line per area, and a warning for every area whose
// filesystem could not be mapped though it has one asr knows.
func printAreas(info func(string, ...any), areas []areaInfo) {
	for _, a := range areas {
		// Alignment gaps and the odd sectors after a filesystem's end are
		// noise to an admin reading the scan; `asr info` lists them all.
		if a.Method == blockmap.MethodPartitionTable || (!a.Fallback && a.Method == blockmap.MethodNonZero && a.Size < 1<<20) {
			continue
		}
		how := a.Method
		if how == blockmap.MethodNonZero {
			how = "non-zero blocks"
		}
		line := fmt.Sprintf("Mapped %s (%s at byte %d) by %s: %s used", a.Area, restore.HumanBytes(a.Size), a.Start, how, restore.HumanBytes(a.Used))
		if a.Method == blockmap.MethodNonZero {
			line = fmt.Sprintf("Mapped %s (%s at byte %d) by %s: every non-zero chunk kept", a.Area, restore.HumanBytes(a.Size), a.Start, how)
		}
		if a.Note != "" {
			line += " (" + a.Note + ")"
		}
		info("%s", line)
		if a.Fallback {
			info("Warning: %s: its filesystem metadata could not be used (%s); free space there is copied as it is", a.Area, a.Note)
		}
	}
}
