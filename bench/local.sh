#!/bin/bash
# bench/local.sh: how fast asr restores a disk, next to dd and bmaptool.
#
# Run by `make bench` after `make build` (needs root: loop devices, discard,
# dropping the page cache). Everything lives under BENCH_DIR:
#   raw-SIZE-FILL-KEY.img  the source disk, made by mkdisk.sh and kept across
#                          runs (KEY changes whenever mkdisk.sh does)
#   disk.asr, raw.bmap     made from it on every run by asr and bmaptool
#   target.img             backs the loop device every contender writes to
#   logs/                  each run's output
#
# Every contender writes the same image onto the same loop device, and before
# each one the device is discarded (so it reads as zeros and its backing file
# is empty again) and the page cache is dropped, so each starts cold, sources
# included. An untimed warm-up first evens out what the guest cannot drop
# (the host's caches, first writes to fresh storage). Contenders run
# interleaved, BENCH_RUNS times each; the median wall time counts. After
# every asr and bmaptool run the device must equal the raw image byte for
# byte, or the benchmark fails.
#
# Exit status: 0 when every run was correct, even if a speed target was
# missed (those are printed as MISSED); 1 when a run failed or wrote the
# wrong bytes; 2 on bad settings.
#
# Settings (environment):
#   BENCH_DIR        work directory            (default /var/tmp/asr-bench)
#   BENCH_SIZE       disk size, truncate-style (default 1G)
#   BENCH_FILL       percent of it used        (default 40)
#   BENCH_RUNS       runs of each contender    (default 3)
#   BENCH_DIRECT_IO  1: attach the loop device with --direct-io=on, so reads
#                    and writes go past the page cache of target.img as they
#                    would on a real disk (default 0: a plain losetup)
set -euo pipefail
. "$(dirname -- "${BASH_SOURCE[0]}")/lib.sh"
bench_init bench
mkdisk=$root/testdata/mkdisk.sh

dir=${BENCH_DIR:-/var/tmp/asr-bench}
size_arg=${BENCH_SIZE:-1G}
fill=${BENCH_FILL:-40}
runs=${BENCH_RUNS:-3}
direct_io=${BENCH_DIRECT_IO:-0}

positive BENCH_RUNS "$runs"
case $size_arg in '' | *[!0-9A-Za-z]*) usage_die "BENCH_SIZE must look like 1G or 256M" ;; esac
need "loop devices, blkdiscard, drop_caches" losetup blkdiscard bmaptool cmp truncate sha256sum awk flock

lock "$dir"
mkdir -p "$dir/logs"
loop="" target="$dir/target.img"

cleanup() {
	local rc=0
	# Only the loop device this script attached, by its exact name, and the
	# file behind it (the raw image and the prepared image stay for next time).
	if [ -n "$loop" ]; then losetup -d "$loop" || rc=1; fi
	rm -f "$target"
	return "$rc"
}
at_exit cleanup

# --- the source disk ---------------------------------------------------------

# The cached raw image is keyed by size, fill and the generator itself, so
# a changed mkdisk.sh makes a new one; older ones of the same size and fill
# are removed (each is up to SIZE of disk space).
key=$(sha256sum "$mkdisk" | cut -c1-12)
raw=$dir/raw-$size_arg-$fill-$key.img
if [ -f "$raw" ] && [ -f "$raw.info" ]; then
	echo "bench: reusing $raw"
else
	for old in "$dir/raw-$size_arg-$fill-"*.img; do
		if [ -e "$old" ] && [ "$old" != "$raw" ]; then rm -f "$old" "$old.info"; fi
	done
	echo "bench: making $raw ($size_arg, $fill% full)"
	t0=$(now)
	"$mkdisk" "$raw" "$size_arg" "$fill" >"$raw.info.tmp"
	t1=$(now)
	mv "$raw.info.tmp" "$raw.info"
	echo "bench: made in $(elapsed "$t0" "$t1") s"
fi
raw_size=$(stat -c %s "$raw")
raw_alloc=$(($(stat -c %b "$raw") * $(stat -c %B "$raw")))
# mkdisk's line: PATH size=N used=N fs_used_pct=N allocated=N
raw_used=$(sed -n 's/.* used=\([0-9]*\) .*/\1/p' "$raw.info")

# The prepared image and the block map are made afresh each time: asr's
# format may have changed since the last run, and both are quick to make.
img=$dir/disk.asr bmap=$dir/raw.bmap
t0=$(now)
"$asr" imagescan --source "$raw" --output "$img" --overwrite >"$dir/logs/imagescan.log" 2>&1 ||
	{ cat "$dir/logs/imagescan.log" >&2; die "asr imagescan failed"; }
t1=$(now)
scan_time=$(elapsed "$t0" "$t1")
rm -f "$bmap"
t0=$(now)
bmaptool create "$raw" -o "$bmap" >"$dir/logs/bmapcreate.log" 2>&1 ||
	{ cat "$dir/logs/bmapcreate.log" >&2; die "bmaptool create failed"; }
t1=$(now)
bmap_time=$(elapsed "$t0" "$t1")

# --- the target --------------------------------------------------------------

# One loop device for every contender, 64 MiB larger than the source like a
# real disk that is a little bigger than the image.
attach() {
	rm -f "$target"
	truncate -s $((raw_size + (64 << 20))) "$target"
	if [ "$direct_io" = 1 ]; then
		loop=$(losetup --show -f --direct-io=on "$target")
	else
		loop=$(losetup --show -f "$target")
	fi
}
attach

cold_warned=0
# reset: the target reads as zeros again (a discard on a loop device punches
# holes in its backing file), everything written is on disk, and no cache
# holds the source or the target.
reset() {
	# -f: skip the check for an existing partition table, which only warns
	# (and on a terminal may pause) since every run leaves one there.
	if ! blkdiscard -f "$loop" 2>/dev/null; then
		# No discard here: start over with a new empty backing file.
		losetup -d "$loop"
		loop=""
		attach
	fi
	sync
	if ! echo 3 2>/dev/null >/proc/sys/vm/drop_caches && [ "$cold_warned" = 0 ]; then
		echo "bench: WARNING: cannot drop the page cache; runs after the first may start warm" >&2
		cold_warned=1
	fi
}

# --- the contenders -------------------------------------------------------------

contenders=(dd bmaptool asr-noverify asr-verify)
declare -A durations=() rss=()

# run_one NAME RUN: time one contender once, then check what it wrote.
run_one() {
	local name=$1 run=$2 log t0 t1 rc=0 kib own="" rt vt
	local -a cmd
	log=$dir/logs/$name-$run.log
	case $name in
	dd) cmd=(dd if="$raw" of="$loop" bs=4M conv=fsync status=none) ;;
	bmaptool) cmd=(bmaptool copy --bmap "$bmap" "$raw" "$loop") ;;
	asr-noverify) cmd=("$asr" restore --source "$img" --target "$loop" --erase --noprompt --noverify) ;;
	asr-verify) cmd=("$asr" restore --source "$img" --target "$loop" --erase --noprompt) ;;
	esac
	reset
	t0=$(now)
	if [ -n "$gnu_time" ]; then
		"$gnu_time" -f %M -o "$log.rss" "${cmd[@]}" >"$log" 2>&1 || rc=$?
	else
		"${cmd[@]}" >"$log" 2>&1 || rc=$?
	fi
	t1=$(now)
	if [ "$rc" -ne 0 ]; then
		echo "bench: FAIL: $name (run $run) exited $rc: ${cmd[*]}" >&2
		tail -n 20 "$log" >&2
		exit 1
	fi
	durations[$name]+="$(elapsed "$t0" "$t1") "
	if [ -n "$gnu_time" ]; then
		kib=$(tail -n 1 "$log.rss")
		rss[$name]+="$kib "
	fi
	# dd is the reference; the others must have written exactly the image.
	# With the caches dropped first, cmp reads what reached the backing
	# store, not pages a tool left behind in memory.
	if [ "$name" != dd ]; then
		sync
		echo 3 2>/dev/null >/proc/sys/vm/drop_caches || true
		# The first 1 KiB (protective MBR, GPT header) is asr's to adjust
		# on a target larger than the image (it moves the GPT backup to the
		# end): the rest must be the image's, and the GPT must be valid.
		if ! cmp -i 1024 -n $((raw_size - 1024)) "$raw" "$loop" >"$log.cmp" 2>&1; then
			echo "bench: FAIL: after $name (run $run), $loop differs from $raw: $(cat "$log.cmp")" >&2
			exit 1
		fi
		if [ "$name" != bmaptool ] && ! sgdisk -v "$loop" 2>&1 | grep -q "No problems found"; then
			echo "bench: FAIL: after $name (run $run), sgdisk -v finds problems on $loop" >&2
			exit 1
		fi
	fi
	# asr's own account splits its time into writing and verifying; the
	# rest of the wall time is starting, checking and exiting.
	rt=$(sed -n 's/^Restored .* in \([0-9.]*\) s,.*/\1/p' "$log")
	vt=$(sed -n 's/^Verified .* in \([0-9.]*\) s;.*/\1/p' "$log")
	[ -z "$rt" ] || own="   asr says: restore $rt s${vt:+, verify $vt s}"
	printf '  run %d  %-14s %8.3f s%s\n' "$run" "$name" "$(elapsed "$t0" "$t1")" "$own"
}

how="buffered loop"
[ "$direct_io" != 1 ] || how="loop with direct I/O"
echo "bench: source $raw: $raw_size bytes, $raw_used used; target $loop ($how on $target)"
# Warm-up, untimed. Dropping the page cache empties only this kernel's
# caches: on a virtual machine the host's storage still reads faster the
# second time, and the first writes to never-used space are slower, so
# whichever contender ran first would pay for that alone. One dd over the
# target and a read of every source put all contenders on the same footing.
echo "bench: warm-up (untimed): one dd onto the target, one read of each source"
reset
dd if="$raw" of="$loop" bs=4M conv=fsync status=none
cat "$raw" "$img" "$bmap" >/dev/null
echo "bench: $runs run(s) of each of ${contenders[*]}, interleaved, cold caches"
# Other work on the machine (CPU or disk) makes the numbers noisy: show it.
load_start=$(cut -d' ' -f1-3 /proc/loadavg)
for ((r = 1; r <= runs; r++)); do
	for c in "${contenders[@]}"; do
		run_one "$c" "$r"
	done
done

# --- the report ------------------------------------------------------------------

echo "bench: load average (1, 5, 15 min) at start $load_start, at end $(cut -d' ' -f1-3 /proc/loadavg), on $(nproc) CPUs"

declare -A med=()
echo
printf '%-14s %10s %10s   %s\n' contender "median s" "MB/s" "all runs (s)"
for c in "${contenders[@]}"; do
	# shellcheck disable=SC2086 # the list is space-separated numbers
	med[$c]=$(median ${durations[$c]})
	printf '%-14s %10.3f %10.1f   %s\n' "$c" "${med[$c]}" "$(calc "$raw_size / 1e6 / ${med[$c]}")" "${durations[$c]% }"
done
echo "(MB/s: the ${raw_size}-byte logical size of the disk over the median, 1 MB = 10^6 bytes)"

r_nov_dd=$(calc "${med[asr-noverify]} / ${med[dd]}")
r_ver_nov=$(calc "${med[asr-verify]} / ${med[asr-noverify]}")
r_ver_bmap=$(calc "${med[asr-verify]} / ${med[bmaptool]}")
echo
printf '%-40s %6s\n' "asr(noverify) / dd" "$r_nov_dd"
printf '%-40s %6s\n' "asr(verify) / asr(noverify)" "$r_ver_nov"
printf '%-40s %6s\n' "asr(verify) / bmaptool" "$r_ver_bmap"

echo
echo "targets:"
printf '  %-36s %-6s (%s)\n' "asr noverify <= dd" "$(verdict "$r_nov_dd" "<=" 1)" "$r_nov_dd"
printf '  %-36s %-6s (%s)\n' "asr verify <= 1.5 x asr noverify" "$(verdict "$r_ver_nov" "<=" 1.5)" "$r_ver_nov"
printf '  %-36s %-6s (%s)\n' "asr verify <= bmaptool" "$(verdict "$r_ver_bmap" "<=" 1)" "$r_ver_bmap"

echo
img_size=$(stat -c %s "$img")
printf '%-36s %s bytes (%s, %.2fx smaller than the used bytes)\n' "prepared image (disk.asr)" "$img_size" "$(mib "$img_size")" "$(calc "$raw_used / $img_size")"
printf '%-36s %s bytes (%s)\n' "raw image size" "$raw_size" "$(mib "$raw_size")"
printf '%-36s %s bytes (%s)\n' "raw image used (filesystem)" "$raw_used" "$(mib "$raw_used")"
printf '%-36s %s bytes (%s)\n' "raw image allocated (non-hole)" "$raw_alloc" "$(mib "$raw_alloc")"
if [ -n "$gnu_time" ]; then
	# shellcheck disable=SC2086 # the list is space-separated numbers
	peak=$(printf '%s\n' ${rss[asr-verify]} | sort -n | tail -n 1)
	printf '%-36s %s\n' "peak RSS, asr restore with verify" "$(mib $((peak * 1024)))"
else
	printf '%-36s %s\n' "peak RSS, asr restore with verify" "n/a (no GNU time at /usr/bin/time)"
fi
printf '%-36s %s s\n' "asr imagescan" "$scan_time"
printf '%-36s %s s\n' "bmaptool create" "$bmap_time"
# asr's own account of its last verified run: restore and verify times.
grep -E '^(Restored|Verified)' "$dir/logs/asr-verify-$runs.log" | sed 's/^/asr: /' || true
