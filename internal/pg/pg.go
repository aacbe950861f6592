// Package pg runs and inspects one local PostgreSQL server: initdb,
// pg_basebackup, pg_rewind, pg_ctl start/stop/promote, configuration
// files, and the handful of SQL queries the agent needs (status,
// replication, slots). It is a thin side-effect layer and makes no
// cluster decisions.
//
// # Users and permissions
//
// PostgreSQL refuses to run as root. When the agent runs as root
// (os.Geteuid() == 0), every PostgreSQL binary is executed as
// Options.RunAs (default "postgres") through syscall.SysProcAttr.Credential,
// and New creates DataDir and RunDir 0700 owned by that user. New also adds
// the search (x) bit for group and others to every ancestor directory of
// DataDir and RunDir that lacks it, so that the unprivileged user can
// reach them (t.TempDir() and os.MkdirAll create 0700 parents). When not
// root, RunAs is ignored and everything runs as the current user.
//
// # Local connections
//
// The agent talks to its own server over the unix socket in RunDir as
// user postgres, database postgres, with trust authentication. One
// connection is cached per Server and reopened after a connection-level
// error; access to it is serialized, so Exec, Query and the inspection
// methods are safe for concurrent use but never run in parallel.
//
// # Passwords
//
// Passwords never appear in process arguments or logs: role passwords are
// set as SCRAM-SHA-256 verifiers computed client-side, and the tools that
// connect to another server (pg_basebackup, pg_rewind, the walreceiver)
// read them from 0600 passfiles in RunDir (replpass, and a transient
// superpass for pg_rewind that is removed afterwards).
//
// # Files
//
// postgresql.conf gets four include_if_exists lines at its end (conf.go's
// includeLines, in order): petrel-user.conf (the cluster-wide settings of
// `petrel config`), petrel.conf (rewritten from Options on every Start, so
// petrel's own settings win), petrel-readonly.conf (the full-disk switch)
// and petrel-recovery.conf (written by ConfigureStandby; ConfigurePrimary
// leaves only recovery_target_timeline in it). synchronous_standby_names lives in
// postgresql.auto.conf (ALTER SYSTEM). The server log is
// filepath.Dir(DataDir)/postgres.log, outside PGDATA so Wipe keeps it.
package pg

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
)

// Options configures a Server.
type Options struct {
	BinDir  string // directory of pg_ctl, initdb, ...; "" → `pg_config --bindir`
	DataDir string // PGDATA; created 0700 if missing (parent dirs too)
	RunDir  string // unix socket dir + passfiles; created 0700 owned by RunAs user
	// ArchiveDir is the WAL archive spool (outside PGDATA, so clones do
	// not copy it), created like RunDir; "" leaves archiving off.
	ArchiveDir string
	Host       string // listen_addresses
	Port       int
	RunAs      string // OS user when euid==0 (default "postgres"); ignored when not root
	Logger     *slog.Logger
	Access     Access // who may connect over TCP (pg_hba.conf)
}

// ConnInfo says how to reach another member's PostgreSQL over TCP.
type ConnInfo struct {
	Host     string
	Port     int
	User     string
	Password string
}

// Server is one local PostgreSQL server. Its methods are safe for
// concurrent use, but callers should serialize lifecycle operations
// (Start, Stop, BaseBackup, ...) themselves.
type Server struct {
	opts    Options
	log     *slog.Logger
	cred    *syscall.Credential // nil when not root
	uid     int                 // -1 when not root
	gid     int
	home    string
	logFile string

	mu   sync.Mutex // guards conn and serializes its use
	conn *pgx.Conn

	hbaMu sync.Mutex // guards peers
	peers []string   // members' hosts (SetPeers), sorted

	archMu      sync.Mutex    // guards the two below (SetArchive)
	archOff     bool          // the agent turned spooling off (no backup store)
	archTimeout time.Duration // archive_timeout (0: DefaultArchiveTimeout)

	libMu     sync.Mutex // guards pkglibdir
	pkglibdir string     // found once (installedLibraries)

	// standbyLogOff is the server log's size when the standby was last
	// configured (UpstreamLacksWAL).
	standbyLogOff atomic.Int64
}

// File names inside PGDATA / RunDir.
const (
	petrelConf      = "petrel.conf"
	recoveryConf    = "petrel-recovery.conf"
	standbySignal   = "standby.signal"
	recoverySignal  = "recovery.signal"
	replPassFile    = "replpass"
	superPassFile   = "superpass"
	serverLogName   = "postgres.log"
	maxSocketPath   = 107
	logTailBytes    = 2048
	pgCtlTimeoutSec = "60"
)

// New validates opts, resolves BinDir and the RunAs user, and creates
// DataDir and RunDir (0700, owned by RunAs when root). It does not touch
// a running server.
func New(opts Options) (*Server, error) {
	if opts.DataDir == "" || opts.RunDir == "" {
		return nil, errors.New("pg: DataDir and RunDir are required")
	}
	if opts.Port <= 0 || opts.Port > 65535 {
		return nil, fmt.Errorf("pg: invalid port %d", opts.Port)
	}
	var err error
	if opts.DataDir, err = filepath.Abs(opts.DataDir); err != nil {
		return nil, fmt.Errorf("pg: resolving data dir: %w", err)
	}
	if opts.RunDir, err = filepath.Abs(opts.RunDir); err != nil {
		return nil, fmt.Errorf("pg: resolving run dir: %w", err)
	}
	if opts.ArchiveDir != "" {
		if opts.ArchiveDir, err = filepath.Abs(opts.ArchiveDir); err != nil {
			return nil, fmt.Errorf("pg: resolving archive dir: %w", err)
		}
	}
	if n := len(opts.RunDir) + len("/.s.PGSQL.") + len(strconv.Itoa(opts.Port)); n > maxSocketPath {
		return nil, fmt.Errorf("pg: socket path in %s would be %d bytes, more than the %d a unix socket allows", opts.RunDir, n, maxSocketPath)
	}
	if opts.Host == "" {
		opts.Host = "localhost"
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.BinDir == "" {
		out, err := exec.Command("pg_config", "--bindir").Output()
		if err != nil {
			return nil, fmt.Errorf("pg: running pg_config --bindir: %w", err)
		}
		opts.BinDir = strings.TrimSpace(string(out))
	}
	if _, err := os.Stat(filepath.Join(opts.BinDir, "pg_ctl")); err != nil {
		return nil, fmt.Errorf("pg: looking for pg_ctl in %s: %w", opts.BinDir, err)
	}

	s := &Server{
		opts:    opts,
		log:     opts.Logger.With("component", "pg"),
		uid:     -1,
		gid:     -1,
		logFile: filepath.Join(filepath.Dir(opts.DataDir), serverLogName),
	}
	if os.Geteuid() == 0 {
		name := opts.RunAs
		if name == "" {
			name = "postgres"
		}
		s.opts.RunAs = name
		u, err := user.Lookup(name)
		if err != nil {
			return nil, fmt.Errorf("pg: looking up run-as user: %w", err)
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		s.uid, s.gid, s.home = uid, gid, u.HomeDir
		s.cred = &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}
		if gids, err := u.GroupIds(); err == nil {
			for _, g := range gids {
				if n, err := strconv.Atoi(g); err == nil {
					s.cred.Groups = append(s.cred.Groups, uint32(n))
				}
			}
		}
	}
	for _, d := range []string{opts.DataDir, opts.RunDir, opts.ArchiveDir} {
		if d == "" {
			continue
		}
		if err := s.mkdir(d); err != nil {
			return nil, err
		}
	}
	return s, nil
}

// mkdir creates dir 0700 owned by the run-as user and, when root, makes
// its ancestors traversable.
func (s *Server) mkdir(dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("pg: creating %s: %w", dir, err)
	}
	if err := os.Chmod(dir, 0o700); err != nil {
		return fmt.Errorf("pg: chmod %s: %w", dir, err)
	}
	if err := s.chown(dir); err != nil {
		return err
	}
	if s.cred == nil {
		return nil
	}
	for p := filepath.Dir(dir); ; p = filepath.Dir(p) {
		fi, err := os.Stat(p)
		if err != nil {
			return fmt.Errorf("pg: stat %s: %w", p, err)
		}
		if m := fi.Mode().Perm(); m&0o011 != 0o011 {
			if err := os.Chmod(p, m|0o011); err != nil {
				return fmt.Errorf("pg: making %s traversable: %w", p, err)
			}
		}
		if p == filepath.Dir(p) {
			return nil
		}
	}
}

// chown gives path to the run-as user (no-op when not root).
func (s *Server) chown(path string) error {
	if s.cred == nil {
		return nil
	}
	if err := os.Lchown(path, s.uid, s.gid); err != nil {
		return fmt.Errorf("pg: chown %s: %w", path, err)
	}
	return nil
}

// writeFile atomically writes a file owned by the run-as user. Each call
// has a temporary file of its own: two writers of one file at once (the
// archiver's settings and a start's, both petrel-archive.conf) each
// rename a complete file, where a shared temporary name let one rename
// the other's away before its chown (a bootstrap failed on that).
func (s *Server) writeFile(path string, data []byte, perm os.FileMode) error {
	f, err := os.CreateTemp(filepath.Dir(path), filepath.Base(path)+".petrel-tmp-*")
	if err != nil {
		return fmt.Errorf("pg: writing %s: %w", path, err)
	}
	tmp := f.Name()
	_, err = f.Write(data)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("pg: writing %s: %w", path, err)
	}
	if err := os.Chmod(tmp, perm); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("pg: chmod %s: %w", path, err)
	}
	if err := s.chown(tmp); err != nil {
		os.Remove(tmp)
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("pg: writing %s: %w", path, err)
	}
	return nil
}

func removeIfExists(path string) error {
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("pg: removing %s: %w", path, err)
	}
	return nil
}

// SocketDir is the directory of the server's unix socket (RunDir).
func (s *Server) SocketDir() string { return s.opts.RunDir }

// ServerLog is the path of the server log file (pg_ctl -l).
func (s *Server) ServerLog() string { return s.logFile }

// DataDir is PGDATA.
func (s *Server) DataDir() string { return s.opts.DataDir }

// Initialized reports whether PGDATA holds a cluster (PG_VERSION exists).
func (s *Server) Initialized() bool {
	_, err := os.Stat(filepath.Join(s.opts.DataDir, "PG_VERSION"))
	return err == nil
}

// envKeep are the only variables of the agent's environment PostgreSQL
// tools get. The environment is built from this list, never copied: the
// agent's holds secrets (SU_PASSWORD, REPL_PASSWORD, OPERATOR_PASSWORD,
// EDGE_SECRET, ETCD_PASSWORD, database URLs with passwords), and pg_ctl
// start hands its environment to the postmaster and so to every backend,
// where any code running as the postgres user (an extension, a
// superuser's COPY ... PROGRAM) reads it from /proc/<pid>/environ.
// Passwords reach the tools through 0600 passfiles instead.
var envKeep = []string{"PATH", "TZ", "TMPDIR", "LD_LIBRARY_PATH"}

// env is the environment of PostgreSQL tools: envKeep, HOME/USER/LOGNAME
// (the run-as user's when root), LC_ALL=C (so output can be parsed), and
// extra.
func (s *Server) env(extra ...string) []string {
	var env []string
	for _, k := range envKeep {
		if v, ok := os.LookupEnv(k); ok && !secretName(k) {
			env = append(env, k+"="+v)
		}
	}
	if _, ok := os.LookupEnv("PATH"); !ok {
		env = append(env, "PATH=/usr/local/bin:/usr/bin:/bin")
	}
	env = append(env, "LC_ALL=C")
	if s.cred != nil {
		env = append(env, "HOME="+s.home, "USER="+s.opts.RunAs, "LOGNAME="+s.opts.RunAs)
	} else {
		for _, k := range []string{"HOME", "USER", "LOGNAME"} {
			if v, ok := os.LookupEnv(k); ok {
				env = append(env, k+"="+v)
			}
		}
	}
	return append(env, extra...)
}

// secretName reports whether an environment variable's name says it holds
// a secret; such a variable is never passed on, even if listed.
func secretName(k string) bool {
	u := strings.ToUpper(k)
	for _, w := range []string{"PASSWORD", "SECRET", "TOKEN", "DATABASE_URL", "PASSPHRASE", "CREDENTIAL"} {
		if strings.Contains(u, w) {
			return true
		}
	}
	return false
}

// run executes a PostgreSQL binary as the run-as user and returns its
// combined output. The error carries the output's tail.
func (s *Server) run(ctx context.Context, what string, env []string, bin string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, filepath.Join(s.opts.BinDir, bin), args...)
	cmd.Env = env
	if cmd.Env == nil {
		cmd.Env = s.env()
	}
	cmd.Dir = s.opts.RunDir
	// Own process group: a postmaster started by pg_ctl must not get the
	// agent's terminal signals.
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: s.cred, Setpgid: true}
	var out bytes.Buffer
	cmd.Stdout = &out
	cmd.Stderr = &out
	cmd.WaitDelay = 5 * time.Second
	s.log.Debug("running", "cmd", bin, "args", args)
	err := cmd.Run()
	if err != nil {
		return out.String(), fmt.Errorf("%s: %s: %w: %s", what, bin, err, tail(out.String(), logTailBytes))
	}
	return out.String(), nil
}

// tail returns the last n bytes of s, starting at a line boundary.
func tail(s string, n int) string {
	s = strings.TrimSpace(s)
	if len(s) > n {
		s = s[len(s)-n:]
		if i := strings.IndexByte(s, '\n'); i >= 0 {
			s = s[i+1:]
		}
	}
	return s
}

// logTail is the tail of the server log, for error messages.
func (s *Server) logTail() string {
	f, err := os.Open(s.logFile)
	if err != nil {
		return ""
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return ""
	}
	off := max(fi.Size()-logTailBytes, 0)
	buf := make([]byte, fi.Size()-off)
	n, _ := f.ReadAt(buf, off)
	return tail(string(buf[:n]), logTailBytes)
}
