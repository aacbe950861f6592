package edge

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
)

// body is a request body kept so that the request can be sent again: in
// memory up to memLimit bytes, then spooled to a temporary file up to
// keepLimit. A body longer than keepLimit is kept only in part; it can
// still be sent once (the kept part, then the rest straight from the
// client), but never replayed: a replay never sends a truncated or empty
// body in place of the real one.
type body struct {
	mem      []byte
	file     *os.File // spool, when the body outgrew memLimit
	size     int64    // bytes kept
	sum      []byte   // SHA-256 of the whole body, when complete
	complete bool
	rest     io.Reader // the unread remainder when !complete
	consumed bool      // an incomplete body's one send happened
}

// errBodyRead marks a failure reading the client's body (the client's
// fault: 400), as opposed to a spool failure (ours: 500).
var errBodyRead = errors.New("reading the request body")

// readBody reads r as described on body. tmpDir "" is os.TempDir().
func readBody(r io.Reader, memLimit, keepLimit int64, tmpDir string) (*body, error) {
	b := &body{}
	if r == nil || r == http.NoBody {
		b.complete, b.sum = true, emptySum
		return b, nil
	}
	h := sha256.New()
	// Up to memLimit+1 bytes in memory: one more than the limit tells
	// whether the body goes on.
	var buf bytes.Buffer
	n, err := io.Copy(&buf, io.LimitReader(r, memLimit+1))
	if err != nil {
		return nil, fmt.Errorf("%w: %w", errBodyRead, err)
	}
	if n <= memLimit {
		b.mem = buf.Bytes()
		b.size = n
		h.Write(b.mem)
		b.complete, b.sum = true, h.Sum(nil)
		return b, nil
	}
	f, err := os.CreateTemp(tmpDir, "petrel-edge-body-*")
	if err != nil {
		return nil, fmt.Errorf("spooling the request body: %w", err)
	}
	os.Remove(f.Name()) // the open file lives until Close; nothing to clean up after a crash
	b.file = f
	w := io.MultiWriter(f, h)
	if _, err := w.Write(buf.Bytes()); err != nil {
		b.close()
		return nil, fmt.Errorf("spooling the request body: %w", err)
	}
	m, err := copyCounting(w, io.LimitReader(r, keepLimit-n+1))
	total := n + m
	if err != nil {
		b.close()
		if errors.Is(err, errSpool) {
			return nil, fmt.Errorf("spooling the request body: %w", err)
		}
		return nil, fmt.Errorf("%w: %w", errBodyRead, err)
	}
	if total <= keepLimit {
		b.size, b.complete, b.sum = total, true, h.Sum(nil)
		return b, nil
	}
	// Over the limit: keep what was read (keepLimit+1 bytes) and the
	// rest of the stream for one send.
	b.size, b.rest = total, r
	return b, nil
}

var errSpool = errors.New("writing the spool file")

// copyCounting is io.Copy telling write errors (ours) from read errors.
func copyCounting(w io.Writer, r io.Reader) (int64, error) {
	buf := make([]byte, 32<<10)
	var n int64
	for {
		k, rerr := r.Read(buf)
		if k > 0 {
			if _, werr := w.Write(buf[:k]); werr != nil {
				return n, fmt.Errorf("%w: %w", errSpool, werr)
			}
			n += int64(k)
		}
		if rerr == io.EOF {
			return n, nil
		}
		if rerr != nil {
			return n, rerr
		}
	}
}

var emptySum = func() []byte { s := sha256.Sum256(nil); return s[:] }()

// replayable says whether the whole body was kept.
func (b *body) replayable() bool { return b.complete }

// length is the Content-Length to send: the size for a kept body, -1
// (chunked) for one that was only partly kept.
func (b *body) length() int64 {
	if !b.complete {
		return -1
	}
	return b.size
}

// reader returns a new reader over the body. For an incomplete body it
// works once.
func (b *body) reader() (io.ReadCloser, error) {
	var kept io.Reader
	if b.file != nil {
		kept = io.NewSectionReader(b.file, 0, min(b.size, fileSize(b.file)))
	} else {
		kept = bytes.NewReader(b.mem)
	}
	if b.complete {
		return io.NopCloser(kept), nil
	}
	if b.consumed {
		return nil, errors.New("the request body was over the replay limit and has been sent already")
	}
	b.consumed = true
	return io.NopCloser(io.MultiReader(kept, b.rest)), nil
}

func fileSize(f *os.File) int64 {
	st, err := f.Stat()
	if err != nil {
		return 0
	}
	return st.Size()
}

// digest returns the SHA-256 of a complete body.
func (b *body) digest() []byte { return b.sum }

func (b *body) close() {
	if b.file != nil {
		b.file.Close()
		b.file = nil
	}
}
