// Package redact hides the secrets that URLs carry before they are shown:
// the password of user:password@, and the signature, credential and token
// parameters of presigned URLs (S3's X-Amz-Signature and X-Amz-Credential,
// GCS's X-Goog-Signature, Azure's sig=, a generic token= or signature=).
//
// URL redacts one URL; Text redacts every URL inside a message, which is
// what error strings need: net/http's *url.Error prints the whole URL it
// was given, query string included. Error and Writer apply Text to errors
// and to everything written, for the places where a message leaves the
// program (the CLI's output, the appliance's console and reports).
//
// Redaction keeps what a person needs to find the problem (scheme, user
// name, host, path, the names of the parameters) and replaces only the
// secret values, so "http://u:xxxxx@host/img.asr?X-Amz-Signature=xxxxx"
// still says which server and which file.
package redact

import (
	"bytes"
	"io"
	"regexp"
	"strings"
)

// Mask replaces each secret.
const Mask = "xxxxx"

// secretKeys are parts of query parameter names whose values are secrets,
// matched case-insensitively: "sig" covers sig (Azure SAS), Signature (S3
// v2), X-Amz-Signature, X-Goog-Signature; "credential" covers
// X-Amz-Credential and X-Goog-Credential; "token" covers
// X-Amz-Security-Token, token and access_token; "key" covers AWSAccessKeyId
// and api_key.
var secretKeys = []string{"sig", "credential", "token", "secret", "pass", "key", "auth", "session"}

// URL returns s with its password and secret query values replaced by
// Mask. It works on the text, not on a parsed URL, so that a URL net/url
// refuses (a bad escape, a space) is redacted too.
func URL(s string) string {
	scheme, rest, ok := strings.Cut(s, "://")
	if !ok {
		return s
	}
	if strings.EqualFold(scheme, "oci") {
		// An OCI reference ends with @ALGO:DIGEST when it names a digest:
		// that @ is no user info, and the digest no password.
		if m := ociDigest.FindStringIndex(rest); m != nil {
			return URL(scheme+"://"+rest[:m[0]]) + rest[m[0]:]
		}
	}
	// User info: up to the last @ before the query. A password may hold an
	// unescaped / (net/url then refuses the URL, but it is still printed),
	// so the @ is looked for past the first /; a path holding both : and @
	// is masked too, which hides more than needed but never less.
	end := strings.IndexAny(rest, "?#")
	if end < 0 {
		end = len(rest)
	}
	if at := strings.LastIndex(rest[:end], "@"); at >= 0 {
		if user, _, hasPass := strings.Cut(rest[:at], ":"); hasPass {
			rest = user + ":" + Mask + rest[at:]
		}
	}
	// Query: between ? and #.
	q := strings.IndexByte(rest, '?')
	if q < 0 {
		return scheme + "://" + rest
	}
	path, query := rest[:q], rest[q+1:]
	frag := ""
	if h := strings.IndexByte(query, '#'); h >= 0 {
		query, frag = query[:h], query[h:]
	}
	params := strings.Split(query, "&")
	for i, p := range params {
		k, _, hasVal := strings.Cut(p, "=")
		if hasVal && secretKey(k) {
			params[i] = k + "=" + Mask
		}
	}
	return scheme + "://" + path + "?" + strings.Join(params, "&") + frag
}

// ociDigest is the digest at the end of an oci:// reference: @, an
// algorithm, a colon and an encoded digest (OCI image-spec's grammar, at
// least 32 characters: no digest algorithm makes shorter ones).
var ociDigest = regexp.MustCompile(`@[a-z0-9]+(?:[+._-][a-z0-9]+)*:[a-zA-Z0-9=_-]{32,}$`)

func secretKey(k string) bool {
	k = strings.ToLower(k)
	for _, s := range secretKeys {
		if strings.Contains(k, s) {
			return true
		}
	}
	return false
}

// urlInText finds URLs in free text: a scheme, "://", then anything up to
// white space or a quote (url.Error quotes the URL it prints).
var urlInText = regexp.MustCompile("[A-Za-z][A-Za-z0-9+.-]*://[^\\s\"'`<>]+")

// Text returns s with every URL in it redacted.
func Text(s string) string {
	if !strings.Contains(s, "://") {
		return s
	}
	return urlInText.ReplaceAllStringFunc(s, func(u string) string {
		// Punctuation that ends a sentence or wraps the URL ("URL: error",
		// "(URL)") is the message's, not the URL's.
		trimmed := strings.TrimRight(u, ".,;:!?)]}")
		return URL(trimmed) + u[len(trimmed):]
	})
}

// Error returns err with its message redacted. errors.Is and errors.As
// still see err's chain.
func Error(err error) error {
	if err == nil {
		return nil
	}
	msg := Text(err.Error())
	if msg == err.Error() {
		return err
	}
	return &redacted{msg: msg, err: err}
}

type redacted struct {
	msg string
	err error
}

func (r *redacted) Error() string { return r.msg }
func (r *redacted) Unwrap() error { return r.err }

// Writer returns a writer that redacts each Write before passing it on.
// Callers write whole messages (fmt.Fprintf does one Write per call), so a
// URL is not split across two writes. When w has a file descriptor (a
// terminal), so has the writer: callers that ask whether they write to a
// terminal still can.
func Writer(w io.Writer) io.Writer {
	if f, ok := w.(fder); ok {
		return &fdWriter{writer{w}, f}
	}
	return &writer{w}
}

type fder interface{ Fd() uintptr }

type writer struct{ w io.Writer }

func (r *writer) Write(p []byte) (int, error) {
	if !bytes.Contains(p, []byte("://")) { // most writes: no allocation
		return r.w.Write(p)
	}
	if _, err := io.WriteString(r.w, Text(string(p))); err != nil {
		return 0, err
	}
	return len(p), nil
}

type fdWriter struct {
	writer
	f fder
}

func (r *fdWriter) Fd() uintptr { return r.f.Fd() }
