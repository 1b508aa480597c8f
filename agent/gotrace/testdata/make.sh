#!/usr/bin/env bash
# Regenerates the small real trace files in this directory from the Go
# fixtures (tests/go). Each comes from tests/go/legacy built with the named
# toolchain (fetched by the go command from the module proxy) and running one
# paced goroutine pair, so the windows stay small. See README.md.
#
# usage: agent/gotrace/testdata/make.sh [BIN_DIR]   (default <repo>/target/fixtures)
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../../.." && pwd)"
bin="${1:-$repo/target/fixtures}"

"$repo/tests/go/build.sh" "$bin"
bin="$(cd "$bin" && pwd)"
# build.sh makes legacy-go1.21/1.22; the other versions are only needed here.
for tc in go1.23.12 go1.25.14 go1.26.8; do
	(cd "$repo/tests/go/legacy" && GOTOOLCHAIN="$tc" go build -buildvcs=false -o "$bin/legacy-${tc%.*}" .)
done

# shellcheck source=service.sh
source "$here/service.sh"

# capture NAME SECONDS BINARY FLAGS...: start the service, wait for its
# "listening on" line, let it settle, fetch one window into NAME.
capture() {
	local name="$1" secs="$2" exe="$3"
	shift 3
	start_service "$exe" "$@"
	sleep 0.5
	curl -sfS -o "$here/$name" "$url/debug/pprof/trace?seconds=$secs"
	stop_service
	printf 'make.sh: %-18s %7d bytes  %s\n' "$name" "$(stat -c %s "$here/$name")" "$(head -c 13 "$here/$name")" >&2
}

capture go1.21.trace 1 legacy-go1.21 -pairs 1 -rate 100
capture go1.22.trace 1 legacy-go1.22 -pairs 1 -rate 100
capture go1.23.trace 1 legacy-go1.23 -pairs 1 -rate 100
capture go1.25.trace 1 legacy-go1.25 -pairs 1 -rate 100
capture go1.26.trace 1 legacy-go1.26 -pairs 1 -rate 100
capture go1.26-busy.trace 0.25 legacy-go1.26 -pairs 4 -rate 2000

# x/exp/trace also reads the old v1 format of go1.21.trace.
"$bin/tracecheck" "$here"/*.trace
