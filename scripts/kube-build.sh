#!/usr/bin/env bash
# Builds real Kubernetes binaries for drover's tests from the k8s.io/kubernetes
# module of the Go module proxy (no release tarballs can be fetched here), and
# makes sure etcd is installed. Binaries are cached outside the repository and
# built only when missing; a second run only checks and prints the directory.
#
# Usage: scripts/kube-build.sh [kube-apiserver] [kubelet]   (default: kube-apiserver)
#
# The kubernetes module's go.mod replaces every k8s.io/<staging> module with
# ./staging/src/..., which the module zip does not carry; a throwaway build
# module therefore requires k8s.io/kubernetes and replaces each staging module
# with its published v0.<minor>.<patch>, generated from that go.mod so a new
# staging module cannot be missed. Takes 10+ minutes on 2 cores: run it early.
set -euo pipefail

KUBE_VERSION=v1.37.2
STAGING_VERSION=v0.${KUBE_VERSION#v1.} # v1.37.2 -> v0.37.2
: "${DROVER_CACHE:=${XDG_CACHE_HOME:-$HOME/.cache}/drover}"
out="$DROVER_CACHE/kubernetes-$KUBE_VERSION"

targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(kube-apiserver)
for t in "${targets[@]}"; do
	case "$t" in
	kube-apiserver | kubelet) ;;
	*)
		echo "kube-build: unknown target $t (known: kube-apiserver kubelet)" >&2
		exit 2
		;;
	esac
done

# etcd for the API server: Debian's etcd-server (3.4 on this release).
if ! command -v etcd >/dev/null 2>&1; then
	if [ "$(id -u)" != 0 ]; then
		echo "kube-build: etcd is missing; install Debian's etcd-server as root" >&2
		exit 1
	fi
	echo "kube-build: installing etcd-server" >&2
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq
	apt-get install -y -qq --no-install-recommends etcd-server >/dev/null
fi

missing=()
for t in "${targets[@]}"; do
	[ -x "$out/$t" ] || missing+=("$t")
done
if [ ${#missing[@]} -eq 0 ]; then
	echo "$out"
	exit 0
fi

mkdir -p "$out"
work=$(mktemp -d "${TMPDIR:-/tmp}/drover-kube-build.XXXXXX")
trap 'rm -rf "$work"' EXIT

echo "kube-build: fetching k8s.io/kubernetes@$KUBE_VERSION" >&2
gomod=$(cd "$work" && GOFLAGS=-mod=mod go mod download -json "k8s.io/kubernetes@$KUBE_VERSION" |
	sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",$/\1/p')
[ -f "$gomod" ] || {
	echo "kube-build: could not download k8s.io/kubernetes@$KUBE_VERSION" >&2
	exit 1
}

{
	echo "module drover.invalid/kube-build"
	echo
	echo "go $(sed -n 's/^go //p' "$gomod")"
	# The binaries keep the GODEBUG defaults kubernetes ships with.
	grep '^godebug ' "$gomod" || true
	echo
	echo "require k8s.io/kubernetes $KUBE_VERSION"
	echo
	echo "replace ("
	# "k8s.io/api => ./staging/src/k8s.io/api" -> "k8s.io/api => k8s.io/api v0.37.2"
	sed -n 's#^[[:space:]]*\(k8s\.io/[^ ]*\) => \./staging/.*$#\t\1 => \1 '"$STAGING_VERSION"'#p' "$gomod"
	echo ")"
} >"$work/go.mod"

# Version stamps the kubernetes Makefile sets: the API server reports them and
# derives its emulation/compatibility version from them.
minor=${KUBE_VERSION#v1.}
minor=${minor%%.*}
ldflags="-s -w"
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
	ldflags+=" -X $pkg.gitVersion=$KUBE_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
	ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
done

cd "$work"
for t in "${missing[@]}"; do
	echo "kube-build: building $t $KUBE_VERSION into $out (10+ minutes)" >&2
	start=$(date +%s)
	# -mod=mod lets the go command fill in go.sum for the generated module.
	CGO_ENABLED=0 GOFLAGS=-mod=mod nice -n 10 go build -trimpath -ldflags "$ldflags" \
		-o "$out/.$t.tmp.$$" "k8s.io/kubernetes/cmd/$t"
	mv -f "$out/.$t.tmp.$$" "$out/$t"
	echo "kube-build: built $t in $(($(date +%s) - start))s" >&2
done
echo "$out"
