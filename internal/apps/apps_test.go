package apps

import (
	"regexp"
	"strings"
	"testing"
)

func TestCheckName(t *testing.T) {
	for _, tc := range []struct {
		kind, name string
		ok         bool
	}{
		{"database", "shop", true},
		{"database", "_x9", true},
		{"database", "a", true},
		{"database", strings.Repeat("a", 63), true},
		{"database", strings.Repeat("a", 64), false},
		{"database", "", false},
		{"database", "Shop", false},
		{"database", "9lives", false},
		{"database", "shop-app", false},
		{"database", "bad name;drop", false},
		{"database", `x"; DROP DATABASE postgres; --`, false},
		{"database", "x'y", false},
		{"database", "shop\n", false},
		{"database", "caf\u00e9", false},
		{"database", "postgres", true}, // reserved names are for users only
		{"database", "pg_data", true},
		{"user", "app_user", true},
		{"user", "postgres", false},
		{"user", "replicator", false},
		{"user", "operator", false},
		{"user", "public", false},
		{"user", "pg_monitor", false},
		{"user", "pg", true},
		{"user", "pgx_app", true},
		{"user", "bad name", false},
	} {
		err := CheckName(tc.kind, tc.name)
		if (err == nil) != tc.ok {
			t.Errorf("CheckName(%q, %q) = %v, want ok=%v", tc.kind, tc.name, err, tc.ok)
		}
		if err != nil && !strings.Contains(err.Error(), tc.kind+" name") {
			t.Errorf("CheckName(%q, %q): error %q does not name the kind", tc.kind, tc.name, err)
		}
	}
}

func TestLiteral(t *testing.T) {
	for in, want := range map[string]string{
		"":                    `''`,
		"abc":                 `'abc'`,
		"it's":                `'it''s'`,
		"''":                  `''''''`,
		`back\slash`:          `'back\slash'`, // standard_conforming_strings: no escape
		"SCRAM-SHA-256$4096:": `'SCRAM-SHA-256$4096:'`,
		"x'; DROP ROLE y; --": `'x''; DROP ROLE y; --'`,
	} {
		if got := literal(in); got != want {
			t.Errorf("literal(%q) = %s, want %s", in, got, want)
		}
	}
}

func TestIdent(t *testing.T) {
	if got := ident("shop"); got != `"shop"` {
		t.Errorf("ident(shop) = %s", got)
	}
	if got := ident(`a"b`); got != `"a""b"` {
		t.Errorf(`ident(a"b) = %s`, got)
	}
}

func TestRandomPassword(t *testing.T) {
	urlSafe := regexp.MustCompile(`^[A-Za-z0-9_-]{32}$`)
	seen := map[string]bool{}
	for i := 0; i < 100; i++ {
		pw, err := RandomPassword()
		if err != nil {
			t.Fatal(err)
		}
		if !urlSafe.MatchString(pw) {
			t.Fatalf("password %q is not 32 URL-safe characters", pw)
		}
		if seen[pw] {
			t.Fatalf("password %q repeated", pw)
		}
		seen[pw] = true
	}
}
