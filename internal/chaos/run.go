package chaos

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/anishathalye/porcupine"
	"github.com/jackc/pgx/v5"
	"github.com/petrel-db/petrel/internal/model"
	"github.com/petrel-db/petrel/internal/netsim"
	"github.com/petrel-db/petrel/internal/testcluster"
)

// NodeSpec is one node of the cluster under test.
type NodeSpec struct{ ID, Region string }

// DefaultNodes is three primary-region members: the quorum shape.
var DefaultNodes = []NodeSpec{{"scl1", "scl"}, {"scl2", "scl"}, {"scl3", "scl"}}

// Step is one fault of a schedule.
type Step struct {
	Fault string        `json:"fault"`
	Hold  time.Duration `json:"hold"` // how long the fault lasts before healing
}

// Config configures one run.
type Config struct {
	Dir        string // cluster directory (created; removed unless KeepDir or anomalies)
	Binary     string // petrel binary
	Seed       int64
	Nodes      []NodeSpec
	Target     string // "writer" (multi-host read-write DSN) or "proxy" (testcluster's ProxyDSN)
	Schedule   []Step
	Gap        time.Duration // quiet time after a heal once healthy
	Lease      time.Duration // the nodes' lease TTL (default 3s)
	Register   int           // clients per workload
	Bank       int
	Append     int
	ExtraFlags []string
	TmpfsSize  string // when set (root only), every node's data dir is a tmpfs of this size (enables disk-full-leader)
	KeepDir    bool
	Logf       func(format string, args ...any)
}

// StepResult is what happened to one step.
type StepResult struct {
	Fault        string        `json:"fault"`
	Desc         string        `json:"desc"`
	At           time.Duration `json:"at"`
	Hold         time.Duration `json:"hold"`
	HealthyAfter time.Duration `json:"healthy_after"` // from heal to healthy
	RolesAtHeal  string        `json:"roles_at_heal"` // every member's role/state just before healing
	Err          string        `json:"err,omitempty"`
}

// Anomaly is a broken promise.
type Anomaly struct {
	Kind   string `json:"kind"`
	Detail string `json:"detail"`
}

// Result of a run.
type Result struct {
	Seed      int64            `json:"seed"`
	Started   time.Time        `json:"started"`
	Duration  time.Duration    `json:"duration"`
	Dir       string           `json:"dir,omitempty"`
	Steps     []StepResult     `json:"steps"`
	Anomalies []Anomaly        `json:"anomalies"`
	Windows   []Window         `json:"windows"`
	Counts    map[string]int   `json:"counts"` // "<workload>/<outcome>"
	Linear    string           `json:"linearizable"`
	Notes     []string         `json:"notes,omitempty"`
	Probes    int              `json:"probe_acks"`
	Extra     map[string]int64 `json:"extra,omitempty"`
	// Archive is the end-of-run chain check of the WAL archive (every
	// run archives into <Dir>/archive).
	Archive string `json:"archive,omitempty"`
	// Interrupted: the run was stopped (Ctrl-C, -duration) mid-way. Health
	// checks then only produce notes: the cluster was being torn down, or
	// left mid-fault; the safety checks still count.
	Interrupted bool `json:"interrupted,omitempty"`
}

func (r *Result) anomaly(kind, format string, args ...any) {
	r.Anomalies = append(r.Anomalies, Anomaly{Kind: kind, Detail: fmt.Sprintf(format, args...)})
}

// unhealthy records a health failure: an anomaly, or a note when the run
// was interrupted (ctx ended).
func (r *Result) unhealthy(ctx context.Context, format string, args ...any) {
	if ctx.Err() != nil || r.Interrupted {
		r.Interrupted = true
		r.Notes = append(r.Notes, "interrupted: "+fmt.Sprintf(format, args...))
		return
	}
	r.anomaly("unhealthy", format, args...)
}

// RandomSchedule draws n steps from faults (all when empty).
func RandomSchedule(rng *rand.Rand, n int, faults []string, lease time.Duration) []Step {
	if len(faults) == 0 {
		faults = DefaultFaults()
	}
	var s []Step
	for i := 0; i < n; i++ {
		f := faults[rng.Intn(len(faults))]
		hold := lease + time.Duration(rng.Int63n(int64(2*lease)))
		s = append(s, Step{Fault: f, Hold: hold})
	}
	return s
}

// Run starts a cluster, runs the workloads through the schedule, and
// checks everything. An error means the harness could not run (cluster
// did not come up); broken promises are Result.Anomalies.
func Run(ctx context.Context, cfg Config) (*Result, error) {
	if len(cfg.Nodes) == 0 {
		cfg.Nodes = DefaultNodes
	}
	if cfg.Lease == 0 {
		cfg.Lease = 3 * time.Second
	}
	if cfg.Gap == 0 {
		cfg.Gap = 2 * time.Second
	}
	if cfg.Register+cfg.Bank+cfg.Append == 0 {
		cfg.Register, cfg.Bank, cfg.Append = 3, 2, 2
	}
	if cfg.Logf == nil {
		cfg.Logf = func(string, ...any) {}
	}
	if cfg.Target == "" {
		cfg.Target = "writer"
	}
	res := &Result{Seed: cfg.Seed, Started: time.Now(), Counts: map[string]int{}, Dir: cfg.Dir}
	rng := rand.New(rand.NewSource(cfg.Seed))

	c, err := testcluster.Start(ctx, testcluster.Options{Dir: cfg.Dir, Binary: cfg.Binary, World: &netsim.Matrix{}, ExtraFlags: cfg.ExtraFlags})
	if err != nil {
		return nil, fmt.Errorf("starting the cluster: %w", err)
	}
	keep := false // a harness error keeps the evidence too
	defer func() {
		c.Close()
		if len(res.Anomalies) == 0 && !cfg.KeepDir && !keep {
			_ = os.RemoveAll(cfg.Dir)
			res.Dir = ""
		}
	}()
	for _, n := range cfg.Nodes {
		if _, err := c.DefineNode(n.ID, n.Region); err != nil {
			return nil, err
		}
	}
	acfg := archiveConfig(cfg.Dir)
	if err := configureArchive(ctx, c, acfg); err != nil {
		return nil, err
	}
	if cfg.TmpfsSize != "" {
		for _, n := range cfg.Nodes {
			if err := c.MountTmpfs(ctx, n.ID, cfg.TmpfsSize); err != nil {
				return nil, err
			}
		}
	}
	for _, n := range cfg.Nodes {
		if err := c.StartNode(n.ID); err != nil {
			return nil, err
		}
	}
	uctx, cancel := context.WithTimeout(ctx, 4*time.Minute)
	defer cancel()
	if err := waitHealthy(uctx, c); err != nil {
		keep = true
		return nil, fmt.Errorf("cluster did not come up: %w; roles: %s; dir kept: %s", err, roles(c), cfg.Dir)
	}
	leader, err := c.WaitLeader(uctx, "")
	if err != nil {
		return nil, err
	}
	if err := c.Exec(uctx, leader, Schema+seedSQL()); err != nil {
		return nil, fmt.Errorf("creating the schema: %w", err)
	}
	cfg.Logf("cluster up, leader %s", leader)

	h := NewHistory()
	dsn, err := targetDSN(c, cfg.Target, rng)
	if err != nil {
		return nil, err
	}
	wctx, stopWork := context.WithCancel(ctx)
	var wg sync.WaitGroup
	id := 0
	for kind, n := range map[string]int{"register": cfg.Register, "bank": cfg.Bank, "append": cfg.Append} {
		for i := 0; i < n; i++ {
			cl := &client{id: id, kind: kind, dsn: dsn, h: h, rng: rand.New(rand.NewSource(cfg.Seed + int64(id) + 1)), next: int64(id) << 40}
			id++
			wg.Add(1)
			go func() { defer wg.Done(); cl.run(wctx) }()
		}
	}
	prober := NewProber(h, c.DSN)
	wg.Add(1)
	go func() { defer wg.Done(); prober.Run(wctx, c.IDs()) }()

	env := &Env{C: c, Binary: cfg.Binary, Rng: rng, Lease: cfg.Lease, Logf: cfg.Logf}
	hold(ctx, 3*time.Second)
	for _, st := range cfg.Schedule {
		if ctx.Err() != nil {
			break
		}
		sr := runStep(ctx, env, st, h, res)
		res.Steps = append(res.Steps, sr)
		hold(ctx, cfg.Gap)
	}
	hold(ctx, time.Second)
	stopWork()
	wg.Wait()

	ops := h.Ops()
	for _, op := range ops {
		res.Counts[op.Workload+"/"+string(op.Outcome)]++
	}
	// Windows: attribute each to the step running then.
	res.Windows = Unavailability(ops, time.Second)
	for i := range res.Windows {
		for _, s := range res.Steps {
			if res.Windows[i].To >= s.At && res.Windows[i].From <= s.At+s.Hold+s.HealthyAfter+cfg.Gap {
				res.Windows[i].Fault = s.Fault
			}
		}
	}
	finalWait := 3 * time.Minute
	if ctx.Err() != nil {
		finalWait = 30 * time.Second // interrupted: check what can be checked, quickly
		res.Interrupted = true
	}
	fctx, fcancel := context.WithTimeout(context.Background(), finalWait)
	defer fcancel()
	finalChecks(fctx, c, cfg, h, ops, prober.Acks(), res)
	if leader := primary(c); leader != "" {
		checkArchive(fctx, c, acfg, leader, res)
	}
	res.Duration = time.Since(res.Started)
	if len(res.Anomalies) > 0 {
		// Keep the evidence next to the agents' logs.
		if b, err := json.Marshal(struct {
			Ops  []Op  `json:"ops"`
			Acks []Ack `json:"probe_acks"`
		}{ops, prober.Acks()}); err == nil {
			_ = os.WriteFile(filepath.Join(cfg.Dir, "history.json"), b, 0o644)
		}
		res.Notes = append(res.Notes, "history in "+filepath.Join(cfg.Dir, "history.json")+"; run start "+h.start.Format(time.RFC3339Nano))
	}
	return res, nil
}

func targetDSN(c *testcluster.Cluster, target string, rng *rand.Rand) (func() string, error) {
	switch target {
	case "writer":
		return c.WriterDSN, nil
	case "proxy":
		p, ok := any(c).(interface{ ProxyDSN(string) string })
		if !ok {
			return nil, errors.New("this testcluster has no ProxyDSN: use -target writer")
		}
		var mu sync.Mutex
		return func() string {
			ids := c.IDs()
			slices.Sort(ids)
			mu.Lock()
			id := ids[rng.Intn(len(ids))]
			mu.Unlock()
			return p.ProxyDSN(id)
		}, nil
	}
	return nil, fmt.Errorf("unknown target %q (writer or proxy)", target)
}

func runStep(ctx context.Context, env *Env, st Step, h *History, res *Result) StepResult {
	sr := StepResult{Fault: st.Fault, At: h.Now(), Hold: st.Hold}
	f, ok := FaultByName(st.Fault)
	if !ok {
		sr.Err = "unknown fault"
		return sr
	}
	// Start every fault from a healthy cluster.
	pctx, cancel := context.WithTimeout(ctx, 90*time.Second)
	if err := waitHealthy(pctx, env.C); err != nil {
		res.unhealthy(ctx, "before %s: %v (%s)", st.Fault, err, roles(env.C))
	}
	cancel()
	sr.At = h.Now()
	desc, heal, err := f.Inject(ctx, env)
	sr.Desc = desc
	env.Logf("[%v] inject %s: %s", sr.At.Round(time.Millisecond), st.Fault, desc)
	if err != nil {
		sr.Err = err.Error()
	}
	hold(ctx, st.Hold)
	sr.RolesAtHeal = roles(env.C)
	healAt := h.Now()
	if heal != nil {
		hctx, cancel := context.WithTimeout(ctx, 60*time.Second)
		if err := heal(hctx); err != nil {
			sr.Err = strings.TrimSpace(sr.Err + " heal: " + err.Error())
		}
		cancel()
	}
	wctx, cancel2 := context.WithTimeout(ctx, 90*time.Second)
	defer cancel2()
	if err := waitHealthy(wctx, env.C); err != nil {
		res.unhealthy(ctx, "90s after healing %s (%s): %v; roles: %s", st.Fault, desc, err, roles(env.C))
	}
	sr.HealthyAfter = h.Now() - healAt
	env.Logf("[%v] before healing: %s", healAt.Round(time.Millisecond), sr.RolesAtHeal)
	env.Logf("[%v] healed %s; healthy after %v (%s)", h.Now().Round(time.Millisecond), st.Fault, sr.HealthyAfter.Round(time.Millisecond), roles(env.C))
	return sr
}

func roles(c *testcluster.Cluster) string {
	ids := c.IDs()
	slices.Sort(ids)
	var s []string
	for _, id := range ids {
		st, err := c.Status(id)
		if err != nil {
			s = append(s, id+"=offline")
			continue
		}
		x := id + "=" + st.Role + "/" + st.State
		if st.Role == model.RoleReplica && !st.Streaming {
			x += "(not streaming)"
		}
		s = append(s, x)
	}
	return strings.Join(s, " ")
}

// healthy: one primary, every other member a streaming replica.
func healthy(c *testcluster.Cluster) bool {
	prim := 0
	for _, id := range c.IDs() {
		st, err := c.Status(id)
		if err != nil {
			return false
		}
		switch {
		case st.Role == model.RolePrimary:
			prim++
		case st.Role == model.RoleReplica && st.Streaming:
		default:
			return false
		}
	}
	return prim == 1
}

// primary is a member whose /status says primary ("" when none does).
func primary(c *testcluster.Cluster) string {
	leader := ""
	for _, id := range c.IDs() {
		if c.Role(id) == model.RolePrimary {
			leader = id
		}
	}
	return leader
}

func waitHealthy(ctx context.Context, c *testcluster.Cluster) error {
	return testcluster.WaitFor(ctx, "a healthy cluster", func() bool { return healthy(c) })
}

func queryInts(ctx context.Context, dsn, sql string) ([]int64, error) {
	qctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	conn, err := pgx.Connect(qctx, dsn)
	if err != nil {
		return nil, err
	}
	defer conn.Close(context.Background())
	rows, err := conn.Query(qctx, sql)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, pgx.RowTo[int64])
}

func finalChecks(ctx context.Context, c *testcluster.Cluster, cfg Config, h *History, ops []Op, acks []Ack, res *Result) {
	if err := waitHealthy(ctx, c); err != nil {
		res.unhealthy(ctx, "at the end: %v; roles: %s", err, roles(c))
	}
	leader := primary(c)
	if leader == "" {
		res.unhealthy(ctx, "no leader at the end; the data checks cannot run")
		return
	}
	// Catch-up: wait (a minute at most per member) until every
	// acknowledged append is visible; a member still missing some after
	// that is reported below with the ids.
	acked := AckedAppends(ops)
	for _, id := range c.IDs() {
		wctx, cancel := context.WithTimeout(ctx, time.Minute)
		err := testcluster.WaitFor(wctx, id+" to catch up", func() bool {
			have, err := queryInts(wctx, c.DSN(id), "SELECT id FROM app")
			return err == nil && len(Missing(acked, have)) == 0
		})
		cancel()
		if err != nil {
			res.anomaly("lagging", "%s still lacks acknowledged appends after a minute (leader %s; roles %s)", id, leader, roles(c))
		}
	}

	// Register.
	lin, n := CheckRegister(ops, 2*time.Minute)
	switch lin {
	case porcupine.Ok:
		res.Linear = fmt.Sprintf("ok (%d ops)", n)
	case porcupine.Illegal:
		res.Linear = fmt.Sprintf("ILLEGAL (%d ops)", n)
		res.anomaly("linearizability", "the register history (%d ops) is not linearizable", n)
	default:
		res.Linear = fmt.Sprintf("unknown: checker timed out (%d ops)", n)
		res.Notes = append(res.Notes, "linearizability check timed out")
	}

	// Bank.
	for _, op := range CheckBankReads(ops) {
		res.anomaly("bank", "client %d read total %d min %d at %v", op.Client, op.Result, op.Arg1, op.Return)
	}
	want := int64(Accounts * InitialBalance)
	ids := c.IDs()
	slices.Sort(ids)
	for _, id := range ids {
		got, err := queryInts(ctx, c.DSN(id), "SELECT sum(balance)::bigint FROM accounts UNION ALL SELECT min(balance) FROM accounts")
		if err != nil || len(got) != 2 {
			res.anomaly("bank", "reading the final balances on %s: %v", id, err)
		} else if got[0] != want || got[1] < 0 {
			res.anomaly("bank", "final state on %s: total %d (want %d), min %d", id, got[0], want, got[1])
		}
		have, err := queryInts(ctx, c.DSN(id), "SELECT id FROM app")
		if err != nil {
			res.anomaly("append", "reading appends on %s: %v", id, err)
			continue
		}
		if miss := Missing(acked, have); len(miss) > 0 {
			res.anomaly("lost-write", "%d of %d acknowledged appends missing on %s: %v", len(miss), len(acked), id, head(miss, 10))
		}
	}

	// Split brain.
	res.Probes = len(acks)
	for _, o := range Overlaps(acks, 500*time.Millisecond) {
		res.anomaly("split-brain", "%s acked seq %d in [%v,%v] and %s acked seq %d in [%v,%v]",
			o.A.Node, o.A.Seq, o.A.Call, o.A.Return, o.B.Node, o.B.Seq, o.B.Call, o.B.Return)
	}
	var lost []string
	conn, err := pgx.Connect(ctx, c.DSN(leader))
	if err == nil {
		defer conn.Close(context.Background())
		rows, err := conn.Query(ctx, "SELECT node, seq FROM sb_probe")
		if err == nil {
			have := map[string]bool{}
			for rows.Next() {
				var node string
				var seq int64
				if rows.Scan(&node, &seq) == nil {
					have[fmt.Sprintf("%s/%d", node, seq)] = true
				}
			}
			rows.Close()
			for _, a := range acks {
				if k := fmt.Sprintf("%s/%d", a.Node, a.Seq); !have[k] {
					lost = append(lost, fmt.Sprintf("%s@%v", k, a.Return.Round(time.Millisecond)))
				}
			}
		}
	}
	if len(lost) > 0 {
		res.anomaly("lost-write", "%d acknowledged split-brain probes missing on the final leader %s: %v", len(lost), leader, headS(lost, 10))
	}
	_ = h
}

func head(x []int64, n int) []int64 {
	if len(x) > n {
		return x[:n]
	}
	return x
}

func headS(x []string, n int) []string {
	if len(x) > n {
		return x[:n]
	}
	return x
}

// LogTail returns the last n lines of node id's agent log in dir.
func LogTail(dir, id string, n int) string {
	b, _ := os.ReadFile(filepath.Join(dir, id+".log"))
	lines := strings.Split(string(b), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
