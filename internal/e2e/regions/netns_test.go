package regions

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/petrel-db/petrel/internal/model"
	"github.com/petrel-db/petrel/internal/testcluster"
)

// hosts is a small network of "machines": one network namespace per host,
// each with a veth into a bridge that lives in a namespace of its own, so
// nothing is added to the machine's own network. Addresses are
// 10.77.0.x/24, inside these namespaces only.
type hosts struct {
	t      *testing.T
	prefix string // namespace name prefix, unique per test process
	bridge string // the bridge's namespace
	n      int
}

func ipCmd(args ...string) error {
	out, err := exec.Command("ip", args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("ip %s: %w: %s", strings.Join(args, " "), err, bytes.TrimSpace(out))
	}
	return nil
}

// newHosts makes the bridge. Without root it skips (network namespaces
// need it; CI runs as root); as root, whatever else is missing fails the
// test with the reason, found before anything starts.
func newHosts(t *testing.T) *hosts {
	t.Helper()
	if testing.Short() {
		t.Skip("end-to-end test; skipped with -short")
	}
	if os.Geteuid() != 0 {
		t.Skip("network namespaces need root (CI runs as root)")
	}
	for _, tool := range []struct{ name, pkg string }{{"ip", "iproute2"}, {"etcd", "etcd-server"}, {"psql", "postgresql-client"}} {
		if _, err := exec.LookPath(tool.name); err != nil {
			t.Fatalf("no `%s` command: install Debian's %s (scripts/install-deps.sh does)", tool.name, tool.pkg)
		}
	}
	if err := rootIsMountPoint(); err != nil {
		t.Fatal(err)
	}
	h := &hosts{t: t, prefix: fmt.Sprintf("ptr%d", os.Getpid()%100000)}
	h.bridge = h.prefix + "br"
	if err := ipCmd("netns", "add", h.bridge); err != nil {
		t.Fatalf("cannot create network namespaces here (a container without CAP_SYS_ADMIN?): %v", err)
	}
	// `ip netns exec` also remounts /sys and makes / a slave mount: try it
	// once here rather than fail inside the first host's process.
	if out, err := exec.Command("ip", "netns", "exec", h.bridge, "true").CombinedOutput(); err != nil {
		_ = ipCmd("netns", "del", h.bridge)
		t.Fatalf("cannot run a process in a network namespace (ip netns exec): %v: %s", err, bytes.TrimSpace(out))
	}
	t.Cleanup(h.close)
	for _, args := range [][]string{
		{"-n", h.bridge, "link", "add", "br0", "type", "bridge"},
		{"-n", h.bridge, "link", "set", "br0", "up"},
		{"-n", h.bridge, "link", "set", "lo", "up"},
	} {
		if err := ipCmd(args...); err != nil {
			t.Fatal(err)
		}
	}
	return h
}

// add creates host name with address 10.77.0.<last>.
func (h *hosts) add(name string, last int) string {
	h.t.Helper()
	ns := h.ns(name)
	peer := fmt.Sprintf("v%d", last)
	for _, args := range [][]string{
		{"netns", "add", ns},
		{"link", "add", "eth0", "netns", ns, "type", "veth", "peer", "name", peer, "netns", h.bridge},
		{"-n", h.bridge, "link", "set", peer, "master", "br0"},
		{"-n", h.bridge, "link", "set", peer, "up"},
		{"-n", ns, "addr", "add", fmt.Sprintf("10.77.0.%d/24", last), "dev", "eth0"},
		{"-n", ns, "link", "set", "eth0", "up"},
		{"-n", ns, "link", "set", "lo", "up"},
	} {
		if err := ipCmd(args...); err != nil {
			h.t.Fatal(err)
		}
	}
	h.n++
	return fmt.Sprintf("10.77.0.%d", last)
}

// rootIsMountPoint checks that / is a mount point, which `ip netns exec`
// needs (it makes / a slave mount): in a chroot it is usually not.
func rootIsMountPoint() error {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return fmt.Errorf("reading /proc/self/mountinfo (is /proc mounted?): %w", err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		// fields: id parent major:minor root mount-point ...
		if f := strings.Fields(line); len(f) > 4 && f[4] == "/" {
			return nil
		}
	}
	return errors.New("/ is not a mount point (a chroot?): `ip netns exec` needs one; run the test on a machine or container root, or bind-mount the chroot onto itself first (mount --bind /chroot /chroot)")
}

func (h *hosts) ns(name string) string { return h.prefix + name }

// start runs a command inside host name's namespace, in its own process
// group, logging to logPath.
func (h *hosts) start(name, logPath string, args ...string) *exec.Cmd {
	h.t.Helper()
	logf, err := os.Create(logPath)
	if err != nil {
		h.t.Fatal(err)
	}
	cmd := exec.Command("ip", append([]string{"netns", "exec", h.ns(name)}, args...)...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		h.t.Fatal(err)
	}
	go func() { _ = cmd.Wait(); logf.Close() }()
	return cmd
}

// run runs a command inside host name's namespace and returns its output.
func (h *hosts) run(ctx context.Context, name string, args ...string) (string, error) {
	out, err := exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", h.ns(name)}, args...)...).CombinedOutput()
	return strings.TrimSpace(string(out)), err
}

func (h *hosts) close() {
	out, _ := exec.Command("ip", "netns", "list").Output()
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Fields(line)
		if len(f) > 0 && strings.HasPrefix(f[0], h.prefix) {
			// Processes still inside would keep it; they were stopped.
			_ = ipCmd("netns", "del", f[0])
		}
	}
}

// TestSeparateHosts runs a 3-node cluster the way real hosts do: each
// node in its own network namespace with its own address, the same ports
// on every host, an external etcd (Debian's etcd-server) on a host of its
// own, each `petrel node` started by hand from a TOML config file. Only
// primary-region members lead: after the leader dies, scl2 (not ord1)
// takes over and ord1 follows it.
func TestSeparateHosts(t *testing.T) {
	h := newHosts(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	bin := binary(t)
	dir, err := os.MkdirTemp("", "petrel-netns")
	if err != nil {
		t.Fatal(err)
	}
	_ = os.Chmod(dir, 0o755) // Postgres runs as another user
	t.Cleanup(func() {
		if !t.Failed() {
			os.RemoveAll(dir)
		} else {
			t.Logf("logs kept in %s", dir)
		}
	})

	etcdIP := h.add("etcd", 10)
	etcdURL := "http://" + etcdIP + ":2379"
	etcd := h.start("etcd", filepath.Join(dir, "etcd.log"), "etcd",
		"--name", "e1", "--data-dir", filepath.Join(dir, "etcd"),
		"--listen-client-urls", etcdURL, "--advertise-client-urls", etcdURL,
		"--listen-peer-urls", "http://"+etcdIP+":2380", "--initial-advertise-peer-urls", "http://"+etcdIP+":2380",
		"--initial-cluster", "e1=http://"+etcdIP+":2380")
	t.Cleanup(func() { _ = syscall.Kill(-etcd.Process.Pid, syscall.SIGKILL) })

	pw := map[string]string{"SU_PASSWORD": "su-" + strconv.Itoa(os.Getpid()), "REPL_PASSWORD": "repl-x", "OPERATOR_PASSWORD": "op-x"}
	secrets := filepath.Join(dir, "secrets.env")
	var sb strings.Builder
	for k, v := range pw {
		fmt.Fprintf(&sb, "%s=%s\n", k, v)
	}
	if err := os.WriteFile(secrets, []byte(sb.String()), 0o600); err != nil {
		t.Fatal(err)
	}

	type node struct {
		id, region, ip string
		cmd            *exec.Cmd
		dataDir        string
	}
	nodes := map[string]*node{}
	startNode := func(id, region string, last int) {
		n := &node{id: id, region: region, ip: h.add(id, last), dataDir: filepath.Join(dir, id)}
		cfg := fmt.Sprintf(`cluster        = "regions"
id             = %q
region         = %q
primary_region = "scl"
data_dir       = %q
listen_host    = %q
advertise_host = %q
pg_port        = 5433
api_port       = 8433
etcd           = [%q]
secrets_file   = %q
# The test's psql runs as the superuser on the etcd host: an admin host.
admin_networks = ["%s/32"]
`, id, region, n.dataDir, n.ip, n.ip, etcdURL, secrets, etcdIP)
		path := filepath.Join(dir, id+".toml")
		if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
			t.Fatal(err)
		}
		n.cmd = h.start(id, filepath.Join(dir, id+".log"), bin, "node", "--config", path)
		nodes[id] = n
	}
	killNode := func(n *node) {
		pm := 0
		if b, err := os.ReadFile(filepath.Join(n.dataDir, "pgdata", "postmaster.pid")); err == nil {
			pm, _ = strconv.Atoi(strings.TrimSpace(strings.SplitN(string(b), "\n", 2)[0]))
		}
		_ = syscall.Kill(-n.cmd.Process.Pid, syscall.SIGKILL)
		if pm > 0 {
			_ = syscall.Kill(pm, syscall.SIGKILL)
		}
	}
	t.Cleanup(func() {
		for _, n := range nodes {
			_ = syscall.Kill(-n.cmd.Process.Pid, syscall.SIGTERM)
		}
		time.Sleep(3 * time.Second)
		for _, n := range nodes {
			killNode(n)
		}
	})

	// status asks every member through `petrel status --etcd`, run on the
	// etcd host (any host on the network would do).
	status := func() map[string]model.Status {
		out, err := h.run(ctx, "etcd", bin, "status", "--etcd", etcdURL, "--cluster", "regions", "--json")
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
	sql := func(id, q string) (string, error) {
		dsn := fmt.Sprintf("postgres://postgres:%s@%s:5433/postgres?sslmode=prefer&connect_timeout=3", pw["SU_PASSWORD"], nodes[id].ip)
		return h.run(ctx, "etcd", "psql", dsn, "-Atc", q)
	}
	waitRole := func(id, role string) {
		t.Helper()
		if err := testcluster.WaitFor(ctx, id+" "+role, func() bool {
			s, ok := status()[id]
			return ok && s.Role == role && (role != model.RoleReplica || s.Streaming)
		}); err != nil {
			t.Fatal(err)
		}
	}

	startNode("scl1", "scl", 11)
	waitRole("scl1", model.RolePrimary)
	startNode("scl2", "scl", 12)
	startNode("ord1", "ord", 13)
	waitRole("scl2", model.RoleReplica)
	waitRole("ord1", model.RoleReplica)
	if s := status()["ord1"]; s.PostgresAddr != nodes["ord1"].ip+":5433" {
		t.Fatalf("ord1 advertises %q, want its own address", s.PostgresAddr)
	}
	if out, err := sql("scl1", "CREATE TABLE t (id int); INSERT INTO t SELECT generate_series(1, 10)"); err != nil {
		t.Fatalf("write: %v: %s", err, out)
	}
	if err := testcluster.WaitFor(ctx, "ord1 to have the rows", func() bool {
		out, err := sql("ord1", "SELECT count(*) FROM t")
		return err == nil && out == "10"
	}); err != nil {
		t.Fatal(err)
	}
	if err := testcluster.WaitFor(ctx, "scl2 synchronous", func() bool { return status()["scl2"].Sync }); err != nil {
		t.Fatal(err)
	}

	killNode(nodes["scl1"])
	if err := testcluster.WaitFor(ctx, "scl2 to lead", func() bool {
		sts := status()
		if sts["ord1"].Role == model.RolePrimary {
			t.Fatal("ord1, outside the primary region, became primary")
		}
		return sts["scl2"].Role == model.RolePrimary
	}); err != nil {
		t.Fatal(err)
	}
	if out, err := sql("scl2", "INSERT INTO t SELECT generate_series(11, 20)"); err != nil {
		t.Fatalf("write on the new leader: %v: %s", err, out)
	}
	if err := testcluster.WaitFor(ctx, "ord1 to follow scl2", func() bool {
		out, err := sql("ord1", "SELECT count(*) FROM t")
		return err == nil && out == "20"
	}); err != nil {
		t.Fatal(err)
	}
}
