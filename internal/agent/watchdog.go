package agent

import (
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	"github.com/petrel-db/petrel/internal/watchdog"
)

// extWatchdog is the agent's end of `petrel-watchdog` (package
// watchdog): a child process, in its own process group so that signals
// meant for the agent (SIGSTOP included) do not reach it, that kills a
// leader's Postgres when the agent stops renewing.
//
// Lines go through a one-slot mailbox to a writer goroutine: if the child
// stops reading (stopped, hung), only that goroutine blocks on the pipe,
// never the agent's own fence watchdog that calls arm and disarm.
type extWatchdog struct {
	in     io.WriteCloser
	mail   chan string   // latest line not yet written (1 slot)
	exited chan struct{} // closed when the child exits
	last   string        // the last line queued (used by the fence goroutine only)
	pids   map[int]uint64
}

// WatchdogBinary is the watchdog's executable, looked for next to the
// agent's own.
const WatchdogBinary = "petrel-watchdog"

// watchdogCommand is how to start the watchdog: petrel-watchdog next to
// the agent's executable (a couple of MiB resident), else the agent's own
// binary's hidden `watchdog` command (the same code, the size of a whole
// agent).
func watchdogCommand() (*exec.Cmd, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("finding the agent's executable: %w", err)
	}
	small := filepath.Join(filepath.Dir(exe), WatchdogBinary)
	if st, err := os.Stat(small); err == nil && st.Mode().IsRegular() && st.Mode().Perm()&0o111 != 0 {
		return exec.Command(small), nil
	}
	return exec.Command(exe, "watchdog"), nil
}

// startExtWatchdog starts the child. Failure is logged by the caller and
// leaves the in-process fenceWatchdog alone on duty.
func startExtWatchdog(log *slog.Logger) (*extWatchdog, error) {
	cmd, err := watchdogCommand()
	if err != nil {
		return nil, fmt.Errorf("starting the watchdog: %w", err)
	}
	if len(cmd.Args) > 1 {
		log.Info("no " + WatchdogBinary + " next to the agent: running the watchdog from the agent's own binary")
	}
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	in, err := cmd.StdinPipe()
	if err != nil {
		return nil, fmt.Errorf("starting the watchdog: %w", err)
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting the watchdog: %w", err)
	}
	w := &extWatchdog{in: in, mail: make(chan string, 1), exited: make(chan struct{}), pids: map[int]uint64{}}
	go func() {
		err := cmd.Wait()
		close(w.exited)
		log.Warn("the watchdog process exited", "err", err)
	}()
	go w.writer()
	return w, nil
}

// writer writes queued lines until the mailbox closes (stop).
func (w *extWatchdog) writer() {
	for line := range w.mail {
		if _, err := io.WriteString(w.in, line+"\n"); err != nil {
			// The child is gone; keep draining so callers never block.
			continue
		}
	}
	_ = w.in.Close()
}

// arm says the lease is safe until safeFor from now (the caller takes the
// margin off) and pid is the postmaster.
func (w *extWatchdog) arm(safeFor time.Duration, pid int) {
	if w == nil {
		return
	}
	start, ok := w.pids[pid]
	if !ok {
		start = watchdog.StartTime(pid)
		w.pids = map[int]uint64{pid: start} // only the current postmaster
	}
	dl := watchdog.Monotonic() + int64(safeFor)
	w.send("arm " + strconv.FormatInt(dl, 10) + " " + strconv.Itoa(pid) + " " + strconv.FormatUint(start, 10))
}

func (w *extWatchdog) disarm() {
	if w != nil && w.last != "disarm" {
		w.send("disarm")
	}
}

// send replaces any line still waiting in the mailbox: only the newest
// instruction matters.
func (w *extWatchdog) send(line string) {
	w.last = line
	for {
		select {
		case w.mail <- line:
			return
		default:
		}
		select {
		case <-w.mail:
		default:
		}
	}
}

// stop disarms and closes: the child exits at once.
func (w *extWatchdog) stop() {
	if w == nil {
		return
	}
	w.send("disarm")
	close(w.mail)
}
