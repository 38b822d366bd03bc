#!/usr/bin/env bash
# Installs what drover's tests, demo and benchmarks need on a fresh Debian
# machine, and builds the reference CNI plugins and cnitool from the Go module
# proxy into a cache outside the repository. Idempotent: a second run only
# checks.
set -euo pipefail

: "${DROVER_CACHE:=${XDG_CACHE_HOME:-$HOME/.cache}/drover}"
REF_PLUGINS_VERSION=v1.10.0
CNI_VERSION=v1.3.1

if [ "$(id -u)" != 0 ]; then
	echo "setup: drover's tests create network namespaces, loop devices and mounts: run as root" >&2
	exit 1
fi

# Debian packages: network tools for namespaces, iptables for the reference
# portmap plugin, filesystem tools for the Flexvolume driver, iperf3 for
# throughput figures.
need=()
for pkg_cmd in iproute2:ip iptables:iptables ipset:ipset iputils-ping:ping \
	e2fsprogs:mkfs.ext4 xfsprogs:mkfs.xfs mount:losetup util-linux:blkid iperf3:iperf3 \
	socat:socat procps:pgrep psmisc:fuser kmod:modprobe; do
	pkg=${pkg_cmd%%:*} cmd=${pkg_cmd##*:}
	command -v "$cmd" >/dev/null 2>&1 || need+=("$pkg")
done
if [ ${#need[@]} -gt 0 ]; then
	echo "setup: installing ${need[*]}"
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq
	apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

# The reference plugins and cnitool: the real clients and chain partners.
ref="$DROVER_CACHE/cni-plugins-$REF_PLUGINS_VERSION"
if [ ! -x "$ref/cnitool" ] || [ ! -x "$ref/portmap" ]; then
	echo "setup: building reference CNI plugins $REF_PLUGINS_VERSION and cnitool $CNI_VERSION"
	mkdir -p "$ref.tmp"
	for p in main/bridge main/ptp main/loopback ipam/host-local meta/portmap meta/bandwidth meta/tuning meta/firewall; do
		GOBIN="$ref.tmp" CGO_ENABLED=0 go install "github.com/containernetworking/plugins/plugins/$p@$REF_PLUGINS_VERSION"
	done
	GOBIN="$ref.tmp" CGO_ENABLED=0 go install "github.com/containernetworking/cni/cnitool@$CNI_VERSION"
	rm -rf "$ref" && mv "$ref.tmp" "$ref"
fi
# A real kube-apiserver on Debian's etcd for droverd's and the installer's
# tests: built from the k8s.io/kubernetes module once (10+ minutes), then
# cached beside the reference plugins.
bash "$(dirname "$0")/kube-build.sh" kube-apiserver >/dev/null
echo "$ref"
