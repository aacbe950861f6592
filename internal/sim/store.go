package sim

import (
	"errors"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/petrel-db/petrel/internal/engine"
	"github.com/petrel-db/petrel/internal/model"
)

// Store is the simulated etcd: one key space with a global revision,
// leases with a TTL on the virtual clock, and multi-key compare-and-swap
// transactions. It models the semantics internal/store relies on:
//
//   - every successful transaction that changes something bumps the
//     revision once; a key's create revision is kept across puts and its
//     mod revision is the revision of its last put;
//   - a failed comparison changes nothing (internal/store's ErrLostRace);
//   - an expired or revoked lease deletes every key attached to it, in
//     one revision per lease;
//   - while the store is down nothing is served and no lease expires;
//     when it comes back every lease is refreshed to a full TTL, as etcd's
//     lessor does when a new leader takes over.
//
// Values are Go values (model.Sync, model.Member, ...), not JSON: the
// simulation decodes nothing, so a snapshot is built once per revision.
type Store struct {
	rev       int64
	kvs       map[string]*kv
	leases    map[int64]*simLease
	nextLease int64
	down      bool
	snap      *Snapshot // cached snapshot of rev
}

type kv struct {
	value             any
	createRev, modRev int64
	lease             int64
}

type simLease struct {
	id     int64
	owner  string
	ttl    time.Duration
	expiry time.Duration
}

// errUnreachable is what a node's store client gets while the store is
// down or the node is partitioned from it.
var errUnreachable = errors.New("store unreachable")

// errLostRace mirrors store.ErrLostRace: a comparison did not hold.
var errLostRace = errors.New("store changed since it was read (lost race)")

// errLeaseNotFound mirrors rpctypes.ErrLeaseNotFound on a keepalive.
var errLeaseNotFound = errors.New("lease not found")

func newStore() *Store {
	return &Store{kvs: map[string]*kv{}, leases: map[int64]*simLease{}, nextLease: 1}
}

// cmpKind is what a comparison looks at, as in clientv3.Compare.
type cmpKind int

const (
	cmpCreate cmpKind = iota // CreateRevision(key) == want (0: absent)
	cmpMod                   // ModRevision(key) == want (0: absent)
	cmpLease                 // LeaseValue(key) == want
)

type cmp struct {
	key  string
	kind cmpKind
	want int64
}

type op struct {
	key   string
	del   bool
	value any
	lease int64
}

// txn applies ops if every comparison holds, like one etcd transaction.
func (s *Store) txn(cmps []cmp, ops ...op) error {
	for _, c := range cmps {
		var got int64
		if e, ok := s.kvs[c.key]; ok {
			switch c.kind {
			case cmpCreate:
				got = e.createRev
			case cmpMod:
				got = e.modRev
			case cmpLease:
				got = e.lease
			}
		}
		if got != c.want {
			return errLostRace
		}
	}
	changed := false
	next := s.rev + 1
	for _, o := range ops {
		if o.del {
			if _, ok := s.kvs[o.key]; ok {
				delete(s.kvs, o.key)
				changed = true
			}
			continue
		}
		if o.lease != 0 {
			if _, ok := s.leases[o.lease]; !ok {
				// etcd refuses a put on an unknown lease.
				return errLeaseNotFound
			}
		}
		e, ok := s.kvs[o.key]
		if !ok {
			e = &kv{createRev: next}
			s.kvs[o.key] = e
		}
		e.value, e.modRev, e.lease = o.value, next, o.lease
		changed = true
	}
	if changed {
		s.rev = next
		s.snap = nil
	}
	return nil
}

func (s *Store) grant(owner string, ttl, now time.Duration) int64 {
	id := s.nextLease
	s.nextLease++
	s.leases[id] = &simLease{id: id, owner: owner, ttl: ttl, expiry: now + ttl}
	return id
}

func (s *Store) keepAlive(id int64, now time.Duration) error {
	l, ok := s.leases[id]
	if !ok {
		return errLeaseNotFound
	}
	l.expiry = now + l.ttl
	return nil
}

// revoke deletes the lease and its keys; it returns the deleted keys.
func (s *Store) revoke(id int64) []string {
	if _, ok := s.leases[id]; !ok {
		return nil
	}
	delete(s.leases, id)
	var gone []string
	for k, e := range s.kvs {
		if e.lease == id {
			gone = append(gone, k)
		}
	}
	sort.Strings(gone)
	if len(gone) > 0 {
		ops := make([]op, len(gone))
		for i, k := range gone {
			ops[i] = op{key: k, del: true}
		}
		_ = s.txn(nil, ops...)
	}
	return gone
}

// expire revokes every lease past its expiry, in lease order.
func (s *Store) expire(now time.Duration, logf func(format string, args ...any)) {
	if s.down {
		return
	}
	var ids []int64
	for id, l := range s.leases {
		if l.expiry <= now {
			ids = append(ids, id)
		}
	}
	slices.Sort(ids)
	for _, id := range ids {
		owner := s.leases[id].owner
		gone := s.revoke(id)
		logf("store: lease %d of %s expired; deleted [%s]", id, owner, strings.Join(gone, " "))
	}
}

// up brings the store back: every lease gets a full TTL again.
func (s *Store) up(now time.Duration) {
	s.down = false
	for _, l := range s.leases {
		l.expiry = now + l.ttl
	}
}

// Snapshot mirrors store.Snapshot: the decoded key space at one revision.
// It is shared by every node that read this revision and must not be
// modified.
type Snapshot struct {
	Rev               int64
	Info              *model.ClusterInfo
	InfoRev           int64
	Leader            string
	LeaderRev         int64
	LeaderLease       int64
	Sync              model.Sync
	SyncRev           int64
	Members           map[string]model.Member
	Registered        []string
	RegisteredRegions map[string]string
	Switchover        *model.Switchover
	SwitchoverRev     int64
	Cascade           map[string]bool
	Restarts          map[string]simRestart
}

// simRestart is a restart request (store.Restart).
type simRestart struct {
	req engine.RestartRequest
	rev int64
}

// Key names, as under /petrel/<c>/.
const (
	keyInfo       = "info"
	keyLeader     = "leader"
	keySync       = "sync"
	keySwitchover = "switchover"
	keyCascade    = "cascade"
	prefixMembers = "members/"
	prefixNodes   = "nodes/"
	prefixRestart = "restart/"
)

func (s *Store) snapshot() *Snapshot {
	if s.snap != nil {
		return s.snap
	}
	snap := &Snapshot{Rev: s.rev, Members: map[string]model.Member{}, Cascade: map[string]bool{}, RegisteredRegions: map[string]string{}, Restarts: map[string]simRestart{}}
	for k, e := range s.kvs {
		switch {
		case k == keyInfo:
			ci := e.value.(model.ClusterInfo)
			snap.Info, snap.InfoRev = &ci, e.modRev
		case k == keyCascade:
			for _, r := range e.value.([]string) {
				snap.Cascade[r] = true
			}
		case k == keyLeader:
			snap.Leader, snap.LeaderRev, snap.LeaderLease = e.value.(string), e.modRev, e.lease
		case k == keySync:
			snap.Sync, snap.SyncRev = e.value.(model.Sync), e.modRev
		case k == keySwitchover:
			sw := e.value.(model.Switchover)
			snap.Switchover, snap.SwitchoverRev = &sw, e.modRev
		case strings.HasPrefix(k, prefixMembers):
			m := e.value.(model.Member)
			snap.Members[m.ID] = m
		case strings.HasPrefix(k, prefixRestart):
			snap.Restarts[strings.TrimPrefix(k, prefixRestart)] = simRestart{req: e.value.(engine.RestartRequest), rev: e.modRev}
		case strings.HasPrefix(k, prefixNodes):
			id := strings.TrimPrefix(k, prefixNodes)
			snap.Registered = append(snap.Registered, id)
			snap.RegisteredRegions[id] = e.value.(string)
		}
	}
	sort.Strings(snap.Registered)
	s.snap = snap
	return snap
}

// The transactions below are internal/store's, one for one: the same
// comparisons and the same operations.

func (s *Store) claimInit(info model.ClusterInfo) error {
	return s.txn([]cmp{{keyInfo, cmpCreate, 0}}, op{key: keyInfo, value: info})
}

func (s *Store) register(m model.Member, lease int64) error {
	if err := s.txn(nil, op{key: prefixMembers + m.ID, value: m, lease: lease}); err != nil {
		return err
	}
	err := s.txn([]cmp{{prefixNodes + m.ID, cmpCreate, 0}}, op{key: prefixNodes + m.ID, value: m.Region})
	if errors.Is(err, errLostRace) {
		return nil // already registered: the real code ignores Succeeded here
	}
	return err
}

func (s *Store) acquireLeader(id string, lease, syncRev int64) error {
	return s.txn([]cmp{{keyLeader, cmpCreate, 0}, {keySync, cmpMod, syncRev}},
		op{key: keyLeader, value: id, lease: lease},
		op{key: keySync, value: model.Sync{Leader: id, Members: []string{}, K: 1}},
		op{key: keySwitchover, del: true})
}

func (s *Store) acquireLeaderMovingRegion(id string, lease, syncRev int64, info model.ClusterInfo, infoRev int64) error {
	return s.txn([]cmp{{keyLeader, cmpCreate, 0}, {keySync, cmpMod, syncRev}, {keyInfo, cmpMod, infoRev}},
		op{key: keyLeader, value: id, lease: lease},
		op{key: keySync, value: model.Sync{Leader: id, Members: []string{}, K: 1}},
		op{key: keyInfo, value: info},
		op{key: keySwitchover, del: true})
}

func (s *Store) recordBootstrap(info model.ClusterInfo, infoRev int64) error {
	return s.txn([]cmp{{keyInfo, cmpMod, infoRev}}, op{key: keyInfo, value: info})
}

func (s *Store) releaseLeader(lease int64) error {
	return s.txn([]cmp{{keyLeader, cmpLease, lease}}, op{key: keyLeader, del: true})
}

func (s *Store) revokeLeader(rev int64) error {
	return s.txn([]cmp{{keyLeader, cmpMod, rev}}, op{key: keyLeader, del: true})
}

func (s *Store) setSync(rec model.Sync, lease, rev int64) error {
	rec.Members = slices.Clone(rec.Members)
	return s.txn([]cmp{{keyLeader, cmpLease, lease}, {keySync, cmpMod, rev}}, op{key: keySync, value: rec})
}

func (s *Store) completeSwitchover(sw model.Switchover, lease, rev int64) error {
	return s.txn([]cmp{{keyLeader, cmpLease, lease}, {keySwitchover, cmpMod, rev}},
		op{key: keySwitchover, value: sw},
		op{key: keyLeader, del: true})
}

func (s *Store) clearSwitchover(rev int64) error {
	return s.txn([]cmp{{keySwitchover, cmpMod, rev}}, op{key: keySwitchover, del: true})
}

func (s *Store) requestSwitchover(sw model.Switchover) error {
	return s.txn([]cmp{{keySwitchover, cmpCreate, 0}}, op{key: keySwitchover, value: sw})
}

func (s *Store) requestRestart(id string, req engine.RestartRequest) error {
	return s.txn(nil, op{key: prefixRestart + id, value: req})
}

func (s *Store) clearRestart(id string, rev int64) error {
	return s.txn([]cmp{{prefixRestart + id, cmpMod, rev}}, op{key: prefixRestart + id, del: true})
}
