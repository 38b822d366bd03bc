package kubeenv

import (
	"context"
	"fmt"
	"testing"
	"time"

	authorizationv1 "k8s.io/api/authorization/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
)

// testRBAC grants ServiceAccount drover-system/droverd the minimum role the
// design gives droverd and checks what it and an account without roles may
// do, both through SubjectAccessReview and through real token clients.
func testRBAC(t *testing.T, e *Env) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	// Creates the namespace and both accounts before the bindings.
	kubeconfig, droverd := e.ServiceAccountKubeconfig(t, "drover-system", "droverd")
	nobody := e.ServiceAccountConfig(t, "drover-system", "nobody")

	role := &rbacv1.ClusterRole{
		ObjectMeta: metav1.ObjectMeta{Name: "drover-node"},
		Rules: []rbacv1.PolicyRule{
			{APIGroups: []string{""}, Resources: []string{"nodes"}, Verbs: []string{"get", "list", "watch"}},
			{APIGroups: []string{""}, Resources: []string{"nodes/status"}, Verbs: []string{"patch"}},
		},
	}
	if _, err := e.Client.RbacV1().ClusterRoles().Create(ctx, role, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create cluster role: %v", err)
	}
	binding := &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: "drover-node"},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: "drover-node"},
		Subjects:   []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Namespace: "drover-system", Name: "droverd"}},
	}
	if _, err := e.Client.RbacV1().ClusterRoleBindings().Create(ctx, binding, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create cluster role binding: %v", err)
	}

	const droverdUser = "system:serviceaccount:drover-system:droverd"
	for _, tc := range []struct {
		name        string
		user        string
		verb        string
		subresource string
		allowed     bool
	}{
		{"droverd may list nodes", droverdUser, "list", "", true},
		{"droverd may watch nodes", droverdUser, "watch", "", true},
		{"droverd may patch nodes/status", droverdUser, "patch", "status", true},
		{"droverd may not create nodes", droverdUser, "create", "", false},
		{"droverd may not patch node spec", droverdUser, "patch", "", false},
		{"droverd may not delete nodes", droverdUser, "delete", "", false},
		{"an account without roles may not list nodes", "system:serviceaccount:drover-system:nobody", "list", "", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sar := &authorizationv1.SubjectAccessReview{Spec: authorizationv1.SubjectAccessReviewSpec{
				User:   tc.user,
				Groups: []string{"system:serviceaccounts", "system:serviceaccounts:drover-system", "system:authenticated"},
				ResourceAttributes: &authorizationv1.ResourceAttributes{
					Verb: tc.verb, Resource: "nodes", Subresource: tc.subresource,
				},
			}}
			// The RBAC authorizer learns of new bindings through its
			// informers, so an "allowed" may take a moment to appear.
			var last *authorizationv1.SubjectAccessReview
			err := wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, 15*time.Second, true,
				func(ctx context.Context) (bool, error) {
					r, err := e.Client.AuthorizationV1().SubjectAccessReviews().Create(ctx, sar, metav1.CreateOptions{})
					if err != nil {
						return false, fmt.Errorf("create SubjectAccessReview: %w", err)
					}
					last = r
					return r.Status.Allowed == tc.allowed, nil
				})
			if err != nil {
				t.Fatalf("%s %s nodes/%s: want allowed=%v, last status %+v: %v",
					tc.user, tc.verb, tc.subresource, tc.allowed, last.Status, err)
			}
		})
	}

	t.Run("droverd's token may read nodes and patch their status", func(t *testing.T) {
		cs := kubernetes.NewForConfigOrDie(droverd)
		if _, err := cs.CoreV1().Nodes().List(ctx, metav1.ListOptions{}); err != nil {
			t.Fatalf("list nodes as droverd: %v", err)
		}
		if _, err := e.Client.CoreV1().Nodes().Create(ctx, newNode("node-rbac"), metav1.CreateOptions{}); err != nil {
			t.Fatalf("create node-rbac as admin: %v", err)
		}
		if _, err := cs.CoreV1().Nodes().Patch(ctx, "node-rbac", types.MergePatchType,
			[]byte(`{"metadata":{"annotations":{"drover.io/vtep-mac":"02:00:00:00:00:02"}}}`),
			metav1.PatchOptions{}, "status"); err != nil {
			t.Fatalf("patch nodes/status as droverd: %v", err)
		}
	})
	t.Run("droverd's token is denied a write it has no role for", func(t *testing.T) {
		cs := kubernetes.NewForConfigOrDie(droverd)
		_, err := cs.CoreV1().Nodes().Create(ctx, newNode("node-forbidden"), metav1.CreateOptions{})
		if !apierrors.IsForbidden(err) {
			t.Fatalf("create node as droverd: got %v, want Forbidden", err)
		}
		err = cs.CoreV1().Nodes().Delete(ctx, "node-rbac", metav1.DeleteOptions{})
		if !apierrors.IsForbidden(err) {
			t.Fatalf("delete node as droverd: got %v, want Forbidden", err)
		}
	})
	t.Run("a token without roles is denied reads", func(t *testing.T) {
		_, err := kubernetes.NewForConfigOrDie(nobody).CoreV1().Nodes().List(ctx, metav1.ListOptions{})
		if !apierrors.IsForbidden(err) {
			t.Fatalf("list nodes as nobody: got %v, want Forbidden", err)
		}
	})
	t.Run("droverd's kubeconfig works from a process in the namespace", func(t *testing.T) {
		out, err := runHelperIn(t, e.NetNS, kubeconfig)
		if err != nil {
			t.Fatalf("helper with %s: %v\n%s", kubeconfig, err, out)
		}
	})
}
