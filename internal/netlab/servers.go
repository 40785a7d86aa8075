package netlab

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"time"
)

// Proc is a server the harness runs in a lab namespace: dnsmasq, nginx,
// asr server. Its output collects on Output; Stop ends it by its PID.
type Proc struct {
	Name   string
	Output *Console
	cmd    *exec.Cmd
	done   chan struct{}
	err    error
}

// StartProc starts cmd (made by Host.Command or Lab.Command) as a lab server.
func StartProc(name string, cmd *exec.Cmd) (*Proc, error) {
	p := &Proc{Name: name, Output: NewConsole(), cmd: cmd, done: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = p.Output, p.Output
	// It dies with the test binary even if no cleanup gets to run.
	err := StartBound(cmd, func(err error) {
		p.err = err
		p.Output.Close()
		close(p.done)
	})
	if err != nil {
		return nil, fmt.Errorf("starting %s: %w", name, err)
	}
	return p, nil
}

// Signal sends sig to the process (asr server prints its client table on
// SIGUSR1).
func (p *Proc) Signal(sig os.Signal) error { return p.cmd.Process.Signal(sig) }

// Running reports whether the process has not exited yet.
func (p *Proc) Running() bool {
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

// Stop sends SIGTERM, then SIGKILL if it has not ended within 5 s, and waits.
// A process that had already ended is no error: its exit is in Output.
func (p *Proc) Stop() error {
	if !p.Running() {
		return nil
	}
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
		return nil
	case <-time.After(5 * time.Second):
	}
	if err := p.cmd.Process.Kill(); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("killing %s: %w", p.Name, err)
	}
	select {
	case <-p.done:
		return nil
	case <-time.After(5 * time.Second):
		return fmt.Errorf("%s (pid %d) did not end after SIGKILL", p.Name, p.cmd.Process.Pid)
	}
}

// WaitFor waits at most timeout for pattern on the process's output, and
// fails at once if the process exits first.
func (p *Proc) WaitFor(pattern string, timeout time.Duration) error {
	if _, err := p.Output.Expect(pattern, timeout); err != nil {
		return fmt.Errorf("%s: %w\n%s", p.Name, err, p.Output.Log())
	}
	return nil
}

// DHCPRange is what StartDHCP hands out.
const (
	DHCPFirst = "198.18.0.100"
	DHCPLast  = "198.18.0.199"
)

// StartDHCP runs dnsmasq as the lab's DHCP server on h's eth0, handing out
// DHCPFirst-DHCPLast for an hour; DNS is off (--port=0). Its lease and PID
// files go in dir. args are more dnsmasq options, such as
// --conf-file=FILE for a configuration with PXE and TFTP
// (appliance/examples/dnsmasq.conf).
func StartDHCP(h *Host, dir string, args ...string) (*Proc, error) {
	cmd := h.Command(context.Background(), "dnsmasq", "--no-daemon", "--conf-file=/dev/null", "--port=0",
		"--interface=eth0", "--bind-dynamic",
		// No ping of an address before offering it: that costs 3 s a lease.
		"--no-ping",
		"--dhcp-range="+DHCPFirst+","+DHCPLast+",1h", "--dhcp-authoritative",
		"--dhcp-leasefile="+filepath.Join(dir, "dnsmasq.leases"),
		"--pid-file="+filepath.Join(dir, "dnsmasq.pid"),
		// As root: its lease file is in a test's private directory.
		"--user=root", "--log-facility=-", "--log-dhcp")
	cmd.Args = append(cmd.Args, args...)
	p, err := StartProc("dnsmasq", cmd)
	if err != nil {
		return nil, err
	}
	if err := p.WaitFor(`DHCP, IP range `+DHCPFirst, 10*time.Second); err != nil {
		p.Stop()
		return nil, err
	}
	return p, nil
}

// StartNginx serves root over HTTP on h's address at port, with nginx.
// Its configuration, PID file and error log go in dir.
func StartNginx(h *Host, root string, port int, dir string) (*Proc, error) {
	addr := net.JoinHostPort(h.Addr, fmt.Sprint(port))
	conf := filepath.Join(dir, "nginx.conf")
	err := os.WriteFile(conf, []byte(`daemon off;
master_process off;
user root;
pid `+filepath.Join(dir, "nginx.pid")+`;
error_log stderr;
events { worker_connections 64; }
http {
  access_log off;
  default_type application/octet-stream;
  server {
    listen `+addr+`;
    root `+root+`;
  }
}
`), 0o644)
	if err != nil {
		return nil, err
	}
	p, err := StartProc("nginx", h.Command(context.Background(), "nginx", "-c", conf))
	if err != nil {
		return nil, err
	}
	if err := h.waitListen(addr, 10*time.Second); err != nil {
		p.Stop()
		return nil, fmt.Errorf("nginx: %w\n%s", err, p.Output.Log())
	}
	return p, nil
}

// waitListen waits until something accepts connections on addr in h.
func (h *Host) waitListen(addr string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		err := h.Do(func() error {
			c, err := net.DialTimeout("tcp", addr, time.Second)
			if err == nil {
				c.Close()
			}
			return err
		})
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("nothing listens on %s in %s after %v: %w", addr, h.NS, timeout, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
