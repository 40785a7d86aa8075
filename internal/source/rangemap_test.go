package source

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/asrlinux/asr/internal/testenv"
)

// chunkSeen is what a restore gets for one chunk.
type chunkSeen struct {
	zero, unused bool
	sum          [32]byte
}

// collect runs src and records every chunk, checking each digest.
func collect(t *testing.T, src Source) map[int]chunkSeen {
	t.Helper()
	var mu sync.Mutex
	seen := map[int]chunkSeen{}
	err := src.Run(context.Background(), 4, func(c Chunk) error {
		if !c.Zero && src.Info().Hash().Sum(c.Data) != c.Sum {
			return fmt.Errorf("chunk %d: digest does not match its data", c.Index)
		}
		mu.Lock()
		defer mu.Unlock()
		if _, dup := seen[c.Index]; dup {
			return fmt.Errorf("chunk %d delivered twice", c.Index)
		}
		seen[c.Index] = chunkSeen{c.Zero, c.Unused, c.Sum}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return seen
}

// ext4Volume makes an ext4 volume of 32 MiB with a few MiB of files
// (mkfs.ext4 -d, no root needed) over old random data, which mkfs leaves in
// the free blocks.
func ext4Volume(t *testing.T) []byte {
	t.Helper()
	testenv.RequireTools(t, "mkfs.ext4")
	dir := t.TempDir()
	files := filepath.Join(dir, "files")
	if err := os.Mkdir(files, 0o755); err != nil {
		t.Fatal(err)
	}
	for i := range 6 {
		testenv.FillRandom(t, filepath.Join(files, fmt.Sprintf("f%d", i)), int64(100000+i*300000), uint64(40+i))
	}
	vol := filepath.Join(dir, "vol.img")
	testenv.FillRandom(t, vol, 32<<20, 7)
	if out, err := exec.Command("mkfs.ext4", "-q", "-F", "-E", "nodiscard", "-d", files, vol).CombinedOutput(); err != nil {
		t.Fatalf("mkfs.ext4: %v\n%s", err, out)
	}
	b, err := os.ReadFile(vol)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// A plain raw disk on a server that takes ranges is mapped through range
// requests: a restore gets exactly the chunks it gets from the same file
// opened locally (free space unused, free bytes zeroed), fetching only the
// used chunks, or, with a checksum to match, reading the whole file. A
// connection that stalls while the metadata is read is resumed.
func TestHTTPRawMappedByRanges(t *testing.T) {
	disk := ext4Volume(t)
	size := int64(len(disk))
	local := filepath.Join(t.TempDir(), "disk.img")
	if err := os.WriteFile(local, disk, 0o644); err != nil {
		t.Fatal(err)
	}
	const cs = 64 << 10
	ls, err := Open(local, Options{ChunkSize: cs})
	if err != nil {
		t.Fatal(err)
	}
	defer ls.Close()
	if _, ok := ls.(*mapped); !ok {
		t.Fatalf("the local volume opened as %T, not mapped: the test volume has no free space to leave out", ls)
	}
	want := collect(t, ls)
	unused := 0
	for _, c := range want {
		if c.unused {
			unused++
		}
	}
	sum := sha256.Sum256(disk)
	for _, tt := range []struct {
		name     string
		checksum string
		stall    bool
		// whole: the file is read whole (to check it); else at most half.
		whole bool
		// noRange: the server ignores Range, and the disk is spooled.
		noRange bool
	}{
		{"ranges", "", false, false, false},
		{"checksum", "sha256:" + hex.EncodeToString(sum[:]), false, true, false},
		{"stall while mapping", "", true, false, false},
		{"no ranges, spooled", "", false, true, true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var sent atomic.Int64
			var stalled atomic.Bool
			s := newServer(t, files(map[string][]byte{"/disk.img": disk}, func(n int, r *http.Request) serveOpts {
				if tt.noRange { // the whole file, whatever was asked
					sent.Add(size)
					return serveOpts{noRange: true}
				}
				a, b, _ := rangeOf(r, size)
				sent.Add(b - a + 1)
				if tt.stall && !probe(r) && !stalled.Swap(true) {
					// A metadata block past the first (probe counts that one).
					return serveOpts{stall: true, at: a + 4096}
				}
				return serveOpts{}
			}))
			var logged []string
			var mu sync.Mutex
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			spool := t.TempDir()
			src, err := OpenHTTP(ctx, s.URL+"/disk.img", HTTPOptions{ChunkSize: cs, Checksum: tt.checksum, Stall: 2 * time.Second, SpoolDir: spool,
				Log: func(f string, a ...any) { mu.Lock(); logged = append(logged, fmt.Sprintf(f, a...)); mu.Unlock() }})
			if err != nil {
				t.Fatal(err)
			}
			defer src.Close()
			got := collect(t, src)
			if len(got) != len(want) {
				t.Fatalf("got %d chunks over HTTP, %d locally", len(got), len(want))
			}
			for i, w := range want {
				if got[i] != w {
					t.Errorf("chunk %d over HTTP is %+v, locally %+v", i, got[i], w)
				}
			}
			if unused == 0 {
				t.Fatalf("no chunk of the volume is free space: the test proves nothing")
			}
			t.Logf("%d of %d chunks free; %d bytes served for a %d-byte disk; log: %q", unused, len(want), sent.Load(), size, logged)
			if tt.whole && sent.Load() < size {
				t.Errorf("served %d bytes, less than the %d-byte file: its checksum cannot have been checked", sent.Load(), size)
			}
			if !tt.whole && sent.Load() > size/2 {
				t.Errorf("served %d bytes of a %d-byte disk that is mostly free space: the free chunks were fetched", sent.Load(), size)
			}
			if ents, _ := os.ReadDir(spool); len(ents) > 0 {
				t.Errorf("the spool folder holds %d entries, want none (the spool has no name)", len(ents))
			}
			if tt.stall && !stalled.Load() {
				t.Errorf("the server never stalled: the test tested nothing")
			}
		})
	}
}

// --allblocks reaches http sources: the disk is read whole, free space
// included, and no chunk is called unused.
func TestHTTPRawAllBlocks(t *testing.T) {
	disk := ext4Volume(t)
	s := newServer(t, files(map[string][]byte{"/disk.img": disk}, nil))
	src, err := OpenHTTP(context.Background(), s.URL+"/disk.img", HTTPOptions{ChunkSize: 64 << 10, AllBlocks: true})
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	for i, c := range collect(t, src) {
		if c.unused {
			t.Fatalf("chunk %d is called unused under AllBlocks", i)
		}
	}
}
