package appliance

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"aead.dev/minisign"

	"github.com/asrlinux/asr/internal/dnssd"
	"github.com/asrlinux/asr/internal/trust"
)

func newKey(t *testing.T) trust.Key {
	t.Helper()
	pub, _, err := minisign.GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	return trust.Key{ID: pub.ID(), Pub: pub}
}

// writeKeys puts keys where the initramfs has them, under root.
func writeKeys(t *testing.T, root string, keys ...trust.Key) {
	t.Helper()
	dir := filepath.Join(root, trust.DefaultDir)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, k := range keys {
		b, _ := k.Pub.MarshalText()
		if err := os.WriteFile(filepath.Join(dir, trust.FormatID(k.ID)+".pub"), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func TestLoadTrustedKeys(t *testing.T) {
	a, b := newKey(t), newKey(t)
	var log strings.Builder
	logf := func(f string, args ...any) { log.WriteString(strings.TrimSpace(fmt.Sprintf(f, args...)) + "\n") }

	// No directory: an appliance built without TRUSTED_KEYS checks nothing, and says so.
	keys, err := LoadTrustedKeys(t.TempDir(), logf)
	if err != nil || len(keys) != 0 || !strings.Contains(log.String(), "without a signature check") {
		t.Errorf("LoadTrustedKeys(no dir) = %d keys, %v; console %q", len(keys), err, log.String())
	}

	log.Reset()
	root := t.TempDir()
	writeKeys(t, root, a, b)
	keys, err = LoadTrustedKeys(root, logf)
	if err != nil || len(keys) != 2 {
		t.Fatalf("LoadTrustedKeys = %d keys, %v; want 2", len(keys), err)
	}
	for _, k := range []trust.Key{a, b} {
		if !strings.Contains(log.String(), trust.FormatID(k.ID)) {
			t.Errorf("the console does not name trusted key ID %s: %q", trust.FormatID(k.ID), log.String())
		}
	}

	// A damaged key stops the boot rather than restoring unchecked.
	bad := filepath.Join(root, trust.DefaultDir, "bad.pub")
	os.WriteFile(bad, []byte("untrusted comment: x\nnot a key\n"), 0o644)
	if keys, err := LoadTrustedKeys(root, logf); err == nil || !strings.Contains(err.Error(), "bad.pub") {
		t.Errorf("LoadTrustedKeys with a damaged key = %d keys, %v; want an error naming bad.pub", len(keys), err)
	}
}

func TestLeaveOutUntrusted(t *testing.T) {
	trusted, foreign := newKey(t), newKey(t)
	tid, fid := trust.FormatID(trusted.ID), trust.FormatID(foreign.ID)
	srv := func(name string, last byte, signer string) dnssd.Service {
		return dnssd.Service{Instance: name, Addr: net.IPv4(198, 18, 0, last), Port: 7800, Image: name + ".asr", Signer: signer}
	}
	good := srv("good", 1, tid)
	rotated := srv("rotated", 2, fid+","+tid) // signed by two keys, one trusted
	unsigned := srv("unsigned", 3, "")
	rogue := srv("rogue", 4, fid)
	padded := srv("padded", 5, "000"+tid) // leading zeros name the same key

	keys := []trust.Key{trusted}
	kept, left := LeaveOutUntrusted(keys, []dnssd.Service{good, rotated, unsigned, rogue, padded})
	var names []string
	for _, s := range kept {
		names = append(names, s.Instance)
	}
	if got := strings.Join(names, " "); got != "good rotated padded" {
		t.Errorf("kept %q, want good rotated padded", got)
	}
	want := []string{
		`"unsigned" at asr://198.18.0.3:7800 serving unsigned.asr (unsigned)`,
		`"rogue" at asr://198.18.0.4:7800 serving rogue.asr (signed by ` + fid + `, not trusted here)`,
	}
	if strings.Join(left, "\n") != strings.Join(want, "\n") {
		t.Errorf("left out:\n%s\nwant:\n%s", strings.Join(left, "\n"), strings.Join(want, "\n"))
	}

	// No keys: nothing is left out.
	if kept, left := LeaveOutUntrusted(nil, []dnssd.Service{unsigned, rogue}); len(kept) != 2 || len(left) != 0 {
		t.Errorf("without keys: kept %d, left out %q; want all kept", len(kept), left)
	}

	// The choice: the rogue server does not make it ambiguous; with only
	// rogues, the refusal lists them; a asr.image= naming a rogue's image
	// says it was left out.
	var log strings.Builder
	logf := func(f string, args ...any) { log.WriteString(fmt.Sprintf(f, args...) + "\n") }
	got, err := chooseTrusted("", keys, []dnssd.Service{unsigned, good, rogue}, logf)
	if err != nil || got.Instance != "good" {
		t.Errorf("chooseTrusted(good among rogues) = %q, %v; want good", got.Instance, err)
	}
	if !strings.Contains(log.String(), "left out: "+want[0]) || !strings.Contains(log.String(), "left out: "+want[1]) {
		t.Errorf("the console does not list the servers left out:\n%s", log.String())
	}
	_, err = chooseTrusted("", keys, []dnssd.Service{unsigned, rogue}, logf)
	if err == nil {
		t.Fatal("chooseTrusted(only rogues) chose one")
	}
	for _, w := range append([]string{"no source", "none serves an image signed by a key trusted here", "key ID " + tid}, want...) {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("refusal %q does not say %q", err, w)
		}
	}
	_, err = chooseTrusted("rogue", keys, []dnssd.Service{good, rogue}, logf)
	if err == nil || !strings.Contains(err.Error(), "asr.image=rogue") || !strings.Contains(err.Error(), "left out, not signed by a key trusted here: "+want[1]) {
		t.Errorf("chooseTrusted(asr.image=rogue) = %v; want a refusal saying the rogue was left out", err)
	}
}
