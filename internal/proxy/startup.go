package proxy

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"github.com/jackc/pgx/v5/pgproto3"
)

// Startup packet bounds. Postgres itself refuses startup packets over
// 10000 bytes (MAX_STARTUP_PACKET_LENGTH); the shortest valid one is the
// 8-byte SSLRequest/GSSENCRequest.
const (
	minStartupLen = 8
	maxStartupLen = 10000
)

var errStartupLength = errors.New("invalid startup packet length")

// readStartup reads exactly one startup-phase packet from r (no byte past
// it, so the connection can be handed to a plain pipe afterwards) and
// decodes it. raw is the packet as received, to forward verbatim.
func readStartup(r io.Reader) (msg pgproto3.FrontendMessage, raw []byte, err error) {
	var hdr [4]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return nil, nil, fmt.Errorf("reading startup packet length: %w", err)
	}
	n := binary.BigEndian.Uint32(hdr[:])
	if n < minStartupLen || n > maxStartupLen {
		return nil, nil, fmt.Errorf("%w: %d", errStartupLength, n)
	}
	raw = make([]byte, n)
	copy(raw, hdr[:])
	if _, err := io.ReadFull(r, raw[4:]); err != nil {
		return nil, nil, fmt.Errorf("reading startup packet: %w", err)
	}
	msg, err = decodeStartup(raw)
	if err != nil {
		return nil, nil, err
	}
	return msg, raw, nil
}

// decodeStartup decodes one complete startup-phase packet with pgproto3.
func decodeStartup(raw []byte) (pgproto3.FrontendMessage, error) {
	be := pgproto3.NewBackend(bytes.NewReader(raw), io.Discard)
	msg, err := be.ReceiveStartupMessage()
	if err != nil {
		return nil, fmt.Errorf("decoding startup packet: %w", err)
	}
	switch m := msg.(type) {
	case *pgproto3.StartupMessage:
		if m.ProtocolVersion>>16 != 3 {
			return nil, fmt.Errorf("unsupported protocol version %d.%d", m.ProtocolVersion>>16, m.ProtocolVersion&0xffff)
		}
		if m.Parameters["user"] == "" {
			return nil, errors.New("startup packet without a user")
		}
	case *pgproto3.SSLRequest, *pgproto3.GSSEncRequest, *pgproto3.CancelRequest:
	default:
		return nil, fmt.Errorf("unexpected startup message %T", msg)
	}
	return msg, nil
}

// errorResponse encodes a FATAL ErrorResponse.
func errorResponse(code, message string) []byte {
	er := &pgproto3.ErrorResponse{Severity: "FATAL", SeverityUnlocalized: "FATAL", Code: code, Message: message}
	b, err := er.Encode(nil)
	if err != nil {
		// Only fails for absurd sizes; our messages are short constants.
		return nil
	}
	return b
}
