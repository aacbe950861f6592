// Package backupstore is where petrel keeps backups and archived WAL: one
// small interface (Store), backed by a local directory (dir.go: files
// and fsync, readable by the gocloud fileblob layout earlier versions
// wrote) or S3-compatible object storage (s3.go, on minio-go), and the
// marker object that ties a store to one cluster.
//
// Every object is written once: Put never replaces an existing key (S3's
// If-None-Match: *, a directory's create-only link), so two writers can
// never silently overwrite each other's WAL. Only retention deletes.
//
// The node agent links this package (its leader archives), so it stays
// small: minio-go rather than the AWS SDK, which with gocloud.dev kept
// about 5 MiB more of the agent's executable resident (bench/store).
package backupstore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/url"
	"path"
	"strings"
	"time"

	"github.com/petrel-db/petrel/internal/model"
)

// Errors callers act on.
var (
	ErrNotFound = errors.New("backup store: object not found")
	ErrExists   = errors.New("backup store: object already exists")
	// ErrForeign: the store holds another cluster's archive (or objects
	// petrel did not write): it is never written to.
	ErrForeign = errors.New("backup store belongs to another cluster")
)

// Object is one stored object's attributes.
type Object struct {
	Key     string
	Size    int64
	ModTime time.Time
	Meta    map[string]string
}

// Store is a flat namespace of write-once objects.
type Store interface {
	// Put writes key from r with metadata; ErrExists when key is there.
	Put(ctx context.Context, key string, r io.Reader, meta map[string]string) error
	// Get opens key; ErrNotFound when absent. The caller closes it.
	Get(ctx context.Context, key string) (io.ReadCloser, error)
	// Stat reads key's attributes; ErrNotFound when absent.
	Stat(ctx context.Context, key string) (Object, error)
	// List returns the objects whose keys start with prefix, in key order
	// (without their metadata).
	List(ctx context.Context, prefix string) ([]Object, error)
	// Delete removes key (absent is not an error).
	Delete(ctx context.Context, key string) error
	// String says where the store is, for messages (no credentials).
	String() string
	Close() error
}

// Credentials for S3; never stored in etcd nor passed as a flag.
type Credentials struct {
	AccessKeyID     string
	SecretAccessKey string
	SessionToken    string
}

// String never prints the secrets.
func (Credentials) String() string { return "Credentials{redacted}" }

// Validate checks a configuration before it is stored.
func Validate(c model.BackupConfig) error {
	switch c.Kind {
	case "file":
		if c.Path == "" || !path.IsAbs(c.Path) {
			return fmt.Errorf("backup store: a file store needs an absolute path, got %q", c.Path)
		}
	case "s3":
		if c.Bucket == "" {
			return errors.New("backup store: an s3 store needs a bucket")
		}
		if c.Endpoint != "" {
			u, err := url.Parse(c.Endpoint)
			if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
				return fmt.Errorf("backup store: endpoint %q is not an http(s) URL", c.Endpoint)
			}
		}
	default:
		return fmt.Errorf("backup store: unknown kind %q (file or s3)", c.Kind)
	}
	if strings.Contains(c.Prefix, "..") {
		return fmt.Errorf("backup store: prefix %q may not contain ..", c.Prefix)
	}
	if c.ArchiveTimeoutSec < 0 {
		return fmt.Errorf("backup store: archive_timeout %ds is negative", c.ArchiveTimeoutSec)
	}
	if c.ScheduleSec != 0 && c.ScheduleSec < 60 {
		return fmt.Errorf("backup store: a backup schedule of %ds is too short (at least 60 s, or 0 for none)", c.ScheduleSec)
	}
	if c.RetentionWindowSec < 0 || c.RetentionMin < 0 {
		return fmt.Errorf("backup store: retention window %ds and minimum %d may not be negative", c.RetentionWindowSec, c.RetentionMin)
	}
	return nil
}

// Open opens the store c describes. S3 uses creds (static); a file store
// creates its directory. Nothing is read or written until the first call.
func Open(ctx context.Context, c model.BackupConfig, creds Credentials) (Store, error) {
	if err := Validate(c); err != nil {
		return nil, err
	}
	prefix := strings.Trim(c.Prefix, "/")
	switch c.Kind {
	case "file":
		return openDir(c.Path, prefix)
	default: // "s3", Validate allows nothing else
		return openS3(c, prefix, creds)
	}
}

// checkKey refuses keys that could leave the store's namespace or collide
// with the file store's own files: every key petrel writes is a relative
// slash path of plain names.
func checkKey(key string) error {
	if key == "" || strings.HasPrefix(key, "/") || strings.HasSuffix(key, "/") ||
		strings.ContainsAny(key, "\\\x00") || strings.HasSuffix(key, attrsExt) || strings.HasSuffix(key, tmpExt) {
		return fmt.Errorf("backup store: invalid key %q", key)
	}
	for _, part := range strings.Split(key, "/") {
		if part == "" || part == "." || part == ".." || strings.HasPrefix(part, ".") {
			return fmt.Errorf("backup store: invalid key %q", key)
		}
	}
	return nil
}

// MarkerKey is the object naming the cluster a store belongs to.
const MarkerKey = "petrel-archive.json"

// Marker is MarkerKey's content.
type Marker struct {
	Cluster   string    `json:"cluster"`
	SystemID  string    `json:"system_id,omitempty"`
	CreatedAt time.Time `json:"created_at"`
}

// Claim makes sure st belongs to cluster (and, once known, to systemID,
// Postgres' system identifier): it writes the marker into an empty store
// and accepts a store whose marker names this cluster. It refuses, with
// ErrForeign, a store holding another cluster's marker or objects without
// a marker (someone else's data), so one archive is never mixed with
// another's. A marker written before the system id was known is accepted
// for any system id of the same cluster name.
func Claim(ctx context.Context, st Store, cluster, systemID string) (Marker, error) {
	m, err := ReadMarker(ctx, st)
	switch {
	case err == nil:
		if m.Cluster != cluster || (systemID != "" && m.SystemID != "" && m.SystemID != systemID) {
			return m, fmt.Errorf("%s holds the archive of cluster %q (system id %s), not %q (system id %s): %w",
				st, m.Cluster, orUnknown(m.SystemID), cluster, orUnknown(systemID), ErrForeign)
		}
		return m, nil
	case !errors.Is(err, ErrNotFound):
		return Marker{}, err
	}
	objs, err := st.List(ctx, "")
	if err != nil {
		return Marker{}, err
	}
	if len(objs) > 0 {
		return Marker{}, fmt.Errorf("%s is not empty (%s, ...) and has no petrel marker: %w", st, objs[0].Key, ErrForeign)
	}
	m = Marker{Cluster: cluster, SystemID: systemID, CreatedAt: time.Now().UTC()}
	data, _ := json.Marshal(m)
	if err := st.Put(ctx, MarkerKey, strings.NewReader(string(data)), nil); err != nil {
		if errors.Is(err, ErrExists) { // another member claimed it first: check theirs
			return Claim(ctx, st, cluster, systemID)
		}
		return Marker{}, err
	}
	return m, nil
}

// ReadMarker reads the store's marker (ErrNotFound when there is none).
func ReadMarker(ctx context.Context, st Store) (Marker, error) {
	r, err := st.Get(ctx, MarkerKey)
	if err != nil {
		return Marker{}, err
	}
	defer r.Close()
	var m Marker
	if err := json.NewDecoder(io.LimitReader(r, 1<<16)).Decode(&m); err != nil {
		return Marker{}, fmt.Errorf("decoding %s in %s: %w", MarkerKey, st, err)
	}
	return m, nil
}

func orUnknown(s string) string {
	if s == "" {
		return "unknown"
	}
	return s
}
