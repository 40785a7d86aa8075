#!/bin/bash
# bench/http.sh: how fast asr restores from a web server, next to curl.
#
# Run by `make bench` after bench/local.sh (it reuses its source disk when
# it is there). Needs root. nginx serves BENCH_DIR at 198.18.0.1:8080 in one
# network namespace, the clients run in another at 198.18.0.2, joined by a
# veth pair; both are made for this run and removed after it, so nothing is
# sent on the machine's own interfaces. The suite runs twice: on the bare
# veth, where the "network" is faster than two cores can decode (CPU-bound),
# and with the server's side shaped to BENCH_HTTP_RATE (default 1gbit, tc
# tbf), a real imaging network's line rate.
#
# Contenders, interleaved, BENCH_RUNS times each, cold page cache each time:
#   curl -o /dev/null  of the prepared image: the line rate the others chase
#   curl | dd          of the raw image onto the target: the usual admin way
#   asr restore        of the prepared image, --noverify and with verify
# The target is a loop device backed by a file on tmpfs by default, so the
# figures are about the network and the decoding, not this machine's disk
# (BENCH_TARGET_DIR picks another folder). Correctness is checked with cmp
# after every asr and curl|dd run. BENCH_ASR_BEFORE names another asr binary
# (an older build) run as asr0_noverify and asr0_verify beside bin/asr, to
# measure a change in the same interleaved run.
set -euo pipefail
. "$(dirname -- "${BASH_SOURCE[0]}")/lib.sh"
bench_init bench-http
dir=${BENCH_DIR:-/var/tmp/asr-bench}
size_arg=${BENCH_SIZE:-1G}
fill=${BENCH_FILL:-40}
runs=${BENCH_RUNS:-3}
before=${BENCH_ASR_BEFORE:-}
tdir=${BENCH_TARGET_DIR:-/dev/shm}
ns=abh$$

positive BENCH_RUNS "$runs"
[ -z "$before" ] || [ -x "$before" ] || usage_die "BENCH_ASR_BEFORE: $before is not an executable"
need "network namespaces, loop devices, drop_caches" nginx curl ip losetup cmp

mkdir -p "$dir/http"
loop="" nginx_pid="" target="$tdir/asr-bench-http-target.img"
cleanup() {
	local rc=0
	if [ -n "$nginx_pid" ]; then kill "$nginx_pid" 2>/dev/null; wait "$nginx_pid" 2>/dev/null || true; fi
	if [ -n "$loop" ]; then losetup -d "$loop" || rc=1; fi
	ip netns del "${ns}s" 2>/dev/null || true
	ip netns del "${ns}c" 2>/dev/null || true
	rm -f "$target"
	return "$rc"
}
at_exit cleanup

# The source disk: bench/local.sh's when present, else a new one.
raw=$(ls -t "$dir"/raw-"$size_arg"-"$fill"-*.img 2>/dev/null | head -1 || true)
if [ -z "$raw" ]; then
	raw=$dir/http/raw-$size_arg-$fill.img
	[ -s "$raw" ] || "$root/testdata/mkdisk.sh" "$raw" "$size_arg" "$fill"
fi
ln -sf "$raw" "$dir/http/raw.img"
"$asr" imagescan --source "$raw" --output "$dir/http/disk.asr" --overwrite >/dev/null
bytes=$(stat -c %s "$raw")
imgbytes=$(stat -c %s "$dir/http/disk.asr")

ip netns add "${ns}s"
ip netns add "${ns}c"
ip -n "${ns}s" link add eth0 type veth peer name eth0 netns "${ns}c"
for h in s c; do ip -n "$ns$h" link set lo up; ip -n "$ns$h" link set eth0 up; done
ip -n "${ns}s" addr add 198.18.0.1/24 dev eth0
ip -n "${ns}c" addr add 198.18.0.2/24 dev eth0
cat >"$dir/http/nginx.conf" <<CONF
daemon off;
master_process off;
user root;
pid $dir/http/nginx.pid;
error_log $dir/http/error.log;
events { worker_connections 256; }
http {
  access_log off;
  sendfile on;
  default_type application/octet-stream;
  server { listen 198.18.0.1:8080; root $dir/http; }
}
CONF
ip netns exec "${ns}s" nginx -c "$dir/http/nginx.conf" &
nginx_pid=$!
for _ in $(seq 50); do
	ip netns exec "${ns}c" curl -s -o /dev/null http://198.18.0.1:8080/disk.asr -r 0-0 && break
	sleep 0.1
done

truncate -s $((bytes + 64 * 1024 * 1024)) "$target"
loop=$(losetup --show -f "$target")
url=http://198.18.0.1:8080

reset() {
	blkdiscard -f "$loop" 2>/dev/null
	drop_caches
}
contenders=(curl_devnull curl_dd asr_noverify asr_verify)
[ -z "$before" ] || contenders+=(asr0_noverify asr0_verify)
run_one() {
	local name=$1 t0 t1
	reset
	t0=$(now)
	case $name in
	curl_devnull) ip netns exec "${ns}c" curl -sf -o /dev/null "$url/disk.asr" ;;
	curl_dd) ip netns exec "${ns}c" bash -c "curl -sf '$url/raw.img' | dd of='$loop' bs=4M iflag=fullblock conv=fsync status=none" ;;
	asr_noverify) ip netns exec "${ns}c" "$asr" restore --source "$url/disk.asr" --target "$loop" --erase --noprompt --noverify >"$dir/http/last.log" ;;
	asr_verify) ip netns exec "${ns}c" "$asr" restore --source "$url/disk.asr" --target "$loop" --erase --noprompt >"$dir/http/last.log" ;;
	asr0_noverify) ip netns exec "${ns}c" "$before" restore --source "$url/disk.asr" --target "$loop" --erase --noprompt --noverify >"$dir/http/last.log" ;;
	asr0_verify) ip netns exec "${ns}c" "$before" restore --source "$url/disk.asr" --target "$loop" --erase --noprompt >"$dir/http/last.log" ;;
	esac
	t1=$(now)
	if [ "$name" != curl_devnull ]; then
		# asr adjusts the GPT in the first 1 KiB for the larger target.
		cmp -i 1024 -n $((bytes - 1024)) "$raw" "$loop" || die "$name wrote the wrong bytes"
	fi
	times[$name]+="$(elapsed "$t0" "$t1") "
}

suite() { # label
	local c
	times=()
	for _ in $(seq "$runs"); do
		for c in "${contenders[@]}"; do run_one "$c"; done
	done
	report "$1"
}
report() {
declare -A med
printf '\nHTTP restore from nginx, %s; %s disk, image %d bytes, target on %s, median of %d\n' "$1" "$size_arg" "$imgbytes" "$tdir" "$runs"
printf '%-14s %9s %12s %s\n' contender seconds "image MB/s" runs
for c in "${contenders[@]}"; do
	# shellcheck disable=SC2086 # the list is space-separated numbers
	med[$c]=$(median ${times[$c]})
	printf '%-14s %9.3f %12.1f %s\n' "$c" "${med[$c]}" "$(awk -v n="$imgbytes" -v s="${med[$c]}" 'BEGIN{print n/1e6/s}')" "${times[$c]}"
done
tp=$(ratio "${med[curl_devnull]}" "${med[asr_noverify]}")
printf '\nasr (no verify) throughput / curl -o /dev/null: %s (target >= 0.90) %s\n' "$tp" "$(verdict "$tp" ">=" 0.9)"
r2=$(ratio "${med[asr_noverify]}" "${med[curl_dd]}")
printf 'asr (no verify) time / curl | dd of the raw image: %s (target < 1) %s\n' "$r2" "$(verdict "$r2" "<" 1)"
printf 'asr (verify) time / curl | dd: %s\n' "$(ratio "${med[asr_verify]}" "${med[curl_dd]}")"
if [ -n "$before" ]; then
	printf 'asr / asr0 (no verify): %s   (verify): %s\n' "$(ratio "${med[asr_noverify]}" "${med[asr0_noverify]}")" "$(ratio "${med[asr_verify]}" "${med[asr0_verify]}")"
fi
}

declare -A times
suite "bare veth (CPU-bound)"
rate=${BENCH_HTTP_RATE:-1gbit}
ip netns exec "${ns}s" tc qdisc add dev eth0 root tbf rate "$rate" burst 256k latency 50ms
suite "link shaped to $rate (tc tbf)"
