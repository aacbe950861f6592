// Package proxy is petrel's leader proxy: it accepts PostgreSQL client
// connections and pipes them to the cluster's current writable leader (or,
// on the read-only listener, to a healthy replica of its own region).
//
// The leader comes from an etcd watch on /petrel/<cluster>/leader and the
// member records, and is confirmed against the member's own GET /role
// before any connection is routed to it, then re-confirmed periodically.
// When the leader changes or stops saying "primary", every connection to
// it is closed at once. While there is no leader a new connection waits a
// bounded time and then gets a PostgreSQL ErrorResponse (SQLSTATE 57P03).
//
// The proxy parses the startup packet (SSLRequest, GSSENCRequest,
// CancelRequest, StartupMessage) and then follows the server's side of the
// authentication, message by message (type and length only), until its
// ReadyForQuery or ErrorResponse: until then the client is under a deadline
// and counted against its source's limits. After that the proxy is a plain
// byte pipe between two TCP connections (epoll relays, a BPF sockmap, or copies), so TLS
// between the client and Postgres passes through untouched.
//
// Hostile clients: every limit is per source (an IPv4 address or an IPv6
// /64, internal/connlimit) besides the proxy's total, and refusals are
// answered by a small pool of workers, never a goroutine each.
package proxy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/petrel-db/petrel/internal/api"
	"github.com/petrel-db/petrel/internal/connlimit"
	"github.com/petrel-db/petrel/internal/dialmap"
	"github.com/petrel-db/petrel/internal/model"
	"github.com/prometheus/client_golang/prometheus"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// Config tunes a proxy. Zero values take the documented defaults.
type Config struct {
	// Cluster is the name of the cluster whose leader is followed (its
	// keys live under /petrel/<cluster>/ in etcd).
	Cluster string
	// Region is the proxy's own region: the read-only listener only sends
	// connections to replicas in this region.
	Region string
	// DialMap rewrites members' Postgres and API addresses before they are
	// dialed (the local world's links); it is re-read when its file
	// changes. Nil dials them as published.
	DialMap *dialmap.Source
	// MaxConns bounds the client connections the proxy holds at once,
	// over all its listeners, including those still in their startup
	// phase. Further connections get a "too many connections" error
	// (SQLSTATE 53300). Default 2000.
	MaxConns int
	// MaxConnsPerSource bounds all the connections from one source (an
	// IPv4 address, or an IPv6 /64) at once, authenticated ones included;
	// further ones are refused (53300). Default 0, no bound besides
	// MaxConns: one app host may rightly hold most of a proxy's
	// connections (with `petrel proxy` on the app host, every client comes
	// from loopback). Set it when many hosts share one proxy and none may
	// take more than its share.
	MaxConnsPerSource int
	// MaxPendingPerSource bounds the connections from one source that are
	// not authenticated yet: before their startup packet, waiting for a
	// leader or an authentication slot, authenticating. Further ones are
	// refused (53300). Default 256, above any pool's burst of new
	// connections and far below MaxConns, so connections that open and
	// stay silent from one host never keep another host out. Negative: no
	// bound.
	MaxPendingPerSource int
	// MaxAuthPerSource bounds the connections from one source that hold a
	// Postgres backend while they authenticate (each backend takes one of
	// the server's max_connections). Further ones wait their turn before
	// the proxy dials, for up to AuthTimeout: a pool that opens 100
	// connections at once gets them all, a few milliseconds later, while
	// a host whose clients send a startup packet and stay silent holds at
	// most this many backends, each for at most AuthTimeout. Default 16.
	// Negative: no bound.
	MaxAuthPerSource int
	// NoLeaderWait is how long a new connection waits for a confirmed
	// writable leader (or, on the read-only listener, for any usable
	// member) before it gets an error (SQLSTATE 57P03). Default 5s.
	NoLeaderWait time.Duration
	// AuthTimeout bounds each of a client's two steps before it is
	// authenticated: sending its startup packet (from accept), and
	// authenticating with the member's Postgres (from the forwarded startup
	// packet until the server's ReadyForQuery or ErrorResponse comes back).
	// A client still silent then is disconnected, which frees its backend
	// at once instead of after Postgres' authentication_timeout (60 s by
	// default, 10 s as petrel sets it).
	// Waiting for a leader (NoLeaderWait) is not counted. A TLS session is
	// opaque to the proxy: its deadline ends when the server accepts TLS,
	// and Postgres' own authentication_timeout bounds the rest (petrel's
	// default for it: 10s, internal/pg); it still counts against
	// MaxPendingPerSource and MaxAuthPerSource until its member's agent
	// lists it as authenticated (see TLSAuthTimeout). Default 5s.
	AuthTimeout time.Duration
	// TLSAuthTimeout is the members' Postgres authentication_timeout as
	// the proxy assumes it until a member reports its own: a TLS session
	// the member has not listed as authenticated keeps its source's
	// pending and authentication slots for at most twice this long after
	// the server accepted TLS (Postgres allows that much for the startup
	// packet and then for authentication). Default 10s, petrel's
	// authentication_timeout.
	TLSAuthTimeout time.Duration
	// DialTimeout bounds connecting to a member's Postgres. Default 3s.
	DialTimeout time.Duration
	// KeepAlive is the TCP keepalive period on both sides of every proxied
	// connection: it is how idle connections to a vanished peer are found
	// and closed. Default 15s; negative disables keepalives.
	KeepAlive time.Duration
	// IdleTimeout closes an authenticated connection after no data has
	// moved in either direction for this long (checked from the kernel's
	// TCP counters, so the data path stays zero-copy; Linux only). Default
	// 0: idle sessions are kept as long as both peers are alive (pools
	// keep idle connections on purpose; TCP keepalives find dead peers).
	// Unauthenticated connections are bounded by AuthTimeout instead.
	IdleTimeout time.Duration
	// Pipe is how bytes move once a connection is routed:
	//   "auto" (default): "relay" where it can run (Linux, GOMAXPROCS
	//     at least 2, as petrel's default gives), else "copy". The kernel
	//     pipe is not chosen by itself: under bulk traffic both ways at
	//     once it has delivered a segment twice (TestPipeModes/kernel, an
	//     8 MiB echo: about 1 run in 400 on Linux 6.18), and a duplicated
	//     byte range in a Postgres stream can repeat a statement;
	//   "relay": relays (one per CPU, up to 4, each pinned to its CPU
	//     when that covers all the process may run on), each a goroutine
	//     with its own epoll set, move the connections' bytes, a read(2)
	//     and a write(2) per message, as HAProxy's threads do
	//     (relay_linux.go);
	//     falls back to "copy" with a warning where it cannot run;
	//   "kernel" (opt-in): a BPF sockmap redirects each side's segments
	//     to the other inside the kernel, so no byte enters the proxy
	//     process and nothing wakes per query (root, or CAP_BPF and
	//     CAP_NET_ADMIN); falls back to "copy" with a warning when it
	//     cannot be loaded;
	//   "copy": two goroutines per connection, read(2)/write(2) through a
	//     32 KiB buffer;
	//   "splice": splice(2); wins for bulk transfers, but for short
	//     request/response traffic measured ~10-15% slower than "copy".
	Pipe string
	// CheckInterval is how often the leader's GET /role is re-confirmed
	// and replicas' GET /status is polled. Default 1s.
	CheckInterval time.Duration
	// CheckTimeout bounds one GET /role or /status. Default 1s.
	CheckTimeout time.Duration
	// MaxReplicaLag is the replay lag, in bytes, above which a replica gets
	// no new read-only connections. Default 16 MiB.
	MaxReplicaLag int64
}

func (c *Config) defaults() {
	if c.MaxConns <= 0 {
		c.MaxConns = 2000
	}
	if c.NoLeaderWait <= 0 {
		c.NoLeaderWait = 5 * time.Second
	}
	if c.MaxPendingPerSource == 0 {
		c.MaxPendingPerSource = 256
	}
	if c.MaxAuthPerSource == 0 {
		c.MaxAuthPerSource = 16
	}
	if c.AuthTimeout <= 0 {
		c.AuthTimeout = 5 * time.Second
	}
	if c.TLSAuthTimeout <= 0 {
		c.TLSAuthTimeout = 10 * time.Second
	}
	if c.DialTimeout <= 0 {
		c.DialTimeout = 3 * time.Second
	}
	if c.KeepAlive == 0 {
		c.KeepAlive = 15 * time.Second
	}
	if c.CheckInterval <= 0 {
		c.CheckInterval = time.Second
	}
	if c.CheckTimeout <= 0 {
		c.CheckTimeout = time.Second
	}
	if c.MaxReplicaLag <= 0 {
		c.MaxReplicaLag = 16 << 20
	}
	if c.Pipe == "" {
		c.Pipe = PipeAuto
	}
}

// Pipe modes (see Config.Pipe).
const (
	PipeAuto   = "auto"
	PipeRelay  = "relay"
	PipeKernel = "kernel"
	PipeCopy   = "copy"
	PipeSplice = "splice"
)

// CheckPipe validates a Config.Pipe value.
func CheckPipe(mode string) error {
	switch mode {
	case "", PipeAuto, PipeRelay, PipeKernel, PipeCopy, PipeSplice:
		return nil
	}
	return fmt.Errorf("unknown proxy pipe %q (want auto, relay, kernel, copy or splice)", mode)
}

// Clock is the time source (injected for tests).
type Clock interface {
	Now() time.Time
	After(d time.Duration) <-chan time.Time
}

type realClock struct{}

func (realClock) Now() time.Time                         { return time.Now() }
func (realClock) After(d time.Duration) <-chan time.Time { return time.After(d) }

// Options are the proxy's collaborators.
type Options struct {
	// Etcd is the store client the leader is learned from. Nil: the
	// caller feeds the view with SetView (tests).
	Etcd *clientv3.Client
	// Logger; nil discards.
	Logger *slog.Logger
	// Registerer receives the proxy's metrics; nil registers nothing.
	Registerer prometheus.Registerer
	// Clock; nil is the real clock.
	Clock Clock
	// API reaches members' APIs over TLS, checking each answer comes from
	// a certificate of the cluster CA naming the member asked (so a forged
	// member record cannot send clients to an impostor). Nil: no member is
	// ever confirmed, and nothing is routed.
	API *api.Client
}

// target is a member a connection can be routed to.
type target struct {
	id     string
	addr   string // Postgres address to dial (after the dial map)
	api    string // API base URL to query (after the dial map)
	pgAddr string // Postgres address as the member record has it (before the dial map)
}

// Proxy routes client connections. Create with New, start with Run.
type Proxy struct {
	cfg       Config
	etcd      *clientv3.Client
	log       *slog.Logger
	clock     Clock
	metrics   *metrics
	api       *api.Client
	poke      chan struct{}
	active    atomic.Int64
	kpipe     *kernelPipe   // nil: bytes are copied in user space
	relays    []*relay      // nil: not the relay pipe (see Config.Pipe)
	nextRelay atomic.Uint32 // round robin over unpinned relays
	pipeMode  string        // the data path in use: kernel, copy or splice

	// Per source: every connection, those not authenticated yet, and
	// those holding a backend while they authenticate.
	bySource, pending, authing connlimit.Counter
	refusals                   chan refusal // answered by refusalWorkers
	tls                        tlsHolds     // TLS sessions still counted as authenticating (tlshold.go)

	mu          sync.Mutex              // guards the following fields
	viewLeader  string                  // leader id from the store ("" when none)
	members     map[string]model.Member // member records from the store
	leader      *target                 // confirmed writable leader; nil when none
	leaderFails int                     // consecutive failed /role checks of leader
	replicas    []target                // healthy read-only candidates, sorted by id
	rr          int                     // round-robin position in replicas
	changed     chan struct{}           // closed and replaced on every routing change
	conns       map[*pconn]struct{}     // proxied connections
	closed      bool                    // Run has ended: no new connections
}

// New makes a proxy; nothing runs until Run.
func New(cfg Config, opts Options) *Proxy {
	cfg.defaults()
	p := &Proxy{
		cfg:     cfg,
		etcd:    opts.Etcd,
		log:     opts.Logger,
		clock:   opts.Clock,
		metrics: newMetrics(opts.Registerer),
		api:     opts.API,
		poke:    make(chan struct{}, 1),
		members: map[string]model.Member{},
		changed: make(chan struct{}),
		conns:   map[*pconn]struct{}{},

		refusals: make(chan refusal, refusalQueue),
		tls: tlsHolds{
			wake:    make(chan struct{}, 1),
			held:    map[*heldTLS]struct{}{},
			timeout: map[string]time.Duration{},
		},
	}
	if p.log == nil {
		p.log = slog.New(slog.DiscardHandler)
	}
	if p.clock == nil {
		p.clock = realClock{}
	}
	p.pipeMode = cfg.Pipe
	switch p.pipeMode {
	case "", PipeAuto, PipeRelay:
		rs, err := newRelays()
		if err != nil {
			if p.pipeMode == PipeRelay {
				p.log.Warn("proxy: relay unavailable; copying with goroutines", "err", err)
			}
			p.pipeMode = PipeCopy
		} else {
			p.relays = rs
			p.pipeMode = PipeRelay
		}
	case PipeKernel:
		k, err := newKernelPipe(cfg.MaxConns)
		if err != nil {
			p.log.Warn("proxy: kernel pipe unavailable; copying in user space", "err", err)
			p.pipeMode = PipeCopy
		} else {
			p.kpipe = k
		}
	}
	p.metrics.pipeInfo.WithLabelValues(p.pipeMode).Set(1)
	if p.api == nil {
		p.log.Warn("proxy: no API client (cluster CA): no member can be confirmed, nothing will be routed")
	}
	return p
}

// Listener kinds.
const (
	kindLeader   = "leader"
	kindReadOnly = "readonly"
)

// Run serves the leader listener rw and, when not nil, the read-only
// listener ro, and follows the cluster, until ctx ends. It closes both
// listeners and every proxied connection before returning.
func (p *Proxy) Run(ctx context.Context, rw, ro net.Listener) error {
	if rw == nil {
		for _, r := range p.relays {
			r.close()
		}
		return errors.New("proxy: no leader listener")
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	run := func(f func()) {
		wg.Add(1)
		go func() { defer wg.Done(); f() }()
	}
	if p.etcd != nil {
		run(func() { p.watch(ctx) })
	}
	run(func() { p.checkLoop(ctx, ro != nil) })
	run(func() { p.tlsLoop(ctx) })
	for _, r := range p.relays {
		run(func() {
			if err := r.run(ctx); err != nil {
				// Its share of connections is copied by goroutines from now on.
				p.log.Error("proxy: a relay stopped", "err", err)
			}
		})
	}
	for range refusalWorkers {
		run(func() { p.answerRefusals(ctx) })
	}
	errs := make(chan error, 2)
	run(func() { errs <- p.serve(ctx, rw, kindLeader) })
	if ro != nil {
		run(func() { errs <- p.serve(ctx, ro, kindReadOnly) })
	}
	var err error
	select {
	case <-ctx.Done():
	case err = <-errs:
	}
	cancel()
	_ = rw.Close()
	if ro != nil {
		_ = ro.Close()
	}
	p.mu.Lock()
	p.closed = true
	for c := range p.conns {
		c.close()
	}
	p.mu.Unlock()
	wg.Wait()
	p.dropRefusals()
	if p.api != nil {
		p.api.CloseIdle()
	}
	p.kpipe.close()
	for _, r := range p.relays {
		r.close()
	}
	return err
}

// newRelays makes the proxy's relays: relayCount of them, fewer if
// GOMAXPROCS leaves no P for the rest of the process.
func newRelays() ([]*relay, error) {
	k := min(relayCount(), runtime.GOMAXPROCS(0)-1)
	if k < 1 {
		return nil, fmt.Errorf("the relay needs Linux and GOMAXPROCS >= 2 (it is %d): its waits keep a P", runtime.GOMAXPROCS(0))
	}
	var rs []*relay
	for range k {
		r, err := newRelay()
		if err != nil {
			for _, r := range rs {
				r.close()
			}
			return nil, err
		}
		rs = append(rs, r)
	}
	pinRelays(rs)
	return rs, nil
}

// PipeMode says how the proxy moves bytes: relay, kernel, copy or splice.
func (p *Proxy) PipeMode() string { return p.pipeMode }

// serve accepts connections on ln until ctx ends.
func (p *Proxy) serve(ctx context.Context, ln net.Listener, kind string) error {
	var wg sync.WaitGroup
	defer wg.Wait()
	go func() { <-ctx.Done(); _ = ln.Close() }()
	backoff := 5 * time.Millisecond
	for {
		c, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			if !errors.Is(err, net.ErrClosed) {
				// EMFILE and the like: wait and try again.
				p.log.Warn("proxy accept", "err", err)
				select {
				case <-ctx.Done():
					return nil
				case <-p.clock.After(backoff):
				}
				backoff = min(backoff*2, time.Second)
				continue
			}
			return fmt.Errorf("proxy: accepting on %s: %w", ln.Addr(), err)
		}
		backoff = 5 * time.Millisecond
		p.metrics.accepted.WithLabelValues(kind).Inc()
		src := connlimit.Source(c.RemoteAddr())
		if reason, msg := p.admit(src); reason != "" {
			p.metrics.rejected.WithLabelValues(kind, reason).Inc()
			p.refuseLater(c, "53300", msg)
			continue
		}
		p.metrics.active.WithLabelValues(kind).Inc()
		p.metrics.pending.WithLabelValues(kind).Inc()
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer p.metrics.active.WithLabelValues(kind).Dec()
			defer p.release(src)
			authenticated := sync.OnceFunc(func() {
				p.pending.Done(src)
				p.metrics.pending.WithLabelValues(kind).Dec()
			})
			defer authenticated()
			p.handle(ctx, c, kind, src, authenticated)
		}()
	}
}

// refuse writes a FATAL ErrorResponse and closes c.
func (p *Proxy) refuse(c net.Conn, code, msg string) {
	_ = c.SetWriteDeadline(p.clock.Now().Add(time.Second))
	_, _ = c.Write(errorResponse(code, msg))
	// Close gracefully so the error is read before the connection ends:
	// closing with unread input would reset the connection and could
	// discard the ErrorResponse.
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.CloseWrite()
		_ = c.SetReadDeadline(p.clock.Now().Add(time.Second))
		_, _ = io.Copy(io.Discard, io.LimitReader(c, 64<<10))
	}
	_ = c.Close()
}

// SetView replaces the proxy's view of the store: the leader's id ("" for
// none) and the member records. The watch calls it; tests may too.
func (p *Proxy) SetView(leader string, members map[string]model.Member) {
	p.mu.Lock()
	p.viewLeader = leader
	p.members = members
	if p.leader != nil {
		m, ok := members[p.leader.id]
		if p.leader.id != leader || !ok || p.targetOf(m) != *p.leader {
			p.log.Info("proxy: leader changed in the store; closing its connections", "old", p.leader.id, "new", leader)
			p.setLeaderLocked(nil)
		}
	}
	// Read-only targets that left the store lose their connections too.
	kept := p.replicas[:0]
	for _, r := range p.replicas {
		if m, ok := members[r.id]; ok && p.targetOf(m) == r && r.id != leader {
			kept = append(kept, r)
		}
	}
	p.setReplicasLocked(kept)
	p.mu.Unlock()
	p.kick()
}

func (p *Proxy) kick() {
	select {
	case p.poke <- struct{}{}:
	default:
	}
}

func (p *Proxy) targetOf(m model.Member) target {
	dm := p.cfg.DialMap.Map()
	return target{id: m.ID, addr: dm.Addr(m.PostgresAddr), api: dm.URL(m.APIURL), pgAddr: m.PostgresAddr}
}

// setLeaderLocked changes the confirmed leader, closing every connection
// routed to the previous one. Caller holds p.mu.
func (p *Proxy) setLeaderLocked(t *target) {
	old := p.leader
	if old == nil && t == nil || old != nil && t != nil && *old == *t {
		return
	}
	p.leader = t
	p.leaderFails = 0
	p.metrics.routing.Inc()
	if old != nil {
		for c := range p.conns {
			if c.member == old.id {
				c.close()
			}
		}
	}
	if t != nil {
		p.log.Info("proxy: routing to leader", "leader", t.id, "addr", t.addr)
	} else {
		p.log.Info("proxy: no writable leader")
	}
	close(p.changed)
	p.changed = make(chan struct{})
}

// setReplicasLocked changes the read-only candidates, closing read-only
// connections to members that are no longer candidates. Caller holds p.mu.
func (p *Proxy) setReplicasLocked(rs []target) {
	same := len(rs) == len(p.replicas)
	for i := 0; same && i < len(rs); i++ {
		same = rs[i] == p.replicas[i]
	}
	if same {
		p.replicas = rs
		return
	}
	keep := map[string]bool{}
	for _, r := range rs {
		keep[r.id] = true
	}
	for c := range p.conns {
		if c.kind == kindReadOnly && !c.toLeader && !keep[c.member] {
			c.close()
		}
	}
	p.replicas = rs
	close(p.changed)
	p.changed = make(chan struct{})
}

var errNoTarget = errors.New("no usable member")

// pick chooses where a new connection goes, waiting up to NoLeaderWait
// for a confirmed leader (or a healthy replica on the read-only
// listener).
func (p *Proxy) pick(ctx context.Context, kind string) (target, bool, error) {
	var timeout <-chan time.Time
	for {
		p.mu.Lock()
		if kind == kindReadOnly && len(p.replicas) > 0 {
			p.rr++
			t := p.replicas[p.rr%len(p.replicas)]
			p.mu.Unlock()
			return t, false, nil
		}
		if p.leader != nil {
			t := *p.leader
			p.mu.Unlock()
			return t, true, nil
		}
		ch := p.changed
		p.mu.Unlock()
		if timeout == nil {
			timeout = p.clock.After(p.cfg.NoLeaderWait)
		}
		select {
		case <-ch:
		case <-timeout:
			return target{}, false, errNoTarget
		case <-ctx.Done():
			return target{}, false, ctx.Err()
		}
	}
}

// register records a proxied connection, unless its target stopped being
// usable since it was picked (then the caller must drop it).
func (p *Proxy) register(c *pconn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return false
	}
	ok := false
	if c.toLeader {
		ok = p.leader != nil && p.leader.id == c.member
	} else {
		for _, r := range p.replicas {
			ok = ok || r.id == c.member
		}
	}
	if ok {
		p.conns[c] = struct{}{}
	}
	return ok
}

func (p *Proxy) unregister(c *pconn) {
	p.mu.Lock()
	delete(p.conns, c)
	p.mu.Unlock()
}

// Leader returns the id of the confirmed leader ("" when none).
func (p *Proxy) Leader() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.leader == nil {
		return ""
	}
	return p.leader.id
}

// Conns returns how many proxied connections are open.
func (p *Proxy) Conns() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.conns)
}

// DefaultProcs is the GOMAXPROCS petrel processes use unless GOMAXPROCS is
// set: a quarter of the CPUs, at least one, plus one for each of the
// proxy's relays, which keep theirs while connections are busy
// (relay_linux.go, rule 3). The
// agent and its proxy share the host with PostgreSQL, which should have
// the rest; and on a small machine a single P for everything else avoids
// the scheduler's spinning threads.
func DefaultProcs() int {
	n := runtime.NumCPU() / 4
	if n < 1 {
		n = 1
	}
	return n + relayCount()
}

// pickRelay is the index of the relay to carry pc: the one pinned to the
// CPU its client's segments arrive on, else the next in turn.
func (p *Proxy) pickRelay(pc *pconn) int {
	if i := pinnedRelay(p.relays, pc.client); i >= 0 {
		return i
	}
	return int(p.nextRelay.Add(1) % uint32(len(p.relays)))
}
