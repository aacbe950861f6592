package dashboard

import (
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"

	"github.com/petrel-db/petrel/internal/backup"
	"github.com/petrel-db/petrel/internal/model"
)

// TestBackupEndpoints: the backup configuration, prune and verify
// endpoints refuse bad input with a JSON 400 before anything is done, and
// carry out the rest with the member's archiver on a real file store.
func TestBackupEndpoints(t *testing.T) {
	_, s := newTestServer(t)
	dir := t.TempDir()
	cfg := model.BackupConfig{Kind: "file", Path: dir}
	s.o.Backups = backup.NewArchiver(backup.ArchiverConfig{Node: "n1", Cluster: "test", Spool: t.TempDir(),
		Source:   func() (model.BackupConfig, bool, bool, error) { return cfg, true, true, nil },
		SystemID: func() string { return "42" }})
	ts := httptest.NewServer(s.Wrap(http.NewServeMux()))
	t.Cleanup(ts.Close)
	tok, _ := s.auth().token()
	auth := "Bearer " + tok

	for _, c := range []struct{ method, path, body string }{
		{"PUT", "/api/v1/backup/config", `{}`},
		{"PUT", "/api/v1/backup/config", `{"kind":"ftp","path":"/x"}`},
		{"PUT", "/api/v1/backup/config", `{"kind":"file","path":"relative"}`},
		{"PUT", "/api/v1/backup/config", `{"kind":"file","path":"/x","prefix":"../up"}`},
		{"PUT", "/api/v1/backup/config", `{"kind":"file","path":"/x","schedule_s":5}`},
		{"PUT", "/api/v1/backup/config", `{"kind":"s3","bucket":"b","endpoint":"file:///etc"}`},
		{"PUT", "/api/v1/backup/config", `{"kind":"file","path":"/x","access_key":"k"}`},
		{"PUT", "/api/v1/backup/config", `{"kind":"file"`},
		{"POST", "/api/v1/backups/prune", `{"window":"a week"}`},
		{"POST", "/api/v1/backups/prune", `{"window":"-1h"}`},
		{"POST", "/api/v1/backups/prune", `{"min":0}`},
		{"POST", "/api/v1/backups/prune", `{"min":"2"}`},
		{"POST", "/api/v1/backups/prune", `{"dry_run":true,"everything":true}`},
		{"GET", "/api/v1/backups/verify?deep=1", ""},
		{"GET", "/api/v1/backups/running?id=x", ""},
	} {
		code, m := do(t, c.method, ts.URL+c.path, auth, c.body)
		if code != http.StatusBadRequest || m["error"] == nil {
			t.Errorf("%s %s %.50q = %d %v, want 400 with an error", c.method, c.path, c.body, code, m)
		}
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 0 {
		t.Fatalf("refused requests wrote to the store: %v", ents)
	}

	if code, m := do(t, "GET", ts.URL+"/api/v1/backup/config", auth, ""); code != 200 || m["config"].(map[string]any)["path"] != dir {
		t.Errorf("GET /api/v1/backup/config = %d %v", code, m)
	}
	// An archive of one WAL file that does not match its checksum:
	// verify reads it back and says so.
	seg := "000000010000000000000001"
	if err := os.MkdirAll(filepath.Join(dir, "wal"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "wal", seg+".zst"), []byte("not zstd"), 0o600); err != nil {
		t.Fatal(err)
	}
	code, m := do(t, "GET", ts.URL+"/api/v1/backups/verify", auth, "")
	if code != 200 || m["files"] != float64(1) || len(m["corrupt"].([]any)) != 1 {
		t.Errorf("GET /api/v1/backups/verify = %d %v, want 1 file, 1 corrupt", code, m)
	}
	// With no complete backup prune deletes nothing, dry run or not.
	for _, body := range []string{`{"window":"0s","min":1,"dry_run":true}`, `{}`} {
		code, m := do(t, "POST", ts.URL+"/api/v1/backups/prune", auth, body)
		if code != 200 || m["store"] == nil || m["plan"] == nil || m["plan"].(map[string]any)["delete_wal"] != nil {
			t.Errorf("POST /api/v1/backups/prune %s = %d %v", body, code, m)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "wal", seg+".zst")); err != nil {
		t.Errorf("prune without a backup deleted WAL: %v", err)
	}

	// Not the archiving member: no request taken, and its state says so.
	if code, m := do(t, "POST", ts.URL+"/api/v1/backups", auth, ""); code != http.StatusConflict || m["error"] == nil {
		t.Errorf("POST /api/v1/backups on a member that does not archive = %d %v, want 409", code, m)
	}
	if code, m := do(t, "GET", ts.URL+"/api/v1/backups/running", auth, ""); code != 200 || m["archiving"] != false || m["requested"] != float64(0) {
		t.Errorf("GET /api/v1/backups/running = %d %v", code, m)
	}

	// No store configured: 404.
	cfg = model.BackupConfig{}
	s.o.Backups = backup.NewArchiver(backup.ArchiverConfig{Node: "n1", Cluster: "test", Spool: t.TempDir(),
		Source: func() (model.BackupConfig, bool, bool, error) { return cfg, false, true, nil }})
	for _, ep := range [][2]string{{"GET", "/api/v1/backup/config"}, {"GET", "/api/v1/backups/verify"}, {"POST", "/api/v1/backups/prune"}} {
		if code, m := do(t, ep[0], ts.URL+ep[1], auth, ""); code != http.StatusNotFound || m["error"] == nil {
			t.Errorf("%s %s without a store = %d %v, want 404", ep[0], ep[1], code, m)
		}
	}
}
