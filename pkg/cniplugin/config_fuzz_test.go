package cniplugin

import (
	"errors"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containernetworking/cni/pkg/types"

	"github.com/drover-net/drover/pkg/nodestate"
)

// FuzzParseConfig feeds the config parser arbitrary stdin. It must never
// panic, must answer every refusal with a CNI error of code 6 or 7, and
// whatever it accepts must be safe to act on: the store stays under dataDir,
// names fit the kernel, numbers are in range. `go test` runs the seeds;
// `go test -fuzz FuzzParseConfig ./pkg/cniplugin` explores.
func FuzzParseConfig(f *testing.F) {
	for _, seed := range []string{
		`{"cniVersion":"1.1.0","name":"drover","type":"drover","podCIDR":"10.244.1.0/24"}`,
		`{"cniVersion":"0.3.1","name":"n","type":"drover","podCIDR":"10.0.0.0/30","clusterCIDR":"10.0.0.0/8","mtu":1450,"bridge":"br-x","dataDir":"/tmp/x","nodeState":"/tmp/n.json","hairpin":false}`,
		`{"cniVersion":"1.0.0","name":"n","runtimeConfig":{"ips":["10.0.0.5/24"],"mac":"0a:00:00:00:00:01"}}`,
		`{"cniVersion":"1.0.0","name":"n","runtimeConfig":{"ips":["fd00::1"]}}`,
		`{"cniVersion":"1.0.0","name":"../../etc","dataDir":"/run/drover/ipam"}`,
		`{"cniVersion":"1.0.0","name":"n","dataDir":"/a/../../b"}`,
		`{"cniVersion":"1.0.0","name":"n","ipam":{"type":"host-local"}}`,
		`{"cniVersion":"1.0.0","name":"n","mtu":-1}`,
		`{"cniVersion":"1.0.0","name":"n","podCIDR":"10.0.0.1/24"}`,
		`{"name":"n","bridge":"0123456789abcdefg"}`,
		`{"cniVersion":"1.1.0","name":"n","prevResult":{"cniVersion":"1.1.0","ips":[]},"cni.dev/valid-attachments":[{"containerID":"a","ifname":"eth0"}]}`,
		`null`, `[]`, `{`, ``, `{"name":1}`,
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, stdin []byte) {
		c, err := parseConfig(stdin)
		if err != nil {
			var e *types.Error
			if !errors.As(err, &e) || (e.Code != types.ErrDecodingFailure && e.Code != types.ErrInvalidNetworkConfig) {
				t.Fatalf("refusal is not a CNI decode/config error: %#v", err)
			}
			if e.Msg == "" {
				t.Fatal("refusal without a message")
			}
			return
		}
		dataDir := DefaultDataDir
		if c.conf.DataDir != "" {
			dataDir = filepath.Clean(c.conf.DataDir)
		}
		if !filepath.IsAbs(c.storeDir) || filepath.Dir(c.storeDir) != dataDir || strings.Contains(filepath.Base(c.storeDir), "/") || filepath.Base(c.storeDir) == ".." {
			t.Fatalf("store %q escapes dataDir %q", c.storeDir, dataDir)
		}
		if len(c.bridge) == 0 || len(c.bridge) > 15 || strings.ContainsAny(c.bridge, "/: \t\n") {
			t.Fatalf("accepted bridge name %q", c.bridge)
		}
		if m := c.conf.MTU; m != 0 && (m < 576 || m > 9000) {
			t.Fatalf("accepted mtu %d", m)
		}
		if len(c.ips) > 1 {
			t.Fatalf("accepted %d requested IPs", len(c.ips))
		}
		for _, ip := range c.ips {
			if ip.To4() == nil {
				t.Fatalf("accepted non-IPv4 %v", ip)
			}
		}
		if c.mac != nil && (len(c.mac) != 6 || c.mac[0]&1 == 1) {
			t.Fatalf("accepted mac %v", c.mac)
		}
		if c.conf.PodCIDR != "" {
			if _, err := (nodestate.State{Version: 1, PodCIDR: c.conf.PodCIDR, ClusterCIDR: c.conf.ClusterCIDR}).Parse(); err != nil {
				t.Fatalf("accepted pod CIDR that does not parse: %v", err)
			}
		}
	})
}
