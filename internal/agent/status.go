package agent

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"time"

	"github.com/petrel-db/petrel/internal/api"
	"github.com/petrel-db/petrel/internal/engine"
	"github.com/petrel-db/petrel/internal/model"
	"github.com/petrel-db/petrel/internal/pg"
	"github.com/petrel-db/petrel/internal/version"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/singleflight"
)

// Metrics are the agent's Prometheus series.
type Metrics struct {
	role       *prometheus.GaugeVec
	leader     prometheus.Gauge
	storeOK    prometheus.Gauge
	leaseLeft  prometheus.Gauge
	timeline   prometheus.Gauge
	lsn        prometheus.Gauge
	syncCount  prometheus.Gauge
	promotions prometheus.Counter
	fences     prometheus.Counter
	restarts   prometheus.Gauge
}

// NewMetrics registers the agent's series on reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		role:       prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "petrel_role", Help: "1 for the role this member currently has."}, []string{"role"}),
		leader:     prometheus.NewGauge(prometheus.GaugeOpts{Name: "petrel_is_leader", Help: "1 while this member holds the leader key."}),
		storeOK:    prometheus.NewGauge(prometheus.GaugeOpts{Name: "petrel_store_up", Help: "1 while etcd answers and the lease is being renewed."}),
		leaseLeft:  prometheus.NewGauge(prometheus.GaugeOpts{Name: "petrel_lease_remaining_seconds", Help: "Conservative time left on this member's lease."}),
		timeline:   prometheus.NewGauge(prometheus.GaugeOpts{Name: "petrel_timeline", Help: "PostgreSQL timeline."}),
		lsn:        prometheus.NewGauge(prometheus.GaugeOpts{Name: "petrel_wal_lsn_bytes", Help: "Current (primary) or received (replica) WAL position."}),
		syncCount:  prometheus.NewGauge(prometheus.GaugeOpts{Name: "petrel_sync_standbys", Help: "Synchronous standbys recorded (leader only)."}),
		promotions: prometheus.NewCounter(prometheus.CounterOpts{Name: "petrel_promotions_total", Help: "Times this member became primary."}),
		fences:     prometheus.NewCounter(prometheus.CounterOpts{Name: "petrel_fences_total", Help: "Times this member fenced its postgres."}),
		restarts:   prometheus.NewGauge(prometheus.GaugeOpts{Name: "petrel_postgres_failed_starts", Help: "Consecutive failed or crashed postgres starts."}),
	}
	reg.MustRegister(m.role, m.leader, m.storeOK, m.leaseLeft, m.timeline, m.lsn, m.syncCount, m.promotions, m.fences, m.restarts)
	return m
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

func (m *Metrics) observe(o engine.Observation, p engine.Plan) {
	for _, r := range []string{model.RolePrimary, model.RoleReplica, model.RoleFenced, model.RoleOffline} {
		m.role.WithLabelValues(r).Set(b2f(r == p.Role))
	}
	m.leader.Set(b2f(o.LeaderMine))
	m.storeOK.Set(b2f(o.StoreOK))
	m.leaseLeft.Set(o.LeaseLeft.Seconds())
	m.timeline.Set(float64(o.Timeline))
	m.lsn.Set(float64(o.LSN))
	if o.LeaderMine {
		m.syncCount.Set(float64(len(o.Sync.Members)))
	}
	m.restarts.Set(float64(o.Restarts))
}

// PostgresAddr is this member's Postgres address as its record publishes
// it (api.PostgresAddrSource: GET /role names it).
func (a *Agent) PostgresAddr() string { return a.self.PostgresAddr }

// Role is what GET /role serves: primary only while Postgres is writable
// and this node holds the leader key; fenced when leadership was lost or is
// unproven; replica when streaming or trying to; offline otherwise.
func (a *Agent) Role() string {
	a.mu.Lock()
	ps, plan, obs := a.lastPG, a.lastPlan, a.lastObs
	a.mu.Unlock()
	running := a.pg.Running()
	switch {
	case plan.Role == model.RoleFenced:
		return model.RoleFenced
	case running && ps.Running && !ps.InRecovery && obs.LeaderMine:
		if a.safeLeft() < a.params.FenceMargin {
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

// Status is the GET /status document.
func (a *Agent) Status(ctx context.Context) model.Status {
	role := a.Role()
	a.mu.Lock()
	ps, obs, state := a.lastPG, a.lastObs, a.state
	a.mu.Unlock()
	st := model.Status{
		ID:           a.cfg.ID,
		Region:       a.cfg.Region,
		Role:         role,
		State:        state,
		Timeline:     obs.Timeline,
		LSN:          pg.FormatLSN(obs.LSN),
		LSNNum:       obs.LSN,
		ReplayLSN:    pg.FormatLSN(ps.ReplayLSN),
		Leader:       obs.Leader,
		PostgresAddr: a.self.PostgresAddr,
		APIURL:       a.self.APIURL,
		Streaming:    ps.Streaming,
		Upstream:     obs.Following,
		Version:      version.Get().Short(),
	}
	for _, m := range obs.Sync.Members {
		if m == a.cfg.ID {
			st.Sync = true
		}
	}
	if role == model.RolePrimary {
		switch {
		case a.params.SyncMode == "off":
			st.SyncState = "off"
		case len(obs.Sync.Members) > 0:
			st.SyncState = "sync"
		case a.params.SyncMode == "strict":
			st.SyncState = "blocked"
		default:
			st.SyncState = "async-degraded"
			st.Problems = append(st.Problems, "no synchronous standby: writes continue but no automatic failover until one is in sync")
		}
	}
	if role == model.RoleReplica && obs.Leader != "" {
		lag := a.lag(ctx, obs, ps)
		st.LagBytes, st.LagSeconds = lag.bytes, lag.seconds
		st.Problems = append(st.Problems, lag.problems...)
		if !ps.Streaming {
			st.Problems = append(st.Problems, "not streaming from the leader")
		}
	}
	if !obs.StoreOK {
		st.Problems = append(st.Problems, "store unreachable")
		if role == model.RolePrimary && a.failsafeLeft() > 0 {
			st.Problems = append(st.Problems, "failsafe: every member promised not to take over, so this primary keeps serving")
		}
	}
	if obs.ReadOnly {
		st.ReadOnly = true
		a.mu.Lock()
		why := a.readOnlyWhy
		a.mu.Unlock()
		if why == "" {
			why = "disk nearly full"
		}
		st.Problems = append(st.Problems, fmt.Sprintf("read-only: %s (%d MiB free now); writes resume at %d MiB free",
			why, obs.DiskFree>>20, 2*a.params.DiskLow>>20))
	}
	a.settingsStatus(&st) // pending restarts, applied config revision (settings.go)
	a.archiveStatus(&st)  // WAL archiving (archive.go)
	a.tlsStatus(&st)      // a refused CA, a failed certificate (tls.go)
	a.rotationStatus(&st) // a stale secrets file after a rotation (rotation.go)
	return st
}

// caughtUpAt remembers, per agent, when a lag measurement last found the
// replica caught up (see measureLag).
var caughtUpAt sync.Map // *Agent -> time.Time

// lagReuse is how long one lag measurement answers GET /status, and
// lagTimeout bounds one measurement.
const (
	lagReuse   = 300 * time.Millisecond
	lagTimeout = 2 * time.Second
)

// lagCache makes GET /status on a replica cost at most one lag measurement
// at a time (a query on the agent's own Postgres connection, which its
// loop shares, and a request to the leader), each reused for lagReuse:
// however many requests arrive, the agent's loop and the leader see about
// three measurements a second. The rest of /status is read fresh from the
// agent's last observation on every request (no Postgres, no network), so
// what elections read of a peer (role, upstream, position) is never stale.
type lagCache struct {
	flight singleflight.Group
	mu     sync.Mutex // guards the following fields
	leader string     // the leader the last measurement asked
	at     time.Time  // when it finished
	last   lagResult
}

type lagResult struct {
	bytes    int64
	seconds  float64
	problems []string // shared by every caller: append, never modify
}

// lag is the replica's lag behind obs.Leader: the last measurement when it
// is recent enough, else the one in flight, else a new one.
func (a *Agent) lag(ctx context.Context, obs engine.Observation, ps pg.Status) lagResult {
	c := &a.lagCache
	c.mu.Lock()
	if c.leader == obs.Leader && !c.at.IsZero() && time.Since(c.at) < lagReuse {
		r := c.last
		c.mu.Unlock()
		return r
	}
	c.mu.Unlock()
	ch := c.flight.DoChan(obs.Leader, func() (any, error) {
		// Not the caller's context: the measurement answers every caller
		// waiting on it, and goes on when the first one gives up.
		mctx, cancel := context.WithTimeout(context.Background(), lagTimeout)
		defer cancel()
		r := a.measureLag(mctx, obs, ps)
		c.mu.Lock()
		c.leader, c.at, c.last = obs.Leader, time.Now(), r
		c.mu.Unlock()
		return r, nil
	})
	select {
	case res := <-ch:
		return res.Val.(lagResult)
	case <-ctx.Done():
		return lagResult{bytes: -1, seconds: -1, problems: []string{"replication lag unknown: " + ctx.Err().Error()}}
	}
}

// measureLag measures a replica's lag, never a guess. This server's replay
// LSN R and last replayed commit time are queried at tR, then the leader's
// current LSN L (its /status, which crosses the link). lag_bytes = L - R
// (0 when R >= L): an upper bound, as L is read a little after tR.
// lag_seconds = tR - max(last replayed commit, last time a measurement
// found R >= L): both are upper bounds, since every byte still to replay
// was written after each of them; 0 when caught up. When the leader
// cannot be asked both are -1 (unknown), with the reason in problems.
func (a *Agent) measureLag(ctx context.Context, obs engine.Observation, ps pg.Status) lagResult {
	unknown := func(why string) lagResult {
		return lagResult{bytes: -1, seconds: -1, problems: []string{"replication lag unknown: " + why}}
	}
	m, ok := obs.Members[obs.Leader]
	if !ok {
		return unknown("the leader has not published its address")
	}
	qctx, cancel := context.WithTimeout(ctx, time.Second)
	fresh, err := a.pg.Status(qctx)
	cancel()
	tR := time.Now()
	if err == nil && fresh.Running && fresh.InRecovery {
		ps = fresh // else ps is from the last loop round, at most a round old
	}
	ls, err := fetchStatus(ctx, a.lagHTTP, a.dialSrc.Map().URL(m.APIURL), m.ID)
	if err != nil {
		return unknown(err.Error())
	}
	if ls.LSNNum <= ps.ReplayLSN {
		caughtUpAt.Store(a, tR)
		return lagResult{}
	}
	r := lagResult{bytes: int64(ls.LSNNum - ps.ReplayLSN)}
	since := ps.ReplayTime
	if v, ok := caughtUpAt.Load(a); ok && v.(time.Time).After(since) {
		since = v.(time.Time)
	}
	if !since.IsZero() {
		r.seconds = max(0, tR.Sub(since).Seconds())
	}
	return r
}

// Health lists failing checks; none means healthy.
func (a *Agent) Health() []string {
	var fails []string
	if !a.pg.Running() {
		fails = append(fails, "postgres is not running")
	}
	if !a.st.OK() {
		fails = append(fails, "store unreachable")
	}
	a.mu.Lock()
	readOnly := a.lastObs.ReadOnly && a.lastObs.LeaderMine
	a.mu.Unlock()
	if readOnly {
		fails = append(fails, "read-only: the disk is nearly full")
	}
	switch a.Role() {
	case model.RoleFenced:
		fails = append(fails, "fenced: this member lost or could not prove leadership")
	case model.RoleReplica:
		a.mu.Lock()
		streaming := a.lastPG.Streaming
		a.mu.Unlock()
		if !streaming {
			fails = append(fails, "replica is not streaming")
		}
	}
	return fails
}

// fetchStatus reads member id's /status (its certificate must name it).
func fetchStatus(ctx context.Context, c *api.Client, apiURL, id string) (model.Status, error) {
	var st model.Status
	b, err := c.Get(ctx, apiURL, id, "/status", 1<<20)
	if err != nil {
		return st, fmt.Errorf("fetching %s's status: %w", id, err)
	}
	if err := json.Unmarshal(b, &st); err != nil {
		return st, fmt.Errorf("decoding %s/status: %w", apiURL, err)
	}
	return st, nil
}
