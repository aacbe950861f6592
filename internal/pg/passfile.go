package pg

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// SetReplicationPassword rewrites the password in RunDir/replpass, the
// passfile primary_conninfo names, keeping its host, port and user. The
// WAL receiver reads the passfile at every connection attempt, so the next
// (re)connection uses it: nothing is reloaded and the running stream is
// not touched. It reports whether there was a passfile to rewrite.
func (s *Server) SetReplicationPassword(password string) (bool, error) {
	path := filepath.Join(s.opts.RunDir, replPassFile)
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("reading the replication passfile: %w", err)
	}
	f := splitPassfileLine(strings.TrimRight(string(b), "\n"))
	if len(f) != 5 {
		return false, errors.New("the replication passfile is malformed")
	}
	esc := func(v string) string {
		return strings.ReplaceAll(strings.ReplaceAll(v, `\`, `\\`), ":", `\:`)
	}
	line := fmt.Sprintf("%s:%s:%s:%s:%s\n", esc(f[0]), esc(f[1]), esc(f[2]), esc(f[3]), esc(password))
	if err := s.writeFile(path, []byte(line), 0o600); err != nil {
		return false, err
	}
	return true, nil
}

// splitPassfileLine splits a libpq passfile line at unescaped colons and
// unescapes the fields.
func splitPassfileLine(l string) []string {
	var out []string
	var cur strings.Builder
	for i := 0; i < len(l); i++ {
		switch c := l[i]; {
		case c == '\\' && i+1 < len(l):
			i++
			cur.WriteByte(l[i])
		case c == ':':
			out = append(out, cur.String())
			cur.Reset()
		default:
			cur.WriteByte(c)
		}
	}
	return append(out, cur.String())
}

// IsAuthFailure reports whether err is Postgres refusing a password
// (SQLSTATE 28P01, "password authentication failed", as libpq's tools
// print it or pgx returns it).
func IsAuthFailure(err error) bool {
	return err != nil && (strings.Contains(err.Error(), "password authentication failed") || strings.Contains(err.Error(), "SQLSTATE 28P01"))
}
