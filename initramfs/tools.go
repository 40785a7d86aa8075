package initramfs

import (
	"debug/elf"
	"errors"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"

	"github.com/u-root/mkuimage/cpio"
)

// GrowTools are the programs the appliance's asr.grow runs (internal/fsgrow),
// by the paths Debian 12 installs them at; they go into the initramfs at the
// same paths, with the shared libraries they need:
//   - losetup (util-linux): the loop device over the grown partition;
//   - e2fsck and resize2fs (e2fsprogs): ext2/3/4, grown unmounted;
//   - ntfsresize (ntfs-3g): NTFS, grown unmounted;
//   - resize.f2fs (f2fs-tools): F2FS, grown unmounted;
//   - mount and umount (mount), xfs_growfs (xfsprogs), btrfs (btrfs-progs):
//     XFS and btrfs grow only mounted, with GrowModules' drivers.
//
// They are the build machine's own, dynamically linked: Debian ships no
// static builds of them.
var GrowTools = []string{
	"/usr/sbin/losetup",
	"/usr/sbin/e2fsck", "/usr/sbin/resize2fs",
	"/usr/sbin/ntfsresize",
	"/usr/sbin/resize.f2fs",
	"/usr/bin/mount", "/usr/bin/umount", "/usr/sbin/xfs_growfs", "/usr/bin/btrfs",
}

// GrowModules are the kernel modules asr.grow loads: loop devices, and the
// drivers of the filesystems that grow only mounted, with the crc32c
// checksum they both use: libcrc32c asks the kernel for "crc32c" when it
// loads, and with no modprobe in the initramfs to answer, fails (ENOENT)
// unless crc32c_generic is loaded first.
var GrowModules = []string{"loop", "crc32c_generic", "xfs", "btrfs"}

// libDirs are where shared libraries are looked for, in the dynamic
// loader's order without an ld.so.cache; %s is the multiarch triplet.
var libDirs = []string{"/lib/%s", "/usr/lib/%s", "/lib64", "/usr/lib64", "/lib", "/usr/lib"}

// A toolFile is a program or shared library to carry: its bytes, and the
// path it has in the initramfs (without the leading slash).
type toolFile struct {
	name string
	data []byte
	link string // a symbolic link to this absolute path instead of data
}

// ToolSet is what carrying some programs takes: the programs, and every
// shared library they load, each once.
type ToolSet struct {
	files []toolFile
	// Programs are the programs carried, by their path in the initramfs.
	Programs []string
	// Libraries are the shared libraries carried, with the dynamic
	// loader itself.
	Libraries []string
	// Missing are the programs the build machine does not have: the
	// appliance then cannot grow what they grow, and says so.
	Missing []string
}

// Size is the bytes the tools add, before compression.
func (s *ToolSet) Size() int64 {
	var n int64
	for _, f := range s.files {
		n += int64(len(f.data))
	}
	return n
}

// Tools collects programs (absolute paths on the build machine, under root)
// and their shared libraries, found as the dynamic loader would: the ELF
// interpreter, then each DT_NEEDED library in the multiarch and standard
// library directories, recursively. A program that is not there is left
// out (Missing); a library that cannot be found is an error, since the
// program could not run.
func Tools(root string, programs []string) (*ToolSet, error) {
	s := &ToolSet{}
	seen := map[string]string{} // the real file of each library carried -> its path carried
	for _, p := range programs {
		if !path.IsAbs(p) {
			return nil, fmt.Errorf("tool %s: give its absolute path", p)
		}
		data, err := os.ReadFile(filepath.Join(root, p))
		if errors.Is(err, os.ErrNotExist) {
			s.Missing = append(s.Missing, p)
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("tool %s: %w", p, err)
		}
		s.files = append(s.files, toolFile{name: strings.TrimPrefix(p, "/"), data: data})
		s.Programs = append(s.Programs, p)
		if err := s.addLibraries(root, p, seen); err != nil {
			return nil, err
		}
	}
	slices.Sort(s.Libraries)
	return s, nil
}

// addLibraries adds the interpreter and libraries file (a path under root)
// needs, and theirs. One file reached under two names (the loader is both
// /lib64/ld-linux-x86-64.so.2 and a library libc needs) is carried once,
// its second name a symbolic link.
func (s *ToolSet) addLibraries(root, file string, seen map[string]string) error {
	f, err := elf.Open(filepath.Join(root, file))
	if err != nil {
		return fmt.Errorf("tool %s: %w", file, err)
	}
	defer f.Close()
	triplet, err := multiarch(f)
	if err != nil {
		return fmt.Errorf("tool %s: %w", file, err)
	}
	var libs []string // absolute paths
	for _, p := range f.Progs {
		if p.Type != elf.PT_INTERP {
			continue
		}
		b := make([]byte, p.Filesz)
		if _, err := p.ReadAt(b, 0); err != nil {
			return fmt.Errorf("tool %s: reading its interpreter: %w", file, err)
		}
		libs = append(libs, strings.TrimRight(string(b), "\x00"))
	}
	needed, err := f.ImportedLibraries()
	if err != nil {
		return fmt.Errorf("tool %s: %w", file, err)
	}
	for _, n := range needed {
		p, err := findLibrary(root, triplet, n)
		if err != nil {
			return fmt.Errorf("tool %s: %w", file, err)
		}
		libs = append(libs, p)
	}
	for _, l := range libs {
		if slices.Contains(s.Libraries, l) {
			continue
		}
		real, err := filepath.EvalSymlinks(filepath.Join(root, l))
		if err != nil {
			return fmt.Errorf("tool %s: %w", file, err)
		}
		s.Libraries = append(s.Libraries, l)
		if first, ok := seen[real]; ok {
			s.files = append(s.files, toolFile{name: strings.TrimPrefix(l, "/"), link: first})
			continue
		}
		seen[real] = l
		// The file a symbolic link names, under the link's name: the
		// loader asks for the soname.
		data, err := os.ReadFile(real)
		if err != nil {
			return fmt.Errorf("tool %s: %w", file, err)
		}
		s.files = append(s.files, toolFile{name: strings.TrimPrefix(l, "/"), data: data})
		if err := s.addLibraries(root, l, seen); err != nil {
			return err
		}
	}
	return nil
}

// addTo puts the programs and libraries into a, executable. uimage adds
// their parent directories.
func (s *ToolSet) addTo(a *cpio.Archive) error {
	for _, f := range s.files {
		r := cpio.StaticRecord(f.data, cpio.Info{Name: f.name, Mode: cpio.S_IFREG | 0o755})
		if f.link != "" {
			r = cpio.Symlink(f.name, f.link)
		}
		if err := a.WriteRecord(r); err != nil {
			return fmt.Errorf("adding %s: %w", f.name, err)
		}
	}
	return nil
}

// findLibrary finds the library name as the loader would, and returns its
// absolute path (under root).
func findLibrary(root, triplet, name string) (string, error) {
	if strings.Contains(name, "/") {
		return "", fmt.Errorf("library %q: a path, not a name; not carried", name)
	}
	for _, d := range libDirs {
		p := path.Join(strings.ReplaceAll(d, "%s", triplet), name)
		if st, err := os.Stat(filepath.Join(root, p)); err == nil && st.Mode().IsRegular() {
			return p, nil
		}
	}
	return "", fmt.Errorf("library %s not found in %s", name, strings.ReplaceAll(strings.Join(libDirs, ", "), "%s", triplet))
}

// multiarch is Debian's name for the ELF file's architecture, the
// directory its libraries are in.
func multiarch(f *elf.File) (string, error) {
	switch f.Machine {
	case elf.EM_X86_64:
		return "x86_64-linux-gnu", nil
	case elf.EM_AARCH64:
		return "aarch64-linux-gnu", nil
	case elf.EM_386:
		return "i386-linux-gnu", nil
	case elf.EM_RISCV:
		return "riscv64-linux-gnu", nil
	}
	return "", fmt.Errorf("no Debian multiarch directory known for ELF machine %v", f.Machine)
}
