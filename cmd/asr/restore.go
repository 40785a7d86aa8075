package main

import (
	"bufio"
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime/debug"
	"strings"
	"time"

	"github.com/asrlinux/asr/internal/filerestore"
	"github.com/asrlinux/asr/internal/fsgrow"
	"github.com/asrlinux/asr/internal/progress"
	"github.com/asrlinux/asr/internal/redact"
	"github.com/asrlinux/asr/internal/restore"
	"github.com/asrlinux/asr/internal/source"
	"github.com/asrlinux/asr/internal/target"
)

func runRestore(ctx context.Context, e env, args []string) (err error) {
	fs := newFlags("restore")
	src := fs.String("source", "", "the `SOURCE` to restore (required; see SOURCE above)")
	tgt := fs.String("target", "", "the `TARGET` to restore onto; without --erase, the volume to copy files into (see FILE COPY)")
	file := fs.String("file", "", "write a new raw disk image file at `PATH` (with --erase, replace an existing one)")
	erase := fs.Bool("erase", false, "erase the target and copy blocks; without it, --target is a volume to copy files into (see FILE COPY)")
	noprompt := fs.Bool("noprompt", false, "do not ask before erasing")
	noverify := fs.Bool("noverify", false, "do not read the target back")
	puppet := fs.Bool("puppetstrings", false, "print progress for programs instead of people (see PUPPETSTRINGS)")
	workers := fs.Int("workers", 0, "`N` parallel decode/write/verify workers (0: max(4, CPUs)), at most what keeps their buffers within 128 MiB (32 at 1 MiB chunks, 4 at 8 MiB); file copy: items copied at once (0: max(16, 4 x CPUs))")
	delta := fs.Bool("delta", false, "with --erase onto an existing --target: hash the target's chunks first and fetch and write only those that differ from the image (a prepared image; see DELTA RESTORE)")
	growFlag := fs.Bool("grow", false, "enlarge the last partition and its ext2/3/4 filesystem (or an image of one volume's filesystem) to fill a larger target")
	sf := addSourceFlags(fs)
	tf := addTrustFlags(fs)
	lf := addLogFormat(fs)
	if err := parse(e, fs, manRestore, args); err != nil {
		return err
	}
	log, err := lf.logger("restore", e.stdout)
	if err != nil {
		return err
	}
	var out *progress.Printer
	if log != nil {
		// From here on every failure, of the command line too, ends the
		// log with its record.
		defer func() {
			if err != nil {
				phase := ""
				if out != nil {
					phase = out.Failed()
				}
				logFailed(ctx, log, phase, err)
			}
		}()
		if *puppet {
			return usageError("restore: give --puppetstrings or --log-format json, not both")
		}
		out = progress.NewLog(log)
	} else {
		out = progress.New(e.stdout, *puppet)
	}
	sf.spoolDir = spoolDir(e)
	if err := sf.check(); err != nil {
		return err
	}
	keys, err := tf.load()
	if err != nil {
		return err
	}
	switch {
	case *src == "":
		return usageError("restore: --source is required (a prepared image, raw image or block device)")
	case *tgt == "" && *file == "":
		return usageError("restore: --target is required (a block device, disk image file or mounted volume), or --file to write a new image file")
	case *tgt != "" && *file != "":
		return usageError("restore: give --target or --file, not both")
	case *workers < 0:
		return usageError("restore: --workers must be 0 (automatic) or more")
	case *growFlag && *tgt == "":
		return usageError("restore: --grow needs --target: it fills a target larger than the image")
	case *growFlag && !*erase:
		return usageError("restore: --grow needs --erase")
	case *delta && (!*erase || *tgt == ""):
		return usageError("restore: --delta needs --erase and --target: it reuses what an existing target holds")
	}
	if *growFlag {
		if err := fsgrow.Check(); err != nil {
			return err
		}
	}

	if log != nil {
		log.LogAttrs(ctx, slog.LevelInfo, "Restore started", slog.String("event", "started"),
			slog.String("source", redact.Text(*src)), slog.String("target", cmp.Or(*tgt, *file)),
			slog.Bool("erase", *erase || *file != ""), slog.Bool("verify", !*noverify), slog.String("version", Version))
	}
	// Every source is opened through the signature check (see SIGNED IMAGES).
	open := func(s, disk string, max int64) (source.Source, error) {
		src, err := openTrusted(ctx, s, disk, max, sf, keys, out.Info)
		if err == nil && log != nil {
			log.LogAttrs(ctx, slog.LevelInfo, "Source "+redact.Text(s), sourceAttrs(s, src.Info())...)
		}
		return src, err
	}
	if !*erase && *file == "" {
		return runFileCopy(ctx, log, filerestore.Request{
			Source: *src, Target: *tgt, NoVerify: *noverify, Workers: *workers,
			OpenSource: func(s string) (source.Source, error) { return open(s, *tgt, 0) },
			Out:        out,
		})
	}
	req := restore.Request{
		Source: *src, Target: *tgt, File: *file,
		Erase: *erase, NoVerify: *noverify, NoPrompt: *noprompt, Workers: *workers,
		Delta: *delta, Grow: *growFlag, GrowFS: fsgrow.Grow,
		OpenSource: func(s string, max int64) (source.Source, error) { return open(s, cmp.Or(*tgt, *file), max) },
		Out:        out,
	}
	if e.isTerminal() && !*puppet && log == nil {
		in := bufio.NewReader(e.stdin)
		req.Confirm = func(q string) (bool, error) {
			fmt.Fprint(e.stdout, q)
			line, err := in.ReadString('\n')
			if err != nil {
				return false, err
			}
			a := strings.ToLower(strings.TrimSpace(line))
			return a == "y" || a == "yes", nil
		}
	}
	// The engine's buffers grow with the chunk size (see restore's worker
	// bound): have the garbage collector work harder near the budget
	// rather than let the heap grow to twice what it holds. Measured on a
	// 2 GiB disk imaged in 16 MiB chunks, the largest: see the commit.
	debug.SetMemoryLimit(192 << 20)
	res, err := restore.Run(ctx, req)
	if err != nil {
		return restoreHint(err)
	}
	total := res.CompareTime + res.Elapsed + res.VerifyTime // a full restore compares nothing
	free := ""
	if res.UnusedBytes > 0 {
		free = fmt.Sprintf(", %s of filesystem free space not copied", restore.HumanBytes(res.UnusedBytes))
	}
	out.Info("Restored %s (%s of data, %d of %d chunks zero%s) to %s in %s, %s",
		restore.HumanBytes(res.Size), restore.HumanBytes(res.DataBytes), res.ZeroChunks, res.Chunks, free,
		res.Target, secs(res.Elapsed), rate(res.Size, res.Elapsed))
	if res.Delta {
		out.Info("Delta: %d chunks reused from the target, %d fetched (%s from the source), %d written (the first chunk is always written, last); compared in %s",
			res.Reused, res.Fetched, restore.HumanBytes(res.FetchedBytes), res.Written, secs(res.CompareTime))
	}
	if res.Verified && res.Unchecked != "" {
		// Nothing published checked the download: say what the
		// verification does show, and what it does not.
		out.Info("Verified: the disk matches what was downloaded (the download itself could not be checked: %s); %s compared in %s; total %s",
			res.Unchecked, restore.HumanBytes(res.VerifiedBytes), secs(res.VerifyTime), secs(total))
	} else if res.Verified {
		how := "read back with O_DIRECT"
		var early []string
		if res.ReadBackBytes > 0 {
			// The time shown is the pass over what was not read back
			// as it was written: the rest is in the restore's time.
			early = append(early, restore.HumanBytes(res.ReadBackBytes)+" as each chunk was written")
		}
		if res.KeptBytes > 0 {
			// Reused chunks far from every write: their sum matched
			// when they were compared, in CompareTime.
			early = append(early, restore.HumanBytes(res.KeptBytes)+" of reused chunks when they were compared")
		}
		switch {
		case len(early) > 0:
			how = "read back with O_DIRECT: " + strings.Join(early, ", ") + ", the rest after the final flush"
		case !res.VerifyDirect:
			how = "read back after dropping the page cache"
		}
		if res.UnusedBytes > 0 {
			out.Info("Verified %s of used data: every used chunk matches the source (%s) in %s; free space is not checked; total %s",
				restore.HumanBytes(res.VerifiedBytes), how, secs(res.VerifyTime), secs(total))
		} else {
			out.Info("Verified %s: every chunk matches the source (%s) in %s; total %s",
				restore.HumanBytes(res.Size), how, secs(res.VerifyTime), secs(total))
		}
	}
	logDone(ctx, log, res)
	return nil
}

// restoreHint adds to the engine's errors the flag that changes the outcome.
func restoreHint(err error) error {
	var g *restore.GrowError
	switch {
	case errors.Is(err, restore.ErrNoConfirm):
		return fmt.Errorf("%w; add --noprompt to erase without asking", err)
	case errors.As(err, &g):
		return fmt.Errorf("--grow: %w", err)
	case errors.Is(err, restore.ErrDeltaNeedsImage):
		return fmt.Errorf("%w; restore it without --delta", err)
	case errors.Is(err, target.ErrExists):
		return fmt.Errorf("%w: add --erase to overwrite it, or choose another name", err)
	case errors.Is(err, target.ErrNotRegular):
		return fmt.Errorf("%w: use --target for devices", err)
	case errors.Is(err, target.ErrDirectory):
		return fmt.Errorf("%w, or leave out --erase to copy files into the volume mounted there", err)
	}
	return flagHint(err)
}

// runFileCopy is restore without --erase: items copied from the source
// volume's tree onto the target volume's.
func runFileCopy(ctx context.Context, log *slog.Logger, req filerestore.Request) error {
	// The copy keeps a record of every item of the source tree (about 130
	// bytes): have the garbage collector work harder rather than let the
	// heap grow to twice what it holds. Measured: 630,000 items, 134 MiB
	// peak RSS (222 MiB without these settings and the compact records),
	// well under the 256 MiB asr restore is allowed.
	debug.SetMemoryLimit(128 << 20)
	debug.SetGCPercent(50)
	res, err := filerestore.Run(ctx, req)
	if err != nil {
		return err
	}
	p, out := res.Plan, req.Out
	out.Info("Copied %d items (%s) to %s in %s, %s: %d replaced, %d added, %d kept",
		p.Items, restore.HumanBytes(p.Bytes), req.Target, secs(res.Elapsed), rate(p.Bytes, res.Elapsed),
		p.Replaced, p.Added, p.Kept)
	if res.Verified {
		out.Info("Verified %d items: content and metadata match the source, in %s", p.Items, secs(res.VerifyTime))
	}
	if log != nil {
		log.LogAttrs(ctx, slog.LevelInfo, "Restore done", slog.String("event", "done"), slog.String("target", req.Target),
			slog.Int("items", p.Items), slog.Int64("bytes", p.Bytes), slog.Int("replaced", p.Replaced),
			slog.Int("added", p.Added), slog.Int("kept", p.Kept), slog.Float64("elapsed_s", res.Elapsed.Seconds()),
			slog.Bool("verified", res.Verified), slog.Float64("verify_s", res.VerifyTime.Seconds()))
	}
	return nil
}

// logDone logs the record that ends a restore that succeeded, after its
// summary lines: what was written, and whether it was read back.
func logDone(ctx context.Context, log *slog.Logger, res *restore.Result) {
	if log == nil {
		return
	}
	msg := "Restore done"
	if res.Verified {
		msg = "Restore done and verified"
	}
	log.LogAttrs(ctx, slog.LevelInfo, msg, slog.String("event", "done"), slog.String("target", res.Target),
		slog.Int64("size", res.Size), slog.Int64("data_bytes", res.DataBytes), slog.Int("chunks", res.Chunks),
		slog.Int("zero_chunks", res.ZeroChunks), slog.Int64("unused_bytes", res.UnusedBytes),
		slog.Float64("elapsed_s", res.Elapsed.Seconds()), slog.Bool("verified", res.Verified),
		slog.Int64("verified_bytes", res.VerifiedBytes), slog.Float64("verify_s", res.VerifyTime.Seconds()))
}

func secs(d time.Duration) string { return fmt.Sprintf("%.2f s", d.Seconds()) }

func rate(n int64, d time.Duration) string {
	if d <= 0 {
		return "-"
	}
	return fmt.Sprintf("%.1f MB/s", float64(n)/1e6/d.Seconds())
}
