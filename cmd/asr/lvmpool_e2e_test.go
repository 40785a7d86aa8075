package main

import (
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/asrlinux/asr/internal/testenv"
)

// TestE2ELVMThinPoolAndRAIDKeptWhole: a physical volume holding a thin pool
// and a raid1 volume beside a linear one. The kernel here has no
// device-mapper, and lvcreate refuses to make either type without it
// ("Can't create thin-pool without using device-mapper kernel driver"), so
// LVM's own vgcfgrestore writes them: the group's metadata as vgcfgbackup
// gives it, with the two volumes and their hidden parts added as lvcreate
// lays them out (tp_tmeta, tp_tdata, lvol0_pmspare; r_rmeta_N, r_rimage_N),
// and lvs must read them back as thin-pool and raid1. Their extents hold
// old data that asr cannot tell from theirs: it keeps them whole, saying
// why, and they come back byte for byte; the linear volume is mapped by its
// ext4 bitmap, and no unallocated extent's old data reaches the target.
func TestE2ELVMThinPoolAndRAIDKeptWhole(t *testing.T) {
	dir := t.TempDir()
	vg := vgName()
	testenv.Require(t, "losetup", "sgdisk", "mkfs.ext4", "pvcreate", "vgcreate", "lvcreate", "vgcfgbackup", "vgcfgrestore", "lvs", "pvs", "mount")
	disk, dev, poff, l := lvmVG(t, dir, vg, 78)
	l.run("lvcreate", "-q", "-an", "-Zn", "-L", "20M", "-n", "lin", vg) // PE 0-4
	backup := filepath.Join(dir, "vg.txt")
	l.run("vgcfgbackup", "-q", "-f", backup, vg)
	text, err := os.ReadFile(backup)
	if err != nil {
		t.Fatal(err)
	}
	s := string(text)
	end := strings.LastIndex(s, "\n\t}\n")
	if end < 0 || !strings.Contains(s, "\tseqno = ") {
		t.Fatalf("vgcfgbackup wrote no logical_volumes section I know:\n%s", s)
	}
	rng := rand.New(rand.NewPCG(5, 6))
	s = s[:end] + poolAndRAID(rng, 5) + s[end:]
	s = strings.Replace(s, "\tseqno = ", "\tseqno = 1", 1) // any higher number
	if err := os.WriteFile(backup, []byte(s), 0o644); err != nil {
		t.Fatal(err)
	}
	l.run("vgcfgrestore", "-q", "--force", "-f", backup, vg)
	lvs := l.run("lvs", "-a", "--noheadings", "-o", "lv_name,segtype", vg)
	for _, want := range []string{"tp thin-pool", "r raid1", "[tp_tdata] linear", "[r_rimage_1] linear"} {
		if !strings.Contains(strings.Join(strings.Fields(lvs), " "), want) {
			t.Fatalf("lvs does not read back %q from the restored metadata:\n%s", want, lvs)
		}
	}

	segs := l.segments(vg, dev)
	if len(segs["lin"]) != 1 {
		t.Fatalf("lvs reports segments %v, want one for lin", segs)
	}
	fs := filepath.Join(dir, "lin.ext4")
	sh(t, "truncate", "-s", fmt.Sprint(segs["lin"][0].size), fs)
	sh(t, "mkfs.ext4", "-q", "-F", "-E", "nodiscard", fs)
	tree := fillVolume(t, fs, 3)
	copySegments(t, fs, disk, poff, segs["lin"], true)
	// PE 5 to 14: the thin pool's and the raid1 volume's parts.
	peStart := segs["lin"][0].pvOff
	kept := poff + peStart + 5*(4<<20)
	const keptLen = 10 * (4 << 20)

	scanned, _, tfile, _ := scanRestore(t, disk, 12)
	for _, want := range []string{
		"by LVM2 metadata", "by ext4 bitmap",
		vg + "/tp_tdata: used by thin-pool volume tp, kept whole",
		vg + "/lvol0_pmspare: a hidden part of another volume, kept whole",
		vg + "/tp_tmeta: used by thin-pool volume tp, kept whole",
		vg + "/r_rimage_0: used by raid1 volume r, kept whole",
		vg + "/r_rmeta_1: used by raid1 volume r, kept whole",
	} {
		if !strings.Contains(scanned, want) {
			t.Errorf("imagescan output lacks %q; got:\n%s", want, scanned)
		}
	}
	if got, want := hashRange(t, tfile, kept, keptLen), hashRange(t, disk, kept, keptLen); got != want {
		t.Errorf("the thin pool's and raid1 volume's extents on the target have sha256 %s, want the source's %s", got, want)
	}
	restored := filepath.Join(dir, "restored.ext4")
	copySegments(t, restored, tfile, poff, segs["lin"], false)
	if diff := firstDiff(tree, treeDigest(t, loop(t, restored, "-r"), "ext4")); diff != "" {
		t.Errorf("restored linear volume: files differ: %s", diff)
	}
	checkFreeNotCopied(t, disk, tfile)
}

// poolAndRAID is the metadata of a thin pool tp (2 extents of data, 1 of
// metadata, 1 spare) and a raid1 volume r (2 legs of 2 extents, each with
// 1 extent of metadata) on pv0's 10 extents from PE pe, as lvcreate --type
// thin-pool and --type raid1 -m1 write them.
func poolAndRAID(rng *rand.Rand, pe int) string {
	id := func() string {
		const abc = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
		b := make([]byte, 32)
		for i := range b {
			b[i] = abc[rng.IntN(len(abc))]
		}
		return fmt.Sprintf("%s-%s-%s-%s-%s-%s-%s", b[:6], b[6:10], b[10:14], b[14:18], b[18:22], b[22:26], b[26:])
	}
	linear := func(name string, pe, n int) string {
		return fmt.Sprintf(`
		%s {
			id = %q
			status = ["READ", "WRITE"]
			flags = []
			segment_count = 1
			segment1 {
				start_extent = 0
				extent_count = %d
				type = "striped"
				stripe_count = 1
				stripes = [
					"pv0", %d
				]
			}
		}
`, name, id(), n, pe)
	}
	return fmt.Sprintf(`
		tp {
			id = %q
			status = ["READ", "WRITE", "VISIBLE"]
			flags = []
			segment_count = 1
			segment1 {
				start_extent = 0
				extent_count = 2
				type = "thin-pool"
				metadata = "tp_tmeta"
				pool = "tp_tdata"
				transaction_id = 0
				chunk_size = 128
				discards = "passdown"
				zero_new_blocks = 1
			}
		}

		r {
			id = %q
			status = ["READ", "WRITE", "VISIBLE"]
			flags = []
			segment_count = 1
			segment1 {
				start_extent = 0
				extent_count = 2
				type = "raid1"
				device_count = 2
				region_size = 1024
				raids = [
					"r_rmeta_0", "r_rimage_0",
					"r_rmeta_1", "r_rimage_1"
				]
			}
		}
`, id(), id()) + linear("tp_tmeta", pe, 1) + linear("tp_tdata", pe+1, 2) + linear("lvol0_pmspare", pe+3, 1) +
		linear("r_rmeta_0", pe+4, 1) + linear("r_rimage_0", pe+5, 2) + linear("r_rmeta_1", pe+7, 1) + linear("r_rimage_1", pe+8, 2)
}
