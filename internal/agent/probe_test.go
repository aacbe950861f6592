package agent

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/petrel-db/petrel/internal/netsim"
)

func TestProbeRefused(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	alive, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer alive.Close()
	go func() {
		for {
			c, err := alive.Accept()
			if err != nil {
				return
			}
			defer c.Close() // silent, like Postgres before the startup packet
		}
	}()
	gone, _ := net.Listen("tcp", "127.0.0.1:0")
	dead := gone.Addr().String()
	gone.Close()
	viaDead, err := netsim.Listen("127.0.0.1:0", dead, netsim.Conditions{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	go viaDead.Serve(ctx)
	defer viaDead.Close()
	viaAlive, err := netsim.Listen("127.0.0.1:0", alive.Addr().String(), netsim.Conditions{Delay: 5 * time.Millisecond}, nil)
	if err != nil {
		t.Fatal(err)
	}
	go viaAlive.Serve(ctx)
	defer viaAlive.Close()
	for _, c := range []struct {
		name, addr string
		want       bool
	}{
		{"listening", alive.Addr().String(), false},
		{"closed port", dead, true},
		{"link to a closed port", viaDead.Addr(), true},
		{"link to a listening port", viaAlive.Addr(), false},
	} {
		if got := probeRefused(c.addr, 300*time.Millisecond); got != c.want {
			t.Errorf("%s: probeRefused = %v, want %v", c.name, got, c.want)
		}
		// A re-clone wipes only once its source answers.
		if got := answers(c.addr, 300*time.Millisecond); got != !c.want {
			t.Errorf("%s: answers = %v, want %v", c.name, got, !c.want)
		}
	}
}
