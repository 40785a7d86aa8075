#!/bin/bash
# bench/fsmap.sh: filesystem-aware imaging, asr against partclone and bmaptool.
#
# The disk: BENCH_FSMAP_SIZE (2G) with a GPT and one ext4 partition 25% full
# whose free blocks hold old random data (mkdisk.sh OLDPCT 90: the
# filesystem is filled to 90%, the files are deleted, then the real files are
# written), like a disk that has been in use. Zero detection finds almost
# nothing to skip there; only the filesystem's bitmaps know what is free.
#
# In one run, on that disk:
#   asr        imagescan (maps the ext4 bitmaps), restore of the whole disk
#              with and without verification
#   partclone  partclone.ext4 -c of the partition to an image (and the same
#              piped through zstd, as Clonezilla stores it), partclone.ext4 -r
#              back onto the partition
#   bmaptool   bmaptool create (maps the raw file's holes) and copy
# Every restore goes onto the same loop device, discarded and with the page
# cache dropped before each run; after each one the partition must pass
# e2fsck -fn and hold the same files as the source (sha256 of every file).
# Runs are interleaved, BENCH_RUNS (3) of each; medians count.
#
# Settings: BENCH_DIR (/var/tmp/asr-bench), BENCH_FSMAP_SIZE (2G), BENCH_RUNS (3).
# Exit status 1 if any run fails or restores the wrong files; targets missed
# are printed as MISSED but do not fail the script.
set -euo pipefail
. "$(dirname -- "${BASH_SOURCE[0]}")/lib.sh"
bench_init bench-fsmap
mkdisk=$root/testdata/mkdisk.sh
dir=${BENCH_DIR:-/var/tmp/asr-bench}/fsmap
size_arg=${BENCH_FSMAP_SIZE:-2G}
runs=${BENCH_RUNS:-3}

positive BENCH_RUNS "$runs"
need "loop devices, mount, drop_caches" partclone.ext4 bmaptool zstd losetup blkdiscard e2fsck partx mount sha256sum
lock "$dir"
mkdir -p "$dir/logs"
target=$dir/target.img
loops=() mnt=""
cleanup() {
	local rc=0 l
	if [ -n "$mnt" ]; then
		umount "$mnt" 2>/dev/null || true
		rmdir "$mnt" || true
	fi
	# Only the loop devices this script attached, by name.
	for l in "${loops[@]}"; do losetup -d "$l" 2>/dev/null || true; done
	rm -f "$target"
	return "$rc"
}
at_exit cleanup
attach() { # FILE [losetup options]: prints the loop device, remembered for cleanup
	local f=$1 l
	shift
	l=$(losetup --show -f "$@" "$f")
	loops+=("$l")
	echo "$l"
}

# --- the source disk ---------------------------------------------------------
key=$(sha256sum "$mkdisk" | cut -c1-12)
raw=$dir/used-$size_arg-$key.img
if [ -f "$raw" ] && [ -f "$raw.info" ]; then
	echo "bench-fsmap: reusing $raw"
else
	rm -f "$dir"/used-"$size_arg"-*.img "$dir"/used-"$size_arg"-*.img.info
	echo "bench-fsmap: making $raw ($size_arg, 25% used, old data in free space)"
	"$mkdisk" "$raw" "$size_arg" 25 90 >"$raw.info.tmp"
	mv "$raw.info.tmp" "$raw.info"
fi
raw_size=$(stat -c %s "$raw")
read -r pstart psectors < <(partx -g -o START,SECTORS -n 1 "$raw")
poff=$((pstart * 512)) psize=$((psectors * 512))
src=$(attach "$raw" -r -o "$poff" --sizelimit "$psize")

# fs_used DEV: bytes the ext4 filesystem on DEV has allocated (data and metadata).
fs_used() {
	dumpe2fs -h "$1" 2>/dev/null | awk -F: '/^Block count/ { c = $2 } /^Free blocks/ { f = $2 } /^Block size/ { b = $2 } END { printf "%d", (c - f) * b }'
}
# tree DEV: one hash over every file's path, size and content.
tree() {
	mnt=$(mktemp -d /tmp/asr-bench-fsmap.XXXXXX)
	mount -o ro,noload "$1" "$mnt"
	(cd "$mnt" && find . -type f -print0 | sort -z | xargs -0 sha256sum | sha256sum | cut -c1-64)
	umount "$mnt"
	rmdir "$mnt"
	mnt=""
}
used=$(fs_used "$src")
want=$(tree "$src")

# --- images --------------------------------------------------------------------
echo "bench-fsmap: making the images"
t0=$(now)
"$asr" imagescan --source "$raw" --output "$dir/disk.asr" --overwrite >"$dir/logs/imagescan.log" 2>&1 || { cat "$dir/logs/imagescan.log" >&2; die "asr imagescan failed"; }
t1=$(now)
scan_asr=$(elapsed "$t0" "$t1")
# The same with 4 MiB chunks: fewer chunk boundaries for zstd to restart at.
"$asr" imagescan --source "$raw" --output "$dir/disk4m.asr" --chunksize 4194304 --overwrite >"$dir/logs/imagescan4m.log" 2>&1 || die "asr imagescan --chunksize 4194304 failed"
t0=$(now)
partclone.ext4 -q -c -s "$src" -O "$dir/part.pc" -L "$dir/logs/partclone-c.log" >"$dir/logs/partclone-c.out" 2>&1 || die "partclone.ext4 -c failed (see $dir/logs/partclone-c.log)"
t1=$(now)
scan_pc=$(elapsed "$t0" "$t1")
t0=$(now)
partclone.ext4 -q -c -s "$src" -o - -L "$dir/logs/partclone-cz.log" 2>/dev/null | zstd -q -T0 -o "$dir/part.pc.zst" -f || die "partclone.ext4 -c | zstd failed"
t1=$(now)
scan_pcz=$(elapsed "$t0" "$t1")
t0=$(now)
rm -f "$dir/raw.bmap"
bmaptool create "$raw" -o "$dir/raw.bmap" >"$dir/logs/bmap.log" 2>&1 || die "bmaptool create failed"
t1=$(now)
scan_bmap=$(elapsed "$t0" "$t1")
bmap_bytes=$(awk -F'[<>]' '/<MappedBlocksCount>/ { m = $3 } /<BlockSize>/ { b = $3 } END { printf "%d", m * b }' "$dir/raw.bmap")

# --- restores ------------------------------------------------------------------
rm -f "$target"
truncate -s "$raw_size" "$target"
tloop=$(attach "$target")
tpart=$(attach "$target" -o "$poff" --sizelimit "$psize")
reset() {
	blkdiscard -f "$tloop" 2>/dev/null
	drop_caches
}
contenders=(partclone partclone-zstd bmaptool asr-noverify asr-verify)
declare -A times=()
run_one() { # NAME RUN
	local name=$1 run=$2 log=$dir/logs/$1-$2.log t0 t1 got
	reset
	t0=$(now)
	case $name in
	partclone) partclone.ext4 -q -r -s "$dir/part.pc" -o "$tpart" -L "$log.pc" >"$log" 2>&1 ;;
	partclone-zstd) zstd -q -d -c "$dir/part.pc.zst" | partclone.ext4 -q -r -s - -o "$tpart" -L "$log.pc" >"$log" 2>&1 ;;
	bmaptool) bmaptool copy --bmap "$dir/raw.bmap" "$raw" "$tloop" >"$log" 2>&1 ;;
	asr-noverify) "$asr" restore --source "$dir/disk.asr" --target "$tloop" --erase --noprompt --noverify >"$log" 2>&1 ;;
	asr-verify) "$asr" restore --source "$dir/disk.asr" --target "$tloop" --erase --noprompt >"$log" 2>&1 ;;
	esac || die "$name (run $run) failed; see $log"
	sync
	t1=$(now)
	times[$name]+="$(elapsed "$t0" "$t1") "
	e2fsck -fn "$tpart" >"$log.fsck" 2>&1 || die "$name (run $run): e2fsck -fn finds problems on the restored partition; see $log.fsck"
	got=$(tree "$tpart")
	[ "$got" = "$want" ] || die "$name (run $run): the restored files differ from the source's"
	printf '  run %d  %-15s %8.3f s\n' "$run" "$name" "$(elapsed "$t0" "$t1")"
}
echo "bench-fsmap: $runs run(s) of each of ${contenders[*]}, interleaved, cold caches"
load_start=$(cut -d' ' -f1-3 /proc/loadavg)
for ((r = 1; r <= runs; r++)); do
	for c in "${contenders[@]}"; do run_one "$c" "$r"; done
done

# --- report --------------------------------------------------------------------
declare -A med=()
for c in "${contenders[@]}"; do
	# shellcheck disable=SC2086 # space-separated numbers
	med[$c]=$(median ${times[$c]})
done
s_asr=$(stat -c %s "$dir/disk.asr")
s_asr4=$(stat -c %s "$dir/disk4m.asr")
s_pc=$(stat -c %s "$dir/part.pc")
s_pcz=$(stat -c %s "$dir/part.pc.zst")
echo
echo "bench-fsmap: $size_arg disk, ext4 partition $(mib "$psize"), $(mib "$used") allocated by the filesystem (data and metadata), free space full of old data"
echo "bench-fsmap: load average at start $load_start, at end $(cut -d' ' -f1-3 /proc/loadavg), on $(nproc) CPUs"
printf '\n%-34s %14s %12s\n' "image" "bytes" "made in (s)"
printf '%-34s %14s %12s\n' "asr prepared image" "$s_asr ($(mib "$s_asr"))" "$scan_asr"
printf '%-34s %14s %12s\n' "asr, --chunksize 4194304" "$s_asr4 ($(mib "$s_asr4"))" "-"
printf '%-34s %14s %12s\n' "partclone image" "$s_pc ($(mib "$s_pc"))" "$scan_pc"
printf '%-34s %14s %12s\n' "partclone image | zstd -T0" "$s_pcz ($(mib "$s_pcz"))" "$scan_pcz"
printf '%-34s %14s %12s\n' "bmaptool: bytes its map copies" "$bmap_bytes ($(mib "$bmap_bytes"))" "$scan_bmap"
printf '\n%-16s %10s   %s\n' "restore" "median s" "all runs (s)"
for c in "${contenders[@]}"; do printf '%-16s %10.3f   %s\n' "$c" "${med[$c]}" "${times[$c]% }"; done

r_size=$(calc "$s_asr / $s_pcz")
r_size4=$(calc "$s_asr4 / $s_pcz")
r_used=$(calc "$s_asr / $used")
r_time=$(calc "${med[asr-noverify]} / ${med[partclone]}")
r_timev=$(calc "${med[asr-verify]} / ${med[partclone]}")
r_bmap=$(calc "${med[asr-noverify]} / ${med[bmaptool]}")
echo
printf '%-52s %6s\n' "asr image / partclone image compressed (zstd)" "$r_size"
printf '%-52s %6s\n' "asr image, 4 MiB chunks / partclone | zstd" "$r_size4"
printf '%-52s %6s\n' "asr image / bytes the filesystem allocates" "$r_used"
printf '%-52s %6s\n' "asr restore (noverify) / partclone restore" "$r_time"
printf '%-52s %6s\n' "asr restore (verify) / partclone restore" "$r_timev"
printf '%-52s %6s\n' "asr restore (noverify) / bmaptool copy" "$r_bmap"
echo
# The image must hold the used data, compressed, and none of the free
# space: no bigger than what the filesystem allocates. Against the same used
# blocks compressed as one zstd stream (partclone | zstd), independent 1 MiB
# chunks (random access, parallel decoding, multicast) lose the matches
# across chunk boundaries; that ratio is printed above, not judged.
echo "targets:"
printf '  %-48s %-6s (%s)\n' "asr image <= the filesystem's used bytes" "$(verdict "$r_used" "<=" 1)" "$r_used"
printf '  %-48s %-6s (%s)\n' "asr restore <= partclone restore" "$(verdict "$r_time" "<=" 1)" "$r_time"
