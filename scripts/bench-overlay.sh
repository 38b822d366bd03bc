#!/usr/bin/env bash
# Pod-to-pod TCP throughput across nodes (iperf3, 1 and 4 streams), in one
# run, for:
#   underlay   node to node on the underlay, no overlay (the ceiling)
#   drover     pods on two nodes running droverd, VXLAN encapsulation
#   drover-dr  the same with --direct-routing (no encapsulation)
#   hand       a flannel-style kernel VXLAN built by hand with ip(8): same
#              VNI, port, MTU, bridge, veth and one route/neighbour/FDB entry,
#              and flannel's masquerade rules (so conntrack runs, as on any
#              Kubernetes node)
#   hand-dr    flannel's host-gw built by hand: the same bridge, veth and pod
#              MTU as drover-dr, one route per peer via its underlay address,
#              the same masquerade rules; the reference for drover-dr, since
#              it pays the same two veth and bridge hops per side that the
#              underlay figure does not
# All five are set up first, then measured in interleaved rounds
# (BENCH_ROUNDS, default 7); the tables give each path's median, so load
# from elsewhere on the machine hits every path alike.
# Everything lives in namespaces this script makes and removes.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
SECS=${BENCH_SECS:-5}
ROUNDS=${BENCH_ROUNDS:-7}

id=$$
work=$(mktemp -d)
ul=drover-bo-ul-$id
N() { echo "drover-bo-$1-$id"; }
pids=()
cleanup() {
	set +e
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done
	wait 2>/dev/null
	for n in n1 n2 n3 n4 n5 n6 n7 n8 p1 p2 p3 p4 p5 p6 p7 p8; do ip netns del "$(N $n)" 2>/dev/null; done
	ip netns del "$ul" 2>/dev/null
	rm -rf "$work"
}
trap cleanup EXIT

ip netns add "$ul"
ip -n "$ul" link add ul0 type bridge
ip -n "$ul" link set ul0 up
for i in 1 2 3 4 5 6 7 8; do
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

declare -A R   # name,streams -> space-separated samples
declare -A M
declare -A PATHS # name -> "ns-client ns-server dst"
measure() { # name
	read -r cl sv dst <<<"${PATHS[$1]}"
	serve "$sv"
	R[$1,1]+=" $(gbps "$cl" "$dst" 1)"
	R[$1,4]+=" $(gbps "$cl" "$dst" 4)"
	unserve "$sv"
}
median() { python3 -c 'import sys,statistics; print("%.2f" % statistics.median(map(float, sys.argv[1:])))' $1; }

PATHS[underlay]="$(N n1) $(N n2) 198.51.100.12"

echo "== drover: droverd on nodes 1 and 2 (VXLAN), 5 and 6 (--direct-routing)"
mkdir -p "$work/bin"
cp "$DROVER_BIN/drover" "$DROVER_REF_PLUGINS/portmap" "$DROVER_REF_PLUGINS/loopback" "$work/bin/"
start_droverd() { # i datastore cluster-cidr extra-args...
	local i=$1 ds=$2 cidr=$3; shift 3
	mkdir -p "$work/n$i"
	ip netns exec "$(N n$i)" "$DROVER_BIN/droverd" --node-name "node-$i" --datastore "local:$work/$ds" \
		--cluster-cidr "$cidr" --underlay-iface eth0 --state-file "$work/n$i/node.json" \
		--ipam-dir "$work/n$i/ipam" --cni-conf-dir "$work/n$i/net.d" --resync 2s --listen "" "$@" \
		2>>"$work/n$i.log" &
	pids+=($!)
}
start_droverd 1 ds-encap 10.244.0.0/16
start_droverd 2 ds-encap 10.244.0.0/16
start_droverd 5 ds-direct 10.245.0.0/16 --direct-routing
start_droverd 6 ds-direct 10.245.0.0/16 --direct-routing
for i in 1 2 5 6; do
	for _ in $(seq 100); do [ -f "$work/n$i/net.d/10-drover.conflist" ] && break; sleep 0.1; done
	ip netns add "$(N p$i)"
	NETCONFPATH=$work/n$i/net.d CNI_PATH=$work/bin ip netns exec "$(N n$i)" \
		"$DROVER_REF_PLUGINS/cnitool" add drover "/run/netns/$(N p$i)" >/dev/null
done
podip() { ip -n "$(N "$1")" -4 -o addr show dev eth0 | awk '{print $4}' | cut -d/ -f1; }
p2ip=$(podip p2) p6ip=$(podip p6)
for _ in $(seq 100); do ip netns exec "$(N p1)" ping -c1 -W1 "$p2ip" >/dev/null 2>&1 && break; sleep 0.1; done
for _ in $(seq 100); do ip -n "$(N n5)" route show proto 77 | grep -q "dev eth0" && break; sleep 0.1; done
ip -n "$(N n5)" route show proto 77 | grep -q "dev eth0" || { echo "direct route never appeared"; exit 1; }
ip netns exec "$(N p5)" ping -c1 -W2 "$p6ip" >/dev/null
mtu=$(ip -n "$(N n1)" -o link show drover.vxlan | sed -E 's/.* mtu ([0-9]+).*/\1/')
PATHS[drover]="$(N p1) $(N p2) $p2ip"
PATHS[drover-dr]="$(N p5) $(N p6) $p6ip"

# hand_pod node pod mtu net: what both hand-built paths share, as flannel
# sets a node up: bridge hbr0 holding <net>.1/24, one pod <net>.2 on a veth,
# forwarding on, and flannel's own rules (--ip-masq) for its /16:
# masquerade leaving the cluster, accept forwarded pod traffic.
hand_pod() {
	local n=$1 p=$2 mtu=$3 net=$4
	local cluster=${net%.*}.0.0/16
	ip -n "$n" link add hbr0 mtu "$mtu" type bridge
	ip -n "$n" addr add "$net.1/24" dev hbr0
	ip -n "$n" link set hbr0 up
	ip netns add "$p"
	ip -n "$n" link add hveth mtu "$mtu" type veth peer name eth0 mtu "$mtu" netns "$p"
	ip -n "$n" link set hveth master hbr0 up
	ip -n "$p" addr add "$net.2/24" dev eth0
	ip -n "$p" link set eth0 up
	ip -n "$p" link set lo up
	ip -n "$p" route add default via "$net.1"
	ip netns exec "$n" sysctl -qw net.ipv4.ip_forward=1
	ip netns exec "$n" iptables -w -t nat -A POSTROUTING -s "$cluster" -d "$cluster" -j RETURN
	ip netns exec "$n" iptables -w -t nat -A POSTROUTING -s "$cluster" ! -d 224.0.0.0/4 -j MASQUERADE --random-fully
	ip netns exec "$n" iptables -w -A FORWARD -s "$cluster" -j ACCEPT
	ip netns exec "$n" iptables -w -A FORWARD -d "$cluster" -j ACCEPT
}

echo "== hand-built flannel-style VXLAN (mtu $mtu)"
for i in 3 4; do
	n=$(N n$i) p=$(N p$i) o=$((7 - i))
	mac=0a:00:00:00:00:0$i omac=0a:00:00:00:00:0$o
	ip -n "$n" link add hv0 address "$mac" mtu "$mtu" type vxlan id 1 dstport 4789 local "198.51.100.1$i" dev eth0 nolearning
	ip -n "$n" addr add "10.99.$i.0/32" dev hv0
	ip -n "$n" link set hv0 up
	hand_pod "$n" "$p" "$mtu" "10.99.$i"
	ip -n "$n" route add "10.99.$o.0/24" via "10.99.$o.0" dev hv0 onlink
	ip -n "$n" neigh add "10.99.$o.0" lladdr "$omac" dev hv0 nud permanent
	bridge -n "$n" fdb add "$omac" dev hv0 dst "198.51.100.1$o" self permanent
done
ip netns exec "$(N p3)" ping -c1 -W2 10.99.4.2 >/dev/null
PATHS[hand]="$(N p3) $(N p4) 10.99.4.2"

drmtu=$(ip -n "$(N p5)" -o link show eth0 | sed -E 's/.* mtu ([0-9]+).*/\1/')
echo "== hand-built flannel-style host-gw (pod mtu $drmtu, as drover-dr's)"
for i in 7 8; do
	n=$(N n$i) p=$(N p$i) o=$((15 - i))
	hand_pod "$n" "$p" "$drmtu" "10.98.$i"
	ip -n "$n" route add "10.98.$o.0/24" via "198.51.100.1$o" dev eth0
done
ip netns exec "$(N p7)" ping -c1 -W2 10.98.8.2 >/dev/null
PATHS[hand-dr]="$(N p7) $(N p8) 10.98.8.2"

for r in $(seq "$ROUNDS"); do
	echo "== round $r of $ROUNDS"
	for k in underlay hand drover hand-dr drover-dr; do measure "$k"; done
done

ratio() { python3 -c "print('%.2f' % ($1/$2))"; }
verdict() { python3 -c "print('met' if $1 >= $2 else '**missed**')"; }
for k in underlay hand drover hand-dr drover-dr; do
	for st in 1 4; do M[$k,$st]=$(median "${R[$k,$st]}"); done
done
r1=$(ratio "${M[drover,1]}" "${M[hand,1]}") r4=$(ratio "${M[drover,4]}" "${M[hand,4]}")
d1=$(ratio "${M[drover-dr,1]}" "${M[underlay,1]}") d4=$(ratio "${M[drover-dr,4]}" "${M[underlay,4]}")
{
echo "| path | 1 stream Gbit/s | 4 streams Gbit/s | samples (1 / 4 streams) |"
echo "|---|---|---|---|"
for k in underlay hand drover hand-dr drover-dr; do echo "| $k | ${M[$k,1]} | ${M[$k,4]} |${R[$k,1]} /${R[$k,4]} |"; done
echo
echo "| ratio of medians | 1 stream | 4 streams | target | |"
echo "|---|---|---|---|---|"
echo "| drover / hand-built VXLAN | $r1 | $r4 | >= 0.95 | $(verdict "$r1" 0.95), $(verdict "$r4" 0.95) |"
echo "| drover direct routing / underlay | $d1 | $d4 | >= 0.90 | $(verdict "$d1" 0.90), $(verdict "$d4" 0.90) |"
echo "| drover direct routing / hand-built host-gw | $(ratio "${M[drover-dr,1]}" "${M[hand-dr,1]}") | $(ratio "${M[drover-dr,4]}" "${M[hand-dr,4]}") | | |"
echo "| hand-built host-gw / underlay: what the pod's own hops cost | $(ratio "${M[hand-dr,1]}" "${M[underlay,1]}") | $(ratio "${M[hand-dr,4]}" "${M[underlay,4]}") | | |"
} | tee "$work/table.md"

{
	echo "## Pod-to-pod throughput across nodes"
	echo
	echo "Command: \`bash scripts/bench-overlay.sh\` (as root; \`make bench\` runs it;"
	echo "\`BENCH_SECS\`, \`BENCH_ROUNDS\`). iperf3 TCP from a pod on one node to a pod"
	echo "on another, receiver's rate. Six node namespaces on one underlay bridge"
	echo "(veth, MTU 1500): **underlay** is node to node without overlay (the"
	echo "ceiling); **hand** a flannel-style kernel VXLAN built with ip(8) with the"
	echo "same VNI, port, MTU, bridge and veth, one route, neighbour and FDB entry,"
	echo "and flannel's masquerade rules; **drover** two droverd nodes (VXLAN);"
	echo "**drover-dr** two droverd nodes with \`--direct-routing\`; **hand-dr**"
	echo "flannel's host-gw built by hand, with drover-dr's bridge, veth and pod"
	echo "MTU, one route per peer and the same masquerade rules. All five are set"
	echo "up first and measured in interleaved rounds; tables give medians. Every"
	echo "path crosses the same kernel on the same 2 cores, so the ratios are the"
	echo "figure; absolute rates depend on the machine's load."
	echo
	echo "Measured $(date -u '+%Y-%m-%d %H:%M') UTC (kernel $(uname -r), $(nproc) CPUs, load average $(cut -d' ' -f1-3 /proc/loadavg) at the end), $ROUNDS rounds of $SECS s per path and stream count, pod MTU $mtu."
	echo
	cat "$work/table.md"
} >"$work/section.md"
if [ "${BENCH_WRITE_DOC:-1}" = 1 ]; then
	bash scripts/bench-doc.sh "$work/section.md"
fi
