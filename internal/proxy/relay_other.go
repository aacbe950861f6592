//go:build !linux

package proxy

import (
	"context"
	"errors"
	"net"
)

// relay exists only on Linux (an epoll loop); elsewhere the proxy copies
// with two goroutines per connection.
type relay struct{}

func relayCount() int { return 0 }

func newRelay() (*relay, error) { return nil, errors.New("the relay needs Linux") }

type relayPair struct{ relay *relay }

func (r *relay) pipe(pc *pconn) bool           { return false }
func (r *relay) kill(pr *relayPair)            {}
func (r *relay) run(ctx context.Context) error { return nil }
func (r *relay) close()                        {}

func pinRelays(rs []*relay) {}

func pinnedRelay(rs []*relay, c net.Conn) int { return -1 }
