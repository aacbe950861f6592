package store

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/petrel-db/petrel/internal/model"
)

// TestEvents: events are listed in write order with their revision as ID,
// trimmed to a bound, followed live from an ID, and kept out of the cache.
func TestEvents(t *testing.T) {
	e := startEtcd(t)
	st := dial(t, e)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	waitFor(t, "the cache", st.OK)
	// Keys on both sides of the history's range.
	for _, k := range []string{KeysFor("test").Config(), KeysFor("test").Switchover()} {
		if _, err := st.Client().Put(ctx, k, "{}"); err != nil {
			t.Fatal(err)
		}
	}

	var ids []int64
	for i := range 5 {
		id, err := st.RecordEvent(ctx, model.Event{Kind: model.EventFence, Node: fmt.Sprintf("n%d", i), Reason: strings.Repeat("x", 2000)})
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}
	evs, _, err := ListEvents(ctx, st.Client(), "test", 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(evs) != 5 {
		t.Fatalf("listed %d events, want 5", len(evs))
	}
	for i, ev := range evs {
		if ev.ID != ids[i] || ev.Node != fmt.Sprintf("n%d", i) || ev.Time.IsZero() {
			t.Fatalf("event %d = %+v, want ID %d node n%d with a time", i, ev, ids[i], i)
		}
		if len(ev.Reason) > maxReason+3 {
			t.Fatalf("reason of %d bytes kept", len(ev.Reason))
		}
	}
	if after, _, _ := ListEvents(ctx, st.Client(), "test", ids[2], 0); len(after) != 2 || after[0].ID != ids[3] {
		t.Fatalf("events after %d: %+v", ids[2], after)
	}
	if last, _, _ := ListEvents(ctx, st.Client(), "test", 0, 2); len(last) != 2 || last[1].ID != ids[4] {
		t.Fatalf("newest 2: %+v", last)
	}

	if err := trimEvents(ctx, st.Client(), KeysFor("test"), 3); err != nil {
		t.Fatal(err)
	}
	evs, _, _ = ListEvents(ctx, st.Client(), "test", 0, 0)
	if len(evs) != 3 || evs[0].ID != ids[2] {
		t.Fatalf("after trimming to 3: %+v", evs)
	}

	got := make(chan model.Event, 4)
	fctx, fcancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		done <- FollowEvents(fctx, st.Client(), "test", ids[3], func(ev model.Event) { got <- ev })
	}()
	id, err := RecordEvent(ctx, st.Client(), "test", model.Event{Kind: model.EventConfig, Node: "cli"})
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []int64{ids[4], id} {
		select {
		case ev := <-got:
			if ev.ID != want {
				t.Fatalf("followed event %d, want %d", ev.ID, want)
			}
		case <-ctx.Done():
			t.Fatalf("event %d not followed", want)
		}
	}
	fcancel()
	<-done

	waitFor(t, "the cache to pass the events' revision", func() bool { return st.Snapshot().Rev >= id })
	st.mu.Lock()
	for k := range st.kvs {
		if st.isEventKey(k) {
			t.Errorf("event key %s in the cache", k)
		}
	}
	st.mu.Unlock()
	// A resync (a broken watch) leaves them out too.
	if err := st.resync(ctx); err != nil {
		t.Fatal(err)
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	for k := range st.kvs {
		if st.isEventKey(k) {
			t.Errorf("event key %s in the cache after a resync", k)
		}
	}
	for _, k := range []string{KeysFor("test").Config(), KeysFor("test").Switchover()} {
		if st.kvs[k] == nil {
			t.Errorf("resync left out %s", k)
		}
	}
}
