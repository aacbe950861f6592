package proxy

import (
	"io"
	"net"
	"syscall"
)

// copyConn copies src to dst until src ends or either side fails, with
// one read(2) per burst of data instead of two. io.Copy reads again after
// every read and so, on request/response traffic, gets EAGAIN once per
// message before it waits; here, after a read shorter than buf (the
// socket was drained, most likely), it waits for the next readiness edge
// without that read.
//
// Why that is safe: the whole loop runs inside one RawConn.Read, whose
// poller state is reset only once, before the first call of the
// function. Go's poller is edge-triggered and remembers an edge that
// comes while nobody waits, so data that arrives after a read (during
// the write to dst included) makes the next wait return at once; a
// spurious wake costs one EAGAIN read, as io.Copy's would.
func copyConn(dst net.Conn, src net.Conn, buf []byte) {
	tc, ok := src.(*net.TCPConn)
	if !ok {
		_, _ = io.CopyBuffer(writerOnly{dst}, readerOnly{src}, buf)
		return
	}
	rc, err := tc.SyscallConn()
	if err != nil {
		_, _ = io.CopyBuffer(writerOnly{dst}, readerOnly{src}, buf)
		return
	}
	_ = rc.Read(func(fd uintptr) bool {
		for {
			n, err := syscall.Read(int(fd), buf)
			switch {
			case err == syscall.EINTR:
				continue
			case err == syscall.EAGAIN:
				return false // wait for data
			case err != nil || n <= 0:
				return true // EOF or an error: done
			}
			if _, err := dst.Write(buf[:n]); err != nil {
				return true
			}
			if n < len(buf) {
				return false // drained: wait for the next edge
			}
		}
	})
}
