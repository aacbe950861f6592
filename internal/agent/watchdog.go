package agent

import (
	"fmt"
	"io"
	"os"
	"os/exec"
	"syscall"
	"time"
)

// extWatchdog is the agent's end of `petrel watchdog` (package
// watchdog): a child process, in its own process group so that signals
// meant for the agent (SIGSTOP included) do not reach it, that kills a
// leader's Postgres when the agent stops renewing.
type extWatchdog struct {
	cmd  *exec.Cmd
	in   io.WriteCloser
	last string // the last line sent, to send only changes and renewals
}

// startExtWatchdog starts the child. Failure is logged by the caller and
// leaves the in-process fenceWatchdog alone on duty.
func startExtWatchdog() (*extWatchdog, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("starting the watchdog: %w", err)
	}
	cmd := exec.Command(exe, "watchdog")
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	in, err := cmd.StdinPipe()
	if err != nil {
		return nil, fmt.Errorf("starting the watchdog: %w", err)
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting the watchdog: %w", err)
	}
	go func() { _ = cmd.Wait() }()
	return &extWatchdog{cmd: cmd, in: in}, nil
}

// arm says the lease is safe for left more (minus nothing: the caller
// takes the margin off) and pid is the postmaster.
func (w *extWatchdog) arm(left time.Duration, pid int) {
	w.send(fmt.Sprintf("arm %d %d", left.Milliseconds(), pid))
}

func (w *extWatchdog) disarm() {
	if w.last != "disarm" {
		w.send("disarm")
	}
}

func (w *extWatchdog) send(line string) {
	if w == nil {
		return
	}
	w.last = line
	_, _ = io.WriteString(w.in, line+"\n")
}

// stop disarms and closes: the child exits at once.
func (w *extWatchdog) stop() {
	if w == nil {
		return
	}
	w.send("disarm")
	_ = w.in.Close()
}
