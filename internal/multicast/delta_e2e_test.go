package multicast

import (
	"bufio"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/asrlinux/asr/internal/image"
	"github.com/asrlinux/asr/internal/testenv"
)

// Two clients of one stream of image v2, one holding v1 (2% of its chunks
// differ, the first among them) and one empty, both with --delta: both end
// byte-equal to v2, and the one holding v1 counts its matching chunks as
// done, so it is finished before the stream has gone round for the other.
func TestE2EDeltaTwoClients(t *testing.T) {
	l := newMLab(t, "d", 2)
	v1 := testenv.Disk(t, l.dir, diskSize, 61)
	v2 := testenv.Changed(t, v1, image.DefaultChunkSize, 2, 61)
	img := v2 + ".asr"
	testenv.Run(t, l.asr, "imagescan", "--source", v2, "--output", img)
	want := testenv.Hash(t, v2, 0, diskSize)
	m := readManifest(t, img)
	testenv.Run(t, l.asr, "imagescan", "--source", v1, "--output", v1+".asr")
	old := readManifest(t, v1+".asr")
	changed := 0
	for i, c := range m.Chunks {
		if c.Codec.Stored() && (!old.Chunks[i].Codec.Stored() || old.Chunks[i].Sum != c.Sum) {
			changed++
		}
	}
	stored := m.Stats().StoredChunks

	holding := filepath.Join(l.dir, "holding-v1.raw")
	testenv.Run(t, "cp", v1, holding)
	empty := filepath.Join(l.dir, "empty.raw")
	if err := os.WriteFile(empty, nil, 0o644); err != nil || os.Truncate(empty, diskSize) != nil {
		t.Fatal(err)
	}
	// Slow enough that a pass takes seconds.
	srv := l.server(l.srv, img, l.config("239.255.10.61", 4000000, ""))
	var wg sync.WaitGroup
	res := make([]clientResult, 2)
	for i, tgt := range []string{holding, empty} {
		wg.Go(func() { res[i] = l.restore(l.clients[i], tgt, "--delta") })
	}
	wg.Wait()
	srv.stop(t)
	for i, tgt := range []string{holding, empty} {
		if res[i].code != 0 {
			t.Fatalf("client %d: exit %d\n%s", i+1, res[i].code, res[i].out)
		}
		if got := testenv.Hash(t, tgt, 0, diskSize); got != want {
			t.Errorf("client %d: target sha256 %s, want v2's %s", i+1, got, want)
		}
	}
	deltaOf := func(out string) (reused, fetched, written int) {
		mm := regexp.MustCompile(`Delta: (\d+) chunks reused from the target, (\d+) fetched \([^)]*\), (\d+) written`).FindStringSubmatch(out)
		if mm == nil {
			t.Fatalf("no Delta: summary:\n%s", out)
		}
		a, _ := strconv.Atoi(mm[1])
		b, _ := strconv.Atoi(mm[2])
		c, _ := strconv.Atoi(mm[3])
		return a, b, c
	}
	r1, f1, w1 := deltaOf(res[0].out)
	r2, f2, _ := deltaOf(res[1].out)
	if r1 != stored-changed || f1 != changed || w1 != changed {
		t.Errorf("client holding v1: %d reused, %d fetched, %d written; want %d, %d, %d", r1, f1, w1, stored-changed, changed, changed)
	}
	if r2 != 0 || f2 != stored {
		t.Errorf("empty client: %d reused, %d fetched; want 0 and all %d", r2, f2, stored)
	}
	if !strings.Contains(res[0].out, strconv.Itoa(stored-changed)+" chunks the target held already were not waited for") {
		t.Errorf("client holding v1 does not say it skipped its %d matching chunks:\n%s", stored-changed, res[0].out)
	}
	p1, _, rep1, _, _, _ := note(t, res[0].out)
	p2, _, _, _, _, _ := note(t, res[1].out)
	t.Logf("client holding v1: %s, %d packets, %d chunks by repair; empty client: %s, %d packets",
		res[0].took.Round(time.Millisecond), p1, rep1, res[1].took.Round(time.Millisecond), p2)
	if p1 >= p2 || res[0].took >= res[1].took {
		t.Errorf("the client holding v1 took %s and %d packets, the empty one %s and %d: it waited for the whole stream",
			res[0].took, p1, res[1].took, p2)
	}
}

func readManifest(t *testing.T, img string) *image.Manifest {
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
