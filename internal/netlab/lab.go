// Package netlab is the test network: a private network of namespaces
// joined by a bridge, where servers and clients (processes, and the virtual
// machines of package qemu) talk without a packet reaching the machine's own
// interfaces, and the servers the tests run there (dnsmasq, nginx, asr
// server) as Procs.
//
// A Lab is a namespace holding a bridge; each Host is a namespace with one
// veth into it, an address in 198.18.0.0/24 and a route for multicast. Close
// removes every namespace the lab made, whatever happened. The package runs
// iproute2 and nftables; it needs root.
//
// The ...T functions are for tests: they fail the test on error, undo
// what they made when it ends, and log a server's output when it failed.
package netlab

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"runtime"
	"strings"

	"golang.org/x/sys/unix"
)

// Lab is a bridge in a namespace of its own.
type Lab struct {
	Name  string
	hosts []*Host
}

// Host is one machine of the lab: a namespace with address Addr on eth0.
type Host struct {
	lab  *Lab
	NS   string
	Addr string // 198.18.0.N
}

// New creates the bridge namespace. prefix makes names unique per run; it
// must be short (interface names are at most 15 bytes). $ASR_LAB_PREFIX,
// if set, goes before it, so that runs of the same tests side by side (two
// worktrees on one machine) use namespaces of their own.
func New(prefix string) (*Lab, error) {
	l := &Lab{Name: os.Getenv("ASR_LAB_PREFIX") + prefix + "br"}
	exec.Command("ip", "netns", "del", l.Name).Run() // a leftover of a killed run
	steps := [][]string{
		{"ip", "netns", "add", l.Name},
		{"ip", "-n", l.Name, "link", "add", "br0", "type", "bridge"},
		// No IGMP querier runs here: without snooping the bridge floods
		// multicast to every port, as a small switch does.
		{"ip", "-n", l.Name, "link", "set", "br0", "type", "bridge", "mcast_snooping", "0"},
		{"ip", "-n", l.Name, "link", "set", "br0", "up"},
	}
	for _, s := range steps {
		if err := run(s...); err != nil {
			l.Close()
			return nil, err
		}
	}
	return l, nil
}

func run(args ...string) error {
	out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

// AddHost creates a host namespace at 198.18.0.n.
func (l *Lab) AddHost(name string, n int) (*Host, error) {
	h := &Host{lab: l, NS: l.Name[:len(l.Name)-2] + name, Addr: fmt.Sprintf("198.18.0.%d", n)}
	exec.Command("ip", "netns", "del", h.NS).Run()
	peer := fmt.Sprintf("v%s%d", l.Name[:min(len(l.Name), 6)], n)
	steps := [][]string{
		{"ip", "netns", "add", h.NS},
		{"ip", "-n", h.NS, "link", "add", "eth0", "type", "veth", "peer", "name", peer, "netns", l.Name},
		{"ip", "-n", l.Name, "link", "set", peer, "master", "br0", "up"},
		{"ip", "-n", h.NS, "link", "set", "lo", "up"},
		{"ip", "-n", h.NS, "addr", "add", h.Addr + "/24", "dev", "eth0"},
		{"ip", "-n", h.NS, "link", "set", "eth0", "up"},
		{"ip", "-n", h.NS, "route", "add", "224.0.0.0/4", "dev", "eth0"},
	}
	l.hosts = append(l.hosts, h)
	for _, s := range steps {
		if err := run(s...); err != nil {
			return nil, err
		}
	}
	return h, nil
}

// Command prepares a command to run inside the host's namespace.
func (h *Host) Command(ctx context.Context, name string, args ...string) *exec.Cmd {
	return exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", h.NS, name}, args...)...)
}

// DropUDP makes the host drop pct percent of incoming UDP packets at random,
// with nftables (this kernel has no netem).
func (h *Host) DropUDP(pct int) error {
	for _, s := range [][]string{
		{"ip", "netns", "exec", h.NS, "nft", "add", "table", "inet", "asrloss"},
		{"ip", "netns", "exec", h.NS, "nft", "add", "chain", "inet", "asrloss", "input", "{ type filter hook input priority 0; }"},
		{"ip", "netns", "exec", h.NS, "nft", "add", "rule", "inet", "asrloss", "input", "meta", "l4proto", "udp",
			"numgen", "random", "mod", "100", "<", fmt.Sprint(pct), "drop"},
	} {
		if err := run(s...); err != nil {
			return err
		}
	}
	return nil
}

// Do runs f on a thread inside the host's namespace: sockets f opens belong
// to the host, and stay there when used from other threads later.
func (h *Host) Do(f func() error) error {
	errc := make(chan error, 1)
	go func() {
		// The thread is not unlocked: it dies with this goroutine rather
		// than go back to the pool inside the wrong namespace.
		runtime.LockOSThread()
		fd, err := os.Open("/var/run/netns/" + h.NS)
		if err != nil {
			errc <- err
			return
		}
		defer fd.Close()
		if err := unix.Setns(int(fd.Fd()), unix.CLONE_NEWNET); err != nil {
			errc <- fmt.Errorf("entering %s: %w", h.NS, err)
			return
		}
		errc <- f()
	}()
	return <-errc
}

// Listen opens a TCP listener inside the host.
func (h *Host) Listen(addr string) (net.Listener, error) {
	var ln net.Listener
	err := h.Do(func() (err error) {
		ln, err = net.Listen("tcp", addr)
		return err
	})
	return ln, err
}

// Close removes every namespace of the lab.
func (l *Lab) Close() error {
	for _, h := range l.hosts {
		exec.Command("ip", "netns", "del", h.NS).Run()
	}
	return exec.Command("ip", "netns", "del", l.Name).Run()
}

// Command prepares a command to run inside the lab's bridge namespace, where
// the taps of its virtual machines are.
func (l *Lab) Command(ctx context.Context, name string, args ...string) *exec.Cmd {
	return exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", l.Name, name}, args...)...)
}

// AddTap creates a tap interface in the bridge namespace and attaches it to
// the bridge, for a virtual machine's NIC. DelTap removes it; Close removes
// it with the namespace anyway.
func (l *Lab) AddTap(name string) error {
	exec.Command("ip", "-n", l.Name, "link", "del", name).Run() // a leftover of a killed run
	for _, s := range [][]string{
		{"ip", "-n", l.Name, "tuntap", "add", "dev", name, "mode", "tap"},
		{"ip", "-n", l.Name, "link", "set", name, "master", "br0", "up"},
	} {
		if err := run(s...); err != nil {
			l.DelTap(name)
			return err
		}
	}
	return nil
}

// DelTap removes a tap AddTap made.
func (l *Lab) DelTap(name string) error {
	return run("ip", "-n", l.Name, "link", "del", name)
}
