package adminclient

import (
	"context"
	"errors"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/petrel-db/petrel/internal/api/apitest"
)

// deadURL is an https URL where nothing listens.
func deadURL(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return "https://" + addr
}

// TestFailsOverAndDecodes: an unreachable member is skipped; the
// answering one is kept; the API's JSON errors become *Error matching
// their kind; refused credentials give way to the next ones.
func TestFailsOverAndDecodes(t *testing.T) {
	ca := apitest.NewCA(t, "test")
	var calls atomic.Int64
	n2 := ca.Server(t, "n2", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/health" {
			return
		}
		calls.Add(1)
		user, pass, _ := r.BasicAuth()
		w.Header().Set("Content-Type", "application/json")
		switch {
		case user == "postgres":
			w.WriteHeader(http.StatusForbidden)
			w.Write([]byte(`{"error":"the superuser is accepted only from the admin networks"}`))
		case user != "operator" || pass != "op-pw":
			w.WriteHeader(http.StatusUnauthorized)
			w.Write([]byte(`{"error":"bad credentials"}`))
		case r.URL.Path == "/api/v1/switchover":
			w.Write([]byte(`{"from":"n1","to":"n2","log":"new leader: n2\n"}`))
		case r.URL.Path == "/api/v1/users":
			w.WriteHeader(http.StatusConflict)
			w.Write([]byte(`{"error":"user bob already exists"}`))
		default:
			w.WriteHeader(http.StatusNotFound)
			w.Write([]byte(`{"error":"no such admin API endpoint"}`))
		}
	}))
	c, err := New(ca.CertPEM, "test", []Member{{ID: "n1", URL: deadURL(t)}, {ID: "n2", URL: n2.URL}},
		[]Credential{{"postgres", "su-pw"}, {"operator", "op-pw"}}, Options{ProbeTimeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx := context.Background()
	res, err := c.Switchover(ctx, "n2", false)
	if err != nil || res.To != "n2" || c.Member() != "n2" {
		t.Fatalf("switchover past a dead member: %+v %v (member %q)", res, err, c.Member())
	}
	_, err = c.CreateUser(ctx, "bob")
	var e *Error
	if !errors.As(err, &e) || !errors.Is(err, ErrConflict) || e.Message != "user bob already exists" || !strings.Contains(err.Error(), "n2") {
		t.Fatalf("a 409: %v", err)
	}
	if errors.Is(err, ErrBadRequest) {
		t.Fatal("a 409 is a bad request?")
	}
	// Wrong passwords everywhere: 401, the API's message.
	bad, _ := New(ca.CertPEM, "test", []Member{{ID: "n2", URL: n2.URL}}, []Credential{{"operator", "guess"}}, Options{})
	if _, err := bad.Users(ctx); !errors.Is(err, ErrUnauthorized) || !strings.Contains(err.Error(), "bad credentials") {
		t.Fatalf("wrong password: %v", err)
	}
	// Another node's certificate at the address is not n2.
	imp, _ := New(ca.CertPEM, "test", []Member{{ID: "n3", URL: n2.URL}}, []Credential{{"operator", "op-pw"}}, Options{})
	if _, err := imp.Users(ctx); !errors.Is(err, ErrUnreachable) {
		t.Fatalf("n2 answering as n3: %v", err)
	}
}

// TestNoRetryOnceSent: a request that changes something and failed after
// it was sent is not sent to the next member (it may have been done).
func TestNoRetryOnceSent(t *testing.T) {
	ca := apitest.NewCA(t, "test")
	var hits [2]atomic.Int64
	mk := func(i int, id string) string {
		return ca.Server(t, id, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path == "/health" {
				return
			}
			hits[i].Add(1)
			// Die mid-answer: the request was received.
			hj, ok := w.(http.Hijacker)
			if !ok {
				t.Error("no hijacker")
				return
			}
			conn, _, _ := hj.Hijack()
			conn.Close()
		})).URL
	}
	c, err := New(ca.CertPEM, "test", []Member{{ID: "n1", URL: mk(0, "n1")}, {ID: "n2", URL: mk(1, "n2")}}, []Credential{{"operator", "x"}}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Switchover(context.Background(), "", false); err == nil || !strings.Contains(err.Error(), "may or may not") {
		t.Fatalf("a switchover cut after it was sent: %v", err)
	}
	if hits[0].Load() != 1 || hits[1].Load() != 0 {
		t.Fatalf("sent to n1 %d times, n2 %d times: want once, never", hits[0].Load(), hits[1].Load())
	}
	// A read is retried on the next member.
	if _, err := c.Users(context.Background()); !errors.Is(err, ErrUnreachable) || hits[1].Load() != 1 {
		t.Fatalf("a read cut on n1: %v (n2 asked %d times)", err, hits[1].Load())
	}
}

// TestWaitSticksToItsMember: an operation is polled on the member that
// started it, through a moment it does not answer, its log lines handed
// on once each, until it ends; a failed one is an error.
func TestWaitSticksToItsMember(t *testing.T) {
	ca := apitest.NewCA(t, "test")
	var polls atomic.Int64
	fail := atomic.Bool{}
	n1 := ca.Server(t, "n1", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		switch r.URL.Path {
		case "/health":
		case "/api/v1/restart":
			w.WriteHeader(http.StatusAccepted)
			w.Write([]byte(`{"id":7,"kind":"rolling-restart","state":"running","log":[]}`))
		case "/api/v1/operation":
			switch polls.Add(1) {
			case 1:
				w.Write([]byte(`{"id":7,"state":"running","log":["one"]}`))
			case 2: // not an answer
				conn, _, _ := w.(http.Hijacker).Hijack()
				conn.Close()
			case 3:
				w.Write([]byte(`{"id":7,"state":"running","log":["one","two"]}`))
			default:
				state := `"done"`
				if fail.Load() {
					state = `"failed","error":"replica n3 did not come back"`
				}
				w.Write([]byte(`{"id":7,"state":` + state + `,"log":["one","two","three"]}`))
			}
		}
	}))
	n2 := ca.Server(t, "n2", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Write([]byte(`{"id":99,"state":"done","log":["not this one"]}`))
	}))
	c, err := New(ca.CertPEM, "test", []Member{{ID: "n1", URL: n1.URL}, {ID: "n2", URL: n2.URL}}, []Credential{{"operator", "x"}}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	op, err := c.RollingRestart(ctx)
	if err != nil || op.ID != 7 {
		t.Fatalf("restart: %+v %v", op, err)
	}
	var lines []string
	if _, err := c.Wait(ctx, op.ID, func(l string) { lines = append(lines, l) }); err != nil {
		t.Fatal(err)
	}
	if strings.Join(lines, ",") != "one,two,three" {
		t.Fatalf("lines %q", lines)
	}
	fail.Store(true)
	if _, err := c.Wait(ctx, op.ID, nil); err == nil || !strings.Contains(err.Error(), "did not come back") {
		t.Fatalf("a failed operation: %v", err)
	}
}
