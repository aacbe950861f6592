// Package backupstore is where petrel keeps backups and archived WAL: one
// small interface (Store) over gocloud.dev/blob, backed by a local
// directory (fileblob) or S3-compatible object storage (s3blob), and the
// marker object that ties a store to one cluster.
//
// Every object is written once: Put never replaces an existing key (S3's
// If-None-Match: *, fileblob's create-only rename), so two writers can
// never silently overwrite each other's WAL. Only retention deletes.
package backupstore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"path"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/petrel-db/petrel/internal/model"
	"gocloud.dev/blob"
	"gocloud.dev/blob/fileblob"
	"gocloud.dev/blob/s3blob"
	"gocloud.dev/gcerrors"
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
	if c.RetentionWindowSec < 0 || c.RetentionMin < 0 {
		return fmt.Errorf("backup store: retention window %ds and minimum %d may not be negative", c.RetentionWindowSec, c.RetentionMin)
	}
	return nil
}

// Open opens the store c describes. S3 uses creds (static); a file store
// creates its directory.
func Open(ctx context.Context, c model.BackupConfig, creds Credentials) (Store, error) {
	if err := Validate(c); err != nil {
		return nil, err
	}
	var b *blob.Bucket
	var where string
	switch c.Kind {
	case "file":
		if err := os.MkdirAll(c.Path, 0o700); err != nil {
			return nil, fmt.Errorf("backup store: creating %s: %w", c.Path, err)
		}
		var err error
		// NoTempDir: temporary files next to their objects, so the final
		// rename never crosses a filesystem.
		b, err = fileblob.OpenBucket(c.Path, &fileblob.Options{NoTempDir: true, DirFileMode: 0o700})
		if err != nil {
			return nil, fmt.Errorf("backup store: opening %s: %w", c.Path, err)
		}
		where = c.Path
	case "s3":
		if creds.AccessKeyID == "" || creds.SecretAccessKey == "" {
			return nil, errors.New("backup store: s3 needs AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (environment or secrets file)")
		}
		region := c.Region
		if region == "" {
			region = "us-east-1"
		}
		cfg := aws.Config{
			Region:      region,
			Credentials: credentials.NewStaticCredentialsProvider(creds.AccessKeyID, creds.SecretAccessKey, creds.SessionToken),
			// S3-compatible stores reject the checksums recent SDKs add
			// to every request; send them only where S3 requires them.
			RequestChecksumCalculation: aws.RequestChecksumCalculationWhenRequired,
			ResponseChecksumValidation: aws.ResponseChecksumValidationWhenRequired,
			RetryMaxAttempts:           3,
		}
		client := s3.NewFromConfig(cfg, func(o *s3.Options) {
			if c.Endpoint != "" {
				o.BaseEndpoint = aws.String(c.Endpoint)
				o.UsePathStyle = true
			}
		})
		var err error
		b, err = s3blob.OpenBucket(ctx, client, c.Bucket, &s3blob.Options{RequestChecksumCalculation: aws.RequestChecksumCalculationWhenRequired})
		if err != nil {
			return nil, fmt.Errorf("backup store: opening bucket %s: %w", c.Bucket, err)
		}
		where = "s3://" + c.Bucket
		if c.Endpoint != "" {
			where += " at " + c.Endpoint
		}
	}
	prefix := strings.Trim(c.Prefix, "/")
	if prefix != "" {
		b = blob.PrefixedBucket(b, prefix+"/")
		where += "/" + prefix
	}
	return &bucket{b: b, where: where}, nil
}

type bucket struct {
	b     *blob.Bucket
	where string
}

func (s *bucket) String() string { return s.where }
func (s *bucket) Close() error   { return s.b.Close() }

func (s *bucket) Put(ctx context.Context, key string, r io.Reader, meta map[string]string) error {
	err := s.b.Upload(ctx, key, r, &blob.WriterOptions{IfNotExist: true, Metadata: meta, ContentType: "application/octet-stream"})
	switch {
	case err == nil:
		return nil
	case gcerrors.Code(err) == gcerrors.FailedPrecondition:
		return fmt.Errorf("writing %s in %s: %w", key, s.where, ErrExists)
	}
	return fmt.Errorf("writing %s in %s: %w", key, s.where, err)
}

func (s *bucket) Get(ctx context.Context, key string) (io.ReadCloser, error) {
	r, err := s.b.NewReader(ctx, key, nil)
	if err != nil {
		return nil, s.classify("reading", key, err)
	}
	return r, nil
}

func (s *bucket) Stat(ctx context.Context, key string) (Object, error) {
	a, err := s.b.Attributes(ctx, key)
	if err != nil {
		return Object{}, s.classify("reading the attributes of", key, err)
	}
	return Object{Key: key, Size: a.Size, ModTime: a.ModTime, Meta: a.Metadata}, nil
}

func (s *bucket) List(ctx context.Context, prefix string) ([]Object, error) {
	var out []Object
	it := s.b.List(&blob.ListOptions{Prefix: prefix})
	for {
		o, err := it.Next(ctx)
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return nil, fmt.Errorf("listing %s in %s: %w", prefix, s.where, err)
		}
		if o.IsDir {
			continue
		}
		out = append(out, Object{Key: o.Key, Size: o.Size, ModTime: o.ModTime})
	}
}

func (s *bucket) Delete(ctx context.Context, key string) error {
	err := s.b.Delete(ctx, key)
	if err != nil && gcerrors.Code(err) != gcerrors.NotFound {
		return fmt.Errorf("deleting %s in %s: %w", key, s.where, err)
	}
	return nil
}

func (s *bucket) classify(what, key string, err error) error {
	if gcerrors.Code(err) == gcerrors.NotFound {
		return fmt.Errorf("%s %s in %s: %w", what, key, s.where, ErrNotFound)
	}
	return fmt.Errorf("%s %s in %s: %w", what, key, s.where, err)
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
