#!/bin/bash
# bench/fsmap.sh: filesystem-aware imaging on every filesystem asr maps,
# asr against partclone piped through zstd (what Clonezilla and FOG store).
#
# For each filesystem (BENCH_FSMAP_FS: ext4 fat32 ntfs xfs btrfs exfat
# hfsplus f2fs lvm; lvm is an LVM2 physical volume holding one ext4 logical
# volume), the same disk: a file of BENCH_FSMAP_SIZE (1G) first filled with
# random bytes, so that the free space the filesystem leaves holds old data,
# then formatted by the filesystem's own mkfs (without discard) and filled
# to about BENCH_FSMAP_FILL (30) percent with one tree of files (random,
# text and small files), written without kernel mounts where the tools can:
# mkfs.ext4 -d, mtools, ntfs-3g and exfat-fuse (FUSE), mkfs.xfs -p
# protofile, mkfs.btrfs --rootdir, sload.f2fs. HFS+: Debian 12 has no
# mkfs.hfsplus and no fsck.hfsplus (hfsprogs is not packaged), so xorriso
# (libisofs) writes the tree and, beside it, a file of old random data that
# fills the disk to BENCH_FSMAP_SIZE; testdata/hfsplus_grow.py makes that
# volume mountable read-write, and Linux's own hfsplus, in a QEMU guest
# booting Debian's kernel (testdata/hfsplus-vm.sh), deletes the old file:
# its data is the free space's old data.
#
# Measured, interleaved (every run does every filesystem and contender in
# turn), BENCH_RUNS (5) runs, medians, warm and cold cache (BENCH_FSMAP_CACHE:
# "warm cold"; cold drops the page cache before each step):
#   scan     partclone.FS -c -f 0 -s DEV -o - | zstd -T0    vs   asr imagescan
#            (image size and time)
#   restore  zstd -dc | partclone.restore -f 0               vs   asr restore,
#            with and without verification (time, to the final sync)
# partclone runs with -f 0: its default refreshes progress every 2 seconds
# and rounds its run up to that (issue 15, item 5). The LVM disk is imaged
# whole by asr (its volume map, then ext4 inside) and by partclone.ext4 from
# the logical volume's extent (a linear LV: one range of the disk), restored
# to the same range of the target. Every restore goes onto one loop device,
# discarded first; after each contender's first restore of a filesystem,
# the filesystem's checker must pass and, where it can be mounted
# (kernel, FUSE, mtools), its files must equal the tree written. HFS+ has
# no checker here (no fsck.hfsplus in Debian 12): the guest's kernel mounts
# the restored volume and hashes every file, which must equal the tree
# written. The HFS+ disk's cache key does not cover testdata/hfsplus_*:
# delete BENCH_DIR's disk-hfsplus-* after changing them.
#
# The small files are pieces of one 1.4 MB pool of text, so the same bytes
# recur more than 1 MiB apart: the compression window decides much of the
# image size (asr's 1 MiB chunks, each its own zstd frame, were 8-16% larger
# than partclone | zstd -T0 here; imagescan's 8 MiB chunks are smaller).
#
# Settings: BENCH_DIR (/var/tmp/asr-bench), BENCH_FSMAP_SIZE (1G),
# BENCH_FSMAP_FILL (30), BENCH_RUNS (5), BENCH_FSMAP_FS, BENCH_FSMAP_CACHE.
# Exit status 1 if any step fails or restores a wrong filesystem; targets
# missed are printed as MISSED but do not fail the script.
set -euo pipefail
. "$(dirname -- "${BASH_SOURCE[0]}")/lib.sh"
bench_init bench-fsmap
dir=${BENCH_DIR:-/var/tmp/asr-bench}/fsmap
size_arg=${BENCH_FSMAP_SIZE:-1G}
fill=${BENCH_FSMAP_FILL:-30}
runs=${BENCH_RUNS:-5}
fslist=${BENCH_FSMAP_FS:-ext4 fat32 ntfs xfs btrfs exfat hfsplus f2fs lvm}
caches=${BENCH_FSMAP_CACHE:-warm cold}

positive BENCH_RUNS "$runs"
positive BENCH_FSMAP_FILL "$fill"
[ "$fill" -le 90 ] || usage_die "BENCH_FSMAP_FILL must be at most 90"
for c in $caches; do case $c in warm | cold) ;; *) usage_die "BENCH_FSMAP_CACHE: warm and/or cold, not $c" ;; esac; done
need "loop devices, mkfs, drop_caches" partclone.restore zstd losetup blkdiscard unshare openssl sha256sum numfmt awk
size=$(numfmt --from=iec "$size_arg") || usage_die "BENCH_FSMAP_SIZE $size_arg is not a size"
[ "$size" -ge $((512 << 20)) ] || usage_die "BENCH_FSMAP_SIZE must be at least 512M (mkfs.xfs wants more than 300 MB; the benchmark is meant for 1G or more)"
lock "$dir"
mkdir -p "$dir/logs" "$dir/work"
work=$dir/work
target=$dir/target.img
loops=() mnts=() making=""
export LVM_SUPPRESS_FD_WARNINGS=1
cleanup() {
	local l m
	if [ -n "$making" ]; then
		echo "bench-fsmap: making a disk failed; the end of $making:" >&2
		tail -n 20 "$making" >&2
		making=""
	fi
	for m in "${mnts[@]}"; do umount "$m" 2>/dev/null || true; rmdir "$m" 2>/dev/null || true; done
	# Only the loop devices this script attached, by name.
	for l in "${loops[@]}"; do losetup -d "$l" 2>/dev/null || true; done
	rm -f "$target" "$work"/*.asr "$work"/*.pc.zst
	return 0
}
at_exit cleanup
# attach VAR FILE [losetup options]: VAR names the new loop device, which is
# remembered for cleanup (not printed: in a $(...) subshell the list would
# be lost, and the device with it).
attach() {
	local _var=$1 _f=$2 _dev
	shift 2
	_dev=$(losetup --show -f "$@" "$_f")
	loops+=("$_dev")
	printf -v "$_var" %s "$_dev"
}
detach() { # LOOP
	losetup -d "$1"
	local keep=() l
	for l in "${loops[@]}"; do [ "$l" = "$1" ] || keep+=("$l"); done
	loops=("${keep[@]}")
}
mkmnt() { # VAR: a new mount point, remembered for cleanup
	local _m
	_m=$(mktemp -d /tmp/asr-bench-fsmap.XXXXXX)
	mnts+=("$_m")
	printf -v "$1" %s "$_m"
}
# fuse_umount MNT: unmounts a FUSE filesystem and waits (up to 60 s) for its
# daemon to finish writing and let go of the device.
fuse_umount() {
	local i
	umount "$1"
	for ((i = 0; i < 600; i++)); do
		pgrep -f -- " $1\$" >/dev/null || return 0
		sleep 0.1
	done
	echo "bench-fsmap: the FUSE daemon of $1 did not exit" >&2
	return 1
}

# --- what each filesystem needs --------------------------------------------------

# pc_of FS: partclone's name for it.
pc_of() {
	case $1 in
	fat32) echo fat32 ;; hfsplus) echo hfsp ;; lvm) echo ext4 ;; *) echo "$1" ;;
	esac
}
# tools_of FS: the commands making, imaging and checking it need.
tools_of() {
	case $1 in
	ext4) echo mkfs.ext4 e2fsck partclone.ext4 ;;
	fat32) echo mkfs.fat fsck.fat mcopy partclone.fat32 ;;
	ntfs) echo mkntfs ntfsfix ntfs-3g partclone.ntfs ;;
	xfs) echo mkfs.xfs xfs_repair partclone.xfs ;;
	btrfs) echo mkfs.btrfs btrfs partclone.btrfs ;;
	exfat) echo mkfs.exfat fsck.exfat mount.exfat-fuse partclone.exfat ;;
	hfsplus) echo xorriso python3 qemu-system-x86_64 busybox cpio partclone.hfsp ;;
	f2fs) echo mkfs.f2fs sload.f2fs fsck.f2fs partclone.f2fs ;;
	lvm) echo pvcreate vgcreate lvcreate pvs vgs lvs mkfs.ext4 e2fsck partclone.ext4 ;;
	*) return 1 ;;
	esac
}
# missing FS: the first tool FS needs that is not installed, or nothing.
missing() {
	local c
	for c in $(tools_of "$1"); do
		command -v "$c" >/dev/null 2>&1 || { echo "$c"; return; }
	done
}

# --- the files ---------------------------------------------------------------------

# rand NAME N: N pseudo-random bytes that depend only on NAME (AES-CTR over
# zeros: fast, and the same on every run).
rand() {
	local key iv
	key=$(printf 'asr-bench-fsmap/%s' "$1" | sha256sum)
	iv=$(printf 'iv/%s' "$1" | sha256sum)
	head -c "$2" /dev/zero | openssl enc -aes-256-ctr -nosalt -K "${key:0:64}" -iv "${iv:0:32}"
}

# make_tree DIR BYTES: files of about BYTES in all: 45% random (media,
# archives), 30% text (logs), 25% small files of 1-16 KiB, 64 a folder.
make_tree() {
	local d=$1 budget=$2 rb tb sb i n
	rb=$((budget * 45 / 100)) tb=$((budget * 30 / 100))
	sb=$((budget - rb - tb))
	mkdir -p "$d/media" "$d/logs" "$d/src"
	i=0
	while [ "$rb" -ge 4096 ]; do
		n=$(((1 + i % 8) << 20))
		[ "$n" -le "$rb" ] || n=$rb
		rand "blob$i" "$n" >"$d/media/blob$i.bin"
		rb=$((rb - n)) i=$((i + 1))
	done
	i=0
	while [ "$tb" -ge 4096 ]; do
		n=$(((64 + i * 37 % 960) << 10))
		[ "$n" -le "$tb" ] || n=$tb
		awk -v n="$n" -v w="$i" 'BEGIN {
			while (c < n) {
				s = sprintf("%010d INFO worker=%d request handled ok in %d ms\n", c, w % 7, c % 997)
				if (c + length(s) > n) s = substr(s, 1, n - c)
				printf "%s", s; c += length(s)
			}
		}' >"$d/logs/app$i.log"
		tb=$((tb - n)) i=$((i + 1))
	done
	rand pool $((1 << 20)) | base64 -w 0 | awk -v root="$d/src" -v budget="$sb" '
		{ pool = pool $0 }
		END {
			len = length(pool); lcg = 20231114
			for (i = 0; budget > 0; i++) {
				if (i % 64 == 0) { dir = sprintf("%s/d%03d", root, int(i / 64)); system("mkdir -p " dir) }
				lcg = (lcg * 16807) % 2147483647; n = 1024 + lcg % 15360
				lcg = (lcg * 16807) % 2147483647; off = lcg % (len - n)
				f = sprintf("%s/f%05d.txt", dir, i)
				printf "%s", substr(pool, off + 1, n) > f
				close(f)
				budget -= n
			}
		}'
}

# tree_hash DIR: one hash over every file's path and content.
tree_hash() {
	(cd "$1" && find . -type f -print0 | LC_ALL=C sort -z | xargs -0 sha256sum | sha256sum | cut -c1-64)
}

# protofile DIR: mkfs.xfs -p's description of DIR (regular files and
# folders), which it copies in without mounting anything. find lists each
# folder before its contents; a folder's list ends with "$".
protofile() {
	printf '/dev/null\n0 0\nd--755 0 0\n'
	(cd "$1" && find . -mindepth 1 \( -type d -printf 'd %P\n' -o -type f -printf 'f %P\n' \)) | awk -v root="$1" '
		function ind(k,  s) { s = ""; while (k-- > 0) s = s " "; return s }
		{
			p = substr($0, 3); n = split(p, part, "/")
			while (open >= n) { print ind(open) "$"; open-- }
			if (substr($0, 1, 1) == "d") { print ind(n) part[n] " d--755 0 0"; open = n }
			else print ind(n) part[n] " ---644 0 0 " root "/" p
		}
		END { while (open > 0) { print ind(open) "$"; open-- }; print "$" }'
}

# --- the disks -----------------------------------------------------------------------

# make_disk FS IMG TREE: IMG, SIZE bytes of old random data, then FS made
# on it and TREE copied in. Writes IMG.lv (the LV's offset and size) for lvm.
make_disk() {
	local fs=$1 img=$2 tree=$3 l m vg
	rand "old-$fs" "$size" >"$img"
	case $fs in
	ext4) mkfs.ext4 -q -F -E nodiscard -d "$tree" "$img" ;;
	fat32)
		mkfs.fat -F 32 "$img" >/dev/null
		mcopy -s -Q -i "$img" "$tree"/* ::/
		;;
	ntfs | exfat)
		attach l "$img"
		if [ "$fs" = ntfs ]; then mkntfs -Q -q "$l"; else mkfs.exfat "$l" >/dev/null; fi
		mkmnt m
		if [ "$fs" = ntfs ]; then ntfs-3g "$l" "$m"; else mount.exfat-fuse "$l" "$m"; fi
		cp -r "$tree"/. "$m"/
		fuse_umount "$m"
		detach "$l"
		;;
	xfs)
		protofile "$tree" >"$img.proto"
		mkfs.xfs -q -K -f -p "$img.proto" "$img"
		rm -f "$img.proto"
		;;
	btrfs) mkfs.btrfs -q -K -f --rootdir "$tree" "$img" >/dev/null ;;
	f2fs)
		mkfs.f2fs -q -f -t 0 "$img" >/dev/null
		sload.f2fs -f "$tree" -t / "$img" >/dev/null
		;;
	hfsplus)
		# The old data is a file as big as the disk less the tree and
		# 24 MiB (the catalog, and room the grow needs), which the guest
		# deletes. The random bytes written first are not kept: the
		# volume is cut out of xorriso's image.
		local fill_bytes
		fill_bytes=$((size - $(du -sb "$tree" | cut -f1) - (24 << 20)))
		rand "old-$fs-file" "$fill_bytes" >"$img.old"
		xorriso -as mkisofs -quiet -hfsplus -V ASRBENCH -graft-points -o "$img.iso" /="$tree" /old.bin="$img.old"
		rm -f "$img.old"
		python3 "$root/testdata/hfsplus_grow.py" "$img.iso" "$img" "$size"
		rm -f "$img.iso"
		printf 'set -e\nmount -t hfsplus /dev/vda /mnt\nrm /mnt/old.bin\numount /mnt\n' >"$img.sh"
		bash "$root/testdata/hfsplus-vm.sh" "$img" "$img.sh"
		rm -f "$img.sh"
		;;
	lvm)
		# LVM's metadata only (--driverloaded n): the volume is never
		# activated, so the machine needs no device-mapper (this one has
		# none) and no volume group of ours appears on it. A linear LV of
		# one segment is one range of the disk: ext4 goes there through a
		# loop device.
		attach l "$img"
		vg=asrbench$$
		pvcreate -q -y -ff "$l" >/dev/null
		vgcreate -q "$vg" "$l" >/dev/null
		lvcreate --driverloaded n -q -y -Wn -Zn -an -l 100%FREE -n data "$vg" >/dev/null
		local pe_start ext first lvsize lv
		pe_start=$(pvs --noheadings --nosuffix --units b -o pe_start "$l" | tr -d ' ')
		ext=$(vgs --noheadings --nosuffix --units b -o vg_extent_size "$vg" | tr -d ' ')
		first=$(lvs --noheadings -o seg_pe_ranges "$vg/data" | sed 's/.*:\([0-9]*\)-.*/\1/' | tr -d ' ')
		lvsize=$(lvs --noheadings --nosuffix --units b -o lv_size "$vg/data" | tr -d ' ')
		detach "$l"
		attach lv "$img" -o "$((pe_start + first * ext))" --sizelimit "$lvsize"
		mkfs.ext4 -q -F -E nodiscard -d "$tree" "$lv"
		detach "$lv"
		echo "$((pe_start + first * ext)) $lvsize" >"$img.lv"
		;;
	esac
}

# --- the checks ----------------------------------------------------------------------

# fsck_dev FS DEV: the filesystem's own checker, read-only.
fsck_dev() {
	case $1 in
	ext4 | lvm) e2fsck -fn "$2" ;;
	fat32) fsck.fat -n "$2" ;;
	ntfs) ntfsfix -n "$2" ;;
	xfs) xfs_repair -n "$2" ;;
	btrfs) btrfs check --readonly "$2" ;;
	exfat) fsck.exfat -n "$2" ;;
	hfsplus) true ;; # no fsck.hfsplus on Debian 12: files_of's guest mount is the check
	f2fs) fsck.f2fs "$2" ;; # without -f or -a it only reads
	esac
}

# files_of FS DEV: tree_hash of the files on DEV, or "-" when this machine
# cannot read them (no kernel module, no FUSE driver).
files_of() {
	local fs=$1 dev=$2 m h=-
	mkmnt m
	case $fs in
	fat32)
		mcopy -s -Q -n -i "$dev" ::/ "$m"/ && h=$(tree_hash "$m")
		rm -rf "${m:?}"/*
		echo "$h"
		return
		;;
	ntfs) ntfs-3g -o ro "$dev" "$m" 2>/dev/null && h=ok ;;
	exfat) mount.exfat-fuse -o ro "$dev" "$m" 2>/dev/null && h=ok ;;
	lvm) mount -t ext4 -o ro,noload "$dev" "$m" 2>/dev/null && h=ok ;;
	ext4) mount -t ext4 -o ro,noload "$dev" "$m" 2>/dev/null && h=ok ;;
	hfsplus)
		# The guest's kernel mounts it and hashes its files as tree_hash does.
		local s
		s=$(mktemp /tmp/asr-bench-fsmap.XXXXXX)
		printf '%s\n' 'set -e' 'mount -t hfsplus -o ro /dev/vda /mnt' \
			'(cd /mnt && find . -type f -print0 | sort -z | xargs -0 sha256sum | sha256sum | cut -c1-64)' 'umount /mnt' >"$s"
		h=$(bash "$root/testdata/hfsplus-vm.sh" "$dev" "$s") || h=-
		rm -f "$s"
		rmdir "$m"
		echo "$h"
		return
		;;
	*) mount -t "$fs" -o ro "$dev" "$m" 2>/dev/null && h=ok ;;
	esac
	if [ "$h" = ok ]; then
		h=$(tree_hash "$m")
		case $fs in ntfs | exfat) fuse_umount "$m" ;; *) umount "$m" ;; esac
	fi
	echo "$h"
}

# private_files_of FS DEV: files_of in a mount namespace of its own. This
# machine's mounts are private, not shared: a namespace another program
# creates while the check's mount exists (a test lab's dnsmasq, nginx) keeps
# a copy of it, which holds DEV after our umount, and every later exclusive
# open of it (asr restore's) fails as "in use". Mounted in a namespace of its
# own, the mount is in no other, and goes with the namespace.
private_files_of() {
	# HFS+ is mounted in a guest, not here.
	if [ "$1" = hfsplus ]; then
		files_of "$1" "$2"
		return
	fi
	unshare -m --propagation private bash -c "set -u; $(declare -f files_of tree_hash fuse_umount); made=; mkmnt() { made=\$(mktemp -d /tmp/asr-bench-fsmap.XXXXXX); printf -v \"\$1\" %s \"\$made\"; }; files_of \"\$1\" \"\$2\"; rmdir \"\$made\"" files_of "$1" "$2"
}

# --- setup -----------------------------------------------------------------------------

# The files and disks are kept between runs, keyed by the code that makes
# them (not the whole script: a change to the timing or report code reuses
# them).
key=$(declare -f rand make_tree protofile make_disk | sha256sum | cut -c1-12)
tree=$dir/tree-$size_arg-$fill-$key
if [ ! -f "$tree.done" ]; then
	rm -rf "$dir"/tree-* "$dir"/disk-*
	echo "bench-fsmap: making the files ($fill% of $size_arg)"
	make_tree "$tree" $((size * fill / 100))
	touch "$tree.done"
fi
want=$(tree_hash "$tree")
tree_bytes=$(du -sb "$tree" | cut -f1)

fss=()
declare -A skipped=() src=() psrc=() poff=() plen=() method=()
for fs in $fslist; do
	tools_of "$fs" >/dev/null || usage_die "BENCH_FSMAP_FS: unknown filesystem $fs (ext4 fat32 ntfs xfs btrfs exfat hfsplus f2fs lvm)"
	if m=$(missing "$fs") && [ -n "$m" ]; then
		why="$m not found: scripts/deps.sh installs it"
		skipped[$fs]=$why
		echo "bench-fsmap: $fs skipped: $why"
		continue
	fi
	img=$dir/disk-$fs-$size_arg-$fill-$key.img
	if [ ! -f "$img.done" ]; then
		echo "bench-fsmap: making the $fs disk ($size_arg, old data in free space)"
		# Not in an || list: set -e must stop make_disk at its first failure.
		making=$dir/logs/mk-$fs.log
		make_disk "$fs" "$img" "$tree" >"$making" 2>&1
		making=""
		touch "$img.done"
	fi
	fss+=("$fs")
	attach "src[$fs]" "$img" -r
	if [ "$fs" = lvm ]; then
		read -r "poff[$fs]" "plen[$fs]" <"$img.lv"
		attach "psrc[$fs]" "$img" -r -o "${poff[$fs]}" --sizelimit "${plen[$fs]}"
	else
		poff[$fs]=0 plen[$fs]=$size psrc[$fs]=${src[$fs]}
	fi
done
[ ${#fss[@]} -gt 0 ] || die "no filesystem can be made here (see above)"

rm -f "$target"
truncate -s "$size" "$target"
attach tloop "$target"
declare -A ptgt=()
for fs in "${fss[@]}"; do
	ptgt[$fs]=$tloop
	if [ "$fs" = lvm ]; then attach "ptgt[$fs]" "$target" -o "${poff[$fs]}" --sizelimit "${plen[$fs]}"; fi
done

# --- runs --------------------------------------------------------------------------------

contenders=(scan-partclone scan-asr restore-partclone restore-asr-noverify restore-asr-verify)
declare -A times=() sizes=() checked=() verified=()
failed=0 notes=()
fail() { echo "bench-fsmap: $*" >&2; failed=1; }

# discard_target: discards the target, waiting up to 10 s while something
# else still holds it (udev probing it after the last close, a mount of the
# check just released): blkdiscard without -f opens it exclusively, as asr
# restore does, and asr would refuse a target in use.
discard_target() {
	local i
	for ((i = 0; i < 100; i++)); do
		blkdiscard "$tloop" 2>/dev/null && return 0
		sleep 0.1
	done
	blkdiscard -f "$tloop" 2>/dev/null || true
}

# step FS CACHE NAME RUN: one timed step.
step() {
	local fs=$1 cache=$2 name=$3 run=$4 log t0 t1 ok=1 pc
	log=$dir/logs/$fs-$cache-$name-$run.log
	pc=$(pc_of "$fs")
	case $name in restore-*) discard_target ;; esac
	[ "$cache" = cold ] && drop_caches
	t0=$(now)
	case $name in
	scan-partclone) { "partclone.$pc" -c -f 0 -s "${psrc[$fs]}" -o - -L "$log.pc" 2>"$log" | zstd -q -T0 -f -o "$work/$fs.pc.zst"; } || ok=0 ;;
	scan-asr) "$asr" imagescan --source "${src[$fs]}" --output "$work/$fs.asr" --overwrite >"$log" 2>&1 || ok=0 ;;
	restore-partclone) { zstd -q -dc "$work/$fs.pc.zst" | partclone.restore -f 0 -s - -o "${ptgt[$fs]}" -L "$log.pc" >"$log" 2>&1; } || ok=0 ;;
	restore-asr-noverify) "$asr" restore --source "$work/$fs.asr" --target "$tloop" --erase --noprompt --noverify >"$log" 2>&1 || ok=0 ;;
	restore-asr-verify) "$asr" restore --source "$work/$fs.asr" --target "$tloop" --erase --noprompt >"$log" 2>&1 || ok=0 ;;
	esac
	case $name in restore-*) sync ;; esac
	t1=$(now)
	if [ "$ok" = 0 ]; then
		fail "$fs $cache $name (run $run) failed; see $log"
		return
	fi
	times[$fs/$cache/$name]+="$(elapsed "$t0" "$t1") "
	case $name in
	scan-partclone) sizes[$fs/partclone]=$(stat -c %s "$work/$fs.pc.zst") ;;
	scan-asr)
		sizes[$fs/asr]=$(stat -c %s "$work/$fs.asr")
		method[$fs]=$(grep -o 'by [^:]*' "$log" | head -n 1 | cut -c4-)
		[ -n "${method[$fs]}" ] || method[$fs]="not mapped"
		;;
	restore-*)
		# Once per filesystem and contender: the result must be the filesystem.
		if [ -z "${checked[$fs/$name]:-}" ]; then
			checked[$fs/$name]=1
			if ! fsck_dev "$fs" "${ptgt[$fs]}" >"$log.fsck" 2>&1; then
				# asr's restore must check clean; partclone's is the
				# yardstick, and its flaws are reported, not ours to fail on
				# (partclone.ntfs leaves the backup boot sector unwritten).
				if [ "$name" = restore-partclone ]; then
					notes+=("$fs: after partclone's restore the checker finds problems: $(tail -n 2 "$log.fsck" | tr '\n' ' ')")
				else
					fail "$fs $name: the filesystem's checker finds problems on the restored disk; see $log.fsck"
				fi
			fi
			local got
			got=$(private_files_of "$fs" "${ptgt[$fs]}" 2>/dev/null)
			if [ "$got" = - ] && [ "$fs" = hfsplus ]; then
				# No checker either: nothing would have looked at it.
				fail "$fs $name: the guest could not mount the restored volume and hash its files"
			elif [ "$got" = - ]; then
				verified[$fs]="checker only"
			elif [ "$got" != "$want" ]; then
				fail "$fs $name: the restored files differ from those written"
			else
				verified[$fs]=${verified[$fs]:-"checker, files"}
				[ "$fs" = hfsplus ] && verified[$fs]="files (guest kernel)"
			fi
		fi
		;;
	esac
	printf '  run %d  %-8s %-5s %-22s %8.3f s\n' "$run" "$fs" "$cache" "$name" "$(elapsed "$t0" "$t1")"
}

echo "bench-fsmap: $runs run(s) of ${contenders[*]} on ${fss[*]}, $caches cache, interleaved"
load_start=$(cut -d' ' -f1-3 /proc/loadavg)
for ((r = 1; r <= runs; r++)); do
	for fs in "${fss[@]}"; do
		for cache in $caches; do
			# Warm: the source is read once first, so no run pays for it.
			[ "$cache" = warm ] && cat "$(losetup -nO BACK-FILE "${src[$fs]}")" >/dev/null
			for c in "${contenders[@]}"; do step "$fs" "$cache" "$c" "$r"; done
		done
	done
done

# --- report --------------------------------------------------------------------------------

med() { # KEY: the median of its runs, or "-"
	local v=${times[$1]:-}
	# shellcheck disable=SC2086 # space-separated numbers
	if [ -n "$v" ]; then median $v; else echo -; fi
}
echo
echo "bench-fsmap: each disk $size_arg of old random data, formatted and filled with $(mib "$tree_bytes") of files; medians of $runs run(s)"
echo "bench-fsmap: load average at start $load_start, at end $(cut -d' ' -f1-3 /proc/loadavg), on $(nproc) CPUs"
printf '\n%-8s %-22s %12s %12s %13s  %s\n' "fs" "asr maps it by" "asr MiB" "pc|zstd MiB" "asr/pc size" "restores checked by"
for fs in "${fss[@]}"; do
	a=${sizes[$fs/asr]:-0} p=${sizes[$fs/partclone]:-0}
	ra=-
	[ "$p" -gt 0 ] && ra=$(calc "$a / $p")
	printf '%-8s %-22s %12s %12s %13s  %s\n' "$fs" "${method[$fs]:--}" "$(mib "$a" | cut -d' ' -f1)" "$(mib "$p" | cut -d' ' -f1)" "$ra" "${verified[$fs]:--}"
done
for cache in $caches; do
	printf '\n%-8s %-5s %9s %9s %9s %9s %9s %9s\n' "fs" "cache" "scan pc" "scan asr" "rest. pc" "asr" "asr+ver." "asr/pc"
	for fs in "${fss[@]}"; do
		sp=$(med "$fs/$cache/scan-partclone") sa=$(med "$fs/$cache/scan-asr")
		rp=$(med "$fs/$cache/restore-partclone") rn=$(med "$fs/$cache/restore-asr-noverify") rv=$(med "$fs/$cache/restore-asr-verify")
		rt=-
		[ "$rp" != - ] && [ "$rn" != - ] && rt=$(calc "$rn / $rp")
		printf '%-8s %-5s %9s %9s %9s %9s %9s %9s\n' "$fs" "$cache" "$sp" "$sa" "$rp" "$rn" "$rv" "$rt"
	done
done
echo "(seconds, medians; scan: making the image; rest.: restore to the final sync; asr: restore --noverify; asr+ver.: with verification)"
for fs in "${!skipped[@]}"; do echo "bench-fsmap: $fs not measured: ${skipped[$fs]}"; done
for n in "${notes[@]}"; do echo "bench-fsmap: note: $n"; done
echo
echo "targets (issue 13), per filesystem:"
for fs in "${fss[@]}"; do
	a=${sizes[$fs/asr]:-0} p=${sizes[$fs/partclone]:-0}
	[ "$p" -gt 0 ] || continue
	rs=$(calc "$a / $p")
	printf '  %-8s %-44s %-6s (%s)\n' "$fs" "asr image <= partclone | zstd" "$(verdict "$rs" "<=" 1)" "$rs"
	for cache in $caches; do
		rp=$(med "$fs/$cache/restore-partclone") rn=$(med "$fs/$cache/restore-asr-noverify")
		[ "$rp" != - ] && [ "$rn" != - ] || continue
		rt=$(calc "$rn / $rp")
		printf '  %-8s %-44s %-6s (%s)\n' "$fs" "asr restore (noverify) < partclone, $cache" "$(verdict "$rt" "<" 1)" "$rt"
	done
done
[ "$failed" = 0 ] || die "some steps failed (above)"
