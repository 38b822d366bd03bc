package install_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	authzv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/restmapper"

	"github.com/drover-net/drover/internal/testcluster"
)

const (
	namespace = "drover"
	saUser    = "system:serviceaccount:drover:droverd"
)

// manifest reads a YAML file of deploy/ into objects, in file order.
func manifest(t *testing.T, name string) []*unstructured.Unstructured {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join("..", "..", "deploy", name))
	if err != nil {
		t.Fatal(err)
	}
	dec := yaml.NewYAMLOrJSONDecoder(bytes.NewReader(raw), 4096)
	var objs []*unstructured.Unstructured
	for {
		var m map[string]any
		if err := dec.Decode(&m); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if len(m) == 0 {
			continue // an empty document between separators
		}
		objs = append(objs, &unstructured.Unstructured{Object: m})
	}
	if len(objs) == 0 {
		t.Fatalf("%s holds no objects", name)
	}
	return objs
}

// applier server-side applies objects as `kubectl apply --server-side`
// would.
type applier struct {
	dyn    dynamic.Interface
	mapper *restmapper.DeferredDiscoveryRESTMapper
}

func (a applier) resource(t *testing.T, o *unstructured.Unstructured) dynamic.ResourceInterface {
	t.Helper()
	gvk := o.GroupVersionKind()
	m, err := a.mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
	if err != nil {
		t.Fatalf("%s: %v", gvk, err)
	}
	if m.Scope.Name() == "namespace" {
		return a.dyn.Resource(m.Resource).Namespace(o.GetNamespace())
	}
	return a.dyn.Resource(m.Resource)
}

func (a applier) apply(t *testing.T, objs []*unstructured.Unstructured, dryRun bool) []*unstructured.Unstructured {
	t.Helper()
	opts := metav1.ApplyOptions{FieldManager: "drover-install-test", Force: true}
	if dryRun {
		opts.DryRun = []string{metav1.DryRunAll}
	}
	var out []*unstructured.Unstructured
	for _, o := range objs {
		got, err := a.resource(t, o).Apply(context.Background(), o.GetName(), o, opts)
		if err != nil {
			t.Fatalf("apply %s %s (dry run %v): %v", o.GetKind(), o.GetName(), dryRun, err)
		}
		out = append(out, got)
	}
	return out
}

type access struct {
	verb, resource, subresource, namespace, name string
}

func (a access) String() string {
	s := a.verb + " " + a.resource
	if a.subresource != "" {
		s += "/" + a.subresource
	}
	if a.name != "" {
		s += " " + a.name
	}
	if a.namespace != "" {
		s += " in " + a.namespace
	}
	return s
}

// allowed asks the API server's authorizer whether droverd's
// ServiceAccount may do a.
func allowed(t *testing.T, c kubernetes.Interface, a access) bool {
	t.Helper()
	group := ""
	if a.resource == "clusterrolebindings" {
		group = "rbac.authorization.k8s.io"
	}
	sar := &authzv1.SubjectAccessReview{Spec: authzv1.SubjectAccessReviewSpec{
		User:   saUser,
		Groups: []string{"system:serviceaccounts", "system:serviceaccounts:" + namespace, "system:authenticated"},
		ResourceAttributes: &authzv1.ResourceAttributes{
			Verb: a.verb, Group: group, Resource: a.resource, Subresource: a.subresource,
			Namespace: a.namespace, Name: a.name,
		},
	}}
	got, err := c.AuthorizationV1().SubjectAccessReviews().Create(context.Background(), sar, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("SubjectAccessReview %s: %v", a, err)
	}
	return got.Status.Allowed
}

// droverdCalls are the API calls droverd makes with the Kubernetes
// datastore: the node informer (list, watch), reading its own node, and
// publishing its annotations on nodes/status (also how uninstall removes
// them).
var droverdCalls = []access{
	{verb: "list", resource: "nodes"},
	{verb: "watch", resource: "nodes"},
	{verb: "get", resource: "nodes", name: "node-a"},
	{verb: "patch", resource: "nodes", subresource: "status", name: "node-a"},
}

// beyondDroverd are writes and reads droverd never needs.
var beyondDroverd = []access{
	{verb: "patch", resource: "nodes", name: "node-a"},
	{verb: "update", resource: "nodes", name: "node-a"},
	{verb: "update", resource: "nodes", subresource: "status", name: "node-a"},
	{verb: "delete", resource: "nodes", name: "node-a"},
	{verb: "create", resource: "nodes"},
	{verb: "get", resource: "secrets", namespace: namespace},
	{verb: "list", resource: "secrets"},
	{verb: "create", resource: "pods", namespace: namespace},
	{verb: "delete", resource: "pods", namespace: "kube-system"},
	{verb: "create", resource: "configmaps", namespace: namespace},
	{verb: "update", resource: "configmaps", namespace: "kube-system", name: "drover-pod-cidrs"},
	{verb: "create", resource: "clusterrolebindings"},
}

// podCIDRClaims are the extra calls of --allocate-node-cidrs, granted only
// by deploy/optional/allocate-node-cidrs.yaml.
var podCIDRClaims = []access{
	{verb: "get", resource: "configmaps", namespace: namespace, name: "drover-pod-cidrs"},
	{verb: "update", resource: "configmaps", namespace: namespace, name: "drover-pod-cidrs"},
}

// checkAccess checks each access against want. The API server's RBAC
// authorizer reads Roles and bindings from its own informers, which see an
// apply a moment after it returns, so a grant is waited for; a refusal is
// checked once (a lagging cache can only refuse more), so it is meant to
// follow a check that waited for the grants of the same apply.
func checkAccess(t *testing.T, c kubernetes.Interface, want bool, list []access) {
	t.Helper()
	for _, a := range list {
		if want {
			testcluster.Eventually(t, 30*time.Second, 100*time.Millisecond, func() error {
				if !allowed(t, c, a) {
					return fmt.Errorf("%s: allowed = false, want true", a)
				}
				return nil
			})
			continue
		}
		if allowed(t, c, a) {
			t.Errorf("%s: allowed = true, want false", a)
		}
	}
}

func TestManifestsOnAPIServer(t *testing.T) {
	env := startAPIServer(t)
	ctx := context.Background()
	dyn, err := dynamic.NewForConfig(env.Config)
	if err != nil {
		t.Fatal(err)
	}
	disco, err := discovery.NewDiscoveryClientForConfig(env.Config)
	if err != nil {
		t.Fatal(err)
	}
	a := applier{dyn: dyn, mapper: restmapper.NewDeferredDiscoveryRESTMapper(memory.NewMemCacheClient(disco))}
	main, optional, uninstall := manifest(t, "drover.yaml"), manifest(t, "optional/allocate-node-cidrs.yaml"), manifest(t, "uninstall/uninstall.yaml")

	t.Run("a server-side dry run accepts every object and creates none", func(t *testing.T) {
		// Admission refuses objects in a namespace that does not exist,
		// dry run or not, as `kubectl apply --dry-run=server` finds too;
		// so the Namespace alone goes first, for real.
		if main[0].GetKind() != "Namespace" {
			t.Fatalf("drover.yaml starts with a %s; the Namespace must come first", main[0].GetKind())
		}
		a.apply(t, main[:1], false)
		all := append(append(append([]*unstructured.Unstructured{}, main[1:]...), optional...), uninstall...)
		a.apply(t, all, true)
		for _, o := range all {
			_, err := a.resource(t, o).Get(ctx, o.GetName(), metav1.GetOptions{})
			if !apierrors.IsNotFound(err) {
				t.Errorf("%s %s exists after a dry run (%v)", o.GetKind(), o.GetName(), err)
			}
		}
	})

	var applied []*unstructured.Unstructured
	t.Run("applying creates every object, and applying again changes none", func(t *testing.T) {
		applied = a.apply(t, append(append([]*unstructured.Unstructured{}, main...), uninstall...), false)
		again := a.apply(t, append(append([]*unstructured.Unstructured{}, main...), uninstall...), false)
		for i := range applied {
			if applied[i].GetResourceVersion() != again[i].GetResourceVersion() {
				t.Errorf("%s %s changed on the second apply", applied[i].GetKind(), applied[i].GetName())
			}
		}
	})
	if t.Failed() {
		t.FailNow()
	}

	t.Run("the DaemonSet runs as the issue asks", func(t *testing.T) {
		for _, o := range applied {
			if o.GetKind() == "DaemonSet" && o.GetName() == "drover" {
				var ds appsv1.DaemonSet
				if err := runtime.DefaultUnstructuredConverter.FromUnstructured(o.Object, &ds); err != nil {
					t.Fatal(err)
				}
				checkDaemonSet(t, &ds)
				return
			}
		}
		t.Fatal("no DaemonSet drover applied")
	})

	t.Run("the namespace admits the DaemonSet's privileged pod, which baseline refuses", func(t *testing.T) {
		checkPodSecurity(t, env.Client, applied)
	})

	t.Run("the ConfigMap carries every setting droverd reads, and the quota admits critical pods", func(t *testing.T) {
		for _, o := range applied {
			switch o.GetKind() {
			case "ConfigMap":
				if o.GetName() != "drover-config" {
					continue
				}
				data, _, _ := unstructured.NestedStringMap(o.Object, "data")
				for _, k := range []string{"CLUSTER_CIDR", "VNI", "PORT", "MTU"} {
					if data[k] == "" {
						t.Errorf("ConfigMap drover-config has no %s", k)
					}
				}
			case "ResourceQuota":
				var q corev1.ResourceQuota
				if err := runtime.DefaultUnstructuredConverter.FromUnstructured(o.Object, &q); err != nil {
					t.Fatal(err)
				}
				sel := q.Spec.ScopeSelector
				if q.Namespace != namespace || sel == nil || len(sel.MatchExpressions) != 1 ||
					sel.MatchExpressions[0].ScopeName != corev1.ResourceQuotaScopePriorityClass ||
					len(sel.MatchExpressions[0].Values) != 1 || sel.MatchExpressions[0].Values[0] != "system-node-critical" {
					t.Errorf("ResourceQuota %+v does not match system-node-critical pods in %s", q.Spec, namespace)
				}
			}
		}
	})

	t.Run("droverd's ServiceAccount may make every call droverd makes", func(t *testing.T) {
		checkAccess(t, env.Client, true, droverdCalls)
	})
	t.Run("droverd's ServiceAccount may do nothing beyond them", func(t *testing.T) {
		checkAccess(t, env.Client, false, append(append([]access{}, beyondDroverd...), podCIDRClaims...))
	})
	t.Run("the optional Role grants the pod CIDR claims and nothing more", func(t *testing.T) {
		a.apply(t, optional, false)
		checkAccess(t, env.Client, true, podCIDRClaims)
		checkAccess(t, env.Client, false, append([]access{
			{verb: "get", resource: "configmaps", namespace: namespace, name: "drover-config"},
			{verb: "list", resource: "configmaps", namespace: namespace},
			{verb: "delete", resource: "configmaps", namespace: namespace, name: "drover-pod-cidrs"},
		}, beyondDroverd...))
	})

	t.Run("the ServiceAccount's token really does droverd's calls", func(t *testing.T) {
		_, cfg := env.ServiceAccountKubeconfig(t, namespace, "droverd")
		sa, err := kubernetes.NewForConfig(cfg)
		if err != nil {
			t.Fatal(err)
		}
		makeNode(t, env.Client, "node-a")
		if _, err := sa.CoreV1().Nodes().List(ctx, metav1.ListOptions{}); err != nil {
			t.Errorf("list nodes: %v", err)
		}
		w, err := sa.CoreV1().Nodes().Watch(ctx, metav1.ListOptions{})
		if err != nil {
			t.Errorf("watch nodes: %v", err)
		} else {
			w.Stop()
		}
		if _, err := sa.CoreV1().Nodes().Get(ctx, "node-a", metav1.GetOptions{}); err != nil {
			t.Errorf("get node: %v", err)
		}
		if err := sa.CoreV1().Nodes().Delete(ctx, "node-a", metav1.DeleteOptions{}); !apierrors.IsForbidden(err) {
			t.Errorf("delete node: %v, want forbidden", err)
		}
		if _, err := sa.CoreV1().Secrets(namespace).List(ctx, metav1.ListOptions{}); !apierrors.IsForbidden(err) {
			t.Errorf("list secrets: %v, want forbidden", err)
		}
	})

	t.Run("uninstall with the ServiceAccount's token leaves nothing of drover but volume data", func(t *testing.T) {
		testUninstall(t, env)
	})
}

func checkDaemonSet(t *testing.T, ds *appsv1.DaemonSet) {
	t.Helper()
	spec := ds.Spec.Template.Spec
	if !spec.HostNetwork {
		t.Error("not hostNetwork")
	}
	if spec.PriorityClassName != "system-node-critical" {
		t.Errorf("priorityClassName %q", spec.PriorityClassName)
	}
	if spec.ServiceAccountName != "droverd" {
		t.Errorf("serviceAccountName %q", spec.ServiceAccountName)
	}
	everyTaint := false
	for _, tol := range spec.Tolerations {
		everyTaint = everyTaint || tol.Operator == corev1.TolerationOpExists && tol.Key == "" && tol.Effect == ""
	}
	if !everyTaint {
		t.Errorf("tolerations %v do not tolerate every taint", spec.Tolerations)
	}
	if u := ds.Spec.UpdateStrategy; u.Type != appsv1.RollingUpdateDaemonSetStrategyType || u.RollingUpdate == nil || u.RollingUpdate.MaxUnavailable.IntValue() != 1 {
		t.Errorf("update strategy %+v, want rolling, one node at a time", u)
	}
	if len(spec.InitContainers) != 1 || len(spec.Containers) != 1 {
		t.Fatalf("%d init containers and %d containers, want 1 and 1", len(spec.InitContainers), len(spec.Containers))
	}
	initC, agent := spec.InitContainers[0], spec.Containers[0]
	if len(initC.Command) < 2 || initC.Command[1] != "install" {
		t.Errorf("init container runs %q, want droverd install", initC.Command)
	}
	for _, c := range []corev1.Container{initC, agent} {
		if c.SecurityContext == nil || c.SecurityContext.Privileged == nil || !*c.SecurityContext.Privileged {
			t.Errorf("container %s is not privileged", c.Name)
		}
		if c.Resources.Requests.Cpu().IsZero() || c.Resources.Requests.Memory().IsZero() {
			t.Errorf("container %s requests no resources", c.Name)
		}
	}
	nodeName := false
	for _, e := range agent.Env {
		nodeName = nodeName || e.Name == "NODE_NAME" && e.ValueFrom != nil && e.ValueFrom.FieldRef != nil && e.ValueFrom.FieldRef.FieldPath == "spec.nodeName"
	}
	if !nodeName {
		t.Error("droverd gets no NODE_NAME from spec.nodeName")
	}
	// With hostNetwork, kubelet probes the pod IP (the node's address)
	// unless told otherwise; droverd listens where DROVER_LISTEN says.
	listen := ""
	for _, e := range agent.Env {
		if e.Name == "DROVER_LISTEN" {
			listen = e.Value
		}
	}
	for probe, path := range map[*corev1.Probe]string{agent.LivenessProbe: "/healthz", agent.ReadinessProbe: "/readyz"} {
		if probe == nil || probe.HTTPGet == nil || probe.HTTPGet.Path != path {
			t.Errorf("probe %+v, want httpGet %s", probe, path)
			continue
		}
		if got := net.JoinHostPort(probe.HTTPGet.Host, probe.HTTPGet.Port.String()); got != listen {
			t.Errorf("probe %s goes to %s, droverd listens on DROVER_LISTEN=%q", path, got, listen)
		}
	}
	// Each container mounts the host paths it works on, where it works on
	// them: the installer sees the host's / (its /proc for the kubelet's
	// flags) at its --host-root; droverd the host's own paths.
	hostPath := map[string]string{} // volume name -> host path
	for _, v := range spec.Volumes {
		if v.HostPath != nil {
			hostPath[v.Name] = v.HostPath.Path
		}
	}
	mounted := func(c corev1.Container, host, at string) bool {
		for _, m := range c.VolumeMounts {
			if hostPath[m.Name] == host && m.MountPath == at {
				return true
			}
		}
		return false
	}
	if !mounted(initC, "/", "/host") || !slices.Contains(initC.Command, "--host-root=/host") {
		t.Errorf("init container does not see the host's / at its --host-root /host: command %q, mounts %+v", initC.Command, initC.VolumeMounts)
	}
	for _, p := range []string{"/etc/cni/net.d", "/run/drover", "/var/lib/drover", "/run/xtables.lock"} {
		if !mounted(agent, p, p) {
			t.Errorf("droverd does not mount the host's %s at %s", p, p)
		}
	}
	// drover-volumes in this container must see the driver's global mounts.
	for _, m := range agent.VolumeMounts {
		if m.MountPath == "/var/lib/drover" && (m.MountPropagation == nil || *m.MountPropagation != corev1.MountPropagationHostToContainer) {
			t.Errorf("droverd mounts /var/lib/drover without HostToContainer propagation: %+v", m)
		}
	}
}

// checkPodSecurity creates, as a server-side dry run, the pod each
// DaemonSet (drover's and the uninstaller's) makes on a node, once in
// drover's namespace, whose pod-security label must admit it, and once in
// a namespace enforcing baseline, which must refuse it (so the first answer
// means the label works, not that the admission plugin is off).
func checkPodSecurity(t *testing.T, c kubernetes.Interface, applied []*unstructured.Unstructured) {
	t.Helper()
	ctx := context.Background()
	baseline := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "drover-baseline", Labels: map[string]string{"pod-security.kubernetes.io/enforce": "baseline"}}}
	if _, err := c.CoreV1().Namespaces().Create(ctx, baseline, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = c.CoreV1().Namespaces().Delete(context.Background(), baseline.Name, metav1.DeleteOptions{})
	})
	daemonSets := 0
	for _, o := range applied {
		if o.GetKind() != "DaemonSet" {
			continue
		}
		daemonSets++
		var ds appsv1.DaemonSet
		if err := runtime.DefaultUnstructuredConverter.FromUnstructured(o.Object, &ds); err != nil {
			t.Fatal(err)
		}
		// The same ServiceAccount there, so only pod security can refuse.
		sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: ds.Spec.Template.Spec.ServiceAccountName, Namespace: baseline.Name}}
		if _, err := c.CoreV1().ServiceAccounts(baseline.Name).Create(ctx, sa, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
			t.Fatal(err)
		}
		for ns, wantAdmitted := range map[string]bool{namespace: true, baseline.Name: false} {
			pod := &corev1.Pod{
				ObjectMeta: metav1.ObjectMeta{Name: ds.Name + "-node-a", Namespace: ns, Labels: ds.Spec.Template.Labels},
				Spec:       *ds.Spec.Template.Spec.DeepCopy(),
			}
			pod.Spec.NodeName = "node-a"
			_, err := c.CoreV1().Pods(ns).Create(ctx, pod, metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
			switch {
			case wantAdmitted && err != nil:
				t.Errorf("DaemonSet %s's pod is refused in %s: %v", ds.Name, ns, err)
			case !wantAdmitted && (!apierrors.IsForbidden(err) || !strings.Contains(err.Error(), "violates PodSecurity")):
				t.Errorf("a namespace enforcing baseline answered %v to DaemonSet %s's privileged pod, want a PodSecurity refusal", err, ds.Name)
			}
		}
	}
	if daemonSets < 2 {
		t.Errorf("%d DaemonSets applied, want drover's and the uninstaller's", daemonSets)
	}
}
