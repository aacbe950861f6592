package sim

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/petrel-db/petrel/internal/engine"
	"github.com/petrel-db/petrel/internal/model"
)

// Tick is one step of the virtual clock.
const Tick = 100 * time.Millisecond

// agentTick is the agent's loop period (agent.Tick).
const agentTick = 200 * time.Millisecond

// storeEndpoint names the store in partitions.
const storeEndpoint = "store"

// epoch is the virtual time a cluster starts at. It is not zero so that
// the zero Duration can stand for the agent's zero time.Time ("never").
const epoch = time.Hour

// Config describes a simulated cluster.
type Config struct {
	Nodes         []NodeSpec
	PrimaryRegion string        // default: the first node's region
	SyncMode      string        // on (default), strict, off
	TTL           time.Duration // lease TTL, default 3 s
	Seed          uint64
}

// NodeSpec is one member.
type NodeSpec struct{ ID, Region string }

// Cluster is the whole simulated world: nodes, store, network and clock.
// Nothing in it reads the wall clock, starts a goroutine or draws from an
// unseeded source, so a Config and a sequence of calls replay exactly.
type Cluster struct {
	TTL           time.Duration
	PrimaryRegion string
	params        engine.Params

	now      time.Duration
	rng      *rand.Rand
	store    *Store
	nodes    []*Node
	cuts     map[[2]string]bool
	branches int

	acked      []ackedCommit
	violations []string
	log        []*logEntry
	flushed    int // log entries already returned by Flush
	activity   time.Duration
	// quietLog drops the log (the property test only wants violations).
	quietLog bool
}

// ackedCommit is a commit a client was told is durable.
type ackedCommit struct {
	lsn    uint64
	tl     uint32
	branch int
	on     string
	at     time.Duration
	// why notes a condition the commit was acknowledged under that the
	// invariants' argument does not cover (a diagnostic for reports).
	why string
}

type logEntry struct {
	at, last time.Duration
	node     string
	text     string
	repeat   int
}

// New builds a cluster of fresh nodes (empty data directories, agents
// started).
func New(cfg Config) *Cluster {
	c := &Cluster{
		TTL:           cfg.TTL,
		PrimaryRegion: cfg.PrimaryRegion,
		now:           epoch,
		rng:           rand.New(rand.NewPCG(cfg.Seed, cfg.Seed^0x5eed)),
		store:         newStore(),
		cuts:          map[[2]string]bool{},
	}
	if c.TTL == 0 {
		c.TTL = 3 * time.Second
	}
	if c.PrimaryRegion == "" && len(cfg.Nodes) > 0 {
		c.PrimaryRegion = cfg.Nodes[0].Region
	}
	// As agent.New derives them.
	c.params = engine.DefaultParams()
	c.params.SyncMode = cfg.SyncMode
	if c.params.SyncMode == "" {
		c.params.SyncMode = "on"
	}
	c.params.FenceMargin = max(c.TTL/4, 500*time.Millisecond)
	for _, s := range cfg.Nodes {
		n := &Node{c: c, ID: s.ID, Region: s.Region, pg: &Postgres{id: s.ID, diskFree: 1 << 30}}
		n.member = model.Member{ID: s.ID, Region: s.Region, APIURL: "http://" + s.ID + ":8008", PostgresAddr: s.ID + ":5432"}
		c.nodes = append(c.nodes, n)
		n.boot()
		// Agents do not start in lockstep.
		n.lastStep = c.now - time.Duration(c.rng.IntN(2))*Tick
	}
	return c
}

// Now is the virtual time since the cluster was created.
func (c *Cluster) Now() time.Duration { return c.now - epoch }

func (c *Cluster) wall(t time.Duration) time.Time { return time.Unix(1_800_000_000, 0).Add(t) }

func (c *Cluster) newBranch() int {
	c.branches++
	return c.branches
}

func (c *Cluster) node(id string) *Node {
	for _, n := range c.nodes {
		if n.ID == id {
			return n
		}
	}
	return nil
}

// Nodes lists the member ids in creation order.
func (c *Cluster) Nodes() []string {
	ids := make([]string, len(c.nodes))
	for i, n := range c.nodes {
		ids[i] = n.ID
	}
	return ids
}

// Violations are the safety violations seen so far.
func (c *Cluster) Violations() []string { return c.violations }

// ---- network ------------------------------------------------------------

func pair(a, b string) [2]string {
	if a > b {
		a, b = b, a
	}
	return [2]string{a, b}
}

func (c *Cluster) cut(a, b string) bool { return c.cuts[pair(a, b)] }

// apiReachable says whether from can get an answer from to's agent API.
func (c *Cluster) apiReachable(from string, to *Node) bool {
	return to.agentUp && !to.paused && !c.cut(from, to.ID)
}

// ---- the scheduler ------------------------------------------------------

// Tick advances the virtual clock by one tick: leases expire, then every
// node, in an order drawn from the seed, runs what its processes would in
// that time (lease renewal, watch, watchdogs, failsafe rounds, one agent
// round when due or when the store changed), then WAL streams and commits
// are acknowledged. The invariants are checked after every node and after
// the WAL phase.
func (c *Cluster) Tick() {
	c.now += Tick
	c.store.expire(c.now, c.logf)
	for _, i := range c.rng.Perm(len(c.nodes)) {
		n := c.nodes[i]
		n.extWatchdog()
		if n.agentUp && !n.paused {
			n.runSession()
			n.renewLeader()
			n.watch()
			n.fenceWatchdog()
			if c.now-n.lastFailsafe >= max(c.TTL/10, 50*time.Millisecond) {
				n.lastFailsafe = c.now
				n.failsafeRound()
			}
			if c.now-n.lastStep >= agentTick || n.cache.Rev != n.lastStepRev {
				n.step()
			}
		}
		c.check()
	}
	c.replicate()
	c.check()
}

// Run ticks for d of virtual time.
func (c *Cluster) Run(d time.Duration) {
	for end := c.now + d; c.now < end; {
		c.Tick()
	}
}

// Stabilize ticks until nothing was logged for quiet (or maxWait
// passed); it reports whether the cluster went quiet.
func (c *Cluster) Stabilize(quiet, maxWait time.Duration) bool {
	start := c.now
	c.activity = c.now
	for c.now-start < maxWait {
		c.Tick()
		if c.now-c.activity >= quiet {
			return true
		}
	}
	return false
}

// ---- WAL ----------------------------------------------------------------

// flows says whether WAL actually moves from u to the standby on n now.
func (c *Cluster) flows(n, u *Node) bool {
	return u != nil && !c.cut(n.ID, u.ID) && u.pg.running && !u.pg.hung
}

// pull copies u's WAL past n's; a history that no longer agrees fails
// (the receiver errors out).
func (c *Cluster) pull(n, u *Node) bool {
	if !compatible(n.pg.wal, u.pg.wal) || n.pg.broken || n.pg.upstreamLacks {
		return false
	}
	if len(u.pg.wal) > len(n.pg.wal) {
		n.pg.wal = append(n.pg.wal, u.pg.wal[len(n.pg.wal):]...)
	}
	return true
}

func (c *Cluster) receiverStreaming(p *Postgres) bool {
	r := &p.recv
	return r.from != "" || (r.stoppingFrom != "" && c.now <= r.stoppingUntil) || c.now <= r.blipUntil
}

// replicate runs every standby's WAL receiver for one tick, then
// acknowledges the commits whose synchronous standbys flushed them.
func (c *Cluster) replicate() {
	for _, n := range c.nodes {
		p := n.pg
		if !p.running || !p.recovery || p.hung {
			continue
		}
		r := &p.recv
		if r.stoppingFrom != "" {
			if u := c.node(r.stoppingFrom); c.now <= r.stoppingUntil && c.flows(n, u) {
				c.pull(n, u)
			} else if c.now > r.stoppingUntil {
				r.stoppingFrom = ""
			}
		}
		if r.from != "" && r.from != p.conninfo {
			r.from = ""
		}
		if r.from != "" {
			u := c.node(r.from)
			switch {
			case !u.pg.running || u.pg.starts != r.upStart:
				r.from = "" // the upstream's host resets the connection
			case c.flows(n, u):
				if c.pull(n, u) {
					r.lastContact = c.now
				} else {
					r.from = ""
				}
			case c.now-r.lastContact > 5*time.Second: // wal_receiver_timeout
				r.from = ""
			}
		}
		if r.from == "" && p.conninfo != "" && c.now >= r.nextAttempt {
			u := c.node(p.conninfo)
			r.nextAttempt = c.now + 500*time.Millisecond // wal_retrieve_retry_interval
			switch {
			case !c.flows(n, u):
			case p.upstreamLacks:
				// "requested WAL segment ... has already been removed":
				// refused before it streams anything.
			case p.broken || !compatible(p.wal, u.pg.wal):
				// The receiver connects, then fails on the WAL it finds:
				// "streaming" for a moment on every retry.
				r.blipUntil = c.now + Tick
			default:
				r.from, r.upStart, r.lastContact = u.ID, u.pg.starts, c.now
				c.pull(n, u)
			}
		}
	}
	for _, n := range c.nodes {
		c.acknowledge(n)
	}
}

// replication is the leader's pg_stat_replication, ordered by id.
func (c *Cluster) replication(id string) []engine.Standby {
	var out []engine.Standby
	for _, s := range c.sortedNodes() {
		p := s.pg
		if !p.running || !p.recovery {
			continue
		}
		if p.recv.from == id || (p.recv.stoppingFrom == id && c.now <= p.recv.stoppingUntil) {
			out = append(out, engine.Standby{ID: s.ID, Streaming: true, FlushLSN: p.lsn()})
		}
	}
	return out
}

func (c *Cluster) sortedNodes() []*Node {
	ns := slices.Clone(c.nodes)
	sort.Slice(ns, func(i, j int) bool { return ns[i].ID < ns[j].ID })
	return ns
}

// syncFlush is the position k synchronous standbys of n have flushed, and
// whether n can acknowledge a commit at all: only a running, answering
// primary, and, when synchronous_standby_names lists members, only with k
// of them actually receiving its WAL.
func (c *Cluster) syncFlush(n *Node) (uint64, bool) {
	p := n.pg
	if !p.running || p.recovery || p.hung {
		return 0, false
	}
	k, names := parseSync(p.syncValue)
	if len(names) == 0 {
		return p.lsn(), true
	}
	var flushed []uint64
	for _, id := range names {
		s := c.node(id)
		if s == nil || !s.pg.running || !s.pg.recovery || s.pg.hung || c.cut(s.ID, n.ID) {
			continue
		}
		if r := s.pg.recv; r.from == n.ID || (r.stoppingFrom == n.ID && c.now <= r.stoppingUntil) {
			flushed = append(flushed, s.pg.lsn())
		}
	}
	if len(flushed) < k || k < 1 {
		return 0, false
	}
	slices.Sort(flushed)
	return flushed[len(flushed)-k], true
}

func (c *Cluster) acknowledge(n *Node) {
	p := n.pg
	if len(p.pending) == 0 {
		return
	}
	upTo, ok := c.syncFlush(n)
	if !ok {
		return
	}
	i := 0
	for ; i < len(p.pending) && p.pending[i] <= upTo; i++ {
		lsn := p.pending[i]
		e := p.wal[lsn-1]
		if len(c.acked) > 0 {
			if last := c.acked[len(c.acked)-1]; !holds(p.wal, last) {
				c.violate("%s acknowledges lsn %d without the acknowledged commit lsn %d (tl %d, on %s)", n.ID, lsn, last.lsn, last.tl, last.on)
			}
		}
		a := ackedCommit{lsn: lsn, tl: e.tl, branch: e.branch, on: n.ID, at: c.now}
		if snap := c.store.snapshot(); len(p.syncNamesList()) == 0 && snap.Sync.Leader == n.ID && len(snap.Sync.Members) > 0 {
			a.why = fmt.Sprintf("acknowledged by %s alone while the sync record still named %v as holding every commit", n.ID, snap.Sync.Members)
		}
		c.acked = append(c.acked, a)
	}
	p.pending = p.pending[i:]
}

func holds(wal []walEntry, a ackedCommit) bool {
	return uint64(len(wal)) >= a.lsn && wal[a.lsn-1].branch == a.branch
}

// ---- invariants ---------------------------------------------------------

// check runs the safety invariants at the current instant:
//
//  1. at most one member's Postgres is writable and able to acknowledge
//     commits (a primary that is stopped, hung, or whose synchronous
//     standbys do not receive its WAL cannot);
//  2. a Postgres that becomes writable holds every acknowledged commit
//     (and acknowledge checks that each new acknowledgement's history
//     holds the previous one).
func (c *Cluster) check() {
	var acking []string
	for _, n := range c.nodes {
		w := n.pg.writable()
		if w && !n.simWritable {
			for _, a := range c.acked {
				if !holds(n.pg.wal, a) {
					c.violate("%s became writable without acknowledged commit lsn %d (tl %d, acknowledged by %s at %v%s)", n.ID, a.lsn, a.tl, a.on, a.at-epoch, prefixed("; ", a.why))
					break
				}
			}
			if snap := c.store.snapshot(); snap.Leader != n.ID && !c.store.down {
				c.logf("note: %s became writable while the store's leader key is %q (its cache is at revision %d, the store at %d)", n.ID, snap.Leader, n.cache.Rev, snap.Rev)
			}
		}
		n.simWritable = w
		if _, ok := c.syncFlush(n); ok {
			acking = append(acking, n.ID)
		}
	}
	if len(acking) > 1 {
		c.violate("two writable members can acknowledge commits: %s", strings.Join(acking, ", "))
	}
}

func (c *Cluster) violate(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	for _, v := range c.violations {
		if strings.HasSuffix(v, msg) {
			return
		}
	}
	c.violations = append(c.violations, fmt.Sprintf("%v: %s", c.Now(), msg))
	c.logf("VIOLATION: %s", msg)
}

// ---- log ----------------------------------------------------------------

func (c *Cluster) logf(format string, args ...any) { c.logNode("", fmt.Sprintf(format, args...)) }

// logNode appends to the log; a node repeating its previous line only
// counts the repeat.
func (c *Cluster) logNode(node, text string) {
	c.activity = c.now
	if c.quietLog {
		return
	}
	if node != "" {
		for i := len(c.log) - 1; i >= c.flushed; i-- {
			if e := c.log[i]; e.node == node {
				if e.text == text {
					e.repeat++
					e.last = c.now
					return
				}
				break
			}
		}
	}
	c.log = append(c.log, &logEntry{at: c.now, last: c.now, node: node, text: text})
}

// Flush returns the log since the last Flush.
func (c *Cluster) Flush() string {
	var b strings.Builder
	for _, e := range c.log[c.flushed:] {
		fmt.Fprintf(&b, "%6.1fs ", (e.at - epoch).Seconds())
		if e.node != "" {
			b.WriteString(e.node + ": ")
		}
		b.WriteString(e.text)
		if e.repeat > 0 {
			fmt.Fprintf(&b, " (×%d until %.1fs)", e.repeat+1, (e.last - epoch).Seconds())
		}
		b.WriteByte('\n')
	}
	c.flushed = len(c.log)
	return b.String()
}

// observed logs role changes.
func (c *Cluster) observed(n *Node, _ engine.Observation, plan engine.Plan) {
	if plan.Role != n.lastRole {
		if n.lastRole != "" {
			n.logf("role %s → %s", n.lastRole, plan.Role)
		}
		n.lastRole = plan.Role
	}
}

// acted logs an action and its outcome (for store writes, the request's).
func (c *Cluster) acted(n *Node, act engine.Action, err error) {
	n.logf("%s → %s", act, outcome(err))
}

// ---- clients and faults -------------------------------------------------

// Write has clients commit count transactions on every member whose
// Postgres takes writes (normally one: the leader). It returns where they
// went.
func (c *Cluster) Write(count int) []string {
	var on []string
	for _, n := range c.nodes {
		p := n.pg
		if !p.writable() || p.hung || p.readOnly || len(p.wal) == 0 {
			continue
		}
		for range count {
			p.wal = append(p.wal, p.wal[len(p.wal)-1])
			p.pending = append(p.pending, p.lsn())
		}
		on = append(on, n.ID)
	}
	return on
}

// fastStop is pg_ctl stop -m fast: a shutdown checkpoint, sent to every
// standby still connected, then the server is gone.
func (c *Cluster) fastStop(n *Node) {
	p := n.pg
	if !p.running {
		return
	}
	if !p.recovery && !p.hung && len(p.wal) > 0 {
		p.wal = append(p.wal, p.wal[len(p.wal)-1])
		for _, s := range c.nodes {
			if r := s.pg.recv; s.pg.running && s.pg.recovery && r.from == n.ID && c.flows(s, n) {
				c.pull(s, n)
			}
		}
	}
	n.stopPG()
}

func (c *Cluster) mustNode(id string) (*Node, error) {
	if n := c.node(id); n != nil {
		return n, nil
	}
	return nil, fmt.Errorf("no node %q", id)
}

// Kill is kill -9 of the agent and the postmaster (the host stays up, so
// its ports refuse connections).
func (c *Cluster) Kill(id string) error {
	n, err := c.mustNode(id)
	if err != nil {
		return err
	}
	n.agentUp, n.paused, n.wdArmed = false, false, false
	n.pg.stop()
	return nil
}

// Restart starts a stopped agent again (its Postgres stays as it is).
func (c *Cluster) Restart(id string) error {
	n, err := c.mustNode(id)
	if err != nil {
		return err
	}
	if n.agentUp {
		return fmt.Errorf("%s is running", id)
	}
	n.boot()
	return nil
}

// Stop is SIGTERM to the agent: a clean shutdown (agent.shutdown).
func (c *Cluster) Stop(id string) error {
	n, err := c.mustNode(id)
	if err != nil {
		return err
	}
	if !n.agentUp {
		return fmt.Errorf("%s is not running", id)
	}
	n.paused = false
	n.shutdown()
	return nil
}

// Pause is SIGSTOP to the agent (Postgres and the watchdog go on);
// Pause(id, false) is SIGCONT.
func (c *Cluster) Pause(id string, paused bool) error {
	n, err := c.mustNode(id)
	if err != nil {
		return err
	}
	n.paused = paused && n.agentUp
	return nil
}

// Hang is SIGSTOP to the postmaster and its backends; Hang(id, false) is
// SIGCONT.
func (c *Cluster) Hang(id string, hung bool) error {
	n, err := c.mustNode(id)
	if err != nil {
		return err
	}
	n.pg.hung = hung && n.pg.running
	if p := n.pg; !p.hung && p.promotePending && p.running && p.recovery {
		// The promote signal file waited for the server to run again.
		p.promotePending = false
		p.wal = append(p.wal, walEntry{tl: p.timeline() + 1, branch: c.newBranch()})
		p.recovery = false
		p.configurePrimary()
		p.recv = receiver{}
		c.logf("%s: postgres resumed and completed the pending promotion", id)
	}
	return nil
}

// Partition cuts the links between a and each of others ("store" for the
// store); with no others, a is cut from everything.
func (c *Cluster) Partition(a string, others ...string) error {
	if _, err := c.mustNode(a); err != nil {
		return err
	}
	if len(others) == 0 {
		others = append([]string{storeEndpoint}, c.Nodes()...)
	}
	for _, b := range others {
		if b != storeEndpoint {
			if _, err := c.mustNode(b); err != nil {
				return err
			}
		}
		if b != a {
			c.cuts[pair(a, b)] = true
		}
	}
	return nil
}

// Heal restores every link.
func (c *Cluster) Heal() { c.cuts = map[[2]string]bool{} }

// StoreDown stops the store (an etcd crash); StoreDown(false) brings it
// back.
func (c *Cluster) StoreDown(down bool) {
	if down {
		c.store.down = true
		return
	}
	if c.store.down {
		c.store.up(c.now)
	}
}

// DiskFull leaves a node's data directory with little (or plenty of)
// free space.
func (c *Cluster) DiskFull(id string, full bool) error {
	n, err := c.mustNode(id)
	if err != nil {
		return err
	}
	n.pg.diskFree = 1 << 30
	if full {
		n.pg.diskFree = 10 << 20
	}
	return nil
}

// Corrupt makes a node's WAL past its last checkpoint unusable: it cannot
// stream until it is re-cloned (rewinding finds nothing to fix).
func (c *Cluster) Corrupt(id string) error {
	n, err := c.mustNode(id)
	if err != nil {
		return err
	}
	n.pg.broken = true
	n.pg.recv.from = ""
	return nil
}

// RemoveWAL makes the WAL a standby needs next gone from its upstreams
// (the leader recycled it: more than wal_keep_size written while the
// standby was away, and no slot held it): it cannot stream again until it
// is re-cloned.
func (c *Cluster) RemoveWAL(id string) error {
	n, err := c.mustNode(id)
	if err != nil {
		return err
	}
	n.pg.upstreamLacks = true
	n.pg.recv.from = ""
	return nil
}

// LoseWAL removes a stopped or running node's WAL from before its last
// divergence: a rewind then cannot find the common checkpoint
// (pg_rewind's "could not find previous WAL record") and only a re-clone
// brings it back.
func (c *Cluster) LoseWAL(id string) error {
	n, err := c.mustNode(id)
	if err != nil {
		return err
	}
	n.pg.walGone = true
	return nil
}

// RequestRestart is `petrel config set`'s restart request for id
// (restart/<id>).
func (c *Cluster) RequestRestart(id string, req engine.RestartRequest) error {
	if _, err := c.mustNode(id); err != nil {
		return err
	}
	if c.store.down {
		return errUnreachable
	}
	return c.store.requestRestart(id, req)
}

// Pending makes id's Postgres report settings waiting for a restart:
// applied ones petrel-user.conf sets, foreign ones it does not (ALTER
// SYSTEM, a refused stored setting).
func (c *Cluster) Pending(id string, applied, foreign []string) error {
	n, err := c.mustNode(id)
	if err != nil {
		return err
	}
	n.pendingRestart = append(slices.Clone(applied), foreign...)
	n.petrelSettings = append([]string{"max_connections", "shared_buffers"}, applied...)
	return nil
}

// Switchover is `petrel failover [--to]`: the CLI writes a request naming
// the current leader.
func (c *Cluster) Switchover(to string, anyRegion bool) error {
	if c.store.down {
		return errUnreachable
	}
	snap := c.store.snapshot()
	if snap.Leader == "" {
		return fmt.Errorf("no leader")
	}
	return c.store.requestSwitchover(model.Switchover{From: snap.Leader, To: to, RequestedAt: c.wall(c.now), AllowSecondaryRegion: anyRegion})
}

// Leader is the leader key's holder ("" none).
func (c *Cluster) Leader() string { return c.store.snapshot().Leader }

// Status renders the cluster: the store's records and every member.
func (c *Cluster) Status() string {
	var b strings.Builder
	snap := c.store.snapshot()
	fmt.Fprintf(&b, "leader: %s  sync: %s %v", orDash(snap.Leader), orDash(snap.Sync.Leader), snap.Sync.Members)
	if sw := snap.Switchover; sw != nil {
		fmt.Fprintf(&b, "  switchover: %s→%s", sw.From, orDash(sw.Target))
	}
	if snap.Info != nil {
		fmt.Fprintf(&b, "  primary region: %s", snap.Info.PrimaryRegion)
	}
	if c.store.down {
		b.WriteString("  (store down)")
	}
	b.WriteByte('\n')
	for _, n := range c.nodes {
		p := n.pg
		state := "stopped"
		switch {
		case p.running && p.hung:
			state = "hung"
		case p.running && p.recovery:
			state = "standby"
		case p.running:
			state = "primary"
		case !p.initialized:
			state = "empty"
		}
		agent := "up"
		switch {
		case !n.agentUp:
			agent = "down"
		case n.paused:
			agent = "paused"
		}
		fmt.Fprintf(&b, "%s %s agent=%s role=%s pg=%s tl=%d lsn=%d", n.ID, n.Region, agent, n.role(), state, p.timeline(), p.lsn())
		if p.running && p.recovery {
			fmt.Fprintf(&b, " upstream=%s streaming=%v", orDash(p.conninfo), c.receiverStreaming(p))
		}
		if p.running && !p.recovery {
			fmt.Fprintf(&b, " sync-names=%q", p.syncValue)
		}
		if p.readOnly {
			b.WriteString(" read-only")
		}
		b.WriteByte('\n')
	}
	fmt.Fprintf(&b, "acknowledged: %d", len(c.acked))
	if len(c.acked) > 0 {
		last := c.acked[len(c.acked)-1]
		fmt.Fprintf(&b, " (last lsn %d tl %d on %s)", last.lsn, last.tl, last.on)
	}
	b.WriteByte('\n')
	return b.String()
}

func prefixed(p, s string) string {
	if s == "" {
		return ""
	}
	return p + s
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
