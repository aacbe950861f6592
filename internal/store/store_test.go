package store

import (
	"bufio"
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/petrel-db/petrel/internal/etcdembed"
	"github.com/petrel-db/petrel/internal/model"
)

const testTTL = 2 * time.Second

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

type testEtcd struct {
	t    *testing.T
	opts etcdembed.Options
	srv  *etcdembed.Server
}

func startEtcd(t *testing.T) *testEtcd {
	t.Helper()
	e := &testEtcd{t: t, opts: etcdembed.Options{
		Dir:       t.TempDir(),
		ClientURL: fmt.Sprintf("http://127.0.0.1:%d", freePort(t)),
		PeerURL:   fmt.Sprintf("http://127.0.0.1:%d", freePort(t)),
	}}
	e.start()
	t.Cleanup(func() { e.srv.Kill() })
	return e
}

func (e *testEtcd) start() {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	srv, err := etcdembed.Start(ctx, e.opts)
	if err != nil {
		e.t.Fatal(err)
	}
	e.srv = srv
}

// keepAliveStats reads, from etcd's own metrics, how many LeaseKeepAlive
// streams were opened and how many messages they carried.
func (e *testEtcd) keepAliveStats() (streams, msgs float64) {
	e.t.Helper()
	resp, err := http.Get(e.opts.ClientURL + "/metrics")
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		l := sc.Text()
		if !strings.Contains(l, `grpc_method="LeaseKeepAlive"`) {
			continue
		}
		f := strings.Fields(l)
		v, _ := strconv.ParseFloat(f[len(f)-1], 64)
		switch {
		case strings.HasPrefix(l, "grpc_server_started_total{"):
			streams += v
		case strings.HasPrefix(l, "grpc_server_msg_received_total{"):
			msgs += v
		}
	}
	return streams, msgs
}

func dial(t *testing.T, e *testEtcd) *Store {
	t.Helper()
	st, err := Dial(context.Background(), Conn{Endpoints: []string{e.opts.ClientURL}}, "test", testTTL, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { st.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done; st.Close() })
	return st
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestLeaderLease(t *testing.T) {
	e := startEtcd(t)
	st := dial(t, e)
	ctx := context.Background()
	waitFor(t, "the store", st.OK)
	if st.Session() == 0 {
		t.Fatal("no session lease")
	}
	if l, left := st.Lease(); l != 0 || left != 0 {
		t.Fatalf("a non-leader holds leader lease %x (%v left)", l, left)
	}
	if err := st.Register(ctx, model.Member{ID: "n1", Region: "scl"}); err != nil {
		t.Fatal(err)
	}
	before := time.Now()
	if err := st.AcquireLeader(ctx, "n1", 0); err != nil {
		t.Fatal(err)
	}
	lease, left := st.Lease()
	if lease == 0 || left <= 0 || left > testTTL-time.Since(before)+time.Second {
		t.Fatalf("after acquiring: lease %x, %v left", lease, left)
	}
	if lease == st.Session() {
		t.Fatal("the leader key is on the session lease")
	}
	waitFor(t, "the leader key in the cache", func() bool {
		s := st.Snapshot()
		return s.Leader == "n1" && s.LeaderLease == lease && s.Members["n1"].ID == "n1"
	})
	if s := st.Snapshot(); st.MemberLease("n1") != st.Session() || s.Registered[0] != "n1" {
		t.Fatalf("member record not on the session lease: %x vs %x, registered %v", st.MemberLease("n1"), st.Session(), s.Registered)
	}

	// Held across several TTLs, renewed over one stream.
	streams0, msgs0 := e.keepAliveStats()
	time.Sleep(3 * testTTL)
	streams1, msgs1 := e.keepAliveStats()
	if l, left := st.Lease(); l != lease || left <= 0 || !st.OK() {
		t.Fatalf("after 3 TTLs: lease %x (want %x), %v left, ok %v", l, lease, left, st.OK())
	}
	if streams1-streams0 > 1 || msgs1-msgs0 < 2 {
		t.Fatalf("renewals over 3 TTLs: %v new streams, %v messages; want at most 1 stream carrying several", streams1-streams0, msgs1-msgs0)
	}

	if err := st.ReleaseLeader(ctx); err != nil {
		t.Fatal(err)
	}
	if l, _ := st.Lease(); l != 0 {
		t.Fatalf("still holding leader lease %x after releasing", l)
	}
	waitFor(t, "the leader lease revoked", func() bool {
		r, err := st.Client().TimeToLive(ctx, lease)
		return err == nil && r.TTL < 0
	})
	waitFor(t, "no leader in the cache", func() bool { return st.Snapshot().Leader == "" })
}

// A peer that deletes the key (revoking a leader it thought dead) makes
// the node let its leader lease go.
func TestLeaderKeyTakenAway(t *testing.T) {
	e := startEtcd(t)
	st := dial(t, e)
	ctx := context.Background()
	waitFor(t, "the store", st.OK)
	if err := st.AcquireLeader(ctx, "n1", 0); err != nil {
		t.Fatal(err)
	}
	lease, _ := st.Lease()
	waitFor(t, "the leader key", func() bool { return st.Snapshot().LeaderLease == lease })
	if err := st.RevokeLeader(ctx, st.Snapshot().LeaderRev); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the leader lease dropped", func() bool { l, _ := st.Lease(); return l == 0 })
	// A second acquisition races nobody and takes a new lease.
	if err := st.AcquireLeader(ctx, "n1", st.Snapshot().SyncRev); err != nil {
		t.Fatal(err)
	}
	if l, _ := st.Lease(); l == 0 || l == lease {
		t.Fatalf("second acquisition: lease %x (first %x)", l, lease)
	}
}

// A lost race leaves no lease behind.
func TestAcquireLost(t *testing.T) {
	e := startEtcd(t)
	a, b := dial(t, e), dial(t, e)
	ctx := context.Background()
	waitFor(t, "the store", func() bool { return a.OK() && b.OK() })
	if err := a.AcquireLeader(ctx, "a", 0); err != nil {
		t.Fatal(err)
	}
	if err := b.AcquireLeader(ctx, "b", 0); err == nil {
		t.Fatal("two acquisitions of one key succeeded")
	}
	if l, _ := b.Lease(); l != 0 {
		t.Fatalf("the loser holds leader lease %x", l)
	}
	waitFor(t, "only two session leases and one leader lease", func() bool {
		r, err := a.Client().Leases(ctx)
		return err == nil && len(r.Leases) == 3
	})
}

// With etcd gone, the leader's lease time runs out from the last
// confirmed send (never later), the leader sees its renewal late, and a
// member sees the store unreachable; when etcd is back both recover, the
// leader on the same lease.
func TestStoreDown(t *testing.T) {
	e := startEtcd(t)
	leader, member := dial(t, e), dial(t, e)
	ctx := context.Background()
	waitFor(t, "the store", func() bool { return leader.OK() && member.OK() })
	if !member.Reachable(ctx, time.Second) {
		t.Fatal("member: store not reachable")
	}
	if err := leader.AcquireLeader(ctx, "l", 0); err != nil {
		t.Fatal(err)
	}
	lease, _ := leader.Lease()
	if leader.RenewalLate() {
		t.Fatal("renewal late right after acquiring")
	}

	killed := time.Now()
	e.srv.Kill()
	for time.Since(killed) < testTTL+time.Second {
		// The last confirmed renewal was sent before the kill.
		if _, left := leader.Lease(); left > testTTL-time.Since(killed) {
			t.Fatalf("%v after etcd stopped, %v of a %v lease left", time.Since(killed), left, testTTL)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if leader.OK() || !leader.RenewalLate() {
		t.Fatalf("leader with etcd down: ok %v, renewal late %v", leader.OK(), leader.RenewalLate())
	}
	waitFor(t, "member sees the store down", func() bool { return !member.OK() })
	if member.Reachable(ctx, 200*time.Millisecond) {
		t.Fatal("member: store reachable while stopped")
	}

	e.start()
	waitFor(t, "both back", func() bool { return leader.OK() && member.OK() })
	if l, left := leader.Lease(); l != lease || left <= 0 || leader.RenewalLate() {
		t.Fatalf("leader after etcd came back: lease %x (was %x), %v left, late %v", l, lease, left, leader.RenewalLate())
	}
	if !member.Reachable(ctx, time.Second) {
		t.Fatal("member: store not reachable once back")
	}
}

// Stores made with New share one client, which Close leaves open; the
// probe hears each store's renewals, its own compare-and-swap writes and
// the watch events its cache applied.
func TestSharedClientProbe(t *testing.T) {
	e := startEtcd(t)
	cli, err := OpenClient(context.Background(), Conn{Endpoints: []string{e.opts.ClientURL}}, "shared", slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	type heard struct {
		mu        sync.Mutex
		leaderOK  int
		committed []int64
		watched   map[int64]bool
	}
	var ha, hb heard
	probe := func(h *heard, leaderKey string) Probe {
		h.watched = map[int64]bool{}
		return Probe{
			Renewal: func(leader bool, took time.Duration, err error) {
				h.mu.Lock()
				defer h.mu.Unlock()
				if leader && err == nil && took > 0 {
					h.leaderOK++
				}
			},
			Committed: func(_ time.Time, rev int64) { h.mu.Lock(); h.committed = append(h.committed, rev); h.mu.Unlock() },
			Watched: func(key string, rev int64) {
				if key == leaderKey {
					h.mu.Lock()
					h.watched[rev] = true
					h.mu.Unlock()
				}
			},
		}
	}
	lk := KeysFor("shared").Leader()
	a, b := New(cli, "shared", testTTL, slog.New(slog.DiscardHandler)), New(cli, "shared", testTTL, slog.New(slog.DiscardHandler))
	a.SetProbe(probe(&ha, lk))
	b.SetProbe(probe(&hb, lk))
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for _, st := range []*Store{a, b} {
		wg.Add(1)
		go func() { defer wg.Done(); st.Run(ctx) }()
	}
	defer func() { cancel(); wg.Wait() }()
	waitFor(t, "both stores", func() bool { return a.OK() && b.OK() })
	if a.Session() == b.Session() {
		t.Fatal("two stores on one client share a session lease")
	}
	if err := a.AcquireLeader(ctx, "a", 0); err != nil {
		t.Fatal(err)
	}
	ha.mu.Lock()
	if len(ha.committed) != 1 {
		t.Fatalf("a's commits heard: %v, want the acquisition's", ha.committed)
	}
	rev := ha.committed[0]
	ha.mu.Unlock()
	waitFor(t, "b's cache applying the leader key's put", func() bool {
		hb.mu.Lock()
		defer hb.mu.Unlock()
		return hb.watched[rev]
	})
	waitFor(t, "a confirmed leader-lease renewal", func() bool {
		ha.mu.Lock()
		defer ha.mu.Unlock()
		return ha.leaderOK > 0
	})
	hb.mu.Lock()
	if hb.leaderOK != 0 || len(hb.committed) != 0 {
		t.Fatalf("b, which leads nothing and wrote nothing: %d leader renewals, commits %v", hb.leaderOK, hb.committed)
	}
	hb.mu.Unlock()
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	gctx, gcancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer gcancel()
	if _, err := cli.Get(gctx, lk); err != nil {
		t.Fatalf("the shared client after one store closed: %v", err)
	}
}
