package pg

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
)

// TLS files, in RunDir (RunDir survives Wipe, so a re-clone keeps them).
const (
	tlsCertFile = "server.crt"
	tlsKeyFile  = "server.key"
	tlsCAFile   = "ca.crt"
)

// TLSPaths returns where the server certificate, its key and the cluster
// CA certificate live.
func (s *Server) TLSPaths() (cert, key, ca string) {
	return filepath.Join(s.opts.RunDir, tlsCertFile), filepath.Join(s.opts.RunDir, tlsKeyFile), filepath.Join(s.opts.RunDir, tlsCAFile)
}

// TLSEnabled reports whether all three TLS files are installed. When they
// are, petrel.conf turns ssl on and every connection this server makes to
// another member (walreceiver, pg_basebackup, pg_rewind) uses
// sslmode=verify-full against the cluster CA.
func (s *Server) TLSEnabled() bool {
	cert, key, ca := s.TLSPaths()
	for _, p := range []string{cert, key, ca} {
		if _, err := os.Stat(p); err != nil {
			return false
		}
	}
	return true
}

// InstallTLS writes the server certificate, key and CA certificate (0600,
// owned by the run-as user). Postgres reads them on start (and on reload).
func (s *Server) InstallTLS(certPEM, keyPEM, caPEM []byte) error {
	cert, key, ca := s.TLSPaths()
	for _, f := range []struct {
		path string
		data []byte
	}{{ca, caPEM}, {key, keyPEM}, {cert, certPEM}} {
		if err := s.writeFile(f.path, f.data, 0o600); err != nil {
			return fmt.Errorf("installing TLS files: %w", err)
		}
	}
	return nil
}

// clientSSL is the libpq SSL settings for connecting to another member:
// verify-full against the cluster CA once TLS is installed, else prefer.
func (s *Server) clientSSL() (mode, rootCert string) {
	if s.TLSEnabled() {
		_, _, ca := s.TLSPaths()
		return "verify-full", ca
	}
	return "prefer", ""
}

// clientSSLConn is clientSSL as conninfo words.
func (s *Server) clientSSLConn() []string {
	mode, root := s.clientSSL()
	if root == "" {
		return []string{"sslmode=" + mode}
	}
	return []string{"sslmode=" + mode, "sslrootcert=" + quoteConnValue(root)}
}

// clientSSLEnv is clientSSL as libpq environment variables.
func (s *Server) clientSSLEnv() []string {
	mode, root := s.clientSSL()
	if root == "" {
		return []string{"PGSSLMODE=" + mode}
	}
	return []string{"PGSSLMODE=" + mode, "PGSSLROOTCERT=" + root}
}

// RefreshConf rewrites petrel.conf (e.g. to turn ssl on once the TLS files
// are installed) and reloads a running server; ssl and its files are
// reloadable, the other settings in petrel.conf do not change.
func (s *Server) RefreshConf(ctx context.Context) error {
	if err := s.writePetrelConf(); err != nil {
		return fmt.Errorf("rewriting petrel.conf: %w", err)
	}
	if s.Running() {
		return s.Reload(ctx)
	}
	return nil
}

// SSLOn reports whether the running server has ssl on.
func (s *Server) SSLOn(ctx context.Context) (bool, error) {
	var v string
	if err := s.queryRow(ctx, func(r rowScanner) error { return r.Scan(&v) }, "SELECT current_setting('ssl')"); err != nil {
		return false, fmt.Errorf("reading ssl setting: %w", err)
	}
	return v == "on", nil
}
