package localworld

import (
	"encoding/json"
	"fmt"
	"net/url"
	"os"
	"path/filepath"

	"github.com/petrel-db/petrel/internal/config"
)

// RotateSecret records a rotated password (`petrel secrets rotate`) in
// the world's directory so that `petrel up`, its nodes and the CLI keep
// working after a restart: key (SU_PASSWORD, REPL_PASSWORD,
// OPERATOR_PASSWORD) in secrets.env, and the URLs in cluster.json that
// carry the password (superuser_dsn, database_url). Both files are
// replaced atomically, 0600.
func RotateSecret(dir, key, value string) error {
	if err := config.SetSecret(filepath.Join(dir, SecretsFileName), key, value); err != nil {
		return err
	}
	field, user := "", ""
	switch key {
	case "SU_PASSWORD":
		field, user = "superuser_dsn", "postgres"
	case "OPERATOR_PASSWORD":
		field, user = "database_url", "operator"
	default:
		return nil
	}
	p := filepath.Join(dir, ClusterFileName)
	b, err := os.ReadFile(p)
	if err != nil {
		return fmt.Errorf("updating %s: %w", p, err)
	}
	// A generic map: fields this version does not know are kept.
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		return fmt.Errorf("updating %s: %w", p, err)
	}
	s, _ := m[field].(string)
	u, err := url.Parse(s)
	if s == "" || err != nil || u.User == nil || u.User.Username() != user {
		return nil
	}
	u.User = url.UserPassword(user, value)
	m[field] = u.String()
	return writeJSON(p, m, 0o600)
}
