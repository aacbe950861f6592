package edge

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/petrel-db/petrel/internal/api"
	"github.com/petrel-db/petrel/pkg/flyreplay"
)

// replica follows how far this region's database has replayed, for
// read-your-writes: one connection and one poller per edge, however many
// requests wait. It polls only while someone waits (every PollInterval),
// so an idle edge costs the database nothing but a timeline check on the
// member's agent every second.
type replica struct {
	dsn, api string
	client   *api.Client // the agent's API, over TLS against the cluster CA
	log      *slog.Logger
	poll     time.Duration

	timeline atomic.Uint32 // from the agent's /status; only ever lags the truth
	replayed atomic.Uint64 // last replay LSN seen

	mu      sync.Mutex // guards waiters and conn
	waiters []*waiter
	conn    *pgx.Conn
	kick    chan struct{}
}

type waiter struct {
	lsn  uint64
	done chan struct{}
}

// PollInterval is how often the replay position is read while a request
// waits for it.
const PollInterval = time.Millisecond

func newReplica(dsn, apiURL string, client *api.Client, log *slog.Logger) *replica {
	return &replica{dsn: dsn, api: apiURL, client: client, log: log, poll: PollInterval, kick: make(chan struct{}, 1)}
}

// covers says, without waiting, whether the replica holds pos.
func (rp *replica) covers(pos flyreplay.Position) bool {
	return pos.CoveredBy(rp.timeline.Load(), rp.replayed.Load())
}

// errOldTimeline: the replica is (as far as the edge knows) on an older
// timeline than the token; only the primary region can serve it.
var errOldTimeline = errors.New("the replica's timeline is older than the token's")

// wait blocks until the replica holds pos or ctx ends.
func (rp *replica) wait(ctx context.Context, pos flyreplay.Position) error {
	if rp.timeline.Load() < pos.Timeline {
		return errOldTimeline
	}
	if rp.covers(pos) {
		return nil
	}
	w := &waiter{lsn: pos.LSN, done: make(chan struct{})}
	rp.mu.Lock()
	rp.waiters = append(rp.waiters, w)
	rp.mu.Unlock()
	select {
	case rp.kick <- struct{}{}:
	default:
	}
	select {
	case <-w.done:
		return nil
	case <-ctx.Done():
		rp.mu.Lock()
		for i, x := range rp.waiters {
			if x == w {
				rp.waiters = append(rp.waiters[:i], rp.waiters[i+1:]...)
				break
			}
		}
		rp.mu.Unlock()
		return ctx.Err()
	}
}

// run polls while there are waiters and refreshes the timeline every
// second, until ctx ends.
func (rp *replica) run(ctx context.Context) {
	defer rp.closeConn()
	tlTick := time.NewTicker(time.Second)
	defer tlTick.Stop()
	rp.refreshTimeline(ctx)
	rp.pollOnce(ctx)
	for {
		rp.mu.Lock()
		n := len(rp.waiters)
		rp.mu.Unlock()
		if n > 0 {
			rp.pollOnce(ctx)
			select {
			case <-ctx.Done():
				return
			case <-time.After(rp.poll):
			}
			continue
		}
		select {
		case <-ctx.Done():
			return
		case <-rp.kick:
		case <-tlTick.C:
			rp.refreshTimeline(ctx)
			rp.pollOnce(ctx)
		}
	}
}

func (rp *replica) pollOnce(ctx context.Context) {
	lsn, err := rp.readLSN(ctx)
	if err != nil {
		rp.log.Debug("reading the replica's replay position", "err", err)
		return
	}
	if lsn > rp.replayed.Load() {
		rp.replayed.Store(lsn)
	}
	cur := rp.replayed.Load()
	rp.mu.Lock()
	keep := rp.waiters[:0]
	for _, w := range rp.waiters {
		if cur >= w.lsn {
			close(w.done)
		} else {
			keep = append(keep, w)
		}
	}
	rp.waiters = keep
	rp.mu.Unlock()
}

func (rp *replica) readLSN(ctx context.Context) (uint64, error) {
	rp.mu.Lock()
	c := rp.conn
	rp.mu.Unlock()
	if c == nil {
		cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		nc, err := pgx.Connect(cctx, rp.dsn)
		cancel()
		if err != nil {
			return 0, fmt.Errorf("connecting to the region's database: %w", err)
		}
		rp.mu.Lock()
		rp.conn, c = nc, nc
		rp.mu.Unlock()
	}
	qctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	lsn, err := flyreplay.ReplayLSN(qctx, c)
	if err != nil {
		rp.closeConn()
	}
	return lsn, err
}

func (rp *replica) closeConn() {
	rp.mu.Lock()
	c := rp.conn
	rp.conn = nil
	rp.mu.Unlock()
	if c != nil {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		c.Close(ctx)
		cancel()
	}
}

func (rp *replica) refreshTimeline(ctx context.Context) {
	if rp.api == "" || rp.client == nil {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	// Any node of the cluster (the edge is told a URL, not an id); the
	// client checks the certificate is one.
	b, err := rp.client.Get(ctx, rp.api, "", "/status", 1<<20)
	if err != nil {
		return
	}
	var st struct {
		Timeline uint32 `json:"timeline"`
	}
	if json.Unmarshal(b, &st) == nil && st.Timeline > 0 {
		// Timelines only grow; a member that was re-cloned reports its
		// new one, and an older answer (a restarting agent) is ignored.
		for {
			cur := rp.timeline.Load()
			if st.Timeline <= cur || rp.timeline.CompareAndSwap(cur, st.Timeline) {
				break
			}
		}
	}
}

// minter reads the leader's position for new tokens. The pool drops a
// connection that broke (say, with the old leader after a failover), so a
// retry gets a fresh one.
type minter struct {
	pool *pgxpool.Pool
}

func newMinter(dsn string) (*minter, error) {
	cfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		return nil, errors.New("edge database URL does not parse") // the error would quote it
	}
	cfg.MaxConns = 8
	pool, err := pgxpool.NewWithConfig(context.Background(), cfg) // connects lazily
	if err != nil {
		return nil, fmt.Errorf("edge database pool: %w", err)
	}
	return &minter{pool: pool}, nil
}

func (m *minter) position(ctx context.Context) (flyreplay.Position, error) {
	qctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	return flyreplay.LeaderPosition(qctx, m.pool)
}

func (m *minter) close() { m.pool.Close() }
