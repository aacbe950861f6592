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
