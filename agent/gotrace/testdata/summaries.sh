#!/usr/bin/env bash
# Writes <file>.summary.json beside every trace in this directory: what the
# Go oracle tests/go/cmd/tracesummary (golang.org/x/exp/trace) says of it,
# the numbers the crate's tests hold the Rust decoder and summary to. Run it
# after adding or regenerating a trace (make.sh, workloads.sh).
#
# usage: agent/gotrace/testdata/summaries.sh [BIN_DIR]   (default <repo>/target/fixtures)
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../../.." && pwd)"
bin="${1:-$repo/target/fixtures}"

"$repo/tests/go/build.sh" "$bin" --no-legacy
bin="$(cd "$bin" && pwd)"
cd "$here"
for f in *.trace; do
	# A trace the oracle rejects (or does not summarise) still gets its
	# line: the tests check the decoder rejects it too.
	"$bin/tracesummary" "$f" >"$f.summary.json" || true
	printf 'summaries.sh: %-24s %s\n' "$f" "$(head -c 90 "$f.summary.json")" >&2
done
