// Package netns makes a small network of "machines" for tests and
// benchmarks: one Linux network namespace per host, each with a veth into
// a bridge that lives in a namespace of its own, so nothing is added to
// the machine's own network. Addresses are 10.77.0.x/24, inside these
// namespaces only. A host's link can be taken down (its network goes
// silent: no RST, no FIN, nothing) and brought back. Needs root and
// iproute2.
package netns

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"
)

// Net is the bridge and its hosts.
type Net struct {
	prefix string // namespace name prefix, unique per process
	bridge string // the bridge's namespace

	mu    sync.Mutex // guards hosts
	hosts map[string]int
}

func ip(args ...string) error {
	out, err := exec.Command("ip", args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("ip %s: %w: %s", strings.Join(args, " "), err, bytes.TrimSpace(out))
	}
	return nil
}

// Check says what this machine lacks for network namespaces (nil: none):
// root, the ip command, and a root directory that is a mount point
// (`ip netns exec` makes / a slave mount; in a chroot it usually is not).
func Check() error {
	if os.Geteuid() != 0 {
		return errors.New("network namespaces need root")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		return errors.New("no `ip` command: install Debian's iproute2 (scripts/install-deps.sh does)")
	}
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
	return errors.New("/ is not a mount point (a chroot?): `ip netns exec` needs one; run on a machine or container root, or bind-mount the chroot onto itself first (mount --bind /chroot /chroot)")
}

// New makes the bridge (after Check). Close removes every namespace made.
func New() (*Net, error) {
	if err := Check(); err != nil {
		return nil, err
	}
	n := &Net{prefix: fmt.Sprintf("ptr%d", os.Getpid()%100000), hosts: map[string]int{}}
	n.bridge = n.prefix + "br"
	if err := ip("netns", "add", n.bridge); err != nil {
		return nil, fmt.Errorf("cannot create network namespaces here (a container without CAP_SYS_ADMIN?): %w", err)
	}
	// `ip netns exec` also remounts /sys: try it once here rather than
	// fail inside the first host's process.
	if out, err := exec.Command("ip", "netns", "exec", n.bridge, "true").CombinedOutput(); err != nil {
		_ = ip("netns", "del", n.bridge)
		return nil, fmt.Errorf("cannot run a process in a network namespace (ip netns exec): %w: %s", err, bytes.TrimSpace(out))
	}
	for _, args := range [][]string{
		{"-n", n.bridge, "link", "add", "br0", "type", "bridge"},
		{"-n", n.bridge, "link", "set", "br0", "up"},
		{"-n", n.bridge, "link", "set", "lo", "up"},
	} {
		if err := ip(args...); err != nil {
			n.Close()
			return nil, err
		}
	}
	return n, nil
}

func (n *Net) ns(name string) string { return n.prefix + name }

// Add creates host name with address 10.77.0.<last> and returns it.
func (n *Net) Add(name string, last int) (string, error) {
	ns := n.ns(name)
	peer := fmt.Sprintf("v%d", last)
	for _, args := range [][]string{
		{"netns", "add", ns},
		{"link", "add", "eth0", "netns", ns, "type", "veth", "peer", "name", peer, "netns", n.bridge},
		{"-n", n.bridge, "link", "set", peer, "master", "br0"},
		{"-n", n.bridge, "link", "set", peer, "up"},
		{"-n", ns, "addr", "add", fmt.Sprintf("10.77.0.%d/24", last), "dev", "eth0"},
		{"-n", ns, "link", "set", "eth0", "up"},
		{"-n", ns, "link", "set", "lo", "up"},
	} {
		if err := ip(args...); err != nil {
			return "", err
		}
	}
	n.mu.Lock()
	n.hosts[name] = last
	n.mu.Unlock()
	return fmt.Sprintf("10.77.0.%d", last), nil
}

// LinkDown takes host name's link down at the bridge: from then on
// nothing it sends arrives and nothing reaches it, and the others get no
// answer at all (no RST, no FIN), as when a machine dies or its network
// is cut.
func (n *Net) LinkDown(name string) error { return n.link(name, "down") }

// LinkUp brings host name's link back.
func (n *Net) LinkUp(name string) error { return n.link(name, "up") }

func (n *Net) link(name, state string) error {
	n.mu.Lock()
	last, ok := n.hosts[name]
	n.mu.Unlock()
	if !ok {
		return fmt.Errorf("no host %s", name)
	}
	return ip("-n", n.bridge, "link", "set", fmt.Sprintf("v%d", last), state)
}

// Proc is a process started in a host.
type Proc struct {
	Cmd  *exec.Cmd
	Done chan struct{} // closed once it exited
}

// Kill sends SIGKILL to the process's group and waits for it.
func (p *Proc) Kill() {
	_ = syscall.Kill(-p.Cmd.Process.Pid, syscall.SIGKILL)
	<-p.Done
}

// Start runs a command inside host name's namespace, in its own process
// group, with output appended to logPath.
func (n *Net) Start(name, logPath string, args ...string) (*Proc, error) {
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command("ip", append([]string{"netns", "exec", n.ns(name)}, args...)...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, err
	}
	p := &Proc{Cmd: cmd, Done: make(chan struct{})}
	go func() { _ = cmd.Wait(); logf.Close(); close(p.Done) }()
	return p, nil
}

// Run runs a command inside host name's namespace and returns its output.
func (n *Net) Run(ctx context.Context, name string, args ...string) (string, error) {
	out, err := exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", n.ns(name)}, args...)...).CombinedOutput()
	return strings.TrimSpace(string(out)), err
}

// Dialer opens TCP connections from inside host name's namespace, for a
// client in this process (the test's own network has no route to the
// hosts). A socket belongs to the namespace it was created in, so the
// dial runs on a thread moved into it, which then ends with its
// goroutine: nothing else ever runs there.
func (n *Net) Dialer(name string) func(ctx context.Context, addr string) (net.Conn, error) {
	path := "/run/netns/" + n.ns(name)
	return func(ctx context.Context, addr string) (net.Conn, error) {
		type result struct {
			c   net.Conn
			err error
		}
		ch := make(chan result, 1)
		go func() {
			runtime.LockOSThread() // never unlocked: the thread exits with the goroutine
			f, err := os.Open(path)
			if err != nil {
				ch <- result{nil, fmt.Errorf("opening network namespace %s: %w", path, err)}
				return
			}
			defer f.Close()
			if err := unix.Setns(int(f.Fd()), unix.CLONE_NEWNET); err != nil {
				ch <- result{nil, fmt.Errorf("entering network namespace %s: %w", path, err)}
				return
			}
			var d net.Dialer
			c, err := d.DialContext(ctx, "tcp", addr)
			ch <- result{c, err}
		}()
		r := <-ch
		return r.c, r.err
	}
}

// Close deletes every namespace of this Net (processes inside were
// stopped by their owners).
func (n *Net) Close() {
	out, _ := exec.Command("ip", "netns", "list").Output()
	for _, line := range strings.Split(string(out), "\n") {
		if f := strings.Fields(line); len(f) > 0 && strings.HasPrefix(f[0], n.prefix) {
			_ = ip("netns", "del", f[0])
		}
	}
}
