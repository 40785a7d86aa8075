package dnssd

import (
	"encoding/hex"
	"strings"

	"github.com/asrlinux/asr/internal/safetext"
)

// maxImageName bounds the image name taken from a TXT record: the name of a
// file, shown on a console and matched against asr.image=.
const maxImageName = 255

// parseTXT reads a service's TXT record (RFC 6763 section 6): image= is the
// image's name, digest= its manifest's SHA-256 in hex. The record comes from
// any host on the link, so what it yields is safe to print: the image name
// is escaped and bounded, a digest that is not 64 hex digits is dropped. As
// the RFC says, a key given twice counts the first time, and keys are
// compared without regard to case. signer= lists the key IDs that signed
// the image (hex, comma-separated); a value that is not such a list is
// dropped.
func parseTXT(fields []string) (image, digest, signer string) {
	var haveImage, haveDigest, haveSigner bool
	for _, f := range fields {
		k, v, _ := strings.Cut(f, "=")
		switch strings.ToLower(k) {
		case "image":
			if !haveImage {
				image, haveImage = safetext.Short(v, maxImageName), true
			}
		case "digest":
			if !haveDigest {
				haveDigest = true
				if b, err := hex.DecodeString(v); err == nil && len(b) == 32 {
					digest = strings.ToLower(v)
				}
			}
		case "signer":
			if !haveSigner {
				haveSigner = true
				if validSigners(v) {
					signer = strings.ToUpper(v)
				}
			}
		}
	}
	return image, digest, signer
}

// validSigners says whether v is a list of at most 8 key IDs: 1 to 16 hex
// digits each, separated by commas.
func validSigners(v string) bool {
	ids := strings.Split(v, ",")
	if len(ids) > 8 {
		return false
	}
	for _, id := range ids {
		if len(id) == 0 || len(id) > 16 {
			return false
		}
		for _, c := range id {
			if !strings.ContainsRune("0123456789abcdefABCDEF", c) {
				return false
			}
		}
	}
	return true
}
