package ops

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/petrel-db/petrel/internal/apps"
)

// Admin is how an operation logs in to a member's Postgres: the superuser
// or the operator role, over TLS verified against the cluster CA when the
// cluster has one.
type Admin struct {
	User, Password string
	CAPEM          []byte // nil: no CA yet (plaintext, loopback only)
}

// TLSConfig verifies the server against the cluster CA (verify-full).
func (a Admin) TLSConfig(host string) *tls.Config {
	if a.CAPEM == nil {
		return nil
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(a.CAPEM)
	return &tls.Config{RootCAs: pool, ServerName: host, MinVersion: tls.VersionTLS12}
}

// Connect opens a connection to db at addr (host:port).
func (a Admin) Connect(ctx context.Context, addr, db string) (*pgx.Conn, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, fmt.Errorf("member address %q: %w", addr, err)
	}
	cfg, err := pgx.ParseConfig(fmt.Sprintf("host=%s port=%s dbname=%s sslmode=disable application_name=petrel_ops", host, port, db))
	if err != nil {
		return nil, fmt.Errorf("connection settings: %w", err)
	}
	cfg.User, cfg.Password = a.User, a.Password
	cfg.ConnectTimeout = 5 * time.Second
	cfg.TLSConfig = a.TLSConfig(host)
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	conn, err := pgx.ConnectConfig(cctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("connecting to %s (database %s) as %s: %w", addr, db, a.User, err)
	}
	return conn, nil
}

// ConnectLeaderAs opens a's connection to db on the leader.
func (c *Cluster) ConnectLeaderAs(ctx context.Context, a Admin, db string) (*pgx.Conn, error) {
	t, err := c.Topology(ctx)
	if err != nil {
		return nil, err
	}
	m, ok := t.Members[t.Leader]
	if t.Leader == "" || !ok {
		return nil, apps.ErrNoLeader
	}
	return a.Connect(ctx, m.PostgresAddr, db)
}
