package source

import (
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"io"
	"math/rand/v2"
	"os"
	"testing"

	"github.com/klauspost/compress/zstd"
	"golang.org/x/sys/unix"

	"github.com/asrlinux/asr/internal/testenv"
)

// disk is 8 MiB: random data with a long run of zeros in the middle.
func disk() []byte {
	b := make([]byte, 8<<20)
	r := rand.New(rand.NewPCG(1, 2))
	for i := range b {
		if i < 2<<20 || i >= 6<<20 {
			b[i] = byte(r.Uint32())
		}
	}
	return b
}

func TestSpoolHolesAndNoName(t *testing.T) {
	want := disk()
	dir := t.TempDir()
	f, n, err := spool(context.Background(), dir, bytes.NewReader(want), "d", 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if n != int64(len(want)) {
		t.Fatalf("spool length %d, want %d", n, len(want))
	}
	got := make([]byte, n)
	if _, err := f.ReadAt(got, 0); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatal("the spool does not hold the disk's bytes")
	}
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		t.Fatal(err)
	}
	if alloc := st.Blocks * 512; alloc > 5<<20 {
		t.Errorf("the spool takes %d bytes on disk, want about 4 MiB (its zeros as holes)", alloc)
	}
	if es, _ := os.ReadDir(dir); len(es) > 0 {
		t.Errorf("the spool's folder holds %d entries while it is open, want none (an unnamed file)", len(es))
	}
}

func TestSpoolLimit(t *testing.T) {
	_, _, err := spool(context.Background(), t.TempDir(), bytes.NewReader(disk()), "d", 4<<20, nil)
	var big *TooBigError
	if !errors.As(err, &big) {
		t.Fatalf("spool past its limit: %v, want a *TooBigError", err)
	}
}

// A stream cut short must fail, not pass for a shorter disk.
func TestSpoolTruncatedStream(t *testing.T) {
	d := disk()
	var gz, zs bytes.Buffer
	w := gzip.NewWriter(&gz)
	w.Write(d)
	w.Close()
	z, _ := zstd.NewWriter(&zs)
	z.Write(d)
	z.Close()
	for _, c := range []struct {
		name string
		b    []byte
	}{{"gzip", gz.Bytes()}, {"zstd", zs.Bytes()}} {
		kind, dec := compression(c.b)
		if kind != c.name {
			t.Fatalf("%s stream detected as %q", c.name, kind)
		}
		r, err := dec(io.NopCloser(bytes.NewReader(c.b[:len(c.b)/2])))
		if err != nil {
			t.Fatal(err)
		}
		f, n, err := spool(context.Background(), t.TempDir(), r, "d", 0, nil)
		if err == nil {
			f.Close()
			t.Errorf("%s stream cut in half: spooled %d bytes without an error", c.name, n)
		}
	}
}

func TestSpoolRefusesTmpfs(t *testing.T) {
	var st unix.Statfs_t
	if unix.Statfs("/dev/shm", &st) != nil || st.Type != unix.TMPFS_MAGIC {
		testenv.Unavailable(t, "no tmpfs at /dev/shm")
	}
	_, _, err := spool(context.Background(), "/dev/shm", bytes.NewReader(disk()), "d", 0, nil)
	var se *SpoolError
	if !errors.As(err, &se) {
		t.Fatalf("spool on tmpfs: %v, want a *SpoolError", err)
	}
}
