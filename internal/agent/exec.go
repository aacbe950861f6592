package agent

// Carrying out plans: one small method per action kind. Each takes what
// it writes from the view the plan was decided on (the store at one
// revision, engine caller rules 1 and 3) and conditions its store write
// on the revisions the action carries; none decides anything.

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"time"

	"github.com/petrel-db/petrel/internal/engine"
	"github.com/petrel-db/petrel/internal/model"
	"github.com/petrel-db/petrel/internal/pg"
	"github.com/petrel-db/petrel/internal/store"
	"github.com/petrel-db/petrel/internal/watchdog"
)

// view is what one observation saw: the store's cache at one revision and
// the Observation built from it and from Postgres.
type view struct {
	snap store.Snapshot
	obs  engine.Observation
}

// exec carries out one action. Errors are wrapped with the action.
func (a *Agent) exec(ctx context.Context, v view, act engine.Action) error {
	a.log.Debug("exec", "action", act.String())
	if err := a.beforeStart(ctx, act.Kind); err != nil { // TLS files, petrel-user.conf (settings.go)
		return err
	}
	switch act.Kind {
	case engine.FinishBootstrap:
		return a.finishBootstrap(ctx)
	case engine.Bootstrap:
		return a.bootstrap(ctx, v, act)
	case engine.RecordBootstrap:
		return a.recordBootstrap(ctx, v, act)
	case engine.Clone:
		return a.clone(ctx, v, act)
	case engine.StartStandby:
		return a.startStandby(ctx, v, act)
	case engine.StartPrimary:
		return a.startPrimary(ctx)
	case engine.Follow:
		return a.follow(ctx, v, act)
	case engine.AcquireLeader:
		return a.acquireLeader(ctx, v, act)
	case engine.Promote:
		return a.promote(ctx, act)
	case engine.Fence:
		return a.fence(ctx, act)
	case engine.Kill:
		return a.kill(act)
	case engine.StopPostgres:
		return a.stopPostgres(ctx, act)
	case engine.SetReadOnly:
		return a.setReadOnly(ctx, act)
	case engine.ReleaseLeader:
		return a.st.ReleaseLeader(ctx)
	case engine.RevokeLeader:
		a.log.Warn("revoking leader key", "leader", v.obs.Leader, "cause", act.Cause.String())
		return a.st.RevokeLeader(ctx, act.Revs.Leader)
	case engine.Rewind:
		return a.rewind(ctx, v, act)
	case engine.Reclone:
		return a.reclone(ctx, v, act)
	case engine.SetSyncRecord:
		return a.setSyncRecord(ctx, act)
	case engine.SetSyncNames:
		return a.setSyncNames(ctx, v, act)
	case engine.CreateSlot:
		return a.pg.CreateSlot(ctx, act.Target)
	case engine.DropSlot:
		a.log.Info("dropping slot of departed member", "slot", act.Target)
		return a.pg.DropSlot(ctx, act.Target)
	case engine.SwitchoverStop:
		return a.switchoverStop(ctx, v, act)
	case engine.ClearSwitchover:
		a.log.Warn("clearing switchover request", "reason", act.String())
		return a.st.ClearSwitchover(ctx, act.Revs.Switchover)
	case engine.RestartPostgres:
		return a.restartPostgres(ctx, act)
	case engine.ClearRestart:
		return a.clearRestart(ctx, act)
	}
	return fmt.Errorf("unknown action %q", act.Kind)
}

func (a *Agent) bootstrap(ctx context.Context, v view, act engine.Action) error {
	a.setState("bootstrapping")
	if !v.obs.Initialized {
		info := model.ClusterInfo{Name: a.cfg.Cluster, PrimaryRegion: a.cfg.PrimaryRegion, InitializedBy: a.cfg.ID, InitializedAt: time.Now().UTC()}
		if err := a.st.ClaimInit(ctx, info); err != nil {
			return err
		}
		a.log.Info("claimed cluster initialization")
	}
	if err := a.st.AcquireLeader(ctx, a.cfg.ID, act.Revs.Sync); err != nil {
		return err
	}
	if a.pg.Initialized() && !a.pg.BootstrapUnfinished() {
		// Our data survived a store wipe (or a crash right after
		// claiming): start it as the primary. A bootstrap of ours that
		// stopped between initdb and the roles' passwords is finished
		// below instead.
		if err := a.pg.ConfigurePrimary(); err != nil {
			return err
		}
		a.markStart()
		return a.pg.Start(ctx)
	}
	bctx, cancel := context.WithTimeout(ctx, 3*time.Minute)
	defer cancel()
	a.markStart()
	if err := a.pg.Bootstrap(bctx, a.secrets()); err != nil {
		return fmt.Errorf("bootstrapping postgres: %w", err)
	}
	a.metrics.promotions.Inc()
	a.log.Info("bootstrapped a new cluster")
	return nil
}

// finishBootstrap completes this leader's own bootstrap (see
// pg.Bootstrap's marker).
func (a *Agent) finishBootstrap(ctx context.Context) error {
	a.setState("bootstrapping")
	bctx, cancel := context.WithTimeout(ctx, 3*time.Minute)
	defer cancel()
	a.markStart()
	if err := a.pg.Bootstrap(bctx, a.secrets()); err != nil {
		return a.startFailed(fmt.Errorf("finishing the bootstrap: %w", err)) // backs off like a failed start
	}
	a.log.Info("finished an interrupted bootstrap")
	return nil
}

// recordBootstrap adds the system identifier to the info key as observed;
// the CAS on its observed revision refuses a key changed since.
func (a *Agent) recordBootstrap(ctx context.Context, v view, act engine.Action) error {
	c, err := a.pg.Control(ctx)
	if err != nil {
		return err
	}
	if c.SystemID == "" || v.snap.Info == nil {
		return errors.New("recording the bootstrap: no system identifier in pg_controldata")
	}
	info := *v.snap.Info
	info.SystemID = c.SystemID
	if err := a.st.RecordBootstrap(ctx, info, act.Revs.Info); err != nil {
		return err
	}
	a.log.Info("recorded the cluster's system identifier: no member will run initdb again", "system_id", c.SystemID)
	return nil
}

func (a *Agent) clone(ctx context.Context, v view, act engine.Action) error {
	a.setState("cloning")
	src, err := a.connInfo(v.snap, act.Target, "replicator", a.secrets().Replication)
	if err != nil {
		return err
	}
	cctx, cancel := context.WithTimeout(ctx, 30*time.Minute)
	defer cancel()
	// During a secrets rotation the source may already want the other
	// password (rotation.go); the passfile then keeps the one that worked.
	err = a.withPassword(store.SecretReplication, func(pw string) error {
		src.Password = pw
		return a.pg.BaseBackup(cctx, src)
	})
	if err != nil {
		return fmt.Errorf("cloning from %s: %w", act.Target, err)
	}
	if err := a.pg.ConfigureStandby(&src, act.Slot, a.cfg.ID); err != nil {
		return err
	}
	a.setFollowing(act.Target)
	a.markStart()
	if err := a.pg.Start(ctx); err != nil {
		return a.startFailed(err)
	}
	a.log.Info("cloned and following", "leader", act.Target)
	return nil
}

func (a *Agent) startStandby(ctx context.Context, v view, act engine.Action) error {
	a.setState("starting")
	up, err := a.replConn(v.snap, act.Target)
	if err != nil {
		return err
	}
	if err := a.pg.ConfigureStandby(up, act.Slot, a.cfg.ID); err != nil {
		return err
	}
	a.setFollowing(act.Target)
	a.markStart()
	if err := a.pg.Start(ctx); err != nil {
		return a.startFailed(err)
	}
	return nil
}

func (a *Agent) startPrimary(ctx context.Context) error {
	a.setState("starting")
	if err := a.pg.ConfigurePrimary(); err != nil {
		return err
	}
	a.setFollowing("")
	a.markStart()
	if err := a.pg.Start(ctx); err != nil {
		return a.startFailed(err)
	}
	return nil
}

func (a *Agent) follow(ctx context.Context, v view, act engine.Action) error {
	up, err := a.replConn(v.snap, act.Target)
	if err != nil {
		return err
	}
	if err := a.pg.ConfigureStandby(up, act.Slot, a.cfg.ID); err != nil {
		return err
	}
	if err := a.pg.Reload(ctx); err != nil {
		return err
	}
	a.setFollowing(act.Target)
	a.mu.Lock()
	a.lastStreaming = time.Now() // give the new upstream a fair chance
	a.mu.Unlock()
	a.log.Info("following", "leader", act.Target)
	return nil
}

// acquireLeader takes the key; with act.Region it moves the primary
// region there in the same transaction (the info key as observed).
func (a *Agent) acquireLeader(ctx context.Context, v view, act engine.Action) error {
	if act.Region == "" {
		if err := a.st.AcquireLeader(ctx, a.cfg.ID, act.Revs.Sync); err != nil {
			return err
		}
		a.log.Info("acquired leadership", "reason", act.String())
		return nil
	}
	if v.snap.Info == nil {
		return errors.New("moving the primary region: no cluster info observed")
	}
	info := *v.snap.Info
	info.PrimaryRegion = act.Region
	if err := a.st.AcquireLeaderMovingRegion(ctx, a.cfg.ID, act.Revs.Sync, info, act.Revs.Info); err != nil {
		return err
	}
	a.log.Warn("acquired leadership and moved the primary region", "to", act.Region)
	return nil
}

func (a *Agent) promote(ctx context.Context, act engine.Action) error {
	a.setState("promoting")
	if err := a.pg.SetSynchronousStandbys(ctx, act.Value); err != nil {
		return err
	}
	if err := a.pg.Promote(ctx); err != nil {
		return fmt.Errorf("promoting: %w", err)
	}
	if err := a.pg.ConfigurePrimary(); err != nil {
		return err
	}
	a.setFollowing("")
	a.metrics.promotions.Inc()
	a.log.Info("promoted to primary")
	return nil
}

func (a *Agent) fence(ctx context.Context, act engine.Action) error {
	a.setState("fenced")
	a.metrics.fences.Inc()
	a.log.Warn("fencing postgres", "reason", act.String())
	if err := a.stopPG(ctx, "immediate"); err != nil {
		return fmt.Errorf("fencing: %w", err)
	}
	a.setFollowing("")
	return nil
}

func (a *Agent) kill(act engine.Action) error {
	a.setState("fenced")
	a.metrics.fences.Inc()
	a.log.Warn("killing postgres", "reason", act.String())
	if pid := a.pg.PID(); pid > 0 {
		if err := watchdog.KillPostgres(pid); err != nil {
			return fmt.Errorf("killing postgres: %w", err)
		}
	}
	a.mu.Lock()
	a.stoppedByUs = true
	a.lastPG.Running = false
	a.unansweredSince = time.Time{}
	a.mu.Unlock()
	a.setFollowing("")
	return nil
}

func (a *Agent) stopPostgres(ctx context.Context, act engine.Action) error {
	a.log.Info("stopping postgres", "reason", act.String())
	if err := a.stopPG(ctx, "fast"); err != nil {
		return fmt.Errorf("stopping postgres: %w", err)
	}
	return nil
}

func (a *Agent) setReadOnly(ctx context.Context, act engine.Action) error {
	on := act.Value == "on"
	if on {
		a.log.Warn("turning new transactions read-only", "reason", act.Reason)
		a.mu.Lock()
		a.readOnlyWhy = act.Reason
		a.mu.Unlock()
	} else {
		a.log.Info("writes allowed again", "reason", act.Reason)
	}
	return a.pg.SetReadOnly(ctx, on)
}

// rewind runs pg_rewind against act.Target and starts as its standby. How
// it ended is recorded for the engine (Observation.LastRewind): the
// source unavailable (pg.ErrRewindUnavailable, or its address unknown)
// keeps the data directory for a retry; pg.ErrRewindImpossible asks for
// a re-clone.
func (a *Agent) rewind(ctx context.Context, v view, act engine.Action) error {
	a.setState("rewinding")
	if a.pg.Running() {
		if err := a.stopPG(ctx, "fast"); err != nil {
			return err
		}
	}
	src, err := a.connInfo(v.snap, act.Target, "postgres", a.secrets().Superuser)
	if err != nil {
		a.noteRewind(act, engine.RewindUnavailable)
		return err
	}
	rctx, cancel := context.WithTimeout(ctx, 10*time.Minute)
	defer cancel()
	if err := a.withPassword(store.SecretSuperuser, func(pw string) error {
		src.Password = pw
		return a.pg.Rewind(rctx, src)
	}); err != nil {
		res := engine.RewindUnavailable
		if errors.Is(err, pg.ErrRewindImpossible) {
			res = engine.RewindImpossible
		}
		a.noteRewind(act, res)
		return fmt.Errorf("rewinding against %s: %w", act.Target, err)
	}
	a.noteRewind(act, engine.RewindDone)
	up, err := a.replConn(v.snap, act.Target)
	if err != nil {
		return err
	}
	if err := a.pg.ConfigureStandby(up, act.Slot, a.cfg.ID); err != nil {
		return err
	}
	a.setFollowing(act.Target)
	a.markStart()
	if err := a.pg.Start(ctx); err != nil {
		return a.startFailed(err)
	}
	a.mu.Lock()
	a.lastStreaming = time.Now()
	a.mu.Unlock()
	a.log.Info("rewound and following", "leader", act.Target)
	return nil
}

func (a *Agent) noteRewind(act engine.Action, res engine.RewindResult) {
	a.mu.Lock()
	defer a.mu.Unlock()
	failures := 0
	if res == engine.RewindUnavailable {
		failures = 1
		if lr := a.lastRewind; lr.result == engine.RewindUnavailable && lr.leader == act.Target {
			failures = lr.failures + 1
		}
	}
	a.lastRewind = rewindRecord{leader: act.Target, result: res, cause: act.Cause, at: time.Now(), failures: failures}
}

// reclone wipes the data directory and clones it again, but only once the
// source's Postgres accepts connections: a wipe with nothing to clone from
// would leave the member without data until the source is back.
func (a *Agent) reclone(ctx context.Context, v view, act engine.Action) error {
	src, err := a.connInfo(v.snap, act.Target, "replicator", a.secrets().Replication)
	if err != nil {
		return err
	}
	if addr := net.JoinHostPort(src.Host, strconv.Itoa(src.Port)); !answers(addr, 2*time.Second) {
		return fmt.Errorf("re-cloning from %s: its postgres at %s does not answer: keeping the data directory", act.Target, addr)
	}
	a.setState("recloning")
	a.log.Warn("re-cloning", "reason", act.String())
	if err := a.stopPG(ctx, "immediate"); err != nil {
		return err
	}
	if err := a.pg.Wipe(); err != nil {
		return err
	}
	a.mu.Lock()
	a.lastRewind, a.restarts = rewindRecord{}, 0
	a.mu.Unlock()
	return a.clone(ctx, v, act)
}

func (a *Agent) setSyncRecord(ctx context.Context, act engine.Action) error {
	rec := model.Sync{Leader: a.cfg.ID, Members: act.Members, K: 1}
	if err := a.st.SetSync(ctx, rec, act.Revs.Sync); err != nil {
		return err
	}
	a.log.Info("sync record", "members", act.Members)
	return nil
}

func (a *Agent) setSyncNames(ctx context.Context, v view, act engine.Action) error {
	if err := a.pg.SetSynchronousStandbys(ctx, act.Value); err != nil {
		return err
	}
	// The record may follow a change only once the members flushed past
	// this point (engine.syncActions).
	a.mu.Lock()
	a.syncChangeLSN = v.obs.LSN
	a.mu.Unlock()
	a.log.Info("synchronous_standby_names", "value", act.Value)
	return nil
}

// switchoverStop stops Postgres cleanly and hands the key to act.Target,
// recording where it stopped: in the request as observed (CAS on its
// revision), or, with none (a shutdown), in a new record.
func (a *Agent) switchoverStop(ctx context.Context, v view, act engine.Action) error {
	a.setState("switching-over")
	sw := model.Switchover{From: a.cfg.ID, RequestedAt: time.Now().UTC()}
	if v.snap.Switchover != nil {
		sw = *v.snap.Switchover
	}
	a.log.Info("stopping to hand over", "target", act.Target, "reason", act.String())
	if err := a.stopPG(ctx, "fast"); err != nil {
		return err
	}
	c, err := a.pg.Control(ctx)
	if err != nil {
		return err
	}
	sw.Target, sw.StoppedLSN = act.Target, c.CheckpointLSN
	if err := a.st.CompleteSwitchover(ctx, sw, act.Revs.Switchover); err != nil {
		return err
	}
	a.log.Info("handed over", "target", act.Target, "stopped_lsn", pg.FormatLSN(c.CheckpointLSN))
	return nil
}
