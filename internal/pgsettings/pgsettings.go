// Package pgsettings validates cluster-wide PostgreSQL settings before
// petrel stores them (the CLI) and again before an agent writes them
// (the store is not trusted): against the server's own pg_settings row
// (type, enum values, range with units), against the list of settings
// petrel manages itself, and against the settings that run a command or
// load code, which nobody can set through petrel.
package pgsettings

import (
	"context"
	"fmt"
	"math"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5"
)

// codeSettings run a command or load code as the postgres OS user. Anyone
// who could set one (an operator, anyone able to write etcd) would get a
// shell on every node, so they are refused everywhere: by `config set` and
// by every agent before it writes petrel-user.conf. Archiving is petrel's
// own job, so archive_mode is refused with archive_library. include* are
// not settings at all, but a line "include = ..." in petrel-user.conf
// would read any file as configuration. jit_provider names a library
// relative to pkglibdir, where "../" escapes.
var codeSettings = []string{
	"archive_command", "archive_cleanup_command", "restore_command", "recovery_end_command",
	"ssl_passphrase_command", "archive_library", "archive_mode", "dynamic_library_path",
	"include", "include_dir", "include_if_exists", "local_preload_libraries",
	"session_preload_libraries", "jit_provider",
}

// RunsCode reports whether name runs a command or loads code (any
// *_command, and the settings above). shared_preload_libraries is not
// among them: it is allowed, checked by CheckLibraries.
func RunsCode(name string) bool {
	name = strings.ToLower(name)
	return slices.Contains(codeSettings, name) || strings.Contains(name, "command")
}

// PreloadLibraries is the one setting that loads code and may still be
// set: only by the superuser (the CLI checks), and only naming libraries
// installed in the server's pkglibdir (the CLI and every agent check).
const PreloadLibraries = "shared_preload_libraries"

// Setting is one row of pg_settings.
type Setting struct {
	Name           string
	Setting        string
	Unit           string // "", "8kB", "kB", "MB", "B", "ms", "s", "min"
	VarType        string // bool, integer, real, enum, string
	Context        string // internal, postmaster, sighup, superuser-backend, backend, superuser, user
	EnumVals       []string
	MinVal, MaxVal string // "" when null
	PendingRestart bool
}

// NeedsRestart reports whether a change takes effect only after a restart.
func (s Setting) NeedsRestart() bool { return s.Context == "postmaster" }

// managed are the settings petrel writes itself (petrel.conf,
// petrel-recovery.conf, ALTER SYSTEM) or relies on for its guarantees.
var managed = []string{
	"listen_addresses", "port", "wal_level", "hot_standby", "hot_standby_feedback",
	"synchronous_standby_names", "synchronous_commit", "max_wal_senders", "max_replication_slots",
	"wal_log_hints", "wal_keep_size", "password_encryption", "fsync", "full_page_writes",
	"wal_sender_timeout", "wal_receiver_timeout", "wal_receiver_status_interval", "wal_retrieve_retry_interval",
	"logging_collector", "log_directory", "log_filename", "data_directory", "config_file", "hba_file", "ident_file",
	"external_pid_file", "promote_trigger_file", "default_transaction_read_only",
	"krb_server_keyfile",
}

var managedPrefixes = []string{"ssl", "unix_socket_", "primary_", "recovery_"}

// Managed reports whether petrel manages name itself.
func Managed(name string) bool {
	name = strings.ToLower(name)
	if slices.Contains(managed, name) {
		return true
	}
	for _, p := range managedPrefixes {
		if strings.HasPrefix(name, p) {
			return true
		}
	}
	return false
}

var nameRE = regexp.MustCompile(`^[a-z_][a-z0-9_]*$`)

// Load reads the pg_settings rows of names (lower-cased) from conn;
// unknown names are absent from the result.
func Load(ctx context.Context, conn *pgx.Conn, names []string) (map[string]Setting, error) {
	rows, err := conn.Query(ctx, QueryAll+` WHERE name = ANY($1) ORDER BY name`, names)
	if err != nil {
		return nil, fmt.Errorf("reading pg_settings: %w", err)
	}
	return ScanRows(rows)
}

// QueryAll selects the pg_settings columns ScanRows reads.
const QueryAll = `
SELECT name, coalesce(setting, ''), coalesce(unit, ''), vartype, context,
       coalesce(enumvals, '{}'::text[]), coalesce(min_val, ''), coalesce(max_val, ''), pending_restart
FROM pg_settings`

// ScanRows reads (and closes) the rows of QueryAll.
func ScanRows(rows pgx.Rows) (map[string]Setting, error) {
	defer rows.Close()
	out := map[string]Setting{}
	for rows.Next() {
		var s Setting
		if err := rows.Scan(&s.Name, &s.Setting, &s.Unit, &s.VarType, &s.Context, &s.EnumVals, &s.MinVal, &s.MaxVal, &s.PendingRestart); err != nil {
			return nil, fmt.Errorf("reading pg_settings: %w", err)
		}
		out[s.Name] = s
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("reading pg_settings: %w", err)
	}
	return out, nil
}

// CheckName refuses names petrel will not store.
func CheckName(name string) error {
	if !nameRE.MatchString(name) {
		return fmt.Errorf("%q is not a setting name (lowercase letters, digits and _; extension settings with a dot are not supported)", name)
	}
	if RunsCode(name) {
		if strings.HasPrefix(name, "archive_") {
			return fmt.Errorf("%s cannot be set through petrel: archiving is petrel's own job, and it would run a command or load code on every node", name)
		}
		return fmt.Errorf("%s runs a command, loads code or reads other files on every node and cannot be set through petrel", name)
	}
	if Managed(name) {
		return fmt.Errorf("%s is managed by petrel itself and cannot be set", name)
	}
	return nil
}

var libRE = regexp.MustCompile(`^[A-Za-z0-9_-]+$`)

// CheckLibraries checks a shared_preload_libraries value: a comma-separated
// list of bare library names (optionally "$libdir/name" or double-quoted),
// each of which installed reports as present in pkglibdir. Paths are
// refused: a library elsewhere could be anything the postgres user can
// write.
func CheckLibraries(value string, installed map[string]bool) error {
	for _, raw := range strings.Split(value, ",") {
		name := strings.TrimSpace(raw)
		name = strings.TrimSuffix(strings.TrimPrefix(name, `"`), `"`)
		name = strings.TrimPrefix(name, "$libdir/")
		if name == "" {
			continue
		}
		if !libRE.MatchString(name) {
			return fmt.Errorf("%s: %q is not a library name (a bare name from the server's pkglibdir, no path)", PreloadLibraries, strings.TrimSpace(raw))
		}
		if !installed[name] {
			return fmt.Errorf("%s: library %q is not installed in the server's pkglibdir", PreloadLibraries, name)
		}
	}
	return nil
}

// Libraries turns a pkglibdir listing into the set CheckLibraries takes:
// "pg_stat_statements.so" → pg_stat_statements.
func Libraries(files []string) map[string]bool {
	out := map[string]bool{}
	for _, f := range files {
		for _, suf := range []string{".so", ".dylib"} {
			if n, ok := strings.CutSuffix(f, suf); ok && n != "" {
				out[n] = true
			}
		}
	}
	return out
}

// LoadLibraries lists the libraries in the server's pkglibdir over conn,
// which must be a superuser's (pg_config and pg_ls_dir are theirs only).
func LoadLibraries(ctx context.Context, conn *pgx.Conn) (map[string]bool, error) {
	rows, err := conn.Query(ctx, `SELECT pg_ls_dir(setting) FROM pg_config WHERE name = 'PKGLIBDIR'`)
	if err != nil {
		return nil, fmt.Errorf("listing the server's pkglibdir: %w", err)
	}
	files, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("listing the server's pkglibdir: %w", err)
	}
	return Libraries(files), nil
}

// CheckStored is what an agent checks before it writes a stored setting
// to petrel-user.conf, since anyone able to write etcd could have put it
// there: the name (CheckName: not managed, runs no code), a value on one
// line, the server's own pg_settings row (catalog; unknown names are
// refused), and for shared_preload_libraries the installed libraries.
func CheckStored(name, value string, catalog map[string]Setting, installed map[string]bool) error {
	if err := CheckName(name); err != nil {
		return err
	}
	if strings.ContainsRune(value, 0) || strings.ContainsAny(value, "\n\r") {
		return fmt.Errorf("%s: the value must be one line", name)
	}
	row, ok := catalog[name]
	if !ok {
		return fmt.Errorf("unknown setting %q (not in this server's pg_settings)", name)
	}
	if err := Validate(row, value); err != nil {
		return err
	}
	if name == PreloadLibraries {
		return CheckLibraries(value, installed)
	}
	return nil
}

// Validate checks value for s the way PostgreSQL parses it and returns
// nil when it is acceptable.
func Validate(s Setting, value string) error {
	if err := CheckName(s.Name); err != nil {
		return err
	}
	v := strings.TrimSpace(value)
	switch s.Context {
	case "internal":
		return fmt.Errorf("%s is read-only (fixed when PostgreSQL was built or initialized)", s.Name)
	}
	switch s.VarType {
	case "bool":
		switch strings.ToLower(v) {
		case "on", "off", "true", "false", "yes", "no", "1", "0", "t", "f", "y", "n":
			return nil
		}
		return fmt.Errorf("%s is a boolean: use on or off, not %q", s.Name, value)
	case "enum":
		for _, e := range s.EnumVals {
			if strings.EqualFold(e, v) {
				return nil
			}
		}
		return fmt.Errorf("%s must be one of %s, not %q", s.Name, strings.Join(s.EnumVals, ", "), value)
	case "integer", "real":
		n, err := toBase(s, v)
		if err != nil {
			return err
		}
		if s.VarType == "integer" {
			n = math.Round(n)
		}
		lo, err1 := strconv.ParseFloat(s.MinVal, 64)
		hi, err2 := strconv.ParseFloat(s.MaxVal, 64)
		if err1 == nil && err2 == nil && (n < lo || n > hi) {
			unit := ""
			if s.Unit != "" {
				unit = " (in units of " + s.Unit + ")"
			}
			return fmt.Errorf("%s = %q is outside its valid range %s .. %s%s", s.Name, value, s.MinVal, s.MaxVal, unit)
		}
		return nil
	case "string":
		if strings.ContainsRune(value, 0) || strings.ContainsAny(value, "\n\r") {
			return fmt.Errorf("%s: the value must be one line", s.Name)
		}
		return nil
	}
	return fmt.Errorf("%s has an unknown type %q", s.Name, s.VarType)
}

var numRE = regexp.MustCompile(`^(-?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?)\s*([A-Za-z]*)$`)

var memUnits = map[string]float64{"B": 1, "kB": 1 << 10, "MB": 1 << 20, "GB": 1 << 30, "TB": 1 << 40}
var timeUnits = map[string]float64{"us": 0.001, "ms": 1, "s": 1000, "min": 60000, "h": 3600000, "d": 86400000}

// baseUnit splits pg_settings.unit ("8kB", "16MB", "ms") into a multiplier
// and a unit name.
func baseUnit(u string) (float64, string) {
	i := 0
	for i < len(u) && u[i] >= '0' && u[i] <= '9' {
		i++
	}
	mult := 1.0
	if i > 0 {
		m, _ := strconv.ParseFloat(u[:i], 64)
		mult = m
	}
	return mult, u[i:]
}

// toBase converts v (a number with an optional unit) to s's base unit.
func toBase(s Setting, v string) (float64, error) {
	m := numRE.FindStringSubmatch(v)
	if m == nil {
		return 0, fmt.Errorf("%s needs a number%s, not %q", s.Name, unitHint(s), v)
	}
	n, err := strconv.ParseFloat(m[1], 64)
	if err != nil {
		return 0, fmt.Errorf("%s: %q is not a number", s.Name, v)
	}
	if s.VarType == "integer" && m[2] == "" && strings.ContainsAny(m[1], ".eE") && n != math.Trunc(n) {
		return 0, fmt.Errorf("%s needs a whole number, not %q", s.Name, v)
	}
	if m[2] == "" {
		return n, nil
	}
	mult, bu := baseUnit(s.Unit)
	table := memUnits
	if _, ok := timeUnits[bu]; ok {
		table = timeUnits
	} else if _, ok := memUnits[bu]; !ok {
		return 0, fmt.Errorf("%s takes no unit, but %q has one", s.Name, v)
	}
	given, ok := table[m[2]]
	if !ok {
		return 0, fmt.Errorf("%s: unknown unit %q%s", s.Name, m[2], unitHint(s))
	}
	return n * given / (mult * table[bu]), nil
}

func unitHint(s Setting) string {
	_, bu := baseUnit(s.Unit)
	if _, ok := memUnits[bu]; ok {
		return " (units: B, kB, MB, GB, TB; bare numbers are in " + s.Unit + ")"
	}
	if _, ok := timeUnits[bu]; ok {
		return " (units: us, ms, s, min, h, d; bare numbers are in " + s.Unit + ")"
	}
	return ""
}
