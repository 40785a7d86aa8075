package main

import (
	"context"
	"fmt"
	"strings"
	"text/tabwriter"
	"time"

	"howett.net/plist"

	"github.com/asrlinux/asr/internal/blockmap"
	"github.com/asrlinux/asr/internal/image"
	"github.com/asrlinux/asr/internal/restore"
	"github.com/asrlinux/asr/internal/safetext"
	"github.com/asrlinux/asr/internal/source"
	"github.com/asrlinux/asr/internal/trust"
)

// imageInfo is what `asr info` reports; the plist keys follow Apple's
// capitalised style so admins' scripts read it like other macOS plists.
type imageInfo struct {
	Path             string          `plist:"Path"`
	FormatVersion    int             `plist:"Format Version"`
	Digest           string          `plist:"Digest"`
	LogicalSize      int64           `plist:"Logical Size"`
	ChunkSize        int             `plist:"Chunk Size"`
	ChunkCount       int             `plist:"Chunk Count"`
	ChunkHash        string          `plist:"Chunk Hash"`
	StoredChunks     int             `plist:"Stored Chunks"`
	ZeroChunks       int             `plist:"Zero Chunks"`
	UnusedChunks     int             `plist:"Unused Chunks"`
	UsedBytes        int64           `plist:"Used Bytes"`
	StoredBytes      int64           `plist:"Stored Bytes"`
	FileSize         int64           `plist:"File Size"`
	CompressionRatio float64         `plist:"Compression Ratio"`
	Created          time.Time       `plist:"Creation Date"`
	Tool             string          `plist:"Tool Version"`
	SourceName       string          `plist:"Source Name"`
	PartitionScheme  string          `plist:"Partition Scheme"`
	Partitions       []partitionInfo `plist:"Partitions"`
	Areas            []areaInfo      `plist:"Areas"`
	Signatures       []sigInfo       `plist:"Signatures"`
}

// sigInfo is one signature as `asr info` sees it from here.
type sigInfo struct {
	KeyID   string `plist:"Key ID"`
	Trusted bool   `plist:"Trusted"` // by a key trusted here, and valid
	Status  string `plist:"Status"`
	Comment string `plist:"Trusted Comment,omitempty"` // only when Trusted: otherwise unchecked
}

type partitionInfo struct {
	Number int    `plist:"Number"`
	Start  int64  `plist:"Start"`
	Size   int64  `plist:"Size"`
	Type   string `plist:"Type"`
	Name   string `plist:"Name,omitempty"`
}

func runInfo(ctx context.Context, e env, args []string) error {
	fs := newFlags("info")
	src := fs.String("source", "", "the `IMAGE` to describe: a path or a URL (required)")
	asPlist := fs.Bool("plist", false, "print the same as an XML property list")
	sf := addSourceFlags(fs)
	tf := addTrustFlags(fs)
	if err := parse(e, fs, manInfo, args); err != nil {
		return err
	}
	if err := sf.check(); err != nil {
		return err
	}
	keys, err := tf.load()
	if err != nil {
		return err
	}
	if *src == "" {
		return usageError("info: --source is required (a prepared image, a path or an http(s) URL)")
	}
	s, err := openSource(ctx, *src, "", 0, sf, func(format string, a ...any) { fmt.Fprintf(e.stderr, format+"\n", a...) })
	if err != nil {
		return err
	}
	defer s.Close()
	info, err := describe(*src, s)
	if err != nil {
		return err
	}
	si := s.Info()
	if si.SignaturesErr != nil && *asPlist {
		fmt.Fprintf(e.stderr, "asr: warning: the signatures are unreadable: %v\n", si.SignaturesErr)
	}
	for _, r := range trust.Verify(keys, si.Header, si.Signatures) {
		sg := sigInfo{KeyID: trust.FormatID(r.KeyID), Trusted: r.Status == trust.Trusted, Status: r.Status.String()}
		if r.Status == trust.Malformed {
			sg.KeyID = "-"
		}
		if sg.Trusted {
			sg.Comment = r.Comment
		}
		info.Signatures = append(info.Signatures, sg)
	}
	if *asPlist {
		b, err := plist.MarshalIndent(info, plist.XMLFormat, "\t")
		if err != nil {
			return err
		}
		_, err = fmt.Fprintf(e.stdout, "%s\n", b)
		return err
	}
	w := tabwriter.NewWriter(e.stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintf(w, "Image:\t%s\n", safetext.Line(info.Path))
	fmt.Fprintf(w, "Digest:\tsha256:%s\n", info.Digest)
	fmt.Fprintf(w, "Format:\tasr prepared image, version %d\n", info.FormatVersion)
	fmt.Fprintf(w, "Logical size:\t%s (%d bytes)\n", restore.HumanBytes(info.LogicalSize), info.LogicalSize)
	fmt.Fprintf(w, "Chunks:\t%d of %s (%d stored, %d zero, %d free space)\n", info.ChunkCount, restore.HumanBytes(int64(info.ChunkSize)), info.StoredChunks, info.ZeroChunks, info.UnusedChunks)
	fmt.Fprintf(w, "Chunk hash:\t%s\n", info.ChunkHash)
	fmt.Fprintf(w, "Used bytes:\t%s (%d bytes)\n", restore.HumanBytes(info.UsedBytes), info.UsedBytes)
	fmt.Fprintf(w, "Stored bytes:\t%s (%d bytes), compression %.2fx\n", restore.HumanBytes(info.StoredBytes), info.StoredBytes, info.CompressionRatio)
	fmt.Fprintf(w, "File size:\t%s\n", restore.HumanBytes(info.FileSize))
	fmt.Fprintf(w, "Created:\t%s\n", info.Created.Format(time.RFC3339))
	fmt.Fprintf(w, "Created by:\t%s\n", info.Tool)
	switch {
	case si.SignaturesErr != nil:
		fmt.Fprintf(w, "Signatures:\tunreadable (%v)\n", si.SignaturesErr)
	case len(info.Signatures) == 0:
		fmt.Fprintf(w, "Signatures:\tnone (unsigned; asr sign signs it)\n")
	}
	for i, sg := range info.Signatures {
		label := ""
		if i == 0 {
			label = "Signatures:"
		}
		if sg.Trusted {
			fmt.Fprintf(w, "%s\tkey ID %s: %s (%s)\n", label, sg.KeyID, sg.Status, safetext.Line(strings.ReplaceAll(sg.Comment, "\t", "  ")))
		} else {
			fmt.Fprintf(w, "%s\tkey ID %s: %s\n", label, sg.KeyID, sg.Status)
		}
	}
	fmt.Fprintf(w, "Scanned from:\t%s\n", info.SourceName)
	fmt.Fprintf(w, "Partitions:\t%s\n", info.PartitionScheme)
	for _, p := range info.Partitions {
		name := ""
		if p.Name != "" {
			name = fmt.Sprintf(" \"%s\"", p.Name) // escaped by describe
		}
		fmt.Fprintf(w, "  %d:\t%s at %d, %s%s\n", p.Number, restore.HumanBytes(p.Size), p.Start, p.Type, name)
	}
	fmt.Fprintf(w, "Used blocks:\t%s\n", mapSummary(info))
	if err := w.Flush(); err != nil {
		return err
	}
	// Its own columns: area names are longer than the labels above.
	w = tabwriter.NewWriter(e.stdout, 0, 0, 2, ' ', 0)
	for _, a := range info.Areas {
		used := restore.HumanBytes(a.Used) + " used"
		if a.Method == blockmap.MethodNonZero {
			used = "non-zero chunks kept"
		}
		note := ""
		if a.Note != "" {
			note = " (" + a.Note + ")"
		}
		fmt.Fprintf(w, "  %s:\t%s at %d, %s: %s%s\n", a.Area, restore.HumanBytes(a.Size), a.Start, a.Method, used, note)
	}
	return w.Flush()
}

func describe(path string, src source.Source) (*imageInfo, error) {
	si := src.Info()
	m := si.Manifest
	cr, ok := src.(source.ChunkReader)
	if m == nil || !ok {
		return nil, fmt.Errorf("source %s is a %s, not a prepared image: make one with asr imagescan", path, si.Kind)
	}
	s := m.Stats()
	info := &imageInfo{
		Path: path, FormatVersion: image.Version, Digest: si.Digest.String(),
		LogicalSize: m.LogicalSize, ChunkSize: int(m.ChunkSize), ChunkCount: s.Chunks, ChunkHash: m.Hash.String(),
		StoredChunks: s.StoredChunks, ZeroChunks: s.ZeroChunks, UnusedChunks: s.UnusedChunks, UsedBytes: s.UsedBytes,
		StoredBytes: s.StoredBytes, FileSize: m.FileSize(), CompressionRatio: ratio(s.UsedBytes, s.StoredBytes),
		Created: m.Created, Tool: m.Tool, SourceName: m.Name,
	}
	// The image holds its partition table and its filesystems' metadata,
	// so mapping it again gives the table and the map imagescan used (or,
	// for an image scanned with --allblocks or from compressed input, the
	// map it could have used). Only the chunks holding metadata are read.
	used, err := blockmap.Build(source.NewLogicalReader(m, cr), m.LogicalSize)
	if err != nil {
		return nil, fmt.Errorf("reading the partition table and filesystem metadata in %s: %w", path, err)
	}
	info.PartitionScheme = used.Table.Summary()
	for _, p := range used.Table.Partitions {
		info.Partitions = append(info.Partitions, partitionInfo{Number: p.Number, Start: p.Start, Size: p.Size, Type: p.Type, Name: p.Name})
	}
	info.Areas = describeMap(used)
	info.escape()
	return info, nil
}

// escape makes every text the image supplies safe to print: the scanned
// disk's name, the tool, partition names and types, notes from its
// filesystems' metadata. Whoever made the image chose them, escape
// sequences and forged lines included; the plist output carries the same
// escaped text.
func (info *imageInfo) escape() {
	info.Tool, info.SourceName = safetext.Line(info.Tool), safetext.Line(info.SourceName)
	info.PartitionScheme = safetext.Line(info.PartitionScheme)
	for i := range info.Partitions {
		p := &info.Partitions[i]
		p.Type, p.Name = safetext.Line(p.Type), safetext.Line(p.Name)
	}
	for i := range info.Areas {
		a := &info.Areas[i]
		a.Method, a.Note = safetext.Line(a.Method), safetext.Line(a.Note)
	}
}

// mapSummary says in a line whether the image was mapped by its filesystems.
func mapSummary(info *imageInfo) string {
	if info.UnusedChunks > 0 {
		return "free space of the filesystems below is not stored"
	}
	return "every non-zero chunk is stored (scanned with --allblocks, from compressed input, or nothing to leave out)"
}
