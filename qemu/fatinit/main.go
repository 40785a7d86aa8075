// Command fatinit is the /init of a test VM (qemu/filecopy_fat_e2e_test.go):
// the host kernel here has no FAT driver, a Debian guest kernel does. It
// builds a source tree on a tmpfs, makes it read-only, runs the file-copy
// restore of that tree onto the FAT volume on /dev/vda, prints
// "FATTEST ok" or "FATTEST failed: REASON", and powers the VM off. The
// test then reads the FAT image with mtools.
package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/sys/unix"

	"github.com/asrlinux/asr/appliance"
	"github.com/asrlinux/asr/internal/filerestore"
	"github.com/asrlinux/asr/internal/progress"
)

func main() {
	if err := run(); err != nil {
		fmt.Printf("FATTEST failed: %v\n", err)
	} else {
		fmt.Println("FATTEST ok")
	}
	unix.Sync()
	unix.Reboot(unix.LINUX_REBOOT_CMD_POWER_OFF)
}

func run() error {
	if err := appliance.MountAll(); err != nil {
		return err
	}
	if err := appliance.LoadNamed("/", "virtio_pci", "virtio_blk", "vfat", "nls_cp437", "nls_ascii"); err != nil {
		return err
	}
	for i := 0; ; i++ {
		if _, err := os.Stat("/dev/vda"); err == nil {
			break
		}
		if i == 100 {
			return fmt.Errorf("no /dev/vda after 10 s")
		}
		time.Sleep(100 * time.Millisecond)
	}
	src := "/src"
	if err := os.MkdirAll(src, 0o755); err != nil {
		return err
	}
	if err := unix.Mount("tmpfs", src, "tmpfs", 0, ""); err != nil {
		return fmt.Errorf("mounting the source tmpfs: %w", err)
	}
	if err := fill(src); err != nil {
		return fmt.Errorf("making the source tree: %w", err)
	}
	if err := unix.Mount("", src, "", unix.MS_REMOUNT|unix.MS_RDONLY, ""); err != nil {
		return fmt.Errorf("making the source read-only: %w", err)
	}
	res, err := filerestore.Run(context.Background(), filerestore.Request{
		Source: src, Target: "/dev/vda", Out: progress.New(os.Stdout, false),
	})
	if err != nil {
		return err
	}
	if !res.Verified {
		return fmt.Errorf("the copy was not verified")
	}
	fmt.Printf("Copied and verified %d items: %d replaced, %d added, %d kept\n", res.Plan.Items, res.Plan.Replaced, res.Plan.Added, res.Plan.Kept)
	return nil
}

// fill makes the source tree; qemu/filecopy_fat_e2e_test.go checks the
// FAT volume against it.
func fill(root string) error {
	mtime := time.Date(2025, 6, 1, 10, 0, 0, 0, time.UTC)
	files := map[string]string{
		"etc/hostname":     "fat-pc\n",
		"replace.txt":      "new content from the source\n",
		"wasdir":           "a file where the target has a folder\n",
		"dir/sub/deep.txt": "three levels down\n",
		"readonly.txt":     "no write permission\n",
		"hl1":              "one file, two names\n",
		"big.bin":          string(make([]byte, 3<<20)),
	}
	for name, content := range files {
		p := filepath.Join(root, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			return err
		}
		if err := os.Chtimes(p, mtime, mtime); err != nil {
			return err
		}
	}
	if err := os.Chmod(filepath.Join(root, "readonly.txt"), 0o444); err != nil {
		return err
	}
	if err := os.Link(filepath.Join(root, "hl1"), filepath.Join(root, "hl2")); err != nil {
		return err
	}
	if err := os.Symlink("etc/hostname", filepath.Join(root, "link")); err != nil {
		return err
	}
	return unix.Mkfifo(filepath.Join(root, "fifo"), 0o644)
}
