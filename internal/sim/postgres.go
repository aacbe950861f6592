package sim

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/petrel-db/petrel/internal/engine"
)

// walEntry is one WAL record. Record i of a history has LSN i+1. tl is the
// timeline Postgres shows; branch is the simulation's own identity of the
// history the record was written on: Postgres gives two independent
// promotions from timeline 1 the same timeline 2, but their records
// differ, and the invariant checks must tell them apart.
type walEntry struct {
	tl     uint32
	branch int
}

// Postgres is one node's simulated server and data directory.
//
// Model: WAL is a list of records; a standby's WAL is always a prefix of
// (or diverged from) its upstream's; streaming copies the upstream's
// records past the common prefix in one tick. Received, flushed and
// replayed positions are one number. A commit is one record, written on
// the primary and acknowledged once the primary flushed it and, when
// synchronous_standby_names lists members, once k of them flushed it.
type Postgres struct {
	id string

	initialized bool // a data directory exists
	signal      bool // standby.signal
	running     bool
	recovery    bool
	hung        bool // SIGSTOPped postmaster: answers nothing, sends nothing
	broken      bool // WAL past the last checkpoint unusable: cannot stream until re-cloned
	walGone     bool // WAL from before a divergence removed: pg_rewind cannot find the common checkpoint
	// unstartable: pg_rewind ran against a source still promoting, which
	// left a minimum recovery point on the timeline the source was
	// leaving: every start fails ("requested timeline does not contain
	// minimum recovery point") until the directory is wiped.
	unstartable bool
	// upstreamLacks: the WAL this standby needs next is gone from every
	// upstream (removed past wal_keep_size without a slot holding it):
	// its receiver is told "requested WAL segment ... has already been
	// removed" on every retry, until it is re-cloned.
	upstreamLacks bool
	wal           []walEntry
	conninfo      string // primary_conninfo: the member it streams from ("" none)
	syncValue     string // synchronous_standby_names
	readOnly      bool
	diskFree      int64
	slots         []string
	pending       []uint64 // commits written, not yet acknowledged
	starts        int      // how many times it started (a restart drops its connections)
	// promotePending: promote was requested while the server was stopped
	// (SIGSTOP); it promotes when it runs again.
	promotePending bool

	recv receiver
}

// receiver is the WAL receiver's state (pg_stat_wal_receiver).
type receiver struct {
	from        string        // upstream of the open connection ("" none)
	lastContact time.Duration // last time the upstream sent anything
	// stoppingFrom/Until: after primary_conninfo changed, the old
	// connection is "stopping" for a moment; it still receives and
	// confirms flushes (a fault-injection finding), so it counts as
	// streaming.
	stoppingFrom  string
	stoppingUntil time.Duration
	// blipUntil: a connection attempt that failed after a moment
	// (diverged or unusable WAL) shows "streaming" until then only.
	blipUntil   time.Duration
	nextAttempt time.Duration
	upStart     int // the upstream's start count when the connection opened
}

func (p *Postgres) lsn() uint64 { return uint64(len(p.wal)) }

func (p *Postgres) timeline() uint32 {
	if len(p.wal) == 0 {
		return 0
	}
	return p.wal[len(p.wal)-1].tl
}

func (p *Postgres) writable() bool { return p.running && !p.recovery }

// status mirrors pg.Status for what the agent reads.
type pgStatus struct {
	Running, InRecovery bool
	Timeline            uint32
	CurrentLSN          uint64
	Streaming           bool
	SyncStandbyNames    string
}

// compatible says whether a standby with WAL mine can stream from an
// upstream with WAL up: the shorter is a prefix of the longer. Records
// with the same branch at the same LSN share everything before them.
func compatible(mine, up []walEntry) bool {
	n := min(len(mine), len(up))
	return n == 0 || mine[n-1].branch == up[n-1].branch
}

// commonPrefix is the length of the history two WALs share.
func commonPrefix(a, b []walEntry) int {
	n := min(len(a), len(b))
	for n > 0 && a[n-1].branch != b[n-1].branch {
		n--
	}
	return n
}

// parseSync reads synchronous_standby_names as the engine writes it,
// `ANY k ("a", "b")`, into k and the names (a copy of the agent's
// parseSyncNames, with the quorum kept).
func parseSync(v string) (k int, names []string) {
	i, j := strings.IndexByte(v, '('), strings.LastIndexByte(v, ')')
	if i < 0 || j < i {
		v = strings.TrimSpace(v)
		if v == "" {
			return 0, nil
		}
		return 1, []string{strings.Trim(v, `"`)}
	}
	k = 1
	if f := strings.Fields(v[:i]); len(f) == 2 {
		if n, err := strconv.Atoi(f[1]); err == nil {
			k = n
		}
	}
	for _, p := range strings.Split(v[i+1:j], ",") {
		if p = strings.Trim(strings.TrimSpace(p), `"`); p != "" {
			names = append(names, p)
		}
	}
	return k, names
}

func (p *Postgres) start() error {
	if !p.initialized {
		return fmt.Errorf("no data directory")
	}
	if p.unstartable {
		return fmt.Errorf("requested timeline does not contain minimum recovery point")
	}
	p.running, p.recovery, p.hung = true, p.signal, false
	p.starts++
	p.recv = receiver{}
	return nil
}

// stop ends the server. Pending commits are never acknowledged: their
// clients see the connection drop.
func (p *Postgres) stop() {
	p.running, p.recovery, p.hung, p.promotePending = false, false, false, false
	p.pending = nil
	p.recv = receiver{}
}

func (p *Postgres) configureStandby(up string) {
	p.signal = true
	p.conninfo = up
}

func (p *Postgres) configurePrimary() {
	p.signal = false
	p.conninfo = ""
}

// reload applies a changed primary_conninfo: the running receiver stops,
// and for a moment still counts as streaming.
func (p *Postgres) reload(now time.Duration) {
	if p.recv.from != "" && p.recv.from != p.conninfo {
		p.recv.stoppingFrom, p.recv.stoppingUntil = p.recv.from, now+Tick
		p.recv.from = ""
	}
}

func (p *Postgres) dataRole() engine.DataRole {
	switch {
	case !p.initialized:
		return engine.DataEmpty
	case p.running && p.recovery, !p.running && p.signal:
		return engine.DataStandby
	}
	return engine.DataPrimary
}

func (p *Postgres) wipe() {
	p.initialized, p.signal, p.wal, p.broken, p.walGone, p.upstreamLacks, p.unstartable, p.conninfo, p.slots = false, false, nil, false, false, false, false, "", nil
}

func (p *Postgres) syncNamesList() []string {
	_, names := parseSync(p.syncValue)
	return names
}

func (p *Postgres) hasSlot(s string) bool { return slices.Contains(p.slots, s) }
