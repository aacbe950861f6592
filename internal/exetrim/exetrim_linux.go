package exetrim

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// Trim drops this process's mappings of its executable's read-only
// segments (code and read-only data) and returns how many bytes of
// address space it covered.
func Trim() (int, error) {
	exe, err := os.Readlink("/proc/self/exe")
	if err != nil {
		return 0, fmt.Errorf("finding the executable: %w", err)
	}
	f, err := os.Open("/proc/self/maps")
	if err != nil {
		return 0, fmt.Errorf("reading the mappings: %w", err)
	}
	defer f.Close()
	spans, err := readOnlySpans(f, exe)
	if err != nil {
		return 0, err
	}
	n := 0
	for _, s := range spans {
		// MADV_DONTNEED on a private read-only file mapping only removes
		// the page table entries: the next access faults the same page
		// back in from the page cache.
		if _, _, e := unix.Syscall(unix.SYS_MADVISE, s.lo, s.hi-s.lo, unix.MADV_DONTNEED); e != 0 {
			return n, fmt.Errorf("madvise of %#x-%#x: %w", s.lo, s.hi, e)
		}
		n += int(s.hi - s.lo)
	}
	return n, nil
}

type span struct{ lo, hi uintptr }

// readOnlySpans parses /proc/self/maps for the mappings of path with no
// write permission.
func readOnlySpans(r io.Reader, path string) ([]span, error) {
	var spans []span
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		// address perms offset dev inode path
		fields := strings.Fields(sc.Text())
		if len(fields) < 6 || strings.Join(fields[5:], " ") != path || len(fields[1]) < 2 || fields[1][1] != '-' {
			continue
		}
		lo, hi, ok := strings.Cut(fields[0], "-")
		if !ok {
			continue
		}
		l, err1 := strconv.ParseUint(lo, 16, 64)
		h, err2 := strconv.ParseUint(hi, 16, 64)
		if err1 != nil || err2 != nil || h <= l {
			continue
		}
		spans = append(spans, span{uintptr(l), uintptr(h)})
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("reading the mappings: %w", err)
	}
	return spans, nil
}
