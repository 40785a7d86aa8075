package dashboard

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/asrlinux/asr/internal/multicast"
)

// table is a server state for the tests that need no multicast: a fixed
// list of clients, and bytes sent that grow at each read so that every
// snapshot differs from the last.
type table struct {
	clients []multicast.ClientStatus
	sent    atomic.Int64
}

func (s *table) Clients() []multicast.ClientStatus { return s.clients }
func (s *table) Forgotten() map[string]int         { return map[string]int{} }
func (s *table) Stats() multicast.ServerStats {
	return multicast.ServerStats{BytesSent: s.sent.Add(1)}
}

// serve runs d on a port of 127.0.0.1 until the test ends.
func serve(t *testing.T, d *Dashboard) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { d.Run(ctx) }()
	go func() { d.Serve(ctx, ln); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	return "http://" + ln.Addr().String()
}

func TestSummary(t *testing.T) {
	c := func(states ...string) []Client {
		var out []Client
		for _, s := range states {
			out = append(out, Client{State: s})
		}
		return out
	}
	for _, tc := range []struct {
		clients   []Client
		forgotten map[string]int
		level     string
		text      string
	}{
		{nil, nil, "idle", "Waiting for clients"},
		{c("done", "done"), nil, "ok", "All 2 machines done"},
		{c("done"), map[string]int{"done": 300}, "ok", "All 301 machines done"},
		{c("done", "restoring", "joined"), nil, "busy", "1 done, 2 in progress, of 3 machines"},
		{c("done", "failed", "restoring"), nil, "bad", "1 failed, 1 done, 1 in progress, of 3 machines"},
		{c("done", "done"), map[string]int{"lost": 1}, "bad", "1 failed, 2 done, 0 in progress, of 3 machines"},
	} {
		m := summarize(tc.clients, tc.forgotten)
		if m.Level != tc.level || m.Text != tc.text || m.AllDone != (tc.level == "ok") {
			t.Errorf("summarize(%v, %v) = %+v, want %s %q", tc.clients, tc.forgotten, m, tc.level, tc.text)
		}
	}
}

// The page as served, before its script runs: a client's name and
// message are text, never markup.
func TestPageEscapesClientText(t *testing.T) {
	now := time.Now()
	d, err := New(Options{Server: &table{clients: []multicast.ClientStatus{{ID: 1, Name: `<b>x</b><script>alert(1)</script>`,
		Disk: `"/dev/sda" onmouseover="x"`, State: multicast.StateFailed, Message: `<img src=x onerror=alert(1)>`, Since: now, LastSeen: now}}},
		Image: Image{Name: "<i>lab</i>.asr"}, Version: "test"})
	if err != nil {
		t.Fatal(err)
	}
	url := serve(t, d)
	resp, err := http.Get(url + "/")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	page := string(b)
	for _, bad := range []string{"<b>x", "<script>alert", "<img src=x", `onmouseover="x"`, "<i>lab"} {
		if strings.Contains(page, bad) {
			t.Errorf("the page holds client text as markup: %q", bad)
		}
	}
	for _, want := range []string{"&lt;b&gt;x&lt;/b&gt;", "&lt;img src=x onerror=alert(1)&gt;", `class="state-failed failed"`} {
		if !strings.Contains(page, want) {
			t.Errorf("the page lacks %q", want)
		}
	}
	if csp := resp.Header.Get("Content-Security-Policy"); !strings.Contains(csp, "default-src 'self'") {
		t.Errorf("Content-Security-Policy %q: want the page's own script and style only", csp)
	}
}

// Past MaxStreams live pages, one more is refused (503, and the page
// retries), and a page that does not read its events is dropped, which
// frees its place: the dashboard's cost is bounded whatever its viewers
// do.
func TestEventStreamsBounded(t *testing.T) {
	// Large snapshots that change every 10 ms fill a non-reading
	// viewer's socket buffers within a second.
	var clients []multicast.ClientStatus
	for i := range 2000 {
		clients = append(clients, multicast.ClientStatus{ID: i, Name: strings.Repeat("n", 200), State: multicast.StateRestoring})
	}
	d, err := New(Options{Server: &table{clients: clients}, Interval: 10 * time.Millisecond, MaxStreams: 1})
	if err != nil {
		t.Fatal(err)
	}
	url := serve(t, d)
	addr := strings.TrimPrefix(url, "http://")

	// The viewer that never reads.
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.(*net.TCPConn).SetReadBuffer(4 << 10)
	fmt.Fprintf(c, "GET /events HTTP/1.1\r\nHost: x\r\n\r\n")
	// Its place is taken: wait for its first bytes, then read no more.
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	line, err := bufio.NewReaderSize(c, 16).ReadString('\n')
	if err != nil || !strings.Contains(line, "200") {
		t.Fatalf("the first event stream: %q, %v", line, err)
	}
	resp, err := http.Get(url + "/events")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("a second event stream with MaxStreams 1: %s, want 503", resp.Status)
	}
	// Within its write deadline (and some), the stalled viewer is gone.
	deadline := time.Now().Add(eventWriteTimeout + 10*time.Second)
	for {
		resp, err := http.Get(url + "/events")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode == http.StatusOK {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the viewer that reads nothing still holds its place after %s", eventWriteTimeout+10*time.Second)
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// A live page gets the state at once, then each change as an event.
func TestEventsCarrySnapshots(t *testing.T) {
	d, err := New(Options{Server: &table{clients: []multicast.ClientStatus{{ID: 1, Name: "pc-1", State: multicast.StateJoined}}},
		Interval: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	url := serve(t, d)
	resp, err := http.Get(url + "/events")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream" {
		t.Errorf("Content-Type %q", ct)
	}
	r := bufio.NewReader(resp.Body)
	events := 0
	for events < 3 {
		line, err := r.ReadString('\n')
		if err != nil {
			t.Fatalf("after %d events: %v", events, err)
		}
		if strings.HasPrefix(line, "data: ") {
			if !strings.Contains(line, `"name":"pc-1"`) || !strings.Contains(line, `"state":"joined"`) {
				t.Fatalf("event %s lacks the client", line)
			}
			events++
		}
	}
}

// Viewers share one snapshot: 60 live pages of a 256-client table cost
// their connections (both ends here, ~30-60 KiB), not 60 copies of the
// state (a snapshot is over 100 KiB).
func TestViewersShareOneSnapshot(t *testing.T) {
	var clients []multicast.ClientStatus
	for i := range 256 {
		clients = append(clients, multicast.ClientStatus{ID: i, Name: strings.Repeat("n", 256), Disk: strings.Repeat("d", 256),
			State: multicast.StateRestoring})
	}
	d, err := New(Options{Server: &table{clients: clients}, Interval: 50 * time.Millisecond, MaxStreams: 64})
	if err != nil {
		t.Fatal(err)
	}
	_, snap, _ := d.current()
	if len(snap) < 100<<10 {
		t.Fatalf("a snapshot of %d bytes is too small for the test", len(snap))
	}
	url := serve(t, d)
	heap := func() uint64 {
		runtime.GC()
		var m runtime.MemStats
		runtime.ReadMemStats(&m)
		return m.HeapInuse
	}
	before := heap()
	tr := &http.Transport{MaxConnsPerHost: 0, DisableKeepAlives: true}
	defer tr.CloseIdleConnections()
	hc := &http.Client{Transport: tr}
	var bodies []io.ReadCloser
	for range 60 {
		resp, err := hc.Get(url + "/events")
		if err != nil || resp.StatusCode != http.StatusOK {
			t.Fatalf("a live page: %v %v", resp, err)
		}
		bodies = append(bodies, resp.Body)
		// Read, slowly, as a page does: a line at a time.
		go io.Copy(io.Discard, resp.Body)
	}
	time.Sleep(500 * time.Millisecond) // ten snapshots
	grew := int64(heap()) - int64(before)
	for _, b := range bodies {
		b.Close()
	}
	// The clients' side is in this process too: its buffers count.
	if perViewer := grew / 60; perViewer > int64(len(snap)/2) {
		t.Errorf("the heap grew by %d KiB for 60 live pages, %d KiB each; a snapshot is %d KiB", grew>>10, perViewer>>10, len(snap)>>10)
	} else {
		t.Logf("60 live pages: heap +%d KiB (%d KiB each, both ends of the connections); one snapshot %d KiB", grew>>10, perViewer>>10, len(snap)>>10)
	}
}

// A live page outlives the server's request timeouts: its stream is not
// cut when the read timeout of the request passes.
func TestEventStreamOutlivesReadTimeout(t *testing.T) {
	d, err := New(Options{Server: &table{}, Interval: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	url := serve(t, d)
	resp, err := http.Get(url + "/events")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	r := bufio.NewReader(resp.Body)
	start := time.Now()
	for time.Since(start) < readTimeout+2*time.Second {
		if _, err := r.ReadString('\n'); err != nil {
			t.Fatalf("the stream ended after %s: %v", time.Since(start).Round(time.Second), err)
		}
	}
}

// A signed image shows its signers on the page, in /api/image and in
// asr_server_image_info.
func TestSignedImageShowsSigner(t *testing.T) {
	d, err := New(Options{Server: &table{}, Image: Image{Name: "lab.asr", Digest: "sha256:ab", Signers: []string{"key ID 3A5F0B2C9D1E4F60"}}})
	if err != nil {
		t.Fatal(err)
	}
	url := serve(t, d)
	for path, want := range map[string]string{
		"/":          "by key ID 3A5F0B2C9D1E4F60",
		"/api/image": `"signers": [` + "\n" + `    "key ID 3A5F0B2C9D1E4F60"`,
		"/metrics":   `asr_server_image_info{digest="sha256:ab",name="lab.asr",signed="true"} 1`,
	} {
		resp, err := http.Get(url + path)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if !strings.Contains(string(b), want) {
			t.Errorf("GET %s lacks %q:\n%.2000s", path, want, b)
		}
	}
}
