package qemu_test

import (
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/asrlinux/asr/appliance"
	"github.com/asrlinux/asr/internal/testenv"
	"github.com/asrlinux/asr/qemu"
)

// reports is a real HTTP server in the lab that keeps what the appliance
// POSTs to asr.report=; it answers the first report with a 500, which must
// not disturb the restore.
type reports struct {
	mu   sync.Mutex
	got  []appliance.Report
	bad  []string
	seen int
}

func (rs *reports) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	b, _ := io.ReadAll(r.Body)
	rs.mu.Lock()
	defer rs.mu.Unlock()
	rs.seen++
	var rep appliance.Report
	if r.Method != http.MethodPost || r.Header.Get("Content-Type") != "application/json" || json.Unmarshal(b, &rep) != nil {
		rs.bad = append(rs.bad, r.Method+" "+r.Header.Get("Content-Type")+" "+string(b))
	} else {
		rs.got = append(rs.got, rep)
	}
	if rs.seen == 1 {
		http.Error(w, "busy", http.StatusInternalServerError)
	}
}

func TestApplianceReportsStatusOverHTTP(t *testing.T) {
	testenv.RequireVM(t)
	l := newVMLab(t, "n6br")
	l.nginx(t)
	disk, _ := image(t, l.srvDir, 48<<20, 611)
	target := emptyDisk(t, l.dir, "vda.img", 64<<20)
	ln, err := l.srv.Listen("198.18.0.1:8081")
	if err != nil {
		t.Fatal(err)
	}
	rs := &reports{}
	hs := &http.Server{Handler: rs}
	go hs.Serve(ln)
	defer hs.Close()

	vm := qemu.StartT(t, "n6breport", vmOpts(t, qemu.WithDisk(target), qemu.WithNIC(l.lab, 32),
		qemu.WithAppend("asr.source=http://198.18.0.1:8080/disk.asr", "asr.report=http://198.18.0.1:8081/asr/status"))...)
	took := expectSuccess(t, vm, 4*time.Minute)
	t.Logf("success %.1f s after QEMU started", took)
	sameBytes(t, disk, target)

	rs.mu.Lock()
	defer rs.mu.Unlock()
	if len(rs.bad) > 0 {
		t.Errorf("reports that are not JSON POSTs: %q", rs.bad)
	}
	if len(rs.got) < 2 {
		t.Fatalf("%d reports, want at least joined and done: %+v", len(rs.got), rs.got)
	}
	events := make([]string, len(rs.got))
	for i, r := range rs.got {
		events[i] = r.Event
		if r.MAC != "52:54:00:12:34:20" || r.Client == "" || !strings.HasPrefix(r.Disk, "/dev/vda (64.0 MiB") ||
			r.Source != "http://198.18.0.1:8080/disk.asr" || r.Time.IsZero() {
			t.Errorf("report %d = %+v; want MAC 52:54:00:12:34:20, disk /dev/vda, the source and a time", i, r)
		}
	}
	t.Logf("events: %v", events)
	if events[0] != "joined" || events[len(events)-1] != "done" || rs.got[len(rs.got)-1].Percent != 100 {
		t.Errorf("events %v: want joined first (even though the server answered it with a 500) and done at 100%% last", events)
	}
	for i, r := range rs.got[1 : len(rs.got)-1] {
		if r.Event != "progress" || r.Percent <= 0 || r.Percent >= 100 || i > 0 && r.Percent <= rs.got[i].Percent {
			t.Errorf("report %d = %s %d%%: between joined and done come rising progress reports", i+1, r.Event, r.Percent)
		}
	}
	if !strings.Contains(vm.Console.Log(), "asr.report: joined report not delivered: 500") {
		t.Errorf("the console does not say the first report was refused")
	}
}
