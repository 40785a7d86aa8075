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
// The lab is a set of network namespaces on a bridge (package qemu): an asr
// server and a DHCP server at 198.18.0.1, the VMs on taps. Nothing reaches
// the machine's own network, and everything is removed at the end. It needs
// root, QEMU and an installed Debian kernel (testdata/deps.sh).
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

func run(ctx context.Context, out io.Writer, args []string) error {
	if len(args) == 0 || (args[0] != "demo" && args[0] != "up") {
		return errors.New(usage)
	}
	verb := args[0]
	fs := flag.NewFlagSet(verb, flag.ContinueOnError)
	img := fs.String("image", "", "prepared image the VMs restore")
	raw := fs.String("disk", "", "raw disk the image was made from, to compare the VMs' disks with (demo)")
	vms := fs.Int("vms", 3, "how many VMs")
	// Emulated VMs (no KVM) decompress and check slowly: at 25 MB/s they miss
	// chunks and wait for later passes; 8 MB/s is about what they keep up with.
	rate := fs.Int("rate", 8000000, "multicast Data Rate, bytes per second")
	asr := fs.String("asr", "bin/asr", "the asr command the server runs")
	dir := fs.String("dir", "out/lab", "where the initramfs, configs and VM disks go")
	netboot := fs.Bool("netboot", false, "VMs boot the appliance from the network and find the server by DHCP option 224")
	examples := fs.String("examples", "appliance/examples", "with --netboot: where dnsmasq.conf and boot.ipxe are")
	labName := fs.String("lab", "asrlab", "the lab's name: the prefix of its namespaces (at most 8 characters)")
	marker := fs.String("marker", "", "with --netboot: the line the restored system prints on its first boot")
	if err := fs.Parse(args[1:]); err != nil {
		return err
	}
	switch {
	case *img == "":
		return errors.New("--image is required (make one with asr imagescan)")
	case verb == "demo" && *raw == "":
		return errors.New("--disk is required for demo: the raw disk the image was made from")
	case len(*labName) < 1 || len(*labName) > 8:
		return errors.New("--lab must be 1 to 8 characters: interface names built from it have at most 15")
	case *vms < 1 || *vms > 50:
		return errors.New("--vms must be from 1 to 50")
	}
	if verb == "up" && !flagSet(fs, "vms") {
		*vms = 1
	}
	size, err := logicalSize(*img)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(*dir, 0o755); err != nil {
		return err
	}
	say := func(format string, a ...any) { fmt.Fprintf(out, format+"\n", a...) }

	kernel, err := initramfs.FindKernel("/", "")
	if err != nil {
		return err
	}
	// With --netboot, nginx and dnsmasq's TFTP serve srvDir.
	srvDir, err := filepath.Abs(filepath.Join(*dir, "srv"))
	if err != nil {
		return err
	}
	if err := os.MkdirAll(srvDir, 0o755); err != nil {
		return err
	}
	initrd := filepath.Join(srvDir, "asr-initramfs.cpio.gz")
	say("Building the appliance (kernel %s)...", kernel.Version)
	if _, err := initramfs.Build(initramfs.Options{Output: initrd, Kernel: kernel, Version: "lab"}); err != nil {
		return err
	}

	lab, err := qemu.NewLab(*labName)
	if err != nil {
		return err
	}
	defer lab.Close()
	srv, err := lab.AddHost("s", 1)
	if err != nil {
		return err
	}
	var dhcpArgs []string
	if *netboot {
		conf, err := netbootFiles(*examples, srvDir, kernel.Image, *dir)
		if err != nil {
			return err
		}
		dhcpArgs = append(dhcpArgs, "--conf-file="+conf)
		web, err := qemu.StartNginx(srv, srvDir, 80, *dir)
		if err != nil {
			return err
		}
		defer web.Stop()
	}
	dhcp, err := qemu.StartDHCP(srv, *dir, dhcpArgs...)
	if err != nil {
		return err
	}
	defer dhcp.Stop()
	cfg := filepath.Join(*dir, "asrconfig.plist")
	if err := os.WriteFile(cfg, []byte(fmt.Sprintf(`<?xml version="1.0" encoding="UTF-8"?>
<plist version="1.0"><dict>
<key>Multicast Address</key><string>239.255.77.1</string>
<key>Data Rate</key><integer>%d</integer>
<key>DNS Service Discovery</key><false/>
</dict></plist>
`, *rate)), 0o644); err != nil {
		return err
	}
	server, err := qemu.StartProc("asr server", srv.Command(ctx, *asr, "server", "--source", *img, "--config", cfg))
	if err != nil {
		return err
	}
	defer server.Stop()
	if err := server.WaitFor("Ready to start accepting clients", 20*time.Second); err != nil {
		return fmt.Errorf("asr server: %w\n%s", err, server.Output.Log())
	}
	say("Lab up: asr server and DHCP at 198.18.0.1, image %s, %d bytes/s", *img, *rate)
	if *netboot {
		say("Netboot: dnsmasq with %s (PXE, iPXE, option 224), nginx serving %s", filepath.Join(*examples, "dnsmasq.conf"), srvDir)
	}

	start := time.Now()
	machines := make([]*qemu.VM, *vms)
	disks := make([]string, *vms)
	for i := range machines {
		disks[i] = filepath.Join(*dir, fmt.Sprintf("vm%d.img", i+1))
		if err := emptyDisk(disks[i], size); err != nil {
			return err
		}
		opts := []qemu.Fn{qemu.WithDisk(disks[i]), qemu.WithNIC(lab, 10+i+1), qemu.WithAccel(os.Getenv("ASR_QEMU_ACCEL"))}
		if *netboot {
			opts = append(opts, qemu.WithNetboot())
		} else {
			opts = append(opts, qemu.WithKernel(kernel.Image), qemu.WithInitramfs(initrd), qemu.WithAppend("asr.source=asr://198.18.0.1"))
		}
		machines[i], err = qemu.Start(fmt.Sprintf("vm%d", i+1), opts...)
		if err != nil {
			return err
		}
		defer machines[i].Close()
		say("vm%d: booting (empty %d-byte disk %s)", i+1, size, disks[i])
	}

	// Each VM's milestones, as its console shows them.
	type milestone struct{ pattern, say string }
	steps := []milestone{
		{`asr: network: (.*)`, "network %s"},
		{`asr: restore starts ([0-9.]+ s) after power-on`, "restore starts %s after power-on"},
		{`asr-appliance: RESULT (.*)`, "%s"},
	}
	if *netboot {
		steps = append([]milestone{{`Filename: (\S+)`, "iPXE loads %s"}}, steps...)
		steps = slices.Insert(steps, 2, milestone{`asr: source: (.*)`, "source %s"})
		steps = append(steps, milestone{`(Booting from Hard Disk)`, "%s"})
		if *marker != "" {
			steps = append(steps, milestone{"(" + regexp.QuoteMeta(*marker) + ")", "first boot of the restored disk: %s"})
		}
	}
	results := make([]string, len(machines))
	firstBoot := make([]string, len(machines))
	times := make([]time.Duration, len(machines))
	var wg sync.WaitGroup
	for i, vm := range machines {
		wg.Go(func() {
			for _, m := range steps {
				got, err := vm.Console.Expect(m.pattern, 10*time.Minute)
				if err != nil && results[i] != "" {
					firstBoot[i] = "not seen: " + err.Error()
					return
				}
				if err != nil {
					results[i] = "no result: " + err.Error()
					return
				}
				say("%s: "+m.say, vm.Name, got[1])
				switch {
				case strings.HasPrefix(m.say, "first boot"):
					firstBoot[i] = got[1]
				case m.say == "%s" && !strings.HasPrefix(got[1], "Booting"):
					results[i] = got[1]
				}
			}
			times[i] = time.Since(start)
		})
	}
	wg.Wait()

	if verb == "up" {
		say("\nThe lab stays up: asr server and DHCP at 198.18.0.1 in namespace %s, the bridge in %s.", srv.NS, lab.Name)
		say("Look around with: ip netns exec %s asr browse    (or any command)", srv.NS)
		say("Press Ctrl-C to stop it: every VM, server and namespace is removed.")
		<-ctx.Done()
		return nil
	}

	ok := true
	w := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
	header := "\nVM\tSECONDS\tRESULT\tDISK"
	if *marker != "" {
		header += "\tFIRST BOOT"
	}
	fmt.Fprintln(w, header)
	for i, vm := range machines {
		check := "equals " + *raw
		if err := qemu.SameDisk(*raw, disks[i]); err != nil {
			check, ok = err.Error(), false
		}
		if !strings.HasPrefix(results[i], "success") {
			ok = false
		}
		row := fmt.Sprintf("%s\t%.1f\t%s\t%s", vm.Name, times[i].Seconds(), results[i], check)
		if *marker != "" {
			if firstBoot[i] == "" {
				firstBoot[i], ok = "did not boot", false
			}
			row += "\t" + firstBoot[i]
		}
		fmt.Fprintln(w, row)
	}
	w.Flush()
	say("\nServer:")
	for _, l := range strings.Split(server.Output.Log(), "\n") {
		if strings.HasPrefix(l, "Client") || strings.HasPrefix(l, "Pass") {
			say("  %s", l)
		}
	}
	// The server's own table of its clients, as an admin sees it: asr
	// server prints it on SIGUSR1 (on a terminal it keeps it live).
	mark := len(server.Output.Log())
	if err := server.Signal(syscall.SIGUSR1); err == nil {
		if _, err := server.Output.Expect(`\d+ clients: .*`, 10*time.Second); err == nil {
			say("\nasr server's client table (kill -USR1 prints it; on a terminal it is live):")
			for _, l := range strings.Split(server.Output.Log()[mark:], "\n") {
				if strings.HasPrefix(l, "  ") {
					say("%s", l)
				}
			}
		}
	}
	if *netboot {
		say("\n%d VMs netbooted, restored over multicast and booted their disks in %.1f s", len(machines), time.Since(start).Seconds())
	} else {
		say("\n%d VMs restored over multicast in %.1f s", len(machines), time.Since(start).Seconds())
	}
	if !ok {
		return errors.New("the demo failed: see above")
	}
	return nil
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
