#!/usr/bin/env bash
# Installs everything the test suite needs, idempotently, on a fresh Debian
# machine with Rust, Go, Node.js and apt:
#   - the Go fixture services (built with the machine's Go, plus real Go 1.21
#     and 1.22 services built with toolchains the go command fetches),
#   - Prometheus and Alertmanager (Debian packages) for the webhook tests,
#   - Chromium (Debian package) to open report.html headless (tests/report.rs),
#   - s3s-fs 0.14.1 (a real S3 server that checks SigV4) for the S3 sink,
#   - cargo-fuzz 0.13.2 for the fuzz targets in tests/fuzz,
#   - Azurite 3.35.0 (npm) for the Azure sink,
#   - a Kubernetes control plane (kube-apiserver and kubectl v1.35.4, etcd
#     3.6.16) built from the Go module proxy into ~/.cache/flightrec/k8s
#     (tests/k8s/build.sh; about 10 minutes once per machine), and openssl,
#     which makes its ServiceAccount signing keys.
# Each step is skipped when what it installs is already there.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
say() { printf 'setup: %s\n' "$*" >&2; }

as_root() {
	if [[ $(id -u) == 0 ]]; then "$@"; else sudo "$@"; fi
}

need_apt=()
command -v prometheus >/dev/null || need_apt+=(prometheus)
command -v prometheus-alertmanager >/dev/null || need_apt+=(prometheus-alertmanager)
command -v openssl >/dev/null || need_apt+=(openssl)
[[ -x /usr/bin/chromium ]] || need_apt+=(chromium)
if ((${#need_apt[@]})); then
	say "apt-get install ${need_apt[*]}"
	as_root apt-get update -qq
	DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi

cargo_bin="${CARGO_HOME:-$HOME/.cargo}/bin"
if [[ ! -x $cargo_bin/s3s-fs ]] || ! "$cargo_bin/s3s-fs" --version 2>/dev/null | grep -q '0\.14\.1'; then
	say "cargo install s3s-fs@0.14.1 (a few minutes, once)"
	cargo install s3s-fs@0.14.1 --features binary --locked --quiet
fi

# cargo-fuzz for tests/fuzz (built on stable rustc with RUSTC_BOOTSTRAP=1).
if [[ ! -x $cargo_bin/cargo-fuzz ]] || ! "$cargo_bin/cargo-fuzz" --version 2>/dev/null | grep -q '0\.13\.2'; then
	say "cargo install cargo-fuzz@0.13.2"
	cargo install cargo-fuzz@0.13.2 --locked --quiet
fi

node_dir="$repo/target/node"
if [[ ! -x $node_dir/node_modules/.bin/azurite-blob ]]; then
	say "npm install azurite@3.35.0 into target/node"
	mkdir -p "$node_dir"
	npm install --silent --no-audit --no-fund --prefix "$node_dir" azurite@3.35.0 >/dev/null
fi

say "building the Go fixtures"
bash "$repo/tests/go/build.sh" "$repo/target/fixtures"
# Instant when the binaries for the pinned versions are cached; its stdout
# (the cache directory) is for the tests.
bash "$repo/tests/k8s/build.sh" >/dev/null
say "ready"
