package agent

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Listen binds the address of /metrics, /healthz and /readyz. droverd calls
// it before anything else, so a port already in use fails startup with an
// error instead of an agent the kubelet's probes can never reach (and that
// its liveness probe would restart forever).
func Listen(addr string) (net.Listener, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("listen for /metrics, /healthz and /readyz on %s: %w", addr, err)
	}
	return ln, nil
}

// Serve runs /metrics, /healthz and /readyz on ln until ctx ends.
// /healthz: the process is alive and its loop makes progress, also while it
// waits for a pod CIDR, since restarting cannot speed that up. /readyz: the
// node state and CNI conflist are written, so the node can serve pods.
func (a *Agent) Serve(ctx context.Context, ln net.Listener) error {
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(a.m.Registry, promhttp.HandlerOpts{}))
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) {
		if !a.Healthy() {
			http.Error(w, "agent loop stalled", http.StatusServiceUnavailable)
			return
		}
		if a.waiting.Load() {
			fmt.Fprintln(w, "ok: waiting for the pod CIDR")
			return
		}
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) {
		if !a.Ready() {
			http.Error(w, "node state not written yet", http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ok")
	})
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}()
	if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("serve /metrics, /healthz and /readyz: %w", err)
	}
	return nil
}
