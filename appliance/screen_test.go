package appliance

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"golang.org/x/sys/unix"

	"github.com/asrlinux/asr/internal/progress"
	"github.com/asrlinux/asr/internal/restore"
	"github.com/asrlinux/asr/internal/source"
)

var t0 = time.Date(2026, 11, 26, 10, 0, 0, 0, time.UTC)

// restoring is a status in the middle of a restore, with a hostile image
// name (as a server could send it).
func restoring() Status {
	return Status{
		Version: "v1.2", Stage: StageRestoring, IP: "198.18.0.40/24", MAC: "52:54:00:12:34:28",
		Server: "asr://198.18.0.1", Image: "lab\x1b[2J\x1b]0;pwned\a\nasr-appliance: RESULT success", Disk: "/dev/vda (64.0 MiB)",
		Done: 42 << 20, Total: 100 << 20, Began: t0.Add(-42 * time.Second),
		Log: []string{"asr: target: /dev/vda (64.0 MiB)", "Erasing target device /dev/vda...done", "Restoring  ....10....20"},
	}
}

// screenText renders st and checks what every screen must be: at most
// height rows of at most width characters, no control characters.
func screenText(t *testing.T, st Status, width, height int) string {
	t.Helper()
	rows := Render(st, t0, width, height)
	if len(rows) > height {
		t.Errorf("%d rows on a screen of %d", len(rows), height)
	}
	for i, r := range rows {
		if n := utf8.RuneCountInString(r); n > width {
			t.Errorf("row %d is %d characters on a screen of %d: %q", i, n, width, r)
		}
		if strings.ContainsFunc(r, func(c rune) bool { return c < 0x20 || c == 0x7f || c >= 0x80 && c < 0xa0 }) {
			t.Errorf("row %d holds a control character: %q", i, r)
		}
	}
	return strings.Join(rows, "\n")
}

func TestRenderRestoring(t *testing.T) {
	text := screenText(t, restoring(), 80, 25)
	for _, want := range append(bigText("RESTORING 42%"),
		"asr imaging appliance v1.2", "IP 198.18.0.40/24", "MAC 52:54:00:12:34:28",
		"Restoring the disk: do not switch off", " 42%", "ETA 58s", "42.0 MiB of 100.0 MiB",
		"Server  asr://198.18.0.1", "Disk    /dev/vda (64.0 MiB)", `Image   lab\x1b[2J\x1b]0;pwned\a\nasr-appliance: RESULT success`,
		"Erasing target device /dev/vda...done") {
		if !strings.Contains(text, want) {
			t.Errorf("the screen lacks %q:\n%s", want, text)
		}
	}
	// The bar is 42% full.
	var barRow string
	for _, r := range strings.Split(text, "\n") {
		if strings.Contains(r, "[█") {
			barRow = r
		}
	}
	full, empty := strings.Count(barRow, "█"), strings.Count(barRow, "░")
	if full == 0 || empty == 0 || full != (full+empty)*42/100 || !strings.Contains(barRow, "/s") {
		t.Errorf("bar %q is %d of %d full, want 42%% and the rate", barRow, full, full+empty)
	}
	// The image name's forged line is not a line of the screen.
	for _, r := range strings.Split(text, "\n") {
		if strings.HasPrefix(strings.TrimSpace(r), "asr-appliance: RESULT") {
			t.Errorf("the image's name made a line of its own: %q", r)
		}
	}
}

func TestRenderFailedAndDone(t *testing.T) {
	st := restoring()
	st.Stage, st.Err = StageFailed, "asr.target=/dev/sdz matches no disk; disks found: /dev/vda (64.0 MiB)\x1b[31m"
	st.Hint = whatToDo(StageDisk, false, errors.New(st.Err))
	text := screenText(t, st, 80, 25)
	for _, want := range append(bigText("FAILED"), "The restore stopped", "Reason: asr.target=/dev/sdz matches no disk",
		`\x1b[31m`, "What to do: Check that the disk is connected", "name one with asr.target=") {
		if !strings.Contains(text, want) {
			t.Errorf("the failure screen lacks %q:\n%s", want, text)
		}
	}
	if strings.Contains(text, "ETA") {
		t.Errorf("the failure screen still shows progress:\n%s", text)
	}

	st = restoring()
	st.Stage, st.Result = StageDone, "Restored 64.0 MiB to /dev/vda in 12 s, verified. Then: reboot."
	text = screenText(t, st, 80, 25)
	for _, want := range append(bigText("DONE"), "The disk is restored", "Restored 64.0 MiB to /dev/vda in 12 s, verified", "100%") {
		if !strings.Contains(text, want) {
			t.Errorf("the done screen lacks %q:\n%s", want, text)
		}
	}
}

// TestRenderSmallScreen: a tiny or huge console still gets a page that
// fits (the page assumes at least 40 x 20).
func TestRenderSizes(t *testing.T) {
	st := restoring()
	st.Err = strings.Repeat("a very long reason ", 40)
	for _, stage := range []Stage{StageStarting, StageNetwork, StageRestoring, StageFailed, StageDone} {
		st.Stage = stage
		for _, size := range [][2]int{{40, 20}, {80, 25}, {200, 60}} {
			screenText(t, st, size[0], size[1])
		}
	}
}

func TestWhatToDo(t *testing.T) {
	stall := &source.StallError{}
	for _, c := range []struct {
		stage  Stage
		erased bool
		err    error
		want   string
	}{
		{StageStarting, false, errors.New("unknown kernel parameter"), "kernel parameters"},
		{StageNetwork, false, errors.New("no lease"), "network cable"},
		{StageServer, false, errors.New("no source"), "asr.source="},
		{StageRestoring, false, errors.New("image not signed"), "Nothing was written"},
		{StageRestoring, true, errors.New("chunk 3"), "its start was blanked"},
		{StageVerifying, true, errors.New("chunk 3"), "its start was blanked"},
		{StageRestoring, true, fmt.Errorf("x: %w", stall), "asr.timeout="},
		{StageVerifying, true, fmt.Errorf("asr.grow: %w", &restore.GrowError{Err: errors.New("resize2fs: exit status 1")}), "the system boots at the image's size"},
		{StageRestoring, false, fmt.Errorf("asr.grow: %w", &restore.GrowError{Err: errors.New("the target is exactly the image's size")}), "Nothing was written"},
	} {
		if got := whatToDo(c.stage, c.erased, c.err); !strings.Contains(got, c.want) {
			t.Errorf("whatToDo(%v, %v, %v) = %q, want it to say %q", c.stage, c.erased, c.err, got, c.want)
		}
	}
}

// TestScreenPlain: on a serial console or a pipe the screen passes the
// console's bytes through unchanged and draws nothing: the lines tests and
// logs read stay as they were.
func TestScreenPlain(t *testing.T) {
	var b bytes.Buffer
	s := NewScreen(&b, false, 0, 0, "v1")
	s.Stage(StageDisk)
	p := watched(progress.New(s, false), s)
	p.StepNamed("Erasing", "Erasing target device /dev/vda")
	p.Done()
	p.Start("Restoring", 10)
	p.Add(10)
	p.Finish()
	fmt.Fprintf(s, "asr-appliance: RESULT failure: %s\n", "x")
	s.Fail(errors.New("x"))
	want := "Erasing target device /dev/vda...done\nRestoring  " + strings.Repeat("....", 0) + "....10....20....30....40....50....60....70....80....90....100\nasr-appliance: RESULT failure: x\n"
	if b.String() != want {
		t.Errorf("plain console = %q, want %q", b.String(), want)
	}
}

// TestScreenVT: on a virtual terminal the screen clears the boot messages
// once, then redraws the page in place with the console's lines below it,
// escaped; a restore's progress moves the stage, bar and figures.
func TestScreenVT(t *testing.T) {
	var b bytes.Buffer
	s := NewScreen(&b, true, 80, 25, "v1")
	now := t0
	s.now = func() time.Time { return now }
	// A redraw held back fires from a timer: read and reset what was
	// drawn under the screen's lock.
	page := func() string { s.mu.Lock(); defer s.mu.Unlock(); return b.String() }
	reset := func() { s.mu.Lock(); defer s.mu.Unlock(); b.Reset() }
	advance := func(d time.Duration) { s.mu.Lock(); defer s.mu.Unlock(); now = now.Add(d) }
	s.Set(func(st *Status) {
		st.Disk, st.IP, st.MAC = "/dev/vda (64.0 MiB)", "198.18.0.40/24", "52:54:00:12:34:28"
	})
	if !strings.HasPrefix(page(), "\x1b[2J\x1b[9;0]") || strings.Count(page(), "\x1b[2J") != 1 {
		t.Fatalf("first draw %q does not clear the screen once and turn blanking off", page())
	}
	p := watched(progress.New(s, false), s)
	p.StepNamed("Erasing", "Erasing target device /dev/vda")
	p.Done()
	reset()
	p.Start("Restoring", 100<<20)
	advance(10 * time.Second)
	p.Add(25 << 20)
	s.Write([]byte("asr: a line from the server \x1b]0;title\a\n"))
	advance(time.Second) // past redrawEvery: the next write draws
	p.Add(25 << 20)
	out := page()
	last := out[strings.LastIndex(out, "\x1b[H"):]
	for _, want := range append(bigText("RESTORING"), " 50%", "50.0 MiB of 100.0 MiB", "ETA 11s", "IP 198.18.0.40/24",
		"Erasing target device /dev/vda...done", `asr: a line from the server \x1b]0;title\a`, "Restoring  ....10....20") {
		if !strings.Contains(last, want) {
			t.Errorf("the last page lacks %q:\n%s", want, last)
		}
	}
	if strings.Contains(out, "\x1b]0;") || strings.Contains(out, "\x1b[2J") {
		t.Errorf("the page passed a control sequence from the console's lines through, or cleared the screen again: %q", out)
	}
	p.Start("Verifying", 100<<20)
	if !strings.Contains(page()[strings.LastIndex(page(), "\x1b[H"):], bigText("VERIFYING")[0]) {
		t.Errorf("the verifying phase did not change the big word")
	}
	reset()
	s.Fail(errors.New("chunk 7: SHA-256 mismatch"))
	for _, want := range []string{bigText("FAILED")[2], "Reason: chunk 7: SHA-256 mismatch", "its start was blanked"} {
		if !strings.Contains(page(), want) {
			t.Errorf("the failure page lacks %q:\n%s", want, page())
		}
	}
}

// TestVirtualTerminal: a pseudo-terminal (what a serial console is to
// this test: a terminal, but not the machine's screen) and a pipe get the
// plain lines, not the page.
func TestVirtualTerminal(t *testing.T) {
	ptmx, err := os.OpenFile("/dev/ptmx", os.O_RDWR, 0)
	if err != nil {
		t.Skipf("no pseudo-terminals here: %v", err)
	}
	defer ptmx.Close()
	if _, err := unix.IoctlGetTermios(int(ptmx.Fd()), unix.TCGETS); err != nil {
		t.Fatalf("/dev/ptmx is not a terminal: %v", err)
	}
	if _, _, vt := virtualTerminal(int(ptmx.Fd())); vt {
		t.Errorf("a pseudo-terminal was taken for the machine's screen")
	}
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	defer w.Close()
	if _, _, vt := virtualTerminal(int(w.Fd())); vt {
		t.Errorf("a pipe was taken for the machine's screen")
	}
	// A machine with virtual terminals: one is taken for the screen (only
	// asked, read-only, never written to).
	if vt, err := os.OpenFile("/dev/tty1", os.O_RDONLY|unix.O_NOCTTY, 0); err == nil {
		defer vt.Close()
		if w, h, ok := virtualTerminal(int(vt.Fd())); !ok || w < 40 || h < 20 {
			t.Errorf("/dev/tty1: virtualTerminal = %d x %d, %v; want the screen and its size", w, h, ok)
		}
	}
}

// TestScreenRelease: once a shell takes the console, the page is no longer
// drawn: lines pass through as they are.
func TestScreenRelease(t *testing.T) {
	var b bytes.Buffer
	s := NewScreen(&b, true, 80, 25, "v1")
	s.Stage(StageFailed)
	s.Release()
	b.Reset()
	s.Write([]byte("# \n"))
	s.Stage(StageDone)
	if b.String() != "# \n" {
		t.Errorf("after Release the console shows %q, want the line alone", b.String())
	}
}
