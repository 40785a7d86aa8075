package main

import (
	"cmp"
	"context"
	"errors"
	"flag"
	"io"
	"log/slog"
	"strings"
	"time"

	"github.com/asrlinux/asr/internal/image"
	"github.com/asrlinux/asr/internal/multicast"
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

// logRecord logs a record with only its event name beside the message.
func logRecord(l *slog.Logger, level slog.Level, event, msg string) {
	l.LogAttrs(context.Background(), level, msg, slog.String("event", event))
}

// clientAttrs are a client's fields in asr server's records. Its name, MAC,
// disk and message are what it sent (bounded by the protocol): JSON
// escapes them, field keeps them short.
func clientAttrs(c multicast.ClientStatus, size int64, now time.Time) []slog.Attr {
	a := []slog.Attr{slog.Int("client_id", c.ID), slog.String("client", field(c.Name)), slog.String("mac", field(c.MAC)),
		slog.String("addr", c.Addr), slog.String("disk", field(c.Disk)), slog.String("state", c.State), slog.Int("percent", c.Percent)}
	if c.Message != "" {
		a = append(a, slog.String("reason", field(c.Message)))
	}
	rate, eta := c.Rate(size, now)
	if rate > 0 {
		a = append(a, slog.Int64("rate", int64(rate)))
	}
	if eta > 0 {
		a = append(a, slog.Float64("eta_s", eta.Round(time.Second).Seconds()))
	}
	if !c.Since.IsZero() {
		a = append(a, slog.Float64("elapsed_s", roundMs(now.Sub(c.Since))))
	}
	return a
}

func roundMs(d time.Duration) float64 { return d.Round(time.Millisecond).Seconds() }

// logServerEvent logs one of the server's events: a client's (joined,
// progress, done, failed, lost) with the client's fields, or a pass.
func logServerEvent(l *slog.Logger, ev multicast.ServerEvent, size int64) {
	level := slog.LevelInfo
	attrs := []slog.Attr{slog.String("event", field(ev.Kind))}
	switch ev.Kind {
	case multicast.EventPass:
		attrs = append(attrs, slog.Int("pass", int(ev.Pass)), slog.Int64("bytes", ev.Bytes), slog.Float64("elapsed_s", roundMs(ev.Elapsed)))
	default:
		if ev.Kind == multicast.EventFailed || ev.Kind == multicast.EventLost {
			level = slog.LevelWarn
		}
		attrs = append(attrs, clientAttrs(ev.Client, size, time.Now())...)
	}
	l.LogAttrs(context.Background(), level, ev.Msg, attrs...)
}

// logClients is the table of asr server (on SIGUSR1, and at stop) as
// records: one client_status record per client the server holds, then a
// clients record counting every client by state.
func logClients(l *slog.Logger, title string, srv *multicast.Server, now time.Time) {
	counts := map[string]int{}
	total := 0
	for st, n := range srv.Forgotten() {
		counts[st] += n
		total += n
	}
	for _, c := range srv.Clients() {
		counts[c.State]++
		total++
		l.LogAttrs(context.Background(), slog.LevelInfo, "Client "+safetext.Short(cmp.Or(c.Name, c.Addr), 40)+" "+c.State,
			append([]slog.Attr{slog.String("event", "client_status")}, clientAttrs(c, srv.Size(), now)...)...)
	}
	var byState []any
	for _, st := range []string{multicast.StateConnected, multicast.StateJoined, multicast.StateRestoring,
		multicast.StateVerifying, multicast.StateDone, multicast.StateFailed, multicast.StateLost} {
		if counts[st] > 0 {
			byState = append(byState, slog.Int(st, counts[st]))
		}
	}
	l.LogAttrs(context.Background(), slog.LevelInfo, strings.TrimSuffix(title, ":"), slog.String("event", "clients"),
		slog.Int("total", total), slog.Group("states", byState...))
}
