#!/bin/bash
# bench/multicast.sh: how asr's multicast scales with clients and loss, next
# to udpcast at the same rate.
#
# Run by `make bench`; needs root. A lab of network namespaces on one bridge
# (server 198.18.0.1, clients .11-.14), made for this run and removed after
# it; loss is made with nftables in the clients' namespaces. Scenarios, each
# with a fresh server, clients started together, the wall time until the last
# client is done (clients run --noverify: this measures the network path):
#   asr 1 client; asr 4 clients; asr 1 client at 2% loss; asr 4 clients at 2%
#   loss; udpcast 1 client; udpcast 4 clients (udp-sender --file of the raw
#   disk, as admins use it, with --max-bitrate at the same rate)
# Targets are files on tmpfs, so this machine's disk does not set the pace.
# Every asr and udpcast target is compared with the source disk.
set -euo pipefail
. "$(dirname -- "${BASH_SOURCE[0]}")/lib.sh"
bench_init bench-multicast
dir=${BENCH_DIR:-/var/tmp/asr-bench}
size_arg=${BENCH_SIZE:-1G}
fill=${BENCH_FILL:-40}
rate=${BENCH_RATE:-25000000}
tdir=${BENCH_TARGET_DIR:-/dev/shm/asr-bench-mc}
p=amb$$
need "network namespaces" udp-sender udp-receiver nft ip cmp

pids=()
hosts=()
cleanup() {
	local rc=0
	for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
	wait 2>/dev/null || true
	for h in "${hosts[@]}"; do ip netns del "$h" 2>/dev/null || true; done
	ip netns del "${p}br" 2>/dev/null || true
	rm -rf "$tdir"
	return "$rc"
}
at_exit cleanup

raw=$(ls -t "$dir"/raw-"$size_arg"-"$fill"-*.img 2>/dev/null | head -1 || true)
if [ -z "$raw" ]; then
	mkdir -p "$dir/mc"
	raw=$dir/mc/raw-$size_arg-$fill.img
	[ -s "$raw" ] || "$root/testdata/mkdisk.sh" "$raw" "$size_arg" "$fill"
fi
img=$dir/mc/disk.asr
mkdir -p "$dir/mc" "$tdir"
"$asr" imagescan --source "$raw" --output "$img" --overwrite >/dev/null
bytes=$(stat -c %s "$raw")

# The lab.
ip netns add "${p}br"
ip -n "${p}br" link add br0 type bridge
ip -n "${p}br" link set br0 type bridge mcast_snooping 0
ip -n "${p}br" link set br0 up
addhost() { # name n
	local ns=$p$1
	hosts+=("$ns")
	ip netns add "$ns"
	ip -n "$ns" link add eth0 type veth peer name "v$p$2" netns "${p}br"
	ip -n "${p}br" link set "v$p$2" master br0 up
	ip -n "$ns" link set lo up
	ip -n "$ns" addr add "198.18.0.$2/24" dev eth0
	ip -n "$ns" link set eth0 up
	ip -n "$ns" route add 224.0.0.0/4 dev eth0
}
addhost s 1
for i in 1 2 3 4; do addhost "c$i" $((10 + i)); done
loss() { # pct: set the clients' loss
	lossnow=$1
	for i in 1 2 3 4; do
		ip netns exec "${p}c$i" nft delete table inet asrloss 2>/dev/null || true
		[ "$1" -gt 0 ] || continue
		ip netns exec "${p}c$i" nft add table inet asrloss
		ip netns exec "${p}c$i" nft add chain inet asrloss input '{ type filter hook input priority 0; }'
		ip netns exec "${p}c$i" nft add rule inet asrloss input meta l4proto udp numgen random mod 100 '<' "$1" drop
	done
}
cat >"$dir/mc/asrconfig.plist" <<PLIST
<?xml version="1.0" encoding="UTF-8"?>
<plist version="1.0"><dict>
<key>Multicast Address</key><string>239.255.20.1</string>
<key>Data Rate</key><integer>$rate</integer>
<key>DNS Service Discovery</key><false/>
<key>Loop Suspend</key><integer>1</integer>
</dict></plist>
PLIST

# Peak resident memory of the server and the clients, from GNU time.
[ -n "$gnu_time" ] || die "GNU time (/usr/bin/time) not found (run scripts/deps.sh)"
timer="/usr/bin/time -f %M"
lossnow=0
loss_now() { echo "$lossnow"; }
# From byte 1024: asr adjusts the GPT there when the target is larger.
check() { cmp -i 1024 -n $((bytes - 1024)) "$raw" "$1" || die "$1 differs from the source disk"; }

# asr_run N: a fresh server, N clients at once; prints the seconds.
asr_run() {
	local n=$1 t0 t1 i cp=()
	rm -f "$tdir"/*
	ip netns exec "${p}s" $timer -o "$dir/mc/server-$n-$(loss_now).rss" "$asr" server --source "$img" --config "$dir/mc/asrconfig.plist" >"$dir/mc/server.log" 2>&1 &
	local spid=$!
	pids+=("$spid")
	for _ in $(seq 100); do grep -q "Ready to start" "$dir/mc/server.log" && break; sleep 0.1; done
	t0=$(now)
	for i in $(seq "$n"); do
		ip netns exec "${p}c$i" $timer -o "$dir/mc/c$i.rss" "$asr" restore --source asr://198.18.0.1 --file "$tdir/c$i.raw" --noprompt --noverify --timeout 60 >"$dir/mc/c$i.log" 2>&1 &
		cp+=($!)
	done
	for pid in "${cp[@]}"; do wait "$pid" || die "an asr client failed: $(tail -q -n 3 "$dir"/mc/c*.log) server: $(tail -n 3 "$dir/mc/server.log")"; done
	t1=$(now)
	# $spid is GNU time, which ignores SIGINT; the server is its child.
	pkill -INT -P "$spid"; wait "$spid" || true
	for i in $(seq "$n"); do check "$tdir/c$i.raw"; done
	local worst=0 k
	for i in $(seq "$n"); do k=$(tail -1 "$dir/mc/c$i.rss"); [ "$k" -gt "$worst" ] && worst=$k; done
	echo "$worst" >"$dir/mc/clients-$n-$lossnow.rss"
	elapsed "$t0" "$t1"
}

udp_run() {
	local n=$1 t0 t1 i cp=()
	rm -f "$tdir"/*
	local bits=$((rate * 8))
	t0=$(now)
	for i in $(seq "$n"); do
		ip netns exec "${p}c$i" udp-receiver --file "$tdir/u$i.raw" --interface eth0 --nokbd --portbase 9100 \
			--mcast-rdv-address 239.255.20.2 >"$dir/mc/u$i.log" 2>&1 &
		cp+=($!)
	done
	ip netns exec "${p}s" udp-sender --file "$raw" --interface eth0 --nokbd --portbase 9100 --min-receivers "$n" \
		--max-bitrate "$bits" --mcast-rdv-address 239.255.20.2 --mcast-data-address 239.255.20.3 >"$dir/mc/usender.log" 2>&1 &
	local spid=$!
	pids+=("$spid")
	for pid in "${cp[@]}"; do wait "$pid" || die "a udp-receiver failed: $(tail -q -n 3 "$dir"/mc/u*.log)"; done
	wait "$spid" || true
	t1=$(now)
	for i in $(seq "$n"); do check "$tdir/u$i.raw"; done
	elapsed "$t0" "$t1"
}

declare -A t
loss 0
t[asr1]=$(asr_run 1)
t[asr4]=$(asr_run 4)
loss 2
t[asr1l]=$(asr_run 1)
t[asr4l]=$(asr_run 4)
loss 0
t[udp1]=$(udp_run 1)
t[udp4]=$(udp_run 4)

printf '\nMulticast at %d bytes/s, %s disk (%d bytes; prepared image %d bytes), clients --noverify to tmpfs\n' \
	"$rate" "$size_arg" "$bytes" "$(stat -c %s "$img")"
printf '%-34s %8s\n' scenario seconds
printf '%-34s %8s\n' "asr, 1 client" "${t[asr1]}" "asr, 4 clients" "${t[asr4]}" \
	"asr, 1 client, 2% loss" "${t[asr1l]}" "asr, 4 clients, 2% loss" "${t[asr4l]}" \
	"udpcast (raw disk), 1 client" "${t[udp1]}" "udpcast (raw disk), 4 clients" "${t[udp4]}"
a=$(ratio "${t[asr4]}" "${t[asr1]}")
b=$(ratio "${t[asr4l]}" "${t[asr4]}")
b1=$(ratio "${t[asr1l]}" "${t[asr1]}")
c=$(ratio "${t[asr1]}" "${t[udp1]}")
d=$(ratio "${t[asr4]}" "${t[udp4]}")
printf '\n4 clients / 1 client:              %s (target <= 1.10) %s\n' "$a" "$(verdict "$a" "<=" 1.10)"
printf '2%% loss / lossless, 1 client:      %s (target <= 1.25) %s\n' "$b1" "$(verdict "$b1" "<=" 1.25)"
printf '2%% loss / lossless, 4 clients:     %s (target <= 1.25) %s\n' "$b" "$(verdict "$b" "<=" 1.25)"
printf 'asr / udpcast, 1 client:           %s (target <= 1.00) %s\n' "$c" "$(verdict "$c" "<=" 1.00)"
printf 'asr / udpcast, 4 clients:          %s (target <= 1.00) %s\n' "$d" "$(verdict "$d" "<=" 1.00)"
kib() { awk -v k="$(tail -1 "$1")" 'BEGIN{printf "%.1f MiB", k/1024}'; }
printf '\npeak RSS: server with 1 client %s, with 4 clients %s; a client (worst of 4, 2%% loss) %s\n' \
	"$(kib "$dir/mc/server-1-0.rss")" "$(kib "$dir/mc/server-4-0.rss")" "$(kib "$dir/mc/clients-4-2.rss")"
