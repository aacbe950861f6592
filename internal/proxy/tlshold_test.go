package proxy

import (
	"io"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"
)

// startTLS opens a connection to addr and sends an SSLRequest; ok is
// whether the server's 'S' came back within wait.
func startTLS(t *testing.T, addr string, wait time.Duration) (c net.Conn, ok bool) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	ssl, _ := (&pgproto3.SSLRequest{}).Encode(nil)
	_ = c.SetDeadline(time.Now().Add(wait))
	if _, err := c.Write(ssl); err != nil {
		return c, false
	}
	var b [1]byte
	_, err = io.ReadFull(c, b[:])
	_ = c.SetDeadline(time.Time{})
	return c, err == nil && b[0] == 'S'
}

// TestTLSHoldRules: a TLS session keeps its source's authentication slot
// after the server's 'S' until its member lists it as authenticated
// (rule 1), until 2 x authentication_timeout (rule 2, when the member
// cannot say), or until it closes (rule 3); a member without GET
// /sessions (404) lets it go at once, as proxies did before. With one
// slot, a second session gets its 'S' only once the first is freed.
func TestTLSHoldRules(t *testing.T) {
	holds := func(h *harness, outcome string) float64 {
		return counterValue(h.p.metrics.tlsHolds.WithLabelValues(outcome))
	}
	setup := func(t *testing.T, code *int, cfg Config) *harness {
		m := newFakeMember(t, "a", "primary")
		m.tls.Store(true)
		m.sessions.Store(code)
		cfg.MaxAuthPerSource = 1
		h := startProxy(t, cfg)
		h.p.SetView("a", view(m))
		waitUntil(t, "leader a", func() bool { return h.p.Leader() == "a" })
		return h
	}
	code := func(c int) *int { return &c }

	t.Run("authenticated", func(t *testing.T) {
		h := setup(t, code(http.StatusOK), Config{AuthTimeout: 20 * time.Second})
		if _, ok := startTLS(t, h.rw, 5*time.Second); !ok {
			t.Fatal("first TLS session refused")
		}
		// The member lists it (and says authentication_timeout is 600 s,
		// so rule 2 cannot be what frees it).
		if _, ok := startTLS(t, h.rw, 15*time.Second); !ok {
			t.Fatal("second TLS session: no 'S' once the first was listed as authenticated")
		}
		waitUntil(t, "two authenticated", func() bool { return holds(h, "authenticated") == 2 })
	})

	t.Run("timeout", func(t *testing.T) {
		// The member cannot say (503): freed 2 x TLSAuthTimeout after 'S'.
		const tlsAuth = 300 * time.Millisecond
		h := setup(t, code(http.StatusServiceUnavailable), Config{AuthTimeout: 20 * time.Second, TLSAuthTimeout: tlsAuth})
		if _, ok := startTLS(t, h.rw, 5*time.Second); !ok {
			t.Fatal("first TLS session refused")
		}
		start := time.Now()
		if _, ok := startTLS(t, h.rw, 15*time.Second); !ok {
			t.Fatal("second TLS session: no 'S' after the first one's time")
		}
		// Half the hold, so that a slow machine's delay between the first
		// 'S' and the second dial cannot fail it: a slot freed at once
		// would let the second in within milliseconds.
		if waited := time.Since(start); waited < tlsAuth {
			t.Fatalf("second session got its 'S' after %v, long before the first one's 2 x TLSAuthTimeout", waited)
		}
		if got := holds(h, "timeout"); got < 1 {
			t.Fatalf("timeout holds = %v, want >= 1", got)
		}
	})

	t.Run("closed", func(t *testing.T) {
		// 503 and a long TLSAuthTimeout: only the close frees the slot.
		h := setup(t, code(http.StatusServiceUnavailable), Config{AuthTimeout: 20 * time.Second, TLSAuthTimeout: time.Hour})
		first, ok := startTLS(t, h.rw, 5*time.Second)
		if !ok {
			t.Fatal("first TLS session refused")
		}
		second, ok := startTLS(t, h.rw, 500*time.Millisecond)
		if ok {
			t.Fatal("a second TLS session got its 'S' while the first held the source's only slot")
		}
		second.Close() // it waits for the slot, then ends at once (closed)
		first.Close()
		if _, ok := startTLS(t, h.rw, 15*time.Second); !ok {
			t.Fatal("no 'S' after the first session closed")
		}
		if got := holds(h, "closed"); got < 1 {
			t.Fatalf("closed holds = %v, want >= 1", got)
		}
	})

	t.Run("unverifiable", func(t *testing.T) {
		// A member without GET /sessions: each session is let go at the
		// first check, so one slot serves many sessions at once.
		h := setup(t, nil, Config{AuthTimeout: 20 * time.Second, TLSAuthTimeout: time.Hour})
		for i := range 5 {
			if _, ok := startTLS(t, h.rw, 10*time.Second); !ok {
				t.Fatalf("TLS session %d refused", i)
			}
		}
		if got := holds(h, "unverifiable"); got < 4 {
			t.Fatalf("unverifiable holds = %v, want >= 4", got)
		}
	})
}
