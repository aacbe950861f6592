package dashboard

import (
	"context"
	"errors"
	"net/http"
	"time"

	"github.com/petrel-db/petrel/internal/backup"
	"github.com/petrel-db/petrel/internal/model"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// Backups is the node's archiver as the admin API uses it
// (*backup.Archiver): the work is done there, with the member's own
// store credentials.
type Backups interface {
	ListBackups(ctx context.Context) ([]backup.Backup, error)
	RequestBackup(by string) (uint64, error)
	Backups() backup.BackupState
	BackupConfig() (model.BackupConfig, bool, error)
	ConfigureStore(ctx context.Context, cli *clientv3.Client, c model.BackupConfig, by string) error
	PruneStore(ctx context.Context, window *time.Duration, min *int, dryRun bool, by string) (backup.PruneResult, error)
	VerifyStore(ctx context.Context) (backup.Report, error)
}

// Bounds of the backup requests that read or write the whole store.
const (
	configureTimeout = 45 * time.Second
	// pruneTimeout and verifyTimeout: a prune deletes, and a verify
	// reads back, every file of a large archive.
	pruneTimeout  = 30 * time.Minute
	verifyTimeout = 6 * time.Hour
)

// longRequest lets this answer be written up to d from now (the server's
// WriteTimeout is for ordinary requests) and bounds the work by d.
func longRequest(w http.ResponseWriter, r *http.Request, d time.Duration) (context.Context, context.CancelFunc) {
	_ = http.NewResponseController(w).SetWriteDeadline(time.Now().Add(d + 15*time.Second))
	return context.WithTimeout(r.Context(), d)
}

// noBackups answers for a member without an archiver.
func (s *Server) noBackups(w http.ResponseWriter) bool {
	if s.o.Backups == nil {
		writeError(w, http.StatusConflict, "this member has no archiver")
		return true
	}
	return false
}

// backupError answers err: 400 for refused input, 404 when no store is
// configured, 409 otherwise (the store refused or is not reachable).
func backupError(w http.ResponseWriter, err error) {
	switch {
	case errors.Is(err, backup.ErrBadConfig):
		writeError(w, http.StatusBadRequest, err.Error())
	case errors.Is(err, backup.ErrNoStore):
		writeError(w, http.StatusNotFound, err.Error())
	default:
		writeError(w, http.StatusConflict, err.Error())
	}
}

// getBackups lists the backup catalog: GET /api/v1/backups.
func (s *Server) getBackups(w http.ResponseWriter, r *http.Request, actor string) {
	if s.o.Backups == nil {
		writeError(w, http.StatusConflict, "this member reads no backup catalog")
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), opTimeout)
	defer cancel()
	bs, err := s.o.Backups.ListBackups(ctx)
	if err != nil {
		writeError(w, http.StatusConflict, "reading the backup catalog: "+err.Error())
		return
	}
	if bs == nil {
		bs = []backup.Backup{}
	}
	writeJSON(w, http.StatusOK, map[string]any{"backups": bs})
}

// postBackups takes a base backup now: POST /api/v1/backups, on the
// leader (the archiving member); elsewhere 409 names the leader.
func (s *Server) postBackups(w http.ResponseWriter, r *http.Request, actor string) {
	if s.o.Backups == nil {
		writeError(w, http.StatusConflict, "this member takes no backups")
		return
	}
	n, err := s.o.Backups.RequestBackup("api:" + actor)
	if err != nil {
		msg := err.Error()
		if errors.Is(err, backup.ErrNotArchiving) {
			if l := s.o.Store.Snapshot().Leader; l != "" {
				msg += " (ask " + l + ")"
			}
		}
		writeError(w, http.StatusConflict, msg)
		return
	}
	s.o.Log.Info("backup requested", "actor", actor)
	writeJSON(w, http.StatusAccepted, map[string]any{"requested": true, "member": s.o.Self, "request": n})
}

// getRunningBackup is this member's base backups: GET
// /api/v1/backups/running → a backup.BackupState (the one running and
// how far it got, how the last ended, the newest request number), what
// `petrel backup create` follows.
func (s *Server) getRunningBackup(w http.ResponseWriter, r *http.Request, actor string) {
	if len(r.URL.RawQuery) > 0 {
		writeError(w, http.StatusBadRequest, "takes no parameters")
		return
	}
	if s.noBackups(w) {
		return
	}
	writeJSON(w, http.StatusOK, s.o.Backups.Backups())
}

// getBackupConfig is the backup configuration: GET /api/v1/backup/config
// (404 when there is none). It holds no credentials.
func (s *Server) getBackupConfig(w http.ResponseWriter, r *http.Request, actor string) {
	if s.noBackups(w) {
		return
	}
	c, ok, err := s.o.Backups.BackupConfig()
	switch {
	case err != nil:
		writeError(w, http.StatusServiceUnavailable, err.Error())
	case !ok:
		writeError(w, http.StatusNotFound, "the cluster has no backup store (petrel backup configure)")
	default:
		writeJSON(w, http.StatusOK, map[string]any{"config": c})
	}
}

// putBackupConfig sets the backup configuration: PUT
// /api/v1/backup/config with a model.BackupConfig. The store is checked
// (reachable with this member's credentials, empty or this cluster's)
// before it is stored; the agents follow within a second.
func (s *Server) putBackupConfig(w http.ResponseWriter, r *http.Request, actor string) {
	var c model.BackupConfig
	if !decodeBody(w, r, &c) {
		return
	}
	if c.Kind == "" {
		writeError(w, http.StatusBadRequest, "kind: file or s3")
		return
	}
	if s.noBackups(w) {
		return
	}
	ctx, cancel := longRequest(w, r, configureTimeout)
	defer cancel()
	if err := s.o.Backups.ConfigureStore(ctx, s.o.Store.Client(), c, "api:"+actor); err != nil {
		backupError(w, err)
		return
	}
	s.o.Log.Info("backup store configured", "actor", actor, "kind", c.Kind)
	writeJSON(w, http.StatusOK, map[string]any{"config": c})
}

// PruneBody is POST /api/v1/backups/prune's body; unset fields take the
// backup configuration's retention, else the defaults.
type PruneBody struct {
	Window *string `json:"window"` // a Go duration ("168h")
	Min    *int    `json:"min"`
	DryRun bool    `json:"dry_run"`
}

// postPrune applies retention: POST /api/v1/backups/prune → a
// backup.PruneResult. A prune that fails part way answers 409 with the
// error and the result (the plan it was carrying out).
func (s *Server) postPrune(w http.ResponseWriter, r *http.Request, actor string) {
	var body PruneBody
	if !decodeBody(w, r, &body) {
		return
	}
	var window *time.Duration
	if body.Window != nil {
		d, err := time.ParseDuration(*body.Window)
		if err != nil || d < 0 {
			writeError(w, http.StatusBadRequest, "window: a duration >= 0 (e.g. 168h)")
			return
		}
		window = &d
	}
	if body.Min != nil && *body.Min < 1 {
		writeError(w, http.StatusBadRequest, "min: at least 1")
		return
	}
	if s.noBackups(w) {
		return
	}
	ctx, cancel := longRequest(w, r, pruneTimeout)
	defer cancel()
	res, err := s.o.Backups.PruneStore(ctx, window, body.Min, body.DryRun, "api:"+actor)
	if err != nil {
		if errors.Is(err, backup.ErrBadConfig) || errors.Is(err, backup.ErrNoStore) || res.Store == "" {
			backupError(w, err)
			return
		}
		writeJSON(w, http.StatusConflict, map[string]any{"error": err.Error(), "result": res})
		return
	}
	if !body.DryRun {
		s.o.Log.Info("backups pruned", "actor", actor, "backups", len(res.Plan.DeleteBackups), "wal", len(res.Plan.DeleteWAL))
	}
	writeJSON(w, http.StatusOK, res)
}

// getVerify reads the whole archive back: GET /api/v1/backups/verify →
// a backup.Report (200 also when it finds damage: the report says).
// It may take long on a large archive.
func (s *Server) getVerify(w http.ResponseWriter, r *http.Request, actor string) {
	if len(r.URL.RawQuery) > 0 {
		writeError(w, http.StatusBadRequest, "verify takes no parameters")
		return
	}
	if s.noBackups(w) {
		return
	}
	ctx, cancel := longRequest(w, r, verifyTimeout)
	defer cancel()
	rep, err := s.o.Backups.VerifyStore(ctx)
	if err != nil {
		backupError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, rep)
}
