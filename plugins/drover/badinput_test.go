package main_test

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/containernetworking/cni/pkg/types"

	"github.com/drover-net/drover/internal/testns"
)

// TestBadInputIsRefusedWithoutChangingAnything runs the plugin with broken
// configs and environments. Each must exit non-zero with a CNI error object
// carrying the right code, and leave the node, the pod and the IPAM store as
// they were.
func TestBadInputIsRefusedWithoutChangingAnything(t *testing.T) {
	n := newNode(t)
	pod := testns.New(t)
	notANetns := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(notANetns, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	good := func(extra map[string]any) []byte { return n.conf("1.1.0", extra) }

	for _, tc := range []struct {
		name  string
		stdin []byte
		env   map[string]string
		cmd   string // default ADD
		code  uint
		msg   string // part of Msg or Details
	}{
		{name: "stdin is not JSON", stdin: []byte(`{"cniVersion":`), code: types.ErrDecodingFailure},
		{name: "stdin is empty", stdin: []byte{}, code: types.ErrDecodingFailure},
		{name: "stdin is a JSON array", stdin: []byte(`[1,2]`), code: types.ErrDecodingFailure},
		{name: "network name is missing", stdin: good(map[string]any{"name": nil}), code: types.ErrInvalidNetworkConfig, msg: "name"},
		{name: "network name has a slash", stdin: good(map[string]any{"name": "a/b"}), code: types.ErrInvalidNetworkConfig, msg: "name"},
		{name: "cniVersion is unknown", stdin: good(map[string]any{"cniVersion": "9.9.9"}), code: types.ErrIncompatibleCNIVersion},
		{name: "cniVersion predates 0.3.0", stdin: good(map[string]any{"cniVersion": "0.2.0"}), code: types.ErrIncompatibleCNIVersion},
		{name: "cniVersion is not a version", stdin: good(map[string]any{"cniVersion": "one"}), code: types.ErrIncompatibleCNIVersion},
		{name: "podCIDR is not a CIDR", stdin: good(map[string]any{"podCIDR": "10.1.2.3"}), code: types.ErrInvalidNetworkConfig, msg: "podCIDR"},
		{name: "podCIDR has host bits set", stdin: good(map[string]any{"podCIDR": "10.1.2.3/24"}), code: types.ErrInvalidNetworkConfig, msg: "host bits"},
		{name: "podCIDR is IPv6", stdin: good(map[string]any{"podCIDR": "fd00::/64"}), code: types.ErrInvalidNetworkConfig, msg: "IPv6"},
		{name: "podCIDR is too small for a pod", stdin: good(map[string]any{"podCIDR": "10.1.2.0/31"}), code: types.ErrInvalidNetworkConfig, msg: "too small"},
		{name: "podCIDR is a number", stdin: good(map[string]any{"podCIDR": 42}), code: types.ErrDecodingFailure},
		{name: "clusterCIDR does not hold podCIDR", stdin: good(map[string]any{"clusterCIDR": "192.168.0.0/16"}), code: types.ErrInvalidNetworkConfig, msg: "not inside"},
		{name: "clusterCIDR is not a CIDR", stdin: good(map[string]any{"clusterCIDR": "everything"}), code: types.ErrInvalidNetworkConfig, msg: "clusterCIDR"},
		{name: "mtu is too small", stdin: good(map[string]any{"mtu": 100}), code: types.ErrInvalidNetworkConfig, msg: "mtu"},
		{name: "mtu is too large", stdin: good(map[string]any{"mtu": 65536}), code: types.ErrInvalidNetworkConfig, msg: "mtu"},
		{name: "mtu is a string", stdin: good(map[string]any{"mtu": "1500"}), code: types.ErrDecodingFailure},
		{name: "bridge name is too long", stdin: good(map[string]any{"bridge": "a-very-long-bridge-name"}), code: types.ErrInvalidNetworkConfig, msg: "bridge"},
		{name: "bridge name has a slash", stdin: good(map[string]any{"bridge": "br/0"}), code: types.ErrInvalidNetworkConfig, msg: "bridge"},
		{name: "dataDir is relative", stdin: good(map[string]any{"dataDir": "ipam"}), code: types.ErrInvalidNetworkConfig, msg: "dataDir"},
		{name: "nodeState is relative", stdin: good(map[string]any{"nodeState": "../node.json"}), code: types.ErrInvalidNetworkConfig, msg: "nodeState"},
		{name: "an IPAM plugin is configured", stdin: good(map[string]any{"ipam": map[string]any{"type": "host-local"}}), code: types.ErrInvalidNetworkConfig, msg: "ipam"},
		{name: "hairpin is a string", stdin: good(map[string]any{"hairpin": "yes"}), code: types.ErrDecodingFailure},
		{name: "requested IP is not an address", stdin: good(map[string]any{"runtimeConfig": map[string]any{"ips": []string{"ten"}}}), code: types.ErrInvalidNetworkConfig, msg: "ips"},
		{name: "two IPs are requested", stdin: good(map[string]any{"runtimeConfig": map[string]any{"ips": []string{"10.0.0.5", "10.0.0.6"}}}), code: types.ErrInvalidNetworkConfig, msg: "ips"},
		{name: "requested IP is outside the pod CIDR", stdin: good(map[string]any{"runtimeConfig": map[string]any{"ips": []string{"192.0.2.7"}}}), code: 101, msg: "192.0.2.7"},
		{name: "requested MAC is malformed", stdin: good(map[string]any{"runtimeConfig": map[string]any{"mac": "0a:00"}}), code: types.ErrInvalidNetworkConfig, msg: "mac"},
		{name: "requested MAC is multicast", stdin: good(map[string]any{"runtimeConfig": map[string]any{"mac": "01:00:5e:00:00:01"}}), code: types.ErrInvalidNetworkConfig, msg: "multicast"},
		{name: "no podCIDR and no node state file", stdin: good(map[string]any{"podCIDR": nil}), code: types.ErrTryAgainLater, msg: "node state"},
		{name: "no CNI_NETNS on ADD", stdin: good(nil), env: map[string]string{"CNI_NETNS": ""}, code: types.ErrInvalidEnvironmentVariables, msg: "CNI_NETNS"},
		{name: "CNI_NETNS does not exist", stdin: good(nil), env: map[string]string{"CNI_NETNS": "/run/netns/drover-no-such-ns"}, code: types.ErrUnknownContainer, msg: "does not exist"},
		{name: "CNI_NETNS is not a namespace", stdin: good(nil), env: map[string]string{"CNI_NETNS": notANetns}, code: types.ErrUnknownContainer},
		{name: "CNI_NETNS is the node's own namespace", stdin: good(nil), env: map[string]string{"CNI_NETNS": n.ns.Path()}, code: types.ErrInvalidEnvironmentVariables, msg: "own network namespace"},
		{name: "CNI_IFNAME is too long", stdin: good(nil), env: map[string]string{"CNI_IFNAME": "eth0123456789012"}, code: types.ErrInvalidEnvironmentVariables, msg: "too long"},
		{name: "CNI_IFNAME has a slash", stdin: good(nil), env: map[string]string{"CNI_IFNAME": "eth/0"}, code: types.ErrInvalidEnvironmentVariables},
		{name: "CNI_IFNAME is dot-dot", stdin: good(nil), env: map[string]string{"CNI_IFNAME": ".."}, code: types.ErrInvalidEnvironmentVariables},
		{name: "CNI_CONTAINERID is empty", stdin: good(nil), env: map[string]string{"CNI_CONTAINERID": ""}, code: types.ErrInvalidEnvironmentVariables, msg: "CNI_CONTAINERID"},
		{name: "CNI_CONTAINERID has path characters", stdin: good(nil), env: map[string]string{"CNI_CONTAINERID": "../etc"}, code: types.ErrInvalidEnvironmentVariables},
		{name: "CNI_PATH is missing", stdin: good(nil), env: map[string]string{"CNI_PATH": ""}, code: types.ErrInvalidEnvironmentVariables, msg: "CNI_PATH"},
		{name: "CNI_COMMAND is unknown", stdin: good(nil), cmd: "ATTACH", code: types.ErrInvalidEnvironmentVariables, msg: "ATTACH"},
		{name: "CHECK without prevResult", stdin: good(nil), cmd: "CHECK", code: types.ErrInvalidNetworkConfig, msg: "prevResult"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			beforeNode, beforePod := links(t, n.ns), links(t, pod)
			cmd := tc.cmd
			if cmd == "" {
				cmd = "ADD"
			}
			o := n.run(t, call{cmd: cmd, id: "bad-input", netns: pod.Path(), ifname: "eth0", stdin: tc.stdin, env: tc.env})
			if o.exitCode == 0 {
				t.Fatalf("exit 0, want failure; stdout %s", o.stdout)
			}
			if o.cniErr.Code != tc.code {
				t.Fatalf("code %d (%s: %s), want %d", o.cniErr.Code, o.cniErr.Msg, o.cniErr.Details, tc.code)
			}
			if o.cniErr.Msg == "" {
				t.Fatal("error object has no msg")
			}
			if tc.msg != "" && !strings.Contains(o.cniErr.Msg+" "+o.cniErr.Details, tc.msg) {
				t.Fatalf("error %q / %q does not mention %q", o.cniErr.Msg, o.cniErr.Details, tc.msg)
			}
			if got := links(t, n.ns); !slices.Equal(got, beforeNode) {
				t.Fatalf("node links changed: %v -> %v", beforeNode, got)
			}
			if got := links(t, pod); !slices.Equal(got, beforePod) {
				t.Fatalf("pod links changed: %v -> %v", beforePod, got)
			}
			if a := n.allocations(t); len(a) != 0 {
				t.Fatalf("allocations appeared: %v", a)
			}
		})
	}
}
