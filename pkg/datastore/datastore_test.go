package datastore

import (
	"errors"
	"net"
	"testing"
)

func cidr(s string) *net.IPNet { _, n, _ := net.ParseCIDR(s); return n }

func TestFreeSubnet(t *testing.T) {
	for _, tc := range []struct {
		name    string
		cluster string
		mask    int
		taken   []*net.IPNet
		want    string
		err     error
	}{
		{"the first subnet when none is taken", "10.244.0.0/16", 24, nil, "10.244.0.0/24", nil},
		{"skips taken subnets", "10.244.0.0/16", 24, []*net.IPNet{cidr("10.244.0.0/24"), cidr("10.244.1.0/24")}, "10.244.2.0/24", nil},
		{"skips a subnet overlapped by a larger assignment", "10.244.0.0/16", 24, []*net.IPNet{cidr("10.244.0.0/23")}, "10.244.2.0/24", nil},
		{"skips a subnet containing a smaller assignment", "10.244.0.0/16", 24, []*net.IPNet{cidr("10.244.0.128/25")}, "10.244.1.0/24", nil},
		{"fills a gap", "10.0.0.0/22", 24, []*net.IPNet{cidr("10.0.0.0/24"), cidr("10.0.2.0/24")}, "10.0.1.0/24", nil},
		{"reports exhaustion", "10.0.0.0/23", 24, []*net.IPNet{cidr("10.0.0.0/24"), cidr("10.0.1.0/24")}, "", ErrNoFreeSubnet},
		{"refuses a mask shorter than the cluster's", "10.0.0.0/16", 8, nil, "", nil},
		{"refuses a mask with no room for pods", "10.0.0.0/16", 31, nil, "", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := FreeSubnet(cidr(tc.cluster), tc.mask, tc.taken)
			if tc.want == "" {
				if err == nil || (tc.err != nil && !errors.Is(err, tc.err)) {
					t.Fatalf("got %v, %v; want error %v", got, err, tc.err)
				}
				return
			}
			if err != nil || got.String() != tc.want {
				t.Fatalf("got %v, %v; want %s", got, err, tc.want)
			}
		})
	}
}
