// Package local is droverd's one-machine datastore: each node's record is a
// JSON file in a shared directory, written atomically, and subnet claims are
// serialised by flock(2) on the directory's lock file. It exists for the
// demo and tests on one machine; every multi-node deployment uses the
// Kubernetes API (pkg/kube).
package local

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/drover-net/drover/pkg/datastore"
	"github.com/drover-net/drover/pkg/nodestate"
)

// record is the file format of one node.
type record struct {
	Name       string `json:"name"`
	PodCIDR    string `json:"podCIDR,omitempty"`
	VTEPMAC    string `json:"vtepMAC,omitempty"`
	UnderlayIP string `json:"underlayIP,omitempty"`
}

// Store is a directory of node records.
type Store struct {
	dir      string
	cluster  *net.IPNet // nil: no self-allocation, records must carry a pod CIDR
	nodeMask int
	poll     time.Duration
}

// New opens the store at dir. With cluster set, nodes without a pod CIDR
// claim a /nodeMask subnet of it.
func New(dir string, cluster *net.IPNet, nodeMask int) (*Store, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("create local datastore %s: %w", dir, err)
	}
	return &Store{dir: dir, cluster: cluster, nodeMask: nodeMask, poll: 300 * time.Millisecond}, nil
}

func (s *Store) path(node string) string { return filepath.Join(s.dir, node+".json") }

// PodCIDR returns the node's recorded pod CIDR or claims a free one.
func (s *Store) PodCIDR(ctx context.Context, node string) (*net.IPNet, error) {
	var cidr *net.IPNet
	err := s.locked(func() error {
		recs, err := s.read()
		if err != nil {
			return err
		}
		var taken []*net.IPNet
		self := record{Name: node}
		for _, r := range recs {
			if r.Name == node {
				self = r
			}
			if c, err := nodestate.ParseIPv4CIDR(r.PodCIDR); err == nil {
				taken = append(taken, c)
			}
		}
		if self.PodCIDR != "" {
			cidr, err = nodestate.ParseIPv4CIDR(self.PodCIDR)
			return err
		}
		if s.cluster == nil {
			return fmt.Errorf("%w: node %s has none in %s and no cluster CIDR is set to allocate one", datastore.ErrNoPodCIDR, node, s.dir)
		}
		if cidr, err = datastore.FreeSubnet(s.cluster, s.nodeMask, taken); err != nil {
			return err
		}
		self.PodCIDR = cidr.String()
		return s.write(self)
	})
	return cidr, err
}

// Publish stores the node's VTEP MAC and underlay IP.
func (s *Store) Publish(ctx context.Context, self datastore.Node) error {
	return s.locked(func() error {
		r := record{Name: self.Name}
		if data, err := os.ReadFile(s.path(self.Name)); err == nil {
			_ = json.Unmarshal(data, &r)
		}
		if self.PodCIDR != nil {
			r.PodCIDR = self.PodCIDR.String()
		}
		r.VTEPMAC, r.UnderlayIP = self.VTEPMAC.String(), self.UnderlayIP.String()
		return s.write(r)
	})
}

// Delete removes a node's record, as deleting a Node object would.
func (s *Store) Delete(node string) error {
	err := os.Remove(s.path(node))
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	return err
}

// Watch polls the directory: the store is for one machine, where a few
// hundred milliseconds of delay cost nothing.
func (s *Store) Watch(ctx context.Context, onChange func([]datastore.Node)) error {
	var last []record
	first := true
	t := time.NewTicker(s.poll)
	defer t.Stop()
	for {
		recs, err := s.read()
		if err == nil && (first || !reflect.DeepEqual(recs, last)) {
			first, last = false, recs
			onChange(toNodes(recs))
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

func toNodes(recs []record) []datastore.Node {
	var nodes []datastore.Node
	for _, r := range recs {
		n := datastore.Node{Name: r.Name}
		n.PodCIDR, _ = nodestate.ParseIPv4CIDR(r.PodCIDR)
		n.VTEPMAC, _ = net.ParseMAC(r.VTEPMAC)
		n.UnderlayIP = net.ParseIP(r.UnderlayIP).To4()
		nodes = append(nodes, n)
	}
	return nodes
}

func (s *Store) read() ([]record, error) {
	entries, err := os.ReadDir(s.dir)
	if err != nil {
		return nil, fmt.Errorf("read local datastore %s: %w", s.dir, err)
	}
	var recs []record
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), ".") || !strings.HasSuffix(e.Name(), ".json") {
			continue
		}
		data, err := os.ReadFile(filepath.Join(s.dir, e.Name()))
		if err != nil {
			continue // removed meanwhile
		}
		var r record
		if json.Unmarshal(data, &r) != nil || r.Name == "" {
			continue
		}
		recs = append(recs, r)
	}
	return recs, nil
}

func (s *Store) write(r record) error {
	data, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	return nodestate.WriteFileAtomic(s.path(r.Name), append(data, '\n'), 0o644)
}

func (s *Store) locked(fn func() error) error {
	f, err := os.OpenFile(filepath.Join(s.dir, ".lock"), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return fmt.Errorf("open local datastore lock: %w", err)
	}
	defer f.Close()
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX); err != nil {
		return fmt.Errorf("lock local datastore: %w", err)
	}
	return fn()
}
