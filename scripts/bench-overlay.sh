#!/usr/bin/env bash
# Pod-to-pod TCP throughput across nodes (iperf3, 1 and 4 streams), in one
# run, for:
#   underlay   node to node on the underlay, no overlay (the ceiling)
#   drover     pods on two nodes running droverd, VXLAN encapsulation
#   drover-dr  the same with --direct-routing (no encapsulation)
#   hand       a flannel-style kernel VXLAN built by hand with ip(8): same
#              VNI, port, MTU, bridge, veth and one route/neighbour/FDB entry
# Everything lives in namespaces this script makes and removes.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
SECS=${BENCH_SECS:-5}

id=$$
work=$(mktemp -d)
ul=drover-bo-ul-$id
N() { echo "drover-bo-$1-$id"; }
pids=()
cleanup() {
	set +e
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done
	wait 2>/dev/null
	for n in n1 n2 n3 n4 p1 p2 p3 p4; do ip netns del "$(N $n)" 2>/dev/null; done
	ip netns del "$ul" 2>/dev/null
	rm -rf "$work"
}
trap cleanup EXIT

ip netns add "$ul"
ip -n "$ul" link add ul0 type bridge
ip -n "$ul" link set ul0 up
for i in 1 2 3 4; do
	ns=$(N n$i)
	ip netns add "$ns"
	ip -n "$ns" link set lo up
	ip -n "$ul" link add "ul-$i" type veth peer name eth0 netns "$ns"
	ip -n "$ul" link set "ul-$i" master ul0 up
	ip -n "$ns" addr add "198.51.100.1$i/24" dev eth0
	ip -n "$ns" link set eth0 up
done

# iperf3 client run: prints Gbit/s of the receiver.
gbps() { # ns-client dst streams
	ip netns exec "$1" iperf3 -c "$2" -p 5201 -t "$SECS" -P "$3" -J |
		python3 -c 'import json,sys; print("%.2f" % (json.load(sys.stdin)["end"]["sum_received"]["bits_per_second"]/1e9))'
}
serve() { ip netns exec "$1" iperf3 -s -D -p 5201 --pidfile "$work/iperf-$1.pid"; sleep 0.3; }
unserve() { kill "$(cat "$work/iperf-$1.pid")" 2>/dev/null || true; sleep 0.2; }

declare -A R
measure() { # name ns-client ns-server dst
	serve "$3"
	R[$1,1]=$(gbps "$2" "$4" 1)
	R[$1,4]=$(gbps "$2" "$4" 4)
	unserve "$3"
}

echo "== underlay: node to node"
measure underlay "$(N n1)" "$(N n2)" 198.51.100.12

echo "== drover: droverd on two nodes, pods through cnitool"
mkdir -p "$work/bin"
cp "$DROVER_BIN/drover" "$DROVER_REF_PLUGINS/portmap" "$DROVER_REF_PLUGINS/loopback" "$work/bin/"
start_droverd() { # i extra-args...
	local i=$1; shift
	ip netns exec "$(N n$i)" "$DROVER_BIN/droverd" --node-name "node-$i" --datastore "local:$work/ds" \
		--cluster-cidr 10.244.0.0/16 --underlay-iface eth0 --state-file "$work/n$i/node.json" \
		--ipam-dir "$work/n$i/ipam" --cni-conf-dir "$work/n$i/net.d" --resync 2s --listen "" "$@" \
		2>>"$work/n$i.log" &
	pids+=($!)
}
for i in 1 2; do mkdir -p "$work/n$i"; start_droverd $i; done
for i in 1 2; do
	for _ in $(seq 100); do [ -f "$work/n$i/net.d/10-drover.conflist" ] && break; sleep 0.1; done
	ip netns add "$(N p$i)"
	NETCONFPATH=$work/n$i/net.d CNI_PATH=$work/bin ip netns exec "$(N n$i)" \
		"$DROVER_REF_PLUGINS/cnitool" add drover "/run/netns/$(N p$i)" >/dev/null
done
p2ip=$(ip -n "$(N p2)" -4 -o addr show dev eth0 | awk '{print $4}' | cut -d/ -f1)
for _ in $(seq 100); do ip netns exec "$(N p1)" ping -c1 -W1 "$p2ip" >/dev/null 2>&1 && break; sleep 0.1; done
mtu=$(ip -n "$(N n1)" -o link show drover.vxlan | sed -E 's/.* mtu ([0-9]+).*/\1/')
measure drover "$(N p1)" "$(N p2)" "$p2ip"

echo "== drover with --direct-routing"
for p in "${pids[@]}"; do kill "$p"; done
wait 2>/dev/null || true
pids=()
for i in 1 2; do start_droverd $i --direct-routing; done
for _ in $(seq 100); do ip -n "$(N n1)" route show proto 77 | grep -q "dev eth0" && break; sleep 0.1; done
ip -n "$(N n1)" route show proto 77 | grep -q "dev eth0" || { echo "direct route never appeared"; exit 1; }
measure drover-dr "$(N p1)" "$(N p2)" "$p2ip"

echo "== hand-built flannel-style VXLAN (mtu $mtu)"
for i in 3 4; do
	n=$(N n$i) p=$(N p$i) o=$((7 - i))
	mac=0a:00:00:00:00:0$i omac=0a:00:00:00:00:0$o
	ip -n "$n" link add hv0 address "$mac" mtu "$mtu" type vxlan id 1 dstport 4789 local "198.51.100.1$i" dev eth0 nolearning
	ip -n "$n" addr add "10.99.$i.0/32" dev hv0
	ip -n "$n" link set hv0 up
	ip -n "$n" link add hbr0 mtu "$mtu" type bridge
	ip -n "$n" addr add "10.99.$i.1/24" dev hbr0
	ip -n "$n" link set hbr0 up
	ip netns add "$p"
	ip -n "$n" link add hveth mtu "$mtu" type veth peer name eth0 mtu "$mtu" netns "$p"
	ip -n "$n" link set hveth master hbr0 up
	ip -n "$p" addr add "10.99.$i.2/24" dev eth0
	ip -n "$p" link set eth0 up
	ip -n "$p" link set lo up
	ip -n "$p" route add default via "10.99.$i.1"
	ip netns exec "$n" sysctl -qw net.ipv4.ip_forward=1
	ip -n "$n" route add "10.99.$o.0/24" via "10.99.$o.0" dev hv0 onlink
	ip -n "$n" neigh add "10.99.$o.0" lladdr "$omac" dev hv0 nud permanent
	bridge -n "$n" fdb add "$omac" dev hv0 dst "198.51.100.1$o" self permanent
done
ip netns exec "$(N p3)" ping -c1 -W2 10.99.4.2 >/dev/null
measure hand "$(N p3)" "$(N p4)" 10.99.4.2

ratio() { python3 -c "print('%.2f' % ($1/$2))"; }
{
echo "| path | 1 stream Gbit/s | 4 streams Gbit/s |"
echo "|---|---|---|"
for k in underlay hand drover drover-dr; do echo "| $k | ${R[$k,1]} | ${R[$k,4]} |"; done
echo
echo "| ratio | 1 stream | 4 streams | target |"
echo "|---|---|---|---|"
echo "| drover / hand-built VXLAN | $(ratio "${R[drover,1]}" "${R[hand,1]}") | $(ratio "${R[drover,4]}" "${R[hand,4]}") | >= 0.95 |"
echo "| drover direct routing / underlay | $(ratio "${R[drover-dr,1]}" "${R[underlay,1]}") | $(ratio "${R[drover-dr,4]}" "${R[underlay,4]}") | >= 0.90 |"
} | tee "$work/table.md"
cp "$work/table.md" "${BENCH_OUT:-/dev/null}" 2>/dev/null || true
