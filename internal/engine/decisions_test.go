package engine

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/petrel-db/petrel/internal/model"
)

// formerPrimary is scl1 back after a failover to scl2: stopped, its data
// a primary's.
func formerPrimary() Observation {
	o := base()
	o.Self, o.Leader, o.Running, o.InRecovery, o.Data, o.Streaming, o.Following = "scl1", "scl2", false, false, DataPrimary, false, "?"
	o.LeaderPromoted = true
	o.Sync = model.Sync{Leader: "scl2", Members: []string{"scl3"}, K: 1}
	return o
}

// stuckStandby is scl2 not streaming from a live leader for a while.
func stuckStandby() Observation {
	o := base()
	o.Streaming, o.NotStreamingFor = false, 20*time.Second
	return o
}

func TestRewindOrReclone(t *testing.T) {
	p := DefaultParams()
	with := func(f func() Observation, lr RewindOutcome) func() Observation {
		return func() Observation { o := f(); o.LastRewind = lr; return o }
	}
	tests := []struct {
		name  string
		obs   func() Observation
		want  string
		cause Cause
	}{
		{"a former primary rewinds", formerPrimary, "rewind:scl2", CauseFormerPrimary},
		{"... once the new leader has finished promoting", func() Observation { o := formerPrimary(); o.LeaderPromoted = false; return o }, "wait", CauseLeaderPromoting},
		{"... nor re-clones from it before", func() Observation {
			o := with(formerPrimary, RewindOutcome{Result: RewindImpossible, Cause: CauseFormerPrimary, Ago: time.Second})()
			o.LeaderPromoted = false
			return o
		}, "wait", CauseLeaderPromoting},
		{"source unreachable a moment ago: wait, keep the data", with(formerPrimary, RewindOutcome{Result: RewindUnavailable, Cause: CauseFormerPrimary, Ago: time.Second}), "wait", CauseRewindRetry},
		{"source unreachable a while ago: rewind again", with(formerPrimary, RewindOutcome{Result: RewindUnavailable, Cause: CauseFormerPrimary, Ago: p.RewindRetry}), "rewind:scl2", CauseFormerPrimary},
		{"histories diverged: re-clone", with(formerPrimary, RewindOutcome{Result: RewindImpossible, Cause: CauseFormerPrimary, Ago: time.Second}), "reclone:scl2", CauseRewindImpossible},
		{"a stuck standby rewinds", stuckStandby, "rewind:scl1", CauseNotStreaming},
		{"a stuck standby whose rewind found the leader unreachable keeps its data and waits", with(stuckStandby, RewindOutcome{Result: RewindUnavailable, Cause: CauseNotStreaming, Ago: time.Second}), "wait", CauseRewindRetry},
		{"... and rewinds again later", with(stuckStandby, RewindOutcome{Result: RewindUnavailable, Cause: CauseNotStreaming, Ago: 2 * p.RewindRetry}), "rewind:scl1", CauseNotStreaming},
		{"the retry backs off after failures in a row", with(stuckStandby, RewindOutcome{Result: RewindUnavailable, Cause: CauseNotStreaming, Ago: 3 * p.RewindRetry, Failures: 3}), "wait", CauseRewindRetry},
		{"... at most 16 times RewindRetry", with(stuckStandby, RewindOutcome{Result: RewindUnavailable, Cause: CauseNotStreaming, Ago: 16 * p.RewindRetry, Failures: 40}), "rewind:scl1", CauseNotStreaming},
		{"a stuck standby whose rewind is impossible re-clones", with(stuckStandby, RewindOutcome{Result: RewindImpossible, Cause: CauseNotStreaming}), "reclone:scl1", CauseRewindImpossible},
		{"a rewind for not streaming that did not help: re-clone", with(stuckStandby, RewindOutcome{Result: RewindDone, Cause: CauseNotStreaming}), "reclone:scl1", CauseRewindDidNotHelp},
		{"a former primary's successful rewind, then stuck: rewind for not streaming first", with(stuckStandby, RewindOutcome{Result: RewindDone, Cause: CauseFormerPrimary}), "rewind:scl1", CauseNotStreaming},
		{"the leader removed the WAL a rewound former primary needs: re-clone at once", func() Observation {
			o := with(stuckStandby, RewindOutcome{Result: RewindDone, Cause: CauseFormerPrimary})()
			o.NotStreamingFor, o.UpstreamLacksWAL = time.Second, true
			return o
		}, "reclone:scl1", CauseUpstreamLacksWAL},
		{"... but not while it streams", func() Observation {
			o := base()
			o.UpstreamLacksWAL = true
			return o
		}, "wait", CauseFollowing},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			plan := Decide(tc.obs(), p)
			if got := kinds(plan); got != tc.want || plan.Actions[0].Cause != tc.cause {
				t.Fatalf("plan %s (%q, cause %v), want %q cause %v", plan, got, plan.Actions[0].Cause, tc.want, tc.cause)
			}
		})
	}
}

func TestActionsCarryRevisions(t *testing.T) {
	o := leader()
	o.LeaderRev, o.SyncRev, o.InfoRev, o.SwitchoverRev, o.RestartRev = 10, 11, 3, 12, 13
	o.BootstrapDone = false
	o.SyncNames = nil // the record follows and the bootstrap is recorded: two writes
	plan := Decide(o, DefaultParams())
	if len(plan.Actions) < 2 {
		t.Fatalf("want several actions: %s", plan)
	}
	for _, a := range plan.Actions {
		if a.Revs != (Revs{Leader: 10, Sync: 11, Info: 3, Switchover: 12, Restart: 13}) {
			t.Fatalf("%s carries %+v, not the observation's revisions", a, a.Revs)
		}
	}
}

func TestRegionMove(t *testing.T) {
	o := base()
	o.Self, o.Region, o.Leader, o.LeaderRev, o.Following, o.Streaming = "ord1", "ord", "", 0, "", false
	o.InfoRev, o.SyncRev, o.SwitchoverRev = 3, 11, 12
	o.Switchover = &model.Switchover{From: "scl1", To: "ord1", Target: "ord1", StoppedLSN: 900, AllowSecondaryRegion: true}
	plan := Decide(o, DefaultParams())
	a := plan.Actions[0]
	if a.Kind != AcquireLeader || a.Region != "ord" || a.Revs.Info != 3 || a.Revs.Sync != 11 || a.Cause != CauseSwitchoverTarget {
		t.Fatalf("the allowed hand-over target outside the primary region must acquire and move the region on the observed revisions: %s %+v", plan, a)
	}
	// Inside the primary region nothing moves, allowed or not.
	o.Self, o.Region = "scl2", "scl"
	o.Switchover.To, o.Switchover.Target = "scl2", "scl2"
	if a := Decide(o, DefaultParams()).Actions[0]; a.Kind != AcquireLeader || a.Region != "" {
		t.Fatalf("a target in the primary region moves nothing: %s", a)
	}
	// Not allowed: the region stays, and the member outside never acquires.
	o.Self, o.Region, o.Switchover = "ord1", "ord", &model.Switchover{From: "scl1", To: "ord1", Target: "ord1", StoppedLSN: 900}
	if a := Decide(o, DefaultParams()).Actions[0]; a.Kind == AcquireLeader && a.Region != "" {
		t.Fatalf("a hand-over not allowed outside the region moved it: %s", a)
	}
}

func TestShutdown(t *testing.T) {
	p := DefaultParams()
	shut := func(f func() Observation) func() Observation {
		return func() Observation { o := f(); o.ShuttingDown = true; return o }
	}
	tests := []struct {
		name string
		obs  func() Observation
		want string
	}{
		{"a leader hands over to the most caught-up primary-region standby", shut(leader), "switchover-stop:scl2"},
		{"ties go to the lower id (the engine's ranking)", shut(func() Observation {
			o := leader()
			o.Standbys = []Standby{{ID: "scl3", Streaming: true, FlushLSN: 1000}, {ID: "scl2", Streaming: true, FlushLSN: 1000}}
			return o
		}), "switchover-stop:scl2"},
		{"never to a member outside the primary region", shut(func() Observation {
			o := leader()
			o.Standbys = []Standby{{ID: "ord1", Streaming: true, FlushLSN: 2000}, {ID: "scl3", Streaming: true, FlushLSN: 900}}
			return o
		}), "switchover-stop:scl3"},
		{"no streaming standby: stop, then let the key go", shut(func() Observation {
			o := leader()
			o.Standbys = []Standby{{ID: "scl2", Streaming: false, FlushLSN: 1000}}
			return o
		}), "stop-postgres release-leader"},
		{"a switchover record already there: stop and let go", shut(func() Observation {
			o := leader()
			o.Switchover, o.SwitchoverRev = &model.Switchover{From: "scl1"}, 12
			return o
		}), "stop-postgres release-leader"},
		{"store unreachable: stop, the key expires with the lease", shut(func() Observation {
			o := leader()
			o.StoreOK = false
			return o
		}), "stop-postgres"},
		{"stopped leader: let the key go", shut(func() Observation {
			o := leader()
			o.Running = false
			return o
		}), "release-leader"},
		{"a replica stops", shut(base), "stop-postgres"},
		{"nothing left", shut(func() Observation {
			o := base()
			o.Running = false
			return o
		}), "wait"},
		{"rule 1 first: a writable member without the key fences", shut(func() Observation {
			o := leader()
			o.LeaderMine = false
			return o
		}), "fence"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			plan := Decide(tc.obs(), p)
			if got := kinds(plan); got != tc.want {
				t.Fatalf("plan %s (%q), want %q", plan, got, tc.want)
			}
			if a := plan.Actions[0]; a.Kind == SwitchoverStop && (a.Cause != CauseShutdown || a.Revs.Switchover != 0) {
				t.Fatalf("a shutdown hand-over creates the record (revision 0): %+v", a)
			}
		})
	}
}

func TestRestartRequests(t *testing.T) {
	p := DefaultParams()
	req := func(f func() Observation, inPlace bool, pending ...string) func() Observation {
		return func() Observation {
			o := f()
			o.Restart, o.RestartRev = &RestartRequest{InPlace: inPlace}, 21
			o.PendingRestart, o.PetrelSettings = pending, []string{"max_connections", "shared_buffers", "work_mem"}
			return o
		}
	}
	tests := []struct {
		name  string
		obs   func() Observation
		want  string
		cause Cause
	}{
		{"a streaming replica restarts for a pending setting petrel wrote", req(base, false, "shared_buffers"), "restart-postgres clear-restart", CauseRestartRequested},
		{"nothing pending: cleared", req(base, false), "clear-restart", CauseNothingPending},
		{"nothing pending but forced (a rolling restart): restarts", func() Observation {
			o := req(base, false)()
			o.Restart.Force = true
			return o
		}, "restart-postgres clear-restart", CauseRestartRequested},
		{"forced, but a setting petrel did not write is pending: refused", func() Observation {
			o := req(base, false, "shared_preload_libraries")()
			o.Restart.Force = true
			return o
		}, "clear-restart", CauseRestartRefusedSetting},
		{"never to apply a setting petrel did not write", req(base, false, "shared_buffers", "shared_preload_libraries"), "clear-restart", CauseRestartRefusedSetting},
		{"a replica that does not stream waits", req(func() Observation {
			o := base()
			o.Streaming, o.NotStreamingFor = false, time.Second
			return o
		}, false, "shared_buffers"), "wait", CauseFollowing},
		{"no restart during a switchover", req(func() Observation {
			o := base()
			o.Switchover, o.SwitchoverRev = &model.Switchover{From: "scl1"}, 12
			return o
		}, false, "shared_buffers"), "wait", CauseFollowing},
		{"the leader refuses a plain request", req(leader, false, "shared_buffers"), "clear-restart", CauseRestartRefusedLeader},
		{"the leader restarts in place when asked so", req(leader, true, "max_connections"), "restart-postgres clear-restart", CauseRestartRequested},
		{"busy: the request waits for an idle plan", req(stuckStandby, false, "shared_buffers"), "rewind:scl1", CauseNotStreaming},
		{"store unreachable: nothing", req(func() Observation {
			o := base()
			o.StoreOK = false
			return o
		}, false, "shared_buffers"), "wait", CauseStoreUnreachable},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			plan := Decide(tc.obs(), p)
			got := kinds(plan)
			if got != tc.want || plan.Actions[0].Cause != tc.cause {
				t.Fatalf("plan %s (%q, cause %v), want %q cause %v", plan, got, plan.Actions[0].Cause, tc.want, tc.cause)
			}
			for _, a := range plan.Actions {
				if a.Kind == ClearRestart && a.Revs.Restart != 21 {
					t.Fatalf("clear-restart not conditioned on the request's revision: %+v", a)
				}
			}
		})
	}
	// In place needs a safe lease.
	o := req(leader, true, "max_connections")()
	o.LeaseLeft = p.FenceMargin - time.Millisecond
	if slices.ContainsFunc(Decide(o, p).Actions, func(a Action) bool { return a.Kind == RestartPostgres }) {
		t.Fatal("restarts a leader whose lease is running out")
	}
}

func TestDecidePromise(t *testing.T) {
	ask := FailsafeAsk{Self: "scl2", Leader: "scl1", TTL: 3 * time.Second, OwnTTL: 5 * time.Second, StoreLeader: "scl1"}
	tests := []struct {
		name   string
		change func(*FailsafeAsk)
		want   Refusal
		other  bool
	}{
		{"promises for the longer TTL", func(*FailsafeAsk) {}, Promised, false},
		{"bad ttl", func(a *FailsafeAsk) { a.TTL = MaxPromise + time.Second }, RefusedTTL, false},
		{"zero ttl", func(a *FailsafeAsk) { a.TTL = 0 }, RefusedTTL, false},
		{"itself", func(a *FailsafeAsk) { a.Leader = "scl2"; a.StoreLeader = "scl2" }, RefusedSelf, false},
		{"reaches the store", func(a *FailsafeAsk) { a.StoreReachable = true }, RefusedReachable, false},
		{"another leader", func(a *FailsafeAsk) { a.StoreLeader = "scl3" }, RefusedLeader, true},
		{"no leader known", func(a *FailsafeAsk) { a.StoreLeader = "" }, RefusedLeader, false},
		{"writable itself", func(a *FailsafeAsk) { a.Writable = true }, RefusedWritable, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			a := ask
			tc.change(&a)
			got := DecidePromise(a)
			if got.Refusal != tc.want || got.OtherLeader != tc.other || got.OK() != (tc.want == Promised) {
				t.Fatalf("%+v, want refusal %v other %v", got, tc.want, tc.other)
			}
			if got.OK() && got.For != 5*time.Second {
				t.Fatalf("promise for %v, want the longer of both TTLs", got.For)
			}
		})
	}

	members := map[string]model.Member{"scl1": {ID: "scl1", APIURL: "http://a"}, "scl2": {ID: "scl2", APIURL: "http://b"}}
	if ts, missing := FailsafeTargets("scl1", []string{"scl1", "scl2"}, members); missing != "" || len(ts) != 1 || ts[0].ID != "scl2" {
		t.Fatalf("targets %v missing %q", ts, missing)
	}
	if _, missing := FailsafeTargets("scl1", []string{"scl1", "scl2", "scl3"}, members); missing != "scl3" {
		t.Fatalf("a registered member without a record must fail the round, got %q", missing)
	}
	yes := FailsafeAnswer{ID: "scl2", Answered: true, Promise: Promise{For: time.Second}}
	if r := DecideRound([]FailsafeAnswer{yes}); !r.Granted || r.Withdraw {
		t.Fatalf("%+v", r)
	}
	if r := DecideRound([]FailsafeAnswer{yes, {ID: "scl3", Err: "timeout"}}); r.Granted || r.Withdraw {
		t.Fatalf("one silent member: no window, nothing withdrawn: %+v", r)
	}
	if r := DecideRound([]FailsafeAnswer{yes, {ID: "scl3", Answered: true, Promise: Promise{Refusal: RefusedWritable, OtherLeader: true}}}); r.Granted || !r.Withdraw {
		t.Fatalf("a refusal naming someone else withdraws the window: %+v", r)
	}
	if !RoundDue(true, true, time.Second, DefaultParams()) || RoundDue(true, true, DefaultParams().FenceMargin-1, DefaultParams()) || RoundDue(false, true, time.Second, DefaultParams()) {
		t.Fatal("RoundDue")
	}
}

func TestDecideWatchdog(t *testing.T) {
	p := DefaultParams()
	at := p.FenceMargin / 2
	tests := []struct {
		name           string
		writable, held bool
		left           time.Duration
		want           Watch
	}{
		{"a replica: nothing armed", false, true, time.Second, Watch{}},
		{"a writable leader: armed for when half the margin is left", true, true, 3 * time.Second, Watch{Arm: 3*time.Second - at}},
		{"time nearly out: kill now", true, true, at, Watch{Kill: true}},
		{"writable without a lease, time out: kill", true, false, 0, Watch{Kill: true}},
		{"writable without a lease but a window left: the engine fences, nothing armed", true, false, time.Second, Watch{}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := DecideWatchdog(tc.writable, tc.held, tc.left, p); got != tc.want {
				t.Fatalf("%+v, want %+v", got, tc.want)
			}
		})
	}
}

// TestUnfinishedBootstrap: a leader whose own bootstrap stopped between
// initdb and the roles' passwords finishes it, whether its Postgres runs
// or not, and neither starts it as it is nor records the bootstrap as
// done; once the store records it, the marker no longer matters.
func TestUnfinishedBootstrap(t *testing.T) {
	p := DefaultParams()
	fresh := func(running bool) Observation {
		o := leader()
		o.InitializedBy, o.BootstrapDone, o.BootstrapUnfinished = "scl1", false, true
		o.Sync = model.Sync{Leader: "scl1", Members: []string{}, K: 1}
		o.Standbys, o.SyncNames, o.Slots = nil, nil, nil
		o.Running = running
		return o
	}
	tests := []struct {
		name string
		obs  Observation
		want string
		role string
	}{
		{"stopped: finish it, do not start it as it is", fresh(false), "finish-bootstrap", model.RoleOffline},
		{"running: finish it before serving or recording it", fresh(true), "finish-bootstrap", model.RoleOffline},
		{"finished: recorded (slots too)", func() Observation { o := fresh(true); o.BootstrapUnfinished = false; return o }(), "record-bootstrap", model.RolePrimary},
		{"recorded already: the marker is not looked at", func() Observation { o := fresh(false); o.BootstrapDone = true; return o }(), "start-primary", model.RoleOffline},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			plan := Decide(tc.obs, p)
			if got := kinds(plan); !slices.Contains(strings.Fields(got), tc.want) || plan.Role != tc.role {
				t.Fatalf("plan %s (%q, role %s), want %q role %s", plan, got, plan.Role, tc.want, tc.role)
			}
			if tc.want == "finish-bootstrap" && plan.Actions[0].Cause != CauseBootstrapInterrupted {
				t.Fatalf("cause %v", plan.Actions[0].Cause)
			}
		})
	}
}
