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
	"sync"

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
	// cannot hold, with a count each ("3 symlinks"): they are not copied.
	Unsupported []string
	// FATCopies counts, for a FAT target, the further names of hard-linked
	// files, which FAT holds as separate copies.
	FATCopies int
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
// its contents). It holds what the copy needs of the item's lstat and no
// more, since a tree of a million items holds a million of them.
type item struct {
	rel   string
	st    meta
	link  int32 // a hard link: index of the first item with this inode; else -1
	onTgt uint8 // what the target holds at rel
}

// meta is the part of a source item's lstat that the copy uses; its fields
// are named as unix.Stat_t's.
type meta struct {
	Mode, Uid, Gid uint32
	Size, Blocks   int64
	Rdev           uint64
	Atim, Mtim     unix.Timespec
}

func metaOf(st *unix.Stat_t) meta {
	return meta{Mode: st.Mode, Uid: st.Uid, Gid: st.Gid, Size: st.Size, Blocks: st.Blocks,
		Rdev: st.Rdev, Atim: st.Atim, Mtim: st.Mtim}
}

const (
	tgtNone uint8 = iota
	tgtSameKind
	tgtDir   // a directory where the source has something else
	tgtOther // a non-directory of another kind than the source's
)

func isDir(st *meta) bool { return st.Mode&unix.S_IFMT == unix.S_IFDIR }
func isReg(st *meta) bool { return st.Mode&unix.S_IFMT == unix.S_IFREG }

// NewPlan walks src and dst and works out the copy. It writes nothing.
func NewPlan(src, dst string) (*Plan, error) { return newPlan(src, dst, scanWorkers) }

// scanWorkers read directories at once: on a cold cache each lstat may wait
// for the disk, and a deeper queue of reads finishes sooner.
const scanWorkers = 16

func newPlan(src, dst string, workers int) (*Plan, error) {
	p := &Plan{Src: src, Dst: dst}
	var sst, dst0 unix.Stat_t
	if err := unix.Stat(src, &sst); err != nil {
		return nil, &os.PathError{Op: "stat", Path: src, Err: err}
	}
	if err := unix.Stat(dst, &dst0); err != nil {
		return nil, &os.PathError{Op: "stat", Path: dst, Err: err}
	}
	if sst.Mode&unix.S_IFMT != unix.S_IFDIR || dst0.Mode&unix.S_IFMT != unix.S_IFDIR {
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

	root := &dirNode{}
	if err := p.scan(root, workers); err != nil {
		return nil, err
	}
	inodes := map[[2]uint64]int32{}
	p.flatten(root, inodes)
	p.Items = len(p.items)
	for i := range p.items {
		it := &p.items[i]
		alloc := p.alloc(&it.st)
		if it.link >= 0 {
			alloc = 0
		} else if isReg(&it.st) {
			p.Bytes += it.st.Size
			p.bigFile = max(p.bigFile, alloc)
		}
		if !isDir(&it.st) || it.onTgt != tgtSameKind {
			p.Need += alloc
		}
	}
	if p.FAT {
		p.Unsupported = p.fatLimits()
	}
	// Directories already on the target cost nothing; a new one costs a block.
	// Replaced files give their room back only when their batch is renamed
	// into place, and two batches are in flight; the largest file may be
	// written beside the one it replaces.
	p.Need = max(p.Need-p.freed, 0) + min(p.freed, 2*batchBytes) + p.bigFile*2
	return p, nil
}

// dirNode is one source directory as the scan found it: its items in the
// order read, and a node for each item that is a directory.
type dirNode struct {
	rel   string
	items []item
	keys  map[int][2]uint64 // index in items -> device and inode, for files with several links
	subs  map[int]*dirNode  // index in items -> that directory's node
}

// scan reads the source tree from several goroutines, a directory at a time.
func (p *Plan) scan(root *dirNode, workers int) error {
	var (
		mu    sync.Mutex
		cond  = sync.NewCond(&mu)
		queue = []*dirNode{root}
		busy  int
		first error
	)
	work := func() {
		mu.Lock()
		defer mu.Unlock()
		for {
			for len(queue) == 0 && busy > 0 && first == nil {
				cond.Wait()
			}
			if len(queue) == 0 || first != nil {
				cond.Broadcast()
				return
			}
			n := queue[len(queue)-1]
			queue = queue[:len(queue)-1]
			busy++
			mu.Unlock()
			c, err := p.readDir(n)
			mu.Lock()
			busy--
			if err != nil && first == nil {
				first = err
			}
			p.Kept += c.kept
			p.Added += c.added
			p.Replaced += c.replaced
			p.Removed += c.removed
			p.freed += c.freed
			p.SkippedMounts = append(p.SkippedMounts, c.skipped...)
			for _, sub := range n.subs {
				queue = append(queue, sub)
			}
			cond.Broadcast()
		}
	}
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() { defer wg.Done(); work() }()
	}
	wg.Wait()
	return first
}

// counts are what reading one directory adds to the plan's totals.
type counts struct {
	kept, added, replaced, removed int
	freed                          int64
	skipped                        []string
}

// readDir reads the source directory n.rel and looks at its target
// counterpart, filling n.
func (p *Plan) readDir(n *dirNode) (counts, error) {
	var c counts
	names, err := readNames(filepath.Join(p.Src, n.rel))
	if err != nil {
		return c, err
	}
	var tnames []string
	var tst unix.Stat_t
	if unix.Lstat(filepath.Join(p.Dst, n.rel), &tst) == nil && tst.Mode&unix.S_IFMT == unix.S_IFDIR {
		if tnames, err = readNames(filepath.Join(p.Dst, n.rel)); err != nil {
			return c, err
		}
	}
	if len(tnames) > 0 {
		inSrc := make(map[string]bool, len(names))
		for _, name := range names {
			inSrc[name] = true
		}
		for _, name := range tnames {
			if !inSrc[name] && !strings.HasPrefix(name, tmpPrefix) {
				c.kept++
			}
		}
	}
	for _, name := range names {
		r := filepath.Join(n.rel, name)
		var st unix.Stat_t
		if err := unix.Lstat(filepath.Join(p.Src, r), &st); err != nil {
			return c, fmt.Errorf("reading source item %s: %w", r, err)
		}
		if st.Mode&unix.S_IFMT == unix.S_IFDIR && st.Dev != p.rootDev {
			c.skipped = append(c.skipped, r)
			continue
		}
		it := item{rel: r, st: metaOf(&st), link: -1}
		if err := p.classify(&it, &c); err != nil {
			return c, err
		}
		if isReg(&it.st) && st.Nlink > 1 {
			if n.keys == nil {
				n.keys = map[int][2]uint64{}
			}
			n.keys[len(n.items)] = [2]uint64{st.Dev, st.Ino}
		}
		if isDir(&it.st) {
			if n.subs == nil {
				n.subs = map[int]*dirNode{}
			}
			n.subs[len(n.items)] = &dirNode{rel: r}
		}
		n.items = append(n.items, it)
	}
	return c, nil
}

// flatten lays the scanned tree out in walk order, each directory before
// its contents, and links every further name of a multiply linked file to
// the first one.
func (p *Plan) flatten(n *dirNode, inodes map[[2]uint64]int32) {
	for i, it := range n.items {
		if key, ok := n.keys[i]; ok {
			if first, ok := inodes[key]; ok {
				it.link = first
			} else {
				inodes[key] = int32(len(p.items))
			}
		}
		p.items = append(p.items, it)
		if sub, ok := n.subs[i]; ok {
			p.flatten(sub, inodes)
			n.subs[i] = nil // let the scan's copy go as we go
		}
	}
	n.items = nil
}

// classify looks at what the target holds where the item goes.
func (p *Plan) classify(it *item, c *counts) error {
	var st unix.Stat_t
	err := unix.Lstat(filepath.Join(p.Dst, it.rel), &st)
	switch {
	case errors.Is(err, unix.ENOENT), errors.Is(err, unix.ENOTDIR):
		// ENOTDIR: the target has a non-directory where the source has this
		// item's folder; the folder replaces it, and the item is new.
		c.added++
		return nil
	case err != nil:
		return fmt.Errorf("reading target item %s: %w", it.rel, err)
	}
	c.replaced++
	switch {
	case st.Mode&unix.S_IFMT == it.st.Mode&unix.S_IFMT:
		it.onTgt = tgtSameKind
		if st.Mode&unix.S_IFMT == unix.S_IFREG {
			c.freed += st.Blocks * 512
		}
	case st.Mode&unix.S_IFMT == unix.S_IFDIR:
		it.onTgt = tgtDir
		n, freed, err := countTree(filepath.Join(p.Dst, it.rel))
		if err != nil {
			return err
		}
		c.removed += n
		c.freed += freed
	default:
		it.onTgt = tgtOther
	}
	return nil
}

// alloc is what an item takes on the target: its allocated blocks (holes
// stay holes), or its whole length on FAT, which has none, rounded up to the
// target's block size; a directory or special file takes a block.
func (p *Plan) alloc(st *meta) int64 {
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
	for i := range p.items {
		st := &p.items[i].st
		switch st.Mode & unix.S_IFMT {
		case unix.S_IFREG:
			if p.items[i].link >= 0 {
				p.FATCopies++
			}
		case unix.S_IFLNK:
			counts["symlinks"]++
		case unix.S_IFCHR, unix.S_IFBLK:
			counts["device nodes"]++
		case unix.S_IFIFO:
			counts["FIFOs"]++
		case unix.S_IFSOCK:
			counts["sockets"]++
		}
	}
	var out []string
	for _, k := range []string{"symlinks", "device nodes", "FIFOs", "sockets"} {
		if counts[k] > 0 {
			out = append(out, fmt.Sprintf("%d %s", counts[k], k))
		}
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
