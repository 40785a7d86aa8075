package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestE2EHTTPRawMapped restores a plain raw disk (.img) from nginx, which
// takes ranges: asr maps its filesystems through range requests, so only
// the used chunks are downloaded and written. With a published checksum,
// the whole file is downloaded to check it, and still only used data is
// written. Either way the disk's files are exact, e2fsck is clean, and no
// block of the old data in the source's free space reaches the target.
func TestE2EHTTPRawMapped(t *testing.T) {
	requireRoot(t)
	l := newLab(t)
	access := startLoggingNginx(t, l)
	disk := usedDisk(t, t.TempDir(), "96M")
	size := fileSize(t, disk)
	sh(t, "sh", "-c", fmt.Sprintf("cp --sparse=always %s %s/plain.img && cp --sparse=always %s %s/checked.img && cd %s && sha256sum checked.img > checked.img.sha256",
		disk, l.dir, disk, l.dir, l.dir))
	var free int64
	for _, e := range freeSpace(t, disk) {
		free += e.Len
	}
	poff, psize := firstPartition(t, disk)
	src := partLoop(t, disk, poff, psize, true)
	want := treeDigest(t, src, "ext4")

	restore := func(t *testing.T, name string) string {
		t.Helper()
		tfile := filepath.Join(t.TempDir(), "target.img")
		fillRandom(t, tfile, size, 21)
		dev := loop(t, tfile)
		st, _ := os.Stat(access)
		out, code := l.run("restore", "--source", "http://127.0.0.1:8080/"+name, "--target", dev, "--erase", "--noprompt")
		if code != 0 {
			t.Fatalf("restore of %s: exit %d\n%s", name, code, out)
		}
		for _, s := range []string{"free space not copied", "Verified"} {
			if !strings.Contains(out, s) {
				t.Errorf("restore output lacks %q:\n%s", s, out)
			}
		}
		dst := partLoop(t, tfile, poff, psize, true)
		if out, err := exec.Command("e2fsck", "-fn", dst).CombinedOutput(); err != nil {
			t.Fatalf("e2fsck -fn on the restored partition: %v\n%s", err, out)
		}
		if diff := firstDiff(want, treeDigest(t, dst, "ext4")); diff != "" {
			t.Errorf("restored files differ from the source's: %s", diff)
		}
		checkFreeNotCopied(t, disk, tfile)
		sent, requests := served(t, access, "/"+name, st.Size())
		t.Logf("nginx sent %d bytes of %s in %d requests (disk %d bytes, %d of them free space)", sent, name, requests, size, free)
		return out
	}

	t.Run("ranges", func(t *testing.T) {
		st, _ := os.Stat(access)
		out := restore(t, "plain.img")
		if !strings.Contains(out, "range requests") {
			t.Errorf("restore output does not say the disk was mapped with range requests:\n%s", out)
		}
		// Only chunks holding used data are fetched (free bytes inside
		// them come along): most of the free space never crosses the
		// network.
		sent, _ := served(t, access, "/plain.img", st.Size())
		if sent > size-free/2 {
			t.Errorf("nginx sent %d bytes of plain.img (%d bytes, %d free): free space was downloaded", sent, size, free)
		}
	})

	t.Run("checksum", func(t *testing.T) {
		out := restore(t, "checked.img")
		if !strings.Contains(out, "matches the SHA-256 from http://127.0.0.1:8080/checked.img.sha256") {
			t.Errorf("restore output does not say the download matched its checksum:\n%s", out)
		}
	})
}
