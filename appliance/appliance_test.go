package appliance

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/asrlinux/asr/internal/sourceurl"
)

func TestParseCmdline(t *testing.T) {
	for _, c := range []struct {
		cmdline string
		want    Config
	}{
		{"console=ttyS0 quiet", Config{After: Reboot, Timeout: 60 * time.Second}},
		{"console=ttyS0 asr.source=http://198.18.0.1/lab.asr asr.noverify asr.after=poweroff asr.timeout=30",
			Config{Source: "http://198.18.0.1/lab.asr", NoVerify: true, After: PowerOff, Timeout: 30 * time.Second}},
		{`asr.source=asr://server asr.target="/dev/disk/by-id/ata-Some Disk_123" asr.debug=1 asr.image=lab`,
			Config{Source: "asr://server", Target: "/dev/disk/by-id/ata-Some Disk_123", Debug: true, After: Reboot, Timeout: 60 * time.Second, Image: "lab"}},
		{"asr.noverify=0 asr.after=shell", Config{After: Shell, Timeout: 60 * time.Second}},
		{"asr.source=http://198.18.0.1/lab.asr asr.delta", Config{Source: "http://198.18.0.1/lab.asr", Delta: true, After: Reboot, Timeout: 60 * time.Second}},
		{"asr.source=http://198.18.0.1/lab.asr asr.grow", Config{Source: "http://198.18.0.1/lab.asr", Grow: true, After: Reboot, Timeout: 60 * time.Second}},
		{"asr.grow=0", Config{After: Reboot, Timeout: 60 * time.Second}},
		{"asr.after=poweroff asr.onfailure=poweroff", Config{After: PowerOff, OnFailure: PowerOff, Timeout: 60 * time.Second}},
		{"asr.onfailure=reboot", Config{After: Reboot, OnFailure: Reboot, Timeout: 60 * time.Second}},
		{"asr.onfailure=shell", Config{After: Reboot, OnFailure: Shell, Timeout: 60 * time.Second}},
		{"asr.onfailure=wait", Config{After: Reboot, OnFailure: Wait, Timeout: 60 * time.Second}},
		{"asr.source=label:ASRDATA asr.report=http://198.18.0.1:8081/status",
			Config{Source: "label:ASRDATA", Report: "http://198.18.0.1:8081/status", After: Reboot, Timeout: 60 * time.Second}},
		{"asr.source=label:ASRDATA/lab.asr", Config{Source: "label:ASRDATA/lab.asr", After: Reboot, Timeout: 60 * time.Second}},
		{"asr.source=oci://198.18.0.1:5000/lab/disk:v2", Config{Source: "oci://198.18.0.1:5000/lab/disk:v2", After: Reboot, Timeout: 60 * time.Second}},
		{"asr.source=oci://registry.example.com/lab/disk@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
			Config{Source: "oci://registry.example.com/lab/disk@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef", After: Reboot, Timeout: 60 * time.Second}},
	} {
		got, err := ParseCmdline(c.cmdline)
		if err != nil || got != c.want {
			t.Errorf("ParseCmdline(%q) = %+v, %v; want %+v", c.cmdline, got, err, c.want)
		}
	}
}

// TestFailureAction: after a failure the appliance waits unless told
// otherwise; asr.onfailure= wins over the older ways to get a shell.
func TestFailureAction(t *testing.T) {
	for _, c := range []struct {
		cmdline string
		want    After
	}{
		{"", Wait},
		{"asr.after=poweroff", Wait}, // a successful restore's choice is not a failure's
		{"asr.after=reboot", Wait},
		{"asr.debug", Shell},
		{"asr.after=shell", Shell},
		{"asr.after=poweroff asr.onfailure=poweroff", PowerOff},
		{"asr.onfailure=reboot", Reboot},
		{"asr.debug asr.onfailure=wait", Wait},
		{"asr.after=shell asr.onfailure=poweroff", PowerOff},
	} {
		cfg, err := ParseCmdline(c.cmdline)
		if err != nil {
			t.Fatalf("ParseCmdline(%q): %v", c.cmdline, err)
		}
		if got := cfg.FailureAction(); got != c.want {
			t.Errorf("%q: after a failure %q, want %q", c.cmdline, got, c.want)
		}
	}
}

func TestParseCmdlineRefuses(t *testing.T) {
	for _, c := range []struct{ cmdline, want string }{
		{"asr.source=ftp://x/y", "asr.source=ftp://x/y: give " + sourceurl.NetworkURLs() + ", or label:ASRDATA"},
		{"asr.source=asr://", "asr.source=asr://: no host: give asr://HOST[:PORT]"},
		{"asr.source=http://", "asr.source=http://: no host: give http(s)://HOST/IMAGE"},
		{"asr.source=https:///lab.asr", "no host"},
		{"asr.source=asr://h:99999", "bad port"},
		{"asr.source=http://u:hunter2@/x?X-Amz-Signature=s3cr3t", "asr.source=http://u:xxxxx@/x?X-Amz-Signature=xxxxx: no host"},
		{"asr.source=oci://198.18.0.1:5000/lab/disk", "asr.source=oci://198.18.0.1:5000/lab/disk: no tag or digest"},
		{"asr.source=oci://198.18.0.1:5000/Lab/disk:v1", "not a valid OCI reference"},
		{"asr.after=dance", "asr.after=dance: give reboot, poweroff or shell"},
		{"asr.onfailure=halt", "asr.onfailure=halt: give wait, poweroff, reboot or shell"},
		{"asr.onfailure", "asr.onfailure=: give wait, poweroff, reboot or shell"},
		{"asr.after=wait", "asr.after=wait: give reboot, poweroff or shell"},
		{"asr.timeout=0", "asr.timeout=0: give a number of seconds"},
		{"asr.timeout=abc", "asr.timeout=abc"},
		{"asr.noverify=maybe", "asr.noverify=maybe: give 1 or 0"},
		{"asr.delta=maybe", "asr.delta=maybe: give 1 or 0"},
		{"asr.grow=max", "asr.grow=max: give 1 or 0"},
		{"asr.grwo", "unknown kernel parameter asr.grwo (known: asr.source, asr.target, asr.noverify, asr.delta, asr.grow,"},
		{"asr.targt=/dev/sda", "unknown kernel parameter asr.targt"},
		{"asr.target=", "asr.target= is empty"},
		{"asr.report=198.18.0.1/status", "asr.report=198.18.0.1/status: give the http:// or https:// URL"},
		{"asr.source=label:", "give label:LABEL or label:LABEL/IMAGE.asr"},
		{"asr.source=label:ASRDATA/a/b.asr", "name an image at the top of the ASRDATA filesystem"},
		{`asr.target=/dev/sda" asr.after=bogus`, `the double quote in asr.target=/dev/sda" asr.after=bogus is never closed`},
		{`console=ttyS0 asr.target="/dev/disk/by-id/ata-Some Disk`, `the double quote in asr.target="/dev/disk/by-id/ata-Some Disk is never closed`},
		{`quiet "asr.noverify asr.after=poweroff`, `is never closed`},
		{"asr.target=/dev/sda\x1b[2J", `kernel parameter asr.target=/dev/sda\x1b[2J holds control characters`},
	} {
		_, err := ParseCmdline(c.cmdline)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("ParseCmdline(%q) = %v, want an error with %q", c.cmdline, err, c.want)
		}
		if err != nil && (strings.Contains(err.Error(), "hunter2") || strings.Contains(err.Error(), "s3cr3t")) {
			t.Errorf("ParseCmdline(%q) = %v: the secret is in the message", c.cmdline, err)
		}
	}
}

// fakeSys builds a /sys/block tree: name -> size in sectors, removable,
// serial, and whether it hangs off a USB bus.
func fakeSys(t *testing.T, disks map[string][4]string) string {
	t.Helper()
	root := t.TempDir()
	devs := filepath.Join(root, "devices")
	for name, d := range disks {
		bus := "pci0000:00/0000:00:04.0"
		if d[3] == "usb" {
			bus = "pci0000:00/0000:00:14.0/usb1/1-1/1-1:1.0/host2/target2:0:0/2:0:0:0"
		}
		dir := filepath.Join(devs, bus, "block", name)
		for f, v := range map[string]string{"size": d[0], "removable": d[1], "ro": "0", "serial": d[2], "device/model": "Disk " + name} {
			os.MkdirAll(filepath.Dir(filepath.Join(dir, f)), 0o755)
			os.WriteFile(filepath.Join(dir, f), []byte(v+"\n"), 0o644)
		}
		os.MkdirAll(filepath.Join(root, "block"), 0o755)
		os.Symlink(dir, filepath.Join(root, "block", name))
	}
	return root
}

func TestChooseTarget(t *testing.T) {
	sys := fakeSys(t, map[string][4]string{
		"vda":   {"2097152", "0", "SN-A", ""},
		"sda":   {"62914560", "0", "USB-STICK", "usb"}, // a USB stick: not internal
		"sr0":   {"2048", "1", "", ""},                 // an optical drive: skipped
		"loop0": {"100", "0", "", ""},                  // skipped
		"mmc":   {"0", "1", "", ""},                    // empty card slot: skipped
	})
	disks, err := Disks(sys)
	if err != nil {
		t.Fatal(err)
	}
	if len(disks) != 2 {
		t.Fatalf("Disks = %v, want vda and sda", disks)
	}
	d, err := ChooseTarget("", disks)
	if err != nil || d.Path != "/dev/vda" || d.Size != 1<<30 {
		t.Errorf("ChooseTarget(one internal) = %v, %v; want /dev/vda of 1 GiB", d, err)
	}
	for _, named := range []string{"/dev/sda", "sda", "USB-STICK", "/dev/disk/by-id/usb-Vendor_USB-STICK"} {
		if d, err := ChooseTarget(named, disks); err != nil || d.Path != "/dev/sda" {
			t.Errorf("ChooseTarget(%q) = %v, %v; want /dev/sda", named, d, err)
		}
	}
	if _, err := ChooseTarget("/dev/nvme0n1", disks); err == nil || !strings.Contains(err.Error(), "matches no disk") || !strings.Contains(err.Error(), "/dev/vda") {
		t.Errorf("ChooseTarget(missing) = %v, want a refusal listing the disks", err)
	}
}

func TestChooseTargetRefusesAmbiguity(t *testing.T) {
	disks, err := Disks(fakeSys(t, map[string][4]string{
		"vda": {"2097152", "0", "A", ""},
		"vdb": {"4194304", "0", "B", ""},
	}))
	if err != nil {
		t.Fatal(err)
	}
	_, err = ChooseTarget("", disks)
	if err == nil || !strings.Contains(err.Error(), "2 internal disks") || !strings.Contains(err.Error(), "/dev/vda") || !strings.Contains(err.Error(), "/dev/vdb") {
		t.Errorf("ChooseTarget(two internal) = %v, want a refusal listing both", err)
	}
	none, _ := Disks(fakeSys(t, map[string][4]string{"sda": {"100", "1", "", ""}}))
	if _, err := ChooseTarget("", none); err == nil || !strings.Contains(err.Error(), "no internal disk") {
		t.Errorf("ChooseTarget(only removable) = %v, want 'no internal disk'", err)
	}
}
