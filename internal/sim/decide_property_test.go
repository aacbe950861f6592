package sim

import (
	"math/rand/v2"
	"reflect"
	"slices"
	"testing"
	"time"

	"github.com/petrel-db/petrel/internal/engine"
	"github.com/petrel-db/petrel/internal/model"
)

// This file extends engine_test.go's TestProperties, which draws the
// election and lease fields only: here every Observation field is drawn
// (failsafe windows and promises, switchover records and ages, cascades,
// standbys, synchronous names, slots, disks, restarts), and the checks are
// the rules a Plan must keep whatever the input.

var obsIDs = []string{"scl1", "scl2", "scl3", "ord1", "ord2"}

func regionOf(id string) string { return id[:3] }

// drawObservation draws an arbitrary Observation over a small world; each
// field is set at random, with a bias towards the boundaries the engine
// compares against (FenceMargin, SwitchoverTTL, StoppedLSN, ...).
func drawObservation(r *rand.Rand, p engine.Params) engine.Observation {
	pick := func() string { return obsIDs[r.IntN(len(obsIDs))] }
	maybe := func(n int) bool { return r.IntN(n) == 0 }
	dur := func(max time.Duration) time.Duration {
		switch r.IntN(4) {
		case 0:
			return p.FenceMargin + time.Duration(r.IntN(3)-1)*time.Millisecond // around the margin
		case 1:
			return 0
		}
		return time.Duration(r.Int64N(int64(max)))
	}
	lsn := func() uint64 { return uint64(r.IntN(6)) * 100 }
	sub := func() []string {
		var out []string
		for _, id := range obsIDs {
			if maybe(2) {
				out = append(out, id)
			}
		}
		return out
	}
	members := map[string]model.Member{}
	for _, id := range obsIDs {
		if !maybe(6) {
			members[id] = model.Member{ID: id, Region: regionOf(id), PostgresAddr: id + ":5432"}
		}
	}
	o := engine.Observation{
		Self: pick(), PrimaryRegion: "scl",
		StoreOK: !maybe(4), Initialized: !maybe(8), InitializedBy: pick(), BootstrapDone: maybe(2), BootstrapUnfinished: maybe(8), InfoRev: int64(1 + r.IntN(20)),
		LeaderRev: int64(1 + r.IntN(20)), SyncRev: int64(1 + r.IntN(20)),
		Members: members, Registered: sub(),
		LeaseLeft: dur(4 * time.Second), FailsafeLeft: dur(4 * time.Second), FailsafePromised: maybe(4),
		LeaderDead: maybe(5), LeaderPromoted: !maybe(4),
		Data: engine.DataRole(r.IntN(3)), Running: !maybe(3), InRecovery: maybe(2),
		Timeline: uint32(1 + r.IntN(3)), LSN: lsn(), Streaming: maybe(2),
		NotStreamingFor: dur(20 * time.Second), UpstreamLacksWAL: maybe(4), Restarts: r.IntN(6), SinceStart: dur(10 * time.Second),
		DiskKnown: !maybe(3), DiskFree: int64(r.IntN(4)) * p.DiskLow * 2 / 3, ReadOnly: maybe(3),
		SyncChangeLSN: lsn(), SwitchoverAge: dur(40 * time.Second),
		Cascade: maybe(3), CascadeRegions: map[string]bool{}, RegisteredRegions: map[string]string{},
	}
	if maybe(4) {
		o.LastRewind = engine.RewindOutcome{Result: engine.RewindResult(1 + r.IntN(3)), Cause: []engine.Cause{engine.CauseFormerPrimary, engine.CauseNotStreaming}[r.IntN(2)], Ago: dur(2 * p.RewindRetry), Failures: r.IntN(3)}
	}
	if maybe(4) {
		o.Restart, o.RestartRev = &engine.RestartRequest{InPlace: maybe(2), Force: maybe(2)}, int64(1+r.IntN(20))
	}
	settings := []string{"max_connections", "shared_buffers", "shared_preload_libraries"}
	for _, n := range settings {
		if maybe(3) {
			o.PendingRestart = append(o.PendingRestart, n)
		}
		if !maybe(3) && n != "shared_preload_libraries" {
			o.PetrelSettings = append(o.PetrelSettings, n)
		}
	}
	o.ShuttingDown = maybe(8)
	if maybe(8) {
		o.PrimaryRegion = "ord"
	}
	o.Region = regionOf(o.Self)
	if maybe(10) {
		o.Region = "ams" // a member whose region has no peer
	}
	if !maybe(3) {
		o.Leader = pick()
		o.LeaderMine = o.Leader == o.Self && !maybe(3)
	}
	switch r.IntN(3) {
	case 0:
		o.Following = ""
	case 1:
		o.Following = pick()
	default:
		o.Following = "?"
	}
	o.Sync = model.Sync{Leader: pick(), Members: sub(), K: 1 + r.IntN(2)}
	if maybe(3) {
		o.CascadeRegions["ord"] = true
	}
	for _, id := range o.Registered {
		o.RegisteredRegions[id] = regionOf(id)
	}
	for _, id := range sub() {
		o.Standbys = append(o.Standbys, engine.Standby{ID: id, Streaming: !maybe(4), FlushLSN: lsn()})
	}
	o.SyncNames = sub()
	if maybe(5) {
		o.SyncNames = append(o.SyncNames, engine.StrictPlaceholder)
	}
	for _, id := range sub() {
		o.Slots = append(o.Slots, engine.SlotName(id))
	}
	if maybe(6) {
		o.Slots = append(o.Slots, "petrel_gone", "other_slot")
	}
	if maybe(2) {
		sw := &model.Switchover{From: pick(), AllowSecondaryRegion: maybe(3)}
		if maybe(2) {
			sw.To = pick()
		}
		if maybe(2) {
			sw.StoppedLSN, sw.Target = lsn()+1, pick()
		}
		o.Switchover, o.SwitchoverRev = sw, int64(1+r.IntN(20))
	}
	o.Peers = map[string]engine.Peer{}
	for _, id := range obsIDs {
		if id != o.Self && !maybe(4) {
			o.Peers[id] = engine.Peer{ID: id, Region: regionOf(id), Reachable: !maybe(4), InRecovery: !maybe(5),
				Streaming: maybe(4), Frozen: !maybe(4), Timeline: uint32(1 + r.IntN(3)), LSN: lsn()}
		}
	}
	return o
}

// TestDrawCoversObservation fails when Observation gains a field the
// generator never sets, so that the property below keeps drawing every
// input the engine has.
func TestDrawCoversObservation(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	p := engine.DefaultParams()
	typ := reflect.TypeFor[engine.Observation]()
	seen := make([]bool, typ.NumField())
	for range 2000 {
		v := reflect.ValueOf(drawObservation(r, p))
		for i := range seen {
			if !v.Field(i).IsZero() {
				seen[i] = true
			}
		}
	}
	for i, ok := range seen {
		if !ok {
			t.Errorf("drawObservation never sets Observation.%s", typ.Field(i).Name)
		}
	}
}

// TestDecideAllFields checks, over random Observations with every field
// drawn and every sync mode, what any Plan must respect.
func TestDecideAllFields(t *testing.T) {
	r := rand.New(rand.NewPCG(11, 7))
	for i := range 150000 {
		p := engine.DefaultParams()
		p.SyncMode = []string{"on", "strict", "off"}[i%3]
		o := drawObservation(r, p)
		plan := engine.Decide(o, p)
		fail := func(why string) {
			t.Helper()
			t.Fatalf("%d: %s\nplan: %s\nobservation: %+v\nswitchover: %+v", i, why, plan, o, o.Switchover)
		}
		safe := o.LeaderMine && (o.LeaseLeft >= p.FenceMargin || o.FailsafeLeft >= p.FenceMargin)
		writable := o.Running && !o.InRecovery
		kinds := map[engine.Kind]bool{}
		for _, a := range plan.Actions {
			kinds[a.Kind] = true
		}
		// Rule 1: a writable Postgres without a safely held key is fenced
		// before anything else.
		if writable && !safe && (len(plan.Actions) == 0 || plan.Actions[0].Kind != engine.Fence) {
			fail("writable without a safe lease and not fenced first")
		}
		// A plan that leaves Postgres writable needs the key on its own
		// lease with FenceMargin left, or a failsafe window.
		stops := kinds[engine.Fence] || kinds[engine.SwitchoverStop] || kinds[engine.Rewind] || kinds[engine.Reclone] || kinds[engine.StopPostgres]
		if writable && !stops && !safe {
			fail("keeps postgres writable without a safe lease or failsafe window")
		}
		if plan.Role == model.RolePrimary && !(writable && o.LeaderMine) {
			fail("reports primary without being a writable leader")
		}
		if kinds[engine.Kill] {
			fail("Decide never kills (DecideUnobservable does)")
		}
		// Without the store, nothing but local safety.
		if !o.StoreOK {
			for k := range kinds {
				if k != engine.Wait && k != engine.Fence && k != engine.SetReadOnly && !(k == engine.StopPostgres && o.ShuttingDown) {
					fail("acts on the store while it is unreachable: " + string(k))
				}
			}
		}
		for _, a := range plan.Actions {
			if a.Revs != o.Revs() {
				fail("an action does not carry the revisions it was decided on")
			}
			if a.Kind == engine.Rewind && a.Cause != engine.CauseFormerPrimary && a.Cause != engine.CauseNotStreaming {
				fail("a rewind without its cause")
			}
			if a.Kind == engine.Reclone && o.LastRewind.Result == engine.RewindUnavailable && o.Data != engine.DataEmpty &&
				(a.Cause == engine.CauseRewindImpossible || a.Cause == engine.CauseRewindDidNotHelp) {
				fail("re-clones after a rewind that only could not reach its source")
			}
			if o.ShuttingDown && (a.Kind == engine.AcquireLeader || a.Kind == engine.Promote || a.Kind == engine.StartPrimary || a.Kind == engine.StartStandby || a.Kind == engine.Bootstrap || a.Kind == engine.FinishBootstrap || a.Kind == engine.Clone || a.Kind == engine.Reclone || a.Kind == engine.RestartPostgres) {
				fail("starts something while shutting down: " + string(a.Kind))
			}
			switch a.Kind {
			case engine.RestartPostgres:
				replica := !o.LeaderMine && o.Running && o.InRecovery && o.Streaming && o.Leader != "" && o.Leader != o.Self
				inPlace := o.LeaderMine && o.Restart != nil && o.Restart.InPlace && safe && writable
				if o.Restart == nil || o.Switchover != nil || !o.StoreOK || !(replica || inPlace) {
					fail("restarts postgres outside a state where a restart is safe")
				}
				for _, n := range o.PendingRestart {
					if !slices.Contains(o.PetrelSettings, n) {
						fail("a restart applies a setting petrel did not write: " + n)
					}
				}
			case engine.ClearRestart:
				if o.Restart == nil {
					fail("clears a restart request that was not observed")
				}
			case engine.SwitchoverStop:
				if (a.Cause == engine.CauseShutdown) != o.ShuttingDown {
					fail("a shutdown hand-over outside a shutdown, or a planned one during it")
				}
				if a.Cause == engine.CauseShutdown && o.Switchover != nil {
					fail("a shutdown hand-over over an existing switchover record")
				}
			}
			switch a.Kind {
			case engine.Promote, engine.StartPrimary:
				if !safe || !o.StoreOK {
					fail(string(a.Kind) + " without a safely held key")
				}
			case engine.AcquireLeader:
				if o.Leader != "" || o.LeaderMine || !o.StoreOK || !o.Initialized {
					fail("acquires while a key exists or without the store")
				}
				if a.Revs.Sync != o.SyncRev {
					fail("acquire not conditioned on the observed sync revision")
				}
				if o.FailsafePromised {
					fail("acquires while it promised the leader not to take over")
				}
				sw := o.Switchover
				handover := sw != nil && sw.StoppedLSN != 0 && o.SwitchoverAge <= p.SwitchoverTTL
				if handover && (sw.Target != o.Self || o.LSN < sw.StoppedLSN || !o.Running) {
					fail("acquires during a hand-over to another member, or before it has the stop LSN")
				}
				if o.Region != o.PrimaryRegion && !(handover && sw.Target == o.Self) {
					fail("a member outside the primary region acquires outside a hand-over addressed to it")
				}
				if a.Region != "" && !(handover && sw.AllowSecondaryRegion && sw.Target == o.Self && a.Region == o.Region && o.Region != o.PrimaryRegion) {
					fail("moves the primary region outside an allowed hand-over to this member")
				}
			case engine.RevokeLeader:
				if a.Revs.Leader != o.LeaderRev {
					fail("revoke not conditioned on the observed leader revision")
				}
				if o.FailsafePromised && o.Leader != o.Self {
					fail("revokes a leader it promised not to replace")
				}
			case engine.SetSyncRecord, engine.SetSyncNames, engine.CreateSlot, engine.DropSlot, engine.SwitchoverStop, engine.ClearSwitchover:
				if !o.LeaderMine {
					fail(string(a.Kind) + " by a member that does not hold the key")
				}
			}
			switch a.Kind {
			case engine.SetSyncRecord:
				if a.Revs.Sync != o.SyncRev {
					fail("sync record not conditioned on the observed revision")
				}
				// The record keeps covering what Postgres waits for (when
				// the input kept the invariant: it is inductive). An empty
				// record names nobody promotable, which is always safe: it
				// comes first when Postgres' list is about to be emptied.
				for _, n := range o.SyncNames {
					if len(a.Members) == 0 {
						break
					}
					if !covered(o) {
						break
					}
					if n != engine.StrictPlaceholder && !slices.Contains(a.Members, n) && p.SyncMode != "off" {
						fail("sync record drops " + n + " while postgres still lists it")
					}
				}
			case engine.SetSyncNames:
				_, names := parseSync(a.Value)
				recorded := o.Sync.Members
				if o.Sync.Leader != o.Self {
					recorded = nil
				}
				for _, n := range names {
					if n == engine.StrictPlaceholder {
						continue
					}
					if m, ok := o.Members[n]; !slices.Contains(o.SyncNames, n) && (!ok || m.Region != o.PrimaryRegion) {
						fail("adds a synchronous standby outside the primary region: " + n)
					}
					// From no standby at all (the leader acknowledged alone)
					// Postgres goes first and the record follows.
					fromNone := len(o.SyncNames) == 0 && len(recorded) == 0
					if !slices.Contains(o.SyncNames, n) && !slices.Contains(recorded, n) && !fromNone {
						fail("postgres waits for " + n + " before the record lists it")
					}
				}
			case engine.SetReadOnly:
				if a.Value == "on" && !o.LeaderMine {
					fail("read-only switch turned on by a non-leader")
				}
			}
		}
		if again := engine.Decide(o, p); again.String() != plan.String() {
			fail("not deterministic")
		}
	}
}

// covered says whether the observation keeps the sync invariant: every
// member Postgres waits for is in the leader's own sync record.
func covered(o engine.Observation) bool {
	if o.Sync.Leader != o.Self {
		return false
	}
	for _, n := range o.SyncNames {
		if n != engine.StrictPlaceholder && !slices.Contains(o.Sync.Members, n) {
			return false
		}
	}
	return true
}
