package kubeenv

import (
	"context"
	"fmt"
	"net"
	"os/exec"
	"strconv"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"
)

// NetNSDialer returns a dial function that opens every connection inside the
// network namespace at nsPath, for use as rest.Config.Dial or
// http.Transport.DialContext by a process that lives in another namespace.
//
// A socket belongs to the namespace of the thread that created it and stays
// there, so only socket creation and connect need to happen inside: ns.Do runs
// the dial on a locked OS thread switched into the namespace and switches it
// back afterwards (a thread that cannot switch back is never reused). The
// returned connection is then used from any goroutine, like any other.
func NetNSDialer(nsPath string) func(ctx context.Context, network, addr string) (net.Conn, error) {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		var conn net.Conn
		err := ns.WithNetNSPath(nsPath, func(ns.NetNS) error {
			var d net.Dialer
			c, err := d.DialContext(ctx, network, addr)
			conn = c
			return err
		})
		if err != nil {
			// WithNetNSPath passes the dial error through; wrapping keeps
			// net.Error and context errors checkable with errors.As/Is.
			return nil, fmt.Errorf("dial %s %s in netns %s: %w", network, addr, nsPath, err)
		}
		return conn, nil
	}
}

// CommandInNetNS returns a command that runs name inside the network
// namespace at nsPath. nsenter enters only the network namespace and then
// execs name, so the command's PID is the program's own PID and mounts stay
// shared with the caller (unlike `ip netns exec`, which unshares the mount
// namespace and remounts /sys).
func CommandInNetNS(ctx context.Context, nsPath, name string, args ...string) *exec.Cmd {
	return exec.CommandContext(ctx, "nsenter", append([]string{"--net=" + nsPath, "--", name}, args...)...)
}

// freePorts asks the kernel for one free TCP port on each of ips inside the
// namespace. Every listener stays open until all ports are picked, so no two
// picks are the same port (closing each before the next pick would let the
// kernel hand it out again); they are released before the callers bind
// them, and in a namespace of its own (the default) nothing else can take
// them in between.
func freePorts(nsPath string, ips ...net.IP) ([]int, error) {
	var ports []int
	err := ns.WithNetNSPath(nsPath, func(ns.NetNS) error {
		var held []net.Listener
		defer func() {
			for _, l := range held {
				_ = l.Close()
			}
		}()
		for _, ip := range ips {
			l, err := net.Listen("tcp", net.JoinHostPort(ip.String(), "0"))
			if err != nil {
				return err
			}
			held = append(held, l)
			ports = append(ports, l.Addr().(*net.TCPAddr).Port)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("find free ports on %v in %s: %w", ips, nsPath, err)
	}
	return ports, nil
}

// ensureLoopbackUp brings lo up in the namespace when it is down: etcd listens
// on 127.0.0.1 there. It changes nothing when lo is already up, so it never
// touches a namespace (the root one included) that is already usable.
func ensureLoopbackUp(nsPath string) error {
	err := ns.WithNetNSPath(nsPath, func(ns.NetNS) error {
		lo, err := netlink.LinkByName("lo")
		if err != nil {
			return err
		}
		if lo.Attrs().Flags&net.FlagUp != 0 {
			return nil
		}
		return netlink.LinkSetUp(lo)
	})
	if err != nil {
		return fmt.Errorf("bring up lo in %s: %w", nsPath, err)
	}
	return nil
}

// hostPort joins ip and port for URLs and flags, bracketing IPv6.
func hostPort(ip net.IP, port int) string {
	return net.JoinHostPort(ip.String(), strconv.Itoa(port))
}
