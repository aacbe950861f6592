//go:build linux

package proxy

import (
	"bytes"
	"context"
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"sync"
	"syscall"
	"testing"
	"time"
)

// startRelay runs a relay until the test ends.
func startRelay(t *testing.T) *relay {
	t.Helper()
	r, err := newRelay()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("the relay stopped: %v", err)
		}
	})
	return r
}

// relayed is a client and a server end joined through the relay, as the
// proxy joins them; ended says whether the relay took the pair, once it
// has let go of it.
func relayed(t *testing.T, r *relay, bufSize int) (client, server net.Conn, ended chan bool) {
	client, pin := tcpPair(t)
	pout, server := tcpPair(t)
	if bufSize > 0 {
		// Send buffers only: shrinking a receive buffer after the
		// handshake makes the peer's segments overrun it and back off.
		for _, c := range []net.Conn{pin, pout} {
			_ = c.(*net.TCPConn).SetWriteBuffer(bufSize)
		}
	}
	ended = make(chan bool, 1)
	go func() {
		pc := &pconn{client: pin, server: pout}
		took := r.pipe(pc)
		pc.close()
		ended <- took
	}()
	return client, server, ended
}

// TestRelayCarriesEverything: several pairs at once, each carrying 1000
// messages of random sizes both ways at once through small socket buffers
// (so writes to the far side come up short and the relay must hold the
// rest and stop reading, rule 2): every byte arrives, in order, and a
// close on one side ends the pair.
func TestRelayCarriesEverything(t *testing.T) {
	r := startRelay(t)
	var wg sync.WaitGroup
	var ends []chan bool
	for k := range 4 {
		client, server, ended := relayed(t, r, 8<<10)
		ends = append(ends, ended)
		for dir, ends := range [][2]net.Conn{{client, server}, {server, client}} {
			wg.Add(1)
			go func() {
				defer wg.Done()
				rng := rand.New(rand.NewPCG(uint64(k), uint64(dir)))
				var sent bytes.Buffer
				for range 1000 {
					m := make([]byte, 1+rng.IntN(20<<10))
					for j := range m {
						m[j] = byte(rng.Uint32())
					}
					sent.Write(m)
				}
				werr := make(chan error, 1)
				go func() {
					b := sent.Bytes()
					for len(b) > 0 {
						n := min(len(b), 1+rng.IntN(30<<10))
						if _, err := ends[0].Write(b[:n]); err != nil {
							werr <- err
							return
						}
						b = b[n:]
					}
					werr <- nil
				}()
				_ = ends[1].SetReadDeadline(time.Now().Add(60 * time.Second))
				got := make([]byte, sent.Len())
				if _, err := io.ReadFull(ends[1], got); err != nil {
					t.Errorf("pair %d dir %d: %v", k, dir, err)
					return
				}
				if err := <-werr; err != nil {
					t.Errorf("pair %d dir %d: writing: %v", k, dir, err)
				}
				if !bytes.Equal(got, sent.Bytes()) {
					t.Errorf("pair %d dir %d: %d bytes came through, not the ones sent in order", k, dir, len(got))
				}
			}()
		}
		t.Cleanup(func() {
			_ = client.Close()
			select {
			case took := <-ended:
				if !took {
					t.Errorf("pair %d: the relay refused it", k)
				}
			case <-time.After(10 * time.Second):
				t.Errorf("pair %d did not end when its client closed", k)
			}
			_ = server.SetReadDeadline(time.Now().Add(10 * time.Second))
			if _, err := server.Read(make([]byte, 1)); err != io.EOF {
				t.Errorf("pair %d: the server side read %v after the client closed, want EOF", k, err)
			}
		})
	}
	wg.Wait()
	if r.shortWrites.Load() == 0 {
		t.Error("no write came up short: rule 2 went untested")
	}
	for k, e := range ends {
		select {
		case <-e:
			t.Errorf("pair %d ended before its client closed", k)
		default:
		}
	}
}

// TestRelayRoundTrips: one small message at a time, each must arrive
// without a further write behind it to wake the relay.
func TestRelayRoundTrips(t *testing.T) {
	r := startRelay(t)
	client, server, _ := relayed(t, r, 0)
	go func() { _, _ = io.Copy(server, server) }() // the server echoes
	_ = client.SetDeadline(time.Now().Add(60 * time.Second))
	buf := make([]byte, 16)
	for i := range 5000 {
		msg := []byte{byte(i), byte(i >> 8), 1, 2, 3}
		if _, err := client.Write(msg); err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(client, buf[:len(msg)]); err != nil || !bytes.Equal(buf[:len(msg)], msg) {
			t.Fatalf("round trip %d: %q, %v", i, buf[:len(msg)], err)
		}
		if i%1000 == 999 {
			time.Sleep(2 * relayRawWaitMS * time.Millisecond) // the relay goes back to a blocking wait
		}
	}
}

// TestRelayEndsFromOutside: closing the proxy's connection (pconn.close,
// as on a leader change or an idle timeout) ends the relayed pair though
// the relay holds its own descriptors; stopping the relay ends the rest.
func TestRelayEndsFromOutside(t *testing.T) {
	r, err := newRelay()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	stopped := make(chan struct{})
	go func() { _ = r.run(ctx); close(stopped) }()
	defer func() { cancel(); <-stopped }()

	client, pin := tcpPair(t)
	pout, server := tcpPair(t)
	pc := &pconn{client: pin, server: pout}
	ended := make(chan struct{})
	go func() { r.pipe(pc); close(ended) }()
	if _, err := client.Write([]byte("hello")); err != nil {
		t.Fatal(err)
	}
	_ = server.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.ReadFull(server, make([]byte, 5)); err != nil {
		t.Fatal(err)
	}
	pc.close()
	select {
	case <-ended:
	case <-time.After(10 * time.Second):
		t.Fatal("the pair outlived pconn.close")
	}
	for _, c := range []net.Conn{client, server} {
		_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
		if _, err := c.Read(make([]byte, 1)); !errors.Is(err, io.EOF) && !errors.Is(err, syscall.ECONNRESET) {
			t.Fatalf("a peer read %v after pconn.close, want EOF or a reset", err)
		}
	}

	// Closed while being handed over (before the loop takes them in, or
	// after): each ends.
	var quick []chan struct{}
	for range 50 {
		_, pin := tcpPair(t)
		pout, _ := tcpPair(t)
		pc := &pconn{client: pin, server: pout}
		e := make(chan struct{})
		go func() { r.pipe(pc); close(e) }()
		go pc.close()
		quick = append(quick, e)
	}
	for i, e := range quick {
		select {
		case <-e:
		case <-time.After(10 * time.Second):
			t.Fatalf("pair %d, closed as it was handed over, never ended", i)
		}
	}

	var pairs []chan struct{}
	for range 3 {
		_, pin := tcpPair(t)
		pout, _ := tcpPair(t)
		e := make(chan struct{})
		go func() { r.pipe(&pconn{client: pin, server: pout}); close(e) }()
		pairs = append(pairs, e)
	}
	time.Sleep(50 * time.Millisecond)
	cancel()
	<-stopped
	for i, e := range pairs {
		select {
		case <-e:
		case <-time.After(10 * time.Second):
			t.Fatalf("pair %d outlived the relay", i)
		}
	}
	a, b := tcpPair(t)
	if r.pipe(&pconn{client: a, server: b}) {
		t.Fatal("a stopped relay took a pair (the proxy would not fall back to copying)")
	}
}

// TestRelaySalvagesBeforeAReset: a server that writes its last message
// and closes with the client's bytes unread resets the connection; the
// relay's first event is then readable, error and hang-up at once, and
// the message must still reach the client (as a backend's FATAL
// ErrorResponse must, when it is terminated).
func TestRelaySalvagesBeforeAReset(t *testing.T) {
	r := startRelay(t)
	client, pin := tcpPair(t)
	pout, server := tcpPair(t)
	if _, err := pout.Write([]byte("unread")); err != nil {
		t.Fatal(err)
	}
	time.Sleep(20 * time.Millisecond) // in the server's receive queue
	if _, err := server.Write([]byte("FATAL: terminated")); err != nil {
		t.Fatal(err)
	}
	_ = server.Close() // unread data: the kernel sends a reset
	time.Sleep(50 * time.Millisecond)
	ended := make(chan bool, 1)
	go func() { ended <- r.pipe(&pconn{client: pin, server: pout}) }()
	_ = client.SetReadDeadline(time.Now().Add(10 * time.Second))
	got, err := io.ReadAll(client)
	if string(got) != "FATAL: terminated" {
		t.Fatalf("the client got %q (%v), want the server's last message", got, err)
	}
	if !<-ended {
		t.Fatal("the relay refused the pair")
	}
}

// TestRelayLeaksNoDescriptor: pairs ended every way (a peer closes, a
// kill, the relay's stop) leave no descriptor open.
func TestRelayLeaksNoDescriptor(t *testing.T) {
	count := func() int {
		es, err := os.ReadDir("/proc/self/fd")
		if err != nil {
			t.Fatal(err)
		}
		return len(es)
	}
	before := count()
	r, err := newRelay()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	stopped := make(chan error, 1)
	go func() { stopped <- r.run(ctx) }()
	var conns []net.Conn
	var ends []chan bool
	for i := range 30 {
		client, pin := tcpPair(t)
		pout, server := tcpPair(t)
		conns = append(conns, client, pin, pout, server)
		pc := &pconn{client: pin, server: pout}
		e := make(chan bool, 1)
		go func() { took := r.pipe(pc); pc.close(); e <- took }()
		ends = append(ends, e)
		switch i % 3 {
		case 0:
			_ = client.Close()
		case 1:
			go pc.close()
		}
	}
	time.Sleep(50 * time.Millisecond)
	cancel()
	if err := <-stopped; err != nil {
		t.Fatal(err)
	}
	for i, e := range ends {
		select {
		case <-e:
		case <-time.After(10 * time.Second):
			t.Fatalf("pair %d never ended", i)
		}
	}
	for _, c := range conns {
		_ = c.Close()
	}
	if after := count(); after > before {
		t.Fatalf("%d descriptors open before, %d after", before, after)
	}
}
