// Package trust decides whether a prepared image was signed by a key its
// user trusts, and makes such signatures.
//
// Keys and signatures are minisign's (aead.dev/minisign): an admin makes a
// key pair with `minisign -G`, asr signs with the secret key, and a machine
// that trusts the public key restores only what that key signed. What is
// signed is the image's 64-byte header (see internal/image): it holds the
// digest of the manifest, which holds the SHA-256 of every chunk.
//
// The package knows nothing of sources, targets or flags: callers hand it
// key files, the header bytes and the signature texts (image.ReadSignatures
// and the sources find them), and it answers with a status per signature and
// one verdict.
//
// Typical use, before anything is written:
//
//	keys, err := trust.Load(files, trust.DefaultDir)
//	...
//	if len(keys) > 0 {
//		signer, err := trust.CheckImage(keys, info.Header, info.Signatures, info.SignaturesErr)
//		if err != nil { refuse: err names every key ID found and why it did not count }
//		print("Signed by " + signer.String())
//	}
package trust

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"

	"aead.dev/minisign"
)

// DefaultDir is where a machine keeps the public keys it trusts, one
// minisign .pub file each.
const DefaultDir = "/etc/asr/trusted-keys"

// maxKeyFile bounds what is read of a key file: a minisign key file is
// about 100 (public) or 300 (secret) bytes.
const maxKeyFile = 16 << 10

// Key is a trusted public key.
type Key struct {
	ID   uint64
	Pub  minisign.PublicKey
	From string // the file it came from, for messages
}

// FormatID writes a key ID as minisign does: upper-case hex, no leading
// zeros ("minisign public key AE97026BB67DA5A").
func FormatID(id uint64) string { return fmt.Sprintf("%X", id) }

// LoadFile reads one minisign public key file.
func LoadFile(path string) (Key, error) {
	b, err := readSmall(path)
	if err != nil {
		return Key{}, fmt.Errorf("trusted key: %w", err)
	}
	var pub minisign.PublicKey
	if err := pub.UnmarshalText(b); err != nil {
		return Key{}, fmt.Errorf("trusted key %s is not a minisign public key (%v): give the .pub file `minisign -G` wrote", path, err)
	}
	return Key{ID: pub.ID(), Pub: pub, From: path}, nil
}

// LoadDir reads every *.pub file of dir, in name order. A missing dir holds
// no keys and is no error; a .pub file that is not a key is an error, since
// an admin who put it there meant it to count.
func LoadDir(dir string) ([]Key, error) {
	ents, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("trusted keys: %w", err)
	}
	var keys []Key
	for _, e := range ents {
		if e.IsDir() || !strings.HasSuffix(e.Name(), ".pub") {
			continue
		}
		k, err := LoadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			return nil, err
		}
		keys = append(keys, k)
	}
	return keys, nil
}

// Load reads the given key files and, if dir is not empty, the keys of dir.
// A key given twice counts once.
func Load(files []string, dir string) ([]Key, error) {
	var keys []Key
	for _, f := range files {
		k, err := LoadFile(f)
		if err != nil {
			return nil, err
		}
		keys = append(keys, k)
	}
	if dir != "" {
		dk, err := LoadDir(dir)
		if err != nil {
			return nil, err
		}
		keys = append(keys, dk...)
	}
	var out []Key
	for _, k := range keys {
		if !slices.ContainsFunc(out, func(o Key) bool { return o.ID == k.ID && o.Pub.Equal(k.Pub) }) {
			out = append(out, k)
		}
	}
	return out, nil
}

func readSmall(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxKeyFile+1))
	if err != nil {
		return nil, err
	}
	if len(b) > maxKeyFile {
		return nil, fmt.Errorf("%s is larger than %d bytes: not a minisign key", path, maxKeyFile)
	}
	return b, nil
}

// Status is what one signature is worth here.
type Status int

const (
	// Trusted: signed by a trusted key, and the signature matches the image.
	Trusted Status = iota
	// UntrustedKey: signed by a key that is not trusted here (its
	// signature cannot be checked without the key).
	UntrustedKey
	// BadSignature: the key is trusted but the signature does not match
	// this image (the image changed, or the signature came from another).
	BadSignature
	// Malformed: the text is not a minisign signature.
	Malformed
)

func (s Status) String() string {
	switch s {
	case Trusted:
		return "trusted, valid"
	case UntrustedKey:
		return "key not trusted here"
	case BadSignature:
		return "BAD SIGNATURE: does not match this image"
	case Malformed:
		return "not a minisign signature"
	}
	return fmt.Sprintf("status(%d)", int(s))
}

// Result is the verdict on one signature.
type Result struct {
	KeyID  uint64 // 0 when Malformed
	Status Status
	// Comment is the signature's trusted comment; it is authentic only
	// when Status is Trusted.
	Comment string
	Key     *Key // the trusted key that verified it
}

// String says who signed: "key ID 1A2B3C4D5E6F7A8B (trusted)".
func (r Result) String() string {
	if r.Status == Malformed {
		return "a malformed signature"
	}
	if r.Status == Trusted {
		return "key ID " + FormatID(r.KeyID) + " (trusted)"
	}
	return "key ID " + FormatID(r.KeyID) + " (" + r.Status.String() + ")"
}

// Verify checks every signature of an image, whose header (its first 64
// bytes) is the signed message, against keys, and returns one result per
// signature, in order.
func Verify(keys []Key, header []byte, sigs [][]byte) []Result {
	res := make([]Result, 0, len(sigs))
	for _, text := range sigs {
		var s minisign.Signature
		if err := s.UnmarshalText(text); err != nil {
			res = append(res, Result{Status: Malformed})
			continue
		}
		r := Result{KeyID: s.KeyID, Status: UntrustedKey}
		for i := range keys {
			if keys[i].ID != s.KeyID {
				continue
			}
			if minisign.Verify(keys[i].Pub, header, text) {
				r.Status, r.Key, r.Comment = Trusted, &keys[i], s.TrustedComment
				break
			}
			r.Status = BadSignature
		}
		res = append(res, r)
	}
	return res
}

// Error is why an image is refused: no signature by a trusted key matches
// it. It names every signature found, so the message says which key signed
// what was refused.
type Error struct {
	Found   []Result // empty: the image is not signed
	Trusted []uint64 // the IDs of the keys trusted here
}

func (e *Error) Error() string {
	want := make([]string, len(e.Trusted))
	for i, id := range e.Trusted {
		want[i] = FormatID(id)
	}
	trusted := "key ID " + strings.Join(want, ", ")
	if len(want) > 1 {
		trusted = "key IDs " + strings.Join(want, ", ")
	}
	if len(e.Found) == 0 {
		return "the image is not signed, and only images signed by " + trusted +
			" are trusted here: sign it with `asr sign --source IMAGE --key KEY`"
	}
	found := make([]string, len(e.Found))
	for i, r := range e.Found {
		found[i] = r.String()
	}
	return "the image is signed by " + strings.Join(found, ", ") + ", but by no key trusted here (trusted: " + trusted +
		"): restore only images their owner signed, or trust the signer's key"
}

// Unsigned reports whether the image had no signature at all.
func (e *Error) Unsigned() bool { return len(e.Found) == 0 }

// ErrNoKeys is returned by Check when no key is trusted: with nothing to
// check against there is no verdict, and callers check only when keys exist.
var ErrNoKeys = errors.New("no trusted keys")

// Check returns the first signature by a trusted key that matches the
// image, or an *Error naming what was found.
func Check(keys []Key, header []byte, sigs [][]byte) (Result, error) {
	if len(keys) == 0 {
		return Result{}, ErrNoKeys
	}
	res := Verify(keys, header, sigs)
	for _, r := range res {
		if r.Status == Trusted {
			return r, nil
		}
	}
	ids := make([]uint64, 0, len(keys))
	for _, k := range keys {
		if !slices.Contains(ids, k.ID) {
			ids = append(ids, k.ID)
		}
	}
	sort.Slice(ids, func(a, b int) bool { return ids[a] < ids[b] })
	return Result{}, &Error{Found: res, Trusted: ids}
}

// ErrNotPrepared says a source carries no signatures because it is not a
// prepared image (a raw image or a disk); when a signature is required it
// is refused, unless the caller exempts it (a local clone).
var ErrNotPrepared = errors.New("only prepared images carry signatures: make one with asr imagescan and sign it with asr sign")

// CheckImage is Check for what a source found: header is nil for a source
// that is not a prepared image, and readErr says why its signatures could
// not be read (a damaged trailer, a web server without range requests).
// Both are refusals: an image whose signatures cannot be read is not
// trusted.
func CheckImage(keys []Key, header []byte, sigs [][]byte, readErr error) (Result, error) {
	switch {
	case len(keys) == 0:
		return Result{}, ErrNoKeys
	case header == nil:
		return Result{}, ErrNotPrepared
	case readErr != nil:
		return Result{}, fmt.Errorf("cannot check the image's signatures: %w", readErr)
	}
	return Check(keys, header, sigs)
}

// SignerIDs returns the key IDs that signatures claim, in order, without
// checking anything: what `asr browse` and a server's table show. Malformed
// signatures are skipped.
func SignerIDs(sigs [][]byte) []uint64 {
	var ids []uint64
	for _, text := range sigs {
		var s minisign.Signature
		if s.UnmarshalText(text) == nil {
			ids = append(ids, s.KeyID)
		}
	}
	return ids
}

// IDList names key IDs for a message: "key ID 1A2B" or "key IDs 1A2B, 3C4D".
func IDList(ids []uint64) string {
	s := make([]string, len(ids))
	for i, id := range ids {
		s[i] = FormatID(id)
	}
	if len(s) == 1 {
		return "key ID " + s[0]
	}
	return "key IDs " + strings.Join(s, ", ")
}
