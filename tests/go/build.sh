#!/usr/bin/env bash
# usage: tests/go/build.sh [DIR] [--no-legacy]
# Builds the Go test fixtures into one directory (default <repo>/target/fixtures):
#   fixture, tracecheck, tracesummary, loadgen
#                                  with the machine's Go (>= 1.26, see go.mod)
#   legacy-go1.22, legacy-go1.21   the stdlib-only legacy/ service built with
#                                  those exact old toolchains, which the go
#                                  command fetches from the module proxy once.
# Re-running is quick: go build skips binaries that are already up to date.
set -euo pipefail

# Old toolchains: the newest patch releases the module proxy serves.
GO121=go1.21.13
GO122=go1.22.12

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
legacy=1
args=()
for a in "$@"; do
	case "$a" in
	--no-legacy) legacy=0 ;; # the demo needs only the machine's Go
	*) args+=("$a") ;;
	esac
done
out="${args[0]:-$repo/target/fixtures}"

if ! command -v go >/dev/null 2>&1; then
	echo "build.sh: the 'go' command is not in PATH; install Go 1.26 or newer (e.g. /usr/local/go/bin) and retry" >&2
	exit 1
fi
mkdir -p "$out"
out="$(cd "$out" && pwd)"

# -buildvcs=false: the repo may be a fresh clone, a worktree or have no git
# binary at all; VCS stamping would only make builds fail there.
echo "build.sh: $(go version) -> $out" >&2
(cd "$here" && go build -buildvcs=false -o "$out/" ./cmd/fixture ./cmd/tracecheck ./cmd/tracesummary ./cmd/loadgen)

[[ $legacy == 1 ]] || exit 0
for tc in "$GO122" "$GO121"; do
	minor="${tc%.*}" # go1.22.12 -> go1.22
	echo "build.sh: legacy with $tc -> $out/legacy-$minor" >&2
	(cd "$here/legacy" && GOTOOLCHAIN="$tc" go build -buildvcs=false -o "$out/legacy-$minor" .)
done
