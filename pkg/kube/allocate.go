package kube

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sort"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"

	"github.com/drover-net/drover/pkg/datastore"
	"github.com/drover-net/drover/pkg/nodestate"
)

// Allocation is self-allocation of node pod CIDRs, for clusters whose
// controller manager does not allocate them. Claims live in one ConfigMap
// (subnet -> "node/uid"); every claim is an update carrying the
// resourceVersion it read, so of two agents racing for a subnet the API
// server accepts one and answers the other with a conflict, and it retries.
// No lock service, no lease: the API server's optimistic concurrency is the
// whole protocol.
//
// A claim belongs to one Node object, named by its UID, not just to a name:
// nodes are deleted without anyone releasing their claims, and a claim whose
// Node object no longer exists is dead. Dead claims are reused only once no
// never-claimed subnet is left, so a node that is deleted and re-registered
// soon after usually gets its old subnet back. The owner of a claim
// re-confirms it (rewrites it with its current UID, through the same
// compare-and-swap) whenever the UID differs; so if a reclaimer read the
// ConfigMap while the owner's Node was gone and the owner then came back,
// the two writes conflict and only one of them lands.
type Allocation struct {
	ClusterCIDR *net.IPNet
	NodeMask    int
	Namespace   string // of the ConfigMap
	ConfigMap   string
}

func (a *Allocation) claim(ctx context.Context, c kubernetes.Interface, self *corev1.Node, timeout time.Duration) (*net.IPNet, error) {
	backoff := 10 * time.Millisecond
	for attempt := 0; ; attempt++ {
		// One deadline per attempt: an attempt is a handful of requests,
		// and a stalled API server must not hold the agent forever.
		actx, cancel := context.WithTimeout(ctx, timeout)
		cidr, err := a.tryClaim(actx, c, self)
		cancel()
		if err == nil {
			return cidr, nil
		}
		if !apierrors.IsConflict(err) && !apierrors.IsAlreadyExists(err) {
			return nil, err
		}
		// Lost a race: read again and pick again, after a short jittered
		// pause so racing agents spread out.
		if attempt > 100 {
			return nil, fmt.Errorf("claim a pod CIDR for %s: still conflicting after %d attempts: %w", self.Name, attempt, err)
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(backoff + time.Duration(time.Now().UnixNano()%int64(backoff))):
		}
		backoff = min(2*backoff, time.Second)
	}
}

// owner splits a claim's value; claims written before UIDs were recorded
// hold the bare node name.
func owner(v string) (name string, uid types.UID) {
	name, u, _ := strings.Cut(v, "/")
	return name, types.UID(u)
}

func ownerValue(n *corev1.Node) string { return n.Name + "/" + string(n.UID) }

func (a *Allocation) tryClaim(ctx context.Context, c kubernetes.Interface, self *corev1.Node) (*net.IPNet, error) {
	cms := c.CoreV1().ConfigMaps(a.Namespace)
	cm, err := cms.Get(ctx, a.ConfigMap, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		cm, err = cms.Create(ctx, &corev1.ConfigMap{
			ObjectMeta: metav1.ObjectMeta{Name: a.ConfigMap, Namespace: a.Namespace},
			Data:       map[string]string{},
		}, metav1.CreateOptions{})
	}
	if err != nil {
		return nil, fmt.Errorf("pod CIDR claims %s/%s: %w", a.Namespace, a.ConfigMap, err)
	}
	if cm.Data == nil {
		cm.Data = map[string]string{}
	}
	// The node list is read after the ConfigMap and fresh from etcd (no
	// ResourceVersion "0", which may answer from a stale watch cache): a
	// claim found dead here was in the ConfigMap version this update will
	// be checked against, and its Node was already gone when we looked, so
	// it cannot come back to life without writing the ConfigMap itself.
	nodes, err := c.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, fmt.Errorf("list nodes: %w", err)
	}
	alive := make(map[string]types.UID, len(nodes.Items))
	var taken []*net.IPNet
	for i := range nodes.Items {
		n := &nodes.Items[i]
		alive[n.Name] = n.UID
		if cidr := nodePodCIDR(n); cidr != nil {
			if n.Name == self.Name {
				return cidr, nil
			}
			// Subnets the controller manager (or an admin) assigned, and
			// claims recorded on live Nodes, are taken.
			taken = append(taken, cidr)
		}
	}
	// ConfigMap keys cannot hold '/', so a subnet is keyed "10.244.3.0-24".
	type claimed struct {
		key  string
		cidr *net.IPNet
	}
	var dead []claimed
	keys := make([]string, 0, len(cm.Data))
	for key := range cm.Data {
		keys = append(keys, key)
	}
	sort.Strings(keys) // the same dead claim is reused first by everyone
	for _, key := range keys {
		cidr, err := nodestate.ParseIPv4CIDR(keyToCIDR(key))
		if err != nil {
			continue
		}
		name, uid := owner(cm.Data[key])
		if name == self.Name {
			if uid != self.UID {
				// Our claim from an earlier Node object of this name (or
				// from before UIDs were recorded): re-confirm it, so a
				// concurrent reclaimer's update conflicts with ours.
				cm.Data[key] = ownerValue(self)
				if _, err := cms.Update(ctx, cm, metav1.UpdateOptions{}); err != nil {
					return nil, err
				}
			}
			return cidr, nil
		}
		if liveUID, ok := alive[name]; ok && (uid == "" || uid == liveUID) {
			taken = append(taken, cidr)
		} else {
			dead = append(dead, claimed{key, cidr})
		}
	}
	all := append([]*net.IPNet{}, taken...)
	for _, d := range dead {
		all = append(all, d.cidr)
	}
	cidr, err := datastore.FreeSubnet(a.ClusterCIDR, a.NodeMask, all)
	if errors.Is(err, datastore.ErrNoFreeSubnet) {
		// The pool is full but for the claims of deleted nodes: reuse the
		// first one that still fits the mask and overlaps nothing live.
		for _, d := range dead {
			if ones, _ := d.cidr.Mask.Size(); ones != a.NodeMask || !a.ClusterCIDR.Contains(d.cidr.IP) || overlapsAny(d.cidr, taken) {
				continue
			}
			delete(cm.Data, d.key)
			cidr, err = d.cidr, nil
			break
		}
	}
	if err != nil {
		return nil, err
	}
	cm.Data[cidrToKey(cidr)] = ownerValue(self)
	if _, err := cms.Update(ctx, cm, metav1.UpdateOptions{}); err != nil {
		return nil, err
	}
	return cidr, nil
}

func overlapsAny(c *net.IPNet, others []*net.IPNet) bool {
	for _, o := range others {
		if o.Contains(c.IP) || c.Contains(o.IP) {
			return true
		}
	}
	return false
}

func cidrToKey(c *net.IPNet) string {
	ones, _ := c.Mask.Size()
	return fmt.Sprintf("%s-%d", c.IP, ones)
}

func keyToCIDR(k string) string {
	for i := len(k) - 1; i >= 0; i-- {
		if k[i] == '-' {
			return k[:i] + "/" + k[i+1:]
		}
	}
	return k
}

// Release drops a node's claim, for uninstall. Claims of deleted nodes
// need no release: tryClaim reuses them when the pool runs out.
func (a *Allocation) Release(ctx context.Context, c kubernetes.Interface, node string) error {
	ctx, cancel := context.WithTimeout(ctx, DefaultRequestTimeout)
	defer cancel()
	for {
		cm, err := c.CoreV1().ConfigMaps(a.Namespace).Get(ctx, a.ConfigMap, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return nil
		}
		if err != nil {
			return err
		}
		changed := false
		for k, v := range cm.Data {
			if name, _ := owner(v); name == node {
				delete(cm.Data, k)
				changed = true
			}
		}
		if !changed {
			return nil
		}
		_, err = c.CoreV1().ConfigMaps(a.Namespace).Update(ctx, cm, metav1.UpdateOptions{})
		if !apierrors.IsConflict(err) {
			return err
		}
	}
}
