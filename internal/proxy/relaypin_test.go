//go:build linux

package proxy

import (
	"bytes"
	"context"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestCPUsToPin: relays are pinned only when they are one per CPU the
// process may run on (rule 5), to those CPUs whatever their numbers.
func TestCPUsToPin(t *testing.T) {
	set := func(cpus ...int) *unix.CPUSet {
		var s unix.CPUSet
		for _, c := range cpus {
			s.Set(c)
		}
		return &s
	}
	for _, tc := range []struct {
		name string
		set  *unix.CPUSet
		n    int
		want []int
	}{
		{"one per CPU", set(0, 1), 2, []int{0, 1}},
		{"a cpuset's CPUs", set(2, 5, 70), 3, []int{2, 5, 70}},
		{"more CPUs than relays", set(0, 1, 2, 3, 4), 4, nil},
		{"fewer CPUs than relays", set(3), 2, nil},
		{"a single CPU", set(7), 1, []int{7}},
		{"no relay", set(0, 1), 0, nil},
	} {
		if got := cpusToPin(tc.set, tc.n); !slices.Equal(got, tc.want) {
			t.Errorf("%s: cpusToPin = %v, want %v", tc.name, got, tc.want)
		}
	}
}

// TestPinnedRelay: a pinned relay's loop runs on a thread allowed only its
// CPU and carries a connection; a connection maps to the relay pinned
// where its segments came in. (Whether the thread ends with the loop is
// not asserted: when the loop ran on the main thread, the runtime parks
// that thread for good instead.)
func TestPinnedRelay(t *testing.T) {
	var allowed unix.CPUSet
	if err := unix.SchedGetaffinity(0, &allowed); err != nil {
		t.Fatal(err)
	}
	cpus := cpusToPin(&allowed, allowed.Count())
	var rs []*relay
	for _, cpu := range cpus {
		r, err := newRelay()
		if err != nil {
			t.Fatal(err)
		}
		r.cpu = cpu
		rs = append(rs, r)
	}
	last := rs[len(rs)-1]
	before := threadsPinnedTo(t, last.cpu)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, len(rs))
	for _, r := range rs {
		go func() { done <- r.run(ctx) }()
	}
	stopped := false
	stop := func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		for range rs {
			if err := <-done; err != nil {
				t.Errorf("a relay stopped: %v", err)
			}
		}
	}
	defer stop()

	client, server, _ := relayed(t, last, 0)
	go func() { _, _ = io.Copy(server, server) }()
	_ = client.SetDeadline(time.Now().Add(30 * time.Second))
	msg := []byte("select 1")
	buf := make([]byte, len(msg))
	for i := range 100 {
		if _, err := client.Write(msg); err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(client, buf); err != nil || !bytes.Equal(buf, msg) {
			t.Fatalf("round trip %d through the pinned relay: %q, %v", i, buf, err)
		}
	}
	if len(cpus) > 1 {
		// With one CPU every thread is allowed only it: nothing to tell.
		if n := threadsPinnedTo(t, last.cpu); n <= before {
			t.Errorf("%d threads allowed only CPU %d with the relay running, %d before: the loop is not pinned", n, last.cpu, before)
		}
	}

	// The client's socket took in the echoes: the kernel says on which
	// CPU, one the process may run on, so exactly one relay is pinned there.
	a, b := tcpPair(t)
	if _, err := a.Write(msg); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(b, buf); err != nil {
		t.Fatal(err)
	}
	cpu := incomingCPU(b)
	if cpu < 0 || !allowed.IsSet(cpu) {
		t.Fatalf("incomingCPU = %d, not one of the process's CPUs", cpu)
	}
	if i := pinnedRelay(rs, b); i < 0 || rs[i].cpu != cpu {
		t.Errorf("pinnedRelay = %d for a connection coming in on CPU %d (relays on %v)", i, cpu, cpus)
	}
	if i := pinnedRelay([]*relay{{cpu: -1}}, b); i != -1 {
		t.Errorf("pinnedRelay = %d with unpinned relays, want -1 (round robin)", i)
	}

}

// threadsPinnedTo counts the process's threads allowed to run on cpu only.
func threadsPinnedTo(t *testing.T, cpu int) int {
	t.Helper()
	dirs, err := filepath.Glob("/proc/self/task/*/status")
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, d := range dirs {
		b, err := os.ReadFile(d)
		if err != nil {
			continue // the thread ended meanwhile
		}
		for _, line := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(line, "Cpus_allowed_list:"); ok && strings.TrimSpace(v) == strconv.Itoa(cpu) {
				n++
			}
		}
	}
	return n
}
