package pg

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/petrel-db/petrel/internal/config"
)

// Bootstrap creates a new cluster: initdb (when PGDATA has no cluster yet;
// a half-initialized PGDATA is wiped first), pg_hba.conf and config
// includes, Start, then sets the passwords of postgres, replicator
// (REPLICATION LOGIN) and operator (LOGIN CREATEDB, no CREATEROLE:
// HardenRoles gives it functions for app users instead) as client-side
// SCRAM verifiers, creating the roles when missing. It is
// idempotent and leaves the server running as a primary. An empty
// password sets PASSWORD NULL (no password login).
func (s *Server) Bootstrap(ctx context.Context, sec config.Secrets) error {
	if !s.Initialized() || s.bootstrapPhase() == bootstrapInitdb {
		if s.Running() {
			return errors.New("bootstrapping: a server is running on an uninitialized data directory")
		}
		// A data directory initdb did not finish is wiped: Postgres never
		// ran on it, so it holds nothing.
		if err := s.Wipe(); err != nil {
			return fmt.Errorf("bootstrapping: %w", err)
		}
		if err := s.setBootstrapPhase(bootstrapInitdb); err != nil {
			return fmt.Errorf("bootstrapping: %w", err)
		}
		s.log.Info("running initdb", "datadir", s.opts.DataDir)
		if _, err := s.run(ctx, "bootstrapping: initdb", nil, "initdb",
			"-D", s.opts.DataDir, "-U", "postgres", "--data-checksums",
			"--auth-local=trust", "--auth-host=scram-sha-256", "-E", "UTF8", "--locale=C"); err != nil {
			return err
		}
		if err := s.setBootstrapPhase(bootstrapRoles); err != nil {
			return fmt.Errorf("bootstrapping: %w", err)
		}
	}
	if _, err := s.writeHBA(); err != nil {
		return fmt.Errorf("bootstrapping: %w", err)
	}
	if err := s.ensureIncludes(); err != nil {
		return fmt.Errorf("bootstrapping: %w", err)
	}
	if err := s.ConfigurePrimary(); err != nil {
		return fmt.Errorf("bootstrapping: %w", err)
	}
	if err := s.Start(ctx); err != nil {
		return fmt.Errorf("bootstrapping: %w", err)
	}
	roles := []struct{ name, attrs, password string }{
		{"postgres", "SUPERUSER LOGIN", sec.Superuser},
		{"replicator", "REPLICATION LOGIN", sec.Replication},
		{"operator", "LOGIN CREATEDB NOCREATEROLE", sec.Operator},
	}
	for _, r := range roles {
		pw := "NULL"
		if r.password != "" {
			v, err := ScramVerifier(r.password)
			if err != nil {
				return fmt.Errorf("bootstrapping: %w", err)
			}
			pw = quoteLiteral(v)
		}
		var exists bool
		if err := s.queryRow(ctx, func(row rowScanner) error { return row.Scan(&exists) },
			"SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $1)", r.name); err != nil {
			return fmt.Errorf("bootstrapping: checking role %s: %w", r.name, err)
		}
		verb := "CREATE"
		if exists {
			verb = "ALTER"
		}
		if err := s.Exec(ctx, fmt.Sprintf("%s ROLE %s WITH %s PASSWORD %s", verb, r.name, r.attrs, pw)); err != nil {
			// Never include the statement: it carries the verifier.
			return fmt.Errorf("bootstrapping: setting role %s: %w", r.name, err)
		}
	}
	if err := s.HardenRoles(ctx); err != nil {
		return fmt.Errorf("bootstrapping: %w", err)
	}
	if err := os.Remove(s.bootstrapMarker()); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("bootstrapping: %w", err)
	}
	s.log.Info("bootstrapped cluster", "datadir", s.opts.DataDir)
	return nil
}

// The bootstrap marker (beside PGDATA, which initdb wants empty) exists
// from before initdb until the roles have their passwords: a bootstrap
// that failed or was killed in between is finished by the next Bootstrap,
// never started as it is (a cluster whose roles have no passwords, or
// whose initdb stopped half way). It names the phase reached.
const (
	bootstrapInitdb = "initdb" // initdb may not have finished: wipe and run it again
	bootstrapRoles  = "roles"  // initdb finished; the roles are not all set
)

func (s *Server) bootstrapMarker() string {
	return filepath.Join(filepath.Dir(s.opts.DataDir), "petrel-bootstrap-unfinished")
}

func (s *Server) bootstrapPhase() string {
	b, err := os.ReadFile(s.bootstrapMarker())
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

func (s *Server) setBootstrapPhase(phase string) error {
	if err := writeSynced(s.bootstrapMarker(), phase); err != nil {
		return fmt.Errorf("recording the bootstrap's phase: %w", err)
	}
	return nil
}

// BootstrapUnfinished says whether a Bootstrap began and did not finish
// (see the bootstrap marker): the data directory is then to be given to
// Bootstrap again, not started as it is.
func (s *Server) BootstrapUnfinished() bool {
	_, err := os.Stat(s.bootstrapMarker())
	return err == nil
}

// Wipe removes the contents of PGDATA (for a re-clone), keeping the
// directory itself. It refuses while the server runs.
func (s *Server) Wipe() error {
	if s.Running() {
		return errors.New("wiping data directory: server is running")
	}
	s.Close()
	entries, err := os.ReadDir(s.opts.DataDir)
	if err != nil {
		return fmt.Errorf("wiping data directory: %w", err)
	}
	for _, e := range entries {
		if err := os.RemoveAll(filepath.Join(s.opts.DataDir, e.Name())); err != nil {
			return fmt.Errorf("wiping data directory: %w", err)
		}
	}
	// Nothing of an unfinished rewind or bootstrap is left.
	for _, m := range []string{s.rewindMarker(), s.bootstrapMarker()} {
		if err := os.Remove(m); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("wiping data directory: %w", err)
		}
	}
	if len(entries) > 0 {
		s.log.Info("wiped data directory", "datadir", s.opts.DataDir)
	}
	return s.mkdir(s.opts.DataDir)
}

// BaseBackup wipes PGDATA and clones src with pg_basebackup (-X stream,
// fast checkpoint) as src.User (default "replicator"), password from
// RunDir/replpass. Afterwards it fixes ownership and permissions,
// rewrites pg_hba.conf, removes the source's standby.signal,
// recovery.signal and petrel-recovery.conf, and drops
// synchronous_standby_names from postgresql.auto.conf. The result is not
// configured as a standby: call ConfigureStandby before Start.
func (s *Server) BaseBackup(ctx context.Context, src ConnInfo) error {
	if src.User == "" {
		src.User = "replicator"
	}
	if err := s.Wipe(); err != nil {
		return fmt.Errorf("base backup: %w", err)
	}
	pass, err := s.writePassfile(replPassFile, src)
	if err != nil {
		return fmt.Errorf("base backup: %w", err)
	}
	s.log.Info("running pg_basebackup", "host", src.Host, "port", src.Port)
	if _, err := s.run(ctx, "base backup", s.env(append([]string{"PGPASSFILE=" + pass, "PGCONNECT_TIMEOUT=5", "PGAPPNAME=petrel_basebackup"}, s.clientSSLEnv()...)...),
		"pg_basebackup", "-D", s.opts.DataDir, "-X", "stream", "-c", "fast",
		"-h", src.Host, "-p", strconv.Itoa(src.Port), "-U", src.User, "--no-password"); err != nil {
		return err
	}
	if err := s.afterClone(); err != nil {
		return fmt.Errorf("base backup: %w", err)
	}
	return nil
}

// afterClone normalizes a data directory copied from another member.
func (s *Server) afterClone() error {
	if err := os.Chmod(s.opts.DataDir, 0o700); err != nil {
		return fmt.Errorf("chmod data directory: %w", err)
	}
	if s.cred != nil {
		err := filepath.WalkDir(s.opts.DataDir, func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			return os.Lchown(p, s.uid, s.gid)
		})
		if err != nil {
			return fmt.Errorf("chown data directory: %w", err)
		}
	}
	if _, err := s.writeHBA(); err != nil {
		return err
	}
	if err := s.ConfigurePrimary(); err != nil {
		return err
	}
	if err := s.resetAutoConf(); err != nil {
		return err
	}
	return s.ensureIncludes()
}

// Rewind runs pg_rewind against src (user default "postgres", password in
// a transient 0600 passfile removed afterwards) so this stopped former
// primary can follow src. PostgreSQL 15's pg_rewind first runs crash
// recovery itself if the target was not shut down cleanly; "no rewind
// required" is success. Afterwards the same clean-up as BaseBackup runs;
// call ConfigureStandby before Start. A failure wraps ErrRewindUnavailable
// (retry later, the data directory is untouched) or ErrRewindImpossible
// (clone again).
func (s *Server) Rewind(ctx context.Context, src ConnInfo) error {
	if s.Running() {
		return errors.New("rewinding: server is running")
	}
	if src.User == "" {
		src.User = "postgres"
	}
	s.Close()
	pass, err := s.writePassfile(superPassFile, src)
	if err != nil {
		return fmt.Errorf("rewinding: %w", err)
	}
	defer os.Remove(pass)
	conn := strings.Join([]string{
		"host=" + quoteConnValue(src.Host),
		"port=" + strconv.Itoa(src.Port),
		"user=" + quoteConnValue(src.User),
		"dbname=postgres",
		"passfile=" + quoteConnValue(pass),
		"connect_timeout=5",
		"application_name=petrel_rewind",
	}, " ") + " " + strings.Join(s.clientSSLConn(), " ")
	s.log.Info("running pg_rewind", "host", src.Host, "port", src.Port)
	out, err := s.runRewind(ctx, conn)
	if err != nil {
		return err
	}
	s.log.Info("pg_rewind done", "output", tail(out, 512))
	if err := s.markWALArchived(); err != nil {
		return fmt.Errorf("rewinding: %w", err)
	}
	if err := s.afterClone(); err != nil {
		return fmt.Errorf("rewinding: %w", err)
	}
	return nil
}

// readPID returns the pid in postmaster.pid, or 0.
func (s *Server) readPID() int {
	data, err := os.ReadFile(filepath.Join(s.opts.DataDir, "postmaster.pid"))
	if err != nil {
		return 0
	}
	line, _, _ := strings.Cut(string(data), "\n")
	pid, err := strconv.Atoi(strings.TrimSpace(line))
	if err != nil || pid <= 0 {
		return 0
	}
	return pid
}

// alive reports whether pid is a live postgres process. A live process
// with another name (pid reuse after a crash) does not count.
func alive(pid int) bool {
	if err := syscall.Kill(pid, 0); err != nil && !errors.Is(err, syscall.EPERM) {
		return false
	}
	if comm, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/comm"); err == nil {
		c := strings.TrimSpace(string(comm))
		return strings.HasPrefix(c, "postgres") || strings.HasPrefix(c, "postmaster")
	}
	return true
}

// PID returns the postmaster's pid, or 0 when it is not running.
func (s *Server) PID() int {
	pid := s.readPID()
	if pid == 0 || !alive(pid) {
		return 0
	}
	return pid
}

// Running reports whether postmaster.pid exists and its process is alive.
func (s *Server) Running() bool { return s.PID() != 0 }

// Start writes petrel.conf and starts the server with
// `pg_ctl start -w -t 60`, logging to ServerLog(). It is a no-op when the
// server is running, and removes a stale postmaster.pid first.
//
// pg_ctl returns once the server accepts connections. A hot standby that
// cannot reach a consistent state (e.g. its primary is down before it
// caught up) never does; if pg_ctl times out but the postmaster is still
// running, Start logs a warning and returns nil: the server is up but may
// reject connections for a while (Status then returns an error).
func (s *Server) Start(ctx context.Context) error {
	if s.Running() {
		return nil
	}
	if !s.Initialized() {
		return errors.New("starting postgres: data directory is not initialized")
	}
	pidFile := filepath.Join(s.opts.DataDir, "postmaster.pid")
	if _, err := os.Stat(pidFile); err == nil {
		s.log.Warn("removing stale postmaster.pid", "pid", s.readPID())
		if err := removeIfExists(pidFile); err != nil {
			return fmt.Errorf("starting postgres: %w", err)
		}
	}
	if err := s.mkdir(s.opts.RunDir); err != nil {
		return fmt.Errorf("starting postgres: %w", err)
	}
	if err := s.ensureIncludes(); err != nil {
		return fmt.Errorf("starting postgres: %w", err)
	}
	if err := s.writePetrelConf(); err != nil {
		return fmt.Errorf("starting postgres: %w", err)
	}
	f, err := os.OpenFile(s.logFile, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		return fmt.Errorf("starting postgres: creating log file: %w", err)
	}
	f.Close()
	if err := s.chown(s.logFile); err != nil {
		return fmt.Errorf("starting postgres: %w", err)
	}
	s.log.Info("starting postgres", "datadir", s.opts.DataDir, "port", s.opts.Port)
	// A standby whose upstream removed the WAL it needs never becomes
	// consistent, so pg_ctl would wait its full minute: stop waiting once
	// the walreceiver says so (the postmaster runs on; the agent sees
	// UpstreamLacksWAL and re-clones).
	runCtx, stopWaiting := context.WithCancel(ctx)
	defer stopWaiting()
	var lacksWAL atomic.Bool
	if _, err := os.Stat(filepath.Join(s.opts.DataDir, standbySignal)); err == nil {
		go func() {
			t := time.NewTicker(250 * time.Millisecond)
			defer t.Stop()
			for {
				select {
				case <-runCtx.Done():
					return
				case <-t.C:
					if s.UpstreamLacksWAL() {
						lacksWAL.Store(true)
						stopWaiting()
						return
					}
				}
			}
		}()
	}
	out, err := s.run(runCtx, "pg_ctl start", nil, "pg_ctl", "start", "-w", "-t", pgCtlTimeoutSec,
		"-D", s.opts.DataDir, "-l", s.logFile)
	if err != nil {
		if ctx.Err() == nil && s.Running() && (strings.Contains(out, "did not start in time") || lacksWAL.Load()) {
			s.log.Warn("postgres started but is not accepting connections yet", "upstream_lacks_wal", lacksWAL.Load(), "log", tail(s.logTail(), 512))
			return nil
		}
		return fmt.Errorf("starting postgres: %w; server log: %s", err, s.logTail())
	}
	return nil
}

// Stop stops the server with `pg_ctl stop -m mode -w -t 60`; mode is
// "fast" or "immediate" ("" means fast). It returns nil if the server is
// not running.
func (s *Server) Stop(ctx context.Context, mode string) error {
	if mode == "" {
		mode = "fast"
	}
	if mode != "fast" && mode != "immediate" && mode != "smart" {
		return fmt.Errorf("stopping postgres: invalid mode %q", mode)
	}
	s.Close()
	if !s.Running() {
		return nil
	}
	s.log.Info("stopping postgres", "mode", mode)
	if _, err := s.run(ctx, "pg_ctl stop", nil, "pg_ctl", "stop", "-m", mode, "-w", "-t", pgCtlTimeoutSec,
		"-D", s.opts.DataDir); err != nil {
		if !s.Running() {
			return nil
		}
		return fmt.Errorf("stopping postgres: %w; server log: %s", err, s.logTail())
	}
	return nil
}

// Promote promotes a standby with `pg_ctl promote -w -t 60`, then runs
// CHECKPOINT so the new timeline is in the control file and pg_rewind
// against this server works right away. Callers should also
// ConfigurePrimary so a restart does not turn it back into a standby.
// Promoting a server that already runs as a primary only checkpoints.
func (s *Server) Promote(ctx context.Context) error {
	if st, err := s.Status(ctx); err == nil && st.Running && !st.InRecovery {
		// Already promoted (e.g. retried after a crash mid-promotion).
		if err := s.Exec(ctx, "CHECKPOINT"); err != nil {
			return fmt.Errorf("promoting postgres: checkpoint: %w", err)
		}
		return nil
	}
	s.log.Info("promoting postgres")
	if _, err := s.run(ctx, "promoting postgres", nil, "pg_ctl", "promote", "-w", "-t", pgCtlTimeoutSec,
		"-D", s.opts.DataDir); err != nil {
		return fmt.Errorf("%w; server log: %s", err, s.logTail())
	}
	if err := s.Exec(ctx, "CHECKPOINT"); err != nil {
		return fmt.Errorf("promoting postgres: checkpoint: %w", err)
	}
	return nil
}

// Reload makes the server re-read its configuration files (SIGHUP). It
// returns once the signal is sent, not once it is processed.
func (s *Server) Reload(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("reloading postgres: %w", err)
	}
	pid := s.PID()
	if pid == 0 {
		return errors.New("reloading postgres: server is not running")
	}
	if err := syscall.Kill(pid, syscall.SIGHUP); err != nil {
		return fmt.Errorf("reloading postgres: %w", err)
	}
	return nil
}
