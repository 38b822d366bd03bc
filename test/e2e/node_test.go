//go:build e2e

package e2e_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/drover-net/drover/internal/kubeenv"
	"github.com/drover-net/drover/internal/testcluster"
)

// node is one Kubernetes node: a network namespace on the underlay running
// containerd, kubelet and droverd, each with directories of its own under
// dir, so nodes never share state with each other or with the machine.
type node struct {
	*testcluster.Node
	c       *cluster
	podCIDR string
	dir     string

	containerd, kubelet, droverd *proc
}

func (n *node) path(elem ...string) string { return filepath.Join(append([]string{n.dir}, elem...)...) }
func (n *node) sock() string               { return n.path("containerd", "containerd.sock") }
func (n *node) cniBin() string             { return n.path("cni", "bin") }
func (n *node) cniConf() string            { return n.path("cni", "net.d") }
func (n *node) pluginDir() string          { return n.path("volume-plugins") }
func (n *node) volumeDir() string          { return n.path("volumes") }
func (n *node) conflist() string           { return filepath.Join(n.cniConf(), "10-drover.conflist") }

// install runs `droverd install` into the node's CNI bin and volume plugin
// directories, as the DaemonSet's init step does, and adds the reference
// plugins the conflist chains (portmap) and containerd needs (loopback).
func (n *node) install(t *testing.T) {
	t.Helper()
	out, err := exec.Command(filepath.Join(binDir, "droverd"), "install",
		"--source-dir", binDir, "--cni-bin-dir", n.cniBin(), "--plugin-dir", n.pluginDir()).CombinedOutput()
	if err != nil {
		t.Fatalf("droverd install on %s: %v\n%s", n.Name, err, out)
	}
	for _, p := range []string{"portmap", "loopback", "bridge", "host-local"} {
		b, err := os.ReadFile(filepath.Join(refPlugins, p))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(n.cniBin(), p), b, 0o755); err != nil {
			t.Fatal(err)
		}
	}
}

const containerdConfig = `version = 2
root = "{{dir}}/containerd/root"
state = "{{dir}}/containerd/state"
[grpc]
  address = "{{dir}}/containerd/containerd.sock"
[plugins."io.containerd.internal.v1.opt"]
  path = "{{dir}}/containerd/opt"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "` + pauseImage + `"
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{{dir}}/cni/bin"
    conf_dir = "{{dir}}/cni/net.d"
`

// startContainerd runs containerd in the node's namespace, waits for its
// socket and imports the suite's images.
func (n *node) startContainerd(t *testing.T) {
	t.Helper()
	cfg := n.path("containerd", "config.toml")
	if err := os.WriteFile(cfg, []byte(strings.ReplaceAll(containerdConfig, "{{dir}}", n.dir)), 0o644); err != nil {
		t.Fatal(err)
	}
	var err error
	n.containerd, err = startProc("containerd", n.NS.Path(), n.path("logs", "containerd.log"), nil, "containerd", "--config", cfg)
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, 30*time.Second, func() error {
		if n.containerd.exited() {
			t.Fatalf("containerd on %s exited:\n%s", n.Name, n.containerd.logTail(30))
		}
		_, err := n.ctr("version")
		return err
	})
	for _, a := range archives {
		if out, err := n.ctr("images", "import", a); err != nil {
			t.Fatalf("import %s on %s: %v\n%s", a, n.Name, err, out)
		}
	}
}

func (n *node) ctr(args ...string) (string, error) {
	out, err := exec.Command("ctr", append([]string{"--address", n.sock(), "-n", "k8s.io"}, args...)...).CombinedOutput()
	return string(out), err
}

const kubeletConfig = `apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
failCgroupV1: false
cgroupDriver: cgroupfs
cgroupsPerQOS: false
enforceNodeAllocatable: []
failSwapOn: false
containerRuntimeEndpoint: unix://{{dir}}/containerd/containerd.sock
volumePluginDir: {{dir}}/volume-plugins
podLogsDir: {{dir}}/pod-logs
address: {{ip}}
readOnlyPort: 0
authentication:
  anonymous:
    enabled: true
  webhook:
    enabled: false
authorization:
  mode: AlwaysAllow
resolvConf: ""
nodeStatusUpdateFrequency: 2s
nodeStatusReportFrequency: 10s
syncFrequency: 10s
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard:
  memory.available: "1Mi"
  nodefs.available: "1%"
  imagefs.available: "1%"
`

// startKubelet runs kubelet in the node's namespace against the node's
// containerd. It runs with the admin kubeconfig: the suite tests drover,
// not node authorization. DROVER_LOCAL_* keep the Flexvolume driver's
// volumes and log in the node's directory.
func (n *node) startKubelet(t *testing.T) {
	t.Helper()
	cfg := n.path("kubelet.yaml")
	text := strings.NewReplacer("{{dir}}", n.dir, "{{ip}}", n.IP.String()).Replace(kubeletConfig)
	if err := os.WriteFile(cfg, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	bin, err := kubeenv.Binary("kubelet")
	if err != nil {
		t.Fatal(err)
	}
	env := []string{"DROVER_LOCAL_STATE_DIR=" + n.volumeDir(), "DROVER_LOCAL_LOG_DIR=" + n.path("logs")}
	n.kubelet, err = startProc("kubelet", n.NS.Path(), n.path("logs", "kubelet.log"), env, bin,
		"--config", cfg, "--kubeconfig", n.c.env.Kubeconfig, "--root-dir", n.path("kubelet"),
		"--cert-dir", n.path("kubelet", "pki"), "--hostname-override", n.Name, "--node-ip", n.IP.String(), "--v", "2")
	if err != nil {
		t.Fatal(err)
	}
}

// startDroverd runs the node agent as the DaemonSet runs it: host network
// (the node's namespace), the Kubernetes datastore, and the node's CNI
// conf dir, where it writes the conflist once the node state is ready.
func (n *node) startDroverd(t *testing.T) {
	t.Helper()
	var err error
	n.droverd, err = startProc("droverd", n.NS.Path(), n.path("logs", "droverd.log"), nil, filepath.Join(binDir, "droverd"),
		"--node-name", n.Name, "--datastore", "kubernetes", "--kubeconfig", n.c.env.Kubeconfig,
		"--cluster-cidr", clusterCIDR, "--underlay-iface", "eth0",
		"--state-file", n.path("run", "node.json"), "--ipam-dir", n.path("run", "ipam"),
		"--cni-conf-dir", n.cniConf(), "--resync", "2s", "--listen", "")
	if err != nil {
		t.Fatal(err)
	}
}

// cleanup stops everything the node runs and removes what it left: pods
// first (through kubelet, so CNI DEL and the driver's unmount run), then
// the daemons by PID, runc shims of this node's containerd, mounts under
// the node's directory, loop devices backed by files there, the directory.
func (n *node) cleanup(t *testing.T) {
	if t.Failed() {
		for _, p := range []*proc{n.containerd, n.kubelet, n.droverd} {
			if p != nil {
				t.Logf("%s on %s, last lines:\n%s", p.name, n.Name, p.logTail(25))
			}
		}
	}
	if n.kubelet != nil && !n.kubelet.exited() {
		n.c.deletePodsOn(t, n.Name)
	}
	n.kubelet.stop(10 * time.Second)
	n.droverd.stop(10 * time.Second)
	if n.containerd != nil && !n.containerd.exited() {
		if out, err := n.ctr("tasks", "ls", "-q"); err == nil {
			for _, id := range strings.Fields(out) {
				_, _ = n.ctr("tasks", "kill", "-s", "SIGKILL", id)
			}
		}
	}
	n.containerd.stop(10 * time.Second)
	for _, pid := range pidsWithArg(n.sock()) {
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
	var errs []string
	if err := unmountAll(n.dir); err != nil {
		errs = append(errs, err.Error())
	}
	if err := detachLoops(n.dir); err != nil {
		errs = append(errs, err.Error())
	}
	if err := unmountAll(n.dir); err != nil {
		errs = append(errs, err.Error())
	}
	if err := os.RemoveAll(n.dir); err != nil {
		errs = append(errs, err.Error())
	}
	if len(errs) > 0 {
		t.Errorf("cleanup of node %s: %s", n.Name, strings.Join(errs, "; "))
	}
}

// requireAlive fails the test with the log tail when p exited.
func requireAlive(t *testing.T, p *proc, node string) {
	t.Helper()
	if p != nil && p.exited() {
		t.Fatalf("%s on %s exited (%v):\n%s", p.name, node, p.err, p.logTail(30))
	}
}
