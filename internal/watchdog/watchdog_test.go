package watchdog

import (
	"io"
	"os/exec"
	"strconv"
	"strings"
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
	stop := make(chan struct{})
	t.Cleanup(func() { close(stop) })
	go func() { errc <- Run(r, Config{ProcName: name, Log: func(m string) { t.Log(m) }}, stop) }()
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

func TestFieldsAndParse(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want []string
	}{
		{"", nil},
		{"  a  b\t c\n", []string{"a", "b", "c"}},
		{"disarm", []string{"disarm"}},
	} {
		got := fields(tc.in)
		if len(got) != len(tc.want) {
			t.Fatalf("fields(%q) = %q, want %q", tc.in, got, tc.want)
		}
		for i := range got {
			if got[i] != tc.want[i] {
				t.Fatalf("fields(%q) = %q, want %q", tc.in, got, tc.want)
			}
		}
	}
	if c, err := parse("arm 123 45 6"); err != nil || !c.arm || c.deadline != 123 || c.pid != 45 || c.start != 6 {
		t.Fatalf("parse arm: %+v %v", c, err)
	}
	for _, bad := range []string{"arm 1 1 0", "arm x 2 3", "arm 1 2", "fire", "arm -1 5 0"} {
		if _, err := parse(bad); err == nil {
			t.Fatalf("parse(%q) accepted", bad)
		}
	}
}

// Lines split across reads, and a line too long, are handled.
func TestLinesAcrossReads(t *testing.T) {
	c, dead := sleeper(t)
	w, _ := start(t, "sleep")
	line := arm(c, 50)
	send(t, w, strings.Repeat("x", 5000))
	for i := 0; i < len(line); i += 7 {
		if _, err := io.WriteString(w, line[i:min(i+7, len(line))]); err != nil {
			t.Fatal(err)
		}
	}
	send(t, w, "")
	select {
	case <-dead:
	case <-time.After(10 * time.Second):
		t.Fatal("an arm line written in pieces did not arm")
	}
}
