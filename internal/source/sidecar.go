package source

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"
	"path"
	"strings"

	"github.com/asrlinux/asr/internal/redact"
	"github.com/asrlinux/asr/internal/safetext"
)

// maxSidecar bounds a checksum file: one line is under 300 bytes, and a
// SHA256SUMS listing of a whole release directory stays far below this.
const maxSidecar = 64 << 10

// checksum finds the SHA-256 the raw image must have: given ("sha256:HEX",
// from the caller's options), else the IMG.sha256 file beside the image.
// No such file (404, 410) means no checksum; any other failure to fetch it
// is an error, so a checksum that exists is never skipped by accident. The
// fetch is under the same stall watchdog as the image.
func (hc *httpClient) checksum(ctx context.Context, given string) (want []byte, from string, err error) {
	if given != "" {
		algo, hexsum, ok := strings.Cut(given, ":")
		b, err := hex.DecodeString(hexsum)
		if !ok || algo != "sha256" || err != nil || len(b) != sha256.Size {
			return nil, "", fmt.Errorf("checksum %q: give sha256: and 64 hex digits", given)
		}
		return b, "--checksum", nil
	}
	u, err := url.Parse(hc.url)
	if err != nil {
		return nil, "", err
	}
	u.Path += ".sha256"
	u.RawPath = ""
	shown := redact.URL(u.String())
	resp, body, err := hc.getURL(ctx, u.String(), shown, 0, -1, hc.stall, hc.stall, "its checksum file")
	if err != nil {
		return nil, "", fmt.Errorf("fetching the checksum file: %w", err)
	}
	defer body.Close()
	switch resp.StatusCode {
	case http.StatusOK:
	case http.StatusNotFound, http.StatusGone:
		hc.log("no checksum file at %s (%s)", shown, safetext.Short(resp.Status, 80))
		return nil, "", nil
	default:
		return nil, "", fmt.Errorf("fetching the checksum file %s: the server answered %s", shown, safetext.Short(resp.Status, 80))
	}
	b, err := io.ReadAll(io.LimitReader(body, maxSidecar+1))
	if err != nil {
		return nil, "", fmt.Errorf("fetching the checksum file: %w", err)
	}
	if len(b) > maxSidecar {
		return nil, "", fmt.Errorf("checksum file %s is larger than %d KiB: not a checksum file", shown, maxSidecar>>10)
	}
	if mt, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type")); mt == "text/html" {
		// Some servers answer every path with a page; that is no checksum.
		hc.log("ignoring %s: the server sent an HTML page, not a checksum", shown)
		return nil, "", nil
	}
	sum, err := parseSidecar(b, path.Base(u.Path[:len(u.Path)-len(".sha256")]))
	if err != nil {
		return nil, "", fmt.Errorf("checksum file %s: %w", shown, err)
	}
	return sum, shown, nil
}

var errNoSum = errors.New("it holds no SHA-256 (64 hex digits)")

// parseSidecar reads a checksum file as sha256sum writes it: lines of "HEX
// NAME" (NAME may be absent, or marked binary with a leading '*'). One line
// is taken whatever its name, since images get renamed; of several, the
// one naming the image (its base name) is.
func parseSidecar(b []byte, name string) ([]byte, error) {
	type entry struct {
		sum  []byte
		name string
	}
	var entries []entry
	for line := range bytes.Lines(b) {
		f := strings.Fields(string(line))
		if len(f) == 0 || strings.HasPrefix(f[0], "#") {
			continue
		}
		sum, err := hex.DecodeString(f[0])
		if err != nil || len(sum) != sha256.Size {
			return nil, errNoSum
		}
		e := entry{sum: sum}
		if len(f) > 1 {
			e.name = path.Base(strings.TrimPrefix(strings.Join(f[1:], " "), "*"))
		}
		entries = append(entries, e)
	}
	switch len(entries) {
	case 0:
		return nil, errNoSum
	case 1:
		return entries[0].sum, nil
	}
	for _, e := range entries {
		if e.name == name {
			return e.sum, nil
		}
	}
	return nil, fmt.Errorf("it lists %d files, none of them named %q", len(entries), name)
}
