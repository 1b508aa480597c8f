#!/usr/bin/env bash
# The whole test suite: installs what the tests need (tests/setup.sh), checks
# formatting and lints, runs every unit and integration test against real Go
# services, Prometheus, Alertmanager, S3 and Azure servers, fuzzes each input
# parser for 20 s (tests/fuzz/run.sh), builds the release
# binary with the Dockerfile's build script, then runs the README's demo as a
# smoke test. Extra arguments go to `cargo test`.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
bash tests/setup.sh
export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"
# Build products live outside the clone (like Go's build cache), so a
# machine that ran the suite once compiles only this repository's crates
# again: CI runs every time on a fresh clone, and the dependencies (kube,
# object_store, ...) are most of the build, three times over (tests, fuzz
# targets, release).
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/flightrec/cargo-target}"
echo "== cargo builds in $CARGO_TARGET_DIR" >&2

echo "== cargo fmt --check" >&2
cargo fmt --all -- --check
rustfmt --check --edition 2021 tests/fuzz/fuzz_targets/*.rs
echo "== cargo clippy" >&2
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "== cargo test" >&2
cargo test --workspace --locked "$@"
echo "== fuzz, 20 s per target (tests/fuzz/run.sh 600 for the long run)" >&2
bash tests/fuzz/run.sh 20
echo "== container build script (deploy/docker/build.sh, the Dockerfile's build stage)" >&2
bash deploy/docker/build.sh target/docker-out
echo "== demo (deploy/demo/run.sh, reusing that release build)" >&2
bash deploy/demo/run.sh
echo "== all tests passed" >&2
