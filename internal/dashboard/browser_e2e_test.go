package dashboard_test

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/asrlinux/asr/internal/netlab"
	"github.com/asrlinux/asr/internal/testenv"
)

func TestMain(m *testing.M) {
	code := m.Run()
	testenv.Cleanup()
	os.Exit(code)
}

const (
	diskSize = 48 << 20
	dashAddr = "198.18.0.1:8080"
	// htmlName is a client host name made of markup: the page must show
	// it as these characters, never as a bold x or a script.
	htmlName = `<b>x</b><script>document.title="pwned"</script>`
)

// row is a client row as the browser shows it.
type row struct {
	Name, State, Pct, Reason string
	Bold                     int // <b> elements inside the name cell
}

// rowsJS reads the client table from the page's DOM.
const rowsJS = `Array.from(document.querySelectorAll("#clients tbody tr[data-id]")).map(tr => ({
	Name: tr.children[0].textContent, State: tr.children[4].textContent,
	Pct: tr.children[5].textContent.trim(), Reason: tr.children[9].textContent,
	Bold: tr.children[0].querySelectorAll("b").length}))`

// The dashboard in a real browser: asr server --http in the lab's server
// namespace, three `asr restore` clients in namespaces of their own (one
// named with HTML, one whose target is too small), and headless Chromium
// in the server's namespace watching the page while they restore. The
// page must list each client, show progress moving without a reload,
// show done for the two that restored and failed with its reason for the
// third, show the HTML name as text; /metrics and the JSON API must agree
// with what happened. A screenshot of the finished page is kept.
func TestE2EDashboardInBrowser(t *testing.T) {
	testenv.Require(t, "ip", "nft", "sgdisk", "unshare", "chromium")
	asr := testenv.Asr(t)
	dir := t.TempDir()
	lab := netlab.NewT(t, "db")
	srvHost := lab.AddHostT(t, "s", 1)
	var hosts []*netlab.Host
	for i := range 3 {
		hosts = append(hosts, lab.AddHostT(t, fmt.Sprintf("c%d", i+1), 11+i))
	}
	// A fourth host misbehaves, for the counters /metrics must show.
	rogue := lab.AddHostT(t, "x", 20)

	disk := testenv.Disk(t, dir, diskSize, 161)
	img := disk + ".asr"
	testenv.Run(t, asr, "imagescan", "--source", disk, "--output", img)
	cfg := filepath.Join(dir, "asrconfig.plist")
	// 3 MB/s: a pass takes several seconds, long enough to watch.
	os.WriteFile(cfg, []byte(`<?xml version="1.0" encoding="UTF-8"?>
<plist version="1.0"><dict>
<key>Multicast Address</key><string>239.255.16.1</string>
<key>Data Rate</key><integer>3000000</integer>
<key>DNS Service Discovery</key><false/>
</dict></plist>`), 0o644)
	srv := netlab.StartProcT(t, "asr server", srvHost.Command(context.Background(), asr, "server",
		"--source", img, "--config", cfg, "--http", dashAddr))
	srv.WaitForT(t, `Dashboard on http://`+regexp.QuoteMeta(dashAddr)+`/`, 30*time.Second)
	m := regexp.MustCompile(`digest sha256:([0-9a-f]{64})`).FindStringSubmatch(srv.Output.Log())
	if m == nil {
		t.Fatalf("the server did not log its digest:\n%s", srv.Output.Log())
	}
	digest := "sha256:" + m[1]

	ctx := browser(t, srvHost)
	url := "http://" + dashAddr + "/"
	if err := chromedp.Do(ctx, chromedp.EmulateViewport(1280, 720), chromedp.Navigate(url),
		chromedp.WaitVisible("#summary")); err != nil {
		t.Fatalf("opening %s: %v", url, err)
	}
	waitText(t, ctx, "#summary", "Waiting for clients", 20*time.Second)
	waitText(t, ctx, "#conn", "live ·", 20*time.Second)

	// The clients: two restore, one fails for its target's size.
	type client struct {
		name, target string
		good         bool
	}
	clients := []client{
		{"db-alpha", filepath.Join(dir, "alpha.raw"), true},
		{htmlName, filepath.Join(dir, "html.raw"), true},
		{"db-small", filepath.Join(dir, "small.raw"), false},
	}
	testenv.FillRandom(t, clients[0].target, diskSize, 1)
	testenv.FillRandom(t, clients[1].target, diskSize, 2)
	testenv.FillRandom(t, clients[2].target, 16<<20, 3)
	outs := make([]string, len(clients))
	errs := make([]error, len(clients))
	var wg sync.WaitGroup
	for i, c := range clients {
		wg.Go(func() {
			rctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
			defer cancel()
			// The client's name is its host name, set in a UTS namespace
			// of its own (through /proc: hostname(1) refuses markup).
			cmd := hosts[i].Command(rctx, "unshare", "--uts", "sh", "-c", `printf %s "$0" > /proc/sys/kernel/hostname && exec "$@"`,
				c.name, asr, "restore", "--source", "asr://198.18.0.1", "--target", c.target, "--erase", "--noprompt", "--timeout", "30")
			out, err := cmd.CombinedOutput()
			outs[i], errs[i] = string(out), err
		})
	}
	// Meanwhile the rogue host opens a control connection that speaks
	// HTTP, and sends the group packets of another stream and junk.
	if err := rogue.Do(func() error {
		c, err := net.DialTimeout("tcp", "198.18.0.1:7800", 5*time.Second)
		if err != nil {
			return err
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(5 * time.Second))
		fmt.Fprintf(c, "GET / HTTP/1.0\r\n\r\n")
		io.Copy(io.Discard, c) // until the server hangs up
		return nil
	}); err != nil {
		t.Fatalf("rogue control connection: %v", err)
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	var rogueSent atomic.Int64
	rogueDone := make(chan error, 1)
	go func() { rogueDone <- rogue.Do(func() error { return sendRogue(done, &rogueSent) }) }()

	// Watch the page while they run: progress must move in it, with no
	// reload, for the clients that restore.
	seen := map[string]map[string]bool{} // name: percentages seen part-way
	var names map[string]bool
watch:
	for {
		select {
		case <-done:
			break watch
		case <-time.After(250 * time.Millisecond):
		}
		rows, err := chromedp.Run(ctx, chromedp.Evaluate[[]row](rowsJS))
		if err != nil {
			t.Fatalf("reading the page: %v", err)
		}
		names = map[string]bool{}
		for _, r := range rows {
			names[r.Name] = true
			if r.State == "restoring" && r.Pct != "0%" && r.Pct != "100%" {
				if seen[r.Name] == nil {
					seen[r.Name] = map[string]bool{}
				}
				seen[r.Name][r.Pct] = true
			}
		}
	}
	if err := <-rogueDone; err != nil {
		t.Fatalf("rogue packets: %v", err)
	}
	for i, c := range clients {
		if (errs[i] == nil) != c.good {
			t.Errorf("client %q: exit %v, want success %v:\n%s", c.name, errs[i], c.good, outs[i])
		}
	}
	if !strings.Contains(outs[2], "too small") {
		t.Errorf("the small client did not fail for its size:\n%s", outs[2])
	}
	for _, c := range clients[:2] {
		if len(seen[c.name]) < 2 {
			t.Errorf("the page showed %q part-way at %d percentages (%v), want its progress moving", c.name, len(seen[c.name]), seen[c.name])
		}
	}

	// The finished page: every client listed, two done, one failed with
	// its reason; the banner says so; the markup name is text.
	var rows []row
	deadline := time.Now().Add(20 * time.Second)
	for {
		var err error
		if rows, err = chromedp.Run(ctx, chromedp.Evaluate[[]row](rowsJS)); err != nil {
			t.Fatal(err)
		}
		if finished(rows) || time.Now().After(deadline) {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	want := map[string]string{"db-alpha": "done", htmlName: "done", "db-small": "failed"}
	if len(rows) != len(want) {
		t.Errorf("the page lists %d clients, want %d: %+v", len(rows), len(want), rows)
	}
	for _, r := range rows {
		switch {
		case want[r.Name] == "":
			t.Errorf("the page lists client %q, not one of ours", r.Name)
		case r.State != want[r.Name]:
			t.Errorf("client %q shows %q, want %q", r.Name, r.State, want[r.Name])
		case r.State == "done" && r.Pct != "100%":
			t.Errorf("client %q done at %s", r.Name, r.Pct)
		case r.State == "failed" && !strings.Contains(r.Reason, "too small"):
			t.Errorf("client %q failed with reason %q, want its target too small", r.Name, r.Reason)
		case r.Bold != 0:
			t.Errorf("client %q: its name became markup (%d <b> elements)", r.Name, r.Bold)
		}
	}
	summary, err := chromedp.Run(ctx, chromedp.Evaluate[map[string]string](
		`({text: document.querySelector("#summary").textContent, cls: document.querySelector("#summary").className,
		   title: document.title, failedBg: getComputedStyle(document.querySelector("tr.failed")).backgroundColor,
		   doneBg: getComputedStyle(document.querySelector("tr.state-done")).backgroundColor})`))
	if err != nil {
		t.Fatal(err)
	}
	if summary["text"] != "1 failed, 2 done, 0 in progress, of 3 machines" || summary["cls"] != "summary bad" {
		t.Errorf("banner %q (class %q), want 1 failed, 2 done of 3, in the failure colour", summary["text"], summary["cls"])
	}
	if strings.Contains(summary["title"], "pwned") {
		t.Errorf("the client's <script> ran: title %q", summary["title"])
	}
	if summary["failedBg"] == summary["doneBg"] {
		t.Errorf("a failed row and a done row have the same background %s", summary["failedBg"])
	}
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatal(err)
	}
	saveArtifact(t, "dashboard.png", png)

	// On a phone the rows become cards: nothing wider than the screen.
	if err := chromedp.Do(ctx, chromedp.EmulateViewport(390, 844, chromedp.EmulateScale(2), chromedp.EmulateMobile)); err != nil {
		t.Fatal(err)
	}
	overflow, err := chromedp.Run(ctx, chromedp.Evaluate[float64](`document.documentElement.scrollWidth - window.innerWidth`))
	if err != nil {
		t.Fatal(err)
	}
	if overflow > 0 {
		t.Errorf("on a 390 px wide phone the page is %v px wider than the screen", overflow)
	}
	if png, err = chromedp.Run(ctx, chromedp.FullScreenshot(100)); err != nil {
		t.Fatal(err)
	}
	saveArtifact(t, "dashboard-phone.png", png)

	// /metrics, read with the Prometheus text parser.
	hc := httpIn(srvHost)
	mf := scrape(t, hc, "http://"+dashAddr+"/metrics")
	for _, c := range []struct {
		name  string
		label string // name=value, or ""
		ok    func(float64) bool
		want  string
	}{
		{"asr_server_clients", "state=done", eq(2), "2"},
		{"asr_server_clients", "state=failed", eq(1), "1"},
		{"asr_server_clients", "state=restoring", eq(0), "0"},
		{"asr_server_clients_listening", "", eq(0), "0"},
		{"asr_server_sent_bytes_total", "", gt(diskSize / 8), "> a pass of the stored data"},
		{"asr_server_sent_packets_total", "", gt(100), "> 100"},
		{"asr_server_pass", "", gt(0), ">= 1"},
		{"asr_server_control_connections_total", "", eq(4), "4 (3 clients, 1 rogue)"},
		{"asr_server_control_connections", "", eq(0), "0 (all closed)"},
		{"asr_server_control_malformed_total", "", eq(1), "1 (the rogue's HTTP)"},
		{"asr_server_client_packets_total", "", gt(100), "> 100 (reported by the clients)"},
		// Each of the two restoring clients gets at most every rogue
		// packet, and some arrive while they listen.
		{"asr_server_client_ignored_packets_total", "reason=foreign", between(1, 2*float64(rogueSent.Load())), "some of the rogue's"},
		{"asr_server_client_ignored_packets_total", "reason=malformed", between(1, 2*float64(rogueSent.Load())), "some of the rogue's"},
		{"asr_server_client_chunks_total", "outcome=failed_check", eq(0), "0"},
		{"asr_server_image_size_bytes", "", eq(diskSize), fmt.Sprint(diskSize)},
		{"asr_server_image_info", "digest=" + digest, eq(1), "1"},
		{"asr_build_info", "", eq(1), "1"},
		{"process_resident_memory_bytes", "", gt(0), "> 0"},
	} {
		v, ok := value(mf, c.name, c.label)
		if !ok || !c.ok(v) {
			t.Errorf("metric %s{%s} = %v (found %v), want %s", c.name, c.label, v, ok, c.want)
		}
	}

	// The JSON API.
	var apiClients struct {
		Clients []struct {
			Name, State, Message string
			Percent              int
		}
		Summary struct {
			Total, Done, Failed int
			AllDone             bool `json:"all_done"`
		}
	}
	getJSON(t, hc, "http://"+dashAddr+"/api/clients", &apiClients)
	if len(apiClients.Clients) != 3 || apiClients.Summary.Total != 3 || apiClients.Summary.Done != 2 || apiClients.Summary.Failed != 1 || apiClients.Summary.AllDone {
		t.Errorf("/api/clients = %+v, want 3 clients, 2 done, 1 failed", apiClients)
	}
	for _, c := range apiClients.Clients {
		if want[c.Name] != c.State || (c.State == "failed") != strings.Contains(c.Message, "too small") {
			t.Errorf("/api/clients: %+v, want state %q", c, want[c.Name])
		}
	}
	var apiImage struct {
		Name, Digest string
		Size         int64
		Signers      []string
		Stream       struct{ Pass int }
	}
	getJSON(t, hc, "http://"+dashAddr+"/api/image", &apiImage)
	if apiImage.Name != filepath.Base(img) || apiImage.Digest != digest || apiImage.Size != diskSize ||
		len(apiImage.Signers) != 0 || apiImage.Stream.Pass < 1 {
		t.Errorf("/api/image = %+v, want %s, %s, %d bytes, unsigned, pass >= 1", apiImage, filepath.Base(img), digest, diskSize)
	}
	// Read-only: anything but GET is refused.
	resp, err := hc.Post("http://"+dashAddr+"/api/clients", "application/json", strings.NewReader("{}"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("POST /api/clients: %s, want 405", resp.Status)
	}
}

func finished(rows []row) bool {
	n := 0
	for _, r := range rows {
		if r.State == "done" || r.State == "failed" {
			n++
		}
	}
	return len(rows) == 3 && n == 3
}

// browser starts headless Chromium inside h's namespace, so that every
// packet it sends stays in the lab, and talks to it over a pipe (no
// debugging port). It ends with the test.
func browser(t *testing.T, h *netlab.Host) context.Context {
	t.Helper()
	chromium, _ := exec.LookPath("chromium")
	var out strings.Builder
	var mu sync.Mutex
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(),
		chromedp.ExecPath(chromium),
		chromedp.Flag("headless", true),
		chromedp.Flag("no-sandbox", true), // we are root
		chromedp.Flag("disable-gpu", true),
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("no-first-run", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.CombinedOutput(writerFunc(func(p []byte) (int, error) {
			mu.Lock()
			defer mu.Unlock()
			if out.Len() < 64<<10 {
				out.Write(p)
			}
			return len(p), nil
		})),
		// ip netns exec keeps the pipe's descriptors (3 and 4) open.
		chromedp.ModifyCmdFunc(func(cmd *exec.Cmd) {
			cmd.Args = append([]string{"ip", "netns", "exec", h.NS}, cmd.Args...)
			cmd.Path, _ = exec.LookPath("ip")
		}),
	)
	ctx, cancel := chromedp.NewContext(actx)
	tctx, cancelT := context.WithTimeout(ctx, 5*time.Minute)
	t.Cleanup(func() {
		cancelT()
		cancel()
		cancelAlloc()
		if t.Failed() {
			mu.Lock()
			t.Logf("chromium said:\n%s", out.String())
			mu.Unlock()
		}
	})
	if err := chromedp.Do(tctx); err != nil {
		t.Fatalf("starting chromium: %v", err)
	}
	return tctx
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }

func waitText(t *testing.T, ctx context.Context, sel, want string, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		got, err := chromedp.Run(ctx, chromedp.Text(sel))
		if err == nil && strings.Contains(got, want) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s says %q (%v), want %q", sel, got, err, want)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// httpIn is an HTTP client whose connections are opened inside h's
// namespace.
func httpIn(h *netlab.Host) *http.Client {
	tr := &http.Transport{DialContext: func(ctx context.Context, network, addr string) (c net.Conn, err error) {
		err = h.Do(func() error {
			var d net.Dialer
			c, err = d.DialContext(ctx, network, addr)
			return err
		})
		return c, err
	}}
	return &http.Client{Transport: tr, Timeout: 20 * time.Second}
}

func scrape(t *testing.T, hc *http.Client, url string) map[string]*dto.MetricFamily {
	t.Helper()
	resp, err := hc.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s", url, resp.Status)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	mf, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("parsing %s: %v", url, err)
	}
	return mf
}

// value is the value of metric name with label (name=value, or "" for
// the only series), and whether it was found.
func value(mf map[string]*dto.MetricFamily, name, label string) (float64, bool) {
	f := mf[name]
	if f == nil {
		return 0, false
	}
	ln, lv, _ := strings.Cut(label, "=")
	for _, m := range f.GetMetric() {
		match := label == ""
		for _, l := range m.GetLabel() {
			if l.GetName() == ln && l.GetValue() == lv {
				match = true
			}
		}
		if !match {
			continue
		}
		switch {
		case m.Counter != nil:
			return m.GetCounter().GetValue(), true
		case m.Gauge != nil:
			return m.GetGauge().GetValue(), true
		case m.Untyped != nil:
			return m.GetUntyped().GetValue(), true
		}
	}
	return 0, false
}

// sendRogue sends the lab's group, every 20 ms until done, a packet of
// another stream (well formed, another identity) and a malformed one; n
// counts the pairs.
func sendRogue(done <-chan struct{}, n *atomic.Int64) error {
	c, err := net.Dial("udp4", "239.255.16.1:7801")
	if err != nil {
		return err
	}
	defer c.Close()
	foreign := make([]byte, 40+1408)
	binary.LittleEndian.PutUint32(foreign, 0x4d525341) // "ASRM"
	foreign[4], foreign[5] = 1, 1                      // wire version 1
	copy(foreign[8:24], "another-stream!!")
	binary.LittleEndian.PutUint16(foreign[36:], 1) // K
	binary.LittleEndian.PutUint16(foreign[38:], 1) // N
	junk := []byte("not a packet of asr")
	for {
		select {
		case <-done:
			return nil
		case <-time.After(20 * time.Millisecond):
		}
		c.Write(foreign)
		c.Write(junk)
		n.Add(1)
	}
}

func between(lo, hi float64) func(float64) bool {
	return func(v float64) bool { return v >= lo && v <= hi }
}

func eq(w float64) func(float64) bool { return func(v float64) bool { return v == w } }
func gt(w float64) func(float64) bool { return func(v float64) bool { return v > w } }

func getJSON(t *testing.T, hc *http.Client, url string, v any) {
	t.Helper()
	resp, err := hc.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if resp.StatusCode != http.StatusOK || !strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json") {
		t.Fatalf("GET %s: %s, %s:\n%s", url, resp.Status, resp.Header.Get("Content-Type"), b)
	}
	if err := json.Unmarshal(b, v); err != nil {
		t.Fatalf("GET %s: %v:\n%s", url, err, b)
	}
}

// saveArtifact keeps a file a person looks at after the run: under
// $ASR_ARTIFACTS if set, else out/test-artifacts in the repository.
func saveArtifact(t *testing.T, name string, b []byte) {
	t.Helper()
	dir := os.Getenv("ASR_ARTIFACTS")
	if dir == "" {
		_, file, _, _ := runtime.Caller(0)
		dir = filepath.Join(filepath.Dir(file), "..", "..", "out", "test-artifacts")
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("saved %s", p)
}
