package pg

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
)

// What a failed pg_rewind means for the caller, by behaviour. Rewind's
// errors wrap exactly one of these (errors.Is).
var (
	// ErrRewindUnavailable: pg_rewind could not talk to the source (the
	// connection was refused, timed out, was closed, or the login was
	// refused), or was stopped, before it began to rewind: the data
	// directory is as it was. Keep it and try again later.
	ErrRewindUnavailable = errors.New("rewind source unavailable")
	// ErrRewindImpossible: the histories cannot be rewound (different
	// systems, no common ancestor, the target's WAL from before the
	// divergence is gone, neither checksums nor wal_log_hints), or
	// pg_rewind failed after it began to rewind, when the data directory
	// may be half rewritten (PostgreSQL's documentation: take a new base
	// backup then). The data directory must be cloned again.
	ErrRewindImpossible = errors.New("rewind impossible")
)

// rewindStarted is what pg_rewind prints once it found the divergence
// point and the last common checkpoint; from there on it reads the source's
// files and rewrites the target's.
const rewindStarted = "rewinding from last common checkpoint"

// classifyRewind wraps a failed pg_rewind run's error (runErr, with the
// run's combined output out and its context's error ctxErr) in the class
// the caller acts on. A failure pg_rewind does not explain as a connection
// problem before it started counts as impossible: re-cloning is what
// recovers from it, and loses nothing a rewind would keep.
func classifyRewind(out string, runErr, ctxErr error) error {
	started := strings.Contains(out, rewindStarted)
	switch {
	case started:
		return fmt.Errorf("%w (it failed after it began to rewrite the data directory): %w", ErrRewindImpossible, runErr)
	case ctxErr != nil:
		return fmt.Errorf("%w (stopped before it began: %w): %w", ErrRewindUnavailable, ctxErr, runErr)
	case connectionFailed(out):
		return fmt.Errorf("%w: %w", ErrRewindUnavailable, runErr)
	}
	return fmt.Errorf("%w: %w", ErrRewindImpossible, runErr)
}

// connectionFailed says whether pg_rewind's output reports that libpq
// could not connect to the source, in any of libpq's wordings: refused,
// "timeout expired", the server closing the connection, a name that does
// not resolve, or the server refusing the login (a FATAL answer: a
// pg_hba.conf that does not list this member yet, a password not yet
// set). None of these touched the data directory.
func connectionFailed(out string) bool {
	for _, line := range strings.Split(out, "\n") {
		l := strings.TrimSpace(line)
		if !strings.HasPrefix(l, "pg_rewind: error:") {
			continue
		}
		if strings.Contains(l, "connection to server") && strings.Contains(l, "failed:") ||
			strings.Contains(l, "could not connect to server") {
			return true
		}
	}
	return false
}

// runRewind runs pg_rewind and classifies a failure.
func (s *Server) runRewind(ctx context.Context, conn string) (string, error) {
	// The marker outlives this process: an agent killed while pg_rewind
	// rewrote the data directory finds it at its next start (see
	// RewindInterrupted). pg_rewind removes what the source lacks from
	// PGDATA, so the marker lives beside it.
	if err := writeSynced(s.rewindMarker(), ""); err != nil {
		return "", fmt.Errorf("rewinding: %w: %w", ErrRewindUnavailable, err)
	}
	out, err := s.run(ctx, "rewinding", nil, "pg_rewind",
		"--target-pgdata="+s.opts.DataDir, "--source-server="+conn)
	if err != nil {
		err = classifyRewind(out, err, ctx.Err())
		if errors.Is(err, ErrRewindUnavailable) {
			_ = os.Remove(s.rewindMarker()) // the data directory is untouched
		}
		return out, err
	}
	if err := os.Remove(s.rewindMarker()); err != nil && !errors.Is(err, os.ErrNotExist) {
		return out, fmt.Errorf("rewinding: %w", err)
	}
	return out, nil
}

// rewindMarker is the file that exists while a rewind may have left the
// data directory half rewritten: from before pg_rewind starts until it
// succeeds, or for good when it failed after it began (until Wipe).
func (s *Server) rewindMarker() string {
	return filepath.Join(filepath.Dir(s.opts.DataDir), "petrel-rewind-unfinished")
}

// RewindInterrupted says whether a rewind began and never finished: this
// process or an earlier one was killed while pg_rewind ran, or it failed
// after it began to rewrite the data directory. Postgres may then start
// from a control file that points at WAL pg_rewind had not written yet
// ("could not locate a valid checkpoint record"), and another pg_rewind
// finds the timelines equal and does nothing: only a re-clone recovers it.
func (s *Server) RewindInterrupted() bool {
	_, err := os.Stat(s.rewindMarker())
	return err == nil
}

// writeSynced creates path holding content and syncs it and its
// directory.
func writeSynced(path, content string) error {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	if _, err := f.WriteString(content); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	d, err := os.Open(filepath.Dir(path))
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// walSegmentName is a WAL segment file's name: timeline, log, segment.
var walSegmentName = regexp.MustCompile(`^[0-9A-F]{24}$`)

// markWALArchived marks every WAL segment in pg_wal that has no archive
// status (none of .ready, .done) as archived (.done), after pg_rewind.
// Such a segment was copied from the rewind's source, whose archiver
// archives it, or is this node's own diverged tail, which must never be
// archived; but with no status file a later checkpoint on this node,
// once it is a primary, marks it .ready, and its archiver then pushes it:
// a copy taken from a source still writing it (zeros past that point),
// refused as "archived WAL differs", stalls archiving for good (chaos,
// switchover-crash then kill-two). Postgres marks streamed segments .done
// itself.
func (s *Server) markWALArchived() error {
	dir := filepath.Join(s.opts.DataDir, "pg_wal")
	ents, err := os.ReadDir(dir)
	if err != nil {
		return fmt.Errorf("marking WAL archived: %w", err)
	}
	status := filepath.Join(dir, "archive_status")
	if err := os.MkdirAll(status, 0o700); err != nil {
		return fmt.Errorf("marking WAL archived: %w", err)
	}
	for _, e := range ents {
		name := e.Name()
		if !e.Type().IsRegular() || !walSegmentName.MatchString(name) {
			continue
		}
		_, errReady := os.Stat(filepath.Join(status, name+".ready"))
		_, errDone := os.Stat(filepath.Join(status, name+".done"))
		if errReady == nil || errDone == nil {
			continue
		}
		if err := os.WriteFile(filepath.Join(status, name+".done"), nil, 0o600); err != nil {
			return fmt.Errorf("marking WAL archived: %w", err)
		}
	}
	return nil
}
