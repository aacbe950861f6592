package api

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/petrel-db/petrel/internal/pki"
)

// Client calls members' APIs over TLS. Every answer must come from a
// server whose certificate is signed by the cluster CA and names the
// member asked for (pki.NodeURI), so an address read from the store (which
// whoever can write etcd can forge) never makes it trust another server.
type Client struct {
	cluster string
	hc      *http.Client
}

// ClientOptions tune a Client.
type ClientOptions struct {
	// Timeout bounds each request (default 2 s).
	Timeout time.Duration
	// MaxIdlePerHost keeps connections to each member warm (default 2).
	MaxIdlePerHost int
	// Dial rewrites host:port before dialling (the local world's links);
	// nil dials as is.
	Dial func(addr string) string
}

// NewClient is a client for tools (the CLI, the proxy, the edge, tests):
// it verifies members against caPEM and presents no certificate, so it
// can read but not make requests that change state.
func NewClient(caPEM []byte, cluster string, o ClientOptions) (*Client, error) {
	pool, err := pki.Pool(caPEM)
	if err != nil {
		return nil, err
	}
	return newClient(cluster, func() *x509.CertPool { return pool }, nil, o), nil
}

func newClient(cluster string, pool func() *x509.CertPool, clientCert func(*tls.CertificateRequestInfo) (*tls.Certificate, error), o ClientOptions) *Client {
	if o.Timeout <= 0 {
		o.Timeout = 2 * time.Second
	}
	if o.MaxIdlePerHost <= 0 {
		o.MaxIdlePerHost = 2
	}
	tc := &tls.Config{
		MinVersion: tls.VersionTLS12,
		// Members are named by their certificate's node URI, not by host
		// names (addresses pass through dial maps and NAT): the chain and
		// that name are checked here and in Do, not by the default
		// host name verification.
		InsecureSkipVerify: true, //nolint:gosec // verified in VerifyConnection
		VerifyConnection: func(cs tls.ConnectionState) error {
			p := pool()
			if p == nil {
				return errors.New("no cluster CA to verify the member against yet")
			}
			_, err := pki.VerifyNode(cs.PeerCertificates, p, cluster, x509.ExtKeyUsageServerAuth)
			return err
		},
		GetClientCertificate: clientCert,
	}
	dialer := &net.Dialer{Timeout: o.Timeout}
	tr := &http.Transport{
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			if o.Dial != nil {
				addr = o.Dial(addr)
			}
			return dialer.DialContext(ctx, network, addr)
		},
		TLSClientConfig:     tc,
		ForceAttemptHTTP2:   false,
		MaxIdleConnsPerHost: o.MaxIdlePerHost,
		IdleConnTimeout:     90 * time.Second,
		TLSHandshakeTimeout: o.Timeout,
	}
	return &Client{cluster: cluster, hc: &http.Client{Transport: tr, Timeout: o.Timeout}}
}

// ErrWrongNode means a member's API answered with another node's
// certificate (a forged member record, or an address reused by another
// member).
var ErrWrongNode = errors.New("the API answered with another node's certificate")

// Do sends req, which must be https, to member node and checks the answer
// came from it. The caller closes the body.
func (c *Client) Do(req *http.Request, node string) (*http.Response, error) {
	if req.URL.Scheme != "https" {
		return nil, fmt.Errorf("%s %s: a member's API is reached over https only", req.Method, req.URL)
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return nil, err
	}
	if resp.TLS == nil || len(resp.TLS.PeerCertificates) == 0 {
		resp.Body.Close()
		return nil, fmt.Errorf("%s %s: no TLS peer certificate", req.Method, req.URL)
	}
	if got := pki.NodeID(resp.TLS.PeerCertificates[0], c.cluster); node != "" && got != node {
		resp.Body.Close()
		return nil, fmt.Errorf("%s %s: %w: %q, not %q", req.Method, req.URL, ErrWrongNode, got, node)
	}
	return resp, nil
}

// Get fetches base+path from member node, at most limit bytes, and
// fails on a status other than 200 (the body is returned with it).
func (c *Client) Get(ctx context.Context, base, node, path string, limit int64) ([]byte, error) {
	b, _, err := c.GetHeader(ctx, base, node, path, limit)
	return b, err
}

// GetHeader is Get that also returns the answer's header.
func (c *Client) GetHeader(ctx context.Context, base, node, path string, limit int64) ([]byte, http.Header, error) {
	url := strings.TrimRight(base, "/") + path
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, nil, fmt.Errorf("building request: %w", err)
	}
	resp, err := c.Do(req, node)
	if err != nil {
		return nil, nil, fmt.Errorf("GET %s: %w", url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, limit))
	if err != nil {
		return nil, resp.Header, fmt.Errorf("GET %s: %w", url, err)
	}
	if resp.StatusCode != http.StatusOK {
		return b, resp.Header, &StatusError{URL: url, Code: resp.StatusCode, Status: resp.Status}
	}
	return b, resp.Header, nil
}

// StatusError is an answer other than 200 OK: the member answered, and
// Code says what (a 404 is a route this member's version does not have).
type StatusError struct {
	URL    string
	Code   int
	Status string
}

func (e *StatusError) Error() string { return fmt.Sprintf("GET %s: %s", e.URL, e.Status) }

// CloseIdle closes idle connections (tools, before they exit).
func (c *Client) CloseIdle() { c.hc.CloseIdleConnections() }
