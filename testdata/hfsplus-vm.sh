#!/bin/bash
# hfsplus-vm.sh VOLUME SCRIPT: runs the shell SCRIPT in a QEMU guest (TCG,
# Debian's own kernel from /boot) whose /dev/vda is the HFS+ VOLUME,
# read-write, and prints what SCRIPT printed (stdout and stderr). Exit
# status: SCRIPT's, or 1 when the guest could not run it.
#
# Why a guest: Debian 12 has no mkfs.hfsplus or fsck.hfsplus (hfsprogs is
# not packaged) and the host kernel may not have the hfsplus module loaded
# or loadable, but Debian's kernel package ships hfsplus.ko, which reads and
# writes HFS+. The guest is that kernel with a busybox initramfs holding
# hfsplus.ko and what it needs (virtio for the disk, nls_utf8, cdrom), made
# here in a few seconds. SCRIPT runs under busybox sh with /dev/vda not
# mounted: it mounts it (mount -t hfsplus /dev/vda /mnt) and must unmount
# it, or the volume is left marked in use. SCRIPT's output goes to a second
# disk, not the serial console, so that long listings (a hash per file) are
# fast and exact.
#
# Settings: HFSPLUS_VM_TIMEOUT (600 seconds: the whole guest run),
# HFSPLUS_VM_KERNEL (the newest /boot/vmlinuz-*; its modules must be in
# /lib/modules/VERSION).
set -euo pipefail
vol=${1:?usage: hfsplus-vm.sh VOLUME SCRIPT}
script=${2:?usage: hfsplus-vm.sh VOLUME SCRIPT}
timeout=${HFSPLUS_VM_TIMEOUT:-600}
die() { echo "hfsplus-vm: $*" >&2; exit 1; }
for c in qemu-system-x86_64 busybox cpio gzip timeout; do
	command -v "$c" >/dev/null || die "$c missing (scripts/deps.sh installs it)"
done
kernel=${HFSPLUS_VM_KERNEL:-$(ls -1v /boot/vmlinuz-* 2>/dev/null | tail -n 1)}
[ -n "$kernel" ] && [ -f "$kernel" ] || die "no kernel in /boot (scripts/deps.sh installs linux-image-amd64)"
ver=${kernel##*/vmlinuz-}
mods=/lib/modules/$ver/kernel
[ -d "$mods" ] || die "no modules for $ver in /lib/modules"
! ldd "$(command -v busybox)" >/dev/null 2>&1 || die "busybox is not static (install busybox-static; scripts/deps.sh does)"

work=$(mktemp -d /tmp/hfsplus-vm.XXXXXX)
trap 'rm -rf "$work"' EXIT
root=$work/root
mkdir -p "$root"/{bin,dev,proc,sys,mnt,tmp,lib/modules}
cp "$(command -v busybox)" "$root/bin/busybox"
order="drivers/virtio/virtio_ring drivers/virtio/virtio drivers/virtio/virtio_pci_modern_dev
	drivers/virtio/virtio_pci_legacy_dev drivers/virtio/virtio_pci drivers/block/virtio_blk
	drivers/cdrom/cdrom fs/nls/nls_utf8 fs/hfsplus/hfsplus"
names=""
for m in $order; do
	f=$(ls "$mods/$m".ko* 2>/dev/null | head -n 1)
	[ -n "$f" ] || die "$m.ko not in $mods"
	n=${m##*/}
	case $f in
	*.xz) xz -dc "$f" >"$root/lib/modules/$n.ko" ;;
	*.zst) zstd -q -dc "$f" >"$root/lib/modules/$n.ko" ;;
	*) cp "$f" "$root/lib/modules/$n.ko" ;;
	esac
	names="$names $n"
done
cp "$script" "$root/script"
cat >"$root/init" <<EOF
#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
for m in$names; do insmod /lib/modules/\$m.ko || echo "hfsplus-vm: insmod \$m failed"; done
i=0
while [ ! -b /dev/vdb ] && [ \$i -lt 100 ]; do sleep 0.1; i=\$((i + 1)); done
sh /script >/tmp/out 2>&1
rc=\$?
# The output's length first, so the host reads exactly it.
{ printf '%012d' \$(wc -c </tmp/out); cat /tmp/out; } | dd of=/dev/vdb bs=1M conv=fsync 2>/dev/null
echo "HFSPLUS-VM-RC=\$rc"
sync
poweroff -f
EOF
chmod +x "$root/init"
(cd "$root" && find . | cpio -o -H newc 2>/dev/null | gzip -1 >"$work/initrd.gz")
truncate -s 256M "$work/out.img"
# -nodefaults: no NIC at all, so the guest sends no packets anywhere.
timeout "$timeout" qemu-system-x86_64 -nodefaults -no-reboot -nographic -cpu max -m 768 -smp 2 \
	-kernel "$kernel" -initrd "$work/initrd.gz" -append "console=ttyS0 quiet panic=-1" \
	-serial "file:$work/console" \
	-drive "file=$vol,format=raw,if=virtio" \
	-drive "file=$work/out.img,format=raw,if=virtio" >/dev/null 2>&1 </dev/null ||
	die "the guest did not finish within ${timeout}s (console: $(tail -c 600 "$work/console" 2>/dev/null | tr -d '\r'))"
rc=$(grep -ao 'HFSPLUS-VM-RC=[0-9]*' "$work/console" | tail -n 1 | cut -d= -f2)
[ -n "$rc" ] || die "the guest did not run the script (console: $(tail -c 600 "$work/console" | tr -d '\r'))"
n=$(head -c 12 "$work/out.img")
case $n in '' | *[!0-9]*) die "the guest wrote no output" ;; esac
{ tail -c +13 "$work/out.img" || true; } | head -c "$((10#$n))"
exit "$rc"
