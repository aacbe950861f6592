package backup

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/petrel-db/petrel/internal/backupstore"
	"github.com/petrel-db/petrel/internal/engine"
	"github.com/petrel-db/petrel/internal/model"
	"github.com/prometheus/client_golang/prometheus"
)

// The archiver, in every agent. Postgres runs with archive_mode =
// always and basic_archive, which copies each completed WAL file (fsynced,
// never replacing a different one) into the node's spool; for Postgres it
// is then archived. What happens next is engine.DecideArchive's:
//
//   - push (the leader with its lease): upload each spooled file, oldest
//     first, compressed and checksummed, never overwriting a different
//     copy, then delete it from the spool;
//   - keep (every other member): delete a spooled file only once the
//     archive holds an identical copy. A standby therefore still holds
//     every segment the leader has not archived yet, and when it is
//     promoted it pushes them: the segments a dead leader never archived
//     are not lost with it (the failover gap of archive_mode = on, where a
//     standby counts streamed WAL as archived).
//
// After a promotion (or this node's first round as the pushing leader)
// and once its spool is drained, the leader checks that the archive's
// chain is continuous up to now and reports gaps loudly.

// ArchivePG is what the archiver needs of the local Postgres.
type ArchivePG interface {
	// SetArchive turns spooling on or off (and sets archive_timeout).
	SetArchive(ctx context.Context, on bool, timeout time.Duration) (bool, error)
}

// ArchiverConfig wires an Archiver.
type ArchiverConfig struct {
	Node, Cluster string
	Spool         string // the spool directory (pg.Options.ArchiveDir)
	WALDir        string // PGDATA/pg_wal (old-timeline segments after a promotion)
	PG            ArchivePG
	// Source reads the cluster's backup configuration; known is false
	// while the store's view is not current (then nothing changes).
	Source func() (cfg model.BackupConfig, ok, known bool, err error)
	// SystemID is the cluster's Postgres system identifier ("" until the
	// bootstrap is recorded): the store is claimed with it.
	SystemID    func() string
	Creds       backupstore.Credentials
	Log         *slog.Logger
	Metrics     *Metrics
	StepTimeout time.Duration // bound of one upload or store call (default 2 min)
	// Open opens a store (tests may swap it); default backupstore.Open.
	Open func(context.Context, model.BackupConfig, backupstore.Credentials) (backupstore.Store, error)
	// TakeBackup takes a base backup into st (from the freshest streaming
	// replica) for the schedule (model.BackupConfig.ScheduleSec) or a
	// request, telling progress (if not nil) how far it got; nil: this
	// member takes none.
	TakeBackup func(ctx context.Context, st backupstore.Store, progress func(Progress)) (Backup, error)
	// OnBackup, if set, is told how each backup ended (for the cluster's
	// events); what is "scheduled" or "requested by <who>".
	OnBackup func(b Backup, what string, err error)
	// RecordEvent, if set, records an event in the cluster's history
	// (what the admin API had the archiver do: a prune, a new
	// configuration).
	RecordEvent func(ctx context.Context, ev model.Event) error
}

// backupTimeout bounds one scheduled backup (and the prune after it).
const backupTimeout = 24 * time.Hour

// backupResult is how a backup's goroutine ended.
type backupResult struct {
	b        Backup
	err      error
	pruned   PrunePlan
	pruneErr error
}

// BackupState is this member's base backups as GET
// /api/v1/backups/running shows them: `petrel backup create` follows its
// request through it.
type BackupState struct {
	// Archiving: this member pushes WAL (it takes the backups).
	Archiving bool `json:"archiving"`
	// Requested is the newest request's number (RequestBackup; they
	// restart from 1 with the agent).
	Requested uint64         `json:"requested"`
	Running   *RunningBackup `json:"running,omitempty"`
	Last      *BackupOutcome `json:"last,omitempty"`
}

// RunningBackup is the base backup being taken now.
type RunningBackup struct {
	// Request is the newest request it serves (0: a scheduled one).
	Request uint64    `json:"request"`
	ID      string    `json:"id,omitempty"` // "" until pg_basebackup started
	Source  string    `json:"source,omitempty"`
	Role    string    `json:"role,omitempty"` // the source's role
	Read    int64     `json:"read"`
	Total   int64     `json:"total"` // the server's estimate (0: not yet)
	Started time.Time `json:"started"`
}

// BackupOutcome is how the last base backup ended.
type BackupOutcome struct {
	Request  uint64    `json:"request"`
	Backup   *Backup   `json:"backup,omitempty"`
	Error    string    `json:"error,omitempty"`
	Finished time.Time `json:"finished"`
}

// Archiver moves WAL from the spool to the backup store.
type Archiver struct {
	c    ArchiverConfig
	kick chan struct{}

	mu        sync.Mutex // guards the fields below
	plan      engine.ArchivePlan
	timeline  uint32
	checked   uint32 // timeline whose chain was checked
	spooled   int
	uploading string
	upSince   time.Time
	status    model.ArchiveStatus

	// Used by Run's goroutine only.
	st        backupstore.Store
	stCfg     model.BackupConfig
	claimedAt time.Time
	keepSeen  map[string]time.Time // keep role: when each spooled file was last looked up
	loud      map[string]time.Time // when each loud error was last logged
	histories map[uint32][]HistoryEntry
	// historyWait: since when the chain check has waited for the current
	// timeline's history file to reach the archive.
	historyWait time.Time
	// catalogAt: when the pushing member last read the backup catalog
	// for RestoreFrom (a prune or a new backup by the CLI changes it).
	catalogAt time.Time
	// The schedule: whether the catalog was read since this member began
	// pushing, the newest complete backup's start, a scheduled backup
	// running (its goroutine reports on backupDone), the last attempt.
	catalogRead   bool
	newest        time.Time
	backupRunning bool
	lastAttempt   time.Time
	waitingSince  time.Time // due, waiting for a streaming replica
	backupDone    chan backupResult
	backupWhat    string // the running backup's: "scheduled" or "requested by ..."
	backups       sync.WaitGroup

	reqSeq atomic.Uint64 // RequestBackup's newest request number
	served uint64        // the newest request a started backup serves (Run's goroutine)

	bmu         sync.Mutex // guards the fields below
	requestedBy string     // who made the newest request
	running     *RunningBackup
	last        *BackupOutcome
}

// ErrNotArchiving: this member does not push WAL, so it takes no backup
// (the leader does).
var ErrNotArchiving = errors.New("this member does not archive: the leader takes backups")

// RequestBackup asks for a base backup now, outside the schedule, for
// by; only the pushing member takes it (within a second, or once the one
// running ended). The request's number is in BackupState once a backup
// serving it runs and ends.
func (a *Archiver) RequestBackup(by string) (uint64, error) {
	a.mu.Lock()
	role := a.plan.Role
	a.mu.Unlock()
	if role != engine.ArchivePush || a.c.TakeBackup == nil {
		return 0, ErrNotArchiving
	}
	a.bmu.Lock()
	n := a.reqSeq.Add(1)
	a.requestedBy = by
	a.bmu.Unlock()
	select {
	case a.kick <- struct{}{}:
	default:
	}
	return n, nil
}

// Backups is this member's base backups: the one running, how the last
// ended, the newest request.
func (a *Archiver) Backups() BackupState {
	a.mu.Lock()
	archiving := a.plan.Role == engine.ArchivePush
	a.mu.Unlock()
	a.bmu.Lock()
	defer a.bmu.Unlock()
	s := BackupState{Archiving: archiving, Requested: a.reqSeq.Load()}
	if a.running != nil {
		r := *a.running
		s.Running = &r
	}
	if a.last != nil {
		l := *a.last
		s.Last = &l
	}
	return s
}

// ListBackups reads the backup catalog through a store of its own (the
// round's is not shared across goroutines).
func (a *Archiver) ListBackups(ctx context.Context) ([]Backup, error) {
	st, _, err := a.openOwn(ctx)
	if err != nil {
		return nil, err
	}
	defer st.Close()
	return ListBackups(ctx, st)
}

// catalogEvery is how often the pushing member re-reads the backup
// catalog, so that /status' recoverability window follows prunes and
// backups made elsewhere (one List and a manifest read per backup).
var catalogEvery = 5 * time.Minute

// historyGrace is how long a chain check waits for a new timeline's
// history file before reporting it missing.
const historyGrace = 30 * time.Second

// NewArchiver builds an archiver; Run drives it.
func NewArchiver(c ArchiverConfig) *Archiver {
	if c.StepTimeout <= 0 {
		c.StepTimeout = 2 * time.Minute
	}
	if c.Open == nil {
		c.Open = backupstore.Open
	}
	if c.Log == nil {
		c.Log = slog.New(slog.DiscardHandler)
	}
	return &Archiver{
		c: c, kick: make(chan struct{}, 1),
		plan:      engine.ArchivePlan{Role: engine.ArchiveOff},
		keepSeen:  map[string]time.Time{},
		loud:      map[string]time.Time{},
		histories: map[uint32][]HistoryEntry{},
	}
}

// Facts are the archiver's inputs to engine.DecideArchive.
func (a *Archiver) Facts() engine.ArchiveFacts {
	_, ok, _, _ := a.c.Source()
	a.mu.Lock()
	defer a.mu.Unlock()
	return engine.ArchiveFacts{Configured: ok, Spooled: a.spooled, CheckedTimeline: a.checked}
}

// Update hands the archiver the engine's latest decision and the local
// timeline (the agent calls it every round).
func (a *Archiver) Update(plan engine.ArchivePlan, timeline uint32) {
	a.mu.Lock()
	changed := plan.Role != a.plan.Role || plan.CheckChain != a.plan.CheckChain || timeline != a.timeline
	a.plan, a.timeline = plan, timeline
	a.status.Role = string(plan.Role)
	a.mu.Unlock()
	if changed {
		select {
		case a.kick <- struct{}{}:
		default:
		}
	}
}

// Status is this member's archiving for /status.
func (a *Archiver) Status() *model.ArchiveStatus {
	a.mu.Lock()
	defer a.mu.Unlock()
	s := a.status
	s.Spooled = a.spooled
	if a.uploading != "" {
		s.Uploading = a.uploading
		s.UploadingFor = time.Since(a.upSince).Seconds()
	}
	return &s
}

// Run archives until ctx ends.
func (a *Archiver) Run(ctx context.Context) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	defer func() {
		a.backups.Wait() // a running backup stops with ctx
		if a.st != nil {
			a.st.Close()
		}
	}()
	for {
		a.round(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-a.kick:
		}
	}
}

func (a *Archiver) round(ctx context.Context) {
	cfg, ok, known, err := a.c.Source()
	if err != nil {
		a.fail("reading the backup configuration", err)
		return
	}
	if !known {
		return
	}
	timeout := time.Duration(cfg.ArchiveTimeoutSec) * time.Second
	if timeout <= 0 {
		timeout = 60 * time.Second
	}
	// Every round: cheap (the file is compared first), and it puts back
	// this node's own settings after a clone brought its source's.
	sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	changed, err := a.c.PG.SetArchive(sctx, ok, timeout)
	cancel()
	if err != nil {
		a.fail("configuring Postgres' archiving", err)
		return
	}
	if changed {
		a.c.Log.Info("archiving settings changed", "spool", ok, "archive_timeout", timeout)
	}
	names, err := a.spoolFiles()
	if err != nil {
		a.fail("reading the archive spool", err)
		return
	}
	if !ok {
		// No backup store: what the spool holds has nowhere to go.
		for _, n := range names {
			_ = os.Remove(filepath.Join(a.c.Spool, n))
		}
		a.setSpooled(0)
		a.closeStore()
		return
	}
	if err := a.openStore(ctx, cfg); err != nil {
		a.fail("opening the backup store", err)
		return
	}
	a.mu.Lock()
	plan, tli := a.plan, a.timeline
	a.mu.Unlock()
	switch plan.Role {
	case engine.ArchivePush:
		names = a.push(ctx, names, tli)
	case engine.ArchiveKeep:
		names = a.keep(ctx, names, tli)
	}
	a.setSpooled(len(names))
	a.collectBackup()
	if plan.Role != engine.ArchivePush {
		a.catalogRead = false
	}
	if plan.Role == engine.ArchivePush && a.checked == tli && time.Since(a.catalogAt) >= catalogEvery {
		a.refreshRestoreFrom(ctx)
	}
	if plan.Role == engine.ArchivePush && a.c.TakeBackup != nil {
		bp := engine.DecideBackup(engine.BackupInput{
			Pushing: true, Every: time.Duration(cfg.ScheduleSec) * time.Second, CatalogRead: a.catalogRead,
			Newest: a.newest, Running: a.backupRunning, LastAttempt: a.lastAttempt,
			SourceReady: plan.BackupSource, WaitingSince: a.waitingSince, Now: time.Now(),
		})
		switch {
		case a.reqSeq.Load() > a.served && !a.backupRunning:
			a.bmu.Lock()
			n, by := a.reqSeq.Load(), a.requestedBy
			a.bmu.Unlock()
			a.served = n
			a.startBackup(ctx, cfg, "requested by "+by, n)
		case bp.Waiting && a.waitingSince.IsZero():
			a.waitingSince = time.Now()
			a.c.Log.Info("a scheduled base backup is due", "why", bp.Reason)
		case bp.Start:
			a.waitingSince = time.Time{}
			a.startBackup(ctx, cfg, bp.Reason, 0)
		case !bp.Waiting:
			a.waitingSince = time.Time{}
		}
	}
	if plan.Role == engine.ArchivePush && plan.CheckChain && len(names) == 0 && tli > 0 {
		// First the old-timeline segments pg_wal holds that nothing
		// marked for archiving; the chain is checked once they are in.
		n, err := a.spoolOldTimeline(ctx, tli)
		switch {
		case err != nil:
			a.fail("looking for unarchived old-timeline WAL", err)
		case n > 0:
			a.c.Log.Info("spooled old-timeline segments from pg_wal that were never archived", "segments", n, "timeline", tli)
			a.setSpooled(n)
		default:
			a.checkChain(ctx, tli)
		}
	}
}

func (a *Archiver) setSpooled(n int) {
	a.mu.Lock()
	a.spooled = n
	a.mu.Unlock()
	if a.c.Metrics != nil {
		a.c.Metrics.spooled.Set(float64(n))
	}
}

// spoolFiles lists the spool's WAL files in archiving order (names sort
// by timeline, then position); basic_archive's temporary files and
// anything else are ignored.
func (a *Archiver) spoolFiles() ([]string, error) {
	ents, err := os.ReadDir(a.c.Spool)
	if err != nil {
		return nil, err
	}
	var names []string
	for _, e := range ents {
		if e.Type().IsRegular() && ValidWALName(e.Name()) {
			names = append(names, e.Name())
		}
	}
	sort.Strings(names)
	return names, nil
}

func (a *Archiver) openStore(ctx context.Context, cfg model.BackupConfig) error {
	if a.st != nil && a.stCfg == cfg && !a.claimedAt.IsZero() {
		return nil
	}
	if a.st != nil && a.stCfg != cfg {
		a.closeStore()
	}
	if a.st == nil {
		st, err := a.c.Open(ctx, cfg, a.c.Creds)
		if err != nil {
			return err
		}
		a.st, a.stCfg = st, cfg
		a.mu.Lock()
		a.status.Store = st.String()
		a.mu.Unlock()
	}
	sys := a.c.SystemID()
	if sys == "" {
		return errors.New("the cluster's system id is not recorded yet")
	}
	cctx, cancel := withTimeout(ctx, a.c.StepTimeout)
	defer cancel()
	if _, err := backupstore.Claim(cctx, a.st, a.c.Cluster, sys); err != nil {
		if errors.Is(err, backupstore.ErrForeign) {
			a.loudly("foreign", "REFUSING the backup store: it holds another cluster's archive; nothing is archived", err)
		}
		return err
	}
	a.claimedAt = time.Now()
	return nil
}

func (a *Archiver) closeStore() {
	if a.st != nil {
		a.st.Close()
	}
	a.st, a.stCfg, a.claimedAt = nil, model.BackupConfig{}, time.Time{}
}

// push uploads names in order, stopping at the first failure; it returns
// what is left in the spool.
func (a *Archiver) push(ctx context.Context, names []string, tli uint32) []string {
	for i, n := range names {
		path := filepath.Join(a.c.Spool, n)
		if a.offPath(ctx, n, tli) {
			a.c.Log.Warn("dropping a spooled WAL file off the cluster's timeline path (a diverged branch)", "file", n, "timeline", tli)
			_ = os.Remove(path)
			continue
		}
		a.mu.Lock()
		a.uploading, a.upSince = n, time.Now()
		a.mu.Unlock()
		cctx, cancel := withTimeout(ctx, a.c.StepTimeout)
		start := time.Now()
		res, err := Push(cctx, a.st, n, path, a.c.Node)
		cancel()
		a.mu.Lock()
		a.uploading = ""
		a.mu.Unlock()
		if err != nil {
			if errors.Is(err, ErrDiverged) {
				if a.c.Metrics != nil {
					a.c.Metrics.diverged.Inc()
				}
				a.loudly("diverged:"+n, "REFUSING to overwrite an archived WAL file that differs: two primaries wrote the same timeline (split brain) or the archive was changed", err)
			}
			a.fail("archiving "+n, err)
			return names[i:]
		}
		if err := os.Remove(path); err != nil {
			a.fail("removing archived "+n+" from the spool", err)
			return names[i:]
		}
		if a.c.Metrics != nil {
			a.c.Metrics.pushed.Inc()
			a.c.Metrics.bytes.Add(float64(res.Bytes))
			a.c.Metrics.seconds.Observe(time.Since(start).Seconds())
			a.c.Metrics.last.SetToCurrentTime()
		}
		a.mu.Lock()
		a.status.LastArchived, a.status.LastAt = n, time.Now().UTC()
		a.mu.Unlock()
	}
	return nil
}

// keep drops the spooled files the archive already holds identically.
// Each file is looked up at most every 5 s, 64 per round.
func (a *Archiver) keep(ctx context.Context, names []string, tli uint32) []string {
	var left []string
	looked := 0
	now := time.Now()
	for _, n := range names {
		path := filepath.Join(a.c.Spool, n)
		if looked >= 64 || now.Sub(a.keepSeen[n]) < 5*time.Second {
			left = append(left, n)
			continue
		}
		looked++
		a.keepSeen[n] = now
		if a.offPath(ctx, n, tli) {
			a.c.Log.Info("dropping a spooled WAL file off the cluster's timeline path (a diverged branch)", "file", n, "timeline", tli)
			_ = os.Remove(path)
			delete(a.keepSeen, n)
			continue
		}
		cctx, cancel := withTimeout(ctx, a.c.StepTimeout)
		same, err := Archived(cctx, a.st, n, path)
		cancel()
		switch {
		case errors.Is(err, ErrDiverged):
			if a.c.Metrics != nil {
				a.c.Metrics.diverged.Inc()
			}
			a.loudly("diverged:"+n, "this member's copy of an archived WAL file differs from the archive's (split brain?)", err)
			left = append(left, n)
		case err != nil:
			a.fail("looking up "+n+" in the archive", err)
			left = append(left, n)
		case same:
			_ = os.Remove(path)
			delete(a.keepSeen, n)
		default:
			left = append(left, n)
		}
	}
	return left
}

// offPath says whether spooled segment name lies on a timeline branch the
// cluster left (a former primary's WAL past the switch point, or a
// sibling timeline): no restore along the current timeline reads it.
// Unknown (the history not yet archived) is never off path.
func (a *Archiver) offPath(ctx context.Context, name string, tli uint32) bool {
	s, ok := ParseSegment(name)
	if !ok || tli <= 1 || s.TLI >= tli {
		return false
	}
	hist, ok := a.history(ctx, tli)
	if !ok {
		return false
	}
	for _, h := range hist {
		if h.TLI == s.TLI {
			return s.No >= SegmentOf(h.End)
		}
	}
	return true
}

func (a *Archiver) history(ctx context.Context, tli uint32) ([]HistoryEntry, bool) {
	if h, ok := a.histories[tli]; ok {
		return h, true
	}
	cctx, cancel := withTimeout(ctx, a.c.StepTimeout)
	defer cancel()
	data, err := FetchBytes(cctx, a.st, HistoryName(tli))
	if err != nil {
		return nil, false
	}
	h, err := ParseHistory(data)
	if err != nil {
		return nil, false
	}
	a.histories[tli] = h
	return h, true
}

// refreshRestoreFrom sets RestoreFrom to the start of the oldest complete
// base backup (zero when there is none): the earliest point a restore can
// reach. A failed read keeps the last value.
func (a *Archiver) refreshRestoreFrom(ctx context.Context) {
	cctx, cancel := withTimeout(ctx, a.c.StepTimeout)
	defer cancel()
	bs, err := ListBackups(cctx, a.st)
	if err != nil {
		a.fail("reading the backup catalog", err)
		return
	}
	a.catalogAt, a.catalogRead = time.Now(), true
	var from, newest time.Time
	for _, b := range bs { // oldest first
		if b.Status == "complete" {
			if from.IsZero() {
				from = b.StartTime.UTC()
			}
			newest = b.StartTime.UTC()
		}
	}
	a.newest = newest
	a.mu.Lock()
	a.status.RestoreFrom, a.status.LastBackup = from, newest
	a.mu.Unlock()
}

// startBackup takes a base backup in the background; a scheduled one
// (request 0) is followed by a prune with cfg's retention, a requested
// one (as `petrel backup create`) is not. Its result is collected by a
// later round.
func (a *Archiver) startBackup(ctx context.Context, cfg model.BackupConfig, why string, request uint64) {
	if a.backupDone == nil {
		a.backupDone = make(chan backupResult, 1)
	}
	retention, err := RetentionOf(cfg, nil, nil)
	if err != nil {
		a.fail("the retention settings", err)
		return
	}
	a.backupRunning, a.lastAttempt = true, time.Now()
	a.mu.Lock()
	a.status.BackupSince = a.lastAttempt.UTC()
	a.mu.Unlock()
	a.c.Log.Info("starting a base backup", "why", why)
	a.bmu.Lock()
	a.running = &RunningBackup{Request: request, Started: a.lastAttempt.UTC()}
	a.bmu.Unlock()
	a.backupWhat = "scheduled"
	if request > 0 {
		a.backupWhat = why
	}
	st, take := a.st, a.c.TakeBackup
	progress := func(p Progress) {
		a.bmu.Lock()
		if a.running != nil {
			a.running.ID, a.running.Source, a.running.Role = p.ID, p.Source, p.Role
			a.running.Read, a.running.Total = p.Read, p.Total
		}
		a.bmu.Unlock()
	}
	a.backups.Add(1)
	go func() {
		defer a.backups.Done()
		bctx, cancel := context.WithTimeout(ctx, backupTimeout)
		defer cancel()
		var r backupResult
		r.b, r.err = take(bctx, st, progress)
		if r.err == nil && request == 0 {
			r.pruned, r.pruneErr = Prune(bctx, st, time.Now(), retention, false)
		}
		a.backupDone <- r // buffered: one backup at a time
		select {
		case a.kick <- struct{}{}: // collect it now
		default:
		}
	}()
}

// collectBackup takes in a finished scheduled backup's result, if any.
func (a *Archiver) collectBackup() {
	if !a.backupRunning {
		return
	}
	var r backupResult
	select {
	case r = <-a.backupDone:
	default:
		return
	}
	a.backupRunning = false
	a.catalogAt = time.Time{} // re-read the catalog at once
	a.mu.Lock()
	a.status.BackupSince = time.Time{}
	a.mu.Unlock()
	a.bmu.Lock()
	out := &BackupOutcome{Finished: time.Now().UTC()}
	if a.running != nil {
		out.Request = a.running.Request
	}
	if r.err != nil {
		out.Error = r.err.Error()
	} else {
		b := r.b
		out.Backup = &b
	}
	a.running, a.last = nil, out
	a.bmu.Unlock()
	switch {
	case r.err != nil:
		a.fail("taking a base backup ("+a.backupWhat+")", r.err)
	case r.pruneErr != nil:
		a.fail("pruning after the scheduled backup "+r.b.ID, r.pruneErr)
	default:
		a.c.Log.Info("base backup done", "what", a.backupWhat, "backup", r.b.ID, "source", r.b.Source, "timeline", r.b.Timeline,
			"size", r.b.Size, "stored", r.b.Stored, "pruned_backups", len(r.pruned.DeleteBackups), "pruned_wal", len(r.pruned.DeleteWAL))
	}
	if a.c.OnBackup != nil {
		a.c.OnBackup(r.b, a.backupWhat, r.err)
	}
}

func (a *Archiver) checkChain(ctx context.Context, tli uint32) {
	cctx, cancel := withTimeout(ctx, a.c.StepTimeout)
	defer cancel()
	from, err := ChainStart(cctx, a.st)
	if err != nil {
		a.fail("checking the archive chain", err)
		return
	}
	c, err := CheckChain(cctx, a.st, tli, from)
	if err != nil {
		a.fail("checking the archive chain", err)
		return
	}
	// Right after a promotion Postgres may not have handed the new
	// timeline's history file to the spool yet: wait for it a while
	// before calling it missing.
	if len(c.MissingHistory) > 0 && c.MissingHistory[0] == HistoryName(tli) {
		if a.historyWait.IsZero() {
			a.historyWait = time.Now()
		}
		if time.Since(a.historyWait) < historyGrace {
			return
		}
	}
	a.historyWait = time.Time{}
	a.mu.Lock()
	a.checked = tli
	a.status.Chain, a.status.ChainOK = c.Summary(), c.OK()
	a.mu.Unlock()
	a.refreshRestoreFrom(cctx)
	if a.c.Metrics != nil {
		a.c.Metrics.gaps.Set(float64(len(c.Gaps) + len(c.MissingHistory)))
	}
	if c.OK() {
		a.c.Log.Info("archive chain checked", "chain", c.Summary())
		return
	}
	a.loudly("chain", "the WAL archive has GAPS: a restore cannot replay across them", errors.New(c.Summary()))
}

// fail records a failed step in /status and the metrics.
func (a *Archiver) fail(what string, err error) {
	msg := fmt.Sprintf("%s: %v", what, err)
	a.mu.Lock()
	repeat := a.status.LastFailure == msg
	a.status.LastFailure, a.status.FailureAt = msg, time.Now().UTC()
	a.mu.Unlock()
	if a.c.Metrics != nil {
		a.c.Metrics.failures.Inc()
	}
	if !repeat {
		a.c.Log.Warn("archiving", "err", msg)
	}
}

// loudly logs an error that needs an operator at ERROR, at most once a
// minute per key.
func (a *Archiver) loudly(key, msg string, err error) {
	if time.Since(a.loud[key]) < time.Minute {
		return
	}
	a.loud[key] = time.Now()
	a.c.Log.Error(msg, "err", err)
}

// Metrics are the archiver's Prometheus series (petrel_archive_*).
type Metrics struct {
	pushed, bytes, failures, diverged prometheus.Counter
	spooled, last, gaps               prometheus.Gauge
	seconds                           prometheus.Histogram
	archiver                          *Archiver
	mu                                sync.Mutex
}

// NewMetrics registers the archiver's series on reg; Attach names the
// archiver whose running upload petrel_archive_upload_running_seconds
// reports.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		pushed:   prometheus.NewCounter(prometheus.CounterOpts{Name: "petrel_archive_pushed_total", Help: "WAL files this member uploaded to the archive."}),
		bytes:    prometheus.NewCounter(prometheus.CounterOpts{Name: "petrel_archive_pushed_bytes_total", Help: "Compressed bytes this member uploaded to the archive."}),
		failures: prometheus.NewCounter(prometheus.CounterOpts{Name: "petrel_archive_failures_total", Help: "Failed archive steps (uploads, store calls, settings)."}),
		diverged: prometheus.NewCounter(prometheus.CounterOpts{Name: "petrel_archive_diverged_total", Help: "WAL files refused because the archive holds a different copy (split brain?)."}),
		spooled:  prometheus.NewGauge(prometheus.GaugeOpts{Name: "petrel_archive_spooled_files", Help: "WAL files waiting in this member's archive spool."}),
		last:     prometheus.NewGauge(prometheus.GaugeOpts{Name: "petrel_archive_last_success_timestamp_seconds", Help: "When this member last archived a WAL file."}),
		gaps:     prometheus.NewGauge(prometheus.GaugeOpts{Name: "petrel_archive_chain_gaps", Help: "Gaps (and missing history files) the last chain check found."}),
		seconds:  prometheus.NewHistogram(prometheus.HistogramOpts{Name: "petrel_archive_push_seconds", Help: "Time to upload one WAL file.", Buckets: prometheus.ExponentialBuckets(0.005, 3, 10)}),
	}
	running := prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "petrel_archive_upload_running_seconds", Help: "How long the upload in progress has been running (0: none); a hung upload grows here."}, func() float64 {
		m.mu.Lock()
		a := m.archiver
		m.mu.Unlock()
		if a == nil {
			return 0
		}
		return a.Status().UploadingFor
	})
	reg.MustRegister(m.pushed, m.bytes, m.failures, m.diverged, m.spooled, m.last, m.gaps, m.seconds, running)
	return m
}

// Attach makes m report a's running upload.
func (m *Metrics) Attach(a *Archiver) {
	m.mu.Lock()
	m.archiver = a
	m.mu.Unlock()
}
