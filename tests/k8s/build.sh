#!/usr/bin/env bash
# usage: tests/k8s/build.sh
# Builds a real Kubernetes control plane for the tests from the Go module
# proxy with the machine's Go (no registry reachable here ships the binaries):
#   kube-apiserver, kubectl   k8s.io/kubernetes (tests/k8s/apiserver/go.mod)
#   etcd                      go.etcd.io/etcd/server/v3 (tests/k8s/etcd/go.mod)
# into a cache outside the repository that fresh clones on this machine share:
#   ${XDG_CACHE_HOME:-$HOME/.cache}/flightrec/k8s/<k8s version>/
# A binary is rebuilt only when the inputs it was built from (go.mod, go.sum,
# the main packages, the build flags) differ from those recorded beside it.
# Prints that directory on stdout.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
say() { printf 'k8s/build.sh: %s\n' "$*" >&2; }

if ! command -v go >/dev/null 2>&1; then
	say "the 'go' command is not in PATH; install Go 1.26 or newer (e.g. /usr/local/go/bin) and retry"
	exit 1
fi

# The version a module requires, read from its go.mod so that file is the one
# place to bump it.
required() {
	local v
	v="$(awk -v m="$2" '$1 == m && $2 ~ /^v/ { print $2; exit } $1 == "require" && $2 == m { print $3; exit }' "$1")"
	if [[ -z $v ]]; then
		say "$1 does not require $2"
		exit 1
	fi
	printf '%s\n' "$v"
}
k8s="$(required "$here/apiserver/go.mod" k8s.io/kubernetes)"
etcd="$(required "$here/etcd/go.mod" go.etcd.io/etcd/server/v3)"

out="${XDG_CACHE_HOME:-$HOME/.cache}/flightrec/k8s/$k8s"
mkdir -p "$out"

# Two checkouts on one machine may run setup at once: one builds, the other
# waits for it and then finds the binaries there.
exec 9>"$out/.lock"
flock 9

# Stripped, and without local paths, as release binaries are: -s -w takes 30%
# off kube-apiserver (147 MB to 103 MB) and no test reads symbols.
major="${k8s#v}" && major="${major%%.*}"
minor="${k8s#v*.}" && minor="${minor%%.*}"
k8s_ldflags="-s -w"
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
	# What upstream's hack/lib/version.sh stamps, so `kubectl version` and
	# /version report the real version instead of v0.0.0-master.
	k8s_ldflags+=" -X $pkg.gitVersion=$k8s -X $pkg.gitMajor=$major -X $pkg.gitMinor=$minor -X $pkg.gitTreeState=clean"
done

# name|module dir|main package|-ldflags
binaries=(
	"etcd|$here/etcd|.|-s -w"
	"kube-apiserver|$here/apiserver|.|$k8s_ldflags"
	"kubectl|$here/apiserver|kubectl|$k8s_ldflags"
)

# What a binary is built from: its go.mod, go.sum and main package, and flags.
inputs() {
	local dir="$1" pkg="$2" ldflags="$3"
	(cd "$dir" && {
		sha256sum go.mod go.sum "$pkg"/*.go
		printf 'flags: -trimpath -buildvcs=false -ldflags=%s\n' "$ldflags"
	})
}

stale=() names=()
for b in "${binaries[@]}"; do
	IFS='|' read -r name dir pkg ldflags <<<"$b"
	if [[ ! -x $out/$name || ! -f $out/$name.inputs || "$(cat "$out/$name.inputs")" != "$(inputs "$dir" "$pkg" "$ldflags")" ]]; then
		stale+=("$b") names+=("$name")
	fi
done
if ((${#stale[@]})); then
	# Measured from empty Go caches on 2 busy cores: etcd 1.5 min,
	# kube-apiserver 8.5 min, kubectl under 1 min once kube-apiserver is built.
	say "building ${names[*]} (Kubernetes $k8s, etcd $etcd) with $(go version | cut -d' ' -f3) into $out:"
	say "up to 11 minutes on 2 cores, once per machine; later runs find them there"
fi
for b in "${stale[@]}"; do
	IFS='|' read -r name dir pkg ldflags <<<"$b"
	start=$SECONDS
	# Built aside and renamed, so an interrupted build never leaves a binary
	# that the next run would take for a good one.
	(cd "$dir" && go build -trimpath -buildvcs=false -ldflags="$ldflags" -o "$out/.$name.tmp" "./$pkg")
	mv -f "$out/.$name.tmp" "$out/$name"
	inputs "$dir" "$pkg" "$ldflags" >"$out/$name.inputs"
	say "built $name in $((SECONDS - start)) s ($(du -h "$out/$name" | cut -f1))"
done
say "etcd $etcd, kube-apiserver and kubectl $k8s ready in $out"
printf '%s\n' "$out"
