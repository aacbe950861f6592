package agent

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/petrel-db/petrel/internal/api"
	"github.com/petrel-db/petrel/internal/api/apitest"
	"github.com/petrel-db/petrel/internal/config"
	"github.com/petrel-db/petrel/internal/engine"
	"github.com/petrel-db/petrel/internal/model"
	"github.com/petrel-db/petrel/internal/pg"
	"github.com/petrel-db/petrel/internal/pgtest"
	"github.com/prometheus/client_golang/prometheus"
)

// TestStatusFloodMeasuresLagOnce: many concurrent GET /status on a replica
// (the real API handler over a real Postgres) run one lag measurement, one
// query on the agent's Postgres connection and one request to the leader,
// and every answer carries its result.
func TestStatusFloodMeasuresLagOnce(t *testing.T) {
	srv := pgtest.Start(t)
	const leaderLSN = 1 << 30
	var hits, inFlight, maxInFlight atomic.Int64
	release := make(chan struct{})
	ca := apitest.NewCA(t, "petrel")
	leader := ca.Server(t, "l1", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		n := inFlight.Add(1)
		defer inFlight.Add(-1)
		for m := maxInFlight.Load(); n > m && !maxInFlight.CompareAndSwap(m, n); m = maxInFlight.Load() {
		}
		<-release
		_ = json.NewEncoder(w).Encode(model.Status{ID: "l1", Role: model.RolePrimary, LSNNum: leaderLSN})
	}))
	defer func() {
		select {
		case <-release:
		default:
			close(release)
		}
	}()

	// A replica as the API sees it: its Postgres runs, and its last
	// observation names a leader.
	a := &Agent{cfg: config.Node{ID: "r1", Region: "scl"}, pg: srv.Server, params: engine.DefaultParams(), lagHTTP: ca.Client(t)}
	a.lastPG = pg.Status{Running: true, InRecovery: true, Streaming: true}
	a.lastObs = engine.Observation{StoreOK: true, Leader: "l1", Members: map[string]model.Member{"l1": {ID: "l1", APIURL: leader.URL}}}
	var waiting atomic.Int64
	h := api.Handler(a, prometheus.NewRegistry())
	apiSrv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		waiting.Add(1)
		defer waiting.Add(-1)
		h.ServeHTTP(w, r)
	}))
	defer apiSrv.Close()

	const n = 100
	client := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{MaxConnsPerHost: n, MaxIdleConnsPerHost: n}}
	docs := make(chan model.Status, n)
	errs := make(chan error, n)
	var wg sync.WaitGroup
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, err := client.Get(apiSrv.URL + "/status")
			if err != nil {
				errs <- err
				return
			}
			defer resp.Body.Close()
			var st model.Status
			if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
				errs <- fmt.Errorf("decoding /status: %w", err)
				return
			}
			docs <- st
		}()
	}
	// Every request is in the handler, and the leader has been asked.
	deadline := time.Now().Add(20 * time.Second)
	for waiting.Load() < n || hits.Load() == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("%d requests in the handler, %d leader requests", waiting.Load(), hits.Load())
		}
		time.Sleep(5 * time.Millisecond)
	}
	// Let every request reach its lag (without the single flight each
	// would be asking the leader now), then answer.
	time.Sleep(200 * time.Millisecond)
	close(release)
	wg.Wait()
	close(docs)
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	// Counted once all are answered: a request that measured on its own
	// after the release counts too.
	if got := hits.Load(); got != 1 || maxInFlight.Load() != 1 {
		t.Fatalf("%d concurrent GET /status asked the leader %d times (at most %d at once), want once", n, got, maxInFlight.Load())
	}
	count := 0
	for st := range docs {
		count++
		if st.LagBytes != leaderLSN || st.Role != model.RoleReplica {
			t.Fatalf("a /status without the measurement: %+v", st)
		}
	}
	if count != n {
		t.Fatalf("%d answers, want %d", count, n)
	}
}
