package main

import (
	"net"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/asrlinux/asr/internal/testenv"
)

// TestSecretsNeverPrinted runs the asr binary against presigned-style URLs
// (a password, S3, GCS and Azure signatures, a token) whose server fails
// in the ways net/http reports with the whole URL: refused, reset, an HTTP
// error, and a URL with no host. asr must fail, and neither its stdout nor
// its stderr may hold a secret. Everything stays on 127.0.0.1.
func TestSecretsNeverPrinted(t *testing.T) {
	bin := testenv.Asr(t)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/forbidden.asr":
			http.Error(w, "AccessDenied", http.StatusForbidden)
		case "/reset.asr":
			conn, _, err := w.(http.Hijacker).Hijack()
			if err == nil {
				conn.Close()
			}
		default:
			http.NotFound(w, r)
		}
	}))
	defer srv.Close()
	closed := func() string {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		return l.Addr().String()
	}()
	host := strings.TrimPrefix(srv.URL, "http://")
	secrets := []string{"hunter2", "SIGs3cr3t", "AKIAs3cr3t", "TOKs3cr3t", "GOOGs3cr3t", "AZs3cr3t"}
	query := "?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIAs3cr3t&X-Amz-Signature=SIGs3cr3t" +
		"&X-Goog-Signature=GOOGs3cr3t&sig=AZs3cr3t&token=TOKs3cr3t"
	for _, c := range []struct{ name, url, want string }{
		{"refused", "http://admin:hunter2@" + closed + "/lab.asr" + query, "connection refused"},
		{"reset", "http://admin:hunter2@" + host + "/reset.asr" + query, "reset.asr"},
		{"forbidden", "http://admin:hunter2@" + host + "/forbidden.asr" + query, "403"},
		{"notfound", "http://" + host + "/missing.img" + query, "404"},
		{"nohost", "http://admin:hunter2@/lab.asr" + query, "no host"},
	} {
		// The JSON log (--log-format json) quotes the URL in its started,
		// source and failed records: redacted as well.
		for _, format := range []string{"text", "json"} {
			t.Run(c.name+"/"+format, func(t *testing.T) {
				cmd := exec.Command(bin, "restore", "--source", c.url, "--file", filepath.Join(t.TempDir(), "new.img"),
					"--timeout", "5", "--retries", "1", "--log-format", format)
				var stdout, stderr strings.Builder
				cmd.Stdout, cmd.Stderr = &stdout, &stderr
				start := time.Now()
				err := cmd.Run()
				out := stdout.String() + stderr.String()
				if err == nil {
					t.Fatalf("asr restore --source %s succeeded; want a failure\n%s", c.name, out)
				}
				for _, s := range secrets {
					if strings.Contains(out, s) {
						t.Errorf("asr's output shows the secret %q:\n%s", s, out)
					}
				}
				if !strings.Contains(stderr.String(), c.want) || !strings.Contains(stderr.String(), "xxxxx") {
					t.Errorf("stderr = %q, want it to say %q and show the URL redacted (xxxxx)", stderr.String(), c.want)
				}
				if format == "json" {
					if recs := parseLog(t, stdout.String()); recs[len(recs)-1].Event != "failed" || !strings.Contains(recs[len(recs)-1].str("reason"), c.want) {
						t.Errorf("the JSON log does not end with a failed record saying %q:\n%s", c.want, stdout.String())
					}
				}
				if d := time.Since(start); d > 30*time.Second {
					t.Errorf("asr took %v to fail", d)
				}
			})
		}
	}
}
