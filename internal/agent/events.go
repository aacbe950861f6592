package agent

// The cluster's history (model.Event): every action that changes who
// leads or what a member's data is gets an event, written where it was
// carried out. The main loop hands events to a writer goroutine and never
// waits for the store: a failover must not be slowed by its own record.

import (
	"context"
	"fmt"
	"log/slog"
	"sort"
	"sync"
	"time"

	"github.com/petrel-db/petrel/internal/engine"
	"github.com/petrel-db/petrel/internal/model"
	"github.com/petrel-db/petrel/internal/pg"
	"github.com/petrel-db/petrel/internal/store"
)

// eventLog queues events for the store. The zero value works; run writes.
type eventLog struct {
	once sync.Once
	ch   chan model.Event

	// Main-loop state (only step touches it).
	leader     string // the leader in the last observation
	leaderDead bool   // ... and whether it was probed dead then
	leaderGone string // why the last leader's key went away, as far as this node saw
	members    map[string]bool
	membersOf  bool // members holds the live set seen as the leader
}

func (l *eventLog) queue() chan model.Event {
	l.once.Do(func() { l.ch = make(chan model.Event, 64) })
	return l.ch
}

// add queues ev; a full queue (the store down for long) drops it, logged.
func (l *eventLog) add(log *slog.Logger, ev model.Event) {
	if ev.Time.IsZero() {
		ev.Time = time.Now()
	}
	select {
	case l.queue() <- ev:
	default:
		log.Warn("event queue full: event not recorded", "kind", ev.Kind, "reason", ev.Reason)
	}
}

// run writes queued events until ctx ends, each tried a few times.
func (l *eventLog) run(ctx context.Context, st *store.Store, log *slog.Logger) {
	ch := l.queue()
	for {
		select {
		case <-ctx.Done():
			return
		case ev := <-ch:
			for try := 0; ; try++ {
				_, err := st.RecordEvent(ctx, ev)
				if err == nil {
					break
				}
				if try == 4 || ctx.Err() != nil {
					log.Warn("event not recorded", "kind", ev.Kind, "err", err)
					break
				}
				select {
				case <-ctx.Done():
				case <-time.After(time.Second):
				}
			}
		}
	}
}

// recordStep is the main loop's hook: called once per round with the
// observation, the plan and how many of its actions succeeded (in order).
func (a *Agent) recordStep(o engine.Observation, plan engine.Plan, done int) {
	l := &a.events
	if o.StoreOK {
		if l.leader != "" && o.Leader == "" {
			l.leaderGone = fmt.Sprintf("leader %s's key expired or was released", l.leader)
			if l.leaderDead {
				l.leaderGone = fmt.Sprintf("leader %s's Postgres and agent refused connections", l.leader)
			}
		}
		l.leader, l.leaderDead = o.Leader, o.LeaderDead
	}
	a.recordActions(o, plan.Actions[:done])
	a.memberEvents(o, plan)
}

// recordActions queues the events of carried-out actions.
func (a *Agent) recordActions(o engine.Observation, acts []engine.Action) {
	for _, act := range acts {
		if ev, ok := a.actionEvent(o, act); ok {
			a.events.add(a.log, ev)
		}
	}
}

// actionEvent is the event of one carried-out action, if it makes one.
func (a *Agent) actionEvent(o engine.Observation, act engine.Action) (model.Event, bool) {
	ev := model.Event{Node: a.cfg.ID, Region: a.cfg.Region, Timeline: o.Timeline, Reason: act.Why()}
	if o.LSN > 0 {
		ev.LSN = pg.FormatLSN(o.LSN)
	}
	switch act.Kind {
	case engine.Bootstrap, engine.FinishBootstrap:
		ev.Kind, ev.To = model.EventBootstrap, a.cfg.ID
	case engine.AcquireLeader:
		ev.To = a.cfg.ID
		if sw := o.Switchover; sw != nil {
			ev.Kind, ev.From = model.EventSwitchover, sw.From
		} else {
			ev.Kind, ev.From = model.EventFailover, o.Sync.Leader
			if why := a.events.leaderGone; why != "" {
				ev.Reason = why + "; " + act.Why()
			}
		}
	case engine.Promote:
		ev.Kind = model.EventPromote
	case engine.Fence, engine.Kill:
		ev.Kind = model.EventFence
	case engine.ReleaseLeader:
		ev.Kind, ev.From = model.EventReleaseLeader, a.cfg.ID
	case engine.RevokeLeader:
		ev.Kind, ev.From = model.EventRevokeLeader, o.Leader
	case engine.Rewind:
		ev.Kind, ev.To = model.EventRejoin, act.Target
	case engine.Clone, engine.Reclone:
		ev.Kind, ev.To = model.EventClone, act.Target
	case engine.SwitchoverStop:
		ev.Kind, ev.From, ev.To = model.EventHandOver, a.cfg.ID, act.Target
	case engine.SetReadOnly:
		ev.Kind = model.EventReadOnly
		ev.Reason = act.Value + ": " + act.Why()
	case engine.RestartPostgres:
		ev.Kind = model.EventRestart
	default:
		return ev, false
	}
	return ev, true
}

// memberEvents: the leader records members joining (a live record
// appears) and leaving (it expires: the agent is gone). Only the leader,
// so each change is recorded once; a new leader starts from what it sees.
func (a *Agent) memberEvents(o engine.Observation, plan engine.Plan) {
	l := &a.events
	if plan.Role != model.RolePrimary || !o.StoreOK || !o.LeaderMine {
		l.members, l.membersOf = nil, false
		return
	}
	now := make(map[string]bool, len(o.Members))
	for id := range o.Members {
		now[id] = true
	}
	if l.membersOf {
		var joined, left []string
		for id := range now {
			if !l.members[id] {
				joined = append(joined, id)
			}
		}
		for id := range l.members {
			if !now[id] {
				left = append(left, id)
			}
		}
		sort.Strings(joined)
		sort.Strings(left)
		for _, id := range joined {
			l.add(a.log, model.Event{Kind: model.EventMemberJoin, Node: a.cfg.ID, Region: o.Members[id].Region, To: id, Timeline: o.Timeline,
				Reason: "member record appeared (its agent is up)"})
		}
		for _, id := range left {
			l.add(a.log, model.Event{Kind: model.EventMemberLeave, Node: a.cfg.ID, To: id, Timeline: o.Timeline,
				Reason: "member record expired (its agent stopped renewing)"})
		}
	}
	l.members, l.membersOf = now, true
}
