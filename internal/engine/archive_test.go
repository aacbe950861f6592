package engine

import (
	"testing"
	"time"
)

func TestDecideArchive(t *testing.T) {
	p := DefaultParams()
	on := ArchiveFacts{Configured: true, CheckedTimeline: 1}
	cases := []struct {
		name  string
		obs   func() Observation
		facts ArchiveFacts
		want  ArchiveRole
		check bool
	}{
		{"no store", leader, ArchiveFacts{}, ArchiveOff, false},
		{"leader pushes", leader, on, ArchivePush, false},
		{"standby keeps", base, on, ArchiveKeep, false},
		{"standby never checks", base, ArchiveFacts{Configured: true}, ArchiveKeep, false},
		{"key held but still in recovery (promoting)", func() Observation {
			o := leader()
			o.InRecovery = true
			return o
		}, on, ArchiveKeep, false},
		{"key held, postgres down", func() Observation {
			o := leader()
			o.Running = false
			return o
		}, on, ArchiveKeep, false},
		{"writable without the key", func() Observation {
			o := leader()
			o.LeaderMine = false
			return o
		}, on, ArchiveKeep, false},
		{"lease nearly expired", func() Observation {
			o := leader()
			o.LeaseLeft = p.FenceMargin / 2
			return o
		}, on, ArchiveKeep, false},
		{"store down, failsafe window", func() Observation {
			o := leader()
			o.StoreOK, o.LeaseLeft, o.FailsafeLeft = false, 0, 2*time.Second
			return o
		}, on, ArchivePush, false},
		{"promoted: new timeline, spool drained", func() Observation {
			o := leader()
			o.Timeline = 2
			return o
		}, on, ArchivePush, true},
		{"promoted: old segments still spooled", func() Observation {
			o := leader()
			o.Timeline = 2
			return o
		}, ArchiveFacts{Configured: true, CheckedTimeline: 1, Spooled: 3}, ArchivePush, false},
		{"first round after start", leader, ArchiveFacts{Configured: true}, ArchivePush, true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got := DecideArchive(c.obs(), c.facts, p)
			if got.Role != c.want || got.CheckChain != c.check {
				t.Fatalf("got %+v, want role %s check %v", got, c.want, c.check)
			}
			if got.Reason == "" {
				t.Fatal("no reason")
			}
		})
	}
}

// TestArchivePushOnlyWhenWritableAllowed: over a grid of observations, the node
// DecideArchive lets push is one Decide lets run writable (rule 1), so
// with one key and one lease there is never a second pusher.
func TestArchivePushOnlyWhenWritableAllowed(t *testing.T) {
	p := DefaultParams()
	f := ArchiveFacts{Configured: true, CheckedTimeline: 1}
	for _, mine := range []bool{false, true} {
		for _, rec := range []bool{false, true} {
			for _, left := range []time.Duration{0, p.FenceMargin - 1, p.FenceMargin, 3 * time.Second} {
				for _, fs := range []time.Duration{0, p.FenceMargin} {
					o := leader()
					o.LeaderMine, o.InRecovery, o.LeaseLeft, o.FailsafeLeft = mine, rec, left, fs
					a := DecideArchive(o, f, p)
					d := Decide(o, p)
					fenced := false
					for _, act := range d.Actions {
						if act.Kind == Fence || act.Kind == Kill {
							fenced = true
						}
					}
					if a.Role == ArchivePush && (fenced || !mine || rec) {
						t.Errorf("mine=%v recovery=%v lease=%v failsafe=%v: pushes while Decide says %s", mine, rec, left, fs, d)
					}
				}
			}
		}
	}
}

// TestDecideArchiveBackupSource: a scheduled backup has a source once a
// registered standby streams (or the leader is alone); a clone's
// pg_basebackup walsender, streaming too, is not one.
func TestDecideArchiveBackupSource(t *testing.T) {
	p := DefaultParams()
	on := ArchiveFacts{Configured: true, CheckedTimeline: 1}
	for _, c := range []struct {
		name     string
		standbys []Standby
		reg      []string
		want     bool
	}{
		{"registered standby streams", []Standby{{ID: "scl2", Streaming: true}}, []string{"scl1", "scl2"}, true},
		{"only a clone's walsender", []Standby{{ID: "petrel_basebackup", Streaming: true}}, []string{"scl1", "scl2"}, false},
		{"standby not streaming", []Standby{{ID: "scl2", Streaming: false}}, []string{"scl1", "scl2"}, false},
		{"alone", nil, []string{"scl1"}, true},
	} {
		o := leader()
		o.Standbys, o.Registered = c.standbys, c.reg
		if got := DecideArchive(o, on, p); got.Role != ArchivePush || got.BackupSource != c.want {
			t.Errorf("%s: %+v, want push with BackupSource %v", c.name, got, c.want)
		}
	}
}
