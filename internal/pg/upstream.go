package pg

import (
	"bufio"
	"bytes"
	"os"
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
