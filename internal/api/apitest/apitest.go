// Package apitest serves node APIs for tests of their clients: TLS
// httptest servers with node certificates from a throwaway cluster CA,
// and API clients that trust it.
package apitest

import (
	"crypto/tls"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/petrel-db/petrel/internal/api"
	"github.com/petrel-db/petrel/internal/pki"
)

// CA is a throwaway cluster CA.
type CA struct {
	*pki.CA
	Cluster string
}

// NewCA creates a CA for cluster.
func NewCA(t testing.TB, cluster string) *CA {
	t.Helper()
	ca, _, err := pki.NewCA(cluster, "apitest")
	if err != nil {
		t.Fatal(err)
	}
	return &CA{CA: ca, Cluster: cluster}
}

// Server serves h over TLS as node id (certificate named for it, signed
// by the CA); closed at the end of the test.
func (c *CA) Server(t testing.TB, id string, h http.Handler) *httptest.Server {
	t.Helper()
	certPEM, keyPEM, err := c.IssueNode(c.Cluster, id, "127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	return ServeCert(t, certPEM, keyPEM, h)
}

// ServeCert serves h over TLS with the given certificate (impostors:
// another CA's, a Postgres certificate, another node's).
func ServeCert(t testing.TB, certPEM, keyPEM []byte, h http.Handler) *httptest.Server {
	t.Helper()
	kp, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(h)
	// Refused handshakes are what these servers are for: not news.
	srv.Config.ErrorLog = log.New(io.Discard, "", 0)
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{kp}, MinVersion: tls.VersionTLS12}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return srv
}

// Client trusts the CA.
func (c *CA) Client(t testing.TB) *api.Client {
	t.Helper()
	cl, err := api.NewClient(c.CertPEM, c.Cluster, api.ClientOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return cl
}
