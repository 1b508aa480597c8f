# Sourced by the recording scripts of this directory (make.sh, stitch.sh,
# workloads.sh): starts one fixture service at a time from $bin, and kills it
# by its PID when the script ends, however it ends.

pid=""
url=""
service_log=""
cleanup() { if [[ -n "$pid" ]]; then kill "$pid" 2>/dev/null || true; fi; }
trap cleanup EXIT

# start_service EXE FLAGS...: starts $bin/EXE (GODEBUG passed on), waits for
# its "listening on" line and sets $pid and $url.
start_service() {
	local exe="$1"
	shift
	service_log="$(mktemp)"
	GODEBUG="${GODEBUG:-}" "$bin/$exe" "$@" >"$service_log" 2>/dev/null &
	pid=$!
	url=""
	for _ in $(seq 100); do
		url="$(sed -n 's#^listening on ##p' "$service_log")"
		[[ -n "$url" ]] && break
		sleep 0.1
	done
	[[ -n "$url" ]] || { echo "$(basename "$0"): $exe did not start" >&2; exit 1; }
}

# stop_service: stops the service start_service started.
stop_service() {
	kill "$pid"
	wait "$pid" 2>/dev/null || true
	pid=""
	rm -f "$service_log"
}
