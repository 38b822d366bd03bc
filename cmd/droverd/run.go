package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strings"
	"time"

	"github.com/drover-net/drover/pkg/agent"
	"github.com/drover-net/drover/pkg/cniconf"
	"github.com/drover-net/drover/pkg/datastore"
	"github.com/drover-net/drover/pkg/datastore/local"
	"github.com/drover-net/drover/pkg/nodestate"
	"github.com/drover-net/drover/pkg/vxlan"
)

// options are droverd's flags; each can also come from the environment
// variable named in its help (DROVER_<FLAG>), except NODE_NAME and
// KUBECONFIG, which keep their usual names.
type options struct {
	nodeName, datastore, kubeconfig           string
	underlayIface, underlayIP                 string
	vni, port, mtu, nodeCIDRMask              int
	clusterCIDR                               string
	allocateNodeCIDRs, directRouting, masq    bool
	stateFile, ipamDir, cniConfDir, cniConfNm string
	portmap                                   bool
	resync                                    time.Duration
	listen, logLevel                          string
}

func parseFlags(args []string) (*options, error) {
	o := &options{}
	fs := flag.NewFlagSet("droverd", flag.ContinueOnError)
	fs.StringVar(&o.nodeName, "node-name", os.Getenv("NODE_NAME"), "this node's name (env NODE_NAME)")
	fs.StringVar(&o.datastore, "datastore", env("DATASTORE", "kubernetes"), "where nodes are recorded: kubernetes, or local:DIR for one machine")
	fs.StringVar(&o.kubeconfig, "kubeconfig", os.Getenv("KUBECONFIG"), "kubeconfig path; empty: in-cluster config (env KUBECONFIG)")
	fs.StringVar(&o.underlayIface, "underlay-iface", env("UNDERLAY_IFACE", ""), "underlay interface; default: the one holding --underlay-ip, else the default route's")
	fs.StringVar(&o.underlayIP, "underlay-ip", env("UNDERLAY_IP", ""), "underlay IPv4 address; default: the underlay interface's first")
	fs.IntVar(&o.vni, "vni", envInt("VNI", vxlan.DefaultVNI), "VXLAN network identifier")
	fs.IntVar(&o.port, "port", envInt("PORT", vxlan.DefaultPort), "VXLAN UDP port")
	fs.IntVar(&o.mtu, "mtu", envInt("MTU", 0), "pod and VXLAN MTU; 0: the underlay MTU minus 50")
	fs.StringVar(&o.clusterCIDR, "cluster-cidr", env("CLUSTER_CIDR", ""), "the cluster's pod CIDR (required)")
	fs.BoolVar(&o.allocateNodeCIDRs, "allocate-node-cidrs", envBool("ALLOCATE_NODE_CIDRS", false), "claim a node pod CIDR from --cluster-cidr when the cluster assigns none (default true with a local datastore)")
	fs.IntVar(&o.nodeCIDRMask, "node-cidr-mask", envInt("NODE_CIDR_MASK", 24), "prefix length of self-allocated node pod CIDRs")
	fs.BoolVar(&o.directRouting, "direct-routing", envBool("DIRECT_ROUTING", false), "route to peers on the same underlay subnet without encapsulation")
	fs.BoolVar(&o.masq, "masquerade", envBool("MASQUERADE", true), "masquerade pod traffic leaving the cluster CIDR")
	stateFlags(fs, &o.stateFile, &o.ipamDir)
	fs.StringVar(&o.cniConfDir, "cni-conf-dir", env("CNI_CONF_DIR", "/etc/cni/net.d"), "where the CNI conflist is written")
	fs.StringVar(&o.cniConfNm, "cni-conf-name", env("CNI_CONF_NAME", cniconf.DefaultName), "the conflist's file name")
	fs.BoolVar(&o.portmap, "cni-portmap", envBool("CNI_PORTMAP", true), "chain the portmap plugin for hostPorts in the conflist")
	fs.DurationVar(&o.resync, "resync", envDuration("RESYNC", 10*time.Second), "period of the full reconcile")
	fs.StringVar(&o.listen, "listen", env("LISTEN", "127.0.0.1:9436"), "address of /metrics, /healthz, /readyz; empty disables")
	fs.StringVar(&o.logLevel, "log-level", env("LOG_LEVEL", "info"), "debug, info, warn or error")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if err := errors.Join(envErrs...); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	return o, nil
}

// stateFlags are the flags run and uninstall share: where the node state
// file (and the peer cache beside it) and the plugin's IPAM store live, so
// uninstall removes them from wherever run wrote them.
func stateFlags(fs *flag.FlagSet, stateFile, ipamDir *string) {
	fs.StringVar(stateFile, "state-file", env("STATE_FILE", nodestate.DefaultPath), "node state file the CNI plugin reads")
	fs.StringVar(ipamDir, "ipam-dir", env("IPAM_DIR", ""), "the plugin's IPAM store root; empty: the plugin's default")
}

func run(ctx context.Context, args []string) error {
	o, err := parseFlags(args)
	if err != nil {
		return err
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(o.logLevel)); err != nil {
		return fmt.Errorf("--log-level: %w", err)
	}
	log := slog.New(slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: level})).With("node", o.nodeName)

	if o.clusterCIDR == "" {
		return errors.New("--cluster-cidr is required")
	}
	cluster, err := nodestate.ParseIPv4CIDR(o.clusterCIDR)
	if err != nil {
		return fmt.Errorf("--cluster-cidr: %w", err)
	}
	if err := validNodeName(o.nodeName); err != nil {
		return err
	}
	var ulIP net.IP
	if o.underlayIP != "" {
		if ulIP = net.ParseIP(o.underlayIP).To4(); ulIP == nil {
			return fmt.Errorf("--underlay-ip %q is not an IPv4 address", o.underlayIP)
		}
	}
	// Bound first: an address in use is a startup error, not an agent
	// without health endpoints that its liveness probe restarts forever.
	var ln net.Listener
	if o.listen != "" {
		if ln, err = agent.Listen(o.listen); err != nil {
			return fmt.Errorf("--listen: %w", err)
		}
		defer ln.Close()
	}
	ds, err := openDatastore(ctx, o, cluster, log)
	if err != nil {
		return err
	}
	a, err := agent.New(agent.Config{
		NodeName: o.nodeName, Datastore: ds, UnderlayIface: o.underlayIface, UnderlayIP: ulIP,
		VNI: o.vni, Port: o.port, ClusterCIDR: cluster, MTU: o.mtu, DirectRouting: o.directRouting,
		Masquerade: o.masq, StateFile: o.stateFile, IPAMDir: o.ipamDir, CNIConfDir: o.cniConfDir,
		CNIConfName: o.cniConfNm, Portmap: o.portmap, Resync: o.resync, Log: log,
	})
	if err != nil {
		return err
	}
	if ln == nil {
		return a.Run(ctx)
	}
	// The server ending early ends droverd too (the DaemonSet restarts it):
	// an agent nobody can probe is worse than a restart.
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	served := make(chan error, 1)
	go func() {
		err := a.Serve(ctx, ln)
		if err == nil && ctx.Err() == nil {
			err = errors.New("metrics and health server stopped")
		}
		served <- err
		cancel()
	}()
	runErr := a.Run(ctx)
	cancel()
	if err := <-served; err != nil && runErr == nil {
		return err
	}
	return runErr
}

func openDatastore(ctx context.Context, o *options, cluster *net.IPNet, log *slog.Logger) (datastore.Datastore, error) {
	switch {
	case strings.HasPrefix(o.datastore, "local:"):
		dir := strings.TrimPrefix(o.datastore, "local:")
		if dir == "" {
			return nil, errors.New("--datastore=local:DIR needs a directory")
		}
		// One machine has nobody else to allocate pod CIDRs.
		return local.New(dir, cluster, o.nodeCIDRMask)
	case o.datastore == "kubernetes":
		return openKube(ctx, o, cluster, log)
	default:
		return nil, fmt.Errorf("--datastore %q: want kubernetes or local:DIR", o.datastore)
	}
}

// validNodeName accepts a Kubernetes node name (an RFC 1123 subdomain): it
// names files and annotations, so nothing else may pass.
func validNodeName(name string) error {
	if name == "" {
		return errors.New("node name is empty: set --node-name or NODE_NAME")
	}
	if len(name) > 253 {
		return fmt.Errorf("node name %q is longer than 253 characters", name)
	}
	for i, r := range name {
		ok := r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || (r == '-' || r == '.') && i > 0 && i < len(name)-1
		if !ok {
			return fmt.Errorf("node name %q is not a lowercase RFC 1123 subdomain", name)
		}
	}
	if strings.Contains(name, "..") {
		return fmt.Errorf("node name %q is not a lowercase RFC 1123 subdomain", name)
	}
	return nil
}
