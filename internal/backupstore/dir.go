package backupstore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"
)

// The directory layout is gocloud.dev's fileblob's, which earlier petrel
// versions wrote: an object is the file at its key, its metadata a JSON
// file beside it named key + attrsExt. Temporary files are hidden
// (".name.<random>.tmp") in the object's own directory, so the final
// link never crosses a filesystem.
const (
	attrsExt = ".attrs"
	tmpExt   = ".tmp"
	// orphanAge: an attributes file whose object is missing and that is
	// older than this is a crash's remnant (the object is linked a moment
	// after its attributes), not a writer in flight.
	orphanAge = time.Minute
)

// attrs is fileblob's attributes file (the fields petrel uses).
type attrs struct {
	ContentType string            `json:"user.content_type,omitempty"`
	Metadata    map[string]string `json:"user.metadata"`
}

// dirStore keeps objects as files under root. Invariant (write-once): an
// object's attributes file is linked, create-only, before the object
// itself, so holding the attributes name is holding the key: of two
// writers of one key exactly one gets past it, and an object never
// exists without its metadata.
type dirStore struct {
	root  string // the configured path joined with the prefix
	where string
}

func openDir(path, prefix string) (*dirStore, error) {
	root := path
	if prefix != "" {
		root = filepath.Join(path, filepath.FromSlash(prefix))
	}
	if err := os.MkdirAll(root, 0o700); err != nil {
		return nil, fmt.Errorf("backup store: creating %s: %w", root, err)
	}
	return &dirStore{root: root, where: root}, nil
}

func (s *dirStore) String() string { return s.where }
func (s *dirStore) Close() error   { return nil }

func (s *dirStore) path(key string) string { return filepath.Join(s.root, filepath.FromSlash(key)) }

func (s *dirStore) Put(ctx context.Context, key string, r io.Reader, meta map[string]string) (err error) {
	if err := checkKey(key); err != nil {
		return err
	}
	p := s.path(key)
	wrap := func(err error) error { return fmt.Errorf("writing %s in %s: %w", key, s.where, err) }
	if _, err := os.Lstat(p); err == nil {
		return wrap(ErrExists)
	} else if !errors.Is(err, fs.ErrNotExist) {
		return wrap(err)
	}
	dir := filepath.Dir(p)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return wrap(err)
	}
	data, err := writeTemp(dir, filepath.Base(p), func(f *os.File) error {
		_, err := io.Copy(f, ctxReader{ctx: ctx, r: r})
		return err
	})
	if err != nil {
		return wrap(err)
	}
	defer os.Remove(data)
	a, _ := json.Marshal(attrs{ContentType: "application/octet-stream", Metadata: meta})
	at, err := writeTemp(dir, filepath.Base(p)+attrsExt, func(f *os.File) error {
		_, err := f.Write(a)
		return err
	})
	if err != nil {
		return wrap(err)
	}
	defer os.Remove(at)
	if err := s.claim(at, p); err != nil {
		return wrap(err)
	}
	if err := os.Link(data, p); err != nil {
		// Only a writer holding the attributes name links the object, so
		// this is not a lost race: give the key back.
		_ = os.Remove(p + attrsExt)
		return wrap(err)
	}
	if err := syncDir(dir); err != nil {
		return wrap(err)
	}
	return nil
}

// claim links the attributes file at p's attributes name, create-only.
// An attributes file left by a crash (old, its object missing) is removed
// and the link tried once more.
func (s *dirStore) claim(tmp, p string) error {
	for try := 0; ; try++ {
		err := os.Link(tmp, p+attrsExt)
		if err == nil || !errors.Is(err, fs.ErrExist) {
			return err
		}
		if _, serr := os.Lstat(p); serr == nil || try > 0 {
			return ErrExists
		}
		fi, serr := os.Lstat(p + attrsExt)
		if serr != nil || time.Since(fi.ModTime()) < orphanAge {
			return ErrExists // a writer in flight
		}
		if err := os.Remove(p + attrsExt); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
	}
}

// writeTemp writes a hidden temporary file in dir through fill and fsyncs
// it; the caller links it into place and removes it.
func writeTemp(dir, base string, fill func(*os.File) error) (string, error) {
	f, err := os.CreateTemp(dir, "."+base+".*"+tmpExt)
	if err != nil {
		return "", err
	}
	name := f.Name()
	err = fill(f)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		_ = os.Remove(name)
		return "", err
	}
	return name, nil
}

// syncDir makes the directory entries just linked durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

func (s *dirStore) Get(ctx context.Context, key string) (io.ReadCloser, error) {
	if err := checkKey(key); err != nil {
		return nil, err
	}
	f, err := os.Open(s.path(key))
	if err != nil {
		return nil, s.classify("reading", key, err)
	}
	return f, nil
}

func (s *dirStore) Stat(ctx context.Context, key string) (Object, error) {
	if err := checkKey(key); err != nil {
		return Object{}, err
	}
	p := s.path(key)
	fi, err := os.Stat(p)
	if err != nil {
		return Object{}, s.classify("reading the attributes of", key, err)
	}
	o := Object{Key: key, Size: fi.Size(), ModTime: fi.ModTime()}
	b, err := os.ReadFile(p + attrsExt)
	switch {
	case errors.Is(err, fs.ErrNotExist): // no metadata
	case err != nil:
		return Object{}, s.classify("reading the attributes of", key, err)
	default:
		var a attrs
		if err := json.Unmarshal(b, &a); err != nil {
			return Object{}, fmt.Errorf("reading the attributes of %s in %s: %w", key, s.where, err)
		}
		o.Meta = a.Metadata
	}
	return o, nil
}

func (s *dirStore) List(ctx context.Context, prefix string) ([]Object, error) {
	// Walk only the directory the prefix names (its part up to the last
	// slash); keys are filtered by the whole prefix.
	start := s.root
	if i := strings.LastIndex(prefix, "/"); i >= 0 {
		start = s.path(prefix[:i])
	}
	var out []Object
	err := filepath.WalkDir(start, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) && p == start {
				return filepath.SkipAll
			}
			return err
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		name := d.Name()
		if d.IsDir() || strings.HasPrefix(name, ".") || strings.HasSuffix(name, attrsExt) || strings.HasSuffix(name, tmpExt) {
			return nil
		}
		rel, err := filepath.Rel(s.root, p)
		if err != nil {
			return err
		}
		key := filepath.ToSlash(rel)
		if !strings.HasPrefix(key, prefix) {
			return nil
		}
		fi, err := d.Info()
		if errors.Is(err, fs.ErrNotExist) { // deleted meanwhile
			return nil
		} else if err != nil {
			return err
		}
		out = append(out, Object{Key: key, Size: fi.Size(), ModTime: fi.ModTime()})
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("listing %s in %s: %w", prefix, s.where, err)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Key < out[j].Key })
	return out, nil
}

func (s *dirStore) Delete(ctx context.Context, key string) error {
	if err := checkKey(key); err != nil {
		return err
	}
	p := s.path(key)
	// The object first, then its attributes: a crash in between leaves
	// an orphan attributes file, which the next Put of the key removes.
	for _, f := range []string{p, p + attrsExt} {
		if err := os.Remove(f); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("deleting %s in %s: %w", key, s.where, err)
		}
	}
	return nil
}

func (s *dirStore) classify(what, key string, err error) error {
	if errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("%s %s in %s: %w", what, key, s.where, ErrNotFound)
	}
	return fmt.Errorf("%s %s in %s: %w", what, key, s.where, err)
}

// ctxReader stops a copy once ctx is done (a hung source cannot be
// interrupted otherwise).
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}
