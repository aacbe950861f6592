package pg

import (
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
