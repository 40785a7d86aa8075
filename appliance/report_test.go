package appliance

import (
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/asrlinux/asr/internal/sourceurl"
)

// TestReportRedacts: a status report never carries a source URL's password
// or signature, neither in its source nor in the failure message, and
// neither does the console line of a report that was not delivered.
func TestReportRedacts(t *testing.T) {
	var mu sync.Mutex
	var bodies []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		mu.Lock()
		bodies = append(bodies, string(b))
		mu.Unlock()
	}))
	defer srv.Close()
	src := "https://admin:hunter2@bucket.example/lab.asr?X-Amz-Credential=AKIAs3cr3t&X-Amz-Signature=SIGs3cr3t"
	var console strings.Builder
	logf := func(f string, a ...any) { console.WriteString(f) }
	r := newReporter(srv.URL+"/status", Report{Client: "pc1", Source: sourceurl.Redact(src)}, logf)
	r.final(errors.New("source "+src+": 403 Forbidden"), 10)

	// An undeliverable report: its console line quotes the report URL.
	var line strings.Builder
	bad := newReporter("http://127.0.0.1:1/status?token=TOKs3cr3t", Report{}, func(f string, a ...any) {
		line.WriteString(strings.ReplaceAll(f, "%v", "") + " ")
		for _, x := range a {
			if e, ok := x.(error); ok {
				line.WriteString(e.Error())
			}
		}
	})
	bad.final(nil, 100)

	mu.Lock()
	defer mu.Unlock()
	if len(bodies) != 1 {
		t.Fatalf("the report server got %d reports, want 1", len(bodies))
	}
	var got Report
	if err := json.Unmarshal([]byte(bodies[0]), &got); err != nil {
		t.Fatal(err)
	}
	if got.Event != "failed" || !strings.Contains(got.Message, "403 Forbidden") || !strings.Contains(got.Source, "bucket.example/lab.asr") {
		t.Errorf("report = %+v, want a failure naming the source and the 403", got)
	}
	for _, s := range []string{"hunter2", "AKIAs3cr3t", "SIGs3cr3t"} {
		if strings.Contains(bodies[0], s) {
			t.Errorf("the report shows the secret %q: %s", s, bodies[0])
		}
	}
	if !strings.Contains(line.String(), "not delivered") || strings.Contains(line.String(), "TOKs3cr3t") {
		t.Errorf("console line for an undelivered report = %q, want it to say so without the token", line.String())
	}
}
