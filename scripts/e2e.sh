#!/usr/bin/env bash
# Runs drover's real-node end-to-end suite (test/e2e): a real kube-apiserver
# and, per node, a network namespace running containerd (CRI) and kubelet,
# with drover installed by `droverd install` and droverd run per node.
# Installs what the suite needs first (idempotent): containerd and runc from
# Debian, etcd and the kube-apiserver and kubelet builds (scripts/kube-build.sh),
# the reference CNI plugins (scripts/setup.sh). The test images (pause and
# the echo server) are built by the suite itself as OCI archives.
#
# Usage: bash scripts/e2e.sh [go test flags, e.g. -run TestThreeNodeCluster -v]
#        bash scripts/e2e.sh bench   pod startup latency, drover vs bridge+host-local
# Needs root. Changes nothing in the root network namespace.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh

if [ "$(id -u)" != 0 ]; then
	echo "e2e: the suite needs root (network namespaces, mounts, loop devices)" >&2
	exit 1
fi

missing=()
for cmd in containerd ctr runc nsenter losetup mkfs.ext4 ip; do
	command -v "$cmd" >/dev/null 2>&1 || missing+=("$cmd")
done
if [ ${#missing[@]} -gt 0 ]; then
	echo "e2e: installing Debian packages for: ${missing[*]}" >&2
	export DEBIAN_FRONTEND=noninteractive
	if ! apt-cache policy containerd | grep -q 'Candidate: [0-9]'; then
		apt-get update -qq
	fi
	apt-get install -y -qq containerd runc util-linux mount e2fsprogs iproute2 >/dev/null
fi

if [ ! -x "$DROVER_REF_PLUGINS/portmap" ] || [ ! -x "$DROVER_REF_PLUGINS/loopback" ]; then
	bash scripts/setup.sh
fi
bash scripts/kube-build.sh kube-apiserver kubelet

if [ "${1:-}" = bench ]; then
	shift
	exec go test -tags e2e,e2ebench -count=1 -timeout 30m -run TestBenchPodStartup -v "$@" ./test/e2e/...
fi
exec go test -tags e2e -race -count=1 -timeout 30m "$@" ./test/e2e/...
