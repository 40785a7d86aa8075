package partition

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/asrlinux/asr/internal/testenv"
)

// disk makes a file of size bytes partitioned by the given command (sgdisk
// or sfdisk arguments) and returns its path.
func disk(t *testing.T, size int64, name string, args ...string) string {
	t.Helper()
	p := blankDisk(t, size)
	testenv.Run(t, name, append(args, p)...)
	return p
}

// enlarge copies the image at p into a file of newSize bytes with the table
// Resize computed, as a restore to a larger disk does.
func enlarge(t *testing.T, p string, newSize int64, grow bool) (string, *Resized) {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	r, err := Resize(b[:1<<20], int64(len(b)), newSize, grow)
	if err != nil {
		t.Fatalf("Resize = %v", err)
	}
	q := filepath.Join(t.TempDir(), "big.img")
	f, err := os.Create(q)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Truncate(newSize); err != nil {
		t.Fatal(err)
	}
	copy(b, r.Head)
	if _, err := f.WriteAt(b, 0); err != nil {
		t.Fatal(err)
	}
	if r.Backup != nil {
		if _, err := f.WriteAt(r.Backup, r.BackupOff); err != nil {
			t.Fatal(err)
		}
	}
	return q, r
}

func sgdiskVerify(t *testing.T, p string) {
	t.Helper()
	out, err := exec.Command("sgdisk", "-v", p).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "No problems found") {
		t.Errorf("sgdisk -v %s: %v\n%s", p, err, out)
	}
}

func TestResizeGPTToLargerDisk(t *testing.T) {
	testenv.RequireTools(t, "sgdisk")
	src := disk(t, 64<<20, "sgdisk", "-n1:2048:+20M", "-t1:ef00", "-n2:0:0", "-t2:8300", "-c2:root")
	sgdiskVerify(t, src)
	for _, grow := range []bool{false, true} {
		big, r := enlarge(t, src, 200<<20, grow)
		sgdiskVerify(t, big)
		head := make([]byte, 1<<20)
		f, _ := os.Open(big)
		f.ReadAt(head, 0)
		f.Close()
		tb := Parse(head)
		if tb.Scheme != GPT || len(tb.Partitions) != 2 {
			t.Fatalf("grow=%v: table after resize = %+v, want a GPT with 2 partitions", grow, tb)
		}
		if got, want := tb.BackupLBA, int64(200<<20)/512-1; got != want {
			t.Errorf("grow=%v: backup header at sector %d, want %d (the new last sector)", grow, got, want)
		}
		p2 := tb.Partitions[1]
		switch {
		case !grow && p2.Start+p2.Size > 64<<20:
			t.Errorf("partition 2 ends at %d without --grow, want its old end", p2.Start+p2.Size)
		case grow && (r.Grown == nil || r.Grown.Number != 2 || p2.Start+p2.Size != 199<<20):
			t.Errorf("grow: partition 2 = %+v (Grown %+v), want it to end at 199 MiB (the last whole MiB before the backup table)", p2, r.Grown)
		}
	}
}

func TestResizeMBRGrow(t *testing.T) {
	testenv.RequireTools(t, "sfdisk")
	src := disk(t, 64<<20, "sh", "-c", `printf 'label: dos\n2048,20480,c\n,,83\n' | sfdisk "$0"`)
	big, r := enlarge(t, src, 160<<20, true)
	out := testenv.Run(t, "sfdisk", "-d", big)
	if !strings.Contains(out, "start=       22528, size=      305152, type=83") {
		t.Errorf("sfdisk -d after growing partition 2 to the end of a 160 MiB disk:\n%s", out)
	}
	if r.Grown == nil || r.Grown.Number != 2 {
		t.Errorf("Grown = %+v, want partition 2", r.Grown)
	}
	// Without grow an MBR needs nothing.
	if r, err := Resize(make([]byte, 1<<20), 64<<20, 160<<20, false); err != nil || r.Changed {
		t.Errorf("Resize(no table) = %+v, %v; want unchanged", r, err)
	}
}
