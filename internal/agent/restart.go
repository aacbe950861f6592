package agent

// Restart requests (/petrel/<c>/restart/<id>, the CLI's rolling restart):
// the engine decides when one is honoured, refused or simply cleared
// (engine.restartActions); these carry its actions out.

import (
	"context"
	"time"

	"github.com/petrel-db/petrel/internal/engine"
	"github.com/petrel-db/petrel/internal/store"
)

// restartPostgres stops Postgres (fast) and starts it again as what it
// was; beforeStart has just rewritten petrel-user.conf, so the restart
// applies what passed petrel's checks and nothing else.
func (a *Agent) restartPostgres(ctx context.Context, act engine.Action) error {
	a.setState("restarting")
	a.log.Info("restarting postgres", "reason", act.String())
	if err := a.stopPG(ctx, "fast"); err != nil {
		return err
	}
	a.markStart()
	if err := a.pg.Start(ctx); err != nil {
		return a.startFailed(err)
	}
	a.conf.mu.Lock()
	a.conf.pending, a.conf.checkedAt = nil, time.Time{}
	a.conf.mu.Unlock()
	return nil
}

// clearRestart deletes this node's request as observed: done, or refused.
func (a *Agent) clearRestart(ctx context.Context, act engine.Action) error {
	switch act.Cause {
	case engine.CauseRestartRefusedLeader, engine.CauseRestartRefusedSetting:
		a.log.Warn("refusing a restart request", "reason", act.String())
	default:
		a.log.Info("restart request done", "reason", act.String())
	}
	return a.st.DeleteIfRev(ctx, act.Revs.Restart, store.KeyRestart, a.cfg.ID)
}
