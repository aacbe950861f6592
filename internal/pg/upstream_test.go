package pg

import (
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestUpstreamLacksWAL: the walreceiver's "has already been removed" in
// the server log counts only after the standby was last configured, and
// a log truncated since is read from its start.
func TestUpstreamLacksWAL(t *testing.T) {
	s := &Server{logFile: filepath.Join(t.TempDir(), "postgres.log")}
	write := func(text string, appendTo bool) {
		t.Helper()
		flag := os.O_CREATE | os.O_WRONLY | os.O_TRUNC
		if appendTo {
			flag = os.O_CREATE | os.O_WRONLY | os.O_APPEND
		}
		f, err := os.OpenFile(s.logFile, flag, 0o600)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := f.WriteString(text); err != nil {
			t.Fatal(err)
		}
		f.Close()
	}
	const removed = "2026-12-03 16:54:26.006 UTC [18138] FATAL:  could not receive data from WAL stream: ERROR:  requested WAL segment 00000003000000000000000C has already been removed\n"
	if s.UpstreamLacksWAL() {
		t.Fatal("no log: lacks WAL")
	}
	write("LOG:  started streaming WAL from primary at 0/C000000 on timeline 3\n", false)
	if s.UpstreamLacksWAL() {
		t.Fatal("a healthy log: lacks WAL")
	}
	write(removed, true)
	if !s.UpstreamLacksWAL() {
		t.Fatal("the walreceiver's report not seen")
	}
	s.markStandbyLog() // configured again, e.g. after a re-clone
	if s.UpstreamLacksWAL() {
		t.Fatal("a report from before the standby was configured still counts")
	}
	write("LOG:  waiting for WAL to become available at 0/C002000\n", true)
	if s.UpstreamLacksWAL() {
		t.Fatal("an unrelated line counts")
	}
	write(removed, true)
	if !s.UpstreamLacksWAL() {
		t.Fatal("a new report not seen")
	}
	write(strings.Repeat("LOG:  checkpoint starting: time\n", 200), true)
	s.markStandbyLog()
	write(removed, false) // truncated since: shorter than the mark
	if !s.UpstreamLacksWAL() {
		t.Fatal("a report in a log truncated since the mark not seen")
	}
}

// TestRewindInterrupted: the marker a rewind leaves until it succeeds
// (as an agent killed while pg_rewind ran leaves it) says the rewind is
// unfinished until Wipe clears the data directory.
func TestRewindInterrupted(t *testing.T) {
	dir := t.TempDir()
	s := &Server{opts: Options{DataDir: filepath.Join(dir, "pgdata")}, log: slog.New(slog.DiscardHandler), uid: -1}
	if err := os.MkdirAll(s.opts.DataDir, 0o700); err != nil {
		t.Fatal(err)
	}
	if s.RewindInterrupted() {
		t.Fatal("interrupted before any rewind")
	}
	if err := writeSynced(s.rewindMarker()); err != nil {
		t.Fatal(err)
	}
	if !s.RewindInterrupted() {
		t.Fatal("the marker of an unfinished rewind not seen")
	}
	if err := s.Wipe(); err != nil {
		t.Fatal(err)
	}
	if s.RewindInterrupted() {
		t.Fatal("still interrupted after the data directory was wiped")
	}
}

// TestWriteFileConcurrent: writers of one file at once each leave a
// complete file and none fails (a shared temporary name made one writer
// rename the other's away before its chown).
func TestWriteFileConcurrent(t *testing.T) {
	s := &Server{log: slog.New(slog.DiscardHandler), uid: -1}
	path := filepath.Join(t.TempDir(), "petrel-archive.conf")
	contents := []string{strings.Repeat("a", 4096), strings.Repeat("b", 4096)}
	errs := make(chan error, 200)
	for i := range 200 {
		go func() { errs <- s.writeFile(path, []byte(contents[i%2]), 0o600) }()
	}
	for range 200 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	b, err := os.ReadFile(path)
	if err != nil || (string(b) != contents[0] && string(b) != contents[1]) {
		t.Fatalf("file after concurrent writes: %d bytes, %v", len(b), err)
	}
	left, _ := filepath.Glob(path + ".petrel-tmp*")
	if len(left) != 0 {
		t.Fatalf("temporary files left: %v", left)
	}
}
