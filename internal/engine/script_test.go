package engine

import (
	"fmt"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cockroachdb/datadriven"
	"github.com/petrel-db/petrel/internal/model"
)

// TestScripts runs the scenarios in testdata/*.txt, in the manner of
// etcd-io/raft's interaction tests. Commands:
//
//	start preset=standby|leader   reset the observation
//	set key=value ...             change the observation (kept for later steps)
//	decide [mode=strict]          print the plan
//
// Run with -rewrite to regenerate the expected output after a deliberate
// change, then review the diff.
func TestScripts(t *testing.T) {
	datadriven.Walk(t, "testdata", func(t *testing.T, path string) {
		var o Observation
		datadriven.RunTest(t, path, func(t *testing.T, d *datadriven.TestData) string {
			switch d.Cmd {
			case "start":
				o = base()
				for _, a := range d.CmdArgs {
					if a.Key == "preset" && len(a.Vals) > 0 && a.Vals[0] == "leader" {
						o = leader()
					}
				}
				return "ok"
			case "set":
				for _, a := range d.CmdArgs {
					if err := setField(&o, a.Key, strings.Join(a.Vals, ",")); err != nil {
						d.Fatalf(t, "%v", err)
					}
				}
				return "ok"
			case "decide":
				p := DefaultParams()
				for _, a := range d.CmdArgs {
					if a.Key == "mode" {
						p.SyncMode = a.Vals[0]
					}
				}
				plan := Decide(o, p)
				var b strings.Builder
				fmt.Fprintf(&b, "role: %s\n", plan.Role)
				for _, a := range plan.Actions {
					fmt.Fprintf(&b, "- %s\n", a)
				}
				return b.String()
			}
			d.Fatalf(t, "unknown command %q", d.Cmd)
			return ""
		})
	})
}

func list(v string) []string {
	if v == "" || v == "-" {
		return []string{}
	}
	return strings.Split(v, ",")
}

// setField applies one key=value to the observation.
func setField(o *Observation, k, v string) error {
	atoi := func() uint64 { n, _ := strconv.ParseUint(v, 10, 64); return n }
	boolean := func() bool { return v == "" || v == "true" || v == "yes" }
	dur := func() time.Duration { d, _ := time.ParseDuration(v); return d }
	switch k {
	case "self":
		o.Self = v
		o.Region = members[v].Region
	case "region":
		o.Region = v
	case "primary-region":
		o.PrimaryRegion = v
	case "store-ok":
		o.StoreOK = boolean()
	case "initialized":
		o.Initialized = boolean()
	case "leader":
		if v == "-" {
			v = ""
		}
		o.Leader = v
	case "mine":
		o.LeaderMine = boolean()
	case "lease":
		o.LeaseLeft = dur()
	case "sync":
		o.Sync.Members = list(v)
	case "sync-leader":
		o.Sync.Leader = v
	case "running":
		o.Running = boolean()
	case "recovery":
		o.InRecovery = boolean()
	case "data":
		o.Data = map[string]DataRole{"empty": DataEmpty, "primary": DataPrimary, "standby": DataStandby}[v]
	case "lsn":
		o.LSN = atoi()
	case "timeline":
		o.Timeline = uint32(atoi())
	case "streaming":
		o.Streaming = boolean()
	case "following":
		if v == "-" {
			v = ""
		}
		o.Following = v
	case "not-streaming-for":
		o.NotStreamingFor = dur()
	case "upstream-lacks-wal":
		o.UpstreamLacksWAL = boolean()
	case "dead":
		o.LeaderDead = boolean()
	case "leader-promoted":
		o.LeaderPromoted = boolean()
	case "cascade":
		o.Cascade = boolean()
	case "cascade-regions":
		o.CascadeRegions = map[string]bool{}
		for _, r := range list(v) {
			o.CascadeRegions[r] = true
		}
	case "registered": // id:region,...
		o.Registered, o.RegisteredRegions = nil, map[string]string{}
		for _, s := range list(v) {
			f := strings.Split(s, ":")
			o.Registered = append(o.Registered, f[0])
			o.RegisteredRegions[f[0]] = f[1]
		}
	case "restarts":
		o.Restarts = int(atoi())
	case "since-start":
		o.SinceStart = dur()
	case "last-rewind": // done|unavailable|impossible[:cause][:ago]
		f := strings.Split(v, ":")
		o.LastRewind = RewindOutcome{Result: map[string]RewindResult{"": RewindNone, "done": RewindDone, "unavailable": RewindUnavailable, "impossible": RewindImpossible}[f[0]]}
		if len(f) > 1 {
			o.LastRewind.Cause = map[string]Cause{"former-primary": CauseFormerPrimary, "not-streaming": CauseNotStreaming}[f[1]]
		}
		if len(f) > 2 {
			o.LastRewind.Ago, _ = time.ParseDuration(f[2])
		}
	case "standbys": // id:flush[:stopped],...
		o.Standbys = nil
		for _, s := range list(v) {
			f := strings.Split(s, ":")
			n, _ := strconv.ParseUint(f[1], 10, 64)
			o.Standbys = append(o.Standbys, Standby{ID: f[0], FlushLSN: n, Streaming: len(f) < 3})
		}
	case "sync-names":
		o.SyncNames = list(v)
	case "sync-change-lsn":
		o.SyncChangeLSN = atoi()
	case "slots":
		o.Slots = list(v)
	case "peers": // id:lsn[:streaming|:unreachable],...
		o.Peers = map[string]Peer{}
		for _, s := range list(v) {
			f := strings.Split(s, ":")
			n, _ := strconv.ParseUint(f[1], 10, 64)
			p := Peer{ID: f[0], Reachable: true, Frozen: true, Timeline: o.Timeline, LSN: n}
			if len(f) > 2 {
				p.Streaming = f[2] == "streaming"
				p.Reachable = f[2] != "unreachable"
				p.Frozen = f[2] != "streaming" && f[2] != "following"
			}
			o.Peers[f[0]] = p
		}
	case "switchover": // from:to[:stopped-lsn:target[:any-region]]
		if v == "-" {
			o.Switchover = nil
			return nil
		}
		f := strings.Split(v, ":")
		sw := &model.Switchover{From: f[0]}
		if len(f) > 1 {
			sw.To = f[1]
		}
		if len(f) > 3 {
			sw.StoppedLSN, _ = strconv.ParseUint(f[2], 10, 64)
			sw.Target = f[3]
		}
		sw.AllowSecondaryRegion = len(f) > 4 && f[4] == "any-region"
		o.Switchover = sw
	case "members": // id:region,...
		m := map[string]model.Member{}
		ids := list(v)
		sort.Strings(ids)
		for _, s := range ids {
			f := strings.Split(s, ":")
			m[f[0]] = model.Member{ID: f[0], Region: f[1], PostgresAddr: "h:" + f[0]}
		}
		o.Members = m
	default:
		return fmt.Errorf("unknown key %q", k)
	}
	return nil
}
