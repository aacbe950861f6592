package statusview

import (
	"testing"
	"time"
)

func TestProgressBar(t *testing.T) {
	const MiB = 1 << 20
	for _, c := range []struct {
		done, total int64
		elapsed     time.Duration
		want        string
	}{
		{0, 0, 0, "[??????????]  0 B"},
		{5 * MiB, 0, time.Second, "[??????????]  5.0 MiB  5.0 MiB/s"},
		{0, 100 * MiB, 0, "[..........]   0%  0 B of 100.0 MiB"},
		{50 * MiB, 100 * MiB, 10 * time.Second, "[#####.....]  50%  50.0 MiB of 100.0 MiB  5.0 MiB/s  10s left"},
		{100 * MiB, 100 * MiB, 20 * time.Second, "[##########] 100%  100.0 MiB of 100.0 MiB  5.0 MiB/s"},
		// Past the server's estimate: full, no time left.
		{110 * MiB, 100 * MiB, 20 * time.Second, "[##########] 100%  110.0 MiB of 100.0 MiB  5.5 MiB/s"},
	} {
		if got := ProgressBar(c.done, c.total, c.elapsed, 10); got != c.want {
			t.Errorf("ProgressBar(%d, %d, %v) = %q, want %q", c.done, c.total, c.elapsed, got, c.want)
		}
	}
}
