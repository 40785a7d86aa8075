// Package appliance is the boot sequence of the asr imaging appliance: the
// program the kernel runs as /init from the initramfs.
//
// Main, step by step, one console line each:
//  1. mount /proc, /sys, /dev (devtmpfs), /run, /tmp;
//  2. read the asr.* keys of the kernel command line (ParseCmdline);
//  3. load the storage and network drivers the hardware asks for (LoadDrivers);
//  4. make sure the kernel has random numbers, or say why it waits; load
//     the trusted keys baked in at /etc/asr/trusted-keys (LoadTrustedKeys);
//  5. bring up every wired link and run DHCP on all of them at once;
//  6. choose the target disk (ChooseTarget): the named one, else the only
//     internal disk; refuse and list them when that is ambiguous;
//  7. find the source (findSource): asr.source=, else DHCP option 224,
//     else DNS-SD (DiscoverDNSSD, asr.image= choosing among servers);
//  8. restore it with erase and verify, through the same engine as `asr
//     restore`, reporting to asr.report= if given (Report); with trusted
//     keys, an image no trusted key signed is refused before the erase;
//     with asr.grow, then grow the last partition and its filesystem to
//     fill a larger disk (its tools checked at step 4, before any write);
//  9. print the result, then reboot (or power off, or open a shell).
//
// With asr.source=label:ASRDATA (the USB toolkit stick) steps 5 and 7 are
// replaced: the image comes from the stick's data partition, kept
// read-only, and the target is chosen among the other disks.
//
// A failure stops with the reason on the console and what to do, and
// waits; asr.onfailure= can make it power off, reboot or open a shell
// instead (asr.debug also opens a shell). Tests and dashboards match
// the line "asr-appliance: RESULT ...".
//
// On the machine's own screen (a virtual terminal) the console is a status
// page for the person walking past (Screen, Render): the stage in big
// letters, the progress bar, the server, image and disk, the IP and MAC
// address, and the console's lines below. On a serial console the lines go
// out plain, as they are.
package appliance

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/asrlinux/asr/internal/dnssd"
	"github.com/asrlinux/asr/internal/multicast"
	"github.com/asrlinux/asr/internal/progress"
	"github.com/asrlinux/asr/internal/redact"
	"github.com/asrlinux/asr/internal/restore"
	"github.com/asrlinux/asr/internal/source"
	"github.com/asrlinux/asr/internal/sourceurl"
	"github.com/asrlinux/asr/internal/trust"
	"github.com/vishvananda/netlink"
)

// Options are what Run needs of the machine; tests point them elsewhere.
type Options struct {
	Console io.Writer
	RootDir string // where lib/modules is: "/" on the appliance
	SysRoot string // "/sys"
	Version string
	Name    string // how the multicast server names this machine
	// Screen, if set, shows the machine's status to a person (it is
	// also the Console then); nil: the console's lines only.
	Screen *Screen
}

// Main is /init. It does not return.
func Main(version string) {
	// Everything on the console is redacted: a source or report URL's
	// password or signature never shows, whichever package quoted it. On
	// the machine's own screen (a virtual terminal) a status page shows
	// what it is doing; on a serial console the lines go out as they are.
	scr := ConsoleScreen(os.Stdout, redact.Writer(os.Stdout), version)
	out := io.Writer(scr)
	logf := func(format string, a ...any) { fmt.Fprintf(out, "asr: "+format+"\n", a...) }
	// The DHCP client logs whole packets through the standard logger; the
	// console gets one line per step from us instead.
	log.SetOutput(io.Discard)
	// The kernel starts init without a PATH; asr.grow runs programs.
	if os.Getenv("PATH") == "" {
		os.Setenv("PATH", DefaultPath)
	}
	fmt.Fprintf(out, "\nasr imaging appliance %s\n", version)
	if err := MountAll(); err != nil {
		stop(out, scr, logf, Config{}, err)
	}
	b, _ := os.ReadFile("/proc/cmdline")
	cfg, err := ParseCmdline(string(b))
	if err != nil {
		stop(out, scr, logf, cfg, err)
	}
	host, _ := os.Hostname()
	res, err := Run(context.Background(), cfg, Options{Console: out, Screen: scr, RootDir: "/", SysRoot: "/sys", Version: version, Name: host})
	if err != nil {
		stop(out, scr, logf, cfg, err)
	}
	if res.Delta {
		logf("Delta: %d chunks reused from the target, %d fetched (%s from the source), %d written",
			res.Reused, res.Fetched, restore.HumanBytes(res.FetchedBytes), res.Written)
	}
	scr.Set(func(st *Status) {
		st.Stage = StageDone
		st.Result = fmt.Sprintf("Restored %s to %s in %.0f s%s. Then: %s.", restore.HumanBytes(res.Size), res.Target,
			(res.CompareTime + res.Elapsed + res.VerifyTime).Seconds(), verified(res), cfg.After)
	})
	fmt.Fprintf(out, "asr-appliance: RESULT success: restored %s to %s in %.1f s%s%s\n",
		restore.HumanBytes(res.Size), res.Target, (res.CompareTime + res.Elapsed + res.VerifyTime).Seconds(), verified(res), grown(res))
	switch cfg.After {
	case Shell:
		logf("asr.after=shell: starting a shell")
		scr.Release()
		if err := shell(); err != nil {
			logf("%v", err)
		}
		halt()
	default:
		logf("%s in 3 s", cfg.After)
		time.Sleep(3 * time.Second)
		if err := powerAction(cfg.After); err != nil {
			logf("%s failed: %v", cfg.After, err)
		}
		halt()
	}
}

// halt blocks forever. /init must never return (the kernel panics), and a
// bare select{} is a deadlock the Go runtime kills the process for once no
// timer or network poller is left.
func halt() {
	for {
		time.Sleep(time.Hour)
	}
}

// grown is what asr.grow did, for the result line.
func grown(r *restore.Result) string {
	if r.Grown == "" {
		return ""
	}
	return "; grew " + r.Grown
}

func verified(r *restore.Result) string {
	if r.Verified {
		return ", verified"
	}
	return ", NOT verified (asr.noverify)"
}

// stop reports a failure, then does what asr.onfailure= says
// (Config.FailureAction): by default it waits for a person, and never
// reboots into a loop of failed restores unless told to.
func stop(out io.Writer, scr *Screen, logf func(string, ...any), cfg Config, err error) {
	hint := ""
	if stall := (*source.StallError)(nil); errors.As(err, &stall) {
		hint = " (raise asr.timeout= if the server is only slow)"
	}
	todo := scr.Fail(err)
	fmt.Fprintf(out, "asr-appliance: RESULT failure: %v%s\n", err, hint)
	logf("what to do: %s", todo)
	switch a := cfg.FailureAction(); a {
	case Shell:
		// Name what asked for it: a person at the console may not know.
		why := "asr.after=shell"
		switch {
		case cfg.OnFailure == Shell:
			why = "asr.onfailure=shell"
		case cfg.Debug:
			why = "asr.debug"
		}
		logf("starting a shell (%s)", why)
		scr.Release()
		if err := shell(); err != nil {
			logf("%v", err)
		}
	case PowerOff, Reboot:
		// An unattended lab asked for it: the reason stays in the
		// server's log (asr.report=) and on the console meanwhile.
		logf("asr.onfailure=%s: %s in 10 s", a, a)
		time.Sleep(10 * time.Second)
		if err := powerAction(a); err != nil {
			logf("%s failed: %v", a, err)
		}
	}
	logf("stopped. Fix the problem above and power the machine off and on again.")
	halt()
}

// Run brings the machine up to the network and restores its disk.
func Run(ctx context.Context, cfg Config, o Options) (res *restore.Result, err error) {
	o.Console = redact.Writer(o.Console)
	logf := func(format string, a ...any) { fmt.Fprintf(o.Console, "asr: "+format+"\n", a...) }
	scr := o.Screen
	scr.Stage(StageStarting)
	mods, err := loadAllDrivers(o.RootDir, o.SysRoot)
	if err != nil {
		logf("drivers: %v", err) // a missing optional driver is not fatal; a missing disk is, below
	}
	logf("drivers: %d loaded %v", len(mods), mods)
	WaitEntropy(logf, func() error { return LoadNamed(o.RootDir, "virtio_rng") })
	keys, err := LoadTrustedKeys(o.RootDir, logf)
	if err != nil {
		return nil, err
	}
	if cfg.Grow {
		if err := prepareGrow(o.RootDir); err != nil {
			return nil, err
		}
	}

	if strings.HasPrefix(cfg.Source, StickScheme) {
		return restoreFromStick(ctx, cfg, o, keys, logf)
	}
	// Disks and links appear as their drivers probe them.
	scr.Stage(StageDisk)
	disks, err := waitDisks(o.SysRoot, 5*time.Second)
	if err != nil {
		return nil, err
	}
	tgt, err := ChooseTarget(cfg.Target, disks)
	if err != nil {
		return nil, err
	}
	logTarget(logf, cfg.Target, tgt)
	scr.Set(func(st *Status) { st.Disk = tgt.String() })

	scr.Stage(StageNetwork)
	links, err := waitLinks(5 * time.Second)
	if err != nil {
		return nil, err
	}
	dctx, cancel := context.WithTimeout(ctx, cfg.Timeout)
	start := time.Now()
	leases, err := DHCP(dctx, links, logf)
	cancel()
	if err != nil {
		return nil, err
	}
	for _, l := range leases {
		logf("network: %s %s from DHCP server %s in %.1f s", l.Interface, l.Addr, l.Server, time.Since(start).Seconds())
	}
	// A machine booted from the network has no host name ("(none)"): the
	// server's log then names it by the MAC address of its first lease.
	mac := ""
	if ifi, err := net.InterfaceByName(leases[0].Interface); err == nil {
		mac = ifi.HardwareAddr.String()
	}
	if o.Name == "" || o.Name == "(none)" {
		o.Name = mac
	}
	scr.Set(func(st *Status) { st.IP, st.MAC = leases[0].Addr, mac })
	var rep *reporter
	if cfg.Report != "" {
		rep = newReporter(cfg.Report, Report{Client: o.Name, MAC: mac, Disk: tgt.String(), Source: sourceurl.Redact(cfg.Source)}, logf)
		logf("status reports go to %s", cfg.Report)
		defer func() { rep.final(err, 0) }()
	}

	scr.Stage(StageServer)
	src, how, err := findSource(cfg, leases)
	if errors.Is(err, errNoSource) {
		ifaces := make([]string, len(leases))
		for i, l := range leases {
			ifaces[i] = l.Interface
		}
		logf("source: none on the kernel command line or in DHCP option %d; browsing DNS-SD for %s for %s", SourceOption, dnssd.ServiceType, BrowseWait)
		found, derr := DiscoverDNSSD(ctx, cfg.Image, keys, ifaces, logf)
		if derr != nil {
			return nil, fmt.Errorf("%w; DNS-SD: %v", err, derr)
		}
		src, how, err = found, "DNS-SD", nil
	}
	if err != nil {
		return nil, err
	}
	if rep != nil {
		rep.base.Source = sourceurl.Redact(src) // when DHCP or DNS-SD found it
	}
	logf("source: %s (%s)", sourceurl.Redact(src), how)
	scr.Set(func(st *Status) { st.Server = sourceurl.Redact(src) })
	logf("restore starts %.1f s after power-on", Uptime().Seconds())
	res, err = restore.Run(ctx, restore.Request{
		Source: src, Target: tgt.Path, Erase: true, NoVerify: cfg.NoVerify, Delta: cfg.Delta, NoPrompt: true,
		Grow: cfg.Grow, GrowFS: growFS(o.RootDir, logf),
		OpenSource: func(s string, maxSize int64) (source.Source, error) {
			src, err := sourceurl.Open(ctx, s, sourceurl.Options{Timeout: cfg.Timeout, Retries: 5,
				Name: o.Name, MAC: mac, Disk: tgt.String(), Log: logf, MaxSize: maxSize})
			if err == nil {
				src, err = checkTrusted(src, keys, logf)
			}
			if err == nil {
				scr.Set(func(st *Status) { st.Image = imageName(src.Info()) })
			}
			if err != nil || rep == nil {
				return src, err
			}
			return &reportingSource{Source: src, r: rep}, nil
		},
		Out: watched(progress.New(o.Console, false), scr),
	})
	// The multicast package names no setting; here it is a kernel parameter.
	if stall := (*multicast.StallError)(nil); errors.As(err, &stall) {
		err = fmt.Errorf("%w (asr.timeout)", err)
	}
	return res, growHint(err)
}

// growHint names asr.grow in the engine's grow errors: the disk may hold a
// complete, verified image whose filesystem was not grown, or there was
// nothing to grow into and nothing was written.
func growHint(err error) error {
	if g := (*restore.GrowError)(nil); errors.As(err, &g) {
		return fmt.Errorf("asr.grow: %w", err)
	}
	return err
}

// restoreFromStick restores the internal disk from an image on the toolkit
// stick: no network, the stick found by its data partition's label and
// kept read-only, the target chosen among the other disks.
func restoreFromStick(ctx context.Context, cfg Config, o Options, keys []trust.Key, logf func(string, ...any)) (*restore.Result, error) {
	label, file, err := parseStickSource(cfg.Source)
	if err != nil {
		return nil, err
	}
	if cfg.Report != "" {
		logf("asr.report=%s: not used: the stick restores without the network", cfg.Report)
	}
	logf("source: looking for the stick's %s filesystem on USB and removable disks", label)
	scr := o.Screen
	scr.Stage(StageDisk)
	part, disks, err := waitStick(o.RootDir, o.SysRoot, label, cfg.Timeout, logf)
	if err != nil {
		return nil, err
	}
	logf("stick: %s on %s", part.Path, part.Disk)
	if cfg.Target != "" {
		if t, err := ChooseTarget(cfg.Target, []Disk{part.Disk}); err == nil {
			return nil, fmt.Errorf("asr.target=%s is the toolkit stick %s that holds the image; name the internal disk", cfg.Target, t)
		}
	}
	tgt, err := ChooseTarget(cfg.Target, withoutDisk(disks, part.Disk.Path))
	if err != nil {
		return nil, err
	}
	logTarget(logf, cfg.Target, tgt)
	scr.Set(func(st *Status) { st.Disk, st.Server = tgt.String(), "USB stick "+part.Path })
	if err := mountStick(o.RootDir, part); err != nil {
		return nil, err
	}
	img, err := ChooseStickImage(stickMount, file, cfg.Image)
	if err != nil {
		return nil, err
	}
	logf("source: %s from the stick", filepath.Base(img))
	logf("restore starts %.1f s after power-on", Uptime().Seconds())
	res, err := restore.Run(ctx, restore.Request{
		Source: img, Target: tgt.Path, Erase: true, NoVerify: cfg.NoVerify, Delta: cfg.Delta, NoPrompt: true,
		Grow: cfg.Grow, GrowFS: growFS(o.RootDir, logf),
		OpenSource: func(s string, maxSize int64) (source.Source, error) {
			src, err := sourceurl.Open(ctx, s, sourceurl.Options{Log: logf, MaxSize: maxSize})
			if err != nil {
				return nil, err
			}
			if src, err = checkTrusted(src, keys, logf); err == nil {
				scr.Set(func(st *Status) { st.Image = imageName(src.Info()) })
			}
			return src, err
		},
		Out: watched(progress.New(o.Console, false), scr),
	})
	return res, growHint(err)
}

// loadAllDrivers loads drivers until no new device asks for one: a
// controller's driver (virtio_pci, ahci, xhci_pci, sdhci_pci) makes the
// devices behind it appear, and those want drivers of their own
// (virtio_blk, sd_mod, a USB NIC's r8152, mmc_block).
func loadAllDrivers(rootDir, sysRoot string) ([]string, error) {
	var all []string
	seen := map[string]bool{}
	var errs error
	for range 5 {
		mods, err := LoadDrivers(rootDir, sysRoot)
		if err != nil {
			errs = err
		}
		fresh := 0
		for _, m := range mods {
			if !seen[m] {
				seen[m] = true
				all = append(all, m)
				fresh++
			}
		}
		if fresh == 0 {
			break
		}
		waitDevices(sysRoot, 800*time.Millisecond, 4*time.Second)
	}
	return all, errs
}

// waitDevices lets newly loaded drivers probe their devices: it returns
// once the number of devices has held for settle, or after most. A USB
// hub finds what is plugged into it port by port, an SD host its card
// after a debounce: one fixed pause would be too short for some and
// needlessly long for the rest.
func waitDevices(sysRoot string, settle, most time.Duration) {
	deadline := time.Now().Add(most)
	last, since := -1, time.Now()
	for time.Now().Before(deadline) {
		n := len(deviceAliases(sysRoot))
		if n != last {
			last, since = n, time.Now()
		} else if time.Since(since) >= settle {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// logTarget names the target; a card chosen on its own (no asr.target=)
// is said to be one.
func logTarget(logf func(string, ...any), named string, tgt Disk) {
	logf("target: %s", tgt)
	if tgt.IsCard() && named == "" {
		logf("target: %s is an SD/MMC card, chosen because it is the only disk; name another with asr.target= if this is wrong", tgt.Path)
	}
}

// waitDisks waits until disks have appeared and their number has held for
// settle: a slow controller may show its second disk later than its first,
// and choosing "the only internal disk" too early would be wrong.
func waitDisks(sysRoot string, d time.Duration) ([]Disk, error) {
	const settle = time.Second
	deadline := time.Now().Add(d)
	var last []Disk
	stableSince := time.Now()
	for {
		disks, err := Disks(sysRoot)
		if err != nil {
			return nil, err
		}
		if len(disks) != len(last) {
			last, stableSince = disks, time.Now()
		}
		if len(last) > 0 && time.Since(stableSince) >= settle || time.Now().After(deadline) {
			return last, nil
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func waitLinks(d time.Duration) ([]netlink.Link, error) {
	deadline := time.Now().Add(d)
	for {
		links, err := WiredLinks()
		if err == nil && len(links) > 0 || time.Now().After(deadline) {
			return links, err
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// watched has scr follow p's events.
func watched(p *progress.Printer, scr *Screen) *progress.Printer {
	if scr != nil {
		p.Watch(scr.Watch)
	}
	return p
}

// imageName is what the screen calls the image: the name in its manifest
// (the image's own word, escaped when shown), else its kind.
func imageName(info source.Info) string {
	if info.Manifest != nil && info.Manifest.Name != "" {
		return info.Manifest.Name
	}
	return info.Kind
}
