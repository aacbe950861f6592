package pg

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// readOnlyConf is petrel's read-only switch: one line setting
// default_transaction_read_only, padded to readOnlyLen bytes. It is
// rewritten in place at the same length, so turning writes off needs no new
// disk block: it is used when the disk is full.
const (
	readOnlyConf = "petrel-readonly.conf"
	readOnlyLen  = 64
)

func readOnlyBody(on bool) []byte {
	line := "default_transaction_read_only = off # petrel read-only switch"
	if on {
		line = "default_transaction_read_only = on # petrel: disk nearly full"
	}
	return []byte(line + strings.Repeat(" ", readOnlyLen-1-len(line)) + "\n")
}

// ensureReadOnlyFile creates the switch, off, when it is missing (while
// there is room; SetReadOnly may need it when there is none).
func (s *Server) ensureReadOnlyFile() error {
	path := filepath.Join(s.opts.DataDir, readOnlyConf)
	if _, err := os.Stat(path); err == nil || !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return s.writeFile(path, readOnlyBody(false), 0o600)
}

// SetReadOnly turns new transactions read-only (or back) for every
// session that did not choose otherwise, and reloads a running server.
// Sessions may still SET default_transaction_read_only = off: this is a
// guard against filling the disk, not a security boundary.
func (s *Server) SetReadOnly(ctx context.Context, on bool) error {
	path := filepath.Join(s.opts.DataDir, readOnlyConf)
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if errors.Is(err, fs.ErrNotExist) {
		if err := s.ensureReadOnlyFile(); err != nil {
			return fmt.Errorf("setting read-only=%v: %w", on, err)
		}
		f, err = os.OpenFile(path, os.O_WRONLY, 0)
	}
	if err != nil {
		return fmt.Errorf("setting read-only=%v: %w", on, err)
	}
	_, werr := f.WriteAt(readOnlyBody(on), 0)
	cerr := f.Close()
	if err := errors.Join(werr, cerr); err != nil {
		return fmt.Errorf("setting read-only=%v: %w", on, err)
	}
	if s.Running() {
		return s.Reload(ctx)
	}
	return nil
}

// ReadOnly reports whether petrel's read-only switch is on.
func (s *Server) ReadOnly() bool {
	data, err := os.ReadFile(filepath.Join(s.opts.DataDir, readOnlyConf))
	return err == nil && bytes.HasPrefix(data, []byte("default_transaction_read_only = on"))
}

// DiskFree returns the bytes available to unprivileged writers on the
// data directory's filesystem (-1 when it cannot be read).
func (s *Server) DiskFree() int64 {
	return diskFree(s.opts.DataDir)
}
