#!/bin/bash
# mkbootos.sh OUT.img [ID]: builds a small bootable BIOS disk image, the
# "restored system" of the first-boot tests. Booted (QEMU with the disk only,
# serial console), it prints
#     ASR-FIRSTBOOT-OK ID
# on ttyS0 and powers off. ID (default: asr-firstboot) names the image, so a
# test knows that the system that booted is the one it restored.
#
# Layout (24 MiB, MBR): syslinux's mbr.bin in sector 0, one active FAT16
# partition from 1 MiB with syslinux (ldlinux.sys), the installed Debian
# kernel and a tiny initramfs: a static busybox and an /init script. Only
# Debian packages (syslinux, syslinux-common, busybox-static, mtools,
# dosfstools, fdisk, cpio, linux-image-amd64) and no root: the file system
# is written with mtools, never mounted. File times and the volume id are
# fixed; two runs with the same ID and kernel differ only in the seconds of
# the FAT's creation times, which mtools takes from the clock.
set -euo pipefail
out=${1:?usage: mkbootos.sh OUT.img [ID]}
id=${2:-asr-firstboot}
case $id in *[!A-Za-z0-9._-]*|'') echo "mkbootos: ID '$id': use letters, digits, '.', '_', '-'" >&2; exit 2 ;; esac
kernel=${KERNEL:-$(ls -1 /boot/vmlinuz-* 2>/dev/null | sort -V | tail -1)}
[ -r "$kernel" ] || { echo "mkbootos: no kernel in /boot (apt-get install linux-image-amd64, or KERNEL=path)" >&2; exit 1; }
mbr=/usr/lib/syslinux/mbr/mbr.bin
for f in "$mbr" /usr/bin/busybox; do
	[ -r "$f" ] || { echo "mkbootos: $f missing (scripts/deps.sh installs it)" >&2; exit 1; }
done
for c in syslinux mcopy mkfs.fat sfdisk cpio gzip; do
	command -v "$c" >/dev/null || [ -x "/usr/sbin/$c" ] || [ -x "/sbin/$c" ] || { echo "mkbootos: $c missing (scripts/deps.sh installs it)" >&2; exit 1; }
done
if ldd /usr/bin/busybox >/dev/null 2>&1; then
	echo "mkbootos: /usr/bin/busybox is linked dynamically: its initramfs has no libraries (apt-get install busybox-static)" >&2
	exit 1
fi
export PATH=$PATH:/usr/sbin:/sbin

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
epoch=1700000000 # fixed timestamps: the same ID gives the same image

# The initramfs: busybox and an init that says which system this is.
mkdir -p "$tmp/root/bin" "$tmp/root/dev" "$tmp/root/proc"
cp /usr/bin/busybox "$tmp/root/bin/busybox"
ln -s busybox "$tmp/root/bin/sh"
cat >"$tmp/root/init" <<INIT
#!/bin/sh
/bin/busybox mount -t devtmpfs dev /dev 2>/dev/null
/bin/busybox mount -t proc proc /proc
echo "ASR-FIRSTBOOT-OK $id" >/dev/console
/bin/busybox sync
/bin/busybox poweroff -f
INIT
chmod 755 "$tmp/root/init"
find "$tmp/root" -exec touch -h -d "@$epoch" {} +
(cd "$tmp/root" && find . -mindepth 1 | LC_ALL=C sort | cpio --quiet -o -H newc -R 0:0 --reproducible) | gzip -9 -n >"$tmp/initrd.gz"

cat >"$tmp/syslinux.cfg" <<CFG
SERIAL 0 115200
PROMPT 0
TIMEOUT 0
DEFAULT firstboot
LABEL firstboot
  LINUX /vmlinuz
  INITRD /initrd.gz
  APPEND console=ttyS0 quiet panic=-1 asr.firstboot=$id
CFG
cp "$kernel" "$tmp/vmlinuz"
touch -d "@$epoch" "$tmp/vmlinuz" "$tmp/initrd.gz" "$tmp/syslinux.cfg"

size=$((24 << 20)) start=2048
rm -f "$out"
truncate -s "$size" "$out"
# One active FAT16 partition from 1 MiB to the end; a fixed disk id.
printf 'label: dos\nlabel-id: 0x41535231\nstart=%d, type=6, bootable\n' "$start" | sfdisk -q "$out"
dd if="$mbr" of="$out" bs=440 count=1 conv=notrunc status=none
sectors=$(( size / 512 - start ))
mkfs.fat -F 16 -n ASRTEST -i 41535231 --invariant --offset="$start" "$out" $((sectors / 2)) >/dev/null
syslinux --offset $((start * 512)) --install "$out"
export MTOOLS_SKIP_CHECK=1 SOURCE_DATE_EPOCH=$epoch
mcopy -m -i "$out@@$((start * 512))" "$tmp/vmlinuz" "$tmp/initrd.gz" "$tmp/syslinux.cfg" ::/
echo "mkbootos: $out: $(( $(stat -c %s "$tmp/vmlinuz") >> 20 )) MiB kernel $(basename "$kernel"), $(( $(stat -c %s "$tmp/initrd.gz") >> 10 )) KiB initramfs, marker \"ASR-FIRSTBOOT-OK $id\""
