// Package localworld is the engine behind `petrel up`: it runs a whole
// petrel cluster on this machine, the way a platform would run it on
// several machines.
//
// Everything lives in one directory (Options.Dir, default ./petrel-data):
//
//	secrets.env     0600, SU_PASSWORD / REPL_PASSWORD / OPERATOR_PASSWORD,
//	                generated once with crypto/rand and reused afterwards
//	world.json      the layout chosen on the first run (cluster, nodes,
//	                ports); later runs on the same directory reuse it
//	cluster.json    0600, how to reach the cluster (see ClusterFile);
//	                read by `petrel status` and by tests and benchmarks
//	up.pid          the pid of the running `petrel up` (see Down)
//	up.sock         control socket of the running `petrel up` (see Scale, Remove)
//	etcd/           the embedded single-member etcd's data
//	backups/        the cluster's backups and WAL archive (a file store; see internal/backup)
//	nodes/<id>/     each node's data dir; agent.log holds its output and
//	                dialmap.json its link addresses (see below)
//
// Regions are far apart: unless NoLinks, a netsim.World in this process
// gives every node its own user-space link to every other node's Postgres,
// API and proxy and to etcd (a service in the primary region), with the
// latency matrix's one-way delay between their regions (netsim.DefaultMatrix,
// with Options.Latency on top). Within a region with no local delay (the
// default) there is no link: members dial each other directly. Each node gets --dial-map nodes/<id>/dialmap.json
// and its etcd endpoint through its link; status, clients and tests use the
// direct addresses. Scale adds nodes to a running world (new links for
// everyone, dial maps rewritten, agents reload them); Remove takes one out.
//
// Port scheme, from BasePort B (default 5440), for node i (0-based, in the
// order of --regions): Postgres B+10+i, HTTP API B+30+i, leader proxy
// B+50+i; etcd clients B+90, etcd peers B+91. So at most 20 nodes, and two
// worlds with base ports 100 apart never collide.
//
// Nodes are named <region><n> (scl1, scl2, ord1) and run as child
// processes (`petrel node ...`), each in its own process group so a Ctrl-C
// on the terminal reaches only `petrel up`, which then stops them in order
// (replicas first, then the primary; SIGTERM, SIGKILL after 30 s). A node
// that exits on its own is restarted after one second, as a platform
// restarts a crashed machine.
//
// A rerun on an existing directory resumes the same nodes with the same
// ports; --regions, --cluster, --primary-region and --base-port given then
// are ignored with a warning (remove the directory to start another
// layout).
package localworld

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/petrel-db/petrel/internal/api"
	"github.com/petrel-db/petrel/internal/etcdembed"
	"github.com/petrel-db/petrel/internal/model"
	"github.com/petrel-db/petrel/internal/netsim"
	"github.com/petrel-db/petrel/internal/statusview"
)

// Defaults.
const (
	DefaultDir      = "./petrel-data"
	DefaultCluster  = "petrel"
	DefaultBasePort = 5440
	DefaultRegions  = "scl=2,ord=1"

	// Port offsets from BasePort.
	pgPortOffset    = 10
	apiPortOffset   = 30
	proxyPortOffset = 50
	etcdClientOff   = 90
	etcdPeerOff     = 91
	maxNodes        = 20

	// ReadyTimeout bounds the wait for a primary before the status table
	// is printed.
	ReadyTimeout = 90 * time.Second
	// StopTimeout is how long a node gets to exit after SIGTERM.
	StopTimeout = 30 * time.Second
	// RestartDelay is the pause before restarting a node that exited.
	RestartDelay = time.Second
)

// RegionCount asks for Count nodes in Region.
type RegionCount struct {
	Region string
	Count  int
}

var regionRE = regexp.MustCompile(`^[a-z][a-z0-9]{0,15}$`)

// ParseRegions parses "scl=2,ord=1" (a bare "scl" means one node).
func ParseRegions(s string) ([]RegionCount, error) {
	var out []RegionCount
	seen := map[string]bool{}
	for _, part := range strings.Split(s, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		name, cnt, hasCount := strings.Cut(part, "=")
		name = strings.TrimSpace(name)
		n := 1
		if hasCount {
			var err error
			n, err = strconv.Atoi(strings.TrimSpace(cnt))
			if err != nil || n < 1 {
				return nil, fmt.Errorf("regions %q: %q needs a positive count, e.g. scl=2", s, part)
			}
		}
		if !regionRE.MatchString(name) {
			return nil, fmt.Errorf("regions %q: region %q must be lowercase letters and digits, starting with a letter", s, name)
		}
		if seen[name] {
			return nil, fmt.Errorf("regions %q: region %q given twice", s, name)
		}
		seen[name] = true
		out = append(out, RegionCount{Region: name, Count: n})
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("regions %q: want e.g. scl=2,ord=1", s)
	}
	return out, nil
}

// Options configure Run. Zero values mean the defaults.
type Options struct {
	Dir           string        // default ./petrel-data
	Regions       []RegionCount // default scl=2,ord=1; ignored when Dir already holds a world
	PrimaryRegion string        // default the first region
	Cluster       string        // default "petrel"
	Binary        string        // the petrel binary run as `<Binary> node ...`; default os.Executable()
	BasePort      int           // default 5440
	Stdout        io.Writer     // the status table and connection info; default os.Stdout
	Logger        *slog.Logger  // progress and warnings; default text on stderr
	// Latency overrides the default latency matrix (see ParseLatency);
	// it is kept in world.json for later runs.
	Latency string
	// NoLinks runs the nodes without user-space links: every address is
	// dialled directly (kept in world.json; a later Latency re-enables).
	NoLinks bool
	// App is the command (run with /bin/sh -c) started as the app
	// instance of every region behind its edge; "" runs the demo app
	// (`petrel demo-app`). Its environment: PORT, FLY_REGION,
	// PETREL_REGION, PRIMARY_REGION, DATABASE_URL (the leader proxy in the
	// primary region, the region's replica elsewhere), PETREL_LEADER_URL,
	// PETREL_INSTANCE, PETREL_REGIONS.
	App string
	// NoEdges runs no edges and no apps (kept in world.json).
	NoEdges bool
	// OnReady, if set, is called once a primary is seen (or with the
	// cluster file anyway when ReadyTimeout passes without one; ok says
	// which).
	OnReady func(cf *ClusterFile, ok bool)
}

var clusterRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$`)

// Run starts (or resumes) the local cluster in opts.Dir and keeps it
// running until ctx is cancelled; it then stops every node and etcd.
func Run(ctx context.Context, opts Options) error {
	if opts.Dir == "" {
		opts.Dir = DefaultDir
	}
	if opts.Stdout == nil {
		opts.Stdout = os.Stdout
	}
	lg := opts.Logger
	if lg == nil {
		lg = slog.New(slog.NewTextHandler(os.Stderr, nil))
	}
	if opts.Binary == "" {
		exe, err := os.Executable()
		if err != nil {
			return fmt.Errorf("finding the petrel binary: %w", err)
		}
		opts.Binary = exe
	}
	bin, err := exec.LookPath(opts.Binary)
	if err != nil {
		return fmt.Errorf("petrel binary %q: %w", opts.Binary, err)
	}
	if bin, err = filepath.Abs(bin); err != nil {
		return err
	}
	shownDir := opts.Dir
	dir, err := filepath.Abs(opts.Dir)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("creating %s: %w", dir, err)
	}

	pidFile, err := claimPIDFile(dir)
	if err != nil {
		return err
	}
	defer func() {
		if pid, err := readPID(pidFile); err == nil && pid == os.Getpid() {
			os.Remove(pidFile)
		}
	}()

	w, err := loadOrCreateWorld(dir, opts, lg)
	if err != nil {
		return err
	}

	secretsPath, suPW, err := ensureSecrets(dir)
	if err != nil {
		return err
	}
	edgeSecret, appPW, err := ensureExtraSecrets(secretsPath)
	if err != nil {
		return err
	}

	// Stop agents that an earlier `petrel up` left behind if it was
	// killed, before checking that the ports are free.
	for _, n := range w.Nodes {
		nd := filepath.Join(dir, "nodes", n.ID)
		if pid, ok := killStaleAgent(filepath.Join(nd, "agent.pid"), nd); ok {
			lg.Warn("stopped a node left running by an earlier petrel up", "node", n.ID, "pid", pid)
		}
	}
	if err := checkPorts(w); err != nil {
		return err
	}

	etcdURL := fmt.Sprintf("http://127.0.0.1:%d", w.EtcdClientPort)
	lg.Info("starting embedded etcd", "endpoint", etcdURL, "dir", filepath.Join(shownDir, "etcd"))
	etcd, err := etcdembed.Start(ctx, etcdembed.Options{
		Dir:       filepath.Join(dir, "etcd"),
		Name:      "petrel-etcd",
		ClientURL: etcdURL,
		PeerURL:   fmt.Sprintf("http://127.0.0.1:%d", w.EtcdPeerPort),
		Logger:    lg,
	})
	if err != nil {
		return err
	}
	defer etcd.Close()

	if err := ensureBackupConfig(ctx, etcd.Endpoints(), w.Cluster, dir); err != nil {
		return err
	}
	if err := claimSeed(ctx, etcd.Endpoints(), w, lg); err != nil {
		return err
	}
	caFP, apiClient, err := clusterCA(ctx, etcd.Endpoints(), w.Cluster, suPW, dir)
	if err != nil {
		return fmt.Errorf("creating the cluster CA: %w", err)
	}
	cf := clusterFileFor(w, etcd.Endpoints(), suPW, caFP)
	addDatabaseURL(cf, dir) // the operator's URL through the leader proxy (dburl.go)
	if err := writeJSON(filepath.Join(dir, ClusterFileName), cf, 0o600); err != nil {
		return fmt.Errorf("writing cluster.json: %w", err)
	}

	var nw *netsim.World
	if !w.NoLinks {
		m, err := matrixFor(w.Latency)
		if err != nil {
			return err
		}
		netCtx, stopNet := context.WithCancel(context.Background())
		defer stopNet()
		nw = netsim.NewWorld(netCtx, m, nil)
		defer nw.Close()
		// Members of one region with no local delay dial each other
		// directly: a link there would only cost a hop (and hide a dead
		// member's refusal); `petrel up` injects no faults inside a region.
		nw.SetDirectWhenFree(true)
		if err := nw.AddService(EtcdHost, w.PrimaryRegion, strings.TrimPrefix(etcdURL, "http://")); err != nil {
			return fmt.Errorf("adding etcd to the local network: %w", err)
		}
		for _, n := range w.Nodes {
			if err := addToNet(nw, n); err != nil {
				return err
			}
		}
		lg.Info("regions are linked with one-way delays (--no-links for none)", "latency", describeMatrix(m, w.Nodes))
	}
	lv := &live{
		dir: dir, shownDir: shownDir, bin: bin, secrets: secretsPath, suPW: suPW, caFP: caFP, api: apiClient,
		etcdURL: etcdURL, etcdEndpoints: etcd.Endpoints(), env: childEnv(), lg: lg, net: nw,
		w: w, children: map[string]*child{}, appCmd: opts.App,
	}
	if err := addEdgesToNet(lv); err != nil {
		return err
	}
	if err := writeDialMaps(dir, nw, w.Nodes); err != nil {
		return err
	}
	if err := writeEdgeDialMaps(lv); err != nil {
		return err
	}
	stopControl, err := lv.serveControl(ctx)
	if err != nil {
		return err
	}
	defer stopControl()
	lv.mu.Lock()
	for _, n := range w.Nodes {
		if err := lv.startLocked(n); err != nil {
			lv.mu.Unlock()
			_, cs := lv.snapshot()
			stopAll(cs, nil, lg)
			return err
		}
	}
	if err := lv.startEdgesLocked(edgeSecret); err != nil {
		lv.mu.Unlock()
		_, cs := lv.snapshot()
		stopAll(cs, nil, lg)
		return err
	}
	lv.mu.Unlock()
	lg.Info("started nodes", "cluster", w.Cluster, "nodes", len(w.Nodes), "logs", filepath.Join(shownDir, "nodes", "<id>", "agent.log"))

	targets := statusview.TargetsFromMembers(cf.Nodes)
	ready := waitForPrimary(ctx, apiClient, targets, lg)
	appsDone := make(chan struct{})
	if ready && len(edgesFor(w)) > 0 {
		// The app gets its own role and database, like `petrel attach`;
		// then one instance per region starts behind its edge.
		go func() {
			defer close(appsDone)
			if err := ensureAppDatabase(ctx, cf.SuperuserDSN, appPW); err != nil {
				if ctx.Err() == nil {
					lg.Error("apps not started", "err", err)
				}
				return
			}
			lv.mu.Lock()
			defer lv.mu.Unlock()
			if ctx.Err() != nil {
				return // stopping: start nothing new
			}
			if err := lv.startAppsLocked(appPW); err != nil {
				lg.Error("apps not started", "err", err)
			}
		}()
	} else {
		close(appsDone)
	}
	if ctx.Err() == nil {
		sts := statusview.Collect(ctx, apiClient, targets)
		printReady(opts.Stdout, shownDir, cf, sts, ready)
		if opts.OnReady != nil {
			opts.OnReady(cf, ready)
		}
		<-ctx.Done()
	}

	lg.Info("stopping nodes")
	<-appsDone
	stopControl()
	lv.mu.Lock() // no scale or remove from now on
	defer lv.mu.Unlock()
	// Apps and edges first (they need the nodes, not the other way round).
	var front []*child
	for id, c := range lv.children {
		if strings.HasPrefix(id, "app-") || strings.HasPrefix(id, "edge-") {
			front = append(front, c)
		}
	}
	stopAll(front, nil, lg)
	cs := make([]*child, 0, len(lv.children))
	for _, n := range lv.w.Nodes {
		if c := lv.children[n.ID]; c != nil {
			cs = append(cs, c)
		}
	}
	stctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	sts := statusview.Collect(stctx, apiClient, statusview.TargetsFromMembers(clusterFileFor(lv.w, etcd.Endpoints(), suPW, caFP).Nodes))
	cancel()
	stopAll(cs, sts, lg)
	etcd.Close()
	lg.Info("stopped", "dir", shownDir)
	return nil
}

func loadOrCreateWorld(dir string, opts Options, lg *slog.Logger) (*world, error) {
	w, err := loadWorld(dir)
	if err == nil {
		var ignored []string
		if opts.Regions != nil {
			ignored = append(ignored, "--regions")
		}
		if opts.Cluster != "" && opts.Cluster != w.Cluster {
			ignored = append(ignored, "--cluster")
		}
		if opts.PrimaryRegion != "" && opts.PrimaryRegion != w.PrimaryRegion {
			ignored = append(ignored, "--primary-region")
		}
		if opts.BasePort != 0 && opts.BasePort != w.BasePort {
			ignored = append(ignored, "--base-port")
		}
		if opts.NoEdges && !w.NoEdges {
			w.NoEdges = true
			if err := writeJSON(filepath.Join(dir, WorldFileName), w, 0o600); err != nil {
				return nil, fmt.Errorf("writing world.json: %w", err)
			}
		}
		if opts.Latency != "" || opts.NoLinks {
			if opts.Latency != "" {
				if _, err := matrixFor(opts.Latency); err != nil {
					return nil, err
				}
				w.Latency, w.NoLinks = opts.Latency, false
			}
			if opts.NoLinks {
				w.NoLinks = true
			}
			if err := writeJSON(filepath.Join(dir, WorldFileName), w, 0o600); err != nil {
				return nil, fmt.Errorf("writing world.json: %w", err)
			}
		}
		if len(ignored) > 0 {
			lg.Warn("resuming the existing cluster in "+dir+"; ignoring "+strings.Join(ignored, ", ")+" (remove the directory to start a different one)",
				"cluster", w.Cluster, "nodes", nodeIDs(w))
		} else {
			lg.Info("resuming existing cluster", "cluster", w.Cluster, "nodes", nodeIDs(w))
		}
		return w, nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return nil, err
	}

	regions := opts.Regions
	if regions == nil {
		regions, _ = ParseRegions(DefaultRegions)
	}
	if len(regions) == 0 {
		return nil, errors.New("no regions given: want e.g. --regions scl=2,ord=1")
	}
	if _, err := matrixFor(opts.Latency); err != nil {
		return nil, err
	}
	w = &world{Cluster: opts.Cluster, PrimaryRegion: opts.PrimaryRegion, BasePort: opts.BasePort, Latency: opts.Latency, NoLinks: opts.NoLinks, NoEdges: opts.NoEdges}
	if w.Cluster == "" {
		w.Cluster = DefaultCluster
	}
	if !clusterRE.MatchString(w.Cluster) {
		return nil, fmt.Errorf("cluster name %q: use letters, digits, '.', '_' or '-'", w.Cluster)
	}
	if w.PrimaryRegion == "" {
		w.PrimaryRegion = regions[0].Region
	}
	if !slices.ContainsFunc(regions, func(r RegionCount) bool { return r.Region == w.PrimaryRegion }) {
		return nil, fmt.Errorf("primary region %q has no nodes: add it to --regions (e.g. --regions %s=2,...)", w.PrimaryRegion, w.PrimaryRegion)
	}
	if w.BasePort == 0 {
		w.BasePort = DefaultBasePort
	}
	if w.BasePort < 1024 || w.BasePort+etcdPeerOff > 65535 {
		return nil, fmt.Errorf("base port %d: want 1024..%d", w.BasePort, 65535-etcdPeerOff)
	}
	w.EtcdClientPort = w.BasePort + etcdClientOff
	w.EtcdPeerPort = w.BasePort + etcdPeerOff
	i := 0
	for _, r := range regions {
		if r.Count < 1 {
			return nil, fmt.Errorf("region %s: count %d, want at least 1", r.Region, r.Count)
		}
		for k := 1; k <= r.Count; k++ {
			if i >= maxNodes {
				return nil, fmt.Errorf("too many nodes: at most %d", maxNodes)
			}
			w.Nodes = append(w.Nodes, worldNode{
				ID:        fmt.Sprintf("%s%d", r.Region, k),
				Region:    r.Region,
				PGPort:    w.BasePort + pgPortOffset + i,
				APIPort:   w.BasePort + apiPortOffset + i,
				ProxyPort: w.BasePort + proxyPortOffset + i,
			})
			i++
		}
	}
	if err := writeJSON(filepath.Join(dir, WorldFileName), w, 0o600); err != nil {
		return nil, fmt.Errorf("writing world.json: %w", err)
	}
	lg.Info("creating new cluster", "cluster", w.Cluster, "primary_region", w.PrimaryRegion, "nodes", nodeIDs(w))
	return w, nil
}

func nodeIDs(w *world) string {
	ids := make([]string, len(w.Nodes))
	for i, n := range w.Nodes {
		ids[i] = n.ID
	}
	return strings.Join(ids, ",")
}

// checkPorts fails early, with a useful message, when a port is taken.
func checkPorts(w *world) error {
	if err := checkFree([]portUse{{w.EtcdClientPort, "etcd client"}, {w.EtcdPeerPort, "etcd peer"}}); err != nil {
		return err
	}
	if err := checkFree(edgePortUses(w)); err != nil {
		return err
	}
	return checkNodePorts(w.Nodes)
}

type portUse struct {
	port int
	what string
}

// checkNodePorts checks the ports of nodes are free.
func checkNodePorts(nodes []worldNode) error {
	type p = portUse
	var ps []p
	for _, n := range nodes {
		ps = append(ps, p{n.PGPort, n.ID + " postgres"}, p{n.APIPort, n.ID + " api"})
		if n.ProxyPort > 0 {
			ps = append(ps, p{n.ProxyPort, n.ID + " proxy"})
		}
	}
	return checkFree(ps)
}

func checkFree(ps []portUse) error {
	for _, x := range ps {
		l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", x.port))
		if err != nil {
			return fmt.Errorf("port %d (%s) is in use: stop whatever holds it (another petrel up? `petrel down --dir DIR`), or start a new directory with another --base-port", x.port, x.what)
		}
		l.Close()
	}
	return nil
}

func clusterFileFor(w *world, endpoints []string, suPW, caFP string) *ClusterFile {
	cf := &ClusterFile{Cluster: w.Cluster, Etcd: endpoints, PrimaryRegion: w.PrimaryRegion, CAFingerprint: caFP}
	hosts := make([]string, 0, len(w.Nodes))
	for _, n := range w.Nodes {
		m := model.Member{
			ID:           n.ID,
			Region:       n.Region,
			APIURL:       fmt.Sprintf("https://127.0.0.1:%d", n.APIPort),
			PostgresAddr: fmt.Sprintf("127.0.0.1:%d", n.PGPort),
		}
		if n.ProxyPort > 0 {
			m.ProxyAddr = fmt.Sprintf("127.0.0.1:%d", n.ProxyPort)
		}
		cf.Nodes = append(cf.Nodes, m)
		hosts = append(hosts, m.PostgresAddr)
	}
	u := url.URL{
		Scheme:   "postgres",
		User:     url.UserPassword("postgres", suPW),
		Host:     strings.Join(hosts, ","),
		Path:     "/postgres",
		RawQuery: "target_session_attrs=read-write&connect_timeout=2",
	}
	cf.SuperuserDSN = u.String()
	cf.Edges = edgesFor(w)
	if len(cf.Nodes) > 0 {
		cf.DashboardURL = strings.TrimRight(cf.Nodes[0].APIURL, "/") + "/dashboard/"
	}
	return cf
}

// childEnv is our environment minus the password variables: the nodes
// must use the secrets file (config.LoadSecrets prefers the environment).
func childEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		switch k {
		case "SU_PASSWORD", "REPL_PASSWORD", "OPERATOR_PASSWORD":
			continue
		}
		env = append(env, kv)
	}
	return env
}

func waitForPrimary(ctx context.Context, client *api.Client, targets []statusview.Target, lg *slog.Logger) bool {
	lg.Info("waiting for a primary and streaming replicas", "timeout", ReadyTimeout)
	deadline := time.NewTimer(ReadyTimeout)
	defer deadline.Stop()
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	var primarySince time.Time
	for {
		// Ready: a primary and every other member a streaming replica.
		// Once a primary exists, a member still cloning after a minute
		// does not hold the table back.
		sts := statusview.Collect(ctx, client, targets)
		if _, ok := statusview.Primary(sts); ok {
			if primarySince.IsZero() {
				primarySince = time.Now()
			}
			all := true
			for _, st := range sts {
				if st.Role != model.RolePrimary && !(st.Role == model.RoleReplica && st.Streaming) {
					all = false
				}
			}
			if all || time.Since(primarySince) > time.Minute {
				return true
			}
		}
		select {
		case <-ctx.Done():
			return false
		case <-deadline.C:
			lg.Warn("no primary yet; the nodes keep trying: see their agent.log files")
			return false
		case <-tick.C:
		}
	}
}

func printReady(out io.Writer, dir string, cf *ClusterFile, sts []model.Status, ready bool) {
	if ready {
		fmt.Fprintf(out, "\npetrel cluster %q is up (%s)\n\n", cf.Cluster, dir)
	} else {
		fmt.Fprintf(out, "\npetrel cluster %q has no primary yet after %v (%s); logs: %s\n\n",
			cf.Cluster, ReadyTimeout, dir, filepath.Join(dir, "nodes", "<id>", "agent.log"))
	}
	statusview.Table(out, sts)
	fmt.Fprintln(out)
	statusview.RegionTable(out, sts)
	cfPath := filepath.Join(dir, ClusterFileName)
	if cf.DashboardURL != "" {
		fmt.Fprintf(out, "\nDashboard: %s\n  (every member serves one for the whole cluster; its buttons ask for OPERATOR_PASSWORD from %s;\n  over TLS with the cluster CA, %s: trust it in the browser, or curl --cacert it)\n",
			cf.DashboardURL, filepath.Join(dir, SecretsFileName), filepath.Join(dir, CAFileName))
	}
	fmt.Fprintf(out, "\nConnect (superuser; libpq picks the writable member):\n  %s\n", RedactDSN(cf.SuperuserDSN))
	fmt.Fprintf(out, "  The full connection string is in %s (\"superuser_dsn\"), e.g.\n", cfPath)
	fmt.Fprintf(out, "  psql \"$(jq -r .superuser_dsn %s)\"\n", cfPath)
	if cf.DatabaseURL != "" {
		fmt.Fprintf(out, "\nOperator, through the leader proxy (always the writable leader; \"database_url\" in %s):\n  DATABASE_URL=%s\n", cfPath, RedactDSN(cf.DatabaseURL))
		fmt.Fprintln(out, "  Attach an app (its own database and user): petrel attach --app NAME --dir "+dir)
	}
	if len(cf.Edges) > 0 {
		fmt.Fprintln(out, "\nEdges (the app in every region; a write in a replica region is replayed in "+cf.PrimaryRegion+"):")
		for _, e := range cf.Edges {
			fmt.Fprintf(out, "  %-6s %s   (metrics %s/metrics)\n", e.Region, e.URL, e.AdminURL)
		}
	}
	fmt.Fprintln(out, "\nMembers:")
	for _, n := range cf.Nodes {
		line := fmt.Sprintf("  %-8s postgres %s  api %s", n.ID, n.PostgresAddr, n.APIURL)
		if n.ProxyAddr != "" {
			line += "  proxy " + n.ProxyAddr
		}
		fmt.Fprintln(out, line)
	}
	fmt.Fprintf(out, "\netcd: %s\n", strings.Join(cf.Etcd, ","))
	fmt.Fprintf(out, "Status: petrel status --dir %s    Stop: Ctrl-C here, or petrel down --dir %s\n", dir, dir)
}

// stopAll stops replicas (and anything not known to be primary) first,
// then primaries, each group in parallel.
func stopAll(children []*child, sts []model.Status, lg *slog.Logger) {
	primary := map[string]bool{}
	for _, s := range sts {
		if s.Role == model.RolePrimary {
			primary[s.ID] = true
		}
	}
	var first, last []*child
	for _, c := range children {
		if primary[c.id] {
			last = append(last, c)
		} else {
			first = append(first, c)
		}
	}
	for _, group := range [][]*child{first, last} {
		var wg sync.WaitGroup
		for _, c := range group {
			wg.Add(1)
			go func() { defer wg.Done(); c.shutdown() }()
		}
		wg.Wait()
	}
}

// child supervises one node process.
type child struct {
	id      string
	dir     string
	logPath string
	pidPath string
	bin     string
	args    []string
	env     []string
	log     *slog.Logger

	stop     chan struct{}
	stopOnce sync.Once
	done     chan struct{}
}

func (c *child) shutdown() {
	c.stopOnce.Do(func() { close(c.stop) })
	<-c.done
}

func (c *child) run() {
	defer close(c.done)
	logf, err := os.OpenFile(c.logPath, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		c.log.Error("cannot open node log; node not started", "node", c.id, "err", err)
		return
	}
	defer logf.Close()
	for {
		select {
		case <-c.stop:
			return
		default:
		}
		fmt.Fprintf(logf, "\n=== petrel up: starting %s at %s ===\n", c.id, time.Now().Format(time.RFC3339))
		cmd := exec.Command(c.bin, c.args...)
		cmd.Dir = c.dir
		cmd.Env = c.env
		cmd.Stdout = logf
		cmd.Stderr = logf
		cmd.SysProcAttr = childAttr()
		if err := cmd.Start(); err != nil {
			c.log.Error("cannot start node; retrying", "node", c.id, "err", err)
			if !c.sleep(RestartDelay) {
				return
			}
			continue
		}
		pid := cmd.Process.Pid
		_ = writeFileAtomic(c.pidPath, []byte(strconv.Itoa(pid)+"\n"), 0o600)
		waitc := make(chan error, 1)
		go func() { waitc <- cmd.Wait() }()
		select {
		case err := <-waitc:
			os.Remove(c.pidPath)
			c.log.Warn("node exited; restarting it in "+RestartDelay.String(), "node", c.id, "pid", pid, "status", exitStatus(err), "log", c.logPath)
			if !c.sleep(RestartDelay) {
				return
			}
		case <-c.stop:
			_ = cmd.Process.Signal(syscall.SIGTERM)
			t := time.NewTimer(StopTimeout)
			select {
			case <-waitc:
			case <-t.C:
				c.log.Warn("node did not stop in time; killing it", "node", c.id, "pid", pid, "after", StopTimeout)
				_ = syscall.Kill(-pid, syscall.SIGKILL)
				_ = cmd.Process.Kill()
				<-waitc
			}
			t.Stop()
			os.Remove(c.pidPath)
			return
		}
	}
}

// sleep waits d unless the child is being stopped; false means stop.
func (c *child) sleep(d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-c.stop:
		return false
	case <-t.C:
		return true
	}
}

func exitStatus(err error) string {
	if err == nil {
		return "exit status 0"
	}
	return err.Error()
}
