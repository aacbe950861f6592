package dashboard

import (
	"context"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/petrel-db/petrel/internal/ops"
)

// A long operation (a rolling restart) runs in the background, one at a
// time per node: POST answers 202 with it, GET /api/v1/operation follows
// its progress, and its steps are in the events.

type operation struct {
	mu sync.Mutex
	opState
}

// opState is an operation as the API shows it.
type opState struct {
	ID      int64      `json:"id"`
	Kind    string     `json:"kind"`
	Actor   string     `json:"actor"`
	Started time.Time  `json:"started"`
	Ended   *time.Time `json:"ended,omitempty"`
	State   string     `json:"state"` // running, done, failed
	Error   string     `json:"error,omitempty"`
	Log     []string   `json:"log"`
}

// Write collects progress lines (the ops package's Out), the last 200.
func (o *operation) Write(p []byte) (int, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	for _, l := range strings.Split(strings.TrimRight(string(p), "\n"), "\n") {
		o.Log = append(o.Log, l)
	}
	if len(o.Log) > 200 {
		o.Log = o.Log[len(o.Log)-200:]
	}
	return len(p), nil
}

func (o *operation) snapshot() opState {
	o.mu.Lock()
	defer o.mu.Unlock()
	st := o.opState
	st.Log = append([]string{}, o.Log...)
	return st
}

func newOperation(kind, actor string) *operation {
	return &operation{opState: opState{Kind: kind, Actor: actor, Started: time.Now().UTC(), State: "running", Log: []string{}}}
}

// running returns the running operation, if any.
func (s *Server) running() (opState, bool) {
	s.opMu.Lock()
	defer s.opMu.Unlock()
	if s.op == nil {
		return opState{}, false
	}
	st := s.op.snapshot()
	return st, st.State == "running"
}

// startOperation runs fn as op in the background unless another operation
// runs (then it answers 409 itself and returns false).
func (s *Server) startOperation(w http.ResponseWriter, op *operation, fn func(context.Context, *ops.Cluster) error) (opState, bool) {
	if cur, busy := s.running(); busy {
		writeJSON(w, http.StatusConflict, map[string]any{"error": "an operation is already running on this node", "operation": cur})
		return opState{}, false
	}
	s.opMu.Lock()
	s.nextOp++
	op.mu.Lock()
	op.ID = s.nextOp
	op.mu.Unlock()
	s.op = op
	s.opWG.Add(1)
	s.opMu.Unlock()
	go func() {
		defer s.opWG.Done()
		err := fn(s.opCtx, s.ops(op.Actor, op))
		now := time.Now().UTC()
		op.mu.Lock()
		op.Ended, op.State = &now, "done"
		if err != nil {
			op.State, op.Error = "failed", err.Error()
		}
		kind, state := op.Kind, op.State
		op.mu.Unlock()
		s.o.Log.Info("admin api: operation ended", "kind", kind, "actor", op.Actor, "state", state, "err", err)
	}()
	return op.snapshot(), true
}

func (s *Server) postRestart(w http.ResponseWriter, r *http.Request, actor string) {
	var body struct{}
	if !decodeBody(w, r, &body) {
		return
	}
	op := newOperation("rolling-restart", actor)
	if st, ok := s.startOperation(w, op, func(ctx context.Context, c *ops.Cluster) error { return c.RollingRestart(ctx) }); ok {
		writeJSON(w, http.StatusAccepted, st)
	}
}

func (s *Server) getOperation(w http.ResponseWriter, r *http.Request, _ string) {
	s.opMu.Lock()
	op := s.op
	s.opMu.Unlock()
	if op == nil {
		writeError(w, http.StatusNotFound, "no operation has run on this node")
		return
	}
	writeJSON(w, http.StatusOK, op.snapshot())
}
