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
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/petrel-db/petrel/internal/api"
	"github.com/petrel-db/petrel/internal/backup"
	"github.com/petrel-db/petrel/internal/config"
	"github.com/petrel-db/petrel/internal/dialmap"
	"github.com/petrel-db/petrel/internal/engine"
	"github.com/petrel-db/petrel/internal/model"
	"github.com/petrel-db/petrel/internal/peerauth"
	"github.com/petrel-db/petrel/internal/pg"
	"github.com/petrel-db/petrel/internal/store"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// Tick is how often the agent observes when nothing wakes it earlier.
const Tick = 200 * time.Millisecond

// Agent is one node's supervisor.
type Agent struct {
	cfg     config.Node
	sec     secretsState // the passwords in use (rotation.go)
	pg      *pg.Server
	st      *store.Store
	log     *slog.Logger
	params  engine.Params
	self    model.Member
	metrics *Metrics
	ident   *api.Identity // the API certificate (identity.go)
	http    *api.Client   // peers' /status during elections
	lagHTTP *api.Client   // the leader's /status for lag (see measureLag)
	// failsafeKeyV is the failsafe message key, derived from the cluster
	// secret once it is known (identity.go).
	failsafeKeyV atomic.Pointer[[]byte]
	// clusterSecretV is the cluster secret itself (rotation.go opens the
	// rotated passwords with a key derived from it).
	clusterSecretV atomic.Pointer[[]byte]
	rotMu          sync.Mutex         // one rotation step at a time
	rotChecked     bool               // the main loop: rotations looked at before acting (step)
	rotKick        chan struct{}      // the main loop heard of a store change (rotation.go)
	fsVerifier     *peerauth.Verifier // failsafe requests: MAC, target, nonce, time
	dialSrc        *dialmap.Source    // rewrites addresses of other members (local world links); nil on real hosts

	conf     confState     // cluster settings and pending restarts (settings.go)
	tls      tlsState      // the TLS check of a running server (tls.go)
	events   eventLog      // the cluster history this node writes (events.go)
	lagCache lagCache      // GET /status: one lag measurement at a time (status.go)
	sessions sessionsCache // GET /sessions: one read at a time (sessions.go)
	// archiver moves WAL to the backup store (archive.go); nil: none.
	archiver *backup.Archiver

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
	lastRewind      rewindRecord     // how the last rewind ended (engine.Observation.LastRewind)
	readOnlyWhy     string           // reason the read-only switch was last set
	unansweredSince time.Time        // first failed observation of a running postgres (zero: it answers)
	failsafeUntil   time.Time        // leader: every member promised not to take over until then
	failsafeLease   clientv3.LeaseID // the lease failsafeUntil was granted on
	promisedUntil   time.Time        // member: promised the leader not to take over until then
	deadCount       int
	syncChangeLSN   uint64
	leaderLSN       uint64
}

// rewindRecord is how the last rewind ended, against whom and when.
type rewindRecord struct {
	leader string
	result engine.RewindResult
	cause  engine.Cause
	at     time.Time
	// failures: rewinds in a row that found the source unavailable
	failures int
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
		cfg: cfg, pg: srv, st: st, log: log, params: p, metrics: m, dialSrc: dial,
		ident:      api.NewIdentity(cfg.Cluster, cfg.ID),
		fsVerifier: peerauth.NewVerifier(cfg.ID, failsafeMaxSkew),
		self: model.Member{
			ID:           cfg.ID,
			Region:       cfg.Region,
			APIURL:       fmt.Sprintf("https://%s", net.JoinHostPort(cfg.AdvertiseHost, strconv.Itoa(cfg.APIPort))),
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
	a.sec.configured, a.sec.cur = sec, sec
	a.rotKick = make(chan struct{}, 1)
	a.http = a.ident.Client(api.ClientOptions{Timeout: 500 * time.Millisecond})
	// Across a far region's link a request takes a round trip or two, more
	// than the election's 500 ms budget allows under load.
	a.lagHTTP = a.ident.Client(api.ClientOptions{Timeout: 2 * time.Second})
	a.loadIdentity()
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
	wg.Add(1)
	go func() { defer wg.Done(); a.rotationLoop(storeCtx) }()
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
			// The rotation loop hears of store changes too (rotation.go):
			// a rotation's phase change reaches it within the watch's delay.
			select {
			case a.rotKick <- struct{}{}:
			default:
			}
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
		w := engine.DecideWatchdog(primary, lease != 0, a.safeLeft(), a.params)
		if pid := a.pg.PID(); w.Arm > 0 && pid > 0 {
			ext.arm(w.Arm, pid)
		} else if ext != nil {
			ext.disarm()
		}
		if !w.Kill {
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
func (a *Agent) stepUnobservable(ctx context.Context, v view, silent bool) {
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
	plan := engine.DecideUnobservable(wasPrimary, v.obs.LeaderMine, unanswered, a.safeLeft(), a.params)
	if !plan.Idle() {
		a.log.Warn("postgres not answering", "plan", plan.String())
	}
	done, err := a.execPlan(ctx, v, plan)
	a.recordActions(v.obs, plan.Actions[:done]) // events.go
	if err != nil {
		a.log.Error("acting on an unobservable postgres", "err", err)
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
	if !a.rotChecked {
		a.rotChecked = a.checkRotations(ctx, map[string]string{})
	}
	v, err := a.observe(ctx)
	if stale {
		v.obs.StoreOK = false
	}
	if err != nil {
		a.log.Warn("observing", "err", err)
		a.stepUnobservable(ctx, v, errors.Is(err, errUnanswered))
		return
	}
	a.mu.Lock()
	a.unansweredSince = time.Time{}
	a.mu.Unlock()
	plan := engine.Decide(v.obs, a.params)
	a.mu.Lock()
	changed := plan.String() != a.lastPlan.String()
	a.lastPlan, a.lastObs = plan, v.obs
	a.mu.Unlock()
	if changed {
		a.log.Info("plan", "role", plan.Role, "actions", plan.String())
	}
	a.metrics.observe(v.obs, plan)
	a.archiveStep(v.obs)   // archive.go: who archives, the engine's DecideArchive
	defer a.afterStep(ctx) // pg_hba.conf, TLS, settings, pending restarts (settings.go)
	done, err := a.execPlan(ctx, v, plan)
	a.recordStep(v.obs, plan, done) // events.go: the history
	if err != nil {
		if errors.Is(err, store.ErrLostRace) {
			a.log.Info("lost a store race; observing again", "err", err)
		} else {
			a.log.Error("action failed", "err", err)
		}
	}
}

// execPlan carries out plan's actions in order and stops at the first
// failure (engine caller rule 2), which it returns with the action; done
// is how many actions were carried out before it.
func (a *Agent) execPlan(ctx context.Context, v view, plan engine.Plan) (done int, err error) {
	for i, act := range plan.Actions {
		if act.Kind == engine.Wait {
			a.setState(waitState(plan.Role, act.Cause))
			continue
		}
		if err := a.exec(ctx, v, act); err != nil {
			return i, fmt.Errorf("%s: %w", act, err)
		}
	}
	return len(plan.Actions), nil
}

func waitState(role string, cause engine.Cause) string {
	switch {
	case role == model.RolePrimary, role == model.RoleReplica:
		return "running"
	case cause == engine.CauseStoreUnreachable:
		return "store-unreachable"
	}
	return "waiting"
}

func (a *Agent) setState(s string) {
	a.mu.Lock()
	a.state = s
	a.mu.Unlock()
}

// observe reads the store's cache once (one revision: engine caller rule
// 1) and the local Postgres, and returns both the snapshot and the
// Observation built from them.
func (a *Agent) observe(ctx context.Context) (view, error) {
	snap := a.st.Snapshot()
	v := view{snap: snap}
	o, err := a.observeSnap(ctx, snap)
	v.obs = o
	return v, err
}

func (a *Agent) observeSnap(ctx context.Context, snap store.Snapshot) (engine.Observation, error) {
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
		SwitchoverRev:    snap.SwitchoverRev,
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
	if r, ok := snap.Restarts[a.cfg.ID]; ok {
		o.Restart, o.RestartRev = &engine.RestartRequest{InPlace: r.Request.InPlace, Force: r.Request.Force}, r.Rev
		o.PendingRestart = a.conf.pendingRestart()
		// Read only while a restart is asked for: what a restart applies.
		var err error
		if o.PetrelSettings, err = a.pg.OwnSettings(); err != nil {
			a.log.Warn("reading petrel's settings files", "err", err)
		}
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
		a.lastRewind = rewindRecord{} // healthy again: a future stall starts with a rewind
	}
	a.lastPG = ps
	o.Following = a.following
	o.Restarts = a.restarts
	o.SinceStart = now.Sub(a.lastStart)
	o.NotStreamingFor = now.Sub(a.lastStreaming)
	if lr := a.lastRewind; lr.result != engine.RewindNone && lr.leader == snap.Leader {
		o.LastRewind = engine.RewindOutcome{Result: lr.result, Cause: lr.cause, Ago: now.Sub(lr.at), Failures: lr.failures}
	}
	if a.pg.RewindInterrupted() {
		// A rewind that never finished, by this run of the agent or one
		// killed while pg_rewind ran: the data directory is not usable,
		// and a new pg_rewind would find nothing to do. Only a re-clone
		// (which clears the marker) recovers it.
		o.LastRewind = engine.RewindOutcome{Result: engine.RewindImpossible, Cause: engine.CauseFormerPrimary}
	}
	o.SyncChangeLSN = a.syncChangeLSN
	a.mu.Unlock()

	o.Running, o.InRecovery, o.Timeline, o.LSN, o.Streaming = ps.Running, ps.InRecovery, ps.Timeline, ps.CurrentLSN, ps.Streaming
	if o.Running && o.InRecovery && !o.Streaming {
		o.UpstreamLacksWAL = a.pg.UpstreamLacksWAL()
	}
	if free := a.pg.DiskFree(); free >= 0 {
		o.DiskKnown, o.DiskFree = true, free
	}
	o.ReadOnly = a.pg.ReadOnly()
	o.BootstrapUnfinished = a.pg.BootstrapUnfinished()
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
	// A former primary rewinds only against a leader done promoting.
	if o.StoreOK && snap.Leader != "" && snap.Leader != a.cfg.ID && o.Data == engine.DataPrimary {
		o.LeaderPromoted = a.leaderPromoted(sctx, snap)
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
		apiAddr := strings.TrimPrefix(a.dialSrc.Map().URL(m.APIURL), "https://")
		dead = refused(a.dialSrc.Map().Addr(m.PostgresAddr)) && refused(apiAddr)
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

// leaderPromoted asks the leader's API whether it reports itself the
// writable primary.
func (a *Agent) leaderPromoted(ctx context.Context, snap store.Snapshot) bool {
	m, ok := snap.Members[snap.Leader]
	if !ok {
		return false
	}
	st, err := fetchStatus(ctx, a.http, a.dialSrc.Map().URL(m.APIURL), m.ID)
	return err == nil && st.Role == model.RolePrimary
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
			st, err := fetchStatus(ctx, a.http, a.dialSrc.Map().URL(m.APIURL), m.ID)
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

func (a *Agent) connInfo(snap store.Snapshot, id string, user, password string) (pg.ConnInfo, error) {
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

func (a *Agent) replConn(snap store.Snapshot, id string) (*pg.ConnInfo, error) {
	if id == "" {
		return nil, nil
	}
	ci, err := a.connInfo(snap, id, "replicator", a.secrets().Replication)
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

// shutdown is the end of Run: the agent observes and decides with
// ShuttingDown set and carries the plans out until the engine has nothing
// left to do (a leader hands over or lets the key go, Postgres stops
// cleanly), a few rounds at most; then both leases go at once.
func (a *Agent) shutdown() error {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	a.setState("stopping")
	var err error
	for range 4 {
		var v view
		if v, err = a.observe(ctx); err != nil {
			// Postgres did not answer: decide on what it last was, so that
			// a running server is stopped before the key goes.
			a.log.Warn("shutdown: observing", "err", err)
			a.mu.Lock()
			v.obs.Running, v.obs.InRecovery = a.pg.Running(), a.lastPG.InRecovery
			a.mu.Unlock()
		}
		if !a.st.CaughtUp() {
			v.obs.StoreOK = false // as in step: never on a view before our own write
		}
		v.obs.ShuttingDown = true
		plan := engine.Decide(v.obs, a.params)
		if plan.Idle() {
			break
		}
		a.log.Info("shutdown", "plan", plan.String())
		var done int
		done, err = a.execPlan(ctx, v, plan)
		a.recordActions(v.obs, plan.Actions[:done]) // events.go: the hand-over, the release
		if err != nil {
			a.log.Warn("shutdown", "err", err)
		}
	}
	// The member record (and any leader key left) goes at once.
	a.st.Revoke(ctx)
	a.pg.Close()
	a.setState("stopped")
	if a.pg.Running() {
		return fmt.Errorf("stopping postgres: still running after the shutdown plans: %w", err)
	}
	return nil
}

// answers says whether something listens at addr and does not hang up at
// once on a silent new client, as a relay in front of a dead port does
// (Postgres never speaks first nor hangs up).
func answers(addr string, timeout time.Duration) bool {
	c, err := net.DialTimeout("tcp", addr, timeout)
	if err != nil {
		return false
	}
	defer c.Close()
	_ = c.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
	_, err = c.Read(make([]byte, 1))
	return !errors.Is(err, syscall.ECONNRESET) && !errors.Is(err, io.EOF)
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
