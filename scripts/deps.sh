#!/bin/bash
# Installs what asr's tests, demo and benchmarks need on Debian, as root.
# Quick when everything is there already.
set -euo pipefail
need=()
for pair in losetup:mount partx:util-linux sfdisk:fdisk sgdisk:gdisk mkfs.ext4:e2fsprogs \
	mkfs.vfat:dosfstools bmaptool:bmap-tools b3sum:b3sum zstd:zstd xz:xz-utils gzip:gzip partclone.ext4:partclone openssl:openssl \
	python3:python3 rsync:rsync nginx:nginx-light ip:iproute2 nft:nftables curl:curl udp-sender:udpcast avahi-daemon:avahi-daemon avahi-browse:avahi-utils unshare:util-linux \
	qemu-system-x86_64:qemu-system-x86 dnsmasq:dnsmasq-base mcopy:mtools update-ca-certificates:ca-certificates \
	syslinux:syslinux cpio:cpio dhcpd:isc-dhcp-server minisign:minisign docker-registry:docker-registry chromium:chromium \
	mkfs.xfs:xfsprogs mkfs.btrfs:btrfs-progs mkfs.f2fs:f2fs-tools \
	mkntfs:ntfs-3g mkfs.exfat:exfatprogs mount.exfat-fuse:exfat-fuse xorriso:xorriso pvcreate:lvm2; do
	cmd=${pair%%:*} pkg=${pair#*:}
	command -v "$cmd" >/dev/null 2>&1 || [ -x "/usr/sbin/$cmd" ] || [ -x "/sbin/$cmd" ] || need+=("$pkg")
done
[ -x /usr/bin/time ] || need+=(time) # GNU time: peak memory in the benchmarks
# LVM2 and LUKS volumes in the mapping tests; qemu-img reads the VM disk
# formats (qcow2, VMDK, VHD, VHDX, VDI) imagescan takes as sources.
for pair in pvcreate:lvm2 cryptsetup:cryptsetup-bin qemu-img:qemu-utils; do
	cmd=${pair%%:*} pkg=${pair#*:}
	command -v "$cmd" >/dev/null 2>&1 || [ -x "/usr/sbin/$cmd" ] || [ -x "/sbin/$cmd" ] || need+=("$pkg")
done
# The first-boot test OS (testdata/mkbootos.sh): syslinux's MBR, a static
# busybox (the dynamic one of package busybox cannot run in its initramfs).
[ -r /usr/lib/syslinux/mbr/mbr.bin ] || need+=(syslinux-common)
{ [ -x /usr/bin/busybox ] && ! ldd /usr/bin/busybox >/dev/null 2>&1; } || need+=(busybox-static)
# Netboot: iPXE for PXE ROMs (undionly.kpxe, ipxe.efi) in the example
# configurations; QEMU's NIC ROMs are iPXE too (ipxe-qemu, a dependency of
# qemu-system-x86).
[ -r /usr/lib/ipxe/undionly.kpxe ] || need+=(ipxe)
# The USB toolkit stick (initramfs/mkusb.sh): GRUB for BIOS and UEFI; OVMF boots
# the stick's test VM by UEFI.
command -v grub-mkimage >/dev/null 2>&1 || need+=(grub-common)
[ -f /usr/lib/grub/i386-pc/boot.img ] || need+=(grub-pc-bin)
[ -d /usr/lib/grub/x86_64-efi ] || need+=(grub-efi-amd64-bin)
[ -f /usr/share/OVMF/OVMF_CODE_4M.fd ] || need+=(ovmf)
# Secure Boot (the stick and UEFI netboot, and their VM tests): Debian's
# signed shim and GRUB; sbsigntool's sbattach makes the unsigned kernel the
# tests expect the firmware's chain to refuse. OVMF's Secure Boot build and
# Microsoft's keys (OVMF_CODE_4M.secboot.fd, OVMF_VARS_4M.ms.fd) are ovmf's.
[ -f /usr/lib/shim/shimx64.efi.signed ] || need+=(shim-signed)
[ -f /usr/lib/grub/x86_64-efi-signed/grubnetx64.efi.signed ] || need+=(grub-efi-amd64-signed)
command -v sbattach >/dev/null 2>&1 || need+=(sbsigntool)
# The filesystems bench/fsmap.sh compares (above). HFS+ would need
# mkfs.hfsplus from hfsprogs, which Debian 12 does not ship: the benchmark
# says so and skips it.
command -v script >/dev/null 2>&1 || need+=(bsdutils) # a pty for asr server's live table
# The dashboard's browser test (headless Chromium) and its screenshots: a font.
[ -d /usr/share/fonts/truetype/dejavu ] || need+=(fonts-dejavu-core)
# HFS+: Debian 12 has no hfsprogs (mkfs.hfsplus, fsck.hfsplus); the tests make
# HFS+ volumes with xorriso (above), whose libisofs writes one beside ISO 9660.
# The real-system row of the VM matrix (testdata/mkrealsys.sh): mmdebstrap
# builds a Debian 12 system from the archive.
command -v mmdebstrap >/dev/null 2>&1 || need+=(mmdebstrap)
# A kernel with its modules: the appliance's VMs boot it (make initramfs).
compgen -G "/boot/vmlinuz-*" >/dev/null || need+=(linux-image-amd64)
if [ ${#need[@]} -gt 0 ]; then
	echo "deps: installing ${need[*]}"
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq
	# RUNLEVEL=1 keeps the packages' services (nginx) from starting on the host:
	# the tests start their own, inside network namespaces.
	RUNLEVEL=1 apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
	# isc-dhcp-server is here only for dhcpd, which the tests run in a lab
	# namespace: its service must never serve the host's own networks.
	if [[ " ${need[*]} " == *" isc-dhcp-server "* ]] && command -v systemctl >/dev/null 2>&1; then
		systemctl disable --now isc-dhcp-server.service isc-dhcp-server6.service >/dev/null 2>&1 || true
	fi
	# docker-registry (the CNCF distribution registry) is here for the OCI
	# tests, which start their own with their own config: its service, which
	# the package enables, must not serve the host on port 5000.
	if [[ " ${need[*]} " == *" docker-registry "* ]] && command -v systemctl >/dev/null 2>&1; then
		systemctl disable docker-registry.service >/dev/null 2>&1 || true # works without a running systemd
		systemctl stop docker-registry.service >/dev/null 2>&1 || true
	fi
fi
# Driver firmware for the appliance's initramfs (initramfs/firmware.go):
# r8169's and r8152's rtl_nic/ files (firmware-realtek), bnx2x's
# (firmware-bnx2x), tg3's tigon/ and ice's DDP package (firmware-misc-nonfree).
# Debian ships them in the non-free-firmware component, which this machine's
# apt sources need not enable, and they are left so: apt-get fetches the
# packages through a sources list, lists and cache of its own in a temporary
# directory (verified against the Debian archive key as usual), and dpkg-deb
# unpacks them into a cache that the initramfs build reads. Nothing is
# installed: packages from a component the machine's sources lack would
# never be upgraded, and the machine's own /lib/firmware stays its packages'.
# The build carries only the files its modules name (modinfo -F firmware).
fwcache=/var/cache/asr/firmware
fwpkgs=(firmware-realtek firmware-bnx2x firmware-misc-nonfree)
if [ "$(cat "$fwcache/.packages" 2>/dev/null)" != "${fwpkgs[*]}" ]; then
	echo "deps: fetching ${fwpkgs[*]} (non-free-firmware) into $fwcache"
	# set -e holds in the subshell only when its status is not tested.
	set +e
	(
		set -e
		. /etc/os-release
		tmp=$(mktemp -d)
		trap 'rm -rf "$tmp"' EXIT
		mkdir -p "$tmp/lists/partial" "$tmp/cache/archives/partial" "$tmp/debs" "$tmp/root"
		echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian ${VERSION_CODENAME:-bookworm} non-free-firmware" >"$tmp/sources.list"
		apto=(-o Dir::Etc::SourceList="$tmp/sources.list" -o Dir::Etc::SourceParts=/nonexistent
			-o Dir::State::Lists="$tmp/lists" -o Dir::Cache="$tmp/cache" -o Dir::State::status=/dev/null
			-o APT::Sandbox::User=root)
		apt-get "${apto[@]}" -qq update
		cd "$tmp/debs"
		apt-get "${apto[@]}" -qq download "${fwpkgs[@]}"
		for d in *.deb; do
			dpkg-deb -x "$d" "$tmp/root"
			dpkg-deb -f "$d" Package Version | paste -sd' ' >>"$tmp/root/.versions"
		done
		echo "${fwpkgs[*]}" >"$tmp/root/.packages"
		mkdir -p "$(dirname "$fwcache")"
		rm -rf "$fwcache.old"
		[ ! -e "$fwcache" ] || mv "$fwcache" "$fwcache.old"
		mv "$tmp/root" "$fwcache"
		chmod 755 "$fwcache"
		rm -rf "$fwcache.old"
	)
	fwrc=$?
	set -e
	[ $fwrc -eq 0 ] || echo "deps: could not fetch the driver firmware from non-free-firmware: the initramfs will lack it (see initramfs/firmware.go)" >&2
fi
gobin=$(go env GOPATH)/bin
if ! command -v staticcheck >/dev/null 2>&1 && [ ! -x "$gobin/staticcheck" ]; then
	echo "deps: installing staticcheck"
	go install honnef.co/go/tools/cmd/staticcheck@v0.8.2
fi
go mod download
