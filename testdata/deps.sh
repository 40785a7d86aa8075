#!/bin/bash
# Installs what asr's tests, demo and benchmarks need on Debian, as root.
# Quick when everything is there already.
set -euo pipefail
need=()
for pair in losetup:mount partx:util-linux sfdisk:fdisk sgdisk:gdisk mkfs.ext4:e2fsprogs \
	mkfs.vfat:dosfstools bmaptool:bmap-tools zstd:zstd xz:xz-utils gzip:gzip \
	python3:python3 rsync:rsync nginx:nginx-light ip:iproute2 nft:nftables curl:curl udp-sender:udpcast avahi-daemon:avahi-daemon avahi-browse:avahi-utils unshare:util-linux \
	qemu-system-x86_64:qemu-system-x86 dnsmasq:dnsmasq-base mcopy:mtools update-ca-certificates:ca-certificates; do
	cmd=${pair%%:*} pkg=${pair#*:}
	command -v "$cmd" >/dev/null 2>&1 || [ -x "/usr/sbin/$cmd" ] || [ -x "/sbin/$cmd" ] || need+=("$pkg")
done
[ -x /usr/bin/time ] || need+=(time) # GNU time: peak memory in the benchmarks
# A kernel with its modules: the appliance's VMs boot it (make initramfs).
compgen -G "/boot/vmlinuz-*" >/dev/null || need+=(linux-image-amd64)
if [ ${#need[@]} -gt 0 ]; then
	echo "deps: installing ${need[*]}"
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq
	# RUNLEVEL=1 keeps the packages' services (nginx) from starting on the host:
	# the tests start their own, inside network namespaces.
	RUNLEVEL=1 apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
gobin=$(go env GOPATH)/bin
if ! command -v staticcheck >/dev/null 2>&1 && [ ! -x "$gobin/staticcheck" ]; then
	echo "deps: installing staticcheck"
	go install honnef.co/go/tools/cmd/staticcheck@v0.8.2
fi
go mod download
