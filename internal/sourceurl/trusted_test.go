package sourceurl

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"aead.dev/minisign"

	"github.com/asrlinux/asr/internal/trust"
)

// A local raw image carries no signature: the CLI's policy (LocalClones)
// lets it through with a line saying so; the appliance's refuses it.
func TestCheckTrustLocalRaw(t *testing.T) {
	pub, _, err := minisign.GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	keys := []trust.Key{{ID: pub.ID(), Pub: pub}}
	raw := filepath.Join(t.TempDir(), "disk.img")
	if err := os.WriteFile(raw, make([]byte, 1<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		p       Policy
		refused bool
		say     string
	}{
		{Policy{Keys: keys, LocalClones: true}, false, "not signature-checked"},
		{Policy{Keys: keys}, true, "image refused, nothing was written: only prepared images carry signatures"},
		{Policy{}, false, ""},
	} {
		src, err := Open(context.Background(), raw, Options{})
		if err != nil {
			t.Fatal(err)
		}
		var log strings.Builder
		c.p.Log = func(f string, a ...any) { fmt.Fprintf(&log, f+"\n", a...) }
		got, err := CheckTrust(src, c.p)
		if c.refused {
			if err == nil || got != nil || !strings.Contains(err.Error(), c.say) || !errors.Is(err, trust.ErrNotPrepared) {
				t.Errorf("CheckTrust(raw, %d keys, LocalClones %v) = %v, %v; want a refusal saying %q", len(c.p.Keys), c.p.LocalClones, got, err, c.say)
			}
			continue
		}
		if err != nil || got == nil || !strings.Contains(log.String(), c.say) {
			t.Errorf("CheckTrust(raw, %d keys, LocalClones %v) = %v, %v, log %q; want it through, saying %q", len(c.p.Keys), c.p.LocalClones, got, err, log.String(), c.say)
		}
		if got != nil {
			got.Close()
		}
	}
}
