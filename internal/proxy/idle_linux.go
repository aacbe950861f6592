package proxy

import (
	"net"
	"time"

	"golang.org/x/sys/unix"
)

// watchIdle closes pc once no data moved either way for IdleTimeout, as
// seen in the client socket's TCP_INFO (so the pipe stays zero-copy). It
// returns a function that stops watching.
func (p *Proxy) watchIdle(pc *pconn) (stop func()) {
	tc, ok := pc.client.(*net.TCPConn)
	if p.cfg.IdleTimeout <= 0 || !ok {
		return func() {}
	}
	rc, err := tc.SyscallConn()
	if err != nil {
		return func() {}
	}
	every := max(p.cfg.IdleTimeout/4, 100*time.Millisecond)
	done := make(chan struct{})
	exited := make(chan struct{})
	go func() {
		defer close(exited)
		for {
			select {
			case <-done:
				return
			case <-p.clock.After(every):
			}
			var info *unix.TCPInfo
			var gerr error
			if err := rc.Control(func(fd uintptr) {
				info, gerr = unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO)
			}); err != nil || gerr != nil {
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
