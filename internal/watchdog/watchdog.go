// Package watchdog is the leader's fence of last resort, in a process of
// its own: the node agent spawns `petrel-watchdog` (cmd/petrel-watchdog,
// found next to the agent's executable; `petrel watchdog` when it is
// missing) and keeps telling it, over its stdin, how long the agent's
// lease is certainly still held. If that time passes without a renewal,
// the watchdog SIGKILLs the postmaster and its children, whatever
// happened to the agent: hung (SIGSTOP, a stuck kernel call), killed, or
// wedged. Without it a hung agent's Postgres would keep serving reads,
// and holding connections, as a zombie primary after a new leader was
// elected.
//
// The package imports nothing beyond the runtime's own (os, strconv,
// syscall, time): the process it runs in stays a couple of MiB resident
// instead of a copy of the agent.
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
	"os"
	"strconv"
	"syscall"
	"time"
	"unsafe"
)

// Config tunes the watchdog.
type Config struct {
	// ProcName is the executable name a target pid must have.
	ProcName string
	// Proc is the proc filesystem's mount point ("/proc").
	Proc string
	// Log receives one line per event (nil: discarded).
	Log func(msg string)
}

type command struct {
	arm      bool
	deadline int64 // CLOCK_MONOTONIC ns
	pid      int
	start    uint64
}

type parseError string

func (e parseError) Error() string { return string(e) }

func parse(line string) (command, error) {
	f := fields(line)
	switch {
	case len(f) == 1 && f[0] == "disarm":
		return command{}, nil
	case len(f) == 4 && f[0] == "arm":
		dl, err1 := strconv.ParseInt(f[1], 10, 64)
		pid, err2 := strconv.Atoi(f[2])
		start, err3 := strconv.ParseUint(f[3], 10, 64)
		if err1 != nil || err2 != nil || err3 != nil || dl <= 0 || pid <= 1 {
			return command{}, parseError("bad arm line " + strconv.Quote(line))
		}
		return command{arm: true, deadline: dl, pid: pid, start: start}, nil
	}
	return command{}, parseError("unknown command " + strconv.Quote(line))
}

// fields splits s at runs of spaces, tabs and line ends.
func fields(s string) []string {
	var out []string
	i := -1
	for j := 0; j <= len(s); j++ {
		sep := j == len(s) || s[j] == ' ' || s[j] == '\t' || s[j] == '\n' || s[j] == '\r'
		switch {
		case sep && i >= 0:
			out = append(out, s[i:j])
			i = -1
		case !sep && i < 0:
			i = j
		}
	}
	return out
}

// Monotonic is CLOCK_MONOTONIC in nanoseconds, the clock arm lines use.
func Monotonic() int64 {
	var ts syscall.Timespec
	const clockMonotonic = 1 // CLOCK_MONOTONIC on Linux
	if _, _, e := syscall.RawSyscall(syscall.SYS_CLOCK_GETTIME, clockMonotonic, uintptr(unsafe.Pointer(&ts)), 0); e != 0 {
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
	b, err := os.ReadFile(proc + "/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return nil
	}
	i := len(b) - 1
	for i >= 0 && b[i] != ')' {
		i--
	}
	if i < 0 {
		return nil
	}
	return fields(string(b[i+1:]))
}

// Reader is what Run reads commands from (an *os.File, a pipe).
type Reader interface {
	Read(p []byte) (int, error)
}

// lines reads in line by line and sends each command on cmds; it closes
// cmds at EOF or on a read error. A line longer than 4 KiB is dropped.
func lines(in Reader, cmds chan<- command, stop <-chan struct{}, log func(string)) {
	defer close(cmds)
	buf := make([]byte, 0, 4096)
	chunk := make([]byte, 512)
	for {
		n, err := in.Read(chunk)
		buf = append(buf, chunk[:n]...)
		for {
			i := 0
			for i < len(buf) && buf[i] != '\n' {
				i++
			}
			if i == len(buf) {
				break
			}
			if c, perr := parse(string(buf[:i])); perr != nil {
				log("watchdog: ignoring a line: " + perr.Error())
			} else {
				select {
				case cmds <- c:
				case <-stop:
					return
				}
			}
			buf = buf[:copy(buf, buf[i+1:])]
		}
		if len(buf) > 4096 {
			log("watchdog: ignoring an overlong line")
			buf = buf[:0]
		}
		if err != nil {
			return
		}
	}
}

// Run reads commands from in until it closes and enforces the deadline
// they set; it returns once in is closed and nothing is armed, or when
// stop is closed.
func Run(in Reader, cfg Config, stop <-chan struct{}) error {
	if cfg.ProcName == "" {
		cfg.ProcName = "postgres"
	}
	if cfg.Proc == "" {
		cfg.Proc = "/proc"
	}
	log := cfg.Log
	if log == nil {
		log = func(string) {}
	}
	cmds := make(chan command)
	go lines(in, cmds, stop, log)
	var (
		armed bool
		cur   command
		timer = time.NewTimer(time.Hour)
		open  = true
	)
	timer.Stop()
	for {
		select {
		case <-stop:
			return nil
		case c, ok := <-cmds:
			if !ok {
				open = false
				cmds = nil
				if !armed {
					return nil
				}
				log("watchdog: the agent is gone while armed; fencing at the deadline (pid " + strconv.Itoa(cur.pid) +
					", in " + time.Duration(cur.deadline-Monotonic()).Round(time.Millisecond).String() + ")")
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
			log("watchdog: the agent did not renew its lease in time: killing postgres (pid " + strconv.Itoa(cur.pid) + ")")
			if err := killTree(cfg, cur.pid, cur.start); err != nil {
				log("watchdog: killing postgres: " + err.Error())
			}
			armed = false
			if !open {
				return nil
			}
		}
	}
}

// Main is the whole watchdog process: commands on stdin, log lines on
// stderr. It returns the exit status.
func Main() int {
	logf := func(msg string) {
		_, _ = os.Stderr.WriteString(time.Now().UTC().Format(time.RFC3339Nano) + " component=watchdog " + msg + "\n")
	}
	if err := Run(os.Stdin, Config{Log: logf}, nil); err != nil {
		logf(err.Error())
		return 1
	}
	return 0
}

// KillPostgres SIGKILLs the postmaster pid and its backends, after
// checking that pid is a postgres process. SIGKILL works on a stopped or
// hung process, where pg_ctl's signals wait.
func KillPostgres(pid int) error {
	return killTree(Config{ProcName: "postgres", Proc: "/proc"}, pid, 0)
}

type killError struct {
	pid int
	why string
	err error
}

func (e *killError) Error() string {
	s := "pid " + strconv.Itoa(e.pid) + ": " + e.why
	if e.err != nil {
		s += ": " + e.err.Error()
	}
	return s
}

func (e *killError) Unwrap() error { return e.err }

// killTree SIGKILLs pid, if it is a ProcName process started at start
// (0: any), and its children (backends; a stopped one would otherwise
// hold the shared memory).
func killTree(cfg Config, pid int, start uint64) error {
	if name := exeName(cfg.Proc, pid); name != cfg.ProcName {
		return &killError{pid: pid, why: "is " + strconv.Quote(name) + ", not " + cfg.ProcName + ": not killing"}
	}
	if st := startTime(cfg.Proc, pid); start != 0 && st != start {
		return &killError{pid: pid, why: "started at " + strconv.FormatUint(st, 10) + ", not " + strconv.FormatUint(start, 10) + ": another process, not killing"}
	}
	kids := children(cfg.Proc, pid)
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		return &killError{pid: pid, why: "killing", err: err}
	}
	for _, k := range kids {
		if exeName(cfg.Proc, k) == cfg.ProcName {
			_ = syscall.Kill(k, syscall.SIGKILL)
		}
	}
	return nil
}

func exeName(proc string, pid int) string {
	p, err := os.Readlink(proc + "/" + strconv.Itoa(pid) + "/exe")
	if err != nil {
		// Not allowed to read the link (another user's process without
		// root): fall back to comm, which Postgres children rewrite but
		// the postmaster keeps.
		b, err := os.ReadFile(proc + "/" + strconv.Itoa(pid) + "/comm")
		if err != nil {
			return ""
		}
		for len(b) > 0 && (b[len(b)-1] == '\n' || b[len(b)-1] == ' ') {
			b = b[:len(b)-1]
		}
		return string(b)
	}
	const deleted = " (deleted)"
	if len(p) > len(deleted) && p[len(p)-len(deleted):] == deleted {
		p = p[:len(p)-len(deleted)]
	}
	for i := len(p) - 1; i >= 0; i-- {
		if p[i] == '/' {
			return p[i+1:]
		}
	}
	return p
}

// children lists the pids whose parent is pid.
func children(proc string, pid int) []int {
	d, err := os.Open(proc)
	if err != nil {
		return nil
	}
	names, err := d.Readdirnames(-1)
	d.Close()
	if err != nil {
		return nil
	}
	var out []int
	for _, name := range names {
		n, err := strconv.Atoi(name)
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
