package flyreplay

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
)

// Position is a point in a cluster's WAL history: the timeline and the
// LSN on it. A read-your-writes token carries the leader's Position taken
// after a write's response was produced, so it is at or past the write's
// commit record.
//
// Comparing positions across a failover: every acknowledged commit is on
// the promoted member (petrel's quorum-synchronous replication), so a
// later timeline descends from the token's history at or past any
// acknowledged commit in it. A replica whose timeline is at least the
// token's and whose replay LSN is at least the token's LSN therefore
// holds the write. A replica on an older timeline proves nothing.
type Position struct {
	Timeline uint32
	LSN      uint64
}

// String renders "<timeline>/<hi>/<lo>", e.g. "3/0/3000060".
func (p Position) String() string {
	return fmt.Sprintf("%d/%X/%X", p.Timeline, p.LSN>>32, uint32(p.LSN))
}

// IsZero says whether p is the zero Position (no information).
func (p Position) IsZero() bool { return p.Timeline == 0 && p.LSN == 0 }

// CoveredBy says whether a replica at timeline tl that replayed up to
// replayed is known to hold everything up to p (see Position).
func (p Position) CoveredBy(tl uint32, replayed uint64) bool {
	return tl >= p.Timeline && replayed >= p.LSN
}

// ParsePosition parses String's format.
func ParsePosition(s string) (Position, error) {
	tl, lsn, ok := strings.Cut(s, "/")
	if !ok {
		return Position{}, fmt.Errorf("position %q: want timeline/LSN", s)
	}
	t, err := strconv.ParseUint(tl, 10, 32)
	if err != nil || t == 0 {
		return Position{}, fmt.Errorf("position %q: bad timeline", s)
	}
	l, err := ParseLSN(lsn)
	if err != nil {
		return Position{}, fmt.Errorf("position %q: %w", s, err)
	}
	return Position{Timeline: uint32(t), LSN: l}, nil
}

// ParseLSN parses PostgreSQL's "16/B374D848" format.
func ParseLSN(s string) (uint64, error) {
	hi, lo, ok := strings.Cut(strings.TrimSpace(s), "/")
	if !ok || hi == "" || lo == "" || len(hi) > 8 || len(lo) > 8 {
		return 0, fmt.Errorf("LSN %q: want hi/lo in hex", s)
	}
	h, err := strconv.ParseUint(hi, 16, 32)
	if err != nil {
		return 0, fmt.Errorf("LSN %q: %w", s, err)
	}
	l, err := strconv.ParseUint(lo, 16, 32)
	if err != nil {
		return 0, fmt.Errorf("LSN %q: %w", s, err)
	}
	return h<<32 | l, nil
}

// Querier is what the position helpers need: a *pgx.Conn, *pgxpool.Pool
// or pgx.Tx.
type Querier interface {
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// ErrInRecovery is returned by LeaderPosition on a standby.
var ErrInRecovery = errors.New("the server is a standby (in recovery): positions are minted on the leader")

// leaderPositionSQL reads the current WAL insert position and its
// timeline (the first 8 hex digits of the segment name) in one round
// trip; on a standby it returns NULLs instead of failing.
const leaderPositionSQL = `SELECT CASE WHEN pg_is_in_recovery() THEN NULL ELSE pg_current_wal_lsn()::text END,
 CASE WHEN pg_is_in_recovery() THEN NULL ELSE substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8) END`

// LeaderPosition returns the leader's current Position. Any role may call
// it (the functions it uses are granted to PUBLIC).
func LeaderPosition(ctx context.Context, q Querier) (Position, error) {
	var lsn, tl *string
	if err := q.QueryRow(ctx, leaderPositionSQL).Scan(&lsn, &tl); err != nil {
		return Position{}, fmt.Errorf("reading the leader's WAL position: %w", err)
	}
	if lsn == nil || tl == nil {
		return Position{}, ErrInRecovery
	}
	l, err := ParseLSN(*lsn)
	if err != nil {
		return Position{}, err
	}
	t, err := strconv.ParseUint(*tl, 16, 32)
	if err != nil {
		return Position{}, fmt.Errorf("timeline %q: %w", *tl, err)
	}
	return Position{Timeline: uint32(t), LSN: l}, nil
}

// ReplayLSN returns how far a standby has replayed (on a primary, its
// current write position: a primary holds everything it wrote).
func ReplayLSN(ctx context.Context, q Querier) (uint64, error) {
	var s *string
	err := q.QueryRow(ctx, `SELECT COALESCE(pg_last_wal_replay_lsn(), CASE WHEN pg_is_in_recovery() THEN NULL ELSE pg_current_wal_lsn() END)::text`).Scan(&s)
	if err != nil {
		return 0, fmt.Errorf("reading the replay position: %w", err)
	}
	if s == nil {
		return 0, nil
	}
	return ParseLSN(*s)
}

// WaitReplayed polls ReplayLSN every poll until it reaches lsn or ctx
// ends (give ctx a deadline: the wait must be bounded).
func WaitReplayed(ctx context.Context, q Querier, lsn uint64, poll time.Duration) error {
	if poll <= 0 {
		poll = 2 * time.Millisecond
	}
	t := time.NewTicker(poll)
	defer t.Stop()
	for {
		got, err := ReplayLSN(ctx, q)
		if err != nil {
			return err
		}
		if got >= lsn {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for replay of %X/%X: %w", lsn>>32, uint32(lsn), ctx.Err())
		case <-t.C:
		}
	}
}
