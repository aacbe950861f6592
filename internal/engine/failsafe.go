package engine

import (
	"fmt"
	"time"

	"github.com/petrel-db/petrel/internal/model"
)

// Failsafe mode (after Patroni's): when the leader cannot reach the store
// it does not have to stop writes at the end of its lease if every
// registered member, asked over its API, promises not to take over for a
// lease TTL. These are the rules; the agent carries the requests (signed,
// fresh: the transport's checks come first) and keeps the clocks.
//
//  1. A member promises only while it cannot reach the store either, only
//     to the leader its cache names, never while it runs a writable
//     Postgres itself, and for at least its own TTL and the leader's.
//  2. A leader's round counts only if every registered member promised;
//     a member whose record was gone when the store was last read fails
//     the round without being asked. The window then runs one TTL from
//     the round's start, so it always ends before any promise.
//  3. A refusal that says someone else may lead (another leader named,
//     a writable member) withdraws the window at once: the lease decides.
//  4. A member that promised neither starts an election, nor revokes the
//     leader, nor stops following it until its promise ends (Decide,
//     FailsafePromised).

// MaxPromise bounds what a request may ask for: a request with a longer
// TTL is refused, so that it cannot hold elections off for long.
const MaxPromise = time.Minute

// FailsafeAsk is what a member knows when a leader asks it for a promise.
type FailsafeAsk struct {
	Self           string
	Leader         string        // the member asking
	TTL            time.Duration // the asking leader's lease TTL
	OwnTTL         time.Duration // this member's lease TTL
	StoreReachable bool          // this member read the store just now (a linearizable read within its bound)
	StoreLeader    string        // the leader this member's cache names ("" none)
	Writable       bool          // this member's Postgres is a writable primary
}

// Refusal says why a member did not promise.
type Refusal int

const (
	Promised         Refusal = iota
	RefusedTTL               // the asked TTL is not positive or above MaxPromise
	RefusedSelf              // the request names this member as the leader
	RefusedReachable         // this member reaches the store: the leader must use it
	RefusedLeader            // the store last named another leader (or none)
	RefusedWritable          // this member runs a writable primary
	RefusedRemote            // a refusal as the asking leader got it over the wire (its Reason says why)
)

// Promise is a member's answer.
type Promise struct {
	Refusal Refusal
	// For is how long the promise holds from the answer (Promised only).
	For time.Duration
	// OtherLeader: the refusal says someone else may lead (rule 3).
	OtherLeader bool
	// Reason is the answer's text for the asking leader's log.
	Reason string
}

// OK says whether the member promised.
func (p Promise) OK() bool { return p.Refusal == Promised }

// DecidePromise is a member's answer to a leader's failsafe request
// (rule 1).
func DecidePromise(a FailsafeAsk) Promise {
	switch {
	case a.TTL <= 0 || a.TTL > MaxPromise:
		return Promise{Refusal: RefusedTTL, Reason: "bad ttl"}
	case a.Leader == a.Self:
		return Promise{Refusal: RefusedSelf, Reason: "that is this member"}
	case a.StoreReachable:
		return Promise{Refusal: RefusedReachable, Reason: "this member reaches the store: the leader must too"}
	case a.StoreLeader != a.Leader:
		return Promise{Refusal: RefusedLeader, Reason: fmt.Sprintf("the store last named %q the leader", a.StoreLeader), OtherLeader: a.StoreLeader != ""}
	case a.Writable:
		return Promise{Refusal: RefusedWritable, Reason: "this member runs a writable primary", OtherLeader: true}
	}
	// At least the leader's TTL: its window is that long from before it
	// asked, so the promise outlives it whatever this member's own TTL.
	return Promise{Refusal: Promised, For: max(a.OwnTTL, a.TTL)}
}

// FailsafeTargets are the members a leader's round asks: every registered
// member but itself. missing names one whose record was gone when the
// store was last read (it cannot be asked): the round fails (rule 2).
func FailsafeTargets(self string, registered []string, members map[string]model.Member) (targets []model.Member, missing string) {
	for _, id := range registered {
		if id == self {
			continue
		}
		m, alive := members[id]
		if !alive || m.APIURL == "" {
			return nil, id
		}
		targets = append(targets, m)
	}
	return targets, ""
}

// FailsafeAnswer is one member's answer in a round, as the leader got it.
type FailsafeAnswer struct {
	ID       string
	Answered bool // the member answered (else: unreachable, timed out)
	Promise  Promise
	Err      string // why it did not answer
}

// RoundResult is what a round means for the leader's window.
type RoundResult struct {
	Granted  bool   // every member promised: the window runs one TTL from the round's start
	Withdraw bool   // someone else may lead: drop the window at once
	Why      string // the first refusal or failure, for the log
}

// DecideRound combines a round's answers (rules 2 and 3).
func DecideRound(answers []FailsafeAnswer) RoundResult {
	res := RoundResult{Granted: true}
	for _, a := range answers {
		switch {
		case !a.Answered:
			res.Granted = false
			if res.Why == "" {
				res.Why = a.ID + ": " + a.Err
			}
		case !a.Promise.OK():
			res.Granted = false
			res.Withdraw = res.Withdraw || a.Promise.OtherLeader
			if res.Why == "" {
				res.Why = a.ID + ": refused: " + a.Promise.Reason
			}
		}
	}
	return res
}

// RoundDue says whether a leader should ask for promises now: its lease
// renewal is late, it runs a writable Postgres as the leader, and its time
// (lease or window) has not yet reached the fence margin, where the
// engine fences; a fenced leader does not come back on a later round.
func RoundDue(renewalLate, writableLeader bool, safeLeft time.Duration, p Params) bool {
	return renewalLate && writableLeader && safeLeft >= p.FenceMargin
}
