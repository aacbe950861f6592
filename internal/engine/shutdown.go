package engine

import "github.com/petrel-db/petrel/internal/model"

// decideShutdown is the plan of an agent asked to stop (SIGTERM). A
// leader hands over like a planned switchover: after a fast shutdown its
// walsenders have sent everything, so the standby switchoverTarget ranks
// first (the most caught-up streaming primary-region standby, ties to the
// lower id) holds every commit once it has received the shutdown
// checkpoint, whether or not it was synchronous. Without one, or with a
// switchover record already there, it stops and lets the key go, and a
// synchronous standby takes over without waiting for the lease. Any other
// member just stops Postgres cleanly. The agent decides again after each
// plan until nothing is left (CauseStopped); rule 1 comes before this.
func decideShutdown(o Observation) Plan {
	writable := o.Running && !o.InRecovery
	if o.LeaderMine && o.StoreOK && writable && o.Switchover == nil {
		if t, _, _ := switchoverTarget(o, "", false); t != "" {
			return Plan{Role: model.RolePrimary, Actions: []Action{{Kind: SwitchoverStop, Target: t, Cause: CauseShutdown}}}
		}
	}
	var acts []Action
	if o.Running {
		acts = append(acts, Action{Kind: StopPostgres, Cause: CauseShutdown})
	}
	// Without the store the key cannot be deleted; it expires with the
	// lease (the fence and the watchdogs do not matter: Postgres is
	// stopped).
	if o.LeaderMine && o.StoreOK {
		acts = append(acts, Action{Kind: ReleaseLeader, Cause: CauseShutdown})
	}
	if len(acts) == 0 {
		return wait(model.RoleOffline, CauseStopped, "")
	}
	return Plan{Role: model.RoleOffline, Actions: acts}
}
