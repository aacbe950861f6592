package backup

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"strings"
	"time"

	"github.com/petrel-db/petrel/internal/backupstore"
)

// Backup is a base backup's manifest (base/<id>/backup.json), written
// once the backup's data is stored.
type Backup struct {
	ID        string    `json:"id"`
	Timeline  uint32    `json:"timeline"`
	StartLSN  string    `json:"start_lsn"`
	EndLSN    string    `json:"end_lsn"`
	StartTime time.Time `json:"start_time"`
	EndTime   time.Time `json:"end_time"`
	Size      int64     `json:"size"`       // bytes of the data directory (uncompressed tar)
	Stored    int64     `json:"stored"`     // bytes stored (compressed)
	SHA256    string    `json:"sha256"`     // of the compressed tar as stored
	Source    string    `json:"source"`     // the member it was taken from
	Status    string    `json:"status"`     // "complete"
	StartSeg  string    `json:"start_wal"`  // first WAL segment a restore needs
	SystemID  string    `json:"system_id"`  // Postgres' system identifier
	PGVersion string    `json:"pg_version"` // server_version_num of the source
}

func manifestKey(id string) string { return "base/" + id + "/backup.json" }
func dataKey(id string) string     { return "base/" + id + "/base.tar.zst" }

// Summary is b in one line, for logs and events.
func (b Backup) Summary() string {
	return fmt.Sprintf("base backup %s taken from %s (%d MiB, %d MiB stored)", b.ID, b.Source, b.Size>>20, b.Stored>>20)
}

// ListBackups reads every complete backup's manifest, oldest first.
func ListBackups(ctx context.Context, st backupstore.Store) ([]Backup, error) {
	objs, err := st.List(ctx, "base/")
	if err != nil {
		return nil, err
	}
	var out []Backup
	for _, o := range objs {
		if !strings.HasSuffix(o.Key, "/backup.json") {
			continue
		}
		r, err := st.Get(ctx, o.Key)
		if err != nil {
			return nil, err
		}
		var b Backup
		err = json.NewDecoder(io.LimitReader(r, 1<<20)).Decode(&b)
		r.Close()
		if err != nil {
			return nil, fmt.Errorf("decoding %s: %w", o.Key, err)
		}
		out = append(out, b)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].StartTime.Before(out[j].StartTime) })
	return out, nil
}

// ChainStart is the segment number a chain check starts from: the oldest
// backup's first segment (older WAL serves no restore), or 0 (the oldest
// archived) when there is no backup.
func ChainStart(ctx context.Context, st backupstore.Store) (uint64, error) {
	bs, err := ListBackups(ctx, st)
	if err != nil || len(bs) == 0 {
		return 0, err
	}
	s, ok := ParseSegment(bs[0].StartSeg)
	if !ok {
		return 0, fmt.Errorf("backup %s: bad start segment %q", bs[0].ID, bs[0].StartSeg)
	}
	return s.No, nil
}
