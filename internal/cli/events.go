package cli

import (
	"encoding/json"
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	"github.com/petrel-db/petrel/internal/model"
	"github.com/petrel-db/petrel/internal/store"
	"github.com/spf13/cobra"
)

// followEvery is how often events --follow asks for new events.
const followEvery = time.Second

func newEventsCmd() *cobra.Command {
	var (
		cf             clusterFlags
		follow, asJSON bool
		limit          int
	)
	cmd := &cobra.Command{
		Use:   "events",
		Short: "The cluster's history: failovers, switchovers, fencing, rejoins, clones, members, config changes",
		Long: `List the events recorded in etcd under /petrel/<cluster>/events/ (the newest
` + fmt.Sprint(store.MaxEvents) + ` are kept), oldest first, like patronictl history: the time, the
member that acted, the timeline and WAL position it was at, the old and new
leader of a leader change, and the reason. --follow keeps printing new ones
(asked for every second); --json prints one JSON object per line. Read
through a member's admin API (GET /api/v1/events).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			c, err := openAdmin(ctx, cf)
			if err != nil {
				return err
			}
			defer c.Close()
			n := limit
			if n <= 0 || n > store.MaxEvents {
				n = store.MaxEvents
			}
			evs, err := c.Events(ctx, 0, n)
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			p := newEventPrinter(out, asJSON)
			var last int64
			for _, ev := range evs {
				p.print(ev)
				last = max(last, ev.ID)
			}
			p.flush()
			if !follow {
				return nil
			}
			// New events, polled (event IDs are increasing store
			// revisions); a member that stops answering gives way to the
			// next.
			for {
				select {
				case <-ctx.Done():
					return nil // interrupted: the normal end of --follow
				case <-time.After(followEvery):
				}
				evs, err := c.Events(ctx, last, store.MaxEvents)
				if err != nil {
					if ctx.Err() != nil {
						return nil
					}
					return err
				}
				for _, ev := range evs {
					p.print(ev)
					last = max(last, ev.ID)
				}
				p.flush()
			}
		},
	}
	f := cmd.Flags()
	cf.bind(f)
	f.BoolVarP(&follow, "follow", "f", false, "keep printing new events until interrupted")
	f.BoolVar(&asJSON, "json", false, "one JSON object per line")
	f.IntVarP(&limit, "limit", "n", 0, "only the newest N events (0: all kept)")
	return cmd
}

// eventPrinter prints events as a table (or JSON lines).
type eventPrinter struct {
	json bool
	enc  *json.Encoder
	tw   *tabwriter.Writer
	head bool
}

func newEventPrinter(w io.Writer, asJSON bool) *eventPrinter {
	return &eventPrinter{json: asJSON, enc: json.NewEncoder(w), tw: tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)}
}

func (p *eventPrinter) print(ev model.Event) {
	if p.json {
		_ = p.enc.Encode(ev)
		return
	}
	if !p.head {
		fmt.Fprintln(p.tw, "ID\tTIME\tKIND\tNODE\tTL\tLSN\tFROM\tTO\tREASON")
		p.head = true
	}
	tl := ""
	if ev.Timeline > 0 {
		tl = fmt.Sprint(ev.Timeline)
	}
	fmt.Fprintf(p.tw, "%d\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", ev.ID, ev.Time.Local().Format("2006-01-02 15:04:05.000"),
		ev.Kind, ev.Node, tl, dash(ev.LSN), dash(ev.From), dash(ev.To), ev.Reason)
}

func (p *eventPrinter) flush() { _ = p.tw.Flush() }

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
