package agent

import (
	"errors"
	"fmt"
	"net"

	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/vishvananda/netlink"
)

// Underlay is the node's link to the other nodes.
type Underlay struct {
	Link   netlink.Link
	IP     net.IP
	Subnet *net.IPNet
}

// FindUnderlay picks the underlay: the named interface, else the interface
// holding ip, else the interface of the IPv4 default route. The address is
// ip when given, else the interface's first global IPv4 address.
func FindUnderlay(iface string, ip net.IP) (*Underlay, error) {
	links, err := netlinksafe.LinkList()
	if err != nil {
		return nil, fmt.Errorf("list links: %w", err)
	}
	var link netlink.Link
	switch {
	case iface != "":
		for _, l := range links {
			if l.Attrs().Name == iface {
				link = l
			}
		}
		if link == nil {
			return nil, fmt.Errorf("underlay interface %s not found", iface)
		}
	case ip != nil:
		for _, l := range links {
			if a := addrOn(l, ip); a != nil {
				link = l
			}
		}
		if link == nil {
			return nil, fmt.Errorf("no interface holds underlay address %s", ip)
		}
	default:
		routes, err := netlinksafe.RouteList(nil, netlink.FAMILY_V4)
		if err != nil {
			return nil, fmt.Errorf("list routes: %w", err)
		}
		for _, r := range routes {
			if (r.Dst == nil || r.Dst.String() == "0.0.0.0/0") && r.LinkIndex > 0 {
				if link, err = netlink.LinkByIndex(r.LinkIndex); err != nil {
					return nil, fmt.Errorf("default route link: %w", err)
				}
				break
			}
		}
		if link == nil {
			return nil, errors.New("no IPv4 default route to find the underlay interface by: set --underlay-iface or --underlay-ip")
		}
	}
	u := &Underlay{Link: link}
	addrs, err := netlinksafe.AddrList(link, netlink.FAMILY_V4)
	if err != nil {
		return nil, fmt.Errorf("addresses of %s: %w", link.Attrs().Name, err)
	}
	for _, a := range addrs {
		if a.Scope != int(netlink.SCOPE_UNIVERSE) {
			continue
		}
		if ip == nil || a.IP.Equal(ip) {
			u.IP = a.IP.To4()
			u.Subnet = &net.IPNet{IP: a.IP.Mask(a.Mask), Mask: a.Mask}
			break
		}
	}
	if u.IP == nil {
		return nil, fmt.Errorf("underlay interface %s has no usable IPv4 address", link.Attrs().Name)
	}
	return u, nil
}

func addrOn(l netlink.Link, ip net.IP) *netlink.Addr {
	addrs, err := netlinksafe.AddrList(l, netlink.FAMILY_V4)
	if err != nil {
		return nil
	}
	for _, a := range addrs {
		if a.IP.Equal(ip) {
			return &a
		}
	}
	return nil
}
