package kube

import (
	"context"
	"fmt"
	"net"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/drover-net/drover/pkg/datastore"
	"github.com/drover-net/drover/pkg/nodestate"
)

// Allocation is self-allocation of node pod CIDRs, for clusters whose
// controller manager does not allocate them. Claims live in one ConfigMap
// (subnet -> node name); every claim is an update carrying the
// resourceVersion it read, so of two agents racing for a subnet the API
// server accepts one and answers the other with a conflict, and it retries.
// No lock service, no lease: the API server's optimistic concurrency is the
// whole protocol.
type Allocation struct {
	ClusterCIDR *net.IPNet
	NodeMask    int
	Namespace   string // of the ConfigMap
	ConfigMap   string
}

func (a *Allocation) claim(ctx context.Context, c kubernetes.Interface, node string, timeout time.Duration) (*net.IPNet, error) {
	backoff := 10 * time.Millisecond
	for attempt := 0; ; attempt++ {
		// One deadline per attempt: an attempt is a handful of requests,
		// and a stalled API server must not hold the agent forever.
		actx, cancel := context.WithTimeout(ctx, timeout)
		cidr, err := a.tryClaim(actx, c, node)
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
			return nil, fmt.Errorf("claim a pod CIDR for %s: still conflicting after %d attempts: %w", node, attempt, err)
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(backoff + time.Duration(time.Now().UnixNano()%int64(backoff))):
		}
		backoff = min(2*backoff, time.Second)
	}
}

func (a *Allocation) tryClaim(ctx context.Context, c kubernetes.Interface, node string) (*net.IPNet, error) {
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
	// ConfigMap keys cannot hold '/', so a subnet is keyed "10.244.3.0-24".
	var taken []*net.IPNet
	for key, owner := range cm.Data {
		cidr, err := nodestate.ParseIPv4CIDR(keyToCIDR(key))
		if err != nil {
			continue
		}
		if owner == node {
			return cidr, nil
		}
		taken = append(taken, cidr)
	}
	// Subnets the controller manager (or an admin) assigned are taken too.
	nodes, err := c.CoreV1().Nodes().List(ctx, metav1.ListOptions{ResourceVersion: "0"})
	if err != nil {
		return nil, fmt.Errorf("list nodes: %w", err)
	}
	for i := range nodes.Items {
		if cidr := nodePodCIDR(&nodes.Items[i]); cidr != nil {
			if nodes.Items[i].Name == node {
				return cidr, nil
			}
			taken = append(taken, cidr)
		}
	}
	cidr, err := datastore.FreeSubnet(a.ClusterCIDR, a.NodeMask, taken)
	if err != nil {
		return nil, err
	}
	cm.Data[cidrToKey(cidr)] = node
	if _, err := cms.Update(ctx, cm, metav1.UpdateOptions{}); err != nil {
		return nil, err
	}
	return cidr, nil
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

// Release drops a node's claim; for uninstall and node removal.
func (a *Allocation) Release(ctx context.Context, c kubernetes.Interface, node string) error {
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
			if v == node {
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
