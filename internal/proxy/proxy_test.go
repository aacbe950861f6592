package proxy

import (
	"bufio"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"
	"github.com/petrel-db/petrel/internal/api"
	"github.com/petrel-db/petrel/internal/api/apitest"
	"github.com/petrel-db/petrel/internal/model"
)

// fakeMember is a member with an API (GET /role, /status) and a "Postgres"
// that records the startup-phase packets of each connection, authenticates
// every StartupMessage at once (AuthenticationOk, a ParameterStatus
// petrel_member naming it, ReadyForQuery), then echoes. An SSLRequest is
// declined ('N'), or accepted when tls is set: then it sends 'S' and
// echoes, opaque to the proxy as TLS would be.
type fakeMember struct {
	id   string
	role atomic.Value // string
	tls  atomic.Bool
	// sessions answers GET /sessions: nil is a 404 (an agent from before
	// it); else its code, and with 200 the ports of every TLS session
	// accepted so far (as if each had authenticated at once).
	sessions atomic.Pointer[int]
	api      *httptest.Server
	ln       net.Listener

	mu       sync.Mutex
	first    [][]byte // startup-phase packets of each connection
	tlsPorts []uint16 // remote ports of the connections that got 'S'
}

// testCA is the cluster CA of every test here (cluster "c"): members
// serve their API with a node certificate from it.
var (
	testCAOnce sync.Once
	testCAv    *apitest.CA
)

func testCA(t *testing.T) *apitest.CA {
	testCAOnce.Do(func() { testCAv = apitest.NewCA(t, testCluster) })
	return testCAv
}

const testCluster = "c"

func newFakeMember(t *testing.T, id, role string) *fakeMember {
	t.Helper()
	certPEM, keyPEM, err := testCA(t).IssueNode(testCluster, id, "127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	return newFakeMemberCert(t, id, role, certPEM, keyPEM)
}

// newFakeMemberCert is a fake member whose API serves the given
// certificate (impostors).
func newFakeMemberCert(t *testing.T, id, role string, certPEM, keyPEM []byte) *fakeMember {
	t.Helper()
	f := &fakeMember{id: id}
	f.role.Store(role)
	f.api = apitest.ServeCert(t, certPEM, keyPEM, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/role":
			// Like an agent: it names its own Postgres address.
			w.Header().Set(api.HeaderPostgresAddr, f.ln.Addr().String())
			_, _ = io.WriteString(w, f.role.Load().(string))
		case "/status":
			_, _ = io.WriteString(w, `{"role":"`+f.role.Load().(string)+`","streaming":true,"lag_bytes":0,"postgres_addr":"`+f.ln.Addr().String()+`"}`)
		case "/sessions":
			code := f.sessions.Load()
			if code == nil {
				http.NotFound(w, r)
				return
			}
			if *code != http.StatusOK {
				w.WriteHeader(*code)
				return
			}
			f.mu.Lock()
			b, _ := json.Marshal(api.Sessions{Ports: append([]uint16{}, f.tlsPorts...), AuthTimeoutSeconds: 600})
			f.mu.Unlock()
			_, _ = w.Write(b)
		default:
			http.NotFound(w, r)
		}
	}))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f.ln = ln
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go f.serve(c)
		}
	}()
	t.Cleanup(func() { f.api.Close(); _ = ln.Close() })
	return f
}

// authenticated is what the fake member answers a StartupMessage.
func authenticated(id string) []byte {
	b, _ := (&pgproto3.AuthenticationOk{}).Encode(nil)
	b, _ = (&pgproto3.ParameterStatus{Name: "petrel_member", Value: id}).Encode(b)
	b, _ = (&pgproto3.ReadyForQuery{TxStatus: 'I'}).Encode(b)
	return b
}

func (f *fakeMember) serve(c net.Conn) {
	defer c.Close()
	for {
		var hdr [4]byte
		if _, err := io.ReadFull(c, hdr[:]); err != nil {
			return
		}
		body := make([]byte, binary.BigEndian.Uint32(hdr[:])-4)
		if _, err := io.ReadFull(c, body); err != nil {
			return
		}
		pkt := append(hdr[:], body...)
		f.mu.Lock()
		f.first = append(f.first, pkt)
		f.mu.Unlock()
		msg, err := decodeStartup(pkt)
		if err != nil {
			return
		}
		switch msg.(type) {
		case *pgproto3.SSLRequest:
			if !f.tls.Load() {
				_, _ = c.Write([]byte{'N'})
				continue
			}
			f.mu.Lock()
			f.tlsPorts = append(f.tlsPorts, uint16(c.RemoteAddr().(*net.TCPAddr).Port))
			f.mu.Unlock()
			_, _ = c.Write([]byte{'S'})
		case *pgproto3.StartupMessage:
			_, _ = c.Write(authenticated(f.id))
		default:
			return
		}
		_, _ = io.Copy(c, c)
		return
	}
}

func (f *fakeMember) firsts() [][]byte {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([][]byte(nil), f.first...)
}

func (f *fakeMember) record(region string) model.Member {
	return model.Member{ID: f.id, Region: region, APIURL: f.api.URL, PostgresAddr: f.ln.Addr().String()}
}

type harness struct {
	p      *Proxy
	rw, ro string
}

func startProxy(t *testing.T, cfg Config) *harness {
	t.Helper()
	if cfg.CheckInterval == 0 {
		cfg.CheckInterval = 50 * time.Millisecond
	}
	if cfg.Region == "" {
		cfg.Region = "scl"
	}
	cfg.Cluster = testCluster
	p := New(cfg, Options{API: testCA(t).Client(t)})
	rw, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ro, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx, rw, ro) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	return &harness{p: p, rw: rw.Addr().String(), ro: ro.Addr().String()}
}

func view(members ...*fakeMember) map[string]model.Member {
	m := map[string]model.Member{}
	for _, f := range members {
		m[f.id] = f.record("scl")
	}
	return m
}

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// startupPacket encodes a StartupMessage by hand, in a fixed parameter
// order (pgproto3 encodes from a map, in random order).
func startupPacket(user string) []byte {
	body := binary.BigEndian.AppendUint32(nil, pgproto3.ProtocolVersionNumber)
	for _, kv := range [][2]string{{"user", user}, {"database", "postgres"}} {
		body = append(append(append(append(body, kv[0]...), 0), kv[1]...), 0)
	}
	body = append(body, 0)
	return append(binary.BigEndian.AppendUint32(nil, uint32(len(body)+4)), body...)
}

// connect opens a client connection through addr and returns the id of
// the member it reached.
func connect(t *testing.T, addr string) (net.Conn, string) {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	_ = c.SetDeadline(time.Now().Add(15 * time.Second))
	if _, err := c.Write(startupPacket("app")); err != nil {
		t.Fatal(err)
	}
	who, err := readReady(c)
	if err != nil {
		t.Fatalf("reading through the proxy: %v", err)
	}
	return c, who
}

// readReady reads backend messages up to ReadyForQuery, byte by byte from
// c (nothing past it), and returns the member named in petrel_member.
func readReady(c net.Conn) (string, error) {
	who := ""
	for {
		var hdr [5]byte
		if _, err := io.ReadFull(c, hdr[:]); err != nil {
			return "", err
		}
		body := make([]byte, binary.BigEndian.Uint32(hdr[1:])-4)
		if _, err := io.ReadFull(c, body); err != nil {
			return "", err
		}
		switch hdr[0] {
		case 'S':
			var ps pgproto3.ParameterStatus
			if err := ps.Decode(body); err == nil && ps.Name == "petrel_member" {
				who = ps.Value
			}
		case 'E':
			var er pgproto3.ErrorResponse
			_ = er.Decode(body)
			return "", fmt.Errorf("error %s: %s", er.Code, er.Message)
		case 'Z':
			return who, nil
		}
	}
}

// readError reads one backend message and expects an ErrorResponse.
func readError(t *testing.T, c net.Conn) *pgproto3.ErrorResponse {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(20 * time.Second))
	fe := pgproto3.NewFrontend(c, io.Discard)
	msg, err := fe.Receive()
	if err != nil {
		t.Fatalf("want an ErrorResponse, got %v", err)
	}
	er, ok := msg.(*pgproto3.ErrorResponse)
	if !ok {
		t.Fatalf("want an ErrorResponse, got %T", msg)
	}
	return er
}

func TestRoutesToConfirmedLeaderAndSwitches(t *testing.T) {
	a := newFakeMember(t, "a", "primary")
	b := newFakeMember(t, "b", "replica")
	h := startProxy(t, Config{})
	h.p.SetView("a", view(a, b))
	waitUntil(t, "leader a", func() bool { return h.p.Leader() == "a" })

	c1, who := connect(t, h.rw)
	if who != "a" {
		t.Fatalf("routed to %s, want a", who)
	}
	// The pipe carries bytes both ways.
	if _, err := c1.Write([]byte("ping\n")); err != nil {
		t.Fatal(err)
	}
	r := bufio.NewReader(c1)
	if l, err := r.ReadString('\n'); err != nil || l != "ping\n" {
		t.Fatalf("echo: %q %v", l, err)
	}
	if got := a.firsts(); len(got) != 1 || string(got[0]) != string(startupPacket("app")) {
		t.Fatalf("startup packet not forwarded verbatim: %q", got)
	}

	// Switchover: the store names b before b says primary. The old
	// leader's connections close at once; nothing routes to b until it
	// confirms.
	a.role.Store("replica")
	h.p.SetView("b", view(a, b))
	_ = c1.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := r.ReadByte(); err == nil {
		t.Fatal("connection to the old leader still open")
	} else if ne, ok := err.(net.Error); ok && ne.Timeout() {
		t.Fatal("connection to the old leader was not closed")
	}
	if l := h.p.Leader(); l != "" {
		t.Fatalf("leader %q confirmed while b says replica", l)
	}
	b.role.Store("primary")
	waitUntil(t, "leader b", func() bool { return h.p.Leader() == "b" })
	if _, who := connect(t, h.rw); who != "b" {
		t.Fatalf("routed to %s, want b", who)
	}
}

// TestImpostorsNeverConfirmed: the store's member records are not
// trusted. A record for "a" pointing at a server that answers "primary"
// is never routed to unless that server proves to be a with a certificate
// of the cluster CA naming it.
func TestImpostorsNeverConfirmed(t *testing.T) {
	ca := testCA(t)
	otherCA := apitest.NewCA(t, testCluster)
	otherCert, otherKey, err := otherCA.IssueNode(testCluster, "a", "127.0.0.1") // right name, wrong CA
	if err != nil {
		t.Fatal(err)
	}
	bCert, bKey, err := ca.IssueNode(testCluster, "b", "127.0.0.1") // right CA, another node
	if err != nil {
		t.Fatal(err)
	}
	pgCert, pgKey, err := ca.Issue("a", "127.0.0.1") // a Postgres certificate: names no node
	if err != nil {
		t.Fatal(err)
	}
	for name, f := range map[string]*fakeMember{
		"another CA's certificate": newFakeMemberCert(t, "a", "primary", otherCert, otherKey),
		"another node's":           newFakeMemberCert(t, "a", "primary", bCert, bKey),
		"a Postgres certificate":   newFakeMemberCert(t, "a", "primary", pgCert, pgKey),
	} {
		t.Run(name, func(t *testing.T) {
			h := startProxy(t, Config{})
			h.p.SetView("a", view(f))
			time.Sleep(300 * time.Millisecond) // several check rounds (50 ms)
			if l := h.p.Leader(); l != "" {
				t.Fatalf("the proxy confirmed %q behind %s", l, name)
			}
		})
	}
	t.Run("plain http", func(t *testing.T) {
		f := newFakeMember(t, "a", "primary")
		plain := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			_, _ = io.WriteString(w, "primary")
		}))
		defer plain.Close()
		h := startProxy(t, Config{})
		m := f.record("scl")
		m.APIURL = plain.URL
		h.p.SetView("a", map[string]model.Member{"a": m})
		time.Sleep(300 * time.Millisecond)
		if l := h.p.Leader(); l != "" {
			t.Fatalf("the proxy confirmed %q over plain http", l)
		}
	})
	t.Run("the genuine API, another Postgres", func(t *testing.T) {
		// A forged record keeps the member's own API (its certificate,
		// "primary") but points its postgres_addr at another server.
		f := newFakeMember(t, "a", "primary")
		b := newFakeMember(t, "b", "replica")
		other := newFakeMember(t, "x", "primary")
		h := startProxy(t, Config{})
		ma, mb := f.record("scl"), b.record("scl")
		ma.PostgresAddr, mb.PostgresAddr = other.ln.Addr().String(), other.ln.Addr().String()
		h.p.SetView("a", map[string]model.Member{"a": ma, "b": mb})
		time.Sleep(300 * time.Millisecond)
		if l := h.p.Leader(); l != "" {
			t.Fatalf("the proxy confirmed %q behind another server's Postgres", l)
		}
		h.p.mu.Lock()
		n := len(h.p.replicas)
		h.p.mu.Unlock()
		if n != 0 {
			t.Fatalf("the proxy took %d replicas behind another server's Postgres", n)
		}
	})
	// The genuine member is confirmed: the refusals above are about the
	// certificates, not the harness.
	h := startProxy(t, Config{})
	h.p.SetView("a", view(newFakeMember(t, "a", "primary")))
	waitUntil(t, "leader a", func() bool { return h.p.Leader() == "a" })
}

func TestLeaderThatStopsSayingPrimaryIsDropped(t *testing.T) {
	a := newFakeMember(t, "a", "primary")
	h := startProxy(t, Config{})
	h.p.SetView("a", view(a))
	waitUntil(t, "leader a", func() bool { return h.p.Leader() == "a" })
	c, _ := connect(t, h.rw)
	a.role.Store("fenced")
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	var b [1]byte
	if _, err := c.Read(b[:]); err == nil || errors.Is(err, errTimeout(err)) {
		t.Fatalf("connection to a fenced leader not closed: %v", err)
	}
	if h.p.Leader() != "" {
		t.Fatal("fenced member still the leader")
	}
}

func errTimeout(err error) error {
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return err
	}
	return errors.New("not a timeout")
}

func TestNoLeaderGetsErrorResponse(t *testing.T) {
	a := newFakeMember(t, "a", "replica")
	h := startProxy(t, Config{NoLeaderWait: 200 * time.Millisecond})
	h.p.SetView("a", view(a))
	for _, ssl := range []bool{false, true} {
		c, err := net.Dial("tcp", h.rw)
		if err != nil {
			t.Fatal(err)
		}
		if ssl {
			if _, err := c.Write([]byte{0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f}); err != nil {
				t.Fatal(err)
			}
			var n [1]byte
			if _, err := io.ReadFull(c, n[:]); err != nil || n[0] != 'N' {
				t.Fatalf("SSLRequest without a leader: %q %v", n, err)
			}
		}
		if _, err := c.Write(startupPacket("app")); err != nil {
			t.Fatal(err)
		}
		er := readError(t, c)
		if er.Code != "57P03" || er.Severity != "FATAL" || er.Message == "" {
			t.Fatalf("got %+v", er)
		}
		c.Close()
	}
	if len(a.firsts()) != 0 {
		t.Fatal("a connection reached a replica through the leader port")
	}
}

func TestWaitsForLeaderWithinBound(t *testing.T) {
	a := newFakeMember(t, "a", "replica")
	h := startProxy(t, Config{NoLeaderWait: time.Minute})
	h.p.SetView("a", view(a))
	got := make(chan string, 1)
	go func() {
		c, err := net.Dial("tcp", h.rw)
		if err != nil {
			got <- err.Error()
			return
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(30 * time.Second))
		_, _ = c.Write(startupPacket("app"))
		who, err := readReady(c)
		if err != nil {
			got <- err.Error()
			return
		}
		got <- who
	}()
	time.Sleep(100 * time.Millisecond)
	a.role.Store("primary")
	if l := <-got; l != "a" {
		t.Fatalf("waiting connection got %q", l)
	}
}

func TestGSSEncAndSSLRequest(t *testing.T) {
	a := newFakeMember(t, "a", "primary")
	h := startProxy(t, Config{})
	h.p.SetView("a", view(a))
	waitUntil(t, "leader a", func() bool { return h.p.Leader() == "a" })

	// GSSENCRequest: declined by the proxy, then the startup goes through.
	c, err := net.Dial("tcp", h.rw)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	gss, _ := (&pgproto3.GSSEncRequest{}).Encode(nil)
	_, _ = c.Write(gss)
	var n [1]byte
	if _, err := io.ReadFull(c, n[:]); err != nil || n[0] != 'N' {
		t.Fatalf("GSSENCRequest: %q %v", n, err)
	}
	_, _ = c.Write(startupPacket("app"))
	if who, err := readReady(c); err != nil || who != "a" {
		t.Fatalf("after GSSENC: %q %v", who, err)
	}

	// SSLRequest declined by the server: the proxy passes the 'N' on and
	// follows the plaintext startup that comes next.
	ssl, _ := (&pgproto3.SSLRequest{}).Encode(nil)
	c1, err := net.Dial("tcp", h.rw)
	if err != nil {
		t.Fatal(err)
	}
	defer c1.Close()
	_ = c1.SetDeadline(time.Now().Add(10 * time.Second))
	_, _ = c1.Write(ssl)
	if _, err := io.ReadFull(c1, n[:]); err != nil || n[0] != 'N' {
		t.Fatalf("declined SSLRequest: %q %v", n, err)
	}
	_, _ = c1.Write(startupPacket("app"))
	if who, err := readReady(c1); err != nil || who != "a" {
		t.Fatalf("after a declined SSLRequest: %q %v", who, err)
	}

	// SSLRequest accepted: forwarded to the server as is, and what follows
	// passes through untouched.
	a.tls.Store(true)
	c2, err := net.Dial("tcp", h.rw)
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	_ = c2.SetDeadline(time.Now().Add(10 * time.Second))
	_, _ = c2.Write(ssl)
	if _, err := io.ReadFull(c2, n[:]); err != nil || n[0] != 'S' {
		t.Fatalf("accepted SSLRequest: %q %v", n, err)
	}
	_, _ = c2.Write([]byte("hello\n"))
	if l, err := bufio.NewReader(c2).ReadString('\n'); err != nil || l != "hello\n" {
		t.Fatalf("after SSLRequest: %q %v", l, err)
	}
	waitUntil(t, "SSLRequest at the server", func() bool {
		for _, f := range a.firsts() {
			if string(f) == string(ssl) {
				return true
			}
		}
		return false
	})
}

func TestCancelGoesToEveryMember(t *testing.T) {
	a := newFakeMember(t, "a", "primary")
	b := newFakeMember(t, "b", "replica")
	h := startProxy(t, Config{})
	h.p.SetView("a", view(a, b))
	c, err := net.Dial("tcp", h.rw)
	if err != nil {
		t.Fatal(err)
	}
	cr, _ := (&pgproto3.CancelRequest{ProcessID: 42, SecretKey: []byte{0, 0, 0, 7}}).Encode(nil)
	_, _ = c.Write(cr)
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	_, _ = io.Copy(io.Discard, c) // the proxy closes after forwarding
	c.Close()
	for _, f := range []*fakeMember{a, b} {
		waitUntil(t, "cancel at "+f.id, func() bool {
			for _, p := range f.firsts() {
				if string(p) == string(cr) {
					return true
				}
			}
			return false
		})
	}
}

func TestMalformedStartup(t *testing.T) {
	a := newFakeMember(t, "a", "primary")
	h := startProxy(t, Config{AuthTimeout: 300 * time.Millisecond})
	h.p.SetView("a", view(a))
	waitUntil(t, "leader a", func() bool { return h.p.Leader() == "a" })
	cases := map[string][]byte{
		"garbage":        []byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"),
		"absurd length":  {0x7f, 0xff, 0xff, 0xff, 0, 3, 0, 0},
		"short length":   {0, 0, 0, 2},
		"truncated":      {0, 0, 0, 100, 0, 3, 0, 0, 'u', 's'},
		"bad protocol":   {0, 0, 0, 8, 0, 9, 0, 0},
		"no user":        {0, 0, 0, 9, 0, 3, 0, 0, 0},
		"slow (nothing)": {},
	}
	for name, in := range cases {
		t.Run(name, func(t *testing.T) {
			c, err := net.Dial("tcp", h.rw)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			_, _ = c.Write(in)
			_ = c.SetReadDeadline(time.Now().Add(20 * time.Second))
			b, err := io.ReadAll(c)
			if err != nil {
				t.Fatalf("connection not closed by the proxy: %v", err)
			}
			if len(b) > 0 && b[0] != 'E' {
				t.Fatalf("answer %q is not an ErrorResponse", b)
			}
		})
	}
	if _, who := connect(t, h.rw); who != "a" {
		t.Fatal("proxy stopped serving after malformed input")
	}
	if len(a.firsts()) != 1 {
		t.Fatalf("malformed input reached the server: %q", a.firsts())
	}
}

func TestMaxConns(t *testing.T) {
	a := newFakeMember(t, "a", "primary")
	h := startProxy(t, Config{MaxConns: 2})
	h.p.SetView("a", view(a))
	waitUntil(t, "leader a", func() bool { return h.p.Leader() == "a" })
	connect(t, h.rw)
	connect(t, h.rw)
	c, err := net.Dial("tcp", h.rw)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_, _ = c.Write(startupPacket("app"))
	if er := readError(t, c); er.Code != "53300" {
		t.Fatalf("got %+v", er)
	}
}

func TestReadOnlyListener(t *testing.T) {
	a := newFakeMember(t, "a", "primary")
	b := newFakeMember(t, "b", "replica")
	far := newFakeMember(t, "far", "replica")
	h := startProxy(t, Config{})
	members := view(a, b)
	members["far"] = far.record("ord")
	h.p.SetView("a", members)
	waitUntil(t, "leader a", func() bool { return h.p.Leader() == "a" })
	waitUntil(t, "replica b", func() bool {
		h.p.mu.Lock()
		defer h.p.mu.Unlock()
		return len(h.p.replicas) == 1
	})
	for range 4 {
		if _, who := connect(t, h.ro); who != "b" {
			t.Fatalf("read-only connection went to %s, want b", who)
		}
	}
	// b stops being a replica: its read-only connections close and new
	// ones fall back to the leader.
	c, _ := connect(t, h.ro)
	b.role.Store("offline")
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	var one [1]byte
	if _, err := c.Read(one[:]); err == nil || errTimeout(err) == err {
		t.Fatalf("read-only connection to an unhealthy replica not closed: %v", err)
	}
	waitUntil(t, "no replicas", func() bool {
		h.p.mu.Lock()
		defer h.p.mu.Unlock()
		return len(h.p.replicas) == 0
	})
	if _, who := connect(t, h.ro); who != "a" {
		t.Fatalf("fallback went to %s, want the leader a", who)
	}
	if len(far.firsts()) != 0 {
		t.Fatal("a read-only connection left the region")
	}
}
