package dashboard

import (
	"context"
	"errors"
	"net/http"

	"github.com/petrel-db/petrel/internal/backup"
)

// Backups is the node's archiver as the admin API uses it
// (*backup.Archiver).
type Backups interface {
	ListBackups(ctx context.Context) ([]backup.Backup, error)
	RequestBackup() error
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
	if err := s.o.Backups.RequestBackup(); err != nil {
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
	writeJSON(w, http.StatusAccepted, map[string]any{"requested": true, "member": s.o.Self})
}
