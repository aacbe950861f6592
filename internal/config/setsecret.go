package config

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
)

// SetSecret sets key to value in the secrets file (`petrel secrets
// rotate` keeps the file it read its credentials from current): the line
// KEY=... is replaced (appended when missing), every other line is kept
// as it was. The file is replaced atomically (a temporary file in the
// same directory, fsynced, renamed over it) with mode 0600 and the old
// file's owner, so a crash leaves either the old or the new file, never a
// half-written one or one readable by others.
func SetSecret(file, key, value string) error {
	if strings.ContainsAny(value, "\r\n") || strings.TrimSpace(value) != value {
		return errors.New("a secret holding a line break or surrounding spaces cannot go in a secrets file")
	}
	st, err := os.Stat(file)
	if err != nil {
		return fmt.Errorf("updating the secrets file: %w", err)
	}
	b, err := os.ReadFile(file)
	if err != nil {
		return fmt.Errorf("updating the secrets file: %w", err)
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	done := false
	for i, l := range lines {
		k, _, ok := strings.Cut(strings.TrimSpace(l), "=")
		if ok && !strings.HasPrefix(strings.TrimSpace(l), "#") && strings.TrimSpace(k) == key {
			if !done {
				lines[i] = key + "=" + value
			} else {
				lines[i] = "" // a later duplicate would not be read anyway
			}
			done = true
		}
	}
	if !done {
		lines = append(lines, key+"="+value)
	}
	tmp, err := os.CreateTemp(filepath.Dir(file), "."+filepath.Base(file)+".tmp*")
	if err != nil {
		return fmt.Errorf("updating the secrets file: %w", err)
	}
	defer os.Remove(tmp.Name())
	werr := tmp.Chmod(0o600)
	if sys, ok := st.Sys().(*syscall.Stat_t); ok && werr == nil && os.Geteuid() == 0 {
		werr = tmp.Chown(int(sys.Uid), int(sys.Gid))
	}
	if werr == nil {
		_, werr = tmp.WriteString(strings.Join(lines, "\n") + "\n")
	}
	if werr == nil {
		werr = tmp.Sync()
	}
	if cerr := tmp.Close(); werr == nil {
		werr = cerr
	}
	if werr == nil {
		werr = os.Rename(tmp.Name(), file)
	}
	if werr != nil {
		return fmt.Errorf("updating the secrets file %s: %w", file, werr)
	}
	return nil
}
