package pgsettings

import (
	"strings"
	"testing"
)

func TestValidate(t *testing.T) {
	workMem := Setting{Name: "work_mem", VarType: "integer", Unit: "kB", Context: "user", MinVal: "64", MaxVal: "2147483647"}
	sb := Setting{Name: "shared_buffers", VarType: "integer", Unit: "8kB", Context: "postmaster", MinVal: "16", MaxVal: "1073741823"}
	maxConn := Setting{Name: "max_connections", VarType: "integer", Context: "postmaster", MinVal: "1", MaxVal: "262143"}
	jit := Setting{Name: "jit", VarType: "bool", Context: "user"}
	lvl := Setting{Name: "log_min_messages", VarType: "enum", Context: "superuser", EnumVals: []string{"debug5", "info", "warning", "error"}}
	delay := Setting{Name: "vacuum_cost_delay", VarType: "real", Unit: "ms", Context: "user", MinVal: "0", MaxVal: "100"}
	blk := Setting{Name: "block_size", VarType: "integer", Context: "internal", MinVal: "8192", MaxVal: "8192"}
	cases := []struct {
		s     Setting
		v     string
		errIn string // "" = valid
	}{
		{workMem, "8MB", ""},
		{workMem, "4096", ""},
		{workMem, "32kB", "outside"},
		{workMem, "8 MB", ""},
		{workMem, "8XB", "unknown unit"},
		{workMem, "lots", "needs a number"},
		{sb, "128MB", ""},
		{sb, "64kB", "outside"},
		{maxConn, "200", ""},
		{maxConn, "0", "outside"},
		{maxConn, "10MB", "takes no unit"},
		{maxConn, "1.5", "whole number"},
		{jit, "off", ""},
		{jit, "maybe", "boolean"},
		{lvl, "WARNING", ""},
		{lvl, "loud", "one of"},
		{delay, "2.5", ""},
		{delay, "1s", "outside"},
		{blk, "8192", "read-only"},
		{Setting{Name: "port", VarType: "integer", Context: "postmaster"}, "5432", "managed by petrel"},
		{Setting{Name: "ssl_ciphers", VarType: "string", Context: "sighup"}, "x", "managed by petrel"},
	}
	for _, c := range cases {
		err := Validate(c.s, c.v)
		switch {
		case c.errIn == "" && err != nil:
			t.Errorf("%s=%q: unexpected error %v", c.s.Name, c.v, err)
		case c.errIn != "" && (err == nil || !strings.Contains(err.Error(), c.errIn)):
			t.Errorf("%s=%q: error %v, want one containing %q", c.s.Name, c.v, err, c.errIn)
		}
	}
}

// TestCodeSettingsRefused: nothing that runs a command or loads code can
// be stored or applied, whatever its spelling.
func TestCodeSettingsRefused(t *testing.T) {
	for _, name := range []string{
		"archive_command", "archive_cleanup_command", "restore_command", "recovery_end_command",
		"ssl_passphrase_command", "archive_library", "archive_mode", "dynamic_library_path",
		"include", "include_dir", "include_if_exists", "local_preload_libraries",
		"session_preload_libraries", "jit_provider", "some_future_command", "ARCHIVE_COMMAND",
	} {
		if err := CheckName(name); err == nil {
			t.Errorf("CheckName(%q) accepted", name)
		}
		if err := CheckStored(name, "x", map[string]Setting{name: {Name: name, VarType: "string", Context: "sighup"}}, nil); err == nil {
			t.Errorf("CheckStored(%q) accepted", name)
		}
	}
	if err := CheckName("work_mem"); err != nil {
		t.Errorf("CheckName(work_mem): %v", err)
	}
}

func TestCheckLibraries(t *testing.T) {
	libs := Libraries([]string{"pg_stat_statements.so", "auto_explain.so", "bitcode", "plpgsql.so"})
	for v, ok := range map[string]bool{
		"":                                    true,
		"pg_stat_statements":                  true,
		"pg_stat_statements, auto_explain":    true,
		`"pg_stat_statements"`:                true,
		"$libdir/auto_explain":                true,
		"timescaledb":                         false, // not installed
		"../../../tmp/evil":                   false,
		"/tmp/evil.so":                        false,
		"pg_stat_statements,/tmp/evil":        false,
		"bitcode":                             false, // a directory, not a library
		"pg_stat_statements, $libdir/../evil": false,
	} {
		err := CheckLibraries(v, libs)
		if (err == nil) != ok {
			t.Errorf("CheckLibraries(%q) = %v, want ok=%v", v, err, ok)
		}
	}
}

func TestCheckStored(t *testing.T) {
	cat := map[string]Setting{
		"work_mem":                 {Name: "work_mem", VarType: "integer", Unit: "kB", Context: "user", MinVal: "64", MaxVal: "2147483647"},
		"search_path":              {Name: "search_path", VarType: "string", Context: "user"},
		"shared_preload_libraries": {Name: "shared_preload_libraries", VarType: "string", Context: "postmaster"},
	}
	libs := Libraries([]string{"pg_stat_statements.so"})
	cases := []struct {
		name, value string
		ok          bool
	}{
		{"work_mem", "8MB", true},
		{"work_mem", "1kB", false},                               // range
		{"Work_Mem", "8MB", false},                               // names are stored lower-case
		{"no_such", "1", false},                                  // not in pg_settings
		{"search_path", "a\narchive_command = 'sh -c x'", false}, // a second line
		{"shared_preload_libraries", "pg_stat_statements", true},
		{"shared_preload_libraries", "evil", false},
		{"port", "1", false}, // managed
	}
	for _, c := range cases {
		err := CheckStored(c.name, c.value, cat, libs)
		if (err == nil) != c.ok {
			t.Errorf("CheckStored(%q, %q) = %v, want ok=%v", c.name, c.value, err, c.ok)
		}
	}
}
