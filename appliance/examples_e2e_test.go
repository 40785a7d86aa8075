package appliance

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/asrlinux/asr/internal/testenv"
)

// TestExampleConfigs checks the example DHCP servers' configurations with
// the servers themselves, and that each sets option SourceOption to a URL
// the appliance accepts. The lab's netboot test (qemu) runs dnsmasq.conf.
func TestExampleConfigs(t *testing.T) {
	testenv.Require(t, "dnsmasq", "dhcpd")
	for _, c := range []struct {
		file  string
		check []string
		// The option's number and value, as the file sets them.
		option *regexp.Regexp
	}{
		{"dnsmasq.conf", []string{"dnsmasq", "--test", "--conf-file=FILE"},
			regexp.MustCompile(`(?m)^dhcp-option=(\d+),"([^"]*)"`)},
		{"dhcpd.conf", []string{"dhcpd", "-t", "-cf", "FILE"},
			regexp.MustCompile(`(?m)^option asr-source code (\d+) = text;[\s\S]*^\s*option asr-source "([^"]*)";`)},
	} {
		p := filepath.Join("examples", c.file)
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		args := append([]string(nil), c.check...)
		for i, a := range args {
			args[i] = strings.ReplaceAll(a, "FILE", p)
		}
		if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
			t.Errorf("%s rejects %s: %v\n%s", args[0], p, err, out)
		}
		m := c.option.FindStringSubmatch(string(b))
		if m == nil {
			t.Errorf("%s does not set the source option", p)
			continue
		}
		if n, _ := strconv.Atoi(m[1]); n != SourceOption {
			t.Errorf("%s sets option %d; the appliance reads option %d", p, n, SourceOption)
		}
		if err := checkSourceURL(m[2]); err != nil {
			t.Errorf("%s: the appliance would refuse its source: %v", p, err)
		}
	}
}

// TestExampleConfigCheckFails makes sure the syntax checks above can fail:
// a broken copy of each example is rejected.
func TestExampleConfigCheckFails(t *testing.T) {
	testenv.Require(t, "dnsmasq", "dhcpd")
	dir := t.TempDir()
	for _, c := range []struct {
		name string
		text string
		cmd  func(p string) *exec.Cmd
	}{
		{"dnsmasq.conf", "dhcp-boot=tag:ipxe\ndhcp-range=nonsense\n", func(p string) *exec.Cmd { return exec.Command("dnsmasq", "--test", "--conf-file="+p) }},
		{"dhcpd.conf", "subnet 198.18.0.0 netmask 255.255.255.0 { range 198.18.0.100 }\n", func(p string) *exec.Cmd { return exec.Command("dhcpd", "-t", "-cf", p) }},
	} {
		p := filepath.Join(dir, c.name)
		if err := os.WriteFile(p, []byte(c.text), 0o644); err != nil {
			t.Fatal(err)
		}
		if out, err := c.cmd(p).CombinedOutput(); err == nil {
			t.Errorf("%s accepted a broken %s:\n%s", c.cmd(p).Args[0], c.name, out)
		}
	}
}
