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

# Stripped, and without local paths, as release binaries are; -s -w takes a
# third off each binary and none of the tests reads their symbols.
major="${k8s#v}" && major="${major%%.*}"
minor="${k8s#v*.}" && minor="${minor%%.*}"
k8s_ldflags="-s -w"
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
	# What upstream's hack/lib/version.sh stamps, so `kubectl version` and
	# /version report the real version instead of v0.0.0-master.
	k8s_ldflags+=" -X $pkg.gitVersion=$k8s -X $pkg.gitMajor=$major -X $pkg.gitMinor=$minor -X $pkg.gitTreeState=clean"
done

# build NAME MODULE_DIR PACKAGE LDFLAGS MINUTES
build() {
	local name="$1" dir="$2" pkg="$3" ldflags="$4" minutes="$5"
	local inputs
	inputs="$(cd "$dir" && {
		sha256sum go.mod go.sum "$pkg"/*.go
		printf 'flags: -trimpath -buildvcs=false -ldflags=%s\n' "$ldflags"
	})"
	if [[ -x $out/$name && -f $out/$name.inputs && "$(cat "$out/$name.inputs")" == "$inputs" ]]; then
		return
	fi
	say "building $name into $out with $(go version | cut -d' ' -f3): $minutes on 2 cores the first time on a machine, then skipped"
	local start=$SECONDS
	# Built aside and renamed, so an interrupted build never leaves a binary
	# that the next run would take for a good one.
	(cd "$dir" && go build -trimpath -buildvcs=false -ldflags="$ldflags" -o "$out/.$name.tmp" "./$pkg")
	mv -f "$out/.$name.tmp" "$out/$name"
	printf '%s\n' "$inputs" >"$out/$name.inputs"
	say "built $name in $((SECONDS - start)) s ($(du -h "$out/$name" | cut -f1))"
}

build etcd "$here/etcd" . "-s -w" "about 1 min"
build kube-apiserver "$here/apiserver" . "$k8s_ldflags" "about 9 min"
build kubectl "$here/apiserver" kubectl "$k8s_ldflags" "about 2 min"
say "etcd $etcd, kube-apiserver and kubectl $k8s ready in $out"
printf '%s\n' "$out"
