#!/usr/bin/env bash
# usage: tests/soak/run.sh [MINUTES]     (default 30)
# The soak run: the release agent for MINUTES against several real Go
# targets (busy, idle, flapping, down), periodic API snapshots and a latency
# trigger, and an S3 sink killed for 60 s out of every 3 minutes. It checks
# that memory and open fds stay flat and that every bundle reaches S3 byte
# for byte, and writes target/soak/report.md and target/soak/samples.csv.
# Not part of tests/run.sh (CI): it takes as long as it is told to.
set -euo pipefail

minutes="${1:-30}"
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$repo"
bash tests/setup.sh
export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"
SOAK_MINUTES="$minutes" cargo test --release --locked -p flightrec --test soak -- --ignored --nocapture
echo "soak: report in $repo/target/soak/report.md" >&2
