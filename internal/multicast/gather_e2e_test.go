package multicast

import (
	"fmt"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/asrlinux/asr/internal/testenv"
)

// With Minimum Clients 3, three clients that join seconds apart (as a lab
// of machines powered on together does) get one pass between them: the
// stream starts once the third has joined, and the first two neither time
// out nor fetch the image over their control connections meanwhile.
func TestE2EMinimumClients(t *testing.T) {
	l := newMLab(t, "g", 3)
	disk, img := l.image(81)
	want := testenv.Hash(t, disk, 0, diskSize)
	srv := l.server(l.srv, img, l.config("239.255.10.81", 8000000,
		"<key>Minimum Clients</key><integer>3</integer>\n<key>Client Wait</key><integer>60</integer>\n"))
	var wg sync.WaitGroup
	res := make([]clientResult, 3)
	targets := make([]string, 3)
	for i, h := range l.clients {
		targets[i] = l.target(fmt.Sprintf("t%d.raw", i), uint64(80+i))
		wg.Go(func() {
			// 3 s apart: past a client's 2 s wait before it fetches
			// over TCP a stream it does not receive, and past --timeout.
			time.Sleep(time.Duration(i) * 3 * time.Second)
			res[i] = l.restore(h, targets[i], "--timeout", "2")
		})
	}
	wg.Wait()
	log := srv.log()
	for i, r := range res {
		if !restored(t, i, r, targets[i], want) {
			continue
		}
		if _, _, repaired, _, _, _ := note(t, r.out); repaired != 0 || strings.Contains(r.out, "over the control connection") {
			t.Errorf("client %d fetched %d chunks over its control connection while the stream waited for the others:\n%s", i+1, repaired, r.out)
		}
	}
	if !strings.Contains(res[0].out, "the server starts its stream when 3 clients have joined, or within 1m0s") {
		t.Errorf("the first client was not told that the stream waits for 3 clients:\n%s", res[0].out)
	}
	for _, line := range []string{"Waiting for clients: 1 of 3 joined", "Waiting for clients: 2 of 3 joined", "3 of 3 clients joined: starting the stream"} {
		if !strings.Contains(log, line) {
			t.Errorf("server log lacks %q:\n%s", line, log)
		}
	}
	// The first pass, which served all three, started after the third
	// joined.
	third := regexp.MustCompile(`Client ` + regexp.QuoteMeta(l.clients[2].Addr) + ` \(.*\) joined`).FindStringIndex(log)
	start := strings.Index(log, "Starting stream ")
	if third == nil || start < third[0] {
		t.Errorf("the stream started before the third client joined:\n%s", log)
	}
	srv.stop(t)
}

// Fewer clients than Minimum Clients: the stream starts Client Wait after
// the first joined, and that client, told so, waited past its --timeout
// without fetching anything over its control connection.
func TestE2EClientWaitPasses(t *testing.T) {
	l := newMLab(t, "h", 1)
	disk, img := l.image(82)
	srv := l.server(l.srv, img, l.config("239.255.10.82", 20000000,
		"<key>Minimum Clients</key><integer>4</integer>\n<key>Client Wait</key><integer>5</integer>\n"))
	target := l.target("t.raw", 82)
	r := l.restore(l.clients[0], target, "--timeout", "3")
	if r.code != 0 || testenv.Hash(t, target, 0, diskSize) != testenv.Hash(t, disk, 0, diskSize) {
		t.Fatalf("restore: exit %d, or the target differs\n%s", r.code, r.out)
	}
	if _, _, repaired, _, _, _ := note(t, r.out); repaired != 0 {
		t.Errorf("the client fetched %d chunks over its control connection while the stream waited:\n%s", repaired, r.out)
	}
	if r.took < 5*time.Second {
		t.Errorf("the client was done in %s, before the 5 s Client Wait passed", r.took)
	}
	if log := srv.log(); !strings.Contains(log, "Client Wait of 5s passed with 1 of 4 clients joined: starting the stream") {
		t.Errorf("server log lacks the Client Wait line:\n%s", log)
	}
	srv.stop(t)
}
