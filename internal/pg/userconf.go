package pg

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/jackc/pgx/v5"
)

// userConf holds the cluster-wide settings set with `petrel config set`.
// postgresql.conf includes it before petrel.conf, so the settings petrel
// manages itself always win (the CLI refuses them anyway).
const userConf = "petrel-user.conf"

// defaultUserSettings are petrel's defaults for settings users may change;
// they live in petrel-user.conf (not petrel.conf) so a user value replaces
// them.
var defaultUserSettings = map[string]string{
	"max_connections": "100",
	"shared_buffers":  "64MB",
}

// renderUserConf is petrel-user.conf's content for settings over the
// defaults, sorted by name.
func renderUserConf(settings map[string]string) []byte {
	all := map[string]string{}
	for k, v := range defaultUserSettings {
		all[k] = v
	}
	for k, v := range settings {
		all[strings.ToLower(k)] = v
	}
	names := make([]string, 0, len(all))
	for k := range all {
		names = append(names, k)
	}
	slices.Sort(names)
	var b bytes.Buffer
	b.WriteString("# Written by petrel from the cluster's settings (petrel config set); do not edit.\n")
	for _, k := range names {
		fmt.Fprintf(&b, "%s = %s\n", k, quoteConf(all[k]))
	}
	return b.Bytes()
}

// WriteUserConf writes petrel-user.conf for settings (names must be valid
// setting names: the CLI validated them) and reports whether its content
// changed. Callers Reload (or restart) afterwards.
func (s *Server) WriteUserConf(settings map[string]string) (bool, error) {
	for k := range settings {
		if !validSettingName(k) {
			return false, fmt.Errorf("writing %s: invalid setting name %q", userConf, k)
		}
	}
	path := filepath.Join(s.opts.DataDir, userConf)
	data := renderUserConf(settings)
	old, err := os.ReadFile(path)
	if err == nil && bytes.Equal(old, data) {
		return false, nil
	}
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return false, fmt.Errorf("reading %s: %w", userConf, err)
	}
	if err := s.writeFile(path, data, 0o600); err != nil {
		return false, err
	}
	return true, nil
}

// ensureUserConf writes petrel-user.conf with the defaults when missing.
func (s *Server) ensureUserConf() error {
	path := filepath.Join(s.opts.DataDir, userConf)
	if _, err := os.Stat(path); err == nil {
		return nil
	}
	return s.writeFile(path, renderUserConf(nil), 0o600)
}

func validSettingName(k string) bool {
	if k == "" || len(k) > 63 {
		return false
	}
	for _, c := range k {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '.') {
			return false
		}
	}
	return true
}

// PendingRestart lists the settings whose new value waits for a restart
// (pg_settings.pending_restart).
func (s *Server) PendingRestart(ctx context.Context) ([]string, error) {
	rows, release, err := s.Query(ctx, "SELECT name::text FROM pg_settings WHERE pending_restart ORDER BY 1")
	if err != nil {
		return nil, fmt.Errorf("reading pending restarts: %w", err)
	}
	defer release()
	names, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("reading pending restarts: %w", err)
	}
	return names, nil
}
