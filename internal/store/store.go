// Package store is petrel's view of the cluster state in etcd: a
// watch-fed cache of every key under /petrel/<cluster>/, the node's
// session lease, and the compare-and-swap writes the agent and the CLI
// make.
//
// Key layout (who writes what):
//
//	/petrel/<c>/info            ClusterInfo; created once by the bootstrapping node (create-only: the init guard)
//	/petrel/<c>/leader          the leader's id, on the leader's short leader lease; written only by AcquireLeader
//	/petrel/<c>/sync            model.Sync; written only by the leader holding the key (CAS on its revision)
//	/petrel/<c>/members/<id>    model.Member, on that member's long session lease; written only by that member
//	/petrel/<c>/nodes/<id>      registration (no lease): the member keeps a replication slot; removed by `petrel remove`
//	/petrel/<c>/switchover      model.Switchover; created by the CLI, completed by the leader, deleted by the new leader
//	/petrel/<c>/cascade         JSON array of regions that stream from a regional hub; written by the CLI
//	/petrel/<c>/events/<t>-<n>  model.Event, the history (events.go); written by whoever acted; not cached
//	/petrel/<c>/backup          model.BackupConfig (where backups and archived WAL go, no credentials); written by `petrel up` / `petrel backup configure`
//	/petrel/<c>/secrets/<kind>  SecretRotation (secrets.go): a password rotation, the new password sealed; written by `petrel secrets rotate`
//	/petrel/<c>/secret-acks/<kind>/<id>  RotationAck: member <id>'s part in it; written by that member
//
// Leases (lease.go): every node keeps a long session lease for its member
// record; only the leader also holds a short lease, for the leader key.
// Nothing polls etcd: an idle node sends only renewals, over one stream
// per lease.
//
// Liveness: OK reports whether the watch is current and the store answers
// (the leader: its last renewal is recent; others: the connection is up).
// The leader lease's time left is measured from when its last confirmed
// keepalive was sent, so it never overstates the lease.
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
	"github.com/petrel-db/petrel/internal/version"
	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
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
	// Restarts are the pending restart requests by member id.
	Restarts map[string]Restart
}

// Restart is a member's pending restart request and its revision.
type Restart struct {
	Request RestartRequest
	Rev     int64
}

// Store is one node's connection to the cluster state.
type Store struct {
	cli    *clientv3.Client
	prefix string
	ttl    time.Duration // the leader lease's TTL
	log    *slog.Logger
	notify chan struct{}
	bg     context.Context // ends with Close or Run's context: lease renewals run under it
	stopBG context.CancelFunc
	ownCli bool  // Close closes cli (Dial); a shared client (New) stays open
	probe  Probe // set before Run; read without a lock

	mu         sync.Mutex // guards the following fields
	session    clientv3.LeaseID
	sessionTo  time.Time        // conservative expiry of session
	leader     clientv3.LeaseID // the leader lease (0: this node does not lead)
	leaderTo   time.Time        // conservative expiry of leader: send time of its last confirmed renewal + TTL
	leaderSent time.Time        // that send time
	leaderRev  int64            // revision at which the leader key was put on leader
	stopLeader context.CancelFunc
	lastOK     time.Time // the store's last answer to a grant, renewal or probe
	synced     bool      // cache reflects the store as of rev
	rev        int64
	written    int64 // revision of this node's last successful write (CaughtUp)
	kvs        map[string]*mvccpb.KeyValue
}

// Dial connects to etcd. It does not grant a lease; Run does. Settings
// that cannot work (a wrong certificate or password, unreadable files)
// fail it within seconds; an etcd that is merely unreachable does not
// (the agent runs, and the client keeps reconnecting), except that a
// login (a username) must succeed first, which Dial retries until ctx
// ends.
func Dial(ctx context.Context, conn Conn, cluster string, ttl time.Duration, log *slog.Logger) (*Store, error) {
	cli, err := OpenClient(ctx, conn, cluster, log)
	if err != nil {
		return nil, err
	}
	s := New(cli, cluster, ttl, log)
	s.ownCli = true
	return s, nil
}

// New is a Store on an existing etcd client, which Close leaves open: many
// stores (bench/store's thousands of simulated members) can share a few
// connections. The client should come from OpenClient, as Dial's does.
func New(cli *clientv3.Client, cluster string, ttl time.Duration, log *slog.Logger) *Store {
	bg, stop := context.WithCancel(context.Background())
	return &Store{
		cli:    cli,
		prefix: KeysFor(cluster).Prefix(),
		ttl:    ttl,
		log:    log,
		notify: make(chan struct{}, 1),
		bg:     bg,
		stopBG: stop,
		kvs:    map[string]*mvccpb.KeyValue{},
	}
}

// Probe is told what a Store measures of its own requests (bench/store
// reads renewal and watch latencies from it). Each func may be nil; they
// run on the store's goroutines and must return at once.
type Probe struct {
	// Renewal: one keepalive attempt, of the leader lease (leader) or the
	// session lease, answered after took (send to answer), or failed.
	Renewal func(leader bool, took time.Duration, err error)
	// Committed: a compare-and-swap write of this store applied at
	// revision rev; its request was sent at sent.
	Committed func(sent time.Time, rev int64)
	// Watched: the cache applied a watch event for key at revision rev
	// (the put's or the delete's).
	Watched func(key string, rev int64)
}

// SetProbe installs p; call it before Run.
func (s *Store) SetProbe(p Probe) { s.probe = p }

// Client exposes the etcd client (for the CLI and tests).
func (s *Store) Client() *clientv3.Client { return s.cli }

// Close stops renewals and, when Dial made it, releases the connection
// (unrevoked leases then expire by themselves).
func (s *Store) Close() error {
	s.stopBG()
	if !s.ownCli {
		return nil
	}
	return s.cli.Close()
}

// Changes is signalled (coalesced) whenever the cache or lease changes.
func (s *Store) Changes() <-chan struct{} { return s.notify }

func (s *Store) poke() {
	select {
	case s.notify <- struct{}{}:
	default:
	}
}

func (s *Store) key(parts ...string) string { return s.prefix + strings.Join(parts, "/") }

// Run keeps the session lease alive and the cache current until ctx
// ends; the leader lease, while held, is renewed until then too.
func (s *Store) Run(ctx context.Context) {
	stop := context.AfterFunc(ctx, s.stopBG)
	defer stop()
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); s.runSession(s.bg) }()
	go func() { defer wg.Done(); s.watch(s.bg) }()
	wg.Wait()
}

// OK says whether the cache is current and the store answers: for the
// leader, its last leader-lease renewal was confirmed within 3/4 of the
// TTL (renewals go out every 0.4 TTL); for the others, whose session
// renewals are 30 s apart, the connection is up and the session lease
// surely valid.
func (s *Store) OK() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.synced || s.session == 0 || !time.Now().Before(s.sessionTo) {
		return false
	}
	if s.leader != 0 {
		return time.Since(s.leaderSent) < s.ttl*3/4
	}
	return s.connected()
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
			history := 0 // events of the history, which the cache leaves out
			for _, ev := range wr.Events {
				k := string(ev.Kv.Key)
				if s.isEventKey(k) {
					history++
					continue
				}
				if ev.Type == clientv3.EventTypeDelete {
					delete(s.kvs, k)
				} else {
					s.kvs[k] = ev.Kv
				}
			}
			if w := s.probe.Watched; w != nil {
				for _, ev := range wr.Events {
					w(string(ev.Kv.Key), ev.Kv.ModRevision)
				}
			}
			if wr.Header.Revision > s.rev {
				s.rev = wr.Header.Revision
			}
			lost, dropped := s.checkLeaderKeyLocked()
			s.mu.Unlock()
			if dropped {
				s.log.Info("the leader key left this node's lease; letting the lease go", "lease", fmt.Sprintf("%x", lost))
				s.dropLeader(lost, true)
			}
			if history == 0 || history < len(wr.Events) {
				s.poke()
			}
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
	// Two ranges at one revision: everything but the event history.
	hist := s.prefix + "events/"
	resp, err := s.cli.Get(cctx, s.prefix, clientv3.WithRange(hist))
	if err != nil {
		return err
	}
	rest, err := s.cli.Get(cctx, clientv3.GetPrefixRangeEnd(hist), clientv3.WithRange(clientv3.GetPrefixRangeEnd(s.prefix)), clientv3.WithRev(resp.Header.Revision))
	if err != nil {
		return err
	}
	kvs := make(map[string]*mvccpb.KeyValue, len(resp.Kvs)+len(rest.Kvs))
	for _, kv := range append(resp.Kvs, rest.Kvs...) {
		kvs[string(kv.Key)] = kv
	}
	s.mu.Lock()
	s.kvs, s.rev, s.synced = kvs, resp.Header.Revision, true
	lost, dropped := s.checkLeaderKeyLocked()
	s.mu.Unlock()
	if dropped {
		s.log.Info("the leader key left this node's lease; letting the lease go", "lease", fmt.Sprintf("%x", lost))
		s.dropLeader(lost, true)
	}
	s.poke()
	return nil
}

// Snapshot decodes the cache. Undecodable values are skipped and logged:
// the store is shared, and one bad key must not stop the agent.
func (s *Store) Snapshot() Snapshot {
	s.mu.Lock()
	defer s.mu.Unlock()
	snap := Snapshot{Rev: s.rev, Members: map[string]model.Member{}, Cascade: map[string]bool{}, RegisteredRegions: map[string]string{}, Restarts: map[string]Restart{}}
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
		case strings.HasPrefix(rest, KeyRestart+"/"):
			// An undecodable request is an ordinary one (not in place): it
			// is still answered, and so cleared.
			var req RestartRequest
			_ = json.Unmarshal(kv.Value, &req)
			snap.Restarts[strings.TrimPrefix(rest, KeyRestart+"/")] = Restart{Request: req, Rev: kv.ModRevision}
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

// myLease is the leader lease, which every write of the leader compares.
func (s *Store) myLease() (clientv3.LeaseID, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.leader == 0 {
		return 0, errors.New("this node holds no leader lease")
	}
	return s.leader, nil
}

// ErrLostRace is returned when a compare-and-swap did not apply.
var ErrLostRace = errors.New("store changed since it was read")

func (s *Store) txn(ctx context.Context, what string, cmps []clientv3.Cmp, ops ...clientv3.Op) error {
	_, err := s.txnRev(ctx, what, cmps, ops...)
	return err
}

// txnRev is txn returning the revision the transaction committed at.
func (s *Store) txnRev(ctx context.Context, what string, cmps []clientv3.Cmp, ops ...clientv3.Op) (int64, error) {
	cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	sent := time.Now()
	resp, err := s.cli.Txn(cctx).If(cmps...).Then(ops...).Commit()
	if err != nil {
		return 0, fmt.Errorf("%s: %w", what, err)
	}
	if !resp.Succeeded {
		return 0, fmt.Errorf("%s: %w", what, ErrLostRace)
	}
	if c := s.probe.Committed; c != nil {
		c(sent, resp.Header.Revision)
	}
	s.mu.Lock()
	if resp.Header.Revision > s.written {
		s.written = resp.Header.Revision
	}
	s.mu.Unlock()
	return resp.Header.Revision, nil
}

// acquire grants a new leader lease and runs the transaction ops(lease)
// builds, which puts the leader key on it if cmps hold; the lease is then
// this node's, else it is revoked. Lease time counts from the grant's send
// time.
func (s *Store) acquire(ctx context.Context, what string, cmps []clientv3.Cmp, ops func(clientv3.LeaseID) []clientv3.Op) error {
	lease, sent, ttl, err := s.grantLeader(ctx)
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	rev, err := s.txnRev(ctx, what, cmps, ops(lease)...)
	if err != nil {
		// Lost, or unknown (a timeout): revoking deletes the key if it
		// was put after all, so no key is left on an unrenewed lease.
		s.revokeLater(lease)
		return err
	}
	s.holdLeader(lease, sent, ttl, rev)
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

// Synced reports whether the cache has been filled from etcd at least
// once (before that it is empty, not "the store holds nothing").
func (s *Store) Synced() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.synced
}

// writerVersion is this binary's petrel, stamped on the records it writes.
var writerVersion = version.Get().Short()

func mustJSON(v any) string {
	// Records say which petrel wrote them last (a rolling upgrade runs two
	// versions side by side); their unknown fields ride along (model.Unknown).
	switch r := v.(type) {
	case model.Sync:
		r.Version, v = writerVersion, r
	case model.Switchover:
		r.Version, v = writerVersion, r
	case model.ClusterInfo:
		r.Version, v = writerVersion, r
	case model.Member:
		r.Version, v = writerVersion, r
	}
	b, err := json.Marshal(v)
	if err != nil {
		panic(err) // only our own plain structs are encoded
	}
	return string(b)
}

// Register publishes m under members/<id> on this node's session lease and makes
// sure it is registered under nodes/<id>.
func (s *Store) Register(ctx context.Context, m model.Member) error {
	lease := s.Session()
	if lease == 0 {
		return errors.New("registering member: no session lease yet")
	}
	cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	nk := s.key("nodes", m.ID)
	put := clientv3.OpPut(s.key("members", m.ID), mustJSON(m), clientv3.WithLease(lease))
	// One transaction: the record always, the registration only if absent
	// (the region it was registered with stays).
	if _, err := s.cli.Txn(cctx).If(clientv3.Compare(clientv3.CreateRevision(nk), "=", 0)).
		Then(put, clientv3.OpPut(nk, m.Region)).Else(put).Commit(); err != nil {
		return fmt.Errorf("registering member: %w", err)
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

// AcquireLeader takes the leader key for id, on a new leader lease, if the
// key is absent and the sync record is unchanged since syncRev, resetting
// the sync record to {id, []} and deleting any switchover record.
func (s *Store) AcquireLeader(ctx context.Context, id string, syncRev int64) error {
	lk, sk := s.key("leader"), s.key("sync")
	return s.acquire(ctx, "acquiring leadership",
		[]clientv3.Cmp{
			clientv3.Compare(clientv3.CreateRevision(lk), "=", 0),
			clientv3.Compare(clientv3.ModRevision(sk), "=", syncRev),
		},
		func(lease clientv3.LeaseID) []clientv3.Op {
			return []clientv3.Op{
				clientv3.OpPut(lk, id, clientv3.WithLease(lease)),
				clientv3.OpPut(sk, mustJSON(model.Sync{Leader: id, Members: []string{}, K: 1})),
				clientv3.OpDelete(s.key("switchover")),
			}
		})
}

// AcquireLeaderMovingRegion is AcquireLeader for a switchover target
// outside the primary region that was allowed to move it: the info key's
// primary region changes in the same transaction.
func (s *Store) AcquireLeaderMovingRegion(ctx context.Context, id string, syncRev int64, info model.ClusterInfo, infoRev int64) error {
	lk, sk, ik := s.key("leader"), s.key("sync"), s.key("info")
	return s.acquire(ctx, "acquiring leadership and moving the primary region",
		[]clientv3.Cmp{
			clientv3.Compare(clientv3.CreateRevision(lk), "=", 0),
			clientv3.Compare(clientv3.ModRevision(sk), "=", syncRev),
			clientv3.Compare(clientv3.ModRevision(ik), "=", infoRev),
		},
		func(lease clientv3.LeaseID) []clientv3.Op {
			return []clientv3.Op{
				clientv3.OpPut(lk, id, clientv3.WithLease(lease)),
				clientv3.OpPut(sk, mustJSON(model.Sync{Leader: id, Members: []string{}, K: 1})),
				clientv3.OpPut(ik, mustJSON(info)),
				clientv3.OpDelete(s.key("switchover")),
			}
		})
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
	if _, err := RecordEvent(ctx, cli, cluster, model.Event{Kind: model.EventMemberRemoved, Node: "operator", To: id, Reason: "member and registration removed: the leader drops its slot"}); err != nil {
		return fmt.Errorf("%s removed, but %w", id, err)
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

// ReleaseLeader deletes the leader key if this node's leader lease holds
// it, then lets the lease go (also when the key was no longer on it).
func (s *Store) ReleaseLeader(ctx context.Context) error {
	lease, err := s.myLease()
	if err != nil {
		return fmt.Errorf("releasing leadership: %w", err)
	}
	lk := s.key("leader")
	err = s.txn(ctx, "releasing leadership",
		[]clientv3.Cmp{clientv3.Compare(clientv3.LeaseValue(lk), "=", lease)},
		clientv3.OpDelete(lk))
	if err == nil || errors.Is(err, ErrLostRace) {
		s.dropLeader(lease, true)
	}
	return err
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
// leader key, in one transaction; the leader lease then goes too.
func (s *Store) CompleteSwitchover(ctx context.Context, sw model.Switchover, rev int64) error {
	lease, err := s.myLease()
	if err != nil {
		return fmt.Errorf("handing over leadership: %w", err)
	}
	lk, wk := s.key("leader"), s.key("switchover")
	err = s.txn(ctx, "handing over leadership",
		[]clientv3.Cmp{
			clientv3.Compare(clientv3.LeaseValue(lk), "=", lease),
			clientv3.Compare(clientv3.ModRevision(wk), "=", rev),
		},
		clientv3.OpPut(wk, mustJSON(sw)),
		clientv3.OpDelete(lk))
	if err == nil {
		s.dropLeader(lease, true)
	}
	return err
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
