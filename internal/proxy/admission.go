package proxy

import (
	"context"
	"net"
	"net/netip"
)

// The refusal pool: connections over a limit are answered by these
// workers, never by a goroutine each; when the queue is full the excess is
// closed without an answer, so a flood of connections costs the proxy a
// bounded amount of work however it is sent.
const (
	refusalWorkers = 4
	refusalQueue   = 64
)

type refusal struct {
	c         net.Conn
	code, msg string
}

// admit counts a new connection from src against the proxy's limits: in
// total, from its source, and unauthenticated from its source. When one is
// full it counts nothing and says which (a metrics reason) and what to tell
// the client.
func (p *Proxy) admit(src netip.Addr) (reason, msg string) {
	if n := p.active.Add(1); n > int64(p.cfg.MaxConns) {
		p.active.Add(-1)
		return "max_conns", "petrel: too many connections to the proxy"
	}
	if !p.bySource.TryAdd(src, p.cfg.MaxConnsPerSource) {
		p.active.Add(-1)
		return "source_conns", "petrel: too many connections to the proxy from your address"
	}
	if !p.pending.TryAdd(src, p.cfg.MaxPendingPerSource) {
		p.bySource.Done(src)
		p.active.Add(-1)
		return "source_pending", "petrel: too many connections to the proxy from your address are still authenticating"
	}
	return "", ""
}

// release undoes admit's total and per-source counts once a connection
// has ended (its pending count ends when it authenticates, or with it).
func (p *Proxy) release(src netip.Addr) {
	p.bySource.Done(src)
	p.active.Add(-1)
}

// refuseLater hands c to the refusal pool, or closes it at once when the
// pool is busy.
func (p *Proxy) refuseLater(c net.Conn, code, msg string) {
	select {
	case p.refusals <- refusal{c: c, code: code, msg: msg}:
	default:
		p.metrics.unanswered.Inc()
		_ = c.Close()
	}
}

// answerRefusals is one refusal worker: each refusal takes it at most
// about two seconds (refuse's write and drain deadlines).
func (p *Proxy) answerRefusals(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case r := <-p.refusals:
			p.refuse(r.c, r.code, r.msg)
		}
	}
}

// dropRefusals closes the refusals still queued once the workers stopped.
func (p *Proxy) dropRefusals() {
	for {
		select {
		case r := <-p.refusals:
			_ = r.c.Close()
		default:
			return
		}
	}
}
