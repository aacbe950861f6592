package statusview

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/petrel-db/petrel/internal/api/apitest"
	"github.com/petrel-db/petrel/internal/model"
)

func TestCollectAndTable(t *testing.T) {
	ca := apitest.NewCA(t, "c1")
	srv := ca.Server(t, "scl2", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/status" {
			http.NotFound(w, r)
			return
		}
		json.NewEncoder(w).Encode(model.Status{ID: "scl2", Region: "scl", Role: model.RoleReplica, State: "running", Timeline: 3, LagBytes: 1536, LagSeconds: 0.25})
	}))
	bad := ca.Server(t, "fra1", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "boom", 500)
	}))
	// An impostor: a genuine node certificate, but another node's.
	impostor := ca.Server(t, "scl2", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		json.NewEncoder(w).Encode(model.Status{ID: "iad1", Role: model.RolePrimary})
	}))

	sts := Collect(context.Background(), ca.Client(t), []Target{
		{ID: "scl2", Region: "scl", APIURL: srv.URL},
		{ID: "ord1", Region: "ord", APIURL: "https://127.0.0.1:1"},
		{ID: "fra1", Region: "fra", APIURL: bad.URL},
		{ID: "iad1", Region: "iad", APIURL: impostor.URL},
	})
	if sts[0].Role != model.RoleReplica || sts[0].APIURL != srv.URL {
		t.Fatalf("reachable: %+v", sts[0])
	}
	for _, s := range sts[1:] {
		if s.Role != model.RoleOffline || s.State != "unreachable" || len(s.Problems) == 0 {
			t.Fatalf("unreachable: %+v", s)
		}
	}
	if !strings.Contains(sts[3].Problems[0], "another node's certificate") {
		t.Fatalf("impostor: %+v", sts[3])
	}
	sts = sts[:3]
	if sts[1].ID != "ord1" || sts[1].Region != "ord" {
		t.Fatalf("target fields not kept: %+v", sts[1])
	}
	if _, ok := Primary(sts); ok {
		t.Fatal("no primary expected")
	}

	var b bytes.Buffer
	Table(&b, sts)
	out := b.String()
	t.Log("\n" + out)
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 4 || !strings.HasPrefix(lines[0], "ID") {
		t.Fatalf("table:\n%s", out)
	}
	if !strings.Contains(lines[1], "1.5 KiB / 0.2s") && !strings.Contains(lines[1], "1.5 KiB / 0.3s") {
		t.Fatalf("lag column: %q", lines[1])
	}
	if !strings.Contains(lines[2], "offline") || !strings.Contains(lines[2], "unreachable") {
		t.Fatalf("offline row: %q", lines[2])
	}
}

func TestArchive(t *testing.T) {
	now := time.Date(2026, 12, 2, 12, 0, 0, 0, time.UTC)
	sts := []model.Status{
		{ID: "a1", Archive: &model.ArchiveStatus{Role: "push", Spooled: 2, LastArchived: "000000010000000000000007",
			LastAt: now.Add(-90 * time.Second), RestoreFrom: now.Add(-time.Hour), LastBackup: now.Add(-30 * time.Minute),
			LastFailure: "uploading: boom", FailureAt: now.Add(-time.Minute)}},
		{ID: "a4", Archive: &model.ArchiveStatus{Role: "keep", BackupSince: now.Add(-42 * time.Second), LastBackup: now.Add(-time.Hour)}},
		{ID: "a2", Archive: &model.ArchiveStatus{Role: "off"}},
		{ID: "a3"},
	}
	var b bytes.Buffer
	Archive(&b, sts, now)
	out := b.String()
	t.Log("\n" + out)
	want := "Archive:\n  a1 push: last 000000010000000000000007 (1m30s ago), spooled 2, restorable 2026-12-02T11:00:00Z .. 2026-12-02T11:58:30Z, last base backup 30m0s ago, last failure 2026-12-02T11:59:00Z: uploading: boom\n" +
		"  a4 keep: last none yet, spooled 0, base backup running for 42s\n"
	if out != want {
		t.Fatalf("got %q\nwant %q", out, want)
	}
	b.Reset()
	Archive(&b, sts[2:], now)
	if b.Len() != 0 {
		t.Fatalf("no archiving member, got %q", b.String())
	}
}

func TestHumanBytes(t *testing.T) {
	for n, want := range map[int64]string{0: "0 B", 1023: "1023 B", 1024: "1.0 KiB", 5 << 20: "5.0 MiB", 3 << 30: "3.0 GiB"} {
		if got := HumanBytes(n); got != want {
			t.Errorf("HumanBytes(%d) = %q, want %q", n, got, want)
		}
	}
}

func TestRegions(t *testing.T) {
	sts := []model.Status{
		{ID: "scl1", Region: "scl", Role: model.RolePrimary},
		{ID: "scl2", Region: "scl", Role: model.RoleReplica, Streaming: true, LagBytes: 10, LagSeconds: 0.01},
		{ID: "syd1", Region: "syd", Role: model.RoleReplica, Streaming: true, LagBytes: 4096, LagSeconds: 0.3},
		{ID: "syd2", Region: "syd", Role: model.RoleReplica, LagBytes: 100, LagSeconds: 0.5},
		{ID: "ams1", Region: "ams", Role: model.RoleOffline},
		{ID: "syd3", Region: "syd", Role: model.RoleReplica, LagBytes: -1, LagSeconds: -1},
	}
	rs := Regions(sts)
	if len(rs) != 3 || rs[0].Region != "scl" || rs[0].Primary != "scl1" || rs[0].MaxLagBytes != 10 {
		t.Fatalf("scl: %+v", rs)
	}
	if rs[1].Region != "syd" || rs[1].MaxLagBytes != 4096 || rs[1].MaxLagSeconds != 0.5 || rs[1].Streaming != 1 || rs[1].Replicas != 3 || rs[1].LagUnknown != 1 {
		t.Fatalf("syd: %+v", rs[1])
	}
	if rs[2].Up != 0 || rs[2].Members != 1 {
		t.Fatalf("ams: %+v", rs[2])
	}
	var b bytes.Buffer
	RegionTable(&b, sts)
	out := b.String()
	t.Log("\n" + out)
	if !strings.Contains(out, "4.0 KiB / 0.50s (1 unknown)") || !strings.Contains(out, "scl1") {
		t.Fatalf("region table:\n%s", out)
	}
}
