#!/usr/bin/env bash
# The demo: a node (a network namespace standing for a Kubernetes node) and
# two pods attached by the drover CNI plugin through cnitool, the same
# libcni path a container runtime takes. The pods ping each other and the
# gateway, then everything is removed. Nothing touches the machine's own
# network namespace.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh >/dev/null
source scripts/env.sh
make --no-print-directory build >/dev/null

id=$$
node=drover-demo-node-$id
pods=(drover-demo-pod-a-$id drover-demo-pod-b-$id)
work=$(mktemp -d)
cleanup() {
	set +e
	for p in "${pods[@]}"; do
		NETCONFPATH=$work/net.d CNI_PATH=$work/bin ip netns exec "$node" \
			"$DROVER_REF_PLUGINS/cnitool" del drover-demo "/run/netns/$p" >/dev/null 2>&1
		ip netns del "$p" 2>/dev/null
	done
	ip netns del "$node" 2>/dev/null
	rm -rf "$work"
}
trap cleanup EXIT

mkdir -p "$work/net.d" "$work/bin"
cp "$DROVER_BIN/drover" "$DROVER_REF_PLUGINS/loopback" "$DROVER_REF_PLUGINS/portmap" "$work/bin/"
cat >"$work/net.d/10-drover.conflist" <<CONF
{
  "cniVersion": "1.1.0",
  "name": "drover-demo",
  "plugins": [
    {"type": "drover", "podCIDR": "10.244.7.0/24", "dataDir": "$work/ipam"},
    {"type": "portmap", "capabilities": {"portMappings": true}}
  ]
}
CONF

ip netns add "$node"
ip -n "$node" link set lo up
cni() { NETCONFPATH=$work/net.d CNI_PATH=$work/bin ip netns exec "$node" "$DROVER_REF_PLUGINS/cnitool" "$@"; }

echo "== node $node, pod CIDR 10.244.7.0/24"
for p in "${pods[@]}"; do
	ip netns add "$p"
	cni add drover-demo "/run/netns/$p" >"$work/$p.json"
	addr=$(ip -n "$p" -4 -o addr show dev eth0 | awk '{print $4}')
	echo "== pod $p: eth0 $addr"
done
a=$(ip -n "${pods[0]}" -4 -o addr show dev eth0 | awk '{print $4}' | cut -d/ -f1)
b=$(ip -n "${pods[1]}" -4 -o addr show dev eth0 | awk '{print $4}' | cut -d/ -f1)
echo "== ping pod b ($b) from pod a"
ip netns exec "${pods[0]}" ping -c 3 -i 0.2 -W 1 "$b"
echo "== ping the gateway from pod b"
ip netns exec "${pods[1]}" ping -c 3 -i 0.2 -W 1 10.244.7.1
echo "== CHECK"
cni check drover-demo "/run/netns/${pods[0]}" && echo "pod a: CHECK ok"
echo "== links on the node"
ip -n "$node" -br link
echo "== DEL, then nothing is left"
for p in "${pods[@]}"; do cni del drover-demo "/run/netns/$p"; done
ip -n "$node" -br link
ls "$work/ipam/drover-demo"
echo "demo ok"
