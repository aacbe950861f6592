package pg

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/petrel-db/petrel/internal/pgsettings"
)

// userConf holds the cluster-wide settings set with `petrel config set`.
// postgresql.conf includes it before petrel.conf, so the settings petrel
// manages itself always win (the CLI refuses them anyway).
const userConf = "petrel-user.conf"

// defaultUserSettings are petrel's defaults for settings users may change;
// they live in petrel-user.conf (not petrel.conf) so a user value replaces
// them.
//
// authentication_timeout: a TLS session is opaque to the leader proxy
// once the server accepts TLS, so Postgres' own timer is what frees the
// backend of a client that goes silent before authenticating (its
// default, 60 s, lets a few hundred such clients hold every slot).
var defaultUserSettings = map[string]string{
	"authentication_timeout": "10s",
	"max_connections":        "100",
	"shared_buffers":         "64MB",
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

// catalogFile keeps the last pg_settings rows this server reported, so an
// agent can validate the stored settings before its Postgres runs. It lives
// in PGDATA so a clone (pg_basebackup, pg_rewind) brings its source's copy.
const catalogFile = "petrel-settings.json"

// UserConf is what WriteUserConf did.
type UserConf struct {
	Changed bool    // petrel-user.conf's content changed
	Refused []error // stored settings left out of the file, each saying why
	// Live: checked against the running server's own pg_settings. When
	// false they were checked against the saved copy, or (none yet)
	// every setting was left out: call again once the server runs.
	Live bool
}

// WriteUserConf writes petrel-user.conf for the stored settings that pass
// pgsettings.CheckStored against this server's pg_settings and pkglibdir,
// and reports whether its content changed and what it refused. The store
// is not trusted: whoever can write /config must not be able to make a
// node run a command or load code, so every setting is checked here, not
// only by the CLI. Callers Reload (or restart) afterwards.
func (s *Server) WriteUserConf(ctx context.Context, settings map[string]string) (UserConf, error) {
	var res UserConf
	catalog, live, catErr := s.settingsCatalog(ctx)
	res.Live = live
	libs, libErr := s.installedLibraries(ctx)
	keep := map[string]string{}
	names := make([]string, 0, len(settings))
	for k := range settings {
		names = append(names, k)
	}
	slices.Sort(names)
	for _, k := range names {
		v := settings[k]
		var err error
		switch {
		case catalog == nil:
			err = fmt.Errorf("%s not applied yet: it can be checked only against pg_settings (%w)", k, catErr)
		case k == pgsettings.PreloadLibraries && libErr != nil:
			err = fmt.Errorf("%s not applied: %w", k, libErr)
		default:
			err = pgsettings.CheckStored(k, v, catalog, libs)
		}
		if err != nil {
			res.Refused = append(res.Refused, err)
			continue
		}
		keep[k] = v
	}
	path := filepath.Join(s.opts.DataDir, userConf)
	data := renderUserConf(keep)
	old, err := os.ReadFile(path)
	if err == nil && bytes.Equal(old, data) {
		return res, nil
	}
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return res, fmt.Errorf("reading %s: %w", userConf, err)
	}
	if err := s.writeFile(path, data, 0o600); err != nil {
		return res, err
	}
	res.Changed = true
	return res, nil
}

// settingsCatalog is the server's pg_settings: read live when it runs
// (and saved to catalogFile), else the saved copy; nil when neither.
func (s *Server) settingsCatalog(ctx context.Context) (map[string]pgsettings.Setting, bool, error) {
	path := filepath.Join(s.opts.DataDir, catalogFile)
	var liveErr error
	if s.Running() {
		cat, err := s.liveCatalog(ctx)
		if err == nil {
			if b, err := json.Marshal(cat); err == nil {
				if err := s.writeFile(path, b, 0o600); err != nil {
					s.log.Warn("saving pg_settings for later validation", "err", err)
				}
			}
			return cat, true, nil
		}
		liveErr = err
	}
	b, err := os.ReadFile(path)
	if err != nil {
		if liveErr != nil {
			return nil, false, liveErr
		}
		return nil, false, errors.New("postgres has not run here yet")
	}
	cat := map[string]pgsettings.Setting{}
	if err := json.Unmarshal(b, &cat); err != nil || len(cat) == 0 {
		return nil, false, fmt.Errorf("reading the saved pg_settings %s: %v", catalogFile, err)
	}
	return cat, false, nil
}

func (s *Server) liveCatalog(ctx context.Context) (map[string]pgsettings.Setting, error) {
	rows, release, err := s.Query(ctx, pgsettings.QueryAll)
	if err != nil {
		return nil, fmt.Errorf("reading pg_settings: %w", err)
	}
	defer release()
	return pgsettings.ScanRows(rows)
}

// installedLibraries lists the libraries in this server's pkglibdir.
func (s *Server) installedLibraries(ctx context.Context) (map[string]bool, error) {
	dir, err := s.pkgLibDir(ctx)
	if err != nil {
		return nil, err
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("listing pkglibdir: %w", err)
	}
	files := make([]string, 0, len(ents))
	for _, e := range ents {
		files = append(files, e.Name())
	}
	return pgsettings.Libraries(files), nil
}

// pkgLibDir finds pkglibdir once: from pg_config next to the server's
// binaries, else by asking the running server.
func (s *Server) pkgLibDir(ctx context.Context) (string, error) {
	s.libMu.Lock()
	dir := s.pkglibdir
	s.libMu.Unlock()
	if dir != "" {
		return dir, nil
	}
	out, err := exec.CommandContext(ctx, filepath.Join(s.opts.BinDir, "pg_config"), "--pkglibdir").Output()
	switch {
	case err == nil:
		dir = strings.TrimSpace(string(out))
	case s.Running():
		rows, release, qerr := s.Query(ctx, "SELECT setting FROM pg_config WHERE name = 'PKGLIBDIR'")
		if qerr != nil {
			return "", fmt.Errorf("finding pkglibdir: %w", qerr)
		}
		dirs, qerr := pgx.CollectRows(rows, pgx.RowTo[string])
		release()
		if qerr != nil {
			return "", fmt.Errorf("finding pkglibdir: %w", qerr)
		}
		if len(dirs) != 1 {
			return "", errors.New("finding pkglibdir: not in pg_config")
		}
		dir = dirs[0]
	default:
		return "", fmt.Errorf("finding pkglibdir: pg_config: %w", err)
	}
	s.libMu.Lock()
	s.pkglibdir = dir
	s.libMu.Unlock()
	return dir, nil
}

// ensureUserConf writes petrel-user.conf with the defaults when missing.
func (s *Server) ensureUserConf() error {
	path := filepath.Join(s.opts.DataDir, userConf)
	if _, err := os.Stat(path); err == nil {
		return nil
	}
	return s.writeFile(path, renderUserConf(nil), 0o600)
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
