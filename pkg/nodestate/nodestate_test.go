package nodestate

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestWriteThenReadRoundTrips(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sub", "node.json")
	in := State{PodCIDR: "10.244.1.0/24", ClusterCIDR: "10.244.0.0/16", MTU: 1450}
	if err := Write(path, in); err != nil {
		t.Fatal(err)
	}
	got, err := Read(path)
	if err != nil {
		t.Fatal(err)
	}
	if got.PodCIDR.String() != "10.244.1.0/24" || got.ClusterCIDR.String() != "10.244.0.0/16" ||
		got.MTU != 1450 || got.Gateway.String() != "10.244.1.1" {
		t.Fatalf("read back %+v", got)
	}
	entries, _ := os.ReadDir(filepath.Dir(path))
	if len(entries) != 1 {
		t.Fatalf("write left %d files in the directory, want only node.json", len(entries))
	}
}

func TestMissingFileIsErrNotFound(t *testing.T) {
	_, err := Read(filepath.Join(t.TempDir(), "none.json"))
	if !errors.Is(err, ErrNotFound) {
		t.Fatalf("err = %v, want ErrNotFound", err)
	}
}

func TestInvalidStatesAreRefused(t *testing.T) {
	for _, tc := range []struct {
		name, json, want string
	}{
		{"not JSON", `{"version":1,`, "decode"},
		{"another version", `{"version":2,"podCIDR":"10.0.0.0/24"}`, "version 2"},
		{"no pod CIDR", `{"version":1}`, "podCIDR is empty"},
		{"pod CIDR with host bits", `{"version":1,"podCIDR":"10.0.0.5/24"}`, "host bits"},
		{"IPv6 pod CIDR", `{"version":1,"podCIDR":"fd00::/64"}`, "IPv6"},
		{"pod CIDR too small", `{"version":1,"podCIDR":"10.0.0.0/31"}`, "too small"},
		{"pod CIDR outside cluster CIDR", `{"version":1,"podCIDR":"10.1.0.0/24","clusterCIDR":"10.2.0.0/16"}`, "not inside"},
		{"MTU too low", `{"version":1,"podCIDR":"10.0.0.0/24","mtu":100}`, "mtu"},
		{"gateway outside pod CIDR", `{"version":1,"podCIDR":"10.0.0.0/24","gateway":"10.0.1.1"}`, "not a host address"},
		{"gateway is the broadcast", `{"version":1,"podCIDR":"10.0.0.0/24","gateway":"10.0.0.255"}`, "not a host address"},
		{"gateway not an address", `{"version":1,"podCIDR":"10.0.0.0/24","gateway":"gw"}`, "not an IPv4"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "node.json")
			if err := os.WriteFile(path, []byte(tc.json), 0o644); err != nil {
				t.Fatal(err)
			}
			_, err := Read(path)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want one mentioning %q", err, tc.want)
			}
		})
	}
}

func TestWriteRefusesAnInvalidState(t *testing.T) {
	path := filepath.Join(t.TempDir(), "node.json")
	if err := Write(path, State{PodCIDR: "nonsense"}); err == nil {
		t.Fatal("wrote an invalid state")
	}
	if _, err := os.Stat(path); !os.IsNotExist(err) {
		t.Fatal("an invalid state reached the file")
	}
}
