// Package hostcluster runs a petrel cluster the way separate machines do,
// for tests and benchmarks: each member in its own network namespace
// (internal/netns) with its own address and the same ports, an external
// three-member etcd cluster (Debian's etcd-server, one member per host,
// TLS with client certificates and authentication:
// testcluster.StartEtcdCluster), each `petrel node` started from a TOML
// config file as a host's service manager would start it. Members can die
// (kill -9 of everything), reboot (started again from the same file) or go
// silent (their link taken down). Clients (psql and the petrel CLI) run on
// an admin host of their own.
package hostcluster

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/petrel-db/petrel/internal/api"
	"github.com/petrel-db/petrel/internal/model"
	"github.com/petrel-db/petrel/internal/netns"
	"github.com/petrel-db/petrel/internal/store"
	"github.com/petrel-db/petrel/internal/testcluster"
)

// AdminHost is where clients (psql, the CLI) run.
const AdminHost = "admin"

// Options configure Start.
type Options struct {
	Dir    string // configs, data, logs
	Binary string // petrel
	Name   string // cluster name (default "hosts")
}

// Cluster is the network, etcd and the members.
type Cluster struct {
	Opts    Options
	Net     *netns.Net
	Etcd    *testcluster.EtcdCluster
	adminIP string
	// Passwords (SU_PASSWORD, ...) in the cluster's secrets file.
	Passwords map[string]string
	secrets   string
	// CAFingerprint is the cluster CA's, pinned in every node's TOML.
	CAFingerprint string

	mu    sync.Mutex // guards nodes
	nodes map[string]*Node
}

// Node is one member host.
type Node struct {
	ID, Region, IP string
	DataDir        string
	Config         string // its TOML
	proc           *netns.Proc
}

// Start makes the network and starts etcd on its host.
func Start(ctx context.Context, opts Options) (*Cluster, error) {
	if opts.Name == "" {
		opts.Name = "hosts"
	}
	if _, err := exec.LookPath("etcd"); err != nil {
		return nil, fmt.Errorf("no `etcd` command: install Debian's etcd-server (scripts/install-deps.sh does)")
	}
	if _, err := exec.LookPath("psql"); err != nil {
		return nil, fmt.Errorf("no `psql` command: install Debian's postgresql-client (scripts/install-deps.sh does)")
	}
	if err := os.MkdirAll(opts.Dir, 0o755); err != nil {
		return nil, err
	}
	_ = os.Chmod(opts.Dir, 0o755) // Postgres runs as another user
	n, err := netns.New()
	if err != nil {
		return nil, err
	}
	c := &Cluster{Opts: opts, Net: n, nodes: map[string]*Node{}}
	if c.adminIP, err = n.Add(AdminHost, 10); err != nil {
		n.Close()
		return nil, err
	}
	var hosts []string
	for i := range 3 {
		ip, err := n.Add(fmt.Sprintf("etcd%d", i+1), 2+i)
		if err != nil {
			n.Close()
			return nil, err
		}
		hosts = append(hosts, ip)
	}
	c.Etcd, err = testcluster.StartEtcdCluster(ctx, testcluster.EtcdOptions{
		Dir: filepath.Join(opts.Dir, "etcd"), Members: 3, Auth: true, Hosts: hosts,
		Start: func(i int, logPath string, args []string) (*exec.Cmd, <-chan struct{}, error) {
			// A clean environment: Debian's etcd reads ETCD_* variables as flags.
			p, err := n.Start(fmt.Sprintf("etcd%d", i+1), logPath, append([]string{"env", "-i", "PATH=" + os.Getenv("PATH")}, args...)...)
			if err != nil {
				return nil, nil, err
			}
			return p.Cmd, p.Done, nil
		},
		Dial: n.Dialer(AdminHost),
	})
	if err != nil {
		n.Close()
		return nil, err
	}
	c.Passwords = map[string]string{"SU_PASSWORD": "su-" + strconv.Itoa(os.Getpid()), "REPL_PASSWORD": "repl-" + strconv.Itoa(os.Getpid()), "OPERATOR_PASSWORD": "op-x", "ETCD_PASSWORD": c.Etcd.Password}
	c.secrets = filepath.Join(opts.Dir, "secrets.env")
	var sb strings.Builder
	for k, v := range c.Passwords {
		fmt.Fprintf(&sb, "%s=%s\n", k, v)
	}
	if err := os.WriteFile(c.secrets, []byte(sb.String()), 0o600); err != nil {
		c.Close()
		return nil, err
	}
	// The cluster CA, created before any node as an operator would have
	// the first node create it, and pinned in every node's TOML (and so
	// for `petrel status --config`).
	cli, err := store.Connect(ctx, c.Etcd.Conn(), opts.Name)
	if err != nil {
		c.Close()
		return nil, err
	}
	c.CAFingerprint, err = api.EnsureCA(ctx, cli, opts.Name, c.Passwords["SU_PASSWORD"])
	cli.Close()
	if err != nil {
		c.Close()
		return nil, fmt.Errorf("creating the cluster CA: %w", err)
	}
	return c, nil
}

// AddNode creates host id (address 10.77.0.<last>), writes its TOML and
// starts its node.
func (c *Cluster) AddNode(id, region string, last int) (*Node, error) {
	ip, err := c.Net.Add(id, last)
	if err != nil {
		return nil, err
	}
	n := &Node{ID: id, Region: region, IP: ip, DataDir: filepath.Join(c.Opts.Dir, id), Config: filepath.Join(c.Opts.Dir, id+".toml")}
	cfg := fmt.Sprintf(`cluster        = %q
id             = %q
region         = %q
primary_region = "scl"
data_dir       = %q
listen_host    = %q
advertise_host = %q
pg_port        = 5433
api_port       = 8433
etcd           = [%s]
etcd_ca_file   = %q
etcd_cert_file = %q
etcd_key_file  = %q
etcd_username  = %q
secrets_file   = %q
ca_fingerprint = %q
# psql runs as the superuser on the admin host.
admin_networks = ["%s/32"]
`, c.Opts.Name, id, region, n.DataDir, ip, ip, quoted(c.Etcd.Endpoints()), c.Etcd.CAFile, c.Etcd.CertFile, c.Etcd.KeyFile, testcluster.EtcdUser, c.secrets, c.CAFingerprint, c.adminIP)
	if err := os.WriteFile(n.Config, []byte(cfg), 0o600); err != nil {
		return nil, err
	}
	c.mu.Lock()
	c.nodes[id] = n
	c.mu.Unlock()
	return n, c.StartNode(id)
}

func quoted(ss []string) string {
	q := make([]string, len(ss))
	for i, s := range ss {
		q[i] = strconv.Quote(s)
	}
	return strings.Join(q, ", ")
}

// Node returns member id.
func (c *Cluster) Node(id string) *Node {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.nodes[id]
}

// StartNode starts member id's `petrel node --config` (again), as its
// service manager does at boot.
func (c *Cluster) StartNode(id string) error {
	n := c.Node(id)
	if n == nil {
		return fmt.Errorf("no node %s", id)
	}
	p, err := c.Net.Start(id, filepath.Join(c.Opts.Dir, id+".log"), c.Opts.Binary, "node", "--config", n.Config)
	if err != nil {
		return fmt.Errorf("starting %s: %w", id, err)
	}
	c.mu.Lock()
	n.proc = p
	c.mu.Unlock()
	return nil
}

// KillNode kills everything of member id at once (agent, watchdog,
// Postgres): the machine died.
func (c *Cluster) KillNode(id string) {
	n := c.Node(id)
	if n == nil || n.proc == nil {
		return
	}
	pm := 0
	if b, err := os.ReadFile(filepath.Join(n.DataDir, "pgdata", "postmaster.pid")); err == nil {
		pm, _ = strconv.Atoi(strings.TrimSpace(strings.SplitN(string(b), "\n", 2)[0]))
	}
	n.proc.Kill()
	if pm > 0 {
		_ = syscall.Kill(pm, syscall.SIGKILL)
	}
}

// Status asks every member through `petrel status --config` run on the
// admin host (nil when it fails).
func (c *Cluster) Status(ctx context.Context) map[string]model.Status {
	var cfg string
	c.mu.Lock()
	for _, n := range c.nodes {
		cfg = n.Config
		break
	}
	c.mu.Unlock()
	sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	out, err := c.Net.Run(sctx, AdminHost, c.Opts.Binary, "status", "--config", cfg, "--json")
	if err != nil {
		return nil
	}
	var sts []model.Status
	if json.Unmarshal([]byte(out), &sts) != nil {
		return nil
	}
	m := map[string]model.Status{}
	for _, s := range sts {
		m[s.ID] = s
	}
	return m
}

// SQL runs q with psql on the admin host as the superuser, on member id's
// Postgres (TLS preferred), within timeout.
func (c *Cluster) SQL(ctx context.Context, id, q string, timeout time.Duration) (string, error) {
	n := c.Node(id)
	if n == nil {
		return "", fmt.Errorf("no node %s", id)
	}
	qctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	dsn := fmt.Sprintf("postgres://postgres:%s@%s:5433/postgres?sslmode=prefer&connect_timeout=%d", c.Passwords["SU_PASSWORD"], n.IP, max(1, int(timeout.Seconds())))
	return c.Net.Run(qctx, AdminHost, "psql", dsn, "-Atc", q)
}

// IDs are the members' ids.
func (c *Cluster) IDs() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var ids []string
	for id := range c.nodes {
		ids = append(ids, id)
	}
	return ids
}

// Close stops the members (SIGTERM, then kill), etcd, and the network.
func (c *Cluster) Close() {
	c.mu.Lock()
	nodes := make([]*Node, 0, len(c.nodes))
	for _, n := range c.nodes {
		nodes = append(nodes, n)
	}
	c.mu.Unlock()
	for _, n := range nodes {
		if n.proc != nil {
			_ = syscall.Kill(-n.proc.Cmd.Process.Pid, syscall.SIGTERM)
		}
	}
	for _, n := range nodes {
		if n.proc == nil {
			continue
		}
		select {
		case <-n.proc.Done:
		case <-time.After(5 * time.Second):
		}
		c.KillNode(n.ID)
	}
	if c.Etcd != nil {
		c.Etcd.Close()
	}
	c.Net.Close()
}
