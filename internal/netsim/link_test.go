package netsim

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"syscall"
	"testing"
	"time"
)

// echoServer echoes lines until ctx ends.
func echoServer(t *testing.T, ctx context.Context) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { <-ctx.Done(); ln.Close() }()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { defer c.Close(); _, _ = io.Copy(c, c) }()
		}
	}()
	return ln.Addr().String()
}

func roundTrip(t *testing.T, c net.Conn, r *bufio.Reader) time.Duration {
	t.Helper()
	start := time.Now()
	if _, err := c.Write([]byte("ping\n")); err != nil {
		t.Fatal(err)
	}
	line, err := r.ReadString('\n')
	if err != nil || line != "ping\n" {
		t.Fatalf("echo: %q %v", line, err)
	}
	return time.Since(start)
}

func TestLinkDelayPartitionHeal(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	target := echoServer(t, ctx)
	l, err := Listen("127.0.0.1:0", target, Conditions{Delay: 50 * time.Millisecond}, nil)
	if err != nil {
		t.Fatal(err)
	}
	go l.Serve(ctx)
	defer l.Close()

	c, err := net.Dial("tcp", l.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	r := bufio.NewReader(c)
	// A round trip costs at least two one-way delays.
	if rtt := roundTrip(t, c, r); rtt < 100*time.Millisecond {
		t.Fatalf("round trip %v, want >= 100ms", rtt)
	}

	// Partitioned: nothing comes back until healed; then it all arrives in order.
	l.Partition()
	if _, err := c.Write([]byte("ping\n")); err != nil {
		t.Fatal(err)
	}
	_ = c.SetReadDeadline(time.Now().Add(400 * time.Millisecond))
	if _, err := r.ReadString('\n'); err == nil {
		t.Fatal("traffic crossed a partitioned link")
	}
	_ = c.SetReadDeadline(time.Time{})
	l.Heal()
	r2 := bufio.NewReader(c)
	line, err := r2.ReadString('\n')
	if err != nil || line != "ping\n" {
		t.Fatalf("after heal: %q %v", line, err)
	}

	// CutAll closes relayed connections.
	l.CutAll()
	_ = c.SetReadDeadline(time.Now().Add(2 * time.Second))
	if _, err := r2.ReadByte(); err == nil {
		t.Fatal("connection survived CutAll")
	}
}

func TestLinkOrderUnderJitter(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	target := echoServer(t, ctx)
	l, err := Listen("127.0.0.1:0", target, Conditions{Delay: 5 * time.Millisecond, Jitter: 20 * time.Millisecond, Loss: 0.1}, nil)
	if err != nil {
		t.Fatal(err)
	}
	go l.Serve(ctx)
	defer l.Close()
	c, err := net.Dial("tcp", l.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	go func() {
		for i := 0; i < 200; i++ {
			_, _ = c.Write([]byte{byte(i)})
			time.Sleep(time.Millisecond)
		}
	}()
	buf := make([]byte, 200)
	if _, err := io.ReadFull(c, buf); err != nil {
		t.Fatal(err)
	}
	for i := range buf {
		if buf[i] != byte(i) {
			t.Fatalf("byte %d = %d: reordered", i, buf[i])
		}
	}
}

func TestWorldPartition(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	a, b := echoServer(t, ctx), echoServer(t, ctx)
	w := NewWorld(ctx, Matrix{Delays: map[string]time.Duration{"ord-scl": 30 * time.Millisecond}}, nil)
	defer w.Close()
	if err := w.AddHost("scl1", "scl", a); err != nil {
		t.Fatal(err)
	}
	if err := w.AddHost("ord1", "ord", b); err != nil {
		t.Fatal(err)
	}
	via := w.DialMap("ord1").Addr(a)
	if via == a {
		t.Fatal("ord1 has no link to scl1")
	}
	c, err := net.Dial("tcp", via)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	r := bufio.NewReader(c)
	if rtt := roundTrip(t, c, r); rtt < 60*time.Millisecond {
		t.Fatalf("cross-region round trip %v, want >= 60ms", rtt)
	}
	w.Partition("scl1", "ord1")
	_, _ = c.Write([]byte("ping\n"))
	_ = c.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	if _, err := r.ReadString('\n'); err == nil {
		t.Fatal("traffic crossed a partition")
	}
	_ = c.SetReadDeadline(time.Time{})
	w.HealAll()
	if line, err := bufio.NewReader(c).ReadString('\n'); err != nil || line != "ping\n" {
		t.Fatalf("after heal: %q %v", line, err)
	}
}

// A link to a port nobody listens on resets the client at once, as the
// network would refuse it, instead of accepting and hanging up.
func TestLinkPassesRefusal(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	l0, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := l0.Addr().String()
	l0.Close()
	l, err := Listen("127.0.0.1:0", dead, Conditions{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	go l.Serve(ctx)
	defer l.Close()
	// The reset may beat connect's return, or come on the first read.
	c, err := net.Dial("tcp", l.Addr())
	if err == nil {
		defer c.Close()
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		_, err = c.Read(make([]byte, 1))
	}
	if !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("read through a link to a dead port: %v, want ECONNRESET", err)
	}
}

func TestWorldDirectWhenFree(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	w := NewWorld(ctx, Matrix{Delays: map[string]time.Duration{"ord-scl": 30 * time.Millisecond}}, nil)
	defer w.Close()
	w.SetDirectWhenFree(true)
	for _, h := range [][3]string{{"scl1", "scl", "127.0.0.1:1"}, {"scl2", "scl", "127.0.0.1:2"}, {"ord1", "ord", "127.0.0.1:3"}} {
		if err := w.AddHost(h[0], h[1], h[2]); err != nil {
			t.Fatal(err)
		}
	}
	if got := w.Via("scl1", "127.0.0.1:2"); got != "127.0.0.1:2" {
		t.Errorf("same region, no delay: via %s, want direct", got)
	}
	if got := w.Via("scl1", "127.0.0.1:3"); got == "127.0.0.1:3" {
		t.Errorf("cross region: direct, want a link")
	}
}
