package appliance

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/asrlinux/asr/internal/redact"
	"github.com/asrlinux/asr/internal/safetext"
	"github.com/asrlinux/asr/internal/sourceurl"
)

// After is what the appliance does once the restore succeeded
// (asr.after=) or failed (asr.onfailure=).
type After string

const (
	Reboot   After = "reboot"
	PowerOff After = "poweroff"
	Shell    After = "shell"
	// Wait keeps the failure on the screen until a person powers the
	// machine off: asr.onfailure= only, and its default.
	Wait After = "wait"
)

// Config is the appliance's configuration, from the kernel command line.
type Config struct {
	Source   string // asr.source=: http(s)://, asr:// or oci:// URL, or label:LABEL[/IMAGE] (the toolkit stick)
	Target   string // asr.target=: /dev/..., /dev/disk/by-id/..., or a disk serial
	NoVerify bool   // asr.noverify
	Delta    bool   // asr.delta: reuse the disk's chunks that match the image (asr restore --delta)
	// Grow is asr.grow: on a disk larger than the image, enlarge the last
	// partition and grow its filesystem to fill it (asr restore --grow).
	Grow  bool
	After After // asr.after=: reboot (default), poweroff, shell
	// OnFailure is asr.onfailure=: wait, poweroff, reboot or shell after
	// a failure. "" (not given) is wait, or shell with asr.debug or
	// asr.after=shell (FailureAction).
	OnFailure After
	Timeout   time.Duration // asr.timeout=: seconds for DHCP, reaching the source, and stream silence (default 60)
	Debug     bool          // asr.debug: a failure opens a shell
	Image     string        // asr.image=: which of several DNS-SD servers to use (by image name)
	Report    string        // asr.report=: http(s):// URL the appliance POSTs its status to (see Report)
}

// ParseCmdline reads the asr.* keys of a kernel command line; others are
// ignored. Unknown asr.* keys and bad values are errors: a typo must not be
// silently ignored by a machine about to erase its disk.
func ParseCmdline(cmdline string) (Config, error) {
	c := Config{After: Reboot, Timeout: 60 * time.Second}
	fields, err := splitCmdline(cmdline)
	if err != nil {
		return c, err
	}
	for _, f := range fields {
		if !strings.HasPrefix(f, "asr.") {
			continue
		}
		if safetext.Line(f) != f {
			return c, fmt.Errorf("kernel parameter %s holds control characters: retype it", safetext.Short(f, 80))
		}
		key, val, hasVal := strings.Cut(f, "=")
		switch key {
		case "asr.source":
			if strings.HasPrefix(val, StickScheme) {
				if _, _, err := parseStickSource(val); err != nil {
					return c, err
				}
			} else if err := sourceurl.CheckNetwork(val); errors.Is(err, sourceurl.ErrUnknownScheme) {
				return c, fmt.Errorf("asr.source=%s: give %s, or %s%s for the toolkit stick", shown(val), sourceurl.NetworkURLs(), StickScheme, StickDataLabel)
			} else if err != nil {
				return c, fmt.Errorf("asr.source=%s: %w", shown(val), err)
			}
			c.Source = val
		case "asr.target":
			if val == "" {
				return c, fmt.Errorf("asr.target= is empty: give a device such as /dev/sda, a /dev/disk/by-id/ name, or a disk serial")
			}
			c.Target = val
		case "asr.noverify":
			b, err := flag(key, val, hasVal)
			if err != nil {
				return c, err
			}
			c.NoVerify = b
		case "asr.delta":
			b, err := flag(key, val, hasVal)
			if err != nil {
				return c, err
			}
			c.Delta = b
		case "asr.grow":
			b, err := flag(key, val, hasVal)
			if err != nil {
				return c, err
			}
			c.Grow = b
		case "asr.debug":
			b, err := flag(key, val, hasVal)
			if err != nil {
				return c, err
			}
			c.Debug = b
		case "asr.after":
			switch After(val) {
			case Reboot, PowerOff, Shell:
				c.After = After(val)
			default:
				return c, fmt.Errorf("asr.after=%s: give reboot, poweroff or shell", val)
			}
		case "asr.onfailure":
			switch After(val) {
			case Wait, PowerOff, Reboot, Shell:
				c.OnFailure = After(val)
			default:
				return c, fmt.Errorf("asr.onfailure=%s: give wait, poweroff, reboot or shell", shown(val))
			}
		case "asr.timeout":
			n, err := strconv.Atoi(val)
			if err != nil || n <= 0 || n > 86400 {
				return c, fmt.Errorf("asr.timeout=%s: give a number of seconds from 1 to 86400", val)
			}
			c.Timeout = time.Duration(n) * time.Second
		case "asr.image":
			c.Image = val
		case "asr.report":
			if !strings.HasPrefix(val, "http://") && !strings.HasPrefix(val, "https://") {
				return c, fmt.Errorf("asr.report=%s: give the http:// or https:// URL to POST status reports to", shown(val))
			}
			c.Report = val
		default:
			return c, fmt.Errorf("unknown kernel parameter %s (known: asr.source, asr.target, asr.noverify, asr.delta, asr.grow, asr.after, asr.onfailure, asr.timeout, asr.debug, asr.image, asr.report)", safetext.Short(key, 64))
		}
	}
	return c, nil
}

// FailureAction is what the appliance does after a failure: asr.onfailure=
// when given; else a shell with asr.debug or asr.after=shell (someone
// meant to look into the machine); else it waits with the reason on the
// screen, so that a lab does not reboot into a loop of failed restores.
func (c Config) FailureAction() After {
	switch {
	case c.OnFailure != "":
		return c.OnFailure
	case c.Debug || c.After == Shell:
		return Shell
	}
	return Wait
}

// shown is a value of the command line fit for the console: without
// secrets, without control characters.
func shown(val string) string { return safetext.Line(redact.Text(val)) }

func flag(key, val string, hasVal bool) (bool, error) {
	if !hasVal {
		return true, nil
	}
	switch val {
	case "1", "yes", "true", "on":
		return true, nil
	case "0", "no", "false", "off":
		return false, nil
	}
	return false, fmt.Errorf("%s=%s: give 1 or 0", key, val)
}

// splitCmdline splits on spaces, keeping double-quoted values together as
// the kernel does ("asr.target=/dev/disk/by-id/ata-Some Disk" needs quotes).
// A quote left open is an error: the kernel would read every parameter
// after it as part of one value, so `asr.target=/dev/sda" asr.after=shell`
// would silently lose asr.after.
func splitCmdline(s string) ([]string, error) {
	var out []string
	var b strings.Builder
	quoted, open := false, 0
	s = strings.TrimSpace(s)
	for i, r := range s {
		switch {
		case r == '"':
			quoted = !quoted
			open = i
		case (r == ' ' || r == '\t' || r == '\n') && !quoted:
			if b.Len() > 0 {
				out = append(out, b.String())
				b.Reset()
			}
		default:
			b.WriteRune(r)
		}
	}
	if quoted {
		start := strings.LastIndexAny(s[:open], " \t\n") + 1
		return nil, fmt.Errorf("kernel command line: the double quote in %s is never closed, so it would swallow every parameter after it: close it or remove it",
			safetext.Short(s[start:], 80))
	}
	if b.Len() > 0 {
		out = append(out, b.String())
	}
	return out, nil
}
