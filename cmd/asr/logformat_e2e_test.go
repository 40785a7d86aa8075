package main

// End-to-end tests of --log-format json: asr restore on loop devices here,
// asr server with clients in the namespace lab below.

import (
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"
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
			if rec.num("total") != diskSize {
				t.Errorf("progress record totals %v, want the disk's %d bytes: %v", rec.num("total"), diskSize, rec.all)
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
