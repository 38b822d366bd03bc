package kube

import (
	"context"
	"fmt"
	"reflect"
	"sort"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/tools/cache"

	"github.com/drover-net/drover/pkg/datastore"
)

// Watch runs a Node informer and calls onChange with the full set of nodes
// once the cache has synced and whenever a node's overlay record changes.
// Events only mark the view dirty; one loop rebuilds it, so a burst of a
// thousand node events costs a handful of rebuilds, and kubelet's status
// heartbeats (which change nothing drover reads) cost none. While the API
// server is unreachable the informer keeps its cache and retries with
// backoff, so the agent keeps programming the last known peers.
func (s *Store) Watch(ctx context.Context, onChange func([]datastore.Node)) error {
	factory := informers.NewSharedInformerFactory(s.cfg.Client, s.cfg.Resync)
	inf := factory.Core().V1().Nodes()
	dirty := make(chan struct{}, 1)
	mark := func() {
		select {
		case dirty <- struct{}{}:
		default:
		}
	}
	_, err := inf.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc: func(any) { mark() },
		UpdateFunc: func(oldObj, newObj any) {
			o, ok1 := oldObj.(*corev1.Node)
			n, ok2 := newObj.(*corev1.Node)
			if !ok1 || !ok2 || !reflect.DeepEqual(toNode(o), toNode(n)) {
				mark()
			}
		},
		DeleteFunc: func(any) { mark() },
	})
	if err != nil {
		return fmt.Errorf("node informer: %w", err)
	}
	lister := inf.Lister()
	factory.Start(ctx.Done())
	defer factory.Shutdown()
	if !cache.WaitForCacheSync(ctx.Done(), inf.Informer().HasSynced) {
		return ctx.Err()
	}
	var last []datastore.Node
	first := true
	for {
		nodes, err := lister.List(labels.Everything())
		if err == nil {
			view := make([]datastore.Node, 0, len(nodes))
			for _, n := range nodes {
				view = append(view, toNode(n))
			}
			sort.Slice(view, func(i, j int) bool { return view[i].Name < view[j].Name })
			if first || !reflect.DeepEqual(view, last) {
				first, last = false, view
				onChange(view)
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-dirty:
		}
	}
}
