// Command backup measures petrel's backups on a real 2-node cluster
// (internal/testcluster: scl1 and scl2, a leader and its synchronous
// streaming replica) archiving to a local directory store, configured with
// `petrel backup configure --path` like an operator would:
//
//  1. Base backup throughput. A pgbench database of -scale (default 75,
//     about 1.2 GB of tar) is backed up by petrel (backup.Create, what
//     `petrel backup create` runs: pg_basebackup's zstd-compressed tar on
//     stdout, SHA-256, into the store, a decompressed copy read for the
//     manifest) and by plain `pg_basebackup -D dir -Ft -X none -c fast`
//     into a local directory on the same disk, from the same member
//     (the streaming replica petrel picks) with the same connection
//     settings (TLS verified against the cluster CA, the replication role),
//     in the same run, -reps times each, alternating which goes first:
//     MB/s of each (medians), the ratio (the target is petrel ≥ 0.8×
//     pg_basebackup), CPU seconds, and the compression ratio (tar bytes /
//     stored bytes). For context, a third row: pg_basebackup compressing
//     into a directory (-Z client-zstd:level=1), petrel's compression
//     without the store, checksum and manifest reading.
//     The server's wait for its end segment to be archived, the same for
//     every tool, is cut short (endWatch) and left out of the ratio.
//     1b. Restore throughput: the newest of petrel's backups restored -reps
//     times with backup.Restore (what `petrel restore --backup ID` runs:
//     the stored stream read and checked, unpacked, its WAL fetched and
//     checked, archive recovery to the backup's end, a promotion, a
//     checkpoint, a clean stop) into a directory on the same disk: tar MB/s
//     next to pg_basebackup's from the same run (target ≥ 0.8×).
//  2. Archive lag under a write load: pgbench (TPC-B, -clients) for
//     -load while the leader's pg_current_wal_lsn() and its /status
//     archive section are sampled every 100 ms: completed segments not yet
//     in the archive, the age of the oldest WAL byte not yet archived (the
//     segment being written included: archive_timeout bounds it), each
//     segment's wait from completed to archived, and the leader's spool.
//  3. WAL compression: the archived segments' plain size (their metadata)
//     over the bytes stored, for the fill's segments and the load's.
//
// Usage: go run ./bench/backup [-scale 75] [-reps 3] [-load 30s] [-clients 4] [-archive-timeout 60] [-cpuprofile FILE] [-keep]
package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/petrel-db/petrel/internal/backup"
	"github.com/petrel-db/petrel/internal/backupstore"
	"github.com/petrel-db/petrel/internal/model"
	"github.com/petrel-db/petrel/internal/pg"
	"github.com/petrel-db/petrel/internal/testcluster"
)

var (
	scale      = flag.Int("scale", 75, "pgbench scale of the database backed up (75: about 1.2 GB)")
	reps       = flag.Int("reps", 3, "base backups of each kind (alternating which of petrel and plain pg_basebackup goes first)")
	load       = flag.Duration("load", 30*time.Second, "length of the pgbench write load while the archive lag is sampled")
	clients    = flag.Int("clients", 4, "pgbench clients of the write load")
	archTO     = flag.Int("archive-timeout", 60, "the cluster's archive_timeout in seconds (petrel backup configure --archive-timeout)")
	cpuprofile = flag.String("cpuprofile", "", "write a CPU profile of this process during petrel's first base backup to this file")
	keep       = flag.Bool("keep", false, "keep the cluster directory")
)

func main() {
	flag.Parse()
	log.SetFlags(log.Ltime)
	if err := run(); err != nil {
		log.Fatal(err)
	}
}

// bench is the running cluster and what every phase needs of it.
type bench struct {
	c       *testcluster.Cluster
	bin     string
	dir     string
	leader  string
	replica string
	st      backupstore.Store
	caFile  string
}

func run() error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
	defer cancel()
	for _, tool := range []string{"pgbench", "pg_basebackup"} {
		if _, err := exec.LookPath(tool); err != nil {
			return fmt.Errorf("%s is needed (make deps installs it): %w", tool, err)
		}
	}
	dir, err := os.MkdirTemp("", "petrel-bench-backup")
	if err != nil {
		return err
	}
	if !*keep {
		defer os.RemoveAll(dir)
	} else {
		log.Printf("keeping %s", dir)
	}
	wd, _ := os.Getwd()
	t0 := time.Now()
	bin, err := testcluster.Build(ctx, wd, dir)
	if err != nil {
		return err
	}
	c, err := testcluster.Start(ctx, testcluster.Options{Dir: filepath.Join(dir, "cluster"), Binary: bin})
	if err != nil {
		return err
	}
	defer c.Close()
	b := &bench{c: c, bin: bin, dir: dir}

	if b.leader, err = c.StartNodes(ctx, [2]string{"scl1", "scl"}, [2]string{"scl2", "scl"}); err != nil {
		return err
	}
	// The store, configured the operator's way (through a member's admin
	// API) before any data is written.
	archive := filepath.Join(dir, "archive")
	if err := b.petrel(ctx, "backup", "configure", "--path", archive, "--archive-timeout", strconv.Itoa(*archTO)); err != nil {
		return err
	}
	b.replica = "scl2"
	if b.leader == "scl2" {
		b.replica = "scl1"
	}
	if err := b.waitSync(ctx); err != nil {
		return err
	}
	if b.st, err = backupstore.Open(ctx, model.BackupConfig{Kind: "file", Path: archive}, backupstore.Credentials{}); err != nil {
		return err
	}
	defer b.st.Close()
	b.caFile = filepath.Join(dir, "ca.crt")
	if err := os.WriteFile(b.caFile, c.CAPEM, 0o600); err != nil {
		return err
	}
	log.Printf("cluster up in %.0fs: leader %s, replica %s", time.Since(t0).Seconds(), b.leader, b.replica)

	// The database.
	t1 := time.Now()
	if out, err := exec.CommandContext(ctx, "pgbench", "-i", "-q", "-I", "dtGvp", "-s", strconv.Itoa(*scale), c.DSN(b.leader)).CombinedOutput(); err != nil {
		return fmt.Errorf("pgbench -i: %w\n%s", err, out)
	}
	var dbSize int64
	if err := b.queryRow(ctx, b.leader, "SELECT pg_database_size('postgres')", &dbSize); err != nil {
		return err
	}
	fill := time.Since(t1)
	if err := b.switchAndDrain(ctx); err != nil {
		return err
	}
	fillSegs, err := b.archivedSegments(ctx)
	if err != nil {
		return err
	}
	log.Printf("pgbench -i -s %d: %d MB in %.0fs; %d segments archived; the leader's spool is empty", *scale, dbSize/1e6, fill.Seconds(), len(fillSegs))

	// 1. Base backups.
	bb, err := b.baseBackups(ctx)
	if err != nil {
		return err
	}

	// 1b. Restores of the newest petrel backup.
	rs, err := b.restores(ctx, bb)
	if err != nil {
		return err
	}

	// 2. Archive lag under a write load.
	if err := b.switchAndDrain(ctx); err != nil {
		return err
	}
	before, err := b.archivedSegments(ctx)
	if err != nil {
		return err
	}
	lag, err := b.archiveLag(ctx)
	if err != nil {
		return err
	}

	// 3. WAL compression.
	all, err := b.archivedSegments(ctx)
	if err != nil {
		return err
	}
	var fillRatio, loadRatio ratio
	for name, o := range all {
		if _, ok := fillSegs[name]; ok {
			fillRatio.add(o)
		} else if _, ok := before[name]; !ok {
			loadRatio.add(o)
		}
	}

	fmt.Println()
	fmt.Printf("petrel backup benchmark: 2 nodes (leader %s, synchronous streaming replica %s), a directory store on the same disk,\n", b.leader, b.replica)
	fmt.Printf("pgbench -s %d (%d MB database), %d cores; total run %.0fs\n\n", *scale, dbSize/1e6, runtime.NumCPU(), time.Since(t0).Seconds())
	bb.print()
	fmt.Println()
	rs.print(bb)
	fmt.Println()
	lag.print()
	fmt.Println()
	fmt.Println("WAL compression (zstd, the archiver's settings), segments only:")
	fmt.Printf("  %-30s %s\n", "pgbench -i (bulk load)", fillRatio)
	fmt.Printf("  %-30s %s\n", "pgbench write load (TPC-B)", loadRatio)
	return nil
}

// petrel runs the CLI against the cluster.
func (b *bench) petrel(ctx context.Context, args ...string) error {
	args = append(args, "--etcd", strings.Join(b.c.EtcdEndpoints(), ","), "--cluster", b.c.Opts.Name,
		"--secrets-file", b.c.SecretsFile(), "--ca-fingerprint", b.c.CAFingerprint)
	cctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	if out, err := exec.CommandContext(cctx, b.bin, args...).CombinedOutput(); err != nil {
		return fmt.Errorf("petrel %s: %w\n%s", strings.Join(args[:2], " "), err, out)
	}
	return nil
}

func (b *bench) waitSync(ctx context.Context) error {
	wctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	return testcluster.WaitFor(wctx, "a synchronous, streaming replica", func() bool {
		l, err := b.c.Status(b.leader)
		r, rerr := b.c.Status(b.replica)
		return err == nil && rerr == nil && l.SyncState == "sync" && r.Streaming
	})
}

func (b *bench) queryRow(ctx context.Context, id, sql string, dst ...any) error {
	qctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	conn, err := pgx.Connect(qctx, b.c.DSN(id))
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	return conn.QueryRow(qctx, sql).Scan(dst...)
}

// switchAndDrain ends the leader's current segment and waits until its
// spool is empty and the archive holds everything up to there.
func (b *bench) switchAndDrain(ctx context.Context) error {
	var seg string
	if err := b.queryRow(ctx, b.leader, "SELECT pg_walfile_name(pg_switch_wal())", &seg); err != nil {
		return err
	}
	want, _ := backup.ParseSegment(seg)
	wctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	return testcluster.WaitFor(wctx, "the leader to archive "+seg, func() bool {
		s, err := b.c.Status(b.leader)
		if err != nil || s.Archive == nil || s.Archive.Spooled != 0 {
			return false
		}
		got, ok := backup.ParseSegment(s.Archive.LastArchived)
		return ok && got.TLI == want.TLI && got.No >= want.No
	})
}

// archivedSegments lists the archive's segments with their metadata.
func (b *bench) archivedSegments(ctx context.Context) (map[string]backupstore.Object, error) {
	objs, err := b.st.List(ctx, "wal/")
	if err != nil {
		return nil, err
	}
	out := map[string]backupstore.Object{}
	for _, o := range objs {
		name := strings.TrimSuffix(strings.TrimPrefix(o.Key, "wal/"), ".zst")
		if _, ok := backup.ParseSegment(name); !ok {
			continue
		}
		full, err := b.st.Stat(ctx, o.Key)
		if err != nil {
			return nil, err
		}
		out[name] = full
	}
	return out, nil
}

// ratio sums plain and stored bytes.
type ratio struct {
	n             int
	plain, stored int64
}

func (r *ratio) add(o backupstore.Object) {
	size, _ := strconv.ParseInt(o.Meta["size"], 10, 64)
	r.n++
	r.plain += size
	r.stored += o.Size
}

func (r ratio) String() string {
	if r.n == 0 || r.stored == 0 {
		return "no segments"
	}
	return fmt.Sprintf("%3d segments, %6.1f MB plain, %6.1f MB stored: %5.2f×", r.n, float64(r.plain)/1e6, float64(r.stored)/1e6, float64(r.plain)/float64(r.stored))
}

// cpu is this process's and its waited-for children's CPU time.
func cpu() (self, children time.Duration) {
	var s, c syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &s)
	_ = syscall.Getrusage(syscall.RUSAGE_CHILDREN, &c)
	tv := func(r syscall.Rusage) time.Duration {
		return time.Duration(r.Utime.Nano() + r.Stime.Nano())
	}
	return tv(s), tv(c)
}

// run is one base backup's figures.
type bbRun struct {
	id            string // petrel's: the backup's id
	bytes         int64  // tar bytes
	stored        int64  // bytes written (petrel: compressed)
	took          time.Duration
	waited        time.Duration // of took, waiting for the end segment's archiving
	self, child   time.Duration // CPU: this process, pg_basebackup
	serverCPUSecs float64       // the source member's Postgres (every process)
}

// endWatch stands in for a busy primary during a standby's backup. A
// base backup without WAL (-X none) ends with the server waiting until
// the segment holding its end is archived, and a standby cannot end a
// segment: on a quiet primary that is up to archive_timeout (60 s by
// default) of waiting, the same for pg_basebackup and for petrel, which
// would be most of what is timed. endWatch polls the source's walsender
// and, once it waits (wait_event BackupWaitWalArchive), switches the
// primary's WAL, every second while it still waits; stop returns how
// long the wait lasted (from the first poll that saw it to the last, 20 ms
// apart).
func (b *bench) endWatch(ctx context.Context, source string) (stop func() time.Duration) {
	wctx, cancel := context.WithCancel(ctx)
	var since, until time.Time
	done := make(chan struct{})
	go func() {
		defer close(done)
		conn, err := pgx.Connect(wctx, b.c.DSN(source))
		if err != nil {
			return
		}
		defer conn.Close(context.Background())
		var switched time.Time
		for wctx.Err() == nil {
			var n int
			qctx, qcancel := context.WithTimeout(wctx, time.Second)
			err := conn.QueryRow(qctx, "SELECT count(*) FROM pg_stat_activity WHERE wait_event = 'BackupWaitWalArchive'").Scan(&n)
			qcancel()
			if err == nil && n > 0 {
				if since.IsZero() {
					since = time.Now()
				}
				until = time.Now()
				if time.Since(switched) > time.Second {
					switched = time.Now()
					_ = b.c.Exec(wctx, b.leader, "SELECT pg_switch_wal()")
				}
			}
			select {
			case <-wctx.Done():
			case <-time.After(20 * time.Millisecond):
			}
		}
	}()
	return func() time.Duration {
		cancel()
		<-done
		return until.Sub(since)
	}
}

func (r bbRun) mbps() float64 { return float64(r.bytes) / 1e6 / r.took.Seconds() }

// copyMBps leaves out the server's wait for its end segment's archiving:
// the tool's own throughput (its fsync included).
func (r bbRun) copyMBps() float64 { return float64(r.bytes) / 1e6 / (r.took - r.waited).Seconds() }

type bbResult struct {
	member             string
	petrel, pgbb, pgbz []bbRun
}

func median(rs []bbRun, f func(bbRun) float64) float64 {
	v := make([]float64, len(rs))
	for i, r := range rs {
		v[i] = f(r)
	}
	sort.Float64s(v)
	if len(v) == 0 {
		return 0
	}
	if len(v)%2 == 0 {
		return (v[len(v)/2-1] + v[len(v)/2]) / 2
	}
	return v[len(v)/2]
}

func (r bbResult) print() {
	fmt.Printf("base backup of %s (the streaming replica petrel picks), TLS verify-full, median of %d each:\n", r.member, len(r.petrel))
	fmt.Printf("  %-44s %7s %6s %6s %7s %7s %7s %9s %7s %7s\n", "", "tar MB", "s", "end s", "MB/s", "w/o end", "stored", "CPU pg_bb", "CPU Go", "server")
	row := func(name string, rs []bbRun) {
		f := func(g func(bbRun) float64) float64 { return median(rs, g) }
		fmt.Printf("  %-44s %7.0f %6.1f %6.1f %7.1f %7.1f %7.0f %9.1f %7.1f %7.1f\n", name,
			f(func(x bbRun) float64 { return float64(x.bytes) / 1e6 }),
			f(func(x bbRun) float64 { return x.took.Seconds() }),
			f(func(x bbRun) float64 { return x.waited.Seconds() }),
			f(bbRun.mbps),
			f(bbRun.copyMBps),
			f(func(x bbRun) float64 { return float64(x.stored) / 1e6 }),
			f(func(x bbRun) float64 { return x.child.Seconds() }),
			f(func(x bbRun) float64 { return x.self.Seconds() }),
			f(func(x bbRun) float64 { return x.serverCPUSecs }))
	}
	row("pg_basebackup -D dir -Ft -X none -c fast", r.pgbb)
	row("petrel backup create (backup.Create)", r.petrel)
	row("pg_basebackup ... -Z client-zstd:level=1", r.pgbz)
	p, g := median(r.petrel, bbRun.mbps), median(r.pgbb, bbRun.mbps)
	pc, gc := median(r.petrel, bbRun.copyMBps), median(r.pgbb, bbRun.copyMBps)
	fmt.Printf("  petrel / pg_basebackup: %.2f× without the end-segment wait, %.2f× wall clock (target ≥ 0.80×)\n", pc/gc, p/g)
	zc := median(r.pgbz, bbRun.copyMBps)
	fmt.Printf("  petrel / pg_basebackup compressing (libzstd level 1, context): %.2f× without the end-segment wait\n", pc/zc)
	fmt.Printf("  compression: %.2f× (tar bytes / stored bytes; pgbench's filler columns are blanks)\n",
		median(r.petrel, func(x bbRun) float64 { return float64(x.bytes) / float64(x.stored) }))
	fmt.Println("  (end s: of s, the server waiting for its end segment's archiving (it polls once a second), cut short by a")
	fmt.Println("   pg_switch_wal() on the leader; w/o end: MB/s over s - end s, each tool's fsync included;")
	fmt.Println("   CPU seconds of pg_basebackup (petrel's compresses), of this Go process (petrel's checksum, store and the")
	fmt.Println("   decompressed copy it reads the manifest from), of the source's Postgres)")
}

// pgCPU sums the CPU seconds of every process of the member's Postgres
// (the postmaster's children, the walsender among them).
func pgCPU(n *testcluster.Node) float64 {
	pm := n.PostmasterPID()
	if pm <= 0 {
		return 0
	}
	total := cpuTicksOf(pm, true)
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if ppidOf(pid) == pm {
			total += cpuTicksOf(pid, false)
		}
	}
	return float64(total) / 100
}

func statFields(pid int) []string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return nil
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return nil
	}
	return strings.Fields(s[i+1:])
}

func ppidOf(pid int) int {
	f := statFields(pid)
	if len(f) < 2 {
		return 0
	}
	p, _ := strconv.Atoi(f[1])
	return p
}

// cpuTicksOf is a process's user+system CPU in clock ticks (1/100 s),
// with reaped its waited-for children's (cutime, cstime): a walsender that
// exited counts in its postmaster's.
func cpuTicksOf(pid int, reaped bool) int64 {
	f := statFields(pid)
	if len(f) < 15 {
		return 0
	}
	fields := []int{11, 12}
	if reaped {
		fields = append(fields, 13, 14)
	}
	var t int64
	for _, i := range fields {
		v, _ := strconv.ParseInt(f[i], 10, 64)
		t += v
	}
	return t
}

func (b *bench) baseBackups(ctx context.Context) (bbResult, error) {
	sts := make([]model.Status, 0, 2)
	for _, id := range []string{b.leader, b.replica} {
		s, err := b.c.Status(id)
		if err != nil {
			return bbResult{}, err
		}
		sts = append(sts, s)
	}
	src, err := backup.ChooseSource(sts)
	if err != nil {
		return bbResult{}, err
	}
	n := b.c.Node(src.ID)
	res := bbResult{member: src.ID}
	pass := filepath.Join(b.dir, "pgpass")
	if err := os.WriteFile(pass, []byte("*:*:*:replicator:"+b.c.Secrets.Replication+"\n"), 0o600); err != nil {
		return res, err
	}
	source := backup.Source{Member: src.ID, Host: "127.0.0.1", Port: n.PGPort, User: "replicator",
		Password: b.c.Secrets.Replication, SSLRootCert: b.caFile}
	var prof *os.File
	if *cpuprofile != "" {
		if prof, err = os.Create(*cpuprofile); err != nil {
			return res, err
		}
		defer prof.Close()
	}
	petrel := func() error {
		if prof != nil && len(res.petrel) == 0 { // the first one only: one profile per file
			if err := pprof.StartCPUProfile(prof); err != nil {
				return err
			}
			defer pprof.StopCPUProfile()
		}
		s0, c0 := cpu()
		srv0 := pgCPU(n)
		stop := b.endWatch(ctx, src.ID)
		t0 := time.Now()
		bctx, cancel := context.WithTimeout(ctx, 10*time.Minute)
		bk, err := backup.Create(bctx, b.st, source, nil)
		cancel()
		took := time.Since(t0)
		waited := stop()
		if err != nil {
			return err
		}
		s1, c1 := cpu()
		r := bbRun{id: bk.ID, bytes: bk.Size, stored: bk.Stored, took: took, waited: waited, self: s1 - s0, child: c1 - c0, serverCPUSecs: pgCPU(n) - srv0}
		res.petrel = append(res.petrel, r)
		log.Printf("petrel backup %s: %.0f MB in %.1fs (%.1fs waiting for the end segment), %.1f MB/s, %.0f MB stored", bk.ID, float64(r.bytes)/1e6, took.Seconds(), waited.Seconds(), r.mbps(), float64(r.stored)/1e6)
		return nil
	}
	plain := func(i int, compress bool) error {
		out := filepath.Join(b.dir, fmt.Sprintf("pgbb-%d-%v", i, compress))
		_, c0 := cpu()
		srv0 := pgCPU(n)
		stop := b.endWatch(ctx, src.ID)
		t0 := time.Now()
		bctx, cancel := context.WithTimeout(ctx, 10*time.Minute)
		args := []string{"-D", out, "-F", "t", "-X", "none", "-c", "fast", "--no-password",
			"-h", "127.0.0.1", "-p", strconv.Itoa(n.PGPort), "-U", "replicator"}
		if compress {
			args = append(args, "--compress=client-zstd:level=1")
		}
		cmd := exec.CommandContext(bctx, "pg_basebackup", args...)
		cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "LC_ALL=C", "PGPASSFILE=" + pass, "PGCONNECT_TIMEOUT=10",
			"PGSSLMODE=verify-full", "PGSSLROOTCERT=" + b.caFile, "PGAPPNAME=bench_pg_basebackup"}
		o, err := cmd.CombinedOutput()
		cancel()
		took := time.Since(t0)
		waited := stop()
		if err != nil {
			return fmt.Errorf("pg_basebackup: %w\n%s", err, o)
		}
		_, c1 := cpu()
		var size int64
		ents, err := os.ReadDir(out)
		if err != nil {
			return err
		}
		for _, e := range ents {
			if fi, err := e.Info(); err == nil {
				size += fi.Size()
			}
		}
		r := bbRun{bytes: size, stored: size, took: took, waited: waited, child: c1 - c0, serverCPUSecs: pgCPU(n) - srv0}
		what := "pg_basebackup"
		if compress {
			// The tar bytes are the plain run's (the same data directory).
			r.bytes = res.pgbb[len(res.pgbb)-1].bytes
			res.pgbz = append(res.pgbz, r)
			what += " --compress=client-zstd:level=1"
		} else {
			res.pgbb = append(res.pgbb, r)
		}
		log.Printf("%s: %.0f MB in %.1fs (%.1fs waiting for the end segment), %.1f MB/s, %.0f MB stored", what, float64(r.bytes)/1e6, took.Seconds(), waited.Seconds(), r.mbps(), float64(size)/1e6)
		return os.RemoveAll(out)
	}
	for i := 0; i < *reps; i++ {
		// A checkpoint on the primary first (untimed), as `petrel backup
		// create` asks before a standby's backup: the standby's backup
		// then starts at a restartpoint at once.
		order := []func(int) error{
			func(i int) error { return plain(i, false) },
			func(int) error { return petrel() },
			func(i int) error { return plain(i, true) },
		}
		if i%2 == 1 {
			order[0], order[1] = order[1], order[0]
		}
		for _, f := range order {
			if err := b.c.Exec(ctx, b.leader, "CHECKPOINT"); err != nil {
				return res, err
			}
			time.Sleep(time.Second)
			if err := f(i); err != nil {
				return res, err
			}
		}
	}
	return res, nil
}

// sample is one look at the leader.
type sample struct {
	at      time.Time
	lsn     uint64
	last    backup.Segment // the archive's newest segment (zero: none)
	lastAt  time.Time
	spooled int
}

type lagResult struct {
	took                   time.Duration
	tps                    string
	samples                int
	walMB                  float64
	segments               int // completed during the load
	behind, age, wait, spl []float64
}

func pct(v []float64, p float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := append([]float64(nil), v...)
	sort.Float64s(s)
	i := int(p*float64(len(s)-1) + 0.5)
	return s[i]
}

func (r lagResult) print() {
	fmt.Printf("archive lag under pgbench -c %d -j 2 -T %.0f (TPC-B, %s) on the leader, archive_timeout %ds:\n", *clients, r.took.Seconds(), r.tps, *archTO)
	fmt.Printf("  %.0f MB of WAL, %d segments completed (one every %.1fs), %d samples (100 ms)\n", r.walMB, r.segments,
		r.took.Seconds()/float64(max(r.segments, 1)), r.samples)
	fmt.Printf("  %-58s %8s %8s %8s\n", "", "median", "p99", "max")
	row := func(name string, v []float64, unit string) {
		fmt.Printf("  %-58s %7.2f%s %7.2f%s %7.2f%s\n", name, pct(v, 0.5), unit, pct(v, 0.99), unit, pct(v, 1), unit)
	}
	row("completed segments not yet archived (sampled)", r.behind, " ")
	row("age of the oldest unarchived WAL, current segment incl.", r.age, "s")
	row(fmt.Sprintf("each segment, completed → archived (n=%d)", len(r.wait)), r.wait, "s")
	row("files waiting in the leader's spool (sampled)", r.spl, " ")
}

func (b *bench) archiveLag(ctx context.Context) (lagResult, error) {
	var res lagResult
	conn, err := pgx.Connect(ctx, b.c.DSN(b.leader))
	if err != nil {
		return res, err
	}
	defer conn.Close(context.Background())
	var (
		mu      sync.Mutex
		samples []sample
	)
	look := func() {
		s := sample{at: time.Now()}
		qctx, cancel := context.WithTimeout(ctx, time.Second)
		var lsn string
		err := conn.QueryRow(qctx, "SELECT pg_current_wal_lsn()::text").Scan(&lsn)
		cancel()
		if err != nil {
			return
		}
		if s.lsn, err = pg.ParseLSN(lsn); err != nil {
			return
		}
		st, err := b.c.Status(b.leader)
		if err != nil || st.Archive == nil {
			return
		}
		s.last, _ = backup.ParseSegment(st.Archive.LastArchived)
		s.lastAt, s.spooled = st.Archive.LastAt, st.Archive.Spooled
		mu.Lock()
		samples = append(samples, s)
		mu.Unlock()
	}
	sctx, stopSampling := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(100 * time.Millisecond)
		defer t.Stop()
		for {
			look()
			select {
			case <-sctx.Done():
				return
			case <-t.C:
			}
		}
	}()
	time.Sleep(300 * time.Millisecond)
	start := time.Now()
	lctx, cancel := context.WithTimeout(ctx, *load+time.Minute)
	out, err := exec.CommandContext(lctx, "pgbench", "-n", "-c", strconv.Itoa(*clients), "-j", "2",
		"-T", strconv.Itoa(int(load.Seconds())), b.c.DSN(b.leader)).CombinedOutput()
	cancel()
	end := time.Now()
	res.took = end.Sub(start)
	if err != nil {
		stopSampling()
		<-done
		return res, fmt.Errorf("pgbench: %w\n%s", err, out)
	}
	for _, l := range strings.Split(string(out), "\n") {
		if strings.HasPrefix(l, "tps = ") {
			res.tps = strings.Fields(l)[2] + " tps"
		}
	}
	// Keep sampling until every segment completed during the load is
	// archived.
	mu.Lock()
	endLSN := samples[len(samples)-1].lsn
	mu.Unlock()
	lastDone := endLSN/backup.SegmentSize - 1
	wctx, wcancel := context.WithTimeout(ctx, time.Duration(*archTO)*time.Second+2*time.Minute)
	err = testcluster.WaitFor(wctx, "the load's segments in the archive", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return samples[len(samples)-1].last.No >= lastDone
	})
	wcancel()
	stopSampling()
	<-done
	if err != nil {
		return res, err
	}

	res.samples = len(samples)
	// when interpolates the time the leader's WAL reached position p.
	when := func(p uint64) time.Time {
		for i, s := range samples {
			if s.lsn >= p {
				if i == 0 {
					return s.at
				}
				a := samples[i-1]
				f := float64(p-a.lsn) / float64(s.lsn-a.lsn)
				return a.at.Add(time.Duration(f * float64(s.at.Sub(a.at))))
			}
		}
		return samples[len(samples)-1].at
	}
	var first uint64
	for _, s := range samples {
		if !s.at.Before(start) {
			first = s.lsn
			break
		}
	}
	res.walMB = float64(endLSN-first) / 1e6
	for _, s := range samples {
		if s.at.Before(start) || s.at.After(end) {
			continue
		}
		cur := s.lsn / backup.SegmentSize
		behind := int64(cur) - int64(s.last.No) - 1
		res.behind = append(res.behind, float64(max(behind, 0)))
		res.spl = append(res.spl, float64(s.spooled))
		archivedTo := (s.last.No + 1) * backup.SegmentSize
		age := 0.0
		if s.lsn > archivedTo {
			age = s.at.Sub(when(archivedTo)).Seconds()
		}
		res.age = append(res.age, age)
	}
	// Each segment completed during the load: when the WAL passed its
	// end, and when the archive first named it (or a later one).
	for seg := first / backup.SegmentSize; seg <= lastDone; seg++ {
		completed := when((seg + 1) * backup.SegmentSize)
		if completed.Before(start) {
			continue
		}
		for _, s := range samples {
			if s.last.No >= seg && s.at.After(completed) {
				at := s.at
				if s.last.No == seg && !s.lastAt.IsZero() {
					at = s.lastAt
				}
				res.wait = append(res.wait, max(at.Sub(completed).Seconds(), 0))
				break
			}
		}
		res.segments++
	}
	return res, nil
}

type restoreResult struct {
	id   string
	runs []bbRun
}

// restores restores the newest petrel backup of bb, -reps times.
func (b *bench) restores(ctx context.Context, bb bbResult) (restoreResult, error) {
	last := bb.petrel[len(bb.petrel)-1]
	res := restoreResult{id: last.id}
	plan, err := backup.PlanRestore(ctx, b.st, backup.Target{BackupID: last.id})
	if err != nil {
		return res, err
	}
	for i := 0; i < *reps; i++ {
		run, err := os.MkdirTemp("", "petrel-bench-restore-")
		if err != nil {
			return res, err
		}
		data := filepath.Join(b.dir, fmt.Sprintf("restore-%d", i))
		port, err := testcluster.FreePort()
		if err != nil {
			return res, err
		}
		srv, err := pg.New(pg.Options{DataDir: filepath.Join(data, "pgdata"), RunDir: filepath.Join(run, "run"), Port: port,
			Logger: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))})
		if err != nil {
			return res, err
		}
		s0, _ := cpu()
		t0 := time.Now()
		rctx, cancel := context.WithTimeout(ctx, 10*time.Minute)
		_, err = backup.Restore(rctx, b.st, plan, backup.RestoreOptions{Server: srv, WALDir: filepath.Join(data, "wal"), Secrets: b.c.Secrets})
		cancel()
		took := time.Since(t0)
		s1, _ := cpu()
		srv.Close()
		os.RemoveAll(run)
		if err != nil {
			return res, fmt.Errorf("restoring backup %s: %w", last.id, err)
		}
		r := bbRun{bytes: last.bytes, stored: last.stored, took: took, self: s1 - s0}
		res.runs = append(res.runs, r)
		log.Printf("restore of %s: %.0f MB in %.1fs, %.1f MB/s", last.id, float64(r.bytes)/1e6, took.Seconds(), r.mbps())
		if err := os.RemoveAll(data); err != nil {
			return res, err
		}
	}
	return res, nil
}

func (r restoreResult) print(bb bbResult) {
	fmt.Printf("restore of backup %s (backup.Restore: read and check, unpack, fetch and check its WAL, recover, promote,\n", r.id)
	fmt.Printf("checkpoint, stop), median of %d:\n", len(r.runs))
	mb := median(r.runs, bbRun.mbps)
	fmt.Printf("  %-44s %7.0f MB %6.1f s %7.1f MB/s  CPU Go %.1f s\n", "petrel restore", float64(r.runs[0].bytes)/1e6,
		median(r.runs, func(x bbRun) float64 { return x.took.Seconds() }), mb,
		median(r.runs, func(x bbRun) float64 { return x.self.Seconds() }))
	g := median(bb.pgbb, bbRun.copyMBps)
	fmt.Printf("  petrel restore / pg_basebackup (its MB/s above, without the end-segment wait): %.2f× (target ≥ 0.80×)\n", mb/g)
}
