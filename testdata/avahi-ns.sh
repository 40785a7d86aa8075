#!/bin/bash
# avahi-ns.sh NS COMMAND [ARG...]: run COMMAND in network namespace NS beside
# a private avahi-daemon and the D-Bus system bus it talks through, inside a
# mount namespace of their own, so the host's /run and its daemons (if any)
# are never touched. Both daemons are stopped when COMMAND ends.
# Used by the DNS-SD tests: avahi is the real mDNS peer asr must work with.
set -euo pipefail
ns=$1
shift
exec ip netns exec "$ns" unshare --mount --propagation private bash -c '
	set -euo pipefail
	mkdir -p /run/dbus /run/avahi-daemon
	mount -t tmpfs asr-dbus /run/dbus
	mount -t tmpfs asr-avahi /run/avahi-daemon
	dbus-daemon --system --nofork --nopidfile &
	dbus=$!
	avahi=""
	cleanup() {
		[ -z "$avahi" ] || kill "$avahi" 2>/dev/null || true
		kill "$dbus" 2>/dev/null || true
		wait 2>/dev/null || true
	}
	trap cleanup EXIT
	for _ in $(seq 50); do [ -S /run/dbus/system_bus_socket ] && break; sleep 0.1; done
	avahi-daemon --no-drop-root --no-chroot --no-rlimits &
	avahi=$!
	for _ in $(seq 50); do avahi-daemon -c 2>/dev/null && break; sleep 0.1; done
	"$@"
' avahi-ns "$@"
