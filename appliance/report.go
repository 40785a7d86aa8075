package appliance

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/asrlinux/asr/internal/redact"
	"github.com/asrlinux/asr/internal/source"
)

// Report is one status report the appliance POSTs, as a JSON object, to the
// URL of asr.report= (Content-Type application/json). A restore sends
// "joined" when its data starts to flow, "progress" when its percentage
// moves (at most once a second, and only the latest if the report server
// is slow), then exactly one "done" or "failed". Failures after the
// network is up are reported as "failed" even when no data flowed (no
// server found by DNS-SD, a target too small); failures before it (no
// disk to restore, no DHCP lease) cannot be. Example:
//
//	{"client":"52:54:00:12:34:0a","mac":"52:54:00:12:34:0a",
//	 "disk":"/dev/vda (64.0 MiB)","source":"http://198.18.0.1/lab.asr",
//	 "event":"progress","percent":40,"time":"2026-11-26T06:10:00Z"}
//
// A report that cannot be delivered (no answer within 5 s, an HTTP error)
// is dropped with one console line: reporting never fails or holds up a
// restore.
type Report struct {
	Client  string    `json:"client"` // host name, or the MAC address when it has none
	MAC     string    `json:"mac"`    // of the interface that got the first lease
	Disk    string    `json:"disk"`   // the target, as the console names it
	Source  string    `json:"source"`
	Event   string    `json:"event"`             // joined, progress, done, failed
	Percent int       `json:"percent"`           // 0-100
	Message string    `json:"message,omitempty"` // failed: why (a refused image: the key IDs that signed it, or "not signed")
	Time    time.Time `json:"time"`
}

// reportTimeout bounds each POST.
const reportTimeout = 5 * time.Second

// reporter posts Reports to one URL from a goroutine of its own, so that a
// slow report server never slows the restore.
type reporter struct {
	url    string
	base   Report
	logf   func(string, ...any)
	client http.Client
	next   chan Report // holds at most the latest progress
	stop   chan struct{}
	done   chan struct{}
	warned atomic.Bool
	once   sync.Once
}

func newReporter(url string, base Report, logf func(string, ...any)) *reporter {
	r := &reporter{url: url, base: base, logf: logf, client: http.Client{Timeout: reportTimeout},
		next: make(chan Report, 1), stop: make(chan struct{}), done: make(chan struct{})}
	go r.loop()
	return r
}

func (r *reporter) loop() {
	defer close(r.done)
	for {
		select {
		case <-r.stop:
			return
		case rep := <-r.next:
			r.post(rep)
		}
	}
}

// send queues a report, replacing one not sent yet.
func (r *reporter) send(event string, pct int) {
	rep := r.base
	rep.Event, rep.Percent, rep.Time = event, pct, time.Now().UTC()
	for {
		select {
		case r.next <- rep:
			return
		default:
		}
		select {
		case <-r.next: // drop the older one
		default:
		}
	}
}

// final sends the last report and waits for it (at most reportTimeout); only
// the first call counts.
func (r *reporter) final(err error, pct int) {
	r.once.Do(func() {
		close(r.stop)
		<-r.done
		rep := r.base
		rep.Event, rep.Percent, rep.Time = "done", 100, time.Now().UTC()
		if err != nil {
			rep.Event, rep.Percent, rep.Message = "failed", pct, redact.Text(err.Error())
		}
		r.post(rep)
	})
}

func (r *reporter) post(rep Report) {
	b, _ := json.Marshal(rep)
	ctx, cancel := context.WithTimeout(context.Background(), reportTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, r.url, bytes.NewReader(b))
	if err == nil {
		req.Header.Set("Content-Type", "application/json")
		var resp *http.Response
		if resp, err = r.client.Do(req); err == nil {
			resp.Body.Close()
			if resp.StatusCode/100 != 2 {
				err = fmt.Errorf("%s", resp.Status)
			}
		}
	}
	if err != nil && r.warned.CompareAndSwap(false, true) {
		r.logf("asr.report: %s report not delivered: %v (the restore goes on; later failures are not shown)", rep.Event, redact.Error(err))
	}
}

// reportingSource counts the chunks a source delivers and reports the
// percentage; every other method is the source's own.
type reportingSource struct {
	source.Source
	r     *reporter
	count atomic.Int64
	pct   atomic.Int64
	// skipped is how many chunks a delta restore has the source leave
	// out: they never come, so the percentage is of the others.
	skipped int64
}

// Skip passes a delta restore's chunks to leave out to the source, when it
// can leave them out; the engine does not write them either way.
func (s *reportingSource) Skip(have func(int) bool) {
	sk, ok := s.Source.(source.Skipper)
	if !ok {
		return
	}
	sk.Skip(have)
	if m := s.Source.Info().Manifest; m != nil {
		for i, c := range m.Chunks {
			if c.Codec.Stored() && have(i) {
				s.skipped++
			}
		}
	}
}

func (s *reportingSource) Run(ctx context.Context, workers int, fn func(source.Chunk) error) error {
	info := s.Source.Info()
	total := int64(1)
	if info.ChunkSize > 0 {
		total = max(1, (info.Size+int64(info.ChunkSize)-1)/int64(info.ChunkSize)-s.skipped)
	}
	s.r.send("joined", 0)
	var mu sync.Mutex
	last := time.Now()
	return s.Source.Run(ctx, workers, func(c source.Chunk) error {
		err := fn(c)
		pct := s.count.Add(1) * 100 / total
		if pct > s.pct.Load() && pct < 100 {
			mu.Lock()
			if time.Since(last) >= time.Second {
				last = time.Now()
				s.pct.Store(pct)
				s.r.send("progress", int(pct))
			}
			mu.Unlock()
		}
		return err
	})
}

// Note and Finished pass through what the engine asks of the source.
func (s *reportingSource) Note() string {
	if n, ok := s.Source.(source.Noter); ok {
		return n.Note()
	}
	return ""
}

func (s *reportingSource) Finished(err error) {
	if f, ok := s.Source.(source.Finisher); ok {
		f.Finished(err)
	}
}
