package redact

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"
)

const hex64 = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

func TestURL(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"http://198.18.0.1/lab.asr", "http://198.18.0.1/lab.asr"},
		{"http://admin:hunter2@198.18.0.1/lab.asr", "http://admin:xxxxx@198.18.0.1/lab.asr"},
		{"https://admin@host/lab.asr", "https://admin@host/lab.asr"},
		{"http://u:p/w@d@host/x", "http://u:xxxxx@host/x"}, // a / in the password: net/url refuses it
		{"asr://198.18.0.1:7800", "asr://198.18.0.1:7800"},
		// OCI references: a digest's @ is no user info, a tag no password.
		{"oci://127.0.0.1:5000/lab/disk:v2", "oci://127.0.0.1:5000/lab/disk:v2"},
		{"oci://127.0.0.1:5000/lab/disk@sha256:" + hex64, "oci://127.0.0.1:5000/lab/disk@sha256:" + hex64},
		{"oci://r.example:5000/lab/disk:v2@sha256:" + hex64, "oci://r.example:5000/lab/disk:v2@sha256:" + hex64},
		{"oci://u:pw@r.example/lab/disk@sha256:" + hex64, "oci://u:xxxxx@r.example/lab/disk@sha256:" + hex64},
		{"oci://u:pw@r.example/lab/disk:v2", "oci://u:xxxxx@r.example/lab/disk:v2"},
		{"oci://u:pw@r.example/lab/disk@sha256:short", "oci://u:xxxxx@sha256:short"}, // not a digest: masks more, never less
		{"/srv/images/lab.asr", "/srv/images/lab.asr"},
		// S3 presigned (SigV4)
		{"https://b.s3.amazonaws.com/lab.asr?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIA%2F20261202%2Fus-east-1&X-Amz-Date=20261202T000000Z&X-Amz-Expires=3600&X-Amz-Security-Token=FwoGZX&X-Amz-SignedHeaders=host&X-Amz-Signature=abc123",
			"https://b.s3.amazonaws.com/lab.asr?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=xxxxx&X-Amz-Date=20261202T000000Z&X-Amz-Expires=3600&X-Amz-Security-Token=xxxxx&X-Amz-SignedHeaders=xxxxx&X-Amz-Signature=xxxxx"},
		// S3 SigV2
		{"https://b.s3.amazonaws.com/lab.asr?AWSAccessKeyId=AKIA&Expires=1&Signature=zz%2B",
			"https://b.s3.amazonaws.com/lab.asr?AWSAccessKeyId=xxxxx&Expires=1&Signature=xxxxx"},
		// GCS
		{"https://storage.googleapis.com/b/lab.asr?X-Goog-Algorithm=GOOG4-RSA-SHA256&X-Goog-Credential=sa%40p&X-Goog-Signature=0a1b",
			"https://storage.googleapis.com/b/lab.asr?X-Goog-Algorithm=GOOG4-RSA-SHA256&X-Goog-Credential=xxxxx&X-Goog-Signature=xxxxx"},
		// Azure SAS
		{"https://a.blob.core.windows.net/c/lab.asr?sv=2022-11-02&se=2026-12-03&sr=b&sp=r&sig=AbC%3D",
			"https://a.blob.core.windows.net/c/lab.asr?sv=2022-11-02&se=2026-12-03&sr=b&sp=r&sig=xxxxx"},
		{"http://h/x?token=t0p&v=1#frag", "http://h/x?token=xxxxx&v=1#frag"},
		{"http://h/x?TOKEN=t0p", "http://h/x?TOKEN=xxxxx"},
		{"http://u:pw@h/x?access_token=t", "http://u:xxxxx@h/x?access_token=xxxxx"},
	} {
		if got := URL(tc.in); got != tc.want {
			t.Errorf("URL(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

// secrets are the values TestText and the url.Error tests must never see.
var secrets = []string{"hunter2", "abc123", "AKIA", "FwoGZX", "0a1b", "AbC"}

func noSecret(t *testing.T, what, s string) {
	t.Helper()
	for _, sec := range secrets {
		if strings.Contains(s, sec) {
			t.Errorf("%s shows the secret %q: %s", what, sec, s)
		}
	}
}

func TestText(t *testing.T) {
	in := `cannot fetch "http://admin:hunter2@198.18.0.1/lab.asr" (from https://b/x?X-Amz-Signature=abc123), then https://h/y?sig=AbC: refused.`
	got := Text(in)
	noSecret(t, "Text", got)
	for _, keep := range []string{"198.18.0.1/lab.asr", "https://b/x?X-Amz-Signature=xxxxx", "cannot fetch", "then https://h/y?sig=xxxxx: refused."} {
		if !strings.Contains(got, keep) {
			t.Errorf("Text(%q) = %q, want it to keep %q", in, got, keep)
		}
	}
	if s := "no URL here: a:b@c"; Text(s) != s {
		t.Errorf("Text(%q) = %q, want it unchanged", s, Text(s))
	}
}

// TestURLError: net/http's errors print the URL they were given; Error
// redacts them and keeps the chain, so errors.As still finds *url.Error.
func TestURLError(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close() // nothing listens: the request fails with a *url.Error
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	raw := "http://admin:hunter2@" + addr + "/lab.asr?X-Amz-Credential=AKIA&X-Amz-Signature=abc123"
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, raw, nil)
	if err != nil {
		t.Fatal(err)
	}
	_, err = http.DefaultClient.Do(req)
	if err == nil {
		t.Fatal("request to a closed port succeeded")
	}
	if !strings.Contains(err.Error(), "abc123") {
		t.Fatalf("net/http's error no longer shows the query (%v): this test would not catch a leak", err)
	}
	wrapped := fmt.Errorf("source %s: %w", raw, err)
	got := Error(wrapped)
	noSecret(t, "Error", got.Error())
	var ue *url.Error
	if !errors.As(got, &ue) {
		t.Errorf("errors.As(Error(err), *url.Error) = false, want the chain kept")
	}
	if !strings.Contains(got.Error(), addr+"/lab.asr") {
		t.Errorf("Error = %q, want it to still name %s/lab.asr", got, addr)
	}
	if Error(nil) != nil {
		t.Errorf("Error(nil) != nil")
	}
}

func TestWriter(t *testing.T) {
	var b bytes.Buffer
	w := Writer(&b)
	msg := "asr: source http://u:hunter2@h/x?sig=AbC failed\n"
	n, err := fmt.Fprint(w, msg)
	if err != nil || n != len(msg) {
		t.Errorf("Write = %d, %v, want %d, nil", n, err, len(msg))
	}
	noSecret(t, "Writer", b.String())
	if !strings.Contains(b.String(), "http://u:xxxxx@h/x?sig=xxxxx failed") {
		t.Errorf("Writer wrote %q", b.String())
	}
}

func FuzzText(f *testing.F) {
	f.Add("http://u:p@h/x?sig=1&a=b")
	f.Add("x://@?&=#")
	f.Fuzz(func(t *testing.T, s string) {
		out := Text(s)
		if Text(out) != out {
			t.Errorf("Text is not idempotent on %q: %q then %q", s, out, Text(out))
		}
	})
}
