package backup

import (
	"archive/tar"
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/klauspost/compress/zstd"
	"github.com/petrel-db/petrel/internal/backupstore"
	"github.com/petrel-db/petrel/internal/config"
	"github.com/petrel-db/petrel/internal/model"
	"github.com/petrel-db/petrel/internal/pg"
)

// ErrNotCovered: the archive cannot restore the point asked for (before
// the oldest backup, past the newest archived WAL, or behind a missing or
// corrupt file). Nothing was restored.
var ErrNotCovered = errors.New("not covered by the archive")

// ErrNotEmpty: the directory a restore would write into holds data.
var ErrNotEmpty = errors.New("the target directory is not empty")

// Target is the point a restore reaches: exactly one of its fields set.
type Target struct {
	BackupID string    // that base backup's consistent point
	Time     time.Time // the last commit at or before Time
	LSN      uint64    // up to and including this WAL position
	Latest   bool      // every archived WAL file
}

func (t Target) String() string {
	switch {
	case t.BackupID != "":
		return "backup " + t.BackupID
	case !t.Time.IsZero():
		return "time " + t.Time.UTC().Format(time.RFC3339Nano)
	case t.LSN != 0:
		return "LSN " + pg.FormatLSN(t.LSN)
	}
	return "the latest archived WAL"
}

// ParseTarget builds a Target from the CLI's flags (at most one set;
// none is refused).
func ParseTarget(backupID, at, lsn string, latest bool) (Target, error) {
	var t Target
	n := 0
	if backupID != "" {
		t.BackupID, n = backupID, n+1
	}
	if at != "" {
		ts, err := time.Parse(time.RFC3339Nano, at)
		if err != nil {
			return t, fmt.Errorf("--time %q: want RFC 3339, e.g. 2026-12-02T16:30:00Z: %w", at, err)
		}
		t.Time, n = ts, n+1
	}
	if lsn != "" {
		l, err := pg.ParseLSN(lsn)
		if err != nil || l == 0 {
			return t, fmt.Errorf("--lsn %q: want a WAL position such as 0/3000060", lsn)
		}
		t.LSN, n = l, n+1
	}
	if latest {
		t.Latest, n = true, n+1
	}
	if n != 1 {
		return t, errors.New("give exactly one of --backup ID, --time T, --lsn L or --latest")
	}
	return t, nil
}

// RestorePlan is what a restore will read: the base backup, the timeline
// it follows and the WAL files in replay order.
type RestorePlan struct {
	Target   Target
	Backup   Backup
	Timeline uint32   // the archive's newest timeline, which recovery follows
	History  []string // timeline history files
	Segments []string // WAL segments, in replay order
	// StopsAt, for a time target, is the first segment the archive
	// cannot give (missing): recovery must reach the time before it.
	StopsAt string
}

// Describe is the plan in one line.
func (p RestorePlan) Describe() string {
	s := fmt.Sprintf("restoring %s from base backup %s (timeline %d, %s) and %d WAL segments", p.Target, p.Backup.ID, p.Backup.Timeline, p.Backup.EndTime.UTC().Format(time.RFC3339), len(p.Segments))
	if len(p.Segments) > 0 {
		s += fmt.Sprintf(" (%s..%s)", p.Segments[0], p.Segments[len(p.Segments)-1])
	}
	return s
}

// PlanRestore picks the base backup for t and the WAL a recovery to t
// replays, and refuses (ErrNotCovered, saying why) a point the archive
// does not hold: before the oldest backup, past the newest archived
// segment, or across a gap.
func PlanRestore(ctx context.Context, st backupstore.Store, t Target) (RestorePlan, error) {
	p := RestorePlan{Target: t}
	bs, err := ListBackups(ctx, st)
	if err != nil {
		return p, fmt.Errorf("reading the backup catalog: %w", err)
	}
	var complete []Backup
	for _, b := range bs {
		if b.Status == "complete" {
			complete = append(complete, b)
		}
	}
	if len(complete) == 0 {
		return p, fmt.Errorf("%s holds no complete base backup: %w", st, ErrNotCovered)
	}
	found := false
	for _, b := range complete { // oldest first: the last match is the newest
		var ok bool
		switch {
		case t.BackupID != "":
			ok = b.ID == t.BackupID
		case !t.Time.IsZero():
			ok = !b.EndTime.After(t.Time)
		case t.LSN != 0:
			end, err := pg.ParseLSN(b.EndLSN)
			ok = err == nil && end <= t.LSN
		default:
			ok = true
		}
		if ok {
			p.Backup, found = b, true
		}
	}
	if !found {
		first := complete[0]
		switch {
		case t.BackupID != "":
			return p, fmt.Errorf("no complete backup %q (petrel backup list): %w", t.BackupID, ErrNotCovered)
		case !t.Time.IsZero():
			return p, fmt.Errorf("%s is before the earliest point a restore can reach, %s (the end of backup %s): %w", t, first.EndTime.UTC().Format(time.RFC3339), first.ID, ErrNotCovered)
		default:
			return p, fmt.Errorf("%s is before the earliest point a restore can reach, %s (the end of backup %s): %w", t, first.EndLSN, first.ID, ErrNotCovered)
		}
	}
	if !t.Time.IsZero() && t.Time.After(time.Now().Add(time.Minute)) {
		return p, fmt.Errorf("%s is in the future: %w", t, ErrNotCovered)
	}
	start, ok := ParseSegment(p.Backup.StartSeg)
	if !ok {
		return p, fmt.Errorf("backup %s: bad start segment %q", p.Backup.ID, p.Backup.StartSeg)
	}
	l, err := ListWAL(ctx, st)
	if err != nil {
		return p, fmt.Errorf("listing the WAL archive: %w", err)
	}
	p.Timeline = newestTimeline(l, p.Backup.Timeline)
	var hist []HistoryEntry
	if p.Timeline > 1 {
		if !l[HistoryName(p.Timeline)] {
			return p, fmt.Errorf("the archive lacks %s, the history of its newest timeline: %w", HistoryName(p.Timeline), ErrNotCovered)
		}
		data, err := FetchBytes(ctx, st, HistoryName(p.Timeline))
		if err != nil {
			return p, fmt.Errorf("reading the newest timeline's history: %w", err)
		}
		if hist, err = ParseHistory(data); err != nil {
			return p, fmt.Errorf("%s: %w", HistoryName(p.Timeline), err)
		}
		for _, h := range hist {
			if h.TLI > 1 {
				p.History = append(p.History, HistoryName(h.TLI))
			}
		}
		p.History = append(p.History, HistoryName(p.Timeline))
	}
	if first := segmentFor(start.No, hist, p.Timeline); first != start {
		return p, fmt.Errorf("backup %s starts in %s, which is not on timeline %d's history (it reads %s there): %w", p.Backup.ID, start.Name(), p.Timeline, first.Name(), ErrNotCovered)
	}
	c := l.chain(p.Timeline, hist, start.No)
	if len(c.MissingHistory) > 0 {
		return p, fmt.Errorf("the archive lacks %s: %w", strings.Join(c.MissingHistory, ", "), ErrNotCovered)
	}
	newest, ok := ParseSegment(c.To)
	if !ok {
		return p, fmt.Errorf("the archive holds no WAL segment from %s on (backup %s's start): %w", start.Name(), p.Backup.ID, ErrNotCovered)
	}
	// The last segment recovery must read for the target; 0 for a time
	// (only replay finds where it lies).
	var need uint64
	switch {
	case t.BackupID != "":
		end, err := pg.ParseLSN(p.Backup.EndLSN)
		if err != nil {
			return p, fmt.Errorf("backup %s: bad end LSN: %w", p.Backup.ID, err)
		}
		need = SegmentOf(end)
	case t.LSN != 0:
		need = SegmentOf(t.LSN)
		if need > newest.No {
			return p, fmt.Errorf("%s is past the archive's newest segment %s: %w", t, c.To, ErrNotCovered)
		}
	case t.Latest:
		need = newest.No
	}
	for _, g := range c.Gaps {
		from, _ := ParseSegment(g.From)
		if t.Time.IsZero() && from.No <= need {
			return p, fmt.Errorf("the archive is missing WAL on %s, which a restore to %s replays: %w", g, t, ErrNotCovered)
		}
		if !t.Time.IsZero() && p.StopsAt == "" {
			p.StopsAt = g.From
		}
	}
	last := newest.No
	if need != 0 {
		last = need
	}
	for no := start.No; no <= last; no++ {
		seg := segmentFor(no, hist, p.Timeline)
		if p.StopsAt == seg.Name() {
			break
		}
		p.Segments = append(p.Segments, seg.Name())
	}
	return p, nil
}

// newestTimeline is the highest timeline the archive holds a segment or
// a history file of, at least tli.
func newestTimeline(l Listing, tli uint32) uint32 {
	for name := range l {
		var t uint32
		if s, ok := ParseSegment(name); ok {
			t = s.TLI
		} else if n, ok := strings.CutSuffix(name, ".history"); ok {
			if s, ok := ParseSegment(n + "0000000000000000"); ok {
				t = s.TLI
			}
		}
		if t > tli {
			tli = t
		}
	}
	return tli
}

// RestoreOptions say where a restore writes.
type RestoreOptions struct {
	// Server is the new cluster's first member's Postgres: an empty
	// DataDir, archiving off (no ArchiveDir), listening where nothing
	// else can reach it during recovery (no TCP address).
	Server *pg.Server
	// WALDir is a staging directory for the WAL recovery reads (created,
	// removed afterwards).
	WALDir string
	// Secrets are the new cluster's passwords, set on petrel's roles once
	// recovery is done.
	Secrets config.Secrets
	Log     *slog.Logger
}

// RestoreResult is what a restore reached.
type RestoreResult struct {
	Timeline uint32 // the new cluster's timeline (the promotion's)
	LSN      string // the end of the restored WAL
}

// Restore carries out plan into opts.Server's empty data directory: the
// base backup (its checksum checked as it is read), the WAL files
// (each checked), archive recovery to the target, a promotion, the new
// cluster's passwords, a clean shutdown. Nothing is left in the data
// directory on failure. A target recovery cannot reach is ErrNotCovered.
func Restore(ctx context.Context, st backupstore.Store, plan RestorePlan, opts RestoreOptions) (res RestoreResult, err error) {
	srv, lg := opts.Server, opts.Log
	if lg == nil {
		lg = slog.New(slog.DiscardHandler)
	}
	dir := srv.DataDir()
	if ents, err := os.ReadDir(dir); err == nil && len(ents) > 0 {
		return res, fmt.Errorf("restoring into %s: %w", dir, ErrNotEmpty)
	} else if err != nil && !errors.Is(err, os.ErrNotExist) {
		return res, err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return res, err
	}
	if err := os.MkdirAll(opts.WALDir, 0o700); err != nil {
		return res, err
	}
	defer os.RemoveAll(opts.WALDir)
	defer func() {
		if err != nil {
			_ = srv.Stop(context.Background(), "immediate")
			clearDir(dir)
		}
	}()
	lg.Info("restoring the base backup", "backup", plan.Backup.ID, "size_mib", plan.Backup.Size>>20)
	if err := extractBackup(ctx, st, plan.Backup, dir); err != nil {
		return res, err
	}
	for _, name := range plan.History {
		if err := fetchTo(ctx, st, name, filepath.Join(opts.WALDir, name)); err != nil {
			return res, fmt.Errorf("%w: %w", err, ErrNotCovered)
		}
	}
	for i, name := range plan.Segments {
		if err := fetchTo(ctx, st, name, filepath.Join(opts.WALDir, name)); err != nil {
			if !errors.Is(err, ErrCorrupt) || plan.Target.Time.IsZero() {
				return res, fmt.Errorf("%w: %w", err, ErrNotCovered)
			}
			// A time target may lie before the damage: recovery says.
			lg.Warn("a WAL segment is corrupt: recovery stops before it", "segment", name, "err", err)
			plan.StopsAt, plan.Segments = name, plan.Segments[:i]
			break
		}
	}
	lg.Info("fetched and checked the WAL", "segments", len(plan.Segments))
	target := pg.RecoveryTarget{Immediate: plan.Target.BackupID != "", Time: plan.Target.Time}
	if plan.Target.LSN != 0 {
		target.LSN = pg.FormatLSN(plan.Target.LSN)
	}
	if err := srv.Recover(ctx, opts.WALDir, target); err != nil {
		if errors.Is(err, pg.ErrTargetNotReached) {
			end := "the newest archived segment"
			if len(plan.Segments) > 0 {
				end = plan.Segments[len(plan.Segments)-1]
			}
			why := ""
			if plan.StopsAt != "" {
				why = " (" + plan.StopsAt + " is missing or corrupt)"
			}
			hint := ""
			if !plan.Target.Time.IsZero() {
				hint = "; no commit after that time is archived (--latest restores everything archived)"
			}
			return res, fmt.Errorf("%s: the archived WAL ends at %s%s before it%s: %w", plan.Target, end, why, hint, ErrNotCovered)
		}
		return res, err
	}
	if err := srv.Bootstrap(ctx, opts.Secrets); err != nil {
		return res, fmt.Errorf("setting the new cluster's passwords: %w", err)
	}
	if err := srv.Exec(ctx, "CHECKPOINT"); err != nil {
		return res, fmt.Errorf("checkpointing the restored cluster: %w", err)
	}
	ps, err := srv.Status(ctx)
	if err != nil {
		return res, err
	}
	res.Timeline, res.LSN = ps.Timeline, pg.FormatLSN(ps.CurrentLSN)
	if err := srv.Stop(ctx, "fast"); err != nil {
		return res, err
	}
	return res, nil
}

// fetchTo writes archived file name to path, checked; nothing is left at
// path on error (recovery must never read a partial copy).
func fetchTo(ctx context.Context, st backupstore.Store, name, path string) error {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	w := bufio.NewWriterSize(f, 1<<20)
	err = Fetch(ctx, st, name, w)
	if err == nil {
		err = w.Flush()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(path)
	}
	return err
}

// extractBackup unpacks backup b's tar into dir, checking the stored
// object's checksum; a mismatch is ErrCorrupt (after the whole stream was
// read: a tar that decoded is not trusted until then).
func extractBackup(ctx context.Context, st backupstore.Store, b Backup, dir string) error {
	r, err := st.Get(ctx, dataKey(b.ID))
	if err != nil {
		return fmt.Errorf("reading backup %s: %w", b.ID, err)
	}
	defer r.Close()
	h := sha256.New()
	counted := &countingReader{r: io.TeeReader(bufio.NewReaderSize(r, 1<<20), h)}
	dec, err := zstd.NewReader(counted)
	if err != nil {
		return err
	}
	defer dec.Close()
	if err := untar(dec, dir); err != nil {
		return fmt.Errorf("unpacking backup %s: %w (is it corrupt? petrel backup verify)", b.ID, err)
	}
	if _, err := io.Copy(io.Discard, counted); err != nil {
		return fmt.Errorf("reading backup %s: %w", b.ID, err)
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != b.SHA256 || counted.n != b.Stored {
		return fmt.Errorf("backup %s: sha256 %s (%d bytes), manifest %s (%d bytes): %w", b.ID, got, counted.n, b.SHA256, b.Stored, ErrCorrupt)
	}
	for _, d := range []string{"pg_wal", "pg_wal/archive_status"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o700); err != nil {
			return err
		}
	}
	return nil
}

// untar writes a pg_basebackup tar into dir: directories and regular
// files only, every name inside dir.
func untar(r io.Reader, dir string) error {
	tr := tar.NewReader(r)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		name := filepath.Clean(h.Name)
		if filepath.IsAbs(name) || name == ".." || strings.HasPrefix(name, "../") {
			return fmt.Errorf("tar entry %q leaves the data directory", h.Name)
		}
		path := filepath.Join(dir, name)
		switch h.Typeflag {
		case tar.TypeDir:
			if err := os.MkdirAll(path, 0o700); err != nil {
				return err
			}
		case tar.TypeReg:
			if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
				return err
			}
			f, err := os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
			if err != nil {
				return err
			}
			_, err = io.Copy(f, tr)
			if cerr := f.Close(); err == nil {
				err = cerr
			}
			if err != nil {
				return err
			}
		default:
			// Tablespace links (pg_tblspc) would point outside the data
			// directory; petrel creates no tablespaces.
			return fmt.Errorf("tar entry %q: type %c not supported (tablespaces?)", h.Name, h.Typeflag)
		}
	}
}

// clearDir removes dir's contents, keeping dir.
func clearDir(dir string) {
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		_ = os.RemoveAll(filepath.Join(dir, e.Name()))
	}
}

// ParseLocation reads where a store is, for a restore from outside its
// cluster: an absolute directory, or s3://BUCKET[/PREFIX][?endpoint=URL&region=R]
// (credentials, as always, from the environment or a secrets file).
func ParseLocation(s string) (model.BackupConfig, error) {
	var c model.BackupConfig
	if rest, ok := strings.CutPrefix(s, "s3://"); ok {
		u, err := url.Parse("s3://" + rest)
		if err != nil || u.Host == "" {
			return c, fmt.Errorf("store %q: want s3://BUCKET[/PREFIX][?endpoint=URL&region=R]", s)
		}
		c = model.BackupConfig{Kind: "s3", Bucket: u.Host, Prefix: strings.Trim(u.Path, "/"), Endpoint: u.Query().Get("endpoint"), Region: u.Query().Get("region")}
	} else {
		c = model.BackupConfig{Kind: "file", Path: strings.TrimPrefix(s, "file://")}
	}
	return c, backupstore.Validate(c)
}

// OpenLocation opens the store c, with S3 credentials from secretsFile or
// the environment.
func OpenLocation(ctx context.Context, c model.BackupConfig, secretsFile string) (backupstore.Store, error) {
	sec, err := config.LoadBackupSecrets(secretsFile)
	if err != nil && c.Kind == "s3" {
		return nil, err
	}
	return backupstore.Open(ctx, c, backupstore.Credentials{AccessKeyID: sec.AccessKeyID, SecretAccessKey: sec.SecretAccessKey, SessionToken: sec.SessionToken})
}

// ParseTargetSpec reads a node's restore_target: "latest", "backup:ID",
// "time:RFC3339" or "lsn:X/Y".
func ParseTargetSpec(s string) (Target, error) {
	kind, v, _ := strings.Cut(s, ":")
	switch kind {
	case "latest":
		return Target{Latest: true}, nil
	case "backup":
		return ParseTarget(v, "", "", false)
	case "time":
		return ParseTarget("", v, "", false)
	case "lsn":
		return ParseTarget("", "", v, false)
	}
	return Target{}, fmt.Errorf("restore target %q: want latest, backup:ID, time:2026-12-02T16:30:00Z or lsn:0/3000060", s)
}
