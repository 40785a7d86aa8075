// Package filecopy lays one directory tree over another, item by item: the
// file-copy restore (asr restore without --erase).
//
// Given a source directory and a target directory on two different
// filesystems, it replaces every target item that has a source item of the
// same name (whatever their ages or types), adds the items only the source
// has, and keeps the items only the target has. It preserves mode, owner,
// group, times, symlinks, hard links, device nodes, FIFOs, extended
// attributes (and so POSIX ACLs, which are stored as xattrs) and holes in
// sparse files. Every non-directory item is written under a temporary name in
// its final directory and renamed over the old one when complete, so an item
// is either the old one or the whole new one, never half-written. Verify then
// compares every item's content and metadata with the source.
//
// It does not mount anything, and it never crosses a mount point inside the
// source tree. It does not know about images, devices or progress bars.
package filecopy

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// msdosMagic is statfs's f_type for FAT (vfat, msdos).
const msdosMagic = 0x4d44

// tmpPrefix starts the names of files being written; a leftover one (after a
// power loss) is recognisable and never mistaken for an item of the source.
const tmpPrefix = ".asr-tmp-"

// Plan is what a copy of Src onto Dst will do, worked out before anything is
// written.
type Plan struct {
	Src, Dst string
	// FAT is set when Dst is a FAT volume, which cannot hold owners, modes,
	// symlinks, hard links, device nodes, FIFOs or xattrs.
	FAT bool

	// Items counts every source item below the root; Bytes their file data.
	Items int
	Bytes int64
	// Replaced, Added and Kept count target items: replaced by the source
	// item of the same name, new, and only on the target (left alone).
	// Removed counts target items inside a target directory that a source
	// file of the same name replaces.
	Replaced, Added, Kept, Removed int
	// Need is how many bytes the target must have free: what the copy
	// allocates, less what replaced items give back, plus one file per worker
	// being written beside the one it replaces.
	Need int64
	// Unsupported lists, for a FAT target, the kinds of source items FAT
	// cannot hold, with a count each ("3 symlinks").
	Unsupported []string
	// SkippedMounts are directories inside the source on other filesystems:
	// not crossed, like rsync -x and cp -x.
	SkippedMounts []string

	items   []item
	rootDev uint64
	blk     int64 // the target's block size
	bigFile int64 // the largest source file's allocation
	freed   int64
}

// item is one source item below the root, in walk order (a directory before
// its contents).
type item struct {
	rel   string
	st    unix.Stat_t
	link  int32 // a hard link: index of the first item with this inode; else -1
	onTgt uint8 // what the target holds at rel
}

const (
	tgtNone uint8 = iota
	tgtSameKind
	tgtDir   // a directory where the source has something else
	tgtOther // a non-directory of another kind than the source's
)

func isDir(st *unix.Stat_t) bool { return st.Mode&unix.S_IFMT == unix.S_IFDIR }
func isReg(st *unix.Stat_t) bool { return st.Mode&unix.S_IFMT == unix.S_IFREG }

// NewPlan walks src and dst and works out the copy. It writes nothing.
func NewPlan(src, dst string) (*Plan, error) {
	p := &Plan{Src: src, Dst: dst}
	var sst, dst0 unix.Stat_t
	if err := unix.Stat(src, &sst); err != nil {
		return nil, &os.PathError{Op: "stat", Path: src, Err: err}
	}
	if err := unix.Stat(dst, &dst0); err != nil {
		return nil, &os.PathError{Op: "stat", Path: dst, Err: err}
	}
	if !isDir(&sst) || !isDir(&dst0) {
		return nil, fmt.Errorf("copying %s onto %s: both must be directories", src, dst)
	}
	if sst.Dev == dst0.Dev {
		return nil, fmt.Errorf("%s and %s are on the same volume", src, dst)
	}
	p.rootDev = sst.Dev
	var fs unix.Statfs_t
	if err := unix.Statfs(dst, &fs); err != nil {
		return nil, &os.PathError{Op: "statfs", Path: dst, Err: err}
	}
	p.FAT = fs.Type == msdosMagic
	p.blk = max(fs.Bsize, 512)

	inodes := map[[2]uint64]int32{}
	if err := p.walk("", inodes); err != nil {
		return nil, err
	}
	p.Items = len(p.items)
	if p.FAT {
		p.Unsupported = p.fatLimits()
	}
	// Directories already on the target cost nothing; a new one costs a block.
	// Each worker may hold a new file beside the old one it replaces.
	p.Need = max(p.Need-p.freed, 0) + p.bigFile*2
	return p, nil
}

// walk adds the items of the source directory rel (and its target
// counterpart's kept items) to the plan.
func (p *Plan) walk(rel string, inodes map[[2]uint64]int32) error {
	sdir := filepath.Join(p.Src, rel)
	names, err := readNames(sdir)
	if err != nil {
		return err
	}
	var tnames []string
	var tst unix.Stat_t
	if unix.Lstat(filepath.Join(p.Dst, rel), &tst) == nil && isDir(&tst) {
		if tnames, err = readNames(filepath.Join(p.Dst, rel)); err != nil {
			return err
		}
	}
	inSrc := make(map[string]bool, len(names))
	for _, n := range names {
		inSrc[n] = true
	}
	for _, n := range tnames {
		if !inSrc[n] && !strings.HasPrefix(n, tmpPrefix) {
			p.Kept++
		}
	}
	for _, n := range names {
		r := filepath.Join(rel, n)
		it := item{rel: r, link: -1}
		if err := unix.Lstat(filepath.Join(p.Src, r), &it.st); err != nil {
			return fmt.Errorf("reading source item %s: %w", r, err)
		}
		if isDir(&it.st) && it.st.Dev != p.rootDev {
			p.SkippedMounts = append(p.SkippedMounts, r)
			continue
		}
		if err := p.classify(&it); err != nil {
			return err
		}
		alloc := p.alloc(&it.st)
		if isReg(&it.st) && it.st.Nlink > 1 {
			key := [2]uint64{it.st.Dev, it.st.Ino}
			if first, ok := inodes[key]; ok {
				it.link = first
				alloc = 0
			} else {
				inodes[key] = int32(len(p.items))
			}
		}
		if isReg(&it.st) && it.link < 0 {
			p.Bytes += it.st.Size
			p.bigFile = max(p.bigFile, alloc)
		}
		if !isDir(&it.st) || it.onTgt != tgtSameKind {
			p.Need += alloc
		}
		p.items = append(p.items, it)
		if isDir(&it.st) {
			if err := p.walk(r, inodes); err != nil {
				return err
			}
		}
	}
	return nil
}

// classify looks at what the target holds where the item goes.
func (p *Plan) classify(it *item) error {
	var st unix.Stat_t
	err := unix.Lstat(filepath.Join(p.Dst, it.rel), &st)
	switch {
	case errors.Is(err, unix.ENOENT), errors.Is(err, unix.ENOTDIR):
		// ENOTDIR: the target has a non-directory where the source has this
		// item's folder; the folder replaces it, and the item is new.
		p.Added++
		return nil
	case err != nil:
		return fmt.Errorf("reading target item %s: %w", it.rel, err)
	}
	p.Replaced++
	switch {
	case st.Mode&unix.S_IFMT == it.st.Mode&unix.S_IFMT:
		it.onTgt = tgtSameKind
		if isReg(&st) {
			p.freed += st.Blocks * 512
		}
	case isDir(&st):
		it.onTgt = tgtDir
		n, freed, err := countTree(filepath.Join(p.Dst, it.rel))
		if err != nil {
			return err
		}
		p.Removed += n
		p.freed += freed
	default:
		it.onTgt = tgtOther
	}
	return nil
}

// alloc is what an item takes on the target: its allocated blocks (holes
// stay holes), or its whole length on FAT, which has none, rounded up to the
// target's block size; a directory or special file takes a block.
func (p *Plan) alloc(st *unix.Stat_t) int64 {
	if !isReg(st) {
		return p.blk
	}
	n := min(st.Blocks*512, st.Size)
	if p.FAT || (st.Blocks == 0 && st.Size <= 4096) { // ext4 inline data has no blocks of its own
		n = st.Size
	}
	return (n + p.blk - 1) / p.blk * p.blk
}

func (p *Plan) fatLimits() []string {
	counts := map[string]int{}
	owned := 0
	for i := range p.items {
		st := &p.items[i].st
		if st.Uid != 0 || st.Gid != 0 {
			owned++
		}
		switch {
		case p.items[i].link >= 0:
			counts["hard links"]++
		case st.Mode&unix.S_IFMT == unix.S_IFLNK:
			counts["symlinks"]++
		case st.Mode&unix.S_IFMT == unix.S_IFCHR, st.Mode&unix.S_IFMT == unix.S_IFBLK:
			counts["device nodes"]++
		case st.Mode&unix.S_IFMT == unix.S_IFIFO:
			counts["FIFOs"]++
		case st.Mode&unix.S_IFMT == unix.S_IFSOCK:
			counts["sockets"]++
		}
	}
	var out []string
	for _, k := range []string{"symlinks", "hard links", "device nodes", "FIFOs", "sockets"} {
		if counts[k] > 0 {
			out = append(out, fmt.Sprintf("%d %s", counts[k], k))
		}
	}
	if owned > 0 {
		out = append(out, fmt.Sprintf("%d items owned by users other than root", owned))
	}
	return out
}

// countTree counts the items below dir and the bytes their files hold.
func countTree(dir string) (n int, bytes int64, err error) {
	err = filepath.WalkDir(dir, func(path string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if path == dir {
			return nil
		}
		n++
		if d.Type().IsRegular() {
			if fi, err := d.Info(); err == nil {
				bytes += fi.Size()
			}
		}
		return nil
	})
	if err != nil {
		return 0, 0, fmt.Errorf("reading target directory %s: %w", dir, err)
	}
	return n, bytes, nil
}

func readNames(dir string) ([]string, error) {
	f, err := os.Open(dir)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	names, err := f.Readdirnames(-1)
	if err != nil {
		return nil, fmt.Errorf("reading directory %s: %w", dir, err)
	}
	return names, nil
}

// CheckRoom refuses a copy that the target has no room for (bytes or inodes).
func (p *Plan) CheckRoom() error {
	var fs unix.Statfs_t
	if err := unix.Statfs(p.Dst, &fs); err != nil {
		return &os.PathError{Op: "statfs", Path: p.Dst, Err: err}
	}
	free := int64(fs.Bavail) * fs.Bsize
	if p.Need > free {
		return fmt.Errorf("target %s has %s free, and the copy needs %s: free up %s or choose a larger target (nothing was written)",
			p.Dst, human(free), human(p.Need), human(p.Need-free))
	}
	if fs.Files > 0 && uint64(p.Added) > fs.Ffree {
		return fmt.Errorf("target %s has %d free inodes, and the copy adds %d items: choose another target (nothing was written)",
			p.Dst, fs.Ffree, p.Added)
	}
	return nil
}

func human(n int64) string {
	const unit = 1000
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %cB", float64(n)/float64(div), "kMGTPE"[exp])
}
