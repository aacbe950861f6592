package main

import (
	"testing"
	"time"
)

func TestParseSizes(t *testing.T) {
	got, err := parseSizes("100, 300,1000")
	if err != nil || len(got) != 3 || got[0] != 100 || got[2] != 1000 {
		t.Fatalf("parseSizes: %v %v", got, err)
	}
	for _, bad := range []string{"", "0", "10,x", "-3"} {
		if _, err := parseSizes(bad); err == nil {
			t.Errorf("parseSizes(%q) accepted", bad)
		}
	}
}

func TestQuantile(t *testing.T) {
	var ds []time.Duration
	for i := 100; i >= 1; i-- {
		ds = append(ds, time.Duration(i)*time.Millisecond)
	}
	for _, c := range []struct {
		q    float64
		want time.Duration
	}{{.5, 50 * time.Millisecond}, {.99, 99 * time.Millisecond}, {1, 100 * time.Millisecond}, {0, time.Millisecond}} {
		if got := quantile(ds, c.q); got != c.want {
			t.Errorf("quantile(%v) = %v, want %v", c.q, got, c.want)
		}
	}
	if quantile(nil, .99) != 0 {
		t.Error("quantile of nothing")
	}
}

// Deliveries count each member other than the writer, from the write's
// send time; events nobody here wrote (a lease expiry) are left out.
func TestDeliveries(t *testing.T) {
	r := newRecorder()
	r.phase.Store(2)
	t0 := time.Now()
	pa, pb, pc := r.probe("c1", "a", "/k"), r.probe("c1", "b", "/k"), r.probe("c1", "c", "/k")
	pa.Committed(t0, 7)
	for _, p := range []func(string, int64){pa.Watched, pb.Watched, pc.Watched} {
		p("/k", 7)
		p("/other", 7)
	}
	pb.Watched("/k", 9) // no write recorded: an expiry
	d := r.deliveries()
	if len(d) != 2 {
		t.Fatalf("deliveries %v, want b's and c's", d)
	}
	for _, x := range d {
		if x < 0 || x > time.Minute {
			t.Fatalf("delivery %v", x)
		}
	}
}

// A standby streams only while it runs in recovery and its upstream runs
// on a timeline it can follow; streaming brings it to the upstream.
func TestSimPGStreaming(t *testing.T) {
	up := simPG{initialized: true, running: true, timeline: 2, lsn: 50}
	sb := simPG{initialized: true, signal: true, running: true, recovery: true, timeline: 1, lsn: 40, upstream: "x"}
	if !sb.streamsFrom(up) {
		t.Fatal("a standby on an older timeline does not stream from a newer primary")
	}
	sb.catchUp(up)
	if sb.lsn != 50 || sb.timeline != 2 {
		t.Fatalf("after catching up: %+v", sb)
	}
	if sb.dataRole() == up.dataRole() {
		t.Fatal("standby and primary report one data role")
	}
	down := up
	down.running = false
	if sb.streamsFrom(down) {
		t.Fatal("streams from a stopped upstream")
	}
	if got := parseSyncNames(`ANY 1 ("scl2", "ord1")`); len(got) != 2 || got[1] != "ord1" {
		t.Fatalf("parseSyncNames: %v", got)
	}
}
