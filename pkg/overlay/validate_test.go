package overlay_test

import (
	"net"
	"strings"
	"testing"

	"github.com/drover-net/drover/pkg/overlay"
	"github.com/drover-net/drover/pkg/vxlan"
)

func peer(name, cidr, ip string) overlay.Peer {
	_, n, _ := net.ParseCIDR(cidr)
	return overlay.Peer{Name: name, PodCIDR: n, VTEPMAC: vxlan.MACForNode(name), UnderlayIP: net.ParseIP(ip).To4()}
}

func TestValidate(t *testing.T) {
	_, cluster, _ := net.ParseCIDR("10.244.0.0/16")
	self := peer("node-1", "10.244.1.0/24", "198.51.100.11")
	sameMAC := peer("node-9", "10.244.9.0/24", "198.51.100.19")
	sameMAC.VTEPMAC = vxlan.MACForNode("node-2")
	for _, tc := range []struct {
		name     string
		peers    []overlay.Peer
		ok       []string
		rejected map[string]string // name -> part of the reason
	}{
		{"distinct peers all pass", []overlay.Peer{peer("node-3", "10.244.3.0/24", "198.51.100.13"), peer("node-2", "10.244.2.0/24", "198.51.100.12")},
			[]string{"node-2", "node-3"}, nil},
		{"a peer overlapping this node's pod CIDR is refused", []overlay.Peer{peer("node-0", "10.244.1.0/25", "198.51.100.10"), peer("node-2", "10.244.2.0/24", "198.51.100.12")},
			[]string{"node-2"}, map[string]string{"node-0": "this node's"}},
		{"of two peers with one subnet the smaller name wins, whatever the order", []overlay.Peer{peer("node-b", "10.244.2.0/24", "198.51.100.13"), peer("node-a", "10.244.2.0/23", "198.51.100.12")},
			[]string{"node-a"}, map[string]string{"node-b": "of peer node-a"}},
		{"a pod CIDR outside the cluster is refused", []overlay.Peer{peer("node-x", "0.0.0.0/0", "198.51.100.14")},
			nil, map[string]string{"node-x": "outside the cluster"}},
		{"a duplicate VTEP MAC is refused", []overlay.Peer{sameMAC, peer("node-2", "10.244.2.0/24", "198.51.100.12")},
			[]string{"node-2"}, map[string]string{"node-9": "also peer node-2's"}},
		{"an incomplete record is refused", []overlay.Peer{{Name: "node-5"}},
			nil, map[string]string{"node-5": "incomplete"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ok, rejected := overlay.Validate(self, cluster, tc.peers)
			var names []string
			for _, p := range ok {
				names = append(names, p.Name)
			}
			if strings.Join(names, ",") != strings.Join(tc.ok, ",") {
				t.Errorf("accepted %v, want %v", names, tc.ok)
			}
			if len(rejected) != len(tc.rejected) {
				t.Errorf("rejected %v, want %v", rejected, tc.rejected)
			}
			for _, r := range rejected {
				if want, ok := tc.rejected[r.Peer.Name]; !ok || !strings.Contains(r.Reason, want) {
					t.Errorf("rejection %q, want one for %s mentioning %q", r, r.Peer.Name, want)
				}
			}
		})
	}
}
