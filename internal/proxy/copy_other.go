//go:build !linux

package proxy

import (
	"io"
	"net"
)

// copyConn copies src to dst until src ends or either side fails.
func copyConn(dst net.Conn, src net.Conn, buf []byte) {
	_, _ = io.CopyBuffer(writerOnly{dst}, readerOnly{src}, buf)
}
