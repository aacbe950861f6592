package api

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/petrel-db/petrel/internal/model"
	"github.com/petrel-db/petrel/internal/pki"
	"github.com/prometheus/client_golang/prometheus"
)

type idSource struct{ peers chan string }

func (idSource) Role() string                        { return model.RolePrimary }
func (idSource) Status(context.Context) model.Status { return model.Status{ID: "n1"} }
func (idSource) Health() []string                    { return nil }
func (f idSource) Failsafe(_ context.Context, _ model.FailsafeRequest, peer *tls.ConnectionState) model.FailsafeReply {
	f.peers <- pki.PeerNode(peer, "c1")
	return model.FailsafeReply{OK: true}
}

func serve(t *testing.T, h http.Handler, tc *tls.Config) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Serve(ctx, ln, h, tc, Limits{}, nil, nil) }()
	t.Cleanup(func() { cancel(); <-done })
	for i := 0; i < 100; i++ {
		if c, err := net.Dial("tcp", addr); err == nil {
			c.Close()
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	return addr
}

// TestTLSIdentity: the API serves its node certificate; clients check it
// names the member they asked; a client with the node's identity is seen
// by handlers as that node, one without as nobody; the plain handler
// serves only what load balancers and Prometheus read.
func TestTLSIdentity(t *testing.T) {
	ca, _, err := pki.NewCA("c1", "pw")
	if err != nil {
		t.Fatal(err)
	}
	n1 := NewIdentity("c1", "n1")
	src := idSource{peers: make(chan string, 4)}
	addr := serve(t, Handler(src, prometheus.NewRegistry()), n1.ServerTLS())
	base := "https://" + addr

	anyone, err := NewClient(ca.CertPEM, "c1", ClientOptions{})
	if err != nil {
		t.Fatal(err)
	}
	// No certificate yet: handshakes fail.
	if _, err := anyone.Get(context.Background(), base, "n1", "/role", 64); err == nil {
		t.Fatal("answered before the node had a certificate")
	}
	cert, key, err := ca.IssueNode("c1", "n1", "127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	if err := n1.Set(cert, key, ca.CertPEM); err != nil {
		t.Fatal(err)
	}
	if b, err := anyone.Get(context.Background(), base, "n1", "/role", 64); err != nil || string(b) != model.RolePrimary {
		t.Fatalf("GET /role: %q %v", b, err)
	}
	if _, err := anyone.Get(context.Background(), base, "n2", "/role", 64); !errors.Is(err, ErrWrongNode) {
		t.Fatalf("n1 accepted as n2: %v", err)
	}
	other, _, _ := pki.NewCA("c1", "pw")
	stranger, _ := NewClient(other.CertPEM, "c1", ClientOptions{})
	if _, err := stranger.Get(context.Background(), base, "n1", "/role", 64); !errors.Is(err, pki.ErrNotNode) {
		t.Fatalf("accepted under another CA: %v", err)
	}
	if _, err := anyone.Get(context.Background(), "http://"+addr, "n1", "/role", 64); err == nil || !strings.Contains(err.Error(), "https only") {
		t.Fatalf("plain http: %v", err)
	}
	if err := n1.Set(cert, key, other.CertPEM); err != nil {
		t.Fatal(err)
	}
	if err := NewIdentity("c1", "n2").Set(cert, key, ca.CertPEM); err == nil {
		t.Fatal("n2's identity took n1's certificate")
	}
	if err := n1.Set(cert, key, ca.CertPEM); err != nil {
		t.Fatal(err)
	}

	post := func(c *Client) string {
		req, _ := http.NewRequest(http.MethodPost, base+"/failsafe", strings.NewReader(`{"leader":"n2"}`))
		resp, err := c.Do(req, "n1")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return <-src.peers
	}
	if p := post(anyone); p != "" {
		t.Fatalf("a client without a certificate seen as %q", p)
	}
	n2 := NewIdentity("c1", "n2")
	c2, k2, _ := ca.IssueNode("c1", "n2", "127.0.0.1")
	if err := n2.Set(c2, k2, ca.CertPEM); err != nil {
		t.Fatal(err)
	}
	if p := post(n2.Client(ClientOptions{})); p != "n2" {
		t.Fatalf("n2's client seen as %q", p)
	}

	plain := serve(t, PlainHandler(src, prometheus.NewRegistry()), nil)
	for path, want := range map[string]int{"/health": 200, "/role": 200, "/metrics": 200, "/status": 404} {
		resp, err := http.Get("http://" + plain + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Errorf("plain GET %s: %d, want %d", path, resp.StatusCode, want)
		}
	}
	resp, err := http.Post("http://"+plain+"/failsafe", "application/json", strings.NewReader("{}"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode == http.StatusOK || resp.StatusCode == http.StatusConflict {
		t.Errorf("plain POST /failsafe: %d", resp.StatusCode)
	}
}
