package pg

import (
	"context"
	"fmt"
	"net/netip"
	"time"
)

// Sessions is what the server says of its client connections: the
// addresses (as the server sees them) of the client backends that are
// authenticated, and how long it gives a client to authenticate.
type Sessions struct {
	// Authenticated lists the client backends' remote address and port.
	// PostgreSQL lists a backend in pg_stat_activity only once its client
	// has authenticated (through PostgreSQL 16), so a port here is an
	// authenticated session.
	Authenticated []netip.AddrPort
	// AuthTimeout is authentication_timeout: the longest a backend waits
	// for its client to authenticate.
	AuthTimeout time.Duration
}

// ClientSessions reads Sessions from pg_stat_activity and pg_settings (one
// query on the agent's connection; the superuser sees every backend's
// address).
func (s *Server) ClientSessions(ctx context.Context) (Sessions, error) {
	rows, release, err := s.Query(ctx, `
SELECT t.setting::int, coalesce(a.addr, ''), coalesce(a.port, 0)
FROM (SELECT setting FROM pg_settings WHERE name = 'authentication_timeout') t
LEFT JOIN (SELECT host(client_addr) AS addr, client_port AS port
           FROM pg_stat_activity
           WHERE backend_type = 'client backend' AND client_port > 0) a ON true`)
	if err != nil {
		return Sessions{}, fmt.Errorf("listing client sessions: %w", err)
	}
	defer release()
	var res Sessions
	for rows.Next() {
		var (
			secs, port int
			addr       string
		)
		if err := rows.Scan(&secs, &addr, &port); err != nil {
			return Sessions{}, fmt.Errorf("listing client sessions: %w", err)
		}
		res.AuthTimeout = time.Duration(secs) * time.Second
		if addr == "" || port <= 0 || port > 65535 {
			continue
		}
		a, err := netip.ParseAddr(addr)
		if err != nil {
			return Sessions{}, fmt.Errorf("listing client sessions: client_addr %q: %w", addr, err)
		}
		res.Authenticated = append(res.Authenticated, netip.AddrPortFrom(a.Unmap(), uint16(port)))
	}
	if err := rows.Err(); err != nil {
		return Sessions{}, fmt.Errorf("listing client sessions: %w", err)
	}
	return res, nil
}
