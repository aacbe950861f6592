// Package backup is petrel's backups and WAL archive: pushing WAL files to
// a backupstore.Store (zstd-compressed, checksummed, never overwriting a
// different copy), the archiver that runs in every agent (spool, push or
// keep, as engine.DecideArchive says), the chain check that proves the
// archive has no gap across timelines, base backups, verification and
// restores. The CLI only parses flags and prints what this package
// returns.
//
// Archive layout inside a store:
//
//	petrel-archive.json        backupstore.Marker: the cluster the store belongs to
//	wal/<file>.zst             one WAL file (segment, .partial, .history, .backup), zstd; metadata sha256 and size of the plain file
//	base/<id>/backup.json      a base backup's manifest (Backup)
//	base/<id>/base.tar.zst     its data directory, a tar stream, zstd
package backup

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/klauspost/compress/zstd"
	"github.com/petrel-db/petrel/internal/backupstore"
)

// SegmentSize is the WAL segment size: petrel's initdb keeps Postgres'
// default (it passes no --wal-segsize).
const SegmentSize = 16 << 20

// segsPerXLogID is how many segments one "xlogid" (the middle 8 hex
// digits of a segment name) holds.
const segsPerXLogID = 0x100000000 / SegmentSize

// ErrDiverged: the archive holds a different file under the same name.
// Two primaries wrote the same timeline (split brain) or the archive was
// tampered with; it is never overwritten.
var ErrDiverged = errors.New("archived WAL differs from the local copy (split brain?)")

// ErrCorrupt: an archived file does not match its recorded checksum.
var ErrCorrupt = errors.New("archived WAL is corrupt")

// Metadata keys on archived objects.
const (
	metaSHA256 = "sha256" // hex SHA-256 of the uncompressed file
	metaSize   = "size"   // uncompressed size
	metaNode   = "node"   // member that pushed it
)

var (
	segmentRe = regexp.MustCompile(`^([0-9A-F]{8})([0-9A-F]{8})([0-9A-F]{8})$`)
	walFileRe = regexp.MustCompile(`^[0-9A-F]{24}(\.partial|\.[0-9A-F]{8}\.backup)?$|^[0-9A-F]{8}\.history$`)
)

// ValidWALName reports whether name is a file Postgres archives (a
// segment, a .partial segment, a backup history or timeline history
// file); nothing else is ever read from the spool or the archive.
func ValidWALName(name string) bool { return walFileRe.MatchString(name) }

// Segment is a WAL segment's position: its timeline and number.
type Segment struct {
	TLI uint32
	No  uint64
}

// ParseSegment parses a complete segment's file name.
func ParseSegment(name string) (Segment, bool) {
	m := segmentRe.FindStringSubmatch(name)
	if m == nil {
		return Segment{}, false
	}
	tli, _ := strconv.ParseUint(m[1], 16, 32)
	hi, _ := strconv.ParseUint(m[2], 16, 32)
	lo, _ := strconv.ParseUint(m[3], 16, 32)
	if lo >= segsPerXLogID {
		return Segment{}, false
	}
	return Segment{TLI: uint32(tli), No: hi*segsPerXLogID + lo}, true
}

// Name is the segment's file name.
func (s Segment) Name() string {
	return fmt.Sprintf("%08X%08X%08X", s.TLI, s.No/segsPerXLogID, s.No%segsPerXLogID)
}

// SegmentOf is the number of the segment holding lsn.
func SegmentOf(lsn uint64) uint64 { return lsn / SegmentSize }

// HistoryName is timeline tli's history file name.
func HistoryName(tli uint32) string { return fmt.Sprintf("%08X.history", tli) }

// WALKey is where file name is archived.
func WALKey(name string) string { return "wal/" + name + ".zst" }

// PushResult says what a push did.
type PushResult struct {
	Uploaded bool   // false: the archive already held an identical copy
	Bytes    int64  // compressed bytes written
	SHA256   string // of the plain file
}

// Push archives the file at path under name: compressed with zstd, its
// SHA-256 and size as metadata. A file already archived with the same
// checksum is fine (a repeated push after a crash or a failover); one
// with a different checksum is ErrDiverged and is left alone.
func Push(ctx context.Context, st backupstore.Store, name, path, node string) (PushResult, error) {
	if !ValidWALName(name) {
		return PushResult{}, fmt.Errorf("pushing %q: not a WAL file name", name)
	}
	sum, size, err := fileSHA256(path)
	if err != nil {
		return PushResult{}, fmt.Errorf("pushing %s: %w", name, err)
	}
	res := PushResult{SHA256: sum}
	if same, err := archivedSame(ctx, st, name, sum); err != nil || same {
		return res, err
	}
	f, err := os.Open(path)
	if err != nil {
		return res, fmt.Errorf("pushing %s: %w", name, err)
	}
	defer f.Close()
	// Compress into a pipe: the store reads as the encoder writes, so a
	// segment is never held whole in memory.
	pr, pw := io.Pipe()
	counted := &countingReader{r: pr}
	go func() {
		enc, err := zstd.NewWriter(pw, zstd.WithEncoderLevel(zstd.SpeedDefault), zstd.WithEncoderConcurrency(1))
		if err == nil {
			_, err = io.Copy(enc, f)
			if cerr := enc.Close(); err == nil {
				err = cerr
			}
		}
		pw.CloseWithError(err)
	}()
	meta := map[string]string{metaSHA256: sum, metaSize: strconv.FormatInt(size, 10), metaNode: node}
	err = st.Put(ctx, WALKey(name), counted, meta)
	pr.CloseWithError(errors.New("upload ended")) // stops the encoder if Put returned early
	res.Bytes = counted.n
	if errors.Is(err, backupstore.ErrExists) {
		// Someone pushed it meanwhile (a former leader's last upload).
		same, err := archivedSame(ctx, st, name, sum)
		if err == nil && !same {
			err = fmt.Errorf("pushing %s: %w", name, ErrDiverged)
		}
		return res, err
	}
	if err != nil {
		return res, fmt.Errorf("pushing %s: %w", name, err)
	}
	res.Uploaded = true
	return res, nil
}

// Archived reports whether the archive holds name with checksum sum;
// ErrDiverged when it holds a different one.
func Archived(ctx context.Context, st backupstore.Store, name, path string) (bool, error) {
	sum, _, err := fileSHA256(path)
	if err != nil {
		return false, err
	}
	return archivedSame(ctx, st, name, sum)
}

func archivedSame(ctx context.Context, st backupstore.Store, name, sum string) (bool, error) {
	o, err := st.Stat(ctx, WALKey(name))
	switch {
	case errors.Is(err, backupstore.ErrNotFound):
		return false, nil
	case err != nil:
		return false, err
	case o.Meta[metaSHA256] != sum:
		return false, fmt.Errorf("%s: archived sha256 %s (pushed by %s), local %s: %w", name, o.Meta[metaSHA256], orUnknown(o.Meta[metaNode]), sum, ErrDiverged)
	}
	return true, nil
}

// Fetch writes archived file name to w, checking its checksum; a
// mismatch is ErrCorrupt.
func Fetch(ctx context.Context, st backupstore.Store, name string, w io.Writer) error {
	o, err := st.Stat(ctx, WALKey(name))
	if err != nil {
		return fmt.Errorf("fetching %s: %w", name, err)
	}
	r, err := st.Get(ctx, WALKey(name))
	if err != nil {
		return fmt.Errorf("fetching %s: %w", name, err)
	}
	defer r.Close()
	dec, err := zstd.NewReader(r, zstd.WithDecoderConcurrency(1))
	if err != nil {
		return fmt.Errorf("fetching %s: %w", name, err)
	}
	defer dec.Close()
	h := sha256.New()
	n, err := io.Copy(io.MultiWriter(w, h), dec)
	if err != nil {
		return fmt.Errorf("fetching %s: %w: %w", name, ErrCorrupt, err)
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != o.Meta[metaSHA256] || strconv.FormatInt(n, 10) != o.Meta[metaSize] {
		return fmt.Errorf("fetching %s: sha256 %s size %d, recorded %s size %s: %w", name, got, n, o.Meta[metaSHA256], o.Meta[metaSize], ErrCorrupt)
	}
	return nil
}

// FetchBytes is Fetch into memory (history files).
func FetchBytes(ctx context.Context, st backupstore.Store, name string) ([]byte, error) {
	var b bytes.Buffer
	err := Fetch(ctx, st, name, &b)
	return b.Bytes(), err
}

func fileSHA256(path string) (string, int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", 0, err
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.Copy(h, f)
	if err != nil {
		return "", 0, err
	}
	return hex.EncodeToString(h.Sum(nil)), n, nil
}

type countingReader struct {
	r      io.Reader
	n      int64
	report func(int64) // told the running count, if set
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	if c.report != nil && n > 0 {
		c.report(c.n)
	}
	return n, err
}

func orUnknown(s string) string {
	if s == "" {
		return "unknown"
	}
	return s
}

// withTimeout bounds one archive step (an upload, a stat): a hung store
// shows as a failed step, not as an agent waiting forever.
func withTimeout(ctx context.Context, d time.Duration) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, d)
}

// trimZst is the WAL file name of an archived key (wal/<name>.zst).
func trimZst(key string) (string, bool) {
	name, ok := strings.CutPrefix(key, "wal/")
	if !ok {
		return "", false
	}
	name, ok = strings.CutSuffix(name, ".zst")
	return name, ok && ValidWALName(name)
}
