package store

// The event history (/petrel/<c>/events/<unix-nanos>-<node>): one key per
// event, written by whoever acted, never by the cache's owner on behalf of
// another. The newest MaxEvents are kept: every write trims the oldest
// beyond that, so the history is bounded whatever the rate. The keys are
// not in the store's cache (agents do not decide on history, and a
// thousand events would cost every agent memory and a wake-up each).

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/petrel-db/petrel/internal/model"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// MaxEvents bounds the history kept in etcd.
const MaxEvents = 1000

// maxReason bounds an event's reason (the store is not a log file).
const maxReason = 1024

// RecordEvent writes ev to cluster's history and trims it to MaxEvents.
// Time defaults to now. It returns the event's ID (its revision).
func RecordEvent(ctx context.Context, cli *clientv3.Client, cluster string, ev model.Event) (int64, error) {
	return recordEvent(ctx, cli, KeysFor(cluster), ev)
}

// RecordEvent is the package function on this node's connection.
func (s *Store) RecordEvent(ctx context.Context, ev model.Event) (int64, error) {
	return recordEvent(ctx, s.cli, Keys{prefix: s.prefix}, ev)
}

func recordEvent(ctx context.Context, cli *clientv3.Client, keys Keys, ev model.Event) (int64, error) {
	if ev.Time.IsZero() {
		ev.Time = time.Now()
	}
	ev.Time = ev.Time.UTC()
	ev.ID = 0 // the revision is the ID; not stored
	if len(ev.Reason) > maxReason {
		cut := maxReason
		for cut > 0 && !utf8.RuneStart(ev.Reason[cut]) {
			cut--
		}
		ev.Reason = ev.Reason[:cut] + "..."
	}
	b, err := json.Marshal(ev)
	if err != nil {
		return 0, fmt.Errorf("encoding event: %w", err)
	}
	k := fmt.Sprintf("%s%020d-%s", keys.Events(), ev.Time.UnixNano(), ev.Node)
	cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	resp, err := cli.Put(cctx, k, string(b))
	if err != nil {
		return 0, fmt.Errorf("recording %s event: %w", ev.Kind, err)
	}
	if err := trimEvents(cctx, cli, keys, MaxEvents); err != nil {
		return resp.Header.Revision, err
	}
	return resp.Header.Revision, nil
}

// trimEvents deletes the oldest events (by revision) beyond max.
func trimEvents(ctx context.Context, cli *clientv3.Client, keys Keys, max int) error {
	p := keys.Events()
	cnt, err := cli.Get(ctx, p, clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil {
		return fmt.Errorf("counting events: %w", err)
	}
	extra := cnt.Count - int64(max)
	if extra <= 0 {
		return nil
	}
	old, err := cli.Get(ctx, p, clientv3.WithPrefix(), clientv3.WithKeysOnly(),
		clientv3.WithSort(clientv3.SortByModRevision, clientv3.SortAscend), clientv3.WithLimit(extra))
	if err != nil {
		return fmt.Errorf("listing old events: %w", err)
	}
	// etcd refuses transactions of more than 128 operations by default.
	for len(old.Kvs) > 0 {
		n := min(len(old.Kvs), 100)
		ops := make([]clientv3.Op, 0, n)
		for _, kv := range old.Kvs[:n] {
			ops = append(ops, clientv3.OpDelete(string(kv.Key)))
		}
		if _, err := cli.Txn(ctx).Then(ops...).Commit(); err != nil {
			return fmt.Errorf("trimming events: %w", err)
		}
		old.Kvs = old.Kvs[n:]
	}
	return nil
}

// ListEvents returns cluster's events with an ID above after, oldest
// first; with limit > 0 only the newest limit of them. It also returns the
// store's revision at the read, from which FollowEvents can continue.
// Undecodable entries are skipped (the store is shared).
func ListEvents(ctx context.Context, cli *clientv3.Client, cluster string, after int64, limit int) ([]model.Event, int64, error) {
	cctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	opts := []clientv3.OpOption{clientv3.WithPrefix()}
	if after > 0 {
		opts = append(opts, clientv3.WithMinModRev(after+1))
	}
	resp, err := cli.Get(cctx, KeysFor(cluster).Events(), opts...)
	if err != nil {
		return nil, 0, fmt.Errorf("reading events: %w", err)
	}
	evs := make([]model.Event, 0, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		if ev, ok := decodeEvent(kv.Value, kv.ModRevision); ok {
			evs = append(evs, ev)
		}
	}
	sort.Slice(evs, func(i, j int) bool { return evs[i].ID < evs[j].ID })
	if limit > 0 && len(evs) > limit {
		evs = evs[len(evs)-limit:]
	}
	return evs, resp.Header.Revision, nil
}

func decodeEvent(v []byte, rev int64) (model.Event, bool) {
	var ev model.Event
	if err := json.Unmarshal(v, &ev); err != nil || ev.Kind == "" {
		return ev, false
	}
	ev.ID = rev
	return ev, true
}

// FollowEvents calls fn for every event written after revision from, in
// order, until ctx ends. A broken watch (compaction, a lost connection) is
// resumed from the last event seen by listing what was missed.
func FollowEvents(ctx context.Context, cli *clientv3.Client, cluster string, from int64, fn func(model.Event)) error {
	p := KeysFor(cluster).Events()
	last := from
	for ctx.Err() == nil {
		wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
		wch := cli.Watch(wctx, p, clientv3.WithPrefix(), clientv3.WithRev(last+1))
		for wr := range wch {
			if wr.Err() != nil {
				break
			}
			for _, e := range wr.Events {
				if e.Type != clientv3.EventTypePut {
					continue
				}
				if ev, ok := decodeEvent(e.Kv.Value, e.Kv.ModRevision); ok && ev.ID > last {
					last = ev.ID
					fn(ev)
				}
			}
		}
		cancel()
		if ctx.Err() != nil {
			break
		}
		// Catch up on what the broken watch missed, then watch again.
		evs, rev, err := ListEvents(ctx, cli, cluster, last, 0)
		if err == nil {
			for _, ev := range evs {
				last = ev.ID
				fn(ev)
			}
			last = max(last, rev)
		}
		select {
		case <-ctx.Done():
		case <-time.After(500 * time.Millisecond):
		}
	}
	return ctx.Err()
}

// isEventKey says whether an absolute key is in an event history.
func (s *Store) isEventKey(k string) bool {
	return strings.HasPrefix(k, s.prefix+"events/")
}
