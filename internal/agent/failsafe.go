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

	"github.com/petrel-db/petrel/internal/engine"
	"github.com/petrel-db/petrel/internal/model"
)

// Failsafe mode (after Patroni's): the transport. The rules, who promises
// what and when a leader's round counts, are the engine's
// (engine/failsafe.go: DecidePromise, FailsafeTargets, DecideRound,
// RoundDue); here requests are signed with a key only members hold (from
// the replication password) and must be fresh, and the clocks are kept:
// the leader counts its window from before it asked, each member its
// promise from when it answered, so the leader's window always ends first.

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

// Failsafe answers a leader's request (POST /failsafe).
func (a *Agent) Failsafe(ctx context.Context, req model.FailsafeRequest) model.FailsafeReply {
	no := func(why string) model.FailsafeReply { return model.FailsafeReply{Reason: why} }
	key := failsafeKey(a.sec.Replication)
	if !hmac.Equal([]byte(req.MAC), []byte(failsafeMAC(key, req.Leader, req.SentUnixMs, req.TTLMs))) {
		return no("bad signature")
	}
	if skew := time.Since(time.UnixMilli(req.SentUnixMs)); skew > failsafeMaxSkew || skew < -failsafeMaxSkew {
		return no("stale request")
	}
	ask := engine.FailsafeAsk{
		Self: a.cfg.ID, Leader: req.Leader, TTL: time.Duration(req.TTLMs) * time.Millisecond, OwnTTL: a.cfg.LeaseTTL,
		StoreLeader: a.st.Snapshot().Leader,
		// Asked, not assumed: a member's own renewals are 30 s apart, so
		// only a read now tells whether it reaches the store. A read
		// slower than the bound counts as unreachable: the promise that
		// follows is kept, so that errs on the safe side.
		StoreReachable: a.st.Reachable(ctx, a.cfg.LeaseTTL/12),
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	ask.Writable = a.lastPG.Running && !a.lastPG.InRecovery
	p := engine.DecidePromise(ask)
	if !p.OK() {
		return model.FailsafeReply{Reason: p.Reason, OtherLeader: p.OtherLeader}
	}
	if until := time.Now().Add(p.For); until.After(a.promisedUntil) {
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
		if time.Since(last) < every {
			continue
		}
		a.mu.Lock()
		primary := a.lastPG.Running && !a.lastPG.InRecovery && a.lastObs.LeaderMine
		a.mu.Unlock()
		if !engine.RoundDue(a.st.RenewalLate(), primary, a.safeLeft(), a.params) {
			continue
		}
		lease, _ := a.st.Lease()
		start := time.Now()
		last = start
		res := a.failsafeRound(ctx, client)
		a.mu.Lock()
		switch {
		case res.Granted:
			if u := start.Add(a.cfg.LeaseTTL); u.After(a.failsafeUntil) || lease != a.failsafeLease {
				a.failsafeUntil, a.failsafeLease = u, lease
			}
		case res.Withdraw:
			a.failsafeUntil = time.Time{}
		}
		a.mu.Unlock()
		if !res.Granted {
			a.log.Warn("failsafe: not every member promised; the lease decides", "why", res.Why)
		}
	}
}

// failsafeRound asks the members engine.FailsafeTargets names and lets
// engine.DecideRound say what their answers mean.
func (a *Agent) failsafeRound(ctx context.Context, client *http.Client) engine.RoundResult {
	snap := a.st.Snapshot()
	key := failsafeKey(a.sec.Replication)
	type result struct {
		id  string
		err error
	}
	targets, missing := engine.FailsafeTargets(a.cfg.ID, snap.Registered, snap.Members)
	if missing != "" {
		return engine.RoundResult{Why: missing + " was not alive when the store was last read"}
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
	var answers []engine.FailsafeAnswer
	for r := range results {
		ans := engine.FailsafeAnswer{ID: r.id, Answered: true}
		var ref refusal
		switch {
		case errors.As(r.err, &ref):
			ans.Promise = engine.Promise{Refusal: engine.RefusedRemote, OtherLeader: ref.otherLeader, Reason: ref.reason}
		case r.err != nil:
			ans.Answered, ans.Err = false, r.err.Error()
		}
		answers = append(answers, ans)
	}
	return engine.DecideRound(answers)
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
