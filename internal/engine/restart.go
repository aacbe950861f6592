package engine

import (
	"slices"
	"strings"

	"github.com/petrel-db/petrel/internal/model"
)

// restartActions answer a restart request (the CLI's rolling restart for
// settings that need one), only once the rest of the plan is idle. A
// restart is safe only where stopping Postgres for a moment changes
// nobody's view of who leads:
//
//   - a replica that streams from a live leader, with no switchover under
//     way, restarts (then the request is cleared);
//   - the leader restarts only when the request says in place (lowering a
//     setting standbys must match) and it is a writable leader with a safe
//     lease and no switchover; a plain request to the leader is refused
//     (cleared): the CLI switches over first;
//   - a restart never applies what petrel did not write: if a setting
//     petrel's files do not set is pending (ALTER SYSTEM, a file edited by
//     hand, a stored setting petrel refused), the request is refused,
//     forced or not; with nothing pending it is simply cleared, unless it
//     is forced (a rolling restart).
//
// Anything else (starting, catching up, the store unreachable) leaves the
// request for a later round.
func restartActions(o Observation, p Params, plan Plan) []Action {
	if o.Restart == nil || !o.StoreOK || o.ShuttingDown || !plan.Idle() {
		return nil
	}
	noSwitchover := o.Switchover == nil
	switch {
	case o.LeaderMine && !o.Restart.InPlace:
		return []Action{{Kind: ClearRestart, Cause: CauseRestartRefusedLeader}}
	case o.LeaderMine:
		safe := o.LeaseLeft >= p.FenceMargin
		if !(plan.Role == model.RolePrimary && o.Running && !o.InRecovery && safe && noSwitchover) {
			return nil
		}
	case o.Leader == "" || o.Leader == o.Self:
		return nil
	default:
		if !(plan.Role == model.RoleReplica && o.Running && o.InRecovery && o.Streaming && noSwitchover) {
			return nil
		}
	}
	if len(o.PendingRestart) == 0 && !o.Restart.Force {
		return []Action{{Kind: ClearRestart, Cause: CauseNothingPending}}
	}
	var foreign []string
	for _, n := range o.PendingRestart {
		if !slices.Contains(o.PetrelSettings, n) {
			foreign = append(foreign, n)
		}
	}
	if len(foreign) > 0 {
		return []Action{{Kind: ClearRestart, Cause: CauseRestartRefusedSetting, Reason: "restart request refused: pending " + strings.Join(foreign, ", ") + " was not written by petrel"}}
	}
	why := "rolling restart"
	if len(o.PendingRestart) > 0 {
		why = "applying settings: " + strings.Join(o.PendingRestart, ", ")
	}
	return []Action{
		{Kind: RestartPostgres, Cause: CauseRestartRequested, Reason: why},
		{Kind: ClearRestart, Cause: CauseRestartRequested},
	}
}
