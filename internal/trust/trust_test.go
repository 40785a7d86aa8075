package trust

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"aead.dev/minisign"

	"github.com/asrlinux/asr/internal/image"
)

// header returns a valid image header for a made-up manifest.
func header(seed string) ([]byte, image.Digest) {
	d := image.Digest(sha256.Sum256([]byte(seed)))
	return image.MarshalHeader(image.Header{Version: image.Version, ManifestLen: 4000, ManifestDigest: d}), d
}

type pair struct {
	key  Key
	priv minisign.PrivateKey
}

func newPair(t *testing.T) pair {
	t.Helper()
	pub, priv, err := minisign.GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	return pair{Key{ID: pub.ID(), Pub: pub, From: "test"}, priv}
}

func (p pair) sign(h []byte, d image.Digest) []byte {
	return Sign(p.priv, h, d, time.Unix(1700000000, 0))
}

func TestCheck(t *testing.T) {
	a, b := newPair(t), newPair(t)
	h, d := header("image one")
	h2, d2 := header("image two")
	sigA := a.sign(h, d)
	for _, tc := range []struct {
		name     string
		keys     []Key
		sigs     [][]byte
		signer   uint64   // the trusted signer, 0 if refused
		statuses []Status // per signature
		msg      []string // in the refusal
	}{
		{"signed by the trusted key", []Key{a.key}, [][]byte{sigA}, a.key.ID, []Status{Trusted}, nil},
		{"one of two keys trusted", []Key{b.key}, [][]byte{sigA, b.sign(h, d)}, b.key.ID, []Status{UntrustedKey, Trusted}, nil},
		{"unsigned", []Key{a.key}, nil, 0, nil,
			[]string{"not signed", FormatID(a.key.ID), "asr sign"}},
		{"signed by another key", []Key{b.key}, [][]byte{sigA}, 0, []Status{UntrustedKey},
			[]string{"signed by key ID " + FormatID(a.key.ID) + " (key not trusted here)", "no key trusted here (trusted: key ID " + FormatID(b.key.ID) + ")"}},
		{"signature of another image", []Key{a.key}, [][]byte{a.sign(h2, d2)}, 0, []Status{BadSignature},
			[]string{FormatID(a.key.ID) + " (BAD SIGNATURE: does not match this image)"}},
		{"malformed", []Key{a.key}, [][]byte{[]byte("untrusted comment: hi\nnot base64\n")}, 0, []Status{Malformed},
			[]string{"a malformed signature"}},
		{"two trusted keys named", []Key{a.key, b.key}, nil, 0, nil, []string{"key IDs "}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res := Verify(tc.keys, h, tc.sigs)
			if len(res) != len(tc.statuses) {
				t.Fatalf("Verify gave %d results, want %d", len(res), len(tc.statuses))
			}
			for i, r := range res {
				if r.Status != tc.statuses[i] {
					t.Errorf("signature %d: status %v, want %v", i, r.Status, tc.statuses[i])
				}
			}
			signer, err := Check(tc.keys, h, tc.sigs)
			if tc.signer != 0 {
				if err != nil || signer.KeyID != tc.signer || signer.Status != Trusted {
					t.Fatalf("Check = %v, %v, want key %s trusted", signer, err, FormatID(tc.signer))
				}
				if want := "key ID " + FormatID(tc.signer) + " (trusted)"; signer.String() != want {
					t.Errorf("signer.String() = %q, want %q", signer.String(), want)
				}
				if !strings.Contains(signer.Comment, "asr image digest "+d.String()) {
					t.Errorf("trusted comment %q does not name the digest", signer.Comment)
				}
				return
			}
			var te *Error
			if !errors.As(err, &te) {
				t.Fatalf("Check = %v, %v, want a *trust.Error", signer, err)
			}
			if te.Unsigned() != (len(tc.sigs) == 0) {
				t.Errorf("Unsigned() = %v with %d signatures", te.Unsigned(), len(tc.sigs))
			}
			for _, m := range tc.msg {
				if !strings.Contains(err.Error(), m) {
					t.Errorf("refusal %q does not say %q", err, m)
				}
			}
		})
	}
	if _, err := Check(nil, h, [][]byte{sigA}); !errors.Is(err, ErrNoKeys) {
		t.Errorf("Check with no keys = %v, want ErrNoKeys", err)
	}
}

// TestTamperedHeader: a signature covers every byte of the header, so a
// header naming another manifest (the digest of a changed image) fails.
func TestTamperedHeader(t *testing.T) {
	a := newPair(t)
	h, d := header("image")
	sig := a.sign(h, d)
	for i := range h {
		c := bytes.Clone(h)
		c[i] ^= 0x80
		if r := Verify([]Key{a.key}, c, [][]byte{sig}); r[0].Status != BadSignature {
			t.Fatalf("header byte %d changed: status %v, want BadSignature", i, r[0].Status)
		}
	}
}

func writeFile(t *testing.T, p string, b []byte) string {
	t.Helper()
	if err := os.WriteFile(p, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func pubText(t *testing.T, k Key) []byte {
	b, err := k.Pub.MarshalText()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestLoad(t *testing.T) {
	a, b := newPair(t), newPair(t)
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "a.pub"), pubText(t, a.key))
	writeFile(t, filepath.Join(dir, "b.pub"), pubText(t, b.key))
	writeFile(t, filepath.Join(dir, "README"), []byte("not a key, and not named .pub: ignored"))
	keys, err := LoadDir(dir)
	if err != nil || len(keys) != 2 || keys[0].ID != a.key.ID || keys[1].ID != b.key.ID {
		t.Fatalf("LoadDir = %v, %v, want a and b", keys, err)
	}
	// A key given as a file and in the directory counts once.
	keys, err = Load([]string{filepath.Join(dir, "a.pub")}, dir)
	if err != nil || len(keys) != 2 {
		t.Errorf("Load(a.pub, dir) = %d keys, %v, want 2", len(keys), err)
	}
	if keys, err := LoadDir(filepath.Join(dir, "missing")); keys != nil || err != nil {
		t.Errorf("LoadDir(missing) = %v, %v, want nil, nil", keys, err)
	}
	bad := writeFile(t, filepath.Join(dir, "c.pub"), []byte("untrusted comment: oops\nnot a key\n"))
	if _, err := LoadDir(dir); err == nil || !strings.Contains(err.Error(), bad) {
		t.Errorf("LoadDir with a bad .pub = %v, want an error naming %s", err, bad)
	}
	if _, err := LoadFile(filepath.Join(dir, "nothere.pub")); err == nil {
		t.Error("LoadFile of a missing file succeeded")
	}
}

func TestAddRemove(t *testing.T) {
	a, b := newPair(t), newPair(t)
	h, d := header("image")
	sigs, err := Add(nil, a.sign(h, d))
	if err != nil {
		t.Fatal(err)
	}
	sigs, _ = Add(sigs, b.sign(h, d))
	newer := Sign(a.priv, h, d, time.Unix(1800000000, 0))
	sigs, _ = Add(sigs, newer)
	if ids := SignerIDs(sigs); len(ids) != 2 || ids[0] != a.key.ID || ids[1] != b.key.ID {
		t.Fatalf("after re-signing with a: signers %x, want [a b]", ids)
	}
	if !bytes.Equal(sigs[0], newer) {
		t.Error("re-signing with the same key did not replace its signature")
	}
	sigs, n := Remove(sigs, a.key.ID)
	if n != 1 || len(sigs) != 1 || SignerIDs(sigs)[0] != b.key.ID {
		t.Errorf("Remove(a) = %d removed, %d left, want 1, 1 (b)", n, len(sigs))
	}
	var full [][]byte
	for range image.MaxSignatures {
		full, _ = Add(full, newPair(t).sign(h, d))
	}
	if _, err := Add(full, a.sign(h, d)); !errors.Is(err, ErrFull) {
		t.Errorf("a ninth signature: %v, want ErrFull", err)
	}
	if _, err := Add(nil, []byte("junk")); err == nil {
		t.Error("Add accepted junk")
	}
}

func TestParseID(t *testing.T) {
	for s, want := range map[string]uint64{"DF795E3C813A2BB6": 0xDF795E3C813A2BB6, "df795e3c813a2bb6": 0xDF795E3C813A2BB6, "1": 1} {
		if got, err := ParseID(s); err != nil || got != want {
			t.Errorf("ParseID(%q) = %X, %v, want %X", s, got, err, want)
		}
	}
	for _, s := range []string{"", "xyz", "DF795E3C813A2BB6A", "+1", "12 "} {
		if _, err := ParseID(s); err == nil {
			t.Errorf("ParseID(%q) succeeded", s)
		}
	}
}

func TestLoadSecretKey(t *testing.T) {
	a := newPair(t)
	dir := t.TempDir()
	plain, err := a.priv.MarshalText()
	if err != nil {
		t.Fatal(err)
	}
	p := writeFile(t, filepath.Join(dir, "plain.key"), plain)
	k, err := LoadSecretKey(p, Password{}) // no password needed, none asked
	if err != nil || k.ID() != a.key.ID {
		t.Fatalf("LoadSecretKey(unencrypted) = %v, %v", k.ID(), err)
	}
	pub := writeFile(t, filepath.Join(dir, "a.pub"), pubText(t, a.key))
	if _, err := LoadSecretKey(pub, Password{}); err == nil || !strings.Contains(err.Error(), "is a public key") {
		t.Errorf("LoadSecretKey(public key) = %v, want 'is a public key'", err)
	}
	junk := writeFile(t, filepath.Join(dir, "junk.key"), []byte("hello"))
	if _, err := LoadSecretKey(junk, Password{}); err == nil {
		t.Error("LoadSecretKey(junk) succeeded")
	}
}

// TestPassword: the file wins over the environment, which wins over the
// prompt; with none of them an encrypted key is refused with what to do.
func TestPassword(t *testing.T) {
	dir := t.TempDir()
	f := writeFile(t, filepath.Join(dir, "pw"), []byte("from file\r\nsecond line\n"))
	prompt := func(string) (string, error) { return "from prompt", nil }
	for _, tc := range []struct {
		pw   Password
		want string
	}{
		{Password{File: f, Env: "from env", Prompt: prompt}, "from file"},
		{Password{Env: "from env", Prompt: prompt}, "from env"},
		{Password{Prompt: prompt}, "from prompt"},
	} {
		if got, err := tc.pw.get("k"); err != nil || got != tc.want {
			t.Errorf("get = %q, %v, want %q", got, err, tc.want)
		}
	}
	if _, err := (Password{}).get("k"); err == nil || !strings.Contains(err.Error(), "--password-file") {
		t.Errorf("no password source: %v, want a hint at --password-file", err)
	}
}
