package edge

import (
	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the edge's Prometheus series (on the admin listener's
// /metrics).
type metrics struct {
	reg       *prometheus.Registry
	requests  *prometheus.CounterVec   // by code class and where served
	replays   *prometheus.CounterVec   // by reason: app (fly-replay), ryw, shed, force, prefer
	failures  *prometheus.CounterVec   // replays that failed, by reason
	fallbacks *prometheus.CounterVec   // by kind
	ryw       *prometheus.CounterVec   // read-your-writes outcomes
	rywWait   prometheus.Histogram     // how long reads waited for the replica
	duration  *prometheus.HistogramVec // request latency, by replayed yes/no
	instances prometheus.GaugeFunc
	peers     prometheus.GaugeFunc
}

func newMetrics(region string, healthy func() float64, alive func() float64) *metrics {
	cl := prometheus.Labels{"region": region}
	m := &metrics{reg: prometheus.NewRegistry()}
	m.requests = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "petrel_edge_requests_total", Help: "Requests answered, by status class and where they were served (local, peer).", ConstLabels: cl}, []string{"code", "served"})
	m.replays = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "petrel_edge_replays_total", Help: "Requests sent to another instance or region, by reason (app: a fly-replay response; ryw: the replica had not caught up; shed: local instances at capacity; force/prefer: the client's fly-force-region/fly-prefer-region).", ConstLabels: cl}, []string{"reason"})
	m.failures = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "petrel_edge_replay_failures_total", Help: "Replays that could not be delivered, by fly-replay-failed reason.", ConstLabels: cl}, []string{"reason"})
	m.fallbacks = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "petrel_edge_fallbacks_total", Help: "Failed replays sent back to the asking instance (fallback=force_self|prefer_self).", ConstLabels: cl}, []string{"fallback"})
	m.ryw = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "petrel_edge_ryw_total", Help: "Requests with a read-your-writes token, by outcome: fresh (replica already had it), waited (served locally after waiting), timeout and timeline (replayed in the primary region), error.", ConstLabels: cl}, []string{"outcome"})
	m.rywWait = prometheus.NewHistogram(prometheus.HistogramOpts{Name: "petrel_edge_ryw_wait_seconds", Help: "How long read-your-writes requests waited for the local replica (served locally or not).", ConstLabels: cl,
		Buckets: []float64{.0005, .001, .002, .005, .01, .02, .05, .1, .2, .5, 1}})
	m.duration = prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "petrel_edge_request_duration_seconds", Help: "Time from the request's arrival to the response's headers.", ConstLabels: cl,
		Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5}}, []string{"replayed"})
	m.instances = prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "petrel_edge_instances_healthy", Help: "Healthy local app instances.", ConstLabels: cl}, healthy)
	m.peers = prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "petrel_edge_peers_alive", Help: "Other edges answering pings.", ConstLabels: cl}, alive)
	m.reg.MustRegister(m.requests, m.replays, m.failures, m.fallbacks, m.ryw, m.rywWait, m.duration, m.instances, m.peers)
	return m
}
