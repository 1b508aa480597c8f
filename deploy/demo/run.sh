#!/usr/bin/env bash
# The main job, end to end, with flightrec's embedded defaults (no config, no
# cloud): builds flightrec and a demo Go service, starts the service on
# 127.0.0.1:6060 (the default target), records it into ./flightrec-data,
# takes a snapshot, verifies every window with Go's own trace parser, and
# prints where the bundle is, its report.html and the `go tool trace` commands
# that open bundle.trace (every window stitched into one) and the trigger's window.
#
# usage: deploy/demo/run.sh          (DEMO_PROFILE=debug builds faster)
# Needs: cargo, go, curl. Uses ports 6060 and 7070 on 127.0.0.1.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
profile="${DEMO_PROFILE:-release}"
work="$repo/target/demo"
say() { printf '\n==> %s\n' "$*"; }
die() { printf 'demo: %s\n' "$*" >&2; exit 1; }

for cmd in cargo go curl; do
	command -v "$cmd" >/dev/null || die "'$cmd' is not installed"
done
for port in 6060 7070; do
	if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
		die "something already listens on 127.0.0.1:$port; stop it (ss -ltnp 'sport = :$port' shows what) and retry"
	fi
done

say "building flightrec ($profile) and the demo Go service"
if [[ $profile == release ]]; then
	cargo build --release --locked -p flightrec --manifest-path "$repo/Cargo.toml"
	bin="${CARGO_TARGET_DIR:-$repo/target}/release/flightrec"
else
	cargo build --locked -p flightrec --manifest-path "$repo/Cargo.toml"
	bin="${CARGO_TARGET_DIR:-$repo/target}/debug/flightrec"
fi
bash "$repo/tests/go/build.sh" "$repo/target/fixtures" --no-legacy

rm -rf "$work"
mkdir -p "$work"
cd "$work"
pids=()
cleanup() {
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
	wait 2>/dev/null || true
}
trap cleanup EXIT

say "starting a Go service with net/http/pprof on 127.0.0.1:6060 (2 busy goroutine pairs)"
"$repo/target/fixtures/fixture" -addr 127.0.0.1:6060 -pairs 2 -rate 2000 >"$work/service.log" 2>&1 &
pids+=($!)

say "starting flightrec with no config: records http://127.0.0.1:6060 into $work/flightrec-data, API on 127.0.0.1:7070"
"$bin" run --log-format text >"$work/agent.log" 2>&1 &
agent=$!
pids+=("$agent")

kept() { curl -fsS http://127.0.0.1:7070/v1/targets 2>/dev/null | grep -o '"windows_kept":[0-9]*' | head -1 | cut -d: -f2; }
deadline=$((SECONDS + 60))
until [[ "$(kept)" -ge 3 ]] 2>/dev/null; do
	if ! kill -0 "$agent" 2>/dev/null; then cat "$work/agent.log" >&2; die "flightrec exited"; fi
	((SECONDS < deadline)) || { cat "$work/agent.log" >&2; die "no windows recorded within 60s"; }
	printf '.'
	sleep 1
done
printf '\n%s windows (5 s each) in the ring\n' "$(kept)"

say "something goes wrong: taking a snapshot (freezes the ring, records 2 s more)"
out="$("$bin" snapshot --reason "demo: something went wrong")"
echo "$out"
bundle="$(printf '%s\n' "$out" | sed -n 's/^snapshot .* written: //p' | head -1)"
open="$(printf '%s\n' "$out" | sed -n 's/^ *open with: //p' | head -1)"
whole="$(printf '%s\n' "$out" | sed -n 's/^ *every window in one trace: go tool trace //p' | head -1)"
page="$(printf '%s\n' "$out" | sed -n 's/^ *the whole bundle on one page: //p' | head -1)"
[[ -d $bundle ]] || die "no bundle directory in: $out"

say "the bundle, as flightrec inspect sees it (every sha256 verified)"
"$bin" inspect "$bundle"

say "checking every window, and bundle.trace (all windows stitched into one), with Go's own trace parser"
"$repo/target/fixtures/tracecheck" "$bundle"/*.trace >"$work/tracecheck.json" || {
	cat "$work/tracecheck.json" >&2
	die "Go's parser rejected a trace of the bundle"
}
[[ -n $whole && -f $whole ]] || die "the bundle has no bundle.trace: $out"
[[ -n $page && -f $page ]] || die "the bundle has no report.html: $out"
echo "Go's parser accepts all $(wc -l <"$work/tracecheck.json") traces (the windows and bundle.trace)"

kill -TERM "$agent"
wait "$agent" || true
cat <<MSG

Done. The bundle is in:
  $bundle
The whole bundle on one page (open it in a browser first):
  $page
Every window in one trace, the minute before the snapshot and after it:
  go tool trace $whole
The window that holds the moment of the snapshot alone:
  $open
MSG
