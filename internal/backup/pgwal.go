package backup

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
)

// walPageSize is Postgres' XLOG_BLCKSZ (the default, as petrel builds no
// server of its own).
const walPageSize = 8192

// spoolOldTimeline copies into the spool the complete segments of older
// timelines on tli's path that pg_wal still holds and the archive lacks.
// A standby marks a streamed segment for archiving only when its WAL
// receiver closes it, which it never does for the last segment before
// the old leader died; so after a promotion the new leader looks in
// pg_wal itself (the known fix for the failover gap). Each copy is
// checked to be the segment its name says (first and last page headers),
// so a file Postgres recycled meanwhile is never archived under the old
// name.
func (a *Archiver) spoolOldTimeline(ctx context.Context, tli uint32) (int, error) {
	if a.c.WALDir == "" || tli <= 1 {
		return 0, nil
	}
	hist, ok := a.history(ctx, tli)
	if !ok {
		return 0, fmt.Errorf("timeline %d's history is not archived yet", tli)
	}
	ents, err := os.ReadDir(a.c.WALDir)
	if err != nil {
		return 0, err
	}
	copied := 0
	for _, e := range ents {
		s, ok := ParseSegment(e.Name())
		if !ok || s.TLI >= tli || a.offPathIn(s, hist) {
			continue
		}
		cctx, cancel := withTimeout(ctx, a.c.StepTimeout)
		same, err := Archived(cctx, a.st, e.Name(), filepath.Join(a.c.WALDir, e.Name()))
		cancel()
		if same || errors.Is(err, os.ErrNotExist) {
			continue // archived, or recycled since the listing
		}
		// A differing copy in the archive: spool it anyway, so the push
		// reports the divergence loudly.
		if err := copySegment(filepath.Join(a.c.WALDir, e.Name()), a.c.Spool, s); err != nil {
			a.c.Log.Warn("not spooling an old-timeline segment from pg_wal", "file", e.Name(), "err", err)
			continue
		}
		copied++
	}
	return copied, nil
}

func (a *Archiver) offPathIn(s Segment, hist []HistoryEntry) bool {
	for _, h := range hist {
		if h.TLI == s.TLI {
			return s.No >= SegmentOf(h.End)
		}
	}
	return true
}

// copySegment copies segment file src into dir (through a temporary
// name, so the spool never shows a partial file), after checking it is
// complete and its first and last pages belong to segment s.
func copySegment(src, dir string, s Segment) error {
	f, err := os.Open(src)
	if err != nil {
		return err
	}
	defer f.Close()
	tmp, err := os.CreateTemp(dir, "petreltemp."+s.Name()+".")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	n, err := io.Copy(tmp, f)
	if err == nil && n != SegmentSize {
		err = fmt.Errorf("%d bytes, not a complete segment", n)
	}
	if err == nil {
		err = checkPageAddr(tmp, 0, s.No*SegmentSize, s.No*SegmentSize)
	}
	if err == nil {
		// The last page may be zeros (a segment ended by a WAL switch is
		// not padded on a standby); a recycled file's is another address.
		err = checkPageAddr(tmp, SegmentSize-walPageSize, s.No*SegmentSize+SegmentSize-walPageSize, 0)
	}
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	return os.Rename(tmp.Name(), filepath.Join(dir, s.Name()))
}

// checkPageAddr checks the WAL page header at off names address want or
// orZero (xlp_pageaddr, after xlp_magic, xlp_info and xlp_tli; 0 is an
// unwritten page).
func checkPageAddr(f *os.File, off int64, want, orZero uint64) error {
	var hdr [16]byte
	if _, err := f.ReadAt(hdr[:], off); err != nil {
		return err
	}
	if got := binary.LittleEndian.Uint64(hdr[8:]); got != want && got != orZero {
		return fmt.Errorf("page at offset %d is for WAL address %X, not %X (recycled?)", off, got, want)
	}
	return nil
}
