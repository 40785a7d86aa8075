package main

// End-to-end tests of compressed raw disks (.gz, .xz, .zst): imagescan and
// restore decompress them once into an unnamed temporary file and map their
// filesystems, so an image of one is the image of the disk itself, and a
// restore from one writes the used data only. The temporary file never
// outlives the run: after success, failure or a signal its directory is as
// it was.

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/asrlinux/asr/internal/image"
	"github.com/asrlinux/asr/internal/testenv"
)

// compressions are the formats a raw disk comes in, with the command that
// makes each.
var compressions = []struct{ tool, ext string }{{"gzip", ".gz"}, {"xz", ".xz"}, {"zstd", ".zst"}}

// compress writes disk+ext with tool at its fastest level (xz on two
// threads: it is the slowest by far).
func compress(t *testing.T, disk, tool, ext string) string {
	t.Helper()
	testenv.RequireTools(t, tool)
	out := disk + ext
	level := "-1"
	if tool == "xz" {
		level = "-0 -T2"
	}
	sh(t, "sh", "-c", fmt.Sprintf("%s -c %s < %s > %s", tool, level, disk, out))
	return out
}

// chunkTable reads an image's manifest: its chunk size, logical size and
// every chunk's codec and digest (the name and creation time say what was
// scanned and when, which differs by design).
func chunkTable(t *testing.T, img string) (string, int64) {
	t.Helper()
	f, err := os.Open(img)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	m, _, _, err := image.ReadHeaderManifest(f)
	if err != nil {
		t.Fatalf("reading %s: %v", img, err)
	}
	var b strings.Builder
	fmt.Fprintf(&b, "size %d chunk %d\n", m.LogicalSize, m.ChunkSize)
	for i, c := range m.Chunks {
		fmt.Fprintf(&b, "%d %d %x\n", i, c.Codec, c.Sum)
	}
	return b.String(), fileSize(t, img)
}

// entries lists dir's names.
func entries(t *testing.T, dir string) []string {
	t.Helper()
	es, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range es {
		names = append(names, e.Name())
	}
	return names
}

// asrEnv runs the CLI in-process like asr, with getenv answering from vars.
func asrEnv(t *testing.T, vars map[string]string, args ...string) result {
	t.Helper()
	var out, errb bytes.Buffer
	e := env{stdin: strings.NewReader(""), stdout: &out, stderr: &errb, getenv: func(k string) string { return vars[k] }, isTerminal: func() bool { return false }}
	err := run(context.Background(), e, args)
	code := exitStatus(&errb, err)
	return result{stdout: out.String(), stderr: errb.String(), err: err, code: code}
}

func TestE2ECompressedRawDiskIsMapped(t *testing.T) {
	dir := t.TempDir()
	disk := usedDisk(t, dir, "96M")
	want, wantSize := chunkTable(t, scan(t, disk))

	for _, c := range compressions {
		t.Run(c.ext, func(t *testing.T) {
			src := compress(t, disk, c.tool, c.ext)
			out := t.TempDir()
			img := filepath.Join(out, "disk.asr")
			r := mustAsr(t, "imagescan", "--source", src, "--output", img)
			if !strings.Contains(r.stdout, "Mapped partition 1") || !strings.Contains(r.stdout, "by ext4 bitmap") {
				t.Errorf("imagescan of %s did not map partition 1 by its ext4 bitmap; got:\n%s", src, r.stdout)
			}
			got, gotSize := chunkTable(t, img)
			if got != want || gotSize != wantSize {
				t.Errorf("image of %s: %d bytes, chunk table equal to the raw disk's: %v; want the raw disk's image (%d bytes)", src, gotSize, got == want, wantSize)
			}
			if names := entries(t, out); !slices.Equal(names, []string{"disk.asr"}) {
				t.Errorf("after imagescan the output folder holds %q, want only disk.asr (no temporary file)", names)
			}
		})
	}

	// A restore from the compressed disk writes the used data and leaves
	// the free space as the erase left it: old data on the target gone, the
	// source's old data not copied.
	zst := disk + ".zst"
	spool := t.TempDir()
	poff, psize := firstPartition(t, disk)
	tfile := filepath.Join(dir, "target.img")
	fillRandom(t, tfile, fileSize(t, disk), 11)
	dev := loop(t, tfile)
	r := asrEnv(t, map[string]string{"TMPDIR": spool}, "restore", "--source", zst, "--target", dev, "--erase", "--noprompt")
	if r.err != nil {
		t.Fatalf("restore from %s: %v\n%s", zst, r.err, r.stdout)
	}
	if !strings.Contains(r.stdout, "free space not copied") || !strings.Contains(r.stdout, "Verified ") {
		t.Errorf("restore from %s did not skip free space and verify; got:\n%s", zst, r.stdout)
	}
	if names := entries(t, spool); len(names) > 0 {
		t.Errorf("after the restore $TMPDIR holds %q, want nothing", names)
	}
	src := partLoop(t, disk, poff, psize, true)
	dst := partLoop(t, tfile, poff, psize, true)
	if out, err := exec.Command("e2fsck", "-fn", dst).CombinedOutput(); err != nil {
		t.Fatalf("e2fsck -fn on the partition restored from %s: %v\n%s", zst, err, out)
	}
	if diff := firstDiff(treeDigest(t, src, "ext4"), treeDigest(t, dst, "ext4")); diff != "" {
		t.Errorf("files restored from %s differ from the source's: %s", zst, diff)
	}
	checkFreeNotCopied(t, disk, tfile)

	// $TMPDIR in memory: no copy there (it would cost the disk's size in
	// RAM); the disk is restored whole instead, and the output says why.
	mem := t.TempDir()
	sh(t, "mount", "-t", "tmpfs", "-o", "size=16m", "af4-spool", mem)
	t.Cleanup(func() { exec.Command("umount", mem).Run() })
	r = asrEnv(t, map[string]string{"TMPDIR": mem}, "restore", "--source", zst, "--target", dev, "--erase", "--noprompt")
	if r.err != nil {
		t.Fatalf("restore from %s with $TMPDIR on tmpfs: %v\n%s", zst, r.err, r.stdout)
	}
	if !strings.Contains(r.stdout, "held in memory") || strings.Contains(r.stdout, "free space not copied") {
		t.Errorf("restore with $TMPDIR on tmpfs: want the reason it is not mapped and the whole disk written; got:\n%s", r.stdout)
	}
	if got, want := hashRange(t, dev, 0, fileSize(t, disk)), hashRange(t, disk, 0, fileSize(t, disk)); got != want {
		t.Errorf("restore from %s, unmapped: target sha256 %s, want %s (the disk)", zst, got, want)
	}
}

// TestE2ECompressedTempFileGone checks the temporary copy of a compressed
// disk after a failure and after SIGINT during the decompression: the run
// exits non-zero and its folder holds nothing new.
func TestE2ECompressedTempFileGone(t *testing.T) {
	dir := t.TempDir()
	disk := usedDisk(t, dir, "96M")
	gz := compress(t, disk, "gzip", ".gz")

	// A stream cut short: the decompression fails half way.
	cut := filepath.Join(dir, "cut.img.zst")
	zst := compress(t, disk, "zstd", ".zst")
	b, err := os.ReadFile(zst)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(cut, b[:len(b)/2], 0o644); err != nil {
		t.Fatal(err)
	}
	out := t.TempDir()
	r := asr(t, "imagescan", "--source", cut, "--output", filepath.Join(out, "cut.asr"))
	if r.code == 0 || !strings.Contains(r.stderr, "cut.img.zst") {
		t.Errorf("imagescan of a truncated .zst: exit %d, want non-zero naming it; stderr:\n%s", r.code, r.stderr)
	}
	if names := entries(t, out); len(names) > 0 {
		t.Errorf("after a failed imagescan the output folder holds %q, want nothing", names)
	}
	spool := t.TempDir()
	tfile := filepath.Join(dir, "target.img")
	fillRandom(t, tfile, fileSize(t, disk), 12)
	before := hashRange(t, tfile, 0, fileSize(t, disk))
	r = asrEnv(t, map[string]string{"TMPDIR": spool}, "restore", "--source", cut, "--target", tfile, "--erase", "--noprompt")
	if r.code == 0 || !strings.Contains(r.stderr, "stream is damaged") {
		t.Errorf("restore from a truncated .zst: exit %d, want non-zero saying the stream is damaged; stderr:\n%s", r.code, r.stderr)
	}
	if names := entries(t, spool); len(names) > 0 {
		t.Errorf("after a failed restore $TMPDIR holds %q, want nothing", names)
	}
	if hashRange(t, tfile, 0, fileSize(t, disk)) != before {
		t.Errorf("a restore refused before erasing changed the target")
	}

	// SIGINT while decompressing: the temporary file exists (unnamed, in
	// the output's folder) while it runs, and nothing is left after.
	out = t.TempDir()
	sawTemp := false
	code, stdout, _ := signalRun(t, []string{"imagescan", "--source", gz, "--output", filepath.Join(out, "x.asr"), "--puppetstrings"},
		syscall.SIGINT, func(line string) bool {
			if !strings.HasPrefix(line, "PPROG\tdecompressing") {
				return false
			}
			sawTemp = sawTemp || openTempIn(t, out)
			return sawTemp
		}, nil, nil)
	if !sawTemp {
		t.Fatalf("imagescan of %s never held a temporary file in %s while decompressing; stdout:\n%s", gz, out, stdout)
	}
	if code != 130 {
		t.Errorf("imagescan interrupted by SIGINT: exit %d, want 130; stdout:\n%s", code, stdout)
	}
	if names := entries(t, out); len(names) > 0 {
		t.Errorf("after SIGINT the output folder holds %q, want nothing", names)
	}
}

// openTempIn reports whether an asr process has an unnamed (deleted) file
// of dir open: the temporary copy of a disk.
func openTempIn(t *testing.T, dir string) bool {
	t.Helper()
	links, _ := filepath.Glob("/proc/[0-9]*/fd/*")
	for _, l := range links {
		p, err := os.Readlink(l)
		if err == nil && strings.HasPrefix(p, dir+"/") && strings.HasSuffix(p, "(deleted)") {
			return true
		}
	}
	return false
}

// TestE2EHTTPCompressedRawRestore restores a .img.zst from nginx: the
// download is checked against its .sha256, the disk is mapped, and only
// the used data reaches the target.
func TestE2EHTTPCompressedRawRestore(t *testing.T) {
	l := newLab(t)
	_, cert, key := testCA(t)
	l.startNginx(cert, key)
	disk := usedDisk(t, t.TempDir(), "96M")
	sh(t, "sh", "-c", fmt.Sprintf("cd %s && zstd -q -1 -c %s > disk.img.zst && sha256sum disk.img.zst > disk.img.zst.sha256", l.dir, disk))
	size := fileSize(t, disk)
	poff, psize := firstPartition(t, disk)
	spool := t.TempDir()
	restore := func(t *testing.T, tfile string, extra ...string) (string, int) {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		defer cancel()
		args := append([]string{"netns", "exec", l.ns, "env", "TMPDIR=" + spool, l.asr, "restore",
			"--source", "http://127.0.0.1:8080/disk.img.zst", "--target", tfile, "--erase", "--noprompt"}, extra...)
		out, err := exec.CommandContext(ctx, "ip", args...).CombinedOutput()
		code := 0
		if ee, ok := err.(*exec.ExitError); ok {
			code = ee.ExitCode()
		} else if err != nil {
			t.Fatal(err)
		}
		return string(out), code
	}

	t.Run("mapped", func(t *testing.T) {
		tfile := filepath.Join(t.TempDir(), "target.img")
		fillRandom(t, tfile, size, 13)
		dev := loop(t, tfile)
		out, code := restore(t, dev)
		if code != 0 {
			t.Fatalf("restore: exit %d\n%s", code, out)
		}
		for _, s := range []string{"matches the SHA-256 from http://127.0.0.1:8080/disk.img.zst.sha256", "free space not copied", "Verified "} {
			if !strings.Contains(out, s) {
				t.Errorf("restore output lacks %q:\n%s", s, out)
			}
		}
		if names := entries(t, spool); len(names) > 0 {
			t.Errorf("after the restore $TMPDIR holds %q, want nothing", names)
		}
		src := partLoop(t, disk, poff, psize, true)
		dst := partLoop(t, tfile, poff, psize, true)
		if out, err := exec.Command("e2fsck", "-fn", dst).CombinedOutput(); err != nil {
			t.Fatalf("e2fsck -fn on the restored partition: %v\n%s", err, out)
		}
		if diff := firstDiff(treeDigest(t, src, "ext4"), treeDigest(t, dst, "ext4")); diff != "" {
			t.Errorf("restored files differ from the source's: %s", diff)
		}
		checkFreeNotCopied(t, disk, tfile)
	})

	t.Run("wrong checksum", func(t *testing.T) {
		tfile := filepath.Join(t.TempDir(), "target.img")
		fillRandom(t, tfile, size, 14)
		before := hashRange(t, tfile, 0, size)
		out, code := restore(t, tfile, "--checksum", "sha256:"+strings.Repeat("ab", 32))
		if code != 1 || !strings.Contains(out, "the download's SHA-256 is") {
			t.Errorf("restore with a wrong --checksum: exit %d, want 1 naming the mismatch:\n%s", code, out)
		}
		if hashRange(t, tfile, 0, size) != before {
			t.Errorf("a download refused before erasing changed the target")
		}
		if names := entries(t, spool); len(names) > 0 {
			t.Errorf("after the refused restore $TMPDIR holds %q, want nothing", names)
		}
	})
}
