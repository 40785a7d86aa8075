#!/bin/bash
# mkdisk.sh OUT SIZE FILLPCT [OLDPCT]
#
# Makes OUT, a raw and sparse disk image of SIZE bytes (anything truncate
# accepts: 64M, 1G, 1073741824) holding a GPT with one ext4 partition from
# 1 MiB to the end, filled to about FILLPCT percent with a mix of content:
# random data (incompressible), text (compressible) and many small files in
# nested directories (metadata-heavy, scattered blocks). It is the input of
# asr's tests, demo and benchmarks, so it has to look like a real disk while
# staying cheap to make.
#
# The same arguments give the same content: the data comes from seeded
# generators, the GPT and ext4 get fixed GUIDs, UUIDs, hash seed and creation
# time, every file gets a fixed mtime, and ext4 allocates blocks in a fixed
# order. What still differs between runs is what the kernel stamps on its
# own: inode change and creation times, mount and write times and counters
# in the superblock, the journal's state.
#
# Free space is never written, so it stays zero and OUT stays sparse: that is
# what lets asr and bmaptool skip it. Unless OLDPCT is given: then the
# filesystem is first filled to OLDPCT percent with random files that are
# deleted before the real content is written, so its free space holds old
# data, as on a disk that has been in use (zero detection no longer finds it
# free; only the filesystem's own bitmaps can).
#
# Needs root (loop devices, mount). Prints one line at the end:
#   OUT size=BYTES used=BYTES fs_used_pct=N allocated=BYTES
# where used is what the filesystem reports as used and allocated is what OUT
# takes on the host disk (its non-hole bytes).
set -euo pipefail

usage() {
	echo "usage: $0 OUT SIZE FILLPCT [OLDPCT]   (e.g. $0 disk.img 1G 40)" >&2
	exit 2
}
[ $# -eq 3 ] || [ $# -eq 4 ] || usage
out=$1 size_arg=$2 fill=$3 old=${4:-0}
case $fill in '' | *[!0-9]*) usage ;; esac
case $old in '' | *[!0-9]*) usage ;; esac
# Leading zeros would make bash read the number as octal.
fill=$((10#$fill)) old=$((10#$old))
[ "$old" -le 95 ] || { echo "mkdisk: OLDPCT must be 0 to 95, not $old" >&2; exit 2; }
[ "$fill" -le 95 ] || { echo "mkdisk: FILLPCT must be 0 to 95, not $fill" >&2; exit 2; }
[ "$(id -u)" -eq 0 ] || { echo "mkdisk: needs root (loop devices, mount)" >&2; exit 1; }
for cmd in sgdisk partx losetup mkfs.ext4 e2fsck mount umount truncate base64 seq awk sha256sum; do
	command -v "$cmd" >/dev/null 2>&1 || { echo "mkdisk: $cmd not found (run scripts/deps.sh)" >&2; exit 1; }
done

# C locale: awk slices the text pool by bytes, not characters.
export LC_ALL=C
umask 022

# Fixed identities, so two runs make the same disk.
readonly DISK_GUID=6173722d-6469-736b-0000-000000000001
readonly PART_GUID=6173722d-7061-7274-0000-000000000001
readonly FS_UUID=6173722d-6578-7434-0000-000000000001
readonly HASH_SEED=6173722d-6861-7368-0000-000000000001
readonly EPOCH=1700000000 # 2023-11-14T22:13:20Z: mkfs time and every file's mtime
readonly SEED="asr-mkdisk-$size_arg-$fill-$old"

# Build under a temporary name next to OUT and rename at the end, so a
# half-made image (interrupted, failed) never sits at OUT where the benchmark
# would take it for a cached good one.
outdir=$(cd "$(dirname "$out")" && pwd)
tmp="$outdir/.$(basename "$out").tmp.$$"
loop="" mnt="" mounted=0

cleanup() {
	local rc=$?
	# Only what this script made, by exact name.
	if [ "$mounted" = 1 ]; then umount "$mnt" || rc=1; fi
	if [ -n "$mnt" ] && [ -d "$mnt" ]; then rmdir "$mnt" || true; fi
	if [ -n "$loop" ]; then losetup -d "$loop" || rc=1; fi
	rm -f "$tmp"
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

rm -f "$tmp"
truncate -s "$size_arg" "$tmp"
size=$(stat -c %s "$tmp")
if [ "$size" -lt $((8 << 20)) ]; then
	echo "mkdisk: SIZE $size_arg is too small: need at least 8 MiB" >&2
	exit 2
fi

# GPT with one Linux partition from sector 2048 (1 MiB) to the last usable
# sector; sgdisk keeps 1 MiB alignment.
sgdisk -o -U "$DISK_GUID" -n 1:2048:0 -t 1:8300 -u 1:"$PART_GUID" -c 1:asr-test "$tmp" >/dev/null
read -r pstart psectors < <(partx -g -o START,SECTORS -n 1 "$tmp") || true
if [ -z "${psectors:-}" ]; then
	echo "mkdisk: cannot read back the partition sgdisk made in $tmp" >&2
	exit 1
fi

# A loop device over just the partition's bytes: the same sectors the kernel
# would expose as loopNp1, without depending on partition scanning (which this
# kernel does not do by itself) or on udev creating device nodes in time.
loop=$(losetup --show -f -o $((pstart * 512)) --sizelimit $((psectors * 512)) "$tmp")

# Deterministic ext4: fixed UUID, hash seed and creation time (E2FSPROGS_FAKE_TIME).
# lazy_itable_init/lazy_journal_init: do not write zeros into inode tables and
# the journal; the new file reads as zeros there anyway, and writing them
# would allocate (un-sparse) the image. -m 0 so "used" is plain used/size.
E2FSPROGS_FAKE_TIME=$EPOCH mkfs.ext4 -q -F -m 0 -L asr-test -U "$FS_UUID" \
	-E root_owner=0:0,hash_seed="$HASH_SEED",lazy_itable_init=1,lazy_journal_init=1 "$loop"

mnt=$(mktemp -d /tmp/asr-mkdisk.XXXXXX)
# noinit_itable: no background thread zeroing inode tables while we fill,
# which would allocate blocks of zeros in the image and race with us.
# nodelalloc: blocks are allocated in write(), in our order, instead of by
# writeback threads in whatever order and on whatever CPU they run; with
# delayed allocation two runs place the small files differently.
mount -t ext4 -o noinit_itable,nodelalloc "$loop" "$mnt"
mounted=1

# ext4 gives small files blocks from a per-CPU pool, so a writer that moves
# between CPUs places them differently from run to run: stay on one CPU
# (the first this process may use; children inherit it).
if command -v taskset >/dev/null 2>&1; then
	cpus=$(taskset -pc $$ | sed 's/.*: *//')
	taskset -pc "${cpus%%[,-]*}" $$ >/dev/null || true
fi

# --- deterministic data -----------------------------------------------------

# rand_stream NAME N: N pseudo-random bytes that depend only on NAME and SEED.
# AES-256-CTR over zeros is a fast keyed generator; feeding it exactly N
# zeros (instead of cutting its output with head) means no SIGPIPE, which
# would fail the pipeline under pipefail. CTR mode adds no padding.
if command -v openssl >/dev/null 2>&1; then
	rand_stream() {
		local key iv
		key=$(printf '%s/%s' "$SEED" "$1" | sha256sum)
		iv=$(printf 'iv/%s/%s' "$SEED" "$1" | sha256sum)
		head -c "$2" /dev/zero | openssl enc -aes-256-ctr -nosalt -K "${key:0:64}" -iv "${iv:0:32}"
	}
elif command -v python3 >/dev/null 2>&1; then
	rand_stream() {
		python3 -c '
import random, sys
r = random.Random(sys.argv[1])
n = int(sys.argv[2])
out = sys.stdout.buffer
while n > 0:
    k = min(n, 1 << 20)
    out.write(r.randbytes(k))
    n -= k
' "$SEED/$1" "$2"
	}
else
	echo "mkdisk: needs openssl or python3 for deterministic random data" >&2
	exit 1
fi

# take N: the first N bytes of stdin, then drain the rest, so the writer is
# never killed by SIGPIPE (which pipefail would report as a failure).
take() {
	head -c "$1"
	cat >/dev/null
}

# A small linear congruential generator (Park-Miller) in shell arithmetic:
# sizes and offsets that are the same on every machine and bash version,
# unlike $RANDOM.
lcg=20231114
next_rand() { lcg=$((lcg * 16807 % 2147483647)); }

# Old data: files filling OLDPCT of the filesystem, written, flushed and
# deleted. Without discard (not a mount option here) their blocks keep
# their bytes, and the real files below reuse some of them.
read -r fs_size fs_used < <(df -B1 --output=size,used "$mnt" | tail -n 1)
old_budget=$((fs_size * old / 100 - fs_used))
if [ "$old_budget" -gt 0 ]; then
	mkdir "$mnt/old"
	i=0
	while [ "$old_budget" -ge 4096 ]; do
		n=$((16 << 20))
		[ "$n" -le "$old_budget" ] || n=$((old_budget & ~4095))
		rand_stream "old$i" "$n" >"$mnt/old/$i"
		old_budget=$((old_budget - n))
		i=$((i + 1))
	done
	sync -f "$mnt"
	rm -rf "$mnt/old"
	sync -f "$mnt"
fi

# How much to write: FILLPCT of the filesystem's size, less what mkfs used
# (journal, inode tables, bitmaps).
read -r fs_size fs_used < <(df -B1 --output=size,used "$mnt" | tail -n 1)
budget=$((fs_size * fill / 100 - fs_used))
[ "$budget" -gt 0 ] || budget=0
# The mix, by bytes: 45% random, 30% text, the rest small files.
rand_budget=$((budget * 45 / 100))
text_budget=$((budget * 30 / 100))
small_budget=$((budget - rand_budget - text_budget))

# Random data: a few big files of 256 KiB to 16 MiB, like media or archives.
mkdir -p "$mnt/data/blobs"
i=0
while [ "$rand_budget" -ge 4096 ]; do
	next_rand
	n=$(((262144 + lcg % (16 << 20)) & ~4095))
	[ "$n" -le "$rand_budget" ] || n=$rand_budget
	rand_stream "blob$i" "$n" >"$(printf '%s/data/blobs/blob%04d.bin' "$mnt" "$i")"
	rand_budget=$((rand_budget - n))
	i=$((i + 1))
done

# Text: alternating log-like files (very compressible) and base64 dumps (a
# little compressible), 128 KiB to 4 MiB each. The generators write a bit
# more than n bytes and exactly n are kept: cutting them afterwards with
# truncate would free blocks, which ext4 hands out again only after a journal
# commit, so where the next file lands would depend on timing.
mkdir -p "$mnt/var/log" "$mnt/srv/dumps"
i=0
while [ "$text_budget" -ge 4096 ]; do
	next_rand
	n=$(((131072 + lcg % (4 << 20)) & ~4095))
	[ "$n" -le "$text_budget" ] || n=$text_budget
	if [ $((i % 2)) -eq 0 ]; then
		# Every line is at least 48 bytes, so n/48+1 lines are enough.
		seq -f "%010.0f INFO asr-test worker=$((i % 7)) request handled ok" \
			$((i * 1000000)) $((i * 1000000 + n / 48 + 1)) |
			take "$n" >"$(printf '%s/var/log/app%03d.log' "$mnt" "$i")"
	else
		rand_stream "text$i" $((n * 3 / 4 + 3)) | base64 -w 76 |
			take "$n" >"$(printf '%s/srv/dumps/dump%03d.b64' "$mnt" "$i")"
	fi
	text_budget=$((text_budget - n))
	i=$((i + 1))
done

# Small files: many files of 64 B to 64 KiB (mostly under 4 KiB) in a tree
# three directories deep, 50 files a directory, like a source tree or /etc.
# One awk process writes them all, each a slice of a text pool at a pseudo-
# random offset: a fork per file (or bash slicing a large string, which
# copies it) would take minutes for the tens of thousands of files a 1 GiB
# disk gets. The budget counts whole filesystem blocks (1 KiB on small
# filesystems, 4 KiB otherwise), since that is what each file really takes. Sizes and offsets come from the same LCG, done in awk's
# doubles, where every step (< 2^46) is exact.
rand_stream pool $((3 << 20)) | base64 -w 0 | awk -v root="$mnt/home/src" -v budget="$small_budget" -v lcg="$lcg" -v bs="$(stat -f -c %S "$mnt")" '
	function next_rand() { lcg = (lcg * 16807) % 2147483647; return lcg }
	{ pool = pool $0 }
	END {
		pool_len = length(pool)
		for (i = 0; budget >= bs; i++) {
			if (i % 50 == 0) {
				k = int(i / 50)
				dir = sprintf("%s/d%02d/s%02d/t%02d", root, int(k / 100), int(k / 10) % 10, k % 10)
				if (system("mkdir -p \"" dir "\"") != 0) exit 1
			}
			r = next_rand() % 100
			if (r < 70) n = 64 + next_rand() % 4032
			else if (r < 95) n = 4096 + next_rand() % 12288
			else n = 16384 + next_rand() % 49152
			off = next_rand() % (pool_len - n)
			name = sprintf("f%05d.txt", i)
			f = dir "/" name
			printf "file %d %s\n%s\n", i, name, substr(pool, off + 1, n) > f
			if (close(f) != 0) exit 1
			budget -= int((n + bs - 1) / bs) * bs
		}
	}'

# Fixed timestamps on everything, the root and lost+found included.
find "$mnt" -xdev -exec touch -h -d "@$EPOCH" {} +

read -r fs_size fs_used < <(df -B1 --output=size,used "$mnt" | tail -n 1)
umount "$mnt"
mounted=0
rmdir "$mnt"
mnt=""
# A cheap check that what we made is a clean filesystem.
if ! fsck_out=$(e2fsck -fn "$loop" 2>&1); then
	echo "mkdisk: the new filesystem does not check clean:" >&2
	echo "$fsck_out" >&2
	exit 1
fi
losetup -d "$loop"
loop=""

mv -f "$tmp" "$out"
allocated=$(($(stat -c %b "$out") * $(stat -c %B "$out")))
echo "$out size=$size used=$fs_used fs_used_pct=$((fs_used * 100 / fs_size)) allocated=$allocated"
