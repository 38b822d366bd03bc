package overlay_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/containernetworking/cni/libcni"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/plugins/pkg/ns"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/drover-net/drover/internal/cnirig"
	"github.com/drover-net/drover/internal/kubeenv"
	"github.com/drover-net/drover/internal/testcluster"
	"github.com/drover-net/drover/internal/testns"
)

var (
	droverdBin string
	cniPath    string
)

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	dir, err := os.MkdirTemp("", "drover-overlay-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	droverdBin = filepath.Join(dir, "droverd")
	build := exec.Command("go", "build", "-o", droverdBin, "github.com/drover-net/drover/cmd/droverd")
	if out, err := build.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "build droverd: %v\n%s", err, out)
		return 1
	}
	if err := cnirig.BuildDrover(filepath.Join(dir, "drover")); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	ref := cnirig.RefPluginsDir()
	if err := cnirig.CheckRefPlugins(ref); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	cniPath = filepath.Join(dir, "cni-bin")
	if err := cnirig.ComposePath(cniPath, filepath.Join(dir, "drover"), ref); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return m.Run()
}

// cluster is a netns cluster whose nodes run the real droverd binary.
type cluster struct {
	t      *testing.T
	u      *testcluster.Underlay
	dsArgs []string // datastore flags for every droverd
	nodes  map[string]*node
	extra  []string
	env    *kubeenv.Env      // nil: the local datastore
	cp     *testcluster.Node // the API server's host, with env
	seq    int               // nodes made so far, for their pod CIDRs
	// allocate: Nodes get no pod CIDR and droverd claims its own
	// (--allocate-node-cidrs); Kubernetes only.
	allocate bool
}

type node struct {
	*testcluster.Node
	dir string
	cmd *exec.Cmd
	log *os.File
	// args and env are this node's own droverd flags and environment, on
	// top of the cluster's; set before its first start.
	args, env []string
	// noUnderlayFlag leaves --underlay-iface out, so droverd finds the
	// underlay itself (in Kubernetes: by the Node's InternalIP).
	noUnderlayFlag bool
	exited         chan struct{} // closed when the current droverd exited
	waitErr        error
}

// newCluster makes the underlay; datastore flags default to a local
// datastore in a temp dir.
func newCluster(t *testing.T, extra ...string) *cluster {
	testns.RequireRoot(t)
	c := &cluster{t: t, u: testcluster.NewUnderlay(t), nodes: map[string]*node{}, extra: extra}
	c.dsArgs = []string{"--datastore", "local:" + t.TempDir()}
	return c
}

func (c *cluster) dsDir() string { return strings.TrimPrefix(c.dsArgs[1], "local:") }

// add creates a node namespace on the underlay without starting droverd,
// so a test can shape it (flags, environment, links) first.
func (c *cluster) add(name string) *node {
	c.t.Helper()
	if n := c.nodes[name]; n != nil {
		return n
	}
	n := &node{Node: c.u.AddNode(c.t, name), dir: c.t.TempDir()}
	c.nodes[name] = n
	c.seq++
	if c.env != nil {
		// The controller manager's part: a Node with its pod CIDR (none
		// when the agents allocate), and the kubelet's: its InternalIP.
		cidr := fmt.Sprintf("10.244.%d.0/24", c.seq)
		if c.allocate {
			cidr = ""
		}
		createNode(c.t, c.env, name, cidr, n.IP.String())
	}
	c.t.Cleanup(func() { c.stop(name, syscall.SIGKILL) })
	return n
}

// start creates the node on first use and starts its droverd.
func (c *cluster) start(name string) *node {
	c.t.Helper()
	n := c.add(name)
	var err error
	n.log, err = os.OpenFile(filepath.Join(n.dir, "droverd.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		c.t.Fatal(err)
	}
	args := append([]string{
		"--node-name", name, "--cluster-cidr", "10.244.0.0/16",
		"--state-file", filepath.Join(n.dir, "node.json"), "--ipam-dir", filepath.Join(n.dir, "ipam"),
		"--cni-conf-dir", filepath.Join(n.dir, "net.d"), "--resync", "2s",
	}, c.dsArgs...)
	if !n.noUnderlayFlag {
		args = append(args, "--underlay-iface", "eth0")
	}
	if c.allocate {
		args = append(args, "--allocate-node-cidrs")
	}
	args = append(append(args, c.extra...), n.args...)
	err = n.NS.Do(func(ns.NetNS) error {
		n.cmd = exec.Command(droverdBin, args...)
		n.cmd.Env = append(os.Environ(), n.env...)
		n.cmd.Stdout, n.cmd.Stderr = n.log, n.log
		return n.cmd.Start()
	})
	if err != nil {
		c.t.Fatalf("start droverd on %s: %v", name, err)
	}
	exited, cmd := make(chan struct{}), n.cmd
	n.exited = exited
	go func() { n.waitErr = cmd.Wait(); close(exited) }()
	return n
}

// stop signals droverd and waits for it.
func (c *cluster) stop(name string, sig syscall.Signal) {
	n := c.nodes[name]
	if n == nil || n.cmd == nil {
		return
	}
	_ = n.cmd.Process.Signal(sig)
	<-n.exited
	n.cmd = nil
	_ = n.log.Close()
	if c.t.Failed() {
		if data, err := os.ReadFile(filepath.Join(n.dir, "droverd.log")); err == nil {
			c.t.Logf("droverd log of %s:\n%s", name, tail(string(data), 30))
		}
	}
}

func tail(s string, lines int) string {
	l := strings.Split(s, "\n")
	if len(l) > lines {
		l = l[len(l)-lines:]
	}
	return strings.Join(l, "\n")
}

func (n *node) conflist() string { return filepath.Join(n.dir, "net.d", "10-drover.conflist") }

// waitReady waits for droverd to write the conflist.
func (c *cluster) waitReady(n *node, within time.Duration) {
	c.t.Helper()
	eventually(c.t, within, func() error {
		if _, err := os.Stat(n.conflist()); err != nil {
			return fmt.Errorf("%s has no conflist yet", n.Name)
		}
		return nil
	})
}

// pod is a namespace attached through libcni with droverd's conflist.
type pod struct {
	ns   ns.NetNS
	ip   net.IP
	node *node
}

func (c *cluster) addPod(n *node) *pod {
	c.t.Helper()
	p := &pod{ns: testns.New(c.t), node: n}
	list, err := libcni.ConfListFromFile(n.conflist())
	if err != nil {
		c.t.Fatalf("read conflist of %s: %v", n.Name, err)
	}
	cni := libcni.NewCNIConfigWithCacheDir([]string{cniPath}, filepath.Join(n.dir, "cni-cache"), nil)
	rt := &libcni.RuntimeConf{ContainerID: filepath.Base(p.ns.Path()), NetNS: p.ns.Path(), IfName: "eth0"}
	var res *current.Result
	err = n.NS.Do(func(ns.NetNS) error {
		r, err := cni.AddNetworkList(context.Background(), list, rt)
		if err != nil {
			return err
		}
		res, err = current.NewResultFromResult(r)
		return err
	})
	if err != nil {
		c.t.Fatalf("ADD pod on %s: %v", n.Name, err)
	}
	p.ip = res.IPs[0].Address.IP
	c.t.Cleanup(func() {
		_ = n.NS.Do(func(ns.NetNS) error { return cni.DelNetworkList(context.Background(), list, rt) })
	})
	return p
}

func eventually(t *testing.T, within time.Duration, cond func() error) {
	t.Helper()
	testcluster.Eventually(t, within, 100*time.Millisecond, cond)
}

// serveEcho listens on ip:port inside ns and echoes every connection. The
// listening socket belongs to the namespace it was opened in, so the accept
// loop may run on any thread.
func serveEcho(t *testing.T, in ns.NetNS, addr string) {
	t.Helper()
	var ln net.Listener
	err := in.Do(func(ns.NetNS) error {
		var err error
		ln, err = net.Listen("tcp", addr)
		return err
	})
	if err != nil {
		t.Fatalf("listen %s: %v", addr, err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { _, _ = io.Copy(conn, conn); conn.Close() }()
		}
	}()
}

// dial opens a TCP connection from inside ns.
func dial(in ns.NetNS, addr string) (net.Conn, error) {
	var conn net.Conn
	err := in.Do(func(ns.NetNS) error {
		var err error
		conn, err = net.DialTimeout("tcp", addr, 3*time.Second)
		return err
	})
	return conn, err
}

// roundTrip sends a line and expects it back.
func roundTrip(conn net.Conn, msg string) error {
	_ = conn.SetDeadline(time.Now().Add(3 * time.Second))
	if _, err := conn.Write([]byte(msg)); err != nil {
		return err
	}
	buf := make([]byte, len(msg))
	if _, err := io.ReadFull(conn, buf); err != nil {
		return err
	}
	if string(buf) != msg {
		return fmt.Errorf("echo %q, sent %q", buf, msg)
	}
	return nil
}

// httpGet fetches a URL from inside a namespace (droverd's endpoints listen
// on the node namespace's loopback).
func httpGet(in ns.NetNS, url string) (int, string, error) {
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			var conn net.Conn
			err := in.Do(func(ns.NetNS) error {
				var err error
				conn, err = (&net.Dialer{}).DialContext(ctx, network, addr)
				return err
			})
			return conn, err
		},
	}}
	resp, err := client.Get(url)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body), err
}

// removeNode stops a node's droverd and deletes its record, as deleting a
// Node object does.
func (c *cluster) removeNode(name string) {
	c.t.Helper()
	c.stop(name, syscall.SIGTERM)
	if c.env != nil {
		if err := c.env.Client.CoreV1().Nodes().Delete(context.Background(), name, metav1.DeleteOptions{}); err != nil {
			c.t.Fatal(err)
		}
		return
	}
	if err := os.Remove(filepath.Join(c.dsDir(), name+".json")); err != nil {
		c.t.Fatal(err)
	}
}

// datastores runs a scenario once with each datastore: the local directory
// and a real kube-apiserver.
func datastores(t *testing.T, scenario func(t *testing.T, c *cluster)) {
	t.Run("local", func(t *testing.T) { scenario(t, newCluster(t)) })
	t.Run("kubernetes", func(t *testing.T) {
		c, _ := kubeCluster(t)
		scenario(t, c)
	})
}
