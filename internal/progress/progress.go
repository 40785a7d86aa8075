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
// A Printer is safe for concurrent use: workers report bytes as they finish.
package progress

import (
	"fmt"
	"io"
	"strings"
	"sync"
)

// Printer writes progress to one writer.
type Printer struct {
	mu     sync.Mutex
	w      io.Writer
	puppet bool
	open   bool   // a step or bar line is open and waiting for its end
	line   string // what the open line shows so far, to redraw it after an Info
	phase  string
	total  int64
	done   int64
	shown  int // bar: ticks printed (0..50); puppet: last percent printed
}

// New returns a Printer. puppet selects the machine-readable format.
func New(w io.Writer, puppet bool) *Printer {
	return &Printer{w: w, puppet: puppet}
}

// Step starts a short step: "Validating target...".
func (p *Printer) Step(what string) { p.StepNamed(what, what) }

// StepNamed starts a step whose text holds more than its phase name
// ("Erasing target device /dev/sdb" is phase "erasing"), so puppetstrings
// phases stay fixed words a program can match.
func (p *Printer) StepNamed(phase, what string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.closeLine()
	p.phase = phase
	if p.puppet {
		fmt.Fprintf(p.w, "PSTART\t%s\n", phaseName(phase))
		return
	}
	p.line = what + "..."
	io.WriteString(p.w, p.line)
	p.open = true
}

// Done ends a step with "done".
func (p *Printer) Done() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.puppet {
		fmt.Fprintf(p.w, "PSTOP\t%s\n", phaseName(p.phase))
		return
	}
	if p.open {
		fmt.Fprintln(p.w, "done")
		p.open = false
	}
}

// Info prints a line of its own.
func (p *Printer) Info(format string, a ...any) {
	p.mu.Lock()
	defer p.mu.Unlock()
	msg := fmt.Sprintf(format, a...)
	if p.puppet {
		fmt.Fprintf(p.w, "PINFO\t%s\n", msg)
		return
	}
	// A message in the middle of a step gets a line of its own; the step's
	// line is then drawn again so that its "done" still lands after it.
	if p.open {
		fmt.Fprintf(p.w, "\n%s\n%s", msg, p.line)
		return
	}
	fmt.Fprintln(p.w, msg)
}

// Fail ends whatever is open; the caller prints the error itself.
func (p *Printer) Fail(err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.puppet {
		fmt.Fprintf(p.w, "PERROR\t%v\n", err)
		return
	}
	if p.open {
		fmt.Fprintln(p.w, "failed")
		p.open = false
	}
}

// Start begins a long phase of total units: "Restoring  ".
func (p *Printer) Start(phase string, total int64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.closeLine()
	p.phase, p.total, p.done, p.shown = phase, total, 0, 0
	if p.puppet {
		fmt.Fprintf(p.w, "PSTART\t%s\nPPROG\t%s\t0\n", phaseName(phase), phaseName(phase))
		return
	}
	p.line = fmt.Sprintf("%-10s ", phase)
	io.WriteString(p.w, p.line)
	p.open = true
}

// Add reports n more units done.
func (p *Printer) Add(n int64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.done += n
	p.draw()
}

// Finish completes the phase at 100%.
func (p *Printer) Finish() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.done = p.total
	p.draw()
	if p.puppet {
		fmt.Fprintf(p.w, "PSTOP\t%s\n", phaseName(p.phase))
		return
	}
	fmt.Fprintln(p.w)
	p.open = false
}

func (p *Printer) draw() {
	pct := 100
	if p.total > 0 {
		pct = int(min(p.done, p.total) * 100 / p.total)
	}
	if p.puppet {
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
