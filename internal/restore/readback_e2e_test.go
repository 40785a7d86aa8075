package restore

import (
	"bytes"
	"context"
	"errors"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/asrlinux/asr/internal/aligned"
	"github.com/asrlinux/asr/internal/progress"
	"github.com/asrlinux/asr/internal/source"
	"github.com/asrlinux/asr/internal/testenv"
	"golang.org/x/sys/unix"
)

// dataSource delivers every chunk of data with its SHA-256, as a prepared
// image does once it has checked them, in aligned buffers (as RunImage
// decodes into) from two goroutines; a chunk of zeros comes as a zero chunk,
// with no data, as a prepared image delivers it.
type dataSource struct {
	info source.Info
	data []byte
}

func (s *dataSource) Info() source.Info { return s.info }
func (s *dataSource) Close() error      { return nil }
func (s *dataSource) Run(_ context.Context, _ int, fn func(source.Chunk) error) error {
	cs := s.info.ChunkSize
	n := (len(s.data) + cs - 1) / cs
	errs := make([]error, 2)
	var wg sync.WaitGroup
	for g := range 2 {
		wg.Go(func() {
			buf := aligned.Make(cs)
			for i := g; i < n; i += 2 {
				d := buf[:copy(buf, s.data[i*cs:min(len(s.data), (i+1)*cs)])]
				c := source.Chunk{Index: i, Data: d, Sum: source.RawHash.Sum(d)}
				if len(bytes.Trim(d, "\x00")) == 0 {
					c = source.Chunk{Index: i, Zero: true} // as a prepared image has it
				}
				if errs[g] = fn(c); errs[g] != nil {
					return
				}
			}
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}

// A device that does not hold what it was given fails the restore when the
// chunk is read back right after it was written: the error names the
// chunk's bytes, no "Verified" result comes back, and the first chunk is
// blank. Such a device cannot be made on demand, so the test makes one: a
// loop device whose backing file the test changes, through the file, in the
// moment between the write of a chunk and its read-back (the writer's test
// hook). The read-back goes past the page cache of the loop device (O_DIRECT)
// to the loop driver, which reads the backing file: it sees the changed
// bytes exactly as it would see a disk that lost or garbled the write.
// Unchanged, the same restore verifies every written chunk that way.
func TestReadBackMismatchFailsTheRestore(t *testing.T) {
	testenv.Require(t, "losetup")
	const cs = 64 << 10
	const chunks = 12
	data := make([]byte, chunks*cs)
	rng := rand.New(rand.NewPCG(7, 8))
	for i := range data {
		data[i] = byte(rng.Uint32())
	}
	backing, run := readBackRig(t, data, cs, 4)

	// The intact device: every chunk but the held-back first and last was
	// read back as it was written, and the disk holds the data.
	res, err := run(nil)
	if err != nil {
		t.Fatalf("restore onto an intact device: %v", err)
	}
	if !res.Verified || res.ReadBackBytes != (chunks-2)*cs {
		t.Fatalf("intact device: Verified %v, %d bytes read back as written, want true and %d", res.Verified, res.ReadBackBytes, (chunks-2)*cs)
	}
	if got, _ := os.ReadFile(backing); !bytes.Equal(got, data) {
		t.Fatal("the intact device does not hold the data after a verified restore")
	}

	// The faulty one: chunk 5 changes under the writer's feet.
	const bad = 5
	var hit bool
	res, err = run(func(i int) {
		if i != bad {
			return
		}
		hit = poke(t, backing, bad*cs+1234, ^data[bad*cs+1234])
	})
	if !hit {
		t.Fatal("the hook never saw chunk 5 written: the test proves nothing")
	}
	want := "bytes 327680 to 393216 read back right after writing differ"
	if err == nil || res != nil || !errors.Is(err, ErrIncomplete) || !strings.Contains(err.Error(), want) {
		t.Fatalf("restore onto a device that changed chunk %d = %v, %v; want ErrIncomplete naming %q", bad, res, err, want)
	}
	t.Logf("Run = %v", err)
	got, _ := os.ReadFile(backing)
	if !bytes.Equal(got[:cs], make([]byte, cs)) {
		t.Error("the first chunk is not blank after a failed read-back")
	}
}

// On a target the erase left reading as zeros, the long runs of zero pages
// inside a data chunk (free clusters between used ones) are not written,
// the short ones are, and the target still holds every byte of the image.
// The target is a file on the test's filesystem: the erase punches it whole,
// so a run that was not written is still a hole, which SEEK_DATA shows.
func TestZeroRunsInsideChunksAreNotWritten(t *testing.T) {
	const cs = 1 << 20
	const chunks = 6
	data := make([]byte, chunks*cs)
	rng := rand.New(rand.NewPCG(9, 10))
	for i := range data {
		data[i] = byte(rng.Uint32() | 1)
	}
	longGap := [2]int{2*cs + 256<<10, 2*cs + 768<<10}  // skipped: >= zeroGap
	shortGap := [2]int{3*cs + 400<<10, 3*cs + 416<<10} // written: < zeroGap
	clear(data[longGap[0]:longGap[1]])
	clear(data[shortGap[0]:shortGap[1]])
	target := filepath.Join(t.TempDir(), "disk.img")
	if err := os.WriteFile(target, bytes.Repeat([]byte("old disk "), len(data)/9+1)[:len(data)], 0o644); err != nil {
		t.Fatal(err)
	}
	res, err := Run(context.Background(), Request{
		Source: "test", Target: target, Erase: true, NoPrompt: true, Workers: 2,
		OpenSource: func(string, int64) (source.Source, error) {
			return &dataSource{info: source.Info{Kind: "test", Size: int64(len(data)), ChunkSize: cs}, data: data}, nil
		},
		Out: progress.New(io.Discard, false),
	})
	if err != nil || !res.Verified {
		t.Fatalf("restore = %v, %v; want a verified restore", res, err)
	}
	if got, _ := os.ReadFile(target); !bytes.Equal(got, data) {
		t.Fatal("the target does not hold the image after a verified restore")
	}
	f, err := os.Open(target)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	next, err := unix.Seek(int(f.Fd()), int64(longGap[0]), unix.SEEK_DATA)
	if err != nil {
		t.Fatal(err)
	}
	if next != int64(longGap[1]) {
		t.Errorf("the 512 KiB zero run at byte %d: data found at byte %d, want the run left as a hole up to byte %d", longGap[0], next, longGap[1])
	}
	if next, err := unix.Seek(int(f.Fd()), int64(shortGap[0]), unix.SEEK_DATA); err != nil || next != int64(shortGap[0]) {
		t.Errorf("the 16 KiB zero run at byte %d: SEEK_DATA = %d, %v; want it written with its neighbours", shortGap[0], next, err)
	}
}

// A zero chunk is not written (the erase left it reading as zeros) but it is
// read back as it comes, like a written one: a device where it does not
// read as zeros (here: a byte put into the backing file behind the loop
// device, between the erase and the read-back) fails the restore, naming
// the chunk's bytes. Intact, the zero chunk counts among the bytes read
// back as written.
func TestReadBackOfZeroChunk(t *testing.T) {
	testenv.Require(t, "losetup")
	const cs = 64 << 10
	const chunks = 8
	const zero = 6
	data := make([]byte, chunks*cs)
	rng := rand.New(rand.NewPCG(11, 12))
	for i := range data {
		data[i] = byte(rng.Uint32() | 1)
	}
	clear(data[zero*cs : (zero+1)*cs])
	backing, run := readBackRig(t, data, cs, 2)
	res, err := run(nil)
	if err != nil {
		t.Fatalf("restore onto an intact device: %v", err)
	}
	if !res.Verified || res.ZeroChunks != 1 || res.ReadBackBytes != (chunks-2)*cs {
		t.Fatalf("intact device: Verified %v, %d zero chunks, %d bytes read back as written; want true, 1 and %d", res.Verified, res.ZeroChunks, res.ReadBackBytes, (chunks-2)*cs)
	}
	if got, _ := os.ReadFile(backing); !bytes.Equal(got, data) {
		t.Fatal("the intact device does not hold the data after a verified restore")
	}

	var hit bool
	res, err = run(func(i int) {
		if i != zero {
			return
		}
		hit = poke(t, backing, zero*cs+4321, 0x5a)
	})
	if !hit {
		t.Fatal("the hook never saw the zero chunk: the test proves nothing")
	}
	want := "bytes 393216 to 458752 (chunk 6), zeros in the image, do not read as zeros"
	if err == nil || res != nil || !errors.Is(err, ErrIncomplete) || !strings.Contains(err.Error(), want) {
		t.Fatalf("restore onto a device where the zero chunk reads back non-zero = %v, %v; want ErrIncomplete naming %q", res, err, want)
	}
	t.Logf("Run = %v", err)
}

// readBackRig makes the read-back tests' device: a loop device over a file
// of "old disk" text as long as data, and run, a restore of data (chunks of
// cs bytes) onto it with hook as the writer's test hook, called after each
// chunk is written and before it is read back. It returns the backing
// file, which a hook changes behind the device (see poke).
func readBackRig(t *testing.T, data []byte, cs, workers int) (backing string, run func(hook func(int)) (*Result, error)) {
	t.Helper()
	backing = filepath.Join(t.TempDir(), "disk.img")
	if err := os.WriteFile(backing, bytes.Repeat([]byte("old disk "), len(data)/9+1)[:len(data)], 0o644); err != nil {
		t.Fatal(err)
	}
	dev := testenv.Loop(t, backing)
	return backing, func(hook func(int)) (*Result, error) {
		return Run(context.Background(), Request{
			Source: "test", Target: dev, Erase: true, NoPrompt: true, Workers: workers,
			OpenSource: func(string, int64) (source.Source, error) {
				return &dataSource{info: source.Info{Kind: "test", Size: int64(len(data)), ChunkSize: cs}, data: data}, nil
			},
			Out:        progress.New(io.Discard, false),
			afterWrite: hook,
		})
	}
}

// poke writes byte b at off into the file behind a loop device, as a device
// that lost or garbled a write would show it; it runs inside the writer's
// hook, on a worker goroutine, so it reports with t.Error, and returns
// whether the byte was written.
func poke(t *testing.T, backing string, off int, b byte) bool {
	f, err := os.OpenFile(backing, os.O_WRONLY, 0)
	if err != nil {
		t.Error(err)
		return false
	}
	defer f.Close()
	if _, err := f.WriteAt([]byte{b}, int64(off)); err != nil {
		t.Error(err)
		return false
	}
	return true
}
