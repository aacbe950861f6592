package sim

import (
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/petrel-db/petrel/internal/engine"
	"github.com/petrel-db/petrel/internal/model"
)

// Node is one simulated member: its agent, its store client and its
// Postgres. The agent half mirrors internal/agent where it gathers facts
// (observe, fetchPeers, leaderDead, the crash and streaming clocks),
// carries out actions (exec), runs failsafe rounds, keeps the watchdogs
// and shuts down; the decisions are the real engine's (Decide,
// DecidePromise, DecideRound). The store client mirrors internal/store's
// two leases: a long session lease for the member record and, on the
// leader only, a short leader lease granted when it acquires the key.
//
// internal/agent cannot be reused directly (its observe and exec are
// methods over a live pg.Server and etcd store), so this file duplicates
// that glue; when the agent's glue changes, this must follow.
type Node struct {
	c      *Cluster
	ID     string
	Region string
	member model.Member
	pg     *Postgres

	agentUp bool // the agent process exists
	paused  bool // SIGSTOPped agent: no loop, no keepalives, no API
	phase   time.Duration

	// Store client (internal/store.Store, lease.go): two leases.
	session     int64         // the session lease, for the member record (SessionTTL)
	sessionTo   time.Duration // its conservative expiry
	nextSession time.Duration // its next grant or renewal
	lease       int64         // the leader lease (0: not leading), granted by acquire
	leaseTo     time.Duration // conservative: send time of its last confirmed renewal + TTL
	leaderSent  time.Duration // that send time
	leaderRev   int64         // the revision the leader key was put on it at
	nextRenew   time.Duration // its next renewal
	cache       *Snapshot
	written     int64 // store revision after this node's last successful call (agent: store.CaughtUp)
	synced      bool
	lostStore   time.Duration // when the watch last heard from the store

	// Agent state (internal/agent.Agent's fields).
	registeredLease int64
	following       string
	lastPG          pgStatus
	lastPlan        engine.Plan
	lastObs         engine.Observation
	restarts        int
	lastStart       time.Duration
	runningSince    time.Duration
	wasRunning      bool
	stoppedByUs     bool
	lastStreaming   time.Duration
	streamingSince  time.Duration
	lastRewind      rewindRecord
	pendingRestart  []string // pg_settings.pending_restart
	petrelSettings  []string // what petrel's own files set
	unansweredSince time.Duration
	failsafeUntil   time.Duration
	failsafeLease   int64
	promisedUntil   time.Duration
	deadCount       int
	syncChangeLSN   uint64
	lastStep        time.Duration
	lastStepRev     int64
	lastFailsafe    time.Duration

	// The external watchdog process (internal/watchdog): armed with a
	// deadline by the agent; fires even when the agent is stopped or dead.
	wdArmed    bool
	wdDeadline time.Duration

	lastRole    string
	simWritable bool // the invariant checker's last view of pg.writable()
}

// boot is agent.New plus the start of Run: a fresh process.
func (n *Node) boot() {
	c := n.c
	n.agentUp, n.paused = true, false
	n.session, n.sessionTo, n.nextSession = 0, 0, 0
	n.lease, n.leaseTo, n.leaderSent, n.leaderRev, n.nextRenew = 0, 0, 0, 0, 0
	n.synced, n.cache = false, &Snapshot{}
	n.registeredLease = 0
	n.following = "?"
	n.lastPG, n.lastPlan, n.lastObs = pgStatus{}, engine.Plan{}, engine.Observation{}
	n.restarts, n.lastStart, n.runningSince, n.wasRunning, n.stoppedByUs = 0, 0, 0, false, false
	n.lastStreaming, n.streamingSince, n.lastRewind, n.unansweredSince = 0, 0, rewindRecord{}, 0
	n.failsafeUntil, n.failsafeLease, n.deadCount, n.syncChangeLSN = 0, 0, 0, 0
	// A previous run may have promised a leader not to take over.
	n.promisedUntil = c.now + c.TTL
	n.lastStep, n.lastStepRev, n.lastFailsafe = 0, -1, 0
	n.wdArmed = false
	n.lastRole = ""
}

// rewindRecord is agent.rewindRecord.
type rewindRecord struct {
	leader   string
	result   engine.RewindResult
	cause    engine.Cause
	at       time.Duration
	failures int
}

func (n *Node) logf(format string, args ...any) {
	n.c.logNode(n.ID, fmt.Sprintf(format, args...))
}

// ---- store client -------------------------------------------------------

func (n *Node) storeReachable() bool {
	return !n.c.store.down && !n.c.cut(n.ID, storeEndpoint)
}

// call is one request to the store: it fails at once when unreachable
// (the real client times out; the simulation has no latency).
func (n *Node) call(f func(s *Store) error) error {
	if !n.storeReachable() {
		return errUnreachable
	}
	before := n.c.store.rev
	err := f(n.c.store)
	if err == nil && n.c.store.rev > before {
		n.written = max(n.written, n.c.store.rev) // this node wrote: store.CaughtUp
	}
	return err
}

// The lease timings of internal/store/lease.go.
const (
	sessionTTL    = 60 * time.Second // store.SessionTTL
	connLostAfter = 12 * time.Second // a silent network shows once the gRPC keepalive gives up: a ping every 10 s (gRPC's floor), 2 s for its answer
)

func renewEvery(ttl time.Duration) time.Duration     { return ttl * 2 / 5 }
func renewLateAfter(ttl time.Duration) time.Duration { return renewEvery(ttl) + ttl/12 }

// runSession is store.runSession: grant a session lease (retry every
// 250 ms), renew it every SessionTTL/2 (retry after 100 ms), and take a
// new one when etcd lost it (the agent then registers again).
func (n *Node) runSession() {
	c := n.c
	if c.now < n.nextSession {
		return
	}
	sent := c.now
	if n.session == 0 {
		err := n.call(func(s *Store) error { n.session = s.grant(n.ID, sessionTTL, c.now); return nil })
		if err != nil {
			n.nextSession = c.now + 250*time.Millisecond
			return
		}
		n.sessionTo, n.nextSession = sent+sessionTTL, sent+sessionTTL/2
		return
	}
	err := n.call(func(s *Store) error { return s.keepAlive(n.session, c.now) })
	switch {
	case errors.Is(err, errLeaseNotFound):
		n.logf("session lease %d expired; taking a new one", n.session)
		n.session, n.sessionTo, n.nextSession = 0, 0, c.now
	case err == nil:
		n.sessionTo, n.nextSession = sent+sessionTTL, sent+sessionTTL/2
	default:
		n.nextSession = c.now + 100*time.Millisecond
	}
}

// renewLeader is the leader lease's keepalive loop (store.holdLeader):
// every renewEvery from the last confirmed send, a failed attempt retried
// after a pause; a lease etcd no longer knows is let go.
func (n *Node) renewLeader() {
	c := n.c
	if n.lease == 0 || c.now < n.nextRenew {
		return
	}
	sent := c.now
	err := n.call(func(s *Store) error { return s.keepAlive(n.lease, c.now) })
	switch {
	case errors.Is(err, errLeaseNotFound):
		n.logf("leader lease %d expired", n.lease)
		n.dropLeader(false)
	case err == nil:
		n.leaseTo, n.leaderSent, n.nextRenew = sent+c.TTL, sent, sent+renewEvery(c.TTL)
	default:
		n.nextRenew = c.now + 100*time.Millisecond
	}
}

// acquire is store.acquire (AcquireLeader, AcquireLeaderMovingRegion with
// info): grant a leader lease, put the key on it in one transaction, hold
// it; a lost transaction revokes the new lease.
func (n *Node) acquire(syncRev int64, info *model.ClusterInfo, infoRev int64) error {
	c := n.c
	sent := c.now
	var id int64
	if err := n.call(func(s *Store) error { id = s.grant(n.ID, c.TTL, c.now); return nil }); err != nil {
		return fmt.Errorf("acquiring leadership: granting the leader lease: %w", err)
	}
	err := n.call(func(s *Store) error {
		if info != nil {
			return s.acquireLeaderMovingRegion(n.ID, id, syncRev, *info, infoRev)
		}
		return s.acquireLeader(n.ID, id, syncRev)
	})
	if err != nil {
		_ = n.call(func(s *Store) error { s.revoke(id); return nil })
		return err
	}
	old := n.lease
	n.lease, n.leaseTo, n.leaderSent, n.leaderRev, n.nextRenew = id, sent+c.TTL, sent, c.store.rev, sent+renewEvery(c.TTL)
	if old != 0 {
		_ = n.call(func(s *Store) error { s.revoke(old); return nil })
	}
	n.checkLeaderKey()
	return nil
}

// dropLeader stops renewing the leader lease and, with revoke, revokes it
// (best effort: unrenewed, it expires anyway).
func (n *Node) dropLeader(revoke bool) {
	id := n.lease
	if id == 0 {
		return
	}
	n.lease, n.leaseTo, n.leaderSent, n.leaderRev = 0, 0, 0, 0
	if revoke {
		_ = n.call(func(s *Store) error { s.revoke(id); return nil })
	}
}

// checkLeaderKey is store.checkLeaderKeyLocked: once the cache, as of a
// revision after the key was put on the leader lease, shows it gone or on
// another lease, the lease is let go.
func (n *Node) checkLeaderKey() {
	if n.lease == 0 || n.cache.Rev < n.leaderRev {
		return
	}
	if n.cache.Leader != "" && n.cache.LeaderLease == n.lease {
		return
	}
	n.logf("the leader key left lease %d; letting it go", n.lease)
	n.dropLeader(true)
}

// leaderCall is a write only the leader makes: it compares the leader
// lease (store.myLease).
func (n *Node) leaderCall(f func(s *Store, lease int64) error) error {
	lease := n.lease
	if lease == 0 {
		return errors.New("this node holds no leader lease")
	}
	return n.call(func(s *Store) error { return f(s, lease) })
}

// releaseLeader is store.ReleaseLeader.
func (n *Node) releaseLeader() error {
	err := n.leaderCall(func(s *Store, lease int64) error { return s.releaseLeader(lease) })
	if err == nil || errors.Is(err, errLostRace) {
		n.dropLeader(true)
	}
	return err
}

// revokeAll is store.Revoke (a clean shutdown): both leases at once.
func (n *Node) revokeAll() {
	for _, id := range []int64{n.lease, n.session} {
		if id != 0 {
			_ = n.call(func(s *Store) error { s.revoke(id); return nil })
		}
	}
	n.lease, n.session = 0, 0
}

// watch keeps the cache current while the store answers. A stopped store
// ends the watch at once (connection refused); a partition only once the
// client's keepalives give up.
func (n *Node) watch() {
	c := n.c
	if n.storeReachable() {
		n.cache, n.synced, n.lostStore = c.store.snapshot(), true, c.now
		n.checkLeaderKey()
		return
	}
	if c.store.down || c.now-n.lostStore > connLostAfter {
		n.synced = false
	}
}

// connected is store.connected: the gRPC connection is up.
func (n *Node) connected() bool {
	return !n.c.store.down && n.c.now-n.lostStore <= connLostAfter
}

// probeStore is store.Reachable: a linearizable read answered now.
func (n *Node) probeStore() bool { return n.connected() && n.storeReachable() }

// leaseLeft is store.Lease: the leader lease and how long it surely holds.
func (n *Node) leaseLeft() (int64, time.Duration) {
	if n.lease == 0 {
		return 0, 0
	}
	return n.lease, n.leaseTo - n.c.now
}

// renewalLate is store.RenewalLate.
func (n *Node) renewalLate() bool {
	return n.lease != 0 && n.c.now-n.leaderSent >= renewLateAfter(n.c.TTL)
}

// storeOK is store.OK: the cache is current and the session lease surely
// valid, and for the leader its last renewal was sent within 3/4 TTL,
// for the others the connection is up.
func (n *Node) storeOK() bool {
	if !n.synced || n.session == 0 || n.c.now >= n.sessionTo {
		return false
	}
	if n.lease != 0 {
		return n.c.now-n.leaderSent < n.c.TTL*3/4
	}
	return n.connected()
}

// ---- failsafe (internal/agent/failsafe.go) ------------------------------

func (n *Node) promised() bool { return n.c.now < n.promisedUntil }

func (n *Node) failsafeLeft() time.Duration {
	if !n.renewalLate() || n.lease == 0 || n.lease != n.failsafeLease {
		n.failsafeUntil = 0
		return 0
	}
	return max(0, n.failsafeUntil-n.c.now)
}

func (n *Node) safeLeft() time.Duration {
	_, left := n.leaseLeft()
	return max(left, n.failsafeLeft())
}

// answerFailsafe is Agent.Failsafe: a member's promise not to take over.
func (n *Node) answerFailsafe(leader string, ttl time.Duration) engine.Promise {
	p := engine.DecidePromise(engine.FailsafeAsk{
		Self: n.ID, Leader: leader, TTL: ttl, OwnTTL: n.c.TTL,
		StoreReachable: n.probeStore(), StoreLeader: n.cache.Leader,
		Writable: n.lastPG.Running && !n.lastPG.InRecovery,
	})
	if until := n.c.now + p.For; p.OK() && until > n.promisedUntil {
		n.promisedUntil = until
	}
	return p
}

// failsafeRound is failsafeLoop's body, every TTL/10.
func (n *Node) failsafeRound() {
	c := n.c
	primary := n.lastPG.Running && !n.lastPG.InRecovery && n.lastObs.LeaderMine
	if !engine.RoundDue(n.renewalLate(), primary, n.safeLeft(), c.params) {
		return
	}
	lease := n.lease
	start := c.now
	var res engine.RoundResult
	targets, missing := engine.FailsafeTargets(n.ID, n.cache.Registered, n.cache.Members)
	if missing != "" {
		res.Why = missing + " was not alive when the store was last read"
	} else {
		var answers []engine.FailsafeAnswer
		for _, t := range targets {
			ans := engine.FailsafeAnswer{ID: t.ID, Answered: true}
			if m := c.node(t.ID); m == nil || !c.apiReachable(n.ID, m) {
				ans.Answered, ans.Err = false, "no answer"
			} else {
				ans.Promise = m.answerFailsafe(n.ID, c.TTL)
			}
			answers = append(answers, ans)
		}
		res = engine.DecideRound(answers)
	}
	switch {
	case res.Granted:
		if u := start + c.TTL; u > n.failsafeUntil || lease != n.failsafeLease {
			if n.failsafeUntil == 0 {
				n.logf("failsafe: every member promised")
			}
			n.failsafeUntil, n.failsafeLease = u, lease
		}
	case res.Withdraw:
		n.failsafeUntil = 0
	}
	if !res.Granted {
		n.logf("failsafe: not every member promised (%s)", res.Why)
	}
}

// ---- watchdogs (internal/agent/watchdog.go, fenceWatchdog) --------------

func (n *Node) fenceWatchdog() {
	c := n.c
	primary := n.lastPG.Running && !n.lastPG.InRecovery
	w := engine.DecideWatchdog(primary, n.lease != 0, n.safeLeft(), c.params)
	if w.Arm > 0 && n.pg.running {
		n.wdArmed, n.wdDeadline = true, c.now+w.Arm
	} else {
		n.wdArmed = false
	}
	if !w.Kill {
		return
	}
	if n.pg.running {
		n.logf("fence watchdog: lease about to expire and the loop has not fenced: killing postgres")
		n.pg.stop()
	}
	n.lastPG.Running = false
	n.stoppedByUs = true
}

// extWatchdog is the separate watchdog process: it fires at its deadline
// whatever the agent is doing.
func (n *Node) extWatchdog() {
	if n.wdArmed && n.c.now >= n.wdDeadline {
		n.wdArmed = false
		if n.pg.running {
			n.logf("watchdog: deadline passed without re-arming: killing postgres")
			n.pg.stop()
		}
	}
}

// ---- observe (agent.observe) --------------------------------------------

var errUnanswered = errors.New("postgres did not answer")

// pgStatusNow is pg.Status: what the local server answers right now.
func (n *Node) pgStatusNow() (pgStatus, error) {
	p := n.pg
	if p.hung {
		return pgStatus{}, errUnanswered
	}
	return pgStatus{
		Running: true, InRecovery: p.recovery, Timeline: p.timeline(), CurrentLSN: p.lsn(),
		Streaming: n.c.receiverStreaming(p), SyncStandbyNames: p.syncValue,
	}, nil
}

func (n *Node) observe() (engine.Observation, error) {
	c := n.c
	snap := n.cache
	lease, left := n.leaseLeft()
	o := engine.Observation{
		Self:              n.ID,
		Region:            n.Region,
		StoreOK:           n.storeOK(),
		Initialized:       snap.Info != nil,
		Leader:            snap.Leader,
		LeaderRev:         snap.LeaderRev,
		LeaderMine:        snap.Leader == n.ID && lease != 0 && snap.LeaderLease == lease,
		Sync:              snap.Sync,
		SyncRev:           snap.SyncRev,
		Members:           snap.Members,
		Registered:        snap.Registered,
		Switchover:        snap.Switchover,
		SwitchoverRev:     snap.SwitchoverRev,
		LeaseLeft:         left,
		FailsafeLeft:      n.failsafeLeft(),
		FailsafePromised:  n.promised(),
		Cascade:           snap.Cascade[n.Region],
		CascadeRegions:    snap.Cascade,
		RegisteredRegions: snap.RegisteredRegions,
	}
	o.PrimaryRegion = c.PrimaryRegion
	if snap.Info != nil {
		o.PrimaryRegion = snap.Info.PrimaryRegion
		o.InitializedBy = snap.Info.InitializedBy
		o.BootstrapDone = snap.Info.SystemID != ""
		o.InfoRev = snap.InfoRev
	}
	if snap.Switchover != nil {
		o.SwitchoverAge = c.wall(c.now).Sub(snap.Switchover.RequestedAt)
	}
	if r, ok := snap.Restarts[n.ID]; ok {
		req := r.req
		o.Restart, o.RestartRev = &req, r.rev
	}
	o.PendingRestart, o.PetrelSettings = slices.Clone(n.pendingRestart), slices.Clone(n.petrelSettings)
	var ps pgStatus
	if n.pg.running {
		var err error
		ps, err = n.pgStatusNow()
		if err != nil {
			if !n.pg.signal {
				return o, err
			}
			ps = pgStatus{Running: true, InRecovery: true}
		}
	}
	now := c.now
	if n.wasRunning && !ps.Running && !n.stoppedByUs {
		n.restarts++
		n.lastStart = now
		n.logf("postgres stopped unexpectedly (restarts %d)", n.restarts)
	}
	if ps.Running && !n.wasRunning {
		n.runningSince = now
	}
	if ps.Running && now-n.runningSince > 30*time.Second {
		n.restarts = 0
	}
	n.wasRunning = ps.Running
	if ps.Running {
		n.stoppedByUs = false
	}
	switch {
	case !ps.Streaming:
		n.streamingSince = 0
	case n.streamingSince == 0:
		n.streamingSince = now
	}
	if (ps.Streaming && now-n.streamingSince >= 2*time.Second) || !ps.InRecovery || n.lastStreaming == 0 {
		n.lastStreaming = now
	}
	if ps.Streaming && now-n.streamingSince >= 10*time.Second {
		n.lastRewind = rewindRecord{}
	}
	n.lastPG = ps
	o.Following = n.following
	o.Restarts = n.restarts
	o.SinceStart = now - n.lastStart
	o.NotStreamingFor = now - n.lastStreaming
	if lr := n.lastRewind; lr.result != engine.RewindNone && lr.leader == snap.Leader {
		o.LastRewind = engine.RewindOutcome{Result: lr.result, Cause: lr.cause, Ago: now - lr.at, Failures: lr.failures}
	}
	o.SyncChangeLSN = n.syncChangeLSN

	o.Running, o.InRecovery, o.Timeline, o.LSN, o.Streaming = ps.Running, ps.InRecovery, ps.Timeline, ps.CurrentLSN, ps.Streaming
	// The agent reads it from the server log, where the receiver reports it.
	o.UpstreamLacksWAL = ps.Running && ps.InRecovery && !ps.Streaming && n.pg.upstreamLacks
	o.DiskKnown, o.DiskFree = true, n.pg.diskFree
	o.ReadOnly = n.pg.readOnly
	o.Data = n.pg.dataRole()
	if !ps.Running && o.Data != engine.DataEmpty {
		o.Timeline, o.LSN = n.pg.timeline(), n.pg.lsn() // the control file
	}
	if o.LeaderMine && ps.Running && !ps.InRecovery {
		o.Standbys = c.replication(n.ID)
		_, o.SyncNames = parseSync(ps.SyncStandbyNames)
		o.Slots = append([]string(nil), n.pg.slots...)
	}
	if o.StoreOK && snap.Info != nil && snap.Leader == "" {
		o.Peers = n.fetchPeers(snap)
	}
	if o.StoreOK && snap.Leader != "" && snap.Leader != n.ID && o.Data == engine.DataPrimary {
		if l := n.c.node(snap.Leader); l != nil && n.c.apiReachable(n.ID, l) {
			o.LeaderPromoted = l.status().Role == model.RolePrimary
		}
	}
	if o.StoreOK && snap.Leader != "" && snap.Leader != n.ID && ps.Running && !ps.Streaming {
		o.LeaderDead = n.leaderDead(snap)
	} else {
		n.deadCount = 0
	}
	return o, nil
}

// leaderDead: only refused connections count (the leader's host is up and
// neither its Postgres nor its agent listens), twice in a row.
func (n *Node) leaderDead(snap *Snapshot) bool {
	dead := false
	if _, ok := snap.Members[snap.Leader]; ok {
		if l := n.c.node(snap.Leader); l != nil && !n.c.cut(n.ID, l.ID) {
			dead = !l.pg.running && !l.agentUp
		}
	}
	if dead {
		n.deadCount++
	} else {
		n.deadCount = 0
	}
	return n.deadCount >= 2
}

// fetchPeers asks the other synchronous members' /status.
func (n *Node) fetchPeers(snap *Snapshot) map[string]engine.Peer {
	peers := map[string]engine.Peer{}
	for _, id := range snap.Sync.Members {
		m, ok := snap.Members[id]
		if id == n.ID || !ok {
			continue
		}
		p := engine.Peer{ID: m.ID, Region: m.Region}
		if o := n.c.node(id); o != nil && n.c.apiReachable(n.ID, o) {
			st := o.status()
			p.Reachable = true
			p.InRecovery = st.Role != model.RolePrimary
			p.Streaming = st.Streaming
			p.Frozen = st.Upstream == "" && st.Role != model.RolePrimary
			p.Timeline = st.Timeline
			p.LSN = st.LSNNum
		}
		peers[id] = p
	}
	return peers
}

// role is Agent.Role.
func (n *Node) role() string {
	ps, plan, obs := n.lastPG, n.lastPlan, n.lastObs
	running := n.pg.running
	switch {
	case plan.Role == model.RoleFenced:
		return model.RoleFenced
	case running && ps.Running && !ps.InRecovery && obs.LeaderMine:
		if n.safeLeft() < n.c.params.FenceMargin {
			return model.RoleFenced
		}
		return model.RolePrimary
	case running && ps.Running && !ps.InRecovery:
		return model.RoleFenced
	case running && ps.Running:
		return model.RoleReplica
	}
	return model.RoleOffline
}

// status is the part of GET /status a candidate reads: it comes from the
// agent's last observation, not from Postgres now.
func (n *Node) status() model.Status {
	return model.Status{
		ID: n.ID, Region: n.Region, Role: n.role(), Timeline: n.lastObs.Timeline,
		LSNNum: n.lastObs.LSN, Leader: n.lastObs.Leader, Streaming: n.lastPG.Streaming,
		Upstream: n.lastObs.Following,
	}
}

// ---- step (agent.step and stepUnobservable) -----------------------------

func (n *Node) step() {
	c := n.c
	n.lastStep, n.lastStepRev = c.now, n.cache.Rev
	if n.session != 0 && n.session != n.registeredLease && n.storeOK() {
		err := n.call(func(s *Store) error { return s.register(n.member, n.session) })
		if err == nil {
			n.registeredLease = n.session
		}
	}
	snap := n.cache
	obs, err := n.observe()
	if n.cache.Rev < n.written {
		obs.StoreOK = false // as agent.step: never decide on a view before our own write
	}
	if err != nil {
		n.stepUnobservable(snap, obs)
		return
	}
	n.unansweredSince = 0
	plan := engine.Decide(obs, c.params)
	n.lastPlan, n.lastObs = plan, obs
	c.observed(n, obs, plan)
	n.execPlan(snap, obs, plan)
}

func (n *Node) stepUnobservable(snap *Snapshot, obs engine.Observation) {
	c := n.c
	if !n.pg.running {
		return
	}
	if n.unansweredSince == 0 {
		n.unansweredSince = c.now
	}
	unanswered := c.now - n.unansweredSince
	wasPrimary := n.lastPG.Running && !n.lastPG.InRecovery
	plan := engine.DecideUnobservable(wasPrimary, obs.LeaderMine, unanswered, n.safeLeft(), c.params)
	n.execPlan(snap, obs, plan)
}

// execPlan is agent.execPlan: in order, stopping at the first failure.
func (n *Node) execPlan(snap *Snapshot, obs engine.Observation, plan engine.Plan) error {
	for _, act := range plan.Actions {
		if act.Kind == engine.Wait {
			continue
		}
		err := n.exec(snap, obs, act)
		n.c.acted(n, act, err)
		if err != nil {
			return err
		}
	}
	return nil
}

// ---- exec (agent.exec, exec.go) -----------------------------------------

func (n *Node) markStart() { n.lastStart = n.c.now }

func (n *Node) startFailed(err error) error {
	n.restarts++
	n.lastStart = n.c.now
	return err
}

func (n *Node) stopPG() {
	n.stoppedByUs = true
	n.pg.stop()
}

// source checks that member id can serve a base backup or a rewind.
func (n *Node) source(snap *Snapshot, id string) (*Node, error) {
	if _, ok := snap.Members[id]; !ok {
		return nil, fmt.Errorf("member %s has not published its address", id)
	}
	src := n.c.node(id)
	if src == nil || n.c.cut(n.ID, id) || !src.pg.running || src.pg.hung {
		return nil, fmt.Errorf("%s does not answer", id)
	}
	return src, nil
}

func (n *Node) replConn(snap *Snapshot, id string) error {
	if id == "" {
		return nil
	}
	if _, ok := snap.Members[id]; !ok {
		return fmt.Errorf("member %s has not published its address", id)
	}
	return nil
}

// exec carries out one action on the snapshot it was decided on.
func (n *Node) exec(snap *Snapshot, o engine.Observation, act engine.Action) error {
	c := n.c
	p := n.pg
	switch act.Kind {
	case engine.Bootstrap:
		if !o.Initialized {
			info := model.ClusterInfo{Name: "sim", PrimaryRegion: c.PrimaryRegion, InitializedBy: n.ID, InitializedAt: c.wall(c.now)}
			if err := n.call(func(s *Store) error { return s.claimInit(info) }); err != nil {
				return err
			}
		}
		if err := n.acquire(act.Revs.Sync, nil, 0); err != nil {
			return err
		}
		if !p.initialized {
			p.initialized = true
			p.wal = []walEntry{{tl: 1, branch: c.newBranch()}}
		}
		p.configurePrimary()
		n.markStart()
		if err := p.start(); err != nil {
			return err
		}
	case engine.Clone:
		return n.clone(snap, act)
	case engine.StartStandby:
		if err := n.replConn(snap, act.Target); err != nil {
			return err
		}
		p.configureStandby(act.Target)
		n.following = act.Target
		n.markStart()
		if err := p.start(); err != nil {
			return n.startFailed(err)
		}
	case engine.StartPrimary:
		p.configurePrimary()
		n.following = ""
		n.markStart()
		if err := p.start(); err != nil {
			return n.startFailed(err)
		}
	case engine.Follow:
		if err := n.replConn(snap, act.Target); err != nil {
			return err
		}
		p.configureStandby(act.Target)
		p.reload(c.now)
		n.following = act.Target
		n.lastStreaming = c.now
	case engine.RecordBootstrap:
		if !p.initialized || len(p.wal) == 0 || snap.Info == nil {
			return fmt.Errorf("nothing to record")
		}
		info := *snap.Info
		info.SystemID = fmt.Sprintf("sim-%d", p.wal[0].branch)
		return n.call(func(s *Store) error { return s.recordBootstrap(info, act.Revs.Info) })
	case engine.AcquireLeader:
		if act.Region == "" {
			return n.acquire(act.Revs.Sync, nil, 0)
		}
		if snap.Info == nil {
			return fmt.Errorf("moving the primary region: no cluster info observed")
		}
		info := *snap.Info
		info.PrimaryRegion = act.Region
		if err := n.acquire(act.Revs.Sync, &info, act.Revs.Info); err != nil {
			return err
		}
		n.logf("primary region moved to %s", act.Region)
	case engine.Promote:
		if !p.running || !p.recovery {
			return fmt.Errorf("not in recovery")
		}
		if p.hung {
			// pg_ctl promote -w times out; the signal file stays and the
			// server promotes once it runs again (Postgres's behaviour).
			p.promotePending = true
			return fmt.Errorf("promoting: pg_ctl promote timed out")
		}
		p.syncValue = act.Value
		p.wal = append(p.wal, walEntry{tl: p.timeline() + 1, branch: c.newBranch()}) // end-of-recovery checkpoint
		p.recovery = false
		p.configurePrimary()
		p.recv = receiver{}
		n.following = ""
	case engine.Fence:
		if p.hung {
			return fmt.Errorf("fencing: pg_ctl stop timed out")
		}
		n.stopPG()
		n.following = ""
	case engine.Kill:
		n.pg.stop()
		n.stoppedByUs = true
		n.lastPG.Running = false
		n.unansweredSince = 0
		n.following = ""
	case engine.StopPostgres:
		if p.hung {
			return fmt.Errorf("stopping postgres: pg_ctl stop timed out")
		}
		c.fastStop(n)
	case engine.SetReadOnly:
		p.readOnly = act.Value == "on"
	case engine.ReleaseLeader:
		return n.releaseLeader()
	case engine.RevokeLeader:
		return n.call(func(s *Store) error { return s.revokeLeader(act.Revs.Leader) })
	case engine.Rewind:
		return n.rewind(snap, act)
	case engine.Reclone:
		// As agent.reclone: never wipe before the source answers.
		if _, err := n.source(snap, act.Target); err != nil {
			return fmt.Errorf("re-cloning: keeping the data directory: %w", err)
		}
		n.stopPG()
		p.wipe()
		n.lastRewind, n.restarts = rewindRecord{}, 0
		return n.clone(snap, act)
	case engine.SetSyncRecord:
		rec := model.Sync{Leader: n.ID, Members: act.Members, K: 1}
		return n.leaderCall(func(s *Store, lease int64) error { return s.setSync(rec, lease, act.Revs.Sync) })
	case engine.SetSyncNames:
		p.syncValue = act.Value
		n.syncChangeLSN = o.LSN // as the agent: every change
	case engine.CreateSlot:
		if !p.hasSlot(act.Target) {
			p.slots = append(p.slots, act.Target)
		}
	case engine.DropSlot:
		for i, s := range p.slots {
			if s == act.Target {
				p.slots = append(p.slots[:i:i], p.slots[i+1:]...)
				break
			}
		}
	case engine.SwitchoverStop:
		sw := model.Switchover{From: n.ID, RequestedAt: c.wall(c.now)}
		if snap.Switchover != nil {
			sw = *snap.Switchover
		}
		c.fastStop(n)
		sw.Target, sw.StoppedLSN = act.Target, p.lsn()
		err := n.leaderCall(func(s *Store, lease int64) error { return s.completeSwitchover(sw, lease, act.Revs.Switchover) })
		if err == nil {
			n.dropLeader(true)
		}
		return err
	case engine.ClearSwitchover:
		return n.call(func(s *Store) error { return s.clearSwitchover(act.Revs.Switchover) })
	case engine.RestartPostgres:
		c.fastStop(n)
		n.markStart()
		if err := p.start(); err != nil {
			return n.startFailed(err)
		}
		n.pendingRestart = nil
	case engine.ClearRestart:
		return n.call(func(s *Store) error { return s.clearRestart(n.ID, act.Revs.Restart) })
	default:
		return fmt.Errorf("unknown action %q", act.Kind)
	}
	return nil
}

func (n *Node) clone(snap *Snapshot, act engine.Action) error {
	p := n.pg
	src, err := n.source(snap, act.Target)
	if err != nil {
		return err
	}
	p.initialized = true
	p.wal = append([]walEntry(nil), src.pg.wal...)
	p.broken, p.walGone, p.upstreamLacks = false, false, false
	p.configureStandby(act.Target)
	n.following = act.Target
	n.markStart()
	if err := p.start(); err != nil {
		return n.startFailed(err)
	}
	return nil
}

// rewind is agent.rewind; pg_rewind's outcome is classified as
// pg.Rewind's: the source unreachable keeps the data, a target whose WAL
// before the divergence is gone cannot be rewound.
func (n *Node) rewind(snap *Snapshot, act engine.Action) error {
	c, p := n.c, n.pg
	if p.running {
		n.stopPG()
	}
	note := func(res engine.RewindResult) {
		failures := 0
		if res == engine.RewindUnavailable {
			failures = 1
			if lr := n.lastRewind; lr.result == engine.RewindUnavailable && lr.leader == act.Target {
				failures = lr.failures + 1
			}
		}
		n.lastRewind = rewindRecord{leader: act.Target, result: res, cause: act.Cause, at: c.now, failures: failures}
	}
	src, err := n.source(snap, act.Target)
	if err != nil {
		note(engine.RewindUnavailable)
		return fmt.Errorf("rewinding against %s: source unavailable: %w", act.Target, err)
	}
	common := commonPrefix(p.wal, src.pg.wal)
	if p.walGone && common < len(p.wal) {
		note(engine.RewindImpossible)
		return fmt.Errorf("rewinding against %s: rewind impossible: could not find previous WAL record", act.Target)
	}
	// pg_rewind keeps the common history; streaming fetches the rest.
	p.wal = p.wal[:common]
	// A source still in recovery (a new leader not yet promoted) reports
	// the timeline it is about to leave (ARCHITECTURE.md's findings).
	p.unstartable = p.unstartable || src.pg.recovery
	note(engine.RewindDone)
	p.configureStandby(act.Target)
	n.following = act.Target
	n.markStart()
	if err := p.start(); err != nil {
		return n.startFailed(err)
	}
	n.lastStreaming = c.now
	return nil
}

// shutdown is agent.shutdown (SIGTERM): observe and decide with
// ShuttingDown set and carry the plans out until nothing is left, a few
// rounds at most; then the leases are revoked and the process exits.
func (n *Node) shutdown() {
	for range 4 {
		snap := n.cache
		obs, _ := n.observe()
		if n.cache.Rev < n.written {
			obs.StoreOK = false
		}
		obs.ShuttingDown = true
		plan := engine.Decide(obs, n.c.params)
		if plan.Idle() {
			break
		}
		_ = n.execPlan(snap, obs, plan) // logged by acted; the next round decides again
		n.watch()                       // the agent's cache follows its own writes at once
	}
	n.revokeAll()
	n.agentUp = false
	n.wdArmed = false
}

func outcome(err error) string {
	if err == nil {
		return "ok"
	}
	return err.Error()
}
