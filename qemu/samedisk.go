package qemu

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"os/exec"
)

// SameDisk checks that disk, a VM's disk after a restore, holds the raw disk
// image's bytes from its start. On a disk larger than the image a GPT's
// first 1 KiB (protective MBR and primary header) is asr's to adjust, as it
// moves the backup to the disk's end: those bytes are skipped, and the GPT
// must then pass sgdisk -v.
func SameDisk(image, disk string) error {
	a, err := os.Open(image)
	if err != nil {
		return err
	}
	defer a.Close()
	b, err := os.Open(disk)
	if err != nil {
		return err
	}
	defer b.Close()
	n, err := a.Seek(0, io.SeekEnd)
	if err != nil {
		return err
	}
	dn, err := b.Seek(0, io.SeekEnd)
	if err != nil {
		return err
	}
	if dn < n {
		return fmt.Errorf("%s is %d bytes, shorter than the image's %d", disk, dn, n)
	}
	from := int64(0)
	sig := make([]byte, 8)
	if dn > n && n >= 520 {
		if _, err := a.ReadAt(sig, 512); err != nil {
			return err
		}
	}
	if string(sig) == "EFI PART" {
		out, err := exec.Command("sgdisk", "-v", disk).CombinedOutput()
		if err != nil || !bytes.Contains(out, []byte("No problems found")) {
			return fmt.Errorf("sgdisk -v %s: %v\n%s", disk, err, out)
		}
		from = 1024
	}
	ba, bb := make([]byte, 1<<20), make([]byte, 1<<20)
	for off := from; off < n; off += int64(len(ba)) {
		k := int(min(int64(len(ba)), n-off))
		if _, err := a.ReadAt(ba[:k], off); err != nil {
			return err
		}
		if _, err := b.ReadAt(bb[:k], off); err != nil {
			return err
		}
		if !bytes.Equal(ba[:k], bb[:k]) {
			i := off
			for j := range k {
				if ba[j] != bb[j] {
					i += int64(j)
					break
				}
			}
			return fmt.Errorf("%s DIFFERS from the image %s from byte %d (of %d)", disk, image, i, n)
		}
	}
	return nil
}
