package chaos

import (
	"context"
	"fmt"
	"math/rand"
	"os/exec"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/petrel-db/petrel/internal/model"
	"github.com/petrel-db/petrel/internal/testcluster"
)

// Env is what a nemesis acts on.
type Env struct {
	C      *testcluster.Cluster
	Binary string
	Rng    *rand.Rand
	Lease  time.Duration
	Logf   func(format string, args ...any)
}

// Fault is one injected fault: Inject starts it and returns what to do
// to heal it (after Hold).
type Fault struct {
	Name   string
	Inject func(ctx context.Context, e *Env) (desc string, heal func(context.Context) error, err error)
}

// Leader returns the member reporting primary (or "" if none).
func (e *Env) Leader() string {
	ids := e.C.IDs()
	slices.Sort(ids)
	for _, id := range ids {
		if e.C.Role(id) == model.RolePrimary {
			return id
		}
	}
	return ""
}

// replicas lists members other than leader, sorted.
func (e *Env) others(leader string) []string {
	var out []string
	ids := e.C.IDs()
	slices.Sort(ids)
	for _, id := range ids {
		if id != leader {
			out = append(out, id)
		}
	}
	return out
}

func (e *Env) pick(ids []string) string {
	if len(ids) == 0 {
		return ""
	}
	return ids[e.Rng.Intn(len(ids))]
}

// hold sleeps for d (or until ctx ends).
func hold(ctx context.Context, d time.Duration) { sleep(ctx, d) }

func (e *Env) leaderOrErr() (string, error) {
	l := e.Leader()
	if l == "" {
		return "", fmt.Errorf("no leader to inject into")
	}
	return l, nil
}

func (e *Env) restart(ids ...string) func(context.Context) error {
	return func(ctx context.Context) error {
		for _, id := range ids {
			if !e.C.Running(id) {
				if err := e.C.StartNode(id); err != nil {
					return err
				}
			}
		}
		return nil
	}
}

// Faults is every fault the nemesis knows, by name.
func Faults() []Fault {
	return []Fault{
		{"kill-leader", func(ctx context.Context, e *Env) (string, func(context.Context) error, error) {
			l, err := e.leaderOrErr()
			if err != nil {
				return "", nil, err
			}
			return "kill -9 " + l, e.restart(l), e.C.Kill(l)
		}},
		{"kill-replica", func(ctx context.Context, e *Env) (string, func(context.Context) error, error) {
			r := e.pick(e.others(e.Leader()))
			return "kill -9 " + r, e.restart(r), e.C.Kill(r)
		}},
		{"kill-two", func(ctx context.Context, e *Env) (string, func(context.Context) error, error) {
			l, err := e.leaderOrErr()
			if err != nil {
				return "", nil, err
			}
			r := e.pick(e.others(l))
			_ = e.C.Kill(r)
			return "kill -9 " + l + " and " + r, e.restart(l, r), e.C.Kill(l)
		}},
		stopFault("pause-leader-agent", true, false),
		stopFault("pause-leader-postgres", false, true),
		stopFault("pause-leader-both", true, true),
		{"etcd-down", func(ctx context.Context, e *Env) (string, func(context.Context) error, error) {
			e.C.StopEtcd()
			return "etcd stopped", func(ctx context.Context) error { return e.C.RestartEtcd(ctx) }, nil
		}},
		{"switchover-crash", func(ctx context.Context, e *Env) (string, func(context.Context) error, error) {
			l, err := e.leaderOrErr()
			if err != nil {
				return "", nil, err
			}
			victim := l
			if e.Rng.Intn(2) == 0 {
				victim = e.pick(e.others(l))
			}
			delay := time.Duration(e.Rng.Intn(800)) * time.Millisecond
			done := make(chan string, 1)
			go func() {
				cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
				defer cancel()
				out, err := exec.CommandContext(cctx, e.Binary, append([]string{"failover"}, e.C.CLIFlags()...)...).CombinedOutput()
				done <- fmt.Sprintf("failover: err=%v %s", err, strings.TrimSpace(string(out)))
			}()
			hold(ctx, delay)
			kerr := e.C.Kill(victim)
			heal := func(ctx context.Context) error {
				select {
				case s := <-done:
					e.Logf("%s", s)
				case <-time.After(35 * time.Second):
				}
				return e.restart(victim)(ctx)
			}
			return fmt.Sprintf("switchover from %s, kill -9 %s after %v", l, victim, delay), heal, kerr
		}},
		partFault("part-leader-etcd", func(e *Env, l string) [][2]string { return [][2]string{{l, testcluster.EtcdHost}} }),
		partFault("part-leader-replicas", func(e *Env, l string) [][2]string {
			var p [][2]string
			for _, r := range e.others(l) {
				p = append(p, [2]string{l, r})
			}
			return p
		}),
		partFault("isolate-leader", func(e *Env, l string) [][2]string {
			p := [][2]string{{l, testcluster.EtcdHost}}
			for _, r := range e.others(l) {
				p = append(p, [2]string{l, r})
			}
			return p
		}),
		partFault("part-replica-leader", func(e *Env, l string) [][2]string {
			return [][2]string{{e.pick(e.others(l)), l}}
		}),
		{"disk-full-leader", func(ctx context.Context, e *Env) (string, func(context.Context) error, error) {
			l, err := e.leaderOrErr()
			if err != nil {
				return "", nil, err
			}
			free, err := e.C.FillDisk(l)
			if err != nil {
				return "", nil, err
			}
			return "filled " + l + "'s data dir", func(context.Context) error { return free() }, nil
		}},
		{"flap-leader-etcd", func(ctx context.Context, e *Env) (string, func(context.Context) error, error) {
			l, err := e.leaderOrErr()
			if err != nil {
				return "", nil, err
			}
			w := e.C.World()
			if w == nil {
				return "", nil, fmt.Errorf("cluster has no network world")
			}
			fctx, stop := context.WithCancel(ctx)
			done := make(chan struct{})
			go func() {
				defer close(done)
				for fctx.Err() == nil {
					w.Partition(l, testcluster.EtcdHost)
					hold(fctx, time.Duration(300+e.Rng.Intn(1700))*time.Millisecond)
					w.Heal(l, testcluster.EtcdHost)
					hold(fctx, time.Duration(300+e.Rng.Intn(1700))*time.Millisecond)
				}
			}()
			return "flapping " + l + "<->etcd", func(context.Context) error {
				stop()
				<-done
				w.HealAll()
				return nil
			}, nil
		}},
	}
}

func stopFault(name string, agent, postgres bool) Fault {
	return Fault{name, func(ctx context.Context, e *Env) (string, func(context.Context) error, error) {
		l, err := e.leaderOrErr()
		if err != nil {
			return "", nil, err
		}
		// Resume exactly the processes stopped, Postgres first, as a VM
		// thawing would: by heal time the agent's watchdog may have killed
		// the postmaster and the backends would stay stopped for ever,
		// holding its shared memory.
		var pg []int
		agentPID := 0
		var what []string
		if postgres {
			pg = e.C.PostgresPIDs(l)
			if len(pg) == 0 {
				return "", nil, fmt.Errorf("%s: postgres not running", l)
			}
			for _, p := range pg {
				_ = syscall.Kill(p, syscall.SIGSTOP)
			}
			what = append(what, "postgres")
		}
		if agent {
			agentPID = e.C.AgentPID(l)
			if agentPID == 0 {
				return "", nil, fmt.Errorf("%s: agent not running", l)
			}
			_ = syscall.Kill(agentPID, syscall.SIGSTOP)
			what = append(what, "agent")
		}
		heal := func(context.Context) error {
			for _, p := range pg {
				_ = syscall.Kill(p, syscall.SIGCONT)
			}
			if agentPID != 0 {
				_ = syscall.Kill(agentPID, syscall.SIGCONT)
			}
			return nil
		}
		return "SIGSTOP " + l + " " + strings.Join(what, "+"), heal, nil
	}}
}

func partFault(name string, pairs func(e *Env, leader string) [][2]string) Fault {
	return Fault{name, func(ctx context.Context, e *Env) (string, func(context.Context) error, error) {
		l, err := e.leaderOrErr()
		if err != nil {
			return "", nil, err
		}
		w := e.C.World()
		if w == nil {
			return "", nil, fmt.Errorf("cluster has no network world")
		}
		var desc []string
		ps := pairs(e, l)
		for _, p := range ps {
			w.Partition(p[0], p[1])
			desc = append(desc, p[0]+"|"+p[1])
		}
		return "partition " + strings.Join(desc, ","), func(context.Context) error {
			for _, p := range ps {
				w.Heal(p[0], p[1])
			}
			return nil
		}, nil
	}}
}

// FaultByName finds a fault.
func FaultByName(name string) (Fault, bool) {
	for _, f := range Faults() {
		if f.Name == name {
			return f, true
		}
	}
	return Fault{}, false
}

// FaultNames lists every fault's name.
func FaultNames() []string {
	var n []string
	for _, f := range Faults() {
		n = append(n, f.Name)
	}
	return n
}

// DefaultFaults are the faults random schedules draw from when none are
// named: every fault but disk-full-leader, which needs tmpfs data dirs.
func DefaultFaults() []string {
	var n []string
	for _, f := range FaultNames() {
		if f != "disk-full-leader" {
			n = append(n, f)
		}
	}
	return n
}
