package engine

import (
	"fmt"
	"strings"
)

// Kind names an action.
type Kind string

const (
	Wait      Kind = "wait"      // nothing to do; Cause says why
	Bootstrap Kind = "bootstrap" // claim the cluster's info key, initdb, then AcquireLeader
	// FinishBootstrap completes this leader's own bootstrap that stopped
	// between initdb and the roles' passwords (the leader key is held
	// already): the roles, or initdb again if it had not finished.
	FinishBootstrap Kind = "finish-bootstrap"
	Clone           Kind = "clone"           // pg_basebackup from Target
	StartStandby    Kind = "start-standby"   // configure to follow Target and start
	StartPrimary    Kind = "start-primary"   // start Postgres as primary (leader key held)
	Follow          Kind = "follow"          // re-point primary_conninfo to Target ("" = stop streaming) and reload
	AcquireLeader   Kind = "acquire-leader"  // CAS: leader absent && sync rev == Revs.Sync → leader=self, sync={self,[]}; Region: also move the primary region (info rev == Revs.Info)
	Promote         Kind = "promote"         // pg promote + checkpoint
	Fence           Kind = "fence"           // stop Postgres at once (immediate)
	StopPostgres    Kind = "stop-postgres"   // stop Postgres cleanly (fast: walsenders send everything first)
	ReleaseLeader   Kind = "release-leader"  // delete own leader key
	RevokeLeader    Kind = "revoke-leader"   // delete a dead leader's key (CAS on Revs.Leader)
	Rewind          Kind = "rewind"          // stop, pg_rewind from Target, then start as standby
	Reclone         Kind = "reclone"         // wipe and Clone from Target
	SetSyncRecord   Kind = "set-sync-record" // CAS sync key to Members (rev Revs.Sync)
	SetSyncNames    Kind = "set-sync-names"  // synchronous_standby_names = Value
	CreateSlot      Kind = "create-slot"
	DropSlot        Kind = "drop-slot"
	SwitchoverStop  Kind = "switchover-stop" // stop cleanly, record the stop LSN for Target (CAS on Revs.Switchover; 0: no record yet), release the key
	ClearSwitchover Kind = "clear-switchover"
	SetReadOnly     Kind = "set-read-only" // Value "on" or "off": default_transaction_read_only, reloaded
	Kill            Kind = "kill"          // SIGKILL the postmaster and its backends (a hung server ignores pg_ctl)
	// RecordBootstrap notes in the info key (CAS on Revs.Info) that initdb
	// completed, with the system identifier: from then on no member ever
	// runs initdb for the cluster again, whatever its data directory.
	RecordBootstrap Kind = "record-bootstrap"
	// RestartPostgres stops Postgres (fast), rewrites petrel-user.conf and
	// starts it again as what it was: the restart a request asked for.
	RestartPostgres Kind = "restart-postgres"
	// ClearRestart deletes this node's restart request (CAS on
	// Revs.Restart): done, or refused (Cause says which).
	ClearRestart Kind = "clear-restart"
)

// Cause says why an action or a wait was planned. Code acts on the Cause
// (and the Kind), never on Reason, which is free text for people.
type Cause int

const (
	CauseNone Cause = iota
	// Waits.
	CauseStoreUnreachable     // the store cannot be read or written: change nothing
	CauseNotInitialized       // the cluster has no info key yet
	CauseFailsafePromised     // this member promised the leader not to take over
	CauseNoSource             // empty data directory and nobody to clone from
	CauseLeaderUnpublished    // the leader's member record is missing
	CauseRestartBackoff       // waiting before restarting a Postgres that failed
	CauseFollowing            // a healthy standby
	CauseLeading              // a healthy leader
	CauseSwitchoverWaits      // a switchover request waits for a target to stream
	CauseSwitchoverInProgress // a hand-over to another member is under way
	CauseCatchingUp           // the switchover target waits for the stop LSN
	CauseNotCandidate         // no leader, and this member may not be promoted
	CausePeerAhead            // a heard synchronous member is further ahead
	CauseNoQuorum             // not enough synchronous members heard
	CausePostgresUnanswered   // the local Postgres answers nothing
	CauseRewindRetry          // the last rewind could not reach its source: retry later, data kept
	CauseStopped              // shutting down, and nothing is left to do
	// Actions.
	CauseNotLeader             // writable without holding the leader key (rule 1)
	CauseLeaseExpiring         // the lease (or failsafe window) runs out
	CauseBootstrapInterrupted  // this member claimed initialization and never finished it
	CauseEmptyData             // no data directory: clone it
	CauseStaleOwnKey           // the leader key is this node's previous run's
	CauseLeaderDead            // the leader's Postgres and agent refuse connections
	CauseStartFailures         // Postgres keeps failing to start
	CausePostgresHung          // the leader's Postgres answered nothing for HangAfter
	CauseLeaderKeyHeld         // the key is held: run Postgres as the primary
	CauseSwitchover            // a planned switchover hands over to Target
	CauseShutdown              // the agent is stopping: hand over or let go
	CauseSwitchoverStale       // a switchover record too old or not addressed to this leader
	CauseSwitchoverRefused     // no member the switchover may go to
	CauseSwitchoverTarget      // this member is the hand-over's target
	CauseLastLeader            // no synchronous standby: the last leader takes the key back
	CauseMostAdvanced          // the most advanced of the synchronous members heard
	CauseElection              // no leader: freeze, start, compare positions
	CauseUpstream              // the member to stream from changed
	CauseHubUnavailable        // the region's hub does not serve WAL
	CauseFormerPrimary         // a former primary rejoins: rewind (a no-op when nothing diverged)
	CauseNotStreaming          // a standby that cannot stream from a live leader: rewind
	CauseRewindImpossible      // the histories diverged beyond what pg_rewind can fix: re-clone
	CauseRewindDidNotHelp      // rewound for not streaming, and still not streaming: re-clone
	CauseUpstreamLacksWAL      // the leader removed WAL this standby needs: re-clone
	CauseSyncSet               // keeping synchronous_standby_names and the sync record in step
	CauseMemberRegistered      // a registered member needs a slot
	CauseMemberGone            // a slot of a member no longer registered
	CauseBootstrapDone         // record the finished initdb
	CauseDiskLow               // the disk is nearly full: read-only
	CauseDiskBack              // space is back: writable again
	CauseRestartRequested      // a restart request, honoured
	CauseNothingPending        // a restart request with nothing waiting for a restart: cleared
	CauseRestartRefusedLeader  // a restart request to the leader (not in place): refused
	CauseRestartRefusedSetting // a pending setting petrel did not write: refused
	// A wait: a former primary waits for the new leader to finish its
	// promotion before rewinding against it.
	CauseLeaderPromoting
)

var causeNames = map[Cause]string{
	CauseStoreUnreachable: "store unreachable", CauseNotInitialized: "cluster not initialized",
	CauseFailsafePromised: "failsafe: promised the leader not to take over", CauseNoSource: "nothing to clone from",
	CauseLeaderUnpublished: "leader has not published its address", CauseRestartBackoff: "waiting before restarting postgres",
	CauseFollowing: "following", CauseLeading: "leading", CauseSwitchoverWaits: "switchover waits",
	CauseSwitchoverInProgress: "switchover in progress", CauseCatchingUp: "switchover target catching up",
	CauseNotCandidate: "not a promotion candidate", CausePeerAhead: "a peer is further ahead", CauseNoQuorum: "no quorum",
	CausePostgresUnanswered: "postgres not answering", CauseRewindRetry: "rewind source unavailable; retrying later",
	CauseStopped: "stopped", CauseNotLeader: "writable without the leader key", CauseLeaseExpiring: "lease running out",
	CauseBootstrapInterrupted: "finishing an interrupted bootstrap", CauseEmptyData: "empty data directory",
	CauseStaleOwnKey: "leader key left by this node's previous run", CauseLeaderDead: "leader's postgres and agent refuse connections",
	CauseStartFailures: "postgres keeps failing to start", CausePostgresHung: "postgres hung", CauseLeaderKeyHeld: "leader key held",
	CauseSwitchover: "planned switchover", CauseShutdown: "shutting down", CauseSwitchoverStale: "stale or misaddressed switchover request",
	CauseSwitchoverRefused: "switchover refused", CauseSwitchoverTarget: "switchover target", CauseLastLeader: "last leader, no synchronous standby",
	CauseMostAdvanced: "most advanced synchronous member", CauseElection: "leader lost", CauseUpstream: "upstream changed",
	CauseHubUnavailable: "region hub unavailable", CauseFormerPrimary: "former primary rejoining", CauseNotStreaming: "not streaming",
	CauseRewindImpossible: "rewind impossible: histories diverged", CauseRewindDidNotHelp: "rewind did not help: still cannot stream",
	CauseUpstreamLacksWAL: "the leader removed WAL this standby needs",
	CauseSyncSet:          "synchronous set", CauseMemberRegistered: "member registered", CauseMemberGone: "member gone",
	CauseBootstrapDone: "the cluster's data exists: no initdb from now on", CauseDiskLow: "disk nearly full", CauseDiskBack: "disk space back",
	CauseRestartRequested: "restart requested", CauseNothingPending: "restart request: nothing pending",
	CauseRestartRefusedLeader:  "restart request refused: the leader restarts only after a switchover (or in place)",
	CauseRestartRefusedSetting: "restart request refused: a pending setting petrel did not write",
	CauseLeaderPromoting:       "the leader is still promoting: rewinding against it waits",
}

func (c Cause) String() string {
	if s, ok := causeNames[c]; ok {
		return s
	}
	return fmt.Sprintf("cause(%d)", int(c))
}

// Revs are the store revisions an Observation was read at. Every action
// of a Plan carries those of the Observation it was decided on, and each
// store write it implies is a compare-and-swap on the one it names
// (caller rule 3).
type Revs struct {
	Leader     int64 // the leader key's mod revision (0: absent)
	Sync       int64 // the sync record's
	Info       int64 // the info key's
	Switchover int64 // the switchover record's (0: absent)
	Restart    int64 // this node's restart request's (0: absent)
}

// Action is one step of a Plan.
type Action struct {
	Kind    Kind
	Cause   Cause
	Target  string   // member to clone/follow/rewind from, slot name, switchover target
	Members []string // SetSyncRecord
	Value   string   // SetSyncNames, SetReadOnly; Promote: the synchronous_standby_names to start with
	// Region (AcquireLeader): the cluster's primary region moves to it in
	// the same transaction (a switchover allowed outside the region).
	Region string
	// Slot is the replication slot primary_conninfo names for Target
	// (Clone, StartStandby, Follow, Rewind, Reclone): this member's on
	// the leader, none when it cascades from a regional hub (hubs keep
	// no slots).
	Slot string
	Revs Revs
	// Reason adds detail for people (positions, durations); nothing
	// branches on it.
	Reason string
}

// Why is the action's reason for people: Reason, else its Cause.
func (a Action) Why() string {
	if a.Reason != "" {
		return a.Reason
	}
	return a.Cause.String()
}

// rev is the revision the action's compare-and-swap is conditioned on,
// for display (0: none).
func (a Action) rev() int64 {
	switch a.Kind {
	case AcquireLeader, SetSyncRecord, Bootstrap:
		return a.Revs.Sync
	case RevokeLeader:
		return a.Revs.Leader
	case RecordBootstrap:
		return a.Revs.Info
	case SwitchoverStop, ClearSwitchover:
		return a.Revs.Switchover
	case ClearRestart:
		return a.Revs.Restart
	}
	return 0
}

func (a Action) String() string {
	var b strings.Builder
	b.WriteString(string(a.Kind))
	if a.Target != "" {
		fmt.Fprintf(&b, " target=%s", a.Target)
	}
	if a.Members != nil {
		fmt.Fprintf(&b, " members=[%s]", strings.Join(a.Members, ","))
	}
	if a.Kind == SetSyncNames || a.Kind == SetReadOnly {
		fmt.Fprintf(&b, " value=%q", a.Value)
	}
	if a.Region != "" {
		fmt.Fprintf(&b, " region=%s info-rev=%d", a.Region, a.Revs.Info)
	}
	if r := a.rev(); r != 0 && a.Kind != Bootstrap {
		fmt.Fprintf(&b, " rev=%d", r)
	}
	if a.Reason != "" || a.Cause != CauseNone {
		fmt.Fprintf(&b, " (%s)", a.Why())
	}
	return b.String()
}

// Plan is the ordered list of actions, plus the role the node should
// report while it runs.
type Plan struct {
	Role    string
	Actions []Action
}

func (p Plan) String() string {
	parts := make([]string, len(p.Actions))
	for i, a := range p.Actions {
		parts[i] = a.String()
	}
	return p.Role + ": " + strings.Join(parts, "; ")
}

// Idle says whether the plan only waits.
func (p Plan) Idle() bool {
	for _, a := range p.Actions {
		if a.Kind != Wait {
			return false
		}
	}
	return true
}

func wait(role string, cause Cause, reason string) Plan {
	return Plan{Role: role, Actions: []Action{{Kind: Wait, Cause: cause, Reason: reason}}}
}
