// Package kubeenv runs a real etcd and kube-apiserver for drover's tests,
// inside a network namespace, and hands the test admin and ServiceAccount
// clients for it. It is for tests only: nothing shipped imports it.
//
// The servers never bind in the machine's root network namespace and kubeenv
// never changes its links, routes, addresses or iptables. By default Start
// creates a namespace of its own and binds 127.0.0.1 there; a test that runs
// node agents in other namespaces passes Options.NetNS and Options.Address on
// a test network it built. The test process reaches the server through
// NetNSDialer (already set in Env.Config); processes started inside the
// namespace, or routed to Address, use the kubeconfig files directly.
//
// It is not a cluster: no controller-manager, scheduler or kubelet runs, so
// nothing creates default ServiceAccounts, allocates pod CIDRs or garbage-
// collects objects.
package kubeenv

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/drover-net/drover/internal/testns"
)

// KubernetesVersion is the release scripts/kube-build.sh builds and kubeenv
// runs.
const KubernetesVersion = "v1.37.2"

// Options configures Start. The zero value is a private namespace on
// 127.0.0.1.
type Options struct {
	// NetNS is the path of the network namespace to run etcd and the API
	// server in (for example /run/netns/NAME or /proc/PID/ns/net). Empty:
	// Start creates one, removed when the test ends.
	NetNS string
	// Address is the IP the API server binds and advertises; it must be
	// assigned inside NetNS. Required with NetNS; 127.0.0.1 without it.
	Address string
	// Port is the API server's secure port; 0 picks a free one.
	Port int
	// ServiceClusterIPRange is --service-cluster-ip-range; default
	// 10.96.0.0/16 (addresses are only allocated, never routed).
	ServiceClusterIPRange string
	// ExtraAPIServerArgs are appended to kube-apiserver's flags; a later
	// flag wins, so they can override kubeenv's defaults.
	ExtraAPIServerArgs []string
	// StartTimeout bounds the wait for /readyz; default 90s.
	StartTimeout time.Duration
}

// Env is a running etcd and kube-apiserver.
type Env struct {
	// Config is an admin (system:masters) config for the test process; it
	// dials inside NetNS, so it works from the root namespace.
	Config *rest.Config
	// Client is a clientset for Config.
	Client kubernetes.Interface
	// Kubeconfig is the path of an admin kubeconfig for processes that run
	// inside NetNS or can route to URL.
	Kubeconfig string
	// URL is the API server's address, e.g. https://127.0.0.1:40123. It is
	// valid inside NetNS (and wherever Address is routed), not in the root
	// namespace.
	URL string
	// CAFile and CAData are the CA that signed the serving certificate.
	CAFile string
	CAData []byte
	// NetNS is the path of the namespace the servers run in.
	NetNS string
	// Dir holds certificates, kubeconfigs, etcd's data and the servers'
	// logs; it is removed when the test ends.
	Dir string

	pki       *pki
	etcd      *process
	apiserver *process
}

// BinaryDir is where scripts/kube-build.sh caches the Kubernetes binaries:
// ${DROVER_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/drover}/kubernetes-<version>.
func BinaryDir() string {
	cache := os.Getenv("DROVER_CACHE")
	if cache == "" {
		base := os.Getenv("XDG_CACHE_HOME")
		if base == "" {
			home, err := os.UserHomeDir()
			if err != nil {
				home = "/root"
			}
			base = filepath.Join(home, ".cache")
		}
		cache = filepath.Join(base, "drover")
	}
	return filepath.Join(cache, "kubernetes-"+KubernetesVersion)
}

// Binary returns the path of a cached Kubernetes binary (kube-apiserver,
// kubelet), or an error that names the command that builds it.
func Binary(name string) (string, error) {
	path := filepath.Join(BinaryDir(), name)
	if _, err := os.Stat(path); err != nil {
		return "", fmt.Errorf("%s %s is not built (%w): run `scripts/kube-build.sh %s` from the repository root (10-15 minutes once, then cached in %s)",
			name, KubernetesVersion, err, name, BinaryDir())
	}
	return path, nil
}

// Start runs etcd and kube-apiserver in a network namespace and waits until
// the API server's /readyz is ok. Everything it starts and writes is stopped
// and removed by t.Cleanup, whether the test passes or fails. It fails the
// test (never skips) when not root or when a binary is missing.
func Start(t testing.TB, opts Options) *Env {
	t.Helper()
	testns.RequireRoot(t)
	apiserverBin, err := Binary("kube-apiserver")
	if err != nil {
		t.Fatal(err)
	}
	etcdBin, err := exec.LookPath("etcd")
	if err != nil {
		t.Fatalf("etcd not found (%v): install Debian's etcd-server (`apt-get install etcd-server`, or run scripts/kube-build.sh, which installs it)", err)
	}
	if _, err := exec.LookPath("nsenter"); err != nil {
		t.Fatalf("nsenter not found (%v): install util-linux", err)
	}

	e := &Env{NetNS: opts.NetNS}
	addr := net.ParseIP(opts.Address)
	switch {
	case opts.NetNS == "":
		if opts.Address != "" && !addr.IsLoopback() {
			t.Fatalf("kubeenv: Address %s needs the NetNS it is assigned in", opts.Address)
		}
		e.NetNS = testns.New(t).Path()
		if addr == nil {
			addr = net.ParseIP("127.0.0.1")
		}
	case addr == nil:
		t.Fatalf("kubeenv: NetNS %s given without a valid Address (got %q)", opts.NetNS, opts.Address)
	}

	// Registered after testns.New, so it runs before the namespace goes:
	// cleanups run last-in first-out.
	e.Dir, err = os.MkdirTemp("", "drover-kubeenv-")
	if err != nil {
		t.Fatalf("kubeenv: create temp dir: %v", err)
	}
	t.Cleanup(func() { e.stop(t) })

	if err := e.start(opts, addr, etcdBin, apiserverBin); err != nil {
		t.Fatalf("kubeenv: %v", err)
	}
	return e
}

func (e *Env) start(opts Options, addr net.IP, etcdBin, apiserverBin string) error {
	if err := ensureLoopbackUp(e.NetNS); err != nil {
		return err
	}
	serviceRange := opts.ServiceClusterIPRange
	if serviceRange == "" {
		serviceRange = "10.96.0.0/16"
	}
	serviceIP, err := firstServiceIP(serviceRange)
	if err != nil {
		return err
	}
	certDir := filepath.Join(e.Dir, "pki")
	if err := os.Mkdir(certDir, 0o700); err != nil {
		return fmt.Errorf("create %s: %w", certDir, err)
	}
	if e.pki, err = newPKI(certDir, addr, serviceIP); err != nil {
		return fmt.Errorf("make certificates: %w", err)
	}
	e.CAFile, e.CAData = e.pki.caFile, e.pki.caPEM

	// All ports at once, before anything binds: etcd starts asynchronously,
	// so a port picked after it started could be one it has not bound yet.
	lo := net.ParseIP("127.0.0.1")
	ports, err := freePorts(e.NetNS, lo, lo, addr)
	if err != nil {
		return err
	}
	etcdURL, err := e.startEtcd(etcdBin, ports[0], ports[1])
	if err != nil {
		return err
	}

	port := opts.Port
	if port == 0 {
		port = ports[2]
	}
	e.URL = "https://" + hostPort(addr, port)
	args := apiserverArgs(e.pki, etcdURL, addr, port, serviceRange, certDir)
	args = append(args, opts.ExtraAPIServerArgs...)
	if e.apiserver, err = startProcess("kube-apiserver", e.NetNS, e.Dir, apiserverBin, args...); err != nil {
		return err
	}

	e.Config = &rest.Config{
		Host: e.URL,
		TLSClientConfig: rest.TLSClientConfig{
			CAData:   e.pki.caPEM,
			CertData: e.pki.adminCertPEM,
			KeyData:  e.pki.adminKeyPEM,
		},
		Dial: NetNSDialer(e.NetNS),
		// The defaults (5 QPS) throttle tests that create many objects.
		QPS:   100,
		Burst: 200,
	}
	if e.Client, err = kubernetes.NewForConfig(e.Config); err != nil {
		return fmt.Errorf("admin clientset: %w", err)
	}
	timeout := opts.StartTimeout
	if timeout == 0 {
		timeout = 90 * time.Second
	}
	if err := e.waitReady(timeout); err != nil {
		return err
	}
	e.Kubeconfig = filepath.Join(e.Dir, "admin.kubeconfig")
	if err := WriteKubeconfig(e.Kubeconfig, e.adminKubeconfigConfig()); err != nil {
		return err
	}
	return nil
}

// adminKubeconfigConfig is Config without the dialer, which cannot be
// written to a file and which processes in the namespace do not need.
func (e *Env) adminKubeconfigConfig() *rest.Config {
	c := rest.CopyConfig(e.Config)
	c.Dial = nil
	return c
}

// startEtcd runs etcd on loopback ports inside the namespace: only the API
// server, in the same namespace, talks to it.
func (e *Env) startEtcd(bin string, clientPort, peerPort int) (string, error) {
	lo := net.ParseIP("127.0.0.1")
	clientURL := "http://" + hostPort(lo, clientPort)
	peerURL := "http://" + hostPort(lo, peerPort)
	var err error
	e.etcd, err = startProcess("etcd", e.NetNS, e.Dir, bin,
		"--name=kubeenv",
		"--data-dir="+filepath.Join(e.Dir, "etcd"),
		"--listen-client-urls="+clientURL,
		"--advertise-client-urls="+clientURL,
		"--listen-peer-urls="+peerURL,
		"--initial-advertise-peer-urls="+peerURL,
		"--initial-cluster=kubeenv="+peerURL,
		"--initial-cluster-state=new",
		"--logger=zap",
		"--log-outputs=stderr",
	)
	if err != nil {
		return "", err
	}
	return clientURL, nil
}

func apiserverArgs(p *pki, etcdURL string, addr net.IP, port int, serviceRange, certDir string) []string {
	args := []string{
		"--etcd-servers=" + etcdURL,
		"--bind-address=" + addr.String(),
		"--advertise-address=" + addr.String(),
		fmt.Sprintf("--secure-port=%d", port),
		"--cert-dir=" + certDir, // never the default /var/run/kubernetes
		"--tls-cert-file=" + p.servingCert,
		"--tls-private-key-file=" + p.servingKey,
		"--client-ca-file=" + p.caFile,
		"--authorization-mode=RBAC",
		"--service-cluster-ip-range=" + serviceRange,
		"--service-account-issuer=https://kubernetes.default.svc.cluster.local",
		"--service-account-key-file=" + p.serviceAccountKey,
		"--service-account-signing-key-file=" + p.serviceAccountKey,
		// drover's DaemonSet runs privileged; the e2e suite needs this.
		"--allow-privileged=true",
		"--profiling=false",
	}
	if addr.IsLoopback() {
		// Endpoints may not hold loopback addresses, so the reconciler of
		// the "kubernetes" Service would fail in a loop.
		args = append(args, "--endpoint-reconciler-type=none")
	}
	return args
}

// firstServiceIP is the address the API server gives the "kubernetes"
// Service, which in-cluster clients dial: it goes into the serving cert.
func firstServiceIP(cidr string) (net.IP, error) {
	_, n, err := net.ParseCIDR(cidr)
	if err != nil {
		return nil, fmt.Errorf("service cluster IP range %q: %w", cidr, err)
	}
	ip := make(net.IP, len(n.IP))
	copy(ip, n.IP)
	ip[len(ip)-1]++
	return ip, nil
}

// errNotReady marks a /readyz answer other than "ok".
var errNotReady = errors.New("not ready")

// waitReady polls /readyz until it answers ok, failing early with the log
// tail when either server exits.
func (e *Env) waitReady(timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	var last error
	for {
		for _, p := range []*process{e.etcd, e.apiserver} {
			if done, err := p.exited(); done {
				return fmt.Errorf("%s exited before the API server was ready (%v); last log lines:\n%s",
					p.name, err, p.logTail(40))
			}
		}
		reqCtx, reqCancel := context.WithTimeout(ctx, 5*time.Second)
		body, err := e.Client.CoreV1().RESTClient().Get().AbsPath("/readyz").DoRaw(reqCtx)
		reqCancel()
		if err == nil && string(body) == "ok" {
			return nil
		}
		if err == nil {
			err = fmt.Errorf("%w: /readyz said %q", errNotReady, body)
		}
		last = err
		select {
		case <-ctx.Done():
			return fmt.Errorf("API server at %s (netns %s) not ready after %s: %w; last log lines:\n%s",
				e.URL, e.NetNS, timeout, last, e.apiserver.logTail(40))
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// stop ends both servers (API server first, so it does not spend its
// shutdown retrying a vanished etcd), shows their logs when the test failed,
// and removes Dir.
func (e *Env) stop(t testing.TB) {
	var errs []error
	for _, p := range []*process{e.apiserver, e.etcd} {
		if p == nil {
			continue
		}
		if err := p.stop(10 * time.Second); err != nil {
			errs = append(errs, err)
		}
		if t.Failed() {
			t.Logf("kubeenv: last lines of %s:\n%s", p.logPath, p.logTail(30))
		}
	}
	if e.Dir != "" {
		if err := os.RemoveAll(e.Dir); err != nil {
			errs = append(errs, fmt.Errorf("remove %s: %w", e.Dir, err))
		}
	}
	if err := errors.Join(errs...); err != nil {
		t.Errorf("kubeenv cleanup: %v", err)
	}
}

// PIDs returns the PIDs of etcd and kube-apiserver, so tests can check that
// nothing outlives them.
func (e *Env) PIDs() []int {
	var pids []int
	for _, p := range []*process{e.etcd, e.apiserver} {
		if p != nil {
			pids = append(pids, p.PID())
		}
	}
	return pids
}

// Host returns the API server's host:port, as in URL.
func (e *Env) Host() string {
	u, err := url.Parse(e.URL)
	if err != nil {
		return ""
	}
	return u.Host
}
