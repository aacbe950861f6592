package store

import (
	"encoding/json"
	"fmt"

	"github.com/petrel-db/petrel/internal/model"
)

// keyBackup is the cluster's backup configuration (Keys.Backup).
const keyBackup = "backup"

// BackupConfig decodes the cached backup configuration; ok is false when
// the cluster has none.
func (s *Store) BackupConfig() (c model.BackupConfig, ok bool, err error) {
	v, _, ok := s.Raw(keyBackup)
	if !ok {
		return c, false, nil
	}
	if err := json.Unmarshal(v, &c); err != nil {
		return c, true, fmt.Errorf("decoding %s: %w", s.key(keyBackup), err)
	}
	return c, true, nil
}
