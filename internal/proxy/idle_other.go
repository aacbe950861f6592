//go:build !linux

package proxy

// watchIdle is Linux-only (it reads TCP_INFO); elsewhere IdleTimeout is
// ignored and TCP keepalives alone find dead peers.
func (p *Proxy) watchIdle(pc *pconn) (stop func()) { return func() {} }
