package agent

// Hooks for TLS, cluster-wide Postgres settings and rolling restarts
// (issue 3). agent.go calls beforeStart at the top of exec and afterStep
// at the end of every step; status.go calls extStatus.
//
//   - TLS: before Postgres is bootstrapped, cloned, rewound or started, the
//     node makes sure RunDir holds the cluster CA certificate and a server
//     certificate for its advertise and listen hosts signed by it. The CA
//     lives in etcd (/petrel/<c>/ca, key sealed with the superuser
//     password); the first node that needs it creates it (create-only).
//   - Settings: the /petrel/<c>/config map is written to petrel-user.conf
//     and Postgres reloaded whenever it changes; pg_settings.pending_restart
//     is polled and published in /status.
//   - Restarts: /petrel/<c>/restart/<id> asks this node to restart its
//     Postgres (fast stop + start). Only a streaming replica does it; the
//     leader never restarts its Postgres here (the CLI switches over first)
//     and drops such a request.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"runtime/debug"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/petrel-db/petrel/internal/engine"
	"github.com/petrel-db/petrel/internal/model"
	"github.com/petrel-db/petrel/internal/pki"
	"github.com/petrel-db/petrel/internal/store"
)

// pendingCheckEvery is how often pg_settings.pending_restart is polled.
const pendingCheckEvery = time.Second

// extState is the hooks' state, guarded by its own mutex.
type extState struct {
	mu          sync.Mutex
	appliedRev  int64 // /config revision written to petrel-user.conf; -1 after a start (rewrite)
	applied     bool
	reloadAt    time.Time
	reportedRev int64 // appliedRev once pending_restart was read after its reload
	pending     []string
	checkedAt   time.Time
	lastErr     string    // last logged settings error (logged once)
	tlsAt       time.Time // when TLS of a running server was last checked (see checkTLS)
	tlsDone     bool
	appliedLive bool     // the applied settings were checked against the running server's pg_settings
	refused     []string // stored settings left out of petrel-user.conf, and why (shown in /status)
}

// beforeStart prepares TLS files and petrel-user.conf before an action
// that starts Postgres or connects to another member's.
func (a *Agent) beforeStart(ctx context.Context, kind engine.Kind) error {
	switch kind {
	case engine.Bootstrap, engine.Clone, engine.StartStandby, engine.StartPrimary, engine.Rewind:
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

// ensureTLS makes sure RunDir holds a valid server certificate signed by
// the cluster CA; installed says whether it wrote new files.
func (a *Agent) ensureTLS(ctx context.Context) (installed bool, err error) {
	derived := false // a key derivation ran (scrypt: 32 MiB of scratch)
	defer func() {
		if derived {
			// That scratch is garbage once scrypt returns, but the heap
			// would keep it resident until it grew that large again.
			debug.FreeOSMemory()
		}
	}()
	certP, keyP, caP := a.pg.TLSPaths()
	hosts := []string{a.cfg.AdvertiseHost, a.cfg.ListenHost}
	certPEM, _ := os.ReadFile(certP)
	keyPEM, _ := os.ReadFile(keyP)
	caPEM, _ := os.ReadFile(caP)
	localOK := pki.CheckServerCert(certPEM, keyPEM, caPEM, hosts...) == nil

	raw, _, ok := a.st.Raw(store.KeyCA)
	if !ok {
		var err error
		raw, ok, err = a.st.Get(ctx, store.KeyCA)
		if err != nil {
			if localOK {
				a.log.Warn("cannot read the cluster CA from the store; keeping the local certificate", "err", err)
				return false, nil
			}
			return false, err
		}
	}
	if !ok {
		derived = true
		_, stored, err := pki.NewCA(a.cfg.Cluster, a.sec.Superuser)
		if err != nil {
			return false, err
		}
		created, err := a.st.CreateIfAbsent(ctx, stored.Encode(), store.KeyCA)
		if err != nil {
			return false, err
		}
		if created {
			a.log.Info("created the cluster CA")
			raw = stored.Encode()
		} else if raw, ok, err = a.st.Get(ctx, store.KeyCA); err != nil || !ok {
			return false, fmt.Errorf("reading the cluster CA another member created: %w", errors.Join(err, errors.New("not found")))
		}
	}
	stored, err := pki.Decode(raw)
	if err != nil {
		return false, err
	}
	if localOK && pki.SameCert(caPEM, []byte(stored.CertPEM)) {
		return false, nil
	}
	derived = true
	ca, err := stored.Unseal(a.sec.Superuser)
	if err != nil {
		return false, err
	}
	cert, key, err := ca.Issue(a.cfg.ID, hosts...)
	if err != nil {
		return false, err
	}
	if err := a.pg.InstallTLS(cert, key, []byte(stored.CertPEM)); err != nil {
		return false, err
	}
	a.log.Info("installed a server certificate signed by the cluster CA", "hosts", strings.Join(hosts, ","))
	return true, nil
}

// afterStep applies the cluster settings, polls pending restarts and
// handles a restart request. Errors are logged, never fatal.
func (a *Agent) afterStep(ctx context.Context, plan engine.Plan) {
	a.syncPeers(ctx)
	if !a.pg.Initialized() {
		return
	}
	a.checkTLS(ctx)
	a.applySettings(ctx, false)
	a.checkPending(ctx)
	a.handleRestart(ctx, plan)
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

// checkTLS, once per agent run, gives a Postgres that is already running
// (started before TLS existed, or by an earlier agent) its certificate and
// turns ssl on with a reload, so members that verify-full can reach it.
// It retries every 30s after a failure.
func (a *Agent) checkTLS(ctx context.Context) {
	a.ext.mu.Lock()
	skip := a.ext.tlsDone || time.Since(a.ext.tlsAt) < 30*time.Second
	if !skip {
		a.ext.tlsAt = time.Now()
	}
	a.ext.mu.Unlock()
	if skip || !a.pg.Running() || !a.st.OK() {
		return
	}
	installed, err := a.ensureTLS(ctx)
	if err != nil {
		a.log.Warn("preparing TLS for the running postgres", "err", err)
		return
	}
	cctx, cancel := context.WithTimeout(ctx, time.Second)
	on, err := a.pg.SSLOn(cctx)
	cancel()
	if err != nil {
		return
	}
	if !on || installed {
		if err := a.pg.RefreshConf(ctx); err != nil {
			a.log.Warn("turning ssl on", "err", err)
			return
		}
		a.log.Info("turned ssl on (reload)")
	}
	a.ext.mu.Lock()
	a.ext.tlsDone = true
	a.ext.mu.Unlock()
}

func (a *Agent) logSettingsErr(err error) {
	a.ext.mu.Lock()
	defer a.ext.mu.Unlock()
	if err == nil {
		a.ext.lastErr = ""
		return
	}
	if err.Error() != a.ext.lastErr {
		a.ext.lastErr = err.Error()
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
	a.ext.mu.Lock()
	// Settings checked only against the saved pg_settings (Postgres was
	// not running) are checked again once it runs.
	done := a.ext.applied && a.ext.appliedRev == rev && !force && (a.ext.appliedLive || !running)
	a.ext.mu.Unlock()
	if done {
		return
	}
	res, err := a.pg.WriteUserConf(ctx, settings)
	if err != nil {
		a.logSettingsErr(err)
		return
	}
	a.noteRefused(res.Refused)
	if res.Changed && running {
		if err := a.pg.Reload(ctx); err != nil {
			a.logSettingsErr(err)
			return
		}
		a.log.Info("applied cluster settings", "config_rev", rev, "settings", len(settings)-len(res.Refused))
	}
	a.logSettingsErr(nil)
	a.ext.mu.Lock()
	a.ext.applied, a.ext.appliedRev, a.ext.appliedLive = true, rev, res.Live
	if res.Changed {
		a.ext.reloadAt = time.Now()
	}
	a.ext.mu.Unlock()
}

// noteRefused keeps the stored settings this node refused to apply for
// /status, and logs them when they change: a refusal is what an operator
// needs to see (someone stored a setting petrel will not run).
func (a *Agent) noteRefused(errs []error) {
	msgs := make([]string, len(errs))
	for i, e := range errs {
		msgs[i] = e.Error()
	}
	a.ext.mu.Lock()
	same := slices.Equal(msgs, a.ext.refused)
	a.ext.refused = msgs
	a.ext.mu.Unlock()
	if !same {
		for _, m := range msgs {
			a.log.Warn("refusing a stored cluster setting (not applied)", "reason", m)
		}
	}
}

// checkPending polls pg_settings.pending_restart.
func (a *Agent) checkPending(ctx context.Context) {
	a.ext.mu.Lock()
	due := time.Since(a.ext.checkedAt) >= pendingCheckEvery
	a.ext.mu.Unlock()
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
	a.ext.mu.Lock()
	defer a.ext.mu.Unlock()
	a.ext.pending, a.ext.checkedAt = names, now
	// The reload is asynchronous: report the revision only once a check
	// that started well after it saw its effect.
	if a.ext.applied && now.Sub(a.ext.reloadAt) > 300*time.Millisecond {
		a.ext.reportedRev = a.ext.appliedRev
	}
}

// handleRestart restarts this replica's Postgres when asked to.
func (a *Agent) handleRestart(ctx context.Context, plan engine.Plan) {
	raw, rev, ok := a.st.Raw(store.KeyRestart, a.cfg.ID)
	if !ok {
		return
	}
	var req store.RestartRequest
	_ = json.Unmarshal(raw, &req) // a bad value is an ordinary (not in-place) request
	for _, act := range plan.Actions {
		if act.Kind != engine.Wait {
			return // busy: try again next round
		}
	}
	snap := a.st.Snapshot()
	a.mu.Lock()
	ps := a.lastPG
	a.mu.Unlock()
	switch {
	case plan.Role == model.RolePrimary && req.InPlace && ps.Running && !ps.InRecovery && snap.Switchover == nil:
		// Lowering a setting standbys must match: the leader goes first,
		// where it is (it keeps the key; writes pause for the restart).
	case plan.Role == model.RolePrimary:
		a.log.Warn("dropping a restart request: the leader's Postgres restarts only after a switchover")
		a.dropRestart(ctx, rev)
		return
	case plan.Role != model.RoleReplica || !ps.Running || !ps.InRecovery || snap.Switchover != nil:
		return // not a settled replica yet
	}
	a.ext.mu.Lock()
	pending := len(a.ext.pending) > 0
	a.ext.mu.Unlock()
	if pending {
		a.setState("restarting")
		a.log.Info("restarting postgres to apply settings", "pending", strings.Join(a.ext.pendingCopy(), ","))
		if err := a.stopPG(ctx, "fast"); err != nil {
			a.log.Error("restarting postgres: stop", "err", err)
			return
		}
		a.applySettings(ctx, true)
		a.markStart()
		if err := a.pg.Start(ctx); err != nil {
			a.log.Error("restarting postgres: start", "err", err)
			_ = a.startFailed(err)
			return
		}
		a.ext.mu.Lock()
		a.ext.pending, a.ext.checkedAt = nil, time.Time{}
		a.ext.mu.Unlock()
	}
	a.dropRestart(ctx, rev)
}

func (s *extState) pendingCopy() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.pending...)
}

func (a *Agent) dropRestart(ctx context.Context, rev int64) {
	if err := a.st.DeleteIfRev(ctx, rev, store.KeyRestart, a.cfg.ID); err != nil && !errors.Is(err, store.ErrLostRace) {
		a.log.Warn("clearing restart request", "err", err)
	}
}

// extStatus adds the hooks' facts to /status.
func (a *Agent) extStatus(st *model.Status) {
	a.ext.mu.Lock()
	defer a.ext.mu.Unlock()
	st.ConfigRev = a.ext.reportedRev
	st.PendingRestart = len(a.ext.pending) > 0
	for _, m := range a.ext.refused {
		st.Problems = append(st.Problems, "stored setting refused, not applied: "+m)
	}
	if st.PendingRestart {
		st.Problems = append(st.Problems, "pending restart for "+strings.Join(a.ext.pending, ", ")+
			": run `petrel config set` again (with no arguments) to finish the rolling restart")
	}
}
