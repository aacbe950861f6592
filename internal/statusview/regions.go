package statusview

import (
	"fmt"
	"io"
	"text/tabwriter"

	"github.com/petrel-db/petrel/internal/model"
)

// RegionSummary is one region's line in the per-region view: how many of
// its members answer, whether the leader is there, and the worst
// replication lag among its replicas as they measured it (lag_bytes: the
// leader's current LSN minus the replica's replay LSN; lag_seconds: from
// the replica's replay timestamps, see GET /status).
type RegionSummary struct {
	Region        string  `json:"region"`
	Members       int     `json:"members"`
	Up            int     `json:"up"` // answering, not offline
	Replicas      int     `json:"replicas"`
	Streaming     int     `json:"streaming"`
	Primary       string  `json:"primary,omitempty"` // the leader's id, when it is in this region
	MaxLagBytes   int64   `json:"max_lag_bytes"`
	MaxLagSeconds float64 `json:"max_lag_seconds"`
	LagUnknown    int     `json:"lag_unknown,omitempty"` // replicas that could not measure their lag
}

// Regions summarises sts per region, in order of first appearance.
func Regions(sts []model.Status) []RegionSummary {
	var out []RegionSummary
	idx := map[string]int{}
	for _, s := range sts {
		i, ok := idx[s.Region]
		if !ok {
			i = len(out)
			idx[s.Region] = i
			out = append(out, RegionSummary{Region: s.Region})
		}
		r := &out[i]
		r.Members++
		if s.Role != model.RoleOffline {
			r.Up++
		}
		switch s.Role {
		case model.RolePrimary:
			r.Primary = s.ID
		case model.RoleReplica:
			r.Replicas++
			if s.Streaming {
				r.Streaming++
			}
			if s.LagBytes < 0 {
				r.LagUnknown++
				continue
			}
			r.MaxLagBytes = max(r.MaxLagBytes, s.LagBytes)
			r.MaxLagSeconds = max(r.MaxLagSeconds, s.LagSeconds)
		}
	}
	return out
}

// RegionTable prints the per-region summary:
// REGION MEMBERS PRIMARY STREAMING MAX LAG.
func RegionTable(w io.Writer, sts []model.Status) {
	tw := tabwriter.NewWriter(w, 0, 4, 3, ' ', 0)
	fmt.Fprintln(tw, "REGION\tUP\tPRIMARY\tSTREAMING\tMAX LAG")
	for _, r := range Regions(sts) {
		lag := "-"
		if r.Replicas > 0 {
			lag = fmt.Sprintf("%s / %.2fs", HumanBytes(r.MaxLagBytes), r.MaxLagSeconds)
			if r.LagUnknown > 0 {
				lag += fmt.Sprintf(" (%d unknown)", r.LagUnknown)
			}
		}
		fmt.Fprintf(tw, "%s\t%d/%d\t%s\t%d/%d\t%s\n", dash(r.Region), r.Up, r.Members, dash(r.Primary), r.Streaming, r.Replicas, lag)
	}
	tw.Flush()
}
