package agent

import (
	"log/slog"
	"strings"
	"testing"

	"github.com/petrel-db/petrel/internal/config"
	"github.com/petrel-db/petrel/internal/engine"
	"github.com/petrel-db/petrel/internal/model"
)

func queued(a *Agent) []model.Event {
	var evs []model.Event
	for {
		select {
		case ev := <-a.events.queue():
			evs = append(evs, ev)
		default:
			return evs
		}
	}
}

// TestFailoverEvent: a standby that saw the leader probed dead and then
// took the key records a failover naming the old and the new leader and
// why; a switchover names the requester's leader; the leader records
// members joining and leaving, once.
func TestFailoverEvent(t *testing.T) {
	a := &Agent{cfg: config.Node{ID: "b", Region: "r"}, log: slog.New(slog.DiscardHandler)}
	wait := engine.Plan{Role: model.RoleReplica, Actions: []engine.Action{{Kind: engine.Wait}}}
	a.recordStep(engine.Observation{StoreOK: true, Leader: "a", LeaderDead: true}, wait, 1)
	a.recordStep(engine.Observation{StoreOK: true}, wait, 1)
	acquire := engine.Plan{Role: model.RoleReplica, Actions: []engine.Action{{Kind: engine.AcquireLeader, Reason: "most advanced of 1 synchronous members heard"}}}
	obs := engine.Observation{StoreOK: true, Sync: model.Sync{Leader: "a"}, Timeline: 3, LSN: 0x3000060}
	a.recordStep(obs, acquire, 0) // failed: nothing recorded
	if evs := queued(a); len(evs) != 0 {
		t.Fatalf("a failed action recorded %+v", evs)
	}
	a.recordStep(obs, acquire, 1)
	evs := queued(a)
	if len(evs) != 1 {
		t.Fatalf("recorded %+v, want one failover", evs)
	}
	ev := evs[0]
	if ev.Kind != model.EventFailover || ev.From != "a" || ev.To != "b" || ev.Node != "b" || ev.Timeline != 3 || ev.LSN != "0/3000060" ||
		!strings.Contains(ev.Reason, "leader a's Postgres and agent refused") || !strings.Contains(ev.Reason, "most advanced") {
		t.Fatalf("failover event %+v", ev)
	}

	obs.Switchover = &model.Switchover{From: "a", To: "b"}
	a.recordStep(obs, acquire, 1)
	if evs := queued(a); len(evs) != 1 || evs[0].Kind != model.EventSwitchover || evs[0].From != "a" || evs[0].To != "b" {
		t.Fatalf("switchover events %+v", evs)
	}

	lead := engine.Plan{Role: model.RolePrimary}
	mem := func(ids ...string) map[string]model.Member {
		m := map[string]model.Member{}
		for _, id := range ids {
			m[id] = model.Member{ID: id}
		}
		return m
	}
	o := engine.Observation{StoreOK: true, LeaderMine: true, Leader: "b", Members: mem("a", "b")}
	a.recordStep(o, lead, 0)
	if evs := queued(a); len(evs) != 0 {
		t.Fatalf("a new leader recorded the members it found: %+v", evs)
	}
	o.Members = mem("b", "c")
	a.recordStep(o, lead, 0)
	a.recordStep(o, lead, 0)
	evs = queued(a)
	if len(evs) != 2 || evs[0].Kind != model.EventMemberJoin || evs[0].To != "c" || evs[1].Kind != model.EventMemberLeave || evs[1].To != "a" {
		t.Fatalf("member events %+v", evs)
	}
}
