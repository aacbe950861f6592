// Package watchdog is the leader's fence of last resort, in a process of
// its own: the node agent spawns `petrel watchdog` and keeps telling it,
// over its stdin, how long the agent's lease is certainly still held.
// If that time passes without a renewal, the watchdog SIGKILLs the
// postmaster and its children, whatever happened to the agent: hung
// (SIGSTOP, a stuck kernel call), killed, or wedged. Without it a hung
// agent's Postgres would keep serving reads, and holding connections, as
// a zombie primary after a new leader was elected.
//
// Protocol (one line each, from the agent):
//
//	arm <deadline> <pid> <start>   kill at <deadline>, nanoseconds of
//	                               CLOCK_MONOTONIC (one clock for every
//	                               process on the host, so a line read
//	                               late still means the same instant);
//	                               <pid> is the postmaster and <start> its
//	                               start time (/proc/<pid>/stat field 22)
//	disarm                         not a writable leader: nothing to enforce
//
// Rules:
//  1. The agent arms with the lease's safe end minus a margin, so the
//     watchdog's deadline is never later than the lease's.
//  2. Stdin closing (the agent died) does not disarm: an armed watchdog
//     still fires at its deadline, then exits; a disarmed one exits at once.
//  3. It kills only the process it was armed with: same pid, same start
//     time, executable named Config.ProcName ("postgres"), so a reused pid
//     (another node's Postgres on the same host) is never hit.
package watchdog

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Config tunes the watchdog.
type Config struct {
	// ProcName is the executable name a target pid must have.
	ProcName string
	// Proc is the proc filesystem's mount point ("/proc").
	Proc string
}

type command struct {
	arm      bool
	deadline int64 // CLOCK_MONOTONIC ns
	pid      int
	start    uint64
}

func parse(line string) (command, error) {
	f := strings.Fields(line)
	switch {
	case len(f) == 1 && f[0] == "disarm":
		return command{}, nil
	case len(f) == 4 && f[0] == "arm":
		dl, err1 := strconv.ParseInt(f[1], 10, 64)
		pid, err2 := strconv.Atoi(f[2])
		start, err3 := strconv.ParseUint(f[3], 10, 64)
		if err1 != nil || err2 != nil || err3 != nil || dl <= 0 || pid <= 1 {
			return command{}, fmt.Errorf("bad arm line %q", line)
		}
		return command{arm: true, deadline: dl, pid: pid, start: start}, nil
	}
	return command{}, fmt.Errorf("unknown command %q", line)
}

// Monotonic is CLOCK_MONOTONIC in nanoseconds, the clock arm lines use.
func Monotonic() int64 {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		return 0
	}
	return ts.Nano()
}

// StartTime is a process's start time (/proc/<pid>/stat field 22), 0 when
// it cannot be read.
func StartTime(pid int) uint64 { return startTime("/proc", pid) }

func startTime(proc string, pid int) uint64 {
	f := statFields(proc, pid)
	// Fields after "(comm)": state is [0], ppid [1], ... starttime [19].
	if len(f) < 20 {
		return 0
	}
	v, _ := strconv.ParseUint(f[19], 10, 64)
	return v
}

// statFields returns /proc/<pid>/stat's fields after "(comm)", which may
// hold spaces.
func statFields(proc string, pid int) []string {
	b, err := os.ReadFile(filepath.Join(proc, strconv.Itoa(pid), "stat"))
	if err != nil {
		return nil
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return nil
	}
	return strings.Fields(s[i+1:])
}

// Run reads commands from in until it closes and enforces the deadline
// they set; it returns once in is closed and nothing is armed, or when
// ctx ends.
func Run(ctx context.Context, in io.Reader, cfg Config, log *slog.Logger) error {
	if cfg.ProcName == "" {
		cfg.ProcName = "postgres"
	}
	if cfg.Proc == "" {
		cfg.Proc = "/proc"
	}
	cmds := make(chan command)
	go func() {
		defer close(cmds)
		sc := bufio.NewScanner(in)
		for sc.Scan() {
			c, err := parse(sc.Text())
			if err != nil {
				log.Warn("watchdog: ignoring a line", "err", err)
				continue
			}
			select {
			case cmds <- c:
			case <-ctx.Done():
				return
			}
		}
	}()
	var (
		armed bool
		cur   command
		timer = time.NewTimer(time.Hour)
		open  = true
	)
	timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case c, ok := <-cmds:
			if !ok {
				open = false
				cmds = nil
				if !armed {
					return nil
				}
				log.Warn("watchdog: the agent is gone while armed; fencing at the deadline", "pid", cur.pid,
					"in", time.Duration(cur.deadline-Monotonic()).Round(time.Millisecond))
				continue
			}
			armed, cur = c.arm, c
			timer.Stop()
			if armed {
				timer.Reset(max(0, time.Duration(c.deadline-Monotonic())))
			}
		case <-timer.C:
			if !armed {
				continue
			}
			if left := time.Duration(cur.deadline - Monotonic()); left > 0 {
				timer.Reset(left) // woke early (timer slack): wait out the rest
				continue
			}
			log.Error("watchdog: the agent did not renew its lease in time: killing postgres", "pid", cur.pid)
			if err := killTree(cfg, cur.pid, cur.start); err != nil {
				log.Warn("watchdog: killing postgres", "pid", cur.pid, "err", err)
			}
			armed = false
			if !open {
				return nil
			}
		}
	}
}

// KillPostgres SIGKILLs the postmaster pid and its backends, after
// checking that pid is a postgres process. SIGKILL works on a stopped or
// hung process, where pg_ctl's signals wait.
func KillPostgres(pid int) error {
	return killTree(Config{ProcName: "postgres", Proc: "/proc"}, pid, 0)
}

// killTree SIGKILLs pid, if it is a ProcName process started at start
// (0: any), and its children (backends; a stopped one would otherwise
// hold the shared memory).
func killTree(cfg Config, pid int, start uint64) error {
	if name := exeName(cfg.Proc, pid); name != cfg.ProcName {
		return fmt.Errorf("pid %d is %q, not %s: not killing", pid, name, cfg.ProcName)
	}
	if st := startTime(cfg.Proc, pid); start != 0 && st != start {
		return fmt.Errorf("pid %d started at %d, not %d: another process, not killing", pid, st, start)
	}
	kids := children(cfg.Proc, pid)
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		return fmt.Errorf("killing %d: %w", pid, err)
	}
	for _, k := range kids {
		if exeName(cfg.Proc, k) == cfg.ProcName {
			_ = syscall.Kill(k, syscall.SIGKILL)
		}
	}
	return nil
}

func exeName(proc string, pid int) string {
	p, err := os.Readlink(filepath.Join(proc, strconv.Itoa(pid), "exe"))
	if err != nil {
		// Not allowed to read the link (another user's process without
		// root): fall back to comm, which Postgres children rewrite but
		// the postmaster keeps.
		b, err := os.ReadFile(filepath.Join(proc, strconv.Itoa(pid), "comm"))
		if err != nil {
			return ""
		}
		return strings.TrimSpace(string(b))
	}
	return filepath.Base(strings.TrimSuffix(p, " (deleted)"))
}

// children lists the pids whose parent is pid.
func children(proc string, pid int) []int {
	ents, err := os.ReadDir(proc)
	if err != nil {
		return nil
	}
	var out []int
	for _, e := range ents {
		n, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if f := statFields(proc, n); len(f) >= 2 {
			if pp, err := strconv.Atoi(f[1]); err == nil && pp == pid {
				out = append(out, n)
			}
		}
	}
	return out
}
