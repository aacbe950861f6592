// Package engine decides what a petrel node should do next. It is a pure,
// deterministic function from an Observation (what the agent saw of its
// own Postgres, the store and its peers) to a Plan (actions, in order).
// It does no I/O, reads no clock and draws no random numbers: time
// arrives as durations measured by the caller.
//
// The caller (internal/agent) must follow these rules:
//
//  1. Build every Observation from one consistent read of the store (one
//     revision), plus fresh local facts; never mix revisions.
//  2. Execute a Plan's actions in order and stop at the first failure; the
//     next Observation shows what actually happened.
//  3. Every store write an action implies is a compare-and-swap on the
//     revisions the action carries (Action.Revs: those of the Observation
//     it was decided on), and takes what it writes from that same
//     Observation's read, never from a fresher one. A lost race is not an
//     error: observe again.
//  4. Report LeaseLeft conservatively: measured from when the last
//     successful keepalive was *sent*, not when its answer arrived.
//  5. Before executing Promote or StartPrimary, the leader key must be
//     held with the node's own lease (AcquireLeader succeeded).
//  6. After a Fence, do not start Postgres as a primary again until the
//     engine asks for it in a later Plan.
//  7. Stop or restart Postgres, touch the leader key or the data
//     directory only as a Plan's action: a shutdown is observations with
//     ShuttingDown set, decided and executed until the plan only waits
//     (CauseStopped); a restart request is an Observation field. Failsafe
//     promises are DecidePromise's, a leader's rounds DecideRound's, and
//     the fence watchdogs' kill and arm DecideWatchdog's.
//  8. Record how each rewind ended (Observation.LastRewind), classified
//     by behaviour: the source unavailable (retry, keep the data) or the
//     rewind impossible (re-clone).
//
// Safety invariants the engine keeps (tested in engine_test.go):
//
//   - A node runs Postgres writable only while it holds the leader key
//     with at least FenceMargin of lease left; otherwise it fences.
//   - Automatic promotion only picks a member that provably holds every
//     acknowledged commit: with synchronous standbys S and quorum K, the
//     candidate must have heard the final (not streaming) positions of
//     |S|-K+1 members of S and have the highest of them; when S is empty
//     only the last leader may take over.
//   - Only primary-region members are candidates or synchronous standbys.
//   - The synchronous set in Postgres is always a subset of the set
//     recorded in the store (record first when adding, Postgres first and
//     a catch-up check when removing).
package engine

import (
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/petrel-db/petrel/internal/model"
)

// DataRole is what the local data directory last was.
type DataRole int

const (
	DataEmpty   DataRole = iota // no data directory yet
	DataPrimary                 // last ran (or is running) as a primary
	DataStandby                 // last ran (or is running) as a standby
)

// Params are the tunables the engine needs.
type Params struct {
	SyncMode      string        // on, strict, off
	FenceMargin   time.Duration // fence when less lease than this is left
	MaxRestarts   int           // local Postgres restarts before giving up leadership
	RestartDelay  time.Duration // backoff base between local restarts
	SwitchoverTTL time.Duration // a switchover record older than this is ignored
	// SwitchoverGrace is how long a leader keeps a switchover request that
	// has no streaming standby to go to yet (one that just restarted and
	// reconnects) before refusing it.
	SwitchoverGrace time.Duration
	StuckAfter      time.Duration // a standby not streaming this long from a live leader is rewound
	// RewindRetry: after a rewind whose source could not be reached, wait
	// this long before trying again (the data directory is kept).
	RewindRetry time.Duration
	// HangAfter: a leader whose Postgres has answered nothing for this
	// long (hung storage, a stopped postmaster) kills it and gives up the
	// key, so that a standby takes over instead of writes waiting for as
	// long as the hang lasts. 0 disables.
	HangAfter time.Duration
	// DiskLow: a leader with less free space than this on its data
	// directory's filesystem turns new transactions read-only, before
	// Postgres fails writes at random or stops; writes come back once
	// twice as much is free.
	DiskLow int64
}

// DefaultParams are used by the agent unless configured otherwise.
func DefaultParams() Params {
	return Params{
		SyncMode:        "on",
		FenceMargin:     700 * time.Millisecond,
		MaxRestarts:     3,
		RestartDelay:    time.Second,
		SwitchoverTTL:   30 * time.Second,
		SwitchoverGrace: 5 * time.Second,
		StuckAfter:      10 * time.Second,
		RewindRetry:     5 * time.Second,
		DiskLow:         64 << 20,
		HangAfter:       10 * time.Second,
	}
}

// RewindResult is how a rewind ended, classified by what to do next.
type RewindResult int

const (
	RewindNone        RewindResult = iota
	RewindDone                     // pg_rewind succeeded (or found nothing to do)
	RewindUnavailable              // its source could not be reached: the data directory is kept, retry after RewindRetry
	RewindImpossible               // the histories cannot be rewound: re-clone
)

// RewindOutcome is the last rewind's result, why it was planned (its
// Cause) and how long ago it ended. Failures counts the rewinds in a row
// that found the source unavailable: the retry backs off (RewindRetry,
// doubling, at most 16 times), since each attempt stops Postgres first.
type RewindOutcome struct {
	Result   RewindResult
	Cause    Cause
	Ago      time.Duration
	Failures int
}

// retryLater says whether a rewind whose source was unavailable should
// wait longer before the next attempt.
func (lr RewindOutcome) retryLater(p Params) bool {
	return lr.Result == RewindUnavailable && lr.Ago < p.RewindRetry<<min(max(lr.Failures-1, 0), 4)
}

// RestartRequest asks this node to restart its Postgres to apply settings
// that need one (the CLI's rolling restart).
type RestartRequest struct {
	// InPlace: the leader too restarts where it is (lowering a setting
	// standbys must match, which no switchover order can roll).
	InPlace bool
	// Force: restart even with nothing pending (a rolling restart).
	Force bool
}

// Peer is what a candidate learned from another member's /status during an
// election.
type Peer struct {
	ID         string
	Region     string
	Reachable  bool
	InRecovery bool
	Streaming  bool
	Frozen     bool // its standby follows nobody, so its position is final
	Timeline   uint32
	LSN        uint64
}

// Standby is one row of the leader's pg_stat_replication.
type Standby struct {
	ID        string
	Streaming bool
	FlushLSN  uint64
}

// Observation is everything the engine needs for one decision.
type Observation struct {
	Self          string
	Region        string
	PrimaryRegion string // the cluster's recorded primary region

	// Store.
	StoreOK       bool   // the last keepalive succeeded and the cache is current
	Initialized   bool   // the cluster's info key exists
	InitializedBy string // the member that claimed initialization
	BootstrapDone bool   // the info key records a completed initdb (its system id)
	// BootstrapUnfinished: this node's own bootstrap stopped between
	// initdb and its roles' passwords (the marker beside PGDATA): its
	// data is to be finished, never started or recorded as it is.
	BootstrapUnfinished bool
	InfoRev             int64 // the info key's revision (RecordBootstrap's and a region move's CAS)
	Leader              string
	LeaderRev           int64 // mod revision of the leader key (0: absent)
	LeaderMine          bool  // the leader key is attached to this process's lease
	Sync                model.Sync
	SyncRev             int64
	Members             map[string]model.Member // members whose record is on a live session lease (a dead one's lasts up to a minute)
	Registered          []string                // every node that ever joined and was not removed
	Switchover          *model.Switchover
	SwitchoverRev       int64 // the switchover record's revision (0: absent)
	// Restart is a request to restart the local Postgres (restart/<self>;
	// nil: none), RestartRev its revision.
	Restart    *RestartRequest
	RestartRev int64
	// ShuttingDown: the agent was asked to stop. The plan then hands the
	// key over or lets it go, and stops Postgres cleanly.
	ShuttingDown bool
	// Cascade is true when this node's region streams from a replica of
	// its own region (the region's hub) instead of from the leader.
	Cascade bool
	// CascadeRegions lists every cascading region; RegisteredRegions maps
	// each registered node to its region (for the leader's slots).
	CascadeRegions    map[string]bool
	RegisteredRegions map[string]string
	SwitchoverAge     time.Duration
	LeaseLeft         time.Duration // conservative time until this node's lease may expire
	// FailsafeLeft (leader, store unreachable): time until the promise of
	// every registered member not to take over runs out, measured from
	// before the leader asked. It stands in for LeaseLeft while the store
	// is down (Patroni's failsafe mode).
	FailsafeLeft time.Duration
	// FailsafePromised (non-leader): this member promised the leader, for
	// a lease TTL, not to take over; no election, no revocation until then.
	FailsafePromised bool

	// LeaderPromoted: the leader's API reports it a writable primary (its
	// Postgres has left recovery). Observed only for a former primary
	// (Data primary, not the leader): pg_rewind against a leader still
	// promoting can give the rewound directory a minimum recovery point
	// on the timeline the leader is leaving ("requested timeline 2 does
	// not contain minimum recovery point"), and it never starts again.
	LeaderPromoted bool
	// LeaderDead is true when the leader's Postgres and agent both refused
	// connections (a fact, not a timeout), confirmed twice.
	LeaderDead bool

	// Local Postgres.
	Data       DataRole
	Running    bool
	InRecovery bool
	Timeline   uint32
	LSN        uint64 // primary: current; standby: max(received, replayed)
	Streaming  bool
	// Following is the member primary_conninfo names ("" none; the agent
	// reports "?" while it does not know, e.g. right after it started).
	Following       string // member the standby is configured to follow ("" none)
	NotStreamingFor time.Duration
	// UpstreamLacksWAL: since the standby was last pointed at Following,
	// that upstream told it that WAL it needs has been removed (its
	// walreceiver's "requested WAL segment ... has already been
	// removed"): streaming from it cannot resume, and a rewind finds
	// nothing to do, so only a clone helps.
	UpstreamLacksWAL bool
	Restarts         int           // consecutive failed local starts / crashes
	SinceStart       time.Duration // since the last start attempt
	// LastRewind is how this node's last rewind against the current
	// leader ended (zero: none since it last streamed for a while).
	LastRewind RewindOutcome
	// PendingRestart lists the settings whose new value waits for a
	// restart (pg_settings.pending_restart); PetrelSettings those petrel's
	// own files set (petrel-user.conf with what passed petrel's checks,
	// petrel.conf, ...): a restart request applies only these. The agent
	// reads both only while a restart request is there.
	PendingRestart []string
	PetrelSettings []string
	DiskKnown      bool  // DiskFree was measured
	DiskFree       int64 // bytes free for the data directory
	ReadOnly       bool  // petrel's read-only switch is on

	// Leader-only facts.
	Standbys      []Standby
	SyncNames     []string // members currently in synchronous_standby_names
	SyncChangeLSN uint64   // current LSN when SyncNames last changed
	Slots         []string // physical slots present

	// Election facts: other members' /status, fetched only when no leader.
	Peers map[string]Peer
}

// SlotName is the physical replication slot kept for member id.
func SlotName(id string) string { return "petrel_" + id }

// StrictPlaceholder is listed in synchronous_standby_names in strict mode
// when no standby is in sync, so that commits wait instead of going on.
const StrictPlaceholder = "petrel_no_standby"

// Decide is the engine: observation in, plan out. Every action carries the
// revisions of o (caller rule 3).
func Decide(o Observation, p Params) Plan {
	plan := decide(o, p)
	if act, ok := readOnlyAction(o, p, plan); ok {
		plan = appendAction(plan, act)
	}
	for _, act := range restartActions(o, p, plan) {
		plan = appendAction(plan, act)
	}
	revs := o.Revs()
	for i := range plan.Actions {
		a := &plan.Actions[i]
		a.Revs = revs
		switch a.Kind {
		case Clone, StartStandby, Follow, Rewind, Reclone:
			if a.Target == "" || a.Target == o.Leader || o.Leader == "" {
				a.Slot = SlotName(o.Self)
			}
		case Promote:
			// No synchronous standby to start with (or the strict
			// placeholder): the leader adds standbys as they stream.
			a.Value = syncValue(nil, p.SyncMode)
		}
	}
	return plan
}

// appendAction adds act to plan, dropping a lone wait.
func appendAction(plan Plan, act Action) Plan {
	if len(plan.Actions) == 1 && plan.Actions[0].Kind == Wait {
		plan.Actions = nil
	}
	plan.Actions = append(plan.Actions, act)
	return plan
}

// Revs are the store revisions o was read at.
func (o Observation) Revs() Revs {
	return Revs{Leader: o.LeaderRev, Sync: o.SyncRev, Info: o.InfoRev, Switchover: o.SwitchoverRev, Restart: o.RestartRev}
}

// readOnlyAction keeps petrel's read-only switch: on for a leader whose
// disk is nearly full (its role stays primary: reads go on, and a full
// disk is no reason to fail over), off again on any member once space is
// back. Unknown free space changes nothing.
func readOnlyAction(o Observation, p Params, plan Plan) (Action, bool) {
	if !o.DiskKnown || p.DiskLow <= 0 {
		return Action{}, false
	}
	switch {
	case !o.ReadOnly && o.DiskFree < p.DiskLow && plan.Role == model.RolePrimary && o.LeaderMine:
		return Action{Kind: SetReadOnly, Cause: CauseDiskLow, Value: "on", Reason: fmt.Sprintf("disk nearly full: %d MiB free, below %d MiB", o.DiskFree>>20, p.DiskLow>>20)}, true
	case o.ReadOnly && o.DiskFree >= 2*p.DiskLow:
		return Action{Kind: SetReadOnly, Cause: CauseDiskBack, Value: "off", Reason: fmt.Sprintf("disk space back: %d MiB free", o.DiskFree>>20)}, true
	}
	return Action{}, false
}

// DecideUnobservable is the plan when the local Postgres is running but
// answered nothing (observing it failed), so Decide lacks its facts.
// wasPrimary is what it last was; unanswered is how long it has not
// answered; the other inputs are as in Observation.
func DecideUnobservable(wasPrimary, leaderMine bool, unanswered, leaseLeft time.Duration, p Params) Plan {
	if !wasPrimary {
		return wait(model.RoleOffline, CausePostgresUnanswered, fmt.Sprintf("postgres not answering for %v", unanswered.Round(time.Second)))
	}
	switch {
	// Rule 1 still holds; the server cannot be asked, so it is killed.
	case !leaderMine:
		return Plan{Role: model.RoleFenced, Actions: []Action{{Kind: Kill, Cause: CauseNotLeader, Reason: "running as primary without holding the leader key, and not answering"}}}
	case leaseLeft < p.FenceMargin:
		return Plan{Role: model.RoleFenced, Actions: []Action{{Kind: Kill, Cause: CauseLeaseExpiring, Reason: "lease running out and postgres unobservable"}}}
	case leaderMine && p.HangAfter > 0 && unanswered >= p.HangAfter:
		return Plan{Role: model.RoleFenced, Actions: []Action{
			{Kind: Kill, Cause: CausePostgresHung, Reason: fmt.Sprintf("postgres hung: no answer for %v", unanswered.Round(time.Second))},
			{Kind: ReleaseLeader, Cause: CausePostgresHung, Reason: "postgres hung; a standby takes over"},
		}}
	}
	return wait(model.RolePrimary, CausePostgresUnanswered, fmt.Sprintf("postgres not answering for %v", unanswered.Round(time.Second)))
}

func decide(o Observation, p Params) Plan {
	localRole := model.RoleOffline
	if o.Running {
		if o.InRecovery {
			localRole = model.RoleReplica
		} else {
			localRole = model.RolePrimary
		}
	}

	// Rule 1: a writable Postgres without a safely held lease is fenced,
	// whatever else is going on. This is the split-brain guard; it must
	// come before anything that trusts the store.
	if o.Running && !o.InRecovery {
		switch {
		case !o.LeaderMine:
			return Plan{Role: model.RoleFenced, Actions: []Action{{Kind: Fence, Cause: CauseNotLeader, Reason: "running as primary without holding the leader key"}}}
		case o.LeaseLeft < p.FenceMargin && o.FailsafeLeft < p.FenceMargin:
			return Plan{Role: model.RoleFenced, Actions: []Action{{Kind: Fence, Cause: CauseLeaseExpiring, Reason: fmt.Sprintf("lease renewal overdue (%v left)", o.LeaseLeft)}}}
		}
	}

	if o.ShuttingDown {
		return decideShutdown(o)
	}

	// Rule 2: without the store, keep what is safe and change nothing.
	if !o.StoreOK {
		if localRole == model.RolePrimary {
			if o.FailsafeLeft >= p.FenceMargin {
				return wait(localRole, CauseStoreUnreachable, "store unreachable; failsafe: every member confirmed it will not take over")
			}
			return wait(localRole, CauseStoreUnreachable, "store unreachable; serving until the lease margin")
		}
		return wait(localRole, CauseStoreUnreachable, "store unreachable")
	}

	if !o.Initialized {
		if o.Region != o.PrimaryRegion {
			return wait(model.RoleOffline, CauseNotInitialized, "cluster not initialized; only a primary-region member may initialize it")
		}
		return Plan{Role: model.RoleOffline, Actions: []Action{{Kind: Bootstrap, Cause: CauseNotInitialized}}}
	}

	if o.LeaderMine {
		return decideLeader(o, p)
	}

	// A member that promised the leader, while the store was down, not to
	// take over keeps its promise even once it sees the store again: the
	// leader may still be writing on the strength of it.
	if o.FailsafePromised && (o.Leader == "" || o.LeaderDead) {
		return wait(localRole, CauseFailsafePromised, "")
	}

	if o.Leader == "" && o.InitializedBy == o.Self && !o.BootstrapDone && (o.Data == DataEmpty || len(o.Sync.Members) == 0) {
		// We claimed initialization but never finished it (or claimed it
		// for data restored into an empty cluster: a restore's seed).
		// Nobody else may bootstrap or lead without our data, so we
		// finish: initdb when the directory is empty, else start what is
		// there as the primary (unless it has led with synchronous
		// standbys, which may hold commits it lacks: then it is elected
		// like anyone). Once the store records a finished
		// bootstrap this never applies again: an empty data directory then
		// means lost data, to be cloned, and a second initdb would start a
		// new history without the acknowledged commits.
		return Plan{Role: model.RoleOffline, Actions: []Action{{Kind: Bootstrap, Cause: CauseBootstrapInterrupted}}}
	}

	if o.Data == DataEmpty {
		if o.Leader == "" || o.Members[o.Leader].PostgresAddr == "" {
			return wait(model.RoleOffline, CauseNoSource, "empty data directory and no leader to clone from")
		}
		return Plan{Role: model.RoleOffline, Actions: []Action{{Kind: Clone, Target: o.Leader, Cause: CauseEmptyData}}}
	}

	if o.Leader == o.Self {
		// The key names us but belongs to a previous incarnation's lease.
		// Postgres is not writable here (rule 1 fenced it), so deleting the
		// key cannot create a second primary; an election follows.
		return Plan{Role: localRole, Actions: []Action{{Kind: RevokeLeader, Cause: CauseStaleOwnKey}}}
	}

	if o.Leader != "" {
		return decideFollower(o, p, localRole)
	}
	return decideElection(o, p, localRole)
}

func decideLeader(o Observation, p Params) Plan {
	if o.LeaseLeft < p.FenceMargin && o.FailsafeLeft < p.FenceMargin {
		acts := []Action{{Kind: ReleaseLeader, Cause: CauseLeaseExpiring, Reason: "lease nearly expired"}}
		if o.Running {
			acts = append([]Action{{Kind: Fence, Cause: CauseLeaseExpiring, Reason: "lease nearly expired"}}, acts...)
		}
		return Plan{Role: model.RoleFenced, Actions: acts}
	}
	if !o.Running {
		if o.Restarts >= p.MaxRestarts {
			return Plan{Role: model.RoleOffline, Actions: []Action{{Kind: ReleaseLeader, Cause: CauseStartFailures, Reason: fmt.Sprintf("postgres failed to start %d times", o.Restarts)}}}
		}
		if o.Restarts > 0 && o.SinceStart < p.RestartDelay*time.Duration(1<<(o.Restarts-1)) {
			return wait(model.RoleOffline, CauseRestartBackoff, "")
		}
		if o.BootstrapUnfinished && !o.BootstrapDone {
			return Plan{Role: model.RoleOffline, Actions: []Action{{Kind: FinishBootstrap, Cause: CauseBootstrapInterrupted}}}
		}
		if o.Data == DataStandby {
			// Start it as a standby first; the next plan promotes it.
			return Plan{Role: model.RoleOffline, Actions: []Action{{Kind: StartStandby, Cause: CauseLeaderKeyHeld, Reason: "leader key held; starting to promote"}}}
		}
		return Plan{Role: model.RoleOffline, Actions: []Action{{Kind: StartPrimary, Cause: CauseLeaderKeyHeld}}}
	}
	if o.InRecovery {
		return Plan{Role: model.RoleReplica, Actions: []Action{{Kind: Promote, Cause: CauseLeaderKeyHeld}}}
	}
	if o.BootstrapUnfinished && !o.BootstrapDone {
		// Our bootstrap started Postgres and stopped before the roles had
		// their passwords: finish it before serving (offline: no proxy
		// routes here) or recording the bootstrap as done.
		return Plan{Role: model.RoleOffline, Actions: []Action{{Kind: FinishBootstrap, Cause: CauseBootstrapInterrupted}}}
	}

	var acts []Action
	idle, idleCause := "", CauseLeading
	// A planned switchover addressed to this leader.
	if sw := o.Switchover; sw != nil {
		if sw.StoppedLSN != 0 || o.SwitchoverAge > p.SwitchoverTTL || sw.From != o.Self {
			acts = append(acts, Action{Kind: ClearSwitchover, Cause: CauseSwitchoverStale})
		} else if t, why, later := switchoverTarget(o, sw.To, sw.AllowSecondaryRegion); t != "" {
			return Plan{Role: model.RolePrimary, Actions: []Action{{Kind: SwitchoverStop, Target: t, Cause: CauseSwitchover}}}
		} else if later && o.SwitchoverAge < p.SwitchoverGrace {
			// A standby that just (re)connected is not streaming in this
			// leader's view yet; refusing at once would fail a rolling
			// restart that waited for it to stream.
			idle, idleCause = "switchover waits: "+why, CauseSwitchoverWaits
		} else {
			acts = append(acts, Action{Kind: ClearSwitchover, Cause: CauseSwitchoverRefused, Reason: "switchover refused: " + why})
		}
	}

	acts = append(acts, syncActions(o, p)...)
	acts = append(acts, slotActions(o)...)
	if !o.BootstrapDone && o.Initialized {
		acts = append(acts, Action{Kind: RecordBootstrap, Cause: CauseBootstrapDone})
	}
	if len(acts) == 0 {
		return wait(model.RolePrimary, idleCause, idle)
	}
	return Plan{Role: model.RolePrimary, Actions: acts}
}

// switchoverTarget picks the member a planned switchover hands over to:
// the requested one if it may lead, else the most caught-up synchronous
// (or streaming, when none is synchronous) primary-region standby. When
// there is none, later says whether one may still appear (a standby not
// streaming yet) rather than never (a target outside the primary region).
func switchoverTarget(o Observation, want string, anyRegion bool) (target, why string, later bool) {
	streaming := map[string]uint64{}
	for _, s := range o.Standbys {
		if s.Streaming {
			streaming[s.ID] = s.FlushLSN
		}
	}
	eligible := func(id string) bool {
		m, ok := o.Members[id]
		_, st := streaming[id]
		return ok && st && (m.Region == o.PrimaryRegion || anyRegion && id == want) && id != o.Self
	}
	if want != "" {
		if !eligible(want) {
			if m, ok := o.Members[want]; ok && m.Region != o.PrimaryRegion && !anyRegion {
				return "", fmt.Sprintf("%s is in %s, outside the primary region %s (use --allow-secondary-region to move the primary region)", want, m.Region, o.PrimaryRegion), false
			}
			return "", fmt.Sprintf("%s is not a standby streaming from the leader", want), true
		}
		return want, "", false
	}
	best, bestLSN := "", uint64(0)
	for id, lsn := range streaming {
		if eligible(id) && (best == "" || lsn > bestLSN || (lsn == bestLSN && id < best)) {
			best, bestLSN = id, lsn
		}
	}
	if best == "" {
		return "", "no streaming standby in the primary region", true
	}
	return best, "", false
}

// syncActions keeps synchronous_standby_names and the sync record in step.
func syncActions(o Observation, p Params) []Action {
	if p.SyncMode == "off" {
		// Record first: once Postgres stops waiting for standbys the
		// leader acknowledges commits alone, and no standby may still be
		// promotable on the record's word by then.
		var acts []Action
		if o.Sync.Leader != o.Self || len(o.Sync.Members) > 0 {
			acts = append(acts, Action{Kind: SetSyncRecord, Cause: CauseSyncSet, Members: []string{}, Reason: "sync mode off"})
		}
		if len(o.SyncNames) > 0 {
			acts = append(acts, Action{Kind: SetSyncNames, Cause: CauseSyncSet, Value: "", Reason: "sync mode off"})
		}
		return acts
	}
	streaming := map[string]bool{}
	for _, s := range o.Standbys {
		if s.Streaming {
			if m, ok := o.Members[s.ID]; ok && m.Region == o.PrimaryRegion {
				streaming[s.ID] = true
			}
		}
	}
	current := set(o.SyncNames)
	record := set(o.Sync.Members)
	if o.Sync.Leader != o.Self {
		record = map[string]bool{}
	}

	// Desired Postgres set: streaming primary-region standbys. In strict
	// mode a listed standby that dropped out stays listed while no other
	// is streaming, so commits wait rather than go on unprotected.
	desired := map[string]bool{}
	for id := range streaming {
		desired[id] = true
	}
	if p.SyncMode == "strict" && len(desired) == 0 {
		for id := range current {
			desired[id] = true
		}
	}

	add := diff(desired, current)
	remove := diff(current, desired)

	// Adding to no synchronous standby: the leader has been acknowledging
	// alone, so nobody may be recorded as promotable before holding all of
	// it. Postgres first (commits now wait for the new standbys; an empty
	// record names nobody), and the record follows below once they flushed
	// past the change.
	if len(add) > 0 && len(current) == 0 && !o.hasPlaceholder() {
		if len(o.Sync.Members) > 0 || o.Sync.Leader != o.Self {
			// A record naming anyone while the leader acknowledges alone
			// is already wrong: empty it before anything else.
			return []Action{{Kind: SetSyncRecord, Cause: CauseSyncSet, Members: []string{}, Reason: "no synchronous standby yet: the record names nobody"}}
		}
		return []Action{{Kind: SetSyncNames, Cause: CauseSyncSet, Value: syncValue(keys(desired), p.SyncMode), Reason: "adding " + strings.Join(add, ",") + " (postgres first: the leader acknowledged alone until now)"}}
	}
	// Adding to a set: record first (a superset record is safe: it only
	// asks candidates to hear from more members), then Postgres.
	if len(add) > 0 {
		union := keys(unionOf(record, desired))
		if !sameSet(record, set(union)) || o.Sync.Leader != o.Self {
			return []Action{{Kind: SetSyncRecord, Cause: CauseSyncSet, Members: union, Reason: "adding " + strings.Join(add, ",")}}
		}
		return []Action{{Kind: SetSyncNames, Cause: CauseSyncSet, Value: syncValue(keys(desired), p.SyncMode), Reason: "adding " + strings.Join(add, ",")}}
	}
	// Removing: Postgres first; the record follows once the remaining
	// members hold everything acknowledged before the change. Except when
	// none remains: from the change on the leader acknowledges alone, so
	// the record must first stop naming anyone promotable.
	if len(remove) > 0 && len(desired) == 0 && (o.Sync.Leader != o.Self || len(o.Sync.Members) > 0) {
		return []Action{{Kind: SetSyncRecord, Cause: CauseSyncSet, Members: []string{}, Reason: "removing " + strings.Join(remove, ",") + ": record first, the leader will acknowledge alone"}}
	}
	if len(remove) > 0 {
		return []Action{{Kind: SetSyncNames, Cause: CauseSyncSet, Value: syncValue(keys(desired), p.SyncMode), Reason: "removing " + strings.Join(remove, ",")}}
	}
	if p.SyncMode == "strict" && len(current) == 0 && !o.hasPlaceholder() {
		return []Action{{Kind: SetSyncNames, Cause: CauseSyncSet, Value: syncValue(nil, p.SyncMode), Reason: "strict mode without a standby"}}
	}
	if !sameSet(record, current) || o.Sync.Leader != o.Self {
		// The record follows Postgres once every member Postgres waits
		// for flushed past the change: a shrink (record ⊋ current), or a
		// start from no standby (record empty).
		for id := range current {
			if flushOf(o, id) < o.SyncChangeLSN {
				return nil // wait for catch-up
			}
		}
		return []Action{{Kind: SetSyncRecord, Cause: CauseSyncSet, Members: keys(current), Reason: "record follows postgres"}}
	}
	return nil
}

func (o Observation) hasPlaceholder() bool {
	for _, n := range o.SyncNames {
		if n == StrictPlaceholder {
			return true
		}
	}
	return false
}

func flushOf(o Observation, id string) uint64 {
	for _, s := range o.Standbys {
		if s.ID == id {
			return s.FlushLSN
		}
	}
	return 0
}

// syncValue renders synchronous_standby_names for a quorum of one.
func syncValue(ids []string, mode string) string {
	if len(ids) == 0 {
		if mode == "strict" {
			return fmt.Sprintf("ANY 1 (%q)", StrictPlaceholder)
		}
		return ""
	}
	q := make([]string, len(ids))
	for i, id := range ids {
		q[i] = fmt.Sprintf("%q", id)
	}
	return fmt.Sprintf("ANY 1 (%s)", strings.Join(q, ", "))
}

func slotActions(o Observation) []Action {
	want := map[string]bool{}
	for _, id := range o.Registered {
		if id == o.Self {
			continue
		}
		// A cascading member streams from its region's hub, which keeps
		// no slots; a slot here would never advance and would pin WAL.
		if r := o.RegisteredRegions[id]; r != "" && r != o.PrimaryRegion && o.CascadeRegions[r] && hubOf(o, r) != id && hubOf(o, r) != "" {
			continue
		}
		want[SlotName(id)] = true
	}
	have := set(o.Slots)
	var acts []Action
	for _, s := range diff(want, have) {
		acts = append(acts, Action{Kind: CreateSlot, Target: s, Cause: CauseMemberRegistered})
	}
	for _, s := range diff(have, want) {
		if strings.HasPrefix(s, "petrel_") {
			acts = append(acts, Action{Kind: DropSlot, Target: s, Cause: CauseMemberGone})
		}
	}
	return acts
}

func decideFollower(o Observation, p Params, localRole string) Plan {
	leader := o.Leader
	if _, ok := o.Members[leader]; !ok {
		return wait(localRole, CauseLeaderUnpublished, "leader "+leader+" has not published its address")
	}
	// A standby whose leader is certainly dead may clear the key at once
	// instead of waiting for the lease: only a synchronous candidate does,
	// and the election that follows still applies the quorum rule.
	if o.LeaderDead && eligible(o) {
		return Plan{Role: localRole, Actions: []Action{{Kind: RevokeLeader, Cause: CauseLeaderDead}}}
	}
	if o.Data == DataPrimary {
		// Former primary: its timeline may have diverged. pg_rewind is a
		// no-op when it has not. Its source (or a clone's) must have
		// finished promoting: right after a switchover or failover the
		// key names the new leader before its Postgres leaves recovery.
		if !o.LeaderPromoted {
			return wait(model.RoleOffline, CauseLeaderPromoting, "waiting for "+leader+" to finish promoting before rewinding against it")
		}
		switch lr := o.LastRewind; {
		case lr.Result == RewindImpossible:
			return Plan{Role: model.RoleOffline, Actions: []Action{{Kind: Reclone, Target: leader, Cause: CauseRewindImpossible}}}
		case lr.retryLater(p):
			return wait(model.RoleOffline, CauseRewindRetry, "")
		}
		return Plan{Role: model.RoleOffline, Actions: []Action{{Kind: Rewind, Target: leader, Cause: CauseFormerPrimary}}}
	}
	up := upstream(o)
	if !o.Running {
		if o.Restarts > 0 && o.SinceStart < p.RestartDelay*time.Duration(1<<min(o.Restarts-1, 5)) {
			return wait(model.RoleOffline, CauseRestartBackoff, "")
		}
		if o.Restarts >= p.MaxRestarts+2 {
			return Plan{Role: model.RoleOffline, Actions: []Action{{Kind: Reclone, Target: leader, Cause: CauseStartFailures, Reason: "postgres keeps failing to start as a standby"}}}
		}
		return Plan{Role: model.RoleOffline, Actions: []Action{{Kind: StartStandby, Target: up, Cause: CauseFollowing, Reason: "following " + up}}}
	}
	if o.Following != up {
		if o.Following == leader && !o.Streaming && o.NotStreamingFor < p.StuckAfter {
			// We fell back from a broken hub to the leader; give the leader
			// a fair chance before trying the hub again.
			return wait(model.RoleReplica, CauseHubUnavailable, "streaming from the leader while the region's hub is unavailable")
		}
		return Plan{Role: model.RoleReplica, Actions: []Action{{Kind: Follow, Target: up, Cause: CauseUpstream, Reason: "upstream is " + up}}}
	}
	if up == leader && !o.Streaming && o.UpstreamLacksWAL {
		// The leader no longer has the WAL this standby needs: waiting
		// StuckAfter, then rewinding, would cost minutes and change
		// nothing (a hub that lacks it is left for the leader below).
		return Plan{Role: model.RoleReplica, Actions: []Action{{Kind: Reclone, Target: leader, Cause: CauseUpstreamLacksWAL}}}
	}
	if up != leader && !o.Streaming && o.NotStreamingFor > p.StuckAfter/2 {
		return Plan{Role: model.RoleReplica, Actions: []Action{{Kind: Follow, Target: leader, Cause: CauseHubUnavailable, Reason: "region hub " + up + " is not serving WAL; following the leader"}}}
	}
	if !o.Streaming && o.NotStreamingFor > p.StuckAfter {
		switch lr := o.LastRewind; {
		case lr.Result == RewindImpossible:
			return Plan{Role: model.RoleReplica, Actions: []Action{{Kind: Reclone, Target: leader, Cause: CauseRewindImpossible}}}
		case lr.Result == RewindDone && lr.Cause == CauseNotStreaming:
			// pg_rewind may find nothing to do while the local WAL past
			// the last checkpoint is unusable: only a clone helps then.
			return Plan{Role: model.RoleReplica, Actions: []Action{{Kind: Reclone, Target: leader, Cause: CauseRewindDidNotHelp}}}
		case lr.retryLater(p):
			// The leader could not be reached for the rewind: keep the
			// data directory and keep trying to stream meanwhile.
			return wait(model.RoleReplica, CauseRewindRetry, "")
		}
		return Plan{Role: model.RoleReplica, Actions: []Action{{Kind: Rewind, Target: leader, Cause: CauseNotStreaming, Reason: fmt.Sprintf("not streaming for %v", o.NotStreamingFor.Round(time.Second))}}}
	}
	return wait(model.RoleReplica, CauseFollowing, "following "+leader)
}

// upstream is the member this standby streams from: the leader, or, in a
// cascading region outside the primary region, the region's hub (the
// alive member of the region with the lowest id), which itself follows
// the leader. Followers of a hub survive a failover untouched: the hub
// re-points and the new timeline cascades.
func upstream(o Observation) string {
	if !o.Cascade || o.Region == o.PrimaryRegion {
		return o.Leader
	}
	hub := hubOf(o, o.Region)
	if hub == "" || hub == o.Self {
		return o.Leader
	}
	return hub
}

// hubOf is the alive member of region with the lowest id (not the leader).
func hubOf(o Observation, region string) string {
	hub := ""
	for id, m := range o.Members {
		if m.Region == region && id != o.Leader && (hub == "" || id < hub) {
			hub = id
		}
	}
	return hub
}

// eligible says whether this node may ever be promoted automatically with
// the current sync record.
func eligible(o Observation) bool {
	if o.Region != o.PrimaryRegion || o.Data == DataEmpty {
		return false
	}
	if len(o.Sync.Members) == 0 {
		return o.Sync.Leader == o.Self
	}
	for _, m := range o.Sync.Members {
		if m == o.Self {
			return true
		}
	}
	return false
}

func decideElection(o Observation, p Params, localRole string) Plan {
	// A planned switchover in progress: only its target may take over.
	if sw := o.Switchover; sw != nil && sw.StoppedLSN != 0 && o.SwitchoverAge <= p.SwitchoverTTL {
		if sw.Target != o.Self {
			return wait(localRole, CauseSwitchoverInProgress, "switchover to "+sw.Target+" in progress")
		}
		if !o.Running {
			return Plan{Role: localRole, Actions: []Action{{Kind: StartStandby, Cause: CauseSwitchoverTarget}}}
		}
		if o.LSN < sw.StoppedLSN {
			return wait(localRole, CauseCatchingUp, "")
		}
		act := Action{Kind: AcquireLeader, Cause: CauseSwitchoverTarget, Reason: "switchover target caught up"}
		if sw.AllowSecondaryRegion && o.Region != o.PrimaryRegion {
			// The hand-over was allowed outside the primary region: the
			// region moves with the key, in one transaction.
			act.Region = o.Region
		}
		return Plan{Role: localRole, Actions: []Action{act}}
	}

	if !eligible(o) {
		return wait(localRole, CauseNotCandidate, "no leader; not a promotion candidate")
	}
	if o.Data == DataPrimary && o.Sync.Leader == o.Self && len(o.Sync.Members) == 0 {
		// The last leader, with no synchronous standby: nobody else can
		// hold its commits, so it takes the key back and restarts.
		return Plan{Role: localRole, Actions: []Action{{Kind: AcquireLeader, Cause: CauseLastLeader}}}
	}
	if o.Running && (o.Streaming || o.Following != "") {
		// Stop streaming so our position is final before comparing. A
		// receiver that is merely between connections is not final: while
		// primary_conninfo still names the old leader it may reconnect and
		// confirm more commits to a hung primary.
		return Plan{Role: localRole, Actions: []Action{{Kind: Follow, Target: "", Cause: CauseElection, Reason: "leader lost; freezing position"}}}
	}
	if !o.Running {
		return Plan{Role: localRole, Actions: []Action{{Kind: StartStandby, Cause: CauseElection, Reason: "leader lost; starting to compare positions"}}}
	}
	// Quorum: hear final positions from |S|-K+1 members of S.
	k := o.Sync.K
	if k < 1 {
		k = 1
	}
	need := len(o.Sync.Members) - k + 1
	heard := 0
	for _, id := range o.Sync.Members {
		if id == o.Self {
			heard++
			continue
		}
		peer, ok := o.Peers[id]
		// A peer whose Postgres does not answer reports no position
		// (timeline 0): it may hold commits we lack, so it is not heard.
		if !ok || !peer.Reachable || peer.Streaming || !peer.Frozen || peer.Timeline == 0 {
			continue
		}
		heard++
		if peer.Timeline > o.Timeline || (peer.Timeline == o.Timeline && (peer.LSN > o.LSN || (peer.LSN == o.LSN && id < o.Self))) {
			return wait(localRole, CausePeerAhead, fmt.Sprintf("%s is further ahead (%d vs %d)", id, peer.LSN, o.LSN))
		}
	}
	if heard < need {
		return wait(localRole, CauseNoQuorum, fmt.Sprintf("quorum: heard %d of the %d synchronous members needed", heard, need))
	}
	return Plan{Role: localRole, Actions: []Action{{Kind: AcquireLeader, Cause: CauseMostAdvanced, Reason: fmt.Sprintf("most advanced of %d synchronous members heard", heard)}}}
}

func set(xs []string) map[string]bool {
	m := make(map[string]bool, len(xs))
	for _, x := range xs {
		if x != StrictPlaceholder {
			m[x] = true
		}
	}
	return m
}

func keys(m map[string]bool) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func diff(a, b map[string]bool) []string {
	var out []string
	for k := range a {
		if !b[k] {
			out = append(out, k)
		}
	}
	sort.Strings(out)
	return out
}

func unionOf(a, b map[string]bool) map[string]bool {
	m := map[string]bool{}
	for k := range a {
		m[k] = true
	}
	for k := range b {
		m[k] = true
	}
	return m
}

func sameSet(a, b map[string]bool) bool {
	if len(a) != len(b) {
		return false
	}
	for k := range a {
		if !b[k] {
			return false
		}
	}
	return true
}
