package multicast

import (
	"encoding/base64"
	"encoding/json"
	"strings"
	"testing"

	"github.com/asrlinux/asr/internal/image"
)

// TestSessionSignatures: the session carries the signature trailer as
// base64; a client decodes it, and refuses (as an error for callers that
// require a signature) what is not base64 or not a valid trailer.
func TestSessionSignatures(t *testing.T) {
	sigs := [][]byte{[]byte("first signature text\n"), []byte("second\n")}
	tr, err := image.EncodeTrailer(sigs)
	if err != nil {
		t.Fatal(err)
	}
	got, err := sessionSignatures(base64.StdEncoding.EncodeToString(tr))
	if err != nil || len(got) != 2 || string(got[0]) != string(sigs[0]) || string(got[1]) != string(sigs[1]) {
		t.Errorf("sessionSignatures(good) = %q, %v", got, err)
	}
	if got, err := sessionSignatures(""); got != nil || err != nil {
		t.Errorf("sessionSignatures(unsigned) = %q, %v, want nil, nil", got, err)
	}
	for name, in := range map[string]string{
		"not base64":  "%%%",
		"not trailer": base64.StdEncoding.EncodeToString([]byte("just some bytes, long enough to hold a footer....")),
		"cut trailer": base64.StdEncoding.EncodeToString(tr[1:]),
	} {
		if _, err := sessionSignatures(in); err == nil || !strings.Contains(err.Error(), "the server sent") {
			t.Errorf("sessionSignatures(%s) = %v, want an error naming the server", name, err)
		}
	}
	// The largest trailer and the longest name, escaped by JSON, still fit
	// the session frame a client accepts.
	var big [][]byte
	for range image.MaxSignatures {
		big = append(big, []byte(strings.Repeat("s", image.MaxSignatureLen)))
	}
	btr, err := image.EncodeTrailer(big)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(session{Version: WireVersion, Stream: strings.Repeat("ab", 16), Digest: strings.Repeat("cd", 32),
		Name: strings.Repeat("\x01", 4096), Signatures: base64.StdEncoding.EncodeToString(btr)})
	if len(b)+1 > maxSessionFrame {
		t.Errorf("a session with the largest trailer and name is %d bytes, more than the %d a client reads", len(b)+1, maxSessionFrame)
	}
}
