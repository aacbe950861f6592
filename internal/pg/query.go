package pg

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// Status is a snapshot of the running server.
type Status struct {
	Running    bool
	InRecovery bool
	// Timeline: on a primary the WAL insertion timeline; on a replica the
	// highest of the walreceiver's received_tli and the control file's
	// checkpoint / min-recovery timelines.
	Timeline         uint32
	CurrentLSN       uint64    // primary: pg_current_wal_lsn(); replica: max(receive, replay)
	ReceiveLSN       uint64    // replica: pg_last_wal_receive_lsn() (0 if none)
	ReplayLSN        uint64    // replica: pg_last_wal_replay_lsn()
	ReplayTime       time.Time // pg_last_xact_replay_timestamp() (zero if none)
	Streaming        bool      // pg_stat_wal_receiver.status = 'streaming'
	UpstreamHost     string    // pg_stat_wal_receiver.sender_host
	UpstreamPort     int       // pg_stat_wal_receiver.sender_port
	ReceivedTLI      uint32    // pg_stat_wal_receiver.received_tli
	SyncStandbyNames string    // current synchronous_standby_names
	ReadOnly         bool      // default_transaction_read_only
}

// Control is the part of pg_controldata the agent uses.
type Control struct {
	State         string // "Database cluster state", e.g. "in production", "shut down"
	Timeline      uint32 // "Latest checkpoint's TimeLineID"
	CheckpointLSN uint64 // "Latest checkpoint location"
	REDOLSN       uint64 // "Latest checkpoint's REDO location"
	SystemID      string // "Database system identifier": set by initdb, kept by every clone
}

// Standby is one row of pg_stat_replication.
type Standby struct {
	AppName    string
	State      string // startup, catchup, streaming, backup, stopping
	SyncState  string // async, potential, sync, quorum
	SentLSN    uint64
	FlushLSN   uint64
	ReplayLSN  uint64
	ReplyTime  time.Time
	ClientAddr string
}

type rowScanner interface{ Scan(dest ...any) error }

// connString is the local superuser connection over the unix socket.
func (s *Server) connString() string {
	return fmt.Sprintf("host=%s port=%d user=postgres dbname=postgres sslmode=disable connect_timeout=1 application_name=petrel",
		quoteConnValue(s.opts.RunDir), s.opts.Port)
}

// lockConn locks s.mu and returns the cached connection, connecting when
// needed. On error s.mu is unlocked.
func (s *Server) lockConn(ctx context.Context) (*pgx.Conn, error) {
	s.mu.Lock()
	if s.conn != nil && !s.conn.IsClosed() {
		return s.conn, nil
	}
	s.conn = nil
	if !s.Running() {
		s.mu.Unlock()
		return nil, errors.New("connecting to local postgres: server is not running")
	}
	cfg, err := pgx.ParseConfig(s.connString())
	if err != nil {
		s.mu.Unlock()
		return nil, fmt.Errorf("connecting to local postgres: %w", err)
	}
	cfg.ConnectTimeout = time.Second
	cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	c, err := pgx.ConnectConfig(cctx, cfg)
	if err != nil {
		s.mu.Unlock()
		return nil, fmt.Errorf("connecting to local postgres: %w", err)
	}
	s.conn = c
	return c, nil
}

// unlockConn releases s.mu, dropping the connection after an error that
// is not a plain SQL error.
func (s *Server) unlockConn(err error) {
	var pgErr *pgconn.PgError
	if err != nil && !errors.As(err, &pgErr) && s.conn != nil {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		s.conn.Close(ctx)
		cancel()
		s.conn = nil
	}
	s.mu.Unlock()
}

// Close closes the cached connection.
func (s *Server) Close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.conn != nil {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		s.conn.Close(ctx)
		cancel()
		s.conn = nil
	}
}

// Exec runs sql as superuser on the local socket. Without args it uses the
// simple protocol, so sql may hold several statements.
func (s *Server) Exec(ctx context.Context, sql string, args ...any) error {
	c, err := s.lockConn(ctx)
	if err != nil {
		return err
	}
	_, err = c.Exec(ctx, sql, args...)
	s.unlockConn(err)
	if err != nil {
		return fmt.Errorf("executing SQL on local postgres: %w", err)
	}
	return nil
}

// Query runs sql as superuser on the local socket. The returned release
// function closes the rows and must be called (also after the rows are
// read); until then the cached connection is held and every other method
// that uses it blocks, so do not call them before releasing.
func (s *Server) Query(ctx context.Context, sql string, args ...any) (pgx.Rows, func(), error) {
	c, err := s.lockConn(ctx)
	if err != nil {
		return nil, func() {}, err
	}
	rows, err := c.Query(ctx, sql, args...)
	if err != nil {
		s.unlockConn(err)
		return nil, func() {}, fmt.Errorf("querying local postgres: %w", err)
	}
	var once sync.Once
	release := func() {
		once.Do(func() {
			rows.Close()
			s.unlockConn(rows.Err())
		})
	}
	return rows, release, nil
}

// queryRow runs a single-row query and scans it with scan.
func (s *Server) queryRow(ctx context.Context, scan func(rowScanner) error, sql string, args ...any) error {
	c, err := s.lockConn(ctx)
	if err != nil {
		return err
	}
	err = scan(c.QueryRow(ctx, sql, args...))
	s.unlockConn(err)
	return err
}

func parseNullLSN(p *string) (uint64, error) {
	if p == nil {
		return 0, nil
	}
	return ParseLSN(*p)
}

const statusSQL = `
SELECT pg_is_in_recovery(),
       current_setting('synchronous_standby_names'),
       current_setting('default_transaction_read_only')::bool,
       CASE WHEN pg_is_in_recovery() THEN NULL ELSE pg_current_wal_lsn()::text END,
       CASE WHEN pg_is_in_recovery() THEN NULL
            ELSE substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8) END,
       pg_last_wal_receive_lsn()::text,
       pg_last_wal_replay_lsn()::text,
       pg_last_xact_replay_timestamp(),
       (SELECT timeline_id FROM pg_control_checkpoint()),
       (SELECT min_recovery_end_timeline FROM pg_control_recovery()),
       (SELECT status FROM pg_stat_wal_receiver),
       (SELECT sender_host FROM pg_stat_wal_receiver),
       (SELECT sender_port FROM pg_stat_wal_receiver),
       (SELECT received_tli FROM pg_stat_wal_receiver),
       (SELECT max(substr(name, 1, 8)) FROM pg_ls_waldir() WHERE name ~ '^[0-9A-F]{24}$')`

// Status inspects the server. When it is not running it returns
// Status{Running: false} and nil; when it runs but cannot be queried
// (e.g. still starting) it returns Status{Running: true} and the error.
func (s *Server) Status(ctx context.Context) (Status, error) {
	if !s.Running() {
		return Status{}, nil
	}
	st := Status{Running: true}
	var (
		curLSN, walTLI, recvLSN, replayLSN, wrStatus, sender, segTLI *string
		replayTime                                                   *time.Time
		ckptTLI, minRecTLI, senderPort, recvTLI                      *int64
	)
	err := s.queryRow(ctx, func(r rowScanner) error {
		return r.Scan(&st.InRecovery, &st.SyncStandbyNames, &st.ReadOnly, &curLSN, &walTLI,
			&recvLSN, &replayLSN, &replayTime, &ckptTLI, &minRecTLI, &wrStatus, &sender, &senderPort, &recvTLI, &segTLI)
	}, statusSQL)
	if err != nil {
		return st, fmt.Errorf("querying postgres status: %w", err)
	}
	if st.ReceiveLSN, err = parseNullLSN(recvLSN); err != nil {
		return st, err
	}
	if st.ReplayLSN, err = parseNullLSN(replayLSN); err != nil {
		return st, err
	}
	if replayTime != nil {
		st.ReplayTime = *replayTime
	}
	if wrStatus != nil {
		// A receiver asked to stop ("stopping") or restarting on an
		// open connection may still receive WAL and confirm flushes to
		// its upstream (which then acknowledges commits): its position
		// is not final yet, so it counts as streaming.
		switch *wrStatus {
		case "streaming", "stopping", "restarting":
			st.Streaming = true
		}
	}
	if sender != nil {
		st.UpstreamHost = *sender
	}
	if senderPort != nil {
		st.UpstreamPort = int(*senderPort)
	}
	if recvTLI != nil {
		st.ReceivedTLI = uint32(*recvTLI)
	}
	if !st.InRecovery {
		if st.CurrentLSN, err = parseNullLSN(curLSN); err != nil {
			return st, err
		}
		if walTLI != nil {
			tli, err := strconv.ParseUint(*walTLI, 16, 32)
			if err != nil {
				return st, fmt.Errorf("parsing timeline from WAL file name %q: %w", *walTLI, err)
			}
			st.Timeline = uint32(tli)
		}
	} else {
		st.CurrentLSN = max(st.ReceiveLSN, st.ReplayLSN)
		st.Timeline = st.ReceivedTLI
		for _, p := range []*int64{ckptTLI, minRecTLI} {
			if p != nil && uint32(*p) > st.Timeline {
				st.Timeline = uint32(*p)
			}
		}
		// Once the receiver has stopped (a candidate freezing its position
		// in an election) received_tli is gone and the checkpoint's
		// timeline may be older than the WAL received since: the newest
		// WAL segment's timeline is the one the standby is on.
		if segTLI != nil {
			if tli, err := strconv.ParseUint(*segTLI, 16, 32); err == nil && uint32(tli) > st.Timeline {
				st.Timeline = uint32(tli)
			}
		}
	}
	return st, nil
}

// Control runs pg_controldata; it works with the server stopped.
func (s *Server) Control(ctx context.Context) (Control, error) {
	out, err := s.run(ctx, "reading control file", nil, "pg_controldata", "-D", s.opts.DataDir)
	if err != nil {
		return Control{}, err
	}
	return parseControl(out)
}

func parseControl(out string) (Control, error) {
	var c Control
	found := 0
	for line := range strings.SplitSeq(out, "\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		v = strings.TrimSpace(v)
		var err error
		switch strings.TrimSpace(k) {
		case "Database cluster state":
			c.State = v
			found++
		case "Latest checkpoint's TimeLineID":
			var n uint64
			n, err = strconv.ParseUint(v, 10, 32)
			c.Timeline = uint32(n)
			found++
		case "Latest checkpoint location":
			c.CheckpointLSN, err = ParseLSN(v)
			found++
		case "Latest checkpoint's REDO location":
			c.REDOLSN, err = ParseLSN(v)
			found++
		case "Database system identifier":
			c.SystemID = v
		}
		if err != nil {
			return c, fmt.Errorf("parsing pg_controldata line %q: %w", line, err)
		}
	}
	if found < 4 {
		return c, fmt.Errorf("parsing pg_controldata: expected fields missing in output: %s", tail(out, 512))
	}
	return c, nil
}

// Replication lists pg_stat_replication (walsenders, including
// pg_basebackup's with State "backup").
func (s *Server) Replication(ctx context.Context) ([]Standby, error) {
	rows, release, err := s.Query(ctx, `
SELECT coalesce(application_name, ''), coalesce(state, ''), coalesce(sync_state, ''),
       sent_lsn::text, flush_lsn::text, replay_lsn::text, reply_time,
       coalesce(host(client_addr), '')
FROM pg_stat_replication ORDER BY application_name`)
	if err != nil {
		return nil, fmt.Errorf("listing standbys: %w", err)
	}
	defer release()
	var res []Standby
	for rows.Next() {
		var (
			sb                  Standby
			sent, flush, replay *string
			reply               *time.Time
		)
		if err := rows.Scan(&sb.AppName, &sb.State, &sb.SyncState, &sent, &flush, &replay, &reply, &sb.ClientAddr); err != nil {
			return nil, fmt.Errorf("listing standbys: %w", err)
		}
		if sb.SentLSN, err = parseNullLSN(sent); err != nil {
			return nil, err
		}
		if sb.FlushLSN, err = parseNullLSN(flush); err != nil {
			return nil, err
		}
		if sb.ReplayLSN, err = parseNullLSN(replay); err != nil {
			return nil, err
		}
		if reply != nil {
			sb.ReplyTime = *reply
		}
		res = append(res, sb)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("listing standbys: %w", err)
	}
	return res, nil
}

// SetSynchronousStandbys runs ALTER SYSTEM SET synchronous_standby_names
// (value may be empty) and reloads the configuration.
func (s *Server) SetSynchronousStandbys(ctx context.Context, value string) error {
	if err := s.Exec(ctx, "ALTER SYSTEM SET synchronous_standby_names = "+quoteLiteral(value)); err != nil {
		return fmt.Errorf("setting synchronous_standby_names: %w", err)
	}
	if err := s.Exec(ctx, "SELECT pg_reload_conf()"); err != nil {
		return fmt.Errorf("setting synchronous_standby_names: %w", err)
	}
	s.log.Info("set synchronous_standby_names", "value", value)
	return nil
}

// Slots lists the physical replication slots.
func (s *Server) Slots(ctx context.Context) ([]string, error) {
	rows, release, err := s.Query(ctx,
		"SELECT slot_name::text FROM pg_replication_slots WHERE slot_type = 'physical' ORDER BY 1")
	if err != nil {
		return nil, fmt.Errorf("listing slots: %w", err)
	}
	defer release()
	names, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("listing slots: %w", err)
	}
	return names, nil
}

// CreateSlot creates a physical slot that reserves WAL immediately; an
// existing slot is fine.
func (s *Server) CreateSlot(ctx context.Context, name string) error {
	err := s.Exec(ctx, `SELECT pg_create_physical_replication_slot($1, true)
WHERE NOT EXISTS (SELECT 1 FROM pg_replication_slots WHERE slot_name = $1)`, name)
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == "42710" { // duplicate_object
		return nil
	}
	if err != nil {
		return fmt.Errorf("creating slot %s: %w", name, err)
	}
	return nil
}

// DropSlot drops a slot; a missing slot is fine. An active slot's
// walsender is terminated first (and again while it stays active).
func (s *Server) DropSlot(ctx context.Context, name string) error {
	for attempt := 0; ; attempt++ {
		var (
			exists bool
			pid    *int64
		)
		err := s.queryRow(ctx, func(r rowScanner) error { return r.Scan(&exists, &pid) },
			`SELECT count(*) > 0, max(active_pid) FROM pg_replication_slots WHERE slot_name = $1`, name)
		if err != nil {
			return fmt.Errorf("dropping slot %s: %w", name, err)
		}
		if !exists {
			return nil
		}
		if pid != nil {
			if err := s.Exec(ctx, "SELECT pg_terminate_backend($1::int)", *pid); err != nil {
				return fmt.Errorf("dropping slot %s: terminating walsender: %w", name, err)
			}
		}
		err = s.Exec(ctx, `SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = $1`, name)
		var pgErr *pgconn.PgError
		if err == nil || errors.As(err, &pgErr) && pgErr.Code == "42704" { // undefined_object
			s.log.Info("dropped slot", "slot", name)
			return nil
		}
		if !errors.As(err, &pgErr) || pgErr.Code != "55006" || attempt >= 50 { // object_in_use
			return fmt.Errorf("dropping slot %s: %w", name, err)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("dropping slot %s: %w", name, ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
}
