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
	f, err := os.Open("/proc/self/smaps")
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

// readOnlySpans parses /proc/self/smaps for the mappings of path with no
// write permission and no anonymous (copied-on-write) page. A read-only
// mapping can hold written pages (a position-independent executable's
// relocated tables, made read-only after relocation): dropping those
// would bring back the file's unrelocated bytes, so such a mapping is
// never trimmed.
func readOnlySpans(r io.Reader, path string) ([]span, error) {
	var spans []span
	var cur *span // the mapping whose fields follow, if it is a candidate
	flush := func() {
		if cur != nil {
			spans = append(spans, *cur)
			cur = nil
		}
	}
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) == 0 {
			continue
		}
		if lo, hi, ok := strings.Cut(fields[0], "-"); ok && len(fields) >= 5 {
			// A mapping's header: address perms offset dev inode [path].
			flush()
			if len(fields) < 6 || strings.Join(fields[5:], " ") != path || len(fields[1]) < 2 || fields[1][1] != '-' {
				continue
			}
			l, err1 := strconv.ParseUint(lo, 16, 64)
			h, err2 := strconv.ParseUint(hi, 16, 64)
			if err1 != nil || err2 != nil || h <= l {
				continue
			}
			cur = &span{uintptr(l), uintptr(h)}
			continue
		}
		if cur != nil && fields[0] == "Anonymous:" && (len(fields) < 2 || fields[1] != "0") {
			cur = nil // it holds written pages
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("reading the mappings: %w", err)
	}
	flush()
	return spans, nil
}
