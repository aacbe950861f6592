package proxy

import (
	"bytes"
	"io"
	"math/rand/v2"
	"net"
	"testing"
	"time"
)

// tcpPair is two ends of one loopback TCP connection.
func tcpPair(t testing.TB) (a, b net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	acc := make(chan net.Conn, 1)
	go func() { c, _ := ln.Accept(); acc <- c }()
	a, err = net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	b = <-acc
	if b == nil {
		t.Fatal("accept failed")
	}
	t.Cleanup(func() { a.Close(); b.Close() })
	return a, b
}

// TestCopyConnNeverStalls: copyConn waits for the next readiness edge
// after a short read instead of reading EAGAIN; every byte written, in
// messages of random sizes (some larger than the buffer) at random
// moments, including while it writes the previous one on, still arrives,
// in order, and EOF ends the copy.
func TestCopyConnNeverStalls(t *testing.T) {
	clientOut, proxyIn := tcpPair(t)
	proxyOut, serverIn := tcpPair(t)
	done := make(chan struct{})
	go func() {
		copyConn(proxyOut, proxyIn, make([]byte, 4<<10))
		proxyOut.Close()
		close(done)
	}()
	rng := rand.New(rand.NewPCG(1, 2))
	var sent bytes.Buffer
	msgs := make([][]byte, 3000)
	for i := range msgs {
		m := make([]byte, 1+rng.IntN(10<<10))
		for j := range m {
			m[j] = byte(rng.Uint32())
		}
		msgs[i] = m
		sent.Write(m)
	}
	werr := make(chan error, 1)
	go func() {
		for i, m := range msgs {
			if i%97 == 0 {
				time.Sleep(time.Millisecond)
			}
			if _, err := clientOut.Write(m); err != nil {
				werr <- err
				return
			}
		}
		werr <- clientOut.(*net.TCPConn).CloseWrite()
	}()
	_ = serverIn.SetReadDeadline(time.Now().Add(60 * time.Second))
	got, err := io.ReadAll(serverIn)
	if err != nil {
		t.Fatalf("after %d of %d bytes: %v", len(got), sent.Len(), err)
	}
	if err := <-werr; err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, sent.Bytes()) {
		t.Fatalf("copied %d bytes, not the %d sent (or not in order)", len(got), sent.Len())
	}
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("copyConn did not end at EOF")
	}

	// Request/response, one small message at a time: each must arrive
	// without a further write behind it to wake the copy.
	a, b := tcpPair(t)
	c, d := tcpPair(t)
	go copyConn(c, b, make([]byte, 4<<10))
	_ = d.SetReadDeadline(time.Now().Add(60 * time.Second))
	buf := make([]byte, 16)
	for i := range 5000 {
		msg := []byte{byte(i), byte(i >> 8), 1, 2, 3}
		if _, err := a.Write(msg); err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(d, buf[:len(msg)]); err != nil || !bytes.Equal(buf[:len(msg)], msg) {
			t.Fatalf("message %d: %v", i, err)
		}
	}
}

// BenchmarkPingPong compares copyConn with io.CopyBuffer on
// request/response traffic through one proxy hop: a 40-byte message each
// way per op, as a select-only query and its answer would be.
func BenchmarkPingPong(b *testing.B) {
	for _, tc := range []struct {
		name string
		cp   func(dst, src net.Conn, buf []byte)
	}{
		{"copyConn", copyConn},
		{"io.CopyBuffer", func(dst, src net.Conn, buf []byte) {
			_, _ = io.CopyBuffer(writerOnly{dst}, readerOnly{src}, buf)
		}},
	} {
		b.Run(tc.name, func(b *testing.B) {
			client, pin := tcpPair(b)
			pout, server := tcpPair(b)
			go tc.cp(pout, pin, make([]byte, 32<<10))
			go tc.cp(pin, pout, make([]byte, 32<<10))
			go func() { // the server echoes
				buf := make([]byte, 40)
				for {
					if _, err := io.ReadFull(server, buf); err != nil {
						return
					}
					if _, err := server.Write(buf); err != nil {
						return
					}
				}
			}()
			msg := make([]byte, 40)
			b.ResetTimer()
			for range b.N {
				if _, err := client.Write(msg); err != nil {
					b.Fatal(err)
				}
				if _, err := io.ReadFull(client, msg); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
