package proxy

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"
)

// authenticate forwards the client's first startup packet (raw) and follows
// the conversation until the client is authenticated, all of it before
// AuthTimeout from now:
//
//   - after an SSLRequest, the server's one-byte answer: 'S' starts TLS,
//     which the proxy cannot read, so it returns there with tlsStarted
//     (the caller holds the session's slots until its member says it is
//     authenticated: tlshold.go); 'N' is passed on and the client's
//     plaintext StartupMessage read and forwarded;
//   - then the server's messages, read by type and length only, until its
//     ReadyForQuery (authenticated) or ErrorResponse (refused). The
//     client's side (passwords, SASL, GSS) is copied to the server as it
//     comes, in the background, so the proxy needs to understand no
//     authentication method.
//
// On success every byte either side sent has been forwarded, nothing is
// in flight (the client speaks only after the ReadyForQuery, the server
// only after the client), the pair is in the kernel pipe when there is
// one, and the deadlines are cleared: the caller pipes the connection.
// On error the caller closes it.
func (p *Proxy) authenticate(pc *pconn, first pgproto3.FrontendMessage, raw []byte) (tlsStarted bool, err error) {
	c, s := pc.client, pc.server
	deadline := p.clock.Now().Add(p.cfg.AuthTimeout)
	defer func() {
		// Whichever side noticed first, a failure at the deadline is the
		// client's silence (or the server's: either way, too slow).
		if err != nil && !errors.Is(err, errAuthRefused) && !p.clock.Now().Before(deadline) {
			err = fmt.Errorf("%w: %w", errAuthTimeout, err)
		}
	}()
	_ = c.SetDeadline(deadline)
	_ = s.SetDeadline(deadline)
	if _, err := s.Write(raw); err != nil {
		return false, fmt.Errorf("forwarding the startup packet: %w", err)
	}
	br := bufio.NewReader(s)
	if _, ok := first.(*pgproto3.SSLRequest); ok {
		b, err := br.ReadByte()
		if err != nil {
			return false, fmt.Errorf("reading the answer to SSLRequest: %w", err)
		}
		switch b {
		case 'S':
			if br.Buffered() > 0 {
				return false, errors.New("server sent data after accepting TLS")
			}
			return true, p.startPipe(pc, []byte{'S'})
		case 'N':
			if _, err := c.Write([]byte{'N'}); err != nil {
				return false, fmt.Errorf("declining TLS to the client: %w", err)
			}
			msg, next, err := readStartup(c)
			if err != nil {
				return false, fmt.Errorf("reading the startup packet after SSLRequest: %w", err)
			}
			if _, ok := msg.(*pgproto3.StartupMessage); !ok {
				return false, fmt.Errorf("unexpected %T after SSLRequest", msg)
			}
			if _, err := s.Write(next); err != nil {
				return false, fmt.Errorf("forwarding the startup packet: %w", err)
			}
		default:
			// An old server's ErrorResponse: read it as a message below.
			_ = br.UnreadByte()
		}
	}

	// The client's side, until stop.
	var stopping atomic.Bool
	up := make(chan error, 1)
	go func() {
		bp := bufPool.Get().(*[]byte)
		_, err := io.CopyBuffer(writerOnly{s}, readerOnly{c}, *bp)
		bufPool.Put(bp)
		if !stopping.Load() {
			pc.close() // the client left (or timed out): end the server's side too
		}
		up <- err
	}()
	stop := func() error {
		stopping.Store(true)
		_ = c.SetReadDeadline(time.Unix(1, 0))
		err := <-up
		if errors.Is(err, os.ErrDeadlineExceeded) {
			return nil // stopped by us, every byte it read forwarded
		}
		if err == nil {
			err = io.EOF
		}
		return fmt.Errorf("client side during authentication: %w", err)
	}

	bw := bufio.NewWriter(c)
	var hdr [5]byte
	for {
		if br.Buffered() == 0 {
			// About to wait for the server: the client gets what it said.
			if err := bw.Flush(); err != nil {
				_ = stop()
				return false, fmt.Errorf("writing to the client: %w", err)
			}
		}
		if _, err := io.ReadFull(br, hdr[:]); err != nil {
			_ = stop()
			return false, fmt.Errorf("reading the server's authentication: %w", err)
		}
		n := binary.BigEndian.Uint32(hdr[1:])
		if n < 4 {
			_ = stop()
			return false, fmt.Errorf("server message %q with length %d", hdr[0], n)
		}
		if hdr[0] == 'Z' && n == 5 {
			// ReadyForQuery: authenticated. It goes to the client only once
			// the client's side is stopped and the pipe is set up.
			var status [1]byte
			if _, err := io.ReadFull(br, status[:]); err != nil {
				_ = stop()
				return false, fmt.Errorf("reading ReadyForQuery: %w", err)
			}
			if err := stop(); err != nil {
				return false, err
			}
			if err := bw.Flush(); err != nil {
				return false, fmt.Errorf("writing to the client: %w", err)
			}
			// Anything the server sent after it (an asynchronous notice)
			// follows it to the client.
			rest := make([]byte, 0, 6+br.Buffered())
			rest = append(append(rest, hdr[:]...), status[0])
			more, _ := br.Peek(br.Buffered())
			return false, p.startPipe(pc, append(rest, more...))
		}
		_, _ = bw.Write(hdr[:])
		if _, err := io.CopyN(bw, br, int64(n-4)); err != nil {
			_ = stop()
			return false, fmt.Errorf("forwarding the server's authentication: %w", err)
		}
		if hdr[0] == 'E' {
			// Refused (wrong password, no such database, too many
			// clients): pass the error on; the server closes.
			_ = bw.Flush()
			_ = stop()
			return false, errAuthRefused
		}
	}
}

var (
	errAuthRefused = errors.New("the server refused the client")
	errAuthTimeout = errors.New("not authenticated within the auth timeout")
)

// startPipe clears the deadlines, links the pair in the kernel pipe (when
// there is one) and only then sends the client last, the server's last
// answer of the startup phase: until it arrives the client says nothing,
// and the server waits for the client, so no byte can be in flight when
// the pair is linked (kernelPipe rule 1).
func (p *Proxy) startPipe(pc *pconn, last []byte) error {
	_ = pc.client.SetDeadline(time.Time{})
	_ = pc.server.SetDeadline(time.Time{})
	if p.kpipe != nil {
		if err := p.kpipe.add(pc.client, pc.server); err != nil {
			p.metrics.pipeFallbacks.Inc()
			p.log.Debug("proxy: kernel pipe refused a connection; copying it", "err", err)
		}
	}
	_ = pc.client.SetWriteDeadline(p.clock.Now().Add(p.cfg.AuthTimeout))
	if _, err := pc.client.Write(last); err != nil {
		return fmt.Errorf("writing to the client: %w", err)
	}
	_ = pc.client.SetWriteDeadline(time.Time{})
	return nil
}
