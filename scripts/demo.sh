#!/bin/bash
# make demo: the main job end to end on built-in defaults. Makes a sample
# GPT/ext4 disk, scans it into a prepared image, signs it with a minisign key,
# restores that image onto a loop device with erase and verification, trusting
# only that key, and checks the bytes. Then VMs
# with empty disks netboot the appliance, restore a small bootable OS over
# multicast, and boot it.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
asr=$root/bin/asr
work=${DEMO_DIR:-$root/out/demo}
size=${DEMO_SIZE:-256M}
mkdir -p "$work"

loopdev=""
cleanup() { if [ -n "$loopdev" ]; then losetup -d "$loopdev" 2>/dev/null || true; fi; }
trap cleanup EXIT

step() { printf '\n== %s\n' "$*"; }

if [ "$(id -u)" != 0 ]; then
	echo "make demo needs root (it attaches a loop device)" >&2
	exit 1
fi

step "1. A sample disk: $size, GPT, one ext4 partition 40% full"
if [ ! -s "$work/sample.img" ]; then
	"$root/testdata/mkdisk.sh" "$work/sample.img" "$size" 40
else
	echo "reusing $work/sample.img"
fi

step "2. asr imagescan: the disk becomes a prepared image"
"$asr" imagescan --source "$work/sample.img" --output "$work/sample.asr" --overwrite

step "2b. asr sign: a minisign key pair (no password, for the demo) signs the image"
if [ ! -s "$work/demo.key" ]; then
	minisign -G -W -p "$work/demo.pub" -s "$work/demo.key" >/dev/null
fi
"$asr" sign --source "$work/sample.asr" --key "$work/demo.key"

step "3. asr info (its signature, checked with the demo key)"
"$asr" info --source "$work/sample.asr" --trusted-key "$work/demo.pub"

step "4. A target disk: a loop device 64 MiB larger than the image, full of old data"
bytes=$(stat -c %s "$work/sample.img")
rm -f "$work/target.img"
truncate -s $((bytes + 64 * 1024 * 1024)) "$work/target.img"
# Old data at the start, so the restore visibly replaces it.
head -c 8M /dev/urandom | dd of="$work/target.img" conv=notrunc status=none
loopdev=$(losetup --show -f "$work/target.img")
echo "target: $loopdev"

step "5. asr restore --erase, with verification, trusting only the demo key"
"$asr" restore --source "$work/sample.asr" --target "$loopdev" --erase --noprompt \
	--trusted-key "$work/demo.pub" | tee "$work/restore.log"
grep -q "Signed by key ID .* (trusted)" "$work/restore.log" || { echo "the restore did not print its trusted signer" >&2; exit 1; }

step "6. Independent check: cmp of the restored range against the sample disk, sgdisk -v"
# The first 1 KiB holds the protective MBR and the GPT header, which asr
# adjusted for the larger disk (its GPT backup now sits at the disk's end).
cmp -i 1024 -n $((bytes - 1024)) "$work/sample.img" "$loopdev"
echo "OK: bytes 1024 to $bytes of $loopdev equal $work/sample.img"
if sgdisk -v "$loopdev" | grep -q "No problems found"; then
	echo "OK: sgdisk -v finds no problems in the GPT on $loopdev (its backup moved to the end of the larger disk)"
else
	sgdisk -v "$loopdev" >&2
	exit 1
fi
printf '\nimage: %s (%s), sample disk: %s\n' "$work/sample.asr" "$(du -h --apparent-size "$work/sample.asr" | cut -f1)" "$work/sample.img"

step "7. The first-boot OS: a 24 MiB bootable disk (syslinux, a kernel, an init that prints a marker), as a prepared image"
"$root/testdata/mkbootos.sh" "$work/firstboot.img" demo
"$asr" imagescan --source "$work/firstboot.img" --output "$work/firstboot.asr" --overwrite

step "8. Zero-touch: ${DEMO_VMS:-3} virtual machines with empty disks boot the appliance from the network (PXE/iPXE), find asr server by DHCP option 224, restore by multicast, verify, reboot, and boot the restored disk"
echo "(QEMU emulation, no KVM: this takes a minute or two)"
echo "asr server serves its dashboard in the lab at http://198.18.0.1:8080/; asr-lab forwards it to 127.0.0.1 (the address is printed below) while the demo runs"
"$root/bin/asr-lab" demo --netboot --image "$work/firstboot.asr" --disk "$work/firstboot.img" \
	--marker "ASR-FIRSTBOOT-OK demo" --vms "${DEMO_VMS:-3}" --dir "$work/lab" --lab "${DEMO_LAB:-asrlab}" \
	--dashboard-port "${DEMO_DASHBOARD_PORT:-0}" --screenshot "$work/dashboard.png"
