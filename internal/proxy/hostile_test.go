package proxy

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgproto3"
	"github.com/petrel-db/petrel/internal/api"
	"github.com/petrel-db/petrel/internal/model"
	"github.com/petrel-db/petrel/internal/pgtest"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// These tests run the proxy in front of a real PostgreSQL and play hostile
// clients from one loopback source (127.0.0.2) against a legitimate one
// from another (127.0.0.3): on Linux all of 127.0.0.0/8 reaches loopback,
// so each is a source of its own.

const (
	hostileSrc = "127.0.0.2"
	goodSrc    = "127.0.0.3"
)

// startRealLeader starts a real Postgres, an API that calls it the primary,
// and a proxy (cfg) routing to it.
func startRealLeader(t *testing.T, cfg Config) (*harness, *pgtest.Server) {
	t.Helper()
	srv := pgtest.Start(t)
	return startProxyFor(t, srv, cfg), srv
}

// pgSource is an agent's API source for a bare test server: always the
// primary, and GET /sessions from the server itself, as the agent reads it.
type pgSource struct{ srv *pgtest.Server }

func (s pgSource) Role() string                        { return model.RolePrimary }
func (s pgSource) Status(context.Context) model.Status { return model.Status{Role: model.RolePrimary} }
func (s pgSource) Health() []string                    { return nil }
func (s pgSource) Sessions(ctx context.Context, addr netip.Addr) ([]uint16, time.Duration, error) {
	ss, err := s.srv.ClientSessions(ctx)
	if err != nil {
		return nil, 0, err
	}
	var ports []uint16
	for _, a := range ss.Authenticated {
		if a.Addr() == addr {
			ports = append(ports, a.Port())
		}
	}
	return ports, ss.AuthTimeout, nil
}

// startProxyFor starts an API that calls srv the primary (the agent's
// routes: api.Handler) and a proxy (cfg) routing to it.
func startProxyFor(t *testing.T, srv *pgtest.Server, cfg Config) *harness {
	t.Helper()
	api := testCA(t).Server(t, "pg", api.Handler(pgSource{srv}, prometheus.NewRegistry()))
	h := startProxy(t, cfg)
	h.p.SetView("pg", map[string]model.Member{"pg": {
		ID: "pg", Region: "scl", APIURL: api.URL, PostgresAddr: net.JoinHostPort("127.0.0.1", strconv.Itoa(srv.Port)),
	}})
	waitUntil(t, "leader pg", func() bool { return h.p.Leader() == "pg" })
	return h
}

// counterValue reads a counter of the proxy's metrics.
func counterValue(c prometheus.Counter) float64 {
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		panic(err)
	}
	return m.GetCounter().GetValue()
}

func dialFrom(src, addr string) (net.Conn, error) {
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}, Timeout: 5 * time.Second}
	return d.Dial("tcp", addr)
}

// connectFrom logs in through the proxy at addr as the superuser, from src,
// and runs a query.
func connectFrom(ctx context.Context, srv *pgtest.Server, src, addr string) error {
	cfg, err := pgx.ParseConfig(srv.URL())
	if err != nil {
		return err
	}
	host, port, _ := net.SplitHostPort(addr)
	p, _ := strconv.Atoi(port)
	cfg.Host, cfg.Port = host, uint16(p)
	cfg.ConnectTimeout = 20 * time.Second
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}
	cfg.DialFunc = d.DialContext
	c, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return fmt.Errorf("connecting from %s through the proxy: %w", src, err)
	}
	defer c.Close(context.Background())
	var one int
	if err := c.QueryRow(ctx, "SELECT 1").Scan(&one); err != nil || one != 1 {
		return fmt.Errorf("query through the proxy: %d, %v", one, err)
	}
	return nil
}

// authenticating counts the postmaster's backends still authenticating a
// client, from their process titles ("... authentication"): PostgreSQL 15
// lists a backend in pg_stat_activity only once it is authenticated, but
// it takes one of max_connections as soon as it starts.
func authenticating(t *testing.T, srv *pgtest.Server) int {
	t.Helper()
	pid := strconv.Itoa(srv.PID())
	ents, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, e := range ents {
		if _, err := strconv.Atoi(e.Name()); err != nil {
			continue
		}
		stat, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		// pid (comm) state ppid ...: comm may hold spaces, so split after ')'.
		f := strings.Fields(string(stat[strings.LastIndexByte(string(stat), ')')+1:]))
		if len(f) < 2 || f[1] != pid {
			continue
		}
		cmd, _ := os.ReadFile("/proc/" + e.Name() + "/cmdline")
		if strings.Contains(string(cmd), "authentication") {
			n++
		}
	}
	return n
}

// slowClient connects from src, sends a startup packet for the superuser
// and reads the server's first authentication request, then stays silent:
// it holds a backend that waits for a password.
func slowClient(src, addr string) (net.Conn, error) {
	c, err := dialFrom(src, addr)
	if err != nil {
		return nil, err
	}
	_ = c.SetDeadline(time.Now().Add(30 * time.Second))
	if _, err := c.Write(startupPacket("postgres")); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

// TestSilentClientCutAtAuthDeadline: a client that sends its startup packet
// and then nothing is disconnected at the auth deadline, and its backend
// is gone at once, long before Postgres' authentication_timeout (petrel's
// 10 s; without the deadline the cut comes from Postgres, not counted as
// auth_timeout).
func TestSilentClientCutAtAuthDeadline(t *testing.T) {
	h, srv := startRealLeader(t, Config{AuthTimeout: time.Second})
	c, err := slowClient(hostileSrc, h.rw)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	fe := pgproto3.NewFrontend(c, io.Discard)
	msg, err := fe.Receive()
	if err != nil {
		t.Fatalf("no authentication request through the proxy: %v", err)
	}
	if _, ok := msg.(*pgproto3.AuthenticationSASL); !ok {
		t.Fatalf("got %T, want the server's AuthenticationSASL", msg)
	}
	if n := authenticating(t, srv); n != 1 {
		t.Fatalf("%d backends authenticating, want the silent client's 1", n)
	}
	// Silent now. The proxy must close it well before the test's own 30 s
	// deadline (Postgres alone would keep it for 10 s).
	if _, err := fe.Receive(); err == nil {
		t.Fatal("the proxy sent more to a silent client")
	} else if ne, ok := err.(net.Error); ok && ne.Timeout() {
		t.Fatal("a silent client was not cut at the auth deadline")
	}
	waitUntil(t, "the silent client's backend gone", func() bool { return authenticating(t, srv) == 0 })
	if got := counterValue(h.p.metrics.rejected.WithLabelValues(kindLeader, "auth_timeout")); got != 1 {
		t.Fatalf("auth_timeout refusals = %v, want 1", got)
	}
	// A client that authenticates goes through, and stays: the deadline
	// ends with its authentication.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cfg, _ := pgx.ParseConfig(srv.URL())
	host, port, _ := net.SplitHostPort(h.rw)
	p, _ := strconv.Atoi(port)
	cfg.Host, cfg.Port = host, uint16(p)
	pc, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close(context.Background())
	time.Sleep(1500 * time.Millisecond) // past the auth deadline, idle
	var one int
	if err := pc.QueryRow(ctx, "SELECT 1").Scan(&one); err != nil {
		t.Fatalf("an authenticated session was cut: %v", err)
	}
}

// TestFloodFromOneSourceLeavesRoomForOthers: a few hundred connections
// from one source, half of them silent before their startup packet and
// half silent after it (each holding a backend that waits for a
// password), neither fill the proxy nor Postgres' max_connections (100):
// a client from another source logs in and queries meanwhile.
func TestFloodFromOneSourceLeavesRoomForOthers(t *testing.T) {
	// MaxConns and MaxPendingPerSource scaled down from their defaults
	// (2000 and 256) so that the flood alone would fill the proxy.
	h, srv := startRealLeader(t, Config{MaxConns: 250, MaxPendingPerSource: 125})
	const silent, slow = 150, 150
	var (
		mu    sync.Mutex
		conns []net.Conn
		wg    sync.WaitGroup
	)
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for i := range silent + slow {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var c net.Conn
			var err error
			if i < slow {
				c, err = slowClient(hostileSrc, h.rw)
			} else {
				c, err = dialFrom(hostileSrc, h.rw)
			}
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}()
	}
	wg.Wait()
	accepted := func() float64 { return counterValue(h.p.metrics.accepted.WithLabelValues(kindLeader)) }
	waitUntil(t, "the flood accepted", func() bool { return accepted() >= silent+slow })
	waitUntil(t, "the flood's backends started", func() bool { return authenticating(t, srv) >= 16 })

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := connectFrom(ctx, srv, goodSrc, h.rw); err != nil {
		t.Fatalf("a client from another source was kept out by the flood: %v", err)
	}
	if n := authenticating(t, srv); n > 16 {
		t.Fatalf("the flood holds %d backends, want at most MaxAuthPerSource (16)", n)
	}
	refused := counterValue(h.p.metrics.rejected.WithLabelValues(kindLeader, "source_pending"))
	if refused == 0 {
		t.Fatal("no connection of the flood was refused for its source's pending limit")
	}
}

// TestPoolBurstFromOneSource: a pool opening many connections at once from
// one source gets every one of them: those over the source's
// authentication slots wait their turn instead of being refused.
func TestPoolBurstFromOneSource(t *testing.T) {
	h, srv := startRealLeader(t, Config{})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	const n = 60 // below max_connections (100)
	errs := make(chan error, n)
	var wg sync.WaitGroup
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs <- connectFrom(ctx, srv, goodSrc, h.rw)
		}()
	}
	wg.Wait()
	close(errs)
	var failed []error
	for err := range errs {
		if err != nil {
			failed = append(failed, err)
		}
	}
	if len(failed) > 0 {
		t.Fatalf("%d of %d connections of a burst failed, e.g.: %v", len(failed), n, errors.Join(failed[:1]...))
	}
}

// TestRefusalsFromABoundedPool: connections over a limit are answered (an
// ErrorResponse, 53300) by a fixed pool of workers; a flood of them that
// never reads nor closes costs no goroutine each, and the excess is simply
// closed.
func TestRefusalsFromABoundedPool(t *testing.T) {
	a := newFakeMember(t, "a", "primary")
	h := startProxy(t, Config{MaxConns: 1})
	h.p.SetView("a", view(a))
	waitUntil(t, "leader a", func() bool { return h.p.Leader() == "a" })
	connect(t, h.rw) // holds the one connection

	// The first refusal is answered properly.
	c, err := net.Dial("tcp", h.rw)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = c.Write(startupPacket("app"))
	if er := readError(t, c); er.Code != "53300" {
		t.Fatalf("got %+v", er)
	}
	c.Close()

	base := runtime.NumGoroutine()
	const flood = 500
	var conns []net.Conn
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for range flood {
		c, err := dialFrom(hostileSrc, h.rw)
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c) // never read, never closed: each refusal would wait out its drain
	}
	waitUntil(t, "the flood refused", func() bool {
		return counterValue(h.p.metrics.rejected.WithLabelValues(kindLeader, "max_conns")) >= flood+1
	})
	if extra := runtime.NumGoroutine() - base; extra > refusalWorkers+20 {
		t.Fatalf("%d more goroutines during a flood of %d refusals, want a bounded pool", extra, flood)
	}
	if counterValue(h.p.metrics.unanswered) == 0 {
		t.Fatal("no refusal of the flood was dropped: the pool is not bounded")
	}
}

// TestSilentTLSSessionsFromOneSource: a TLS session is opaque to the proxy
// once the server accepts TLS ('S'), but it keeps its source's
// authentication slot until its member lists it as authenticated
// (tlshold.go): silent TLS sessions from one source hold at most
// MaxAuthPerSource backends (the rest wait for a slot, then are refused),
// while a client from another source logs in over TLS meanwhile and is
// let go as authenticated.
func TestSilentTLSSessionsFromOneSource(t *testing.T) {
	srv, caPEM := pgtest.StartTLS(t)
	const flood, slots = 40, 2
	h := startProxyFor(t, srv, Config{MaxAuthPerSource: slots, AuthTimeout: time.Second})
	sslRequest := binary.BigEndian.AppendUint32(binary.BigEndian.AppendUint32(nil, 8), 80877103)
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex // guards the following
		held  int
		conns []net.Conn
	)
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for range flood {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := dialFrom(hostileSrc, h.rw)
			if err != nil {
				t.Error(err)
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			_ = c.SetDeadline(time.Now().Add(5 * time.Second))
			if _, err := c.Write(sslRequest); err != nil {
				return
			}
			var b [1]byte
			if _, err := io.ReadFull(c, b[:]); err == nil && b[0] == 'S' {
				mu.Lock()
				held++ // and silent from now on: no ClientHello
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	// Postgres ends a silent session's backend only after its
	// authentication_timeout (10 s): until then the slots stay taken.
	if held != slots {
		t.Fatalf("one source holds %d silent TLS sessions, want MaxAuthPerSource (%d)", held, slots)
	}
	if got := counterValue(h.p.metrics.rejected.WithLabelValues(kindLeader, "source_auth")); got != flood-slots {
		t.Fatalf("source_auth refusals = %v, want %d", got, flood-slots)
	}

	// Another source, over TLS verified against the server's CA.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := pgx.ConnectConfig(ctx, tlsConfig(t, h, caPEM, goodSrc))
	if err != nil {
		t.Fatalf("a TLS client from another source was kept out: %v", err)
	}
	defer c.Close(context.Background())
	var ssl bool
	var authTimeout string
	if err := c.QueryRow(ctx, "SELECT ssl, current_setting('authentication_timeout') FROM pg_stat_ssl WHERE pid = pg_backend_pid()").Scan(&ssl, &authTimeout); err != nil {
		t.Fatal(err)
	}
	if !ssl || authTimeout != "10s" {
		t.Fatalf("ssl=%v authentication_timeout=%s, want TLS and petrel's 10s", ssl, authTimeout)
	}
	waitUntil(t, "the TLS client let go as authenticated", func() bool {
		return counterValue(h.p.metrics.tlsHolds.WithLabelValues("authenticated")) == 1
	})
}

// tlsConfig is a superuser connection config through h's leader listener
// from src over TLS verified against the server's CA.
func tlsConfig(t *testing.T, h *harness, caPEM []byte, src string) *pgx.ConnConfig {
	t.Helper()
	host, port, _ := net.SplitHostPort(h.rw)
	cfg, err := pgx.ParseConfig(fmt.Sprintf("host=%s port=%s dbname=postgres user=postgres sslmode=require connect_timeout=60", host, port))
	if err != nil {
		t.Fatal(err)
	}
	cfg.Password = pgtest.Secrets.Superuser
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	cfg.TLSConfig = &tls.Config{RootCAs: pool, ServerName: "127.0.0.1", MinVersion: tls.VersionTLS12}
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}
	cfg.DialFunc = d.DialContext
	return cfg
}

// TestTLSPoolFromOneSource: a pool opening many TLS connections at once
// from one source gets them all, a few at a time: each authentication
// slot is freed as soon as the member lists its session as authenticated
// (were it held for authentication_timeout instead, most of the pool
// would wait past AuthTimeout and be refused).
func TestTLSPoolFromOneSource(t *testing.T) {
	srv, caPEM := pgtest.StartTLS(t)
	const conns = 24
	h := startProxyFor(t, srv, Config{MaxAuthPerSource: 2, AuthTimeout: 30 * time.Second})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var wg sync.WaitGroup
	errs := make(chan error, conns)
	open := make(chan *pgx.Conn, conns)
	for range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := pgx.ConnectConfig(ctx, tlsConfig(t, h, caPEM, goodSrc))
			if err != nil {
				errs <- err
				return
			}
			open <- c
		}()
	}
	wg.Wait()
	close(errs)
	close(open)
	for c := range open {
		defer c.Close(context.Background())
	}
	for err := range errs {
		t.Errorf("a pool connection was refused: %v", err)
	}
	// The last ones are let go at the next check.
	waitUntil(t, fmt.Sprintf("%d TLS sessions let go as authenticated", conns), func() bool {
		return counterValue(h.p.metrics.tlsHolds.WithLabelValues("authenticated")) == conns
	})
}

// TestIdleTimeout: with IdleTimeout set, an authenticated session that
// moves no data for that long is closed (and counted), while one in use
// is not; without it an idle session stays (TestSilentClientCutAtAuthDeadline
// keeps one idle past the auth deadline).
func TestIdleTimeout(t *testing.T) {
	const idle = 800 * time.Millisecond
	h, srv := startRealLeader(t, Config{IdleTimeout: idle})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cfg, _ := pgx.ParseConfig(srv.URL())
	host, port, _ := net.SplitHostPort(h.rw)
	p, _ := strconv.Atoi(port)
	cfg.Host, cfg.Port = host, uint16(p)
	c, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(context.Background())
	// In use for three idle timeouts: kept.
	for end := time.Now().Add(3 * idle); time.Now().Before(end); time.Sleep(idle / 8) {
		if _, err := c.Exec(ctx, "SELECT 1"); err != nil {
			t.Fatalf("a session in use was closed: %v", err)
		}
	}
	waitUntil(t, "the idle session closed", func() bool {
		return counterValue(h.p.metrics.idleClosed) == 1
	})
	if _, err := c.Exec(ctx, "SELECT 1"); err == nil {
		t.Fatal("an idle session outlived the idle timeout")
	}
}
