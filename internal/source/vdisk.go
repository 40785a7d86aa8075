package source

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/asrlinux/asr/internal/image"
	"github.com/asrlinux/asr/internal/safetext"
)

// The disk formats of VMs and clouds (qcow2, VMDK, VHD, VHDX, VDI) are read
// through qemu-img (Debian's qemu-utils), not a reader of our own: qemu is
// the reference implementation of all five, with their compressed clusters,
// subformats and quirks, and it is maintained; five readers of our own would
// each need the same care and still be less proven. imagescan converts the
// image to a raw file in the output's directory and scans that: the raw
// file is created unnamed (O_TMPFILE), so nothing is left behind whatever
// stops the scan, a signal or a kill included.
//
// Images that name other files are refused: a qcow2 or VMDK with a backing
// file, a VHD or VDI differencing disk, a qcow2 with an external data file,
// a VMDK whose extents are other files. Their names come from the image,
// and qemu-img would open whatever they say (another disk, a device, a
// network URL); flattening the chain first is one qemu-img command, which
// the message gives.

// VirtualDisk is a VM disk format recognised by its magic.
type VirtualDisk struct {
	Name   string // "qcow2", "VMDK", "VHD", "VHDX", "VDI"
	format string // qemu's driver
	// refuse, when set, says why the image cannot be read alone.
	refuse string
}

// vdiskHeadLen covers every header field DetectVirtualDisk looks at.
const vdiskHeadLen = 512

// detectVirtualDisk recognises a VM disk image by its magic numbers: at
// its start, and for a fixed VHD in its last 512 bytes.
func detectVirtualDisk(r io.ReaderAt, size int64) VirtualDisk {
	head := make([]byte, vdiskHeadLen)
	n, _ := r.ReadAt(head, 0)
	head = head[:n]
	at := func(b []byte, off int, s string) bool { return len(b) >= off+len(s) && string(b[off:off+len(s)]) == s }
	switch {
	case at(head, 0, "QFI\xfb") && len(head) >= 8:
		if binary.BigEndian.Uint32(head[4:]) == 1 {
			return VirtualDisk{Name: "qcow", format: "qcow"}
		}
		return VirtualDisk{Name: "qcow2", format: "qcow2"}
	case at(head, 0, "KDMV"), at(head, 0, "COWD"):
		return VirtualDisk{Name: "VMDK", format: "vmdk"}
	case at(head, 0, "# Disk DescriptorFile"):
		return VirtualDisk{Name: "VMDK", format: "vmdk", refuse: "a VMDK descriptor, whose data lies in other files"}
	case at(head, 0, "vhdxfile"):
		return VirtualDisk{Name: "VHDX", format: "vhdx"}
	case at(head, 0, "conectix"):
		return vhd(head)
	case len(head) >= 0x50 && binary.LittleEndian.Uint32(head[0x40:]) == 0xbeda107f:
		d := VirtualDisk{Name: "VDI", format: "vdi"}
		if t := binary.LittleEndian.Uint32(head[0x4c:]); t == 3 || t == 4 {
			d.refuse = "a VDI differencing (or undo) image, whose data lies partly in its parent"
		}
		return d
	}
	if size >= 512 {
		foot := make([]byte, 512)
		if _, err := r.ReadAt(foot, size-512); err == nil && at(foot, 0, "conectix") {
			return vhd(foot)
		}
	}
	return VirtualDisk{}
}

// vhd reads a VHD footer's disk type: 4 is a differencing disk.
func vhd(footer []byte) VirtualDisk {
	d := VirtualDisk{Name: "VHD", format: "vpc"}
	if len(footer) >= 64 && binary.BigEndian.Uint32(footer[60:]) == 4 {
		d.refuse = "a VHD differencing disk, whose data lies partly in its parent"
	}
	return d
}

// DetectVirtualDisk opens path and names the VM disk format it holds, or
// returns a zero VirtualDisk for anything else (raw, compressed, prepared,
// a device).
func DetectVirtualDisk(path string) (VirtualDisk, error) {
	lf, err := openLocal(path)
	if err != nil {
		return VirtualDisk{}, err
	}
	defer lf.f.Close()
	if lf.device {
		return VirtualDisk{}, nil
	}
	return detectVirtualDisk(lf.f, lf.size), nil
}

// qemuInfo is what `qemu-img info --output=json` says that matters here.
type qemuInfo struct {
	VirtualSize     int64  `json:"virtual-size"`
	ActualSize      int64  `json:"actual-size"`
	BackingFilename string `json:"backing-filename"`
	FormatSpecific  struct {
		Data struct {
			DataFile string `json:"data-file"`
			Extents  []struct {
				Filename string `json:"filename"`
			} `json:"extents"`
		} `json:"data"`
	} `json:"format-specific"`
}

// maxVirtualSize is the largest disk an image can hold.
const maxVirtualSize = int64(image.MaxChunks) * image.MaxChunkSize

// OpenVirtualDisk converts the VM disk image at path (see
// DetectVirtualDisk) to a raw file in tmpDir with qemu-img and opens that
// for imagescan. The raw file has no name and disappears when the Stream
// is closed or the process ends; it takes as much space as the disk's
// allocated data, at most its virtual size.
func OpenVirtualDisk(ctx context.Context, path, tmpDir string) (*Stream, error) {
	lf, err := openLocal(path)
	if err != nil {
		return nil, err
	}
	defer lf.f.Close()
	vd := detectVirtualDisk(lf.f, lf.size)
	switch {
	case vd.Name == "":
		return nil, fmt.Errorf("source %s is not a VM disk image", path)
	case vd.refuse != "":
		return nil, fmt.Errorf("source %s is %s: asr reads an image alone, never the files it names; flatten it first: qemu-img convert -O qcow2 %s flat.qcow2", path, vd.refuse, path)
	}
	qemuImg, err := exec.LookPath("qemu-img")
	if err != nil {
		return nil, fmt.Errorf("source %s is a %s image: reading it needs qemu-img (Debian package qemu-utils), which is not installed", path, vd.Name)
	}
	// qemu-img reads the file asr opened, as /dev/fd/3: no second lookup
	// of the path, and no protocol prefix (json:, nbd:) in a file name is
	// ever parsed.
	src := "/dev/fd/3"
	info, err := qemuImageInfo(ctx, qemuImg, vd, lf.f, src)
	if err != nil {
		return nil, fmt.Errorf("source %s: qemu-img cannot read it as a %s image: %w", path, vd.Name, err)
	}
	if err := info.alone(src); err != "" {
		return nil, fmt.Errorf("source %s is a %s image with %s: asr reads an image alone, never the files it names; flatten it first: qemu-img convert -O qcow2 %s flat.qcow2", path, vd.Name, err, path)
	}
	if err := qemuImageCheck(ctx, qemuImg, vd, lf.f, src); err != nil {
		return nil, fmt.Errorf("source %s: %w", path, err)
	}
	if info.VirtualSize <= 0 || info.VirtualSize > maxVirtualSize {
		return nil, fmt.Errorf("source %s: %s image of %d bytes: an image holds from 1 byte to %d", path, vd.Name, info.VirtualSize, maxVirtualSize)
	}
	var fs unix.Statfs_t
	if err := unix.Statfs(tmpDir, &fs); err == nil && int64(fs.Bavail)*fs.Bsize < info.ActualSize {
		return nil, fmt.Errorf("source %s: converting it needs about %d bytes free in %s for a raw copy, %d are", path, info.ActualSize, tmpDir, int64(fs.Bavail)*fs.Bsize)
	}
	tf, err := rawTempFile(tmpDir, info.VirtualSize)
	if err != nil {
		return nil, fmt.Errorf("source %s: a temporary raw copy in %s: %w", path, tmpDir, err)
	}
	ok := false
	defer func() {
		if !ok {
			tf.Close()
		}
	}()
	// -n: write into the file made here; --target-is-zero: it is all
	// holes, so zeros need not be written, and the copy stays sparse.
	args := []string{"convert", "-q", "-n", "--target-is-zero", "-O", "raw"}
	args = append(args, imageArgs(vd, src)...)
	args = append(args, "/dev/fd/4")
	if err := runQemuImg(ctx, qemuImg, args, lf.f, tf, nil); err != nil {
		return nil, fmt.Errorf("source %s: converting the %s image with qemu-img: %w", path, vd.Name, err)
	}
	ok = true
	size := info.VirtualSize
	s := &Stream{Kind: vd.Name + " image, converted by qemu-img", Size: size, ModTime: lf.mod}
	cr := &countingReader{r: io.NewSectionReader(tf, 0, size)}
	s.Consumed = cr.n.Load
	s.ReadCloser = closeBoth{io.NopCloser(bufio.NewReaderSize(cr, 1<<20)), tf}
	s.At = io.NewSectionReader(tf, 0, size)
	return s, nil
}

// imageArgs names the source for qemu-img: its format given, never probed,
// and for the formats that may have one, no backing file opened even if
// one were named.
func imageArgs(vd VirtualDisk, src string) []string {
	switch vd.format {
	case "qcow2", "qcow", "vmdk":
		spec, _ := json.Marshal(map[string]any{"driver": vd.format, "backing": nil, "file": map[string]any{"driver": "file", "filename": src}})
		return []string{"json:" + string(spec)}
	}
	return []string{"-f", vd.format, src}
}

// alone returns what the image names besides itself, or "".
func (q *qemuInfo) alone(self string) string {
	switch {
	case q.BackingFilename != "":
		return "a backing file (" + safetext.Line(q.BackingFilename) + ")"
	case q.FormatSpecific.Data.DataFile != "":
		return "an external data file (" + safetext.Line(q.FormatSpecific.Data.DataFile) + ")"
	}
	for _, e := range q.FormatSpecific.Data.Extents {
		if e.Filename != self {
			return "an extent in another file (" + safetext.Line(e.Filename) + ")"
		}
	}
	return ""
}

// qemuImageInfo runs qemu-img info on the image, which qemu-img reads
// without its backing file.
func qemuImageInfo(ctx context.Context, qemuImg string, vd VirtualDisk, f *os.File, src string) (*qemuInfo, error) {
	var out bytes.Buffer
	args := []string{"info", "--output=json", "-f", vd.format, src}
	if err := runQemuImg(ctx, qemuImg, args, f, nil, &out); err != nil {
		return nil, err
	}
	var info qemuInfo
	if err := json.Unmarshal(out.Bytes(), &info); err != nil {
		return nil, fmt.Errorf("qemu-img info: %w", err)
	}
	return &info, nil
}

// qemuImageCheck runs qemu-img check, where the format has one: qemu-img
// reads a cluster past the end of a truncated file as zeros, so without
// the check a qcow2 cut short by a failed download would convert, and be
// imaged, without a word. Leaked clusters (exit status 3) are harmless.
func qemuImageCheck(ctx context.Context, qemuImg string, vd VirtualDisk, f *os.File, src string) error {
	switch vd.format {
	case "qcow2", "vmdk", "vhdx", "vdi":
	default:
		return nil
	}
	cmd := exec.CommandContext(ctx, qemuImg, "check", "--output=json", "-f", vd.format, src)
	cmd.ExtraFiles = []*os.File{f}
	out := &limitedBuffer{max: 1 << 20}
	cmd.Stdout, cmd.Stderr = out, &limitedBuffer{max: 0}
	cmd.Env = append(os.Environ(), "LC_ALL=C")
	err := cmd.Run()
	if ctx.Err() != nil {
		return context.Cause(ctx)
	}
	var res struct {
		Corruptions int64 `json:"corruptions"`
		CheckErrors int64 `json:"check-errors"`
	}
	if jerr := json.Unmarshal(out.b.Bytes(), &res); jerr != nil {
		return fmt.Errorf("qemu-img check cannot check the %s image (%v): it is damaged or not what its header says", vd.Name, err)
	}
	if res.Corruptions > 0 || res.CheckErrors > 0 {
		return fmt.Errorf("qemu-img check finds %d corruptions and %d errors in the %s image: it is damaged (cut short?); 'qemu-img check -f %s' lists them", res.Corruptions, res.CheckErrors, vd.Name, vd.format)
	}
	return nil
}

// runQemuImg runs qemu-img with src as fd 3 and dst (if any) as fd 4, its
// output (at most 1 MiB) into stdout; a failure carries the last line of
// its errors, escaped.
func runQemuImg(ctx context.Context, qemuImg string, args []string, src, dst *os.File, stdout *bytes.Buffer) error {
	cmd := exec.CommandContext(ctx, qemuImg, args...)
	cmd.ExtraFiles = []*os.File{src}
	if dst != nil {
		cmd.ExtraFiles = append(cmd.ExtraFiles, dst)
	}
	errb := &limitedBuffer{max: 64 << 10}
	cmd.Stderr = errb
	outb := &limitedBuffer{max: 1 << 20}
	cmd.Stdout = outb
	cmd.Env = append(os.Environ(), "LC_ALL=C")
	if err := cmd.Run(); err != nil {
		if ctx.Err() != nil {
			return context.Cause(ctx)
		}
		msg := strings.TrimSpace(errb.b.String())
		if i := strings.LastIndexByte(msg, '\n'); i >= 0 {
			msg = msg[i+1:]
		}
		if msg == "" {
			return err
		}
		return fmt.Errorf("%w: %s", err, safetext.Line(strings.TrimPrefix(msg, "qemu-img: ")))
	}
	if stdout != nil {
		stdout.Write(outb.b.Bytes())
	}
	return nil
}

// limitedBuffer keeps at most max bytes of what is written to it. It has
// only Write, so that io.Copy cannot go around the limit.
type limitedBuffer struct {
	b   bytes.Buffer
	max int
}

func (l *limitedBuffer) Write(p []byte) (int, error) {
	if room := l.max - l.b.Len(); room > 0 {
		l.b.Write(p[:min(len(p), room)])
	}
	return len(p), nil
}

// rawTempFile makes an unnamed file of size bytes (all holes) in dir.
// Where the filesystem cannot make unnamed files, it makes a named one and
// removes its name at once: qemu-img writes to it through /dev/fd.
func rawTempFile(dir string, size int64) (*os.File, error) {
	f, err := os.OpenFile(dir, os.O_RDWR|unix.O_TMPFILE|unix.O_CLOEXEC, 0o600)
	if err != nil {
		if !errors.Is(err, unix.EOPNOTSUPP) && !errors.Is(err, unix.EISDIR) && !errors.Is(err, unix.EINVAL) {
			return nil, err
		}
		if f, err = os.CreateTemp(dir, ".asr-raw-"); err != nil {
			return nil, err
		}
		os.Remove(f.Name())
	}
	if err := f.Truncate(size); err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}
