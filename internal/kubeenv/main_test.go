package kubeenv

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
)

// helperEnv switches the test binary into a tiny API client, so a test can
// run a real separate process inside a namespace (through nsenter) that knows
// only a kubeconfig file, as a node agent would.
const helperEnv = "KUBEENV_TEST_HELPER"

func TestMain(m *testing.M) {
	if os.Getenv(helperEnv) == "list-nodes" {
		if err := helperListNodes(os.Getenv("KUBECONFIG")); err != nil {
			fmt.Fprintln(os.Stderr, "helper:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// helperListNodes prints "nodes: <name> <name>..." as seen through the
// kubeconfig.
func helperListNodes(kubeconfig string) error {
	cfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		return fmt.Errorf("load %s: %w", kubeconfig, err)
	}
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return fmt.Errorf("clientset: %w", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	nodes, err := cs.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err != nil {
		return fmt.Errorf("list nodes at %s: %w", cfg.Host, err)
	}
	names := make([]string, 0, len(nodes.Items))
	for _, n := range nodes.Items {
		names = append(names, n.Name)
	}
	fmt.Println("nodes:", strings.Join(names, " "))
	return nil
}

// runHelperIn runs the test binary as helperListNodes inside the namespace at
// nsPath and returns its combined output.
func runHelperIn(t *testing.T, nsPath, kubeconfig string) (string, error) {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatalf("find test binary: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := CommandInNetNS(ctx, nsPath, self)
	cmd.Env = append(os.Environ(), helperEnv+"=list-nodes", "KUBECONFIG="+kubeconfig)
	out, err := cmd.CombinedOutput()
	return strings.TrimSpace(string(out)), err
}

func TestBinaryNamesTheBuildCommandWhenMissing(t *testing.T) {
	t.Setenv("DROVER_CACHE", t.TempDir())
	_, err := Binary("kube-apiserver")
	if err == nil {
		t.Fatal("Binary found kube-apiserver in an empty cache")
	}
	if !strings.Contains(err.Error(), "scripts/kube-build.sh kube-apiserver") {
		t.Errorf("error does not name the build command: %v", err)
	}
	if want := filepath.Join(os.Getenv("DROVER_CACHE"), "kubernetes-"+KubernetesVersion); BinaryDir() != want {
		t.Errorf("BinaryDir() = %s, want %s", BinaryDir(), want)
	}
}

func TestFirstServiceIP(t *testing.T) {
	for _, tc := range []struct{ cidr, want string }{
		{"10.96.0.0/16", "10.96.0.1"},
		{"192.0.2.0/24", "192.0.2.1"},
		{"fd00:10:96::/112", "fd00:10:96::1"},
	} {
		ip, err := firstServiceIP(tc.cidr)
		if err != nil || ip.String() != tc.want {
			t.Errorf("firstServiceIP(%s) = %v, %v; want %s", tc.cidr, ip, err, tc.want)
		}
	}
}
