//go:build linux

package exetrim

import (
	"os"
	"strconv"
	"strings"
	"testing"
)

func TestReadOnlySpans(t *testing.T) {
	smaps := `00400000-00f89000 r-xp 00000000 fe:00 9986041                            /bin/petrel node
Size:              11812 kB
Rss:               10596 kB
Anonymous:             0 kB
00f89000-01d0f000 r--p 00b89000 fe:00 9986041                            /bin/petrel node
Rss:               11416 kB
Anonymous:             0 kB
01d0f000-01d20000 r--p 0190f000 fe:00 9986041                            /bin/petrel node
Rss:                  68 kB
Anonymous:            68 kB
01d20000-01dbb000 rw-p 0190f000 fe:00 9986041                            /bin/petrel node
Anonymous:           100 kB
01dbb000-03e0a000 rw-p 00000000 00:00 0
Anonymous:             4 kB
7f97a1f6e000-7f97a2300000 r--p 00000000 fe:00 1 /bin/other
Anonymous:             0 kB
`
	got, err := readOnlySpans(strings.NewReader(smaps), "/bin/petrel node")
	if err != nil {
		t.Fatal(err)
	}
	// Not the written (relocated) read-only mapping, not the writable one.
	want := []span{{0x400000, 0xf89000}, {0xf89000, 0x1d0f000}}
	if len(got) != len(want) || got[0] != want[0] || got[1] != want[1] {
		t.Fatalf("spans %x, want %x", got, want)
	}
}

// TestTrim: the executable's resident pages shrink, and the program runs
// on (the pages come back on use).
func TestTrim(t *testing.T) {
	before := rssFile(t)
	n, err := Trim()
	if err != nil || n == 0 {
		t.Fatalf("trim: %d bytes, %v", n, err)
	}
	after := rssFile(t)
	if after >= before {
		t.Fatalf("RssFile %d kB before, %d kB after", before, after)
	}
	if s := strconv.Itoa(before); s == "" { // runs code again after the trim
		t.Fatal("unreachable")
	}
}

func rssFile(t *testing.T) int {
	t.Helper()
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "RssFile:"); ok {
			n, err := strconv.Atoi(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")))
			if err != nil {
				t.Fatal(err)
			}
			return n
		}
	}
	t.Fatal("no RssFile in /proc/self/status")
	return 0
}
