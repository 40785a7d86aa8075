package main

// End-to-end tests of the asr command against a web server that misbehaves
// (stalls, splices, bombs), on 127.0.0.1 in this process, restoring to a
// file target: exit code, message, time within --timeout plus a margin,
// peak memory, and the target's bytes. The fault cases themselves are
// covered one by one in internal/source/faults_test.go; these check that
// the command says and does the right thing with them. No root needed.

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"fmt"
	"hash/crc32"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/asrlinux/asr/internal/testenv"
)

const faultDisk = 8 << 20

type asrRun struct {
	out    string
	code   int
	took   time.Duration
	maxRSS int64 // KiB
}

// runAsr runs the asr binary and measures it. Its peak memory comes from
// GNU time, not from this process's wait4: Go starts children with
// CLONE_VM|CLONE_VFORK, and exec then charges the test binary's own
// high-water RSS to the child's maxrss, so a large test process would make
// asr look large. time forks asr with a copy of its own small address space.
func runAsr(t *testing.T, args ...string) asrRun {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	testenv.RequireTools(t, "/usr/bin/time")
	rss := filepath.Join(t.TempDir(), "maxrss")
	cmd := exec.CommandContext(ctx, "/usr/bin/time", append([]string{"-f", "%M", "-o", rss, testenv.Asr(t)}, args...)...)
	start := time.Now()
	out, err := cmd.CombinedOutput()
	r := asrRun{out: string(out), took: time.Since(start)}
	if ee, ok := err.(*exec.ExitError); ok {
		r.code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	// time writes "Command exited with non-zero status N" before the
	// figure when asr fails: the figure is the last line.
	b, err := os.ReadFile(rss)
	if err != nil {
		t.Fatalf("GNU time left no measurement: %v", err)
	}
	lines := strings.Fields(strings.TrimSpace(string(b)))
	if len(lines) == 0 {
		t.Fatalf("GNU time left an empty measurement")
	}
	if r.maxRSS, err = strconv.ParseInt(lines[len(lines)-1], 10, 64); err != nil {
		t.Fatalf("GNU time's measurement %q: %v", b, err)
	}
	return r
}

// faultFixture is a disk of random data, its prepared image, and the bombs.
type faultFixture struct {
	disk, img, xzBomb, gz []byte
	diskSum               string
}

func newFaultFixture(t *testing.T) faultFixture {
	t.Helper()
	dir := t.TempDir()
	p := filepath.Join(dir, "disk.img")
	fillRandom(t, p, faultDisk, 7)
	var f faultFixture
	f.disk, _ = os.ReadFile(p)
	f.img, _ = os.ReadFile(scan(t, p))
	f.diskSum = fmt.Sprintf("%x", sha256.Sum256(f.disk))
	var b bytes.Buffer
	z, _ := gzip.NewWriterLevel(&b, gzip.BestSpeed)
	z.Write(f.disk)
	z.Close()
	f.gz = b.Bytes()
	// An .xz of 320 MiB of zeros whose block header declares a 1536 MiB
	// dictionary: before asr capped it, measuring it alone touched 320 MiB
	// of that dictionary (1600 MiB of zeros: 3.2 GB peak).
	x, err := exec.Command("sh", "-c", "head -c 335544320 /dev/zero | xz -0 -T1 -c").Output()
	if err != nil {
		t.Fatalf("xz: %v", err)
	}
	h := x[12 : 12+(int(x[12])+1)*4]
	h[4] = 37
	c := crc32.ChecksumIEEE(h[:len(h)-4])
	h[len(h)-4], h[len(h)-3], h[len(h)-2], h[len(h)-1] = byte(c), byte(c>>8), byte(c>>16), byte(c>>24)
	f.xzBomb = x
	return f
}

func TestE2EHTTPFaults(t *testing.T) {
	testenv.Require(t, "xz")
	f := newFaultFixture(t)
	release := make(chan struct{})
	stall := func(r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-release:
		}
	}
	var resumed atomic.Int32
	mux := http.NewServeMux()
	serve := func(data []byte) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(data))
		}
	}
	mux.HandleFunc("/sidecar-stalls/disk.img", serve(f.disk))
	mux.HandleFunc("/sidecar-stalls/disk.img.sha256", func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusOK)
		w.(http.Flusher).Flush()
		stall(r)
	})
	headersThenStall := func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", "1000000")
		w.WriteHeader(http.StatusOK)
		w.(http.Flusher).Flush()
		stall(r)
	}
	mux.HandleFunc("/first-stalls/disk.asr", headersThenStall)
	mux.HandleFunc("/first-stalls/disk.img", headersThenStall)
	// A raw image whose first connection drops half-way, and whose
	// resumption comes back as a 206 from the start of the file. The
	// probe and the first block its filesystems are mapped through (256
	// KiB; random data has no other metadata to read) are answered right.
	mux.HandleFunc("/splice/disk.img", func(w http.ResponseWriter, r *http.Request) {
		rng := r.Header.Get("Range")
		switch {
		case rng == "bytes=0-65535" || rng == "bytes=0-262143":
			serve(f.disk)(w, r)
		case strings.HasPrefix(rng, "bytes=0-") || rng == "":
			w.Header().Set("Content-Length", fmt.Sprint(len(f.disk)))
			w.Header().Set("Content-Range", fmt.Sprintf("bytes 0-%d/%d", len(f.disk)-1, len(f.disk)))
			w.WriteHeader(http.StatusPartialContent)
			w.Write(f.disk[:len(f.disk)/2])
			w.(http.Flusher).Flush()
			panic(http.ErrAbortHandler)
		default:
			resumed.Add(1)
			r.Header.Set("Range", "bytes=0-")
			serve(f.disk)(w, r)
		}
	})
	mux.HandleFunc("/unchecked/disk.img", serve(f.disk))
	mux.HandleFunc("/endless/disk.img", func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusOK)
		block := bytes.Repeat([]byte{0x5a}, 64<<10)
		for {
			if _, err := w.Write(block); err != nil {
				return
			}
			select {
			case <-release:
				return
			default:
			}
		}
	})
	mux.HandleFunc("/bomb/disk.img.xz", serve(f.xzBomb))
	mux.HandleFunc("/gz/disk.img.gz", serve(f.gz))
	srv := httptest.NewServer(mux)
	defer srv.Close()
	defer close(release)

	const timeout = 2 * time.Second
	cases := []struct {
		name    string
		path    string
		code    int
		says    []string
		written bool // the refusal comes after writing began: first chunk blank
	}{
		{"sidecar stalls after its headers", "/sidecar-stalls/disk.img", 1, []string{"sent nothing for 2s", "checksum file", "(--timeout"}, false},
		{"prepared image: first answer stalls after its headers", "/first-stalls/disk.asr", 1, []string{"sent nothing for 2s", "(--timeout"}, false},
		{"raw image: first answer stalls after its headers", "/first-stalls/disk.img", 1, []string{"sent nothing for 2s", "(--timeout"}, false},
		{"resumed answer from the wrong offset", "/splice/disk.img", 1, []string{"Content-Range", "the wrong part of the file"}, true},
		{"endless body", "/endless/disk.img", 1, []string{"holds more than 8.0 MiB"}, false},
		{"xz declaring a 1536 MiB dictionary", "/bomb/disk.img.xz", 1, []string{"needs a 1536 MiB dictionary; asr allows 64 MiB"}, false},
	}
	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			tgt := filepath.Join(t.TempDir(), "target.raw")
			fillRandom(t, tgt, faultDisk, uint64(100+i))
			before := hashRange(t, tgt, 0, faultDisk)
			r := runAsr(t, "restore", "--source", srv.URL+c.path, "--target", tgt, "--erase", "--noprompt",
				"--timeout", fmt.Sprint(int(timeout.Seconds())), "--retries", "3")
			if r.code != c.code {
				t.Errorf("exit %d, want %d\n%s", r.code, c.code, r.out)
			}
			for _, s := range c.says {
				if !strings.Contains(r.out, s) {
					t.Errorf("output lacks %q:\n%s", s, r.out)
				}
			}
			if strings.Contains(r.out, "Verified") {
				t.Errorf("a failed restore says Verified:\n%s", r.out)
			}
			if limit := timeout + 5*time.Second; r.took > limit {
				t.Errorf("asr took %v, want at most %v (--timeout plus a margin)", r.took.Round(time.Millisecond), limit)
			}
			if r.maxRSS > 256<<10 {
				t.Errorf("asr peaked at %d MiB, over its 256 MiB budget", r.maxRSS>>10)
			}
			if c.written {
				if first := hashRange(t, tgt, 0, 1<<20); first != testenv.ZeroHash(1<<20) {
					t.Errorf("after the failure the target's first chunk is not blank")
				}
			} else if hashRange(t, tgt, 0, faultDisk) != before {
				t.Errorf("the refused restore changed the target")
			}
		})
	}
	if resumed.Load() == 0 {
		t.Errorf("the splicing server was never asked to resume: the splice case tested nothing")
	}

	t.Run("no published checksum", func(t *testing.T) {
		tgt := filepath.Join(t.TempDir(), "target.raw")
		fillRandom(t, tgt, faultDisk, 99)
		r := runAsr(t, "restore", "--source", srv.URL+"/unchecked/disk.img", "--target", tgt, "--erase", "--noprompt")
		if r.code != 0 {
			t.Fatalf("exit %d\n%s", r.code, r.out)
		}
		if h := hashRange(t, tgt, 0, faultDisk); h != f.diskSum {
			t.Errorf("target sha256 %s, want %s", h, f.diskSum)
		}
		want := "Verified: the disk matches what was downloaded (the download itself could not be checked: no checksum published"
		if !strings.Contains(r.out, want) || strings.Contains(r.out, "every chunk matches the source") {
			t.Errorf("output does not say the download was unchecked (%q):\n%s", want, r.out)
		}
	})
	t.Run("checked with --checksum", func(t *testing.T) {
		tgt := filepath.Join(t.TempDir(), "target.raw")
		fillRandom(t, tgt, faultDisk, 98)
		gzSum := fmt.Sprintf("%x", sha256.Sum256(f.gz))
		r := runAsr(t, "restore", "--source", srv.URL+"/gz/disk.img.gz", "--target", tgt, "--erase", "--noprompt", "--checksum", "sha256:"+gzSum)
		if r.code != 0 {
			t.Fatalf("exit %d\n%s", r.code, r.out)
		}
		if !strings.Contains(r.out, "Verified 8.0 MiB: every chunk matches the source") || strings.Contains(r.out, "could not be checked") {
			t.Errorf("a checked download is not reported verified against its source:\n%s", r.out)
		}
	})
}
