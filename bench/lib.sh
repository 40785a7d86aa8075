# shellcheck shell=bash
# bench/lib.sh: what every benchmark shares. Source it, then name the
# benchmark:
#
#	. "$(dirname -- "${BASH_SOURCE[0]}")/lib.sh"
#	bench_init bench-http
#
# bench_init sets root (the repository) and asr (bin/asr), LC_ALL=C, and the
# exit traps: at_exit FUNC registers a cleanup, run last-registered first on
# any exit (Ctrl-C included); a cleanup that returns non-zero makes the exit
# status 1. The rest: die, usage_die, positive, need, lock, now, elapsed,
# calc, ratio, mib, median, drop_caches, gnu_time and verdict (MET or
# MISSED, one spelling for every benchmark).

bench_init() { # NAME
	bench=$1
	root=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd)
	asr=$root/bin/asr
	export LC_ALL=C
	_bench_hooks=()
	trap _bench_exit EXIT
	trap 'exit 130' INT TERM
	# Peak RSS comes from GNU time when it is installed; otherwise it is n/a.
	gnu_time=""
	if [ -x /usr/bin/time ] && /usr/bin/time -f %M -o /dev/null true 2>/dev/null; then
		gnu_time=/usr/bin/time
	fi
}

die() { echo "$bench: $*" >&2; exit 1; }
usage_die() { echo "$bench: $*" >&2; exit 2; }

# positive NAME VALUE: VALUE is a positive whole number, else a usage error.
positive() {
	case $2 in '' | *[!0-9]* | 0) usage_die "$1 must be a positive number" ;; esac
}

# need WHY TOOL...: root (for WHY), the asr binary, and every TOOL.
need() {
	local why=$1 c
	shift
	[ "$(id -u)" -eq 0 ] || die "needs root ($why)"
	[ -x "$asr" ] || die "$asr not found: run make build first"
	for c in "$@"; do
		command -v "$c" >/dev/null 2>&1 || die "$c not found (run scripts/deps.sh)"
	done
}

at_exit() { _bench_hooks+=("$1"); }
_bench_exit() {
	local rc=$? i
	for ((i = ${#_bench_hooks[@]} - 1; i >= 0; i--)); do
		"${_bench_hooks[i]}" || rc=1
	done
	exit "$rc"
}

# lock DIR: one benchmark at a time in DIR (two would share, and delete,
# one target).
lock() {
	mkdir -p "$1"
	exec 9>"$1/.lock"
	flock -n 9 || die "another benchmark is running in $1"
}

# now: wall clock in seconds, with nanoseconds.
now() { date +%s.%N; }
# elapsed START END: seconds between two `now`s, to the millisecond.
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", b - a }'; }
# calc EXPR: floating-point arithmetic, three decimals.
calc() { awk "BEGIN { printf \"%.3f\", $1 }"; }
# ratio A B: A / B, three decimals. Verdicts are taken on this value: with
# two, 1.1035 read as 1.10 and met a goal of at most 1.10.
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", a / b }'; }
# mib BYTES: bytes as MiB, one decimal.
mib() { awk -v b="$1" 'BEGIN { printf "%.1f MiB", b / 1048576 }'; }
# median VALUE...: the middle value (the mean of the two middle ones for an
# even count).
median() {
	printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

# paired "A..." "B...": the ratio A/B of each run's pair (the two lists in
# run order, side by side), as "median min max". Contenders that ran back
# to back share the machine's state of the moment; the median of their
# pairs drifts less with it than the ratio of two medians does.
paired() {
	local -a a b
	read -r -a a <<<"$1"
	read -r -a b <<<"$2"
	local i rs=()
	for i in "${!a[@]}"; do rs+=("$(awk -v x="${a[$i]}" -v y="${b[$i]}" 'BEGIN { printf "%.3f", x / y }')"); done
	printf '%s %s %s\n' "$(median "${rs[@]}")" "$(printf '%s\n' "${rs[@]}" | sort -g | head -n 1)" "$(printf '%s\n' "${rs[@]}" | sort -g | tail -n 1)"
}

# worse A B: the larger of two numbers.
worse() { awk -v a="$1" -v b="$2" 'BEGIN { print (a > b) ? a : b }'; }

drop_caches() {
	sync
	echo 3 >/proc/sys/vm/drop_caches || die "cannot drop the page cache"
}

# verdict VALUE OP LIMIT: MET when VALUE OP LIMIT holds (OP: <=, <, >=, >),
# else MISSED.
verdict() {
	awk -v x="$1" -v op="$2" -v l="$3" 'BEGIN {
		ok = (op == "<=") ? x <= l : (op == "<") ? x < l : (op == ">=") ? x >= l : x > l
		print ok ? "MET" : "MISSED"
	}'
}
