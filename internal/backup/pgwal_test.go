package backup

import (
	"encoding/binary"
	"os"
	"path/filepath"
	"testing"
)

// segmentBytes is a segment whose pages carry their own addresses, and
// whose last page, when last is not its own address, another one's.
func segmentBytes(s Segment, last uint64) []byte {
	b := make([]byte, SegmentSize)
	for off := 0; off < SegmentSize; off += walPageSize {
		addr := s.No*SegmentSize + uint64(off)
		if off == SegmentSize-walPageSize {
			addr = last
		}
		binary.LittleEndian.PutUint64(b[off+8:], addr)
	}
	return b
}

func TestCopySegment(t *testing.T) {
	s := Segment{TLI: 1, No: 6}
	own := s.No*SegmentSize + SegmentSize - walPageSize
	cases := []struct {
		name string
		data []byte
		ok   bool
	}{
		{"complete", segmentBytes(s, own), true},
		{"switched: last page never written", segmentBytes(s, 0), true},
		{"recycled: last page of another segment", segmentBytes(s, 2*SegmentSize), false},
		{"recycled: first page rewritten", segmentBytes(Segment{TLI: 1, No: 9}, own), false},
		{"short", segmentBytes(s, own)[:SegmentSize/2], false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			src := filepath.Join(t.TempDir(), s.Name())
			if err := os.WriteFile(src, c.data, 0o600); err != nil {
				t.Fatal(err)
			}
			spool := t.TempDir()
			err := copySegment(src, spool, s)
			if (err == nil) != c.ok {
				t.Fatalf("err %v, want ok=%v", err, c.ok)
			}
			ents, _ := os.ReadDir(spool)
			if c.ok && (len(ents) != 1 || ents[0].Name() != s.Name()) || !c.ok && len(ents) != 0 {
				t.Fatalf("spool holds %v", ents)
			}
		})
	}
}
