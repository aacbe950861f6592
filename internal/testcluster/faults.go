package testcluster

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"

	"github.com/petrel-db/petrel/internal/etcdembed"
)

// StopEtcd stops the embedded etcd abruptly, like a crash or a lost
// machine (no lease expires on the way down); its data stays on disk for
// RestartEtcd.
func (c *Cluster) StopEtcd() {
	c.etcdMu.Lock()
	defer c.etcdMu.Unlock()
	if c.Etcd != nil {
		c.Etcd.Kill()
	}
}

// RestartEtcd starts etcd again on the same data dir and URLs.
func (c *Cluster) RestartEtcd(ctx context.Context) error {
	c.etcdMu.Lock()
	defer c.etcdMu.Unlock()
	e, err := etcdembed.Start(ctx, etcdembed.Options{
		Dir: filepath.Join(c.Opts.Dir, "etcd"), ClientURL: c.etcdClientURL, PeerURL: c.etcdPeerURL,
	})
	if err != nil {
		return fmt.Errorf("restarting etcd: %w", err)
	}
	c.Etcd = e
	return nil
}

// AgentPID is the pid of node id's agent process (0 if not running).
func (c *Cluster) AgentPID(id string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := c.nodes[id]
	if n == nil || n.cmd == nil || n.cmd.Process == nil {
		return 0
	}
	select {
	case <-n.exited:
		return 0
	default:
	}
	return n.cmd.Process.Pid
}

// PostgresPIDs are the postmaster of node id and all its children.
func (c *Cluster) PostgresPIDs(id string) []int {
	n := c.Node(id)
	if n == nil {
		return nil
	}
	pm := n.PostmasterPID()
	if pm <= 0 {
		return nil
	}
	pids := []int{pm}
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		// pid (comm) state ppid ...: comm may hold spaces; cut after ')'.
		s := string(b)
		i := strings.LastIndexByte(s, ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(s[i+1:])
		if len(f) > 1 {
			if pp, _ := strconv.Atoi(f[1]); pp == pm {
				pids = append(pids, pid)
			}
		}
	}
	return pids
}

// SignalAgent sends sig to node id's agent process only (not Postgres).
func (c *Cluster) SignalAgent(id string, sig syscall.Signal) error {
	pid := c.AgentPID(id)
	if pid == 0 {
		return fmt.Errorf("node %s: agent not running", id)
	}
	return syscall.Kill(pid, sig)
}

// SignalPostgres sends sig to node id's postmaster and every backend.
// With SIGSTOP the whole server hangs (a frozen VM's Postgres).
func (c *Cluster) SignalPostgres(id string, sig syscall.Signal) error {
	pids := c.PostgresPIDs(id)
	if len(pids) == 0 {
		return fmt.Errorf("node %s: postgres not running", id)
	}
	for _, p := range pids {
		_ = syscall.Kill(p, sig)
	}
	return nil
}

// Running reports whether node id's agent process is alive.
func (c *Cluster) Running(id string) bool { return c.AgentPID(id) != 0 }

// MountTmpfs puts node id's data dir on a tmpfs of the given size (e.g.
// "256m") so a test can fill it. Root only; call it after DefineNode and
// before StartNode. Close unmounts it.
func (c *Cluster) MountTmpfs(ctx context.Context, id, size string) error {
	if os.Geteuid() != 0 {
		return fmt.Errorf("a tmpfs data dir needs root")
	}
	n := c.Node(id)
	if n == nil {
		return fmt.Errorf("no node %s", id)
	}
	if err := os.MkdirAll(n.DataDir, 0o755); err != nil {
		return err
	}
	out, err := exec.CommandContext(ctx, "mount", "-t", "tmpfs", "-o", "size="+size+",mode=0755", "tmpfs", n.DataDir).CombinedOutput()
	if err != nil {
		return fmt.Errorf("mounting a tmpfs on %s: %w: %s", n.DataDir, err, out)
	}
	c.mu.Lock()
	c.mounts = append(c.mounts, n.DataDir)
	c.mu.Unlock()
	return nil
}

func (c *Cluster) unmountAll() {
	c.mu.Lock()
	ms := c.mounts
	c.mounts = nil
	c.mu.Unlock()
	for _, m := range ms {
		_ = exec.Command("umount", "-l", m).Run()
	}
}

// FillDisk writes <data dir>/fill until the filesystem is full and
// returns a function that removes it.
func (c *Cluster) FillDisk(id string) (free func() error, err error) {
	n := c.Node(id)
	if n == nil {
		return nil, fmt.Errorf("no node %s", id)
	}
	c.mu.Lock()
	mounted := slices.Contains(c.mounts, n.DataDir)
	c.mu.Unlock()
	if !mounted {
		return nil, fmt.Errorf("node %s's data dir is not a tmpfs of this cluster (MountTmpfs): refusing to fill a real disk", id)
	}
	p := filepath.Join(n.DataDir, "fill")
	f, err := os.OpenFile(p, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, err
	}
	buf := make([]byte, 1<<20)
	for {
		if _, err := f.Write(buf); err != nil {
			if errors.Is(err, syscall.ENOSPC) {
				break
			}
			f.Close()
			_ = os.Remove(p)
			return nil, fmt.Errorf("filling %s: %w", n.DataDir, err)
		}
	}
	// Top off with small writes so not even a page is left.
	small := make([]byte, 4096)
	for {
		if _, err := f.Write(small); err != nil {
			break
		}
	}
	f.Close()
	return func() error { return os.Remove(p) }, nil
}
