package chaos

import (
	"context"
	"fmt"
	"math/rand"
	"time"

	"github.com/jackc/pgx/v5"
)

// Schema is created on the leader before the clients start.
const Schema = `
CREATE TABLE IF NOT EXISTS reg (k int PRIMARY KEY, v bigint NOT NULL);
CREATE TABLE IF NOT EXISTS accounts (id int PRIMARY KEY, balance bigint NOT NULL);
CREATE TABLE IF NOT EXISTS app (id bigint PRIMARY KEY);
CREATE TABLE IF NOT EXISTS sb_probe (node text NOT NULL, seq bigint NOT NULL, PRIMARY KEY (node, seq));
`

const (
	// RegisterKeys are the register keys; each starts at 0.
	RegisterKeys = 3
	// Accounts and InitialBalance define the bank; the total is their product.
	Accounts       = 5
	InitialBalance = 100
	opTimeout      = 3 * time.Second
	connectTimeout = 3 * time.Second
)

// seedSQL fills the tables (idempotently).
func seedSQL() string {
	s := ""
	for k := 0; k < RegisterKeys; k++ {
		s += fmt.Sprintf("INSERT INTO reg VALUES (%d, 0) ON CONFLICT DO NOTHING;\n", k)
	}
	for a := 0; a < Accounts; a++ {
		s += fmt.Sprintf("INSERT INTO accounts VALUES (%d, %d) ON CONFLICT DO NOTHING;\n", a, InitialBalance)
	}
	return s
}

// client runs one workload's operations on one connection at a time.
type client struct {
	id   int
	kind string // register, bank, append
	dsn  func() string
	h    *History
	rng  *rand.Rand
	conn *pgx.Conn
	next int64 // append: next id
}

func (cl *client) run(ctx context.Context) {
	defer cl.drop()
	for ctx.Err() == nil {
		if cl.conn == nil {
			cctx, cancel := context.WithTimeout(ctx, connectTimeout)
			c, err := pgx.Connect(cctx, cl.dsn())
			cancel()
			if err != nil {
				sleep(ctx, 50*time.Millisecond)
				continue
			}
			cl.conn = c
		}
		var op Op
		switch cl.kind {
		case "register":
			op = cl.register(ctx)
		case "bank":
			op = cl.bank(ctx)
		case "append":
			op = cl.appendOp(ctx)
		}
		if ctx.Err() != nil && op.Outcome != OK {
			// The run ended under this operation: it is unknown, not failed.
			if op.Outcome == Fail {
				op.Outcome = Unknown
			}
		}
		op.Client, op.Workload = cl.id, cl.kind
		cl.h.Add(op)
		if op.Outcome != OK {
			cl.drop()
		}
		sleep(ctx, time.Duration(10+cl.rng.Intn(20))*time.Millisecond)
	}
}

func (cl *client) drop() {
	if cl.conn != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		_ = cl.conn.Close(ctx)
		cancel()
		cl.conn = nil
	}
}

func (cl *client) finish(op *Op, err error, sent bool) {
	op.Return = cl.h.Now()
	op.Outcome = classify(err, sent)
	op.Err = errString(err)
}

func (cl *client) register(ctx context.Context) Op {
	op := Op{Key: cl.rng.Intn(RegisterKeys)}
	octx, cancel := context.WithTimeout(ctx, opTimeout)
	defer cancel()
	var err error
	switch r := cl.rng.Intn(10); {
	case r < 4:
		op.F = "read"
		op.Call = cl.h.Now()
		err = cl.conn.QueryRow(octx, "SELECT v FROM reg WHERE k = $1", op.Key).Scan(&op.Result)
		op.ResultOK = err == nil
	case r < 7:
		op.F = "write"
		op.Arg1 = int64(1 + cl.rng.Intn(1000))
		op.Call = cl.h.Now()
		_, err = cl.conn.Exec(octx, "UPDATE reg SET v = $2 WHERE k = $1", op.Key, op.Arg1)
	default:
		op.F = "cas"
		op.Arg1 = int64(cl.rng.Intn(1001))
		op.Arg2 = int64(1 + cl.rng.Intn(1000))
		op.Call = cl.h.Now()
		var tag interface{ RowsAffected() int64 }
		tag, err = cl.conn.Exec(octx, "UPDATE reg SET v = $3 WHERE k = $1 AND v = $2", op.Key, op.Arg1, op.Arg2)
		if err == nil {
			op.ResultOK = tag.RowsAffected() == 1
		}
	}
	cl.finish(&op, err, true)
	return op
}

// PackPair packs a transfer's accounts into Arg2.
func PackPair(from, to int) int64 { return int64(from)<<16 | int64(to) }

func (cl *client) bank(ctx context.Context) Op {
	octx, cancel := context.WithTimeout(ctx, opTimeout)
	defer cancel()
	if cl.rng.Intn(4) == 0 {
		op := Op{F: "total", Call: cl.h.Now()}
		var sum, minb int64
		err := cl.conn.QueryRow(octx, "SELECT sum(balance)::bigint, min(balance) FROM accounts").Scan(&sum, &minb)
		op.Result, op.Arg1 = sum, minb
		cl.finish(&op, err, true)
		return op
	}
	from := cl.rng.Intn(Accounts)
	to := (from + 1 + cl.rng.Intn(Accounts-1)) % Accounts
	op := Op{F: "transfer", Arg1: int64(1 + cl.rng.Intn(30)), Arg2: PackPair(from, to), Call: cl.h.Now()}
	tx, err := cl.conn.Begin(octx)
	if err != nil {
		cl.finish(&op, err, false)
		return op
	}
	tag, err := tx.Exec(octx, "UPDATE accounts SET balance = balance - $2 WHERE id = $1 AND balance >= $2", from, op.Arg1)
	if err == nil && tag.RowsAffected() == 1 {
		_, err = tx.Exec(octx, "UPDATE accounts SET balance = balance + $2 WHERE id = $1", to, op.Arg1)
		op.ResultOK = true
	}
	if err != nil {
		_ = tx.Rollback(context.Background())
		cl.finish(&op, err, false) // nothing committed
		return op
	}
	err = tx.Commit(octx)
	cl.finish(&op, err, true)
	return op
}

func (cl *client) appendOp(ctx context.Context) Op {
	octx, cancel := context.WithTimeout(ctx, opTimeout)
	defer cancel()
	cl.next++
	op := Op{F: "append", Arg1: cl.next, Call: cl.h.Now()}
	_, err := cl.conn.Exec(octx, "INSERT INTO app (id) VALUES ($1)", op.Arg1)
	cl.finish(&op, err, true)
	return op
}

func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}
