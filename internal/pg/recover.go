package pg

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// RecoveryTarget is where archive recovery stops (Postgres'
// recovery_target_* settings). The zero value replays every WAL file
// there is.
type RecoveryTarget struct {
	Immediate bool      // the base backup's consistent point (recovery_target = 'immediate')
	Time      time.Time // the last commit at or before Time
	LSN       string    // up to and including LSN
}

func (t RecoveryTarget) settings() [][2]string {
	switch {
	case t.Immediate:
		return [][2]string{{"recovery_target", "'immediate'"}}
	case !t.Time.IsZero():
		return [][2]string{{"recovery_target_time", quoteConf(t.Time.UTC().Format("2006-01-02 15:04:05.999999+00"))}}
	case t.LSN != "":
		return [][2]string{{"recovery_target_lsn", quoteConf(t.LSN)}}
	}
	return nil
}

// ErrTargetNotReached: the WAL given to recovery ends before its target.
// Postgres (13 and later) then stops instead of promoting at the wrong
// point.
var ErrTargetNotReached = errors.New("recovery ended before the target was reached")

// Recover runs archive recovery on a data directory restored from a base
// backup (its backup_label in place) and promotes it at the target. The
// WAL comes from walDir, whose files the caller fetched and verified
// (restore_command only copies them). On success the server is running
// as a primary on a new timeline, configured like any primary (the
// restore settings removed); the caller sets its roles' passwords
// (Bootstrap) and stops it. The server's archiving should be off (no
// ArchiveDir): the WAL it writes belongs to a new cluster.
func (s *Server) Recover(ctx context.Context, walDir string, t RecoveryTarget) error {
	if s.Running() {
		return errors.New("recovering: a server is already running on this data directory")
	}
	if !s.Initialized() {
		return errors.New("recovering: the data directory holds no restored base backup")
	}
	if strings.ContainsAny(walDir, "\"'%\n\\") {
		return fmt.Errorf("recovering: WAL directory %q: quotes, %% and backslashes are not allowed", walDir)
	}
	// The files came from this process: give them to the run-as user, and
	// let it reach walDir (the caller's directories may be 0700).
	if err := s.mkdir(walDir); err != nil {
		return fmt.Errorf("recovering: %w", err)
	}
	for _, dir := range []string{s.opts.DataDir, walDir} {
		if s.cred == nil {
			break
		}
		err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			return os.Lchown(p, s.uid, s.gid)
		})
		if err != nil {
			return fmt.Errorf("recovering: chown %s: %w", dir, err)
		}
	}
	if err := os.Chmod(s.opts.DataDir, 0o700); err != nil {
		return fmt.Errorf("recovering: %w", err)
	}
	if _, err := s.writeHBA(); err != nil {
		return fmt.Errorf("recovering: %w", err)
	}
	if err := s.resetAutoConf(); err != nil {
		return fmt.Errorf("recovering: %w", err)
	}
	if err := s.ensureIncludes(); err != nil {
		return fmt.Errorf("recovering: %w", err)
	}
	// A backup taken from a standby carries its standby settings.
	if err := removeIfExists(filepath.Join(s.opts.DataDir, standbySignal)); err != nil {
		return fmt.Errorf("recovering: %w", err)
	}
	var b strings.Builder
	b.WriteString("# Written by petrel: archive recovery of a restore.\n")
	fmt.Fprintf(&b, "restore_command = %s\n", quoteConf(`cp "`+walDir+`/%f" "%p"`))
	b.WriteString("recovery_target_timeline = 'latest'\n")
	b.WriteString("recovery_target_action = 'promote'\n")
	for _, kv := range t.settings() {
		fmt.Fprintf(&b, "%s = %s\n", kv[0], kv[1])
	}
	if err := s.writeFile(filepath.Join(s.opts.DataDir, recoveryConf), []byte(b.String()), 0o600); err != nil {
		return fmt.Errorf("recovering: %w", err)
	}
	if err := s.writeFile(filepath.Join(s.opts.DataDir, recoverySignal), nil, 0o600); err != nil {
		return fmt.Errorf("recovering: %w", err)
	}
	s.log.Info("starting archive recovery", "datadir", s.opts.DataDir)
	if err := s.Start(ctx); err != nil {
		return s.recoveryFailed(err)
	}
	// pg_ctl returns once the server accepts connections: a hot standby
	// reaching consistency, or already promoted. Wait for the promotion.
	for {
		if !s.Running() {
			return s.recoveryFailed(errors.New("postgres stopped during recovery"))
		}
		st, err := s.Status(ctx)
		if err == nil && st.Running && !st.InRecovery {
			break
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("recovering: %w; server log: %s", ctx.Err(), s.logTail())
		case <-time.After(200 * time.Millisecond):
		}
	}
	if err := s.ConfigurePrimary(); err != nil {
		return fmt.Errorf("recovering: %w", err)
	}
	s.log.Info("archive recovery done: promoted")
	return nil
}

// recoveryFailed classifies a failed recovery from the server log.
func (s *Server) recoveryFailed(err error) error {
	log := s.logTail()
	if strings.Contains(log, "recovery ended before configured recovery target was reached") {
		return fmt.Errorf("recovering: %w", ErrTargetNotReached)
	}
	return fmt.Errorf("recovering: %w; server log: %s", err, log)
}
