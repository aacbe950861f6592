package proxy

import "github.com/prometheus/client_golang/prometheus"

type metrics struct {
	accepted      *prometheus.CounterVec
	active        *prometheus.GaugeVec
	pending       *prometheus.GaugeVec
	rejected      *prometheus.CounterVec
	unanswered    prometheus.Counter
	routing       prometheus.Counter
	cancels       prometheus.Counter
	idleClosed    prometheus.Counter
	pipeFallbacks prometheus.Counter
	pipeInfo      *prometheus.GaugeVec
	tlsHolds      *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		accepted: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "petrel_proxy_connections_accepted_total", Help: "Client connections accepted, by listener (leader or readonly).",
		}, []string{"listener"}),
		active: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "petrel_proxy_connections_active", Help: "Client connections open (including those still starting up), by listener.",
		}, []string{"listener"}),
		pending: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "petrel_proxy_connections_pending", Help: "Client connections not authenticated yet, by listener.",
		}, []string{"listener"}),
		rejected: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "petrel_proxy_connections_rejected_total", Help: "Client connections refused or cut before they were authenticated, by listener and reason: " +
				"max_conns, source_conns, source_pending (over a limit at accept), source_auth (no authentication slot of its source freed in time), " +
				"startup_timeout, bad_startup, auth_timeout (not authenticated in time), no_leader, dial.",
		}, []string{"listener", "reason"}),
		unanswered: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "petrel_proxy_refusals_unanswered_total", Help: "Refused connections closed without an ErrorResponse because the refusal workers were busy.",
		}),
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
			Name: "petrel_proxy_pipe_info", Help: "The proxy's data path (mode: relay, kernel, copy or splice); always 1.",
		}, []string{"mode"}),
		tlsHolds: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "petrel_proxy_tls_holds_total", Help: "TLS sessions (opaque to the proxy) and how their source's authentication slot was freed: " +
				"authenticated (the member listed the session as authenticated), timeout (2 x the member's authentication_timeout passed), " +
				"closed (the connection ended first), unverifiable (the member cannot be asked: freed when TLS started, as before).",
		}, []string{"outcome"}),
	}
	if reg != nil {
		reg.MustRegister(m.accepted, m.active, m.pending, m.rejected, m.unanswered, m.routing, m.cancels, m.idleClosed, m.pipeFallbacks, m.pipeInfo, m.tlsHolds)
	}
	return m
}
