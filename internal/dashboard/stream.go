package dashboard

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/petrel-db/petrel/internal/model"
	"github.com/petrel-db/petrel/internal/store"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// The live stream: one server-sent-events stream per page carries the
// cluster view ("view", every ViewEvery) and the history ("event", as
// written). Every message's id is the newest event ID the page has been
// sent, so a reconnecting browser's Last-Event-ID says which events it
// still needs. One hub per node gathers for all pages at once: the cost
// does not grow with the number of browsers, and nothing is gathered
// while none is open.

// ViewEvery is how often the view is gathered while a page is open.
const ViewEvery = 500 * time.Millisecond

// keepEvents is how many recent events the hub holds for new pages.
const keepEvents = 200

// maxStreams bounds the open streams of one node.
const maxStreams = 64

type hub struct {
	col     *collector
	etcd    *clientv3.Client
	cluster string
	log     *slog.Logger

	mu      sync.Mutex
	subs    map[chan struct{}]bool
	stop    context.CancelFunc // ends the gathering (nil: not running)
	done    chan struct{}      // closed when the gathering ended
	view    []byte             // the latest view, JSON
	events  []model.Event      // the newest keepEvents, oldest first
	lastRev int64              // the store revision the events are complete to
}

// subscribe registers a page; the first one starts the gathering. The
// channel is signalled (coalesced) on every new view or event.
func (h *hub) subscribe() (chan struct{}, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.subs) >= maxStreams {
		return nil, false
	}
	ch := make(chan struct{}, 1)
	h.subs[ch] = true
	if h.stop == nil {
		// A previous run may still be ending: it stops at its next step
		// and only ever replaces the view and events with fresh ones.
		ctx, cancel := context.WithCancel(context.Background())
		h.stop, h.done = cancel, make(chan struct{})
		go h.run(ctx, h.done)
	}
	return ch, true
}

func (h *hub) unsubscribe(ch chan struct{}) {
	h.mu.Lock()
	defer h.mu.Unlock()
	delete(h.subs, ch)
	if len(h.subs) == 0 && h.stop != nil {
		h.stop()
		h.stop = nil
	}
}

// close ends the gathering (the server is shutting down).
func (h *hub) close() {
	h.mu.Lock()
	if h.stop != nil {
		h.stop()
		h.stop = nil
	}
	done := h.done
	h.mu.Unlock()
	if done != nil {
		<-done
	}
}

func (h *hub) notify() {
	for ch := range h.subs {
		select {
		case ch <- struct{}{}:
		default:
		}
	}
}

// run gathers views and follows the history until ctx ends.
func (h *hub) run(ctx context.Context, done chan struct{}) {
	defer close(done)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); h.followEvents(ctx) }()
	defer wg.Wait()
	t := time.NewTicker(ViewEvery)
	defer t.Stop()
	for {
		vctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		v := h.col.view(vctx)
		cancel()
		if b, err := json.Marshal(v); err == nil {
			h.mu.Lock()
			h.view = b
			h.notify()
			h.mu.Unlock()
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (h *hub) followEvents(ctx context.Context) {
	for ctx.Err() == nil {
		evs, rev, err := store.ListEvents(ctx, h.etcd, h.cluster, 0, keepEvents)
		if err != nil {
			h.log.Debug("dashboard: reading events", "err", err)
			select {
			case <-ctx.Done():
				return
			case <-time.After(time.Second):
			}
			continue
		}
		h.mu.Lock()
		h.events, h.lastRev = evs, rev
		h.notify()
		h.mu.Unlock()
		_ = store.FollowEvents(ctx, h.etcd, h.cluster, rev, func(ev model.Event) {
			h.mu.Lock()
			h.events = append(h.events, ev)
			if len(h.events) > keepEvents {
				h.events = h.events[len(h.events)-keepEvents:]
			}
			h.lastRev = max(h.lastRev, ev.ID)
			h.notify()
			h.mu.Unlock()
		})
	}
}

// since returns the held events with an ID above after, and the view.
func (h *hub) since(after int64) ([]model.Event, []byte) {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []model.Event
	for _, ev := range h.events {
		if ev.ID > after {
			out = append(out, ev)
		}
	}
	return out, h.view
}

// serveStream is GET /api/v1/stream.
func (h *hub) serveStream(w http.ResponseWriter, r *http.Request) {
	var last int64 // the newest event ID this page has
	if s := r.Header.Get("Last-Event-ID"); s != "" {
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil || n < 0 {
			writeError(w, http.StatusBadRequest, "Last-Event-ID must be an event id (a non-negative integer)")
			return
		}
		last = n
	}
	ch, ok := h.subscribe()
	if !ok {
		writeError(w, http.StatusServiceUnavailable, "too many open dashboard streams on this node")
		return
	}
	defer h.unsubscribe(ch)
	rc := http.NewResponseController(w)
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	// The server's WriteTimeout is for ordinary requests: each write here
	// gets its own deadline, so a stalled browser is dropped, a slow one
	// is not.
	write := func(format string, args ...any) bool {
		_ = rc.SetWriteDeadline(time.Now().Add(10 * time.Second))
		if _, err := fmt.Fprintf(w, format, args...); err != nil {
			return false
		}
		return rc.Flush() == nil
	}
	if !write("retry: 1000\n\n") {
		return
	}
	var sentView []byte
	keepalive := time.NewTicker(15 * time.Second)
	defer keepalive.Stop()
	for {
		evs, view := h.since(last)
		for _, ev := range evs {
			b, _ := json.Marshal(ev)
			if !write("id: %d\nevent: event\ndata: %s\n\n", ev.ID, b) {
				return
			}
			last = ev.ID
		}
		if view != nil && &view[0] != firstByte(sentView) {
			if !write("id: %d\nevent: view\ndata: %s\n\n", last, view) {
				return
			}
			sentView = view
		}
		select {
		case <-r.Context().Done():
			return
		case <-ch:
		case <-keepalive.C:
			if !write(": keepalive\n\n") {
				return
			}
		}
	}
}

func firstByte(b []byte) *byte {
	if len(b) == 0 {
		return nil
	}
	return &b[0]
}
