// Package netsim injects network conditions in user space, since these
// machines have no netem: a Link is a TCP relay that delays each direction
// by a one-way delay (with optional jitter and loss, modelled as the
// retransmission delay a lost segment costs), and that can be partitioned
// (traffic held, as a blackhole would, and released on heal) and healed.
//
// Only the local world and tests use it; on real hosts petrel dials
// members directly.
package netsim

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"math/rand"
	"net"
	"sync"
	"syscall"
	"time"
)

// Conditions of one link direction pair. Zero means a plain relay.
type Conditions struct {
	// Delay is added to every chunk in each direction (one-way delay).
	Delay time.Duration
	// Jitter adds up to this much more, at random, keeping byte order.
	Jitter time.Duration
	// Loss is the probability a chunk is "lost" and arrives one
	// retransmission timeout (RTO) later.
	Loss float64
}

// RTO is the extra delay a lost chunk costs.
const RTO = 200 * time.Millisecond

// maxHeld caps the bytes a partitioned connection buffers per direction
// before it is cut, so a long partition cannot exhaust memory.
const maxHeld = 32 << 20

// Link relays connections accepted on its listener to Target.
type Link struct {
	target string
	ln     net.Listener
	log    *slog.Logger

	mu          sync.Mutex // guards the following fields
	cond        Conditions
	partitioned bool
	healed      chan struct{} // closed on heal; replaced on partition
	conns       map[*pipe]struct{}
	closed      bool
	rng         *rand.Rand
}

// Listen creates a link listening on listen ("127.0.0.1:0" picks a port)
// and relaying to target.
func Listen(listen, target string, c Conditions, log *slog.Logger) (*Link, error) {
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	h := make(chan struct{})
	close(h)
	return &Link{target: target, ln: ln, log: log, cond: c, healed: h, conns: map[*pipe]struct{}{}, rng: rand.New(rand.NewSource(time.Now().UnixNano()))}, nil
}

// Addr is where to dial to cross the link.
func (l *Link) Addr() string { return l.ln.Addr().String() }

// Target is the address the link relays to.
func (l *Link) Target() string { return l.target }

// Set changes the link's conditions for new and existing traffic.
func (l *Link) Set(c Conditions) {
	l.mu.Lock()
	l.cond = c
	l.mu.Unlock()
}

// Conditions returns the current conditions.
func (l *Link) Conditions() Conditions {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.cond
}

// Partition holds all traffic (both ways, existing and new connections)
// until Heal.
func (l *Link) Partition() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.partitioned {
		l.partitioned = true
		l.healed = make(chan struct{})
	}
}

// Heal releases held traffic.
func (l *Link) Heal() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.partitioned {
		l.partitioned = false
		close(l.healed)
	}
}

// Partitioned reports whether the link is cut.
func (l *Link) Partitioned() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.partitioned
}

// CutAll closes every relayed connection (as a reset would).
func (l *Link) CutAll() {
	l.mu.Lock()
	ps := make([]*pipe, 0, len(l.conns))
	for p := range l.conns {
		ps = append(ps, p)
	}
	l.mu.Unlock()
	for _, p := range ps {
		p.close()
	}
}

// gate returns a channel closed when traffic may flow.
func (l *Link) gate() <-chan struct{} {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.healed
}

// deliverAt says when a chunk read now should be written.
func (l *Link) deliverAt(now time.Time) time.Time {
	l.mu.Lock()
	defer l.mu.Unlock()
	d := l.cond.Delay
	if l.cond.Jitter > 0 {
		d += time.Duration(l.rng.Int63n(int64(l.cond.Jitter)))
	}
	if l.cond.Loss > 0 && l.rng.Float64() < l.cond.Loss {
		d += RTO
	}
	return now.Add(d)
}

// Serve accepts and relays until ctx ends or Close.
func (l *Link) Serve(ctx context.Context) error {
	go func() {
		<-ctx.Done()
		l.Close()
	}()
	for {
		c, err := l.ln.Accept()
		if err != nil {
			l.mu.Lock()
			closed := l.closed
			l.mu.Unlock()
			if closed || ctx.Err() != nil {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			return err
		}
		go l.relay(ctx, c)
	}
}

// Close stops the listener and cuts every connection.
func (l *Link) Close() {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return
	}
	l.closed = true
	l.mu.Unlock()
	l.ln.Close()
	l.CutAll()
}

type pipe struct {
	a, b net.Conn
	once sync.Once
	done chan struct{}
}

func (p *pipe) close() {
	p.once.Do(func() {
		close(p.done)
		p.a.Close()
		if p.b != nil {
			p.b.Close()
		}
	})
}

func (l *Link) relay(ctx context.Context, client net.Conn) {
	p := &pipe{a: client, done: make(chan struct{})}
	l.mu.Lock()
	l.conns[p] = struct{}{}
	l.mu.Unlock()
	defer func() {
		p.close()
		l.mu.Lock()
		delete(l.conns, p)
		l.mu.Unlock()
	}()
	// A partitioned link does not even carry the handshake onward.
	select {
	case <-l.gate():
	case <-p.done:
		return
	case <-ctx.Done():
		return
	}
	// The connection setup crosses the link too: one round trip.
	c := l.Conditions()
	if c.Delay > 0 {
		select {
		case <-time.After(2 * c.Delay):
		case <-p.done:
			return
		}
	}
	var d net.Dialer
	dctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	server, err := d.DialContext(dctx, "tcp", l.target)
	cancel()
	if err != nil {
		l.log.Debug("link dial failed", "target", l.target, "err", err)
		// Pass the refusal on the way the network would tell it: a reset
		// (RST), which a client tells from a slow peer at once; a plain
		// close would look like a server hanging up.
		if tc, ok := client.(*net.TCPConn); ok && errors.Is(err, syscall.ECONNREFUSED) {
			_ = tc.SetLinger(0)
		}
		return
	}
	p.b = server
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); l.copy(p, server, client); p.close() }()
	go func() { defer wg.Done(); l.copy(p, client, server); p.close() }()
	wg.Wait()
}

type chunk struct {
	b  []byte
	at time.Time
}

// copy moves bytes src→dst, each chunk delivered at its due time, in
// order, and held while the link is partitioned.
func (l *Link) copy(p *pipe, dst, src net.Conn) {
	q := make(chan chunk, 1024)
	go func() {
		defer close(q)
		for {
			buf := make([]byte, 32<<10)
			n, err := src.Read(buf)
			if n > 0 {
				at := l.deliverAt(time.Now())
				select {
				case q <- chunk{buf[:n], at}:
				case <-p.done:
					return
				}
			}
			if err != nil {
				return
			}
		}
	}()
	var last time.Time
	held := 0
	for ch := range q {
		if ch.at.Before(last) {
			ch.at = last // keep order under jitter
		}
		last = ch.at
		if wait := time.Until(ch.at); wait > 0 {
			select {
			case <-time.After(wait):
			case <-p.done:
				return
			}
		}
		select {
		case <-l.gate():
			held = 0
		default:
			held += len(ch.b)
			if held > maxHeld {
				return
			}
			select {
			case <-l.gate():
			case <-p.done:
				return
			}
		}
		if _, err := dst.Write(ch.b); err != nil {
			return
		}
	}
	if tc, ok := dst.(*net.TCPConn); ok {
		_ = tc.CloseWrite()
	}
}
