#!/usr/bin/env bash
# usage: tests/bench/run.sh [--quick] [SECTION...]
# The benchmarks (tests/bench/main.rs): coverage, cost, overhead, scale, trigger,
# memory, alertmanager, decode, stitch; all of them without SECTION. Each figure is measured beside a
# baseline in the same run. Writes target/bench/results.json and
# target/bench/report.md (BENCH_OUT=DIR to write elsewhere).
#   --quick                  every phase shortened (about 4 minutes): a smoke check
#   BENCH_AGENT_BIN=PATH benchmark another build of the agent
# The full run takes about 25 minutes on 2 cores; run it on a quiet machine.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$repo"
quick=0
sections=()
for a in "$@"; do
	case "$a" in
	--quick) quick=1 ;;
	coverage | cost | overhead | scale | trigger | memory | alertmanager | decode | stitch) sections+=("$a") ;;
	*)
		echo "usage: tests/bench/run.sh [--quick] [coverage|cost|overhead|scale|trigger|memory|alertmanager|decode|stitch]..." >&2
		exit 2
		;;
	esac
done
bash tests/setup.sh
export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"
# 100 targets and 100 Go processes: more descriptors than a shell's usual 1024 may be needed.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
# The agent under test is the release build; the harness itself needs no
# optimising, so it shares the test suite's debug build.
cargo build --release --locked -p flightrec --bin flightrec
export BENCH_AGENT_BIN="${BENCH_AGENT_BIN:-${CARGO_TARGET_DIR:-$repo/target}/release/flightrec}"
# The decoder measured against Go's parser (the decode section).
cargo build --release --locked -p gotrace --example decode_bench
export BENCH_DECODE_BIN="${BENCH_DECODE_BIN:-${CARGO_TARGET_DIR:-$repo/target}/release/examples/decode_bench}"
BENCH_QUICK="$quick" BENCH_SECTIONS="${sections[*]:-}" \
	cargo test --locked -p flightrec --test bench -- --ignored --nocapture
echo "bench: report in ${BENCH_OUT:-$repo/target/bench}/report.md" >&2
