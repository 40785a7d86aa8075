package main

// Signals during `asr restore`, for each phase: the real binary, a loop
// device, and a source on 127.0.0.1 that the test holds still so the signal
// lands in the phase it names. Before the erase a signal must leave the
// target's bytes as they were; after it, the run exits non-zero, says so,
// and the first chunk is blank so the disk cannot pass as a good one.

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/asrlinux/asr/internal/testenv"
)

// stallAfter is an io.ReadSeeker over a file that blocks every read at or
// past byte limit until done is closed: a server that sent headers and
// some of the body, then stopped.
type stallAfter struct {
	f     *os.File
	pos   int64
	limit int64
	done  <-chan struct{}
}

func (s *stallAfter) Read(p []byte) (int, error) {
	if s.pos >= s.limit {
		<-s.done
		return 0, errors.New("stalled")
	}
	p = p[:min(int64(len(p)), s.limit-s.pos)]
	n, err := s.f.ReadAt(p, s.pos)
	s.pos += int64(n)
	if err == io.EOF && n > 0 {
		err = nil
	}
	return n, err
}

func (s *stallAfter) Seek(off int64, whence int) (int64, error) {
	switch whence {
	case io.SeekStart:
		s.pos = off
	case io.SeekCurrent:
		s.pos += off
	case io.SeekEnd:
		st, err := s.f.Stat()
		if err != nil {
			return 0, err
		}
		s.pos = st.Size() + off
	}
	return s.pos, nil
}

// stallServer serves dir on 127.0.0.1. A file is served up to stall[name]
// bytes (with Range), then stalls; entered is told each stalled request.
func stallServer(t *testing.T, dir string, stall map[string]int64, entered chan<- string) string {
	t.Helper()
	done := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		name := strings.TrimPrefix(r.URL.Path, "/")
		limit, ok := stall[name]
		if !ok {
			limit = 1 << 62
		}
		if limit == 0 { // headers, then nothing
			w.Header().Set("Content-Length", "65")
			w.WriteHeader(http.StatusOK)
			w.(http.Flusher).Flush()
			select {
			case entered <- name:
			default:
			}
			select {
			case <-done:
			case <-r.Context().Done():
			}
			return
		}
		f, err := os.Open(filepath.Join(dir, filepath.Base(name)))
		if err != nil {
			http.NotFound(w, r)
			return
		}
		defer f.Close()
		rs := &stallAfter{f: f, limit: limit, done: done}
		if ok {
			select {
			case entered <- name:
			default:
			}
		}
		http.ServeContent(w, r, name, time.Time{}, rs)
	}))
	t.Cleanup(func() { close(done); srv.Close() })
	return srv.URL
}

// signalRun starts asr with args, sends sig once a line of its output
// satisfies when (or once fire is told, if when is nil), and returns its
// exit status, stdout and stderr. setup runs with the child's pid right
// after it starts.
func signalRun(t *testing.T, args []string, sig syscall.Signal, when func(string) bool, fire <-chan string, setup func(pid int)) (int, string, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, testenv.Asr(t), args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	pipe, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	if setup != nil {
		setup(cmd.Process.Pid)
	}
	var once sync.Once
	send := func() { once.Do(func() { cmd.Process.Signal(sig) }) }
	if fire != nil {
		go func() {
			select {
			case <-fire:
				send()
			case <-ctx.Done():
			}
		}()
	}
	var stdout strings.Builder
	sc := bufio.NewScanner(pipe)
	for sc.Scan() {
		line := sc.Text()
		stdout.WriteString(line + "\n")
		if when != nil && when(line) {
			send()
		}
	}
	err = cmd.Wait()
	if ctx.Err() != nil {
		t.Fatalf("asr %s: still running after 90 s; stdout:\n%s", strings.Join(args, " "), stdout.String())
	}
	code := 0
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return code, stdout.String(), stderr.String()
}

// throttleReads puts pid in a blkio cgroup (v1) that reads dev at bps bytes
// per second, so verification (the only phase that reads the target) lasts.
func throttleReads(t *testing.T, dev string, bps int) func(pid int) {
	t.Helper()
	var st syscall.Stat_t
	if err := syscall.Stat(dev, &st); err != nil {
		t.Fatal(err)
	}
	root := "/sys/fs/cgroup/blkio"
	if _, err := os.Stat(filepath.Join(root, "blkio.throttle.read_bps_device")); err != nil {
		t.Fatalf("no blkio throttling (cgroup v1 blkio) to slow verification: %v", err)
	}
	cg := filepath.Join(root, fmt.Sprintf("co-asr-signal-%d", os.Getpid()))
	if err := os.Mkdir(cg, 0o755); err != nil && !os.IsExist(err) {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		// The child has exited: the cgroup is empty and can go.
		for range 50 {
			if os.Remove(cg) == nil {
				return
			}
			time.Sleep(100 * time.Millisecond)
		}
	})
	rule := fmt.Sprintf("%d:%d %d", unix.Major(st.Rdev), unix.Minor(st.Rdev), bps)
	if err := os.WriteFile(filepath.Join(cg, "blkio.throttle.read_bps_device"), []byte(rule), 0); err != nil {
		t.Fatal(err)
	}
	return func(pid int) {
		if err := os.WriteFile(filepath.Join(cg, "cgroup.procs"), []byte(fmt.Sprint(pid)), 0); err != nil {
			t.Fatal(err)
		}
	}
}

func puppetPhase(name string) func(string) bool {
	return func(line string) bool { return line == "PSTART\t"+name }
}

func TestE2ESignalAtEachPhase(t *testing.T) {
	requireRoot(t)
	dir := t.TempDir()
	disk := makeDisk(t, dir, diskSize, 21)
	img := scan(t, disk)
	served := t.TempDir()
	for _, n := range []string{"disk.asr", "raw.img"} {
		src := img
		if n == "raw.img" {
			src = disk
		}
		if err := os.Link(src, filepath.Join(served, n)); err != nil {
			t.Fatal(err)
		}
	}
	// The prepared image stalls a little past its manifest, in the chunks;
	// the raw image's checksum sidecar answers headers and then nothing
	// (the case of issue 11 #1).
	st, _ := os.Stat(img)
	entered := make(chan string, 1)
	base := stallServer(t, served, map[string]int64{"disk.asr": st.Size() / 3, "raw.img.sha256": 0}, entered)

	for _, sig := range []syscall.Signal{syscall.SIGINT, syscall.SIGTERM} {
		for _, tc := range []struct {
			phase  string
			source string
			when   func(string) bool
			fire   <-chan string
			before bool // the signal comes before the erase
			slow   bool // throttle reads of the target: verification lasts
		}{
			{phase: "validating", source: base + "/raw.img", fire: entered, before: true},
			{phase: "erasing", source: base + "/disk.asr", when: puppetPhase("erasing")},
			{phase: "writing", source: base + "/disk.asr", when: puppetPhase("restoring")},
			{phase: "verifying", source: img, when: puppetPhase("verifying"), slow: true},
		} {
			t.Run(fmt.Sprintf("%s/%s", tc.phase, sig), func(t *testing.T) {
				for len(entered) > 0 {
					<-entered
				}
				tfile := filepath.Join(t.TempDir(), "target.img")
				fillRandom(t, tfile, diskSize, 21)
				dev := loop(t, tfile)
				before := hashRange(t, dev, 0, diskSize)
				var setup func(int)
				if tc.slow {
					setup = throttleReads(t, dev, 1<<20)
				}
				fire := tc.fire
				if !tc.before {
					fire = nil
				}
				start := time.Now()
				code, stdout, stderr := signalRun(t,
					[]string{"restore", "--source", tc.source, "--target", dev, "--erase", "--noprompt", "--puppetstrings", "--timeout", "60"},
					sig, tc.when, fire, setup)
				t.Logf("exit %d after %v; stderr: %s", code, time.Since(start).Round(time.Millisecond), strings.TrimSpace(stderr))
				if want := 128 + int(sig); code != want {
					t.Errorf("exit status %d, want %d (128+%s); stdout:\n%s", code, want, sig, stdout)
				}
				if !strings.Contains(stderr, "interrupted (by "+unixSignalName(sig)+")") {
					t.Errorf("stderr %q does not say the run was interrupted by %s", stderr, unixSignalName(sig))
				}
				if tc.before {
					if !strings.Contains(stderr, "nothing was written") {
						t.Errorf("stderr %q does not say that nothing was written", stderr)
					}
					if strings.Contains(stdout, "PSTART\terasing") {
						t.Errorf("a signal before the erase went on to erase:\n%s", stdout)
					}
					if after := hashRange(t, dev, 0, diskSize); after != before {
						t.Errorf("target changed after a signal before the erase")
					}
					return
				}
				if !strings.Contains(stderr, "first chunk has been blanked") {
					t.Errorf("stderr %q does not say the first chunk was blanked", stderr)
				}
				if got := hashRange(t, dev, 0, 1<<20); got != testenv.ZeroHash(1<<20) {
					t.Errorf("after a signal in the %s phase the first chunk of %s is not blank: the disk could pass as good", tc.phase, dev)
				}
			})
		}
	}
}

// A signal while writing a new --file removes the file: asr made it, and a
// partial image must not be left where a person expects a good one.
func TestE2ESignalRemovesNewFile(t *testing.T) {
	requireRoot(t)
	dir := t.TempDir()
	disk := makeDisk(t, dir, diskSize, 22)
	img := scan(t, disk)
	st, _ := os.Stat(img)
	served := t.TempDir()
	if err := os.Link(img, filepath.Join(served, "disk.asr")); err != nil {
		t.Fatal(err)
	}
	base := stallServer(t, served, map[string]int64{"disk.asr": st.Size() / 3}, make(chan string, 1))
	out := filepath.Join(dir, "new.img")
	code, stdout, stderr := signalRun(t, []string{"restore", "--source", base + "/disk.asr", "--file", out, "--puppetstrings"},
		syscall.SIGINT, puppetPhase("restoring"), nil, nil)
	if code != 130 {
		t.Errorf("exit status %d, want 130; stdout:\n%s", code, stdout)
	}
	if !strings.Contains(stderr, "was removed") {
		t.Errorf("stderr %q does not say the new file was removed", stderr)
	}
	if _, err := os.Stat(out); !os.IsNotExist(err) {
		t.Errorf("%s is still there after an interrupted restore (stat: %v)", out, err)
	}
}

func unixSignalName(s syscall.Signal) string { return unix.SignalName(s) }
