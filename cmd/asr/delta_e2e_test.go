package main

// Delta restores (--delta) end to end: a target restored from image v1 is
// re-imaged with v2, 2% of whose used chunks (the first among them)
// changed. The disk must equal v2 afterwards; nginx's access log says how
// many bytes were fetched, the loop device's own write counter and the
// summary how many were written.

import (
	"bufio"
	"context"
	"math/rand/v2"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/asrlinux/asr/internal/image"
	"github.com/asrlinux/asr/internal/netlab"
	"github.com/asrlinux/asr/internal/testenv"
)

const deltaDiskSize = 128 << 20

// deltaDisks writes v1, a sample disk, and v2: v1 with its first chunk
// and 2% of its other non-zero chunks changed, and one more turned to zeros.
func deltaDisks(t *testing.T, dir string, seed uint64) (v1, v2 string) {
	t.Helper()
	v1 = makeDisk(t, dir, deltaDiskSize, seed)
	return v1, testenv.Changed(t, v1, image.DefaultChunkSize, 2, seed)
}

// differing lists the chunks v2's image stores that the target, holding
// v1, does not hold: what a delta restore must fetch and write, and their
// stored bytes.
func differing(t *testing.T, img1, img2 string) (chunks int, bytes int64) {
	t.Helper()
	m1, m2 := manifest(t, img1), manifest(t, img2)
	for i, c := range m2.Chunks {
		if c.Codec.Stored() && (!m1.Chunks[i].Codec.Stored() || m1.Chunks[i].Sum != c.Sum) {
			chunks++
			bytes += int64(c.Length)
		}
	}
	return chunks, bytes
}

func manifest(t *testing.T, img string) *image.Manifest {
	t.Helper()
	f, err := os.Open(img)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	m, _, err := image.ReadManifest(bufio.NewReader(f))
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// deltaSummary is the "Delta:" line of a restore's output.
type deltaSummary struct{ reused, fetched, written int }

var deltaLine = regexp.MustCompile(`Delta: (\d+) chunks reused from the target, (\d+) fetched \([^)]*\), (\d+) written`)

func parseDelta(t *testing.T, out string) deltaSummary {
	t.Helper()
	m := deltaLine.FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("no Delta: summary in the output:\n%s", out)
	}
	n := func(s string) int { v, _ := strconv.Atoi(s); return v }
	return deltaSummary{n(m[1]), n(m[2]), n(m[3])}
}

// sectorsWritten is the block layer's count of sectors written to dev.
func sectorsWritten(t *testing.T, dev string) int64 {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("/sys/block", filepath.Base(dev), "stat"))
	if err != nil {
		t.Fatal(err)
	}
	f := strings.Fields(string(b))
	n, err := strconv.ParseInt(f[6], 10, 64)
	if err != nil {
		t.Fatalf("/sys/block/%s/stat: %q", filepath.Base(dev), b)
	}
	return n
}

// startLoggingNginx serves dir on 127.0.0.1:8080 in the lab, logging every
// request's URI and body bytes sent to the file it returns.
func startLoggingNginx(t *testing.T, l *lab) string {
	t.Helper()
	logs := t.TempDir()
	conf := filepath.Join(logs, "nginx.conf")
	access := filepath.Join(logs, "access.log")
	err := os.WriteFile(conf, []byte(`daemon off;
master_process off;
user root;
pid `+logs+`/nginx.pid;
error_log `+logs+`/error.log;
events { worker_connections 64; }
http {
  log_format sent '$uri $status $body_bytes_sent "$http_range"';
  access_log `+access+` sent;
  default_type application/octet-stream;
  server {
    listen 127.0.0.1:8080;
    root `+l.dir+`;
  }
}
`), 0o644)
	if err != nil {
		t.Fatal(err)
	}
	netlab.StartProcT(t, "nginx", l.host.Command(context.Background(), "nginx", "-c", conf))
	l.waitPort("127.0.0.1:8080", nil)
	return access
}

// served sums the body bytes nginx sent for uri, from the log's byte skip on.
func served(t *testing.T, access, uri string, skip int64) (total int64, requests int) {
	t.Helper()
	// nginx writes its log line after the response: give it a moment.
	time.Sleep(200 * time.Millisecond)
	b, err := os.ReadFile(access)
	if err != nil {
		t.Fatal(err)
	}
	for line := range strings.Lines(string(b[skip:])) {
		f := strings.Fields(line)
		if len(f) < 3 || f[0] != uri {
			continue
		}
		n, _ := strconv.ParseInt(f[2], 10, 64)
		total += n
		requests++
	}
	return total, requests
}

func TestE2EDeltaOverHTTP(t *testing.T) {
	requireRoot(t)
	l := newLab(t)
	access := startLoggingNginx(t, l)
	v1, v2 := deltaDisks(t, t.TempDir(), 41)
	img1, img2 := filepath.Join(l.dir, "v1.asr"), filepath.Join(l.dir, "v2.asr")
	mustAsr(t, "imagescan", "--source", v1, "--output", img1)
	mustAsr(t, "imagescan", "--source", v2, "--output", img2)
	wantChunks, wantBytes := differing(t, img1, img2)

	tfile := filepath.Join(t.TempDir(), "target.img")
	fillRandom(t, tfile, deltaDiskSize, 41)
	dev := loop(t, tfile)
	if out, code := l.run("restore", "--source", "http://127.0.0.1:8080/v1.asr", "--target", dev, "--erase", "--noprompt"); code != 0 {
		t.Fatalf("full restore of v1: exit %d\n%s", code, out)
	}
	fullSectors := sectorsWritten(t, dev)

	st, _ := os.Stat(access)
	before := sectorsWritten(t, dev)
	out, code := l.run("restore", "--source", "http://127.0.0.1:8080/v2.asr", "--target", dev, "--erase", "--noprompt", "--delta")
	if code != 0 {
		t.Fatalf("delta restore of v2: exit %d\n%s", code, out)
	}
	wrote := sectorsWritten(t, dev) - before
	if got, want := hashRange(t, dev, 0, deltaDiskSize), hashRange(t, v2, 0, deltaDiskSize); got != want {
		t.Fatalf("after the delta restore %s has sha256 %s, want v2's %s\n%s", dev, got, want, out)
	}
	if !strings.Contains(out, "Verified") {
		t.Errorf("the delta restore did not verify:\n%s", out)
	}

	// Fetched: only the chunks that differ, and what opening the image
	// reads (the 64 KiB probe, the header and the manifest).
	s := parseDelta(t, out)
	m2 := manifest(t, img2)
	stored := m2.Stats().StoredChunks
	if s.fetched != wantChunks || s.reused != stored-wantChunks {
		t.Errorf("summary %+v: want %d fetched and %d reused of %d stored chunks\n%s", s, wantChunks, stored-wantChunks, stored, out)
	}
	got, reqs := served(t, access, "/v2.asr", st.Size())
	open := int64(65536 + image.HeaderSize + len(image.MarshalManifest(m2)))
	if got < wantBytes || got > open+wantBytes {
		t.Errorf("nginx sent %d bytes of v2.asr in %d requests; want the %d bytes of the %d differing chunks and at most %d more to open it",
			got, reqs, wantBytes, wantChunks, open)
	}
	img2Size := fileSize(t, img2)
	t.Logf("delta: %d of %d stored chunks fetched, nginx sent %d bytes in %d requests (%.1f%% of the %d-byte image)",
		s.fetched, stored, got, reqs, 100*float64(got)/float64(img2Size), img2Size)

	// Written: the fetched chunks (the first among them, so no extra
	// rewrite), as the summary says and the device's counter shows: it
	// counts the blanked first chunk and the zeroed chunks too.
	if s.written != s.fetched {
		t.Errorf("summary says %d chunks written, want the %d fetched (the first chunk changed, so it is one of them)", s.written, s.fetched)
	}
	zero := m2.Stats().ZeroChunks
	bound := int64(s.written+1+zero) * int64(m2.ChunkSize) / 512
	if wrote > bound {
		t.Errorf("the delta restore wrote %d sectors to %s; at most %d expected (%d chunks, the blanked first one, %d zero chunks)", wrote, dev, bound, s.written, zero)
	}
	t.Logf("sectors written: full restore %d, delta %d (bound %d)", fullSectors, wrote, bound)
}

// Onto a disk holding nothing of the image, a delta restore is a full one:
// the same bytes on the target.
func TestE2EDeltaOntoUnrelatedDisk(t *testing.T) {
	requireRoot(t)
	dir := t.TempDir()
	_, v2 := deltaDisks(t, dir, 42)
	img := scan(t, v2)
	stored := manifest(t, img).Stats().StoredChunks
	for _, fill := range []string{"random", "empty"} {
		t.Run(fill, func(t *testing.T) {
			tfile := filepath.Join(t.TempDir(), "target.img")
			if fill == "random" {
				fillRandom(t, tfile, deltaDiskSize, 42)
			} else if err := os.WriteFile(tfile, nil, 0o644); err != nil || os.Truncate(tfile, deltaDiskSize) != nil {
				t.Fatal(err)
			}
			dev := loop(t, tfile)
			r := mustAsr(t, "restore", "--source", img, "--target", dev, "--erase", "--noprompt", "--delta")
			if got, want := hashRange(t, dev, 0, deltaDiskSize), hashRange(t, v2, 0, deltaDiskSize); got != want {
				t.Fatalf("a delta restore onto a %s disk gave sha256 %s, want the image's %s", fill, got, want)
			}
			if s := parseDelta(t, r.stdout); s.reused != 0 || s.fetched != stored || s.written != stored {
				t.Errorf("onto a %s disk: summary %+v, want 0 reused and all %d stored chunks fetched and written", fill, s, stored)
			}
		})
	}
}

// A signal while comparing leaves the target as it was; one while writing
// leaves its first chunk blank, even though that chunk is rewritten from
// what the target held; a second run restores it.
func TestE2EDeltaSignal(t *testing.T) {
	requireRoot(t)
	dir := t.TempDir()
	v1, v2 := deltaDisks(t, dir, 43)
	img1 := scan(t, v1)
	served := t.TempDir()
	img2 := filepath.Join(served, "v2.asr")
	mustAsr(t, "imagescan", "--source", v2, "--output", img2)
	// Every chunk's data stalls: the header and manifest come, then nothing.
	base := stallServer(t, served, map[string]int64{"v2.asr": manifest(t, img2).DataOffset}, make(chan string, 1))

	tfile := filepath.Join(t.TempDir(), "target.img")
	fillRandom(t, tfile, deltaDiskSize, 43)
	dev := loop(t, tfile)
	mustAsr(t, "restore", "--source", img1, "--target", dev, "--erase", "--noprompt")
	v1Hash := hashRange(t, dev, 0, deltaDiskSize)

	args := []string{"restore", "--source", base + "/v2.asr", "--target", dev, "--erase", "--noprompt", "--delta", "--puppetstrings", "--timeout", "60"}
	t.Run("comparing", func(t *testing.T) {
		code, stdout, stderr := signalRun(t, args, syscall.SIGINT, puppetPhase("comparing"), nil, throttleReads(t, dev, 4<<20))
		if code != 130 || !strings.Contains(stderr, "nothing was written") {
			t.Errorf("SIGINT while comparing: exit %d, stderr %q; want 130 and nothing written\n%s", code, stderr, stdout)
		}
		if got := hashRange(t, dev, 0, deltaDiskSize); got != v1Hash {
			t.Errorf("a signal while comparing changed the target")
		}
	})
	t.Run("writing", func(t *testing.T) {
		code, stdout, stderr := signalRun(t, args, syscall.SIGINT, puppetPhase("restoring"), nil, nil)
		if code != 130 || !strings.Contains(stderr, "first chunk has been blanked") {
			t.Errorf("SIGINT while writing: exit %d, stderr %q; want 130 and the first chunk blanked\n%s", code, stderr, stdout)
		}
		if got := hashRange(t, dev, 0, 1<<20); got != testenv.ZeroHash(1<<20) {
			t.Fatalf("after a signal during a delta restore the first chunk of %s is not blank", dev)
		}
	})
	r := mustAsr(t, "restore", "--source", img2, "--target", dev, "--erase", "--noprompt", "--delta")
	if got, want := hashRange(t, dev, 0, deltaDiskSize), hashRange(t, v2, 0, deltaDiskSize); got != want {
		t.Fatalf("the second delta run left sha256 %s, want v2's %s", got, want)
	}
	if s := parseDelta(t, r.stdout); s.reused == 0 {
		t.Errorf("the second run reused nothing: %+v", s)
	}
}

// --delta refuses what it cannot do, before touching the target.
func TestE2EDeltaRefusals(t *testing.T) {
	requireRoot(t)
	dir := t.TempDir()
	disk := makeDisk(t, dir, diskSize, 44)
	tfile := filepath.Join(dir, "target.img")
	fillRandom(t, tfile, diskSize, 44)
	before := hashRange(t, tfile, 0, diskSize)
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"restore", "--source", disk, "--target", tfile, "--erase", "--noprompt", "--delta"}, "needs a prepared image"},
		{[]string{"restore", "--source", disk, "--target", tfile, "--delta"}, "--delta needs --erase and --target"},
		{[]string{"restore", "--source", disk, "--file", filepath.Join(dir, "new.img"), "--erase", "--delta"}, "--delta needs --erase and --target"},
	} {
		r := asr(t, c.args...)
		if r.code == 0 || !strings.Contains(r.stderr, c.want) {
			t.Errorf("asr %s: exit %d, stderr %q; want an error naming %q", strings.Join(c.args, " "), r.code, r.stderr, c.want)
		}
	}
	if got := hashRange(t, tfile, 0, diskSize); got != before {
		t.Errorf("a refused --delta changed the target")
	}
	if _, err := os.Stat(filepath.Join(dir, "new.img")); err == nil {
		t.Errorf("a refused --delta created the new file")
	}
}

// Free space ends as a full restore leaves it: v2 of an ext4 volume deletes
// a file of v1 and writes another; the target that held v1, re-imaged with
// --delta, equals byte for byte a disk of old random data fully restored
// from v2 (the deleted file's blocks are free space now, and are discarded).
func TestE2EDeltaFreeSpaceAsFullRestore(t *testing.T) {
	requireVolumes(t)
	dir := t.TempDir()
	const size = 64 << 20
	random := func(p string, n int, seed uint64) {
		rng := rand.New(rand.NewPCG(seed, 5))
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(rng.Uint32())
		}
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	v1 := ext4Volume(t, dir, "v1.img", size, func(root string) {
		random(filepath.Join(root, "a"), 8<<20, 1)
		random(filepath.Join(root, "b"), 8<<20, 2)
	})
	v2 := filepath.Join(dir, "v2.img")
	sh(t, "cp", "--sparse=always", v1, v2)
	withMounted(t, loop(t, v2), func(root string) {
		if err := os.Remove(filepath.Join(root, "a")); err != nil {
			t.Fatal(err)
		}
		random(filepath.Join(root, "c"), 2<<20, 3)
	})
	img1, img2 := scan(t, v1), scan(t, v2)
	if manifest(t, img2).Stats().UnusedChunks == 0 {
		t.Fatalf("the image of v2 maps no free space: the test would not test it")
	}

	held := filepath.Join(dir, "held.img")
	fillRandom(t, held, size, 51)
	heldDev := loop(t, held)
	mustAsr(t, "restore", "--source", img1, "--target", heldDev, "--erase", "--noprompt")
	r := mustAsr(t, "restore", "--source", img2, "--target", heldDev, "--erase", "--noprompt", "--delta")
	if s := parseDelta(t, r.stdout); s.reused == 0 {
		t.Errorf("the delta restore reused nothing of v1: %+v", s)
	}

	full := filepath.Join(dir, "full.img")
	fillRandom(t, full, size, 52)
	fullDev := loop(t, full)
	mustAsr(t, "restore", "--source", img2, "--target", fullDev, "--erase", "--noprompt")
	if got, want := hashRange(t, heldDev, 0, size), hashRange(t, fullDev, 0, size); got != want {
		t.Errorf("after --delta the disk has sha256 %s; a full restore of the same image gives %s", got, want)
	}
}
