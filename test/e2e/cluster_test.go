//go:build e2e

package e2e_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/drover-net/drover/internal/kubeenv"
	"github.com/drover-net/drover/internal/testcluster"
	"github.com/drover-net/drover/internal/testns"
)

const (
	clusterCIDR = "10.244.0.0/16"
	namespace   = "default"
)

// cluster is the control plane (etcd + kube-apiserver on the underlay at
// 198.51.100.2) and the nodes the test added. No scheduler or controller
// manager runs: pods name their node, the suite creates the default
// ServiceAccount, and each Node gets its pod CIDR from the suite.
type cluster struct {
	u     *testcluster.Underlay
	env   *kubeenv.Env
	nodes []*node
}

func newCluster(t *testing.T) *cluster {
	t.Helper()
	testns.RequireRoot(t)
	c := &cluster{u: testcluster.NewUnderlay(t)}
	cp := c.u.AddHost(t, "control-plane", net.IPv4(198, 51, 100, 2))
	c.env = kubeenv.Start(t, kubeenv.Options{NetNS: cp.NS.Path(), Address: cp.IP.String()})
	sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "default", Namespace: namespace}}
	if _, err := c.env.Client.CoreV1().ServiceAccounts(namespace).Create(context.Background(), sa, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatalf("create default ServiceAccount: %v", err)
	}
	return c
}

// addNode makes a node namespace and directories, creates its Node object
// with its pod CIDR (no controller manager allocates one; kubelet adopts
// the existing object when it registers), installs drover with `droverd
// install`, and starts containerd and kubelet. droverd is not started.
func (c *cluster) addNode(t *testing.T) *node {
	t.Helper()
	i := len(c.nodes) + 1
	n := &node{c: c, Node: c.u.AddNode(t, fmt.Sprintf("node-%d", i)), podCIDR: fmt.Sprintf("10.244.%d.0/24", i)}
	var err error
	if n.dir, err = os.MkdirTemp("", "drover-e2e-"+n.Name+"-"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.cleanup(t) })
	c.nodes = append(c.nodes, n)
	for _, d := range []string{"containerd", "logs", "run", "kubelet", "volumes", "pod-logs"} {
		if err := os.MkdirAll(n.path(d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	obj := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: n.Name}, Spec: corev1.NodeSpec{PodCIDR: n.podCIDR, PodCIDRs: []string{n.podCIDR}}}
	if _, err := c.env.Client.CoreV1().Nodes().Create(context.Background(), obj, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create Node %s: %v", n.Name, err)
	}
	n.install(t)
	n.startContainerd(t)
	n.startKubelet(t)
	return n
}

// nodeReady reports the node's Ready condition (status, message).
func (c *cluster) nodeReady(name string) (corev1.ConditionStatus, string, error) {
	obj, err := c.env.Client.CoreV1().Nodes().Get(context.Background(), name, metav1.GetOptions{})
	if err != nil {
		return "", "", err
	}
	for _, cond := range obj.Status.Conditions {
		if cond.Type == corev1.NodeReady {
			return cond.Status, cond.Message, nil
		}
	}
	return corev1.ConditionUnknown, "no Ready condition yet", nil
}

func (c *cluster) waitNodeReady(t *testing.T, n *node, within time.Duration) {
	t.Helper()
	eventually(t, within, func() error {
		requireAlive(t, n.kubelet, n.Name)
		st, msg, err := c.nodeReady(n.Name)
		if err != nil {
			return err
		}
		if st != corev1.ConditionTrue {
			return fmt.Errorf("node %s Ready=%s: %s", n.Name, st, msg)
		}
		return nil
	})
}

// waitNotReadyForCNI waits until kubelet has registered node n and reports
// it NotReady for want of a CNI config.
func (c *cluster) waitNotReadyForCNI(t *testing.T, n *node) {
	t.Helper()
	eventually(t, 90*time.Second, func() error {
		requireAlive(t, n.kubelet, n.Name)
		st, msg, err := c.nodeReady(n.Name)
		if err != nil {
			return err
		}
		if st != corev1.ConditionFalse || !strings.Contains(msg, "cni") {
			return fmt.Errorf("node %s Ready=%s %q, want False for the missing CNI config", n.Name, st, msg)
		}
		return nil
	})
}

// pod creates a pod of the echo image bound to node n (no scheduler runs).
func (c *cluster) pod(t *testing.T, name string, n *node, volumes ...corev1.Volume) *corev1.Pod {
	t.Helper()
	var mounts []corev1.VolumeMount
	for _, v := range volumes {
		mounts = append(mounts, corev1.VolumeMount{Name: v.Name, MountPath: "/data/" + v.Name})
	}
	no := false
	grace := int64(2)
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: namespace, Labels: map[string]string{"app": "e2e"}},
		Spec: corev1.PodSpec{
			NodeName:                      n.Name,
			AutomountServiceAccountToken:  &no,
			TerminationGracePeriodSeconds: &grace,
			Containers: []corev1.Container{{
				Name: "echo", Image: echoImage, ImagePullPolicy: corev1.PullNever,
				VolumeMounts: mounts,
			}},
			Volumes: volumes,
		},
	}
	p, err := c.env.Client.CoreV1().Pods(namespace).Create(context.Background(), p, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("create pod %s: %v", name, err)
	}
	return p
}

// waitRunning waits for the pod to run and returns it with its IP.
func (c *cluster) waitRunning(t *testing.T, name string, within time.Duration) *corev1.Pod {
	t.Helper()
	var p *corev1.Pod
	eventually(t, within, func() error {
		var err error
		p, err = c.env.Client.CoreV1().Pods(namespace).Get(context.Background(), name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		if p.Status.Phase != corev1.PodRunning || p.Status.PodIP == "" {
			return fmt.Errorf("pod %s phase %s ip %q conditions %v containers %v", name, p.Status.Phase, p.Status.PodIP, p.Status.Conditions, p.Status.ContainerStatuses)
		}
		// Running means started, not listening: wait for the test server.
		for _, n := range c.nodes {
			if n.Name == p.Spec.NodeName {
				if out, err := get(n, p.Status.PodIP, "/healthz", nil); err != nil || out != "ok" {
					return fmt.Errorf("pod %s running, server not answering: %q %v", name, out, err)
				}
			}
		}
		return nil
	})
	return p
}

// deletePod deletes a pod and waits until kubelet has torn it down and
// removed the object.
func (c *cluster) deletePod(t *testing.T, name string, within time.Duration) {
	t.Helper()
	err := c.env.Client.CoreV1().Pods(namespace).Delete(context.Background(), name, metav1.DeleteOptions{})
	if err != nil && !apierrors.IsNotFound(err) {
		t.Fatalf("delete pod %s: %v", name, err)
	}
	eventually(t, within, func() error {
		_, err := c.env.Client.CoreV1().Pods(namespace).Get(context.Background(), name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return nil
		}
		return fmt.Errorf("pod %s still there (%v)", name, err)
	})
}

// deletePodsOn deletes every pod bound to the node and gives kubelet a
// minute to tear them down (CNI DEL, volume unmount); cleanup goes on
// either way.
func (c *cluster) deletePodsOn(t *testing.T, nodeName string) {
	ctx := context.Background()
	pods := c.env.Client.CoreV1().Pods(namespace)
	list, err := pods.List(ctx, metav1.ListOptions{FieldSelector: "spec.nodeName=" + nodeName})
	if err != nil {
		t.Logf("list pods on %s: %v", nodeName, err)
		return
	}
	for _, p := range list.Items {
		_ = pods.Delete(ctx, p.Name, metav1.DeleteOptions{})
	}
	deadline := time.Now().Add(time.Minute)
	for time.Now().Before(deadline) {
		list, err := pods.List(ctx, metav1.ListOptions{FieldSelector: "spec.nodeName=" + nodeName})
		if err != nil || len(list.Items) == 0 {
			return
		}
		time.Sleep(250 * time.Millisecond)
	}
	t.Logf("pods on %s not torn down by kubelet within a minute", nodeName)
}

// get does an HTTP GET to a pod's test server from inside node n's
// namespace (the node routes its pod CIDR to drover0).
func get(n *node, podIP, path string, q url.Values) (string, error) {
	client := &http.Client{
		Timeout:   10 * time.Second,
		Transport: &http.Transport{DialContext: kubeenv.NetNSDialer(n.NS.Path()), DisableKeepAlives: true},
	}
	u := url.URL{Scheme: "http", Host: net.JoinHostPort(podIP, "8080"), Path: path, RawQuery: q.Encode()}
	resp, err := client.Get(u.String())
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return "", err
	}
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("GET %s: %s: %s", u.String(), resp.Status, strings.TrimSpace(string(b)))
	}
	return string(b), nil
}

func eventually(t *testing.T, within time.Duration, cond func() error) {
	t.Helper()
	testcluster.Eventually(t, within, 250*time.Millisecond, cond)
}
