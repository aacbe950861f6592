package statusview

import (
	"fmt"
	"strings"
	"time"
)

// ProgressBar is one line for a transfer of done bytes out of total
// (total 0: unknown yet) after elapsed: a bar of width cells, the share,
// the sizes, the rate and the time left, e.g.
//
//	[##########..........]  50%  1.0 GiB of 2.0 GiB  34.1 MiB/s  30s left
//
// A transfer may run past its estimate (the bar then stays full).
func ProgressBar(done, total int64, elapsed time.Duration, width int) string {
	if width < 1 {
		width = 1
	}
	rate := ""
	var perSec float64
	if s := elapsed.Seconds(); s > 0 && done > 0 {
		perSec = float64(done) / s
		rate = "  " + HumanBytes(int64(perSec)) + "/s"
	}
	if total <= 0 {
		return fmt.Sprintf("[%s]  %s%s", strings.Repeat("?", width), HumanBytes(done), rate)
	}
	frac := float64(done) / float64(total)
	if frac > 1 {
		frac = 1
	}
	if frac < 0 {
		frac = 0
	}
	full := int(frac * float64(width))
	bar := strings.Repeat("#", full) + strings.Repeat(".", width-full)
	left := ""
	if perSec > 0 && done < total {
		left = "  " + time.Duration(float64(total-done)/perSec*float64(time.Second)).Round(time.Second).String() + " left"
	}
	return fmt.Sprintf("[%s] %3d%%  %s of %s%s%s", bar, int(frac*100), HumanBytes(done), HumanBytes(total), rate, left)
}
