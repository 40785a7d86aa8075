// Package dashboard serves the operator's view of a multicast server over
// HTTP: a live page of the image, the stream and every client (updated by
// server-sent events), Prometheus metrics at /metrics, and JSON at
// /api/clients and /api/image.
//
// It only reads the server's state: it changes nothing and has no
// authentication, so it belongs on the imaging network. Its cost does not
// grow with viewers: one sampler builds one snapshot a second that every
// viewer shares, event streams are capped in number and dropped when a
// viewer does not read, and every request has timeouts. Everything a
// client sent (its name, disk, message) is escaped: by html/template in
// the page, by textContent in its script.
package dashboard

import (
	"bytes"
	"context"
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"html/template"
	"io/fs"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/asrlinux/asr/internal/multicast"
)

//go:embed web
var webFS embed.FS

// Server is what the dashboard reads of a multicast server
// (*multicast.Server has these methods).
type Server interface {
	Clients() []multicast.ClientStatus
	Forgotten() map[string]int
	Stats() multicast.ServerStats
}

// Image describes the image being served.
type Image struct {
	Name    string   `json:"name"`   // the file's name
	Size    int64    `json:"size"`   // logical size: the disk it restores
	Stored  int64    `json:"stored"` // bytes of the file
	Chunks  int      `json:"chunks"`
	Digest  string   `json:"digest"` // sha256:HEX
	Stream  string   `json:"stream"` // this run's stream identity
	Signers []string `json:"signers"`
	Group   string   `json:"group"` // multicast group and data port
	Rate    int64    `json:"rate"`  // configured stream rate, bytes/s
}

// Options configure a Dashboard.
type Options struct {
	Server  Server
	Image   Image
	Version string // asr's, for the page and asr_build_info
	// Interval between snapshots; zero means a second.
	Interval time.Duration
	// MaxStreams caps the live pages open at once; zero means 64.
	MaxStreams int
}

// Dashboard serves one server's state. Run samples it; Handler serves it.
type Dashboard struct {
	opts  Options
	page  *template.Template
	slots chan struct{} // one per event stream allowed

	mu      sync.Mutex
	snap    *Snapshot
	json    string        // snap as JSON (one line), shared by every viewer
	seq     uint64        // counts the changes of json
	changed chan struct{} // closed and replaced when json changes
	last    sample        // the previous sample, for the stream rate
}

// sample is the stream's bytes sent at a time.
type sample struct {
	at    time.Time
	bytes int64
}

// New prepares a dashboard; it takes a first snapshot at once so that a
// page served before Run has something to show.
func New(opts Options) (*Dashboard, error) {
	if opts.Interval <= 0 {
		opts.Interval = time.Second
	}
	if opts.MaxStreams <= 0 {
		opts.MaxStreams = 64
	}
	if opts.Image.Signers == nil {
		opts.Image.Signers = []string{}
	}
	page, err := template.New("index.html").Funcs(template.FuncMap{"bytes": humanBytes, "since": since}).ParseFS(webFS, "web/index.html")
	if err != nil {
		return nil, fmt.Errorf("dashboard page: %w", err)
	}
	d := &Dashboard{opts: opts, page: page, slots: make(chan struct{}, opts.MaxStreams), changed: make(chan struct{})}
	d.refresh(time.Now())
	return d, nil
}

// Run takes a snapshot every interval until ctx ends.
func (d *Dashboard) Run(ctx context.Context) {
	t := time.NewTicker(d.opts.Interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			d.refresh(now)
		}
	}
}

// refresh takes a snapshot and publishes it if it differs from the last.
func (d *Dashboard) refresh(now time.Time) {
	d.mu.Lock()
	last := d.last
	d.mu.Unlock()
	snap, cur := d.snapshot(now, last)
	b, err := json.Marshal(snap)
	if err != nil {
		return // cannot happen: the snapshot holds only strings and numbers
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	d.last = cur
	d.snap = snap
	if string(b) != d.json {
		d.json = string(b)
		d.seq++
		close(d.changed)
		d.changed = make(chan struct{})
	}
}

// current returns the latest snapshot, its JSON, and a channel closed when
// a newer one is published.
func (d *Dashboard) current() (*Snapshot, string, <-chan struct{}) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.snap, d.json, d.changed
}

// latest returns the latest snapshot's JSON and number, and a channel
// closed when a newer one is published.
func (d *Dashboard) latest() (string, uint64, <-chan struct{}) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.json, d.seq, d.changed
}

// Handler serves the page, its assets, the event stream, the JSON API
// and the metrics. Every method but GET and HEAD is refused.
func (d *Dashboard) Handler() http.Handler {
	mux := http.NewServeMux()
	static, _ := fs.Sub(webFS, "web")
	assets := http.FileServerFS(static)
	mux.HandleFunc("GET /{$}", d.serveIndex)
	mux.Handle("GET /style.css", assets)
	mux.Handle("GET /app.js", assets)
	mux.HandleFunc("GET /events", d.serveEvents)
	mux.HandleFunc("GET /api/clients", d.serveClients)
	mux.HandleFunc("GET /api/image", d.serveImage)
	mux.Handle("GET /metrics", d.metricsHandler())
	return headers(mux)
}

// headers adds the headers every answer carries: the page runs only its
// own script and style, and is not framed by another site.
func headers(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hd := w.Header()
		hd.Set("Content-Security-Policy", "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'")
		hd.Set("X-Content-Type-Options", "nosniff")
		hd.Set("Referrer-Policy", "no-referrer")
		h.ServeHTTP(w, r)
	})
}

func (d *Dashboard) serveIndex(w http.ResponseWriter, r *http.Request) {
	snap, _, _ := d.current()
	var b bytes.Buffer
	if err := d.page.Execute(&b, struct {
		*Snapshot
		Version string
	}{snap, d.opts.Version}); err != nil {
		http.Error(w, "dashboard page: "+err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.Write(b.Bytes())
}

func (d *Dashboard) serveClients(w http.ResponseWriter, r *http.Request) {
	snap, _, _ := d.current()
	writeJSON(w, struct {
		Clients   []Client       `json:"clients"`
		Summary   Summary        `json:"summary"`
		Forgotten map[string]int `json:"forgotten"`
	}{snap.Clients, snap.Summary, snap.Forgotten})
}

func (d *Dashboard) serveImage(w http.ResponseWriter, r *http.Request) {
	snap, _, _ := d.current()
	writeJSON(w, struct {
		Image
		Stream Stream `json:"stream"`
	}{snap.Image, snap.Stream})
}

func writeJSON(w http.ResponseWriter, v any) {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.Write(append(b, '\n'))
}

// Timeouts of the HTTP server: a request's headers within 5 s, its answer
// written within 30 s (event streams extend their own deadline per event),
// an idle connection kept a minute.
const (
	readHeaderTimeout = 5 * time.Second
	readTimeout       = 10 * time.Second
	writeTimeout      = 30 * time.Second
	idleTimeout       = time.Minute
	maxHeaderBytes    = 16 << 10
)

// Serve serves the dashboard on ln until ctx ends, then closes it.
func (d *Dashboard) Serve(ctx context.Context, ln net.Listener) error {
	hs := &http.Server{
		Handler:           d.Handler(),
		ReadHeaderTimeout: readHeaderTimeout,
		ReadTimeout:       readTimeout,
		WriteTimeout:      writeTimeout,
		IdleTimeout:       idleTimeout,
		MaxHeaderBytes:    maxHeaderBytes,
		BaseContext:       func(net.Listener) context.Context { return ctx },
	}
	stop := context.AfterFunc(ctx, func() { hs.Close() })
	defer stop()
	if err := hs.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("dashboard: %w", err)
	}
	return nil
}
