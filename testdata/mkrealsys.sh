#!/bin/bash
# mkrealsys.sh CACHEDIR: builds a real Debian 12 system on a small BIOS disk,
# the "real system" the appliance's VM matrix restores and boots, and prints
# the path of its disk in CACHEDIR as a qcow2 image (the format cloud and VM
# images come in). Run as root.
#
# The system: mmdebstrap's minbase of bookworm with systemd as init, Debian's
# kernel (linux-image-amd64, initramfs-tools) and GRUB for BIOS (grub-pc),
# no recommends. Its disk: GPT, a 1 MiB BIOS boot partition for GRUB's core
# image, then one ext4 root filesystem to the end. GRUB's own grub-install
# and update-grub write the boot code and grub.cfg, inside the system, with
# console=ttyS0 in /etc/default/grub. At boot, once systemd reaches
# multi-user.target, the unit asr-realsys.service prints on the console
#     ASR-REALSYS multi-user=active login=waiting root-bytes=N root-blocks=B block-size=S
# (login=waiting once agetty has printed its prompt on ttyS0 and waits for
# a name, at most 2 minutes; the root filesystem's size as df and statfs
# see it) and powers off.
#
# Slow parts are cached in CACHEDIR: the root tree from mmdebstrap
# (rootfs-KEY.tar, KEY a hash of the mmdebstrap recipe below, about 3 to 6
# minutes to make) and the finished disk (realsys-KEY.qcow2, KEY a hash of
# this whole script). A second run with the same script prints the cached
# disk at once. Delete CACHEDIR to rebuild against the archive's newest
# packages.
set -euo pipefail
cache=${1:?usage: mkrealsys.sh CACHEDIR}
export PATH=$PATH:/usr/sbin:/sbin
for c in mmdebstrap sgdisk mkfs.ext4 losetup partx qemu-img tar unshare; do
	command -v "$c" >/dev/null || { echo "mkrealsys: $c missing (scripts/deps.sh installs it)" >&2; exit 1; }
done
[ "$(id -u)" = 0 ] || { echo "mkrealsys: run as root (it mounts the disk it builds)" >&2; exit 1; }
mkdir -p "$cache"

mirror=${MIRROR:-http://deb.debian.org/debian}
# The recipe of the root tree; its hash names the cached tarball.
recipe=(--variant=minbase --aptopt='APT::Install-Recommends "false"'
	--include=systemd-sysv,udev,linux-image-amd64,initramfs-tools,grub-pc,e2fsprogs
	# grub-pc must not ask where to install itself: that is done below,
	# once there is a disk.
	--essential-hook='echo "grub-pc grub-pc/install_devices_empty boolean true" | chroot "$1" debconf-set-selections'
	bookworm)
rkey=$(printf '%s\n' "${recipe[@]}" | sha256sum | cut -c1-16)
skey=$(sha256sum "$0" | cut -c1-16)
rootfs=$cache/rootfs-$rkey.tar
disk=$cache/realsys-$skey.qcow2
if [ -s "$disk" ]; then
	echo "$disk"
	exit 0
fi
if [ ! -s "$rootfs" ]; then
	start=$SECONDS
	mmdebstrap --quiet --format=tar "${recipe[@]}" "$rootfs.part" "$mirror" >&2
	mv "$rootfs.part" "$rootfs"
	# Older recipes' trees are of no more use.
	find "$cache" -maxdepth 1 -name 'rootfs-*.tar' ! -name "${rootfs##*/}" -delete
	echo "mkrealsys: mmdebstrap made $rootfs ($(( $(stat -c %s "$rootfs") >> 20 )) MiB) in $(( SECONDS - start )) s" >&2
fi

tmp=$(mktemp -d "$cache/tmp.XXXXXX")
loop=
cleanup() {
	# The partitions first: partx added them, and a loop device detached
	# with them still registered keeps them, so the next user of that loop
	# device fails to add its own ("error adding partitions").
	[ -n "$loop" ] && { partx -d "$loop" 2>/dev/null; losetup -d "$loop" 2>/dev/null; }
	rm -rf "$tmp"
}
trap cleanup EXIT
start=$SECONDS
raw=$tmp/disk.img
size=$((1536 << 20))
truncate -s "$size" "$raw"
# Fixed GUIDs: the same script gives the same partition table. (No -q:
# sgdisk 1.0.9 then writes nothing.)
sgdisk -U 41535231-5245-414c-5359-530000000000 \
	-n 1:2048:+1M -t 1:ef02 -c 1:bios -u 1:41535231-5245-414c-5359-530000000001 \
	-n 2:0:0 -t 2:8300 -c 2:root -u 2:41535231-5245-414c-5359-530000000002 "$raw" >/dev/null
loop=$(losetup --show -f "$raw")
partx -a "$loop"
rootdev=${loop}p2
[ -b "$rootdev" ] || { echo "mkrealsys: $rootdev did not appear after partx -a" >&2; exit 1; }
uuid=41535231-7265-616c-7379-730000000000
mkfs.ext4 -q -L root -U "$uuid" "$rootdev"

# Everything mounted below lives in a mount namespace of its own: a failure
# leaves no mount behind on the host, and nothing propagates to its /dev.
# shellcheck disable=SC2016 # expanded by the inner shell
unshare --mount --propagation private bash -euo pipefail -c '
	loop=$1 rootdev=$2 uuid=$3 rootfs=$4 mnt=$5
	mkdir -p "$mnt"
	mount "$rootdev" "$mnt"
	tar -C "$mnt" -xpf "$rootfs"
	cat >"$mnt/etc/fstab" <<EOF
UUID=$uuid / ext4 errors=remount-ro 0 1
EOF
	echo realsys >"$mnt/etc/hostname"
	# The console on the first serial port; no menu, no wait.
	# no_timer_check: under emulation on a busy host the kernel can miss
	# the timer ticks it counts at boot and panic ("IO-APIC + timer
	# does not work").
	cat >>"$mnt/etc/default/grub" <<EOF
GRUB_TIMEOUT=0
GRUB_CMDLINE_LINUX="console=ttyS0 no_timer_check"
GRUB_CMDLINE_LINUX_DEFAULT=""
GRUB_TERMINAL=serial
GRUB_SERIAL_COMMAND="serial --unit=0 --speed=115200"
EOF
	cat >"$mnt/usr/local/sbin/asr-realsys-report" <<"EOF"
#!/bin/sh
# The login prompt: serial-getty@ttyS0 is Type=idle, so systemd starts
# agetty only once its job queue (this unit included) is idle, or after
# 5 s; a report and poweroff before that would leave the console without
# a prompt. Wait, at most 120 s, until agetty sleeps in read, poll or
# select (x86_64 syscalls 0, 7, 23, 270, 271): it prints the prompt just
# before it waits for the login name.
login=no
i=0
while [ $i -lt 120 ]; do
	for p in /proc/[0-9]*; do
		[ "$(cat $p/comm 2>/dev/null)" = agetty ] || continue
		case $(cut -d" " -f1 $p/syscall 2>/dev/null) in
		0|7|23|270|271) login=waiting ;;
		esac
	done
	[ $login = waiting ] && break
	sleep 1
	i=$((i + 1))
done
echo "ASR-REALSYS multi-user=$(systemctl is-active multi-user.target) login=$login root-bytes=$(df -B1 --output=size / | tail -n 1 | tr -d " ") root-blocks=$(stat -f -c %b /) block-size=$(stat -f -c %S /)"
EOF
	chmod 755 "$mnt/usr/local/sbin/asr-realsys-report"
	cat >"$mnt/etc/systemd/system/asr-realsys.service" <<"EOF"
[Unit]
Description=asr test: report the root filesystem size once multi-user.target is reached
After=multi-user.target

[Service]
Type=oneshot
StandardOutput=journal+console
# It waits up to 2 minutes for the login prompt: more than the default 90 s.
TimeoutStartSec=180
ExecStart=/usr/local/sbin/asr-realsys-report
ExecStartPost=/bin/systemctl --no-block poweroff

[Install]
WantedBy=multi-user.target
EOF
	mkdir -p "$mnt/etc/systemd/system/multi-user.target.wants"
	ln -s /etc/systemd/system/asr-realsys.service "$mnt/etc/systemd/system/multi-user.target.wants/asr-realsys.service"
	# A /dev of its own for the chroot, with the disk under its
	# by-uuid name, as udev would make it: update-grub writes
	# root=UUID= only when that name exists.
	mount -t tmpfs -o mode=755 dev "$mnt/dev"
	cp -a /dev/null /dev/zero /dev/random /dev/urandom "$loop" "$rootdev" "${loop}p1" "$mnt/dev/"
	mkdir -p "$mnt/dev/disk/by-uuid"
	ln -s "../../$(basename "$rootdev")" "$mnt/dev/disk/by-uuid/$uuid"
	mount -t proc proc "$mnt/proc"
	mount -t sysfs sys "$mnt/sys"
	# Its initramfs with the drivers of the disks it is booted from
	# only (MODULES=list), not every storage driver (MODULES=most): 36
	# MiB for the kernel to unpack take minutes under emulation.
	echo MODULES=list >"$mnt/etc/initramfs-tools/conf.d/asr-realsys"
	printf "%s\n" virtio_pci virtio_blk virtio_scsi sd_mod ahci nvme ext4 crc32c_generic >"$mnt/usr/share/initramfs-tools/modules.d/asr-realsys"
	chroot "$mnt" update-initramfs -u >&2
	echo "mkrealsys: initramfs $(( $(stat -c %s "$mnt"/boot/initrd.img-*) >> 20 )) MiB" >&2
	chroot "$mnt" grub-install --target=i386-pc "$loop" >&2
	chroot "$mnt" update-grub >&2 2>&1
	grep -q "root=UUID=$uuid" "$mnt/boot/grub/grub.cfg" || { echo "mkrealsys: grub.cfg does not boot root=UUID=$uuid" >&2; exit 1; }
	umount "$mnt/sys" "$mnt/proc" "$mnt/dev"
	rm -f "$mnt/etc/machine-id" && touch "$mnt/etc/machine-id"
	df -B1 "$mnt" | tail -n 1 >&2
	# Once seen "target is busy" on a loaded machine, though every chroot
	# command had ended: a few tries, then name what holds it.
	for try in 1 2 3 4 5 6 7 8 9 10; do
		umount "$mnt" 2>/dev/null && break
		[ "$try" = 10 ] && { fuser -vm "$mnt" >&2 || true; umount "$mnt"; }
		sleep 1
	done
' mkrealsys "$loop" "$rootdev" "$uuid" "$rootfs" "$tmp/mnt"
e2fsck -f -n "$rootdev" >/dev/null 2>&1
partx -d "$loop" 2>/dev/null || true
losetup -d "$loop"
loop=
qemu-img convert -f raw -O qcow2 "$raw" "$disk.part"
mv "$disk.part" "$disk"
find "$cache" -maxdepth 1 -name 'realsys-*.qcow2' ! -name "${disk##*/}" -delete
echo "mkrealsys: $disk ($(( $(stat -c %s "$disk") >> 20 )) MiB qcow2 of a $(( size >> 20 )) MiB disk) assembled in $(( SECONDS - start )) s" >&2
echo "$disk"
