package agent

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/petrel-db/petrel/internal/api"
	"github.com/petrel-db/petrel/internal/engine"
	"github.com/petrel-db/petrel/internal/model"
	"github.com/petrel-db/petrel/internal/peerauth"
	"github.com/petrel-db/petrel/internal/pki"
)

// Failsafe mode (after Patroni's): the transport. The rules, who promises
// what and when a leader's round counts, are the engine's
// (engine/failsafe.go: DecidePromise, FailsafeTargets, DecideRound,
// RoundDue); here the clocks are kept (the leader counts its window from
// before it asked, each member its promise from when it answered, so the
// leader's window always ends first) and requests are authenticated:
// they come over TLS with the leader's own node certificate and carry a
// MAC (internal/peerauth, a key derived from the cluster secret) over the
// leader, the member asked, a nonce, the send time and the TTL, so a
// forged, altered, redirected or replayed request, or one outside the
// clock window, is refused.

// failsafeMaxSkew bounds how old (or how far ahead, clocks differ) a
// request may be.
const failsafeMaxSkew = 5 * time.Second

// failsafeFields are the request's own fields under its MAC.
func failsafeFields(req *model.FailsafeRequest) []string {
	return []string{strconv.FormatInt(req.TTLMs, 10)}
}

func failsafeHeader(req *model.FailsafeRequest) peerauth.Header {
	return peerauth.Header{Sender: req.Leader, Target: req.Target, Nonce: req.Nonce, SentUnixMs: req.SentUnixMs, MAC: req.MAC}
}

// SignFailsafe signs req (Leader, Target and TTLMs set) as a leader
// holding key (FailsafeKey) would, with a fresh nonce and the time now.
func SignFailsafe(key []byte, req *model.FailsafeRequest, now time.Time) {
	h := peerauth.Sign(key, req.Leader, req.Target, now, failsafeFields(req)...)
	req.Nonce, req.SentUnixMs, req.MAC = h.Nonce, h.SentUnixMs, h.MAC
}

// FailsafeKey is the failsafe message key of cluster (tools and tests:
// the secret is the unsealed CA's, pki.CA.Secret).
func FailsafeKey(secret []byte, cluster string) ([]byte, error) {
	return peerauth.Key(secret, cluster, peerauth.PurposeFailsafe)
}

// Failsafe answers a leader's request (POST /failsafe) that came over
// peer (nil: not over TLS).
func (a *Agent) Failsafe(ctx context.Context, req model.FailsafeRequest, peer *tls.ConnectionState) model.FailsafeReply {
	no := func(why string) model.FailsafeReply { return model.FailsafeReply{Reason: why} }
	if got := pki.PeerNode(peer, a.cfg.Cluster); got == "" || got != req.Leader {
		return no(fmt.Sprintf("not authenticated: the request must come with leader %q's node certificate (got %q)", req.Leader, got))
	}
	key := a.failsafeKey()
	if key == nil {
		return no("this member does not know the cluster secret yet")
	}
	// MAC, target (this member), clock window and nonce (never seen).
	if err := a.fsVerifier.Verify(key, failsafeHeader(&req), time.Now(), failsafeFields(&req)...); err != nil {
		return no(err.Error())
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
	client := a.ident.Client(api.ClientOptions{Timeout: a.cfg.LeaseTTL / 5})
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
func (a *Agent) failsafeRound(ctx context.Context, client *api.Client) engine.RoundResult {
	snap := a.st.Snapshot()
	key := a.failsafeKey()
	if key == nil {
		return engine.RoundResult{Why: "this node does not know the cluster secret"}
	}
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

func (a *Agent) askFailsafe(ctx context.Context, client *api.Client, key []byte, m model.Member) error {
	fr := model.FailsafeRequest{Leader: a.cfg.ID, Target: m.ID, TTLMs: a.cfg.LeaseTTL.Milliseconds()}
	SignFailsafe(key, &fr, time.Now())
	body, _ := json.Marshal(fr)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, a.dialSrc.Map().URL(m.APIURL)+"/failsafe", bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := client.Do(req, m.ID)
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
