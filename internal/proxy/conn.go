package proxy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"
)

// pconn is one proxied client connection and its server side.
type pconn struct {
	client, server net.Conn
	member         string // member id the server side is connected to
	kind           string // listener kind
	toLeader       bool   // routed as the leader (also on the read-only listener's fallback)
	direct         bool   // dialed at the member's own address (not rewritten by the dial map)
	once           sync.Once

	mu      sync.Mutex // guards the following fields
	closed  bool
	relayed *relayPair // the relay holds the sockets (relay_linux.go)
}

func (c *pconn) close() {
	c.once.Do(func() {
		c.mu.Lock()
		c.closed = true
		pr := c.relayed
		c.mu.Unlock()
		if pr != nil {
			pr.relay.kill(pr) // closing ours would not end it: the relay has its own
		}
		_ = c.client.Close()
		_ = c.server.Close()
	})
}

// handTo records that a relay takes the connection's sockets; false if
// it is closed already.
func (c *pconn) handTo(pr *relayPair) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return false
	}
	c.relayed = pr
	return true
}

// maxGSSRetries bounds GSSENCRequest answers before the real startup.
const maxGSSRetries = 2

// handle runs one client connection: startup, routing, authentication,
// then the pipe. authenticated ends the connection's pending count (at
// most once); it is called as soon as the client is authenticated.
func (p *Proxy) handle(ctx context.Context, c net.Conn, kind string, src netip.Addr, authenticated func()) {
	defer func() {
		if r := recover(); r != nil {
			// Never let one connection take the process down.
			p.log.Error("proxy: connection handler panicked", "panic", r)
			_ = c.Close()
		}
	}()
	setKeepAlive(c, p.cfg.KeepAlive)
	_ = c.SetDeadline(p.clock.Now().Add(p.cfg.AuthTimeout))
	var (
		msg pgproto3.FrontendMessage
		raw []byte
		err error
	)
	for i := 0; ; i++ {
		msg, raw, err = readStartup(c)
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				p.metrics.rejected.WithLabelValues(kind, "startup_timeout").Inc()
			} else {
				p.metrics.rejected.WithLabelValues(kind, "bad_startup").Inc()
			}
			p.log.Debug("proxy: bad startup", "remote", c.RemoteAddr(), "err", err)
			if !errors.Is(err, io.EOF) && !errors.Is(err, io.ErrUnexpectedEOF) && !(errors.As(err, &ne) && ne.Timeout()) {
				p.refuse(c, "08P01", "petrel: invalid startup packet")
			}
			_ = c.Close()
			return
		}
		if _, ok := msg.(*pgproto3.GSSEncRequest); ok && i < maxGSSRetries {
			if _, err := c.Write([]byte{'N'}); err != nil {
				_ = c.Close()
				return
			}
			continue
		}
		break
	}
	switch msg.(type) {
	case *pgproto3.CancelRequest:
		_ = c.Close()
		p.forwardCancel(ctx, raw)
		return
	case *pgproto3.SSLRequest, *pgproto3.StartupMessage:
	default: // a GSSENCRequest too many
		p.refuse(c, "08P01", "petrel: unexpected startup packet")
		return
	}

	pc, release, err := p.connect(ctx, c, kind, src)
	switch {
	case errors.Is(err, errAuthBusy):
		p.metrics.rejected.WithLabelValues(kind, "source_auth").Inc()
		p.refuseStartup(c, msg, "53300", "petrel: too many connections from your address are authenticating; try again")
		return
	case errors.Is(err, errNoTarget) || errors.Is(err, context.Canceled):
		p.metrics.rejected.WithLabelValues(kind, "no_leader").Inc()
		p.refuseStartup(c, msg, "57P03", "petrel: no writable leader available; try again shortly")
		return
	case err != nil:
		p.metrics.rejected.WithLabelValues(kind, "dial").Inc()
		p.log.Warn("proxy: connecting to member", "err", err)
		p.refuseStartup(c, msg, "08006", "petrel: could not connect to the leader; try again")
		return
	}
	defer p.unregister(pc)
	tlsStarted, err := p.authenticate(pc, msg, raw)
	free := func() {
		release()
		authenticated()
	}
	if err != nil {
		free()
		if errors.Is(err, errAuthTimeout) {
			p.metrics.rejected.WithLabelValues(kind, "auth_timeout").Inc()
		}
		p.log.Debug("proxy: connection ended before it was authenticated", "remote", c.RemoteAddr(), "err", err)
		pc.close()
		return
	}
	if tlsStarted {
		// Opaque from here: the session keeps its slots until its member
		// says it is authenticated (tlshold.go).
		defer p.holdTLS(pc, free)()
	} else {
		free()
	}
	p.pipe(pc)
}

// errAuthBusy: the client's source holds MaxAuthPerSource backends that
// are authenticating and none was freed within AuthTimeout.
var errAuthBusy = errors.New("too many connections from this source authenticating")

// connect picks a member, takes one of the source's authentication slots
// (before dialing: the postmaster forks a backend for every connection it
// accepts), dials the member and registers the connection. If the routing
// changed while it dialed, it tries again (nothing has been sent to the
// server yet). release gives the slot back; call it once the client is
// authenticated or gone.
func (p *Proxy) connect(ctx context.Context, c net.Conn, kind string, src netip.Addr) (pc *pconn, release func(), err error) {
	held := false
	release = func() {
		if held {
			held = false
			p.authing.Done(src)
		}
	}
	defer func() {
		if err != nil {
			release()
		}
	}()
	for attempt := 0; ; attempt++ {
		t, toLeader, err := p.pick(ctx, kind)
		if err != nil {
			return nil, release, err
		}
		if !held {
			wctx, cancel := context.WithTimeout(ctx, p.cfg.AuthTimeout)
			err := p.authing.Add(wctx, src, p.cfg.MaxAuthPerSource)
			cancel()
			if err != nil {
				if ctx.Err() != nil {
					return nil, release, ctx.Err()
				}
				return nil, release, errAuthBusy
			}
			held = true
		}
		d := net.Dialer{Timeout: p.cfg.DialTimeout, KeepAlive: p.cfg.KeepAlive}
		dctx, cancel := context.WithTimeout(ctx, p.cfg.DialTimeout)
		s, err := d.DialContext(dctx, "tcp", t.addr)
		cancel()
		if err != nil {
			return nil, release, fmt.Errorf("dialing %s at %s: %w", t.id, t.addr, err)
		}
		pc := &pconn{client: c, server: s, member: t.id, kind: kind, toLeader: toLeader, direct: t.addr == t.pgAddr}
		if p.register(pc) {
			return pc, release, nil
		}
		_ = s.Close()
		if attempt >= 2 {
			return nil, release, errNoTarget
		}
	}
}

// refuseStartup answers a client that could not be routed with an
// ErrorResponse it will understand: after an SSLRequest it first declines
// TLS and reads the plaintext startup packet (a client that insists on TLS
// then disconnects by itself).
func (p *Proxy) refuseStartup(c net.Conn, msg pgproto3.FrontendMessage, code, text string) {
	if _, ok := msg.(*pgproto3.SSLRequest); ok {
		_ = c.SetDeadline(p.clock.Now().Add(p.cfg.AuthTimeout))
		if _, err := c.Write([]byte{'N'}); err != nil {
			_ = c.Close()
			return
		}
		next, _, err := readStartup(c)
		if err != nil {
			_ = c.Close()
			return
		}
		if _, ok := next.(*pgproto3.StartupMessage); !ok {
			_ = c.Close()
			return
		}
	}
	p.refuse(c, code, text)
}

// pipe copies bytes both ways until either side closes, then closes both.
// With the relay its loop moves them; with the kernel pipe the loops only
// see EOF (and any byte queued before the pair was linked); with Splice,
// io.Copy splices (both ends are *net.TCPConn); otherwise bytes go
// through a pooled buffer (copyConn).
func (p *Proxy) pipe(pc *pconn) {
	stopIdle := p.watchIdle(pc)
	defer stopIdle()
	if len(p.relays) > 0 && p.relays[p.pickRelay(pc)].pipe(pc) {
		pc.close()
		return
	}
	cp := func(dst, src net.Conn) {
		if p.pipeMode != PipeSplice {
			bp := bufPool.Get().(*[]byte)
			copyConn(dst, src, *bp)
			bufPool.Put(bp)
		} else {
			_, _ = io.Copy(dst, src)
		}
		pc.close()
	}
	done := make(chan struct{})
	go func() {
		cp(pc.server, pc.client)
		close(done)
	}()
	cp(pc.client, pc.server)
	<-done
}

var bufPool = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}

// readerOnly and writerOnly hide ReadFrom/WriteTo so io.CopyBuffer uses
// the buffer instead of splice.
type readerOnly struct{ io.Reader }
type writerOnly struct{ io.Writer }

// forwardCancel sends a CancelRequest to every known member's Postgres:
// backend keys are unique per server and a key unknown to a server is
// ignored there, so it reaches the backend it was meant for even through
// TLS, where the proxy cannot see the keys.
func (p *Proxy) forwardCancel(ctx context.Context, raw []byte) {
	dm := p.cfg.DialMap.Map()
	p.mu.Lock()
	addrs := make([]string, 0, len(p.members))
	for _, m := range p.members {
		if m.PostgresAddr != "" {
			addrs = append(addrs, dm.Addr(m.PostgresAddr))
		}
	}
	p.mu.Unlock()
	ctx, cancel := context.WithTimeout(ctx, p.cfg.DialTimeout)
	defer cancel()
	var wg sync.WaitGroup
	for _, a := range addrs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var d net.Dialer
			s, err := d.DialContext(ctx, "tcp", a)
			if err != nil {
				p.log.Debug("proxy: forwarding cancel", "addr", a, "err", err)
				return
			}
			defer s.Close()
			if dl, ok := ctx.Deadline(); ok {
				_ = s.SetDeadline(dl)
			}
			if _, err := s.Write(raw); err != nil {
				return
			}
			// Postgres closes the connection once it has processed the
			// request; wait for that so the cancel is delivered.
			var b [1]byte
			_, _ = s.Read(b[:])
		}()
	}
	wg.Wait()
	p.metrics.cancels.Inc()
}

func setKeepAlive(c net.Conn, period time.Duration) {
	tc, ok := c.(*net.TCPConn)
	if !ok {
		return
	}
	if period < 0 {
		_ = tc.SetKeepAlive(false)
		return
	}
	_ = tc.SetKeepAlive(true)
	_ = tc.SetKeepAlivePeriod(period)
}
