// Package chaos is petrel's fault-injection suite, in the manner of
// Jepsen: it starts a real cluster (internal/testcluster: embedded etcd,
// `petrel node` processes, real Postgres, every node's traffic through a
// netsim.World), runs concurrent client workloads while a nemesis injects
// faults (crashes, hangs, partitions, store loss, switchovers racing
// crashes), heals them, and checks the recorded history:
//
//   - register: reads, writes and compare-and-sets on a few keys, checked
//     for linearizability with porcupine; an operation whose outcome is
//     unknown (timeout, broken connection) may or may not have happened;
//   - bank: transfers in one transaction; the total never changes and no
//     balance goes negative, in every read and in the final state;
//   - append: unique ids; every acknowledged id is on the leader and on
//     every replica once it has caught up;
//   - split brain: a probe writes to every member's own Postgres every
//     100 ms; two members acknowledging writes in overlapping intervals,
//     or an acknowledged probe missing at the end, is an anomaly;
//   - health: after each heal every node is back (one primary, streaming
//     replicas), and the write-unavailability windows are measured.
//
// Run is used by the short scenarios in chaos_test.go (inside make test)
// and by cmd/petrel-chaos (make chaos: random schedules, a printed seed).
package chaos

import (
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
)

// Outcome of one client operation.
type Outcome string

const (
	OK      Outcome = "ok"      // acknowledged
	Fail    Outcome = "fail"    // certainly did not take effect
	Unknown Outcome = "unknown" // may or may not have taken effect
)

// Op is one recorded client operation.
type Op struct {
	Client   int           `json:"client"`
	Workload string        `json:"workload"`
	F        string        `json:"f"` // read, write, cas, transfer, total, append
	Key      int           `json:"key,omitempty"`
	Arg1     int64         `json:"arg1,omitempty"` // written value, cas old, transfer amount, appended id
	Arg2     int64         `json:"arg2,omitempty"` // cas new, transfer from/to packed
	Result   int64         `json:"result,omitempty"`
	ResultOK bool          `json:"result_ok,omitempty"` // cas applied; read found
	Outcome  Outcome       `json:"outcome"`
	Err      string        `json:"err,omitempty"`
	Call     time.Duration `json:"call"` // since the run started
	Return   time.Duration `json:"return"`
}

// History collects operations from concurrent clients.
type History struct {
	start time.Time

	mu  sync.Mutex // guards ops
	ops []Op
}

// NewHistory starts the clock.
func NewHistory() *History { return &History{start: time.Now()} }

// Now is the time since the run started.
func (h *History) Now() time.Duration { return time.Since(h.start) }

// Add records an operation.
func (h *History) Add(op Op) {
	h.mu.Lock()
	h.ops = append(h.ops, op)
	h.mu.Unlock()
}

// Ops returns a copy of the recorded operations.
func (h *History) Ops() []Op {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]Op(nil), h.ops...)
}

// classify decides what an error means for an operation that may have
// reached the server. Connection failures before anything was sent and
// errors the server raised for the statement are certain failures;
// anything that broke while the statement (or its commit) was in flight
// is unknown.
func classify(err error, sent bool) Outcome {
	if err == nil {
		return OK
	}
	var ce *pgconn.ConnectError
	if errors.As(err, &ce) || !sent {
		return Fail
	}
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		switch pe.Code[:2] {
		case "08", "57", "58", "XX":
			// connection trouble, shutdown (incl. a sync-rep wait ended by
			// termination), system error: the commit may have happened.
			return Unknown
		}
		return Fail
	}
	if pgconn.SafeToRetry(err) {
		return Fail
	}
	var ne net.Error
	if errors.As(err, &ne) || errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return Unknown
	}
	return Unknown
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	s := err.Error()
	if len(s) > 200 {
		s = s[:200]
	}
	return fmt.Sprint(s)
}
