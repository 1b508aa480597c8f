#!/usr/bin/env bash
# The build stage of the Dockerfile, as a script: the image runs exactly this,
# and tests/run.sh runs it too, so a broken image build shows up without a
# container engine.
#
# usage: deploy/docker/build.sh OUT_DIR    (installs OUT_DIR/flightrec)
set -euo pipefail

out="${1:?usage: deploy/docker/build.sh OUT_DIR}"
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$repo"
cargo build --release --locked -p flightrec
install -D -m 0755 "${CARGO_TARGET_DIR:-target}/release/flightrec" "$out/flightrec"
"$out/flightrec" --version
