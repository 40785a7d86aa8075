package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"aead.dev/minisign"

	"github.com/asrlinux/asr/internal/blockmap"
	"github.com/asrlinux/asr/internal/image"
	"github.com/asrlinux/asr/internal/progress"
	"github.com/asrlinux/asr/internal/restore"
	"github.com/asrlinux/asr/internal/trust"
)

func runImagescan(ctx context.Context, e env, args []string) error {
	fs := newFlags("imagescan")
	src := fs.String("source", "", "the `DISK` to scan: a raw disk image, compressed or not, a VM disk image (qcow2, VMDK, VHD, VHDX, VDI) or a block device (required)")
	output := fs.String("output", "", "the prepared `IMAGE` to write (required)")
	chunk := fs.Int("chunksize", image.DefaultChunkSize, "chunk size in `BYTES`, a multiple of 4096 from 65536 to 16777216 (default: 8 MiB for a disk of 1 GiB or more, see above)")
	hashName := fs.String("hash", "blake3", "what chunks are hashed with: `HASH` is blake3 (twice as fast to check in every restore) or sha256 (for asr versions that predate BLAKE3 images)")
	level := fs.String("level", "", "how hard to compress: `LEVEL` is fast (quickest scan, larger image), default (fastest restore), or best (smallest image, about 5x the scan time); see above")
	overwrite := fs.Bool("overwrite", false, "replace IMAGE if it exists")
	puppet := fs.Bool("puppetstrings", false, "machine-readable progress (see 'asr help restore')")
	allBlocks := fs.Bool("allblocks", false, "do not map filesystems: keep every non-zero chunk, free space included (for forensic copies, or to keep deleted data)")
	signKey := fs.String("sign", "", "sign the new image with the minisign secret `KEY`, as 'asr sign' does (the key and its password are read before the scan starts)")
	pwFile := fs.String("password-file", "", "with --sign: the key's password is `FILE`'s first line (else $ASR_KEY_PASSWORD, else asked on the terminal)")
	if err := parse(e, fs, manImagescan, args); err != nil {
		return err
	}
	if !flagSet(fs, "level") {
		*level = image.LevelDefault.String()
	}
	hash, herr := image.ParseHash(*hashName)
	if herr != nil {
		return usageError("imagescan: --hash: %v", herr)
	}
	lvl, lerr := image.ParseLevel(*level)
	switch {
	case lerr != nil:
		return usageError("imagescan: --level %q: use %s", *level, image.LevelNames)
	case *src == "":
		return usageError("imagescan: --source is required (a raw disk image, .gz/.xz/.zst image, or block device)")
	case *output == "":
		return usageError("imagescan: --output is required (the prepared image file to write)")
	case *chunk < image.MinChunkSize || *chunk > image.MaxChunkSize || *chunk%4096 != 0:
		return usageError("imagescan: --chunksize %d must be a multiple of 4096 from %d to %d", *chunk, image.MinChunkSize, image.MaxChunkSize)
	case *pwFile != "" && *signKey == "":
		return usageError("imagescan: --password-file goes with --sign")
	}
	// The key (and its password) first: a wrong password must not cost a
	// whole scan.
	var sk *minisign.PrivateKey
	if *signKey != "" {
		k, err := loadSecretKey(e, *signKey, *pwFile)
		if err != nil {
			return err
		}
		sk = &k
	}
	out := progress.New(e.stdout, *puppet)

	out.Step("Validating source")
	st, err := openScanSource(ctx, *src, *output, *overwrite)
	if err != nil {
		out.Fail(err)
		return err
	}
	defer st.Close()
	out.Done()
	if st.At == nil && !*allBlocks {
		dir := filepath.Dir(*output)
		if abs, err := filepath.Abs(dir); err == nil {
			dir = abs
		}
		if err := spoolCompressed(ctx, out, st, *src, dir); err != nil {
			return err
		}
	}

	if !flagSet(fs, "chunksize") {
		// Larger chunks compress better (each is its own zstd frame); a
		// small disk keeps 128 of them at least, and a disk larger than
		// image.MaxChunks of them gets larger ones.
		*chunk = image.ScanChunkSize(st.Size)
		if *chunk > image.PreferredChunkSize {
			out.Info("Chunk size %s: %s is too large for %d chunks of %s", restore.HumanBytes(int64(*chunk)), restore.HumanBytes(st.Size), image.MaxChunks, restore.HumanBytes(image.PreferredChunkSize))
		}
	}
	if _, err := os.Stat(*output); err == nil && !*overwrite {
		return fmt.Errorf("%s already exists: add --overwrite to replace it", *output)
	}
	created, err := creationTime(e, st.ModTime)
	if err != nil {
		return err
	}
	// Free space full of old data is the bulk of most disks: map what the
	// filesystems use, from their own metadata, before reading the data.
	var used *blockmap.Map
	switch {
	case *allBlocks:
		out.Info("Mapping skipped (--allblocks): every non-zero chunk is kept, free space included")
	case st.At == nil: // no room to decompress it (spoolCompressed said so)
	default:
		out.Step("Mapping used blocks")
		if used, err = blockmap.Build(st.At, st.Size); err != nil {
			out.Fail(err)
			return fmt.Errorf("mapping %s: %w", *src, err)
		}
		out.Done()
		printAreas(out.Info, describeMap(used))
	}
	// Write to a temporary name and rename at the end, so a failed scan
	// never leaves a file that looks like an image.
	tmp, err := os.CreateTemp(filepath.Dir(*output), "."+filepath.Base(*output)+".partial-")
	if err != nil {
		return fmt.Errorf("creating %s: %w", *output, err)
	}
	defer os.Remove(tmp.Name())
	defer tmp.Close()

	total := st.Size
	done := func(n int64) int64 { return n }
	if total < 0 { // compressed: count the compressed bytes read instead
		fi, _ := os.Stat(*src)
		total = fi.Size()
		done = func(int64) int64 { return st.Consumed() }
	}
	out.Start("Scanning", total)
	var last int64
	start := time.Now()
	var in io.Reader = st
	if used != nil {
		in = st.At // read by offset: free space is skipped, not read
	}
	m, d, err := image.Scan(ctx, in, tmp, image.ScanOptions{
		ChunkSize: *chunk, Created: created, Name: filepath.Base(*src), Tool: "asr " + Version, Map: used, Level: lvl,
		SHA256: hash == image.HashSHA256,
		Progress: func(n int64) {
			cur := done(n)
			out.Add(cur - last)
			last = cur
		},
	})
	if err != nil {
		out.Fail(err)
		return fmt.Errorf("scanning %s: %w", *src, err)
	}
	out.Finish()
	if sk != nil {
		hdr := make([]byte, image.HeaderSize)
		if _, err := tmp.ReadAt(hdr, 0); err != nil {
			return fmt.Errorf("signing %s: %w", *output, err)
		}
		if h, err := image.ParseHeader(hdr); err != nil || image.Digest(h.ManifestDigest) != d {
			return fmt.Errorf("signing %s: its header does not hold the digest just computed (%v)", *output, err)
		}
		sigs, err := signHeader(*sk, hdr, d, nil)
		if err == nil {
			err = image.WriteSignatures(tmp, m, sigs)
		}
		if err != nil {
			return fmt.Errorf("signing %s: %w", *output, err)
		}
	}
	if err := tmp.Chmod(0o644); err != nil {
		return err
	}
	if err := os.Rename(tmp.Name(), *output); err != nil {
		return fmt.Errorf("naming the image %s: %w", *output, err)
	}
	s := m.Stats()
	free := ""
	if s.UnusedChunks > 0 {
		free = fmt.Sprintf(", %d chunks of free space not stored", s.UnusedChunks)
	}
	out.Info("Scanned %s (%s) in %s: %s in %d chunks, %s used, stored in %s (%.2fx)%s",
		*src, st.Kind, secs(time.Since(start)), restore.HumanBytes(m.LogicalSize), s.Chunks,
		restore.HumanBytes(s.UsedBytes), restore.HumanBytes(s.StoredBytes), ratio(s.UsedBytes, s.StoredBytes), free)
	out.Info("Image %s, digest sha256:%s", *output, d)
	if sk != nil {
		out.Info("Signed with key ID %s", trust.FormatID(sk.ID()))
	}
	return nil
}

// creationTime is what the image records as its creation time. For
// reproducible images it honours SOURCE_DATE_EPOCH; otherwise a file's
// modification time, so scanning the same file twice gives the same image.
func creationTime(e env, mod time.Time) (time.Time, error) {
	if s := e.getenv("SOURCE_DATE_EPOCH"); s != "" {
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return time.Time{}, errors.New("SOURCE_DATE_EPOCH must be a number of seconds since 1970")
		}
		return time.Unix(n, 0), nil
	}
	if !mod.IsZero() {
		return mod, nil
	}
	return time.Now(), nil
}

func ratio(used, stored int64) float64 {
	if stored == 0 {
		return 0
	}
	return float64(used) / float64(stored)
}

// flagSet reports whether the flag name was given on the command line.
func flagSet(fs *flag.FlagSet, name string) bool {
	set := false
	fs.Visit(func(f *flag.Flag) { set = set || f.Name == name })
	return set
}
