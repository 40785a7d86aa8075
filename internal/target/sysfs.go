package target

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// System is where the target package looks at the running system. Tests point
// it at a fake tree; asr uses Host().
type System struct {
	Sys        string // sysfs, normally /sys
	MountInfo  string // normally /proc/self/mountinfo
	Swaps      string // normally /proc/swaps
	RootDevice uint64 // device of the running root filesystem; 0 means read it from MountInfo
}

// Host is the running system.
func Host() System {
	return System{Sys: "/sys", MountInfo: "/proc/self/mountinfo", Swaps: "/proc/swaps"}
}

func devName(dev uint64) string { return fmt.Sprintf("%d:%d", unix.Major(dev), unix.Minor(dev)) }

// sysDir is the sysfs directory of a block device.
func (s System) sysDir(dev uint64) string {
	p := filepath.Join(s.Sys, "dev", "block", devName(dev))
	if r, err := filepath.EvalSymlinks(p); err == nil {
		return r
	}
	return p
}

// parent returns the whole disk of a partition, or dev itself.
func (s System) parent(dev uint64) uint64 {
	d := s.sysDir(dev)
	if _, err := os.Stat(filepath.Join(d, "partition")); err != nil {
		return dev
	}
	if p, err := readDev(filepath.Join(filepath.Dir(d), "dev")); err == nil {
		return p
	}
	return dev
}

// partitions returns the devices of dev's partitions.
func (s System) partitions(dev uint64) []uint64 {
	d := s.sysDir(dev)
	ents, _ := os.ReadDir(d)
	var out []uint64
	for _, e := range ents {
		if _, err := os.Stat(filepath.Join(d, e.Name(), "partition")); err != nil {
			continue
		}
		if p, err := readDev(filepath.Join(d, e.Name(), "dev")); err == nil {
			out = append(out, p)
		}
	}
	return out
}

// kname is the kernel's name of a device ("loop3p1"), for messages.
func (s System) kname(dev uint64) string {
	return "/dev/" + filepath.Base(s.sysDir(dev))
}

// holders lists what stacks on dev (device-mapper, md RAID, bcache).
func (s System) holders(dev uint64) []string {
	ents, _ := os.ReadDir(filepath.Join(s.sysDir(dev), "holders"))
	var out []string
	for _, e := range ents {
		out = append(out, e.Name())
	}
	return out
}

func (s System) readOnly(dev uint64) bool {
	b, err := os.ReadFile(filepath.Join(s.sysDir(dev), "ro"))
	return err == nil && strings.TrimSpace(string(b)) == "1"
}

// zeroesCheap reports whether the device zeroes ranges without writing
// them (WRITE ZEROES offload; loop devices on sparse-capable filesystems).
func (s System) zeroesCheap(dev uint64) bool {
	b, err := os.ReadFile(filepath.Join(s.sysDir(dev), "queue", "write_zeroes_max_bytes"))
	if err != nil {
		// A partition has no queue directory; its disk's queue decides.
		b, err = os.ReadFile(filepath.Join(s.sysDir(s.parent(dev)), "queue", "write_zeroes_max_bytes"))
	}
	if err != nil {
		return false
	}
	n, _ := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
	return n > 0
}

// loopBacking lists the loop devices whose backing file is path.
func (s System) loopBacking(path string) []string {
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil
	}
	matches, _ := filepath.Glob(filepath.Join(s.Sys, "block", "loop*", "loop", "backing_file"))
	var out []string
	for _, m := range matches {
		b, err := os.ReadFile(m)
		if err == nil && strings.TrimSpace(string(b)) == abs {
			out = append(out, "/dev/"+filepath.Base(filepath.Dir(filepath.Dir(m))))
		}
	}
	return out
}

func readDev(path string) (uint64, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	return parseMajMin(strings.TrimSpace(string(b)))
}

func parseMajMin(s string) (uint64, error) {
	maj, min, ok := strings.Cut(s, ":")
	if !ok {
		return 0, fmt.Errorf("bad device number %q", s)
	}
	a, err1 := strconv.ParseUint(maj, 10, 32)
	b, err2 := strconv.ParseUint(min, 10, 32)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("bad device number %q", s)
	}
	return unix.Mkdev(uint32(a), uint32(b)), nil
}

// mount is one line of mountinfo that matters here.
type mount struct {
	dev    uint64
	point  string
	source string
}

func (s System) mounts() ([]mount, error) {
	f, err := os.Open(s.MountInfo)
	if err != nil {
		return nil, fmt.Errorf("reading mount table: %w", err)
	}
	defer f.Close()
	var out []mount
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		// 36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw,errors=continue
		fields := strings.Fields(sc.Text())
		if len(fields) < 5 {
			continue
		}
		m := mount{point: unescape(fields[4])}
		m.dev, _ = parseMajMin(fields[2])
		for i, f := range fields {
			if f == "-" && i+2 < len(fields) {
				m.source = unescape(fields[i+2])
			}
		}
		out = append(out, m)
	}
	return out, sc.Err()
}

// unescape undoes mountinfo's octal escapes ("\040" for a space).
func unescape(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// mountDev is the device a mount line stands for. Filesystems such as btrfs
// report an anonymous device number; their source path names the real one.
func mountDev(m mount) uint64 {
	if unix.Major(m.dev) != 0 {
		return m.dev
	}
	if strings.HasPrefix(m.source, "/dev/") {
		var st unix.Stat_t
		if unix.Stat(m.source, &st) == nil && st.Mode&unix.S_IFMT == unix.S_IFBLK {
			return st.Rdev
		}
	}
	return m.dev
}

// swaps returns the block devices in use as swap.
func (s System) swaps() []uint64 {
	b, err := os.ReadFile(s.Swaps)
	if err != nil {
		return nil
	}
	var out []uint64
	for i, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if i == 0 || len(f) == 0 {
			continue
		}
		var st unix.Stat_t
		if unix.Stat(unescape(f[0]), &st) == nil && st.Mode&unix.S_IFMT == unix.S_IFBLK {
			out = append(out, st.Rdev)
		}
	}
	return out
}
