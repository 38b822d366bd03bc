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
	tmp=$(mktemp -d)
	trap 'rm -rf "$tmp"' EXIT
	DROVER_BENCH_OUT=$tmp/table.md go test -tags e2e,e2ebench -count=1 -timeout 30m -run TestBenchPodStartup -v "$@" ./test/e2e/ |
		grep -v '^[[:space:]]*{' # etcd's JSON log lines
	[ -s "$tmp/table.md" ] || exit 1
	{
		echo "## Pod startup through kubelet and containerd"
		echo
		echo "Command: \`bash scripts/e2e.sh bench\` (as root; \`make bench\` runs it)."
		echo "The real-node harness of docs/e2e.md: three nodes, each a network"
		echo "namespace running Debian's containerd (CRI) and kubelet v1.37.2, a real"
		echo "kube-apiserver. Latency is from the pod's create call to the API until"
		echo "the API reports it Running, for pods of the suite's echo image (already"
		echo "imported). First every pod with drover (droverd running, its conflist),"
		echo "then, on the same nodes in the same run, every pod with the reference"
		echo "bridge + host-local plugins (ipMasq on: drover's pods have masquerade"
		echo "too), portmap chained to both; the runtime, kubelet, images and pod"
		echo "specs are the same, so the ratio is the CNI plugins' share."
		echo
		echo "Measured $(date -u '+%Y-%m-%d %H:%M') UTC (kernel $(uname -r), $(nproc) CPUs, load average $(cut -d' ' -f1-3 /proc/loadavg) at the end)."
		echo
		cat "$tmp/table.md"
	} >"$tmp/section.md"
	bash scripts/bench-doc.sh "$tmp/section.md"
	exit 0
fi
exec go test -tags e2e -race -count=1 -timeout 30m "$@" ./test/e2e/...
