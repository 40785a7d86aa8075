package multicast

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/asrlinux/asr/internal/testenv"
)

// TestE2EFreeSpaceNotSent streams an image of a FAT volume whose free space
// holds old data: the unused chunks are neither sent nor written, and the
// restored volume checks clean with the same files.
func TestE2EFreeSpaceNotSent(t *testing.T) {
	testenv.Require(t, "mkfs.fat", "fsck.fat", "mcopy", "mdel")
	l := newMLab(t, "u", 1)
	vol := filepath.Join(l.dir, "fat.img")
	testenv.Run(t, "truncate", "-s", "40M", vol)
	testenv.Run(t, "mkfs.fat", "-F", "32", "-s", "1", "-i", "a5a5a5a5", vol)
	old := filepath.Join(l.dir, "old.bin")
	testenv.FillRandom(t, old, 30<<20, 1)
	testenv.Run(t, "mcopy", "-i", vol, old, "::/OLD.BIN")
	testenv.Run(t, "mdel", "-i", vol, "::/OLD.BIN")
	file := filepath.Join(l.dir, "keep.bin")
	testenv.FillRandom(t, file, 3<<20, 2)
	testenv.Run(t, "mcopy", "-i", vol, file, "::/KEEP.BIN")
	img := vol + ".asr"
	testenv.Run(t, l.asr, "imagescan", "--source", vol, "--output", img)

	srv := l.server(l.srv, img, l.config("239.255.10.9", 40000000, ""))
	target := filepath.Join(l.dir, "target.img")
	testenv.FillRandom(t, target, 40<<20, 3)
	r := l.restore(l.clients[0], target)
	if r.code != 0 {
		t.Fatalf("restore: exit %d\n%s", r.code, r.out)
	}
	for _, s := range []string{"of filesystem free space not copied", "Verified", "of used data"} {
		if !strings.Contains(r.out, s) {
			t.Errorf("client output lacks %q:\n%s", s, r.out)
		}
	}
	testenv.Run(t, "fsck.fat", "-n", target)
	out := filepath.Join(l.dir, "out.bin")
	testenv.Run(t, "mcopy", "-i", target, "::/KEEP.BIN", out)
	if testenv.Hash(t, out, 0, 3<<20) != testenv.Hash(t, file, 0, 3<<20) {
		t.Errorf("KEEP.BIN restored over multicast differs from the original")
	}
	// The server sent about the 3 MiB of used data (and FEC parity), not
	// the 30 MiB of deleted data in the free space.
	packets, _, _, _, _, _ := note(t, r.out)
	if sent := packets * packetSize; sent > 12<<20 {
		t.Errorf("client received %d packets (about %d bytes), want well under the 30 MiB of free space:\n%s", packets, sent, srv.log())
	}
}
