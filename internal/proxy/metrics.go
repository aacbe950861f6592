package proxy

import "github.com/prometheus/client_golang/prometheus"

type metrics struct {
	accepted      *prometheus.CounterVec
	active        *prometheus.GaugeVec
	rejected      *prometheus.CounterVec
	routing       prometheus.Counter
	cancels       prometheus.Counter
	idleClosed    prometheus.Counter
	pipeFallbacks prometheus.Counter
	pipeInfo      *prometheus.GaugeVec
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		accepted: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "petrel_proxy_connections_accepted_total", Help: "Client connections accepted, by listener (leader or readonly).",
		}, []string{"listener"}),
		active: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "petrel_proxy_connections_active", Help: "Client connections open (including those still starting up), by listener.",
		}, []string{"listener"}),
		rejected: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "petrel_proxy_connections_rejected_total", Help: "Client connections refused, by listener and reason (max_conns, bad_startup, no_leader, dial).",
		}, []string{"listener", "reason"}),
		routing: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "petrel_proxy_routing_changes_total", Help: "Changes of the confirmed writable leader (including to and from none).",
		}),
		cancels: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "petrel_proxy_cancel_requests_total", Help: "CancelRequests forwarded.",
		}),
		idleClosed: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "petrel_proxy_idle_closed_total", Help: "Connections closed by the idle timeout.",
		}),
		pipeFallbacks: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "petrel_proxy_kernel_pipe_fallbacks_total", Help: "Connections the kernel pipe could not take, copied in user space instead.",
		}),
		pipeInfo: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "petrel_proxy_pipe_info", Help: "The proxy's data path (mode: kernel, copy or splice); always 1.",
		}, []string{"mode"}),
	}
	if reg != nil {
		reg.MustRegister(m.accepted, m.active, m.rejected, m.routing, m.cancels, m.idleClosed, m.pipeFallbacks, m.pipeInfo)
	}
	return m
}
