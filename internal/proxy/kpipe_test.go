package proxy

import (
	"bytes"
	"crypto/rand"
	"io"
	"os"
	"runtime"
	"testing"
	"time"
)

// TestPipeModes carries a conversation through every data path: many
// small round trips, then 8 MiB each way at once (the peer's send buffer
// fills, so the kernel pipe must queue and resume), then a close from the
// client side that must close the server side too.
func TestPipeModes(t *testing.T) {
	for _, mode := range []string{PipeRelay, PipeKernel, PipeCopy, PipeSplice} {
		t.Run(mode, func(t *testing.T) {
			if mode == PipeRelay && runtime.GOMAXPROCS(0) < 2 {
				defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(2)) // the relay needs two
			}
			if mode == PipeKernel {
				k, err := newKernelPipe(4)
				if err != nil {
					// Without root (or CAP_BPF+CAP_NET_ADMIN) the proxy copies in
					// user space; TestAutoPipe checks that choice.
					t.Skipf("kernel pipe unavailable here (euid %d): %v", os.Geteuid(), err)
				}
				k.close()
			}
			a := newFakeMember(t, "a", "primary")
			h := startProxy(t, Config{Pipe: mode})
			if got := h.p.PipeMode(); got != mode {
				t.Fatalf("PipeMode() = %q, want %q", got, mode)
			}
			h.p.SetView("a", view(a))
			waitUntil(t, "leader a", func() bool { return h.p.Leader() == "a" })
			c, who := connect(t, h.rw)
			if who != "a" {
				t.Fatalf("routed to %s", who)
			}
			_ = c.SetDeadline(time.Now().Add(60 * time.Second))
			buf := make([]byte, 64)
			for i := range 2000 {
				msg := []byte{'Q', byte(i), byte(i >> 8), 0, 0, 0, 9, 'x'}
				if _, err := c.Write(msg); err != nil {
					t.Fatal(err)
				}
				if _, err := io.ReadFull(c, buf[:len(msg)]); err != nil || !bytes.Equal(buf[:len(msg)], msg) {
					t.Fatalf("round trip %d: %q, %v", i, buf[:len(msg)], err)
				}
			}
			big := make([]byte, 8<<20)
			_, _ = rand.Read(big)
			werr := make(chan error, 1)
			go func() { _, err := c.Write(big); werr <- err }()
			got := make([]byte, len(big))
			if _, err := io.ReadFull(c, got); err != nil {
				t.Fatalf("reading the echo of 8 MiB: %v", err)
			}
			if err := <-werr; err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, big) {
				t.Fatal("8 MiB came back different")
			}
			_ = c.Close()
			waitUntil(t, "both sides closed", func() bool { return h.p.Conns() == 0 })
		})
	}
}

// TestAutoPipe: the default is the relay where it can run (Linux,
// GOMAXPROCS >= 2), else the copy loops, never the kernel pipe even where
// it could be loaded (it is opt-in; see Config.Pipe).
func TestAutoPipe(t *testing.T) {
	want := PipeCopy
	if runtime.GOOS == "linux" && runtime.GOMAXPROCS(0) >= 2 {
		want = PipeRelay
	}
	h := startProxy(t, Config{})
	if got := h.p.PipeMode(); got != want {
		t.Fatalf("auto chose %q, want %q", got, want)
	}
	if err := CheckPipe("sendfile"); err == nil {
		t.Fatal("CheckPipe accepted an unknown mode")
	}
}
