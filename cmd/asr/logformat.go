package main

import (
	"context"
	"errors"
	"flag"
	"io"
	"log/slog"

	"github.com/asrlinux/asr/internal/image"
	"github.com/asrlinux/asr/internal/redact"
	"github.com/asrlinux/asr/internal/safetext"
	"github.com/asrlinux/asr/internal/source"
)

// logFormat is the --log-format flag of asr restore and asr server: text
// for people (the default), or json, one object per line on standard
// output for a log collector (Loki, Elasticsearch). Every record has time
// (RFC 3339), level, msg (the line a person would read) and event; the
// event's own fields follow (see LOG FORMAT in their manuals).
type logFormat struct{ v *string }

func addLogFormat(fs *flag.FlagSet) logFormat {
	return logFormat{fs.String("log-format", "text", "`FORMAT` of what is printed: text, or json for one JSON object per event and line (see LOG FORMAT)")}
}

// logger returns the JSON logger, or nil for text.
func (f logFormat) logger(verb string, w io.Writer) (*slog.Logger, error) {
	switch *f.v {
	case "text":
		return nil, nil
	case "json":
		// Writes go through w as whole records: one Write per line, so
		// the redacting writer sees each record in one piece.
		return slog.New(slog.NewJSONHandler(w, nil)), nil
	}
	return nil, usageError("%s: --log-format must be text or json, not %q", verb, safetext.Short(*f.v, 20))
}

// maxField bounds every string a log record takes from outside (a client's
// name or message, an image's name): JSON escapes them, this keeps a
// record one short line.
const maxField = 256

// field is s cut to maxField bytes, on a character boundary; JSON escapes
// whatever it holds.
func field(s string) string {
	if len(s) <= maxField {
		return s
	}
	n := maxField
	for n > 0 && s[n]&0xC0 == 0x80 {
		n--
	}
	return s[:n] + "…"
}

// logFailed logs the record that ends a failed run: the reason (redacted,
// as the error line is), the phase that failed when one did, and the exit
// status asr is about to return.
func logFailed(ctx context.Context, l *slog.Logger, phase string, err error) {
	if errors.Is(err, flag.ErrHelp) {
		return
	}
	reason := redact.Error(err).Error() + hint(err)
	attrs := []slog.Attr{slog.String("event", "failed"), slog.String("reason", reason),
		slog.Int("exit_code", signalStatus(ctx, statusOf(err)))}
	if phase != "" {
		attrs = append(attrs, slog.String("phase", phase))
	}
	l.LogAttrs(ctx, slog.LevelError, reason, attrs...)
}

// sourceAttrs describe an opened source for the "source" record.
func sourceAttrs(name string, info source.Info) []slog.Attr {
	a := []slog.Attr{slog.String("event", "source"), slog.String("source", redact.Text(name)),
		slog.String("kind", info.Kind), slog.Int64("size", info.Size)}
	if info.Manifest != nil {
		a = append(a, slog.String("image", field(info.Manifest.Name)))
	}
	if info.Digest != (image.Digest{}) {
		a = append(a, slog.String("digest", "sha256:"+info.Digest.String()))
	}
	return a
}
