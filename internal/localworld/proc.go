package localworld

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// alive reports whether a process with this pid exists (and is not a
// zombie, when /proc says so).
func alive(pid int) bool {
	if pid <= 0 {
		return false
	}
	err := syscall.Kill(pid, 0)
	if err != nil && !errors.Is(err, syscall.EPERM) {
		return false
	}
	if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid)); err == nil {
		// Field 3, after the parenthesised command name, is the state.
		if i := bytes.LastIndexByte(b, ')'); i >= 0 && i+2 < len(b) && b[i+2] == 'Z' {
			return false
		}
	}
	return true
}

func readPID(path string) (int, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		return 0, fmt.Errorf("%s: not a pid: %w", path, err)
	}
	return pid, nil
}

// claimPIDFile writes our pid to dir/up.pid, refusing when another live
// process holds it.
func claimPIDFile(dir string) (string, error) {
	p := filepath.Join(dir, PIDFileName)
	if pid, err := readPID(p); err == nil && pid != os.Getpid() && alive(pid) {
		return "", fmt.Errorf("petrel up is already running on %s (pid %d): stop it with `petrel down --dir %s`", dir, pid, dir)
	} else if err != nil && !errors.Is(err, fs.ErrNotExist) {
		// unreadable or garbage: treat as stale
		_ = os.Remove(p)
	}
	if err := writeFileAtomic(p, []byte(strconv.Itoa(os.Getpid())+"\n"), 0o600); err != nil {
		return "", fmt.Errorf("writing %s: %w", p, err)
	}
	return p, nil
}

// ErrNotRunning is returned by Down when no `petrel up` runs on the dir.
var ErrNotRunning = errors.New("no petrel up is running there")

// DownTimeout bounds how long Down waits for `petrel up` to exit.
const DownTimeout = 60 * time.Second

// Down asks the `petrel up` running on dir (found by its up.pid) to stop,
// with SIGTERM, and waits until it has exited (up to DownTimeout). It
// returns an error wrapping ErrNotRunning when none runs (a stale pid file
// is removed).
func Down(dir string) error {
	p := filepath.Join(dir, PIDFileName)
	pid, err := readPID(p)
	if errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("%s: no %s: %w", dir, PIDFileName, ErrNotRunning)
	}
	if err != nil {
		return err
	}
	if pid == os.Getpid() || !alive(pid) {
		_ = os.Remove(p)
		return fmt.Errorf("%s: pid %d has exited: %w", dir, pid, ErrNotRunning)
	}
	if err := syscall.Kill(pid, syscall.SIGTERM); err != nil {
		if errors.Is(err, syscall.ESRCH) {
			_ = os.Remove(p)
			return fmt.Errorf("%s: pid %d has exited: %w", dir, pid, ErrNotRunning)
		}
		return fmt.Errorf("signalling petrel up (pid %d): %w", pid, err)
	}
	deadline := time.Now().Add(DownTimeout)
	for alive(pid) {
		if time.Now().After(deadline) {
			return fmt.Errorf("petrel up (pid %d) still running %v after SIGTERM; see its terminal, or kill -9 %d", pid, DownTimeout, pid)
		}
		time.Sleep(200 * time.Millisecond)
	}
	return nil
}

// killStaleAgent stops an agent left over from an earlier `petrel up`
// that died without stopping its children: the pid recorded in pidFile,
// if it is still alive and its command line names dataDir.
func killStaleAgent(pidFile, dataDir string) (int, bool) {
	pid, err := readPID(pidFile)
	if err != nil || !alive(pid) {
		return 0, false
	}
	cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil || !bytes.Contains(cmdline, []byte("\x00"+dataDir+"\x00")) {
		return 0, false
	}
	_ = syscall.Kill(pid, syscall.SIGTERM)
	deadline := time.Now().Add(30 * time.Second)
	for alive(pid) && time.Now().Before(deadline) {
		time.Sleep(100 * time.Millisecond)
	}
	if alive(pid) {
		_ = syscall.Kill(-pid, syscall.SIGKILL)
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
	return pid, true
}
