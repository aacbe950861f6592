package backupstore

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
	"github.com/petrel-db/petrel/internal/model"
)

const (
	// singlePutMax: objects up to this size are sent in one PUT with
	// If-None-Match: *, which S3 applies atomically. Every WAL segment fits
	// (16 MiB before compression, zstd adds at most a few KiB), so WAL,
	// where write-once catches a split brain, is always conditional.
	// Larger objects (base backups, under fresh unique ids) go in parts
	// after a check that the key is free: the conditional header does not
	// reach a multipart upload's completion through minio-go.
	singlePutMax = 20 << 20
	// partSize: the parts of larger objects (one buffer of it per upload).
	partSize = 16 << 20
)

// s3Store is a bucket (under a prefix) of an S3-compatible store.
type s3Store struct {
	cl     *minio.Client
	bucket string
	prefix string // "" or ending in "/"
	where  string
}

func openS3(c model.BackupConfig, prefix string, creds Credentials) (*s3Store, error) {
	if creds.AccessKeyID == "" || creds.SecretAccessKey == "" {
		return nil, errors.New("backup store: s3 needs AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (environment or secrets file)")
	}
	region := c.Region
	if region == "" {
		region = "us-east-1"
	}
	host, secure, lookup := "s3.amazonaws.com", true, minio.BucketLookupAuto
	if c.Endpoint != "" {
		u, err := url.Parse(c.Endpoint) // Validate checked it
		if err != nil {
			return nil, fmt.Errorf("backup store: endpoint %q: %w", c.Endpoint, err)
		}
		// S3-compatible servers are addressed by path: their buckets
		// rarely have DNS names.
		host, secure, lookup = u.Host, u.Scheme == "https", minio.BucketLookupPath
	}
	cl, err := minio.New(host, &minio.Options{
		Creds:        credentials.NewStaticV4(creds.AccessKeyID, creds.SecretAccessKey, creds.SessionToken),
		Secure:       secure,
		Region:       region,
		BucketLookup: lookup,
		MaxRetries:   3,
	})
	if err != nil {
		return nil, fmt.Errorf("backup store: s3 client for %s: %w", host, err)
	}
	where := "s3://" + c.Bucket
	if c.Endpoint != "" {
		where += " at " + c.Endpoint
	}
	s := &s3Store{cl: cl, bucket: c.Bucket, where: where}
	if prefix != "" {
		s.prefix = prefix + "/"
		s.where += "/" + prefix
	}
	return s, nil
}

func (s *s3Store) String() string { return s.where }
func (s *s3Store) Close() error   { return nil }

func (s *s3Store) Put(ctx context.Context, key string, r io.Reader, meta map[string]string) error {
	if err := checkKey(key); err != nil {
		return err
	}
	wrap := func(err error) error { return fmt.Errorf("writing %s in %s: %w", key, s.where, err) }
	opts := minio.PutObjectOptions{UserMetadata: meta, ContentType: "application/octet-stream", PartSize: partSize}
	opts.SetMatchETagExcept("*") // If-None-Match: *
	var head bytes.Buffer
	n, err := io.CopyN(&head, ctxReader{ctx: ctx, r: r}, singlePutMax+1)
	if err != nil && !errors.Is(err, io.EOF) {
		return wrap(err)
	}
	if n <= singlePutMax {
		opts.DisableMultipart = true
		_, err = s.cl.PutObject(ctx, s.bucket, s.prefix+key, bytes.NewReader(head.Bytes()), n, opts)
		return s.putErr(err, wrap)
	}
	if _, err := s.Stat(ctx, key); err == nil {
		return wrap(ErrExists)
	} else if !errors.Is(err, ErrNotFound) {
		return err
	}
	// Parts unsigned (TLS protects them; each part's MD5 is checked by
	// the server): minio-go's streaming signature frames the body in
	// aws-chunked encoding, which some S3-compatible servers store as is.
	opts.DisableContentSha256 = true
	opts.SendContentMd5 = true
	_, err = s.cl.PutObject(ctx, s.bucket, s.prefix+key, io.MultiReader(&head, ctxReader{ctx: ctx, r: r}), -1, opts)
	return s.putErr(err, wrap)
}

func (s *s3Store) putErr(err error, wrap func(error) error) error {
	if err == nil {
		return nil
	}
	if resp := minio.ToErrorResponse(err); resp.StatusCode == http.StatusPreconditionFailed || resp.Code == "PreconditionFailed" {
		return wrap(ErrExists)
	}
	return wrap(err)
}

func (s *s3Store) Get(ctx context.Context, key string) (io.ReadCloser, error) {
	if err := checkKey(key); err != nil {
		return nil, err
	}
	obj, err := s.cl.GetObject(ctx, s.bucket, s.prefix+key, minio.GetObjectOptions{})
	if err != nil {
		return nil, s.classify("reading", key, err)
	}
	// GetObject is lazy: Stat sends the request, so a missing key is an
	// error here and not at the first read.
	if _, err := obj.Stat(); err != nil {
		obj.Close()
		return nil, s.classify("reading", key, err)
	}
	return obj, nil
}

func (s *s3Store) Stat(ctx context.Context, key string) (Object, error) {
	if err := checkKey(key); err != nil {
		return Object{}, err
	}
	info, err := s.cl.StatObject(ctx, s.bucket, s.prefix+key, minio.StatObjectOptions{})
	if err != nil {
		return Object{}, s.classify("reading the attributes of", key, err)
	}
	var meta map[string]string
	if len(info.UserMetadata) > 0 {
		// HTTP canonicalizes header names ("Sha256"); petrel's keys are
		// lower case.
		meta = make(map[string]string, len(info.UserMetadata))
		for k, v := range info.UserMetadata {
			meta[strings.ToLower(k)] = v
		}
	}
	return Object{Key: key, Size: info.Size, ModTime: info.LastModified, Meta: meta}, nil
}

func (s *s3Store) List(ctx context.Context, prefix string) ([]Object, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel() // stops the listing goroutine on an early return
	var out []Object
	for o := range s.cl.ListObjects(ctx, s.bucket, minio.ListObjectsOptions{Prefix: s.prefix + prefix, Recursive: true}) {
		if o.Err != nil {
			return nil, fmt.Errorf("listing %s in %s: %w", prefix, s.where, o.Err)
		}
		if !strings.HasPrefix(o.Key, s.prefix) || strings.HasSuffix(o.Key, "/") {
			continue
		}
		out = append(out, Object{Key: strings.TrimPrefix(o.Key, s.prefix), Size: o.Size, ModTime: o.LastModified})
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("listing %s in %s: %w", prefix, s.where, err)
	}
	return out, nil
}

func (s *s3Store) Delete(ctx context.Context, key string) error {
	if err := checkKey(key); err != nil {
		return err
	}
	err := s.cl.RemoveObject(ctx, s.bucket, s.prefix+key, minio.RemoveObjectOptions{})
	if err != nil && !isNotFound(err) {
		return fmt.Errorf("deleting %s in %s: %w", key, s.where, err)
	}
	return nil
}

func (s *s3Store) classify(what, key string, err error) error {
	if isNotFound(err) {
		return fmt.Errorf("%s %s in %s: %w", what, key, s.where, ErrNotFound)
	}
	return fmt.Errorf("%s %s in %s: %w", what, key, s.where, err)
}

func isNotFound(err error) bool {
	resp := minio.ToErrorResponse(err)
	// A missing bucket is a misconfiguration, not an empty store.
	return resp.Code == "NoSuchKey" || (resp.StatusCode == http.StatusNotFound && resp.Code != "NoSuchBucket")
}
