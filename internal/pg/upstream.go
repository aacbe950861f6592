package pg

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
)

// upstreamLogWindow bounds how much of the server log UpstreamLacksWAL
// reads: the walreceiver retries every few seconds, so a report is
// always near the end while it lasts.
const upstreamLogWindow = 64 << 10

// UpstreamLacksWAL says whether the server log holds, since the standby
// was last configured (ConfigureStandby), its walreceiver's report that
// the upstream removed WAL it needs ("requested WAL segment ... has
// already been removed"). Streaming from that upstream cannot resume
// then: the standby needs a clone (or that WAL from an archive).
func (s *Server) UpstreamLacksWAL() bool {
	f, err := os.Open(s.logFile)
	if err != nil {
		return false
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return false
	}
	from := s.standbyLogOff.Load()
	if from > fi.Size() {
		from = 0 // the log was truncated since
	}
	from = max(from, fi.Size()-upstreamLogWindow)
	buf := make([]byte, fi.Size()-from)
	n, _ := f.ReadAt(buf, from)
	sc := bufio.NewScanner(bytes.NewReader(buf[:n]))
	sc.Buffer(make([]byte, 0, 4096), upstreamLogWindow)
	for sc.Scan() {
		l := sc.Bytes()
		if bytes.Contains(l, []byte("requested WAL segment")) && bytes.Contains(l, []byte("has already been removed")) {
			return true
		}
	}
	return false
}

// markStandbyLog notes where the server log ends now: UpstreamLacksWAL
// reads only what comes after.
func (s *Server) markStandbyLog() {
	if fi, err := os.Stat(s.logFile); err == nil {
		s.standbyLogOff.Store(fi.Size())
	} else {
		s.standbyLogOff.Store(0)
	}
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
