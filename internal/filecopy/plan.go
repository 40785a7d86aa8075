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
	"path"
	"path/filepath"
	"strings"
	"sync"

	"golang.org/x/sys/unix"

	"github.com/asrlinux/asr/internal/progress"
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

	items   itemList
	rootDev uint64
	blk     int64 // the target's block size
	bigFile int64 // the largest source file's allocation
	freed   int64
}

// item is one source item below the root, in scan order (a directory's item
// before its contents'). It holds what the copy needs of the item's lstat and no
// more, since a tree of a million items holds a million of them.
type item struct {
	name   string // its name in its folder; Plan.rel gives its path
	parent int32  // index of its folder's item; -1 for the root's items
	link   int32  // a hard link: index of the first item with this inode; else -1
	st     meta
	onTgt  uint8 // what the target holds at its path
}

// rel is an item's path relative to the volume's root, made from its
// folders' names: storing every full path would take several times the
// memory in a tree of long paths.
func (p *Plan) rel(it *item) string {
	if it.parent < 0 {
		return it.name
	}
	return p.rel(p.items.at(int(it.parent))) + "/" + it.name
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

	keys, err := p.scan(workers)
	if err != nil {
		return nil, err
	}
	// The first name of a file with several links is copied; the others
	// are linked to it.
	first := map[[2]uint64]int32{}
	for i := range p.items.n {
		if key, ok := keys[int32(i)]; ok {
			if f, ok := first[key]; ok {
				p.items.at(i).link = f
			} else {
				first[key] = int32(i)
			}
		}
	}
	p.Items = p.items.n
	for i := range p.items.n {
		it := p.items.at(i)
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

// scan reads the source tree from several goroutines, a directory at a
// time, appending each directory's items to the plan once it is read (so a
// directory's item always comes before its contents'). It returns the
// device and inode of every regular file with several links, by index.
func (p *Plan) scan(workers int) (map[int32][2]uint64, error) {
	type dir struct {
		rel string
		idx int32 // its item; -1 for the root
	}
	var (
		mu    sync.Mutex
		cond  = sync.NewCond(&mu)
		queue = []dir{{"", -1}}
		busy  int
		first error
		keys  = map[int32][2]uint64{}
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
			d := queue[len(queue)-1]
			queue = queue[:len(queue)-1]
			busy++
			mu.Unlock()
			found, c, err := p.readDir(d.rel, d.idx)
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
			for _, f := range found {
				i := int32(p.items.add(f.it))
				if isDir(&f.it.st) {
					queue = append(queue, dir{path.Join(d.rel, f.it.name), i})
				}
				if f.key != [2]uint64{} {
					keys[i] = f.key
				}
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
	return keys, first
}

// counts are what reading one directory adds to the plan's totals.
type counts struct {
	kept, added, replaced, removed int
	freed                          int64
	skipped                        []string
}

// found is an item read from a directory, and for a regular file with
// several links its device and inode.
type found struct {
	it  item
	key [2]uint64
}

// readDir reads the source directory rel (whose item is parent) and looks at
// its target counterpart.
func (p *Plan) readDir(rel string, parent int32) ([]found, counts, error) {
	var c counts
	names, err := readNames(filepath.Join(p.Src, rel))
	if err != nil {
		return nil, c, err
	}
	var tnames []string
	var tst unix.Stat_t
	if unix.Lstat(filepath.Join(p.Dst, rel), &tst) == nil && tst.Mode&unix.S_IFMT == unix.S_IFDIR {
		if tnames, err = readNames(filepath.Join(p.Dst, rel)); err != nil {
			return nil, c, err
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
	out := make([]found, 0, len(names))
	for _, name := range names {
		r := path.Join(rel, name)
		var st unix.Stat_t
		if err := unix.Lstat(filepath.Join(p.Src, r), &st); err != nil {
			return nil, c, fmt.Errorf("reading source item %s: %w", r, err)
		}
		if st.Mode&unix.S_IFMT == unix.S_IFDIR && st.Dev != p.rootDev {
			c.skipped = append(c.skipped, r)
			continue
		}
		f := found{it: item{name: name, parent: parent, st: metaOf(&st), link: -1}}
		if err := p.classify(&f.it, r, &c); err != nil {
			return nil, c, err
		}
		if isReg(&f.it.st) && st.Nlink > 1 {
			f.key = [2]uint64{st.Dev, st.Ino}
		}
		out = append(out, f)
	}
	return out, c, nil
}

// itemList holds the plan's items in blocks, so that a growing list never
// copies itself (a doubling slice holds two copies at once, and a tree of a
// million items takes a hundred MiB).
type itemList struct {
	blocks [][]item
	n      int
}

const blockItems = 1 << 14

func (l *itemList) at(i int) *item { return &l.blocks[i/blockItems][i%blockItems] }

func (l *itemList) add(it item) int {
	if l.n%blockItems == 0 {
		l.blocks = append(l.blocks, make([]item, 0, blockItems))
	}
	b := &l.blocks[len(l.blocks)-1]
	*b = append(*b, it)
	l.n++
	return l.n - 1
}

// classify looks at what the target holds where the item goes.
func (p *Plan) classify(it *item, rel string, c *counts) error {
	var st unix.Stat_t
	err := unix.Lstat(filepath.Join(p.Dst, rel), &st)
	switch {
	case errors.Is(err, unix.ENOENT), errors.Is(err, unix.ENOTDIR):
		// ENOTDIR: the target has a non-directory where the source has this
		// item's folder; the folder replaces it, and the item is new.
		c.added++
		return nil
	case err != nil:
		return fmt.Errorf("reading target item %s: %w", rel, err)
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
		n, freed, err := countTree(filepath.Join(p.Dst, rel))
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
	for i := range p.items.n {
		st := &p.items.at(i).st
		switch st.Mode & unix.S_IFMT {
		case unix.S_IFREG:
			if p.items.at(i).link >= 0 {
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
			p.Dst, progress.HumanBytes(free), progress.HumanBytes(p.Need), progress.HumanBytes(p.Need-free))
	}
	if fs.Files > 0 && uint64(p.Added) > fs.Ffree {
		return fmt.Errorf("target %s has %d free inodes, and the copy adds %d items: choose another target (nothing was written)",
			p.Dst, fs.Ffree, p.Added)
	}
	return nil
}
