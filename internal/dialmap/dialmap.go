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
