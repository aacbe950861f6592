// Package dialmap rewrites the addresses a node dials. Production nodes
// have no map; the local world gives each node one so that its traffic to
// members in other regions crosses a user-space link (internal/netsim)
// with that route's delay and faults.
package dialmap

import (
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"sync"
	"time"
)

// Map sends traffic for a host:port key to the host:port value.
type Map map[string]string

// Load reads a JSON object {"from host:port": "to host:port"}; an empty
// path is the identity map.
func Load(path string) (Map, error) {
	if path == "" {
		return nil, nil
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading dial map: %w", err)
	}
	var m Map
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("parsing dial map %s: %w", path, err)
	}
	return m, nil
}

// Addr returns where to dial for addr.
func (m Map) Addr(addr string) string {
	if to, ok := m[addr]; ok {
		return to
	}
	return addr
}

// URL rewrites the host:port of an http(s) URL.
func (m Map) URL(u string) string {
	for _, scheme := range []string{"http://", "https://"} {
		if rest, ok := strings.CutPrefix(u, scheme); ok {
			hostport, path, _ := strings.Cut(rest, "/")
			out := scheme + m.Addr(hostport)
			if path != "" {
				out += "/" + path
			}
			return out
		}
	}
	return u
}

// Source is a map backed by a file that may change while the node runs
// (the local world adds links when it grows); Map re-reads it when its
// modification time changes. A nil Source is the identity map.
type Source struct {
	path string

	mu  sync.Mutex // guards the following fields
	m   Map
	mod time.Time
}

// NewSource loads path ("" gives a nil Source).
func NewSource(path string) (*Source, error) {
	if path == "" {
		return nil, nil
	}
	s := &Source{path: path}
	if _, err := s.load(); err != nil {
		return nil, err
	}
	return s, nil
}

func (s *Source) load() (Map, error) {
	st, err := os.Stat(s.path)
	if err != nil {
		return nil, fmt.Errorf("reading dial map: %w", err)
	}
	if st.ModTime().Equal(s.mod) && s.m != nil {
		return s.m, nil
	}
	m, err := Load(s.path)
	if err != nil {
		return nil, err
	}
	s.m, s.mod = m, st.ModTime()
	return m, nil
}

// Map returns the current map; on a read error it keeps the last one.
func (s *Source) Map() Map {
	if s == nil {
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if m, err := s.load(); err == nil {
		return m
	}
	return s.m
}
