// Package testcluster starts real petrel clusters for tests and
// benchmarks: an embedded etcd in this process and each node as a real
// `petrel node` process with its own PostgreSQL, on loopback ports.
//
// It is test infrastructure, not a mock: nothing here stands in for a
// component users run.
package testcluster

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	mrand "math/rand"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/petrel-db/petrel/internal/api"
	"github.com/petrel-db/petrel/internal/config"
	"github.com/petrel-db/petrel/internal/etcdembed"
	"github.com/petrel-db/petrel/internal/model"
	"github.com/petrel-db/petrel/internal/netsim"
)

// Options configure a cluster.
type Options struct {
	Dir        string   // everything lives here
	Binary     string   // petrel binary; Build makes one
	Name       string   // cluster name (default "petrel")
	ExtraFlags []string // passed to every node

	// EtcdCluster, when set, is the store instead of an embedded etcd:
	// nodes reach it over TLS with its client certificate (and its user's
	// login when it has authentication on), through a TOML config file
	// like a host's.
	EtcdCluster *EtcdCluster

	// World, when set, routes every node's traffic (to etcd and to the
	// other members) through user-space links of a netsim.World with
	// this matrix, so tests can partition any pair (see network.go).
	World *netsim.Matrix
}

// Cluster is a running test cluster.
type Cluster struct {
	Opts    Options
	Etcd    *etcdembed.Server
	Secrets config.Secrets
	// CAFingerprint is the cluster CA's, created before any node starts
	// and pinned on every node (--ca-fingerprint, and ca_fingerprint in
	// ConfigFile) and for the CLI.
	CAFingerprint string
	// CAPEM is that CA's certificate; API reaches the members' APIs
	// verified against it.
	CAPEM []byte
	API   *api.Client

	mu    sync.Mutex // guards nodes
	nodes map[string]*Node

	etcdClientURL, etcdPeerURL string
	etcdMu                     sync.Mutex // guards Etcd across StopEtcd/RestartEtcd
	world                      *netsim.World
	worldStop                  context.CancelFunc
	mounts                     []string // tmpfs data dirs to unmount on Close
}

// Node is one `petrel node` process.
type Node struct {
	ID, Region      string
	ExtraFlags      []string // passed to this node's agent only (after Options.ExtraFlags)
	PGPort, APIPort int
	// ProxyPort and ProxyROPort are the node's leader and read-only proxy.
	ProxyPort, ProxyROPort int
	DataDir                string
	// Binary, when set, is the petrel this node runs instead of
	// Options.Binary (a rolling upgrade replaces it node by node).
	Binary string
	cmd    *exec.Cmd
	exited chan struct{}
}

// BuildTags are the build tags of the Makefile's build: static binaries
// (Go's DNS resolver and user lookups, no libc).
const BuildTags = "netgo,osusergo"

// Build compiles petrel and, beside it, petrel-node (which `petrel node`
// runs in its place) and petrel-watchdog (which the agent starts) into
// dir, and returns petrel's path.
func Build(ctx context.Context, repoRoot, dir string) (string, error) {
	return BuildVersion(ctx, repoRoot, dir, "")
}

// BuildVersion is Build with the version the binaries report (linked in
// like the Makefile does; "" leaves Go's build information).
func BuildVersion(ctx context.Context, repoRoot, dir, version string) (string, error) {
	dir, err := filepath.Abs(dir)
	if err != nil {
		return "", err
	}
	args := []string{"build", "-tags", BuildTags}
	if version != "" {
		args = append(args, "-ldflags", "-X github.com/petrel-db/petrel/internal/version.Version="+version)
	}
	args = append(args, "-o", dir+"/", "./cmd/petrel", "./cmd/petrel-node", "./cmd/petrel-watchdog")
	cmd := exec.CommandContext(ctx, "go", args...)
	cmd.Dir = repoRoot
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("building petrel: %w: %s", err, b)
	}
	return filepath.Join(dir, "petrel"), nil
}

// FreePort returns an unused loopback port for a node to listen on
// later. It picks ports below the kernel's ephemeral range (32768 and up
// here), at random, never the same twice in this process: a port asked
// of the kernel with ":0" is free only until something else asks, and
// everything else here does (netsim links listen on ":0", every outgoing
// connection takes an ephemeral source port), so a node could find its
// port taken when it starts ("address already in use": found by the
// chaos suite, 1 cluster in 10 did not come up).
func FreePort() (int, error) {
	portMu.Lock()
	defer portMu.Unlock()
	for range 500 {
		p := portLow + portRand.Intn(portHigh-portLow)
		if portsGiven[p] {
			continue
		}
		l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", p))
		if err != nil {
			continue
		}
		l.Close()
		portsGiven[p] = true
		return p, nil
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

const portLow, portHigh = 20000, 32768

var (
	portMu     sync.Mutex // guards portRand and portsGiven
	portRand   = mrand.New(mrand.NewSource(time.Now().UnixNano() ^ int64(os.Getpid())))
	portsGiven = map[int]bool{}
)

func randomSecret() string {
	b := make([]byte, 18)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// Start starts etcd; nodes are added with StartNode.
func Start(ctx context.Context, opts Options) (*Cluster, error) {
	if opts.Name == "" {
		opts.Name = "petrel"
	}
	if err := os.MkdirAll(opts.Dir, 0o755); err != nil {
		return nil, err
	}
	// Postgres runs as another user when we are root: let it traverse.
	for d := opts.Dir; d != "/" && d != "."; d = filepath.Dir(d) {
		if st, err := os.Stat(d); err == nil && st.Mode().Perm()&0o005 != 0o005 {
			_ = os.Chmod(d, st.Mode().Perm()|0o055)
		}
	}
	cp, err := FreePort()
	if err != nil {
		return nil, err
	}
	pp, err := FreePort()
	if err != nil {
		return nil, err
	}
	curl, purl := fmt.Sprintf("http://127.0.0.1:%d", cp), fmt.Sprintf("http://127.0.0.1:%d", pp)
	var e *etcdembed.Server
	if opts.EtcdCluster == nil {
		if e, err = etcdembed.Start(ctx, etcdembed.Options{
			Dir: filepath.Join(opts.Dir, "etcd"), ClientURL: curl, PeerURL: purl,
		}); err != nil {
			return nil, fmt.Errorf("starting etcd: %w", err)
		}
	} else if opts.World != nil {
		return nil, errors.New("testcluster: EtcdCluster and World together are not supported")
	}
	closeEtcd := func() {
		if e != nil {
			e.Close()
		}
	}
	c := &Cluster{
		Opts: opts, Etcd: e, nodes: map[string]*Node{},
		Secrets:       config.Secrets{Superuser: randomSecret(), Replication: randomSecret(), Operator: randomSecret()},
		etcdClientURL: curl, etcdPeerURL: purl,
	}
	if opts.World != nil {
		if err := c.startWorld(*opts.World); err != nil {
			closeEtcd()
			return nil, err
		}
	}
	sf := fmt.Sprintf("SU_PASSWORD=%s\nREPL_PASSWORD=%s\nOPERATOR_PASSWORD=%s\n", c.Secrets.Superuser, c.Secrets.Replication, c.Secrets.Operator)
	if ec := opts.EtcdCluster; ec != nil && ec.Opts.Auth {
		sf += "ETCD_PASSWORD=" + ec.Password + "\n"
	}
	if err := os.WriteFile(c.secretsFile(), []byte(sf), 0o600); err != nil {
		closeEtcd()
		return nil, err
	}
	if err := c.createCA(ctx); err != nil {
		closeEtcd()
		return nil, fmt.Errorf("creating the cluster CA: %w", err)
	}
	return c, nil
}

// createCA creates the cluster CA the way `petrel up` does, so that
// nodes and tools pin it.
func (c *Cluster) createCA(ctx context.Context) error {
	cli, err := c.EtcdClient(ctx)
	if err != nil {
		return err
	}
	defer cli.Close()
	if c.CAFingerprint, err = api.EnsureCA(ctx, cli, c.Opts.Name, c.Secrets.Superuser); err != nil {
		return err
	}
	if c.CAPEM, err = api.PinnedCA(ctx, cli, c.Opts.Name, c.CAFingerprint); err != nil {
		return err
	}
	c.API, err = api.NewClient(c.CAPEM, c.Opts.Name, api.ClientOptions{Timeout: time.Second})
	return err
}

// APIURL is the node's API base URL.
func (n *Node) APIURL() string { return fmt.Sprintf("https://127.0.0.1:%d", n.APIPort) }

func (c *Cluster) secretsFile() string { return filepath.Join(c.Opts.Dir, "secrets.env") }

// CLIFlags are what `petrel <command>` needs to reach the cluster: its
// etcd (not one with TLS or authentication), name, CA fingerprint and the
// secrets file (the admin API's passwords).
func (c *Cluster) CLIFlags() []string {
	return []string{"--etcd", strings.Join(c.EtcdEndpoints(), ","), "--cluster", c.Opts.Name, "--ca-fingerprint", c.CAFingerprint, "--secrets-file", c.SecretsFile()}
}

// EtcdEndpoints lists the store's endpoints.
func (c *Cluster) EtcdEndpoints() []string {
	if c.Opts.EtcdCluster != nil {
		return c.Opts.EtcdCluster.Endpoints()
	}
	return []string{c.etcdClientURL}
}

// SecretsFile is the cluster's 0600 secrets file (the passwords, and
// ETCD_PASSWORD with an authenticating EtcdCluster).
func (c *Cluster) SecretsFile() string { return c.secretsFile() }

// ConfigFile writes node id's settings as a host's TOML config would hold
// them (cluster, etcd endpoints, TLS files, etcd user, secrets file), for
// the node and for CLI commands given --config.
func (c *Cluster) ConfigFile(id string) (string, error) {
	var b strings.Builder
	fmt.Fprintf(&b, "cluster = %q\nsecrets_file = %q\nca_fingerprint = %q\netcd = [", c.Opts.Name, c.secretsFile(), c.CAFingerprint)
	for i, e := range c.nodeEtcd(id) {
		if i > 0 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "%q", e)
	}
	b.WriteString("]\n")
	if ec := c.Opts.EtcdCluster; ec != nil {
		fmt.Fprintf(&b, "etcd_ca_file = %q\netcd_cert_file = %q\netcd_key_file = %q\n", ec.CAFile, ec.CertFile, ec.KeyFile)
		if ec.Opts.Auth {
			fmt.Fprintf(&b, "etcd_username = %q\n", EtcdUser)
		}
	}
	path := filepath.Join(c.Opts.Dir, id+".toml")
	if err := os.WriteFile(path, []byte(b.String()), 0o600); err != nil {
		return "", err
	}
	return path, nil
}

// AddNode defines a node (ports, data dir) and starts it.
func (c *Cluster) AddNode(id, region string) (*Node, error) {
	n, err := c.DefineNode(id, region)
	if err != nil {
		return nil, err
	}
	return n, c.StartNode(id)
}

// DefineNode allocates a node's ports and data dir (and its links, with
// Options.World) without starting it; StartNode starts it.
func (c *Cluster) DefineNode(id, region string) (*Node, error) {
	pgp, err := FreePort()
	if err != nil {
		return nil, err
	}
	apip, err := FreePort()
	if err != nil {
		return nil, err
	}
	pxp, err := FreePort()
	if err != nil {
		return nil, err
	}
	pxro, err := FreePort()
	if err != nil {
		return nil, err
	}
	n := &Node{ID: id, Region: region, PGPort: pgp, APIPort: apip, ProxyPort: pxp, ProxyROPort: pxro, DataDir: filepath.Join(c.Opts.Dir, id)}
	c.mu.Lock()
	c.nodes[id] = n
	c.mu.Unlock()
	if c.world != nil {
		if err := c.addToWorld(n); err != nil {
			return nil, err
		}
	}
	return n, nil
}

// StartNode (re)starts a defined node's agent process.
func (c *Cluster) StartNode(id string) error {
	n := c.Node(id)
	if n == nil {
		return fmt.Errorf("no node %s", id)
	}
	if err := os.MkdirAll(n.DataDir, 0o755); err != nil {
		return err
	}
	logf, err := os.OpenFile(filepath.Join(c.Opts.Dir, id+".log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	args := []string{"node",
		"--cluster", c.Opts.Name, "--id", id, "--region", n.Region, "--primary-region", "scl",
		"--data-dir", n.DataDir, "--listen-host", "127.0.0.1",
		// The tests' clients connect over loopback without TLS (DSN).
		"--loopback-plaintext",
		"--pg-port", strconv.Itoa(n.PGPort), "--api-port", strconv.Itoa(n.APIPort),
		"--proxy-port", strconv.Itoa(n.ProxyPort), "--proxy-ro-port", strconv.Itoa(n.ProxyROPort),
		"--ca-fingerprint", c.CAFingerprint,
	}
	if c.Opts.EtcdCluster != nil {
		cfg, err := c.ConfigFile(id)
		if err != nil {
			logf.Close()
			return err
		}
		args = append(args, "--config", cfg)
	} else {
		args = append(args, "--etcd", strings.Join(c.nodeEtcd(id), ","), "--secrets-file", c.secretsFile())
	}
	if c.world != nil {
		args = append(args, "--dial-map", c.dialMapPath(id))
	}
	args = append(args, c.Opts.ExtraFlags...)
	args = append(args, n.ExtraFlags...)
	bin := c.Opts.Binary
	if n.Binary != "" {
		bin = n.Binary
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return fmt.Errorf("starting node %s: %w", id, err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); logf.Close(); close(exited) }()
	c.mu.Lock()
	n.cmd, n.exited = cmd, exited
	c.mu.Unlock()
	return nil
}

// Node returns a defined node.
func (c *Cluster) Node(id string) *Node {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.nodes[id]
}

// IDs lists the defined nodes.
func (c *Cluster) IDs() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var ids []string
	for id := range c.nodes {
		ids = append(ids, id)
	}
	return ids
}

// PostmasterPID reads the node's postmaster.pid (0 if none).
func (n *Node) PostmasterPID() int {
	b, err := os.ReadFile(filepath.Join(n.DataDir, "pgdata", "postmaster.pid"))
	if err != nil {
		return 0
	}
	pid, _ := strconv.Atoi(strings.TrimSpace(strings.SplitN(string(b), "\n", 2)[0]))
	return pid
}

// Kill sends SIGKILL to the node's agent and its postmaster at once: the
// machine died.
func (c *Cluster) Kill(id string) error {
	n := c.Node(id)
	if n == nil || n.cmd == nil {
		return fmt.Errorf("node %s not running", id)
	}
	pm := n.PostmasterPID()
	_ = syscall.Kill(-n.cmd.Process.Pid, syscall.SIGKILL)
	if pm > 0 {
		_ = syscall.Kill(pm, syscall.SIGKILL)
	}
	<-n.exited
	return nil
}

// Stop sends SIGTERM and waits for a clean exit.
func (c *Cluster) Stop(id string) error {
	n := c.Node(id)
	if n == nil || n.cmd == nil {
		return nil
	}
	_ = n.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-n.exited:
		return nil
	case <-time.After(60 * time.Second):
		_ = syscall.Kill(-n.cmd.Process.Pid, syscall.SIGKILL)
		<-n.exited
		return fmt.Errorf("node %s did not stop within 60s", id)
	}
}

// Close stops every node, then etcd. Postgres servers left by killed
// agents are stopped too.
func (c *Cluster) Close() {
	var wg sync.WaitGroup
	for _, id := range c.IDs() {
		wg.Add(1)
		go func(id string) { defer wg.Done(); _ = c.Stop(id) }(id)
	}
	wg.Wait()
	for _, id := range c.IDs() {
		if pm := c.Node(id).PostmasterPID(); pm > 0 {
			_ = syscall.Kill(pm, syscall.SIGKILL)
		}
	}
	c.etcdMu.Lock()
	if c.Etcd != nil {
		c.Etcd.Close()
	}
	c.etcdMu.Unlock()
	c.unmountAll()
	if c.world != nil {
		c.world.Close()
		c.worldStop()
	}
}

// Status fetches a node's /status (over TLS, from that node).
func (c *Cluster) Status(id string) (model.Status, error) {
	var st model.Status
	n := c.Node(id)
	if n == nil {
		return st, fmt.Errorf("no node %s", id)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	b, err := c.API.Get(ctx, n.APIURL(), id, "/status", 1<<20)
	if err != nil {
		return st, err
	}
	return st, json.Unmarshal(b, &st)
}

// Role fetches a node's /role.
func (c *Cluster) Role(id string) string {
	st, err := c.Status(id)
	if err != nil {
		return model.RoleOffline
	}
	return st.Role
}

// WaitFor polls cond every 100ms until it holds or ctx ends.
func WaitFor(ctx context.Context, what string, cond func() bool) error {
	for {
		if cond() {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for %s: %w", what, ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// WaitLeader waits until exactly one node reports primary and returns it.
func (c *Cluster) WaitLeader(ctx context.Context, not string) (string, error) {
	var leader string
	err := WaitFor(ctx, "a primary", func() bool {
		var prim []string
		for _, id := range c.IDs() {
			if id != not && c.Role(id) == model.RolePrimary {
				prim = append(prim, id)
			}
		}
		if len(prim) == 1 {
			leader = prim[0]
			return true
		}
		return false
	})
	return leader, err
}

// WaitRole waits until node id reports role.
func (c *Cluster) WaitRole(ctx context.Context, id, role string) error {
	return WaitFor(ctx, id+" to be "+role, func() bool {
		st, err := c.Status(id)
		return err == nil && st.Role == role && (role != model.RoleReplica || st.Streaming)
	})
}

// DSN is a superuser connection string to one node's own Postgres.
func (c *Cluster) DSN(id string) string {
	n := c.Node(id)
	return fmt.Sprintf("postgres://postgres:%s@127.0.0.1:%d/postgres?sslmode=disable&connect_timeout=2", c.Secrets.Superuser, n.PGPort)
}

// ProxyDSN is a superuser connection string through node id's leader
// proxy: it always reaches the writable leader.
func (c *Cluster) ProxyDSN(id string) string {
	n := c.Node(id)
	return fmt.Sprintf("postgres://postgres:%s@127.0.0.1:%d/postgres?sslmode=disable&connect_timeout=10", c.Secrets.Superuser, n.ProxyPort)
}

// ProxyRODSN is a superuser connection string through node id's read-only
// proxy (a caught-up replica of its region, else the leader).
func (c *Cluster) ProxyRODSN(id string) string {
	n := c.Node(id)
	return fmt.Sprintf("postgres://postgres:%s@127.0.0.1:%d/postgres?sslmode=disable&connect_timeout=10", c.Secrets.Superuser, n.ProxyROPort)
}

// WriterDSN lists every node, asking for a writable one (what a client
// without a proxy uses).
func (c *Cluster) WriterDSN() string {
	var hosts []string
	for _, id := range c.IDs() {
		hosts = append(hosts, fmt.Sprintf("127.0.0.1:%d", c.Node(id).PGPort))
	}
	return fmt.Sprintf("postgres://postgres:%s@%s/postgres?sslmode=disable&connect_timeout=1&target_session_attrs=read-write", c.Secrets.Superuser, strings.Join(hosts, ","))
}

// Exec runs one statement on node id.
func (c *Cluster) Exec(ctx context.Context, id, sql string, args ...any) error {
	conn, err := pgx.Connect(ctx, c.DSN(id))
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	_, err = conn.Exec(ctx, sql, args...)
	return err
}

// QueryInts returns the first column of a query as ints.
func (c *Cluster) QueryInts(ctx context.Context, id, sql string) ([]int64, error) {
	conn, err := pgx.Connect(ctx, c.DSN(id))
	if err != nil {
		return nil, err
	}
	defer conn.Close(context.Background())
	rows, err := conn.Query(ctx, sql)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, pgx.RowTo[int64])
}

// ErrNoLeader is returned when no member is primary.
var ErrNoLeader = errors.New("no leader")

// StartNodes adds nodes ({id, region}, the first one bootstraps) and waits
// until one leads and every other member is a replica; it returns the
// leader.
func (c *Cluster) StartNodes(ctx context.Context, nodes ...[2]string) (string, error) {
	for i, n := range nodes {
		if _, err := c.AddNode(n[0], n[1]); err != nil {
			return "", err
		}
		if i == 0 {
			if _, err := c.WaitLeader(ctx, ""); err != nil {
				return "", err
			}
		}
	}
	leader, err := c.WaitLeader(ctx, "")
	if err != nil {
		return "", err
	}
	for _, id := range c.IDs() {
		if id != leader {
			if err := c.WaitRole(ctx, id, model.RoleReplica); err != nil {
				return "", err
			}
		}
	}
	return leader, nil
}
