#!/usr/bin/env bash
# The demo: three nodes on this one machine, each a network namespace on a
# shared underlay bridge, each running droverd with the local datastore
# (no API server needed). Two pods per node are attached through cnitool,
# the libcni path a container runtime takes, with the conflist droverd
# wrote. Every pod pings every other pod across the VXLAN overlay, iperf3
# measures pod-to-pod throughput across nodes, then everything is removed.
# Nothing touches the machine's own network namespace.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh >/dev/null
source scripts/env.sh
make --no-print-directory build >/dev/null

id=$$
work=$(mktemp -d)
ul=drover-demo-ul-$id
nodes=(1 2 3)
pids=()
cleanup() {
	set +e
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done
	wait 2>/dev/null
	for n in "${nodes[@]}"; do
		for p in a b; do ip netns del "drover-demo-n$n$p-$id" 2>/dev/null; done
		ip netns del "drover-demo-n$n-$id" 2>/dev/null
	done
	ip netns del "$ul" 2>/dev/null
	rm -rf "$work"
}
trap cleanup EXIT

mkdir -p "$work/bin"
cp "$DROVER_BIN/drover" "$DROVER_REF_PLUGINS/loopback" "$DROVER_REF_PLUGINS/portmap" "$work/bin/"

echo "== underlay: bridge ul0 in its own namespace, nodes on 198.51.100.0/24"
ip netns add "$ul"
ip -n "$ul" link add ul0 type bridge
ip -n "$ul" link set ul0 up
for n in "${nodes[@]}"; do
	ns=drover-demo-n$n-$id
	ip netns add "$ns"
	ip -n "$ns" link set lo up
	ip -n "$ul" link add "ul-$n" type veth peer name eth0 netns "$ns"
	ip -n "$ul" link set "ul-$n" master ul0 up
	ip -n "$ns" addr add "198.51.100.1$n/24" dev eth0
	ip -n "$ns" link set eth0 up
	mkdir -p "$work/n$n"
	ip netns exec "$ns" "$DROVER_BIN/droverd" --node-name "node-$n" \
		--datastore "local:$work/datastore" --cluster-cidr 10.244.0.0/16 \
		--underlay-iface eth0 --state-file "$work/n$n/node.json" \
		--ipam-dir "$work/n$n/ipam" --cni-conf-dir "$work/n$n/net.d" \
		--resync 5s 2>"$work/n$n/droverd.log" &
	pids+=($!)
done

echo "== waiting for each droverd to write its CNI conflist"
for n in "${nodes[@]}"; do
	for _ in $(seq 100); do [ -f "$work/n$n/net.d/10-drover.conflist" ] && break; sleep 0.1; done
	[ -f "$work/n$n/net.d/10-drover.conflist" ] || { cat "$work/n$n/droverd.log"; exit 1; }
	echo "node-$n: $(tr -d ' \n' <"$work/n$n/node.json")"
done

declare -A podip
for n in "${nodes[@]}"; do
	for p in a b; do
		pod=drover-demo-n$n$p-$id
		ip netns add "$pod"
		NETCONFPATH=$work/n$n/net.d CNI_PATH=$work/bin ip netns exec "drover-demo-n$n-$id" \
			"$DROVER_REF_PLUGINS/cnitool" add drover "/run/netns/$pod" >/dev/null
		podip[$pod]=$(ip -n "$pod" -4 -o addr show dev eth0 | awk '{print $4}' | cut -d/ -f1)
		echo "pod $n$p on node-$n: ${podip[$pod]}"
	done
done

echo "== waiting for every node to program its peers"
for n in "${nodes[@]}"; do
	for _ in $(seq 100); do
		[ "$(ip -n "drover-demo-n$n-$id" route show proto 77 | wc -l)" = 2 ] && break; sleep 0.1
	done
	echo "node-$n routes:"; ip -n "drover-demo-n$n-$id" route show proto 77 | sed 's/^/  /'
done

echo "== every pod pings every other pod"
fails=0
for src in "${!podip[@]}"; do
	for dst in "${!podip[@]}"; do
		[ "$src" = "$dst" ] && continue
		if ! ip netns exec "$src" ping -c 1 -W 2 "${podip[$dst]}" >/dev/null; then
			echo "FAIL: $src -> $dst (${podip[$dst]})"; fails=$((fails + 1))
		fi
	done
done
echo "$(( ${#podip[@]} * (${#podip[@]} - 1) - fails )) of $(( ${#podip[@]} * (${#podip[@]} - 1) )) pod pairs answered"
[ "$fails" = 0 ]

echo "== iperf3: pod 1a -> pod 2a, across the VXLAN overlay"
ip netns exec "drover-demo-n2a-$id" iperf3 -s -1 -D -p 5201
sleep 0.3
ip netns exec "drover-demo-n1a-$id" iperf3 -c "${podip[drover-demo-n2a-$id]}" -p 5201 -t 3 -f g | grep -E "sender|receiver"

echo "== cleanup: DEL every pod"
for n in "${nodes[@]}"; do
	for p in a b; do
		NETCONFPATH=$work/n$n/net.d CNI_PATH=$work/bin ip netns exec "drover-demo-n$n-$id" \
			"$DROVER_REF_PLUGINS/cnitool" del drover "/run/netns/drover-demo-n$n$p-$id"
	done
done
echo "demo ok"
