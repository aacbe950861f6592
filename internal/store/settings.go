package store

// Cluster-wide Postgres settings and rolling restart requests:
//
//	/petrel/<c>/config          JSON map of Postgres settings; written by `petrel config set` (CAS)
//	/petrel/<c>/restart/<id>    RestartRequest; written by `petrel config set`, deleted by member <id> once restarted

import (
	"encoding/json"
	"fmt"
	"time"
)

// Key names under /petrel/<c>/.
const (
	KeyConfig  = "config"
	KeyRestart = "restart"
)

// RestartRequest asks a replica to restart its Postgres (to apply settings
// that need a restart).
type RestartRequest struct {
	RequestedAt time.Time `json:"requested_at"`
	ConfigRev   int64     `json:"config_rev"` // the /config revision being applied
	// InPlace lets the leader restart where it is (writes pause for the
	// restart): the CLI asks for it only when a setting that standbys must
	// match or exceed is lowered, which no switchover order can roll.
	InPlace bool `json:"in_place,omitempty"`
	// Force restarts a replica with nothing pending (a rolling restart).
	Force bool `json:"force,omitempty"`
}

// ClusterSettings decodes the cached /config map (nil when absent) and its
// revision.
func (s *Store) ClusterSettings() (map[string]string, int64, error) {
	v, rev, ok := s.Raw(KeyConfig)
	if !ok {
		return nil, 0, nil
	}
	m := map[string]string{}
	if err := json.Unmarshal(v, &m); err != nil {
		return nil, rev, fmt.Errorf("decoding %s: %w", s.key(KeyConfig), err)
	}
	return m, rev, nil
}
