package agent

import (
	"context"
	"errors"
	"net/netip"
	"sync"
	"time"

	"github.com/petrel-db/petrel/internal/api"
	"github.com/petrel-db/petrel/internal/pg"
	"golang.org/x/sync/singleflight"
)

// sessionsReuse is how long one read of the server's client sessions
// answers GET /sessions, and sessionsTimeout bounds one read.
const (
	sessionsReuse   = 100 * time.Millisecond
	sessionsTimeout = time.Second
)

// sessionsCache makes GET /sessions cost at most one query at a time on
// the agent's own Postgres connection (which its loop shares), each
// reused for sessionsReuse: however many proxies ask, and however often,
// the loop sees at most about ten reads a second.
type sessionsCache struct {
	flight singleflight.Group
	mu     sync.Mutex // guards the following fields
	at     time.Time  // when the last read finished
	last   pg.Sessions
}

// Sessions is what GET /sessions serves (api.SessionsSource): the
// authenticated client sessions of this member's Postgres from addr, by
// port, and its authentication_timeout. A proxy holds a TLS session's
// authentication slot until its port is listed here.
func (a *Agent) Sessions(ctx context.Context, addr netip.Addr) (ports []uint16, authTimeout time.Duration, err error) {
	if !a.pg.Running() {
		return nil, 0, errors.New("postgres is not running")
	}
	c := &a.sessions
	c.mu.Lock()
	ss, fresh := c.last, !c.at.IsZero() && time.Since(c.at) < sessionsReuse
	c.mu.Unlock()
	if !fresh {
		ch := c.flight.DoChan("", func() (any, error) {
			// Not the caller's context: the read answers every caller
			// waiting on it.
			qctx, cancel := context.WithTimeout(context.Background(), sessionsTimeout)
			defer cancel()
			ss, err := a.pg.ClientSessions(qctx)
			if err != nil {
				return nil, err
			}
			c.mu.Lock()
			c.at, c.last = time.Now(), ss
			c.mu.Unlock()
			return ss, nil
		})
		select {
		case res := <-ch:
			if res.Err != nil {
				return nil, 0, res.Err
			}
			ss = res.Val.(pg.Sessions)
		case <-ctx.Done():
			return nil, 0, ctx.Err()
		}
	}
	addr = addr.Unmap()
	for _, s := range ss.Authenticated {
		if s.Addr() == addr {
			ports = append(ports, s.Port())
		}
	}
	return ports, ss.AuthTimeout, nil
}

var _ api.SessionsSource = (*Agent)(nil)
