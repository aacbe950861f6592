package sim

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/petrel-db/petrel/internal/engine"
	"github.com/petrel-db/petrel/internal/model"
)

// Node is one simulated member: its agent, its store client and its
// Postgres. The agent half mirrors internal/agent line for line where it
// gathers facts (observe, fetchPeers, leaderDead, the crash and streaming
// clocks), carries out actions (exec), runs failsafe rounds, keeps the
// watchdogs and shuts down; the decisions are the real engine.Decide's.
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

	// Store client (internal/store.Store).
	lease     int64
	leaseTo   time.Duration // conservative: send time of the last confirmed renewal + TTL
	lastOK    time.Duration
	lastRenew time.Duration
	cache     *Snapshot
	written   int64 // store revision after this node's last successful call (agent: store.CaughtUp)
	synced    bool
	lostStore time.Duration // when the watch last heard from the store

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
	rewindFailedOn  string
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
	n.lease, n.leaseTo, n.lastOK, n.lastRenew, n.synced, n.cache = 0, 0, 0, 0, false, &Snapshot{}
	n.registeredLease = 0
	n.following = "?"
	n.lastPG, n.lastPlan, n.lastObs = pgStatus{}, engine.Plan{}, engine.Observation{}
	n.restarts, n.lastStart, n.runningSince, n.wasRunning, n.stoppedByUs = 0, 0, 0, false, false
	n.lastStreaming, n.streamingSince, n.rewindFailedOn, n.unansweredSince = 0, 0, "", 0
	n.failsafeUntil, n.failsafeLease, n.deadCount, n.syncChangeLSN = 0, 0, 0, 0
	// A previous run may have promised a leader not to take over.
	n.promisedUntil = c.now + c.TTL
	n.lastStep, n.lastStepRev, n.lastFailsafe = 0, -1, 0
	n.wdArmed = false
	n.lastRole = ""
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

// renew is store.renew: grant a lease, or keep it alive; the expiry it
// records counts from the send time.
func (n *Node) renew() {
	c := n.c
	sent := c.now
	n.lastRenew = sent
	if n.lease == 0 {
		err := n.call(func(s *Store) error {
			n.lease = s.grant(n.ID, c.TTL, c.now)
			return nil
		})
		if err == nil {
			n.leaseTo, n.lastOK = sent+c.TTL, c.now
		}
		return
	}
	err := n.call(func(s *Store) error { return s.keepAlive(n.lease, c.now) })
	switch {
	case errors.Is(err, errLeaseNotFound):
		n.logf("lease %d expired; taking a new one", n.lease)
		n.lease, n.leaseTo = 0, 0
	case err == nil:
		n.leaseTo, n.lastOK = sent+c.TTL, c.now
	}
}

// watch keeps the cache current while the store answers. A stopped store
// ends the watch at once (connection refused); a partition only once the
// client's keepalives give up (about 4 s).
func (n *Node) watch() {
	c := n.c
	if n.storeReachable() {
		n.cache, n.synced, n.lostStore = c.store.snapshot(), true, c.now
		return
	}
	if c.store.down || c.now-n.lostStore > 4*time.Second {
		n.synced = false
	}
}

func (n *Node) leaseLeft() (int64, time.Duration) {
	if n.lease == 0 {
		return 0, 0
	}
	return n.lease, n.leaseTo - n.c.now
}

func (n *Node) sinceOK() time.Duration {
	if n.lastOK == 0 {
		return time.Duration(1<<63 - 1)
	}
	return n.c.now - n.lastOK
}

func (n *Node) storeOK() bool {
	return n.synced && n.lease != 0 && n.sinceOK() < n.c.TTL/2+n.c.TTL/4
}

// ---- failsafe (internal/agent/failsafe.go) ------------------------------

func (n *Node) storeLate() time.Duration { return n.c.TTL / 3 }

func (n *Node) promised() bool { return n.c.now < n.promisedUntil }

func (n *Node) failsafeLeft() time.Duration {
	late := n.sinceOK() >= n.storeLate()
	if !late || n.lease == 0 || n.lease != n.failsafeLease {
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
func (n *Node) answerFailsafe(leader string, ttl time.Duration) (ok bool, why string, other bool) {
	if leader == n.ID {
		return false, "that is this member", false
	}
	if n.sinceOK() < n.storeLate() {
		return false, "this member reaches the store: the leader must too", false
	}
	if n.cache.Leader != leader {
		return false, fmt.Sprintf("the store last named %q the leader", n.cache.Leader), n.cache.Leader != ""
	}
	if n.lastPG.Running && !n.lastPG.InRecovery {
		return false, "this member runs a writable primary", true
	}
	if until := n.c.now + max(n.c.TTL, ttl); until > n.promisedUntil {
		n.promisedUntil = until
	}
	return true, "", false
}

// failsafeRound is failsafeLoop's body, every TTL/10.
func (n *Node) failsafeRound() {
	c := n.c
	if n.sinceOK() < n.storeLate() {
		return
	}
	primary := n.lastPG.Running && !n.lastPG.InRecovery && n.lastObs.LeaderMine
	if !primary || n.safeLeft() < c.params.FenceMargin {
		return
	}
	lease := n.lease
	start := c.now
	ok, why, other := true, "", false
	for _, id := range n.cache.Registered {
		if id == n.ID {
			continue
		}
		if _, alive := n.cache.Members[id]; !alive {
			ok, why = false, id+" was not alive when the store was last read"
			break
		}
	}
	if ok {
		for _, id := range n.cache.Registered {
			if id == n.ID {
				continue
			}
			m := c.node(id)
			if m == nil || !c.apiReachable(n.ID, m) {
				ok, why = false, id+": no answer"
				continue
			}
			if yes, reason, oth := m.answerFailsafe(n.ID, c.TTL); !yes {
				ok, why = false, id+": refused: "+reason
				other = other || oth
			}
		}
	}
	switch {
	case ok:
		if u := start + c.TTL; u > n.failsafeUntil || lease != n.failsafeLease {
			if n.failsafeUntil == 0 {
				n.logf("failsafe: every member promised")
			}
			n.failsafeUntil, n.failsafeLease = u, lease
		}
	case other:
		n.failsafeUntil = 0
	}
	if !ok {
		n.logf("failsafe: not every member promised (%s)", why)
	}
}

// ---- watchdogs (internal/agent/watchdog.go, fenceWatchdog) --------------

func (n *Node) fenceWatchdog() {
	c := n.c
	primary := n.lastPG.Running && !n.lastPG.InRecovery
	left := n.safeLeft()
	if primary && n.lease != 0 && n.pg.running && left > c.params.FenceMargin/2 {
		n.wdArmed, n.wdDeadline = true, c.now+left-c.params.FenceMargin/2
	} else {
		n.wdArmed = false
	}
	if !primary || left > c.params.FenceMargin/2 {
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
		n.rewindFailedOn = ""
	}
	n.lastPG = ps
	o.Following = n.following
	o.Restarts = n.restarts
	o.SinceStart = now - n.lastStart
	o.NotStreamingFor = now - n.lastStreaming
	o.RewindFailed = n.rewindFailedOn != "" && n.rewindFailedOn == snap.Leader
	o.SyncChangeLSN = n.syncChangeLSN

	o.Running, o.InRecovery, o.Timeline, o.LSN, o.Streaming = ps.Running, ps.InRecovery, ps.Timeline, ps.CurrentLSN, ps.Streaming
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
	if n.lease != 0 && n.lease != n.registeredLease && n.storeOK() {
		err := n.call(func(s *Store) error { return s.register(n.member, n.lease) })
		if err == nil {
			n.registeredLease = n.lease
		}
	}
	obs, err := n.observe()
	if n.cache.Rev < n.written {
		obs.StoreOK = false // as agent.step: never decide on a view before our own write
	}
	if err != nil {
		n.stepUnobservable(obs)
		return
	}
	n.unansweredSince = 0
	plan := engine.Decide(obs, c.params)
	n.lastPlan, n.lastObs = plan, obs
	c.observed(n, obs, plan)
	for _, act := range plan.Actions {
		if act.Kind == engine.Wait {
			continue
		}
		err := n.exec(obs, act)
		c.acted(n, act, err)
		if err != nil {
			return
		}
	}
}

func (n *Node) stepUnobservable(obs engine.Observation) {
	c := n.c
	if !n.pg.running {
		return
	}
	if n.unansweredSince == 0 {
		n.unansweredSince = c.now
	}
	unanswered := c.now - n.unansweredSince
	wasPrimary := n.lastPG.Running && !n.lastPG.InRecovery
	lease, _ := n.leaseLeft()
	mine := n.cache.Leader == n.ID && lease != 0 && n.cache.LeaderLease == lease
	plan := engine.DecideUnobservable(wasPrimary, mine, unanswered, n.safeLeft(), c.params)
	for _, act := range plan.Actions {
		if act.Kind == engine.Wait {
			continue
		}
		err := n.exec(obs, act)
		c.acted(n, act, err)
		if err != nil {
			return
		}
	}
}

// ---- exec (agent.exec) --------------------------------------------------

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
func (n *Node) source(id string) (*Node, error) {
	if _, ok := n.cache.Members[id]; !ok {
		return nil, fmt.Errorf("member %s has not published its address", id)
	}
	src := n.c.node(id)
	if src == nil || n.c.cut(n.ID, id) || !src.pg.running || src.pg.hung {
		return nil, fmt.Errorf("%s does not answer", id)
	}
	return src, nil
}

func (n *Node) replConn(id string) error {
	if id == "" {
		return nil
	}
	if _, ok := n.cache.Members[id]; !ok {
		return fmt.Errorf("member %s has not published its address", id)
	}
	return nil
}

func (n *Node) exec(o engine.Observation, act engine.Action) error {
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
		if err := n.call(func(s *Store) error { return s.acquireLeader(n.ID, n.lease, o.SyncRev) }); err != nil {
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
		src, err := n.source(act.Target)
		if err != nil {
			return err
		}
		p.initialized = true
		p.wal = append([]walEntry(nil), src.pg.wal...)
		p.broken = false
		p.configureStandby(act.Target)
		n.following = act.Target
		n.markStart()
		if err := p.start(); err != nil {
			return n.startFailed(err)
		}
	case engine.StartStandby:
		if err := n.replConn(act.Target); err != nil {
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
		if err := n.replConn(act.Target); err != nil {
			return err
		}
		p.configureStandby(act.Target)
		p.reload(c.now)
		n.following = act.Target
		n.lastStreaming = c.now
	case engine.RecordBootstrap:
		if !p.initialized || len(p.wal) == 0 || n.cache.Info == nil {
			return fmt.Errorf("nothing to record")
		}
		info := *n.cache.Info
		info.SystemID = fmt.Sprintf("sim-%d", p.wal[0].branch)
		return n.call(func(s *Store) error { return s.recordBootstrap(info, act.Rev) })
	case engine.AcquireLeader:
		snap := n.cache
		if sw := snap.Switchover; sw != nil && sw.AllowSecondaryRegion && snap.Info != nil && n.Region != snap.Info.PrimaryRegion {
			info := *snap.Info
			info.PrimaryRegion = n.Region
			if err := n.call(func(s *Store) error {
				return s.acquireLeaderMovingRegion(n.ID, n.lease, act.Rev, info, snap.InfoRev)
			}); err != nil {
				return err
			}
			n.logf("primary region moved to %s", n.Region)
			return nil
		}
		return n.call(func(s *Store) error { return s.acquireLeader(n.ID, n.lease, act.Rev) })
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
		p.syncValue = syncValueFor(c.params.SyncMode)
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
	case engine.SetReadOnly:
		p.readOnly = act.Value == "on"
	case engine.ReleaseLeader:
		return n.call(func(s *Store) error { return s.releaseLeader(n.lease) })
	case engine.RevokeLeader:
		return n.call(func(s *Store) error { return s.revokeLeader(act.Rev) })
	case engine.Rewind:
		if p.running {
			n.stopPG()
		}
		src, err := n.source(act.Target)
		if err != nil {
			n.rewindFailedOn = act.Target
			return fmt.Errorf("rewinding against %s: %w", act.Target, err)
		}
		// pg_rewind keeps the common history; streaming fetches the rest.
		p.wal = p.wal[:commonPrefix(p.wal, src.pg.wal)]
		p.configureStandby(act.Target)
		n.following = act.Target
		n.markStart()
		if err := p.start(); err != nil {
			return n.startFailed(err)
		}
		n.lastStreaming = c.now
		// Duplicated from the agent (issue 11 item 4 moves it into the
		// engine): a rewind for not streaming that does not help re-clones.
		if strings.HasPrefix(act.Reason, "not streaming") {
			n.rewindFailedOn = act.Target
		}
	case engine.Reclone:
		n.stopPG()
		p.wipe()
		n.rewindFailedOn, n.restarts = "", 0
		return n.exec(o, engine.Action{Kind: engine.Clone, Target: act.Target})
	case engine.SetSyncRecord:
		rec := model.Sync{Leader: n.ID, Members: act.Members, K: 1}
		return n.call(func(s *Store) error { return s.setSync(rec, n.lease, act.Rev) })
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
		snap := n.cache
		if snap.Switchover == nil {
			return nil
		}
		c.fastStop(n)
		sw := *snap.Switchover
		sw.Target, sw.StoppedLSN = act.Target, p.lsn()
		return n.call(func(s *Store) error { return s.completeSwitchover(sw, n.lease, snap.SwitchoverRev) })
	case engine.ClearSwitchover:
		snap := n.cache
		if snap.Switchover == nil {
			return nil
		}
		return n.call(func(s *Store) error { return s.clearSwitchover(snap.SwitchoverRev) })
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

// shutdown is agent.shutdown (SIGTERM): a leader stops Postgres with a
// fast shutdown and hands over to its most caught-up streaming
// primary-region standby, else releases the key; then the lease is
// revoked and the process exits.
func (n *Node) shutdown() {
	c := n.c
	snap := n.cache
	lease := n.lease
	leader := snap.Leader == n.ID && snap.LeaderLease == lease && lease != 0
	target := ""
	if leader {
		best := uint64(0)
		for _, sb := range n.lastObs.Standbys {
			if m, ok := snap.Members[sb.ID]; ok && sb.Streaming && m.Region == n.lastObs.PrimaryRegion && (target == "" || sb.FlushLSN > best) {
				target, best = sb.ID, sb.FlushLSN
			}
		}
	}
	wasRunning := n.pg.running
	if wasRunning {
		c.fastStop(n)
	}
	if leader {
		handed := false
		if target != "" && wasRunning && snap.Switchover == nil {
			sw := model.Switchover{From: n.ID, Target: target, StoppedLSN: n.pg.lsn(), RequestedAt: c.wall(c.now)}
			err := n.call(func(s *Store) error { return s.completeSwitchover(sw, lease, 0) })
			n.logf("shutdown: hand over to %s at %d: %s", target, sw.StoppedLSN, outcome(err))
			handed = err == nil
		}
		if !handed {
			err := n.call(func(s *Store) error { return s.releaseLeader(lease) })
			n.logf("shutdown: release-leader: %s", outcome(err))
		}
	}
	if lease != 0 {
		_ = n.call(func(s *Store) error { s.revoke(lease); return nil })
	}
	n.agentUp = false
	n.wdArmed = false
}

func outcome(err error) string {
	if err == nil {
		return "ok"
	}
	return err.Error()
}
