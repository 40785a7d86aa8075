#!/bin/bash
# mkusb.sh: write the asr toolkit stick, a bootable disk image holding the
# imaging appliance and prepared images. `make usb-image` runs it.
#
#   usb/mkusb.sh -o OUT.img -k VMLINUZ -i INITRAMFS [-a "KERNEL ARGS"] [-c CONSOLES] IMAGE.asr...
#
# -a adds appliance keys to the boot entry's kernel command line, such as
# asr.image=NAME (required when the stick holds several images) or
# asr.after=reboot or asr.onfailure=poweroff. -c replaces the consoles, by default
# "console=ttyS0,115200 console=tty0" (the appliance's lines go to the last:
# the screen).
#
# Write OUT.img to a stick (dd if=OUT.img of=/dev/sdX bs=4M conv=fsync) and
# boot a machine from it, by BIOS or UEFI: the appliance restores the
# machine's internal disk from the image on the stick, with erase and
# verify, then powers off. Rebooting with the stick still in would boot the
# stick and restore again, so the admin takes it out first; -a
# asr.after=reboot is for machines that boot their internal disk first.
# The stick is never written: the appliance sets it read-only and mounts
# it read-only.
#
# Layout (GPT, no root or loop devices needed to build it):
#   1  BIOS boot  1 MiB   GRUB's core.img for BIOS (grub-pc-bin)
#   2  EFI system (FAT)   EFI/BOOT/BOOTX64.EFI, the kernel, the initramfs
#                         and boot/grub/grub.cfg. With Debian's signed
#                         shim and GRUB installed (shim-signed,
#                         grub-efi-amd64-signed), BOOTX64.EFI is shim
#                         (signed by Microsoft's UEFI CA) and
#                         EFI/BOOT/grubx64.efi the GRUB it loads (signed by
#                         Debian), so the stick boots with Secure Boot on,
#                         as does a Debian-signed kernel (-k); without them
#                         it is an unsigned GRUB (grub-efi-amd64-bin), which
#                         boots only with Secure Boot off. $ASR_USB_SHIM and
#                         $ASR_USB_GRUB_SIGNED name other files; either set
#                         to "none": the unsigned GRUB.
#   3  ASRDATA    (ext4)  the prepared images, at its top level. Add or
#                         replace images later on any Linux machine:
#                         mount the partition labelled ASRDATA and copy.
# The FAT partition is made with mtools and the ext4 one with mkfs.ext4 -d,
# so no filesystem driver is needed on the machine that builds it.
set -euo pipefail

out="" kernel="" initrd=""
consoles="console=ttyS0,115200 console=tty0" append=""
while getopts "o:k:i:a:c:" opt; do
	case $opt in
	o) out=$OPTARG ;;
	k) kernel=$OPTARG ;;
	i) initrd=$OPTARG ;;
	a) append=$OPTARG ;;
	c) consoles=$OPTARG ;;
	*) exit 2 ;;
	esac
done
shift $((OPTIND - 1))
die() {
	echo "mkusb: $*" >&2
	exit 1
}
[ -n "$out" ] && [ -n "$kernel" ] && [ -n "$initrd" ] && [ $# -gt 0 ] ||
	die "usage: mkusb.sh -o OUT.img -k VMLINUZ -i INITRAMFS [-a 'KERNEL ARGS'] [-c 'CONSOLES'] IMAGE.asr... (make initramfs builds the kernel and initramfs; asr imagescan the images)"
for f in "$kernel" "$initrd" "$@"; do [ -f "$f" ] || die "$f: no such file"; done
for img in "$@"; do
	case $img in *.asr) ;; *) die "$img: not a prepared image (*.asr); make one with asr imagescan" ;; esac
	[ "$(head -c 6 "$img")" = ASRIMG ] || die "$img: not a prepared image (no ASRIMG header); make one with asr imagescan"
done
for tool in grub-mkimage:grub-common sgdisk:gdisk mformat:mtools mcopy:mtools mkfs.vfat:dosfstools mkfs.ext4:e2fsprogs; do
	command -v "${tool%%:*}" >/dev/null || die "${tool%%:*} is missing: apt-get install ${tool#*:}"
done
[ -f /usr/lib/grub/i386-pc/boot.img ] || die "GRUB for BIOS is missing: apt-get install grub-pc-bin"
# Secure Boot: the firmware checks shim (Microsoft's signature), shim checks
# GRUB and GRUB, through shim, the kernel (Debian's signatures). The
# initramfs and the kernel's command line are not checked by anyone.
shim=${ASR_USB_SHIM-/usr/lib/shim/shimx64.efi.signed}
signedgrub=${ASR_USB_GRUB_SIGNED-/usr/lib/grub/x86_64-efi-signed/grubx64.efi.signed}
signed=0
if [ "$shim" != none ] && [ "$signedgrub" != none ] && [ -f "$shim" ] && [ -f "$signedgrub" ]; then
	signed=1
else
	[ -d /usr/lib/grub/x86_64-efi ] || die "GRUB for UEFI is missing: apt-get install grub-efi-amd64-bin (or shim-signed and grub-efi-amd64-signed, for Secure Boot)"
fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
mib() { stat -c %s "$@" | awk '{ s += $1 } END { printf "%d\n", (s + 1048575) / 1048576 }'; }

# The FAT volume's serial number, for GRUB to find its own partition.
serial=$(od -An -N4 -tx4 /dev/urandom | tr -d ' ')
uuid="${serial:0:4}-${serial:4:4}"
uuid=${uuid^^}
cat >"$tmp/early.cfg" <<CFG
search --no-floppy --fs-uuid --set=root $uuid
set prefix=(\$root)/boot/grub
CFG
mods="part_gpt fat ext2 search search_fs_uuid normal linux echo serial terminal configfile test"
grub-mkimage -O i386-pc -o "$tmp/core.img" -c "$tmp/early.cfg" -p /boot/grub biosdisk $mods
if [ $signed = 1 ]; then
	# Debian's signed GRUB has its modules built in and finds
	# /boot/grub/grub.cfg on the partition it was loaded from.
	cp "$shim" "$tmp/BOOTX64.EFI"
	cp "$signedgrub" "$tmp/grubx64.efi"
else
	grub-mkimage -O x86_64-efi -o "$tmp/BOOTX64.EFI" -c "$tmp/early.cfg" -p /boot/grub $mods
fi
[ "$(stat -c %s "$tmp/core.img")" -le $((1024 * 1024)) ] || die "core.img is larger than its 1 MiB partition"

cat >"$tmp/grub.cfg" <<CFG
search --no-floppy --fs-uuid --set=root $uuid
serial --unit=0 --speed=115200
terminal_input serial console
terminal_output serial console
set timeout=3
menuentry "asr: restore this machine's internal disk from the stick (erases it)" {
	echo "Loading the asr imaging appliance..."
	linux /asr/vmlinuz $consoles asr.source=label:ASRDATA asr.after=poweroff $append
	initrd /asr/initramfs.cpio.gz
}
CFG

# Sizes in MiB: room to spare in the ESP for a bigger kernel later.
efi=("$tmp/BOOTX64.EFI")
[ $signed = 0 ] || efi+=("$tmp/grubx64.efi")
esp=$(($(mib "$kernel" "$initrd" "${efi[@]}") + 16))
[ $esp -ge 40 ] || esp=40
data=$(($(mib "$@") * 105 / 100 + 16))
total=$((1 + 1 + esp + data + 1))

mkfs.vfat -C -n ASRBOOT -i "$serial" "$tmp/esp.img" $((esp * 1024)) >/dev/null
export MTOOLS_SKIP_CHECK=1
mmd -i "$tmp/esp.img" ::/EFI ::/EFI/BOOT ::/boot ::/boot/grub ::/asr
mcopy -i "$tmp/esp.img" "$tmp/BOOTX64.EFI" ::/EFI/BOOT/BOOTX64.EFI
[ $signed = 0 ] || mcopy -i "$tmp/esp.img" "$tmp/grubx64.efi" ::/EFI/BOOT/grubx64.efi
mcopy -i "$tmp/esp.img" "$tmp/grub.cfg" ::/boot/grub/grub.cfg
mcopy -i "$tmp/esp.img" "$kernel" ::/asr/vmlinuz
mcopy -i "$tmp/esp.img" "$initrd" ::/asr/initramfs.cpio.gz

mkdir "$tmp/data"
for img in "$@"; do
	[ ! -e "$tmp/data/$(basename "$img")" ] || die "two images named $(basename "$img"): the appliance chooses by file name (asr.image=)"
	cp --reflink=auto "$img" "$tmp/data/"
done
# No metadata_csum: older kernels and tools read it too. -E root_owner:
# the images belong to root whoever builds the stick.
mkfs.ext4 -q -F -L ASRDATA -O ^metadata_csum -E root_owner=0:0 -d "$tmp/data" "$tmp/data.img" "${data}M" >/dev/null

rm -f "$out"
truncate -s "${total}M" "$out"
sgdisk -o \
	-n 1:2048:+1M -t 1:EF02 -c 1:"BIOS boot" \
	-n 2:0:+${esp}M -t 2:EF00 -c 2:"EFI system" \
	-n 3:0:+${data}M -t 3:8300 -c 3:ASRDATA \
	"$out" >/dev/null
start() { sgdisk -i "$1" "$out" | awk '/^First sector/ {print $3}'; }
dd if="$tmp/core.img" of="$out" bs=512 seek="$(start 1)" conv=notrunc status=none
dd if="$tmp/esp.img" of="$out" bs=512 seek="$(start 2)" conv=notrunc status=none
dd if="$tmp/data.img" of="$out" bs=512 seek="$(start 3)" conv=notrunc status=none

# BIOS: GRUB's boot.img in the MBR's code area (the protective MBR's
# partition table after byte 446 stays), pointed at core.img; core.img's
# first sector loads the rest of it, as grub-bios-setup would set up.
core=$(start 1)
sectors=$((($(stat -c %s "$tmp/core.img") + 511) / 512))
dd if=/usr/lib/grub/i386-pc/boot.img of="$out" bs=440 count=1 conv=notrunc status=none
le() { # le VALUE BYTES: VALUE little-endian
	local v=$1 n=$2 i
	for ((i = 0; i < n; i++)); do printf "\\x$(printf %02x $(((v >> (8 * i)) & 255)))"; done
}
le "$core" 8 | dd of="$out" bs=1 seek=$((0x5c)) conv=notrunc status=none
# core.img's blocklist, at the end of its first sector: start, length, segment.
{ le $((core + 1)) 8; le $((sectors - 1)) 2; le $((0x820)) 2; } |
	dd of="$out" bs=1 seek=$((core * 512 + 500)) conv=notrunc status=none

uefi="UEFI: unsigned GRUB (Secure Boot off)"
[ $signed = 0 ] || uefi="UEFI: signed shim and GRUB (Secure Boot)"
echo "mkusb: $out: $total MiB (boot $esp MiB, data $data MiB, $uefi): $(cd "$tmp/data" && ls | paste -sd' ')"
