package backup

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"sort"
	"strconv"
	"strings"

	"github.com/petrel-db/petrel/internal/backupstore"
	"github.com/petrel-db/petrel/internal/pg"
)

// HistoryEntry is one line of a timeline history file: timeline TLI
// ended at End, where its child timeline begins.
type HistoryEntry struct {
	TLI uint32
	End uint64
}

// ParseHistory parses a timeline history file (Postgres' format:
// "parentTLI<TAB>switchpoint<TAB>reason", comments with #).
func ParseHistory(data []byte) ([]HistoryEntry, error) {
	var out []HistoryEntry
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		f := strings.Fields(line)
		if len(f) < 2 {
			return nil, fmt.Errorf("history line %q: want timeline and switch point", line)
		}
		tli, err := strconv.ParseUint(f[0], 10, 32)
		if err != nil {
			return nil, fmt.Errorf("history line %q: %w", line, err)
		}
		end, err := pg.ParseLSN(f[1])
		if err != nil {
			return nil, fmt.Errorf("history line %q: %w", line, err)
		}
		if len(out) > 0 && (uint32(tli) <= out[len(out)-1].TLI || end < out[len(out)-1].End) {
			return nil, fmt.Errorf("history line %q: timelines or switch points out of order", line)
		}
		out = append(out, HistoryEntry{TLI: uint32(tli), End: end})
	}
	return out, sc.Err()
}

// Gap is a run of segments missing from the archive on one timeline.
type Gap struct {
	TLI  uint32 `json:"timeline"`
	From string `json:"from"` // first missing segment
	To   string `json:"to"`   // last missing segment
}

func (g Gap) String() string {
	if g.From == g.To {
		return fmt.Sprintf("timeline %d: %s", g.TLI, g.From)
	}
	return fmt.Sprintf("timeline %d: %s..%s", g.TLI, g.From, g.To)
}

// Chain is what CheckChain found: the segments a restore replays from
// From to the newest archived segment on Timeline, and any missing.
type Chain struct {
	Timeline uint32 `json:"timeline"`
	From     string `json:"from,omitempty"` // first segment of the chain
	To       string `json:"to,omitempty"`   // newest complete segment archived on Timeline's path
	Segments int    `json:"segments"`       // segments the chain needs
	Gaps     []Gap  `json:"gaps,omitempty"`
	// MissingHistory names history files of the chain's timelines that
	// the archive lacks (a restore cannot follow the switch without them).
	MissingHistory []string `json:"missing_history,omitempty"`
}

// OK says the chain is complete.
func (c Chain) OK() bool { return len(c.Gaps) == 0 && len(c.MissingHistory) == 0 }

// Summary is one line for logs and the CLI.
func (c Chain) Summary() string {
	if c.OK() {
		if c.Segments == 0 {
			return fmt.Sprintf("timeline %d: no complete segment archived yet", c.Timeline)
		}
		return fmt.Sprintf("timeline %d: %d segments %s..%s, no gap", c.Timeline, c.Segments, c.From, c.To)
	}
	var parts []string
	for _, g := range c.Gaps {
		parts = append(parts, g.String())
	}
	for _, h := range c.MissingHistory {
		parts = append(parts, "missing "+h)
	}
	return fmt.Sprintf("timeline %d: GAPS: %s", c.Timeline, strings.Join(parts, "; "))
}

// Listing is the archive's WAL files by name.
type Listing map[string]bool

// ListWAL lists the archived WAL files.
func ListWAL(ctx context.Context, st backupstore.Store) (Listing, error) {
	objs, err := st.List(ctx, "wal/")
	if err != nil {
		return nil, err
	}
	l := Listing{}
	for _, o := range objs {
		if name, ok := trimZst(o.Key); ok {
			l[name] = true
		}
	}
	return l, nil
}

// CheckChain checks that the archive holds every segment a restore
// replays from segment number from (0: the oldest segment archived on
// the chain's timelines) along timeline tli's history up to the newest
// complete segment archived on it, and the history files to switch
// timelines. Each segment is looked for on the timeline recovery reads it
// from: a segment before a switch point's segment on the old timeline,
// from the switch point's segment on, the new one.
func CheckChain(ctx context.Context, st backupstore.Store, tli uint32, from uint64) (Chain, error) {
	l, err := ListWAL(ctx, st)
	if err != nil {
		return Chain{}, err
	}
	var hist []HistoryEntry
	if tli > 1 {
		if !l[HistoryName(tli)] {
			c := Chain{Timeline: tli, MissingHistory: []string{HistoryName(tli)}}
			return c, nil
		}
		data, err := FetchBytes(ctx, st, HistoryName(tli))
		if err != nil {
			return Chain{}, err
		}
		if hist, err = ParseHistory(data); err != nil {
			return Chain{}, fmt.Errorf("%s: %w", HistoryName(tli), err)
		}
	}
	return l.chain(tli, hist, from), nil
}

// chain is CheckChain on a listing and tli's parsed history.
func (l Listing) chain(tli uint32, hist []HistoryEntry, from uint64) Chain {
	c := Chain{Timeline: tli}
	// The oldest and newest complete segments archived on tli's path.
	var oldest, newest uint64
	have := false
	for name := range l {
		s, ok := ParseSegment(name)
		if !ok || segmentFor(s.No, hist, tli) != s {
			continue
		}
		if !have || s.No < oldest {
			oldest = s.No
		}
		if !have || s.No > newest {
			newest = s.No
		}
		have = true
	}
	// The WAL up to the last switch point is known to exist: the chain
	// reaches at least the segment before the switch point's.
	if n := len(hist); n > 0 && SegmentOf(hist[n-1].End) > 0 {
		if last := SegmentOf(hist[n-1].End) - 1; !have {
			oldest, newest, have = last, last, true
		} else if last > newest {
			newest = last
		}
	}
	if !have || from > newest {
		return c
	}
	if from == 0 {
		from = oldest
	}
	c.From = segmentFor(from, hist, tli).Name()
	c.To = segmentFor(newest, hist, tli).Name()
	var cur *Gap
	for no := from; no <= newest; no++ {
		seg := segmentFor(no, hist, tli)
		c.Segments++
		if l[seg.Name()] {
			cur = nil
			continue
		}
		if cur != nil && cur.TLI == seg.TLI {
			cur.To = seg.Name()
			continue
		}
		c.Gaps = append(c.Gaps, Gap{TLI: seg.TLI, From: seg.Name(), To: seg.Name()})
		cur = &c.Gaps[len(c.Gaps)-1]
	}
	return c
}

// segmentFor is the segment recovery reads for number no on tli's path:
// on the oldest timeline whose switch point lies in a later segment (the
// switch point's own segment is read from the child timeline, whose copy
// holds the old timeline's WAL up to the switch).
func segmentFor(no uint64, hist []HistoryEntry, tli uint32) Segment {
	for _, h := range hist {
		if no < SegmentOf(h.End) {
			return Segment{TLI: h.TLI, No: no}
		}
	}
	return Segment{TLI: tli, No: no}
}

func sortedNames(l Listing) []string {
	out := make([]string, 0, len(l))
	for n := range l {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}
