package scalebench

import (
	"net"
	"testing"
)

// The benchmark's synthetic peers must be distinct and valid, or the route
// count it waits for would never be reached (or be reached too early).
func TestSyntheticPeersAreDistinctAndValid(t *testing.T) {
	cidrs, ips, macs := map[string]bool{}, map[string]bool{}, map[string]bool{}
	_, cluster, _ := net.ParseCIDR("10.0.0.0/8")
	for i := 0; i < 5050; i++ {
		n := peerNode(i)
		_, c, err := net.ParseCIDR(n.Spec.PodCIDR)
		if err != nil || !cluster.Contains(c.IP) || c.String() == "10.0.0.0/24" {
			t.Fatalf("peer %d: pod CIDR %q invalid, outside the cluster or the bench node's", i, n.Spec.PodCIDR)
		}
		ip := net.ParseIP(n.Annotations["drover.io/underlay-ip"]).To4()
		if ip == nil {
			t.Fatalf("peer %d: underlay IP %q", i, n.Annotations["drover.io/underlay-ip"])
		}
		for set, k := range map[*map[string]bool]string{&cidrs: c.String(), &ips: ip.String(), &macs: n.Annotations["drover.io/vtep-mac"]} {
			if (*set)[k] {
				t.Fatalf("peer %d repeats %s", i, k)
			}
			(*set)[k] = true
		}
	}
}
