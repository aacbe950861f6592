package dashboard

import (
	"net/http"
	"strings"
	"sync"
	"time"
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

func (s *Server) postRestart(w http.ResponseWriter, r *http.Request, actor string) {
	var body struct{}
	if !decodeBody(w, r, &body) {
		return
	}
	s.opMu.Lock()
	if s.op != nil && s.op.snapshot().State == "running" {
		cur := s.op.snapshot()
		s.opMu.Unlock()
		writeJSON(w, http.StatusConflict, map[string]any{"error": "an operation is already running on this node", "operation": cur})
		return
	}
	s.nextOp++
	op := &operation{opState: opState{ID: s.nextOp, Kind: "rolling-restart", Actor: actor, Started: time.Now().UTC(), State: "running", Log: []string{}}}
	s.op = op
	s.opWG.Add(1)
	s.opMu.Unlock()
	go func() {
		defer s.opWG.Done()
		err := s.ops(actor, op).RollingRestart(s.opCtx)
		now := time.Now().UTC()
		op.mu.Lock()
		op.Ended, op.State = &now, "done"
		if err != nil {
			op.State, op.Error = "failed", err.Error()
		}
		op.mu.Unlock()
		s.o.Log.Info("admin api: rolling restart ended", "actor", actor, "state", op.State, "err", err)
	}()
	writeJSON(w, http.StatusAccepted, op.snapshot())
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
