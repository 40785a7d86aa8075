package multicast

import (
	"bytes"
	"math/rand/v2"
	"testing"
	"time"
)

// A chunk cut into packets and rebuilt after each group lost as many
// packets as it has parity gives back its stored bytes.
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
		groups := layout(n, DefaultParity)
		sum := 0
		for _, g := range groups {
			if g.k+g.m > maxGroup || g.m < 2 || g.m*100 < g.k*DefaultParity {
				t.Errorf("%d bytes: group %+v: want at most %d shards and at least %d%% (and 2) parity", n, g, maxGroup, DefaultParity)
			}
			sum += g.k
		}
		if sum != dataShards(n) {
			t.Errorf("%d bytes: groups hold %d data shards, want %d", n, sum, dataShards(n))
		}
		got := make([][][]byte, len(groups))
		for gi, g := range groups {
			got[gi] = make([][]byte, g.k+g.m)
		}
		for p := 0; p < len(pkts)/packetSize; p++ {
			pkt := pkts[p*packetSize : (p+1)*packetSize]
			h, err := parseHeader(pkt)
			if err != nil || h.Chunk != 7 || int(h.K) != groups[h.Group].k || int(h.N) != groups[h.Group].k+groups[h.Group].m {
				t.Fatalf("packet %d header = %+v, %v", p, h, err)
			}
			if got[h.Group][h.Shard] != nil {
				t.Fatalf("packet %d repeats group %d shard %d", p, h.Group, h.Shard)
			}
			got[h.Group][h.Shard] = bytes.Clone(pkt[headerLen:])
		}
		var rebuilt []byte
		var rs codecs
		for gi, g := range groups {
			// Lose m packets, data shards first: the worst case.
			for _, j := range rng.Perm(g.k)[:min(g.m, g.k)] {
				got[gi][j] = nil
			}
			enc, err := rs.get(g.k, g.m)
			if err != nil {
				t.Fatal(err)
			}
			if err := enc.ReconstructData(got[gi]); err != nil {
				t.Fatalf("%d bytes, group %d: rebuilding after %d losses: %v", n, gi, g.m, err)
			}
			for j := range g.k {
				rebuilt = append(rebuilt, got[gi][j]...)
			}
		}
		if !bytes.Equal(rebuilt[:n], stored) {
			t.Errorf("%d bytes: rebuilt data differs", n)
		}
	}
}

func TestParseHeaderRejects(t *testing.T) {
	good := make([]byte, packetSize)
	(&header{Chunk: 1, Group: 1, Shard: 2, K: 3, N: 4}).marshal(good)
	if _, err := parseHeader(good); err != nil {
		t.Fatalf("parseHeader(good) = %v", err)
	}
	for name, mut := range map[string]func([]byte) []byte{
		"short":        func(b []byte) []byte { return b[:100] },
		"bad magic":    func(b []byte) []byte { b[0] ^= 1; return b },
		"version":      func(b []byte) []byte { b[4] = 9; return b },
		"shard beyond": func(b []byte) []byte { b[34] = 9; return b },
		"k zero":       func(b []byte) []byte { b[36], b[37] = 0, 0; return b },
		"n too big":    func(b []byte) []byte { b[38], b[39] = 1, 1; return b },
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

// A client's counters reach the server's sums as the growth since its
// last report: a report that repeats or says less adds nothing, and one
// absurd jump adds at most maxReportStep.
func TestAddReported(t *testing.T) {
	s := &Server{}
	var k Counters
	k = s.addReported(k, Counters{Packets: 10, Foreign: 2})
	k = s.addReported(k, Counters{Packets: 10, Foreign: 2})
	k = s.addReported(k, Counters{Packets: 4, Foreign: 3, Malformed: 1})
	s.addReported(k, Counters{Packets: 1 << 62, Failed: 5})
	got := s.Stats().Reported
	want := Counters{Packets: 10 + maxReportStep, Foreign: 3, Malformed: 1, Failed: 5}
	if got != want {
		t.Errorf("reported = %+v, want %+v", got, want)
	}
}

// A server's start wait is taken within a day and never negative: a
// session from a server that is not ours cannot make a client wait for
// ever nor time out at once.
func TestStartWaitBounded(t *testing.T) {
	for _, c := range []struct {
		ms   int64
		want time.Duration
	}{{0, 0}, {-5, 0}, {90_000, 90 * time.Second}, {1 << 62, maxStartWait}} {
		cl := &Client{sess: session{StartWait: c.ms}}
		if got := cl.startWait(); got != c.want {
			t.Errorf("startWait(%d ms) = %s, want %s", c.ms, got, c.want)
		}
	}
}
