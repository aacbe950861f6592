// Package agent runs one petrel node: it observes the local PostgreSQL
// server and the cluster state in etcd, asks the engine what to do, and
// does it. The agent holds no cluster logic of its own: every decision is
// engine.Decide's; this package only gathers facts and carries out
// actions, in the order and under the rules engine's doc states.
package agent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/petrel-db/petrel/internal/config"
	"github.com/petrel-db/petrel/internal/dialmap"
	"github.com/petrel-db/petrel/internal/engine"
	"github.com/petrel-db/petrel/internal/model"
	"github.com/petrel-db/petrel/internal/pg"
	"github.com/petrel-db/petrel/internal/store"
	"github.com/petrel-db/petrel/internal/watchdog"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// Tick is how often the agent observes when nothing wakes it earlier.
const Tick = 200 * time.Millisecond

// Agent is one node's supervisor.
type Agent struct {
	cfg     config.Node
	sec     config.Secrets
	pg      *pg.Server
	st      *store.Store
	log     *slog.Logger
	params  engine.Params
	self    model.Member
	metrics *Metrics
	http    *http.Client
	dialSrc *dialmap.Source // rewrites addresses of other members (local world links); nil on real hosts

	conf   confState // cluster settings and pending restarts (settings.go)
	tls    tlsState  // the TLS check of a running server (tls.go)
	events eventLog  // the cluster history this node writes (events.go)

	mu sync.Mutex // guards the following fields
	// following is the member whose WAL the local standby is configured
	// to stream ("" none); set by the actions that configure it.
	following       string
	lastPG          pg.Status
	lastPlan        engine.Plan
	lastObs         engine.Observation
	state           string
	restarts        int
	lastStart       time.Time
	runningSince    time.Time
	wasRunning      bool
	stoppedByUs     bool
	lastStreaming   time.Time
	streamingSince  time.Time        // start of the current uninterrupted streaming
	rewindFailedOn  string           // leader against which rewind last failed
	readOnlyWhy     string           // reason the read-only switch was last set
	unansweredSince time.Time        // first failed observation of a running postgres (zero: it answers)
	failsafeUntil   time.Time        // leader: every member promised not to take over until then
	failsafeLease   clientv3.LeaseID // the lease failsafeUntil was granted on
	promisedUntil   time.Time        // member: promised the leader not to take over until then
	deadCount       int
	syncChangeLSN   uint64
	leaderLSN       uint64
}

// New builds an agent; Run starts it.
func New(cfg config.Node, sec config.Secrets, srv *pg.Server, st *store.Store, log *slog.Logger, m *Metrics, dial *dialmap.Source) *Agent {
	p := engine.DefaultParams()
	p.SyncMode = cfg.SyncMode
	if cfg.LeaseTTL > 0 {
		p.FenceMargin = cfg.LeaseTTL / 4
		if p.FenceMargin < 500*time.Millisecond {
			p.FenceMargin = 500 * time.Millisecond
		}
	}
	a := &Agent{
		cfg: cfg, sec: sec, pg: srv, st: st, log: log, params: p, metrics: m, dialSrc: dial,
		http: &http.Client{Timeout: 500 * time.Millisecond},
		self: model.Member{
			ID:           cfg.ID,
			Region:       cfg.Region,
			APIURL:       fmt.Sprintf("http://%s", net.JoinHostPort(cfg.AdvertiseHost, strconv.Itoa(cfg.APIPort))),
			PostgresAddr: net.JoinHostPort(cfg.AdvertiseHost, strconv.Itoa(cfg.PGPort)),
		},
		state: "starting",
		// Unknown until an action configures it: primary_conninfo may
		// still name a former leader from before this process started.
		following: "?",
		// A previous run of this agent may have promised a leader (failsafe)
		// not to take over; that promise died with it, so keep one for a
		// lease TTL from the start.
		promisedUntil: time.Now().Add(cfg.LeaseTTL),
	}
	if cfg.ProxyPort > 0 {
		a.self.ProxyAddr = net.JoinHostPort(cfg.AdvertiseHost, strconv.Itoa(cfg.ProxyPort))
	}
	return a
}

// Member is what this node publishes about itself.
func (a *Agent) Member() model.Member { return a.self }

// Run drives the node until ctx ends, then shuts Postgres down cleanly,
// handing leadership over if it held it.
func (a *Agent) Run(ctx context.Context) error {
	storeCtx, stopStore := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); a.st.Run(storeCtx) }()
	ext, err := startExtWatchdog(a.log)
	if err != nil {
		a.log.Warn("no external watchdog: a hung agent's postgres is fenced only by its synchronous standbys", "err", err)
	}
	wg.Add(1)
	go func() { defer wg.Done(); a.fenceWatchdog(storeCtx, ext) }()
	wg.Add(1)
	go func() { defer wg.Done(); a.failsafeLoop(storeCtx) }()
	wg.Add(1)
	go func() { defer wg.Done(); a.events.run(storeCtx, a.st, a.log) }()
	defer func() { stopStore(); wg.Wait(); ext.stop() }()

	t := time.NewTicker(Tick)
	defer t.Stop()
	var registered clientv3.LeaseID // the session lease the member record was put on
	for {
		select {
		case <-ctx.Done():
			return a.shutdown()
		case <-t.C:
		case <-a.st.Changes():
		}
		if sess := a.st.Session(); sess != 0 && sess != registered && a.st.OK() {
			if err := a.st.Register(ctx, a.self); err != nil {
				a.log.Warn("registering member", "err", err)
			} else {
				registered = sess
			}
		}
		a.step(ctx)
	}
}

// fenceWatchdog backs up engine rule 1 when the main loop is stuck (a
// hung Postgres query, a slow action): if this node last saw itself as a
// writable leader and its lease is about to run out, it SIGKILLs the
// postmaster directly, which works even on a stopped process. Backends,
// including ones waiting for a synchronous commit, exit on postmaster
// death, so nothing is acknowledged after the lease expires.
//
// It also keeps the external watchdog (a separate process, see package
// watchdog) armed while this node is a writable leader, with the same
// deadline, so that a hung or dead agent cannot leave a zombie primary.
func (a *Agent) fenceWatchdog(ctx context.Context, ext *extWatchdog) {
	t := time.NewTicker(50 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		a.mu.Lock()
		primary := a.lastPG.Running && !a.lastPG.InRecovery
		a.mu.Unlock()
		lease, _ := a.st.Lease()
		left := a.safeLeft()
		if pid := a.pg.PID(); primary && lease != 0 && pid > 0 && left > a.params.FenceMargin/2 {
			ext.arm(left-a.params.FenceMargin/2, pid)
		} else if ext != nil {
			ext.disarm()
		}
		if !primary {
			continue
		}
		if left > a.params.FenceMargin/2 {
			continue
		}
		if pid := a.pg.PID(); pid > 0 {
			a.log.Error("lease about to expire and the main loop has not fenced: killing postgres", "pid", pid)
			_ = syscall.Kill(pid, syscall.SIGKILL)
			a.metrics.fences.Inc()
		}
		a.mu.Lock()
		a.lastPG.Running = false
		a.stoppedByUs = true
		a.mu.Unlock()
	}
}

// stepUnobservable acts when the local Postgres runs but answered nothing:
// it is killed when its lease runs out (rule 1) or when, as the leader, it
// has been hung for HangAfter (then the key goes to a standby).
//
// silent says the server answered nothing at all; other failures (a
// replication view that errors) keep the lease rule but not the hang
// clock, so a server that answers is never killed as hung.
func (a *Agent) stepUnobservable(ctx context.Context, obs engine.Observation, silent bool) {
	if !a.pg.Running() {
		return
	}
	now := time.Now()
	a.mu.Lock()
	switch {
	case !silent:
		a.unansweredSince = time.Time{}
	case a.unansweredSince.IsZero():
		a.unansweredSince = now
	}
	unanswered := time.Duration(0)
	if !a.unansweredSince.IsZero() {
		unanswered = now.Sub(a.unansweredSince)
	}
	wasPrimary := a.lastPG.Running && !a.lastPG.InRecovery
	a.mu.Unlock()
	lease, _ := a.st.Lease()
	snap := a.st.Snapshot()
	mine := snap.Leader == a.cfg.ID && lease != 0 && snap.LeaderLease == lease
	plan := engine.DecideUnobservable(wasPrimary, mine, unanswered, a.safeLeft(), a.params)
	for i, act := range plan.Actions {
		if act.Kind == engine.Wait {
			a.setState(waitState(plan.Role, act.Reason))
			continue
		}
		a.log.Warn("postgres not answering", "action", act.String())
		if err := a.exec(ctx, obs, act); err != nil {
			a.log.Error("acting on an unobservable postgres", "action", act.Kind, "err", err)
			return
		}
		a.recordActions(obs, plan.Actions[i:i+1]) // events.go
	}
}

// errUnanswered marks an observation that failed because the local
// Postgres answered nothing (see stepUnobservable).
var errUnanswered = errors.New("postgres did not answer")

// step is one observe-decide-act round.
func (a *Agent) step(ctx context.Context) {
	// Caller rule: decide on a view that includes our own last write. The
	// watch brings it within milliseconds; if it does not (cut from the
	// store right after writing), the view is treated as the store being
	// unreachable, so the engine changes nothing on the strength of a state
	// we already changed (a leader that deleted its own key must not see
	// it held and start Postgres as primary).
	if !a.st.CaughtUp() {
		wait := time.NewTimer(500 * time.Millisecond)
		for !a.st.CaughtUp() {
			select {
			case <-ctx.Done():
				wait.Stop()
				return
			case <-a.st.Changes():
				continue
			case <-wait.C:
			}
			break
		}
		wait.Stop()
	}
	stale := !a.st.CaughtUp()
	obs, err := a.observe(ctx)
	if stale {
		obs.StoreOK = false
	}
	if err != nil {
		a.log.Warn("observing", "err", err)
		a.stepUnobservable(ctx, obs, errors.Is(err, errUnanswered))
		return
	}
	a.mu.Lock()
	a.unansweredSince = time.Time{}
	a.mu.Unlock()
	plan := engine.Decide(obs, a.params)
	a.mu.Lock()
	changed := plan.String() != a.lastPlan.String()
	a.lastPlan, a.lastObs = plan, obs
	a.mu.Unlock()
	if changed {
		a.log.Info("plan", "role", plan.Role, "actions", plan.String())
	}
	a.metrics.observe(obs, plan)
	defer a.afterStep(ctx, plan)                     // settings, pending restarts, restart requests (settings.go)
	done := 0                                        // actions carried out, in order
	defer func() { a.recordStep(obs, plan, done) }() // events.go: the history
	for i, act := range plan.Actions {
		done = i
		if act.Kind == engine.Wait {
			a.setState(waitState(plan.Role, act.Reason))
			continue
		}
		if err := a.exec(ctx, obs, act); err != nil {
			if errors.Is(err, store.ErrLostRace) {
				a.log.Info("lost a store race; observing again", "action", act.Kind)
			} else {
				a.log.Error("action failed", "action", act.String(), "err", err)
			}
			return
		}
	}
	done = len(plan.Actions)
}

func waitState(role, reason string) string {
	switch role {
	case model.RolePrimary, model.RoleReplica:
		return "running"
	}
	if strings.Contains(reason, "store unreachable") {
		return "store-unreachable"
	}
	return "waiting"
}

func (a *Agent) setState(s string) {
	a.mu.Lock()
	a.state = s
	a.mu.Unlock()
}

func (a *Agent) observe(ctx context.Context) (engine.Observation, error) {
	snap := a.st.Snapshot()
	lease, left := a.st.Lease()
	o := engine.Observation{
		Self:             a.cfg.ID,
		Region:           a.cfg.Region,
		StoreOK:          a.st.OK(),
		Initialized:      snap.Info != nil,
		Leader:           snap.Leader,
		LeaderRev:        snap.LeaderRev,
		LeaderMine:       snap.Leader == a.cfg.ID && lease != 0 && snap.LeaderLease == lease,
		Sync:             snap.Sync,
		SyncRev:          snap.SyncRev,
		Members:          snap.Members,
		Registered:       snap.Registered,
		Switchover:       snap.Switchover,
		LeaseLeft:        left,
		FailsafeLeft:     a.failsafeLeft(),
		FailsafePromised: a.promised(),
		Cascade:          snap.Cascade[a.cfg.Region],

		CascadeRegions:    snap.Cascade,
		RegisteredRegions: snap.RegisteredRegions,
	}
	if a.lastObs.LeaderMine && !o.LeaderMine {
		a.log.Warn("leadership lost in the store view", "store_leader", snap.Leader, "key_lease", fmt.Sprintf("%x", snap.LeaderLease), "own_lease", fmt.Sprintf("%x", lease), "lease_left", left, "store_ok", o.StoreOK)
	}
	o.PrimaryRegion = a.cfg.PrimaryRegion
	if snap.Info != nil {
		o.PrimaryRegion = snap.Info.PrimaryRegion
		o.InitializedBy = snap.Info.InitializedBy
		o.BootstrapDone = snap.Info.SystemID != ""
		o.InfoRev = snap.InfoRev
	}
	if snap.Switchover != nil {
		o.SwitchoverAge = time.Since(snap.Switchover.RequestedAt)
	}

	sctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	running := a.pg.Running()
	var ps pg.Status
	if running {
		var err error
		ps, err = a.pg.Status(sctx)
		if err != nil {
			if !fileExists(filepath.Join(a.cfg.DataDir, "pgdata", "standby.signal")) {
				return o, fmt.Errorf("reading postgres status: %w: %w", errUnanswered, err)
			}
			// A standby that does not accept connections is still
			// recovering, possibly stuck (e.g. its WAL diverged from the new
			// leader's timeline). Observe it as a standby that is not
			// streaming, so the engine's stuck-standby rule can rewind it.
			a.log.Debug("standby not accepting connections", "err", err)
			ps = pg.Status{Running: true, InRecovery: true}
		}
	}
	now := time.Now()
	a.mu.Lock()
	// Crash accounting: a server that was running and is gone without us
	// stopping it counts as a failed start.
	if a.wasRunning && !ps.Running && !a.stoppedByUs {
		a.restarts++
		a.lastStart = now
		a.log.Warn("postgres stopped unexpectedly", "restarts", a.restarts)
	}
	if ps.Running && !a.wasRunning {
		a.runningSince = now
	}
	if ps.Running && now.Sub(a.runningSince) > 30*time.Second {
		a.restarts = 0
	}
	a.wasRunning = ps.Running
	if ps.Running {
		a.stoppedByUs = false
	}
	// Streaming counts for the stuck-standby rule only once it has lasted:
	// a receiver that reconnects and fails again (WAL diverged from the
	// new timeline) shows "streaming" for a moment on every retry.
	switch {
	case !ps.Streaming:
		a.streamingSince = time.Time{}
	case a.streamingSince.IsZero():
		a.streamingSince = now
	}
	if (ps.Streaming && now.Sub(a.streamingSince) >= 2*time.Second) || !ps.InRecovery || a.lastStreaming.IsZero() {
		a.lastStreaming = now
	}
	if ps.Streaming && now.Sub(a.streamingSince) >= 10*time.Second {
		a.rewindFailedOn = "" // healthy again: a future stall starts with a rewind
	}
	a.lastPG = ps
	o.Following = a.following
	o.Restarts = a.restarts
	o.SinceStart = now.Sub(a.lastStart)
	o.NotStreamingFor = now.Sub(a.lastStreaming)
	o.RewindFailed = a.rewindFailedOn != "" && a.rewindFailedOn == snap.Leader
	o.SyncChangeLSN = a.syncChangeLSN
	a.mu.Unlock()

	o.Running, o.InRecovery, o.Timeline, o.LSN, o.Streaming = ps.Running, ps.InRecovery, ps.Timeline, ps.CurrentLSN, ps.Streaming
	if free := a.pg.DiskFree(); free >= 0 {
		o.DiskKnown, o.DiskFree = true, free
	}
	o.ReadOnly = a.pg.ReadOnly()
	switch {
	case !a.pg.Initialized():
		o.Data = engine.DataEmpty
	case ps.Running && ps.InRecovery:
		o.Data = engine.DataStandby
	case ps.Running:
		o.Data = engine.DataPrimary
	case fileExists(filepath.Join(a.cfg.DataDir, "pgdata", "standby.signal")):
		o.Data = engine.DataStandby
	default:
		o.Data = engine.DataPrimary
	}
	if !ps.Running && o.Data != engine.DataEmpty {
		if c, err := a.pg.Control(sctx); err == nil {
			o.Timeline, o.LSN = c.Timeline, c.CheckpointLSN
		}
	}

	if o.LeaderMine && ps.Running && !ps.InRecovery {
		stb, err := a.pg.Replication(sctx)
		if err != nil {
			return o, fmt.Errorf("reading pg_stat_replication: %w", err)
		}
		for _, s := range stb {
			o.Standbys = append(o.Standbys, engine.Standby{ID: s.AppName, Streaming: s.State == "streaming", FlushLSN: s.FlushLSN})
		}
		o.SyncNames = parseSyncNames(ps.SyncStandbyNames)
		if o.Slots, err = a.pg.Slots(sctx); err != nil {
			return o, fmt.Errorf("listing slots: %w", err)
		}
	}

	// Election facts, only when they matter.
	if o.StoreOK && snap.Info != nil && snap.Leader == "" {
		o.Peers = a.fetchPeers(sctx, snap)
	}
	// A dead leader is a fact we can learn at once from refused connections.
	if o.StoreOK && snap.Leader != "" && snap.Leader != a.cfg.ID && ps.Running && !ps.Streaming {
		o.LeaderDead = a.leaderDead(snap)
	} else {
		a.mu.Lock()
		a.deadCount = 0
		a.mu.Unlock()
	}
	return o, nil
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

// parseSyncNames extracts member names from `ANY 1 ("a", "b")`.
func parseSyncNames(v string) []string {
	i, j := strings.IndexByte(v, '('), strings.LastIndexByte(v, ')')
	if i < 0 || j < i {
		v = strings.TrimSpace(v)
		if v == "" {
			return nil
		}
		return []string{strings.Trim(v, `"`)}
	}
	var out []string
	for _, p := range strings.Split(v[i+1:j], ",") {
		if p = strings.Trim(strings.TrimSpace(p), `"`); p != "" {
			out = append(out, p)
		}
	}
	return out
}

// leaderDead probes the leader's Postgres and API ports. Only a refused
// connection counts (the process is gone and the host answered), never a
// timeout, and it takes two rounds in a row.
func (a *Agent) leaderDead(snap store.Snapshot) bool {
	m, ok := snap.Members[snap.Leader]
	refused := func(addr string) bool { return probeRefused(addr, 300*time.Millisecond) }
	dead := false
	if ok {
		api := strings.TrimPrefix(a.dialSrc.Map().URL(m.APIURL), "http://")
		dead = refused(a.dialSrc.Map().Addr(m.PostgresAddr)) && refused(api)
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if dead {
		a.deadCount++
	} else {
		a.deadCount = 0
	}
	return a.deadCount >= 2
}

func (a *Agent) fetchPeers(ctx context.Context, snap store.Snapshot) map[string]engine.Peer {
	peers := map[string]engine.Peer{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, id := range snap.Sync.Members {
		m, ok := snap.Members[id]
		if id == a.cfg.ID || !ok {
			continue
		}
		wg.Add(1)
		go func(m model.Member) {
			defer wg.Done()
			st, err := fetchStatus(ctx, a.http, a.dialSrc.Map().URL(m.APIURL))
			p := engine.Peer{ID: m.ID, Region: m.Region}
			if err == nil {
				p.Reachable = true
				p.InRecovery = st.Role != model.RolePrimary
				p.Streaming = st.Streaming
				p.Frozen = st.Upstream == "" && st.Role != model.RolePrimary
				p.Timeline = st.Timeline
				p.LSN = st.LSNNum
			}
			mu.Lock()
			peers[m.ID] = p
			mu.Unlock()
		}(m)
	}
	wg.Wait()
	return peers
}

func (a *Agent) connInfo(id string, user, password string) (pg.ConnInfo, error) {
	snap := a.st.Snapshot()
	m, ok := snap.Members[id]
	if !ok {
		return pg.ConnInfo{}, fmt.Errorf("member %s has not published its address", id)
	}
	host, port, err := net.SplitHostPort(a.dialSrc.Map().Addr(m.PostgresAddr))
	if err != nil {
		return pg.ConnInfo{}, fmt.Errorf("member %s address %q: %w", id, m.PostgresAddr, err)
	}
	p, err := strconv.Atoi(port)
	if err != nil {
		return pg.ConnInfo{}, fmt.Errorf("member %s port %q: %w", id, port, err)
	}
	return pg.ConnInfo{Host: host, Port: p, User: user, Password: password}, nil
}

func (a *Agent) replConn(id string) (*pg.ConnInfo, error) {
	if id == "" {
		return nil, nil
	}
	ci, err := a.connInfo(id, "replicator", a.sec.Replication)
	if err != nil {
		return nil, err
	}
	return &ci, nil
}

func (a *Agent) setFollowing(id string) {
	a.mu.Lock()
	a.following = id
	a.mu.Unlock()
}

func (a *Agent) markStart() {
	a.mu.Lock()
	a.lastStart = time.Now()
	a.mu.Unlock()
}

func (a *Agent) startFailed(err error) error {
	a.mu.Lock()
	a.restarts++
	a.lastStart = time.Now()
	a.mu.Unlock()
	return err
}

func (a *Agent) stopPG(ctx context.Context, mode string) error {
	a.mu.Lock()
	a.stoppedByUs = true
	a.mu.Unlock()
	return a.pg.Stop(ctx, mode)
}

// exec carries out one action. Errors are wrapped with the action.
func (a *Agent) exec(ctx context.Context, o engine.Observation, act engine.Action) error {
	slot := engine.SlotName(a.cfg.ID)
	if act.Target != "" && act.Target != o.Leader && o.Leader != "" {
		slot = "" // cascading from a regional hub, which keeps no slots
	}
	a.log.Debug("exec", "action", act.String())
	if err := a.beforeStart(ctx, act.Kind); err != nil { // TLS files, petrel-user.conf (settings.go)
		return err
	}
	switch act.Kind {
	case engine.Bootstrap:
		a.setState("bootstrapping")
		if !o.Initialized {
			info := model.ClusterInfo{Name: a.cfg.Cluster, PrimaryRegion: a.cfg.PrimaryRegion, InitializedBy: a.cfg.ID, InitializedAt: time.Now().UTC()}
			if err := a.st.ClaimInit(ctx, info); err != nil {
				return err
			}
			a.log.Info("claimed cluster initialization")
		}
		if err := a.st.AcquireLeader(ctx, a.cfg.ID, o.SyncRev); err != nil {
			return err
		}
		if a.pg.Initialized() {
			// Our data survived a store wipe (or a crash right after
			// claiming): start it as the primary.
			if err := a.pg.ConfigurePrimary(); err != nil {
				return err
			}
			a.markStart()
			return a.pg.Start(ctx)
		}
		bctx, cancel := context.WithTimeout(ctx, 3*time.Minute)
		defer cancel()
		a.markStart()
		if err := a.pg.Bootstrap(bctx, a.sec); err != nil {
			return fmt.Errorf("bootstrapping postgres: %w", err)
		}
		a.metrics.promotions.Inc()
		a.log.Info("bootstrapped a new cluster")
	case engine.RecordBootstrap:
		// The info's content comes from the cache; the CAS on the observed
		// revision refuses it if the key changed since the observation.
		snap := a.st.Snapshot()
		c, err := a.pg.Control(ctx)
		if err != nil {
			return err
		}
		if c.SystemID == "" || snap.Info == nil {
			return errors.New("recording the bootstrap: no system identifier in pg_controldata")
		}
		info := *snap.Info
		info.SystemID = c.SystemID
		if err := a.st.RecordBootstrap(ctx, info, act.Rev); err != nil {
			return err
		}
		a.log.Info("recorded the cluster's system identifier: no member will run initdb again", "system_id", c.SystemID)
	case engine.Clone:
		a.setState("cloning")
		src, err := a.connInfo(act.Target, "replicator", a.sec.Replication)
		if err != nil {
			return err
		}
		cctx, cancel := context.WithTimeout(ctx, 30*time.Minute)
		defer cancel()
		if err := a.pg.BaseBackup(cctx, src); err != nil {
			return fmt.Errorf("cloning from %s: %w", act.Target, err)
		}
		if err := a.pg.ConfigureStandby(&src, slot, a.cfg.ID); err != nil {
			return err
		}
		a.setFollowing(act.Target)
		a.markStart()
		if err := a.pg.Start(ctx); err != nil {
			return a.startFailed(err)
		}
		a.log.Info("cloned and following", "leader", act.Target)
	case engine.StartStandby:
		a.setState("starting")
		up, err := a.replConn(act.Target)
		if err != nil {
			return err
		}
		if err := a.pg.ConfigureStandby(up, slot, a.cfg.ID); err != nil {
			return err
		}
		a.setFollowing(act.Target)
		a.markStart()
		if err := a.pg.Start(ctx); err != nil {
			return a.startFailed(err)
		}
	case engine.StartPrimary:
		a.setState("starting")
		if err := a.pg.ConfigurePrimary(); err != nil {
			return err
		}
		a.setFollowing("")
		a.markStart()
		if err := a.pg.Start(ctx); err != nil {
			return a.startFailed(err)
		}
	case engine.Follow:
		up, err := a.replConn(act.Target)
		if err != nil {
			return err
		}
		if err := a.pg.ConfigureStandby(up, slot, a.cfg.ID); err != nil {
			return err
		}
		if err := a.pg.Reload(ctx); err != nil {
			return err
		}
		a.setFollowing(act.Target)
		a.mu.Lock()
		a.lastStreaming = time.Now() // give the new upstream a fair chance
		a.mu.Unlock()
		a.log.Info("following", "leader", act.Target)
	case engine.AcquireLeader:
		snap := a.st.Snapshot()
		if sw := snap.Switchover; sw != nil && sw.AllowSecondaryRegion && snap.Info != nil && a.cfg.Region != snap.Info.PrimaryRegion {
			info := *snap.Info
			info.PrimaryRegion = a.cfg.Region
			if err := a.st.AcquireLeaderMovingRegion(ctx, a.cfg.ID, act.Rev, info, snap.InfoRev); err != nil {
				return err
			}
			a.log.Warn("primary region moved", "to", a.cfg.Region)
		} else if err := a.st.AcquireLeader(ctx, a.cfg.ID, act.Rev); err != nil {
			return err
		}
		a.log.Info("acquired leadership", "reason", act.Reason)
	case engine.Promote:
		a.setState("promoting")
		// Start with no synchronous standby (or the strict placeholder):
		// the leader adds standbys as they stream.
		if err := a.pg.SetSynchronousStandbys(ctx, syncValueFor(a.params.SyncMode)); err != nil {
			return err
		}
		if err := a.pg.Promote(ctx); err != nil {
			return fmt.Errorf("promoting: %w", err)
		}
		if err := a.pg.ConfigurePrimary(); err != nil {
			return err
		}
		a.setFollowing("")
		a.metrics.promotions.Inc()
		a.log.Info("promoted to primary")
	case engine.Fence:
		a.setState("fenced")
		a.metrics.fences.Inc()
		a.log.Warn("fencing postgres", "reason", act.Reason)
		if err := a.stopPG(ctx, "immediate"); err != nil {
			return fmt.Errorf("fencing: %w", err)
		}
		a.setFollowing("")
	case engine.Kill:
		a.setState("fenced")
		a.metrics.fences.Inc()
		a.log.Warn("killing postgres", "reason", act.Reason)
		if pid := a.pg.PID(); pid > 0 {
			if err := watchdog.KillPostgres(pid); err != nil {
				return fmt.Errorf("killing postgres: %w", err)
			}
		}
		a.mu.Lock()
		a.stoppedByUs = true
		a.lastPG.Running = false
		a.unansweredSince = time.Time{}
		a.mu.Unlock()
		a.setFollowing("")
	case engine.SetReadOnly:
		on := act.Value == "on"
		if on {
			a.log.Warn("turning new transactions read-only", "reason", act.Reason)
			a.mu.Lock()
			a.readOnlyWhy = act.Reason
			a.mu.Unlock()
		} else {
			a.log.Info("writes allowed again", "reason", act.Reason)
		}
		return a.pg.SetReadOnly(ctx, on)
	case engine.ReleaseLeader:
		return a.st.ReleaseLeader(ctx)
	case engine.RevokeLeader:
		a.log.Warn("revoking leader key", "leader", o.Leader, "reason", act.Reason)
		return a.st.RevokeLeader(ctx, act.Rev)
	case engine.Rewind:
		a.setState("rewinding")
		if a.pg.Running() {
			if err := a.stopPG(ctx, "fast"); err != nil {
				return err
			}
		}
		src, err := a.connInfo(act.Target, "postgres", a.sec.Superuser)
		if err != nil {
			return err
		}
		rctx, cancel := context.WithTimeout(ctx, 10*time.Minute)
		defer cancel()
		if err := a.pg.Rewind(rctx, src); err != nil {
			a.mu.Lock()
			a.rewindFailedOn = act.Target
			a.mu.Unlock()
			return fmt.Errorf("rewinding against %s: %w", act.Target, err)
		}
		up, err := a.replConn(act.Target)
		if err != nil {
			return err
		}
		if err := a.pg.ConfigureStandby(up, slot, a.cfg.ID); err != nil {
			return err
		}
		a.setFollowing(act.Target)
		a.markStart()
		if err := a.pg.Start(ctx); err != nil {
			return a.startFailed(err)
		}
		a.mu.Lock()
		a.lastStreaming = time.Now()
		if strings.HasPrefix(act.Reason, "not streaming") {
			// Rewound because it could not stream: if it still cannot
			// (pg_rewind may find nothing to do while the local WAL past the
			// last checkpoint is unusable), the next step is a re-clone.
			a.rewindFailedOn = act.Target
		}
		a.mu.Unlock()
		a.log.Info("rewound and following", "leader", act.Target)
	case engine.Reclone:
		a.setState("recloning")
		if err := a.stopPG(ctx, "immediate"); err != nil {
			return err
		}
		if err := a.pg.Wipe(); err != nil {
			return err
		}
		a.mu.Lock()
		a.rewindFailedOn, a.restarts = "", 0
		a.mu.Unlock()
		return a.exec(ctx, o, engine.Action{Kind: engine.Clone, Target: act.Target})
	case engine.SetSyncRecord:
		rec := model.Sync{Leader: a.cfg.ID, Members: act.Members, K: 1}
		if err := a.st.SetSync(ctx, rec, act.Rev); err != nil {
			return err
		}
		a.log.Info("sync record", "members", act.Members)
	case engine.SetSyncNames:
		if err := a.pg.SetSynchronousStandbys(ctx, act.Value); err != nil {
			return err
		}
		// The record may follow a change only once the members flushed
		// past this point (engine.syncActions).
		a.mu.Lock()
		a.syncChangeLSN = o.LSN
		a.mu.Unlock()
		a.log.Info("synchronous_standby_names", "value", act.Value)
	case engine.CreateSlot:
		return a.pg.CreateSlot(ctx, act.Target)
	case engine.DropSlot:
		a.log.Info("dropping slot of departed member", "slot", act.Target)
		return a.pg.DropSlot(ctx, act.Target)
	case engine.SwitchoverStop:
		a.setState("switching-over")
		snap := a.st.Snapshot()
		if snap.Switchover == nil {
			return nil
		}
		a.log.Info("switchover: stopping to hand over", "target", act.Target)
		if err := a.stopPG(ctx, "fast"); err != nil {
			return err
		}
		c, err := a.pg.Control(ctx)
		if err != nil {
			return err
		}
		sw := *snap.Switchover
		sw.Target, sw.StoppedLSN = act.Target, c.CheckpointLSN
		if err := a.st.CompleteSwitchover(ctx, sw, snap.SwitchoverRev); err != nil {
			return err
		}
		a.log.Info("switchover: handed over", "target", act.Target, "stopped_lsn", pg.FormatLSN(c.CheckpointLSN))
	case engine.ClearSwitchover:
		snap := a.st.Snapshot()
		if snap.Switchover == nil {
			return nil
		}
		a.log.Warn("clearing switchover request", "reason", act.Reason)
		return a.st.ClearSwitchover(ctx, snap.SwitchoverRev)
	default:
		return fmt.Errorf("unknown action %q", act.Kind)
	}
	return nil
}

func syncValueFor(mode string) string {
	if mode == "strict" {
		return fmt.Sprintf("ANY 1 (%q)", engine.StrictPlaceholder)
	}
	return ""
}

// shutdown stops Postgres cleanly. A leader stops first (so its standbys
// receive everything) and then releases the key, so a synchronous standby
// takes over without waiting for the lease.
func (a *Agent) shutdown() error {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	a.setState("stopping")
	snap := a.st.Snapshot()
	lease, _ := a.st.Lease()
	leader := snap.Leader == a.cfg.ID && snap.LeaderLease == lease && lease != 0
	// A leader hands over like a planned switchover: after a fast
	// shutdown its walsenders have sent everything, so the most caught-up
	// streaming primary-region standby holds every commit once it has
	// received the shutdown checkpoint, whether or not it was synchronous.
	target := ""
	if leader {
		a.mu.Lock()
		obs := a.lastObs
		a.mu.Unlock()
		best := uint64(0)
		for _, sb := range obs.Standbys {
			if m, ok := snap.Members[sb.ID]; ok && sb.Streaming && m.Region == obs.PrimaryRegion && (target == "" || sb.FlushLSN > best) {
				target, best = sb.ID, sb.FlushLSN
			}
		}
	}
	err := a.stopPG(ctx, "fast")
	if leader {
		handed := false
		if target != "" && err == nil && snap.Switchover == nil {
			if c, cerr := a.pg.Control(ctx); cerr == nil {
				sw := model.Switchover{From: a.cfg.ID, Target: target, StoppedLSN: c.CheckpointLSN, RequestedAt: time.Now().UTC()}
				if herr := a.st.CompleteSwitchover(ctx, sw, 0); herr == nil {
					handed = true
					a.log.Info("shutdown: handed leadership over", "target", target, "stopped_lsn", pg.FormatLSN(c.CheckpointLSN))
				} else {
					a.log.Warn("shutdown: handing over", "err", herr)
				}
			}
		}
		if !handed {
			if rerr := a.st.ReleaseLeader(ctx); rerr != nil {
				a.log.Warn("releasing leadership on shutdown", "err", rerr)
			}
		}
	}
	// The member record (and any leader key left) goes at once.
	a.st.Revoke(ctx)
	a.pg.Close()
	a.setState("stopped")
	if err != nil {
		return fmt.Errorf("stopping postgres: %w", err)
	}
	return nil
}

// probeRefused says whether nothing listens at addr: the connection is
// refused, or it is accepted and then reset before the peer says a word
// (what a relay in front of a dead port does, such as the local world's
// links: they accept, fail to dial on, and reset). Postgres and the API
// never speak first nor hang up on a silent new client, so a reset or
// EOF within the wait means a dead port; a timeout means alive (or slow).
func probeRefused(addr string, timeout time.Duration) bool {
	c, err := net.DialTimeout("tcp", addr, timeout)
	if err != nil {
		return errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ECONNRESET)
	}
	defer c.Close()
	_ = c.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
	_, err = c.Read(make([]byte, 1))
	return errors.Is(err, syscall.ECONNRESET) || errors.Is(err, io.EOF)
}
