package testcluster

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/http"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/petrel-db/petrel/internal/pki"
	"github.com/petrel-db/petrel/internal/store"
)

// EtcdClient is a client of the cluster's etcd (as root on an
// EtcdCluster); the caller closes it.
func (c *Cluster) EtcdClient(ctx context.Context) (*clientv3.Client, error) {
	if ec := c.Opts.EtcdCluster; ec != nil {
		return ec.rootClient(ctx, ec.Endpoints())
	}
	return clientv3.New(clientv3.Config{Endpoints: c.EtcdEndpoints(), DialTimeout: 3 * time.Second, Logger: zap.NewNop()})
}

// UnsealCA reads the cluster CA from etcd and unseals it with the
// superuser password (tests that sign as a member: node certificates,
// the cluster secret).
func (c *Cluster) UnsealCA(ctx context.Context) (*pki.CA, error) {
	cli, err := c.EtcdClient(ctx)
	if err != nil {
		return nil, err
	}
	defer cli.Close()
	gctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	resp, err := cli.Get(gctx, store.ClusterKey(c.Opts.Name, store.KeyCA))
	if err != nil || len(resp.Kvs) == 0 {
		return nil, fmt.Errorf("reading the cluster CA: %w", errors.Join(err, errors.New("not found")))
	}
	st, err := pki.Decode(resp.Kvs[0].Value)
	if err != nil {
		return nil, err
	}
	return st.Unseal(c.Secrets.Superuser)
}

// HTTPClientAs is a plain HTTP client over TLS that trusts the cluster CA
// and presents a node certificate for id ("" presents none), for tests
// that send members hand-made requests.
func (c *Cluster) HTTPClientAs(ca *pki.CA, id string) (*http.Client, error) {
	pool := x509.NewCertPool()
	pool.AddCert(ca.Cert)
	tc := &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	if id != "" {
		certPEM, keyPEM, err := ca.IssueNode(c.Opts.Name, id, "127.0.0.1")
		if err != nil {
			return nil, err
		}
		kp, err := tls.X509KeyPair(certPEM, keyPEM)
		if err != nil {
			return nil, err
		}
		tc.Certificates = []tls.Certificate{kp}
	}
	return &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: tc}}, nil
}

// HTTPClient is a plain HTTP client over TLS that trusts the cluster CA
// (the nodes' API certificates name 127.0.0.1) and presents no
// certificate.
func (c *Cluster) HTTPClient() *http.Client {
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(c.CAPEM)
	return &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}}}
}
