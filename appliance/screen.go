package appliance

import (
	"errors"
	"fmt"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/asrlinux/asr/internal/progress"
	"github.com/asrlinux/asr/internal/restore"
	"github.com/asrlinux/asr/internal/safetext"
	"github.com/asrlinux/asr/internal/source"
)

// Stage is what the appliance is doing, as its screen names it to a person
// walking past the machine.
type Stage int

// The stages, in the order a restore goes through them.
const (
	StageStarting  Stage = iota // drivers, keys
	StageDisk                   // finding the disk to restore
	StageNetwork                // DHCP
	StageServer                 // finding the source
	StageRestoring              // validating, erasing, writing
	StageVerifying              // reading the disk back
	StageDone
	StageFailed
)

// word is the stage's big word; subtitle says it in a sentence.
func (s Stage) word() string {
	return [...]string{"STARTING", "DISK", "NETWORK", "SERVER", "RESTORING", "VERIFYING", "DONE", "FAILED"}[s]
}

func (s Stage) subtitle() string {
	return [...]string{"Starting up: loading drivers", "Finding the disk to restore", "Getting a network address (DHCP)",
		"Looking for the image to restore", "Restoring the disk: do not switch off", "Checking the disk against the image: do not switch off",
		"The disk is restored", "The restore stopped"}[s]
}

// Status is what the appliance's screen shows.
type Status struct {
	Version string
	Stage   Stage
	Step    string // the step under way ("Erasing target device /dev/vda")
	IP, MAC string
	Server  string // the source, its URL redacted
	Image   string // the image's name, as its manifest says (untrusted)
	Disk    string // the target
	// Done and Total count the current phase's bytes; Began is when it
	// began. Total is 0 outside the long phases.
	Done, Total int64
	Began       time.Time
	// Failed: the reason, and what to do about it.
	Err, Hint string
	// Result: a line saying what was restored (StageDone).
	Result string
	Log    []string // the console's last lines, oldest first
}

// big is a 5-row block font for the stage words: readable from across a
// room on an 80-column console.
var big = map[rune][5]string{
	'A': {" ### ", "#   #", "#####", "#   #", "#   #"},
	'D': {"#### ", "#   #", "#   #", "#   #", "#### "},
	'E': {"#####", "#    ", "#### ", "#    ", "#####"},
	'F': {"#####", "#    ", "#### ", "#    ", "#    "},
	'G': {" ####", "#    ", "#  ##", "#   #", " ####"},
	'I': {"#####", "  #  ", "  #  ", "  #  ", "#####"},
	'K': {"#   #", "#  # ", "###  ", "#  # ", "#   #"},
	'L': {"#    ", "#    ", "#    ", "#    ", "#####"},
	'N': {"#   #", "##  #", "# # #", "#  ##", "#   #"},
	'O': {" ### ", "#   #", "#   #", "#   #", " ### "},
	'R': {"#### ", "#   #", "#### ", "#  # ", "#   #"},
	'S': {" ####", "#    ", " ### ", "    #", "#### "},
	'T': {"#####", "  #  ", "  #  ", "  #  ", "  #  "},
	'V': {"#   #", "#   #", "#   #", " # # ", "  #  "},
	'W': {"#   #", "#   #", "# # #", "## ##", "#   #"},
	'Y': {"#   #", " # # ", "  #  ", "  #  ", "  #  "},
	'0': {" ### ", "#  ##", "# # #", "##  #", " ### "},
	'1': {"  #  ", " ##  ", "  #  ", "  #  ", " ### "},
	'2': {" ### ", "#   #", "  ## ", " #   ", "#####"},
	'3': {"#### ", "    #", " ### ", "    #", "#### "},
	'4': {"#  # ", "#  # ", "#####", "   # ", "   # "},
	'5': {"#####", "#    ", "#### ", "    #", "#### "},
	'6': {" ### ", "#    ", "#### ", "#   #", " ### "},
	'7': {"#####", "    #", "   # ", "  #  ", "  #  "},
	'8': {" ### ", "#   #", " ### ", "#   #", " ### "},
	'9': {" ### ", "#   #", " ####", "    #", " ### "},
	'%': {"##  #", "## # ", "  #  ", " # ##", "#  ##"},
}

// bigText renders word in the block font, six columns a letter.
func bigText(word string) []string {
	rows := make([]string, 5)
	for _, r := range word {
		g, ok := big[r]
		if !ok {
			g = [5]string{"     ", "     ", "     ", "     ", "     "}
		}
		for i := range rows {
			rows[i] += strings.ReplaceAll(g[i], "#", "█") + " "
		}
	}
	return rows
}

// Render lays st out for a console of width columns and height rows, one
// string a row, without escape sequences: a header with the version, IP
// and MAC; the stage in big letters; a sentence; the progress bar with
// percent and ETA, or on failure the reason and what to do; the server,
// image and disk; and the console's last lines below a rule. Text from
// outside (the image's name, the log, the error) is escaped with
// safetext and cut to the width.
func Render(st Status, now time.Time, width, height int) []string {
	width, height = max(width, 40), max(height, 20)
	var rows []string
	add := func(s string) { rows = append(rows, cut(s, width)) }
	rule := strings.Repeat("─", width)

	left := " asr imaging appliance " + safetext.Line(st.Version)
	right := ""
	if st.IP != "" {
		right += "IP " + safetext.Line(st.IP) + "  "
	}
	if st.MAC != "" {
		right += "MAC " + safetext.Line(st.MAC) + " "
	}
	add(left + strings.Repeat(" ", max(1, width-utf8.RuneCountInString(left)-utf8.RuneCountInString(right))) + right)
	add(rule)
	add("")
	word := st.Stage.word()
	if (st.Stage == StageRestoring || st.Stage == StageVerifying) && st.Total > 0 {
		// The percentage too, in big figures, when the screen is wide
		// enough for both.
		if w := fmt.Sprintf("%s %d%%", word, min(max(st.Done, 0), st.Total)*100/st.Total); 2+6*len(w) <= width {
			word = w
		}
	}
	for _, r := range bigText(word) {
		add("  " + r)
	}
	add("")
	add("  " + st.Stage.subtitle())
	add("")
	switch st.Stage {
	case StageFailed:
		for _, l := range wrap("Reason: "+safetext.Line(st.Err), width-4, 5) {
			add("  " + l)
		}
		add("")
		for _, l := range wrap("What to do: "+safetext.Line(st.Hint), width-4, 3) {
			add("  " + l)
		}
	case StageDone:
		for _, l := range wrap(safetext.Line(st.Result), width-4, 2) {
			add("  " + l)
		}
		add("")
		add("  " + bar(100, width-14) + " 100%")
	default:
		if st.Step != "" {
			add("  " + safetext.Line(st.Step))
		} else {
			add("")
		}
		add("")
		if st.Total > 0 {
			pct := int(min(st.Done, st.Total) * 100 / st.Total)
			add(fmt.Sprintf("  %s %3d%%  %s", bar(pct, width-36), pct, eta(st, now)))
			add(fmt.Sprintf("  %s of %s", progress.HumanBytes(st.Done), progress.HumanBytes(st.Total)))
		} else {
			add("")
			add("")
		}
	}
	add("")
	field := func(name, v string) {
		if v != "" {
			add(fmt.Sprintf("  %-7s %s", name, safetext.Line(v)))
		}
	}
	field("Server", st.Server)
	field("Image", st.Image)
	field("Disk", st.Disk)
	add(rule)
	// The console's last lines fill what is left of the screen.
	n := height - len(rows)
	if n <= 0 {
		return rows[:height]
	}
	logs := st.Log
	if len(logs) > n {
		logs = logs[len(logs)-n:]
	}
	for _, l := range logs {
		add(" " + safetext.Line(l))
	}
	return rows
}

// bar is a progress bar of width columns: [█████░░░░░].
func bar(pct, width int) string {
	inner := max(width-2, 10)
	full := inner * min(max(pct, 0), 100) / 100
	return "[" + strings.Repeat("█", full) + strings.Repeat("░", inner-full) + "]"
}

// eta is the time the phase still needs at its speed so far: "ETA 1m20s",
// "ETA --" until there is enough to tell.
func eta(st Status, now time.Time) string {
	el := now.Sub(st.Began)
	if st.Began.IsZero() || st.Done <= 0 || el < 2*time.Second {
		return "ETA --"
	}
	rate := float64(st.Done) / el.Seconds()
	left := time.Duration(float64(st.Total-min(st.Done, st.Total)) / rate * float64(time.Second))
	return fmt.Sprintf("ETA %s  %s/s", left.Round(time.Second), progress.HumanBytes(int64(rate)))
}

// cut shortens s to width runes.
func cut(s string, width int) string {
	if utf8.RuneCountInString(s) <= width {
		return s
	}
	r := []rune(s)
	return string(r[:width])
}

// wrap breaks s into at most n lines of width runes, at spaces where it
// can; what does not fit ends in "...".
func wrap(s string, width, n int) []string {
	var lines []string
	for s != "" && len(lines) < n {
		r := []rune(s)
		if len(r) <= width {
			lines = append(lines, s)
			return lines
		}
		at := width
		if i := strings.LastIndex(string(r[:width]), " "); i > width/2 {
			at = utf8.RuneCountInString(string(r[:width])[:i])
		}
		lines = append(lines, string(r[:at]))
		s = strings.TrimLeft(string(r[at:]), " ")
	}
	if s != "" && len(lines) > 0 {
		l := []rune(lines[len(lines)-1])
		lines[len(lines)-1] = string(l[:max(0, min(len(l), width-3))]) + "..."
	}
	return lines
}

// whatToDo is the advice for a failure at stage: for the person at the
// machine, who may not know asr.
// erased says whether the restore had begun to erase the disk.
func whatToDo(stage Stage, erased bool, err error) string {
	var stall *source.StallError
	var grow *restore.GrowError
	switch {
	case errors.As(err, &grow) && erased:
		// The engine grows only after the whole image is on the disk.
		return "The image was restored, but the disk was not grown to fill it (see above): the system boots at the image's size. Grow it from that system, or remove asr.grow. Then switch the machine off and on."
	case errors.As(err, &grow):
		return "Nothing was written to the disk. asr.grow needs a disk larger than the image: remove asr.grow for this machine. Then switch the machine off and on."
	case errors.As(err, &stall):
		return "The server stopped sending. Check that asr server still runs and the network cable, or raise asr.timeout= if the server is only slow. Then switch the machine off and on."
	case stage == StageStarting:
		return "Correct the asr.* kernel parameters (in the boot menu or the netboot script) and start the machine again."
	case stage == StageDisk:
		return "Check that the disk is connected and seen by the firmware; with several disks, name one with asr.target=. Then switch the machine off and on."
	case stage == StageNetwork:
		return "Check the network cable and that a DHCP server answers on this network. Then switch the machine off and on."
	case stage == StageServer:
		return "Start asr server on this network (with DNS Service Discovery), or give asr.source= on the kernel command line. Then switch the machine off and on."
	case erased:
		return "The disk is incomplete: its start was blanked so that it does not boot half-restored. Check the server, the image and the network, then switch the machine off and on to restore again."
	case stage == StageRestoring:
		return "Nothing was written to the disk. Check the image and the server (and that the disk is large enough), then switch the machine off and on."
	}
	return "Fix the problem above, then switch the machine off and on."
}
