package appliance

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// MountAll mounts what the appliance needs: /proc, /sys, /dev (devtmpfs,
// so disks appear without udev), /run and /tmp. Already mounted is fine.
func MountAll() error {
	for _, m := range []struct{ src, dst, fstype string }{
		{"proc", "/proc", "proc"},
		{"sysfs", "/sys", "sysfs"},
		{"devtmpfs", "/dev", "devtmpfs"},
		{"tmpfs", "/run", "tmpfs"},
		{"tmpfs", "/tmp", "tmpfs"},
	} {
		if err := os.MkdirAll(m.dst, 0o755); err != nil {
			return fmt.Errorf("%s: %w", m.dst, err)
		}
		if err := unix.Mount(m.src, m.dst, m.fstype, 0, ""); err != nil && !errors.Is(err, unix.EBUSY) {
			return fmt.Errorf("mounting %s on %s: %w", m.fstype, m.dst, err)
		}
	}
	return nil
}

// Uptime is the time since power-on, from /proc/uptime.
func Uptime() time.Duration {
	b, err := os.ReadFile("/proc/uptime")
	if err != nil {
		return 0
	}
	f, _ := strconv.ParseFloat(strings.Fields(string(b))[0], 64)
	return time.Duration(f * float64(time.Second))
}

// entropyReady reports whether the kernel's random pool is initialised:
// until it is, Go's crypto/rand (TLS, multicast stream identities) blocks.
func entropyReady() bool {
	var b [1]byte
	_, err := unix.Getrandom(b[:], unix.GRND_NONBLOCK)
	return err == nil
}

// WaitEntropy waits for the kernel's random pool, saying why when it must
// wait: a CPU without RDRAND and no hardware RNG can take minutes.
func WaitEntropy(logf func(string, ...any), loadRNG func() error) {
	if entropyReady() {
		return
	}
	logf("waiting for the kernel's random numbers (no RDRAND CPU instruction and no hardware RNG yet)")
	if loadRNG != nil {
		_ = loadRNG()
	}
	start := time.Now()
	for !entropyReady() {
		time.Sleep(200 * time.Millisecond)
		if time.Since(start) > 10*time.Second && time.Since(start)%(10*time.Second) < 200*time.Millisecond {
			logf("still waiting for random numbers after %s: give the machine a hardware RNG (QEMU: -cpu max or -device virtio-rng-pci)", time.Since(start).Round(time.Second))
		}
	}
	logf("random numbers ready after %s", time.Since(start).Round(100*time.Millisecond))
}

// PowerOff, Restart: sync and tell the kernel.
func powerAction(a After) error {
	unix.Sync()
	switch a {
	case PowerOff:
		return unix.Reboot(unix.LINUX_REBOOT_CMD_POWER_OFF)
	default:
		return unix.Reboot(unix.LINUX_REBOOT_CMD_RESTART)
	}
}

// shell runs the first shell the initramfs has, on the console.
func shell() error {
	for _, sh := range []string{"/bin/gosh", "/bbin/gosh", "/bin/sh", "/bbin/elvish"} {
		if _, err := os.Stat(sh); err == nil {
			cmd := exec.Command(sh)
			cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
			return cmd.Run()
		}
	}
	return errors.New("this initramfs has no shell")
}
