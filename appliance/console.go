package appliance

import (
	"bytes"
	"io"
	"os"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/asrlinux/asr/internal/progress"
)

// Screen is the appliance's console. On a Linux virtual terminal (the
// machine's own screen) it shows Render's status page, redrawn in place,
// with the console's lines scrolling below it. Anywhere else (a serial
// console, a pipe) it passes the lines through as they are, so a log or a
// test reading the serial port sees plain lines, and the status adds only
// what to do when the restore fails. A nil *Screen does nothing.
type Screen struct {
	mu      sync.Mutex
	out     io.Writer
	vt      bool
	w, h    int
	st      Status
	erased  bool   // the restore began to erase the disk
	partial []byte // the console's unfinished last line
	drawn   time.Time
	cleared bool        // the boot messages were cleared off the screen
	pending *time.Timer // a redraw held back by redrawEvery
	now     func() time.Time
}

// keepLines is how many console lines the screen keeps to show.
const keepLines = 64

// redrawEvery bounds how often the screen is redrawn: a restore reports
// progress for every chunk.
const redrawEvery = 250 * time.Millisecond

// NewScreen returns the console writing to out; vt says whether out is a
// virtual terminal of width x height characters.
func NewScreen(out io.Writer, vt bool, width, height int, version string) *Screen {
	return &Screen{out: out, vt: vt, w: width, h: height, st: Status{Version: version}, now: time.Now}
}

// ConsoleScreen is NewScreen for f: a status page when f is a virtual
// terminal, plain lines otherwise.
func ConsoleScreen(f *os.File, out io.Writer, version string) *Screen {
	w, h, vt := virtualTerminal(int(f.Fd()))
	return NewScreen(out, vt, w, h, version)
}

// kdgkbtype is KDGKBTYPE of linux/kd.h: only a virtual terminal answers it,
// not a serial port or a pipe.
const kdgkbtype = 0x4B33

// virtualTerminal says whether fd is a Linux virtual terminal, and its size.
func virtualTerminal(fd int) (width, height int, ok bool) {
	if _, err := unix.IoctlGetInt(fd, kdgkbtype); err != nil {
		return 0, 0, false
	}
	width, height = 80, 25
	if ws, err := unix.IoctlGetWinsize(fd, unix.TIOCGWINSZ); err == nil && ws.Col > 0 && ws.Row > 0 {
		width, height = int(ws.Col), int(ws.Row)
	}
	return width, height, true
}

// Write is the console: lines for people.
func (s *Screen) Write(p []byte) (int, error) {
	if s == nil {
		return len(p), nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.vt {
		return s.out.Write(p)
	}
	s.partial = append(s.partial, p...)
	for {
		i := bytes.IndexByte(s.partial, '\n')
		if i < 0 {
			break
		}
		s.st.Log = append(s.st.Log, strings.TrimRight(string(s.partial[:i]), "\r"))
		s.partial = s.partial[i+1:]
	}
	if len(s.st.Log) > keepLines {
		s.st.Log = append([]string(nil), s.st.Log[len(s.st.Log)-keepLines:]...)
	}
	s.redraw(false)
	return len(p), nil
}

// Set changes the status and redraws the screen at once.
func (s *Screen) Set(f func(*Status)) {
	if s == nil {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	f(&s.st)
	s.redraw(true)
}

// Stage moves to stage.
func (s *Screen) Stage(stage Stage) { s.Set(func(st *Status) { st.Stage, st.Step = stage, "" }) }

// Watch follows a restore's progress: its steps, bytes and phases.
func (s *Screen) Watch(e progress.Event) {
	if s == nil {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	st := &s.st
	switch e.Phase {
	case "verifying":
		st.Stage = StageVerifying
	case "erasing":
		s.erased = true
		fallthrough
	default:
		st.Stage = StageRestoring
	}
	switch e.Kind {
	case progress.StepBegun:
		// The screen's own clock times the phase (its ETA).
		st.Step, st.Done, st.Total, st.Began = e.Text, e.Done, e.Total, s.now()
		if e.Total > 0 {
			st.Step = ""
		}
		s.redraw(true)
	case progress.Progressed:
		st.Done, st.Total = e.Done, e.Total
		s.redraw(false)
	}
}

// Fail shows that the appliance stopped on err, what to do about it, and
// returns that advice.
func (s *Screen) Fail(err error) string {
	if s == nil {
		return whatToDo(StageStarting, false, err)
	}
	s.mu.Lock()
	hint := whatToDo(s.st.Stage, s.erased, err)
	s.mu.Unlock()
	s.Set(func(st *Status) { st.Stage, st.Err, st.Hint = StageFailed, err.Error(), hint })
	return hint
}

// redraw draws the status page on a virtual terminal: now, or within
// redrawEvery when force is false. The caller holds s.mu.
func (s *Screen) redraw(force bool) {
	if !s.vt {
		return
	}
	now := s.now()
	if !force && now.Sub(s.drawn) < redrawEvery {
		if s.pending == nil {
			s.pending = time.AfterFunc(redrawEvery, func() {
				s.mu.Lock()
				defer s.mu.Unlock()
				s.pending = nil
				s.redraw(true)
			})
		}
		return
	}
	s.drawn = now
	st := s.st
	if len(s.partial) > 0 {
		// The line being written (a step's "...", the bar) shows too.
		st.Log = append(append([]string(nil), st.Log...), string(s.partial))
	}
	rows := Render(st, now, s.w, s.h)
	var b bytes.Buffer
	// Home, each row over the old one (clearing what it leaves), then
	// clear below; the cursor hidden so it does not blink in the page.
	if !s.cleared {
		// Clear the boot messages, and never blank the screen (the
		// Linux console's own sequence, setterm --blank 0): a long
		// restore must still show its page to the person passing by.
		b.WriteString("\x1b[2J\x1b[9;0]")
		s.cleared = true
	}
	b.WriteString("\x1b[?25l\x1b[H")
	for i, r := range rows {
		b.WriteString(r)
		b.WriteString("\x1b[K")
		if i < len(rows)-1 {
			b.WriteString("\r\n")
		}
	}
	b.WriteString("\x1b[J")
	s.out.Write(b.Bytes())
}

// Release hands the console over (to a shell): the page stays as it is,
// the cursor shows again below it, and from then on the screen passes
// lines through as on a serial console.
func (s *Screen) Release() {
	if s == nil {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.pending != nil {
		s.pending.Stop()
		s.pending = nil
	}
	if s.vt {
		s.vt = false
		io.WriteString(s.out, "\x1b[?25h\r\n")
	}
}
