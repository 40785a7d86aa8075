package main

// End-to-end tests of http(s):// sources against a real nginx, and of
// dropped and stalled connections against a fault-injecting server. Both
// servers and asr itself run inside a network namespace the test creates
// and removes, listening on its loopback only: no packet leaves it.

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/asrlinux/asr/internal/netlab"
	"github.com/asrlinux/asr/internal/testenv"
)

// lab is one host of a netlab.Lab, with an nginx in it; asr runs there too
// and reaches it on the host's loopback.
type lab struct {
	t     *testing.T
	host  *netlab.Host
	ns    string
	dir   string // served folder
	asr   string // the asr binary
	nginx *exec.Cmd
}

func newLab(t *testing.T) *lab {
	t.Helper()
	testenv.Require(t, "nginx", "ip", "sgdisk")
	nl := netlab.NewT(t, "ah")
	h := nl.AddHostT(t, "h", 1)
	return &lab{t: t, host: h, ns: h.NS, dir: t.TempDir(), asr: testenv.Asr(t)}
}

// startNginx serves l.dir on 127.0.0.1:8080 (HTTP) and :8443 (HTTPS with
// the given certificate), with a few locations that misbehave on purpose.
func (l *lab) startNginx(cert, key string) {
	t := l.t
	conf := filepath.Join(t.TempDir(), "nginx.conf")
	logs := t.TempDir()
	fmt.Fprint(mustCreate(t, conf), `daemon off;
master_process off;
user root;
pid `+logs+`/nginx.pid;
error_log `+logs+`/error.log;
events { worker_connections 64; }
http {
  access_log off;
  default_type application/octet-stream;
  server {
    listen 127.0.0.1:8080;
    listen 127.0.0.1:8443 ssl;
    ssl_certificate `+cert+`;
    ssl_certificate_key `+key+`;
    root `+l.dir+`;
    location /norange/ { alias `+l.dir+`/; max_ranges 0; }
    location /forbidden/ { deny all; }
    location /broken/ { return 503; }
    location /loop/ { return 302 /loop/; }
    location /html/ { default_type text/html; return 200 "<html><body>Welcome to nginx!</body></html>"; }
  }
}
`)
	cmd := exec.Command("ip", "netns", "exec", l.ns, "nginx", "-c", conf)
	var errb bytes.Buffer
	cmd.Stderr = &errb
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	l.nginx = cmd
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	l.waitPort("127.0.0.1:8080", &errb)
}

func mustCreate(t *testing.T, p string) *os.File {
	t.Helper()
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

// waitPort waits (at most 10 s) until something listens on addr in the lab.
func (l *lab) waitPort(addr string, errb *bytes.Buffer) {
	for range 100 {
		if exec.Command("ip", "netns", "exec", l.ns, "bash", "-c", "exec 3<>/dev/tcp/"+strings.Replace(addr, ":", "/", 1)).Run() == nil {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	l.t.Fatalf("nothing listens on %s in %s: %s", addr, l.ns, errb)
}

// run runs asr inside the lab and returns its output and exit code.
func (l *lab) run(args ...string) (string, int) {
	l.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", l.ns, l.asr}, args...)...)
	out, err := cmd.CombinedOutput()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		l.t.Fatal(err)
	}
	return string(out), code
}

// listen opens a TCP listener inside the lab's host from this process.
func (l *lab) listen(addr string) net.Listener {
	ln, err := l.host.Listen(addr)
	if err != nil {
		l.t.Fatalf("listening in %s: %v", l.ns, err)
	}
	l.t.Cleanup(func() { ln.Close() })
	return ln
}

// testCA makes a CA and a server certificate for 127.0.0.1 signed by it.
func testCA(t *testing.T) (caPEM, certPEM, keyPEM string) {
	t.Helper()
	dir := t.TempDir()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	ca := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "asr test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IsCA: true,
		KeyUsage: x509.KeyUsageCertSign, BasicConstraintsValid: true}
	caDER, err := x509.CreateCertificate(rand.Reader, ca, ca, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	leaf := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "127.0.0.1"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	caCert, _ := x509.ParseCertificate(caDER)
	leafDER, err := x509.CreateCertificate(rand.Reader, leaf, caCert, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, _ := x509.MarshalECPrivateKey(key)
	write := func(name, typ string, der []byte) string {
		p := filepath.Join(dir, name)
		os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600)
		return p
	}
	return write("ca.pem", "CERTIFICATE", caDER), write("cert.pem", "CERTIFICATE", leafDER), write("key.pem", "EC PRIVATE KEY", keyDER)
}

func TestE2EHTTPFromNginx(t *testing.T) {
	l := newLab(t)
	ca, cert, key := testCA(t)
	l.startNginx(cert, key)

	disk := makeDisk(t, l.dir, diskSize, 20)
	want := hashRange(t, disk, 0, diskSize)
	mustAsr(t, "imagescan", "--source", disk, "--output", filepath.Join(l.dir, "disk.asr"))
	sh(t, "sh", "-c", fmt.Sprintf("cd %s && gzip -1 -c %s > disk.img.gz && sha256sum disk.img.gz > disk.img.gz.sha256 && xz -0 -T1 -c %s > disk.img.xz && cp %s disk.img",
		l.dir, disk, disk, disk))
	xzSum := hashRange(t, filepath.Join(l.dir, "disk.img.xz"), 0, fileSize(t, filepath.Join(l.dir, "disk.img.xz")))
	img := filepath.Join(l.dir, "disk.asr")
	b, _ := os.ReadFile(img)
	os.WriteFile(filepath.Join(l.dir, "short.asr"), b[:len(b)-4096], 0o644)

	good := []struct {
		name, url string
		extra     []string
		says      string
	}{
		{"prepared, ranges", "http://127.0.0.1:8080/disk.asr", nil, ""},
		{"prepared, no ranges", "http://127.0.0.1:8080/norange/disk.asr", nil, ""},
		{"prepared, https", "https://127.0.0.1:8443/disk.asr", []string{"--cacert", ca}, ""},
		{"prepared, basic auth in URL", "http://admin:s3cret@127.0.0.1:8080/disk.asr", nil, ""},
		{"raw", "http://127.0.0.1:8080/disk.img", nil, "Verified: the disk matches what was downloaded (the download itself could not be checked"},
		{"raw gz with .sha256", "http://127.0.0.1:8080/disk.img.gz", nil, "matches the SHA-256 from http://127.0.0.1:8080/disk.img.gz.sha256"},
		{"raw xz with --checksum, no ranges", "http://127.0.0.1:8080/norange/disk.img.xz", []string{"--checksum", "sha256:" + xzSum}, "matches the SHA-256 from --checksum"},
	}
	for i, c := range good {
		t.Run(c.name, func(t *testing.T) {
			out := filepath.Join(t.TempDir(), fmt.Sprintf("out%d.raw", i))
			fillRandom(t, out, diskSize, uint64(30+i))
			got, code := l.run(append([]string{"restore", "--source", c.url, "--target", out, "--erase", "--noprompt"}, c.extra...)...)
			if code != 0 {
				t.Fatalf("restore from %s: exit %d\n%s", c.url, code, got)
			}
			if h := hashRange(t, out, 0, diskSize); h != want {
				t.Errorf("restore from %s: target sha256 %s, want %s", c.url, h, want)
			}
			if !strings.Contains(got, "Verified") || !strings.Contains(got, c.says) {
				t.Errorf("restore from %s: output lacks verification or %q:\n%s", c.url, c.says, got)
			}
			// Without a published checksum the download itself is unchecked:
			// the result must not read as if it were.
			if strings.Contains(c.says, "no published checksum") && !strings.Contains(got, "the download itself could not be checked") {
				t.Errorf("restore from %s: unchecked download reported as checked:\n%s", c.url, got)
			}
			if strings.Contains(got, "s3cret") {
				t.Errorf("the password from the URL was printed:\n%s", got)
			}
		})
	}

	info, code := l.run("info", "--source", "http://127.0.0.1:8080/disk.asr")
	if code != 0 || !strings.Contains(info, "GPT, 1 partition") {
		t.Errorf("asr info over HTTP: exit %d\n%s", code, info)
	}

	bad := []struct {
		name, url string
		extra     []string
		want      string
	}{
		{"404", "http://127.0.0.1:8080/missing.asr", nil, "the server answered 404 Not Found"},
		{"403", "http://127.0.0.1:8080/forbidden/disk.asr", nil, "the server answered 403 Forbidden"},
		{"503", "http://127.0.0.1:8080/broken/disk.asr", nil, "the server answered 503 Service"},
		{"redirect loop", "http://127.0.0.1:8080/loop/disk.asr", nil, "redirected 10 times"},
		{"html page", "http://127.0.0.1:8080/html/disk.asr", nil, "HTML page"},
		{"length disagrees", "http://127.0.0.1:8080/short.asr", nil, "its manifest says"},
		{"unknown CA", "https://127.0.0.1:8443/disk.asr", nil, "certificate"},
		{"no server", "http://127.0.0.1:8089/disk.asr", []string{"--retries", "1"}, "connection refused"},
	}
	for i, c := range bad {
		t.Run(c.name, func(t *testing.T) {
			out := filepath.Join(t.TempDir(), "target.raw")
			fillRandom(t, out, diskSize, uint64(50+i))
			before := hashRange(t, out, 0, diskSize)
			got, code := l.run(append([]string{"restore", "--source", c.url, "--target", out, "--erase", "--noprompt"}, c.extra...)...)
			if code != 1 || !strings.Contains(got, c.want) {
				t.Errorf("restore from %s: exit %d, want 1 and %q:\n%s", c.url, code, c.want, got)
			}
			if hashRange(t, out, 0, diskSize) != before {
				t.Errorf("refused restore from %s changed the target", c.url)
			}
		})
	}

	t.Run("raw with wrong checksum", func(t *testing.T) {
		out := filepath.Join(t.TempDir(), "target.raw")
		fillRandom(t, out, diskSize, 60)
		got, code := l.run("restore", "--source", "http://127.0.0.1:8080/disk.img", "--target", out, "--erase", "--noprompt",
			"--checksum", "sha256:"+strings.Repeat("ab", 32))
		if code != 1 || !strings.Contains(got, "the download's SHA-256 is") {
			t.Errorf("restore with a wrong --checksum: exit %d, want 1 naming the mismatch:\n%s", code, got)
		}
		if first := hashRange(t, out, 0, 1<<20); first != testenv.ZeroHash(1<<20) {
			t.Errorf("after a failed checksum the first chunk is not blank")
		}
	})
}

// faultServer serves one file and misbehaves once per request that crosses
// byte cut of the file: it drops the connection, or stalls until the client
// gives up. After `times` faults it serves normally. Range is honoured
// (http.ServeContent), so resumption can be checked.
type faultServer struct {
	path  string
	cut   int64
	stall bool
	mu    sync.Mutex
	times int
}

func (f *faultServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	file, err := os.Open(f.path)
	if err != nil || r.URL.Path != "/"+filepath.Base(f.path) {
		http.NotFound(w, r)
		return
	}
	defer file.Close()
	st, _ := file.Stat()
	http.ServeContent(&faultWriter{ResponseWriter: w, f: f, r: r, start: rangeStart(r)}, r, "", st.ModTime(), file)
}

func rangeStart(r *http.Request) int64 {
	var a int64
	fmt.Sscanf(r.Header.Get("Range"), "bytes=%d-", &a)
	return a
}

type faultWriter struct {
	http.ResponseWriter
	f     *faultServer
	r     *http.Request
	start int64
	n     int64
}

func (w *faultWriter) Write(p []byte) (int, error) {
	pos := w.start + w.n
	if pos <= w.f.cut && w.f.cut < pos+int64(len(p)) {
		w.f.mu.Lock()
		fault := w.f.times > 0
		if fault {
			w.f.times--
		}
		w.f.mu.Unlock()
		if fault {
			k := w.f.cut - pos
			w.ResponseWriter.Write(p[:k])
			w.ResponseWriter.(http.Flusher).Flush()
			if w.f.stall {
				<-w.r.Context().Done()
			}
			panic(http.ErrAbortHandler) // drops the connection mid-body
		}
	}
	n, err := w.ResponseWriter.Write(p)
	w.n += int64(n)
	return n, err
}

func TestE2EHTTPDroppedAndStalledConnections(t *testing.T) {
	l := newLab(t)
	dir := t.TempDir()
	disk := makeDisk(t, dir, diskSize, 21)
	want := hashRange(t, disk, 0, diskSize)
	img := scan(t, disk)
	cut := fileSize(t, img) / 2

	cases := []struct {
		name    string
		file    string
		stall   bool
		times   int
		args    []string
		success bool
		says    string
	}{
		{"prepared image, dropped twice", img, false, 2, nil, true, "dropped at byte"},
		{"raw image, dropped twice", disk, false, 2, nil, true, "dropped at byte"},
		{"prepared image, stalled once", img, true, 1, []string{"--timeout", "2"}, true, "dropped at byte"},
		{"server stalls for good", img, true, 1000, []string{"--timeout", "1", "--retries", "2"}, false, "the server sent nothing for 1s"},
	}
	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			fs := &faultServer{path: c.file, cut: cut, stall: c.stall, times: c.times}
			if c.file == disk {
				fs.cut = diskSize / 2
			}
			ln := l.listen(fmt.Sprintf("127.0.0.1:%d", 9000+i))
			srv := &http.Server{Handler: fs}
			go srv.Serve(ln)
			defer srv.Close()
			out := filepath.Join(t.TempDir(), "t.raw")
			fillRandom(t, out, diskSize, uint64(70+i))
			start := time.Now()
			got, code := l.run(append([]string{"restore", "--source", fmt.Sprintf("http://127.0.0.1:%d/%s", 9000+i, filepath.Base(c.file)),
				"--target", out, "--erase", "--noprompt"}, c.args...)...)
			took := time.Since(start)
			if c.success {
				if code != 0 {
					t.Fatalf("exit %d\n%s", code, got)
				}
				if h := hashRange(t, out, 0, diskSize); h != want {
					t.Errorf("target sha256 %s, want %s", h, want)
				}
			} else {
				if code != 1 {
					t.Fatalf("exit %d, want 1\n%s", code, got)
				}
				if took > 10*time.Second {
					t.Errorf("gave up after %v; want within --timeout (1 s) plus a margin", took)
				}
				if first := hashRange(t, out, 0, 1<<20); first != testenv.ZeroHash(1<<20) {
					t.Errorf("after giving up the first chunk is not blank")
				}
			}
			if !strings.Contains(got, c.says) {
				t.Errorf("output lacks %q:\n%s", c.says, got)
			}
		})
	}
}
