package chaos

import (
	"fmt"
	"io"
	"slices"
	"sort"
	"strings"
	"time"
)

// Summary aggregates many runs for the long mode's report.
type Summary struct {
	Started   time.Time     `json:"started"`
	Duration  time.Duration `json:"duration"`
	Seed      int64         `json:"seed"`
	Runs      []*Result     `json:"runs"`
	Errors    []string      `json:"harness_errors,omitempty"`
	Command   string        `json:"command"`
	Anomalies int           `json:"anomalies"`
}

func fmtD(d time.Duration) string { return d.Round(10 * time.Millisecond).String() }

// WriteMarkdown writes the report.
func (s *Summary) WriteMarkdown(w io.Writer) {
	fmt.Fprintf(w, "# petrel chaos report\n\n")
	fmt.Fprintf(w, "- started: %s, ran %s\n- command: `%s`\n- master seed: %d (replay one run with `-seed <run seed> -runs 1`)\n",
		s.Started.Format(time.RFC3339), fmtD(s.Duration), s.Command, s.Seed)
	faults := 0
	for _, r := range s.Runs {
		faults += len(r.Steps)
	}
	fmt.Fprintf(w, "- runs: %d, faults injected: %d, anomalies: %d, harness errors: %d\n\n", len(s.Runs), faults, s.Anomalies, len(s.Errors))

	// Per-fault statistics.
	type agg struct {
		n       int
		healthy []time.Duration
		windows []time.Duration
	}
	by := map[string]*agg{}
	for _, r := range s.Runs {
		for _, st := range r.Steps {
			a := by[st.Fault]
			if a == nil {
				a = &agg{}
				by[st.Fault] = a
			}
			a.n++
			a.healthy = append(a.healthy, st.HealthyAfter)
		}
		for _, win := range r.Windows {
			if a := by[win.Fault]; a != nil {
				a.windows = append(a.windows, win.Len())
			}
		}
	}
	names := make([]string, 0, len(by))
	for n := range by {
		names = append(names, n)
	}
	sort.Strings(names)
	fmt.Fprintf(w, "## Faults\n\n| fault | injected | healthy after heal (median / max) | write-unavailability windows > 1s (count, median / max) |\n|---|---|---|---|\n")
	for _, n := range names {
		a := by[n]
		fmt.Fprintf(w, "| %s | %d | %s / %s | %d, %s / %s |\n", n, a.n, fmtD(med(a.healthy)), fmtD(maxD(a.healthy)), len(a.windows), fmtD(med(a.windows)), fmtD(maxD(a.windows)))
	}
	fmt.Fprintf(w, "\n## Runs\n\n| seed | duration | steps | ok/fail/unknown ops | linearizable | probe acks | WAL archive at the end | anomalies |\n|---|---|---|---|---|---|---|---|\n")
	for _, r := range s.Runs {
		var ok, fail, unk int
		for k, v := range r.Counts {
			switch {
			case strings.HasSuffix(k, "/ok"):
				ok += v
			case strings.HasSuffix(k, "/fail"):
				fail += v
			default:
				unk += v
			}
		}
		var steps []string
		for _, st := range r.Steps {
			steps = append(steps, st.Fault)
		}
		fmt.Fprintf(w, "| %d | %s | %s | %d/%d/%d | %s | %d | %s | %d |\n", r.Seed, fmtD(r.Duration), strings.Join(steps, ", "), ok, fail, unk, r.Linear, r.Probes, r.Archive, len(r.Anomalies))
	}
	fmt.Fprintf(w, "\n## Anomalies\n\n")
	if s.Anomalies == 0 {
		fmt.Fprintf(w, "None.\n")
	}
	for _, r := range s.Runs {
		for _, a := range r.Anomalies {
			fmt.Fprintf(w, "- seed %d, **%s**: %s (cluster dir %s)\n", r.Seed, a.Kind, a.Detail, r.Dir)
		}
	}
	if len(s.Errors) > 0 {
		fmt.Fprintf(w, "\n## Harness errors\n\n")
		for _, e := range s.Errors {
			fmt.Fprintf(w, "- %s\n", e)
		}
	}
	fmt.Fprintf(w, "\n## Steps\n\n| seed | at | fault | what | hold | healthy after | error |\n|---|---|---|---|---|---|---|\n")
	for _, r := range s.Runs {
		for _, st := range r.Steps {
			fmt.Fprintf(w, "| %d | %s | %s | %s | %s | %s | %s |\n", r.Seed, fmtD(st.At), st.Fault, st.Desc, fmtD(st.Hold), fmtD(st.HealthyAfter), st.Err)
		}
	}
}

func med(d []time.Duration) time.Duration {
	if len(d) == 0 {
		return 0
	}
	x := slices.Clone(d)
	slices.Sort(x)
	return x[len(x)/2]
}

func maxD(d []time.Duration) time.Duration {
	var m time.Duration
	for _, x := range d {
		m = max(m, x)
	}
	return m
}
