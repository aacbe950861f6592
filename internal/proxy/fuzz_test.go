package proxy

import (
	"bytes"
	"testing"

	"github.com/jackc/pgx/v5/pgproto3"
)

// FuzzStartup feeds arbitrary bytes to the startup-packet reader: it must
// return a message or an error, never panic, never read past the packet
// it reports, and never accept a packet outside Postgres' bounds.
func FuzzStartup(f *testing.F) {
	enc := func(m interface{ Encode([]byte) ([]byte, error) }) []byte {
		b, err := m.Encode(nil)
		if err != nil {
			f.Fatal(err)
		}
		return b
	}
	f.Add(enc(&pgproto3.StartupMessage{ProtocolVersion: pgproto3.ProtocolVersionNumber, Parameters: map[string]string{"user": "app", "database": "db"}}))
	f.Add(enc(&pgproto3.SSLRequest{}))
	f.Add(enc(&pgproto3.GSSEncRequest{}))
	f.Add(enc(&pgproto3.CancelRequest{ProcessID: 1234, SecretKey: []byte{1, 2, 3, 4}}))
	f.Add(append(enc(&pgproto3.SSLRequest{}), 'x', 'y'))
	f.Add([]byte{})
	f.Add([]byte{0, 0, 0})
	f.Add([]byte{0, 0, 0, 2})
	f.Add([]byte{0xff, 0xff, 0xff, 0xff})
	f.Add([]byte{0, 0, 0, 9, 0, 3, 0, 0, 0})
	f.Add([]byte{0, 0, 0, 16, 0, 3, 0, 0, 'u', 's', 'e', 'r', 0, 'a', 0, 0})
	f.Add([]byte{0, 0, 0, 12, 0, 3, 0, 0, 'u', 's', 'e', 'r'})
	f.Add([]byte("GET / HTTP/1.1\r\n\r\n"))
	f.Fuzz(func(t *testing.T, in []byte) {
		r := bytes.NewReader(in)
		msg, raw, err := readStartup(r)
		if err != nil {
			if msg != nil || raw != nil {
				t.Fatalf("error %v with a message", err)
			}
			return
		}
		if len(raw) < minStartupLen || len(raw) > maxStartupLen {
			t.Fatalf("accepted a %d-byte packet", len(raw))
		}
		if consumed := len(in) - r.Len(); consumed != len(raw) || !bytes.Equal(in[:consumed], raw) {
			t.Fatalf("read %d bytes for a %d-byte packet", consumed, len(raw))
		}
		switch m := msg.(type) {
		case *pgproto3.StartupMessage:
			if m.Parameters["user"] == "" {
				t.Fatal("accepted a startup message without a user")
			}
		case *pgproto3.SSLRequest, *pgproto3.GSSEncRequest, *pgproto3.CancelRequest:
		default:
			t.Fatalf("unexpected %T", msg)
		}
	})
}
