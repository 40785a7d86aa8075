package appliance

import (
	"context"
	"fmt"

	"github.com/asrlinux/asr/internal/fsgrow"
)

// DefaultPath is the PATH /init gives itself: the kernel starts init with
// none, and asr.grow runs the tools the initramfs carries in /usr/sbin and
// /usr/bin (losetup, e2fsck, resize2fs, ntfsresize, mount, xfs_growfs,
// btrfs, resize.f2fs).
const DefaultPath = "/bin:/usr/bin:/usr/sbin:/sbin"

// prepareGrow makes sure asr.grow can work before anything is written: the
// tools every grow needs are in the initramfs, and the kernel has loop
// devices (a module in Debian's kernel), which fsgrow puts over the
// partition. The other filesystems' tools are looked for when one of them
// is met: a missing one is named then, after a complete, verified restore.
func prepareGrow(rootDir string) error {
	if err := fsgrow.Check(); err != nil {
		return fmt.Errorf("asr.grow: this initramfs lacks what growing needs (%v); rebuild it with make initramfs on a machine that has e2fsprogs and util-linux, or remove asr.grow", err)
	}
	if err := LoadNamed(rootDir, "loop"); err != nil {
		return fmt.Errorf("asr.grow: no loop devices: %v; rebuild the initramfs with the loop module, or remove asr.grow", err)
	}
	return nil
}

// growFS is restore.Request.GrowFS in the appliance: fsgrow.Grow, after
// loading the driver of a filesystem that grows only mounted. XFS and btrfs
// modules are carried but loaded only for such a filesystem: btrfs brings
// raid6_pq, whose speed test at load costs seconds under emulation.
func growFS(rootDir string, logf func(string, ...any)) func(context.Context, string, int64, int64) (string, error) {
	return func(ctx context.Context, target string, off, size int64) (string, error) {
		if m := fsgrow.MountedKind(target, off); m != "" {
			// The crc32c checksum first: libcrc32c, which both
			// need, fails to load without it (the kernel cannot
			// ask a modprobe here for it).
			if err := LoadNamed(rootDir, "crc32c_generic", m); err != nil {
				// fsgrow then says that this kernel cannot mount it.
				logf("asr.grow: loading the %s driver: %v", m, err)
			}
		}
		return fsgrow.Grow(ctx, target, off, size)
	}
}
