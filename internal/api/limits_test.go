package api

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/petrel-db/petrel/internal/model"
	"github.com/petrel-db/petrel/internal/pki"
	"github.com/prometheus/client_golang/prometheus"
)

func dialer(src string) *net.Dialer {
	return &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}, Timeout: 5 * time.Second}
}
func refusedCount(t *testing.T, reg *prometheus.Registry) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == "petrel_api_connections_refused_total" {
			return mf.GetMetric()[0].GetCounter().GetValue()
		}
	}
	return -1
}

// TestSlowFloodLeavesRoomForOthers: a few hundred connections from one
// source (127.0.0.2) that send half a request and stay hold at most their
// source's share of the API; the rest are closed at once, and a client
// from another source (127.0.0.3) gets its /health answered meanwhile.
func TestSlowFloodLeavesRoomForOthers(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	reg := prometheus.NewRegistry()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	const perSource, flood = 16, 300
	go func() {
		done <- Serve(ctx, ln, Handler(fakeSource{model.RoleReplica}, reg), nil, Limits{MaxConns: 64, MaxConnsPerSource: perSource}, reg, nil)
	}()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	}()

	var conns []net.Conn
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for range flood {
		c, err := dialer("127.0.0.2").Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = fmt.Fprintf(c, "GET /status HTTP/1.1\r\nHost: x\r\n") // and never the blank line
		conns = append(conns, c)
	}
	deadline := time.Now().Add(20 * time.Second)
	for refusedCount(t, reg) < flood-perSource {
		if time.Now().After(deadline) {
			t.Fatalf("%v of the flood's %d connections refused, want at least %d", refusedCount(t, reg), flood, flood-perSource)
		}
		time.Sleep(10 * time.Millisecond)
	}
	open := 0
	for _, c := range conns {
		_ = c.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
		if _, err := c.Read(make([]byte, 1)); err != nil {
			if ne, ok := err.(net.Error); ok && ne.Timeout() {
				open++
			}
		}
	}
	if open > perSource {
		t.Fatalf("the flood holds %d connections, want at most %d", open, perSource)
	}

	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DialContext: dialer("127.0.0.3").DialContext}}
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, err := client.Get("http://" + addr + "/health")
			if err != nil {
				t.Errorf("GET /health from another source during the flood: %v", err)
				return
			}
			defer resp.Body.Close()
			var body struct{ OK bool }
			if err := json.NewDecoder(resp.Body).Decode(&body); err != nil || resp.StatusCode != http.StatusOK || !body.OK {
				t.Errorf("GET /health: %s %+v %v", resp.Status, body, err)
			}
		}()
	}
	wg.Wait()
}

// TestSlowClientsCut: over TLS, as the API serves, a client that never
// starts its handshake and one that sends half a request are both closed
// by the server after its header timeout (5 s), not held until they go:
// with the per-source cap, that is what frees a slow host's share.
func TestSlowClientsCut(t *testing.T) {
	ca, _, err := pki.NewCA("c1", "pw")
	if err != nil {
		t.Fatal(err)
	}
	n1 := NewIdentity("c1", "n1")
	cert, key, err := ca.IssueNode("c1", "n1", "127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	if err := n1.Set(cert, key, ca.CertPEM); err != nil {
		t.Fatal(err)
	}
	addr := serve(t, Handler(fakeSource{model.RoleReplica}, prometheus.NewRegistry()), n1.ServerTLS())
	silent, err := net.Dial("tcp", addr) // no ClientHello
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	half, err := tls.Dial("tcp", addr, &tls.Config{InsecureSkipVerify: true}) //nolint:gosec // the server's identity is not the point
	if err != nil {
		t.Fatal(err)
	}
	defer half.Close()
	if _, err := fmt.Fprintf(half, "GET /status HTTP/1.1\r\nHost: x\r\n"); err != nil { // and never the blank line
		t.Fatal(err)
	}
	// Well before ReadTimeout (10 s), which alone would also cut them.
	start := time.Now()
	for name, c := range map[string]net.Conn{"a client silent before TLS": silent, "half a request over TLS": half} {
		_ = c.SetReadDeadline(start.Add(9 * time.Second))
		_, err := io.Copy(io.Discard, c)
		if ne, ok := err.(net.Error); ok && ne.Timeout() {
			t.Errorf("%s was still open after %v", name, time.Since(start).Round(time.Second))
		}
	}
}
