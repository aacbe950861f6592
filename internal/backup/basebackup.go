package backup

import (
	"archive/tar"
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/klauspost/compress/zstd"
	"github.com/petrel-db/petrel/internal/backupstore"
	"github.com/petrel-db/petrel/internal/model"
	"github.com/petrel-db/petrel/internal/pg"
)

// Source is the server a base backup is taken from (a streaming replica
// when there is one, so the leader is not loaded).
type Source struct {
	Member   string
	Host     string
	Port     int
	User     string // a role with REPLICATION (petrel's replicator)
	Password string
	// SSLRootCert is the cluster CA file (verify-full); "" connects with
	// sslmode=prefer (a loopback `petrel up` member).
	SSLRootCert string
	PGBin       string // directory of pg_basebackup ("" = PATH)
	SystemID    string
	// SwitchWAL, for a standby source, switches WAL segments on the
	// primary. With archive_mode = always a standby's backup ends only
	// once its end segment is archived, and only the primary can end a
	// segment: without a switch the backup waits up to archive_timeout.
	// It is called when the stream stalls (see stallSwitch).
	SwitchWAL func(context.Context) error
}

// stallSwitch calls sw each time the stream read through a has been
// idle for 2 s, at most every 10 s, until done closes.
func stallSwitch(ctx context.Context, a *activity, sw func(context.Context) error, done <-chan struct{}) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	var last time.Time
	for {
		select {
		case <-done:
			return
		case <-ctx.Done():
			return
		case now := <-t.C:
			if now.Sub(a.last()) < 2*time.Second || now.Sub(last) < 10*time.Second {
				continue
			}
			last = now
			sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			_ = sw(sctx) // best effort: the backup still ends at archive_timeout
			cancel()
		}
	}
}

// activity remembers when its reader last returned data.
type activity struct {
	r  io.Reader
	at atomic.Int64 // unix nanoseconds
}

func newActivity(r io.Reader) *activity {
	a := &activity{r: r}
	a.at.Store(time.Now().UnixNano())
	return a
}

func (a *activity) Read(p []byte) (int, error) {
	n, err := a.r.Read(p)
	if n > 0 {
		a.at.Store(time.Now().UnixNano())
	}
	return n, err
}

func (a *activity) last() time.Time {
	return time.Unix(0, a.at.Load())
}

// Progress is how far a base backup got: the bytes of the tar stream read
// so far, and the server's estimate of the whole (0 until pg_basebackup
// reported it; the stream runs a little past it: tar headers, the
// manifest).
type Progress struct {
	Read, Total int64
	// ID and Source are the backup's id and the member it is taken
	// from (Create sets them); Role is the source's role (its caller's).
	ID, Source, Role string
}

// estimate picks the total out of pg_basebackup -P's stderr lines
// ("  1234/56789 kB (2%), 0/1 tablespace").
type estimate struct {
	total atomic.Int64
	line  []byte // the unterminated rest of what was written
}

var progressLine = regexp.MustCompile(`(\d+)/(\d+) kB \(`)

func (e *estimate) Write(p []byte) (int, error) {
	e.line = append(e.line, p...)
	for {
		i := bytes.IndexAny(e.line, "\r\n")
		if i < 0 {
			break
		}
		if m := progressLine.FindSubmatch(e.line[:i]); m != nil {
			if kb, err := strconv.ParseInt(string(m[2]), 10, 64); err == nil && kb > 0 {
				e.total.Store(kb << 10)
			}
		}
		e.line = e.line[i+1:]
	}
	if len(e.line) > 4096 { // no line of pg_basebackup's is that long
		e.line = e.line[:0]
	}
	return len(p), nil
}

// walRange is a backup's WAL range, from its backup_manifest.
type walRange struct {
	StartTLI   uint32 // the timeline of Start (a standby's backup may span a switch)
	Timeline   uint32
	Start, End string
	err        error
}

// readWALRange reads a base backup's tar stream to its end and returns
// the last WAL range of the backup_manifest in it; an error reading the
// stream (a decompressor's) is the result's error.
func readWALRange(r io.Reader) walRange {
	wr := findWALRange(r)
	if _, err := io.Copy(io.Discard, r); err != nil && wr.err == nil {
		wr.err = err
	}
	return wr
}

func findWALRange(r io.Reader) walRange {
	t := tar.NewReader(r)
	for {
		h, err := t.Next()
		if err == io.EOF {
			return walRange{err: fmt.Errorf("no backup_manifest in the backup")}
		}
		if err != nil {
			return walRange{err: err}
		}
		if h.Name != "backup_manifest" {
			continue
		}
		var m struct {
			WALRanges []struct {
				Timeline uint32 `json:"Timeline"`
				Start    string `json:"Start-LSN"`
				End      string `json:"End-LSN"`
			} `json:"WAL-Ranges"`
		}
		if err := json.NewDecoder(io.LimitReader(t, 256<<20)).Decode(&m); err != nil {
			return walRange{err: fmt.Errorf("decoding backup_manifest: %w", err)}
		}
		if len(m.WALRanges) == 0 {
			return walRange{err: fmt.Errorf("backup_manifest has no WAL range")}
		}
		w := m.WALRanges[len(m.WALRanges)-1]
		return walRange{StartTLI: m.WALRanges[0].Timeline, Timeline: w.Timeline, Start: m.WALRanges[0].Start, End: w.End}
	}
}

// Create takes a base backup of src with pg_basebackup (tar format, to
// stdout, without WAL: the archive holds it) and stores it compressed
// with its manifest. progress, if set, is told how far it got as bytes
// arrive.
//
// pg_basebackup compresses the stream itself (libzstd, -Z
// client-zstd:level=1, after putting backup_manifest into the tar); this
// process checksums and stores what it writes, and decompresses a copy to
// count the tar bytes and read the manifest's WAL range. On two cores
// that takes a fraction of the CPU of compressing here (klauspost's
// encoder: bench/backup), and what is stored is the same: a zstd stream
// of the tar. A pg_basebackup built without zstd gets the stream
// compressed here instead.
func Create(ctx context.Context, st backupstore.Store, src Source, progress func(Progress)) (Backup, error) {
	b, err := create(ctx, st, src, progress, true)
	if errors.Is(err, errNoClientZstd) {
		b, err = create(ctx, st, src, progress, false)
	}
	return b, err
}

// errNoClientZstd: this pg_basebackup cannot compress with zstd.
var errNoClientZstd = errors.New("pg_basebackup does not support zstd compression")

func create(ctx context.Context, st backupstore.Store, src Source, progress func(Progress), clientZstd bool) (Backup, error) {
	b := Backup{ID: time.Now().UTC().Format("20060102T150405Z") + "-" + randHex(3), Source: src.Member, StartTime: time.Now().UTC(), SystemID: src.SystemID}
	dir, err := os.MkdirTemp("", "petrel-backup")
	if err != nil {
		return b, err
	}
	defer os.RemoveAll(dir)
	pass := filepath.Join(dir, "pgpass")
	esc := func(v string) string { return strings.ReplaceAll(strings.ReplaceAll(v, `\`, `\\`), ":", `\:`) }
	if err := os.WriteFile(pass, []byte(fmt.Sprintf("*:*:*:%s:%s\n", esc(src.User), esc(src.Password))), 0o600); err != nil {
		return b, err
	}
	bin := "pg_basebackup"
	if src.PGBin != "" {
		bin = filepath.Join(src.PGBin, bin)
	}
	// -P: the server first adds up the data directory's size (stat calls
	// only), and pg_basebackup reports "done/total kB" on stderr about once
	// a second; the total gives the progress bar its end.
	args := []string{"-D", "-", "-F", "t", "-X", "none", "-c", "fast", "-v", "-P", "--no-password",
		"-h", src.Host, "-p", strconv.Itoa(src.Port), "-U", src.User}
	if clientZstd {
		args = append(args, "-Z", "client-zstd:level=1")
	}
	cmd := exec.CommandContext(ctx, bin, args...)
	env := []string{"PATH=" + os.Getenv("PATH"), "LC_ALL=C", "PGPASSFILE=" + pass, "PGCONNECT_TIMEOUT=10", "PGAPPNAME=petrel_backup"}
	if src.SSLRootCert != "" {
		env = append(env, "PGSSLMODE=verify-full", "PGSSLROOTCERT="+src.SSLRootCert)
	} else {
		env = append(env, "PGSSLMODE=prefer")
	}
	cmd.Env = env
	var stderr bytes.Buffer
	est := &estimate{}
	cmd.Stderr = io.MultiWriter(&stderr, est)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return b, err
	}
	if err := cmd.Start(); err != nil {
		return b, fmt.Errorf("starting pg_basebackup: %w", err)
	}
	act := newActivity(stdout)
	out := bufio.NewReaderSize(act, 64<<10)
	if src.SwitchWAL != nil {
		stop := make(chan struct{})
		defer close(stop)
		go stallSwitch(ctx, act, src.SwitchWAL, stop)
	}
	// Nothing is stored before pg_basebackup wrote something: one that
	// fails at once (no connection, no zstd) leaves no object behind.
	if _, err := out.Peek(1); err != nil {
		waitErr := cmd.Wait()
		if clientZstd && strings.Contains(stderr.String(), "does not support compression") {
			return b, errNoClientZstd
		}
		if waitErr == nil {
			waitErr = fmt.Errorf("no output: %w", err)
		}
		return b, fmt.Errorf("pg_basebackup from %s: %w: %s", src.Member, waitErr, tail(stderr.String()))
	}
	// The stored stream: pg_basebackup's, or compressed here.
	var compressed io.Reader = out
	encDone := make(chan struct{})
	var encR *io.PipeReader
	if clientZstd {
		close(encDone)
	} else {
		var encW *io.PipeWriter
		encR, encW = io.Pipe()
		compressed = encR
		go func() {
			defer close(encDone)
			enc, err := zstd.NewWriter(encW, zstd.WithEncoderLevel(zstd.SpeedFastest), zstd.WithEncoderConcurrency(2))
			if err == nil {
				_, err = io.Copy(enc, out)
				if cerr := enc.Close(); err == nil {
					err = cerr
				}
			}
			encW.CloseWithError(err)
		}()
	}
	// stored → sha256 + store; a copy is decompressed to count the tar
	// bytes (the progress) and to pick backup_manifest's WAL range out.
	var report func(int64)
	if progress != nil {
		report = func(n int64) { progress(Progress{Read: n, Total: est.total.Load(), ID: b.ID, Source: src.Member}) }
	}
	stored := &countingReader{r: compressed}
	dr, dw := io.Pipe()
	scanned := make(chan scanResult, 1)
	go func() { scanned <- scanCompressed(dr, report) }()
	h := sha256.New()
	putErr := st.Put(ctx, dataKey(b.ID), io.TeeReader(stored, io.MultiWriter(h, dw)), nil)
	dw.CloseWithError(putErr) // nil: the end of the stream
	if encR != nil {
		encR.CloseWithError(io.ErrClosedPipe) // stops the encoder if the upload stopped early
	}
	<-encDone
	_, _ = io.Copy(io.Discard, out) // let pg_basebackup finish if the upload stopped early
	wr := <-scanned
	waitErr := cmd.Wait()
	if waitErr != nil {
		return b, fmt.Errorf("pg_basebackup from %s: %w: %s", src.Member, waitErr, tail(stderr.String()))
	}
	if putErr != nil {
		return b, fmt.Errorf("storing backup %s: %w", b.ID, putErr)
	}
	if wr.err != nil {
		return b, fmt.Errorf("reading the backup's WAL range from its manifest: %w", wr.err)
	}
	start, err := pg.ParseLSN(wr.Start)
	if err != nil {
		return b, err
	}
	b.Timeline, b.StartLSN, b.EndLSN = wr.Timeline, wr.Start, wr.End
	b.StartSeg = Segment{TLI: wr.StartTLI, No: SegmentOf(start)}.Name()
	b.EndTime = time.Now().UTC()
	b.Size, b.Stored, b.SHA256 = wr.tarBytes, stored.n, hex.EncodeToString(h.Sum(nil))
	b.Status = "complete"
	data, _ := json.MarshalIndent(b, "", "  ")
	if err := st.Put(ctx, manifestKey(b.ID), bytes.NewReader(data), nil); err != nil {
		return b, fmt.Errorf("storing backup %s's manifest: %w", b.ID, err)
	}
	return b, nil
}

// scanResult is what scanCompressed found.
type scanResult struct {
	walRange
	tarBytes int64
}

// scanCompressed decompresses the stored stream as it is uploaded and
// reads the tar inside (readWALRange), counting its bytes for report. A
// stream it cannot decompress or read fails the upload too (the pipe is
// closed with the error). It reads r to its end: the writer must never
// block.
func scanCompressed(r *io.PipeReader, report func(int64)) scanResult {
	defer io.Copy(io.Discard, r) //nolint:errcheck // drain
	dec, err := zstd.NewReader(r, zstd.WithDecoderConcurrency(1))
	if err != nil {
		r.CloseWithError(err)
		return scanResult{walRange: walRange{err: err}}
	}
	defer dec.Close()
	cr := &countingReader{r: dec, report: report}
	wr := readWALRange(cr)
	if wr.err != nil {
		wr.err = fmt.Errorf("reading the compressed tar stream: %w", wr.err)
		r.CloseWithError(wr.err)
	}
	return scanResult{walRange: wr, tarBytes: cr.n}
}

// CheckBackup reads backup b's data back and compares its checksum.
func CheckBackup(ctx context.Context, st backupstore.Store, b Backup) error {
	r, err := st.Get(ctx, dataKey(b.ID))
	if err != nil {
		return err
	}
	defer r.Close()
	h := sha256.New()
	n, err := io.Copy(h, bufio.NewReaderSize(r, 1<<20))
	if err != nil {
		return fmt.Errorf("reading backup %s: %w", b.ID, err)
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != b.SHA256 || n != b.Stored {
		return fmt.Errorf("backup %s: sha256 %s (%d bytes), manifest %s (%d bytes): %w", b.ID, got, n, b.SHA256, b.Stored, ErrCorrupt)
	}
	return nil
}

func randHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func tail(s string) string {
	if len(s) > 600 {
		return "..." + s[len(s)-600:]
	}
	return s
}

// ChooseSource picks the member a base backup is taken from: a streaming
// replica of the primary's timeline (the freshest, so the backup ends
// close to now) so the leader is not loaded, else the primary.
func ChooseSource(sts []model.Status) (model.Status, error) {
	var primary *model.Status
	var best *model.Status
	for i := range sts {
		s := &sts[i]
		switch {
		case s.Role == model.RolePrimary:
			primary = s
		case s.Role == model.RoleReplica && s.Streaming && (best == nil || s.LSNNum > best.LSNNum):
			best = s
		}
	}
	if best != nil && (primary == nil || best.Timeline == primary.Timeline) {
		return *best, nil
	}
	if primary != nil {
		return *primary, nil
	}
	return model.Status{}, fmt.Errorf("no member to back up from: no primary and no streaming replica answered")
}
