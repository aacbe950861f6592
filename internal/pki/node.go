package pki

import (
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"net/url"
	"strings"
)

// Node identities. A node's API certificate names it with a URI SAN,
// petrel://<cluster>/node/<id>: whoever verifies a member's API checks
// the chain to the cluster CA *and* that name, so an address taken from
// the store (which anyone who can write etcd can forge) leads only to the
// node the record claims to be.

// NodeURI is the URI SAN naming node id of cluster.
func NodeURI(cluster, id string) *url.URL {
	return &url.URL{Scheme: "petrel", Host: cluster, Path: "/node/" + id}
}

// NodeID returns the node a certificate names for cluster ("" when none:
// a Postgres server certificate, another cluster's node, a stranger's).
func NodeID(c *x509.Certificate, cluster string) string {
	for _, u := range c.URIs {
		if u.Scheme == "petrel" && u.Host == cluster {
			if id, ok := strings.CutPrefix(u.Path, "/node/"); ok && id != "" && !strings.Contains(id, "/") {
				return id
			}
		}
	}
	return ""
}

// IssueNode signs the API certificate of node id: the URI SAN above and
// hosts (see ServerNames), usable as a TLS server and client certificate
// (members present it when they call each other). It is a different
// certificate from the Postgres server certificate, which names no node:
// code running as the postgres OS user can read that one's key, and must
// not be able to speak as the node.
func (ca *CA) IssueNode(cluster, id string, hosts ...string) (certPEM, keyPEM []byte, err error) {
	return ca.issue(id, []*url.URL{NodeURI(cluster, id)}, hosts...)
}

// ErrNotNode means a peer's certificate is not a node certificate of
// the expected cluster (and node) signed by the cluster CA.
var ErrNotNode = errors.New("not a node certificate of this cluster")

// VerifyNode checks that chain[0] is signed by a CA in roots for usage
// and names a node of cluster, and returns that node's id.
func VerifyNode(chain []*x509.Certificate, roots *x509.CertPool, cluster string, usage x509.ExtKeyUsage) (string, error) {
	if len(chain) == 0 {
		return "", fmt.Errorf("%w: no certificate", ErrNotNode)
	}
	inter := x509.NewCertPool()
	for _, c := range chain[1:] {
		inter.AddCert(c)
	}
	if _, err := chain[0].Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{usage}}); err != nil {
		return "", fmt.Errorf("%w: %w", ErrNotNode, err)
	}
	id := NodeID(chain[0], cluster)
	if id == "" {
		return "", fmt.Errorf("%w: the certificate (CN %q) names no node of cluster %q", ErrNotNode, chain[0].Subject.CommonName, cluster)
	}
	return id, nil
}

// PeerNode is the node a verified TLS connection's peer certificate
// names ("" when the peer sent none or it was not verified).
func PeerNode(cs *tls.ConnectionState, cluster string) string {
	if cs == nil || len(cs.VerifiedChains) == 0 {
		return ""
	}
	return NodeID(cs.VerifiedChains[0][0], cluster)
}

// Fingerprint is the SHA-256 of a PEM certificate's DER, in lower-case
// hex: what operators pin (ca_fingerprint) so that nobody who can write
// etcd can swap the cluster CA.
func Fingerprint(certPEM []byte) (string, error) {
	c, err := ParseCert(certPEM)
	if err != nil {
		return "", err
	}
	sum := sha256.Sum256(c.Raw)
	return hex.EncodeToString(sum[:]), nil
}

// NormalizeFingerprint accepts a pinned fingerprint as written by people
// and tools (optional "sha256:" prefix, colons, either case) and returns
// the form Fingerprint returns.
func NormalizeFingerprint(pin string) (string, error) {
	s := strings.ToLower(strings.TrimSpace(pin))
	s = strings.TrimPrefix(s, "sha256:")
	s = strings.ReplaceAll(s, ":", "")
	if b, err := hex.DecodeString(s); err != nil || len(b) != sha256.Size {
		return "", fmt.Errorf("CA fingerprint %q: want the 64 hex digits of a SHA-256", pin)
	}
	return s, nil
}

// ErrFingerprint means a CA certificate is not the pinned one.
var ErrFingerprint = errors.New("the cluster CA does not match the pinned fingerprint")

// CheckPinned returns nil when certPEM's fingerprint is pin (normalized).
func CheckPinned(certPEM []byte, pin string) error {
	want, err := NormalizeFingerprint(pin)
	if err != nil {
		return err
	}
	got, err := Fingerprint(certPEM)
	if err != nil {
		return fmt.Errorf("the cluster CA: %w", err)
	}
	if got != want {
		return fmt.Errorf("%w: the store holds a CA with fingerprint %s, pinned is %s (someone replaced the CA in etcd, or the pin belongs to another cluster)", ErrFingerprint, got, want)
	}
	return nil
}

// Pool is a certificate pool holding the CA certificate in caPEM.
func Pool(caPEM []byte) (*x509.CertPool, error) {
	c, err := ParseCert(caPEM)
	if err != nil {
		return nil, fmt.Errorf("the cluster CA: %w", err)
	}
	p := x509.NewCertPool()
	p.AddCert(c)
	return p, nil
}

// CheckNodeCert is CheckServerCert for a node's API certificate: it must
// also name node id of cluster.
func CheckNodeCert(certPEM, keyPEM, caPEM []byte, cluster, id string, hosts ...string) error {
	if err := CheckServerCert(certPEM, keyPEM, caPEM, hosts...); err != nil {
		return err
	}
	c, err := ParseCert(certPEM)
	if err != nil {
		return err
	}
	if got := NodeID(c, cluster); got != id {
		return fmt.Errorf("it names node %q of cluster %q, not %q", got, cluster, id)
	}
	return nil
}
