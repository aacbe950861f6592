// Package connlimit counts a server's connections per source and caps
// them, so that one client host flooding a server with connections cannot
// crowd out the others. The leader proxy counts with it (connections,
// unauthenticated connections, backends held while authenticating) and
// the agent's HTTP API wraps its listener with Listen.
//
// A source is a client's IPv4 address, or the /64 network of its IPv6
// address: one host usually holds a whole /64, so counting single IPv6
// addresses would give one host billions of sources.
package connlimit

import (
	"context"
	"net"
	"net/netip"
	"sync"

	"golang.org/x/net/netutil"
)

// Source is the key a connection from addr is counted under. Addresses
// that are not IP (a Unix socket) all share the zero key.
func Source(addr net.Addr) netip.Addr {
	var ap netip.AddrPort
	if ta, ok := addr.(*net.TCPAddr); ok {
		ap = ta.AddrPort()
	} else if addr != nil {
		var err error
		if ap, err = netip.ParseAddrPort(addr.String()); err != nil {
			return netip.Addr{}
		}
	}
	ip := ap.Addr().Unmap().WithZone("")
	if ip.Is6() {
		p, err := ip.Prefix(64)
		if err != nil {
			return netip.Addr{}
		}
		return p.Addr()
	}
	return ip
}

// Counter counts what each source holds against a limit. The zero value is
// ready to use. A source's entry exists only while it holds something or
// waits, so the map is never larger than the connections it counts.
type Counter struct {
	mu sync.Mutex
	m  map[netip.Addr]*count
}

type count struct {
	n       int           // held
	waiting int           // callers of Add waiting for a slot
	freed   chan struct{} // closed (and cleared) when a slot is released; nil: nobody waits
}

func (c *Counter) entry(src netip.Addr) *count {
	if c.m == nil {
		c.m = map[netip.Addr]*count{}
	}
	e := c.m[src]
	if e == nil {
		e = &count{}
		c.m[src] = e
	}
	return e
}

// TryAdd counts one more for src unless it already holds limit; a limit
// of zero or less is no limit.
func (c *Counter) TryAdd(src netip.Addr, limit int) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	e := c.entry(src)
	if limit > 0 && e.n >= limit {
		c.dropIfEmpty(src, e)
		return false
	}
	e.n++
	return true
}

// Add waits until src holds fewer than limit, then counts one more. It
// returns ctx's error, counting nothing, when ctx ends first.
func (c *Counter) Add(ctx context.Context, src netip.Addr, limit int) error {
	c.mu.Lock()
	e := c.entry(src)
	for limit > 0 && e.n >= limit {
		if e.freed == nil {
			e.freed = make(chan struct{})
		}
		freed := e.freed
		e.waiting++
		c.mu.Unlock()
		var err error
		select {
		case <-freed:
		case <-ctx.Done():
			err = ctx.Err()
		}
		c.mu.Lock()
		e.waiting--
		if err != nil {
			c.dropIfEmpty(src, e)
			c.mu.Unlock()
			return err
		}
	}
	e.n++
	c.mu.Unlock()
	return nil
}

// Done releases one of src's slots, waking whoever waits for one.
func (c *Counter) Done(src netip.Addr) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e := c.m[src]
	if e == nil || e.n == 0 {
		panic("connlimit: Done without a matching Add")
	}
	e.n--
	if e.freed != nil {
		close(e.freed)
		e.freed = nil
	}
	c.dropIfEmpty(src, e)
}

func (c *Counter) dropIfEmpty(src netip.Addr, e *count) {
	if e.n == 0 && e.waiting == 0 {
		delete(c.m, src)
	}
}

// Held is what src holds now.
func (c *Counter) Held(src netip.Addr) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	if e := c.m[src]; e != nil {
		return e.n
	}
	return 0
}

// Listen wraps ln so that at most total connections are open at once
// (Accept waits for one to close: netutil.LimitListener) and at most
// perSource from one source. A connection over perSource is closed at
// once, without a word, before it takes one of the total's slots, so a
// flood from one host never takes another host's place. Zero or less is no
// limit. refused, when not nil, is called for every connection closed so.
func Listen(ln net.Listener, total, perSource int, refused func()) net.Listener {
	var l net.Listener = &sourceListener{Listener: ln, limit: perSource, refused: refused}
	if total > 0 {
		l = netutil.LimitListener(l, total)
	}
	return l
}

type sourceListener struct {
	net.Listener
	limit   int
	refused func()
	counts  Counter
}

func (l *sourceListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		src := Source(c.RemoteAddr())
		if !l.counts.TryAdd(src, l.limit) {
			_ = c.Close()
			if l.refused != nil {
				l.refused()
			}
			continue
		}
		return &countedConn{Conn: c, done: func() { l.counts.Done(src) }}, nil
	}
}

// countedConn releases its source's slot once, on the first Close.
type countedConn struct {
	net.Conn
	once sync.Once
	done func()
}

func (c *countedConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(c.done)
	return err
}
