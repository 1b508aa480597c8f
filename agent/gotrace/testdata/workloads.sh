#!/usr/bin/env bash
# Records the workload windows of this directory: real traces of services
# made to collect garbage, stop the world and burst runnable goroutines
# (tests/go/cmd/fixture with the machine's Go 1.26, tests/go/legacy built
# with Go 1.22), small enough to commit (< 300 KB each), then writes every
# trace's oracle summary (summaries.sh). See README.md.
#
# usage: agent/gotrace/testdata/workloads.sh [BIN_DIR]   (default <repo>/target/fixtures)
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../../.." && pwd)"
bin="${1:-$repo/target/fixtures}"

"$repo/tests/go/build.sh" "$bin"
bin="$(cd "$bin" && pwd)"

# shellcheck source=service.sh
source "$here/service.sh"

# capture NAME SECONDS BINARY FLAGS...: start the service, wait for its
# "listening on" line, let the workload run 0.5 s, fetch one window. With
# PROFILE=1 a CPU profile runs meanwhile, so the window holds CPU samples;
# GODEBUG is passed to the service.
capture() {
	local name="$1" secs="$2" exe="$3"
	shift 3
	start_service "$exe" "$@"
	local prof=""
	if [[ "${PROFILE:-0}" == 1 ]]; then
		curl -sfS -o /dev/null "$url/debug/pprof/profile?seconds=2" &
		prof=$!
	fi
	sleep 0.5
	curl -sfS -o "$here/$name" "$url/debug/pprof/trace?seconds=$secs"
	if [[ -n "$prof" ]]; then wait "$prof"; fi
	stop_service
	local size
	size="$(stat -c %s "$here/$name")"
	printf 'workloads.sh: %-20s %7d bytes\n' "$name" "$size" >&2
	# Window sizes vary from run to run; the repository takes small ones.
	if ((size > 300000)); then
		echo "workloads.sh: $name is over 300 KB, run again" >&2
		exit 1
	fi
}

capture go1.26-gc.trace 0.25 fixture -gc-every 100ms -stw-every 50ms -pairs 1 -rate 100
capture go1.26-alloc.trace 0.25 fixture -alloc-rate 100000000
capture go1.26-burst.trace 2 fixture -burst 200 -burst-every 100ms
PROFILE=1 capture go1.26-cpu.trace 0.5 fixture -burst 200 -burst-every 5ms
GODEBUG=traceallocfree=1 capture go1.26-allocfree.trace 0.2 fixture -alloc-rate 20000000
capture go1.22-alloc.trace 1 legacy-go1.22 -alloc-rate 50000000 -stw-every 50ms
capture go1.22-burst.trace 0.5 legacy-go1.22 -burst 200 -burst-every 100ms -gc-every 200ms

"$here/summaries.sh" "$bin"
