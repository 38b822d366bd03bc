package cni_test

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"
)

// allocation is one record of drover's IPAM store.
type allocation struct {
	ip          string
	containerID string
	ifName      string
}

// allocations reads the store as the contract describes it: one file per
// address, named by the address, holding "<containerID>\n<ifname>\n". A file
// whose name parses as an IP is an allocation, whatever its content.
func (n *node) allocations(t testing.TB) []allocation {
	t.Helper()
	allocs, err := readAllocations(n.storeDir())
	if err != nil {
		t.Fatal(err)
	}
	return allocs
}

func readAllocations(dir string) ([]allocation, error) {
	entries, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read IPAM store: %w", err)
	}
	var allocs []allocation
	for _, e := range entries {
		if net.ParseIP(e.Name()) == nil {
			continue
		}
		data, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if errors.Is(err, fs.ErrNotExist) {
			continue // released between the listing and the read
		}
		if err != nil {
			return nil, fmt.Errorf("read allocation %s: %w", e.Name(), err)
		}
		a := allocation{ip: e.Name()}
		lines := strings.Split(string(data), "\n")
		if len(lines) != 3 || lines[2] != "" {
			return nil, fmt.Errorf("allocation %s holds %q, not \"<containerID>\\n<ifname>\\n\"", e.Name(), data)
		}
		a.containerID, a.ifName = lines[0], lines[1]
		allocs = append(allocs, a)
	}
	return allocs, nil
}

// linkNames lists the links of a namespace whose names start with prefix.
func linkNames(t testing.TB, n ns.NetNS, prefix string) []string {
	t.Helper()
	var names []string
	err := n.Do(func(ns.NetNS) error {
		links, err := netlink.LinkList()
		if err != nil {
			return fmt.Errorf("list links: %w", err)
		}
		for _, l := range links {
			if strings.HasPrefix(l.Attrs().Name, prefix) {
				names = append(names, l.Attrs().Name)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	sort.Strings(names)
	return names
}

// hostVeths lists drover's host-side veths on the node.
func (n *node) hostVeths(t testing.TB) []string { return linkNames(t, n.ns, "drv") }

// requireClean fails unless the node holds no allocation, no drover veth and
// no bandwidth ifb: what DEL and GC must leave.
func (n *node) requireClean(t *testing.T, after string) {
	t.Helper()
	if a := n.allocations(t); len(a) > 0 {
		t.Errorf("after %s, %d addresses are still allocated: %v", after, len(a), a)
	}
	if v := n.hostVeths(t); len(v) > 0 {
		t.Errorf("after %s, %d host veths remain: %v", after, len(v), v)
	}
	if b := linkNames(t, n.ns, "bwp"); len(b) > 0 {
		t.Errorf("after %s, bandwidth ifb devices remain: %v", after, b)
	}
}

// podAddrs lists the IPv4 addresses on the pod's interface; none when the
// interface is missing.
func podAddrs(t testing.TB, p *pod) []string {
	t.Helper()
	var addrs []string
	err := p.ns.Do(func(ns.NetNS) error {
		l, err := netlink.LinkByName(p.ifName)
		if err != nil {
			var nf netlink.LinkNotFoundError
			if errors.As(err, &nf) {
				return nil
			}
			return fmt.Errorf("look up %s: %w", p.ifName, err)
		}
		as, err := netlink.AddrList(l, netlink.FAMILY_V4)
		if err != nil {
			return fmt.Errorf("list addresses of %s: %w", p.ifName, err)
		}
		for _, a := range as {
			addrs = append(addrs, a.IP.String())
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return addrs
}

// natRules is `iptables-save -t nat` in the node namespace: where portmap
// keeps its chains.
func (n *node) natRules(t testing.TB) string {
	t.Helper()
	var out []byte
	err := n.do(t, func() error {
		var err error
		out, err = exec.Command("iptables-save", "-t", "nat").CombinedOutput()
		if err != nil {
			return fmt.Errorf("iptables-save: %w: %s", err, out)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return string(out)
}

// ping sends ICMP echo from inside a namespace, retrying briefly while
// neighbours resolve; the error carries ping's output.
func ping(from ns.NetNS, ip net.IP) error {
	var out []byte
	var err error
	for i := 0; i < 3; i++ {
		err = from.Do(func(ns.NetNS) error {
			var e error
			out, e = exec.Command("ping", "-n", "-c", "1", "-W", "2", ip.String()).CombinedOutput()
			return e
		})
		if err == nil {
			return nil
		}
	}
	return fmt.Errorf("ping %s: %w: %s", ip, err, out)
}

// serveOnce listens on TCP port in a namespace and answers each connection
// with greeting; the listener closes when the test ends.
func serveOnce(t *testing.T, in ns.NetNS, port int, greeting string) {
	t.Helper()
	var ln net.Listener
	err := in.Do(func(ns.NetNS) error {
		var err error
		ln, err = net.Listen("tcp4", fmt.Sprintf(":%d", port))
		return err
	})
	if err != nil {
		t.Fatalf("listen on %d: %v", port, err)
	}
	t.Cleanup(func() { _ = ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			_, _ = c.Write([]byte(greeting))
			_ = c.Close()
		}
	}()
}

// dialRead connects from inside a namespace and returns what the server
// sends before it closes.
func dialRead(from ns.NetNS, addr string) (string, error) {
	var got []byte
	err := from.Do(func(ns.NetNS) error {
		c, err := net.DialTimeout("tcp4", addr, 3*time.Second)
		if err != nil {
			return fmt.Errorf("dial %s: %w", addr, err)
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(3 * time.Second))
		buf := make([]byte, 256)
		for {
			k, err := c.Read(buf)
			got = append(got, buf[:k]...)
			if err != nil {
				return nil
			}
		}
	})
	return string(got), err
}
