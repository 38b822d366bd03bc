package kubeenv

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

// WriteKubeconfig writes cfg (server, CA, and client certificate or bearer
// token, all embedded) as a kubeconfig file with one context, so another
// process can load it with clientcmd or kubectl. cfg.Dial cannot be written:
// the file is for processes that reach cfg.Host by themselves.
func WriteKubeconfig(path string, cfg *rest.Config) error {
	ca := cfg.CAData
	if len(ca) == 0 && cfg.CAFile != "" {
		data, err := os.ReadFile(cfg.CAFile)
		if err != nil {
			return fmt.Errorf("read CA for kubeconfig: %w", err)
		}
		ca = data
	}
	kc := clientcmdapi.NewConfig()
	kc.Clusters["kubeenv"] = &clientcmdapi.Cluster{
		Server:                   cfg.Host,
		CertificateAuthorityData: ca,
	}
	kc.AuthInfos["kubeenv"] = &clientcmdapi.AuthInfo{
		ClientCertificateData: cfg.CertData,
		ClientKeyData:         cfg.KeyData,
		Token:                 cfg.BearerToken,
	}
	kc.Contexts["kubeenv"] = &clientcmdapi.Context{Cluster: "kubeenv", AuthInfo: "kubeenv"}
	kc.CurrentContext = "kubeenv"
	data, err := clientcmd.Write(*kc)
	if err != nil {
		return fmt.Errorf("encode kubeconfig %s: %w", path, err)
	}
	// Written whole and renamed, so a process that polls for the file
	// never reads half of it.
	tmp := filepath.Join(filepath.Dir(path), "."+filepath.Base(path)+".tmp")
	if err := os.WriteFile(tmp, data, 0o600); err != nil {
		return fmt.Errorf("write kubeconfig: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("install kubeconfig %s: %w", path, err)
	}
	return nil
}

// ServiceAccountConfig makes sure the namespace and ServiceAccount exist and
// returns a config that authenticates as that ServiceAccount with a token
// from the TokenRequest API (valid one hour). Like Env.Config it dials inside
// the namespace. Nothing grants the account any role: that is the test's job.
func (e *Env) ServiceAccountConfig(t testing.TB, namespace, name string) *rest.Config {
	t.Helper()
	token, err := e.serviceAccountToken(namespace, name)
	if err != nil {
		t.Fatalf("kubeenv: %v", err)
	}
	return &rest.Config{
		Host:            e.URL,
		BearerToken:     token,
		TLSClientConfig: rest.TLSClientConfig{CAData: e.CAData},
		Dial:            NetNSDialer(e.NetNS),
		QPS:             e.Config.QPS,
		Burst:           e.Config.Burst,
	}
}

// ServiceAccountKubeconfig is ServiceAccountConfig written as a kubeconfig
// file in Dir, for a process (node agent, installer) under test. It returns
// the file's path and the config for the test process.
func (e *Env) ServiceAccountKubeconfig(t testing.TB, namespace, name string) (string, *rest.Config) {
	t.Helper()
	cfg := e.ServiceAccountConfig(t, namespace, name)
	path := filepath.Join(e.Dir, fmt.Sprintf("sa-%s-%s.kubeconfig", namespace, name))
	if err := WriteKubeconfig(path, cfg); err != nil {
		t.Fatalf("kubeenv: %v", err)
	}
	return path, cfg
}

func (e *Env) serviceAccountToken(namespace, name string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: namespace}}
	if _, err := e.Client.CoreV1().Namespaces().Create(ctx, ns, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return "", fmt.Errorf("create namespace %s: %w", namespace, err)
	}
	// No controller-manager runs, so nothing would create the account.
	sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: namespace}}
	if _, err := e.Client.CoreV1().ServiceAccounts(namespace).Create(ctx, sa, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return "", fmt.Errorf("create service account %s/%s: %w", namespace, name, err)
	}
	expiry := int64(3600)
	tr, err := e.Client.CoreV1().ServiceAccounts(namespace).CreateToken(ctx, name,
		&authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: &expiry}},
		metav1.CreateOptions{})
	if err != nil {
		return "", fmt.Errorf("request token for %s/%s: %w", namespace, name, err)
	}
	return tr.Status.Token, nil
}
