package watchdog

import (
	"context"
	"io"
	"log/slog"
	"os/exec"
	"strconv"
	"testing"
	"time"
)

func sleeper(t *testing.T) (*exec.Cmd, <-chan struct{}) {
	t.Helper()
	c := exec.Command("sleep", "60")
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { _ = c.Wait(); close(done) }()
	t.Cleanup(func() { _ = c.Process.Kill(); <-done })
	return c, done
}

func start(t *testing.T, name string) (io.WriteCloser, <-chan error) {
	t.Helper()
	r, w := io.Pipe()
	errc := make(chan error, 1)
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	go func() { errc <- Run(ctx, r, Config{ProcName: name}, slog.New(slog.DiscardHandler)) }()
	return w, errc
}

// arm is an arm line for c, ms from now.
func arm(c *exec.Cmd, ms int) string {
	pid := c.Process.Pid
	return "arm " + strconv.FormatInt(Monotonic()+int64(ms)*1e6, 10) + " " + strconv.Itoa(pid) + " " + strconv.FormatUint(StartTime(pid), 10)
}

func send(t *testing.T, w io.Writer, line string) {
	t.Helper()
	if _, err := io.WriteString(w, line+"\n"); err != nil {
		t.Fatal(err)
	}
}

func TestRenewedLeaseKeepsItAlive(t *testing.T) {
	c, dead := sleeper(t)
	w, _ := start(t, "sleep")
	for range 10 {
		send(t, w, arm(c, 300))
		time.Sleep(50 * time.Millisecond)
	}
	select {
	case <-dead:
		t.Fatal("killed while the lease was being renewed")
	default:
	}
	// No more renewals: it dies at the deadline.
	select {
	case <-dead:
	case <-time.After(10 * time.Second):
		t.Fatal("not killed after the deadline passed")
	}
}

func TestDisarmAndEOF(t *testing.T) {
	c, dead := sleeper(t)
	w, errc := start(t, "sleep")
	send(t, w, arm(c, 200))
	send(t, w, "disarm")
	_ = w.Close()
	select {
	case err := <-errc:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("a disarmed watchdog did not exit when its agent went away")
	}
	time.Sleep(400 * time.Millisecond)
	select {
	case <-dead:
		t.Fatal("killed after disarm")
	default:
	}
}

// Rule 2: the agent dying does not disarm.
func TestAgentGoneWhileArmed(t *testing.T) {
	c, dead := sleeper(t)
	w, errc := start(t, "sleep")
	send(t, w, arm(c, 200))
	_ = w.Close()
	select {
	case <-dead:
	case <-time.After(10 * time.Second):
		t.Fatal("not killed after the agent went away armed")
	}
	select {
	case <-errc:
	case <-time.After(5 * time.Second):
		t.Fatal("did not exit after firing")
	}
}

// Rule 3: a pid that is not a postgres process is never killed.
func TestWrongProcessNotKilled(t *testing.T) {
	c, dead := sleeper(t)
	w, _ := start(t, "postgres")
	send(t, w, arm(c, 50))
	send(t, w, "bogus line")
	send(t, w, "arm -5 1 0")
	time.Sleep(500 * time.Millisecond)
	select {
	case <-dead:
		t.Fatal("killed a process that is not postgres")
	default:
	}
}

// Rule 3: the same pid with another start time is another process.
func TestReusedPidNotKilled(t *testing.T) {
	c, dead := sleeper(t)
	w, _ := start(t, "sleep")
	pid := c.Process.Pid
	send(t, w, "arm "+strconv.FormatInt(Monotonic()+50e6, 10)+" "+strconv.Itoa(pid)+" "+strconv.FormatUint(StartTime(pid)+1, 10))
	time.Sleep(500 * time.Millisecond)
	select {
	case <-dead:
		t.Fatal("killed a process with another start time")
	default:
	}
}

// A line read late still means the instant it named: a deadline already
// past fires at once.
func TestDeadlineIsAbsolute(t *testing.T) {
	c, dead := sleeper(t)
	w, _ := start(t, "sleep")
	send(t, w, arm(c, -1000))
	select {
	case <-dead:
	case <-time.After(5 * time.Second):
		t.Fatal("a past deadline did not fire")
	}
}
