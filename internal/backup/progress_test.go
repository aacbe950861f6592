package backup

import "testing"

// TestEstimate: the total comes from pg_basebackup -P's progress lines,
// however stderr is cut into writes, and other lines leave it alone.
func TestEstimate(t *testing.T) {
	e := &estimate{}
	if e.total.Load() != 0 {
		t.Fatal("a total before any line")
	}
	chunks := []string{
		"pg_basebackup: initiating base backup, waiting for checkpoint to complete\n",
		"pg_basebackup: checkpoint completed\n     0/5612",
		"3 kB (0%), 0/1 tablespace\r",
		"29376/56123 kB (52%), 0/1 tablespace\n",
	}
	for _, c := range chunks {
		if n, err := e.Write([]byte(c)); n != len(c) || err != nil {
			t.Fatalf("write: %d %v", n, err)
		}
	}
	if got := e.total.Load(); got != 56123<<10 {
		t.Fatalf("total %d, want %d", got, 56123<<10)
	}
	// A later, larger estimate (the server's count grows as files do).
	e.Write([]byte("56200/56200 kB (100%), 1/1 tablespace\n"))
	if got := e.total.Load(); got != 56200<<10 {
		t.Fatalf("total %d after the last line, want %d", got, 56200<<10)
	}
	// Noise never sets it, and an endless line is dropped, not kept.
	e.Write([]byte("pg_basebackup: error: 12/0 kB (x\n"))
	big := make([]byte, 10000)
	e.Write(big)
	if len(e.line) > 4096 || e.total.Load() != 56200<<10 {
		t.Fatalf("after noise: total %d, %d bytes held", e.total.Load(), len(e.line))
	}
}
