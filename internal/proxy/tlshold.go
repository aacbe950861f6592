package proxy

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"sync"
	"time"

	"github.com/petrel-db/petrel/internal/api"
)

// A TLS session is opaque to the proxy once the server answers 'S', so the
// proxy cannot see when its client authenticates. Letting it go as
// authenticated there would let one source hold every backend
// (max_connections) with silent TLS sessions. Instead the session keeps
// its source's pending and authentication slots (MaxPendingPerSource,
// MaxAuthPerSource) until one of:
//
//  1. the member's agent lists the proxy's end of the server connection
//     among its Postgres' authenticated client sessions (GET /sessions,
//     asked every tlsPoll while any session is held): authenticated;
//  2. 2 x the member's authentication_timeout has passed since 'S' (as the
//     member reports it; Config.TLSAuthTimeout until it has): Postgres
//     gives a client authentication_timeout for its startup packet, the
//     TLS handshake included, and again for authenticating, and then
//     ends the backend, so the slot is free in any case;
//  3. the connection ends.
//
// Rule 1 needs the server to see the proxy's own address and an agent
// that serves GET /sessions. When the dial map rewrote the member's address
// (the local world's links: the server sees the link's address) or the
// member answers 404 (an agent from before GET /sessions, during a rolling
// upgrade), the session is let go as authenticated at once, as before:
// holding it for rule 2 alone would let a TLS pool open only
// MaxAuthPerSource connections per 2 x authentication_timeout. Other
// failures to ask (no answer, 503) keep it held: rule 2 frees it.
const tlsPoll = 100 * time.Millisecond

// heldTLS is one TLS session still counted as authenticating.
type heldTLS struct {
	member string
	local  netip.AddrPort // the proxy's end of the server connection, as the server sees it
	start  time.Time
	free   func(outcome string) // at most once; outcome labels the metric
}

// tlsHolds are the held sessions.
type tlsHolds struct {
	wake chan struct{} // a session was added (cap 1)

	mu      sync.Mutex               // guards the following fields
	held    map[*heldTLS]struct{}    // sessions still counted as authenticating
	timeout map[string]time.Duration // members' authentication_timeout, as last reported
}

// holdTLS counts pc as authenticating until the rules above free it;
// free gives back its slots. The returned function ends the hold (rule
// 3); it is safe to call more than once and after the hold ended.
func (p *Proxy) holdTLS(pc *pconn, free func()) (end func()) {
	h := &heldTLS{member: pc.member, start: p.clock.Now()}
	ta, ok := pc.server.LocalAddr().(*net.TCPAddr)
	if !ok || !pc.direct || p.api == nil {
		free()
		p.metrics.tlsHolds.WithLabelValues("unverifiable").Inc()
		return func() {}
	}
	ap := ta.AddrPort()
	h.local = netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	var once sync.Once
	h.free = func(outcome string) {
		once.Do(func() {
			p.tls.mu.Lock()
			delete(p.tls.held, h)
			p.tls.mu.Unlock()
			free()
			p.metrics.tlsHolds.WithLabelValues(outcome).Inc()
		})
	}
	p.tls.mu.Lock()
	p.tls.held[h] = struct{}{}
	p.tls.mu.Unlock()
	select {
	case p.tls.wake <- struct{}{}:
	default:
	}
	return func() { h.free("closed") }
}

// tlsLoop applies rules 1 and 2 every tlsPoll while any session is held.
func (p *Proxy) tlsLoop(ctx context.Context) {
	var tick <-chan time.Time
	for {
		p.tls.mu.Lock()
		n := len(p.tls.held)
		p.tls.mu.Unlock()
		if tick == nil && n > 0 {
			// Not reset by new sessions: a steady stream of them must not
			// keep the check from running.
			tick = p.clock.After(tlsPoll)
		}
		select {
		case <-ctx.Done():
			return
		case <-p.tls.wake:
		case <-tick:
			tick = nil
			p.checkTLS(ctx)
		}
	}
}

// checkTLS asks each member holding sessions which of them are
// authenticated (rule 1), then frees those past their time (rule 2).
func (p *Proxy) checkTLS(ctx context.Context) {
	type query struct {
		member string
		addr   netip.Addr
	}
	asks := map[query][]*heldTLS{}
	p.tls.mu.Lock()
	all := make([]*heldTLS, 0, len(p.tls.held))
	for h := range p.tls.held {
		all = append(all, h)
		q := query{h.member, h.local.Addr()}
		asks[q] = append(asks[q], h)
	}
	p.tls.mu.Unlock()

	var wg sync.WaitGroup
	for q, hs := range asks {
		p.mu.Lock()
		m, ok := p.members[q.member]
		p.mu.Unlock()
		if !ok {
			continue
		}
		t := p.targetOf(m)
		wg.Add(1)
		go func() {
			defer wg.Done()
			b, _, err := p.get(ctx, t, "/sessions?addr="+url.QueryEscape(q.addr.String()), 1<<20)
			if se := (*api.StatusError)(nil); errors.As(err, &se) && se.Code == http.StatusNotFound {
				for _, h := range hs {
					h.free("unverifiable") // an agent from before GET /sessions
				}
				return
			}
			if err != nil {
				// No answer, or an agent that cannot read its Postgres:
				// rule 2 frees these.
				p.log.Debug("proxy: asking a member for its authenticated sessions", "member", t.id, "err", err)
				return
			}
			var s api.Sessions
			if err := json.Unmarshal(b, &s); err != nil {
				p.log.Debug("proxy: bad GET /sessions answer", "member", t.id, "err", err)
				return
			}
			if s.AuthTimeoutSeconds > 0 {
				d := time.Duration(s.AuthTimeoutSeconds * float64(time.Second))
				p.tls.mu.Lock()
				p.tls.timeout[q.member] = min(max(d, time.Second), 10*time.Minute)
				p.tls.mu.Unlock()
			}
			ports := make(map[uint16]bool, len(s.Ports))
			for _, port := range s.Ports {
				ports[port] = true
			}
			for _, h := range hs {
				if ports[h.local.Port()] {
					h.free("authenticated")
				}
			}
		}()
	}
	wg.Wait()

	now := p.clock.Now()
	for _, h := range all {
		p.tls.mu.Lock()
		d, ok := p.tls.timeout[h.member]
		p.tls.mu.Unlock()
		if !ok {
			d = p.cfg.TLSAuthTimeout
		}
		if now.Sub(h.start) >= 2*d {
			h.free("timeout")
		}
	}
}
