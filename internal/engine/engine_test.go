package engine

import (
	"fmt"
	"maps"
	"math/rand"
	"strings"
	"testing"
	"time"

	"github.com/petrel-db/petrel/internal/model"
)

var members = map[string]model.Member{
	"scl1": {ID: "scl1", Region: "scl", PostgresAddr: "h:1"},
	"scl2": {ID: "scl2", Region: "scl", PostgresAddr: "h:2"},
	"scl3": {ID: "scl3", Region: "scl", PostgresAddr: "h:3"},
	"ord1": {ID: "ord1", Region: "ord", PostgresAddr: "h:4"},
}

// base is a healthy standby scl2 following leader scl1, which has scl2 as
// its synchronous standby.
func base() Observation {
	return Observation{
		Self: "scl2", Region: "scl", PrimaryRegion: "scl",
		StoreOK: true, Initialized: true, InitializedBy: "scl1", BootstrapDone: true,
		Leader: "scl1", LeaderRev: 10,
		Sync:    model.Sync{Leader: "scl1", Members: []string{"scl2"}, K: 1},
		SyncRev: 11, Members: members, Registered: []string{"ord1", "scl1", "scl2"},
		LeaseLeft: 3 * time.Second,
		Data:      DataStandby, Running: true, InRecovery: true, Timeline: 1, LSN: 1000,
		Streaming: true, Following: "scl1",
	}
}

// leader is scl1 leading with scl2 in sync.
func leader() Observation {
	o := base()
	o.Self, o.LeaderMine, o.InRecovery, o.Data, o.Following, o.Streaming = "scl1", true, false, DataPrimary, "", false
	o.Standbys = []Standby{{ID: "scl2", Streaming: true, FlushLSN: 1000}, {ID: "ord1", Streaming: true, FlushLSN: 990}}
	o.SyncNames = []string{"scl2"}
	o.Slots = []string{"petrel_ord1", "petrel_scl2"}
	return o
}

func kinds(p Plan) string {
	var s []string
	for _, a := range p.Actions {
		x := string(a.Kind)
		if a.Target != "" {
			x += ":" + a.Target
		}
		if a.Members != nil {
			x += fmt.Sprintf("%v", a.Members)
		}
		if a.Kind == SetSyncNames || a.Kind == SetReadOnly {
			x += "=" + a.Value
		}
		s = append(s, x)
	}
	return strings.Join(s, " ")
}

func TestDecide(t *testing.T) {
	tests := []struct {
		name string
		obs  func() Observation
		mode string
		want string
		role string
	}{
		{"healthy standby waits", base, "", "wait", model.RoleReplica},
		{"healthy leader waits", leader, "", "wait", model.RolePrimary},
		{"uninitialized cluster bootstraps", func() Observation {
			o := base()
			o.Initialized, o.Leader, o.Data, o.Running = false, "", DataEmpty, false
			return o
		}, "", "bootstrap", model.RoleOffline},
		{"uninitialized, outside primary region, waits", func() Observation {
			o := base()
			o.Initialized, o.Leader, o.Data, o.Running, o.Region = false, "", DataEmpty, false, "ord"
			return o
		}, "", "wait", model.RoleOffline},
		{"empty data dir clones from leader", func() Observation {
			o := base()
			o.Data, o.Running = DataEmpty, false
			return o
		}, "", "clone:scl1", model.RoleOffline},
		{"empty data dir, no leader, waits", func() Observation {
			o := base()
			o.Data, o.Running, o.Leader = DataEmpty, false, ""
			return o
		}, "", "wait", model.RoleOffline},
		{"interrupted bootstrap is finished by its claimant", func() Observation {
			o := base()
			o.Data, o.Running, o.Leader, o.InitializedBy, o.BootstrapDone = DataEmpty, false, "", "scl2", false
			return o
		}, "", "bootstrap", model.RoleOffline},
		{"a restore's seed (claimed, data restored, never led) bootstraps from its data", func() Observation {
			o := base()
			o.Data, o.Running, o.Leader, o.InitializedBy, o.BootstrapDone = DataPrimary, false, "", "scl2", false
			o.Sync = model.Sync{}
			return o
		}, "", "bootstrap", model.RoleOffline},
		{"a claimant that led with synchronous standbys is elected like anyone, not bootstrapped", func() Observation {
			o := base()
			o.Data, o.Running, o.Leader, o.InitializedBy, o.BootstrapDone = DataPrimary, false, "", "scl2", false
			o.Sync = model.Sync{Leader: "scl2", Members: []string{"scl1"}, K: 1}
			return o
		}, "", "wait", model.RoleOffline},
		{"a finished bootstrap is never run again: the claimant with an empty data directory waits for a leader", func() Observation {
			o := base()
			o.Data, o.Running, o.Leader, o.InitializedBy = DataEmpty, false, "", "scl2"
			return o
		}, "", "wait", model.RoleOffline},
		{"the leader records a finished bootstrap", func() Observation {
			o := leader()
			o.BootstrapDone, o.InfoRev = false, 3
			return o
		}, "", "record-bootstrap", model.RolePrimary},
		{"primary without the key is fenced", func() Observation {
			o := leader()
			o.LeaderMine, o.Leader = false, "scl2"
			return o
		}, "", "fence", model.RoleFenced},
		{"primary whose lease runs out is fenced", func() Observation {
			o := leader()
			o.LeaseLeft = 100 * time.Millisecond
			return o
		}, "", "fence", model.RoleFenced},
		{"primary with store down but lease left keeps serving", func() Observation {
			o := leader()
			o.StoreOK, o.LeaseLeft = false, 2*time.Second
			return o
		}, "", "wait", model.RolePrimary},
		{"primary with store down and lease gone is fenced (flapping store)", func() Observation {
			o := leader()
			o.StoreOK, o.LeaseLeft = false, 0
			return o
		}, "", "fence", model.RoleFenced},
		{"leader key held, postgres crashed: restart", func() Observation {
			o := leader()
			o.Running = false
			return o
		}, "", "start-primary", model.RoleOffline},
		{"leader key held, postgres keeps crashing: give up the key", func() Observation {
			o := leader()
			o.Running, o.Restarts = false, 3
			return o
		}, "", "release-leader", model.RoleOffline},
		{"leader key held, standby running: promote", func() Observation {
			o := base()
			o.LeaderMine, o.Leader, o.Streaming = true, "scl2", false
			return o
		}, "", "promote", model.RoleReplica},
		{"standby follows a new leader without restart", func() Observation {
			o := base()
			o.Leader = "scl3"
			return o
		}, "", "follow:scl3", model.RoleReplica},
		{"stopped standby starts following", func() Observation {
			o := base()
			o.Running, o.InRecovery, o.Streaming = false, false, false
			return o
		}, "", "start-standby:scl1", model.RoleOffline},
		{"old primary rejoins with rewind", func() Observation {
			o := base()
			o.Running, o.InRecovery, o.Data, o.Leader = false, false, DataPrimary, "scl2"
			o.Self, o.LeaderPromoted = "scl1", true
			return o
		}, "", "rewind:scl2", model.RoleOffline},
		{"stuck standby rewinds", func() Observation {
			o := base()
			o.Streaming, o.NotStreamingFor = false, 20*time.Second
			return o
		}, "", "rewind:scl1", model.RoleReplica},
		{"leader lost: streaming candidate freezes its position first", func() Observation {
			o := base()
			o.Leader = ""
			return o
		}, "", "follow", model.RoleReplica},
		{"leader lost: sole sync candidate takes the key", func() Observation {
			o := base()
			o.Leader, o.Streaming, o.Following = "", false, ""
			return o
		}, "", "acquire-leader", model.RoleReplica},
		{"leader lost: candidate not in sync set waits", func() Observation {
			o := base()
			o.Leader, o.Streaming, o.Self = "", false, "scl3"
			return o
		}, "", "wait", model.RoleReplica},
		{"leader lost: replica outside primary region never promotes, however far ahead", func() Observation {
			o := base()
			o.Leader, o.Streaming, o.Self, o.Region, o.LSN = "", false, "ord1", "ord", 1<<40
			o.Sync.Members = []string{"ord1", "scl2"}
			return o
		}, "", "wait", model.RoleReplica},
		{"leader lost, no sync standby: nobody but the old leader promotes", func() Observation {
			o := base()
			o.Leader, o.Streaming, o.Sync.Members = "", false, []string{}
			return o
		}, "", "wait", model.RoleReplica},
		{"leader lost, no sync standby: the old leader takes the key back", func() Observation {
			o := base()
			o.Self, o.Leader, o.Streaming, o.Sync.Members = "scl1", "", false, []string{}
			o.Data, o.Running, o.InRecovery = DataPrimary, false, false
			return o
		}, "", "acquire-leader", model.RoleOffline},
		{"two candidates: the one behind defers", func() Observation {
			o := base()
			o.Leader, o.Streaming, o.Following, o.Sync.Members = "", false, "", []string{"scl2", "scl3"}
			o.Peers = map[string]Peer{"scl3": {ID: "scl3", Reachable: true, Frozen: true, Timeline: 1, LSN: 2000}}
			return o
		}, "", "wait", model.RoleReplica},
		{"two candidates: the one ahead promotes", func() Observation {
			o := base()
			o.Leader, o.Streaming, o.Following, o.Sync.Members = "", false, "", []string{"scl2", "scl3"}
			o.Peers = map[string]Peer{"scl3": {ID: "scl3", Reachable: true, Frozen: true, Timeline: 1, LSN: 500}}
			return o
		}, "", "acquire-leader", model.RoleReplica},
		{"two candidates at the same LSN: the lower id wins", func() Observation {
			o := base()
			o.Leader, o.Streaming, o.Following, o.Sync.Members, o.Self = "", false, "", []string{"scl2", "scl3"}, "scl3"
			o.Peers = map[string]Peer{"scl2": {ID: "scl2", Reachable: true, Frozen: true, Timeline: 1, LSN: 1000}}
			return o
		}, "", "wait", model.RoleReplica},
		{"quorum not heard: an unreachable sync member blocks promotion", func() Observation {
			o := base()
			o.Leader, o.Streaming, o.Following, o.Sync.Members = "", false, "", []string{"scl2", "scl3"}
			o.Peers = map[string]Peer{"scl3": {ID: "scl3"}}
			return o
		}, "", "wait", model.RoleReplica},
		{"quorum not heard: a sync member still streaming does not count", func() Observation {
			o := base()
			o.Leader, o.Streaming, o.Following, o.Sync.Members = "", false, "", []string{"scl2", "scl3"}
			o.Peers = map[string]Peer{"scl3": {ID: "scl3", Reachable: true, Streaming: true, LSN: 1}}
			return o
		}, "", "wait", model.RoleReplica},
		{"leader lost: a receiver between connections is not final until unconfigured", func() Observation {
			o := base()
			o.Leader, o.Streaming = "", false // still following scl1
			return o
		}, "", "follow", model.RoleReplica},
		{"quorum not heard: a peer still configured to follow the old leader does not count", func() Observation {
			o := base()
			o.Leader, o.Streaming, o.Following, o.Sync.Members = "", false, "", []string{"scl2", "scl3"}
			o.Peers = map[string]Peer{"scl3": {ID: "scl3", Reachable: true, Timeline: 1, LSN: 1}}
			return o
		}, "", "wait", model.RoleReplica},
		{"dead leader: sync candidate revokes its key", func() Observation {
			o := base()
			o.Streaming, o.LeaderDead = false, true
			return o
		}, "", "revoke-leader", model.RoleReplica},
		{"dead leader: non-candidate leaves it alone", func() Observation {
			o := base()
			o.Self, o.Region, o.Streaming, o.LeaderDead = "ord1", "ord", false, true
			return o
		}, "", "wait", model.RoleReplica},
		{"restarted node clears its previous incarnation's key", func() Observation {
			o := base()
			o.Self, o.Leader, o.Running, o.Data = "scl1", "scl1", false, DataPrimary
			return o
		}, "", "revoke-leader", model.RoleOffline},
		{"store unreachable: replica changes nothing", func() Observation {
			o := base()
			o.StoreOK, o.Leader = false, ""
			return o
		}, "", "wait", model.RoleReplica},
		{"leader with no sync standby adds one: postgres first (it acknowledged alone until now)", func() Observation {
			o := leader()
			o.Sync.Members, o.SyncNames = []string{}, nil
			return o
		}, "", `set-sync-names=ANY 1 ("scl2")`, model.RolePrimary},
		{"then the record, once the standby flushed past the change", func() Observation {
			o := leader()
			o.Sync.Members, o.SyncChangeLSN = []string{}, 1000
			return o
		}, "", "set-sync-record[scl2]", model.RolePrimary},
		{"not before", func() Observation {
			o := leader()
			o.Sync.Members, o.SyncChangeLSN = []string{}, 1001
			return o
		}, "", "wait", model.RolePrimary},
		{"leader adds a second standby: record first", func() Observation {
			o := leader()
			o.Standbys = append(o.Standbys, Standby{ID: "scl3", Streaming: true, FlushLSN: 1000})
			o.Members = maps.Clone(o.Members)
			o.Members["scl3"] = model.Member{ID: "scl3", Region: "scl", PostgresAddr: "127.0.0.1:3"}
			return o
		}, "", "set-sync-record[scl2 scl3]", model.RolePrimary},
		{"never a standby outside the primary region in the sync set", func() Observation {
			o := leader()
			o.Standbys = []Standby{{ID: "ord1", Streaming: true, FlushLSN: 1000}}
			o.SyncNames = nil
			o.Sync.Members = []string{}
			return o
		}, "", "wait", model.RolePrimary},
		{"last sync standby gone: the record first (the leader will acknowledge alone)", func() Observation {
			o := leader()
			o.Standbys = nil
			return o
		}, "", "set-sync-record[]", model.RolePrimary},
		{"last sync standby gone, record emptied: then postgres", func() Observation {
			o := leader()
			o.Standbys = nil
			o.Sync.Members = nil
			return o
		}, "", "set-sync-names=", model.RolePrimary},
		{"sync standby gone: then the record", func() Observation {
			o := leader()
			o.Standbys, o.SyncNames = nil, nil
			return o
		}, "", "set-sync-record[]", model.RolePrimary},
		{"strict mode keeps a departed sync standby listed", func() Observation {
			o := leader()
			o.Standbys = nil
			return o
		}, "strict", "wait", model.RolePrimary},
		{"strict mode without any standby blocks writes with a placeholder", func() Observation {
			o := leader()
			o.Standbys, o.SyncNames, o.Sync.Members = nil, nil, []string{}
			return o
		}, "strict", `set-sync-names=ANY 1 ("petrel_no_standby")`, model.RolePrimary},
		{"shrinking waits for the remaining members to catch up", func() Observation {
			o := leader()
			o.Sync.Members = []string{"scl2", "scl3"}
			o.SyncChangeLSN = 5000
			return o
		}, "", "wait", model.RolePrimary},
		{"slots: created for registered members, dropped for departed ones", func() Observation {
			o := leader()
			o.Slots = []string{"petrel_gone", "petrel_scl2"}
			return o
		}, "", "create-slot:petrel_ord1 drop-slot:petrel_gone", model.RolePrimary},
		{"switchover: leader stops for the best standby", func() Observation {
			o := leader()
			o.Switchover = &model.Switchover{From: "scl1"}
			return o
		}, "", "switchover-stop:scl2", model.RolePrimary},
		{"switchover: no streaming standby yet, the request waits a grace period", func() Observation {
			o := leader()
			o.Standbys = nil
			o.Switchover = &model.Switchover{From: "scl1"}
			o.SwitchoverAge = time.Second
			return o
		}, "", "set-sync-record[]", model.RolePrimary},
		{"switchover: still no streaming standby after the grace period, refused", func() Observation {
			o := leader()
			o.Standbys = nil
			o.Switchover = &model.Switchover{From: "scl1"}
			o.SwitchoverAge = 6 * time.Second
			return o
		}, "", "clear-switchover set-sync-record[]", model.RolePrimary},
		{"failsafe: store down, lease gone, every member promised: keep serving", func() Observation {
			o := leader()
			o.StoreOK, o.LeaseLeft, o.FailsafeLeft = false, 0, 2*time.Second
			return o
		}, "", "wait", model.RolePrimary},
		{"failsafe: store down, lease and promises running out: fence", func() Observation {
			o := leader()
			o.StoreOK, o.LeaseLeft, o.FailsafeLeft = false, 100*time.Millisecond, 300*time.Millisecond
			return o
		}, "", "fence", model.RoleFenced},
		{"failsafe: a promised member does not start an election when the key is gone", func() Observation {
			o := base()
			o.Leader, o.Streaming, o.FailsafePromised = "", false, true
			return o
		}, "", "wait", model.RoleReplica},
		{"failsafe: a promised member does not revoke a leader that looks dead", func() Observation {
			o := base()
			o.Streaming, o.LeaderDead, o.FailsafePromised = false, true, true
			return o
		}, "", "wait", model.RoleReplica},
		{"disk nearly full: the leader turns read-only and stays primary", func() Observation {
			o := leader()
			o.DiskKnown, o.DiskFree = true, 10<<20
			return o
		}, "", "set-read-only=on", model.RolePrimary},
		{"disk still low: read-only stays (hysteresis)", func() Observation {
			o := leader()
			o.DiskKnown, o.DiskFree, o.ReadOnly = true, 100<<20, true
			return o
		}, "", "wait", model.RolePrimary},
		{"disk space back: writes resume", func() Observation {
			o := leader()
			o.DiskKnown, o.DiskFree, o.ReadOnly = true, 200<<20, true
			return o
		}, "", "set-read-only=off", model.RolePrimary},
		{"disk free unknown: nothing changes", func() Observation {
			o := leader()
			o.ReadOnly = true
			return o
		}, "", "wait", model.RolePrimary},
		{"a replica with a full disk is not made read-only", func() Observation {
			o := base()
			o.DiskKnown, o.DiskFree = true, 0
			return o
		}, "", "wait", model.RoleReplica},
		{"switchover to a replica outside the primary region is refused", func() Observation {
			o := leader()
			o.Switchover = &model.Switchover{From: "scl1", To: "ord1"}
			return o
		}, "", "clear-switchover", model.RolePrimary},
		{"switchover: target waits until it has the stop LSN", func() Observation {
			o := base()
			o.Leader, o.Streaming, o.LSN = "", true, 900
			o.Switchover = &model.Switchover{From: "scl1", Target: "scl2", StoppedLSN: 1000}
			return o
		}, "", "wait", model.RoleReplica},
		{"switchover: target caught up takes over", func() Observation {
			o := base()
			o.Leader, o.LSN = "", 1000
			o.Switchover = &model.Switchover{From: "scl1", Target: "scl2", StoppedLSN: 1000}
			return o
		}, "", "acquire-leader", model.RoleReplica},
		{"switchover: others defer to the target", func() Observation {
			o := base()
			o.Self, o.Leader, o.Streaming = "scl3", "", false
			o.Sync.Members = []string{"scl2", "scl3"}
			o.Switchover = &model.Switchover{From: "scl1", Target: "scl2", StoppedLSN: 1000}
			return o
		}, "", "wait", model.RoleReplica},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := DefaultParams()
			if tc.mode != "" {
				p.SyncMode = tc.mode
			}
			got := Decide(tc.obs(), p)
			if k := kinds(got); k != tc.want {
				t.Errorf("actions = %q, want %q (plan %s)", k, tc.want, got)
			}
			if got.Role != tc.role {
				t.Errorf("role = %q, want %q", got.Role, tc.role)
			}
		})
	}
}

// randomObs draws an arbitrary observation over a small world.
func randomObs(r *rand.Rand) Observation {
	ids := []string{"scl1", "scl2", "scl3", "ord1"}
	pick := func() string { return ids[r.Intn(len(ids))] }
	o := Observation{
		Self: pick(), PrimaryRegion: "scl",
		StoreOK: r.Intn(4) > 0, Initialized: r.Intn(6) > 0,
		Members: members, LeaseLeft: time.Duration(r.Intn(4000)) * time.Millisecond,
		Data: DataRole(r.Intn(3)), Running: r.Intn(3) > 0, InRecovery: r.Intn(2) == 0,
		Timeline: uint32(1 + r.Intn(2)), LSN: uint64(r.Intn(5)) * 100, Streaming: r.Intn(2) == 0,
		LeaderDead: r.Intn(5) == 0, SyncRev: 7,
	}
	o.Region = members[o.Self].Region
	if r.Intn(3) > 0 {
		o.Leader = pick()
		o.LeaderMine = o.Leader == o.Self && r.Intn(2) == 0
	}
	o.Sync.Leader = pick()
	o.Sync.K = 1
	for _, id := range ids {
		if r.Intn(2) == 0 {
			o.Sync.Members = append(o.Sync.Members, id)
		}
	}
	o.Peers = map[string]Peer{}
	for _, id := range ids {
		if id != o.Self && r.Intn(4) > 0 {
			o.Peers[id] = Peer{ID: id, Reachable: r.Intn(4) > 0, Streaming: r.Intn(4) == 0, Frozen: r.Intn(4) > 0, Timeline: uint32(1 + r.Intn(2)), LSN: uint64(r.Intn(5)) * 100}
		}
	}
	return o
}

// TestProperties checks the safety invariants over many random
// observations.
func TestProperties(t *testing.T) {
	r := rand.New(rand.NewSource(1))
	p := DefaultParams()
	for i := 0; i < 200000; i++ {
		o := randomObs(r)
		plan := Decide(o, p)
		writable := o.Running && !o.InRecovery
		for j, a := range plan.Actions {
			switch a.Kind {
			case AcquireLeader:
				if o.Region != o.PrimaryRegion {
					t.Fatalf("%d: outside the primary region acquires leadership: %+v", i, o)
				}
				if o.Leader != "" {
					t.Fatalf("%d: acquires while a leader key exists: %+v", i, o)
				}
				if o.Switchover != nil {
					break
				}
				// Never promote a replica behind another eligible one it heard.
				inSync := false
				for _, m := range o.Sync.Members {
					if m == o.Self {
						inSync = true
					}
					peer, ok := o.Peers[m]
					if m == o.Self || !ok || !peer.Reachable || peer.Streaming || !peer.Frozen {
						continue
					}
					if peer.Timeline > o.Timeline || peer.Timeline == o.Timeline && peer.LSN > o.LSN {
						t.Fatalf("%d: promotes behind %s: %+v", i, m, o)
					}
				}
				if !inSync && !(o.Sync.Leader == o.Self && len(o.Sync.Members) == 0) {
					t.Fatalf("%d: promotes a member that cannot prove it has every commit: %+v", i, o)
				}
			case Promote, StartPrimary:
				if !o.LeaderMine || o.LeaseLeft < p.FenceMargin {
					t.Fatalf("%d: %s without a safely held lease: %+v", i, a.Kind, o)
				}
			}
			_ = j
		}
		// A writable postgres without a safe lease must be fenced first.
		if writable && (!o.LeaderMine || o.LeaseLeft < p.FenceMargin) {
			if len(plan.Actions) == 0 || plan.Actions[0].Kind != Fence {
				t.Fatalf("%d: writable without lease and not fenced: %s %+v", i, plan, o)
			}
		}
		// Determinism.
		if again := Decide(o, p); again.String() != plan.String() {
			t.Fatalf("%d: not deterministic", i)
		}
	}
}

func TestDecideUnobservable(t *testing.T) {
	p := DefaultParams()
	tests := []struct {
		name                   string
		wasPrimary, leaderMine bool
		unanswered, leaseLeft  time.Duration
		want                   string
		role                   string
	}{
		{"a replica that does not answer: wait", false, false, time.Minute, 0, "wait", model.RoleOffline},
		{"a leader's postgres slow for a moment: wait", true, true, 3 * time.Second, 3 * time.Second, "wait", model.RolePrimary},
		{"lease running out: kill, whatever else", true, true, time.Second, 100 * time.Millisecond, "kill", model.RoleFenced},
		{"lease running out without the key: kill", true, false, time.Second, 0, "kill", model.RoleFenced},
		{"hung past HangAfter: kill and hand the key over", true, true, 11 * time.Second, 3 * time.Second, "kill release-leader", model.RoleFenced},
		{"a primary without the key: kill (rule 1)", true, false, time.Second, 3 * time.Second, "kill", model.RoleFenced},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := DecideUnobservable(tc.wasPrimary, tc.leaderMine, tc.unanswered, tc.leaseLeft, p)
			if k := kinds(got); k != tc.want || got.Role != tc.role {
				t.Fatalf("plan %s (%q, role %s), want %q role %s", got, k, got.Role, tc.want, tc.role)
			}
		})
	}
	p.HangAfter = 0
	if got := DecideUnobservable(true, true, time.Hour, 3*time.Second, p); kinds(got) != "wait" {
		t.Fatalf("HangAfter 0 must disable the hang rule: %s", got)
	}
}
