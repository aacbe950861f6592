package pg

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"time"
)

// archiveConf holds the archiving settings the agent switches at run time
// (archive_library and archive_command are reloadable; archive_mode,
// which needs a restart, is always 'always' in petrel.conf when
// Options.ArchiveDir is set).
const archiveConf = "petrel-archive.conf"

// ArchiveDir is the spool Postgres archives into (Options.ArchiveDir; ""
// when archiving is not set up).
func (s *Server) ArchiveDir() string { return s.opts.ArchiveDir }

// renderArchiveConf is petrel-archive.conf: with spool set, Postgres'
// basic_archive module copies every completed WAL file (fsynced, and
// never replacing a different file of the same name) into the spool, and
// a file counts as archived for Postgres once it is there, so pg_wal may
// recycle it; the agent takes it from there. Without spool (no backup
// store), a no-op command marks WAL archived at once.
func renderArchiveConf(spool string, timeout time.Duration) []byte {
	var b bytes.Buffer
	b.WriteString("# Written by petrel (archiving); do not edit.\n")
	if spool == "" {
		b.WriteString("archive_library = ''\narchive_command = 'true'\narchive_timeout = 0\n")
		return b.Bytes()
	}
	fmt.Fprintf(&b, "archive_library = 'basic_archive'\narchive_command = ''\nbasic_archive.archive_directory = %s\narchive_timeout = '%ds'\n",
		quoteConf(spool), int(timeout/time.Second))
	return b.Bytes()
}

// SetArchive turns spooling on (with archive_timeout timeout) or off and
// reloads a running server when the file changed. It needs
// Options.ArchiveDir.
func (s *Server) SetArchive(ctx context.Context, on bool, timeout time.Duration) (changed bool, err error) {
	if s.opts.ArchiveDir == "" {
		return false, fmt.Errorf("pg: archiving needs an archive spool directory")
	}
	if timeout < time.Second {
		return false, fmt.Errorf("pg: archive_timeout %v is below a second", timeout)
	}
	s.archMu.Lock()
	s.archOff, s.archTimeout = !on, timeout
	s.archMu.Unlock()
	if !s.Initialized() {
		return false, nil // written by the next start (writePetrelConf)
	}
	return s.writeArchiveConf(ctx, s.Running())
}

// writeArchiveConf writes petrel-archive.conf for this node (a clone
// brings its source's, naming the source's spool) from the last
// SetArchive, spooling until the agent said otherwise; reload reloads a
// running server when it changed.
func (s *Server) writeArchiveConf(ctx context.Context, reload bool) (bool, error) {
	s.archMu.Lock()
	off, timeout := s.archOff, s.archTimeout
	s.archMu.Unlock()
	if timeout == 0 {
		timeout = DefaultArchiveTimeout
	}
	spool := s.opts.ArchiveDir
	if off {
		spool = ""
	}
	data := renderArchiveConf(spool, timeout)
	path := filepath.Join(s.opts.DataDir, archiveConf)
	if old, err := os.ReadFile(path); err == nil && bytes.Equal(old, data) {
		return false, nil
	}
	if err := s.writeFile(path, data, 0o600); err != nil {
		return false, err
	}
	if reload {
		return true, s.Reload(ctx)
	}
	return true, nil
}

// DefaultArchiveTimeout is archive_timeout unless the backup
// configuration says otherwise.
const DefaultArchiveTimeout = 60 * time.Second
