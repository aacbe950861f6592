package pg

import (
	"context"
	"errors"
	"fmt"
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
	out, err := s.run(ctx, "rewinding", nil, "pg_rewind",
		"--target-pgdata="+s.opts.DataDir, "--source-server="+conn)
	if err != nil {
		return out, classifyRewind(out, err, ctx.Err())
	}
	return out, nil
}
