package pg

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
)

// includeLines end postgresql.conf, in this order: the user's cluster-wide
// settings, then petrel's own (which win), its archiving settings, its
// read-only switch, then the standby settings.
var includeLines = []string{
	"include_if_exists = '" + userConf + "'",
	"include_if_exists = '" + petrelConf + "'",
	"include_if_exists = '" + archiveConf + "'",
	"include_if_exists = '" + readOnlyConf + "'",
	"include_if_exists = '" + recoveryConf + "'",
}

// OwnSettings lists the settings petrel's own files set (the includes
// above: the checked cluster settings, petrel.conf, archiving, the
// read-only switch, the standby's), lower case and sorted: what a restart
// may apply. A setting pending a restart that is not among them came from
// elsewhere (ALTER SYSTEM, an edited postgresql.conf).
func (s *Server) OwnSettings() ([]string, error) {
	names := map[string]bool{}
	for _, f := range []string{userConf, petrelConf, archiveConf, readOnlyConf, recoveryConf} {
		data, err := os.ReadFile(filepath.Join(s.opts.DataDir, f))
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("reading %s: %w", f, err)
		}
		for _, n := range confNames(data) {
			names[n] = true
		}
	}
	out := make([]string, 0, len(names))
	for n := range names {
		out = append(out, n)
	}
	slices.Sort(out)
	return out, nil
}

// confNames are the setting names of a postgresql.conf-style file's
// `name = value` lines (comments and blank lines skipped), lower case.
func confNames(data []byte) []string {
	var out []string
	for l := range strings.SplitSeq(string(data), "\n") {
		l = strings.TrimSpace(l)
		if l == "" || l[0] == '#' {
			continue
		}
		name, _, ok := strings.Cut(l, "=")
		if name = strings.ToLower(strings.TrimSpace(name)); ok && name != "" && !strings.ContainsAny(name, " \t") {
			out = append(out, name)
		}
	}
	return out
}

// quoteConf quotes a value for postgresql.conf.
func quoteConf(v string) string {
	return "'" + strings.ReplaceAll(strings.ReplaceAll(v, `\`, `\\`), "'", "''") + "'"
}

// quoteConnValue quotes a libpq conninfo value when needed.
func quoteConnValue(v string) string {
	if v != "" && !strings.ContainsAny(v, " \t\n'\\") {
		return v
	}
	return "'" + strings.ReplaceAll(strings.ReplaceAll(v, `\`, `\\`), "'", `\'`) + "'"
}

// quoteLiteral quotes a SQL string literal (standard_conforming_strings).
func quoteLiteral(v string) string {
	return "'" + strings.ReplaceAll(v, "'", "''") + "'"
}

// writeHBA (re)writes pg_hba.conf from Options.Access, the members'
// addresses (SetPeers) and whether TLS is on; it reports whether the file
// changed.
func (s *Server) writeHBA() (bool, error) {
	s.hbaMu.Lock()
	peers := slices.Clone(s.peers)
	s.hbaMu.Unlock()
	data := []byte(renderHBA(s.opts.Access, peers, s.TLSEnabled()))
	path := filepath.Join(s.opts.DataDir, "pg_hba.conf")
	if old, err := os.ReadFile(path); err == nil && bytes.Equal(old, data) {
		return false, nil
	}
	return true, s.writeFile(path, data, 0o600)
}

// SetPeers gives pg_hba.conf the members' hosts (IP addresses or names),
// the only sources besides Access.ReplicationNetworks allowed to
// replicate, and besides Access.AdminNetworks to log in as the superuser
// (pg_rewind does). A running server is reloaded when the file changed.
func (s *Server) SetPeers(ctx context.Context, hosts []string) error {
	hosts = slices.Clone(hosts)
	slices.Sort(hosts)
	hosts = slices.Compact(hosts)
	s.hbaMu.Lock()
	same := slices.Equal(hosts, s.peers)
	s.peers = hosts
	s.hbaMu.Unlock()
	if same || !s.Initialized() {
		return nil
	}
	changed, err := s.writeHBA()
	if err != nil || !changed || !s.Running() {
		return err
	}
	return s.Reload(ctx)
}

const includeMarker = "# Added by petrel; keep at the end."

// ensureIncludes makes postgresql.conf end with includeLines, in order:
// lines already there out of order (e.g. from before petrel-user.conf
// existed) are moved to the end.
func (s *Server) ensureIncludes() error {
	if err := s.ensureReadOnlyFile(); err != nil {
		return err
	}
	path := filepath.Join(s.opts.DataDir, "postgresql.conf")
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("pg: reading postgresql.conf: %w", err)
	}
	want := strings.Join(includeLines, "\n") + "\n"
	if strings.HasSuffix(string(data), "\n"+want) {
		return nil
	}
	ours := map[string]bool{includeMarker: true}
	for _, l := range includeLines {
		ours[l] = true
	}
	var kept []string
	for l := range strings.SplitSeq(string(data), "\n") {
		if !ours[strings.TrimSpace(l)] {
			kept = append(kept, l)
		}
	}
	out := strings.TrimRight(strings.Join(kept, "\n"), "\n")
	out += "\n\n" + includeMarker + "\n" + want
	return s.writeFile(path, []byte(out), 0o600)
}

// writePetrelConf writes petrel.conf from Options.
func (s *Server) writePetrelConf() error {
	settings := [][2]string{
		{"listen_addresses", quoteConf(s.opts.Host)},
		{"port", strconv.Itoa(s.opts.Port)},
		{"unix_socket_directories", quoteConf(s.opts.RunDir)},
		{"unix_socket_permissions", "0700"},
		{"wal_level", "replica"},
		{"hot_standby", "on"},
		{"max_wal_senders", "16"},
		{"max_replication_slots", "16"},
		{"wal_log_hints", "on"},
		{"wal_keep_size", "'256MB'"},
		// A slot whose member stopped consuming (gone, or far behind) may
		// not pin more than this: past it Postgres invalidates the slot and
		// the member re-clones, instead of the leader's disk filling up.
		{"max_slot_wal_keep_size", "'2GB'"},
		{"hot_standby_feedback", "on"},
		{"password_encryption", "'scram-sha-256'"},
		{"wal_sender_timeout", "'5s'"},
		{"wal_receiver_timeout", "'5s'"},
		{"wal_receiver_status_interval", "'1s'"},
		{"wal_retrieve_retry_interval", "'500ms'"},
		{"logging_collector", "off"},
		{"log_line_prefix", "'%m [%p] %q%u@%d '"},
		{"fsync", "on"},
	}
	// pg_hba.conf follows the TLS files and the access settings, which may
	// have changed since the last start.
	if _, err := s.writeHBA(); err != nil {
		return err
	}
	// max_connections and shared_buffers defaults live in petrel-user.conf
	// (see defaultUserSettings) so `petrel config set` can change them.
	if err := s.ensureUserConf(); err != nil {
		return err
	}
	if s.opts.ArchiveDir != "" {
		// 'always': a standby spools what it receives too, and keeps it
		// until the archive holds it (see internal/backup).
		settings = append(settings, [2]string{"archive_mode", "'always'"})
		if _, err := s.writeArchiveConf(context.Background(), false); err != nil {
			return err
		}
	}
	if s.TLSEnabled() {
		cert, key, ca := s.TLSPaths()
		settings = append(settings,
			[2]string{"ssl", "on"},
			[2]string{"ssl_cert_file", quoteConf(cert)},
			[2]string{"ssl_key_file", quoteConf(key)},
			[2]string{"ssl_ca_file", quoteConf(ca)},
			[2]string{"ssl_min_protocol_version", "'TLSv1.2'"},
		)
	}
	var b bytes.Buffer
	b.WriteString("# Written by petrel on every start; do not edit.\n")
	for _, kv := range settings {
		fmt.Fprintf(&b, "%s = %s\n", kv[0], kv[1])
	}
	return s.writeFile(filepath.Join(s.opts.DataDir, petrelConf), b.Bytes(), 0o600)
}

// writePassfile writes a 0600 libpq passfile in RunDir for ci and returns
// its path.
func (s *Server) writePassfile(name string, ci ConnInfo) (string, error) {
	esc := func(v string) string {
		return strings.ReplaceAll(strings.ReplaceAll(v, `\`, `\\`), ":", `\:`)
	}
	line := fmt.Sprintf("%s:%d:*:%s:%s\n", esc(ci.Host), ci.Port, esc(ci.User), esc(ci.Password))
	path := filepath.Join(s.opts.RunDir, name)
	if err := s.writeFile(path, []byte(line), 0o600); err != nil {
		return "", err
	}
	return path, nil
}

// resetAutoConf removes synchronous_standby_names from
// postgresql.auto.conf (a clone carries its source's setting; ALTER
// SYSTEM needs a running server).
func (s *Server) resetAutoConf() error {
	path := filepath.Join(s.opts.DataDir, "postgresql.auto.conf")
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("pg: reading postgresql.auto.conf: %w", err)
	}
	var out bytes.Buffer
	changed := false
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		l := sc.Text()
		k, _, _ := strings.Cut(strings.TrimSpace(l), "=")
		if strings.EqualFold(strings.TrimSpace(k), "synchronous_standby_names") {
			changed = true
			continue
		}
		out.WriteString(l)
		out.WriteByte('\n')
	}
	if !changed {
		return nil
	}
	return s.writeFile(path, out.Bytes(), 0o600)
}

// ConfigureStandby makes the data directory a standby's: it writes
// standby.signal and petrel-recovery.conf with primary_conninfo (password
// in RunDir/replpass), primary_slot_name (omitted when slot is empty) and
// recovery_target_timeline='latest'. primary == nil sets
// an empty primary_conninfo so the walreceiver stops. primary.User defaults
// to "replicator". Callers then Reload (PostgreSQL 15 applies
// primary_conninfo and primary_slot_name on reload) or Start; turning a
// running primary into a standby needs a restart.
func (s *Server) ConfigureStandby(primary *ConnInfo, slot, appName string) error {
	conninfo := ""
	if primary != nil {
		ci := *primary
		if ci.User == "" {
			ci.User = "replicator"
		}
		pass, err := s.writePassfile(replPassFile, ci)
		if err != nil {
			return fmt.Errorf("configuring standby: %w", err)
		}
		parts := []string{
			"host=" + quoteConnValue(ci.Host),
			"port=" + strconv.Itoa(ci.Port),
			"user=" + quoteConnValue(ci.User),
			"passfile=" + quoteConnValue(pass),
		}
		if appName != "" {
			parts = append(parts, "application_name="+quoteConnValue(appName))
		}
		// verify-full against the cluster CA once TLS is installed.
		parts = append(parts, s.clientSSLConn()...)
		parts = append(parts, "connect_timeout=2",
			"keepalives_idle=2", "keepalives_interval=1", "keepalives_count=2")
		conninfo = strings.Join(parts, " ")
	}
	var b bytes.Buffer
	b.WriteString("# Written by petrel: standby settings.\n")
	fmt.Fprintf(&b, "primary_conninfo = %s\n", quoteConf(conninfo))
	if slot != "" {
		fmt.Fprintf(&b, "primary_slot_name = %s\n", quoteConf(slot))
	}
	b.WriteString("recovery_target_timeline = 'latest'\n")
	if err := s.ensureIncludes(); err != nil {
		return fmt.Errorf("configuring standby: %w", err)
	}
	if err := s.writeFile(filepath.Join(s.opts.DataDir, recoveryConf), b.Bytes(), 0o600); err != nil {
		return fmt.Errorf("configuring standby: %w", err)
	}
	if err := s.writeFile(filepath.Join(s.opts.DataDir, standbySignal), nil, 0o600); err != nil {
		return fmt.Errorf("configuring standby: %w", err)
	}
	// What the walreceiver logs from here on is about this upstream.
	s.markStandbyLog()
	s.log.Info("configured standby", "slot", slot, "app_name", appName, "has_primary", primary != nil)
	return nil
}

// ConfigurePrimary removes standby.signal and the standby settings. It
// does not promote a running standby (see Promote).
//
// petrel-recovery.conf is rewritten, not removed: it keeps
// recovery_target_timeline, because PostgreSQL marks a postmaster-context
// setting that disappears from the files as pending_restart even when its
// value (the default, 'latest') does not change, and a promoted leader
// would then report a restart nobody asked for.
func (s *Server) ConfigurePrimary() error {
	for _, f := range []string{standbySignal, recoverySignal} {
		if err := removeIfExists(filepath.Join(s.opts.DataDir, f)); err != nil {
			return fmt.Errorf("configuring primary: %w", err)
		}
	}
	path := filepath.Join(s.opts.DataDir, recoveryConf)
	if _, err := os.Stat(path); errors.Is(err, os.ErrNotExist) {
		return nil
	}
	body := "# Written by petrel: primary (no standby settings).\nrecovery_target_timeline = 'latest'\n"
	if err := s.writeFile(path, []byte(body), 0o600); err != nil {
		return fmt.Errorf("configuring primary: %w", err)
	}
	return nil
}
