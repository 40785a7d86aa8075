package blockmap

import (
	"bytes"
	"compress/gzip"
	"encoding/binary"
	"flag"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/asrlinux/asr/internal/testenv"
)

// XFS, btrfs and F2FS images are hundreds of MiB, nearly all zeros: the
// tests and the fuzzer hold them as sparse images, their non-zero 4 KiB
// blocks only. testdata/*.sparse.gz are empty filesystems made by the real
// tools with fixed UUIDs (go test -run TestTreeTestdata -update-treefs
// makes them again).

var updateTreeFS = flag.Bool("update-treefs", false, "remake testdata/*.sparse.gz with mkfs.xfs, mkfs.btrfs and mkfs.f2fs")

const sparseBlock = 4096

// sparseImg is a disk image of size bytes whose blocks not in blocks are
// zeros.
type sparseImg struct {
	size   int64
	blocks map[int64][]byte // by block number
}

func (s *sparseImg) ReadAt(b []byte, off int64) (int, error) {
	if off < 0 || off >= s.size {
		return 0, io.EOF
	}
	n := 0
	for n < len(b) && off < s.size {
		blk, in := off/sparseBlock, off%sparseBlock
		k := int(min(int64(len(b)-n), sparseBlock-in, s.size-off))
		if d, ok := s.blocks[blk]; ok {
			copy(b[n:n+k], d[in:])
		} else {
			clear(b[n : n+k])
		}
		n += k
		off += int64(k)
	}
	if n < len(b) {
		return n, io.EOF
	}
	return n, nil
}

// clone copies s, so that a test may change blocks.
func (s *sparseImg) clone() *sparseImg {
	c := &sparseImg{size: s.size, blocks: map[int64][]byte{}}
	for k, v := range s.blocks {
		c.blocks[k] = bytes.Clone(v)
	}
	return c
}

// at returns the n bytes at off, which must lie in one block, for
// changing in place (a zero block is added).
func (s *sparseImg) at(off int64, n int) []byte {
	blk, in := off/sparseBlock, off%sparseBlock
	if in+int64(n) > sparseBlock {
		panic(fmt.Sprintf("sparseImg.at(%d, %d) crosses a block", off, n))
	}
	if s.blocks[blk] == nil {
		s.blocks[blk] = make([]byte, sparseBlock)
	}
	return s.blocks[blk][in : in+int64(n)]
}

// readSparse reads a raw image file into a sparseImg.
func readSparse(t testing.TB, p string) *sparseImg {
	t.Helper()
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	s := &sparseImg{size: testenv.Size(t, p), blocks: map[int64][]byte{}}
	buf := make([]byte, 1<<20)
	for off := int64(0); off < s.size; off += int64(len(buf)) {
		n, err := f.ReadAt(buf, off)
		if err != nil && err != io.EOF {
			t.Fatal(err)
		}
		for i := 0; i < n; i += sparseBlock {
			if b := buf[i:min(i+sparseBlock, n)]; !IsZero(b) {
				blk := make([]byte, sparseBlock)
				copy(blk, b)
				s.blocks[(off+int64(i))/sparseBlock] = blk
			}
		}
	}
	return s
}

// loadSparse reads testdata/name.sparse.gz: "ASRSPARSE1", the size, then
// (block number, block) pairs, little-endian.
func loadSparse(t testing.TB, name string) *sparseImg {
	t.Helper()
	f, err := os.Open(filepath.Join("testdata", name+".sparse.gz"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	z, err := gzip.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(z)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.HasPrefix(b, []byte("ASRSPARSE1")) || len(b) < 18 {
		t.Fatalf("%s.sparse.gz: not a sparse image", name)
	}
	s := &sparseImg{size: int64(binary.LittleEndian.Uint64(b[10:])), blocks: map[int64][]byte{}}
	for b = b[18:]; len(b) >= 8+sparseBlock; b = b[8+sparseBlock:] {
		s.blocks[int64(binary.LittleEndian.Uint64(b))] = bytes.Clone(b[8 : 8+sparseBlock])
	}
	return s
}

func saveSparse(t testing.TB, s *sparseImg, name string) {
	t.Helper()
	var raw bytes.Buffer
	raw.WriteString("ASRSPARSE1")
	binary.Write(&raw, binary.LittleEndian, uint64(s.size))
	for blk := int64(0); blk*sparseBlock < s.size; blk++ {
		if d, ok := s.blocks[blk]; ok {
			binary.Write(&raw, binary.LittleEndian, uint64(blk))
			raw.Write(d)
		}
	}
	var out bytes.Buffer
	z, _ := gzip.NewWriterLevel(&out, gzip.BestCompression)
	z.Write(raw.Bytes())
	z.Close()
	if err := os.WriteFile(filepath.Join("testdata", name+".sparse.gz"), out.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestTreeTestdata remakes the sparse test images with the real tools.
func TestTreeTestdata(t *testing.T) {
	if !*updateTreeFS {
		t.Skip("only with -update-treefs")
	}
	const uuid = "0a5f2e1c-7b3d-4e8f-9a6b-2c1d0e3f4a5b"
	dir := t.TempDir()
	files := filepath.Join(dir, "files")
	os.Mkdir(files, 0o755)
	var proto strings.Builder
	proto.WriteString("/dev/null\n0 0\nd--755 0 0\n")
	for i := range 3 {
		p := filepath.Join(files, fmt.Sprint("f", i))
		os.WriteFile(p, bytes.Repeat([]byte{byte('a' + i)}, 100000*(i+1)), 0o644)
		fmt.Fprintf(&proto, "f%d ---644 0 0 %s\n", i, p)
	}
	proto.WriteString("$\n")
	os.WriteFile(filepath.Join(dir, "proto"), []byte(proto.String()), 0o644)
	for _, tt := range []struct {
		name string
		size int64
		cmds [][]string
	}{
		{"xfs", 300 << 20, [][]string{{"mkfs.xfs", "-q", "-f", "-m", "uuid=" + uuid, "-p", filepath.Join(dir, "proto")}}},
		{"btrfs", 120 << 20, [][]string{{"mkfs.btrfs", "-q", "-f", "-U", uuid, "-r", files}}},
		{"f2fs", 64 << 20, [][]string{{"mkfs.f2fs", "-q", "-f", "-t", "0", "-U", uuid}, {"sload.f2fs", "-f", files}}},
	} {
		p := filepath.Join(dir, tt.name+".img")
		os.WriteFile(p, nil, 0o644)
		os.Truncate(p, tt.size)
		for _, c := range tt.cmds {
			testenv.Run(t, c[0], append(c[1:], p)...)
		}
		saveSparse(t, readSparse(t, p), tt.name)
	}
}

// Checksums the tests and the fuzzer recompute after changing metadata, so
// that a change reaches the checks behind the checksum.

// fixXFS recomputes the CRC of the superblock, each AGF and each
// free-space btree block of a v5 XFS.
func fixXFS(s *sparseImg) {
	sb := s.at(0, 512)
	if string(sb[:4]) != xfsMagic {
		return
	}
	sect := int64(binary.BigEndian.Uint16(sb[0x66:]))
	if sect != 512 {
		return
	}
	setXFSCRC(sb, 0xE0)
	for _, d := range s.blocks {
		for o := 0; o+512 <= len(d); o += 512 {
			if string(d[o:o+4]) == xfsAGFMagic {
				setXFSCRC(d[o:o+512], 0xD8)
			}
		}
		if string(d[:4]) == xfsBnoCRC {
			setXFSCRC(d, 52)
		}
	}
}

func setXFSCRC(b []byte, off int) {
	clear(b[off : off+4])
	binary.LittleEndian.PutUint32(b[off:], crc32.Checksum(b, castagnoli))
}

// fixBtrfs recomputes the CRC32C of the superblock and of every tree
// block (16 KiB nodes) of the filesystem.
func fixBtrfs(s *sparseImg) {
	sb := s.at(btrfsSuperOff, btrfsSuperLen)
	if string(sb[0x40:0x48]) != btrfsMagic {
		return
	}
	binary.LittleEndian.PutUint32(sb, crc32.Checksum(sb[0x20:], castagnoli))
	ns := int64(binary.LittleEndian.Uint32(sb[0x94:]))
	if ns != 16384 {
		return
	}
	fsid := sb[0x20:0x30]
	for blk := range s.blocks {
		off := blk * sparseBlock
		if off%ns != 0 || off < btrfsReserved {
			continue
		}
		node := make([]byte, ns)
		s.ReadAt(node, off)
		if !bytes.Equal(node[0x20:0x30], fsid) {
			continue
		}
		binary.LittleEndian.PutUint32(node, crc32.Checksum(node[0x20:], castagnoli))
		for i := int64(0); i < ns; i += sparseBlock {
			copy(s.at(off+i, sparseBlock), node[i:])
		}
	}
}

// fixF2FS recomputes the CRC of both checkpoint packs' first and last
// blocks.
func fixF2FS(s *sparseImg) {
	sb := s.at(f2fsSuperOff, 1024)
	if binary.LittleEndian.Uint32(sb) != f2fsMagic {
		return
	}
	cp := int64(binary.LittleEndian.Uint32(sb[0x4C:]))
	for _, start := range []int64{cp, cp + f2fsSegBlocks} {
		h := s.at(start*sparseBlock, sparseBlock)
		total := int64(binary.LittleEndian.Uint32(h[0x88:]))
		cs := int(binary.LittleEndian.Uint32(h[0xA4:]))
		if total < 2 || total > f2fsSegBlocks || cs < 0xC0 || cs > sparseBlock-4 {
			continue
		}
		for _, blk := range []int64{start, start + total - 1} {
			b := s.at(blk*sparseBlock, sparseBlock)
			binary.LittleEndian.PutUint32(b[cs:], f2fsCRC(b[:cs]))
		}
	}
}

func fixTree(s *sparseImg) { fixXFS(s); fixBtrfs(s); fixF2FS(s) }

// mapSparse builds s's map and checks it as the fuzzer does.
func mapSparse(t *testing.T, s *sparseImg) *Map {
	t.Helper()
	m, err := Build(s, s.size)
	if err != nil {
		t.Fatalf("Build = %v, want a map", err)
	}
	if err := m.Validate(); err != nil {
		t.Fatalf("Build made an invalid map: %v", err)
	}
	for _, r := range m.Regions {
		if !r.NonZero && !m.Used(r.Off, 1) {
			t.Errorf("region [%d, +%d) %s has its first byte free", r.Off, r.Len, r.Method)
		}
	}
	return m
}

func TestTreeTestdataMaps(t *testing.T) {
	for _, tt := range []struct{ name, method string }{
		{"xfs", MethodXFS}, {"btrfs", MethodBtrfs}, {"f2fs", MethodF2FS},
	} {
		t.Run(tt.name, func(t *testing.T) {
			s := loadSparse(t, tt.name)
			m := mapSparse(t, s)
			// The files' blocks (runs of one letter) are used. Other
			// non-zero blocks may be free: btrfs leaves old copies of
			// its tree blocks behind.
			files := 0
			for blk, d := range s.blocks {
				if d[0] >= 'a' && d[0] <= 'c' && bytes.Count(d, d[:1]) == len(d) {
					files++
					if !m.Used(blk*sparseBlock, sparseBlock) {
						t.Errorf("block %d of a file is free", blk)
					}
				}
			}
			if files < 100 {
				t.Errorf("found %d file blocks in %s, want the test files' 146", files, tt.name)
			}
			if len(m.Regions) != 1 || m.Regions[0].Method != tt.method || m.Regions[0].Len != s.size {
				t.Fatalf("Build(%s) = %s, want one %s region", tt.name, describe(m), tt.method)
			}
			if u := m.UsedBytes(); u > s.size/3 {
				t.Errorf("Build(%s) uses %d of %d bytes of an almost empty filesystem", tt.name, u, s.size)
			}
		})
	}
}

// TestTreeDamaged changes the metadata of real XFS, btrfs and F2FS images
// (checksums recomputed where the change would otherwise only fail them):
// each must fall back with a note that says why, or, for a btrfs with a
// tree log, keep every allocated chunk.
func TestTreeDamaged(t *testing.T) {
	be32 := binary.BigEndian.PutUint32
	le32 := binary.LittleEndian.PutUint32
	le64 := binary.LittleEndian.PutUint64
	const xfsSect = 512
	for _, tt := range []struct {
		name, fs string
		mutate   func(s *sparseImg)
		fix      bool
		note     string
	}{
		{"XFS superblock checksum", "xfs", func(s *sparseImg) { s.at(0x90, 1)[0] ^= 1 }, false, "superblock checksum"},
		{"XFS log not clean", "xfs", func(s *sparseImg) { xfsLogData(s)[9] &^= xfsLogUnmount }, false, "the last record is not an unmount record"},
		{"XFS AGF free count", "xfs", func(s *sparseImg) {
			agf := s.at(xfsSect, 512)
			be32(agf[0x34:], binary.BigEndian.Uint32(agf[0x34:])+1)
		}, true, "its AGF"},
		{"XFS external log", "xfs", func(s *sparseImg) { clear(s.at(0x30, 8)) }, true, "the log is on another device"},
		{"XFS needs repair", "xfs", func(s *sparseImg) { s.at(0xD8, 4)[3] |= xfsIncompatNeedRepair }, true, "needing repair"},
		{"XFS AGF of another group", "xfs", func(s *sparseImg) { be32(s.at(xfsSect+8, 4), 2) }, true, "says group 2"},
		{"btrfs two devices", "btrfs", func(s *sparseImg) { le64(s.at(btrfsSuperOff+0x88, 8), 2) }, true, "one of 2 devices"},
		{"btrfs bytes used", "btrfs", func(s *sparseImg) { le64(s.at(btrfsSuperOff+0x78, 8), 12345) }, true, "the superblock counts 12345 used"},
		{"btrfs superblock checksum", "btrfs", func(s *sparseImg) { s.at(btrfsSuperOff+0x78, 1)[0] ^= 1 }, false, "superblock checksum"},
		{"btrfs RAID1 chunk", "btrfs", func(s *sparseImg) {
			le64(s.at(btrfsSuperOff+0x32B+17+24, 8), 2|16) // the first system chunk's type
		}, true, "RAID profile 0x10"},
		{"btrfs zoned", "btrfs", func(s *sparseImg) { s.at(btrfsSuperOff+0xBD, 1)[0] |= 0x10 }, true, "unsupported incompatible features 0x1000"},
		{"F2FS not unmounted", "f2fs", func(s *sparseImg) {
			for _, cp := range f2fsCPs(s) {
				s.at(cp*sparseBlock+0x84, 1)[0] &^= f2fsCPUmount
				tot := int64(binary.LittleEndian.Uint32(s.at(cp*sparseBlock+0x88, 4)))
				s.at((cp+tot-1)*sparseBlock+0x84, 1)[0] &^= f2fsCPUmount
			}
		}, true, "not cleanly unmounted"},
		{"F2FS valid count", "f2fs", func(s *sparseImg) {
			for _, cp := range f2fsCPs(s) {
				le32(s.at(cp*sparseBlock+0x10, 4), 7)
			}
		}, true, "the checkpoint counts 7"},
		{"F2FS checkpoint torn", "f2fs", func(s *sparseImg) {
			for _, cp := range f2fsCPs(s) {
				tot := int64(binary.LittleEndian.Uint32(s.at(cp*sparseBlock+0x88, 4)))
				s.at((cp+tot-1)*sparseBlock, 1)[0] ^= 1 // the footer's version
			}
		}, true, "neither checkpoint"},
		{"F2FS areas", "f2fs", func(s *sparseImg) { le32(s.at(f2fsSuperOff+0x50, 4), 1) }, false, "do not follow from segment 0"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			s := loadSparse(t, tt.fs).clone()
			tt.mutate(s)
			if tt.fix {
				fixTree(s)
			}
			m, err := Build(s, s.size)
			if err != nil {
				t.Fatalf("Build = %v, want a map", err)
			}
			if err := m.Validate(); err != nil {
				t.Fatal(err)
			}
			if len(m.Regions) != 1 || !m.Regions[0].NonZero || !m.Regions[0].Fallback || !strings.Contains(m.Regions[0].Note, tt.note) {
				t.Errorf("Build(%s) = %s; want one fallback region noting %q", tt.name, describe(m), tt.note)
			}
		})
	}
}

// TestBtrfsTreeLog: a btrfs with a tree log to replay is mapped by its
// chunks: every allocated chunk used, with a note.
func TestBtrfsTreeLog(t *testing.T) {
	s := loadSparse(t, "btrfs").clone()
	binary.LittleEndian.PutUint64(s.at(btrfsSuperOff+0x60, 8), 1<<30)
	fixTree(s)
	m := mapSparse(t, s)
	full := mapSparse(t, loadSparse(t, "btrfs"))
	if len(m.Regions) != 1 || m.Regions[0].Method != MethodBtrfsChunks || !strings.Contains(m.Regions[0].Note, "tree log") {
		t.Fatalf("Build(btrfs with a tree log) = %s, want one %s region noting the tree log", describe(m), MethodBtrfsChunks)
	}
	if m.UsedBytes() <= full.UsedBytes() {
		t.Errorf("with a tree log %d bytes used, without %d: want more, every allocated chunk", m.UsedBytes(), full.UsedBytes())
	}
}

// xfsLogData is the first data block of the XFS log's record at block 0:
// mkfs writes its unmount record there.
func xfsLogData(s *sparseImg) []byte {
	sb := s.at(0, 512)
	bs := int64(binary.BigEndian.Uint32(sb[4:]))
	agBlocks := uint64(binary.BigEndian.Uint32(sb[0x54:]))
	logStart := binary.BigEndian.Uint64(sb[0x30:])
	ag, bno := logStart>>sb[0x7C], logStart&(1<<sb[0x7C]-1)
	return s.at(int64(ag*agBlocks+bno)*bs+512, 512)
}

// f2fsCPs returns the blocks of the two checkpoint packs.
func f2fsCPs(s *sparseImg) []int64 {
	cp := int64(binary.LittleEndian.Uint32(s.at(f2fsSuperOff+0x4C, 4)))
	return []int64{cp, cp + f2fsSegBlocks}
}

// TestTreeReadsOnlyMetadata maps 2 GiB XFS, btrfs and F2FS filesystems and
// counts what Build reads: metadata, not data.
func TestTreeReadsOnlyMetadata(t *testing.T) {
	for _, tt := range []struct {
		name  string
		mkfs  []string
		limit int64
	}{
		{"XFS", []string{"mkfs.xfs", "-q", "-f"}, 2 << 20},
		{"btrfs", []string{"mkfs.btrfs", "-q", "-f"}, 2 << 20},
		{"F2FS", []string{"mkfs.f2fs", "-q", "-f", "-t", "0"}, 2 << 20},
	} {
		t.Run(tt.name, func(t *testing.T) {
			checkReadsOnlyMetadata(t, tt.name, tt.limit, tt.mkfs...)
		})
	}
}

// treeBases are the images FuzzTreeFS patches, loaded once.
var treeBases struct {
	imgs  []*sparseImg
	order [][]int64 // each image's stored blocks, in order
}

// FuzzTreeFS fuzzes the XFS, btrfs and F2FS mappers through the sparse test
// images: patch is five-byte records, a little-endian offset into the
// image's stored (non-zero) blocks, modulo their size, and the byte to put
// there. Each patched image is mapped as it is and again with its
// checksums recomputed, so that changes reach the checks behind them. The
// same checks as FuzzBuild hold: no error, no panic, a valid map whose
// filesystem regions keep their first byte.
func FuzzTreeFS(f *testing.F) {
	if treeBases.imgs == nil {
		for _, name := range []string{"xfs", "btrfs", "f2fs"} {
			s := loadSparse(f, name)
			var order []int64
			for blk := int64(0); blk*sparseBlock < s.size; blk++ {
				if s.blocks[blk] != nil {
					order = append(order, blk)
				}
			}
			treeBases.imgs = append(treeBases.imgs, s)
			treeBases.order = append(treeBases.order, order)
		}
	}
	for i := range treeBases.imgs {
		f.Add(uint8(i), []byte{})
		f.Add(uint8(i), []byte{0x10, 0, 0, 0, 0xFF})
	}
	f.Fuzz(func(t *testing.T, base uint8, patch []byte) {
		k := int(base) % len(treeBases.imgs)
		s, order := treeBases.imgs[k].clone(), treeBases.order[k]
		for ; len(patch) >= 5; patch = patch[5:] {
			o := int64(binary.LittleEndian.Uint32(patch)) % int64(len(order)*sparseBlock)
			s.blocks[order[o/sparseBlock]][o%sparseBlock] = patch[4]
		}
		checkReader(t, s, s.size)
		fixTree(s)
		checkReader(t, s, s.size)
	})
}

func checkReader(t *testing.T, r io.ReaderAt, size int64) {
	m, err := Build(r, size)
	if err != nil {
		t.Fatalf("Build = %v, want a map: every read should lie inside the disk", err)
	}
	if err := m.Validate(); err != nil {
		t.Fatalf("Build made an invalid map: %v", err)
	}
	for _, r := range m.Regions {
		if !r.NonZero && !m.Used(r.Off, 1) {
			t.Errorf("region [%d, +%d) %s has its first byte free", r.Off, r.Len, r.Method)
		}
	}
}
