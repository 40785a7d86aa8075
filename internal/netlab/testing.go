package netlab

import (
	"os/exec"
	"testing"
	"time"
)

// NewT is New for a test: the lab is closed when t ends.
func NewT(t testing.TB, prefix string) *Lab {
	t.Helper()
	l, err := New(prefix)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

// AddHostT is AddHost for a test; the host goes with the lab.
func (l *Lab) AddHostT(t testing.TB, name string, n int) *Host {
	t.Helper()
	h, err := l.AddHost(name, n)
	if err != nil {
		t.Fatal(err)
	}
	return h
}

// StartProcT is StartProc for a test: the process is stopped when t ends,
// and its output logged if t failed.
func StartProcT(t testing.TB, name string, cmd *exec.Cmd) *Proc {
	t.Helper()
	p, err := StartProc(name, cmd)
	if err != nil {
		t.Fatal(err)
	}
	own(t, p)
	return p
}

// StartDHCPT is StartDHCP for a test, with StartProcT's cleanup.
func StartDHCPT(t testing.TB, h *Host, dir string, args ...string) *Proc {
	t.Helper()
	p, err := StartDHCP(h, dir, args...)
	if err != nil {
		t.Fatal(err)
	}
	own(t, p)
	return p
}

// StartNginxT is StartNginx for a test, with StartProcT's cleanup.
func StartNginxT(t testing.TB, h *Host, root string, port int, dir string) *Proc {
	t.Helper()
	p, err := StartNginx(h, root, port, dir)
	if err != nil {
		t.Fatal(err)
	}
	own(t, p)
	return p
}

// WaitForT is WaitFor for a test.
func (p *Proc) WaitForT(t testing.TB, pattern string, timeout time.Duration) {
	t.Helper()
	if err := p.WaitFor(pattern, timeout); err != nil {
		t.Fatal(err)
	}
}

func own(t testing.TB, p *Proc) {
	t.Cleanup(func() {
		if err := p.Stop(); err != nil {
			t.Errorf("stopping %s: %v", p.Name, err)
		}
		if t.Failed() {
			t.Logf("output of %s:\n%s", p.Name, p.Output.Log())
		}
	})
}
