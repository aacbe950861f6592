// Command petrel-chaos is the long mode of the fault-injection suite
// (internal/chaos): it runs random fault schedules against real clusters
// for a while and writes a report (markdown and JSON) to -out. Every run
// has its own seed, printed and reported, so a failure replays with
// `-seed N -runs 1`.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"log"
	"math/rand"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/petrel-db/petrel/internal/chaos"
	"github.com/petrel-db/petrel/internal/testcluster"
)

func main() {
	var (
		duration = flag.Duration("duration", 30*time.Minute, "stop starting runs after this long")
		runs     = flag.Int("runs", 0, "stop after this many runs (0: until -duration)")
		seed     = flag.Int64("seed", 0, "master seed (0: from the clock); with -runs 1 it is the run's seed")
		steps    = flag.Int("steps", 6, "faults per run")
		faults   = flag.String("faults", "", "comma-separated faults to draw from (default: "+strings.Join(chaos.DefaultFaults(), ",")+"; disk-full-leader needs -tmpfs)")
		target   = flag.String("target", "proxy", "where clients connect: proxy (a random node's leader proxy) or writer (multi-host read-write DSN)")
		out      = flag.String("out", "chaos-report", "report directory")
		dir      = flag.String("dir", "", "cluster directories go under this (default a temp dir)")
		withOrd  = flag.Bool("ord", false, "add ord1, a replica outside the primary region")
		keepDirs = flag.Bool("keep", false, "keep every run's cluster directory (logs, data), not only those with anomalies")
		tmpfs    = flag.String("tmpfs", "", "root only: put every node's data dir on a tmpfs of this size (e.g. 384m); adds disk-full-leader to the default faults")
	)
	flag.Parse()
	if *seed == 0 {
		*seed = time.Now().UnixNano() % 1_000_000_007
	}
	log.SetFlags(log.Ltime | log.Lmicroseconds)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	base := *dir
	if base == "" {
		var err error
		if base, err = os.MkdirTemp("", "petrel-chaos"); err != nil {
			log.Fatal(err)
		}
	}
	bin, err := testcluster.Build(ctx, ".", base)
	if err != nil {
		log.Fatal(err)
	}
	var fl []string
	if *tmpfs != "" && *faults == "" {
		fl = append(chaos.DefaultFaults(), "disk-full-leader")
	}
	if *faults != "" {
		fl = strings.Split(*faults, ",")
		for _, f := range fl {
			if _, ok := chaos.FaultByName(f); !ok {
				log.Fatalf("unknown fault %q; known: %s", f, strings.Join(chaos.FaultNames(), ","))
			}
		}
	}
	nodes := chaos.DefaultNodes
	if *withOrd {
		nodes = append(append([]chaos.NodeSpec(nil), nodes...), chaos.NodeSpec{ID: "ord1", Region: "ord"})
	}
	sum := &chaos.Summary{Started: time.Now(), Seed: *seed, Command: strings.Join(os.Args, " ")}
	master := rand.New(rand.NewSource(*seed))
	log.Printf("petrel-chaos: master seed %d, duration %v, report in %s", *seed, *duration, *out)
	deadline := time.Now().Add(*duration)
	for i := 0; ctx.Err() == nil && (*runs == 0 || i < *runs) && (*runs != 0 || time.Now().Before(deadline)); i++ {
		rs := master.Int63n(1_000_000_007)
		if *runs == 1 {
			rs = *seed
		}
		rng := rand.New(rand.NewSource(rs))
		sched := chaos.RandomSchedule(rng, *steps, fl, 3*time.Second)
		log.Printf("run %d: seed %d, schedule %v", i+1, rs, sched)
		res, err := chaos.Run(ctx, chaos.Config{
			Dir: filepath.Join(base, fmt.Sprintf("run-%d", rs)), Binary: bin, Seed: rs, Nodes: nodes,
			Target: *target, Schedule: sched, Logf: log.Printf, TmpfsSize: *tmpfs, KeepDir: *keepDirs,
		})
		if err != nil {
			log.Printf("run %d (seed %d): harness error: %v", i+1, rs, err)
			sum.Errors = append(sum.Errors, fmt.Sprintf("seed %d: %v", rs, err))
			continue
		}
		sum.Runs = append(sum.Runs, res)
		sum.Anomalies += len(res.Anomalies)
		log.Printf("run %d (seed %d): %d anomalies, linearizable %s, windows %d, counts %v", i+1, rs, len(res.Anomalies), res.Linear, len(res.Windows), res.Counts)
		for _, a := range res.Anomalies {
			log.Printf("  ANOMALY %s: %s", a.Kind, a.Detail)
		}
		for _, n := range res.Notes {
			log.Printf("  note: %s", n)
		}
		sum.Duration = time.Since(sum.Started)
		if err := write(*out, sum); err != nil {
			log.Printf("writing the report: %v", err)
		}
	}
	sum.Duration = time.Since(sum.Started)
	if err := write(*out, sum); err != nil {
		log.Fatal(err)
	}
	log.Printf("done: %d runs, %d anomalies; report in %s (master seed %d)", len(sum.Runs), sum.Anomalies, *out, *seed)
	if sum.Anomalies > 0 {
		os.Exit(1)
	}
}

func write(dir string, s *chaos.Summary) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	b, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "report.json"), b, 0o644); err != nil {
		return err
	}
	f, err := os.Create(filepath.Join(dir, "report.md"))
	if err != nil {
		return err
	}
	defer f.Close()
	s.WriteMarkdown(f)
	return f.Close()
}
