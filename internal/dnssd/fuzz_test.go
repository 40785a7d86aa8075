package dnssd

import (
	"encoding/hex"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/asrlinux/asr/internal/safetext"
)

// txtStrings splits TXT RDATA as it comes off the wire: strings of one
// length byte and that many bytes (RFC 1035 section 3.3.14).
func txtStrings(b []byte) []string {
	var out []string
	for len(b) > 0 {
		n := int(b[0])
		b = b[1:]
		n = min(n, len(b))
		out = append(out, string(b[:n]))
		b = b[n:]
	}
	return out
}

// FuzzParseTXT: whatever a host on the link puts in its TXT record, the
// image name parseTXT yields is safe to print and bounded, the digest is
// 64 hex digits or nothing, and the first image= is the one taken.
func FuzzParseTXT(f *testing.F) {
	d := strings.Repeat("ab", 32)
	for _, fields := range [][]string{
		{"txtvers=1", "image=lab.asr", "digest=" + d},
		{"image=\x1b[2Jforged\r\nline", "digest=zz"},
		{"IMAGE=first", "image=second", "Digest=" + strings.ToUpper(d)},
	} {
		var b []byte
		for _, s := range fields {
			b = append(append(b, byte(len(s))), s...)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		fields := txtStrings(b)
		image, digest, signer := parseTXT(fields)
		if signer != "" && !validSigners(signer) {
			t.Fatalf("signer %q is not a list of key IDs", signer)
		}
		if safetext.Line(image) != image {
			t.Fatalf("image %q holds characters a console would act on", image)
		}
		if utf8.RuneCountInString(image) > 12*maxImageName {
			t.Fatalf("image of %d runes", utf8.RuneCountInString(image))
		}
		if digest != "" {
			if raw, err := hex.DecodeString(digest); err != nil || len(raw) != 32 || digest != strings.ToLower(digest) {
				t.Fatalf("digest %q is not 64 lowercase hex digits", digest)
			}
		}
		for _, f := range fields {
			k, v, _ := strings.Cut(f, "=")
			if strings.EqualFold(k, "image") {
				if safetext.Line(v) == v && utf8.RuneCountInString(v) <= maxImageName && image != v {
					t.Fatalf("first image=%q, parseTXT took %q", v, image)
				}
				break
			}
		}
	})
}
