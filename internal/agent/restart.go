package agent

// Restart requests: /petrel/<c>/restart/<id> asks this node to restart its
// Postgres (fast stop + start) to apply settings that need a restart. Only
// a streaming replica does it; the leader never restarts its Postgres here
// (the CLI switches over first) and drops such a request.

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"time"

	"github.com/petrel-db/petrel/internal/engine"
	"github.com/petrel-db/petrel/internal/model"
	"github.com/petrel-db/petrel/internal/store"
)

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
	a.conf.mu.Lock()
	pending := len(a.conf.pending) > 0
	a.conf.mu.Unlock()
	if pending || req.Force {
		a.setState("restarting")
		why := "applying settings: " + strings.Join(a.conf.pendingCopy(), ", ")
		if !pending {
			why = "rolling restart"
		}
		a.log.Info("restarting postgres", "why", why)
		a.events.add(a.log, model.Event{Kind: model.EventRestart, Node: a.cfg.ID, Region: a.cfg.Region, Reason: why})
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
		a.conf.mu.Lock()
		a.conf.pending, a.conf.checkedAt = nil, time.Time{}
		a.conf.mu.Unlock()
	}
	a.dropRestart(ctx, rev)
}

func (a *Agent) dropRestart(ctx context.Context, rev int64) {
	if err := a.st.DeleteIfRev(ctx, rev, store.KeyRestart, a.cfg.ID); err != nil && !errors.Is(err, store.ErrLostRace) {
		a.log.Warn("clearing restart request", "err", err)
	}
}
