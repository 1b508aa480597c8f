#!/usr/bin/env bash
# Records the stitching fixtures of testdata/stitch/: runs of consecutive
# windows of one real service each, fetched back to back over one kept-alive
# connection as the agent fetches them, so that the gaps and the state
# changes in them are the real ones. Small enough to commit (each run under
# 400 KB). See README.md.
#
# usage: agent/gotrace/testdata/stitch.sh [BIN_DIR]   (default <repo>/target/fixtures)
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../../.." && pwd)"
bin="${1:-$repo/target/fixtures}"
out="$here/stitch"

"$repo/tests/go/build.sh" "$bin"
bin="$(cd "$bin" && pwd)"
mkdir -p "$out"

# shellcheck source=service.sh
source "$here/service.sh"

# run NAME WINDOWS SECONDS BINARY FLAGS...: start the service, let its
# workload run 0.5 s, fetch WINDOWS windows back to back into
# NAME-1.trace, NAME-2.trace...
run() {
	local name="$1" n="$2" secs="$3" exe="$4"
	shift 4
	start_service "$exe" "$@"
	sleep 0.5
	local args=()
	for i in $(seq 1 "$n"); do
		args+=(-sfS -o "$out/$name-$i.trace" "$url/debug/pprof/trace?seconds=$secs" --next)
	done
	curl "${args[@]}" -sfS -o /dev/null "$url/healthz"
	stop_service
	local size
	size="$(cat "$out/$name"-*.trace | wc -c)"
	printf 'stitch.sh: %-16s %d windows, %7d bytes\n' "$name" "$n" "$size" >&2
	((size <= 400000))
}

# seams NAME: what the crate's stitch example says of the run's seams.
seams() {
	local tmp
	tmp="$(mktemp -d)"
	(cd "$repo" && cargo run -q -p gotrace --example stitch -- "$tmp/all.trace" "$out/$1"-*.trace) | grep '^seam'
	rm -rf "$tmp"
}

# retry TRIES CHECK RUN-ARGS...: runs until the run is small enough and
# CHECK (a grep pattern over its seams, or "") matches; window contents
# vary from run to run.
retry() {
	local tries="$1" check="$2"
	shift 2
	for _ in $(seq "$tries"); do
		if run "$@" && { [[ -z "$check" ]] || seams "$1" | grep -q -- "$check"; }; then
			return 0
		fi
		rm -f "$out/$1"-*.trace
	done
	echo "stitch.sh: no run of $1 fit (size, or seams matching '$check') in $tries tries" >&2
	exit 1
}

# User regions open across the seams, tasks and logs.
retry 3 "" go1.26-regions 3 0.3 fixture -pairs 1 -rate 100 -regions 200ms
# A GC cycle running at a seam (it ends or begins in the gap), mark
# assists, stop-the-world pauses: short windows of a service collecting
# all the time.
retry 20 "gc: [-1]" go1.26-gc 3 0.02 fixture -alloc-rate 200000000 -gc-every 3ms
# Runnable goroutines by the hundred, some born or ended in the gaps.
retry 3 "" go1.26-burst 3 0.2 fixture -burst 100 -burst-every 30ms
# The old generation framing (no end marker) and Go 1.22's event set.
retry 3 "" go1.22 3 0.3 legacy-go1.22 -pairs 1 -rate 100 -regions 200ms -gc-every 150ms

"$bin/tracecheck" "$out"/*.trace
