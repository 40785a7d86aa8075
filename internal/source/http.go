package source

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/asrlinux/asr/internal/image"
	"github.com/asrlinux/asr/internal/redact"
	"github.com/asrlinux/asr/internal/safetext"
)

// HTTPOptions tune an http(s):// source.
type HTTPOptions struct {
	CACert string // PEM file of extra trusted CAs, added to the system's
	// Stall is how long the server may send nothing (no answer, no byte)
	// before the source gives up with a *StallError; default 30 s. Within
	// it, a silent connection is reconnected once it has been quiet for
	// half of it.
	Stall     time.Duration
	Retries   int    // reconnections in a row without progress before giving up (default 5)
	Checksum  string // "sha256:HEX" of the file as served, for raw images
	ChunkSize int    // chunking of raw images; 0 means image.DefaultChunkSize
	// MaxSize is the most the image may hold (the target's size); 0: no
	// limit. A raw image whose size the server does not say, or a
	// compressed one, is measured by reading it, and that stops past MaxSize.
	MaxSize int64
	// SpoolDir, if set, is where a compressed raw image is decompressed
	// during the reading that measures it, so that its filesystems are
	// mapped and only their used blocks written (see spool).
	SpoolDir string
	// AllBlocks reads a raw image whole, free space included, instead of
	// mapping its filesystems (with range requests, or in the spool).
	AllBlocks bool
	// Log, if set, hears about retries and checksum decisions, one line each.
	Log func(format string, a ...any)
	// Client, if set, sends every request instead of a client of the
	// source's own: a registry's client, which authenticates them
	// (internal/oci). CACert is then the Client's business.
	Client Doer
	// Name names the source in messages instead of its URL (an oci://
	// reference rather than its blob's URL); it must hold no secret.
	Name string
	// Kind names the transport in Info.Kind ("OCI registry"); default the
	// URL's scheme ("HTTP").
	Kind string
	// Size, if positive, is the file's length as the caller knows it (a
	// registry's descriptor): a server that says otherwise is refused.
	Size int64
	// PreparedOnly refuses anything but a prepared image, before reading
	// further: a registry's asr artifact is one.
	PreparedOnly bool
}

// Doer sends HTTP requests; *http.Client is one.
type Doer interface {
	Do(*http.Request) (*http.Response, error)
}

// httpClient is one source's connection to its server: the transport of an
// http(s):// source. It delivers bytes; what they are is detect's business.
type httpClient struct {
	c       Doer
	url     string // with credentials, for requests
	shown   string // without credentials, for messages
	scheme  string
	ranging bool
	total   int64 // -1 when the server does not say
	stall   time.Duration
	retries int
	log     func(string, ...any)
	kindOf  string // Info.Kind's transport; "" for the scheme
	want    int64  // the file's length as the caller knows it; 0: unknown
}

// OpenHTTP opens a prepared or raw image on a web server. It learns whether
// the server honours Range, reads and checks the manifest (prepared images)
// or the size (raw images), and refuses what is not an image, all before the
// caller writes anything. Every wait on the server, the first answer
// included, is bounded by opts.Stall.
func OpenHTTP(ctx context.Context, rawurl string, opts HTTPOptions) (Source, error) {
	u, err := url.Parse(rawurl)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("source %q is not a valid http(s) URL", redact.URL(rawurl))
	}
	hc, err := newHTTPClient(u, opts)
	if err != nil {
		return nil, err
	}
	head, first, err := hc.probe(ctx)
	if err != nil {
		return nil, err
	}
	ft := detect(head, u.Path)
	if ft.prepared {
		return openStreamPrepared(ctx, hc, first)
	}
	if opts.PreparedOnly {
		if first != nil {
			first.Close()
		}
		return nil, fmt.Errorf("source %s: the file is not a prepared image (it does not start with asr's header)", hc.shown)
	}
	want, from, err := hc.checksum(ctx, opts.Checksum)
	if err != nil {
		if first != nil {
			first.Close()
		}
		return nil, err
	}
	cs := opts.ChunkSize
	if cs == 0 {
		cs = image.DefaultChunkSize
	}
	return openStreamRaw(ctx, hc, first, ft, want, from, cs, opts.MaxSize, opts.SpoolDir, opts.AllBlocks)
}

// probe asks for the file's first 64 KiB: the answer says whether ranges
// work, how long the file is, and what it starts with. Without Range
// support, the answer's body is the only way in, returned as first.
func (hc *httpClient) probe(ctx context.Context) (head []byte, first io.ReadCloser, err error) {
	const probeLen = 65536
	resp, body, err := hc.get(ctx, 0, probeLen, hc.stall, hc.stall, "the image")
	if err != nil {
		return nil, nil, err
	}
	defer func() {
		if err != nil {
			body.Close()
		}
	}()
	switch resp.StatusCode {
	case http.StatusPartialContent:
		hc.ranging = true
		n, total, err := hc.checkPartial(resp, 0, probeLen)
		if err != nil {
			return nil, nil, err
		}
		hc.total = total
		body = readCloser{io.LimitReader(body, n), body}
	case http.StatusOK:
		hc.total = resp.ContentLength
	default:
		return nil, nil, hc.statusError(resp)
	}
	if hc.want > 0 && hc.total != hc.want {
		return nil, nil, fmt.Errorf("source %s: the server says the file is %d bytes, it should be %d: the server does not serve what it listed", hc.shown, hc.total, hc.want)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "" {
		if mt, _, _ := mime.ParseMediaType(ct); mt == "text/html" {
			return nil, nil, fmt.Errorf("source %s: the server sent an HTML page (Content-Type %s), not a disk image: check the URL", hc.shown, mt)
		}
	}
	br := bufio.NewReaderSize(body, 64<<10)
	head, err = br.Peek(headLen)
	if err != nil && err != io.EOF {
		return nil, nil, err
	}
	err = nil
	if w, ok := body.(*watched); ok {
		// From here on the body is a stream like any other, whose stalls
		// are reconnected within the allowance (see resumer).
		w.idle = hc.stall / 2
	}
	if bytes.HasPrefix(bytes.TrimLeft(head, " \t\r\n"), []byte("<")) {
		return nil, nil, fmt.Errorf("source %s: the server sent an HTML or XML page, not a disk image: check the URL", hc.shown)
	}
	if len(head) == 0 {
		return nil, nil, fmt.Errorf("source %s: the server sent an empty file", hc.shown)
	}
	head = bytes.Clone(head)
	if hc.ranging {
		// The probe's body covers only its small range; readers ask for
		// what they need with ranges of their own.
		body.Close()
		return head, nil, nil
	}
	r := hc.resumer(ctx, 0, hc.total)
	r.body = readCloser{br, body}
	return head, r, nil
}

// NewHTTPClient is the client a source reads a web server with: many
// connections per host, no transparent decompression, redirects only to
// http(s) and at most 10, and the system's CAs plus those of caCert (a PEM
// file; "" for none). A registry's client (internal/oci) sends through it.
func NewHTTPClient(caCert string) (*http.Client, error) {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.MaxIdleConnsPerHost = 32
	// Images are compressed already; transparent gzip would only cost CPU
	// and hide the real Content-Length.
	tr.DisableCompression = true
	if caCert != "" {
		pem, err := os.ReadFile(caCert)
		if err != nil {
			return nil, fmt.Errorf("CA certificates %s: %w", caCert, err)
		}
		pool, err := x509.SystemCertPool()
		if err != nil {
			pool = x509.NewCertPool()
		}
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("CA certificates %s: the file holds no PEM certificate", caCert)
		}
		tr.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	}
	return &http.Client{Transport: tr, CheckRedirect: checkRedirect}, nil
}

func newHTTPClient(u *url.URL, opts HTTPOptions) (*httpClient, error) {
	c := opts.Client
	if c == nil {
		hc, err := NewHTTPClient(opts.CACert)
		if err != nil {
			return nil, err
		}
		c = hc
	}
	hc := &httpClient{
		c:   c,
		url: u.String(), shown: redact.URL(u.String()), scheme: u.Scheme, total: -1,
		stall: opts.Stall, retries: opts.Retries, log: opts.Log, kindOf: opts.Kind, want: opts.Size,
	}
	if opts.Name != "" {
		hc.shown = opts.Name
	}
	if hc.stall <= 0 {
		hc.stall = 30 * time.Second
	}
	if hc.retries <= 0 {
		hc.retries = 5
	}
	if hc.log == nil {
		hc.log = func(string, ...any) {}
	}
	return hc, nil
}

var errRedirects = errors.New("redirected 10 times (a redirect loop?)")

// checkRedirect follows at most 10 redirects, and only to http(s): a
// server must not send asr to file:// or ftp://, or anywhere else.
func checkRedirect(req *http.Request, via []*http.Request) error {
	if len(via) >= 10 {
		return errRedirects
	}
	if s := req.URL.Scheme; s != "http" && s != "https" {
		return fmt.Errorf("redirected to a %s: URL: only http and https are followed", strconv.Quote(s))
	}
	return nil
}

// errStalled is the cause a watchdog cancels a request with.
var errStalled = errors.New("stalled")

// get requests [off, end) of the file (end -1: to its end; off 0 and end -1:
// no Range at all) under a watchdog: the answer must come within first, and
// every read of the body must bring data within idle, or the request is
// cancelled and the wait ends with a *StallError naming what.
func (hc *httpClient) get(ctx context.Context, off, end int64, first, idle time.Duration, what string) (*http.Response, io.ReadCloser, error) {
	return hc.getURL(ctx, hc.url, hc.shown, off, end, first, idle, what)
}

func (hc *httpClient) getURL(ctx context.Context, rawurl, shown string, off, end int64, first, idle time.Duration, what string) (*http.Response, io.ReadCloser, error) {
	rctx, cancel := context.WithCancelCause(ctx)
	req, err := http.NewRequestWithContext(rctx, http.MethodGet, rawurl, nil)
	if err != nil {
		cancel(nil)
		return nil, nil, fmt.Errorf("source %s: %w", shown, err)
	}
	if off > 0 || end >= 0 {
		if end >= 0 {
			req.Header.Set("Range", fmt.Sprintf("bytes=%d-%d", off, end-1))
		} else {
			req.Header.Set("Range", fmt.Sprintf("bytes=%d-", off))
		}
	}
	stall := func(d time.Duration, at int64) error {
		return &StallError{Source: shown, What: what, Idle: d, Offset: at}
	}
	timer := time.AfterFunc(first, func() { cancel(errStalled) })
	resp, err := hc.c.Do(req)
	timer.Stop()
	if err != nil {
		cancel(nil)
		if errors.Is(context.Cause(rctx), errStalled) {
			return nil, nil, stall(first, off)
		}
		if ctx.Err() != nil {
			return nil, nil, ctx.Err()
		}
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err // the URL is in our message already, without its password
		}
		if errors.Is(err, errRedirects) {
			return nil, nil, fmt.Errorf("source %s: the server %w", shown, err)
		}
		return nil, nil, fmt.Errorf("source %s: %w", shown, err)
	}
	w := &watched{body: resp.Body, ctx: rctx, cancel: cancel, timer: timer, idle: idle, pos: off, stall: stall}
	return resp, w, nil
}

// watched is a response body whose every read must bring data within idle:
// a watchdog runs only while a read waits, so time the caller spends between
// reads (writing to a slow disk) is not held against the server.
type watched struct {
	body   io.ReadCloser
	ctx    context.Context
	cancel context.CancelCauseFunc
	timer  *time.Timer
	idle   time.Duration
	pos    int64
	stall  func(time.Duration, int64) error
}

func (w *watched) Read(p []byte) (int, error) {
	if w.ctx.Err() == nil {
		w.timer.Reset(w.idle)
	}
	n, err := w.body.Read(p)
	w.timer.Stop()
	w.pos += int64(n)
	if err != nil && err != io.EOF && errors.Is(context.Cause(w.ctx), errStalled) {
		err = w.stall(w.idle, w.pos)
	}
	return n, err
}

func (w *watched) Close() error {
	w.timer.Stop()
	err := w.body.Close()
	w.cancel(nil)
	return err
}

func (hc *httpClient) statusError(resp *http.Response) error {
	hint := ""
	switch {
	case resp.StatusCode == http.StatusNotFound:
		hint = ": check the path"
	case resp.StatusCode == http.StatusUnauthorized:
		hint = ": give user:password@ in the URL"
	case resp.StatusCode == http.StatusForbidden:
		hint = ": the server refuses to serve it (permissions?)"
	case resp.StatusCode == http.StatusRequestedRangeNotSatisfiable:
		hint = ": the file is empty or shorter than expected"
	case resp.StatusCode >= 500:
		hint = ": the server is failing; try again later"
	}
	return fmt.Errorf("source %s: the server answered %s%s", hc.shown, safetext.Short(resp.Status, 80), hint)
}

// checkPartial checks a 206 answer to a request for [off, end) (end -1: to
// the end): its Content-Range must start at off, end within the request,
// agree with Content-Length and with the file's total length as first
// announced. It returns how many bytes the body holds and the total (-1 if
// the server does not say). A proxy or cache that splices another part of
// the file, or another file, in is caught here instead of restored.
func (hc *httpClient) checkPartial(resp *http.Response, off, end int64) (n, total int64, err error) {
	cr := resp.Header.Get("Content-Range")
	a, b, total, ok := parseContentRange(cr)
	asked := fmt.Sprintf("bytes %d-", off)
	if end >= 0 {
		asked += strconv.FormatInt(end-1, 10)
	}
	bad := func(why string) error {
		return fmt.Errorf("source %s: asked for %s, the server answered 206 with Content-Range %q: %s", hc.shown, asked, cr, why)
	}
	switch {
	case !ok:
		return 0, 0, bad("that does not say which bytes it sent")
	case a != off:
		return 0, 0, bad("the wrong part of the file (a broken proxy or cache?)")
	case end >= 0 && b >= end:
		return 0, 0, bad("more than was asked for")
	case total >= 0 && b >= total:
		return 0, 0, bad("a range past the file's end")
	case hc.ranging && hc.total >= 0 && total != hc.total:
		return 0, 0, bad(fmt.Sprintf("the file was %d bytes: it changed on the server during the download", hc.total))
	case resp.ContentLength >= 0 && resp.ContentLength != b-a+1:
		return 0, 0, bad(fmt.Sprintf("its Content-Length says %d bytes, its Content-Range %d", resp.ContentLength, b-a+1))
	}
	return b - a + 1, total, nil
}

// parseContentRange reads "bytes A-B/TOTAL" (TOTAL may be "*": -1).
func parseContentRange(s string) (a, b, total int64, ok bool) {
	rest, found := strings.CutPrefix(s, "bytes ")
	if !found {
		return 0, 0, 0, false
	}
	rng, tot, found := strings.Cut(rest, "/")
	as, bs, found2 := strings.Cut(rng, "-")
	if !found || !found2 {
		return 0, 0, 0, false
	}
	num := func(s string) (int64, bool) {
		if s == "" || s[0] == '+' || s[0] == '-' {
			return 0, false
		}
		n, err := strconv.ParseInt(s, 10, 64)
		return n, err == nil
	}
	var ok1, ok2, ok3 bool
	a, ok1 = num(as)
	b, ok2 = num(bs)
	total, ok3 = -1, true
	if tot != "*" {
		total, ok3 = num(tot)
	}
	return a, b, total, ok1 && ok2 && ok3 && a <= b
}

type readCloser struct {
	io.Reader
	io.Closer
}

type closerFunc func() error

func (f closerFunc) Close() error { return f() }

// transport methods: what the format-level sources need of a server.

func (hc *httpClient) open(ctx context.Context, off, end int64) io.ReadCloser {
	return hc.resumer(ctx, off, end)
}
func (hc *httpClient) size() int64  { return hc.total }
func (hc *httpClient) ranges() bool { return hc.ranging }
func (hc *httpClient) name() string { return hc.shown }
func (hc *httpClient) kind() string {
	if hc.kindOf != "" {
		return hc.kindOf
	}
	return strings.ToUpper(hc.scheme)
}
func (hc *httpClient) logf(format string, a ...any) { hc.log(format, a...) }
