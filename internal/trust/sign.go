package trust

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"

	"aead.dev/minisign"
	"golang.org/x/term"

	"github.com/asrlinux/asr/internal/image"
)

// PasswordEnv is the environment variable that may hold a secret key's
// password, for automation.
const PasswordEnv = "ASR_KEY_PASSWORD"

// Password says where a secret key's password comes from. It is asked only
// for a key that is encrypted (`minisign -G -W` makes keys without one).
type Password struct {
	File   string // --password-file: its first line is the password
	Env    string // the value of ASR_KEY_PASSWORD ("" when unset)
	Prompt func(prompt string) (string, error)
}

// get returns the password: from File, else Env, else Prompt.
func (p Password) get(keyPath string) (string, error) {
	switch {
	case p.File != "":
		b, err := readSmall(p.File)
		if err != nil {
			return "", fmt.Errorf("--password-file: %w", err)
		}
		line, _, _ := strings.Cut(string(b), "\n")
		return strings.TrimSuffix(line, "\r"), nil
	case p.Env != "":
		return p.Env, nil
	case p.Prompt != nil:
		return p.Prompt("Password for " + keyPath + ": ")
	}
	return "", fmt.Errorf("secret key %s is encrypted: give its password with --password-file FILE or %s, or run on a terminal", keyPath, PasswordEnv)
}

// TerminalPrompt returns a prompt that reads a password from the terminal
// tty without echo, writing the prompt to w; nil if tty is not a terminal.
func TerminalPrompt(tty *os.File, w io.Writer) func(string) (string, error) {
	if tty == nil || !term.IsTerminal(int(tty.Fd())) {
		return nil
	}
	return func(prompt string) (string, error) {
		fmt.Fprint(w, prompt)
		b, err := term.ReadPassword(int(tty.Fd()))
		fmt.Fprintln(w)
		if err != nil {
			return "", fmt.Errorf("reading the password: %w", err)
		}
		return string(b), nil
	}
}

// LoadSecretKey reads a minisign secret key file, decrypting it with the
// password from pw when it is encrypted. Decrypting takes a few seconds and
// up to 1 GiB of memory: minisign's key derivation is made to be slow.
func LoadSecretKey(path string, pw Password) (minisign.PrivateKey, error) {
	b, err := readSmall(path)
	if err != nil {
		return minisign.PrivateKey{}, fmt.Errorf("secret key: %w", err)
	}
	if bytes.Contains(b, []byte("public key")) {
		return minisign.PrivateKey{}, fmt.Errorf("%s is a public key: sign with the secret key (minisign.key), and trust the public one", path)
	}
	if !minisign.IsEncrypted(b) {
		var k minisign.PrivateKey
		if err := k.UnmarshalText(b); err != nil {
			return k, fmt.Errorf("%s is not a minisign secret key (%v): give the .key file `minisign -G` wrote", path, err)
		}
		return k, nil
	}
	p, err := pw.get(path)
	if err != nil {
		return minisign.PrivateKey{}, err
	}
	k, err := minisign.DecryptKey(p, b)
	if err != nil {
		return k, fmt.Errorf("secret key %s: wrong password, or not a minisign secret key", path)
	}
	return k, nil
}

// Sign signs an image's header (its first image.HeaderSize bytes) with key,
// in minisign's default (pre-hashed) format, which `minisign -V` checks on a
// file holding exactly those bytes. The trusted comment records when and
// what was signed; minisign -V prints it.
func Sign(key minisign.PrivateKey, header []byte, digest image.Digest, now time.Time) []byte {
	r := minisign.NewReader(bytes.NewReader(header))
	io.Copy(io.Discard, r) // a bytes.Reader does not fail
	trusted := fmt.Sprintf("timestamp:%d\tasr image digest %s", now.Unix(), digest)
	untrusted := "asr image signature from secret key " + FormatID(key.ID())
	return r.SignWithComments(key, trusted, untrusted)
}

// ErrFull says an image already holds image.MaxSignatures signatures.
var ErrFull = fmt.Errorf("the image already holds %d signatures: remove one with `asr sign --remove KEYID`", image.MaxSignatures)

// Add returns sigs with sig added. A signature by the same key replaces the
// old one (in place), so signing again does not pile up signatures.
func Add(sigs [][]byte, sig []byte) ([][]byte, error) {
	ids := SignerIDs([][]byte{sig})
	if len(ids) != 1 {
		return nil, errors.New("not a minisign signature")
	}
	out := make([][]byte, 0, len(sigs)+1)
	replaced := false
	for _, s := range sigs {
		if id, ok := signerID(s); ok && id == ids[0] {
			if !replaced {
				out = append(out, sig)
				replaced = true
			}
			continue
		}
		out = append(out, s)
	}
	if !replaced {
		if len(out) >= image.MaxSignatures {
			return nil, ErrFull
		}
		out = append(out, sig)
	}
	return out, nil
}

// Remove returns sigs without the signatures by key id, and how many it
// removed.
func Remove(sigs [][]byte, id uint64) ([][]byte, int) {
	var out [][]byte
	n := 0
	for _, s := range sigs {
		if sid, ok := signerID(s); ok && sid == id {
			n++
			continue
		}
		out = append(out, s)
	}
	return out, n
}

// ParseID reads a key ID as minisign and asr print it (hex, up to 16
// digits).
func ParseID(s string) (uint64, error) {
	id, err := strconv.ParseUint(s, 16, 64)
	if err != nil || strings.HasPrefix(s, "+") {
		return 0, fmt.Errorf("key ID %q: give the key ID in hex, as `asr info` shows it", s)
	}
	return id, nil
}

func signerID(text []byte) (uint64, bool) {
	var s minisign.Signature
	if s.UnmarshalText(text) != nil {
		return 0, false
	}
	return s.KeyID, true
}
