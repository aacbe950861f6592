package regiondsn

import (
	"strings"
	"testing"
)

func TestResolve(t *testing.T) {
	const leader = "postgres://app:s%40cret@db.internal:5432/app?sslmode=require"
	for _, tc := range []struct {
		name    string
		env     map[string]string
		want    string
		source  Source
		wantErr string
	}{
		{name: "no DATABASE_URL", env: map[string]string{}, wantErr: "DATABASE_URL is not set"},
		{name: "not a URL", env: map[string]string{"DATABASE_URL": "host=x dbname=y"}, wantErr: "postgres:// URL"},
		{name: "no region", env: map[string]string{"DATABASE_URL": leader, "PRIMARY_REGION": "scl"}, want: leader, source: SourcePrimary},
		{name: "no primary region", env: map[string]string{"DATABASE_URL": leader, "PETREL_REGION": "syd"}, want: leader, source: SourcePrimary},
		{name: "in the primary region", env: map[string]string{"DATABASE_URL": leader, "PRIMARY_REGION": "scl", "PETREL_REGION": "scl"}, want: leader, source: SourcePrimary},
		{name: "FLY_REGION works too", env: map[string]string{"DATABASE_URL": leader, "PRIMARY_REGION": "scl", "FLY_REGION": "scl"}, want: leader, source: SourcePrimary},
		{name: "convention", env: map[string]string{"DATABASE_URL": leader, "PRIMARY_REGION": "scl", "PETREL_REGION": "syd"},
			want: "postgres://app:s%40cret@syd.db.internal:5433/app?sslmode=require", source: SourceConvention},
		{name: "PETREL_REGION wins over FLY_REGION", env: map[string]string{"DATABASE_URL": leader, "PRIMARY_REGION": "scl", "PETREL_REGION": "ams", "FLY_REGION": "syd"},
			want: "postgres://app:s%40cret@ams.db.internal:5433/app?sslmode=require", source: SourceConvention},
		{name: "convention, other direct port", env: map[string]string{"DATABASE_URL": leader, "PRIMARY_REGION": "scl", "PETREL_REGION": "syd", "PETREL_DIRECT_PORT": "6543"},
			want: "postgres://app:s%40cret@syd.db.internal:6543/app?sslmode=require", source: SourceConvention},
		{name: "bad direct port", env: map[string]string{"DATABASE_URL": leader, "PRIMARY_REGION": "scl", "PETREL_REGION": "syd", "PETREL_DIRECT_PORT": "x"}, wantErr: "not a port"},
		{name: "convention with an IP host", env: map[string]string{"DATABASE_URL": "postgres://a:b@10.0.0.1:5432/d", "PRIMARY_REGION": "scl", "PETREL_REGION": "syd"}, wantErr: "DATABASE_URL_SYD"},
		{name: "region var as host:port", env: map[string]string{"DATABASE_URL": leader, "PRIMARY_REGION": "scl", "PETREL_REGION": "syd", "DATABASE_URL_SYD": "10.1.0.7:5433"},
			want: "postgres://app:s%40cret@10.1.0.7:5433/app?sslmode=require", source: SourceRegionVar},
		{name: "region var as full URL", env: map[string]string{"DATABASE_URL": leader, "PRIMARY_REGION": "scl", "PETREL_REGION": "syd", "DATABASE_URL_SYD": "postgres://ro:x@syd-db:5433/app"},
			want: "postgres://ro:x@syd-db:5433/app", source: SourceRegionVar},
		{name: "region var with a dash", env: map[string]string{"DATABASE_URL": leader, "PRIMARY_REGION": "scl", "PETREL_REGION": "eu-west", "DATABASE_URL_EU_WEST": "eu:5433"},
			want: "postgres://app:s%40cret@eu:5433/app?sslmode=require", source: SourceRegionVar},
		{name: "bad region var", env: map[string]string{"DATABASE_URL": leader, "PRIMARY_REGION": "scl", "PETREL_REGION": "syd", "DATABASE_URL_SYD": "x@y/z"}, wantErr: "DATABASE_URL_SYD"},
		{name: "multi-host leader URL, read-write dropped", env: map[string]string{
			"DATABASE_URL":   "postgresql://u:p@h1:5433,h2:5433/db?target_session_attrs=read-write&connect_timeout=2",
			"PRIMARY_REGION": "scl", "PETREL_REGION": "ord", "DATABASE_URL_ORD": "h3:5433"},
			want: "postgresql://u:p@h3:5433/db?connect_timeout=2", source: SourceRegionVar},
		{name: "multi-host leader URL, convention uses the first host", env: map[string]string{
			"DATABASE_URL":   "postgres://u:p@a.example:5432,b.example:5432/db",
			"PRIMARY_REGION": "scl", "PETREL_REGION": "ord"},
			want: "postgres://u:p@ord.a.example:5433/db", source: SourceConvention},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, err := Resolve(func(k string) (string, bool) { v, ok := tc.env[k]; return v, ok })
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want one containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if r.URL != tc.want || r.Source != tc.source {
				t.Fatalf("got %s (%s), want %s (%s)", r.URL, r.Source, tc.want, tc.source)
			}
			if r.Leader != tc.env["DATABASE_URL"] {
				t.Fatalf("leader %q", r.Leader)
			}
		})
	}
}

func TestFromEnv(t *testing.T) {
	t.Setenv("DATABASE_URL", "postgres://u:p@db:5432/d")
	t.Setenv("PRIMARY_REGION", "scl")
	t.Setenv("PETREL_REGION", "ams")
	t.Setenv("FLY_REGION", "")
	t.Setenv("DATABASE_URL_AMS", "")
	u, err := URL()
	if err != nil || u != "postgres://u:p@ams.db:5433/d" {
		t.Fatalf("URL() = %q, %v", u, err)
	}
}
