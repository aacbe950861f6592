// Package store is petrel's view of the cluster state in etcd: a
// watch-fed cache of every key under /petrel/<cluster>/, the node's
// session lease, and the compare-and-swap writes the agent and the CLI
// make.
//
// Key layout (who writes what):
//
//	/petrel/<c>/info            ClusterInfo; created once by the bootstrapping node (create-only: the init guard)
//	/petrel/<c>/leader          the leader's id, attached to the leader's lease; written only by AcquireLeader
//	/petrel/<c>/sync            model.Sync; written only by the leader holding the key (CAS on its revision)
//	/petrel/<c>/members/<id>    model.Member, attached to that member's lease; written only by that member
//	/petrel/<c>/nodes/<id>      registration (no lease): the member keeps a replication slot; removed by `petrel remove`
//	/petrel/<c>/switchover      model.Switchover; created by the CLI, completed by the leader, deleted by the new leader
//	/petrel/<c>/cascade         JSON array of regions that stream from a regional hub; written by the CLI
//
// Liveness: OK reports whether the last lease keepalive succeeded recently
// and the watch is current. LeaseLeft is measured from when the last
// successful keepalive was sent, so it never overstates the lease.
package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/petrel-db/petrel/internal/model"
	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
)

// Snapshot is a consistent view of the cluster's keys at one revision.
type Snapshot struct {
	Rev           int64
	Info          *model.ClusterInfo
	Leader        string
	LeaderRev     int64
	LeaderLease   clientv3.LeaseID
	Sync          model.Sync
	SyncRev       int64
	Members       map[string]model.Member
	Registered    []string
	Switchover    *model.Switchover
	SwitchoverRev int64
	InfoRev       int64
	// RegisteredRegions maps each registered node to its region.
	RegisteredRegions map[string]string
	// Cascade lists the regions whose replicas stream from a replica of
	// their own region (key cascade: a JSON array of region names).
	Cascade map[string]bool
}

// Store is one node's connection to the cluster state.
type Store struct {
	cli    *clientv3.Client
	prefix string
	ttl    time.Duration
	log    *slog.Logger
	notify chan struct{}

	mu      sync.Mutex // guards the following fields
	lease   clientv3.LeaseID
	leaseTo time.Time // conservative expiry of lease
	lastOK  time.Time // last successful keepalive
	synced  bool      // cache reflects the store as of rev
	rev     int64
	written int64 // revision of this node's last successful write (CaughtUp)
	kvs     map[string]*mvccpb.KeyValue
}

// Dial connects to etcd. It does not grant a lease; Run does.
func Dial(ctx context.Context, endpoints []string, cluster string, ttl time.Duration, log *slog.Logger) (*Store, error) {
	cli, err := clientv3.New(clientv3.Config{
		Endpoints:            endpoints,
		DialTimeout:          2 * time.Second,
		DialKeepAliveTime:    2 * time.Second,
		DialKeepAliveTimeout: 2 * time.Second,
		Logger:               nil,
		// Reconnect within a second once the store is back: gRPC's default
		// backoff grows to minutes, and a leader whose keepalives resume
		// only after its lease ran out in etcd loses the key needlessly.
		DialOptions: []grpc.DialOption{grpc.WithConnectParams(grpc.ConnectParams{
			Backoff:           backoff.Config{BaseDelay: 100 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: time.Second},
			MinConnectTimeout: time.Second,
		})},
	})
	if err != nil {
		return nil, fmt.Errorf("connecting to etcd %v: %w", endpoints, err)
	}
	return &Store{
		cli:    cli,
		prefix: "/petrel/" + cluster + "/",
		ttl:    ttl,
		log:    log,
		notify: make(chan struct{}, 1),
		kvs:    map[string]*mvccpb.KeyValue{},
	}, nil
}

// Client exposes the etcd client (for the CLI and tests).
func (s *Store) Client() *clientv3.Client { return s.cli }

// Close releases the connection (the lease then expires by itself).
func (s *Store) Close() error { return s.cli.Close() }

// Changes is signalled (coalesced) whenever the cache or lease changes.
func (s *Store) Changes() <-chan struct{} { return s.notify }

func (s *Store) poke() {
	select {
	case s.notify <- struct{}{}:
	default:
	}
}

func (s *Store) key(parts ...string) string { return s.prefix + strings.Join(parts, "/") }

// Run keeps the lease alive and the cache current until ctx ends.
func (s *Store) Run(ctx context.Context) {
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); s.keepalive(ctx) }()
	go func() { defer wg.Done(); s.watch(ctx) }()
	wg.Wait()
}

// keepalive renews the lease every ttl/4 with KeepAliveOnce, so the
// expiry it records is based on the send time of a confirmed renewal.
func (s *Store) keepalive(ctx context.Context) {
	every := s.ttl / 4
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		s.renew(ctx, every)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (s *Store) renew(ctx context.Context, timeout time.Duration) {
	s.mu.Lock()
	lease := s.lease
	s.mu.Unlock()
	sent := time.Now()
	cctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	if lease == 0 {
		resp, err := s.cli.Grant(cctx, int64(s.ttl/time.Second))
		if err != nil {
			s.log.Debug("granting lease", "err", err)
			s.poke()
			return
		}
		s.mu.Lock()
		s.lease = resp.ID
		s.leaseTo = sent.Add(time.Duration(resp.TTL) * time.Second)
		s.lastOK = time.Now()
		s.mu.Unlock()
		s.poke()
		return
	}
	resp, err := s.cli.KeepAliveOnce(cctx, lease)
	if err != nil {
		if errors.Is(err, rpctypes.ErrLeaseNotFound) {
			s.log.Warn("lease expired; taking a new one", "lease", fmt.Sprintf("%x", lease))
			s.mu.Lock()
			s.lease = 0
			s.leaseTo = time.Time{}
			s.mu.Unlock()
		} else {
			s.log.Debug("renewing lease", "err", err)
		}
		s.poke()
		return
	}
	s.mu.Lock()
	s.leaseTo = sent.Add(time.Duration(resp.TTL) * time.Second)
	s.lastOK = time.Now()
	s.mu.Unlock()
}

// Lease returns this process's lease and how long it is surely valid.
func (s *Store) Lease() (clientv3.LeaseID, time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.lease == 0 {
		return 0, 0
	}
	return s.lease, time.Until(s.leaseTo)
}

// SinceOK is how long ago the store last answered this node (a lease grant
// or renewal); renewals go out every TTL/4.
func (s *Store) SinceOK() time.Duration {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.lastOK.IsZero() {
		return time.Duration(1<<63 - 1)
	}
	return time.Since(s.lastOK)
}

// OK says whether the store answered recently and the cache is current.
func (s *Store) OK() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.synced && s.lease != 0 && time.Since(s.lastOK) < s.ttl/2+s.ttl/4
}

func (s *Store) watch(ctx context.Context) {
	for ctx.Err() == nil {
		if err := s.resync(ctx); err != nil {
			s.log.Debug("reading cluster state", "err", err)
			select {
			case <-ctx.Done():
				return
			case <-time.After(250 * time.Millisecond):
			}
			continue
		}
		s.mu.Lock()
		rev := s.rev
		s.mu.Unlock()
		wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
		wch := s.cli.Watch(wctx, s.prefix, clientv3.WithPrefix(), clientv3.WithRev(rev+1), clientv3.WithProgressNotify())
		for wr := range wch {
			if err := wr.Err(); err != nil {
				s.log.Debug("watch ended", "err", err)
				break
			}
			s.mu.Lock()
			for _, ev := range wr.Events {
				k := string(ev.Kv.Key)
				if ev.Type == clientv3.EventTypeDelete {
					delete(s.kvs, k)
				} else {
					s.kvs[k] = ev.Kv
				}
			}
			if wr.Header.Revision > s.rev {
				s.rev = wr.Header.Revision
			}
			s.mu.Unlock()
			s.poke()
		}
		cancel()
		s.mu.Lock()
		s.synced = false
		s.mu.Unlock()
		s.poke()
	}
}

func (s *Store) resync(ctx context.Context) error {
	cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	resp, err := s.cli.Get(cctx, s.prefix, clientv3.WithPrefix())
	if err != nil {
		return err
	}
	kvs := make(map[string]*mvccpb.KeyValue, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		kvs[string(kv.Key)] = kv
	}
	s.mu.Lock()
	s.kvs, s.rev, s.synced = kvs, resp.Header.Revision, true
	s.mu.Unlock()
	s.poke()
	return nil
}

// Snapshot decodes the cache. Undecodable values are skipped and logged:
// the store is shared, and one bad key must not stop the agent.
func (s *Store) Snapshot() Snapshot {
	s.mu.Lock()
	defer s.mu.Unlock()
	snap := Snapshot{Rev: s.rev, Members: map[string]model.Member{}, Cascade: map[string]bool{}, RegisteredRegions: map[string]string{}}
	for k, kv := range s.kvs {
		rest := strings.TrimPrefix(k, s.prefix)
		switch {
		case rest == "info":
			var ci model.ClusterInfo
			if s.decode(k, kv.Value, &ci) {
				snap.Info, snap.InfoRev = &ci, kv.ModRevision
			}
		case rest == "cascade":
			var regions []string
			if s.decode(k, kv.Value, &regions) {
				for _, r := range regions {
					snap.Cascade[r] = true
				}
			}
		case rest == "leader":
			snap.Leader, snap.LeaderRev, snap.LeaderLease = string(kv.Value), kv.ModRevision, clientv3.LeaseID(kv.Lease)
		case rest == "sync":
			if s.decode(k, kv.Value, &snap.Sync) {
				snap.SyncRev = kv.ModRevision
			}
		case rest == "switchover":
			var sw model.Switchover
			if s.decode(k, kv.Value, &sw) {
				snap.Switchover, snap.SwitchoverRev = &sw, kv.ModRevision
			}
		case strings.HasPrefix(rest, "members/"):
			var m model.Member
			if s.decode(k, kv.Value, &m) {
				snap.Members[m.ID] = m
			}
		case strings.HasPrefix(rest, "nodes/"):
			id := strings.TrimPrefix(rest, "nodes/")
			snap.Registered = append(snap.Registered, id)
			snap.RegisteredRegions[id] = string(kv.Value)
		}
	}
	sort.Strings(snap.Registered)
	return snap
}

func (s *Store) decode(k string, v []byte, into any) bool {
	if err := json.Unmarshal(v, into); err != nil {
		s.log.Warn("ignoring undecodable key", "key", k, "err", err)
		return false
	}
	return true
}

func (s *Store) myLease() (clientv3.LeaseID, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.lease == 0 {
		return 0, errors.New("no lease yet")
	}
	return s.lease, nil
}

// ErrLostRace is returned when a compare-and-swap did not apply.
var ErrLostRace = errors.New("store changed since it was read")

func (s *Store) txn(ctx context.Context, what string, cmps []clientv3.Cmp, ops ...clientv3.Op) error {
	cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	resp, err := s.cli.Txn(cctx).If(cmps...).Then(ops...).Commit()
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	if !resp.Succeeded {
		return fmt.Errorf("%s: %w", what, ErrLostRace)
	}
	s.mu.Lock()
	if resp.Header.Revision > s.written {
		s.written = resp.Header.Revision
	}
	s.mu.Unlock()
	return nil
}

// CaughtUp says whether the cache has seen this node's own last write.
// Deciding on a cache that has not would act on the state before it: a
// leader that just deleted its own key (a switchover, a release) would
// still see it held and start Postgres as primary.
func (s *Store) CaughtUp() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.rev >= s.written
}

func mustJSON(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err) // only our own plain structs are encoded
	}
	return string(b)
}

// Register publishes m under members/<id> on this node's lease and makes
// sure it is registered under nodes/<id>.
func (s *Store) Register(ctx context.Context, m model.Member) error {
	lease, err := s.myLease()
	if err != nil {
		return fmt.Errorf("registering member: %w", err)
	}
	cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	nk := s.key("nodes", m.ID)
	_, err = s.cli.Txn(cctx).Then(
		clientv3.OpPut(s.key("members", m.ID), mustJSON(m), clientv3.WithLease(lease)),
	).Commit()
	if err != nil {
		return fmt.Errorf("registering member: %w", err)
	}
	_, err = s.cli.Txn(cctx).If(clientv3.Compare(clientv3.CreateRevision(nk), "=", 0)).Then(clientv3.OpPut(nk, m.Region)).Commit()
	if err != nil {
		return fmt.Errorf("registering node: %w", err)
	}
	return nil
}

// MemberLease returns the lease of the member key for id (0 if absent).
func (s *Store) MemberLease(id string) clientv3.LeaseID {
	s.mu.Lock()
	defer s.mu.Unlock()
	if kv, ok := s.kvs[s.key("members", id)]; ok {
		return clientv3.LeaseID(kv.Lease)
	}
	return 0
}

// ClaimInit creates the info key if absent: exactly one caller ever wins.
func (s *Store) ClaimInit(ctx context.Context, info model.ClusterInfo) error {
	k := s.key("info")
	return s.txn(ctx, "claiming cluster initialization",
		[]clientv3.Cmp{clientv3.Compare(clientv3.CreateRevision(k), "=", 0)},
		clientv3.OpPut(k, mustJSON(info)))
}

// UpdateInfo rewrites the info key (e.g. to add the system id).
func (s *Store) UpdateInfo(ctx context.Context, info model.ClusterInfo) error {
	k := s.key("info")
	return s.txn(ctx, "updating cluster info",
		[]clientv3.Cmp{clientv3.Compare(clientv3.CreateRevision(k), ">", 0)},
		clientv3.OpPut(k, mustJSON(info)))
}

// AcquireLeader takes the leader key for id on this node's lease if the key
// is absent and the sync record is unchanged since syncRev, resetting the
// sync record to {id, []} and deleting any switchover record.
func (s *Store) AcquireLeader(ctx context.Context, id string, syncRev int64) error {
	lease, err := s.myLease()
	if err != nil {
		return fmt.Errorf("acquiring leadership: %w", err)
	}
	lk, sk := s.key("leader"), s.key("sync")
	return s.txn(ctx, "acquiring leadership",
		[]clientv3.Cmp{
			clientv3.Compare(clientv3.CreateRevision(lk), "=", 0),
			clientv3.Compare(clientv3.ModRevision(sk), "=", syncRev),
		},
		clientv3.OpPut(lk, id, clientv3.WithLease(lease)),
		clientv3.OpPut(sk, mustJSON(model.Sync{Leader: id, Members: []string{}, K: 1})),
		clientv3.OpDelete(s.key("switchover")),
	)
}

// AcquireLeaderMovingRegion is AcquireLeader for a switchover target
// outside the primary region that was allowed to move it: the info key's
// primary region changes in the same transaction.
func (s *Store) AcquireLeaderMovingRegion(ctx context.Context, id string, syncRev int64, info model.ClusterInfo, infoRev int64) error {
	lease, err := s.myLease()
	if err != nil {
		return fmt.Errorf("acquiring leadership: %w", err)
	}
	lk, sk, ik := s.key("leader"), s.key("sync"), s.key("info")
	return s.txn(ctx, "acquiring leadership and moving the primary region",
		[]clientv3.Cmp{
			clientv3.Compare(clientv3.CreateRevision(lk), "=", 0),
			clientv3.Compare(clientv3.ModRevision(sk), "=", syncRev),
			clientv3.Compare(clientv3.ModRevision(ik), "=", infoRev),
		},
		clientv3.OpPut(lk, id, clientv3.WithLease(lease)),
		clientv3.OpPut(sk, mustJSON(model.Sync{Leader: id, Members: []string{}, K: 1})),
		clientv3.OpPut(ik, mustJSON(info)),
		clientv3.OpDelete(s.key("switchover")),
	)
}

// RemoveNode deletes a member's record and registration (CLI side, for
// `petrel remove`): without its nodes/<id> key the leader drops its slot.
func RemoveNode(ctx context.Context, cli *clientv3.Client, cluster, id string) error {
	cctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	p := "/petrel/" + cluster + "/"
	if _, err := cli.Txn(cctx).Then(clientv3.OpDelete(p+"members/"+id), clientv3.OpDelete(p+"nodes/"+id)).Commit(); err != nil {
		return fmt.Errorf("removing %s's keys: %w", id, err)
	}
	return nil
}

// SetCascade records which regions cascade (CLI side).
func SetCascade(ctx context.Context, cli *clientv3.Client, cluster string, regions []string) error {
	cctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	if regions == nil {
		regions = []string{}
	}
	if _, err := cli.Put(cctx, "/petrel/"+cluster+"/cascade", mustJSON(regions)); err != nil {
		return fmt.Errorf("writing cascade regions: %w", err)
	}
	return nil
}

// ReleaseLeader deletes the leader key if this node's lease holds it.
func (s *Store) ReleaseLeader(ctx context.Context) error {
	lease, err := s.myLease()
	if err != nil {
		return fmt.Errorf("releasing leadership: %w", err)
	}
	lk := s.key("leader")
	return s.txn(ctx, "releasing leadership",
		[]clientv3.Cmp{clientv3.Compare(clientv3.LeaseValue(lk), "=", lease)},
		clientv3.OpDelete(lk))
}

// RevokeLeader deletes the leader key if it is unchanged since rev.
func (s *Store) RevokeLeader(ctx context.Context, rev int64) error {
	lk := s.key("leader")
	return s.txn(ctx, "revoking a dead leader's key",
		[]clientv3.Cmp{clientv3.Compare(clientv3.ModRevision(lk), "=", rev)},
		clientv3.OpDelete(lk))
}

// SetSync writes the sync record; only while this node's lease holds the
// leader key and the record is unchanged since rev.
func (s *Store) SetSync(ctx context.Context, rec model.Sync, rev int64) error {
	lease, err := s.myLease()
	if err != nil {
		return fmt.Errorf("writing sync record: %w", err)
	}
	sk := s.key("sync")
	return s.txn(ctx, "writing sync record",
		[]clientv3.Cmp{
			clientv3.Compare(clientv3.LeaseValue(s.key("leader")), "=", lease),
			clientv3.Compare(clientv3.ModRevision(sk), "=", rev),
		},
		clientv3.OpPut(sk, mustJSON(rec)))
}

// CompleteSwitchover records where the old leader stopped and releases its
// leader key, in one transaction.
func (s *Store) CompleteSwitchover(ctx context.Context, sw model.Switchover, rev int64) error {
	lease, err := s.myLease()
	if err != nil {
		return fmt.Errorf("handing over leadership: %w", err)
	}
	lk, wk := s.key("leader"), s.key("switchover")
	return s.txn(ctx, "handing over leadership",
		[]clientv3.Cmp{
			clientv3.Compare(clientv3.LeaseValue(lk), "=", lease),
			clientv3.Compare(clientv3.ModRevision(wk), "=", rev),
		},
		clientv3.OpPut(wk, mustJSON(sw)),
		clientv3.OpDelete(lk))
}

// ClearSwitchover deletes the switchover record if unchanged since rev.
func (s *Store) ClearSwitchover(ctx context.Context, rev int64) error {
	wk := s.key("switchover")
	return s.txn(ctx, "clearing switchover request",
		[]clientv3.Cmp{clientv3.Compare(clientv3.ModRevision(wk), "=", rev)},
		clientv3.OpDelete(wk))
}

// RequestSwitchover creates a switchover request (CLI side).
func RequestSwitchover(ctx context.Context, cli *clientv3.Client, cluster string, sw model.Switchover) error {
	wk := "/petrel/" + cluster + "/switchover"
	cctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	resp, err := cli.Txn(cctx).If(clientv3.Compare(clientv3.CreateRevision(wk), "=", 0)).Then(clientv3.OpPut(wk, mustJSON(sw))).Commit()
	if err != nil {
		return fmt.Errorf("requesting switchover: %w", err)
	}
	if !resp.Succeeded {
		return errors.New("a switchover is already in progress; wait for it to finish (or for it to expire after 30s)")
	}
	return nil
}
