// Command asr-lab runs the imaging appliance on virtual machines in a private
// lab network, for people to watch and play with:
//
//	asr-lab demo --image IMG --disk RAW [--vms 3]   boot VMs that restore IMG by multicast, check their disks against RAW
//	asr-lab up   --image IMG [--vms 1]               the same lab, left running until Ctrl-C
//
// With --netboot the VMs have no kernel: they boot the appliance from the
// network (iPXE, dnsmasq with appliance/examples/dnsmasq.conf, nginx), find
// the server by DHCP option 224, and after the restore boot their disks;
// --marker is the line the restored system prints then (testdata/mkbootos.sh).
//
// The lab is a set of network namespaces on a bridge (package netlab): an asr
// server and a DHCP server at 198.18.0.1, the VMs on taps. Nothing reaches
// the machine's own network, and everything is removed at the end. It needs
// root, QEMU and an installed Debian kernel (scripts/deps.sh).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/asrlinux/asr/initramfs"
	"github.com/asrlinux/asr/internal/image"
	"github.com/asrlinux/asr/internal/netlab"
	"github.com/asrlinux/asr/qemu"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Stdout, os.Args[1:])
	stop()
	if err != nil {
		fmt.Fprintf(os.Stderr, "asr-lab: %v\n", err)
		os.Exit(1)
	}
}

const usage = "usage: asr-lab demo --image IMG --disk RAW [--vms N] [--netboot [--marker LINE]] | asr-lab up --image IMG [--vms N] [--netboot]"

// options are asr-lab's command line.
type options struct {
	verb, img, raw, asr, dir, examples, labName, marker string
	vms, rate                                           int
	netboot                                             bool
	// dashPort is the port of 127.0.0.1 the dashboard is forwarded to (0:
	// any); screenshot, where the demo saves the finished dashboard.
	dashPort   int
	screenshot string
}

func run(ctx context.Context, out io.Writer, args []string) error {
	o, err := parseArgs(args)
	if err != nil {
		return err
	}
	size, err := logicalSize(o.img)
	if err != nil {
		return err
	}
	say := func(format string, a ...any) { fmt.Fprintf(out, format+"\n", a...) }
	app, err := buildAppliance(o, say)
	if err != nil {
		return err
	}
	l, err := startLab(ctx, o, app, say)
	if err != nil {
		return err
	}
	defer l.close()
	start := time.Now()
	machines, disks, err := bootVMs(o, l, app, size, say)
	if err != nil {
		return err
	}
	res := watch(machines, milestones(o), start, say)
	if o.verb == "up" {
		say("\nThe lab stays up: asr server and DHCP at 198.18.0.1 in namespace %s, the bridge in %s.", l.srv.NS, l.net.Name)
		say("Look around with: ip netns exec %s asr browse    (or any command)", l.srv.NS)
		say("Press Ctrl-C to stop it: every VM, server and namespace is removed.")
		<-ctx.Done()
		return nil
	}
	ok := printResults(out, o, machines, disks, res)
	printServer(l.server, say)
	if text, err := dashboardSummary(l.srv); err != nil {
		say("\nDashboard: %v", err)
		ok = false
	} else {
		say("\nDashboard (http://%s/): %s", dashAddr, text)
	}
	if o.screenshot != "" {
		// Two updates of the page (a second each) so that every row is final.
		time.Sleep(2 * time.Second)
		if err := screenshot(ctx, l.srv, o.screenshot, filepath.Join(o.dir, "chromium")); err != nil {
			say("Dashboard screenshot: %v", err)
		} else {
			say("Dashboard screenshot: %s", o.screenshot)
		}
	}
	what := "restored over multicast"
	if o.netboot {
		what = "netbooted, restored over multicast and booted their disks"
	}
	say("\n%d VMs %s in %.1f s", len(machines), what, time.Since(start).Seconds())
	if !ok {
		return errors.New("the demo failed: see above")
	}
	return nil
}

func parseArgs(args []string) (options, error) {
	var o options
	if len(args) == 0 || (args[0] != "demo" && args[0] != "up") {
		return o, errors.New(usage)
	}
	o.verb = args[0]
	fs := flag.NewFlagSet(o.verb, flag.ContinueOnError)
	fs.StringVar(&o.img, "image", "", "prepared image the VMs restore")
	fs.StringVar(&o.raw, "disk", "", "raw disk the image was made from, to compare the VMs' disks with (demo)")
	fs.IntVar(&o.vms, "vms", 3, "how many VMs")
	// Emulated VMs (no KVM) decompress and check slowly: at 25 MB/s they miss
	// chunks and wait for later passes; 8 MB/s is about what they keep up with.
	fs.IntVar(&o.rate, "rate", 8000000, "multicast Data Rate, bytes per second")
	fs.StringVar(&o.asr, "asr", "bin/asr", "the asr command the server runs")
	fs.StringVar(&o.dir, "dir", "out/lab", "where the initramfs, configs and VM disks go")
	fs.BoolVar(&o.netboot, "netboot", false, "VMs boot the appliance from the network and find the server by DHCP option 224")
	fs.StringVar(&o.examples, "examples", "appliance/examples", "with --netboot: where dnsmasq.conf and boot.ipxe are")
	fs.StringVar(&o.labName, "lab", "asrlab", "the lab's name: the prefix of its namespaces (at most 8 characters)")
	fs.StringVar(&o.marker, "marker", "", "with --netboot: the line the restored system prints on its first boot")
	fs.IntVar(&o.dashPort, "dashboard-port", 0, "forward asr server's dashboard to this port of 127.0.0.1 (0: any free one)")
	fs.StringVar(&o.screenshot, "screenshot", "", "demo: save the finished dashboard here (PNG, with headless chromium)")
	if err := fs.Parse(args[1:]); err != nil {
		return o, err
	}
	switch {
	case o.img == "":
		return o, errors.New("--image is required (make one with asr imagescan)")
	case o.verb == "demo" && o.raw == "":
		return o, errors.New("--disk is required for demo: the raw disk the image was made from")
	case len(o.labName) < 1 || len(o.labName) > 8:
		return o, errors.New("--lab must be 1 to 8 characters: interface names built from it have at most 15")
	case o.vms < 1 || o.vms > 50:
		return o, errors.New("--vms must be from 1 to 50")
	}
	if o.verb == "up" && !flagSet(fs, "vms") {
		o.vms = 1
	}
	return o, nil
}

// appliance is what the VMs boot: the installed kernel and an initramfs
// built for it, in srvDir (which nginx and dnsmasq's TFTP serve with
// --netboot).
type appliance struct {
	kernel         initramfs.Kernel
	initrd, srvDir string
}

func buildAppliance(o options, say func(string, ...any)) (appliance, error) {
	var a appliance
	k, err := initramfs.FindKernel("/", "")
	if err != nil {
		return a, err
	}
	a.kernel = k
	if a.srvDir, err = filepath.Abs(filepath.Join(o.dir, "srv")); err != nil {
		return a, err
	}
	if err := os.MkdirAll(a.srvDir, 0o755); err != nil {
		return a, err
	}
	a.initrd = filepath.Join(a.srvDir, "asr-initramfs.cpio.gz")
	say("Building the appliance (kernel %s)...", k.Version)
	_, err = initramfs.Build(initramfs.Options{Output: a.initrd, Kernel: k, Version: "lab"})
	return a, err
}

// lab is the network with its servers at 198.18.0.1: DHCP (with PXE and
// nginx for --netboot) and asr server.
type lab struct {
	net     *netlab.Lab
	srv     *netlab.Host
	server  *netlab.Proc
	closers []func() error
}

// close stops the servers and removes the namespaces, last made first.
func (l *lab) close() {
	for i := len(l.closers) - 1; i >= 0; i-- {
		l.closers[i]()
	}
}

func startLab(ctx context.Context, o options, app appliance, say func(string, ...any)) (l *lab, err error) {
	l = &lab{}
	defer func() {
		if err != nil {
			l.close()
		}
	}()
	if l.net, err = netlab.New(o.labName); err != nil {
		return l, err
	}
	l.closers = append(l.closers, l.net.Close)
	if l.srv, err = l.net.AddHost("s", 1); err != nil {
		return l, err
	}
	var dhcpArgs []string
	if o.netboot {
		conf, err := netbootFiles(o.examples, app.srvDir, app.kernel.Image, o.dir)
		if err != nil {
			return l, err
		}
		dhcpArgs = append(dhcpArgs, "--conf-file="+conf)
		web, err := netlab.StartNginx(l.srv, app.srvDir, 80, o.dir)
		if err != nil {
			return l, err
		}
		l.closers = append(l.closers, web.Stop)
	}
	dhcp, err := netlab.StartDHCP(l.srv, o.dir, dhcpArgs...)
	if err != nil {
		return l, err
	}
	l.closers = append(l.closers, dhcp.Stop)
	cfg := filepath.Join(o.dir, "asrconfig.plist")
	if err := os.WriteFile(cfg, []byte(fmt.Sprintf(`<?xml version="1.0" encoding="UTF-8"?>
<plist version="1.0"><dict>
<key>Multicast Address</key><string>239.255.77.1</string>
<key>Data Rate</key><integer>%d</integer>
<key>DNS Service Discovery</key><false/>
</dict></plist>
`, o.rate)), 0o644); err != nil {
		return l, err
	}
	if l.server, err = netlab.StartProc("asr server", l.srv.Command(ctx, o.asr, "server", "--source", o.img, "--config", cfg, "--http", dashAddr)); err != nil {
		return l, err
	}
	l.closers = append(l.closers, l.server.Stop)
	if err := l.server.WaitFor("Ready to start accepting clients", 20*time.Second); err != nil {
		return l, err
	}
	say("Lab up: asr server and DHCP at 198.18.0.1, image %s, %d bytes/s", o.img, o.rate)
	local, stop, err := forward(l.srv, o.dashPort)
	if err != nil {
		return l, err
	}
	l.closers = append(l.closers, stop)
	say("Dashboard: http://%s/ in the lab's namespace %s; from this machine's browser: http://%s/ (forwarded by asr-lab while it runs)", dashAddr, l.srv.NS, local)
	say("  metrics:  ip netns exec %s curl -s http://%s/metrics   (or http://%s/metrics)", l.srv.NS, dashAddr, local)
	if o.netboot {
		say("Netboot: dnsmasq with %s (PXE, iPXE, option 224), nginx serving %s", filepath.Join(o.examples, "dnsmasq.conf"), app.srvDir)
	}
	return l, nil
}

// bootVMs starts the VMs, each on an empty disk a little larger than the
// image; the lab closes them.
func bootVMs(o options, l *lab, app appliance, size int64, say func(string, ...any)) ([]*qemu.VM, []string, error) {
	machines := make([]*qemu.VM, o.vms)
	disks := make([]string, o.vms)
	for i := range machines {
		disks[i] = filepath.Join(o.dir, fmt.Sprintf("vm%d.img", i+1))
		if err := emptyDisk(disks[i], size); err != nil {
			return nil, nil, err
		}
		opts := []qemu.Fn{qemu.WithDisk(disks[i]), qemu.WithNIC(l.net, 10+i+1)}
		if o.netboot {
			opts = append(opts, qemu.WithNetboot())
		} else {
			opts = append(opts, qemu.WithKernel(app.kernel.Image), qemu.WithInitramfs(app.initrd), qemu.WithAppend("asr.source=asr://198.18.0.1"))
		}
		vm, err := qemu.Start(fmt.Sprintf("vm%d", i+1), opts...)
		if err != nil {
			return nil, nil, err
		}
		machines[i] = vm
		l.closers = append(l.closers, vm.Close)
		say("vm%d: booting (empty %d-byte disk %s)", i+1, size, disks[i])
	}
	return machines, disks, nil
}

// milestone is a console line worth telling: pattern's first group is
// printed with say.
type milestone struct{ pattern, say string }

// milestones are what each VM's console shows on its way.
func milestones(o options) []milestone {
	steps := []milestone{
		{`asr: network: (.*)`, "network %s"},
		{`asr: restore starts ([0-9.]+ s) after power-on`, "restore starts %s after power-on"},
		{`asr-appliance: RESULT (.*)`, "%s"},
	}
	if o.netboot {
		steps = append([]milestone{{`Filename: (\S+)`, "iPXE loads %s"}}, steps...)
		steps = slices.Insert(steps, 2, milestone{`asr: source: (.*)`, "source %s"})
		steps = append(steps, milestone{`(Booting from Hard Disk)`, "%s"})
		if o.marker != "" {
			steps = append(steps, milestone{"(" + regexp.QuoteMeta(o.marker) + ")", "first boot of the restored disk: %s"})
		}
	}
	return steps
}

// vmResult is what one VM did: its RESULT line, its first boot, and when
// its last milestone came.
type vmResult struct {
	result, firstBoot string
	took              time.Duration
}

// watch follows every VM's console through steps, in parallel.
func watch(machines []*qemu.VM, steps []milestone, start time.Time, say func(string, ...any)) []vmResult {
	res := make([]vmResult, len(machines))
	var wg sync.WaitGroup
	for i, vm := range machines {
		wg.Go(func() {
			r := &res[i]
			for _, m := range steps {
				got, err := vm.Console.Expect(m.pattern, 10*time.Minute)
				if err != nil && r.result != "" {
					r.firstBoot = "not seen: " + err.Error()
					return
				}
				if err != nil {
					r.result = "no result: " + err.Error()
					return
				}
				say("%s: "+m.say, vm.Name, got[1])
				switch {
				case strings.HasPrefix(m.say, "first boot"):
					r.firstBoot = got[1]
				case m.say == "%s" && !strings.HasPrefix(got[1], "Booting"):
					r.result = got[1]
				}
			}
			r.took = time.Since(start)
		})
	}
	wg.Wait()
	return res
}

// printResults prints one row per VM and says whether all succeeded with
// a disk equal to the raw disk (and booted it, with --marker).
func printResults(out io.Writer, o options, machines []*qemu.VM, disks []string, res []vmResult) bool {
	ok := true
	w := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
	header := "\nVM\tSECONDS\tRESULT\tDISK"
	if o.marker != "" {
		header += "\tFIRST BOOT"
	}
	fmt.Fprintln(w, header)
	for i, vm := range machines {
		check := "equals " + o.raw
		if err := qemu.SameDisk(o.raw, disks[i]); err != nil {
			check, ok = err.Error(), false
		}
		if !strings.HasPrefix(res[i].result, "success") {
			ok = false
		}
		row := fmt.Sprintf("%s\t%.1f\t%s\t%s", vm.Name, res[i].took.Seconds(), res[i].result, check)
		if o.marker != "" {
			if res[i].firstBoot == "" {
				res[i].firstBoot, ok = "did not boot", false
			}
			row += "\t" + res[i].firstBoot
		}
		fmt.Fprintln(w, row)
	}
	w.Flush()
	return ok
}

// printServer shows the server's client lines and its table of clients,
// as an admin sees it: asr server prints it on SIGUSR1 (on a terminal it
// keeps it live).
func printServer(server *netlab.Proc, say func(string, ...any)) {
	say("\nServer:")
	for _, l := range strings.Split(server.Output.Log(), "\n") {
		if strings.HasPrefix(l, "Client") || strings.HasPrefix(l, "Pass") {
			say("  %s", l)
		}
	}
	mark := len(server.Output.Log())
	if err := server.Signal(syscall.SIGUSR1); err != nil {
		return
	}
	if _, err := server.Output.Expect(`\d+ clients: .*`, 10*time.Second); err != nil {
		return
	}
	say("\nasr server's client table (kill -USR1 prints it; on a terminal it is live):")
	for _, l := range strings.Split(server.Output.Log()[mark:], "\n") {
		if strings.HasPrefix(l, "  ") {
			say("%s", l)
		}
	}
}

// netbootFiles puts what the VMs' iPXE loads into srvDir (boot.ipxe, the
// kernel; the initramfs is built there) and writes the example dnsmasq.conf
// with /srv/asr replaced by srvDir into dir; it returns that file.
func netbootFiles(examples, srvDir, kernel, dir string) (string, error) {
	for _, c := range [][2]string{
		{filepath.Join(examples, "boot.ipxe"), filepath.Join(srvDir, "boot.ipxe")},
		{kernel, filepath.Join(srvDir, "vmlinuz")},
	} {
		b, err := os.ReadFile(c[0])
		if err != nil {
			return "", fmt.Errorf("netboot: %w", err)
		}
		if err := os.WriteFile(c[1], b, 0o644); err != nil {
			return "", err
		}
	}
	b, err := os.ReadFile(filepath.Join(examples, "dnsmasq.conf"))
	if err != nil {
		return "", fmt.Errorf("netboot: %w (give --examples, the folder appliance/examples)", err)
	}
	conf, err := filepath.Abs(filepath.Join(dir, "dnsmasq.conf"))
	if err != nil {
		return "", err
	}
	return conf, os.WriteFile(conf, []byte(strings.ReplaceAll(string(b), "/srv/asr", srvDir)), 0o644)
}

func flagSet(fs *flag.FlagSet, name string) bool {
	set := false
	fs.Visit(func(f *flag.Flag) { set = set || f.Name == name })
	return set
}

func logicalSize(path string) (int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return 0, err
	}
	im, err := image.Open(f, st.Size())
	if err != nil {
		return 0, fmt.Errorf("%s: %w", path, err)
	}
	defer im.Close()
	return im.Manifest.LogicalSize, nil
}

// emptyDisk makes a sparse disk a little larger than the image.
func emptyDisk(path string, size int64) error {
	os.Remove(path)
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	defer f.Close()
	return f.Truncate(size + 16<<20)
}
