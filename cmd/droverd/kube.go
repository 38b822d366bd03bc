package main

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"time"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/client-go/util/connrotation"

	"github.com/drover-net/drover/pkg/datastore"
	"github.com/drover-net/drover/pkg/kube"
)

// ClaimsConfigMap holds self-allocated pod CIDR claims.
const ClaimsConfigMap = "drover-pod-cidrs"

// kubeClient builds the API client and a function that closes every
// connection it holds (see kube.Config.CloseConnections).
func kubeClient(kubeconfig string) (kubernetes.Interface, func(), error) {
	var cfg *rest.Config
	var err error
	if kubeconfig != "" {
		cfg, err = clientcmd.BuildConfigFromFlags("", kubeconfig)
	} else {
		cfg, err = rest.InClusterConfig()
	}
	if err != nil {
		return nil, nil, fmt.Errorf("kubernetes client config: %w", err)
	}
	cfg.UserAgent = "droverd"
	dialer := connrotation.NewDialer((&net.Dialer{Timeout: 30 * time.Second, KeepAlive: 30 * time.Second}).DialContext)
	cfg.Dial = dialer.DialContext
	// No cfg.Timeout: client-go turns it into http.Client.Timeout, which
	// also applies to watch requests and would cut the Node informer's
	// stream every Timeout. pkg/kube gives each other call its own context
	// deadline instead; the informer's reflector re-lists and re-watches
	// with capped exponential backoff by itself, and client-go's HTTP/2
	// health pings (30s idle, 15s timeout) end a connection to a server
	// that went silent.
	c, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, nil, fmt.Errorf("kubernetes client: %w", err)
	}
	return c, dialer.CloseAll, nil
}

func openKube(_ context.Context, o *options, cluster *net.IPNet, log *slog.Logger) (datastore.Datastore, error) {
	c, closeConns, err := kubeClient(o.kubeconfig)
	if err != nil {
		return nil, err
	}
	cfg := kube.Config{Client: c, Resync: o.resync * 30, CloseConnections: closeConns}
	if o.allocateNodeCIDRs {
		ns := os.Getenv("POD_NAMESPACE")
		if ns == "" {
			ns = "kube-system"
		}
		cfg.Allocation = &kube.Allocation{ClusterCIDR: cluster, NodeMask: o.nodeCIDRMask, Namespace: ns, ConfigMap: ClaimsConfigMap}
		log.Info("self-allocating node pod CIDRs", "configmap", ns+"/"+ClaimsConfigMap, "mask", o.nodeCIDRMask)
	}
	return kube.New(cfg), nil
}
