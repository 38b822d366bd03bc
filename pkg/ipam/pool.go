package ipam

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strings"
)

// Pool is the range addresses come from: every host address of Subnet but
// the network address, the broadcast address and the gateway.
type Pool struct {
	Subnet  *net.IPNet
	Gateway net.IP
}

func ipToU32(ip net.IP) uint32 { return binary.BigEndian.Uint32(ip.To4()) }

func u32ToIP(v uint32) net.IP {
	ip := make(net.IP, 4)
	binary.BigEndian.PutUint32(ip, v)
	return ip
}

// bounds returns the first and last assignable host addresses.
func (p Pool) bounds() (first, last uint32) {
	base := ipToU32(p.Subnet.IP)
	mask := binary.BigEndian.Uint32(net.IP(p.Subnet.Mask).To4())
	return base + 1, (base | ^mask) - 1
}

// Usable reports whether ip may be handed to a pod.
func (p Pool) Usable(ip net.IP) bool {
	ip = ip.To4()
	if ip == nil || !p.Subnet.Contains(ip) || ip.Equal(p.Gateway) {
		return false
	}
	first, last := p.bounds()
	v := ipToU32(ip)
	return v >= first && v <= last
}

// Size is the number of addresses pods can get from p.
func (p Pool) Size() int {
	first, last := p.bounds()
	n := int(last-first) + 1
	if gw := p.Gateway.To4(); gw != nil && ipToU32(gw) >= first && ipToU32(gw) <= last {
		n--
	}
	return n
}

// Allocate gives a an address from p. When a already holds an address of p
// (a retried ADD), that address is returned again. When requested is set,
// exactly that address is allocated or ErrAddressUnavailable returned.
// Otherwise allocation goes round-robin from the last address handed out, so
// a just-released address is not reused at once.
func (s *Store) Allocate(p Pool, a Attachment, requested net.IP) (net.IP, error) {
	l, held, err := s.scanHeld(a)
	if err != nil {
		return nil, err
	}
	for _, ip := range held {
		if p.Usable(ip) && (requested == nil || ip.Equal(requested)) {
			return ip, nil
		}
	}
	if requested != nil {
		if !p.Usable(requested) {
			return nil, fmt.Errorf("%w: %s is not an assignable address of %s (gateway %s)", ErrAddressUnavailable, requested, p.Subnet, p.Gateway)
		}
		ok, err := s.reserve(requested.To4(), a)
		if err != nil {
			return nil, err
		}
		if !ok {
			return nil, fmt.Errorf("%w: %s is already allocated", ErrAddressUnavailable, requested)
		}
		s.setLastReserved(requested)
		return requested.To4(), nil
	}

	taken := make(map[uint32]bool, len(l.ips))
	for _, ip := range l.ips {
		taken[ipToU32(ip)] = true
	}
	first, last := p.bounds()
	start := first
	if lr := s.lastReserved(); lr != nil && p.Subnet.Contains(lr) {
		if v := ipToU32(lr); v >= first && v < last {
			start = v + 1
		}
	}
	gw := ipToU32(p.Gateway.To4())
	v := start
	for {
		if v != gw && !taken[v] {
			ip := u32ToIP(v)
			ok, err := s.reserve(ip, a)
			if err != nil {
				return nil, err
			}
			if ok {
				s.setLastReserved(ip)
				return ip, nil
			}
		}
		if v == last {
			v = first
		} else {
			v++
		}
		if v == start {
			return nil, fmt.Errorf("%w %s (%d addresses, all allocated)", ErrPoolExhausted, p.Subnet, p.Size())
		}
	}
}

// Free counts the addresses of p that are not allocated.
func (s *Store) Free(p Pool) (int, error) {
	l, err := s.scan()
	if err != nil {
		return 0, err
	}
	return p.free(l.ips), nil
}

// FreeWithoutLock counts the addresses of p not allocated in the store at
// dir, creating, locking and changing nothing: a store that does not exist
// yet has every address free. It is for callers that only report, such as
// STATUS: records appear and vanish whole (link(2), unlink(2)), so an
// unlocked read sees every record whole, though perhaps one ADD out of date.
func FreeWithoutLock(dir string, p Pool) (int, error) {
	l, err := (&Store{dir: dir}).scan()
	if errors.Is(err, fs.ErrNotExist) {
		return p.Size(), nil
	}
	if err != nil {
		return 0, err
	}
	return p.free(l.ips), nil
}

func (p Pool) free(allocated []net.IP) int {
	n := p.Size()
	for _, ip := range allocated {
		if p.Usable(ip) {
			n--
		}
	}
	return n
}

func (s *Store) lastReserved() net.IP {
	data, err := os.ReadFile(filepath.Join(s.dir, lastReservedFile))
	if err != nil {
		return nil
	}
	return net.ParseIP(strings.TrimSpace(string(data))).To4()
}

// setLastReserved is best effort: losing it only restarts round-robin at the
// start of the pool. It overwrites the file in place with one write of a
// fixed width, the longest an address takes, so no shorter value leaves a
// tail and no temporary file is made per allocation.
func (s *Store) setLastReserved(ip net.IP) {
	f, err := os.OpenFile(filepath.Join(s.dir, lastReservedFile), os.O_WRONLY|os.O_CREATE, 0o600)
	if err != nil {
		return
	}
	line := fmt.Sprintf("%-15s\n", ip)
	if _, err := f.WriteAt([]byte(line), 0); err == nil {
		_ = f.Truncate(int64(len(line))) // a no-op but for a longer file made by hand
	}
	_ = f.Close()
}
