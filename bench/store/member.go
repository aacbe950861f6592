package main

// The simulated members of -clusters mode: each is a thin agent loop
// around the real engine.Decide and its own real store.Store (session
// lease, leader lease, watch, compare-and-swap writes), with Postgres
// simulated in memory (after internal/sim's model, much reduced: one LSN
// counter and a timeline, standbys that catch up with their upstream at
// once, no commits) and peers' /status read in-process.

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/petrel-db/petrel/internal/engine"
	"github.com/petrel-db/petrel/internal/model"
	"github.com/petrel-db/petrel/internal/store"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// simPG is one member's simulated Postgres and data directory.
type simPG struct {
	initialized bool
	signal      bool // standby.signal
	running     bool
	recovery    bool
	timeline    uint32
	lsn         uint64
	upstream    string // primary_conninfo's member ("" none)
	syncNames   string // synchronous_standby_names
	slots       []string
}

func (p simPG) writable() bool { return p.running && !p.recovery }

func (p simPG) dataRole() engine.DataRole {
	switch {
	case !p.initialized:
		return engine.DataEmpty
	case p.running && p.recovery, !p.running && p.signal:
		return engine.DataStandby
	}
	return engine.DataPrimary
}

// streamsFrom says whether a standby in state p streams from up: it runs
// in recovery and its upstream runs, on a timeline it can follow.
func (p simPG) streamsFrom(up simPG) bool {
	return p.running && p.recovery && up.running && up.timeline >= p.timeline
}

// catchUp is what streaming from up does to p: it receives everything.
func (p *simPG) catchUp(up simPG) {
	if up.lsn > p.lsn || up.timeline > p.timeline {
		p.lsn, p.timeline = up.lsn, up.timeline
	}
}

// parseSyncNames extracts member names from `ANY 1 ("a", "b")` (the
// agent's parser).
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

// simCluster is one cluster's members.
type simCluster struct {
	name    string
	primary string // primary region
	members []*member
}

func (c *simCluster) member(id string) *member {
	for _, m := range c.members {
		if m.id == id {
			return m
		}
	}
	return nil
}

// member is one simulated cluster member.
type member struct {
	c      *simCluster
	id     string
	region string
	st     *store.Store
	params engine.Params
	log    *slog.Logger
	tick   time.Duration
	errs   *errCounter

	mu            sync.Mutex // guards the following
	pg            simPG
	following     string
	lastStart     time.Time
	lastStreaming time.Time
	syncChangeLSN uint64
	role          string
}

// pgState is a copy of m's Postgres, for its peers.
func (m *member) pgState() simPG {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.pg
}

// run is the agent loop: observe, decide, act, every tick and at once on
// any store change; the member record is registered on each new session.
func (m *member) run(ctx context.Context) {
	self := model.Member{ID: m.id, Region: m.region,
		APIURL: "http://" + m.c.name + "." + m.id + ".sim", PostgresAddr: m.c.name + "." + m.id + ".sim:5432"}
	t := time.NewTicker(m.tick)
	defer t.Stop()
	var registered clientv3.LeaseID // the session the member record is on
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-m.st.Changes():
		}
		if sess := m.st.Session(); sess != 0 && sess != registered && m.st.OK() {
			if err := m.st.Register(ctx, self); err != nil {
				m.errs.add("register", err)
			} else {
				registered = sess
			}
		}
		m.step(ctx)
	}
}

// step mirrors agent.step: decide only on a view that includes this
// member's own last write (else the store counts as unreachable).
func (m *member) step(ctx context.Context) {
	if !m.st.CaughtUp() {
		wait := time.NewTimer(500 * time.Millisecond)
	waiting:
		for !m.st.CaughtUp() {
			select {
			case <-ctx.Done():
				wait.Stop()
				return
			case <-m.st.Changes():
			case <-wait.C:
				break waiting
			}
		}
		wait.Stop()
	}
	stale := !m.st.CaughtUp()
	obs := m.observe()
	if stale {
		obs.StoreOK = false
	}
	plan := engine.Decide(obs, m.params)
	m.mu.Lock()
	m.role = plan.Role
	m.mu.Unlock()
	for _, act := range plan.Actions {
		if act.Kind == engine.Wait {
			continue
		}
		if err := m.exec(ctx, obs, act); err != nil {
			if !errors.Is(err, store.ErrLostRace) {
				m.errs.add(string(act.Kind), err)
			}
			return
		}
	}
}

// observe mirrors agent.observe over the simulated Postgres.
func (m *member) observe() engine.Observation {
	snap := m.st.Snapshot()
	lease, left := m.st.Lease()
	o := engine.Observation{
		Self: m.id, Region: m.region, PrimaryRegion: m.c.primary,
		StoreOK:           m.st.OK(),
		Initialized:       snap.Info != nil,
		Leader:            snap.Leader,
		LeaderRev:         snap.LeaderRev,
		LeaderMine:        snap.Leader == m.id && lease != 0 && snap.LeaderLease == lease,
		Sync:              snap.Sync,
		SyncRev:           snap.SyncRev,
		Members:           snap.Members,
		Registered:        snap.Registered,
		Switchover:        snap.Switchover,
		SwitchoverRev:     snap.SwitchoverRev,
		LeaseLeft:         left,
		CascadeRegions:    snap.Cascade,
		RegisteredRegions: snap.RegisteredRegions,
	}
	if snap.Info != nil {
		o.PrimaryRegion = snap.Info.PrimaryRegion
		o.InitializedBy = snap.Info.InitializedBy
		o.BootstrapDone = snap.Info.SystemID != ""
		o.InfoRev = snap.InfoRev
	}
	if snap.Switchover != nil {
		o.SwitchoverAge = time.Since(snap.Switchover.RequestedAt)
	}
	if r, ok := snap.Restarts[m.id]; ok {
		o.Restart, o.RestartRev = &engine.RestartRequest{InPlace: r.Request.InPlace, Force: r.Request.Force}, r.Rev
	}
	// Streaming: copy the upstream's state first (one member's lock at a
	// time), then catch up.
	m.mu.Lock()
	up := m.pg.upstream
	m.mu.Unlock()
	var upPG simPG
	if u := m.c.member(up); u != nil && up != m.id {
		upPG = u.pgState()
	}
	now := time.Now()
	m.mu.Lock()
	streaming := m.pg.upstream != "" && m.pg.streamsFrom(upPG)
	if streaming {
		m.pg.catchUp(upPG)
	}
	if streaming || !m.pg.recovery || m.lastStreaming.IsZero() {
		m.lastStreaming = now
	}
	pg := m.pg
	o.Following = m.following
	o.SinceStart = now.Sub(m.lastStart)
	o.NotStreamingFor = now.Sub(m.lastStreaming)
	o.SyncChangeLSN = m.syncChangeLSN
	m.mu.Unlock()
	o.Data = pg.dataRole()
	o.Running, o.InRecovery, o.Timeline, o.LSN, o.Streaming = pg.running, pg.running && pg.recovery, pg.timeline, pg.lsn, streaming
	if o.LeaderMine && pg.writable() {
		for _, p := range m.c.members {
			if p.id == m.id {
				continue
			}
			if ps := p.pgState(); ps.upstream == m.id && ps.streamsFrom(pg) {
				o.Standbys = append(o.Standbys, engine.Standby{ID: p.id, Streaming: true, FlushLSN: ps.lsn})
			}
		}
		o.SyncNames = parseSyncNames(pg.syncNames)
		o.Slots = append([]string(nil), pg.slots...)
	}
	if o.StoreOK && snap.Info != nil && snap.Leader == "" {
		o.Peers = map[string]engine.Peer{}
		for _, id := range snap.Sync.Members {
			p := m.c.member(id)
			if id == m.id || p == nil {
				continue
			}
			if _, ok := snap.Members[id]; !ok {
				continue
			}
			p.mu.Lock()
			ps, following, role := p.pg, p.following, p.role
			p.mu.Unlock()
			o.Peers[id] = engine.Peer{ID: id, Region: p.region, Reachable: true,
				InRecovery: role != model.RolePrimary, Streaming: ps.upstream != "" && ps.running && ps.recovery,
				Frozen: following == "" && role != model.RolePrimary, Timeline: ps.timeline, LSN: ps.lsn}
		}
	}
	return o
}

// stopPG stops the simulated server. A clean stop of a primary writes a
// shutdown checkpoint, which its streaming standbys receive before it
// goes (walsenders send everything first).
func (m *member) stopPG(clean bool) uint64 {
	m.mu.Lock()
	wasPrimary := m.pg.writable()
	if clean && m.pg.running {
		m.pg.lsn++
	}
	m.pg.running = false
	pg := m.pg
	m.mu.Unlock()
	if clean && wasPrimary {
		for _, p := range m.c.members {
			if p == m {
				continue
			}
			p.mu.Lock()
			if p.pg.upstream == m.id && p.pg.running && p.pg.recovery {
				p.pg.catchUp(pg)
			}
			p.mu.Unlock()
		}
	}
	return pg.lsn
}

// startStandby configures the simulated server to follow target and
// starts it; with clone, its data is first copied from target.
func (m *member) startStandby(target string, clone bool) error {
	t := m.c.member(target)
	if t == nil {
		return fmt.Errorf("no member %s", target)
	}
	tp := t.pgState()
	if clone && !tp.running {
		return fmt.Errorf("cloning from %s: not running", target)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if clone || !m.pg.initialized {
		m.pg = simPG{initialized: true, timeline: tp.timeline, lsn: tp.lsn}
	}
	m.pg.signal, m.pg.upstream, m.pg.running, m.pg.recovery = true, target, true, true
	m.following, m.lastStart, m.lastStreaming = target, time.Now(), time.Now()
	return nil
}

// exec mirrors agent.exec: store actions go to the real store, Postgres
// actions to the simulated server.
func (m *member) exec(ctx context.Context, o engine.Observation, act engine.Action) error {
	switch act.Kind {
	case engine.Bootstrap:
		if !o.Initialized {
			info := model.ClusterInfo{Name: m.c.name, PrimaryRegion: m.c.primary, InitializedBy: m.id, InitializedAt: time.Now().UTC()}
			if err := m.st.ClaimInit(ctx, info); err != nil {
				return err
			}
		}
		if err := m.st.AcquireLeader(ctx, m.id, act.Revs.Sync); err != nil {
			return err
		}
		m.mu.Lock()
		if !m.pg.initialized {
			m.pg = simPG{initialized: true, timeline: 1, lsn: 100}
		}
		m.pg.signal, m.pg.upstream, m.pg.running, m.pg.recovery = false, "", true, false
		m.following, m.lastStart = "", time.Now()
		m.mu.Unlock()
	case engine.RecordBootstrap:
		snap := m.st.Snapshot()
		if snap.Info == nil {
			return errors.New("recording the bootstrap: no info key")
		}
		info := *snap.Info
		info.SystemID = "sim-" + m.c.name
		return m.st.RecordBootstrap(ctx, info, act.Revs.Info)
	case engine.Clone, engine.Reclone:
		m.stopPG(false)
		return m.startStandby(act.Target, true)
	case engine.StartStandby:
		return m.startStandby(act.Target, false)
	case engine.Rewind:
		m.stopPG(true)
		if err := m.startStandby(act.Target, false); err != nil {
			return err
		}
		// The rewound history is the target's.
		tp := m.c.member(act.Target).pgState()
		m.mu.Lock()
		m.pg.lsn, m.pg.timeline = tp.lsn, tp.timeline
		m.mu.Unlock()
	case engine.StartPrimary:
		m.mu.Lock()
		m.pg.signal, m.pg.upstream, m.pg.running, m.pg.recovery = false, "", true, false
		m.following, m.lastStart = "", time.Now()
		m.mu.Unlock()
	case engine.Follow:
		m.mu.Lock()
		m.pg.upstream, m.following, m.lastStreaming = act.Target, act.Target, time.Now()
		m.mu.Unlock()
	case engine.AcquireLeader:
		if act.Region != "" {
			snap := m.st.Snapshot()
			if snap.Info == nil {
				return errors.New("moving the primary region: no cluster info observed")
			}
			info := *snap.Info
			info.PrimaryRegion = act.Region
			return m.st.AcquireLeaderMovingRegion(ctx, m.id, act.Revs.Sync, info, act.Revs.Info)
		}
		return m.st.AcquireLeader(ctx, m.id, act.Revs.Sync)
	case engine.Promote:
		m.mu.Lock()
		m.pg.syncNames, m.pg.recovery, m.pg.signal, m.pg.upstream = act.Value, false, false, ""
		m.pg.timeline++
		m.pg.lsn++
		m.following = ""
		m.mu.Unlock()
	case engine.StopPostgres:
		m.stopPG(true)
	case engine.RestartPostgres:
		m.stopPG(true)
		m.mu.Lock()
		m.pg.running, m.pg.recovery, m.lastStart = true, m.pg.signal, time.Now()
		m.mu.Unlock()
	case engine.ClearRestart:
		return m.st.DeleteIfRev(ctx, act.Revs.Restart, store.KeyRestart, m.id)
	case engine.Fence, engine.Kill:
		m.stopPG(false)
		m.mu.Lock()
		m.following = ""
		m.mu.Unlock()
	case engine.SetReadOnly:
	case engine.ReleaseLeader:
		return m.st.ReleaseLeader(ctx)
	case engine.RevokeLeader:
		return m.st.RevokeLeader(ctx, act.Revs.Leader)
	case engine.SetSyncRecord:
		return m.st.SetSync(ctx, model.Sync{Leader: m.id, Members: act.Members, K: 1}, act.Revs.Sync)
	case engine.SetSyncNames:
		m.mu.Lock()
		m.pg.syncNames, m.syncChangeLSN = act.Value, o.LSN
		m.mu.Unlock()
	case engine.CreateSlot:
		m.mu.Lock()
		m.pg.slots = append(m.pg.slots, act.Target)
		m.mu.Unlock()
	case engine.DropSlot:
		m.mu.Lock()
		kept := m.pg.slots[:0]
		for _, s := range m.pg.slots {
			if s != act.Target {
				kept = append(kept, s)
			}
		}
		m.pg.slots = kept
		m.mu.Unlock()
	case engine.SwitchoverStop:
		// The request as observed (CAS on its revision), or a new record.
		sw := model.Switchover{From: m.id, RequestedAt: time.Now().UTC()}
		if o.Switchover != nil {
			sw = *o.Switchover
		}
		lsn := m.stopPG(true)
		sw.Target, sw.StoppedLSN = act.Target, lsn
		return m.st.CompleteSwitchover(ctx, sw, act.Revs.Switchover)
	case engine.ClearSwitchover:
		return m.st.ClearSwitchover(ctx, act.Revs.Switchover)
	default:
		return fmt.Errorf("action %q not simulated", act.Kind)
	}
	return nil
}

// settled says whether the cluster is idle and healthy: a writable
// leader that leads in the store, the other members streaming from it,
// and a synchronous standby recorded.
func (c *simCluster) settled() bool {
	snap := c.members[0].st.Snapshot()
	l := c.member(snap.Leader)
	if l == nil || !l.pgState().writable() || len(snap.Sync.Members) == 0 || snap.Info == nil || snap.Info.SystemID == "" {
		return false
	}
	for _, m := range c.members {
		if m == l {
			continue
		}
		if p := m.pgState(); p.upstream != l.id || !p.streamsFrom(l.pgState()) {
			return false
		}
		if s := m.st.Snapshot(); s.Leader != l.id {
			return false
		}
	}
	return true
}

// errCounter counts failed actions by kind (shown in the report).
type errCounter struct {
	mu   sync.Mutex
	n    map[string]int
	last map[string]string
}

func (e *errCounter) reset() {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.n, e.last = nil, nil
}

func (e *errCounter) add(what string, err error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.n == nil {
		e.n, e.last = map[string]int{}, map[string]string{}
	}
	e.n[what]++
	e.last[what] = err.Error()
}
