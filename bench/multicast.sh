#!/bin/bash
# bench/multicast.sh: asr's multicast next to udpcast, like for like, in time
# and in CPU, with 1 client and with many.
#
# Run by `make bench`; needs root. A lab of network namespaces on one bridge
# (server 198.18.0.1, clients 198.18.0.11 and up, multicast groups in
# 239.255.0.0/16), made for this run and removed after it, on any exit and on
# Ctrl-C; nothing is sent on the host's interfaces. Names start with
# $ASR_LAB_PREFIX (default amb) and this shell's PID.
#
# Cases, each with 1 client and with BENCH_CLIENTS clients, all at the same
# rate cap (BENCH_RATE bytes/s):
#   asr       asr server sending its prepared image (.asr), asr clients
#             restoring it (--noverify: this measures the network path)
#   udp-asr   udp-sender sending the same .asr file: the same bytes on the
#             wire as asr, so time and CPU compare like with like
#   udp-raw   udp-sender sending the raw disk, as admins use it: the
#             user's-choice figure (more bytes, no decompression);
#             BENCH_RAW=0 leaves it out (at 25 MB/s it is most of a run)
#   asr-loss  asr again, with BENCH_LOSS% of the clients' UDP dropped by
#             nftables (BENCH_LOSS=0 leaves it out)
#   asr-base  with BENCH_ASR_BASE=PATH, that asr binary (an older build, say
#             of main) as server and clients: before and after, interleaved
#   asr-seg   with BENCH_SEGMENTED=1, asr again with the server's link cutting
#             its segmentation-offload sends into datagrams before the bridge
#             (gso_max_segs 1), as a network card does: clients then receive
#             one datagram at a time, as across a real switch. In the other
#             cases the veth lab passes a server's 45-packet sends to the
#             clients whole, which clients asking for UDP GRO take in one read.
# BENCH_ASR=PATH runs that asr binary instead of bin/asr.
# Runs are interleaved (for each run, every case in turn) and the table gives
# medians of BENCH_RUNS runs. Both tools' clocks start alike: when the first
# process of the transfer is launched (asr's server, whose start-up counts;
# udpcast's receivers, then its sender at once) and stop when the last client
# is done. Both start sending once all clients are there: asr's server with
# Minimum Clients N, udp-sender with --min-receivers N. Every process runs
# under GNU time, which gives its CPU (user+sys) and peak RSS; "% core" is
# its CPU over its own wall time. Targets are files on tmpfs, so this
# machine's disk does not set the pace, and every target is compared with
# what was sent. Per-run figures are kept in $BENCH_DIR/mc/runs.tsv (asr's
# logs in mc/logs), with the 1-minute load average when each case ended
# (the machine may be shared) and, for asr, the rate its server kept in its
# first pass: a server starved of CPU sends slower than its Data Rate, and
# every client waits.
set -euo pipefail
. "$(dirname -- "${BASH_SOURCE[0]}")/lib.sh"
bench_init bench-multicast
asr=${BENCH_ASR:-$asr}
base=${BENCH_ASR_BASE:-}
[ -z "$base" ] || [ -x "$base" ] || usage_die "BENCH_ASR_BASE: $base is not an executable"
segmented=${BENCH_SEGMENTED:-0}
dir=${BENCH_DIR:-/var/tmp/asr-bench}
size_arg=${BENCH_SIZE:-1G}
fill=${BENCH_FILL:-40}
rate=${BENCH_RATE:-25000000}
runs=${BENCH_RUNS:-5}
many=${BENCH_CLIENTS:-8}
lossp=${BENCH_LOSS:-2}
rawcase=${BENCH_RAW:-1}
udpfail=0
tmo=${BENCH_TIMEOUT:-900}
prefix=${ASR_LAB_PREFIX:-amb}
tdir=${BENCH_TARGET_DIR:-/dev/shm/$prefix-bench-mc-$$}
p=$prefix$$
positive BENCH_RATE "$rate"
positive BENCH_RUNS "$runs"
positive BENCH_CLIENTS "$many"
positive BENCH_TIMEOUT "$tmo"
[ "$many" -ge 2 ] && [ "$many" -le 100 ] || usage_die "BENCH_CLIENTS must be 2 to 100"
case $lossp in '' | *[!0-9]*) usage_die "BENCH_LOSS must be a whole percentage (0 leaves the loss cases out)" ;; esac
[ "$lossp" -lt 100 ] || usage_die "BENCH_LOSS must be below 100"
[ ${#p} -le 11 ] || usage_die "ASR_LAB_PREFIX is too long for interface names (at most 4 characters)"
need "network namespaces" udp-sender udp-receiver nft ip cmp timeout pgrep
[ -n "$gnu_time" ] || die "GNU time (/usr/bin/time) not found (run scripts/deps.sh)"

pids=()
hosts=()
# stop PID: end a process launched by `launch` (GNU time, whose child is
# timeout, whose child is the tool): signal the timeout, which passes the
# signal on and kills the tool 5 s later if it is still there.
stop() { # SIGNAL PID
	local c
	for c in $(pgrep -P "$2" 2>/dev/null || true); do kill "-$1" "$c" 2>/dev/null || true; done
}
cleanup() {
	local pid
	for pid in "${pids[@]}"; do
		kill -0 "$pid" 2>/dev/null || continue
		stop TERM "$pid"
	done
	# Bounded: timeout -k 5 kills what ignores TERM.
	for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
	for h in "${hosts[@]}"; do ip netns del "$h" 2>/dev/null || true; done
	ip netns del "${p}br" 2>/dev/null || true
	rm -rf "$tdir"
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
lock "$dir/mc"
rm -rf "$dir/mc/logs"
"$asr" imagescan --source "$raw" --output "$img" --overwrite >/dev/null
bytes=$(stat -c %s "$raw")
ibytes=$(stat -c %s "$img")
# Many clients' targets at once: the raw disk the largest.
free=$(df -B1 --output=avail "$tdir" | tail -1)
[ "$free" -gt $((many * bytes + 67108864)) ] ||
	die "$tdir has $(mib "$free") free, needs $(mib $((many * bytes))) for $many targets: set BENCH_TARGET_DIR, BENCH_SIZE or BENCH_CLIENTS"

# The lab: a bridge in its own namespace, a veth to each host's namespace.
ip netns add "${p}br"
hosts+=("${p}br")
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
for i in $(seq "$many"); do addhost "c$i" $((10 + i)); done
loss() { # pct: set the clients' loss
	local i
	for i in $(seq "$many"); do
		ip netns exec "${p}c$i" nft delete table inet asrloss 2>/dev/null || true
		[ "$1" -gt 0 ] || continue
		ip netns exec "${p}c$i" nft add table inet asrloss
		ip netns exec "${p}c$i" nft add chain inet asrloss input '{ type filter hook input priority 0; }'
		ip netns exec "${p}c$i" nft add rule inet asrloss input meta l4proto udp numgen random mod 100 '<' "$1" drop
	done
}
# asr_config N: the server's configuration for N clients. Minimum Clients N
# holds the stream until all N have joined, as udp-sender's --min-receivers
# N does: otherwise the first client's join starts the pass and clients that
# join a moment later wait for the next one.
asr_config() {
	cat >"$dir/mc/asrconfig-$1.plist" <<PLIST
<?xml version="1.0" encoding="UTF-8"?>
<plist version="1.0"><dict>
<key>Multicast Address</key><string>239.255.20.1</string>
<key>Data Rate</key><integer>$rate</integer>
<key>DNS Service Discovery</key><false/>
<key>Loop Suspend</key><integer>1</integer>
<key>Minimum Clients</key><integer>$1</integer>
$([ "$1" -le 1 ] || echo '<key>Client Wait</key><integer>60</integer>')
</dict></plist>
PLIST
}

# launch NS OUT LOG CMD...: CMD in host NS's namespace, bounded by timeout,
# under GNU time (wall, user, sys seconds and peak KiB, last line of OUT);
# sets lpid.
launch() {
	local ns=$1 out=$2 log=$3
	shift 3
	ip netns exec "$p$ns" "$gnu_time" -f '%e %U %S %M' -o "$out" timeout -k 5 "$tmo" "$@" >"$log" 2>&1 &
	lpid=$!
	pids+=("$lpid")
}
# From byte 1024: asr adjusts the GPT there when the target is larger.
check_raw() { cmp -i 1024 -n $((bytes - 1024)) "$raw" "$1" || die "$1 differs from the source disk"; }
check_img() { cmp "$img" "$1" || die "$1 differs from the image sent"; }

res=$dir/mc/runs.tsv
printf 'case\tclients\trun\twall_s\tclient_cpu_s\tclient_core_pct\tclient_kib\tserver_cpu_s\tserver_core_pct\tserver_kib\tload1\tpass1_bps\n' >"$res"
# record CASE N RUN T0 T1 [PASS1]: one line of runs.tsv from the time files
# of the server (m/s.time) and the clients (m/cI.time): client CPU is the
# mean per client, client RSS the worst; PASS1 the server's first-pass rate
# (0: not known).
record() {
	local m=$dir/mc f load
	load=$(cut -d' ' -f1 /proc/loadavg)
	for f in s $(seq -f 'c%g' "$2"); do printf '%s %s\n' "$f" "$(tail -n 1 "$m/$f.time")"; done |
		awk -v c="$1" -v n="$2" -v r="$3" -v w="$(elapsed "$4" "$5")" -v l="$load" -v p1="${6:-0}" '
			{
				cpu = $3 + $4; pct = $2 > 0 ? 100 * cpu / $2 : 0
				if ($1 == "s") { scpu = cpu; spct = pct; srss = $5 }
				else { k++; ccpu += cpu; cpct += pct; if ($5 > crss) crss = $5 }
			}
			END { printf "%s\t%d\t%d\t%s\t%.3f\t%.1f\t%d\t%.3f\t%.1f\t%d\t%s\t%d\n", c, n, r, w, ccpu / k, cpct / k, crss, scpu, spct, srss, l, p1 }
		' >>"$res"
}

# asr_case N RUN LOSS [BINARY NAME]: a fresh server, N clients launched once
# it listens.
asr_case() {
	local n=$1 run=$2 t0 t1 i spid cp=() ok=""
	local m=$dir/mc name=asr asr=${4:-$asr}
	[ "$3" -eq 0 ] || name=asr-loss
	[ -z "${5:-}" ] || name=$5
	rm -f "$tdir"/* "$m"/*.time
	t0=$(now)
	asr_config "$n"
	launch s "$m/s.time" "$m/server.log" "$asr" server --source "$img" --config "$m/asrconfig-$n.plist"
	spid=$lpid
	for _ in $(seq 600); do
		grep -q "Ready to start" "$m/server.log" && ok=1 && break
		kill -0 "$spid" 2>/dev/null || break
		sleep 0.05
	done
	[ -n "$ok" ] || die "the asr server did not start: $(tail -n 3 "$m/server.log")"
	for i in $(seq "$n"); do
		launch "c$i" "$m/c$i.time" "$m/c$i.log" "$asr" restore --source asr://198.18.0.1 --file "$tdir/c$i.raw" \
			--noprompt --noverify --timeout 60
		cp+=("$lpid")
	done
	for i in $(seq "$n"); do
		wait "${cp[i - 1]}" || die "asr client $i failed: $(tail -n 3 "$m/c$i.log") server: $(tail -n 3 "$m/server.log")"
	done
	t1=$(now)
	stop INT "$spid"
	wait "$spid" || true
	for i in $(seq "$n"); do check_raw "$tdir/c$i.raw"; done
	# "Pass 1 done: B bytes in S s, R bytes/s"
	record "$name" "$n" "$run" "$t0" "$t1" \
		"$(sed -n 's/^Pass 1 done: .* s, \([0-9]*\) bytes\/s$/\1/p' "$m/server.log" | head -1)"
	# The logs of every asr run, for what the table cannot say (repairs,
	# fallbacks, pass times).
	mkdir -p "$m/logs/$name-$n-$run"
	cp "$m/server.log" $(seq -f "$m/c%g.log" "$n") "$m/logs/$name-$n-$run/"
}

# udp_case N RUN FILE KIND: N udp-receivers, then at once udp-sender of FILE
# (the .asr image or the raw disk) capped at the same rate; the clock stops
# when the last receiver is done.
udp_case() {
	local n=$1 run=$2 file=$3 kind=$4 t0 t1 i spid cp=()
	local m=$dir/mc
	rm -f "$tdir"/* "$m"/*.time
	t0=$(now)
	for i in $(seq "$n"); do
		launch "c$i" "$m/c$i.time" "$m/u$i.log" udp-receiver --file "$tdir/u$i" --interface eth0 --nokbd \
			--portbase 9100 --mcast-rdv-address 239.255.20.2
		cp+=("$lpid")
	done
	launch s "$m/s.time" "$m/usender.log" udp-sender --file "$file" --interface eth0 --nokbd --portbase 9100 \
		--min-receivers "$n" --max-bitrate $((rate * 8)) --mcast-rdv-address 239.255.20.2 \
		--mcast-data-address 239.255.20.3
	spid=$lpid
	local failed=""
	for i in $(seq "$n"); do
		wait "${cp[i - 1]}" || failed="udp-receiver $i failed: $(tail -n 3 "$m/u$i.log" | tr '\n' ' ')"
	done
	t1=$(now)
	wait "$spid" || failed="udp-sender failed: $(tail -n 3 "$m/usender.log" | tr '\n' ' ')"
	if [ -n "$failed" ]; then
		# udp-sender drops a receiver that does not answer in time (a
		# loaded machine): a run of udpcast's that is not timed, said and
		# counted, rather than the end of the benchmark.
		echo "$bench: $kind, $n client(s), run $run not timed: $failed" >&2
		udpfail=$((udpfail + 1))
		return 0
	fi
	for i in $(seq "$n"); do
		if [ "$kind" = udp-raw ]; then check_raw "$tdir/u$i"; else check_img "$tdir/u$i"; fi
	done
	record "$kind" "$n" "$run" "$t0" "$t1"
}

loss 0
for run in $(seq "$runs"); do
	for n in 1 "$many"; do
		echo "$bench: run $run/$runs, $n client(s)" >&2
		asr_case "$n" "$run" 0
		[ -z "$base" ] || asr_case "$n" "$run" 0 "$base" asr-base
		if [ "$segmented" = 1 ]; then
			ip -n "${p}s" link set eth0 gso_max_segs 1
			asr_case "$n" "$run" 0 "$asr" asr-seg
			ip -n "${p}s" link set eth0 gso_max_segs 65535
		fi
		udp_case "$n" "$run" "$img" udp-asr
		[ "$rawcase" = 0 ] || udp_case "$n" "$run" "$raw" udp-raw
		if [ "$lossp" -gt 0 ]; then
			loss "$lossp"
			asr_case "$n" "$run" "$lossp"
			loss 0
		fi
	done
done

# med CASE N COLUMN: the median over the runs of one column of runs.tsv.
med() {
	local col
	col=$(head -1 "$res" | tr '\t' '\n' | grep -nx "$3" | cut -d: -f1)
	# shellcheck disable=SC2046
	median $(awk -F'\t' -v c="$1" -v n="$2" -v k="$col" '$1 == c && $2 == n && $k != 0 { print $k }' "$res")
}
f1() { awk -v x="$1" 'BEGIN { printf "%.1f", x }'; }
f2() { awk -v x="$1" 'BEGIN { printf "%.2f", x }'; }

printf '\nMulticast at %d bytes/s: %s disk (%d bytes), its .asr image %d bytes; medians of %d interleaved run(s);\n' \
	"$rate" "$size_arg" "$bytes" "$ibytes" "$runs"
printf 'clocks from launching the first process to the last client done; clients --noverify to tmpfs; CPU = user+sys\n\n'
hdr() {
	printf '%-30s %8s %8s %6s | %9s %6s %9s | %9s %6s %9s\n' "$@"
}
hdr "" "time" "time" "" "client" "" "client" "server" "" "server"
hdr "case" "1 cl." "$many cl." "$many/1" "CPU 1 cl." "% core" "CPU $many cl." "CPU 1 cl." "% core" "CPU $many cl."
declare -A v
row() { # CASE LABEL
	local c=$1 k
	for k in wall_s client_cpu_s client_core_pct server_cpu_s server_core_pct; do
		v[$c,1,$k]=$(med "$c" 1 "$k")
		v[$c,$many,$k]=$(med "$c" "$many" "$k")
	done
	hdr "$2" "$(f2 "${v[$c,1,wall_s]}")" "$(f2 "${v[$c,$many,wall_s]}")" \
		"$(ratio "${v[$c,$many,wall_s]}" "${v[$c,1,wall_s]}")" \
		"$(f2 "${v[$c,1,client_cpu_s]}")" "$(f1 "${v[$c,1,client_core_pct]}")" "$(f2 "${v[$c,$many,client_cpu_s]}")" \
		"$(f2 "${v[$c,1,server_cpu_s]}")" "$(f1 "${v[$c,1,server_core_pct]}")" "$(f2 "${v[$c,$many,server_cpu_s]}")"
}
rratio() { # LABEL CASE-A CASE-B: A / B for every column
	local a=$2 b=$3
	hdr "$1" "$(ratio "${v[$a,1,wall_s]}" "${v[$b,1,wall_s]}")" "$(ratio "${v[$a,$many,wall_s]}" "${v[$b,$many,wall_s]}")" "" \
		"$(ratio "${v[$a,1,client_cpu_s]}" "${v[$b,1,client_cpu_s]}")" "" "$(ratio "${v[$a,$many,client_cpu_s]}" "${v[$b,$many,client_cpu_s]}")" \
		"$(ratio "${v[$a,1,server_cpu_s]}" "${v[$b,1,server_cpu_s]}")" "" "$(ratio "${v[$a,$many,server_cpu_s]}" "${v[$b,$many,server_cpu_s]}")"
}
row asr "asr (.asr image)"
[ -z "$base" ] || row asr-base "asr, BENCH_ASR_BASE"
[ "$segmented" != 1 ] || row asr-seg "asr, datagrams cut at the link"
row udp-asr "udpcast, same .asr bytes"
[ "$rawcase" = 0 ] || row udp-raw "udpcast, raw disk"
[ "$lossp" -eq 0 ] || row asr-loss "asr, $lossp% loss"
echo
rratio "asr / udpcast, same bytes" asr udp-asr
[ "$rawcase" = 0 ] || rratio "asr / udpcast, raw disk" asr udp-raw
[ "$lossp" -eq 0 ] || rratio "asr $lossp% loss / lossless" asr-loss asr
[ -z "$base" ] || rratio "asr / BENCH_ASR_BASE" asr asr-base
[ -z "$base" ] || rratio "BENCH_ASR_BASE / udpcast, same" asr-base udp-asr
[ "$segmented" != 1 ] || rratio "asr, cut at the link / udpcast" asr-seg udp-asr

scale=$(ratio "${v[asr,$many,wall_s]}" "${v[asr,1,wall_s]}")
ccpu=$(ratio "${v[asr,1,client_cpu_s]}" "${v[udp-asr,1,client_cpu_s]}")
printf '\nasr, %d clients / 1 client:                  %s (target <= 1.10) %s\n' "$many" "$scale" "$(verdict "$scale" "<=" 1.10)"
printf 'asr client CPU / udp-receiver, same bytes:  %s (target <= 1.50) %s\n' "$ccpu" "$(verdict "$ccpu" "<=" 1.50)"
if [ -n "$base" ]; then
	printf 'BENCH_ASR_BASE, %d clients / 1 client:       %s\n' "$many" "$(ratio "${v[asr-base,$many,wall_s]}" "${v[asr-base,1,wall_s]}")"
	printf 'BENCH_ASR_BASE client CPU / udp-receiver:   %s\n' "$(ratio "${v[asr-base,1,client_cpu_s]}" "${v[udp-asr,1,client_cpu_s]}")"
fi
if [ "$lossp" -gt 0 ]; then
	for n in 1 "$many"; do
		l=$(ratio "$(med asr-loss "$n" wall_s)" "${v[asr,$n,wall_s]}")
		printf 'asr %d%% loss / lossless, %d client(s):       %s (target <= 1.25) %s\n' "$lossp" "$n" "$l" "$(verdict "$l" "<=" 1.25)"
	done
fi
kib() { awk -v k="$1" 'BEGIN { printf "%.1f MiB", k / 1024 }'; }
printf '\npeak RSS (medians): asr server with 1 client %s, with %d clients %s; an asr client (worst of %d) %s; udp-receiver %s\n' \
	"$(kib "$(med asr 1 server_kib)")" "$many" "$(kib "$(med asr "$many" server_kib)")" "$many" \
	"$(kib "$(med asr "$many" client_kib)")" "$(kib "$(med udp-asr 1 client_kib)")"
mbs() { awk -v b="$1" 'BEGIN { printf "%.1f MB/s", b / 1e6 }'; }
printf 'asr server, first pass (medians): %s with 1 client, %s with %d (Data Rate %s)\n' \
	"$(mbs "$(med asr 1 pass1_bps)")" "$(mbs "$(med asr "$many" pass1_bps)")" "$many" "$(mbs "$rate")"
printf 'load average (1 min) as the cases ended: median %s, from %s to %s\n' "$(median $(tail -n +2 "$res" | cut -f11))" \
	"$(tail -n +2 "$res" | cut -f11 | sort -g | head -1)" "$(tail -n +2 "$res" | cut -f11 | sort -g | tail -1)"
[ "$udpfail" -eq 0 ] || printf 'udpcast runs not timed (a receiver dropped or failed): %d\n' "$udpfail"
printf 'per-run figures: %s\n' "$res"
