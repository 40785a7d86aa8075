#!/bin/bash
# bench/filecopy.sh: how fast asr restores without --erase (the file copy),
# next to its block restore, cp -a and rsync -aHAX, on the same ext4 content.
#
# Run by `make bench` after `make build` (needs root: loop devices, mkfs,
# mount, dropping the page cache). Everything lives under BENCH_DIR:
#   source-MIB-KEY.img  an ext4 volume holding a system-like tree of about
#                       MIB MiB made by mktree.py (kept across runs; KEY
#                       changes whenever mktree.py does)
#   source.asr          its prepared image, for the block restore
#   target.img          backs the loop device every contender writes to
#   logs/               each run's output
#
# Before each run the target is discarded and, for the file copiers, given a
# fresh empty ext4 filesystem (the same kind of target for all four), and
# the page cache is dropped, so every run starts cold. Each timed run covers
# the whole job as a person would do it: asr mounts and unmounts the volumes
# itself; cp and rsync are timed with the mounts, the copy and the unmounts
# (which flush what they wrote; asr syncs before it verifies). After every
# file copy the target must hold as many items and bytes as the source.
#
# Exit status: 0 when every run was correct (a missed target prints MISSED);
# 1 when a run failed or copied the wrong tree; 2 on bad settings.
#
# Settings (environment):
#   BENCH_DIR       work directory                 (default /var/tmp/asr-bench-filecopy)
#   BENCH_TREE_MIB  size of the tree's file data   (default 400)
#   BENCH_RUNS      runs of each contender          (default 3)
set -euo pipefail

# Mounts made here must not be copied into mount namespaces that other
# programs create meanwhile (ip netns, unshare): such a copy keeps a
# filesystem alive after its umount here, and the next mount or mkfs of the
# target fails. So the benchmark runs in a private mount namespace of its own.
if [ -z "${BENCH_FILECOPY_NS:-}" ]; then
	BENCH_FILECOPY_NS=1 exec unshare --mount --propagation private "$0" "$@"
fi
. "$(dirname -- "${BASH_SOURCE[0]}")/lib.sh"
bench_init bench-filecopy
mktree=$root/testdata/mktree.py
dir=${BENCH_DIR:-/var/tmp/asr-bench-filecopy}
mib=${BENCH_TREE_MIB:-400}
runs=${BENCH_RUNS:-3}

positive BENCH_RUNS "$runs"
positive BENCH_TREE_MIB "$mib"
need "loop devices, mount, drop_caches" losetup blkdiscard mkfs.ext4 rsync cp python3 awk flock find du
lock "$dir"
mkdir -p "$dir/logs"
srcloop="" tgtloop="" target=$dir/target.img
mnt_s=$dir/mnt-source mnt_t=$dir/mnt-target
mkdir -p "$mnt_s" "$mnt_t"

cleanup() {
	local rc=0
	# Only what this script mounted and attached, by exact name.
	if mountpoint -q "$mnt_s"; then umount "$mnt_s" || rc=1; fi
	if mountpoint -q "$mnt_t"; then umount "$mnt_t" || rc=1; fi
	if [ -n "$srcloop" ]; then losetup -d "$srcloop" || rc=1; fi
	if [ -n "$tgtloop" ]; then losetup -d "$tgtloop" || rc=1; fi
	rm -f "$target"
	return "$rc"
}
at_exit cleanup

# census DIR: items and file bytes below DIR (lost+found left out), one line.
census() {
	(cd "$1" && echo "items=$(find . -mindepth 1 -path ./lost+found -prune -o -print | wc -l) bytes=$(find . -path ./lost+found -prune -o -type f -printf '%s\n' | awk '{ s += $1 } END { print s + 0 }')")
}

# --- the source volume ----------------------------------------------------------

key=$(sha256sum "$mktree" | cut -c1-12)
src=$dir/source-$mib-$key.img
vol_size=$(((mib * 2 + 512) << 20))
if [ -f "$src" ] && [ -f "$src.info" ]; then
	echo "bench-filecopy: reusing $src"
else
	for old in "$dir"/source-*.img; do
		if [ -e "$old" ] && [ "$old" != "$src" ]; then rm -f "$old" "$old.info"; fi
	done
	echo "bench-filecopy: making $src (about $mib MiB of files)"
	rm -f "$src"
	truncate -s "$vol_size" "$src"
	mkfs.ext4 -q -F "$src"
	srcloop=$(losetup --show -f "$src")
	mount "$srcloop" "$mnt_s"
	python3 "$mktree" "$mnt_s" "$mib" 1 >/dev/null
	census "$mnt_s" >"$src.info.tmp"
	umount "$mnt_s"
	losetup -d "$srcloop"
	srcloop=""
	mv "$src.info.tmp" "$src.info"
fi
want=$(cat "$src.info")
vol_size=$(stat -c %s "$src")
img=$dir/source.asr
"$asr" imagescan --source "$src" --output "$img" --overwrite >"$dir/logs/imagescan.log" 2>&1 ||
	{ cat "$dir/logs/imagescan.log" >&2; die "asr imagescan failed"; }
srcloop=$(losetup --show -r -f "$src")
rm -f "$target"
truncate -s "$vol_size" "$target"
tgtloop=$(losetup --show -f "$target")

# reset KIND: an empty target (a fresh ext4 for file copies, zeros for the
# block restore) and cold caches.
reset() {
	blkdiscard -f "$tgtloop" 2>/dev/null || true
	if [ "$1" = files ]; then mkfs.ext4 -q -F "$tgtloop"; fi
	drop_caches
}

# The file copiers other than asr: mount, copy, unmount.
copy_with() {
	mount -o ro "$srcloop" "$mnt_s"
	mount "$tgtloop" "$mnt_t"
	"$@"
	umount "$mnt_s"
	umount "$mnt_t"
}

contenders=(asr-files asr-files-noverify asr-block rsync-aHAX cp-a)
declare -A durations=()

run_one() {
	local name=$1 run=$2 log t0 t1 rc=0 got own="" ct vt
	local -a cmd
	log=$dir/logs/$name-$run.log
	case $name in
	asr-files) cmd=("$asr" restore --source "$src" --target "$tgtloop") ;;
	asr-files-noverify) cmd=("$asr" restore --source "$src" --target "$tgtloop" --noverify) ;;
	asr-block) cmd=("$asr" restore --source "$img" --target "$tgtloop" --erase --noprompt) ;;
	rsync-aHAX) cmd=(copy_with rsync -aHAX "$mnt_s/" "$mnt_t/") ;;
	cp-a) cmd=(copy_with cp -a "$mnt_s/." "$mnt_t/") ;;
	esac
	rm -f "$log.rss"
	if [ "$name" = asr-block ]; then reset blocks; else reset files; fi
	t0=$(now)
	if [ -n "$gnu_time" ] && [ "${name#asr}" != "$name" ]; then
		"$gnu_time" -f %M -o "$log.rss" "${cmd[@]}" >"$log" 2>&1 || rc=$?
	else
		"${cmd[@]}" >"$log" 2>&1 || rc=$?
	fi
	t1=$(now)
	if [ "$rc" -ne 0 ]; then
		echo "bench-filecopy: FAIL: $name (run $run) exited $rc: ${cmd[*]}" >&2
		tail -n 20 "$log" >&2
		exit 1
	fi
	durations[$name]+="$(elapsed "$t0" "$t1") "
	mount -o ro "$tgtloop" "$mnt_t"
	got=$(census "$mnt_t")
	umount "$mnt_t"
	if [ "$got" != "$want" ]; then
		echo "bench-filecopy: FAIL: after $name (run $run) the target holds $got, the source $want" >&2
		exit 1
	fi
	ct=$(sed -n 's/^Copied .* in \([0-9.]*\) s,.*/\1/p' "$log")
	vt=$(sed -n 's/^Verified .* in \([0-9.]*\) s.*/\1/p' "$log")
	[ -z "$ct" ] || own="   asr says: copy $ct s${vt:+, verify $vt s}"
	[ ! -s "$log.rss" ] || own+="   peak RSS $(($(tail -n 1 "$log.rss") / 1024)) MiB"
	printf '  run %d  %-20s %8.3f s%s\n' "$run" "$name" "$(elapsed "$t0" "$t1")" "$own"
}

echo "bench-filecopy: source $src ($want), ext4, $vol_size bytes; target $tgtloop"
echo "bench-filecopy: warm-up (untimed): one read of the source, one rsync"
cat "$src" >/dev/null
reset files
copy_with rsync -aHAX "$mnt_s/" "$mnt_t/"
echo "bench-filecopy: $runs run(s) of each of ${contenders[*]}, interleaved, cold caches"
load_start=$(cut -d' ' -f1-3 /proc/loadavg)
for ((r = 1; r <= runs; r++)); do
	for c in "${contenders[@]}"; do
		run_one "$c" "$r"
	done
done
echo "bench-filecopy: load average (1, 5, 15 min) at start $load_start, at end $(cut -d' ' -f1-3 /proc/loadavg), on $(nproc) CPUs"

declare -A med=()
bytes=${want#*bytes=}
echo
printf '%-20s %10s %10s   %s\n' contender "median s" "MB/s" "all runs (s)"
for c in "${contenders[@]}"; do
	# shellcheck disable=SC2086 # space-separated numbers
	med[$c]=$(median ${durations[$c]})
	printf '%-20s %10.3f %10.1f   %s\n' "$c" "${med[$c]}" "$(calc "$bytes / 1e6 / ${med[$c]}")" "${durations[$c]% }"
done
echo "(MB/s: the tree's $bytes bytes of file data over the median, 1 MB = 10^6 bytes)"
echo
for pair in "asr-files rsync-aHAX" "asr-files-noverify rsync-aHAX" "asr-files cp-a" "asr-files-noverify cp-a" "asr-files asr-block"; do
	set -- $pair
	printf '%-40s %6s\n' "$1 / $2" "$(calc "${med[$1]} / ${med[$2]}")"
done
r=$(calc "${med[asr-files]} / ${med[rsync-aHAX]}")
echo
echo "targets:"
printf '  %-36s %-6s (%s)\n' "asr file copy (verify) <= rsync -aHAX" "$(verdict "$r" "<=" 1)" "$r"
