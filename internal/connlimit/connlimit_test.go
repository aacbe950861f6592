package connlimit

import (
	"context"
	"errors"
	"io"
	"net"
	"net/netip"
	"testing"
	"time"
)

func TestSource(t *testing.T) {
	key := func(s string) netip.Addr { return Source(net.TCPAddrFromAddrPort(netip.MustParseAddrPort(s))) }
	for _, c := range []struct{ addr, want string }{
		{"192.0.2.1:5432", "192.0.2.1"},
		{"[::ffff:192.0.2.1]:5432", "192.0.2.1"},
		{"[2001:db8:1:2:3::4]:1", "2001:db8:1:2::"},
		{"[2001:db8:1:2:ffff:ffff:ffff:ffff]:2", "2001:db8:1:2::"},
		{"[2001:db8:1:3::1]:1", "2001:db8:1:3::"},
	} {
		if got := key(c.addr); got != netip.MustParseAddr(c.want) {
			t.Errorf("Source(%s) = %v, want %s", c.addr, got, c.want)
		}
	}
	zoned := &net.TCPAddr{IP: net.ParseIP("fe80::1"), Zone: "eth0", Port: 1}
	if got := Source(zoned); got != netip.MustParseAddr("fe80::") {
		t.Errorf("Source(%v) = %v", zoned, got)
	}
	if got := Source(&net.UnixAddr{Name: "/tmp/s", Net: "unix"}); got.IsValid() {
		t.Errorf("a unix address has source %v, want the zero key", got)
	}
}

func TestCounter(t *testing.T) {
	var c Counter
	a, b := netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("192.0.2.2")
	if !c.TryAdd(a, 2) || !c.TryAdd(a, 2) || c.TryAdd(a, 2) {
		t.Fatal("TryAdd does not stop at the limit")
	}
	if !c.TryAdd(b, 2) {
		t.Fatal("another source was refused")
	}
	if !c.TryAdd(b, 0) || !c.TryAdd(b, -1) {
		t.Fatal("no limit refused")
	}

	// Add waits for a slot, and gives up with its context.
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if err := c.Add(ctx, a, 2); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Add over the limit: %v, want the context's deadline", err)
	}
	got := make(chan error, 1)
	go func() { got <- c.Add(context.Background(), a, 2) }()
	select {
	case err := <-got:
		t.Fatalf("Add returned %v while the source was full", err)
	case <-time.After(50 * time.Millisecond):
	}
	c.Done(a)
	if err := <-got; err != nil {
		t.Fatal(err)
	}
	if c.Held(a) != 2 {
		t.Fatalf("held %d, want 2", c.Held(a))
	}
	for _, s := range []netip.Addr{a, a, b, b, b} {
		c.Done(s)
	}
	if len(c.m) != 0 {
		t.Fatalf("entries left after every slot was released: %v", c.m)
	}
}

// TestListenPerSource: over its per-source limit a source's connections are
// closed at once, while another source still gets in.
func TestListenPerSource(t *testing.T) {
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	refused := make(chan struct{}, 10)
	ln := Listen(inner, 10, 2, func() { refused <- struct{}{} })
	defer ln.Close()
	accepted := make(chan net.Conn, 10)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			accepted <- c
		}
	}()
	dial := func(src string) net.Conn {
		t.Helper()
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}
		c, err := d.Dial("tcp", inner.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	var held []net.Conn
	for range 2 {
		dial("127.0.0.2")
		held = append(held, <-accepted)
	}
	over := dial("127.0.0.2")
	<-refused
	_ = over.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := over.Read(make([]byte, 1)); !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed) && !isReset(err) {
		t.Fatalf("a connection over the source's limit was not closed: %v", err)
	}
	dial("127.0.0.3")
	select {
	case c := <-accepted:
		c.Close()
	case <-time.After(10 * time.Second):
		t.Fatal("another source's connection was not accepted")
	}
	// Closing one frees its source's slot.
	held[0].Close()
	held[0].Close() // twice: released once
	dial("127.0.0.2")
	select {
	case c := <-accepted:
		c.Close()
	case <-time.After(10 * time.Second):
		t.Fatal("a freed slot was not reused")
	}
}

func isReset(err error) bool {
	var op *net.OpError
	return errors.As(err, &op) && !op.Timeout()
}
