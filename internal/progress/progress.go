// Package progress prints what asr is doing, for a person or for a program.
//
// Human output follows Apple's asr: a step is "Validating target...done" and
// long work is "Restoring  ....10....20....30....40....50....60....70....80....90....100".
// Machine output (--puppetstrings) is one unbuffered line per event, specified
// in docs/puppetstrings.md:
//
//	PSTART\t<phase>
//	PPROG\t<phase>\t<percent 0-100>
//	PSTOP\t<phase>
//	PINFO\t<text>
//	PERROR\t<text>
//
// Log output (--log-format json, NewLog) is one record per event through a
// log/slog Logger: "step" when a phase begins, "progress" at most once per
// whole percent or every 5 s, "step_done" when it ends, "info" for a line
// meant for people. A failure only marks the phase: the caller logs the
// one "failed" record, with the final error and the exit status.
//
// A Printer is safe for concurrent use: workers report bytes as they finish.
package progress

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"math"
	"strings"
	"sync"
	"time"
)

// Printer writes progress to one writer.
type Printer struct {
	mu     sync.Mutex
	w      io.Writer
	puppet bool
	log    *slog.Logger // log output instead of w
	watch  func(Event)
	// Log output: when the phase began, and when and at which percent its
	// last progress record was.
	began, logged time.Time
	loggedPct     int
	failed        string // the phase that failed
	open          bool   // a step or bar line is open and waiting for its end
	line          string // what the open line shows so far, to redraw it after an Info
	phase         string
	total         int64
	done          int64
	shown         int // bar: ticks printed (0..50); puppet: last percent printed
}

// New returns a Printer. puppet selects the machine-readable format.
func New(w io.Writer, puppet bool) *Printer {
	return &Printer{w: w, puppet: puppet}
}

// NewLog returns a Printer whose every event is a record of l, with an
// "event" attribute naming it (see the package comment).
func NewLog(l *slog.Logger) *Printer {
	return &Printer{w: io.Discard, log: l}
}

// Event is one thing a Printer was told, for a Watch function.
type Event struct {
	Kind  Kind
	Phase string // "erasing", "restoring": the phase's fixed name
	Text  string // the step's text, or the info line or error
	// Done and Total count the phase's units (bytes for restoring and
	// verifying); Total is 0 for a short step.
	Done, Total int64
	Began       time.Time // when the phase began
}

// Kind says what an Event is.
type Kind int

// The kinds of Event.
const (
	StepBegun Kind = iota
	Progressed
	StepDone
	Infoed
	Failed
)

// Watch has fn called with every event, under the Printer's lock (so in
// order, and fn must be quick), just before the event's output, which
// goes on as before. The
// appliance's screen follows a restore this way.
func (p *Printer) Watch(fn func(Event)) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.watch = fn
}

// Failed is the phase that failed ("" if none): for the caller's own
// failure record.
func (p *Printer) Failed() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.failed
}

func (p *Printer) notify(k Kind, text string) {
	if p.watch != nil {
		p.watch(Event{Kind: k, Phase: phaseName(p.phase), Text: text, Done: p.done, Total: p.total, Began: p.began})
	}
}

// logPeriod is how often a progress record is logged when the percentage
// does not move.
const logPeriod = 5 * time.Second

// logProgress logs a progress record when the percentage has moved, or
// every logPeriod while it has not: at most about 100 records a phase,
// and still a sign of life from a slow one.
func (p *Printer) logProgress(now time.Time, pct int) {
	if pct <= p.loggedPct && now.Sub(p.logged) < logPeriod {
		return
	}
	p.loggedPct, p.logged = pct, now
	attrs := []slog.Attr{slog.String("phase", phaseName(p.phase)), slog.Int("percent", pct),
		slog.Int64("done", p.done), slog.Int64("total", p.total)}
	if el := now.Sub(p.began).Seconds(); el > 0 && p.done > 0 {
		rate := float64(p.done) / el
		attrs = append(attrs, slog.Int64("rate", int64(rate)),
			slog.Float64("eta_s", roundTenth(float64(p.total-min(p.done, p.total))/rate)))
	}
	p.record(slog.LevelInfo, "progress", fmt.Sprintf("%s %d%%", p.phase, pct), attrs...)
}

func roundTenth(x float64) float64 { return math.Round(x*10) / 10 }

// Step starts a short step: "Validating target...".
func (p *Printer) Step(what string) { p.StepNamed(what, what) }

// StepNamed starts a step whose text holds more than its phase name
// ("Erasing target device /dev/sdb" is phase "erasing"), so puppetstrings
// phases stay fixed words a program can match.
func (p *Printer) StepNamed(phase, what string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.closeLine()
	p.phase, p.total, p.done, p.began = phase, 0, 0, time.Now()
	p.notify(StepBegun, what)
	switch {
	case p.log != nil:
		p.record(slog.LevelInfo, "step", what, slog.String("phase", phaseName(phase)))
	case p.puppet:
		fmt.Fprintf(p.w, "PSTART\t%s\n", phaseName(phase))
	default:
		p.line = what + "..."
		io.WriteString(p.w, p.line)
		p.open = true
	}
}

// Done ends a step with "done".
func (p *Printer) Done() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.notify(StepDone, "")
	switch {
	case p.log != nil:
		p.stepDone()
	case p.puppet:
		fmt.Fprintf(p.w, "PSTOP\t%s\n", phaseName(p.phase))
	case p.open:
		fmt.Fprintln(p.w, "done")
		p.open = false
	}
}

// Info prints a line of its own.
func (p *Printer) Info(format string, a ...any) {
	p.mu.Lock()
	defer p.mu.Unlock()
	msg := fmt.Sprintf(format, a...)
	p.notify(Infoed, msg)
	switch {
	case p.log != nil:
		p.record(slog.LevelInfo, "info", msg)
	case p.puppet:
		fmt.Fprintf(p.w, "PINFO\t%s\n", msg)
	case p.open:
		// A message in the middle of a step gets a line of its own; the
		// step's line is then drawn again so that its "done" still lands
		// after it.
		fmt.Fprintf(p.w, "\n%s\n%s", msg, p.line)
	default:
		fmt.Fprintln(p.w, msg)
	}
}

// Fail ends whatever is open; the caller prints the error itself.
func (p *Printer) Fail(err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.failed = phaseName(p.phase)
	p.notify(Failed, err.Error())
	switch {
	case p.log != nil:
		// The caller's failure record says it, with the final error.
	case p.puppet:
		fmt.Fprintf(p.w, "PERROR\t%v\n", err)
	case p.open:
		fmt.Fprintln(p.w, "failed")
		p.open = false
	}
}

// Start begins a long phase of total units: "Restoring  ".
func (p *Printer) Start(phase string, total int64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.closeLine()
	p.phase, p.total, p.done, p.shown, p.began = phase, total, 0, 0, time.Now()
	p.loggedPct, p.logged = 0, p.began
	p.notify(StepBegun, phase)
	switch {
	case p.log != nil:
		p.record(slog.LevelInfo, "step", phase, slog.String("phase", phaseName(phase)), slog.Int64("total", total))
	case p.puppet:
		fmt.Fprintf(p.w, "PSTART\t%s\nPPROG\t%s\t0\n", phaseName(phase), phaseName(phase))
	default:
		p.line = fmt.Sprintf("%-10s ", phase)
		io.WriteString(p.w, p.line)
		p.open = true
	}
}

// Add reports n more units done.
func (p *Printer) Add(n int64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.done += n
	p.notify(Progressed, "")
	p.draw()
}

// Finish completes the phase at 100%.
func (p *Printer) Finish() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.done = p.total
	p.draw()
	p.notify(StepDone, "")
	switch {
	case p.log != nil:
		p.stepDone()
	case p.puppet:
		fmt.Fprintf(p.w, "PSTOP\t%s\n", phaseName(p.phase))
	default:
		fmt.Fprintln(p.w)
		p.open = false
	}
}

// record logs one event.
func (p *Printer) record(level slog.Level, event, msg string, attrs ...slog.Attr) {
	p.log.LogAttrs(context.Background(), level, msg, append([]slog.Attr{slog.String("event", event)}, attrs...)...)
}

func (p *Printer) stepDone() {
	p.record(slog.LevelInfo, "step_done", p.phase+" done", slog.String("phase", phaseName(p.phase)),
		slog.Float64("elapsed_s", roundTenth(time.Since(p.began).Seconds())))
}

func (p *Printer) draw() {
	pct := 100
	if p.total > 0 {
		pct = int(min(p.done, p.total) * 100 / p.total)
	}
	switch {
	case p.log != nil:
		p.logProgress(time.Now(), pct)
		return
	case p.puppet:
		if pct > p.shown {
			p.shown = pct
			fmt.Fprintf(p.w, "PPROG\t%s\t%d\n", phaseName(p.phase), pct)
		}
		return
	}
	// 50 ticks of 2% each: four dots, then the tens figure.
	var b strings.Builder
	for ; p.shown < pct/2; p.shown++ {
		t := p.shown + 1
		if t%5 == 0 {
			fmt.Fprintf(&b, "%d", t*2)
		} else {
			b.WriteByte('.')
		}
	}
	if b.Len() > 0 {
		p.line += b.String()
		io.WriteString(p.w, b.String())
	}
}

func (p *Printer) closeLine() {
	if p.open && !p.puppet {
		fmt.Fprintln(p.w)
	}
	p.open = false
}

// phaseName turns "Validating target" into "validating_target".
func phaseName(s string) string {
	return strings.ReplaceAll(strings.ToLower(strings.TrimSpace(s)), " ", "_")
}

// HumanBytes prints a size the way admins read them: "1.0 GiB".
func HumanBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}
