#!/usr/bin/env bash
# usage: tests/fuzz/run.sh [SECONDS] [TARGET...]
# Runs every fuzz target (or those named) for SECONDS each (default 20, what
# CI runs; the documented long run is 600). Seeds are real inputs in
# tests/fuzz/seeds/<target>; the growing corpus lives in
# target/fuzz-corpus/<target> and crashes in target/fuzz-artifacts/<target>.
# A crash fails the run; turn it into a regression test (see the README).
#
# Only stable rustc is installed: RUSTC_BOOTSTRAP=1 lets cargo-fuzz pass its
# -Z flags. No sanitizer: the fuzzed code is safe Rust, and without ASan the
# targets run several times faster. Overflow checks and debug assertions are
# on (cargo-fuzz's default), which is what catches arithmetic bugs.
set -euo pipefail

secs="${1:-20}"
shift || true
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$repo"
targets=("$@")
((${#targets[@]})) || targets=(trace_framing trace_decode webhook_payload promtext config_load)
export RUSTC_BOOTSTRAP=1
export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"
fuzz=(cargo fuzz run --fuzz-dir tests/fuzz --sanitizer none --target-dir "${CARGO_TARGET_DIR:-$repo/target}/fuzz")

summary=()
for t in "${targets[@]}"; do
	corpus="target/fuzz-corpus/$t"
	artifacts="target/fuzz-artifacts/$t"
	mkdir -p "$corpus" "$artifacts"
	log="target/fuzz-artifacts/$t.log"
	echo "== fuzz $t for ${secs}s" >&2
	if ! "${fuzz[@]}" "$t" "$corpus" "tests/fuzz/seeds/$t" -- \
		-max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -max_len=262144 \
		-artifact_prefix="$artifacts/" -print_final_stats=1 >"$log" 2>&1; then
		tail -n 40 "$log" >&2
		echo "fuzz $t FAILED: crash input in $artifacts/ (log $log)" >&2
		exit 1
	fi
	execs="$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo '?')"
	summary+=("$t: ${secs}s, $execs executions, $(find "$corpus" -type f | wc -l) corpus inputs, 0 crashes")
done
printf 'fuzz: %s\n' "${summary[@]}" >&2
