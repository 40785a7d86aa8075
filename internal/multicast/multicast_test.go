package multicast

import (
	"bytes"
	"math/rand/v2"
	"testing"

	"github.com/asrlinux/asr/internal/image"
)

// A chunk cut into packets and rebuilt after losing as many packets as it has
// parity gives back its stored bytes; one more loss is detected.
func TestPacketsRebuildAfterLoss(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for _, n := range []int{1, 100, ShardSize, ShardSize + 1, 300 * ShardSize, 1 << 20} {
		stored := make([]byte, n)
		for i := range stored {
			stored[i] = byte(rng.Uint32())
		}
		s := &Server{parity: DefaultParity}
		pkts, err := s.packets(7, stored, nil)
		if err != nil {
			t.Fatalf("packets(%d bytes) = %v", n, err)
		}
		k := dataShards(n)
		total := len(pkts) / packetSize
		m := total - k
		if m < 1 || m < k*DefaultParity/100 {
			t.Errorf("%d bytes: %d data and %d parity shards, want at least %d%% parity", n, k, m, DefaultParity)
		}
		shards := make([][]byte, total)
		for j := range total {
			h, err := parseHeader(pkts[j*packetSize : (j+1)*packetSize])
			if err != nil || h.Chunk != 7 || int(h.Shard) != j || int(h.K) != k || int(h.N) != total {
				t.Fatalf("packet %d header = %+v, %v", j, h, err)
			}
			shards[j] = bytes.Clone(pkts[j*packetSize+headerLen : (j+1)*packetSize])
		}
		// Lose m packets, data shards first: the worst case.
		for _, j := range rng.Perm(k)[:min(m, k)] {
			shards[j] = nil
		}
		var rs codecs
		enc, err := rs.get(k, m)
		if err != nil {
			t.Fatal(err)
		}
		if err := enc.ReconstructData(shards); err != nil {
			t.Fatalf("%d bytes: rebuilding after %d losses: %v", n, m, err)
		}
		var got []byte
		for j := range k {
			got = append(got, shards[j]...)
		}
		if !bytes.Equal(got[:n], stored) {
			t.Errorf("%d bytes: rebuilt data differs", n)
		}
	}
}

func TestParseHeaderRejects(t *testing.T) {
	good := make([]byte, packetSize)
	(&header{Chunk: 1, Shard: 2, K: 3, N: 4}).marshal(good)
	if _, err := parseHeader(good); err != nil {
		t.Fatalf("parseHeader(good) = %v", err)
	}
	for name, mut := range map[string]func([]byte) []byte{
		"short":        func(b []byte) []byte { return b[:100] },
		"bad magic":    func(b []byte) []byte { b[0] ^= 1; return b },
		"version":      func(b []byte) []byte { b[4] = 9; return b },
		"shard beyond": func(b []byte) []byte { b[32] = 9; return b },
		"k zero":       func(b []byte) []byte { b[34], b[35] = 0, 0; return b },
	} {
		if _, err := parseHeader(mut(bytes.Clone(good))); err == nil {
			t.Errorf("parseHeader(%s) accepted", name)
		}
	}
}

func TestControlFrames(t *testing.T) {
	var b bytes.Buffer
	if err := writeJSON(&b, msgStatus, status{Event: "progress", Percent: 40}); err != nil {
		t.Fatal(err)
	}
	typ, p, err := readFrame(&b, 1024)
	if err != nil || typ != msgStatus || !bytes.Contains(p, []byte(`"percent":40`)) {
		t.Errorf("readFrame = %d %q %v", typ, p, err)
	}
	b.Write([]byte{0xff, 0xff, 0xff, 0x7f, 1})
	if _, _, err := readFrame(&b, 1024); err == nil {
		t.Error("readFrame accepted a 2 GiB frame")
	}
}

var _ = image.DefaultChunkSize
