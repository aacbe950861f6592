package proxy

import (
	"time"

	"golang.org/x/sys/unix"
)

// watchIdle closes pc once no data moved either way for IdleTimeout, as
// seen in the client socket's TCP_INFO (so the pipe stays zero-copy). It
// returns a function that stops watching.
func (p *Proxy) watchIdle(pc *pconn) (stop func()) {
	if p.cfg.IdleTimeout <= 0 {
		return func() {}
	}
	// A descriptor of its own: the relay closes the proxy's (rule 1).
	fd, err := dupConn(pc.client)
	if err != nil {
		return func() {}
	}
	every := max(p.cfg.IdleTimeout/4, 100*time.Millisecond)
	done := make(chan struct{})
	exited := make(chan struct{})
	go func() {
		defer close(exited)
		defer unix.Close(fd)
		for {
			select {
			case <-done:
				return
			case <-p.clock.After(every):
			}
			info, err := unix.GetsockoptTCPInfo(fd, unix.IPPROTO_TCP, unix.TCP_INFO)
			if err != nil {
				return
			}
			idle := time.Duration(min(info.Last_data_recv, info.Last_data_sent)) * time.Millisecond
			if idle >= p.cfg.IdleTimeout {
				p.log.Debug("proxy: closing idle connection", "member", pc.member, "idle", idle)
				p.metrics.idleClosed.Inc()
				pc.close()
				return
			}
		}
	}()
	return func() { close(done); <-exited }
}
