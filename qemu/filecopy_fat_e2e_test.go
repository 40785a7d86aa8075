package qemu_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/asrlinux/asr/initramfs"
	"github.com/asrlinux/asr/internal/testenv"
	"github.com/asrlinux/asr/qemu"
)

// TestFileCopyOntoFAT runs the file-copy restore onto a FAT volume in a VM,
// since the host kernel may have no FAT driver: the guest's /init
// (qemu/fatinit) copies a tree from a read-only tmpfs onto
// /dev/vda, a FAT16 image made here with mkfs.vfat and mtools, holding a
// file to keep, a file to replace and a folder to replace by a file. The
// image is then read here with mtools: files copied, replaced and kept,
// hard links as two copies, the read-only attribute, and no symlink or FIFO
// (which FAT cannot hold, as asr warned).
func TestFileCopyOntoFAT(t *testing.T) {
	testenv.RequireVM(t, "mkfs.vfat", "mcopy", "mtype", "mattrib", "mdir")
	k, err := initramfs.FindKernel("/", "")
	if err != nil {
		t.Fatalf("no kernel for the VM: %v", err)
	}
	dir := t.TempDir()
	start := time.Now()
	res, err := initramfs.Build(initramfs.Options{
		Output: filepath.Join(dir, "fat-initramfs.cpio.gz"), Kernel: k, Version: "fat-e2e",
		Init:     "github.com/asrlinux/asr/qemu/fatinit",
		Commands: []string{}, CACerts: "-",
		Modules: []string{"virtio_pci", "virtio_blk", "vfat", "nls_cp437", "nls_ascii"},
	})
	if err != nil {
		t.Fatalf("building the test initramfs: %v", err)
	}
	t.Logf("initramfs built in %.1f s", time.Since(start).Seconds())

	img := filepath.Join(dir, "fat.img")
	f, err := os.Create(img)
	if err != nil {
		t.Fatal(err)
	}
	f.Truncate(64 << 20)
	f.Close()
	testenv.Run(t, "mkfs.vfat", "-F", "16", img)
	put := func(name, content string) {
		p := filepath.Join(dir, "put")
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		testenv.Run(t, "mcopy", "-o", "-i", img, p, "::/"+name)
	}
	put("keep.txt", "the volume's own data\n")
	put("replace.txt", "old content\n")
	testenv.Run(t, "mmd", "-i", img, "::/wasdir")
	put("wasdir/inner.txt", "inside a folder the source replaces by a file\n")

	vm := qemu.StartT(t, "i8fat", qemu.WithKernel(k.Image), qemu.WithInitramfs(res.Path),
		qemu.WithDisk(img))
	m, err := vm.Console.Expect(`FATTEST (ok|failed: .*)`, 4*time.Minute)
	if err != nil {
		t.Fatalf("no result from the VM: %v\nconsole:\n%s", err, vm.Console.Log())
	}
	if m[1] != "ok" {
		t.Fatalf("file copy onto FAT in the VM: %s\nconsole:\n%s", m[1], vm.Console.Log())
	}
	if err := vm.WaitTimeout(time.Minute); err != nil {
		t.Logf("VM did not power off cleanly: %v", err)
	}
	log := vm.Console.Log()
	for _, want := range []string{"The target is FAT", "which are not copied: 1 symlinks, 1 FIFOs\n",
		"1 further names of hard-linked files become separate copies", "Copied and verified 13 items: 2 replaced, 11 added, 1 kept"} {
		if !strings.Contains(log, want) {
			t.Errorf("console lacks %q:\n%s", want, log)
		}
	}

	mtype := func(name string) string {
		out, err := exec.Command("mtype", "-i", img, "::/"+name).CombinedOutput()
		if err != nil {
			return "(missing: " + strings.TrimSpace(string(out)) + ")"
		}
		return string(out)
	}
	for name, want := range map[string]string{
		"keep.txt":         "the volume's own data\n",
		"replace.txt":      "new content from the source\n",
		"wasdir":           "a file where the target has a folder\n",
		"etc/hostname":     "fat-pc\n",
		"dir/sub/deep.txt": "three levels down\n",
		"hl1":              "one file, two names\n",
		"hl2":              "one file, two names\n",
		"readonly.txt":     "no write permission\n",
	} {
		if got := mtype(name); got != want {
			t.Errorf("FAT volume %s = %q, want %q", name, got, want)
		}
	}
	if got := mtype("big.bin"); len(got) != 3<<20 || strings.Trim(got, "\x00") != "" {
		t.Errorf("FAT volume big.bin: %d bytes, want 3 MiB of zeros", len(got))
	}
	listing := testenv.Run(t, "mdir", "-i", img, "-b", "-/", "::/")
	for _, absent := range []string{"::/link", "::/fifo", "wasdir/inner.txt", ".asr-tmp"} {
		if strings.Contains(listing, absent) {
			t.Errorf("FAT volume holds %s, which it must not:\n%s", absent, listing)
		}
	}
	if attr := testenv.Run(t, "mattrib", "-i", img, "::/readonly.txt"); !strings.Contains(strings.Split(attr, "::/")[0], "R") {
		t.Errorf("readonly.txt attributes %q, want the read-only flag (R)", attr)
	}
}
