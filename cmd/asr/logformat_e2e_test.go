package main

// End-to-end tests of --log-format json: asr restore on loop devices here,
// asr server with clients in the namespace lab below.

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/asrlinux/asr/internal/testenv"
)

// record is one line of --log-format json, its common fields parsed and
// the whole object kept for the event's own.
type record struct {
	Time  time.Time
	Level string
	Msg   string
	Event string
	Phase string
	all   map[string]any
}

func (r record) str(k string) string { s, _ := r.all[k].(string); return s }
func (r record) num(k string) float64 {
	n, _ := r.all[k].(float64)
	return n
}

// parseLog fails t unless every line of out is a JSON object with time,
// level, msg and event.
func parseLog(t *testing.T, out string) []record {
	t.Helper()
	var recs []record
	for i, line := range strings.Split(strings.TrimSuffix(out, "\n"), "\n") {
		var r record
		if err := json.Unmarshal([]byte(line), &r); err != nil {
			t.Fatalf("line %d is not JSON (%v): %q\nall output:\n%s", i+1, err, line, out)
		}
		json.Unmarshal([]byte(line), &r.all)
		if r.Time.IsZero() || r.Level == "" || r.Msg == "" || r.Event == "" {
			t.Errorf("line %d lacks time, level, msg or event: %s", i+1, line)
		}
		recs = append(recs, r)
	}
	return recs
}

// TestE2ERestoreJSONLog: a restore onto a loop device logs started, its
// source, the erase, progress, the verification and done, in that order,
// each line a JSON object; progress only grows and is bounded in count.
func TestE2ERestoreJSONLog(t *testing.T) {
	requireRoot(t)
	dir := t.TempDir()
	disk := makeDisk(t, dir, diskSize, 31)
	img := scan(t, disk)
	tfile := filepath.Join(dir, "target.img")
	fillRandom(t, tfile, diskSize, 32)
	dev := loop(t, tfile)

	r := mustAsr(t, "restore", "--source", img, "--target", dev, "--erase", "--noprompt", "--log-format", "json")
	if got, want := hashRange(t, dev, 0, diskSize), hashRange(t, disk, 0, diskSize); got != want {
		t.Fatalf("target sha256 %s, want %s (the source disk)", got, want)
	}
	recs := parseLog(t, r.stdout)
	var seq []string
	progress := map[string][]float64{}
	for _, rec := range recs {
		switch rec.Event {
		case "progress":
			progress[rec.Phase] = append(progress[rec.Phase], rec.num("percent"))
			// Restoring counts the whole disk; the verify pass counts only
			// what it reads: the chunks not read back as they were written
			// (the first and the last), so less than the disk.
			switch total := rec.num("total"); {
			case rec.Phase == "restoring" && total != diskSize:
				t.Errorf("restoring progress totals %v, want the disk's %d bytes: %v", total, diskSize, rec.all)
			case rec.Phase == "verifying" && (total <= 0 || total >= diskSize):
				t.Errorf("verifying progress totals %v, want what the verify pass reads, more than 0 and less than the disk's %d bytes: %v", total, diskSize, rec.all)
			}
			if l := len(seq); l == 0 || seq[l-1] != "progress "+rec.Phase {
				seq = append(seq, "progress "+rec.Phase)
			}
		case "step", "step_done":
			seq = append(seq, rec.Event+" "+rec.Phase)
		default:
			seq = append(seq, rec.Event)
		}
	}
	want := []string{"started", "step validating_target", "step_done validating_target", "step validating_source", "source",
		"step_done validating_source", "step retrieving_scan_information", "step_done retrieving_scan_information",
		"step validating_sizes", "step_done validating_sizes", "step erasing", "step_done erasing",
		"step restoring", "progress restoring", "step_done restoring",
		"step verifying", "progress verifying", "step_done verifying", "info", "info", "done"}
	if got := strings.Join(seq, "\n"); got != strings.Join(want, "\n") {
		t.Errorf("events:\n%s\nwant:\n%s\nlog:\n%s", got, strings.Join(want, "\n"), r.stdout)
	}
	for phase, pcts := range progress {
		for i := 1; i < len(pcts); i++ {
			if pcts[i] < pcts[i-1] {
				t.Errorf("%s progress went back from %v to %v", phase, pcts[i-1], pcts[i])
			}
		}
		if len(pcts) > 101 || pcts[len(pcts)-1] != 100 {
			t.Errorf("%s: %d progress records ending at %v%%, want at most one per percent, ending at 100", phase, len(pcts), pcts[len(pcts)-1])
		}
	}
	first, last := recs[0], recs[len(recs)-1]
	if first.str("source") != img || first.str("target") != dev || first.all["erase"] != true {
		t.Errorf("started record = %v, want source %s, target %s, erase", first.all, img, dev)
	}
	for _, rec := range recs {
		if rec.Event == "source" && (rec.str("kind") != "prepared image" || !strings.HasPrefix(rec.str("digest"), "sha256:") || rec.str("image") == "") {
			t.Errorf("source record = %v, want the prepared image's name and digest", rec.all)
		}
	}
	if last.all["verified"] != true || last.num("size") != diskSize || last.str("target") != dev {
		t.Errorf("done record = %v, want %s verified, %d bytes", last.all, dev, diskSize)
	}
	if r.stderr != "" {
		t.Errorf("a restore that succeeded wrote to stderr: %q", r.stderr)
	}
}

// TestE2ERestoreJSONLogFailures: a restore that fails ends its log with a
// failed record (the reason, the phase, the exit status it exits with),
// and so does a wrong command line once --log-format json is read.
func TestE2ERestoreJSONLogFailures(t *testing.T) {
	requireRoot(t)
	dir := t.TempDir()
	disk := makeDisk(t, dir, diskSize, 33)
	img := scan(t, disk)
	bad := corruptChunk(t, img)
	tfile := filepath.Join(dir, "target.img")
	fillRandom(t, tfile, diskSize, 34)
	dev := loop(t, tfile)

	for _, c := range []struct {
		name         string
		args         []string
		code         int
		phase, cause string
	}{
		{"corrupt chunk", []string{"--source", img, "--target", dev, "--erase", "--noprompt"}, 1, "restoring", fmt.Sprintf("chunk %d", bad)},
		{"no confirmation", []string{"--source", img, "--target", dev, "--erase"}, 1, "", "add --noprompt"},
		{"no target", []string{"--source", img, "--erase"}, 2, "", "--target is required"},
		{"two output formats", []string{"--source", img, "--target", dev, "--erase", "--noprompt", "--puppetstrings"}, 2, "", "not both"},
	} {
		t.Run(c.name, func(t *testing.T) {
			r := asr(t, append(append([]string{"restore"}, c.args...), "--log-format", "json")...)
			if r.code != c.code {
				t.Fatalf("exit %d, want %d (%v)", r.code, c.code, r.err)
			}
			recs := parseLog(t, r.stdout)
			last := recs[len(recs)-1]
			if last.Event != "failed" || last.Level != "ERROR" || last.num("exit_code") != float64(c.code) ||
				last.Phase != c.phase || !strings.Contains(last.str("reason"), c.cause) {
				t.Errorf("last record = %v, want failed in phase %q with exit_code %d and a reason saying %q", last.all, c.phase, c.code, c.cause)
			}
			if n := strings.Count(r.stdout, `"event":"failed"`); n != 1 {
				t.Errorf("%d failed records, want 1", n)
			}
			if !strings.Contains(r.stderr, last.str("reason")) {
				t.Errorf("stderr %q does not give the failed record's reason %q", r.stderr, last.str("reason"))
			}
		})
	}
}

// TestE2EServerJSONLog: asr server --log-format json with two clients in
// the lab, one restoring a disk and one whose disk is too small: every line
// is a JSON object; the good client's joined, progress and done records
// and the other's failed record (with its reason) name their disks; SIGUSR1
// gives the clients as records, and the log ends with stopped.
func TestE2EServerJSONLog(t *testing.T) {
	testenv.Require(t, "ip", "sgdisk")
	const size = 16 << 20
	srvHost, cli, dir, img, cfg := serverLab(t, "jlog", "239.255.62.16", 20000000, size, 81)
	bin := testenv.Asr(t)
	srv := startServer(t, srvHost.Command(context.Background(), bin, "server", "--source", img, "--config", cfg, "--log-format", "json"))
	target := filepath.Join(dir, "target.raw")
	testenv.FillRandom(t, target, size, 82)
	small := filepath.Join(dir, "small.raw")
	testenv.FillRandom(t, small, size/2, 83)
	restore := func(disk string) ([]byte, error) {
		return cli.Command(context.Background(), bin, "restore", "--source", "asr://198.18.0.1", "--target", disk,
			"--erase", "--noprompt", "--timeout", "20").CombinedOutput()
	}
	if out, err := restore(small); err == nil {
		t.Fatalf("restore onto a disk half the image's size succeeded:\n%s", out)
	}
	if out, err := restore(target); err != nil {
		t.Fatalf("restore: %v\n%s", err, out)
	}
	if err := srv.Signal(syscall.SIGUSR1); err != nil {
		t.Fatal(err)
	}
	if _, err := srv.Output.Expect(`"event":"clients"`, 10*time.Second); err != nil {
		t.Fatalf("no clients record after SIGUSR1: %v\n%s", err, srv.Output.Log())
	}
	if err := srv.Stop(); err != nil {
		t.Fatal(err)
	}
	recs := parseLog(t, srv.Output.Log())
	if testing.Verbose() {
		t.Logf("the server's log:\n%s", srv.Output.Log())
	}

	byDisk := map[string][]record{} // the clients' records, by the disk they named
	var order []string
	for _, r := range recs {
		if d := r.str("disk"); d != "" {
			byDisk[d] = append(byDisk[d], r)
		}
		switch r.Event {
		case "started", "clients", "stopped", "pass":
			order = append(order, r.Event)
		}
	}
	if first, last := recs[0], recs[len(recs)-1]; first.Event != "started" || last.Event != "stopped" ||
		first.str("digest") == "" || first.num("size") != size || first.str("group") != "239.255.62.16" {
		t.Errorf("first record %v, last %v: want started (with the image's digest, size and group) and stopped", first.all, last.all)
	}
	if !slices.Contains(order, "pass") {
		t.Errorf("no pass record: %v", order)
	}

	// The client whose disk was too small: failed, with the reason, before
	// it ever joined.
	var bad []string
	for _, r := range byDisk[small] {
		bad = append(bad, r.Event)
	}
	if fail := last(byDisk[small], "failed"); fail == nil || fail.Level != "WARN" || !strings.Contains(fail.str("reason"), "too small") ||
		fail.str("state") != "failed" || fail.str("mac") == "" || fail.str("addr") != "198.18.0.11" {
		t.Errorf("records of the client with the small disk: %v; want failed with the reason, its MAC and address", bad)
	}
	if slices.Contains(bad, "joined") || slices.Contains(bad, "done") {
		t.Errorf("the client with the small disk: %v, want no joined or done", bad)
	}

	// The good client: joined, progress (each tenth, rising), done at 100%.
	var good []string
	pct := -1.0
	for _, r := range byDisk[target] {
		if r.Event == "client_status" {
			continue
		}
		if l := len(good); l == 0 || good[l-1] != r.Event {
			good = append(good, r.Event)
		}
		if r.Event == "progress" {
			if p := r.num("percent"); p <= pct || int(p)%10 != 0 && p != 100 && int(p)/10 == int(pct)/10 {
				t.Errorf("progress went from %v%% to %v%%", pct, p)
			}
			pct = r.num("percent")
		}
	}
	if got := strings.Join(good, ","); got != "joined,progress,done" {
		t.Errorf("the good client's events: %s, want joined,progress,done", got)
	}
	if done := last(byDisk[target], "done"); done == nil || done.num("percent") != 100 || done.str("state") != "done" || done.all["reason"] != nil {
		t.Errorf("the good client's done record: %v", done)
	}
	// SIGUSR1's records: one per client, and the count by state.
	states := 0
	for _, r := range recs {
		if r.Event == "client_status" {
			states++
		}
		if r.Event == "clients" {
			st, _ := r.all["states"].(map[string]any)
			if r.num("total") != 2 || st["done"] != 1.0 || st["failed"] != 1.0 {
				t.Errorf("clients record %v, want 2 clients: 1 done, 1 failed", r.all)
			}
		}
	}
	if states != 4 { // on SIGUSR1 and at stop
		t.Errorf("%d client_status records, want 2 on SIGUSR1 and 2 at stop", states)
	}
}

// last is the last record of event in recs, or nil.
func last(recs []record, event string) *record {
	for i := len(recs) - 1; i >= 0; i-- {
		if recs[i].Event == event {
			return &recs[i]
		}
	}
	return nil
}

// TestE2ERestoreJSONLogSignal: SIGTERM in the middle of a restore ends the
// log with a failed record whose exit_code is the status asr exits with,
// the shell's 143, and whose phase is the one it interrupted.
func TestE2ERestoreJSONLogSignal(t *testing.T) {
	requireRoot(t)
	dir := t.TempDir()
	disk := makeDisk(t, dir, diskSize, 35)
	img := scan(t, disk)
	st, _ := os.Stat(img)
	served := t.TempDir()
	if err := os.Link(img, filepath.Join(served, "disk.asr")); err != nil {
		t.Fatal(err)
	}
	base := stallServer(t, served, map[string]int64{"disk.asr": st.Size() / 3}, make(chan string, 1))
	code, stdout, _ := signalRun(t, []string{"restore", "--source", base + "/disk.asr", "--file", filepath.Join(dir, "new.img"), "--log-format", "json"},
		syscall.SIGTERM, func(line string) bool { return strings.Contains(line, `"event":"step","phase":"restoring"`) }, nil, nil)
	if code != 143 {
		t.Fatalf("exit status %d, want 143; stdout:\n%s", code, stdout)
	}
	recs := parseLog(t, stdout)
	if last := recs[len(recs)-1]; last.Event != "failed" || last.num("exit_code") != 143 || last.Phase != "restoring" ||
		!strings.Contains(last.str("reason"), "SIGTERM") {
		t.Errorf("last record %v, want failed in restoring, exit_code 143, the reason naming SIGTERM", last.all)
	}
}
