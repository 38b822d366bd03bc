// Package kube is droverd's Kubernetes datastore: the node's pod CIDR comes
// from its Node object (spec.podCIDR, as kube-controller-manager allocates
// it) or, when the cluster does not allocate, from a claim made through the
// API server's optimistic concurrency; the node's VTEP is published as
// drover.io/ annotations through the nodes/status subresource; peers come
// from a Node informer. It does not program anything.
package kube

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"

	"github.com/drover-net/drover/pkg/datastore"
	"github.com/drover-net/drover/pkg/nodestate"
)

// Annotations drover publishes on its Node.
const (
	AnnotationVTEPMAC    = "drover.io/vtep-mac"
	AnnotationUnderlayIP = "drover.io/underlay-ip"
	// AnnotationPodCIDR carries a self-allocated pod CIDR, for peers to
	// read where spec.podCIDR is empty.
	AnnotationPodCIDR = "drover.io/pod-cidr"
)

// Config shapes the datastore.
type Config struct {
	Client kubernetes.Interface
	// Allocation, when set, lets nodes without spec.podCIDR claim a subnet.
	Allocation *Allocation
	// Resync is the informer's resync period; 0 disables.
	Resync time.Duration
	// RequestTimeout bounds every call that is not the informer's watch
	// (get, list, patch, update); 0 means DefaultRequestTimeout. It is a
	// per-call context deadline and not rest.Config.Timeout, which becomes
	// http.Client.Timeout and would also cut the informer's long-running
	// watch streams.
	RequestTimeout time.Duration
	// CloseConnections, when set, closes every connection Client holds, so
	// that the next request and the informer's next watch dial afresh (see
	// Reconnect). cmd/droverd gives it client-go's connrotation dialer, as
	// kubelet does for its own heartbeats.
	CloseConnections func()
}

// DefaultRequestTimeout is long enough for a loaded API server and short
// enough that a black-holed one cannot stall the agent's loop.
const DefaultRequestTimeout = 10 * time.Second

// Store implements datastore.Datastore over the API.
type Store struct {
	cfg Config

	mu      sync.Mutex
	claimed map[string]*net.IPNet // self-allocated pod CIDRs, by node
}

// New returns the store.
func New(cfg Config) *Store {
	if cfg.RequestTimeout <= 0 {
		cfg.RequestTimeout = DefaultRequestTimeout
	}
	return &Store{cfg: cfg}
}

// call bounds one API request: without a deadline a request to an API
// server that accepted the connection and then stalls (stopped, black-holed
// after the handshake) never returns.
func (s *Store) call(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, s.cfg.RequestTimeout)
}

// PodCIDR returns spec.podCIDR, else the node's self-allocated claim, else
// (with allocation configured) a newly claimed subnet.
func (s *Store) PodCIDR(ctx context.Context, name string) (*net.IPNet, error) {
	rctx, cancel := s.call(ctx)
	node, err := s.cfg.Client.CoreV1().Nodes().Get(rctx, name, metav1.GetOptions{})
	cancel()
	if apierrors.IsNotFound(err) {
		return nil, fmt.Errorf("%w: node %s is not registered", datastore.ErrNoPodCIDR, name)
	}
	if err != nil {
		return nil, fmt.Errorf("get node %s: %w", name, err)
	}
	if cidr := nodePodCIDR(node); cidr != nil {
		if s.cfg.Allocation != nil && node.Spec.PodCIDR == "" && len(node.Spec.PodCIDRs) == 0 {
			s.setClaimed(name, cidr)
		}
		return cidr, nil
	}
	if s.cfg.Allocation == nil {
		return nil, fmt.Errorf("%w: node %s has no spec.podCIDR yet (is kube-controller-manager running with --allocate-node-cidrs?), and self-allocation is off", datastore.ErrNoPodCIDR, name)
	}
	cidr, err := s.cfg.Allocation.claim(ctx, s.cfg.Client, node, s.cfg.RequestTimeout)
	if err != nil {
		return nil, err
	}
	// Record the claim on the Node, where peers look for it.
	if err := s.patchAnnotations(ctx, name, map[string]string{AnnotationPodCIDR: cidr.String()}); err != nil {
		return nil, err
	}
	s.setClaimed(name, cidr)
	return cidr, nil
}

func (s *Store) setClaimed(name string, cidr *net.IPNet) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.claimed == nil {
		s.claimed = map[string]*net.IPNet{}
	}
	s.claimed[name] = cidr
}

func (s *Store) claimedCIDR(name string) *net.IPNet {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.claimed[name]
}

// Reconnect closes the client's connections, when the config says how: the
// informer's watch ends at once and re-lists over a new connection, instead
// of waiting for HTTP/2 health pings to give up on one that the node's new
// address made dead.
func (s *Store) Reconnect() {
	if s.cfg.CloseConnections != nil {
		s.cfg.CloseConnections()
	}
}

// UnderlayIP returns the node's InternalIP (IPv4), or nil when it has none.
func (s *Store) UnderlayIP(ctx context.Context, name string) (net.IP, error) {
	ctx, cancel := s.call(ctx)
	defer cancel()
	node, err := s.cfg.Client.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return nil, fmt.Errorf("get node %s: %w", name, err)
	}
	return internalIP(node), nil
}

// internalIP is the node's first IPv4 InternalIP, or nil.
func internalIP(n *corev1.Node) net.IP {
	for _, a := range n.Status.Addresses {
		if a.Type == corev1.NodeInternalIP {
			if ip := net.ParseIP(a.Address).To4(); ip != nil {
				return ip
			}
		}
	}
	return nil
}

// Publish writes the VTEP annotations, and the pod CIDR annotation when the
// node's pod CIDR is self-allocated. It patches through nodes/status, the
// only write droverd's role needs: the status strategy keeps metadata
// changes, as kubelet's own annotation updates rely on. The agent calls it
// whenever its informer view of the own Node differs from what it wants
// (the Node was re-created, or its annotations edited or removed), so a
// self-allocated claim is re-confirmed first: a re-created Node has a new
// UID, and the claim must name it to stay live (see Allocation).
func (s *Store) Publish(ctx context.Context, self datastore.Node) error {
	ann := map[string]string{
		AnnotationVTEPMAC:    self.VTEPMAC.String(),
		AnnotationUnderlayIP: self.UnderlayIP.String(),
	}
	if claimed := s.claimedCIDR(self.Name); claimed != nil && s.cfg.Allocation != nil {
		rctx, cancel := s.call(ctx)
		node, err := s.cfg.Client.CoreV1().Nodes().Get(rctx, self.Name, metav1.GetOptions{})
		cancel()
		if err != nil {
			return fmt.Errorf("get node %s: %w", self.Name, err)
		}
		if node.Spec.PodCIDR == "" && len(node.Spec.PodCIDRs) == 0 {
			cidr, err := s.cfg.Allocation.claim(ctx, s.cfg.Client, node, s.cfg.RequestTimeout)
			if err != nil {
				return fmt.Errorf("re-confirm the pod CIDR claim of %s: %w", self.Name, err)
			}
			if cidr.String() != claimed.String() {
				return fmt.Errorf("node %s lost its pod CIDR claim %s (now %s): restart droverd to take the new one", self.Name, claimed, cidr)
			}
			ann[AnnotationPodCIDR] = cidr.String()
		}
	}
	return s.patchAnnotations(ctx, self.Name, ann)
}

func (s *Store) patchAnnotations(ctx context.Context, name string, ann map[string]string) error {
	patch, err := json.Marshal(map[string]any{"metadata": map[string]any{"annotations": ann}})
	if err != nil {
		return err
	}
	ctx, cancel := s.call(ctx)
	defer cancel()
	_, err = s.cfg.Client.CoreV1().Nodes().Patch(ctx, name, types.MergePatchType, patch, metav1.PatchOptions{}, "status")
	if err != nil {
		return fmt.Errorf("annotate node %s: %w", name, err)
	}
	return nil
}

// RemoveAnnotations deletes drover's annotations from a node; for
// uninstall. A missing node is fine.
func RemoveAnnotations(ctx context.Context, c kubernetes.Interface, name string) error {
	patch := []byte(`{"metadata":{"annotations":{"` + AnnotationVTEPMAC + `":null,"` + AnnotationUnderlayIP + `":null,"` + AnnotationPodCIDR + `":null}}}`)
	ctx, cancel := context.WithTimeout(ctx, DefaultRequestTimeout)
	defer cancel()
	_, err := c.CoreV1().Nodes().Patch(ctx, name, types.MergePatchType, patch, metav1.PatchOptions{}, "status")
	if apierrors.IsNotFound(err) {
		return nil
	}
	return err
}

// nodePodCIDR is the node's IPv4 pod CIDR: spec.podCIDRs (dual-stack
// clusters list one per family), spec.podCIDR, then drover's own claim.
func nodePodCIDR(n *corev1.Node) *net.IPNet {
	cands := append([]string{}, n.Spec.PodCIDRs...)
	cands = append(cands, n.Spec.PodCIDR, n.Annotations[AnnotationPodCIDR])
	for _, c := range cands {
		if c == "" {
			continue
		}
		if cidr, err := nodestate.ParseIPv4CIDR(c); err == nil {
			return cidr
		}
	}
	return nil
}

// toNode reads a Node object as an overlay record.
func toNode(n *corev1.Node) datastore.Node {
	d := datastore.Node{Name: n.Name, PodCIDR: nodePodCIDR(n)}
	d.VTEPMAC, _ = net.ParseMAC(n.Annotations[AnnotationVTEPMAC])
	d.UnderlayIP = net.ParseIP(n.Annotations[AnnotationUnderlayIP]).To4()
	d.InternalIP = internalIP(n)
	return d
}
