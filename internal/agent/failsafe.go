package agent

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/petrel-db/petrel/internal/model"
)

// Failsafe mode (after Patroni's): when the leader cannot reach the store,
// it does not have to stop writes at the end of its lease if every
// registered member, asked over its API, promises not to take over for a
// lease TTL. A member promises only while it cannot reach the store
// either, and only to the leader its cache names. The leader counts its
// window from before it asked, each member its promise from when it
// answered, so the leader's window always ends first.
//
// Rules:
//  1. every registered member must answer yes in one round, or the leader
//     falls back to its lease (and fences at its end, as without failsafe);
//  2. a member that promised does not start an election, revoke the
//     leader or stop following it until its promise ends, even if it sees
//     the store again meanwhile;
//  3. requests are signed with a key only members hold (from the
//     replication password) and must be fresh.

// failsafeMaxSkew bounds how old (or how far ahead, clocks differ) a
// request may be.
const failsafeMaxSkew = 5 * time.Second

func failsafeKey(replPassword string) []byte {
	k := sha256.Sum256([]byte("petrel-failsafe|" + replPassword))
	return k[:]
}

func failsafeMAC(key []byte, leader string, sentMs, ttlMs int64) string {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(leader + "|" + strconv.FormatInt(sentMs, 10) + "|" + strconv.FormatInt(ttlMs, 10)))
	return hex.EncodeToString(m.Sum(nil))
}

// SignFailsafe signs a FailsafeRequest as a leader of the cluster whose
// replication password is replPassword would (tools and tests).
func SignFailsafe(replPassword string, req *model.FailsafeRequest) {
	req.MAC = failsafeMAC(failsafeKey(replPassword), req.Leader, req.SentUnixMs, req.TTLMs)
}

// maxPromise bounds what a request may ask for: a forged TTL cannot hold
// elections off for long (requests are signed, but keep it bounded).
const maxPromise = time.Minute

// Failsafe answers a leader's request (POST /failsafe).
func (a *Agent) Failsafe(ctx context.Context, req model.FailsafeRequest) model.FailsafeReply {
	no := func(why string) model.FailsafeReply { return model.FailsafeReply{Reason: why} }
	key := failsafeKey(a.sec.Replication)
	if !hmac.Equal([]byte(req.MAC), []byte(failsafeMAC(key, req.Leader, req.SentUnixMs, req.TTLMs))) {
		return no("bad signature")
	}
	ttl := time.Duration(req.TTLMs) * time.Millisecond
	if ttl <= 0 || ttl > maxPromise {
		return no("bad ttl")
	}
	if skew := time.Since(time.UnixMilli(req.SentUnixMs)); skew > failsafeMaxSkew || skew < -failsafeMaxSkew {
		return no("stale request")
	}
	if req.Leader == a.cfg.ID {
		return no("that is this member")
	}
	// Asked, not assumed: a member's own renewals are 30 s apart, so only
	// a read now tells whether it reaches the store. A read slower than
	// the bound counts as unreachable: the promise that follows is kept,
	// so that errs on the safe side.
	if a.st.Reachable(ctx, a.cfg.LeaseTTL/12) {
		return no("this member reaches the store: the leader must too")
	}
	if snap := a.st.Snapshot(); snap.Leader != req.Leader {
		return model.FailsafeReply{Reason: fmt.Sprintf("the store last named %q the leader", snap.Leader), OtherLeader: snap.Leader != ""}
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.lastPG.Running && !a.lastPG.InRecovery {
		return model.FailsafeReply{Reason: "this member runs a writable primary", OtherLeader: true}
	}
	// At least the leader's TTL: its window is that long from before it
	// asked, so the promise outlives it whatever this member's own TTL.
	until := time.Now().Add(max(a.cfg.LeaseTTL, ttl))
	if until.After(a.promisedUntil) {
		a.promisedUntil = until
	}
	return model.FailsafeReply{OK: true}
}

// promised says whether this member's failsafe promise still holds.
func (a *Agent) promised() bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	return time.Now().Before(a.promisedUntil)
}

// failsafeLeft is the leader's remaining failsafe window (0: none). It
// counts only while the store is late and for the lease the window was
// granted on: once the store answers, or the lease changed (the key went
// with the old one), the lease alone decides.
func (a *Agent) failsafeLeft() time.Duration {
	lease, _ := a.st.Lease()
	late := a.st.RenewalLate()
	a.mu.Lock()
	defer a.mu.Unlock()
	if !late || lease == 0 || lease != a.failsafeLease {
		a.failsafeUntil = time.Time{}
		return 0
	}
	return max(0, time.Until(a.failsafeUntil))
}

// safeLeft is how long this node may still act as the writable leader:
// its lease, or its failsafe window while the store is unreachable.
func (a *Agent) safeLeft() time.Duration {
	_, left := a.st.Lease()
	return max(left, a.failsafeLeft())
}

// failsafeLoop runs rounds while this node is a writable leader that
// cannot reach the store.
func (a *Agent) failsafeLoop(ctx context.Context) {
	// Checked every 50 ms, a round starts within 50 ms of a renewal
	// being late (0.48 TTL after the last confirmed one was sent) and
	// ends within TTL/5, well before the fence at 0.75 TTL; rounds repeat
	// every TTL/10, so the window (TTL from each round's start) never
	// runs into the fence margin while every member keeps promising.
	every := max(a.cfg.LeaseTTL/10, 50*time.Millisecond)
	t := time.NewTicker(50 * time.Millisecond)
	defer t.Stop()
	client := &http.Client{Timeout: a.cfg.LeaseTTL / 5}
	var last time.Time
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if !a.st.RenewalLate() || time.Since(last) < every {
			continue
		}
		a.mu.Lock()
		primary := a.lastPG.Running && !a.lastPG.InRecovery && a.lastObs.LeaderMine
		a.mu.Unlock()
		if !primary || a.safeLeft() < a.params.FenceMargin {
			// Nothing to keep, or the window already reached the fence
			// margin (the engine fences there): a fenced leader does not
			// come back on a later round.
			continue
		}
		lease, _ := a.st.Lease()
		start := time.Now()
		last = start
		ok, why, other := a.failsafeRound(ctx, client)
		a.mu.Lock()
		switch {
		case ok:
			if u := start.Add(a.cfg.LeaseTTL); u.After(a.failsafeUntil) || lease != a.failsafeLease {
				a.failsafeUntil, a.failsafeLease = u, lease
			}
		case other:
			// A member runs a writable primary or knows another leader: stop
			// leaning on promises at once; the lease decides.
			a.failsafeUntil = time.Time{}
		}
		a.mu.Unlock()
		if !ok {
			a.log.Warn("failsafe: not every member promised; the lease decides", "why", why)
		}
	}
}

// failsafeRound asks every registered member; all must say yes. other
// reports a refusal that means someone else may lead.
func (a *Agent) failsafeRound(ctx context.Context, client *http.Client) (ok bool, why string, other bool) {
	snap := a.st.Snapshot()
	key := failsafeKey(a.sec.Replication)
	type result struct {
		id  string
		err error
	}
	var targets []model.Member
	for _, id := range snap.Registered {
		if id == a.cfg.ID {
			continue
		}
		m, alive := snap.Members[id]
		if !alive || m.APIURL == "" {
			return false, id + " was not alive when the store was last read", false
		}
		targets = append(targets, m)
	}
	results := make(chan result, len(targets))
	var wg sync.WaitGroup
	for _, m := range targets {
		wg.Add(1)
		go func() {
			defer wg.Done()
			results <- result{m.ID, a.askFailsafe(ctx, client, key, m)}
		}()
	}
	wg.Wait()
	close(results)
	ok = true
	for r := range results {
		if r.err != nil {
			ok, why = false, fmt.Sprintf("%s: %v", r.id, r.err)
			var ref refusal
			if errors.As(r.err, &ref) && ref.otherLeader {
				other = true
			}
		}
	}
	return ok, why, other
}

// refusal is a member's "no", with whether it says someone else leads.
type refusal struct {
	reason      string
	otherLeader bool
}

func (r refusal) Error() string { return "refused: " + r.reason }

func (a *Agent) askFailsafe(ctx context.Context, client *http.Client, key []byte, m model.Member) error {
	sent, ttl := time.Now().UnixMilli(), a.cfg.LeaseTTL.Milliseconds()
	body, _ := json.Marshal(model.FailsafeRequest{Leader: a.cfg.ID, SentUnixMs: sent, TTLMs: ttl, MAC: failsafeMAC(key, a.cfg.ID, sent, ttl)})
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, a.dialSrc.Map().URL(m.APIURL)+"/failsafe", bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	var rep model.FailsafeReply
	if err := json.NewDecoder(io.LimitReader(resp.Body, 4<<10)).Decode(&rep); err != nil {
		return fmt.Errorf("decoding the answer: %w", err)
	}
	if !rep.OK {
		return refusal{reason: rep.Reason, otherLeader: rep.OtherLeader}
	}
	return nil
}
