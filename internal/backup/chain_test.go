package backup

import (
	"reflect"
	"testing"
)

func TestParseSegment(t *testing.T) {
	s, ok := ParseSegment("000000020000000100000003")
	if !ok || s.TLI != 2 || s.No != segsPerXLogID+3 {
		t.Fatalf("%+v %v", s, ok)
	}
	if s.Name() != "000000020000000100000003" {
		t.Fatal(s.Name())
	}
	for _, bad := range []string{"00000002000000010000000", "000000020000000100000100", "00000002.history", "000000020000000100000003.partial", "../../etc/passwd"} {
		if _, ok := ParseSegment(bad); ok {
			t.Errorf("%q parsed", bad)
		}
	}
	for _, name := range []string{"000000020000000100000003", "000000020000000100000003.partial", "00000002.history", "000000010000000000000002.00000028.backup"} {
		if !ValidWALName(name) {
			t.Errorf("%q refused", name)
		}
	}
	for _, name := range []string{"", "x", "../000000020000000100000003", "000000020000000100000003/..", "00000002.history.tmp"} {
		if ValidWALName(name) {
			t.Errorf("%q accepted", name)
		}
	}
}

func TestParseHistory(t *testing.T) {
	h, err := ParseHistory([]byte("1\t0/5000A28\tno recovery target specified\n\n2\t0/7000000\tno recovery target specified\n"))
	if err != nil {
		t.Fatal(err)
	}
	want := []HistoryEntry{{1, 0x5000A28}, {2, 0x7000000}}
	if !reflect.DeepEqual(h, want) {
		t.Fatalf("%v", h)
	}
	for _, bad := range []string{"x\t0/1\n", "1\tzz\n", "2\t0/5\n1\t0/6\n", "1\n"} {
		if _, err := ParseHistory([]byte(bad)); err == nil {
			t.Errorf("%q parsed", bad)
		}
	}
}

func seg(tli uint32, no uint64) string { return Segment{TLI: tli, No: no}.Name() }

func TestChain(t *testing.T) {
	// Timeline 1 to segment 5, where timeline 2 began at 0/5000A28
	// (inside segment 5), which ended at 0/7000000 (segment 7's start).
	hist3 := []HistoryEntry{{1, 0x5000A28}, {2, 0x7000000}}
	full := Listing{}
	for no := uint64(1); no < 5; no++ {
		full[seg(1, no)] = true
	}
	full[seg(1, 5)+".partial"] = true
	full[seg(2, 5)] = true
	full[seg(2, 6)] = true
	full[seg(3, 7)] = true
	full[seg(3, 8)] = true
	cases := []struct {
		name   string
		drop   []string
		add    []string
		tli    uint32
		hist   []HistoryEntry
		from   uint64
		gaps   []Gap
		segs   int
		fromTo [2]string
	}{
		{name: "complete", tli: 3, hist: hist3, segs: 8, fromTo: [2]string{seg(1, 1), seg(3, 8)}},
		{name: "from a backup's segment", tli: 3, hist: hist3, from: 4, segs: 5, fromTo: [2]string{seg(1, 4), seg(3, 8)}},
		{name: "old timeline's segment lost in the failover", drop: []string{seg(1, 3), seg(1, 4)}, tli: 3, hist: hist3, segs: 8,
			gaps: []Gap{{1, seg(1, 3), seg(1, 4)}}, fromTo: [2]string{seg(1, 1), seg(3, 8)}},
		{name: "gap on each timeline", drop: []string{seg(1, 2), seg(2, 6)}, tli: 3, hist: hist3, segs: 8,
			gaps: []Gap{{1, seg(1, 2), seg(1, 2)}, {2, seg(2, 6), seg(2, 6)}}, fromTo: [2]string{seg(1, 1), seg(3, 8)}},
		{name: "the switch segment only on the old timeline does not count", drop: []string{seg(2, 5)}, add: []string{seg(1, 5)}, tli: 3, hist: hist3, segs: 8,
			gaps: []Gap{{2, seg(2, 5), seg(2, 5)}}, fromTo: [2]string{seg(1, 1), seg(3, 8)}},
		{name: "the old timeline's last segment never archived", drop: []string{seg(2, 6), seg(3, 7), seg(3, 8)}, tli: 3, hist: hist3, segs: 6,
			gaps: []Gap{{2, seg(2, 6), seg(2, 6)}}, fromTo: [2]string{seg(1, 1), seg(2, 6)}},
		{name: "timeline 1 alone", tli: 1, segs: 4, fromTo: [2]string{seg(1, 1), seg(1, 4)}},
		{name: "new timeline, nothing complete on it yet", drop: []string{seg(3, 7), seg(3, 8)}, tli: 3, hist: hist3, segs: 6, fromTo: [2]string{seg(1, 1), seg(2, 6)}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			l := Listing{}
			for k := range full {
				l[k] = true
			}
			for _, d := range c.drop {
				delete(l, d)
			}
			for _, a := range c.add {
				l[a] = true
			}
			got := l.chain(c.tli, c.hist, c.from)
			if !reflect.DeepEqual(got.Gaps, c.gaps) || got.Segments != c.segs || got.From != c.fromTo[0] || got.To != c.fromTo[1] {
				t.Fatalf("got %+v\nwant gaps %v segments %d %v", got, c.gaps, c.segs, c.fromTo)
			}
			if got.OK() != (len(c.gaps) == 0) {
				t.Fatal("OK disagrees with the gaps")
			}
		})
	}
}
