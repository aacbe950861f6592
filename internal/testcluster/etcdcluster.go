package testcluster

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/petrel-db/petrel/internal/pki"
	"github.com/petrel-db/petrel/internal/store"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// EtcdOptions configure StartEtcdCluster.
type EtcdOptions struct {
	Dir     string // certificates, each member's data and log
	Members int    // default 3
	// Auth turns on etcd's authentication: a root user, and a user
	// EtcdUser whose role may read and write /petrel/ only.
	Auth bool
	// Binary is the etcd server (default: etcd on PATH, Debian's
	// etcd-server).
	Binary string
	// Hosts, when set, are the members' addresses, one each (default: all
	// on 127.0.0.1, on free ports; with Hosts, ports 2379 and 2380).
	Hosts []string
	// Start, when set, starts member i's etcd with args (e.g. inside its
	// host's network namespace), appending its output to logPath, in a
	// process group of its own; done is closed when it exits.
	Start func(i int, logPath string, args []string) (cmd *exec.Cmd, done <-chan struct{}, err error)
	// Dial, when set, is how this process reaches the members
	// (store.Conn.Dial).
	Dial func(ctx context.Context, addr string) (net.Conn, error)
}

// EtcdUser is the user petrel logs in as when EtcdOptions.Auth is on.
const EtcdUser = "petrel"

// EtcdCluster is a real etcd cluster of separate etcd processes on
// loopback, as production runs one: TLS between clients and members and
// between members (client certificates required on both), certificates
// from a CA made for it, and optionally etcd's authentication.
type EtcdCluster struct {
	Opts EtcdOptions
	// CAFile signed every certificate; CertFile/KeyFile is a client
	// certificate (CN "petrel-client", not an etcd user).
	CAFile, CertFile, KeyFile string
	// Password is EtcdUser's (Auth only); RootPassword root's.
	Password, RootPassword string

	mu      sync.Mutex // guards members' processes
	members []*EtcdMember
	ca      *pki.CA
}

// EtcdMember is one etcd process.
type EtcdMember struct {
	Name               string
	ClientURL, PeerURL string
	host               string
	dir                string
	cmd                *exec.Cmd
	exited             <-chan struct{}
}

// StartEtcdCluster starts the members and returns once the cluster has a
// leader and (with Auth) its users and roles are in place. Each member
// listens on loopback ports from FreePort.
func StartEtcdCluster(ctx context.Context, opts EtcdOptions) (*EtcdCluster, error) {
	if opts.Members == 0 {
		opts.Members = 3
	}
	if opts.Binary == "" {
		opts.Binary = "etcd"
	}
	bin, err := exec.LookPath(opts.Binary)
	if err != nil {
		return nil, fmt.Errorf("no etcd server binary %q (Debian: etcd-server; scripts/install-deps.sh installs it): %w", opts.Binary, err)
	}
	opts.Binary = bin
	if err := os.MkdirAll(opts.Dir, 0o755); err != nil {
		return nil, err
	}
	c := &EtcdCluster{Opts: opts}
	if err := c.writeCerts(); err != nil {
		return nil, err
	}
	var initial []string
	if len(opts.Hosts) != 0 && len(opts.Hosts) != opts.Members {
		return nil, fmt.Errorf("testcluster: %d etcd hosts for %d members", len(opts.Hosts), opts.Members)
	}
	for i := range opts.Members {
		host, cp, pp := "127.0.0.1", 2379, 2380
		if len(opts.Hosts) > 0 {
			host = opts.Hosts[i]
		} else {
			if cp, err = FreePort(); err != nil {
				return nil, err
			}
			if pp, err = FreePort(); err != nil {
				return nil, err
			}
		}
		m := &EtcdMember{
			Name:      fmt.Sprintf("etcd%d", i+1),
			ClientURL: fmt.Sprintf("https://%s:%d", host, cp),
			PeerURL:   fmt.Sprintf("https://%s:%d", host, pp),
			host:      host,
		}
		m.dir = filepath.Join(opts.Dir, m.Name)
		c.members = append(c.members, m)
		initial = append(initial, m.Name+"="+m.PeerURL)
	}
	for i := range c.members {
		if err := c.start(i, strings.Join(initial, ","), "new"); err != nil {
			c.Close()
			return nil, err
		}
	}
	if err := c.WaitHealthy(ctx); err != nil {
		c.Close()
		return nil, err
	}
	if opts.Auth {
		if err := c.enableAuth(ctx); err != nil {
			c.Close()
			return nil, err
		}
	}
	return c, nil
}

// writeCerts makes the CA, a server/peer certificate per member (loopback
// names) and the client certificate.
func (c *EtcdCluster) writeCerts() error {
	ca, _, err := pki.NewCA("etcd-test", randomSecret())
	if err != nil {
		return err
	}
	c.ca = ca
	dir := filepath.Join(c.Opts.Dir, "certs")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	c.CAFile = filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(c.CAFile, ca.CertPEM, 0o644); err != nil {
		return err
	}
	c.CertFile, c.KeyFile, err = c.IssueFiles("petrel-client", dir)
	return err
}

// IssueFiles signs a certificate for name (valid for loopback, as server
// and client) with the cluster's CA and writes name.pem and name-key.pem
// into dir.
func (c *EtcdCluster) IssueFiles(name, dir string) (certFile, keyFile string, err error) {
	return c.issueFiles(name, dir, "127.0.0.1")
}

func (c *EtcdCluster) issueFiles(name, dir, host string) (certFile, keyFile string, err error) {
	cert, key, err := c.ca.Issue(name, host)
	if err != nil {
		return "", "", err
	}
	certFile, keyFile = filepath.Join(dir, name+".pem"), filepath.Join(dir, name+"-key.pem")
	if err := os.WriteFile(certFile, cert, 0o644); err != nil {
		return "", "", err
	}
	if err := os.WriteFile(keyFile, key, 0o600); err != nil {
		return "", "", err
	}
	return certFile, keyFile, nil
}

func (c *EtcdCluster) start(i int, initial, state string) error {
	m := c.members[i]
	certs := filepath.Join(c.Opts.Dir, "certs")
	cert, key := filepath.Join(certs, m.Name+".pem"), filepath.Join(certs, m.Name+"-key.pem")
	if _, err := os.Stat(cert); err != nil {
		if cert, key, err = c.issueFiles(m.Name, certs, m.host); err != nil {
			return err
		}
	}
	args := []string{
		"--name", m.Name, "--data-dir", m.dir,
		"--listen-client-urls", m.ClientURL, "--advertise-client-urls", m.ClientURL,
		"--listen-peer-urls", m.PeerURL, "--initial-advertise-peer-urls", m.PeerURL,
		"--initial-cluster", initial, "--initial-cluster-state", state,
		"--initial-cluster-token", "petrel-test",
		"--cert-file", cert, "--key-file", key, "--client-cert-auth", "--trusted-ca-file", c.CAFile,
		"--peer-cert-file", cert, "--peer-key-file", key, "--peer-client-cert-auth", "--peer-trusted-ca-file", c.CAFile,
		"--logger", "zap", "--log-level", "warn",
	}
	logPath := filepath.Join(c.Opts.Dir, m.Name+".log")
	if c.Opts.Start != nil {
		cmd, done, err := c.Opts.Start(i, logPath, append([]string{c.Opts.Binary}, args...))
		if err != nil {
			return fmt.Errorf("starting etcd member %s: %w", m.Name, err)
		}
		c.mu.Lock()
		m.cmd, m.exited = cmd, done
		c.mu.Unlock()
		return nil
	}
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	cmd := exec.Command(c.Opts.Binary, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	// Debian's etcd 3.4 reads ETCD_* variables as flags: none may leak in.
	cmd.Env = []string{"PATH=" + os.Getenv("PATH")}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return fmt.Errorf("starting etcd member %s: %w", m.Name, err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); logf.Close(); close(exited) }()
	c.mu.Lock()
	m.cmd, m.exited = cmd, exited
	c.mu.Unlock()
	return nil
}

// Endpoints are every member's client URL.
func (c *EtcdCluster) Endpoints() []string {
	var eps []string
	for _, m := range c.members {
		eps = append(eps, m.ClientURL)
	}
	return eps
}

// Members are the cluster's members, in order.
func (c *EtcdCluster) Members() []*EtcdMember { return c.members }

// Conn is how petrel reaches the cluster: TLS with the client
// certificate, and EtcdUser's login with Auth.
func (c *EtcdCluster) Conn() store.Conn {
	conn := store.Conn{Endpoints: c.Endpoints(), CAFile: c.CAFile, CertFile: c.CertFile, KeyFile: c.KeyFile, Dial: c.Opts.Dial}
	if c.Opts.Auth {
		conn.Username, conn.Password = EtcdUser, c.Password
	}
	return conn
}

// rootClient connects as root (or without a login before auth is on).
func (c *EtcdCluster) rootClient(ctx context.Context, endpoints []string) (*clientv3.Client, error) {
	conn := c.Conn()
	conn.Endpoints = endpoints
	conn.Username, conn.Password = "", ""
	if c.RootPassword != "" {
		conn.Username, conn.Password = "root", c.RootPassword
	}
	return store.Connect(ctx, conn, "petrel")
}

func (c *EtcdCluster) enableAuth(ctx context.Context) error {
	cli, err := c.rootClient(ctx, c.Endpoints())
	if err != nil {
		return err
	}
	defer cli.Close()
	actx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	root, user := randomSecret(), randomSecret()
	steps := []func() error{
		func() error { _, err := cli.UserAdd(actx, "root", root); return err },
		func() error { _, err := cli.UserGrantRole(actx, "root", "root"); return err },
		func() error { _, err := cli.RoleAdd(actx, EtcdUser); return err },
		func() error {
			_, err := cli.RoleGrantPermission(actx, EtcdUser, "/petrel/", clientv3.GetPrefixRangeEnd("/petrel/"), clientv3.PermissionType(clientv3.PermReadWrite))
			return err
		},
		func() error { _, err := cli.UserAdd(actx, EtcdUser, user); return err },
		func() error { _, err := cli.UserGrantRole(actx, EtcdUser, EtcdUser); return err },
		func() error { _, err := cli.AuthEnable(actx); return err },
	}
	for i, step := range steps {
		if err := step(); err != nil {
			return fmt.Errorf("setting up etcd authentication (step %d): %w", i+1, err)
		}
	}
	c.RootPassword, c.Password = root, user
	return nil
}

// Kill sends SIGKILL to member i (its data stays for Restart).
func (c *EtcdCluster) Kill(i int) {
	c.mu.Lock()
	m := c.members[i]
	cmd, exited := m.cmd, m.exited
	c.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	<-exited
}

// Stop ends member i cleanly (SIGTERM; SIGKILL after 10 s).
func (c *EtcdCluster) Stop(i int) {
	c.mu.Lock()
	m := c.members[i]
	cmd, exited := m.cmd, m.exited
	c.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-exited:
	case <-time.After(10 * time.Second):
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-exited
	}
}

// Running says whether member i's process is alive.
func (c *EtcdCluster) Running(i int) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	m := c.members[i]
	if m.cmd == nil {
		return false
	}
	select {
	case <-m.exited:
		return false
	default:
		return true
	}
}

// Restart starts a stopped or killed member again on its data.
func (c *EtcdCluster) Restart(i int) error {
	if c.Running(i) {
		return fmt.Errorf("etcd member %s is running", c.members[i].Name)
	}
	var initial []string
	for _, m := range c.members {
		initial = append(initial, m.Name+"="+m.PeerURL)
	}
	return c.start(i, strings.Join(initial, ","), "existing")
}

// Leader is the index of the member that leads the etcd cluster now,
// asked of the members that run.
func (c *EtcdCluster) Leader(ctx context.Context) (int, error) {
	var lastErr error
	for i, m := range c.members {
		if !c.Running(i) {
			continue
		}
		id, leader, err := c.memberStatus(ctx, m)
		if err != nil {
			lastErr = err
			continue
		}
		if leader == 0 {
			lastErr = fmt.Errorf("%s knows no leader", m.Name)
			continue
		}
		if id == leader {
			return i, nil
		}
		for j, o := range c.members {
			if oid, _, err := c.memberStatus(ctx, o); err == nil && oid == leader && c.Running(j) {
				return j, nil
			}
		}
	}
	if lastErr == nil {
		lastErr = errors.New("no member runs")
	}
	return -1, fmt.Errorf("finding the etcd leader: %w", lastErr)
}

func (c *EtcdCluster) memberStatus(ctx context.Context, m *EtcdMember) (id, leader uint64, err error) {
	cli, err := c.rootClient(ctx, []string{m.ClientURL})
	if err != nil {
		return 0, 0, err
	}
	defer cli.Close()
	sctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	st, err := cli.Status(sctx, m.ClientURL)
	if err != nil {
		return 0, 0, fmt.Errorf("status of %s: %w", m.Name, err)
	}
	return st.Header.MemberId, st.Leader, nil
}

// WaitHealthy waits until every running member answers a linearizable
// read (the cluster has a leader and each member is part of it).
func (c *EtcdCluster) WaitHealthy(ctx context.Context) error {
	wctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	for i, m := range c.members {
		if !c.Running(i) {
			continue
		}
		err := WaitFor(wctx, m.Name+" healthy", func() bool {
			cli, err := c.rootClient(wctx, []string{m.ClientURL})
			if err != nil {
				return false
			}
			defer cli.Close()
			gctx, cancel := context.WithTimeout(wctx, 2*time.Second)
			defer cancel()
			_, err = cli.Get(gctx, "/petrel/health")
			return err == nil
		})
		if err != nil {
			log, _ := os.ReadFile(filepath.Join(c.Opts.Dir, m.Name+".log"))
			return fmt.Errorf("%w; %s's log:\n%s", err, m.Name, tail(log, 2000))
		}
	}
	return nil
}

func tail(b []byte, n int) []byte {
	if len(b) > n {
		return b[len(b)-n:]
	}
	return b
}

// Close kills every member.
func (c *EtcdCluster) Close() {
	for i := range c.members {
		c.Kill(i)
	}
}
