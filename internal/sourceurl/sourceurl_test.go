package sourceurl

import (
	"context"
	"errors"
	"net"
	"strings"
	"testing"
	"time"
)

func TestCheck(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{"/srv/lab.asr", ""},
		{"lab.img", ""},
		{"./a://b", ""}, // a path that holds ://
		{"http://198.18.0.1/lab.asr", ""},
		{"HTTPS://h/lab.asr", ""},
		{"asr://198.18.0.1", ""},
		{"asr://198.18.0.1:7801/", ""},
		{"", "empty"},
		{"asr://", "no host: give asr://HOST[:PORT]"},
		{"asr://:7800", "no host"},
		{"asr://h:0", "bad port"},
		{"asr://h/lab.asr", "a path (/lab.asr) is not used"},
		{"http://", "no host: give http(s)://HOST/IMAGE"},
		{"https:///x", "no host"},
		{"http://h:x/y", "not a valid URL"},
		{"ftp://h/x", "unknown scheme ftp://: give a local path or an http://, https://"},
		{"http://u:hunter2@/x", "source http://u:xxxxx@/x: no host"},
		{"oci://198.18.0.1:5000/lab/disk:v2", ""},
		{"OCI://registry.example.com/lab/disk@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef", ""},
		{"oci://198.18.0.1:5000/lab/disk", "source oci://198.18.0.1:5000/lab/disk: no tag or digest"},
		{"oci://u:hunter2@r.example/lab/disk:v1", "source oci://u:xxxxx@r.example/lab/disk:v1: not a valid OCI reference"},
	} {
		err := Check(c.in)
		if c.want == "" && err != nil || c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want)) {
			t.Errorf("Check(%q) = %v, want %q", c.in, err, c.want)
		}
		if err != nil && strings.Contains(err.Error(), "hunter2") {
			t.Errorf("Check(%q) = %v: shows the password", c.in, err)
		}
	}
}

func TestCheckNetwork(t *testing.T) {
	for _, s := range []string{"/srv/lab.asr", "ftp://h/x", "label:ASRDATA"} {
		if err := CheckNetwork(s); !errors.Is(err, ErrUnknownScheme) {
			t.Errorf("CheckNetwork(%q) = %v, want ErrUnknownScheme", s, err)
		}
	}
	if err := CheckNetwork("asr://h"); err != nil {
		t.Errorf("CheckNetwork(asr://h) = %v", err)
	}
	// The lists start as below; a new network scheme adds itself at the end.
	if got, want := NetworkURLs(), "an http://, https://"; !strings.HasPrefix(got, want) || !strings.HasSuffix(got, " URL") || !strings.Contains(got, " or ") {
		t.Errorf("NetworkURLs() = %q, want %q..., or ... URL", got, want)
	}
	if got, want := NetworkExamples("asr.source="), "asr.source=http://HOST/IMAGE, asr.source=https://HOST/IMAGE"; !strings.HasPrefix(got, want) {
		t.Errorf("NetworkExamples = %q, want %q...", got, want)
	}
}

// TestTable: every entry is complete, prefixes are distinct lower-case
// URL schemes, and the help names every network scheme.
func TestTable(t *testing.T) {
	seen := map[string]bool{}
	help := Help("")
	locals := 0
	for _, sc := range Schemes() {
		if sc.Check == nil || sc.Redact == nil || sc.Open == nil {
			t.Errorf("scheme %q lacks a function: %+v", sc.Prefix, sc)
		}
		if sc.Prefix == "" {
			locals++
			continue
		}
		if seen[sc.Prefix] || !strings.HasSuffix(sc.Prefix, "://") || strings.ToLower(sc.Prefix) != sc.Prefix {
			t.Errorf("prefix %q: duplicate, not lower case, or not SCHEME://", sc.Prefix)
		}
		seen[sc.Prefix] = true
		if !sc.Network || sc.Example == "" || !strings.HasPrefix(sc.Example, sc.Prefix) {
			t.Errorf("scheme %q: a URL scheme is a network source with an example of its own", sc.Prefix)
		}
		// An entry without help is described by the one before (https by http(s)).
		if name := strings.TrimSuffix(sc.Prefix, "://"); sc.Help != "" && !strings.Contains(help, name) {
			t.Errorf("Help() does not mention %s", name)
		}
		if Lookup(sc.Example).Prefix != sc.Prefix {
			t.Errorf("Lookup(%q) is not its own scheme", sc.Example)
		}
	}
	if locals != 1 {
		t.Errorf("%d local entries, want 1", locals)
	}
}

// TestOpenRedacts: Open's errors and log lines never show a secret, though
// the transports below quote the URL whole.
func TestOpenRedacts(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, s := range []string{
		"http://u:hunter2@" + addr + "/lab.asr?X-Amz-Signature=s3cr3t",
		"http://" + addr + "/lab.img?sig=s3cr3t&token=s3cr3t",
	} {
		var logged strings.Builder
		_, err := Open(ctx, s, Options{Timeout: 2 * time.Second, Retries: 1,
			Log: func(f string, a ...any) { logged.WriteString(f) }})
		if err == nil {
			t.Fatalf("Open(%s) on a closed port succeeded", s)
		}
		if msg := err.Error() + logged.String(); strings.Contains(msg, "hunter2") || strings.Contains(msg, "s3cr3t") {
			t.Errorf("Open: %s: shows a secret", msg)
		}
		if !strings.Contains(err.Error(), addr) {
			t.Errorf("Open: %v: want it to name the server %s", err, addr)
		}
	}
}
