package chaos

import (
	"context"
	"sort"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
)

// Ack is one acknowledged split-brain probe write on a member's own port.
type Ack struct {
	Node   string        `json:"node"`
	Seq    int64         `json:"seq"`
	Call   time.Duration `json:"call"`
	Return time.Duration `json:"return"`
}

// Prober writes to every member's own Postgres every Interval and records
// the acknowledged writes.
type Prober struct {
	h        *History
	dsn      func(id string) string
	Interval time.Duration

	mu   sync.Mutex // guards acks
	acks []Ack
}

// NewProber probes the members dsn(id) gives.
func NewProber(h *History, dsn func(id string) string) *Prober {
	return &Prober{h: h, dsn: dsn, Interval: 100 * time.Millisecond}
}

// Run probes node ids until ctx ends.
func (p *Prober) Run(ctx context.Context, ids []string) {
	var wg sync.WaitGroup
	for _, id := range ids {
		wg.Add(1)
		go func() { defer wg.Done(); p.probe(ctx, id) }()
	}
	wg.Wait()
}

func (p *Prober) probe(ctx context.Context, id string) {
	var conn *pgx.Conn
	defer func() {
		if conn != nil {
			_ = conn.Close(context.Background())
		}
	}()
	var seq int64
	tick := time.NewTicker(p.Interval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		if conn == nil {
			cctx, cancel := context.WithTimeout(ctx, time.Second)
			c, err := pgx.Connect(cctx, p.dsn(id))
			cancel()
			if err != nil {
				continue
			}
			conn = c
		}
		seq++
		call := p.h.Now()
		octx, cancel := context.WithTimeout(ctx, 2*time.Second)
		_, err := conn.Exec(octx, "INSERT INTO sb_probe (node, seq) VALUES ($1, $2)", id, seq)
		cancel()
		if err != nil {
			_ = conn.Close(context.Background())
			conn = nil
			continue
		}
		p.mu.Lock()
		p.acks = append(p.acks, Ack{Node: id, Seq: seq, Call: call, Return: p.h.Now()})
		p.mu.Unlock()
	}
}

// Acks returns the acknowledged probes.
func (p *Prober) Acks() []Ack {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]Ack(nil), p.acks...)
}

// Overlap is an instant where two members acknowledged writes in
// overlapping intervals: both were writable at once.
type Overlap struct {
	A, B Ack
}

// Overlaps finds acknowledged probes of different members whose
// [call, return] intervals intersect, and acknowledgements by a member
// bracketed by two acknowledgements of another member less than bracket
// apart (Y, X, Y: Y stayed writable across X's write; no legitimate
// failover and back fits in bracket). Either means two writable members.
func Overlaps(acks []Ack, bracket time.Duration) []Overlap {
	var out []Overlap
	for i := range acks {
		for j := i + 1; j < len(acks); j++ {
			a, b := acks[i], acks[j]
			if a.Node == b.Node {
				continue
			}
			if a.Call <= b.Return && b.Call <= a.Return {
				out = append(out, Overlap{a, b})
			}
		}
	}
	per := map[string][]Ack{}
	for _, a := range acks {
		per[a.Node] = append(per[a.Node], a)
	}
	for node := range per {
		sort.Slice(per[node], func(i, j int) bool { return per[node][i].Call < per[node][j].Call })
	}
	for _, x := range acks {
		for node, ys := range per {
			if node == x.Node {
				continue
			}
			// the last Y ack returning before x was called, and the first
			// Y ack called after x returned.
			k := sort.Search(len(ys), func(i int) bool { return ys[i].Call > x.Return })
			if k == len(ys) || k == 0 {
				continue
			}
			after := ys[k]
			var before *Ack
			for i := k - 1; i >= 0; i-- {
				if ys[i].Return < x.Call {
					before = &ys[i]
					break
				}
			}
			if before != nil && after.Call-before.Return < bracket {
				out = append(out, Overlap{*before, x})
			}
		}
	}
	return out
}
