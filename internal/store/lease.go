package store

// Leases. A node holds at most two:
//
//   - the session lease (SessionTTL, long): its members/<id> record rides on
//     it; renewed every SessionTTL/2, so a dead node's record goes within a
//     minute and an idle node costs etcd one message per 30 s;
//   - the leader lease (the configured TTL, short): only the leader has one.
//     A candidate grants it in AcquireLeader and puts the leader key on it
//     in the same step; it is renewed every renewEvery while the key is on
//     it, and revoked when the node lets the key go.
//
// Each lease is renewed over one long-lived LeaseKeepAlive stream with one
// request in flight: every answer therefore belongs to the last request
// sent, and its send time is known. A request not answered within the
// attempt timeout abandons its stream (a late answer on it is never read)
// and the next attempt opens a new one. The leader lease's expiry is taken
// as that send time plus the TTL etcd confirmed: etcd starts the TTL when
// it receives the request, which is later, so LeaseLeft never overstates.

import (
	"context"
	"errors"
	"fmt"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc/connectivity"
)

// SessionTTL is the TTL of a node's session lease (its member record).
const SessionTTL = 60 * time.Second

// Renewal timing of the leader lease, for a TTL of T and the fence margin
// T/4 (engine: fence when less than that is left): a renewal every 0.4 T,
// each attempt given T/6, leaves room for the scheduled attempt and one
// retry (0.4 T + 2 T/6 = 0.73 T) before the fence at 0.75 T after the last
// confirmed send. Idle, that is 1/(0.4 T) messages a second (0.83 for 3 s).
func renewEvery(ttl time.Duration) time.Duration     { return ttl * 2 / 5 }
func renewTimeout(ttl time.Duration) time.Duration   { return ttl / 6 }
func renewLateAfter(ttl time.Duration) time.Duration { return renewEvery(ttl) + ttl/12 }

// errLeaseGone says etcd no longer knows the lease (it expired or was
// revoked).
var errLeaseGone = errors.New("lease not found")

// kaStream is one LeaseKeepAlive stream with at most one request in flight.
type kaStream struct {
	st     pb.Lease_LeaseKeepAliveClient
	cancel context.CancelFunc
	resp   chan kaResult // the answer to the request in flight
}

type kaResult struct {
	r   *pb.LeaseKeepAliveResponse
	err error
}

// openKeepAlive opens a stream, giving up after timeout.
func (s *Store) openKeepAlive(ctx context.Context, timeout time.Duration) (*kaStream, error) {
	sctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	t := time.AfterFunc(timeout, cancel) // bounds only the opening
	st, err := pb.NewLeaseClient(s.cli.ActiveConnection()).LeaseKeepAlive(sctx)
	if !t.Stop() || err != nil {
		cancel()
		if err == nil {
			err = context.DeadlineExceeded
		}
		return nil, fmt.Errorf("opening a keepalive stream: %w", err)
	}
	ks := &kaStream{st: st, cancel: cancel, resp: make(chan kaResult, 1)}
	go func() {
		for {
			r, err := st.Recv()
			select {
			case ks.resp <- kaResult{r, err}:
			case <-sctx.Done():
				return
			}
			if err != nil {
				return
			}
		}
	}()
	return ks, nil
}

// renewOnce sends one keepalive for id on ks and waits up to timeout for
// its answer. It returns the TTL etcd granted.
func (ks *kaStream) renewOnce(ctx context.Context, id clientv3.LeaseID, timeout time.Duration) (time.Duration, error) {
	t := time.NewTimer(timeout)
	defer t.Stop()
	if err := ks.st.Send(&pb.LeaseKeepAliveRequest{ID: int64(id)}); err != nil {
		return 0, fmt.Errorf("sending a keepalive: %w", err)
	}
	select {
	case res := <-ks.resp:
		if res.err != nil {
			return 0, fmt.Errorf("receiving a keepalive answer: %w", res.err)
		}
		if res.r.TTL <= 0 {
			return 0, errLeaseGone
		}
		return time.Duration(res.r.TTL) * time.Second, nil
	case <-t.C:
		return 0, fmt.Errorf("keepalive not answered within %v: %w", timeout, context.DeadlineExceeded)
	case <-ctx.Done():
		return 0, ctx.Err()
	}
}

// keepAlive renews id every `every` until ctx ends or etcd says the lease
// is gone (then it returns errLeaseGone). Each confirmed renewal is
// reported to ok with its request's send time and the TTL etcd granted;
// a failed attempt is retried after a short pause.
func (s *Store) keepAlive(ctx context.Context, id clientv3.LeaseID, leader bool, first time.Time, every, timeout time.Duration, ok func(sent time.Time, ttl time.Duration)) error {
	const retryPause = 100 * time.Millisecond
	var ks *kaStream
	drop := func() {
		if ks != nil {
			ks.cancel()
			ks = nil
		}
	}
	defer drop()
	next := first
	for {
		if d := time.Until(next); d > 0 {
			t := time.NewTimer(d)
			select {
			case <-ctx.Done():
				t.Stop()
				return ctx.Err()
			case <-t.C:
			}
		} else if ctx.Err() != nil {
			return ctx.Err()
		}
		if ks == nil {
			var err error
			if ks, err = s.openKeepAlive(ctx, timeout); err != nil {
				s.log.Debug("renewing lease", "lease", fmt.Sprintf("%x", id), "err", err)
				next = time.Now().Add(retryPause)
				continue
			}
		}
		sent := time.Now()
		ttl, err := ks.renewOnce(ctx, id, timeout)
		if r := s.probe.Renewal; r != nil && ctx.Err() == nil {
			r(leader, time.Since(sent), err)
		}
		switch {
		case errors.Is(err, errLeaseGone):
			return errLeaseGone
		case err != nil:
			// The stream may hold a late answer: never read it.
			drop()
			s.log.Debug("renewing lease", "lease", fmt.Sprintf("%x", id), "err", err)
			s.poke()
			next = time.Now().Add(retryPause)
			continue
		}
		ok(sent, ttl)
		next = sent.Add(every)
	}
}

// runSession keeps a session lease until ctx ends, granting a new one
// whenever etcd lost it (the agent then registers again).
func (s *Store) runSession(ctx context.Context) {
	for ctx.Err() == nil {
		sent := time.Now()
		gctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		g, err := s.cli.Grant(gctx, int64(SessionTTL/time.Second))
		cancel()
		if err != nil {
			s.log.Debug("granting the session lease", "err", err)
			select {
			case <-ctx.Done():
				return
			case <-time.After(250 * time.Millisecond):
			}
			continue
		}
		id, ttl := clientv3.LeaseID(g.ID), time.Duration(g.TTL)*time.Second
		s.mu.Lock()
		s.session, s.sessionTo, s.lastOK = id, sent.Add(ttl), time.Now()
		s.mu.Unlock()
		s.poke()
		err = s.keepAlive(ctx, id, false, sent.Add(SessionTTL/2), SessionTTL/2, 2*time.Second, func(sent time.Time, ttl time.Duration) {
			s.mu.Lock()
			if s.session == id {
				s.sessionTo, s.lastOK = sent.Add(ttl), time.Now()
			}
			s.mu.Unlock()
		})
		s.mu.Lock()
		if s.session == id {
			s.session, s.sessionTo = 0, time.Time{}
		}
		s.mu.Unlock()
		s.poke()
		if errors.Is(err, errLeaseGone) {
			s.log.Warn("session lease expired; taking a new one", "lease", fmt.Sprintf("%x", id))
		}
	}
}

// Session is this node's session lease (0: none yet), the one its member
// record is on.
func (s *Store) Session() clientv3.LeaseID {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.session
}

// grantLeader grants a new leader lease; the caller puts the leader key on
// it and then calls holdLeader, or revokes it.
func (s *Store) grantLeader(ctx context.Context) (clientv3.LeaseID, time.Time, time.Duration, error) {
	cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	sent := time.Now()
	g, err := s.cli.Grant(cctx, int64(s.ttl/time.Second))
	if err != nil {
		return 0, time.Time{}, 0, fmt.Errorf("granting the leader lease: %w", err)
	}
	return clientv3.LeaseID(g.ID), sent, time.Duration(g.TTL) * time.Second, nil
}

// holdLeader makes id this node's leader lease (the leader key was put on
// it at revision rev) and keeps it renewed; a previous one is let go.
func (s *Store) holdLeader(id clientv3.LeaseID, sent time.Time, ttl time.Duration, rev int64) {
	ctx, cancel := context.WithCancel(s.bg)
	s.mu.Lock()
	old := s.leader
	oldStop := s.stopLeader
	s.leader, s.leaderTo, s.leaderSent, s.leaderRev, s.stopLeader = id, sent.Add(ttl), sent, rev, cancel
	s.lastOK = time.Now()
	// The watch may already be past rev with the key gone again.
	_, gone := s.checkLeaderKeyLocked()
	s.mu.Unlock()
	if oldStop != nil {
		oldStop()
		s.revokeLater(old)
	}
	defer s.poke()
	if gone {
		s.dropLeader(id, true)
		return
	}
	go func() {
		err := s.keepAlive(ctx, id, true, sent.Add(renewEvery(s.ttl)), renewEvery(s.ttl), renewTimeout(s.ttl), func(sent time.Time, ttl time.Duration) {
			s.mu.Lock()
			if s.leader == id {
				s.leaderTo, s.leaderSent, s.lastOK = sent.Add(ttl), sent, time.Now()
			}
			s.mu.Unlock()
		})
		if errors.Is(err, errLeaseGone) {
			s.log.Warn("leader lease expired", "lease", fmt.Sprintf("%x", id))
			s.dropLeader(id, false)
		}
	}()
}

// dropLeader stops renewing leader lease id, if it is still this node's,
// and revokes it when revoke is set (it may still hold the key).
func (s *Store) dropLeader(id clientv3.LeaseID, revoke bool) {
	s.mu.Lock()
	if s.leader != id || id == 0 {
		s.mu.Unlock()
		return
	}
	stop := s.stopLeader
	s.leader, s.leaderTo, s.leaderSent, s.leaderRev, s.stopLeader = 0, time.Time{}, time.Time{}, 0, nil
	s.mu.Unlock()
	if stop != nil {
		stop()
	}
	if revoke {
		s.revokeLater(id)
	}
	s.poke()
}

// revokeLater revokes a lease in the background (best effort: unrenewed,
// it expires anyway).
func (s *Store) revokeLater(id clientv3.LeaseID) {
	if id == 0 {
		return
	}
	go func() {
		ctx, cancel := context.WithTimeout(s.bg, 2*time.Second)
		defer cancel()
		if _, err := s.cli.Revoke(ctx, id); err != nil {
			s.log.Debug("revoking a lease", "lease", fmt.Sprintf("%x", id), "err", err)
		}
	}()
}

// checkLeaderKey lets the leader lease go once the cache, as of a revision
// after the key was put on it, shows the key gone or on another lease (a
// peer revoked it): nothing is left to keep. Caller holds s.mu.
func (s *Store) checkLeaderKeyLocked() (clientv3.LeaseID, bool) {
	if s.leader == 0 || s.rev < s.leaderRev {
		return 0, false
	}
	kv, ok := s.kvs[s.key("leader")]
	if ok && clientv3.LeaseID(kv.Lease) == s.leader {
		return 0, false
	}
	return s.leader, true
}

// Lease returns this node's leader lease (0 when it holds none) and how
// long it is surely still valid: from the send time of its last confirmed
// renewal (or grant).
func (s *Store) Lease() (clientv3.LeaseID, time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.leader == 0 {
		return 0, 0
	}
	return s.leader, time.Until(s.leaderTo)
}

// RenewalLate says the leader lease's renewal is overdue: its last
// confirmed renewal was sent longer ago than the renewal interval plus
// TTL/12 (an answer slower than 250 ms for a 3 s TTL). False without a
// leader lease.
func (s *Store) RenewalLate() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.leader != 0 && time.Since(s.leaderSent) >= renewLateAfter(s.ttl)
}

// connected says the gRPC connection to etcd is up. A connection that
// broke (etcd stopped, refused) shows at once; a silent network shows
// after the gRPC keepalive fails (about 12 s).
func (s *Store) connected() bool {
	return s.cli.ActiveConnection().GetState() == connectivity.Ready
}

// Reachable asks etcd, within timeout, for the leader key with a
// linearizable read: whether this node can reach the store now. Used
// where a stale answer would matter (a failsafe promise); nothing calls it
// on a schedule.
func (s *Store) Reachable(ctx context.Context, timeout time.Duration) bool {
	if !s.connected() {
		return false
	}
	cctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	if _, err := s.cli.Get(cctx, s.key("leader")); err != nil {
		return false
	}
	s.mu.Lock()
	s.lastOK = time.Now()
	s.mu.Unlock()
	return true
}

// Revoke gives up both leases at once (a clean shutdown): the member
// record and any leader key go with them.
func (s *Store) Revoke(ctx context.Context) {
	s.mu.Lock()
	leader, session, stop := s.leader, s.session, s.stopLeader
	s.leader, s.leaderTo, s.leaderSent, s.stopLeader = 0, time.Time{}, time.Time{}, nil
	s.mu.Unlock()
	if stop != nil {
		stop()
	}
	for _, id := range []clientv3.LeaseID{leader, session} {
		if id == 0 {
			continue
		}
		cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		_, _ = s.cli.Revoke(cctx, id)
		cancel()
	}
}
