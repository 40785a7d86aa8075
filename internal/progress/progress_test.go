package progress

import (
	"bytes"
	"encoding/json"
	"errors"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

const fullBar = "....10....20....30....40....50....60....70....80....90....100"

// unevenSteps adds up to 1000 in steps of varied size, some of them zero and
// some crossing several ticks at once.
var unevenSteps = []int64{1, 0, 7, 13, 2, 150, 3, 3, 99, 1, 250, 31, 19, 0, 70, 211, 40, 9, 1, 90}

func TestHumanBar(t *testing.T) {
	var sum int64
	for _, n := range unevenSteps {
		sum += n
	}
	if sum != 1000 {
		t.Fatalf("unevenSteps sum to %d, want 1000", sum)
	}
	for _, tt := range []struct {
		name   string
		finish bool // call Finish after the steps
	}{
		{name: "steps then finish", finish: true},
		{name: "steps alone reach 100", finish: false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var b bytes.Buffer
			p := New(&b, false)
			p.Start("Restoring", 1000)
			for _, n := range unevenSteps {
				p.Add(n)
			}
			if tt.finish {
				p.Finish()
			}
			want := "Restoring  " + fullBar
			if tt.finish {
				want += "\n"
			}
			if got := b.String(); got != want {
				t.Errorf("bar output = %q, want %q", got, want)
			}
		})
	}
}

// TestHumanBarPrefixes checks that the bar grows tick by tick: after each
// Add, what is printed is a prefix of the full bar that matches the percent
// done so far.
func TestHumanBarPrefixes(t *testing.T) {
	var b bytes.Buffer
	p := New(&b, false)
	p.Start("Restoring", 1000)
	var done int64
	for _, n := range unevenSteps {
		p.Add(n)
		done += n
		got := strings.TrimPrefix(b.String(), "Restoring  ")
		// Ticks are 2% each; the bar shows every tick whose percent is reached.
		want := barPrefix(int(done * 100 / 1000 / 2))
		if got != want {
			t.Errorf("after %d of 1000: bar = %q, want %q", done, got, want)
		}
	}
}

// barPrefix is the bar after ticks ticks, built independently of the code.
func barPrefix(ticks int) string {
	var s strings.Builder
	for t := 1; t <= ticks; t++ {
		if t%5 == 0 {
			s.WriteString(strconv.Itoa(t * 2))
		} else {
			s.WriteByte('.')
		}
	}
	return s.String()
}

func TestHumanBarFinishEarly(t *testing.T) {
	var b bytes.Buffer
	p := New(&b, false)
	p.Start("Scanning", 1<<30)
	p.Add(1 << 20)
	p.Finish()
	if got, want := b.String(), "Scanning   "+fullBar+"\n"; got != want {
		t.Errorf("Finish after 0.1%%: output = %q, want %q", got, want)
	}
}

func TestHumanBarOvershoot(t *testing.T) {
	var b bytes.Buffer
	p := New(&b, false)
	p.Start("Verifying", 100)
	p.Add(60)
	p.Add(60) // more than the total: the bar must stop at 100, once
	p.Add(10)
	p.Finish()
	if got, want := b.String(), "Verifying  "+fullBar+"\n"; got != want {
		t.Errorf("overshooting bar = %q, want %q", got, want)
	}
}

func TestHumanStep(t *testing.T) {
	var b bytes.Buffer
	p := New(&b, false)
	p.Step("Validating target")
	p.Done()
	if got, want := b.String(), "Validating target...done\n"; got != want {
		t.Errorf("Step/Done output = %q, want %q", got, want)
	}
}

func TestHumanSequence(t *testing.T) {
	var b bytes.Buffer
	p := New(&b, false)
	p.Step("Validating target")
	p.Done()
	p.Step("Validating source")
	p.Info("Source is %s", "disk.img")
	p.Done()
	p.Start("Restoring", 10)
	p.Add(10)
	p.Finish()
	p.Step("Verifying")
	p.Fail(errors.New("boom"))
	p.Info("Bye")
	want := "Validating target...done\n" +
		"Validating source...\n" +
		"Source is disk.img\n" +
		"Validating source...done\n" +
		"Restoring  " + fullBar + "\n" +
		"Verifying...failed\n" +
		"Bye\n"
	if got := b.String(); got != want {
		t.Errorf("output = %q, want %q", got, want)
	}
}

// TestHumanInfoDuringBar: a message in the middle of a bar gets a line of its
// own, and the bar is drawn again below it and goes on from where it was.
func TestHumanInfoDuringBar(t *testing.T) {
	var b bytes.Buffer
	p := New(&b, false)
	p.Start("Restoring", 100)
	p.Add(11)
	p.Info("retrying chunk %d", 7)
	p.Add(89)
	p.Finish()
	want := "Restoring  ....10\n" +
		"retrying chunk 7\n" +
		"Restoring  ....10" + strings.TrimPrefix(fullBar, "....10") + "\n"
	if got := b.String(); got != want {
		t.Errorf("output = %q, want %q", got, want)
	}
}

// TestStepNamed: the person sees the whole text, a program a fixed phase.
func TestStepNamed(t *testing.T) {
	for _, tt := range []struct {
		puppet bool
		want   string
	}{
		{false, "Erasing target device /dev/sdb...done\n"},
		{true, "PSTART\terasing\nPSTOP\terasing\n"},
	} {
		var b bytes.Buffer
		p := New(&b, tt.puppet)
		p.StepNamed("Erasing", "Erasing target device /dev/sdb")
		p.Done()
		if got := b.String(); got != tt.want {
			t.Errorf("StepNamed/Done (puppet %v) output = %q, want %q", tt.puppet, got, tt.want)
		}
	}
}

// puppetLine is one parsed puppetstrings line.
type puppetLine struct {
	kind   string
	fields []string
}

func parsePuppet(t *testing.T, out string) []puppetLine {
	t.Helper()
	if out != "" && !strings.HasSuffix(out, "\n") {
		t.Errorf("puppetstrings output %q does not end in a newline", out)
	}
	var lines []puppetLine
	for _, l := range strings.Split(strings.TrimSuffix(out, "\n"), "\n") {
		f := strings.Split(l, "\t")
		want := map[string]int{"PSTART": 2, "PPROG": 3, "PSTOP": 2, "PINFO": 2, "PERROR": 2}
		n, ok := want[f[0]]
		if !ok {
			t.Errorf("puppetstrings line %q: unknown kind %q", l, f[0])
			continue
		}
		if len(f) != n {
			t.Errorf("puppetstrings line %q has %d tab-separated fields, want %d", l, len(f), n)
			continue
		}
		lines = append(lines, puppetLine{f[0], f[1:]})
	}
	return lines
}

func TestPuppetPhase(t *testing.T) {
	var b bytes.Buffer
	p := New(&b, true)
	p.Start("Restoring", 1000)
	for _, n := range unevenSteps {
		p.Add(n)
	}
	p.Finish()
	lines := parsePuppet(t, b.String())
	if len(lines) < 3 {
		t.Fatalf("puppetstrings output %q has %d lines, want at least 3", b.String(), len(lines))
	}
	if first := lines[0]; first.kind != "PSTART" || first.fields[0] != "restoring" {
		t.Errorf("first line = %v, want PSTART restoring", first)
	}
	if last := lines[len(lines)-1]; last.kind != "PSTOP" || last.fields[0] != "restoring" {
		t.Errorf("last line = %v, want PSTOP restoring", last)
	}
	prev := -1
	for _, l := range lines[1 : len(lines)-1] {
		if l.kind != "PPROG" {
			t.Errorf("line %v inside the phase, want only PPROG", l)
			continue
		}
		if l.fields[0] != "restoring" {
			t.Errorf("PPROG phase = %q, want %q", l.fields[0], "restoring")
		}
		pct, err := strconv.Atoi(l.fields[1])
		if err != nil || pct < 0 || pct > 100 {
			t.Errorf("PPROG percent %q: want an integer 0-100", l.fields[1])
			continue
		}
		if pct <= prev {
			t.Errorf("PPROG percent %d after %d: want each percent once, increasing", pct, prev)
		}
		prev = pct
	}
	if prev != 100 {
		t.Errorf("last PPROG percent = %d, want 100", prev)
	}
	// The percents printed are exactly those reached after each Add.
	want := []string{"0"}
	var done, last int64
	for _, n := range unevenSteps {
		done += n
		if pct := done * 100 / 1000; pct > last {
			want = append(want, strconv.FormatInt(pct, 10))
			last = pct
		}
	}
	var got []string
	for _, l := range lines {
		if l.kind == "PPROG" {
			got = append(got, l.fields[1])
		}
	}
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Errorf("PPROG percents = %v, want %v", got, want)
	}
}

func TestPuppetEvents(t *testing.T) {
	var b bytes.Buffer
	p := New(&b, true)
	p.Step("Validating target")
	p.Done()
	p.Info("Image %s", "x.asr")
	p.Start("Restoring", 0) // an empty phase is done at once
	p.Add(0)
	p.Finish()
	p.Fail(errors.New("target too small"))
	want := "PSTART\tvalidating_target\n" +
		"PSTOP\tvalidating_target\n" +
		"PINFO\tImage x.asr\n" +
		"PSTART\trestoring\n" +
		"PPROG\trestoring\t0\n" +
		"PPROG\trestoring\t100\n" +
		"PSTOP\trestoring\n" +
		"PERROR\ttarget too small\n"
	if got := b.String(); got != want {
		t.Errorf("puppetstrings output = %q, want %q", got, want)
	}
	parsePuppet(t, b.String())
}

// TestConcurrentAdd adds from many goroutines at once; run with -race. A lost
// update leaves the phase short of 100%.
func TestConcurrentAdd(t *testing.T) {
	const goroutines, adds = 64, 200
	for _, puppet := range []bool{false, true} {
		var b bytes.Buffer
		p := New(&b, puppet)
		p.Start("Restoring", goroutines*adds)
		var wg sync.WaitGroup
		for range goroutines {
			wg.Go(func() {
				for range adds {
					p.Add(1)
				}
			})
		}
		wg.Wait()
		got := b.String()
		if puppet {
			lines := parsePuppet(t, got)
			prev := -1
			for _, l := range lines[1:] {
				pct, _ := strconv.Atoi(l.fields[1])
				if pct <= prev {
					t.Errorf("concurrent puppet: PPROG %d after %d, want increasing", pct, prev)
				}
				prev = pct
			}
			if prev != 100 {
				t.Errorf("concurrent puppet: %d Adds of 1 to a total of %d reached %d%%, want 100%%", goroutines*adds, goroutines*adds, prev)
			}
		} else if want := "Restoring  " + fullBar; got != want {
			t.Errorf("concurrent bar: %d Adds of 1 to a total of %d gave %q, want %q", goroutines*adds, goroutines*adds, got, want)
		}
	}
}

// TestConcurrentAddShort checks the other side: one unit short of the total
// must not show 100%.
func TestConcurrentAddShort(t *testing.T) {
	const goroutines, adds = 50, 200
	var b bytes.Buffer
	p := New(&b, true)
	p.Start("Restoring", goroutines*adds+1)
	var wg sync.WaitGroup
	for range goroutines {
		wg.Go(func() {
			for range adds {
				p.Add(1)
			}
		})
	}
	wg.Wait()
	lines := parsePuppet(t, b.String())
	if last := lines[len(lines)-1]; last.kind != "PPROG" || last.fields[1] != "99" {
		t.Errorf("one unit short of the total: last line = %v, want PPROG restoring 99", last)
	}
}

// TestLogRecords: with NewLog every event is one JSON object on a line of
// its own, in order, and a phase of a million small steps logs each whole
// percent once, not a record per step.
func TestLogRecords(t *testing.T) {
	var b bytes.Buffer
	p := NewLog(slog.New(slog.NewJSONHandler(&b, nil)))
	p.Step("Validating target")
	p.Done()
	p.StepNamed("Erasing", "Erasing target device /dev/sdz")
	p.Done()
	p.Start("Restoring", 1_000_000)
	for range 1_000_000 {
		p.Add(1)
	}
	p.Finish()
	p.Info("Restored \x1b[31m %d bytes", 1_000_000)
	p.Start("Verifying", 10)
	p.Fail(errors.New("chunk 3: SHA-256 mismatch"))

	var events []string
	pcts := 0
	for i, line := range strings.Split(strings.TrimSuffix(b.String(), "\n"), "\n") {
		var rec struct {
			Time    time.Time
			Level   string
			Msg     string
			Event   string
			Phase   string
			Percent *int
		}
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			t.Fatalf("line %d %q is not JSON: %v", i+1, line, err)
		}
		if rec.Time.IsZero() || rec.Level != "INFO" || rec.Event == "" {
			t.Errorf("line %d %q lacks time, level or event", i+1, line)
		}
		if rec.Event == "progress" {
			pcts++
			if rec.Phase != "restoring" || rec.Percent == nil || *rec.Percent != pcts {
				t.Errorf("progress record %d = %q, want restoring at %d%%", pcts, line, pcts)
			}
			continue
		}
		events = append(events, rec.Event+":"+rec.Phase+":"+rec.Msg)
	}
	want := []string{"step:validating_target:Validating target", "step_done:validating_target:Validating target done",
		"step:erasing:Erasing target device /dev/sdz", "step_done:erasing:Erasing done",
		"step:restoring:Restoring", "step_done:restoring:Restoring done",
		"info::Restored \x1b[31m 1000000 bytes", "step:verifying:Verifying"}
	if got := strings.Join(events, "\n"); got != strings.Join(want, "\n") {
		t.Errorf("events:\n%s\nwant:\n%s", got, strings.Join(want, "\n"))
	}
	if pcts != 100 {
		t.Errorf("%d progress records for a million steps, want one per percent (100)", pcts)
	}
	if p.Failed() != "verifying" {
		t.Errorf("Failed() = %q, want verifying", p.Failed())
	}
}

// TestWatch: a watcher sees the phases and the counts as the output does.
func TestWatch(t *testing.T) {
	var b bytes.Buffer
	p := New(&b, false)
	var got []string
	var last Event
	p.Watch(func(e Event) {
		if e.Kind != Progressed {
			got = append(got, strconv.Itoa(int(e.Kind))+":"+e.Phase)
		}
		last = e
	})
	p.StepNamed("Erasing", "Erasing target device /dev/sdz")
	p.Done()
	p.Start("Restoring", 100)
	p.Add(40)
	if last.Kind != Progressed || last.Done != 40 || last.Total != 100 || last.Began.IsZero() {
		t.Errorf("after Add(40) the watcher saw %+v", last)
	}
	p.Fail(errors.New("disk gone"))
	if want := "0:erasing,2:erasing,0:restoring,4:restoring"; strings.Join(got, ",") != want {
		t.Errorf("watched %s, want %s", strings.Join(got, ","), want)
	}
	if last.Text != "disk gone" || !strings.HasPrefix(b.String(), "Erasing target device /dev/sdz...done\nRestoring  ....10....20....30....40failed\n") {
		t.Errorf("last event %+v, output %q", last, b.String())
	}
}
