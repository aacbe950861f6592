package version

import (
	"strings"
	"testing"
)

func TestInfo(t *testing.T) {
	Version, Commit = "1.2.3", "0123456789abcdef0123"
	defer func() { Version, Commit = "", "" }()
	in := Get()
	if in.Version != "1.2.3" || in.Commit != "0123456789abcdef0123" {
		t.Fatalf("link-time values not used: %+v", in)
	}
	if s := in.String(); !strings.Contains(s, "petrel 1.2.3") || !strings.Contains(s, "commit 0123456789abcdef0123") {
		t.Fatalf("String: %s", s)
	}
	if in.Short() != "1.2.3@0123456789ab" {
		t.Fatalf("Short: %s", in.Short())
	}
	Version, Commit = "", ""
	if got := Get(); got.Version == "" || got.Short() == "" {
		t.Fatalf("without link-time values: %+v", got)
	}
}
