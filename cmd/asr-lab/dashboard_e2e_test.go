package main

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/asrlinux/asr/internal/netlab"
	"github.com/asrlinux/asr/internal/testenv"
)

func TestMain(m *testing.M) {
	code := m.Run()
	testenv.Cleanup()
	os.Exit(code)
}

// What the demo adds around the lab's asr server: its dashboard forwarded
// to 127.0.0.1 of this machine, its summary read from the JSON API, and a
// screenshot by headless Chromium in the server's namespace. No VM: the
// server waits for clients, and the dashboard says so.
func TestE2EDashboardForwardAndScreenshot(t *testing.T) {
	testenv.Require(t, "ip", "sgdisk", "chromium")
	asr := testenv.Asr(t)
	dir := t.TempDir()
	lab := netlab.NewT(t, "ld")
	srv := lab.AddHostT(t, "s", 1)
	disk := testenv.Disk(t, dir, 8<<20, 7)
	img := disk + ".asr"
	testenv.Run(t, asr, "imagescan", "--source", disk, "--output", img)
	cfg := filepath.Join(dir, "asrconfig.plist")
	os.WriteFile(cfg, []byte(`<plist version="1.0"><dict><key>Multicast Address</key><string>239.255.17.1</string>
<key>Data Rate</key><integer>1000000</integer><key>DNS Service Discovery</key><false/></dict></plist>`), 0o644)
	p := netlab.StartProcT(t, "asr server", srv.Command(context.Background(), asr, "server", "--source", img, "--config", cfg, "--http", dashAddr))
	p.WaitForT(t, "Dashboard on http://", 30*time.Second)

	local, stop, err := forward(srv, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	if !strings.HasPrefix(local, "127.0.0.1:") {
		t.Errorf("forwarded to %s, want a port of 127.0.0.1", local)
	}
	resp, err := http.Get("http://" + local + "/")
	if err != nil {
		t.Fatalf("the forwarded dashboard: %v", err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !bytes.Contains(b, []byte(filepath.Base(img))) {
		t.Errorf("GET http://%s/: %s, want the page naming %s:\n%.500s", local, resp.Status, filepath.Base(img), b)
	}
	// A live page held open must not keep stop from returning.
	ev, err := http.Get("http://" + local + "/events")
	if err != nil {
		t.Fatal(err)
	}
	defer ev.Body.Close()

	if text, err := dashboardSummary(srv); err != nil || text != "Waiting for clients" {
		t.Errorf("dashboardSummary = %q, %v, want Waiting for clients", text, err)
	}
	png := filepath.Join(dir, "dash.png")
	if err := screenshot(context.Background(), srv, png, filepath.Join(dir, "chromium")); err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(png); err != nil || !bytes.HasPrefix(b, []byte("\x89PNG")) || len(b) < 10<<10 {
		t.Errorf("screenshot %s: %d bytes, %v; want a PNG", png, len(b), err)
	}
	stopped := make(chan error, 1)
	go func() { stopped <- stop() }()
	select {
	case <-stopped:
	case <-time.After(10 * time.Second):
		t.Errorf("stopping the forward hangs while a live page is open")
	}
}
