// Package edge is petrel's edge router (`petrel edge`): an HTTP reverse
// proxy, one per region, in front of that region's app instances. It
// implements the fly-replay protocol: when an instance answers with a
// fly-replay header (typically because its region's replica refused a
// write), the edge discards that answer and sends the whole buffered
// request to the target region's edge, which serves it there. Edges find
// each other through the store (one lease per edge), keep persistent
// HTTP/1.1 connections between them, and sign what they send each other.
//
// It also gives apps read-your-writes with no app code: after a write
// served in the primary region the response carries a signed cookie with
// the leader's timeline and WAL position; a later request in a replica
// region waits (bounded) until the local replica has replayed it, or is
// replayed in the primary region.
package edge

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/petrel-db/petrel/internal/api"
	"github.com/petrel-db/petrel/internal/store"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Config configures an edge. Zero values mean the defaults.
type Config struct {
	// ID names the edge in the store (default "edge-<region>").
	ID string
	// Region is the region this edge and its instances are in.
	Region string
	// PrimaryRegion is used until the store says otherwise (the store's
	// cluster info wins: a region move reaches the edges by itself).
	PrimaryRegion string
	// AdvertiseURL is where other edges reach this one (http://host:port).
	AdvertiseURL string
	// Instances are app instances configured up front; others register
	// over the admin API (POST /instances, heartbeat every second).
	Instances []Instance
	// HealthPath, when set, is GET on each instance every 500 ms (a status
	// under 500 is healthy); when empty a TCP connect is the check.
	HealthPath string
	// MemoryBody is how much of a request body is buffered in memory
	// (default 1 MiB); beyond it the body is spooled to a temporary file.
	MemoryBody int64
	// MaxReplayBody is the largest body a request may have and still be
	// replayed (default 64 MiB). Larger bodies still reach the local
	// instance, streamed; if it asks for a replay the client gets 413 with
	// fly-replay-failed reason=body_too_large.
	MaxReplayBody int64
	// ReplayTimeout is how long a replay (or a request waiting for a free
	// instance) looks for a target when the directive gives no timeout=
	// (default 5 s). Then it fails with 503 or falls back.
	ReplayTimeout time.Duration
	// MaxHops is how many times one request may be replayed (default 3):
	// two apps sending a request to each other fail with 508, not a loop.
	MaxHops int
	// RYWWait bounds how long a request with a read-your-writes token
	// waits for this region's replica before it is replayed in the
	// primary region instead (default 500 ms).
	RYWWait time.Duration
	// DatabaseURL is this region's database: the leader (through the
	// leader proxy) in the primary region, where the edge mints tokens;
	// the region's replica elsewhere, whose replay position it follows.
	// Empty turns read-your-writes off.
	DatabaseURL string
	// NodeAPI is the API URL of the member DatabaseURL points at (its
	// /status gives the replica's timeline), reached with NodeAPIClient
	// (over TLS, against the cluster CA).
	NodeAPI       string
	NodeAPIClient *api.Client
	// Secret authenticates edges to each other and signs tokens; every
	// edge of a cluster has the same one (EDGE_SECRET).
	Secret string
	// Dial rewrites addresses before dialling (the local world's links).
	Dial func(addr string) string
	// TempDir is where large bodies are spooled (default os.TempDir()).
	TempDir string
}

func (c *Config) defaults() error {
	if !validToken(c.Region) {
		return fmt.Errorf("edge region %q: want a region name", c.Region)
	}
	if c.ID == "" {
		c.ID = "edge-" + c.Region
	}
	if !validToken(c.ID) {
		return fmt.Errorf("edge id %q: letters, digits, '-', '_', '.'", c.ID)
	}
	if len(c.Secret) < 16 {
		return errors.New("edge secret: want at least 16 characters (EDGE_SECRET)")
	}
	if c.MemoryBody <= 0 {
		c.MemoryBody = 1 << 20
	}
	if c.MaxReplayBody <= 0 {
		c.MaxReplayBody = 64 << 20
	}
	if c.MaxReplayBody < c.MemoryBody {
		c.MemoryBody = c.MaxReplayBody
	}
	if c.ReplayTimeout <= 0 {
		c.ReplayTimeout = 5 * time.Second
	}
	if c.MaxHops <= 0 {
		c.MaxHops = 3
	}
	if c.RYWWait <= 0 {
		c.RYWWait = 500 * time.Millisecond
	}
	if c.Dial == nil {
		c.Dial = func(a string) string { return a }
	}
	for _, in := range c.Instances {
		if !validToken(in.ID) {
			return fmt.Errorf("instance id %q: letters, digits, '-', '_', '.'", in.ID)
		}
	}
	return nil
}

// Edge is one region's edge router.
type Edge struct {
	cfg    Config
	log    *slog.Logger
	keys   keys
	nonces nonces
	inst   *instances
	peers  peers
	m      *metrics
	now    func() time.Time

	local   *http.Transport // to app instances
	remote  *http.Transport // to other edges: persistent connections
	client  *http.Client    // health checks, pings, the agent's /status
	replica *replica        // nil without a DatabaseURL
	minter  *minter         // nil without a DatabaseURL
	session *store.EdgeSession

	primary  atomic.Pointer[string]
	pub      chan struct{}
	adminURL atomic.Pointer[string] // where the admin API (metrics) is served, "" none
}

// New makes an edge; Run starts it.
func New(cfg Config, log *slog.Logger) (*Edge, error) {
	if err := cfg.defaults(); err != nil {
		return nil, err
	}
	e := &Edge{cfg: cfg, log: log, keys: deriveKeys(cfg.Secret), now: time.Now, pub: make(chan struct{}, 1)}
	p := cfg.PrimaryRegion
	e.primary.Store(&p)
	e.inst = newInstances(cfg.Instances, e.instancesChanged)
	dialer := &net.Dialer{Timeout: 2 * time.Second, KeepAlive: 15 * time.Second}
	dial := func(ctx context.Context, network, addr string) (net.Conn, error) {
		return dialer.DialContext(ctx, network, cfg.Dial(addr))
	}
	e.local = &http.Transport{DialContext: dial, MaxIdleConnsPerHost: 256, IdleConnTimeout: 90 * time.Second,
		ResponseHeaderTimeout: 0, DisableCompression: true}
	e.remote = &http.Transport{DialContext: dial, MaxIdleConnsPerHost: 256, IdleConnTimeout: 5 * time.Minute, DisableCompression: true}
	e.client = &http.Client{Transport: e.remote, Timeout: 5 * time.Second}
	if cfg.DatabaseURL != "" {
		if cfg.NodeAPI != "" && cfg.NodeAPIClient == nil {
			return nil, errors.New("edge: NodeAPI needs NodeAPIClient (the cluster CA)")
		}
		e.replica = newReplica(cfg.DatabaseURL, cfg.NodeAPI, cfg.NodeAPIClient, log)
		m, err := newMinter(cfg.DatabaseURL)
		if err != nil {
			return nil, err
		}
		e.minter = m
	}
	e.m = newMetrics(cfg.Region, func() float64 { return float64(len(e.inst.healthyIDs())) }, func() float64 {
		n := 0
		for _, p := range e.peers.snapshot() {
			if p.alive {
				n++
			}
		}
		return float64(n)
	})
	return e, nil
}

func (e *Edge) primaryRegion() string { return *e.primary.Load() }

func (e *Edge) instancesChanged() {
	select {
	case e.pub <- struct{}{}:
	default:
	}
}

func (e *Edge) record() store.Edge {
	rec := store.Edge{ID: e.cfg.ID, Region: e.cfg.Region, URL: e.cfg.AdvertiseURL, Instances: e.inst.healthyIDs()}
	if u := e.adminURL.Load(); u != nil {
		rec.AdminURL = *u
	}
	return rec
}

// adminURLFor is where others reach the admin listener: its own address,
// or the advertised host with its port when it listens on every address.
func adminURLFor(advertise string, admin net.Addr) string {
	host, port, err := net.SplitHostPort(admin.String())
	if err != nil {
		return ""
	}
	if ip := net.ParseIP(host); ip == nil || ip.IsUnspecified() {
		u, err := url.Parse(advertise)
		if err != nil || u.Hostname() == "" {
			return ""
		}
		host = u.Hostname()
	}
	return "http://" + net.JoinHostPort(host, port)
}

// SetPeers replaces the other edges (what the store session does; tests
// without a store call it directly).
func (e *Edge) SetPeers(v store.EdgeView) {
	var recs []peerRecord
	for _, ed := range v.Edges {
		if ed.ID == e.cfg.ID || ed.URL == "" {
			continue
		}
		recs = append(recs, peerRecord{ID: ed.ID, Region: ed.Region, URL: strings.TrimRight(ed.URL, "/"), Instances: ed.Instances})
	}
	e.peers.set(recs)
	if v.PrimaryRegion != "" && v.PrimaryRegion != e.primaryRegion() {
		p := v.PrimaryRegion
		e.primary.Store(&p)
		e.log.Info("primary region", "region", p)
	}
}

// Run serves user traffic on ln and the admin API (metrics, health,
// instance registration) on admin (may be nil) until ctx ends. With a
// session the edge registers in the store and learns its peers there.
func (e *Edge) Run(ctx context.Context, ln, admin net.Listener, session *store.EdgeSession) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	defer wg.Wait()
	goRun := func(f func()) { wg.Add(1); go func() { defer wg.Done(); f() }() }
	if admin != nil {
		u := adminURLFor(e.cfg.AdvertiseURL, admin.Addr())
		e.adminURL.Store(&u)
	}
	if session != nil {
		e.session = session
		goRun(func() { session.Run(ctx, e.SetPeers) })
		goRun(func() {
			session.Publish(e.record())
			for {
				select {
				case <-ctx.Done():
					return
				case <-e.pub:
					session.Publish(e.record())
				}
			}
		})
	}
	goRun(func() {
		t := time.NewTicker(HealthInterval)
		defer t.Stop()
		for {
			e.inst.check(ctx, e.client, e.cfg.HealthPath, e.now())
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
		}
	})
	goRun(func() {
		t := time.NewTicker(pingInterval)
		defer t.Stop()
		for {
			e.peers.pingAll(ctx, e.client)
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
		}
	})
	if e.replica != nil {
		goRun(func() { e.replica.run(ctx) })
		defer e.minter.close()
	}
	srv := &http.Server{Handler: e, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 5 * time.Minute,
		MaxHeaderBytes: 64 << 10, ErrorLog: slog.NewLogLogger(e.log.Handler(), slog.LevelDebug)}
	errc := make(chan error, 2)
	goRun(func() { errc <- srv.Serve(ln) })
	var asrv *http.Server
	if admin != nil {
		asrv = &http.Server{Handler: e.AdminHandler(), ReadHeaderTimeout: 5 * time.Second}
		goRun(func() { errc <- asrv.Serve(admin) })
	}
	var err error
	select {
	case <-ctx.Done():
	case err = <-errc:
	}
	sctx, scancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer scancel()
	_ = srv.Shutdown(sctx)
	if asrv != nil {
		_ = asrv.Shutdown(sctx)
	}
	cancel()
	e.remote.CloseIdleConnections()
	e.local.CloseIdleConnections()
	if errors.Is(err, http.ErrServerClosed) {
		err = nil
	}
	return err
}

// AdminHandler serves /metrics, /health, GET /instances and POST
// /instances (registration: {"id","addr","capacity"}; repeat every
// second, an instance not heard from for 3 s is dropped).
func (e *Edge) AdminHandler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(e.m.reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("GET /health", func(w http.ResponseWriter, r *http.Request) {
		ids := e.inst.healthyIDs()
		code := http.StatusOK
		if len(ids) == 0 {
			code = http.StatusServiceUnavailable
		}
		writeJSON(w, code, map[string]any{"region": e.cfg.Region, "primary_region": e.primaryRegion(), "healthy_instances": ids})
	})
	mux.HandleFunc("GET /instances", func(w http.ResponseWriter, r *http.Request) {
		type peerState struct {
			ID, Region, URL string
			Alive           bool
			RTTMillis       float64 `json:"rtt_ms"`
			Instances       []string
		}
		var ps []peerState
		for _, p := range e.peers.snapshot() {
			ps = append(ps, peerState{p.ID, p.Region, p.URL, p.alive, float64(p.rtt.Microseconds()) / 1000, p.Instances})
		}
		writeJSON(w, http.StatusOK, map[string]any{"instances": e.inst.list(), "peers": ps})
	})
	mux.HandleFunc("POST /instances", func(w http.ResponseWriter, r *http.Request) {
		var in Instance
		if err := decodeJSON(w, r, &in); err != nil {
			writeJSON(w, http.StatusBadRequest, map[string]string{"error": err.Error()})
			return
		}
		if err := e.inst.register(in, e.now()); err != nil {
			writeJSON(w, http.StatusBadRequest, map[string]string{"error": err.Error()})
			return
		}
		writeJSON(w, http.StatusOK, map[string]any{"registered": in.ID, "ttl_s": RegistrationTTL.Seconds()})
	})
	return mux
}

// call is one request on its way through this edge.
type call struct {
	r        *http.Request
	body     *body
	start    time.Time
	fromEdge bool      // signed by another edge of the cluster
	kind     string    // "" (from a client), or why an edge sent it: replay, ryw, shed, force, prefer, fallback
	hops     int       // replays so far
	pinned   string    // the instance it must go to
	exclude  string    // an instance it must not go to (elsewhere=true)
	src      string    // fly-replay-src for the instance
	failed   string    // fly-replay-failed for the instance (a fallback)
	deadline time.Time // for waits (capacity, a target)
	served   string    // "local" or the peer's region, for metrics and logs
	replayed string    // the reason it left the first instance, if it did
	timing   string    // Server-Timing entry: how long read-your-writes waited
}

func (c *call) child(kind string) *call {
	n := *c
	n.kind, n.pinned, n.exclude, n.src, n.failed = kind, "", "", c.src, ""
	return &n
}

func (e *Edge) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path == pingPath {
		writeJSON(w, http.StatusOK, pingReply{ID: e.cfg.ID, Region: e.cfg.Region})
		return
	}
	c := &call{r: r, start: e.now(), deadline: e.now().Add(e.cfg.ReplayTimeout)}
	signed := r.Header.Get(headerEdgeAuth) != ""
	if !signed {
		stripInternal(r.Header)
	}
	if isUpgrade(r) {
		e.serveUpgrade(w, r)
		return
	}
	b, err := readBody(r.Body, e.cfg.MemoryBody, e.cfg.MaxReplayBody, e.cfg.TempDir)
	if err != nil {
		code := http.StatusBadRequest
		if !errors.Is(err, errBodyRead) {
			code = http.StatusInternalServerError
		}
		e.log.Warn("request body", "err", err, "path", r.URL.Path)
		http.Error(w, "petrel edge: "+err.Error(), code)
		return
	}
	defer b.close()
	c.body = b
	if signed {
		if !b.replayable() {
			http.Error(w, "petrel edge: a replayed body must be complete", http.StatusRequestEntityTooLarge)
			return
		}
		if err := e.nonces.verify(e.keys.auth, r, b.digest(), e.now()); err != nil {
			e.log.Warn("refused a request claiming to come from an edge", "err", err, "remote", r.RemoteAddr)
			http.Error(w, "petrel edge: "+err.Error(), http.StatusUnauthorized)
			return
		}
		c.fromEdge = true
		c.kind = r.Header.Get(headerEdgeKind)
		c.hops, _ = strconv.Atoi(r.Header.Get(headerEdgeHops))
		c.pinned = r.Header.Get(headerEdgeInstance)
		c.src = r.Header.Get(HeaderReplaySrc)
		c.failed = r.Header.Get(HeaderReplayFailed)
		if ms, err := strconv.Atoi(r.Header.Get(headerEdgeTimeout)); err == nil && ms > 0 && time.Duration(ms)*time.Millisecond < e.cfg.ReplayTimeout {
			c.deadline = c.start.Add(time.Duration(ms) * time.Millisecond)
		}
		stripInternal(r.Header)
	}
	resp := e.route(c)
	e.respond(w, c, resp)
}

// route decides where a request is served and returns the response to
// send back. The rules for a request from a client, in order:
//
//  1. fly-force-region names another region: that region's edge, or 503.
//  2. fly-prefer-region names another region with a live edge: there.
//  3. A read-your-writes token the local replica does not hold yet (in a
//     replica region): wait up to RYWWait, then the primary region.
//  4. A local instance with spare capacity; none (all at capacity): the
//     nearest region's edge; no edge either: wait for capacity.
//
// A request from another edge is served locally (it was routed already).
// Either way, an instance's fly-replay answer is acted on by replay.
func (e *Edge) route(c *call) *http.Response {
	if !c.fromEdge {
		if r := strings.ToLower(strings.TrimSpace(c.r.Header.Get(HeaderForceRegion))); r != "" && r != e.cfg.Region {
			p := nearestPeer(e.cfg.Region, r, e.peers.snapshot())
			if p == nil {
				return e.failure(c, http.StatusServiceUnavailable, Failure{Region: r, Reason: ReasonNoCandidate}, "fly-force-region: no edge with instances in region "+r)
			}
			return e.toPeer(c.child("force"), p)
		}
		if r := strings.ToLower(strings.TrimSpace(c.r.Header.Get(HeaderPreferRegion))); r != "" && r != e.cfg.Region {
			if p := nearestPeer(e.cfg.Region, r, e.peers.snapshot()); p != nil {
				return e.toPeer(c.child("prefer"), p)
			}
		}
		if resp := e.readYourWrites(c); resp != nil {
			return resp
		}
	}
	resp, in, err := e.serveLocal(c)
	if fresh(c) && (errors.Is(err, errShed) || errors.Is(err, errNoInstance)) {
		// Local instances are all busy, or none is up: the nearest region
		// serves (latency shedding); with no other region, wait here.
		if p := nearestPeer(e.cfg.Region, "", e.peers.snapshot()); p != nil {
			return e.toPeer(c.child("shed"), p)
		}
		if errors.Is(err, errShed) {
			resp, in, err = e.serveLocalWait(c)
		}
	}
	if err != nil {
		return e.localError(c, err)
	}
	if resp.Header.Get(HeaderReplay) != "" {
		return e.replay(c, resp, in)
	}
	e.mint(c, resp)
	return resp
}

// readYourWrites applies rule 3 of route; nil means serve locally.
func (e *Edge) readYourWrites(c *call) *http.Response {
	primary := e.primaryRegion()
	if e.replica == nil || primary == "" || primary == e.cfg.Region {
		return nil
	}
	tok, ok := tokenFromRequest(e.keys.token, c.r, e.now())
	if !ok {
		return nil
	}
	if e.replica.covers(tok.Pos) {
		e.m.ryw.WithLabelValues("fresh").Inc()
		e.m.rywWait.Observe(0)
		c.timing = "ryw;desc=fresh;dur=0"
		return nil
	}
	start := e.now()
	ctx, cancel := context.WithTimeout(c.r.Context(), e.cfg.RYWWait)
	err := e.replica.wait(ctx, tok.Pos)
	cancel()
	waited := e.now().Sub(start)
	e.m.rywWait.Observe(waited.Seconds())
	outcome := "waited"
	defer func() { c.timing = fmt.Sprintf("ryw;desc=%s;dur=%.3f", outcome, float64(waited.Microseconds())/1000) }()
	switch {
	case err == nil:
		e.m.ryw.WithLabelValues(outcome).Inc()
		return nil
	case errors.Is(err, errOldTimeline):
		outcome = "timeline"
	case errors.Is(err, context.DeadlineExceeded):
		outcome = "timeout"
	default:
		outcome = "error"
	}
	e.m.ryw.WithLabelValues(outcome).Inc()
	if c.r.Context().Err() != nil {
		return e.failure(c, http.StatusServiceUnavailable, Failure{Reason: ReasonTimeout}, "client went away")
	}
	// Never serve what may be stale: the primary region has it.
	p := nearestPeer(e.cfg.Region, primary, e.peers.snapshot())
	if p == nil {
		return e.failure(c, http.StatusServiceUnavailable, Failure{Region: primary, Reason: ReasonNoCandidate},
			"read-your-writes: the local replica is behind your last write and the primary region's edge is unreachable")
	}
	e.m.replays.WithLabelValues("ryw").Inc()
	n := c.child("ryw")
	n.replayed = "ryw-" + outcome
	return e.toPeer(n, p)
}

var errShed = errors.New("every local instance is at capacity")

// errNoInstance: no healthy instance (or not the pinned one).
var errNoInstance = errors.New("no healthy app instance")

// serveLocal sends c to a local instance. A connection refused (nothing
// was sent) takes the instance out and tries another: always safe. Once
// the request was sent, an error is final for methods that may write
// (the instance may have applied it), and retried once elsewhere for
// GET, HEAD and OPTIONS.
func (e *Edge) serveLocal(c *call) (*http.Response, *inst, error) {
	retriedSent := false
	for {
		in, full := e.inst.pick(c.pinned, c.exclude)
		if in == nil {
			switch {
			case full && fresh(c):
				return nil, nil, errShed
			case full:
				return e.serveLocalWait(c)
			}
			return nil, nil, errNoInstance
		}
		resp, err := e.sendLocal(c, in)
		if err == nil {
			return resp, in, nil
		}
		if isDialError(err) {
			e.log.Warn("app instance refused a connection; taking it out", "instance", in.ID, "err", err)
			e.inst.markDown(in)
			if c.pinned != "" {
				return nil, nil, errNoInstance
			}
			continue
		}
		if c.r.Context().Err() == nil && safeMethod(c.r.Method) && !retriedSent && c.pinned == "" && c.body.replayable() {
			retriedSent = true
			e.inst.markDown(in)
			continue
		}
		return nil, in, fmt.Errorf("app instance %s: %w", in.ID, err)
	}
}

// serveLocalWait waits until the deadline for an instance with spare
// capacity.
func (e *Edge) serveLocalWait(c *call) (*http.Response, *inst, error) {
	for {
		in, full := e.inst.pick(c.pinned, c.exclude)
		if in != nil && !full {
			resp, err := e.sendLocal(c, in)
			if err != nil {
				if isDialError(err) {
					e.inst.markDown(in)
					continue
				}
				return nil, in, fmt.Errorf("app instance %s: %w", in.ID, err)
			}
			return resp, in, nil
		}
		if !e.now().Before(c.deadline) {
			if full || in != nil {
				return nil, nil, fmt.Errorf("%w for %v", errShed, e.cfg.ReplayTimeout)
			}
			return nil, nil, errNoInstance
		}
		select {
		case <-c.r.Context().Done():
			return nil, nil, c.r.Context().Err()
		case <-time.After(10 * time.Millisecond):
		}
	}
}

func (e *Edge) sendLocal(c *call, in *inst) (*http.Response, error) {
	req, err := e.outRequest(c, "http://"+in.Addr)
	if err != nil {
		return nil, err
	}
	if c.src != "" {
		req.Header.Set(HeaderReplaySrc, c.src)
	}
	if c.failed != "" {
		req.Header.Set(HeaderReplayFailed, c.failed)
	}
	in.inflight.Add(1)
	resp, err := e.local.RoundTrip(req)
	if err != nil {
		in.inflight.Add(-1)
		return nil, err
	}
	resp.Body = &doneBody{ReadCloser: resp.Body, done: func() { in.inflight.Add(-1) }}
	if c.served == "" {
		c.served = "local"
	}
	return resp, nil
}

// replay acts on an instance's fly-replay answer (resp, from instance
// asking). The response itself is discarded: its body is for edges that
// do not replay. The rules:
//
//  1. A fallback request cannot ask again (Fly's rule): 502.
//  2. A header that does not parse: 502 reason=invalid (the app is broken;
//     sending its 409 on would look like a real conflict).
//  3. A body that was not kept whole cannot be replayed: 413.
//  4. More than MaxHops replays: 508 (a loop).
//  5. Otherwise look for a target (chooseReplay) until the timeout; a
//     target whose connection is refused is retried elsewhere (nothing was
//     sent), but once a request was sent to a target it is not sent again
//     (it may have been applied): its answer, or a 502, is final.
//  6. No target in time: the fallback, if asked for, else 503.
func (e *Edge) replay(c *call, resp *http.Response, asking *inst) *http.Response {
	header := resp.Header.Get(HeaderReplay)
	drain(resp)
	fail := Failure{Source: asking.ID}
	if c.failed != "" {
		fail.Reason = ReasonFallbackReplay
		return e.failure(c, http.StatusBadGateway, fail, "the app asked to replay a fallback request")
	}
	d, err := ParseReplay(header)
	if err != nil {
		fail.Reason = ReasonInvalid
		e.log.Warn("app instance answered with a bad fly-replay header", "instance", asking.ID, "header", header, "err", err)
		return e.failure(c, http.StatusBadGateway, fail, err.Error())
	}
	fail.Region, fail.Instance = strings.Join(d.Regions, ","), d.Instance
	if d.AnyRegion {
		fail.Region = "any"
	}
	if !c.body.replayable() {
		fail.Reason = ReasonBodyTooLarge
		return e.failure(c, http.StatusRequestEntityTooLarge, fail,
			fmt.Sprintf("the request body is over the %d-byte replay limit", e.cfg.MaxReplayBody))
	}
	if c.hops+1 > e.cfg.MaxHops {
		fail.Reason = ReasonHopLimit
		return e.failure(c, http.StatusLoopDetected, fail, fmt.Sprintf("replayed %d times already (a replay loop?)", c.hops))
	}
	timeout := e.cfg.ReplayTimeout
	if d.Timeout > 0 {
		timeout = d.Timeout
	}
	start := e.now()
	deadline := start.Add(timeout)
	src := Source{Instance: asking.ID, Region: e.cfg.Region, Time: start, State: d.State}.String()
	e.m.replays.WithLabelValues("app").Inc()
	tried := false
	for {
		t, ok := chooseReplay(d, asking.ID, e.cfg.Region, e.inst.healthyIDs(), e.peers.snapshot())
		if ok {
			tried = true
			n := c.child("replay")
			n.hops, n.src, n.pinned, n.deadline = c.hops+1, src, t.instance, deadline
			n.replayed = "app"
			if d.Elsewhere {
				n.exclude = asking.ID
			}
			if t.peer == nil {
				n.served = ""
				r2, in2, err := e.serveLocal(n)
				if err == nil {
					*c = *n
					if r2.Header.Get(HeaderReplay) != "" {
						return e.replay(c, r2, in2)
					}
					e.mint(c, r2)
					return r2
				}
				if !errors.Is(err, errNoInstance) && !errors.Is(err, errShed) {
					fail.Reason, fail.Elapsed = ReasonRetriesExhausted, e.now().Sub(start)
					return e.failure(c, http.StatusBadGateway, fail, err.Error())
				}
			} else {
				r2, sent, err := e.sendPeer(n, t.peer)
				if err == nil && !(r2.StatusCode == http.StatusServiceUnavailable && r2.Header.Get(HeaderReplayFailed) != "") {
					*c = *n
					return r2
				}
				if err == nil {
					drain(r2) // the target had no instance after all: look again
				} else if sent {
					fail.Reason, fail.Elapsed = ReasonRetriesExhausted, e.now().Sub(start)
					e.log.Warn("replay sent but not answered; not sending it again", "to", t.peer.ID, "err", err)
					return e.failure(c, http.StatusBadGateway, fail, "the target region did not answer: "+err.Error())
				}
			}
		}
		if !e.now().Before(deadline) || c.r.Context().Err() != nil {
			break
		}
		select {
		case <-c.r.Context().Done():
		case <-time.After(25 * time.Millisecond):
		}
	}
	fail.Elapsed = e.now().Sub(start)
	fail.Reason = ReasonNoCandidate
	if tried {
		fail.Reason = ReasonTimeout
	}
	if d.Fallback != FallbackNone {
		return e.fallback(c, d.Fallback, asking, fail)
	}
	return e.failure(c, http.StatusServiceUnavailable, fail, "no instance could take the replayed request")
}

// fallback sends the request back to the asking instance (force_self),
// or to it or another local one (prefer_self), with fly-replay-failed.
func (e *Edge) fallback(c *call, fb Fallback, asking *inst, fail Failure) *http.Response {
	e.m.fallbacks.WithLabelValues(string(fb)).Inc()
	n := c.child("fallback")
	n.failed = fail.String()
	n.src = ""
	n.deadline = e.now().Add(e.cfg.ReplayTimeout)
	var resp *http.Response
	var in *inst
	var err error
	if fb == FallbackForceSelf || e.inst.get(asking.ID) != nil && e.inst.get(asking.ID).healthy {
		resp, err = e.sendLocal(n, asking)
		in = asking
	} else {
		resp, in, err = e.serveLocal(n)
	}
	if err != nil {
		return e.localError(n, err)
	}
	*c = *n
	if resp.Header.Get(HeaderReplay) != "" {
		return e.replay(c, resp, in)
	}
	return resp
}

// toPeer sends a request from a client to another region's edge (force,
// prefer, shed, ryw). A refused connection tries the next nearest edge of
// the same region set; an error after sending is final.
func (e *Edge) toPeer(c *call, p *peer) *http.Response {
	e.m.replays.WithLabelValues(c.kind).Inc()
	c.hops++
	if c.replayed == "" {
		c.replayed = c.kind
	}
	resp, _, err := e.sendPeer(c, p)
	if err != nil {
		return e.failure(c, http.StatusBadGateway, Failure{Region: p.Region, Reason: ReasonRetriesExhausted}, "edge "+p.ID+": "+err.Error())
	}
	return resp
}

// sendPeer sends c to edge p, signed. sent reports whether the request
// may have reached it (false only for a failed dial).
func (e *Edge) sendPeer(c *call, p *peer) (resp *http.Response, sent bool, err error) {
	req, err := e.outRequest(c, p.URL)
	if err != nil {
		return nil, false, err
	}
	req.Header.Set(headerEdgeKind, c.kind)
	req.Header.Set(headerEdgeHops, strconv.Itoa(c.hops))
	req.Header.Set(headerEdgeOrigin, e.cfg.Region)
	if c.pinned != "" {
		req.Header.Set(headerEdgeInstance, c.pinned)
	}
	if c.src != "" {
		req.Header.Set(HeaderReplaySrc, c.src)
	}
	left := time.Until(c.deadline)
	if left < 100*time.Millisecond {
		left = 100 * time.Millisecond
	}
	req.Header.Set(headerEdgeTimeout, strconv.FormatInt(left.Milliseconds(), 10))
	signRequest(e.keys.auth, req, c.body.digest(), e.now())
	resp, err = e.remote.RoundTrip(req)
	if err != nil {
		if isDialError(err) {
			e.peers.markDown(p.ID)
			return nil, false, err
		}
		return nil, true, err
	}
	c.served = p.Region
	return resp, true, nil
}

// outRequest builds the request to send on, to base (scheme://host).
func (e *Edge) outRequest(c *call, base string) (*http.Request, error) {
	u, err := url.Parse(base + c.r.URL.RequestURI())
	if err != nil {
		return nil, fmt.Errorf("target URL: %w", err)
	}
	b, err := c.body.reader()
	if err != nil {
		return nil, err
	}
	req, err := http.NewRequestWithContext(c.r.Context(), c.r.Method, u.String(), b)
	if err != nil {
		return nil, err
	}
	req.ContentLength = c.body.length()
	if req.ContentLength == 0 {
		req.Body = http.NoBody
	}
	req.Host = c.r.Host
	req.Header = c.r.Header.Clone()
	removeHopHeaders(req.Header)
	if !c.fromEdge {
		if ip, _, err := net.SplitHostPort(c.r.RemoteAddr); err == nil {
			if prior := c.r.Header.Values("X-Forwarded-For"); len(prior) > 0 {
				ip = strings.Join(prior, ", ") + ", " + ip
			}
			req.Header.Set("X-Forwarded-For", ip)
		}
		if req.Header.Get("X-Forwarded-Host") == "" {
			req.Header.Set("X-Forwarded-Host", c.r.Host)
		}
		if req.Header.Get("X-Forwarded-Proto") == "" {
			req.Header.Set("X-Forwarded-Proto", "http")
		}
	}
	return req, nil
}

// mint adds a read-your-writes cookie to a response served in the
// primary region to a request that may have written: a method that is
// not safe, or a replay (apps replay writes).
func (e *Edge) mint(c *call, resp *http.Response) {
	if e.minter == nil || e.cfg.Region != e.primaryRegion() || resp.StatusCode >= 400 {
		return
	}
	if safeMethod(c.r.Method) && c.kind != "replay" {
		return
	}
	ctx, cancel := context.WithTimeout(c.r.Context(), 2*time.Second)
	defer cancel()
	pos, err := e.minter.position(ctx)
	if err != nil {
		// A pooled connection may have died with the old leader: one
		// more try on a new one.
		pos, err = e.minter.position(ctx)
	}
	tok := token{Pos: pos, Minted: e.now()}
	if err != nil {
		// Without a position the user's next reads must not be served
		// by a replica that may not have the write: a sticky token sends
		// them to the primary region for a while.
		e.log.Warn("cannot read the leader's position; the user's reads go to the primary region for a while", "err", err, "for", stickyFor)
		tok = stickyToken(e.now())
	}
	resp.Header.Add("Set-Cookie", tokenCookie(e.keys.token, tok).String())
}

// failure is a response made by the edge for a replay that failed.
func (e *Edge) failure(c *call, code int, f Failure, msg string) *http.Response {
	if f.Elapsed == 0 {
		f.Elapsed = e.now().Sub(c.start)
	}
	e.m.failures.WithLabelValues(string(f.Reason)).Inc()
	h := http.Header{}
	h.Set(HeaderReplayFailed, f.String())
	h.Set("Content-Type", "text/plain; charset=utf-8")
	h.Set("Cache-Control", "no-store")
	body := "petrel edge: " + msg + "\n"
	return &http.Response{StatusCode: code, Header: h, Body: io.NopCloser(strings.NewReader(body)), ContentLength: int64(len(body))}
}

func (e *Edge) localError(c *call, err error) *http.Response {
	switch {
	case errors.Is(err, errNoInstance):
		return e.failure(c, http.StatusServiceUnavailable, Failure{Instance: c.pinned, Region: e.cfg.Region, Reason: ReasonNoCandidate}, "no healthy app instance in region "+e.cfg.Region)
	case errors.Is(err, errShed):
		return e.failure(c, http.StatusServiceUnavailable, Failure{Region: e.cfg.Region, Reason: ReasonTimeout}, "every app instance is at capacity")
	default:
		return e.failure(c, http.StatusBadGateway, Failure{Region: e.cfg.Region, Reason: ReasonRetriesExhausted}, err.Error())
	}
}

// respond writes resp to the client (or the asking edge), streaming.
func (e *Edge) respond(w http.ResponseWriter, c *call, resp *http.Response) {
	defer resp.Body.Close()
	h := w.Header()
	for k, vs := range resp.Header {
		h[k] = vs
	}
	removeHopHeaders(h)
	// A directive never leaves the edge that acted on it: another edge
	// or a client must not see (or act on) the app's replay request.
	h.Del(HeaderReplay)
	if h.Get(HeaderRegion) == "" {
		h.Set(HeaderRegion, e.cfg.Region)
	}
	if c.timing != "" && !c.fromEdge {
		// Server-Timing (W3C) shows browsers' devtools the wait.
		h.Add("Server-Timing", c.timing)
	}
	w.WriteHeader(resp.StatusCode)
	served := c.served
	if served == "" {
		served = "edge"
	}
	e.m.requests.WithLabelValues(strconv.Itoa(resp.StatusCode/100)+"xx", served).Inc()
	e.m.duration.WithLabelValues(strconv.FormatBool(c.replayed != "")).Observe(e.now().Sub(c.start).Seconds())
	flush := resp.ContentLength < 0 || strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream")
	var err error
	if flush {
		err = copyFlushing(w, resp.Body)
	} else {
		_, err = io.Copy(w, resp.Body)
	}
	if err != nil {
		e.log.Debug("copying the response", "err", err)
	}
	e.log.LogAttrs(c.r.Context(), slog.LevelInfo, "request",
		slog.String("method", c.r.Method), slog.String("path", c.r.URL.Path), slog.Int("status", resp.StatusCode),
		slog.String("served", served), slog.String("replayed", c.replayed), slog.Int("hops", c.hops),
		slog.Duration("dur", e.now().Sub(c.start)))
}

func copyFlushing(w http.ResponseWriter, r io.Reader) error {
	rc := http.NewResponseController(w)
	buf := make([]byte, 32<<10)
	for {
		n, err := r.Read(buf)
		if n > 0 {
			if _, werr := w.Write(buf[:n]); werr != nil {
				return werr
			}
			_ = rc.Flush()
		}
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
	}
}

// serveUpgrade passes a protocol upgrade (WebSocket) to a local instance.
// An upgraded connection is not a request that can be replayed: an app
// answering one with fly-replay gets a 502 sent to the client instead.
func (e *Edge) serveUpgrade(w http.ResponseWriter, r *http.Request) {
	in, _ := e.inst.pick("", "")
	if in == nil {
		http.Error(w, "petrel edge: no healthy app instance in region "+e.cfg.Region, http.StatusServiceUnavailable)
		return
	}
	rp := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(&url.URL{Scheme: "http", Host: in.Addr})
			pr.SetXForwarded()
			pr.Out.Host = r.Host
		},
		Transport: e.local,
		ModifyResponse: func(resp *http.Response) error {
			if resp.Header.Get(HeaderReplay) != "" {
				return errors.New("an upgrade cannot be replayed")
			}
			return nil
		},
		ErrorHandler: func(w http.ResponseWriter, _ *http.Request, err error) {
			w.Header().Set(HeaderReplayFailed, Failure{Source: in.ID, Reason: ReasonUpgrade}.String())
			http.Error(w, "petrel edge: "+err.Error(), http.StatusBadGateway)
		},
		ErrorLog: slog.NewLogLogger(e.log.Handler(), slog.LevelDebug),
	}
	rp.ServeHTTP(w, r)
}

const headerEdgeTimeout = "Petrel-Edge-Timeout"

// stripInternal removes what only edges may send: a client cannot claim
// a replay source, a failed replay, or any edge-to-edge header.
func stripInternal(h http.Header) {
	h.Del(HeaderReplaySrc)
	h.Del(HeaderReplayFailed)
	for k := range h {
		if strings.HasPrefix(http.CanonicalHeaderKey(k), internalPrefixEdge) {
			delete(h, k)
		}
	}
}

var hopHeaders = []string{"Connection", "Proxy-Connection", "Keep-Alive", "Proxy-Authenticate", "Proxy-Authorization", "Te", "Trailer", "Transfer-Encoding", "Upgrade"}

func removeHopHeaders(h http.Header) {
	for _, f := range h.Values("Connection") {
		for _, k := range strings.Split(f, ",") {
			if k = strings.TrimSpace(k); k != "" {
				h.Del(k)
			}
		}
	}
	for _, k := range hopHeaders {
		h.Del(k)
	}
}

func isUpgrade(r *http.Request) bool {
	return r.Header.Get("Upgrade") != "" && slices.ContainsFunc(strings.Split(r.Header.Get("Connection"), ","), func(s string) bool {
		return strings.EqualFold(strings.TrimSpace(s), "upgrade")
	})
}

// fresh says c came from a client and has not been routed anywhere yet.
func fresh(c *call) bool { return !c.fromEdge && c.kind == "" }

func safeMethod(m string) bool {
	return m == http.MethodGet || m == http.MethodHead || m == http.MethodOptions
}

// isDialError says the request never left: the connection was refused
// or could not be made.
func isDialError(err error) bool {
	var op *net.OpError
	return errors.As(err, &op) && op.Op == "dial"
}

// drain reads a little of a discarded response so its connection can be
// reused, then closes it.
func drain(resp *http.Response) {
	_, _ = io.CopyN(io.Discard, resp.Body, 64<<10)
	resp.Body.Close()
}

type doneBody struct {
	io.ReadCloser
	once sync.Once
	done func()
}

func (b *doneBody) Close() error {
	err := b.ReadCloser.Close()
	b.once.Do(b.done)
	return err
}
