//go:build e2e

package e2e_test

import (
	"context"
	"fmt"
	"net/url"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// TestLocalVolumeThroughKubelet: kubelet calls the drover/local driver for
// a pod's flexVolume; data written by one pod is read by the next pod on
// the same node; a kubelet restart leaves the running pod and its mount
// alone; pod deletion leaves no loop device behind.
func TestLocalVolumeThroughKubelet(t *testing.T) {
	c := newCluster(t)
	n := c.addNode(t)
	n.startDroverd(t)
	c.waitNodeReady(t, n, 90*time.Second)

	vol := corev1.Volume{Name: "vol", VolumeSource: corev1.VolumeSource{FlexVolume: &corev1.FlexVolumeSource{
		Driver: "drover/local", FSType: "ext4",
		Options: map[string]string{"volumeID": "e2e-data", "size": "64Mi"},
	}}}
	token := fmt.Sprintf("written-%d", time.Now().UnixNano())

	c.pod(t, "writer", n, vol)
	w := c.waitRunning(t, "writer", 120*time.Second)
	if out, err := get(n, w.Status.PodIP, "/write", url.Values{"path": {"/data/vol/hello"}, "data": {token}}); err != nil || out != "ok" {
		t.Fatalf("write through pod: %q %v", out, err)
	}
	if loops := loopsBackedUnder(n.volumeDir()); len(loops) != 1 {
		t.Fatalf("want one loop device for the mounted volume, got %v", loops)
	}
	c.deletePod(t, "writer", 60*time.Second)
	eventually(t, 30*time.Second, func() error {
		if loops := loopsBackedUnder(n.volumeDir()); len(loops) != 0 {
			return fmt.Errorf("loop devices left after the pod went: %v", loops)
		}
		return nil
	})

	c.pod(t, "reader", n, vol)
	r := c.waitRunning(t, "reader", 120*time.Second)
	if out, err := get(n, r.Status.PodIP, "/read", url.Values{"path": {"/data/vol/hello"}}); err != nil || out != token {
		t.Fatalf("read back through a new pod: %q %v, want %q", out, err, token)
	}

	t.Run("kubelet restart keeps the pod running and its volume mounted", func(t *testing.T) {
		mountsBefore := volumeMounts(t, n, string(r.UID))
		if len(mountsBefore) != 1 {
			t.Fatalf("want the pod's volume mounted once under kubelet's dir, got %v", mountsBefore)
		}
		n.kubelet.stop(10 * time.Second)
		restarted := time.Now().Truncate(time.Second)
		n.startKubelet(t)
		// The new kubelet is back once it posted a Ready heartbeat.
		eventually(t, 60*time.Second, func() error {
			requireAlive(t, n.kubelet, n.Name)
			obj, err := c.env.Client.CoreV1().Nodes().Get(context.Background(), n.Name, metav1.GetOptions{})
			if err != nil {
				return err
			}
			for _, cond := range obj.Status.Conditions {
				if cond.Type == corev1.NodeReady && cond.Status == corev1.ConditionTrue && cond.LastHeartbeatTime.After(restarted) {
					return nil
				}
			}
			return fmt.Errorf("no Ready heartbeat from the restarted kubelet yet: %v", obj.Status.Conditions)
		})
		time.Sleep(3 * time.Second) // a few pod syncs of the new kubelet
		eventually(t, 30*time.Second, func() error {
			p, err := c.env.Client.CoreV1().Pods(namespace).Get(context.Background(), "reader", metav1.GetOptions{})
			if err != nil {
				return err
			}
			if p.Status.Phase != corev1.PodRunning || len(p.Status.ContainerStatuses) != 1 || !p.Status.ContainerStatuses[0].Ready {
				return fmt.Errorf("reader after kubelet restart: %s %v", p.Status.Phase, p.Status.ContainerStatuses)
			}
			if rc := p.Status.ContainerStatuses[0].RestartCount; rc != 0 {
				t.Fatalf("container restarted %d times across the kubelet restart", rc)
			}
			return nil
		})
		if after := volumeMounts(t, n, string(r.UID)); strings.Join(after, ",") != strings.Join(mountsBefore, ",") {
			t.Fatalf("volume mounts changed across the kubelet restart: %v -> %v", mountsBefore, after)
		}
		if out, err := get(n, r.Status.PodIP, "/read", url.Values{"path": {"/data/vol/hello"}}); err != nil || out != token {
			t.Fatalf("read after kubelet restart: %q %v", out, err)
		}
	})

	c.deletePod(t, "reader", 60*time.Second)
	eventually(t, 30*time.Second, func() error {
		if loops := loopsBackedUnder(n.volumeDir()); len(loops) != 0 {
			return fmt.Errorf("loop devices left after the pod went: %v", loops)
		}
		if m := volumeMounts(t, n, string(r.UID)); len(m) != 0 {
			return fmt.Errorf("volume still mounted after the pod went: %v", m)
		}
		return nil
	})
}

// volumeMounts lists the pod's drover~local volume mounts under kubelet's
// root dir.
func volumeMounts(t *testing.T, n *node, podUID string) []string {
	t.Helper()
	all, err := mountsUnder(n.path("kubelet", "pods", podUID, "volumes", "drover~local"))
	if err != nil {
		t.Fatal(err)
	}
	return all
}
