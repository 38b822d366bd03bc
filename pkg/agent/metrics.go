package agent

import (
	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are droverd's Prometheus metrics, named drover_<subsystem>_<what>_<unit>.
type Metrics struct {
	Registry          *prometheus.Registry
	Peers             prometheus.Gauge
	PeersRejected     prometheus.Gauge
	Publishes         prometheus.Counter
	WatchRestarts     prometheus.Counter
	ReconcileDuration prometheus.Histogram
	ReconcileErrors   prometheus.Counter
	ReconcileWrites   prometheus.Counter
	DatastoreErrors   prometheus.Counter
	IPAMAllocated     prometheus.Gauge
	IPAMCapacity      prometheus.Gauge
}

// NewMetrics registers the metrics in a fresh registry (with the Go and
// process collectors), so several agents in one test process do not clash.
func NewMetrics() *Metrics {
	m := &Metrics{
		Registry: prometheus.NewRegistry(),
		Peers: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "drover_overlay_peers", Help: "Remote nodes programmed into the overlay.",
		}),
		PeersRejected: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "drover_overlay_peers_rejected", Help: "Remote nodes left out of the overlay because their pod CIDR overlaps this node's or a peer's, lies outside the cluster CIDR, or their VTEP MAC is taken.",
		}),
		Publishes: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "drover_datastore_publishes_total", Help: "Writes of this node's VTEP record to the datastore (each repairs a missing or different record).",
		}),
		WatchRestarts: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "drover_datastore_watch_restarts_total", Help: "Times the datastore watch ended early and was restarted.",
		}),
		ReconcileDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "drover_reconcile_duration_seconds", Help: "Time of one reconcile of the node's data path.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 14),
		}),
		ReconcileErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "drover_reconcile_errors_total", Help: "Reconciles that failed.",
		}),
		ReconcileWrites: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "drover_reconcile_writes_total", Help: "Kernel writes (VXLAN device, routes, neighbours, FDB, iptables) made by reconciles; flat when nothing drifts.",
		}),
		DatastoreErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "drover_datastore_errors_total", Help: "Failed calls to the datastore (the Kubernetes API).",
		}),
		IPAMAllocated: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "drover_ipam_addresses_allocated", Help: "Pod addresses allocated on this node.",
		}),
		IPAMCapacity: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "drover_ipam_addresses_capacity", Help: "Pod addresses this node can allocate.",
		}),
	}
	m.Registry.MustRegister(m.Peers, m.PeersRejected, m.Publishes, m.WatchRestarts, m.ReconcileDuration, m.ReconcileErrors, m.ReconcileWrites,
		m.DatastoreErrors, m.IPAMAllocated, m.IPAMCapacity,
		prometheus.NewGoCollector(), prometheus.NewProcessCollector(prometheus.ProcessCollectorOpts{}))
	return m
}
