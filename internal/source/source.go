// Package source opens what asr restores from and delivers it as chunks.
//
// A source is a prepared image, a raw disk image (plain, or compressed with
// gzip, xz or zstd) or a block device (a clone). Every source says up front how
// big the disk is and how it is chunked, then delivers every chunk exactly
// once, possibly from several goroutines and in any order, each one already
// checked against its digest when the source has one. It never writes.
package source

import (
	"context"

	"github.com/asrlinux/asr/internal/image"
)

// Chunk is one chunk of the logical disk.
type Chunk struct {
	Index int
	// Data holds the uncompressed bytes; it is nil for a zero chunk and valid
	// only during the callback.
	Data []byte
	Zero bool
	// Unused marks a zero chunk that is free space in the image's
	// filesystems: its contents do not matter, so a restore need not write
	// it and a verification skips it.
	Unused bool
	// Sum is the hash of Data (Info.Hash): checked against the image for
	// prepared images, computed while reading for raw sources. Unset for
	// zero chunks.
	Sum [32]byte
}

// NotStored is chunk i of a prepared image whose manifest stores no bytes
// for it: zeros, or free space.
func NotStored(m *image.Manifest, i int) Chunk {
	return Chunk{Index: i, Zero: true, Unused: m.Chunks[i].Codec == image.CodecUnused}
}

// Info describes a source before anything is read from its chunks.
type Info struct {
	Kind      string // "prepared image", "raw image", "xz-compressed raw image", "block device"
	Path      string // local path, for overlap checks; empty for network sources
	Size      int64  // logical disk size in bytes
	ChunkSize int
	// Manifest and Digest are set for prepared images.
	Manifest *image.Manifest
	Digest   image.Digest
	// Header is a prepared image's 64-byte header, the message its
	// signatures sign; Signatures are the texts of its signature trailer
	// (nil when unsigned). SignaturesErr says why they could not be read:
	// a damaged trailer, or a web server without range requests. A caller
	// that requires a trusted signature refuses the source then
	// (internal/trust decides); others may ignore it.
	Header        []byte
	Signatures    [][]byte
	SignaturesErr error
}

// RawHash is what raw sources hash their chunks with. Their sums are the
// run's own, checked against what is read back and never stored: the
// faster hash.
const RawHash = image.HashBLAKE3

// Hash is what the source's chunk sums are made with: the manifest's for
// a prepared image, RawHash otherwise.
func (i Info) Hash() image.Hash {
	if i.Manifest != nil {
		return i.Manifest.Hash
	}
	return RawHash
}

// Source is an opened source.
type Source interface {
	Info() Info
	// Run calls fn once for every chunk, from up to workers goroutines at a
	// time. It stops at the first error, from fn or its own.
	Run(ctx context.Context, workers int, fn func(Chunk) error) error
	Close() error
}

// ChunkReader is a source that can read one chunk on its own (prepared
// images, local or over HTTP), for `asr info`.
type ChunkReader interface {
	ReadChunk(i int) ([]byte, error)
}

// Noter is a source with something to say after its data has been read,
// such as how the download was checked.
type Noter interface {
	Note() string
}

// Unchecked is a source whose bytes nothing published could check, such
// as a raw download with no checksum: verifying the disk then shows only
// that it matches what was downloaded, and the caller must say so rather
// than call the disk verified against the source.
type Unchecked interface {
	// Unchecked says why ("no checksum published"), or "" when the
	// source's bytes were checked after all.
	Unchecked() string
}

// Finisher is a source that tells someone how the restore ended: a
// multicast client tells its server, whose table shows every client. The
// restore engine calls Finished once, after verifying (nil) or at its first
// failure after the source opened, including failures before any chunk was
// read, such as a target too small.
type Finisher interface {
	Finished(err error)
}
