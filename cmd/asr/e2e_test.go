package main

// End-to-end tests of `asr restore`, `asr imagescan` and `asr info` on real
// loop devices. They need root and loop devices; with ASR_E2E=1 (set by
// `make test` and CI) they fail instead of skipping when those are missing.
//
// The sample disk is a 40 MiB GPT disk (made by sgdisk) whose one partition
// holds stretches of random bytes, stretches of text and long runs of zeros,
// so images have stored, compressible and zero chunks.

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/asrlinux/asr/internal/image"
	"github.com/asrlinux/asr/internal/testenv"
)

const diskSize = 40 << 20

func requireRoot(t *testing.T) { testenv.Require(t, "losetup", "sgdisk", "mkfs.ext4") }

var (
	sh         = testenv.Run
	makeDisk   = testenv.Disk
	fillRandom = testenv.FillRandom
	loop       = testenv.Loop
	hashRange  = testenv.Hash
	fileSize   = testenv.Size
)

type result struct {
	stdout, stderr string
	code           int
	err            error
}

// asr runs the CLI in-process, with no terminal on stdin.
func asr(t *testing.T, args ...string) result {
	t.Helper()
	var out, errb bytes.Buffer
	e := env{stdin: strings.NewReader(""), stdout: &out, stderr: &errb, getenv: func(string) string { return "" }, isTerminal: func() bool { return false }}
	err := run(context.Background(), e, args)
	code := exitStatus(&errb, err) // prints the error as main does
	return result{stdout: out.String(), stderr: errb.String(), err: err, code: code}
}

func mustAsr(t *testing.T, args ...string) result {
	t.Helper()
	r := asr(t, args...)
	if r.err != nil {
		t.Fatalf("asr %s: %v\nstdout:\n%s", strings.Join(args, " "), r.err, r.stdout)
	}
	return r
}

func scan(t *testing.T, disk string) string {
	t.Helper()
	img := disk + ".asr"
	mustAsr(t, "imagescan", "--source", disk, "--output", img)
	return img
}

func TestE2ERestoreImageToLoopDevice(t *testing.T) {
	requireRoot(t)
	dir := t.TempDir()
	disk := makeDisk(t, dir, diskSize, 1)
	img := scan(t, disk)

	// A larger target full of old data: the restored range must equal the
	// disk, and the space beyond it must keep its old bytes.
	tfile := filepath.Join(dir, "target.img")
	tsize := int64(diskSize + 8<<20)
	fillRandom(t, tfile, tsize, 1)
	tailBefore := hashRange(t, tfile, diskSize, tsize-diskSize-33*512)
	dev := loop(t, tfile)

	r := mustAsr(t, "restore", "--source", img, "--target", dev, "--erase", "--noprompt")
	// The GPT is adjusted for the larger disk: its protective MBR and
	// primary header (sectors 0 and 1) change, its backup moves to the
	// end. Everything else is the source's, and the rest of the space
	// beyond it keeps its old bytes.
	if got, want := hashRange(t, dev, 1024, diskSize-1024), hashRange(t, disk, 1024, diskSize-1024); got != want {
		t.Errorf("restored range of %s has sha256 %s, want %s (the source disk)", dev, got, want)
	}
	const backup = 33 * 512
	if got := hashRange(t, dev, diskSize, tsize-diskSize-backup); got != tailBefore {
		t.Errorf("space beyond the image on %s changed: sha256 %s, want %s", dev, got, tailBefore)
	}
	if out, err := exec.Command("sgdisk", "-v", dev).CombinedOutput(); err != nil || !strings.Contains(string(out), "No problems found") {
		t.Errorf("sgdisk -v %s after restoring onto a larger disk: %v\n%s", dev, err, out)
	}
	steps := []string{
		"Validating target...done", "Validating source...done", "Retrieving scan information...done",
		"Validating sizes...done", "Erasing target device " + dev + "...done",
		"Restoring  ....10....20....30....40....50....60....70....80....90....100",
		"Verifying  ....10....20....30....40....50....60....70....80....90....100", "Verified ",
	}
	last := -1
	for _, s := range steps {
		i := strings.Index(r.stdout, s)
		if i < 0 || i < last {
			t.Fatalf("output lacks %q in order; got:\n%s", s, r.stdout)
		}
		last = i
	}
}

func TestE2ERawCompressedAndCloneSources(t *testing.T) {
	requireRoot(t)
	dir := t.TempDir()
	disk := makeDisk(t, dir, diskSize, 2)
	want := hashRange(t, disk, 0, diskSize)
	for _, c := range []struct{ tool, ext string }{{"gzip", ".gz"}, {"xz", ".xz"}, {"zstd", ".zst"}} {
		testenv.RequireTools(t, c.tool)
		sh(t, "sh", "-c", fmt.Sprintf("%s -c -1 < %s > %s%s", c.tool, disk, disk, c.ext))
	}
	srcDev := loop(t, disk, "--read-only")
	for _, src := range []string{disk, disk + ".gz", disk + ".xz", disk + ".zst", srcDev} {
		t.Run(filepath.Base(src), func(t *testing.T) {
			tfile := filepath.Join(dir, "t-"+filepath.Base(src))
			fillRandom(t, tfile, diskSize, 3)
			dev := loop(t, tfile)
			r := mustAsr(t, "restore", "--source", src, "--target", dev, "--erase", "--noprompt")
			if got := hashRange(t, dev, 0, diskSize); got != want {
				t.Errorf("restore from %s: target sha256 %s, want %s", src, got, want)
			}
			if !strings.Contains(r.stdout, "Verified ") {
				t.Errorf("restore from %s did not verify:\n%s", src, r.stdout)
			}
		})
	}
}

func TestE2ERestoreToFile(t *testing.T) {
	requireRoot(t)
	dir := t.TempDir()
	disk := makeDisk(t, dir, diskSize, 4)
	img := scan(t, disk)
	out := filepath.Join(dir, "new.raw")
	// A new file erases nothing: no terminal and no --noprompt needed.
	mustAsr(t, "restore", "--source", img, "--file", out)
	if got, want := hashRange(t, out, 0, diskSize), hashRange(t, disk, 0, diskSize); got != want || fileSize(t, out) != diskSize {
		t.Errorf("--file wrote sha256 %s (%d bytes), want %s (%d bytes)", got, fileSize(t, out), want, diskSize)
	}
	// An existing file is not replaced without --erase.
	before := hashRange(t, out, 0, diskSize)
	r := asr(t, "restore", "--source", img, "--file", out, "--noprompt")
	if r.code != 1 || !strings.Contains(r.err.Error(), out+" already exists: add --erase to overwrite it") {
		t.Errorf("restore --file onto an existing file: exit %d, %v; want exit 1 saying it already exists", r.code, r.err)
	}
	if hashRange(t, out, 0, diskSize) != before {
		t.Errorf("refused restore changed %s", out)
	}
	// The package names no flag: the CLI adds its way out.
	r = asr(t, "restore", "--source", img, "--target", dir, "--erase", "--noprompt")
	if r.code != 1 || !strings.Contains(r.err.Error(), "is a directory: give a block device or a disk image file, or leave out --erase") {
		t.Errorf("restore --erase onto a directory: exit %d, %v; want exit 1 and the way out", r.code, r.err)
	}
	r = asr(t, "restore", "--source", img, "--file", dir)
	if r.code != 1 || !strings.Contains(r.err.Error(), "exists and is not a regular file: use --target for devices") {
		t.Errorf("restore --file onto a directory: exit %d, %v; want exit 1 and the way out", r.code, r.err)
	}
	// Overwriting it is asked about; with no terminal, refused with the way out.
	r = asr(t, "restore", "--source", img, "--file", out, "--erase")
	if r.code != 1 || !strings.Contains(r.err.Error(), "there is no terminal to confirm on; add --noprompt") {
		t.Errorf("restore --file --erase onto an existing file without a terminal: exit %d, %v; want exit 1 and the --noprompt hint", r.code, r.err)
	}
	if hashRange(t, out, 0, diskSize) != before {
		t.Errorf("refused restore changed %s", out)
	}
	// A regular file is a valid --target too (a VM disk image).
	vm := filepath.Join(dir, "vm.raw")
	fillRandom(t, vm, diskSize, 5)
	mustAsr(t, "restore", "--source", img, "--target", vm, "--erase", "--noprompt", "--noverify")
	if got, want := hashRange(t, vm, 0, diskSize), hashRange(t, disk, 0, diskSize); got != want {
		t.Errorf("restore to regular file target: sha256 %s, want %s", got, want)
	}
}

func TestE2EImagescanIsDeterministicAndInfoReports(t *testing.T) {
	requireRoot(t)
	dir := t.TempDir()
	disk := makeDisk(t, dir, diskSize, 6)
	a := filepath.Join(dir, "a.asr")
	b := filepath.Join(dir, "b.asr")
	mustAsr(t, "imagescan", "--source", disk, "--output", a)
	mustAsr(t, "imagescan", "--source", disk, "--output", b, "--chunksize", "1048576")
	if ha, hb := hashRange(t, a, 0, fileSize(t, a)), hashRange(t, b, 0, fileSize(t, b)); ha != hb {
		t.Errorf("two scans of the same disk differ: %s vs %s", ha, hb)
	}
	r := mustAsr(t, "info", "--source", a)
	for _, want := range []string{"Logical size:  40.0 MiB (41943040 bytes)", "Chunks:        40 of 1.0 MiB", "GPT, 1 partition", "Linux filesystem \"data\"", "Digest:        sha256:"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("asr info lacks %q:\n%s", want, r.stdout)
		}
	}
	p := mustAsr(t, "info", "--source", a, "--plist")
	if !strings.Contains(p.stdout, "<key>Logical Size</key>") || !strings.Contains(p.stdout, "<integer>41943040</integer>") {
		t.Errorf("asr info --plist lacks the logical size:\n%s", p.stdout)
	}
	// An existing output is kept unless --overwrite.
	r = asr(t, "imagescan", "--source", disk, "--output", a)
	if r.err == nil || !strings.Contains(r.err.Error(), "--overwrite") {
		t.Errorf("imagescan onto an existing image: %v, want a refusal naming --overwrite", r.err)
	}
}

// corruptChunk flips one bit in the stored bytes of the first stored chunk
// after the first one, and returns that chunk's index.
func corruptChunk(t *testing.T, img string) int {
	t.Helper()
	f, err := os.OpenFile(img, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	im, err := image.Open(f, fileSize(t, img))
	if err != nil {
		t.Fatal(err)
	}
	for i, c := range im.Manifest.Chunks {
		if i > 0 && c.Codec.Stored() {
			b := []byte{0}
			at := c.Offset + int64(c.Length)/2
			f.ReadAt(b, at)
			b[0] ^= 0x10
			if _, err := f.WriteAt(b, at); err != nil {
				t.Fatal(err)
			}
			return i
		}
	}
	t.Fatal("sample image has no stored chunk to corrupt")
	return 0
}

func TestE2ECorruptChunkFailsAndLeavesFirstChunkBlank(t *testing.T) {
	requireRoot(t)
	dir := t.TempDir()
	disk := makeDisk(t, dir, diskSize, 7)
	img := scan(t, disk)
	bad := corruptChunk(t, img)
	tfile := filepath.Join(dir, "target.img")
	fillRandom(t, tfile, diskSize, 7)
	dev := loop(t, tfile)
	r := asr(t, "restore", "--source", img, "--target", dev, "--erase", "--noprompt")
	if r.code != 1 {
		t.Fatalf("restore of an image with a flipped bit: exit %d, want 1", r.code)
	}
	if msg := r.err.Error(); !strings.Contains(msg, fmt.Sprintf("chunk %d", bad)) || !strings.Contains(msg, "fails its BLAKE3-256 check") {
		t.Errorf("error %q does not name chunk %d and its failed BLAKE3-256 check", msg, bad)
	}
	zero := make([]byte, 1<<20)
	got := make([]byte, 1<<20)
	f, _ := os.Open(dev)
	defer f.Close()
	f.ReadAt(got, 0)
	if !bytes.Equal(got, zero) {
		t.Errorf("after a failed restore the first chunk of %s is not blank: the half-written disk could pass as good", dev)
	}
}

// TestE2ERefusals checks every refusal: a one-line error naming the problem,
// a nonzero exit, and a target whose bytes did not change.
func TestE2ERefusals(t *testing.T) {
	requireRoot(t)
	dir := t.TempDir()
	disk := makeDisk(t, dir, diskSize, 8)
	img := scan(t, disk)

	corrupt := func(name string, mutate func(b []byte) []byte) string {
		b, err := os.ReadFile(img)
		if err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, mutate(b), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	badMagic := corrupt("badmagic.asr", func(b []byte) []byte { b[0] = 'X'; return b })
	badVersion := corrupt("badversion.asr", func(b []byte) []byte {
		h, _ := image.ParseHeader(b)
		h.Version = 9
		copy(b, image.MarshalHeader(h))
		return b
	})
	badManifest := corrupt("badmanifest.asr", func(b []byte) []byte { b[image.HeaderSize+3] ^= 1; return b })
	truncated := corrupt("truncated.asr", func(b []byte) []byte { return b[:len(b)-100] })

	// The target: a loop device with old data that must survive every refusal.
	tfile := filepath.Join(dir, "target.img")
	fillRandom(t, tfile, diskSize, 9)
	dev := loop(t, tfile)
	small := filepath.Join(dir, "small.img")
	fillRandom(t, small, diskSize/2, 10)
	smallDev := loop(t, small)
	roFile := filepath.Join(dir, "ro.img")
	fillRandom(t, roFile, diskSize, 11)
	roDev := loop(t, roFile, "--read-only")

	// A target with a mounted filesystem, and a disk whose partition is mounted.
	fsFile := filepath.Join(dir, "fs.img")
	fillRandom(t, fsFile, diskSize, 12)
	fsDev := loop(t, fsFile)
	sh(t, "mkfs.ext4", "-q", fsDev)
	mnt := filepath.Join(dir, "mnt")
	os.Mkdir(mnt, 0o755)
	sh(t, "mount", fsDev, mnt)
	t.Cleanup(func() { exec.Command("umount", mnt).Run() })

	partFile := filepath.Join(dir, "parted.img")
	if err := os.WriteFile(partFile, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	os.Truncate(partFile, diskSize)
	sh(t, "sgdisk", "-n1:2048:0", partFile)
	partDev := loop(t, partFile, "-P")
	exec.Command("partx", "-a", partDev).Run()
	sh(t, "mkfs.ext4", "-q", partDev+"p1")
	pmnt := filepath.Join(dir, "pmnt")
	os.Mkdir(pmnt, 0o755)
	sh(t, "mount", partDev+"p1", pmnt)
	t.Cleanup(func() { exec.Command("umount", pmnt).Run() })

	// Another program holding the device exclusively.
	busyFile := filepath.Join(dir, "busy.img")
	fillRandom(t, busyFile, diskSize, 13)
	busyDev := loop(t, busyFile)
	holder, err := os.OpenFile(busyDev, os.O_RDWR|unix.O_EXCL, 0)
	if err != nil {
		t.Fatalf("holding %s: %v", busyDev, err)
	}
	defer holder.Close()

	cases := []struct {
		name   string
		args   []string
		target string // whose bytes must not change
		want   string // in the error
		code   int
	}{
		{"source missing", []string{"--source", filepath.Join(dir, "nope.asr"), "--target", dev, "--erase", "--noprompt"}, dev, "nope.asr does not exist", 1},
		{"bad magic", []string{"--source", badMagic, "--target", dev, "--erase", "--noprompt"}, dev, "not an asr prepared image (bad magic)", 1},
		{"bad version", []string{"--source", badVersion, "--target", dev, "--erase", "--noprompt"}, dev, "unsupported image format version 9", 1},
		{"bad manifest digest", []string{"--source", badManifest, "--target", dev, "--erase", "--noprompt"}, dev, "manifest digest", 1},
		{"truncated image", []string{"--source", truncated, "--target", dev, "--erase", "--noprompt"}, dev, "truncated", 1},
		{"target missing", []string{"--source", img, "--target", "/dev/nonexistent-asr-disk", "--erase", "--noprompt"}, dev, "/dev/nonexistent-asr-disk does not exist", 1},
		{"target read-only", []string{"--source", img, "--target", roDev, "--erase", "--noprompt"}, roDev, "read-only", 1},
		{"target mounted", []string{"--source", img, "--target", fsDev, "--erase", "--noprompt"}, "", "is mounted at " + mnt, 1},
		{"target holds mounted partition", []string{"--source", img, "--target", partDev, "--erase", "--noprompt"}, "", "holds partition " + partDev + "p1, mounted at " + pmnt, 1},
		{"target in use", []string{"--source", img, "--target", busyDev, "--erase", "--noprompt"}, busyDev, "in use by another program", 1},
		{"target too small", []string{"--source", img, "--target", smallDev, "--erase", "--noprompt"}, smallDev, "is too small", 1},
		{"source is target", []string{"--source", dev, "--target", dev, "--erase", "--noprompt"}, dev, "source and target are the same device", 1},
		{"no terminal to confirm", []string{"--source", img, "--target", dev, "--erase"}, dev, "add --noprompt", 1},
		{"no --erase", []string{"--source", img, "--target", dev, "--noprompt"}, dev, "add --erase", 1},
		{"grow into nothing", []string{"--source", img, "--target", dev, "--erase", "--noprompt", "--grow"}, dev, "--grow: the target is exactly the image's size (40.0 MiB): there is nothing to grow into", 1},
		{"no target", []string{"--source", img, "--erase"}, dev, "--target is required", 2},
		{"unknown flag", []string{"--source", img, "--target", dev, "--erase", "--bogus"}, dev, "flag provided but not defined: -bogus", 2},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var before string
			if c.target != "" {
				before = hashRange(t, c.target, 0, fileSize(t, c.target))
			}
			r := asr(t, append([]string{"restore"}, c.args...)...)
			if r.err == nil {
				t.Fatalf("asr restore %v succeeded, want a refusal", c.args)
			}
			msg := r.err.Error()
			if r.code != c.code {
				t.Errorf("exit %d, want %d (%s)", r.code, c.code, msg)
			}
			if strings.Contains(msg, "\n") {
				t.Errorf("error is not one line: %q", msg)
			}
			if !strings.Contains(msg, c.want) {
				t.Errorf("error %q does not say %q", msg, c.want)
			}
			if c.target != "" {
				if after := hashRange(t, c.target, 0, fileSize(t, c.target)); after != before {
					t.Errorf("refused restore changed %s", c.target)
				}
			}
			t.Logf("refused: %s", msg)
		})
	}
}

func TestE2EPuppetstrings(t *testing.T) {
	requireRoot(t)
	dir := t.TempDir()
	disk := makeDisk(t, dir, diskSize, 14)
	img := scan(t, disk)
	tfile := filepath.Join(dir, "t.img")
	fillRandom(t, tfile, diskSize, 14)
	r := mustAsr(t, "restore", "--source", img, "--file", filepath.Join(dir, "out.raw"), "--noprompt", "--puppetstrings")
	lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
	last := map[string]int{}
	var phases []string
	for _, l := range lines {
		f := strings.Split(l, "\t")
		switch f[0] {
		case "PSTART":
			phases = append(phases, f[1])
		case "PPROG":
			var pct int
			fmt.Sscan(f[2], &pct)
			if pct < last[f[1]] || pct > 100 {
				t.Errorf("progress for %s went from %d to %d", f[1], last[f[1]], pct)
			}
			last[f[1]] = pct
		case "PSTOP", "PINFO":
		default:
			t.Errorf("line %q is not a puppetstrings line", l)
		}
	}
	if last["restoring"] != 100 || last["verifying"] != 100 {
		t.Errorf("restoring/verifying did not reach 100: %v", last)
	}
	if got, want := strings.Join(phases, ","), "validating_target,validating_source,retrieving_scan_information,validating_sizes,creating,restoring,verifying"; got != want {
		t.Errorf("puppetstrings phases = %s, want %s", got, want)
	}
}
