// Package filerestore is the file-copy restore (asr restore without
// --erase): it lays the tree of a source volume over a target volume,
// replacing items of the same name and keeping the target's other items.
//
// It opens the two volumes (mounting what is not mounted: the source
// read-only), unpacks a prepared image or a network source into a sparse
// file in the temporary folder first so it can be mounted, checks everything
// before the target changes, copies with internal/filecopy, verifies, and
// unmounts what it mounted. The block-copy restore is internal/restore.
package filerestore

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/asrlinux/asr/internal/filecopy"
	"github.com/asrlinux/asr/internal/image"
	"github.com/asrlinux/asr/internal/progress"
	"github.com/asrlinux/asr/internal/restore"
	"github.com/asrlinux/asr/internal/source"
	"github.com/asrlinux/asr/internal/volume"
)

// Request is one file-copy restore.
type Request struct {
	Source string // a prepared or raw image, block device, directory or URL
	Target string // a block device holding a filesystem, or a directory

	NoVerify bool
	Workers  int // 0: filecopy's default
	// TempDir receives the unpacked volume of a prepared image or network
	// source; empty: os.TempDir() ($TMPDIR, else /tmp).
	TempDir string
	// OpenSource opens a source that must be unpacked, as for a block restore.
	OpenSource func(string) (source.Source, error)
	Out        *progress.Printer
}

// Result is what a file-copy restore did.
type Result struct {
	Plan       *filecopy.Plan
	Unpacked   bool // the source was unpacked into a temporary file
	Elapsed    time.Duration
	Verified   bool
	VerifyTime time.Duration
}

// Run performs a file-copy restore.
func Run(ctx context.Context, req Request) (res *Result, err error) {
	out := req.Out
	defer func() {
		if err != nil {
			out.Fail(err)
		}
	}()

	out.Step("Validating target")
	tgt, err := volume.OpenTarget(req.Target)
	if err != nil {
		return nil, err
	}
	defer closeVolume(tgt, &err)
	if err := sameDevice(req.Source, tgt); err != nil {
		return nil, err
	}
	out.Done()

	res = &Result{}
	spec := req.Source
	if needsUnpacking(spec) {
		tmp, err := unpack(ctx, req, tgt)
		if tmp != "" {
			defer os.RemoveAll(tmp)
		}
		if err != nil {
			return nil, err
		}
		spec, res.Unpacked = filepath.Join(tmp, "volume.img"), true
	}
	out.Step("Validating source")
	src, err := volume.OpenSource(spec)
	if err != nil {
		if res.Unpacked && errors.Is(err, volume.ErrPartitions) {
			return nil, fmt.Errorf("image %s holds a disk with several partitions, and a file copy copies one volume: write it to a file (asr restore --source %s --file disk.raw), attach that (losetup -P -r -f disk.raw, then partx -a on the loop device) and give the partition's device as --source", req.Source, req.Source)
		}
		return nil, err
	}
	defer closeVolume(src, &err)
	if src.Dev == tgt.Dev {
		return nil, fmt.Errorf("source %s and target %s are the same volume", req.Source, req.Target)
	}
	out.Done()

	out.Step("Scanning source and target")
	plan, err := filecopy.NewPlan(src.Dir, tgt.Dir)
	if err != nil {
		return nil, err
	}
	res.Plan = plan
	out.Done()
	out.Info("%d items, %s of file data: %d to replace, %d to add; %d items only on the target are kept",
		plan.Items, restore.HumanBytes(plan.Bytes), plan.Replaced, plan.Added, plan.Kept)
	if plan.Removed > 0 {
		out.Info("%d items inside target folders that source items of the same name replace will be removed", plan.Removed)
	}
	for _, m := range plan.SkippedMounts {
		out.Info("Not copying %s: another volume is mounted there", m)
	}
	if plan.FAT {
		out.Info("The target is FAT, which keeps no owners, groups, permissions (beyond read-only), extended attributes or ACLs, and times only to 2 s")
		if len(plan.Unsupported) > 0 {
			out.Info("FAT cannot hold these source items, which are not copied: %s", strings.Join(plan.Unsupported, ", "))
		}
		if plan.FATCopies > 0 {
			out.Info("FAT has no hard links: %d further names of hard-linked files become separate copies", plan.FATCopies)
		}
	}

	out.Step("Validating sizes")
	if err := plan.CheckRoom(); err != nil {
		return nil, err
	}
	out.Done()
	if err := tgt.MakeWritable(); err != nil {
		return nil, err
	}

	// Progress counts bytes and items: a file of n bytes weighs n plus a
	// block, so a tree of many small files still moves the bar.
	const perItem = 4096
	total := plan.Bytes + int64(plan.Items)*perItem
	opts := filecopy.Options{Workers: req.Workers, Progress: func(n int64) { out.Add(n + perItem) }}
	out.Info("Copying %d items (%s) from %s to %s", plan.Items, restore.HumanBytes(plan.Bytes), req.Source, req.Target)
	start := time.Now()
	out.Start("Copying", total)
	if err := plan.Copy(ctx, opts); err != nil {
		return nil, copyFailed("copy", err)
	}
	out.Finish()
	res.Elapsed = time.Since(start)
	if req.NoVerify {
		out.Info("Verification skipped (--noverify)")
		return res, nil
	}
	start = time.Now()
	out.Start("Verifying", total)
	if err := plan.Verify(ctx, opts); err != nil {
		return nil, copyFailed("verification", err)
	}
	out.Finish()
	res.Verified, res.VerifyTime = true, time.Since(start)
	return res, nil
}

func copyFailed(what string, err error) error {
	var ie *filecopy.ItemError
	if errors.As(err, &ie) {
		return fmt.Errorf("%s failed at item %s: %w (items copied before it are complete; it and the items after it were not copied)", what, "/"+strings.TrimPrefix(ie.Item, "/"), ie.Err)
	}
	return fmt.Errorf("%s failed: %w", what, err)
}

func closeVolume(v *volume.Volume, err *error) {
	if cerr := v.Close(); cerr != nil && *err == nil {
		*err = cerr
	}
}

// sameDevice refuses a source that is the target's block device.
func sameDevice(src string, tgt *volume.Volume) error {
	var st unix.Stat_t
	if unix.Stat(src, &st) != nil {
		return nil
	}
	if (st.Mode&unix.S_IFMT == unix.S_IFBLK && st.Rdev == tgt.Dev) ||
		(st.Mode&unix.S_IFMT == unix.S_IFDIR && st.Dev == tgt.Dev) {
		return fmt.Errorf("source %s and target %s are the same volume", src, tgt.Spec)
	}
	return nil
}

// needsUnpacking tells sources that cannot be mounted as they are: URLs,
// prepared images and compressed raw images.
func needsUnpacking(spec string) bool {
	if strings.Contains(spec, "://") {
		return true
	}
	f, err := os.Open(spec)
	if err != nil {
		return false
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil || !fi.Mode().IsRegular() {
		return false
	}
	head := make([]byte, 8)
	n, _ := f.ReadAt(head, 0)
	if strings.HasPrefix(string(head[:n]), image.Magic) || strings.HasSuffix(strings.ToLower(spec), ".asr") {
		return true
	}
	kind, _ := source.Decompressor(head[:n])
	return kind != ""
}

// unpack restores the source into a new sparse file volume.img in a new
// folder of the temporary folder (returned, to be removed) so it can be
// mounted: only the image's used chunks take room there.
func unpack(ctx context.Context, req Request, tgt *volume.Volume) (string, error) {
	tmp, err := os.MkdirTemp(req.TempDir, "asr-unpack-")
	if err != nil {
		return "", fmt.Errorf("making a folder to unpack the source in (set TMPDIR to choose where): %w", err)
	}
	var st unix.Stat_t
	if err := unix.Stat(tmp, &st); err == nil && st.Dev == tgt.Dev {
		return tmp, fmt.Errorf("the temporary folder %s is on the target volume: set TMPDIR to a folder on another volume", filepath.Dir(tmp))
	}
	req.Out.Info("Unpacking %s into %s to mount it (set TMPDIR to unpack elsewhere)", req.Source, tmp)
	_, err = restore.Run(ctx, restore.Request{
		Source: req.Source, File: filepath.Join(tmp, "volume.img"),
		// Every chunk is checked against its digest before it is written,
		// and the copy is verified against this file: reading it back
		// here too would only cost time.
		Erase: true, NoPrompt: true, NoVerify: true, Workers: req.Workers,
		OpenSource: func(s string, _ int64) (source.Source, error) { return req.OpenSource(s) },
		Out:        req.Out,
	})
	if err != nil {
		return tmp, fmt.Errorf("unpacking %s into %s (set TMPDIR to a folder with more room if it is full): %w", req.Source, tmp, err)
	}
	return tmp, nil
}
