package api

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"

	"github.com/petrel-db/petrel/internal/pki"
)

// Identity is a node's API certificate (naming it, signed by the cluster
// CA) and the CA, which the agent swaps in when it issues them. The API
// server serves the certificate and verifies client certificates against
// the CA; the node's own clients present it and verify peers against it.
type Identity struct {
	cluster, id string

	mu    sync.RWMutex
	cert  *tls.Certificate
	pool  *x509.CertPool
	caPEM []byte
}

// NewIdentity is node id's identity in cluster, with no certificate yet.
func NewIdentity(cluster, id string) *Identity {
	return &Identity{cluster: cluster, id: id}
}

// Cluster is the identity's cluster name.
func (i *Identity) Cluster() string { return i.cluster }

// Set installs a certificate (which must name this node) and its CA.
func (i *Identity) Set(certPEM, keyPEM, caPEM []byte) error {
	kp, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return fmt.Errorf("the API certificate: %w", err)
	}
	pool, err := pki.Pool(caPEM)
	if err != nil {
		return err
	}
	if got := pki.NodeID(kp.Leaf, i.cluster); got != i.id {
		return fmt.Errorf("the API certificate names node %q, this is %q", got, i.id)
	}
	i.mu.Lock()
	defer i.mu.Unlock()
	i.cert, i.pool, i.caPEM = &kp, pool, append([]byte(nil), caPEM...)
	return nil
}

// Files in a node's API directory (DataDir/api, owned by the agent and
// never readable by the postgres OS user when the agent runs as root).
const (
	CertFile = "api.crt"
	KeyFile  = "api.key"
	CAFile   = "ca.crt"
)

// Load installs the identity saved in dir, if any (a restarted node
// serves at once, even while the store is unreachable).
func (i *Identity) Load(dir string) error {
	c, err1 := os.ReadFile(filepath.Join(dir, CertFile))
	k, err2 := os.ReadFile(filepath.Join(dir, KeyFile))
	ca, err3 := os.ReadFile(filepath.Join(dir, CAFile))
	if err := errors.Join(err1, err2, err3); err != nil {
		return fmt.Errorf("reading the saved API certificate: %w", err)
	}
	return i.Set(c, k, ca)
}

// CAPEM is the CA the identity was installed with (nil before).
func (i *Identity) CAPEM() []byte {
	i.mu.RLock()
	defer i.mu.RUnlock()
	return i.caPEM
}

func (i *Identity) current() (*tls.Certificate, *x509.CertPool) {
	i.mu.RLock()
	defer i.mu.RUnlock()
	return i.cert, i.pool
}

// errNoCert: the node has no certificate yet (before the cluster CA
// exists); handshakes fail until the agent installs one.
var errNoCert = errors.New("this node has no API certificate yet")

// ServerTLS is the API server's TLS configuration: the node's current
// certificate, and client certificates asked for (not required: reads
// are open to anyone who trusts the CA) and verified against the CA.
// Handlers see a verified client node through pki.PeerNode(r.TLS).
func (i *Identity) ServerTLS() *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
			cert, pool := i.current()
			if cert == nil {
				return nil, errNoCert
			}
			return &tls.Config{
				MinVersion:   tls.VersionTLS12,
				Certificates: []tls.Certificate{*cert},
				ClientAuth:   tls.VerifyClientCertIfGiven,
				ClientCAs:    pool,
				NextProtos:   []string{"http/1.1"},
			}, nil
		},
	}
}

// Client is an API client for this node: it verifies peers against the
// current CA and presents the node's certificate (peers authenticate
// state-changing requests by it).
func (i *Identity) Client(o ClientOptions) *Client {
	return newClient(i.cluster, func() *x509.CertPool { _, p := i.current(); return p },
		func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			cert, _ := i.current()
			if cert == nil {
				return &tls.Certificate{}, nil // none: the server may still answer reads
			}
			return cert, nil
		}, o)
}
