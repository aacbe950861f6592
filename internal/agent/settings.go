package agent

// Postgres configuration kept in step with the store, every round:
//
//   - cluster settings: the /petrel/<c>/config map is written to
//     petrel-user.conf (what passes pgsettings' checks) and Postgres
//     reloaded whenever it changes; pg_settings.pending_restart is polled
//     and published in /status, and is what a restart request applies;
//   - pg_hba.conf: the members' hosts, who alone may replicate.

import (
	"context"
	"fmt"
	"net"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/petrel-db/petrel/internal/engine"
	"github.com/petrel-db/petrel/internal/model"
)

// pendingCheckEvery is how often pg_settings.pending_restart is polled.
const pendingCheckEvery = time.Second

// confState is the settings' state, guarded by its own mutex.
type confState struct {
	mu          sync.Mutex
	appliedRev  int64 // /config revision written to petrel-user.conf; -1 after a start (rewrite)
	applied     bool
	reloadAt    time.Time
	reportedRev int64 // appliedRev once pending_restart was read after its reload
	pending     []string
	checkedAt   time.Time
	lastErr     string   // last logged settings error (logged once)
	appliedLive bool     // the applied settings were checked against the running server's pg_settings
	refused     []string // stored settings left out of petrel-user.conf, and why (shown in /status)
	// refusedEvent: the refusals last checked live (an event was recorded
	// when they changed and were not empty).
	refusedEvent []string
	// The main loop's alone (hardenRoles): no lock.
	rolesHardened bool
	rolesTried    time.Time
}

// beforeStart prepares TLS files and petrel-user.conf before an action
// that starts Postgres or connects to another member's.
func (a *Agent) beforeStart(ctx context.Context, kind engine.Kind) error {
	switch kind {
	case engine.Bootstrap, engine.FinishBootstrap, engine.Clone, engine.StartStandby, engine.StartPrimary, engine.Rewind, engine.Reclone, engine.RestartPostgres:
	default:
		return nil
	}
	if _, err := a.ensureTLS(ctx); err != nil {
		return fmt.Errorf("preparing TLS: %w", err)
	}
	if a.pg.Initialized() {
		a.applySettings(ctx, true)
	}
	return nil
}

// afterStep keeps pg_hba.conf's members, TLS and the cluster settings in
// step and polls pending restarts. Errors are logged, never fatal.
func (a *Agent) afterStep(ctx context.Context) {
	a.syncPeers(ctx)
	if !a.pg.Initialized() {
		return
	}
	a.checkTLS(ctx)
	a.applySettings(ctx, false)
	a.checkPending(ctx)
	a.hardenRoles(ctx)
}

// hardenRoles runs pg.HardenRoles once on the writable leader (a cluster
// bootstrapped by an older petrel gave the operator CREATEROLE), trying
// again at most every 30 s after a failure.
func (a *Agent) hardenRoles(ctx context.Context) {
	if a.conf.rolesHardened || time.Since(a.conf.rolesTried) < 30*time.Second {
		return
	}
	a.mu.Lock()
	leader := a.lastPG.Running && !a.lastPG.InRecovery && a.lastObs.LeaderMine
	a.mu.Unlock()
	if !leader {
		return
	}
	a.conf.rolesTried = time.Now()
	cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := a.pg.HardenRoles(cctx); err != nil {
		a.log.Warn("the operator role keeps CREATEROLE for now", "err", err)
		return
	}
	a.conf.rolesHardened = true
}

// syncPeers gives pg_hba.conf the members' hosts: only they (and the
// configured networks) may replicate, or log in as the superuser from
// outside the admin networks. An empty or stale view (store not loaded or
// unreachable) keeps the last list rather than locking the members out.
func (a *Agent) syncPeers(ctx context.Context) {
	if !a.st.OK() {
		return
	}
	snap := a.st.Snapshot()
	var hosts []string
	for _, m := range snap.Members {
		if h, _, err := net.SplitHostPort(m.PostgresAddr); err == nil && h != "" {
			hosts = append(hosts, h)
		}
	}
	if len(hosts) == 0 {
		return
	}
	if err := a.pg.SetPeers(ctx, hosts); err != nil {
		a.log.Warn("updating pg_hba.conf with the members' addresses", "err", err)
	}
}

func (a *Agent) logSettingsErr(err error) {
	a.conf.mu.Lock()
	defer a.conf.mu.Unlock()
	if err == nil {
		a.conf.lastErr = ""
		return
	}
	if err.Error() != a.conf.lastErr {
		a.conf.lastErr = err.Error()
		a.log.Warn("applying cluster settings", "err", err)
	}
}

// applySettings writes /config to petrel-user.conf when its revision
// changed (always when force) and reloads a running Postgres.
func (a *Agent) applySettings(ctx context.Context, force bool) {
	settings, rev, err := a.st.ClusterSettings()
	if err != nil {
		a.logSettingsErr(err)
		return
	}
	running := a.pg.Running()
	a.conf.mu.Lock()
	// Settings checked only against the saved pg_settings (Postgres was
	// not running) are checked again once it runs.
	done := a.conf.applied && a.conf.appliedRev == rev && !force && (a.conf.appliedLive || !running)
	a.conf.mu.Unlock()
	if done {
		return
	}
	res, err := a.pg.WriteUserConf(ctx, settings)
	if err != nil {
		a.logSettingsErr(err)
		return
	}
	a.noteRefused(res.Refused, res.Live)
	if res.Changed && running {
		if err := a.pg.Reload(ctx); err != nil {
			a.logSettingsErr(err)
			return
		}
		a.log.Info("applied cluster settings", "config_rev", rev, "settings", len(settings)-len(res.Refused))
	}
	a.logSettingsErr(nil)
	a.conf.mu.Lock()
	a.conf.applied, a.conf.appliedRev, a.conf.appliedLive = true, rev, res.Live
	if res.Changed {
		a.conf.reloadAt = time.Now()
	}
	a.conf.mu.Unlock()
}

// noteRefused keeps the stored settings this node refused to apply for
// /status, and logs them when they change: a refusal is what an operator
// needs to see (someone stored a setting petrel will not run). Refusals
// checked against the running server (live; not "not applied yet" for
// want of pg_settings) are also recorded as a config event.
func (a *Agent) noteRefused(errs []error, live bool) {
	msgs := make([]string, len(errs))
	for i, e := range errs {
		msgs[i] = e.Error()
	}
	a.conf.mu.Lock()
	same := slices.Equal(msgs, a.conf.refused)
	a.conf.refused = msgs
	evented := slices.Equal(msgs, a.conf.refusedEvent)
	if live {
		a.conf.refusedEvent = msgs
	}
	a.conf.mu.Unlock()
	if !same {
		for _, m := range msgs {
			a.log.Warn("refusing a stored cluster setting (not applied)", "reason", m)
		}
	}
	if live && !evented && len(msgs) > 0 {
		a.events.add(a.log, model.Event{Kind: model.EventConfig, Node: a.cfg.ID, Region: a.cfg.Region,
			Reason: "stored settings refused, not applied: " + strings.Join(msgs, "; ")})
	}
}

// checkPending polls pg_settings.pending_restart.
func (a *Agent) checkPending(ctx context.Context) {
	a.conf.mu.Lock()
	due := time.Since(a.conf.checkedAt) >= pendingCheckEvery
	a.conf.mu.Unlock()
	if !due {
		return
	}
	now := time.Now()
	var names []string
	if a.pg.Running() {
		cctx, cancel := context.WithTimeout(ctx, time.Second)
		var err error
		names, err = a.pg.PendingRestart(cctx)
		cancel()
		if err != nil {
			a.log.Debug("reading pending restarts", "err", err)
			return
		}
	}
	a.conf.mu.Lock()
	defer a.conf.mu.Unlock()
	a.conf.pending, a.conf.checkedAt = names, now
	// The reload is asynchronous: report the revision only once a check
	// that started well after it saw its effect.
	if a.conf.applied && now.Sub(a.conf.reloadAt) > 300*time.Millisecond {
		a.conf.reportedRev = a.conf.appliedRev
	}
}

// pendingRestart is the settings last seen waiting for a restart.
func (s *confState) pendingRestart() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.pending)
}

// settingsStatus adds the hooks' facts to /status.
func (a *Agent) settingsStatus(st *model.Status) {
	a.conf.mu.Lock()
	defer a.conf.mu.Unlock()
	st.ConfigRev = a.conf.reportedRev
	st.PendingRestart = len(a.conf.pending) > 0
	for _, m := range a.conf.refused {
		st.Problems = append(st.Problems, "stored setting refused, not applied: "+m)
	}
	if st.PendingRestart {
		st.Problems = append(st.Problems, "pending restart for "+strings.Join(a.conf.pending, ", ")+
			": run `petrel config set` again (with no arguments) to finish the rolling restart")
	}
}
