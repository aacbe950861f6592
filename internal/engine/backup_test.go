package engine

import (
	"testing"
	"time"
)

func TestDecideBackup(t *testing.T) {
	now := time.Date(2026, 12, 2, 12, 0, 0, 0, time.UTC)
	day := 24 * time.Hour
	due := BackupInput{Pushing: true, Every: day, CatalogRead: true, Newest: now.Add(-25 * time.Hour), SourceReady: true, Now: now}
	for _, c := range []struct {
		name  string
		edit  func(*BackupInput)
		start bool
	}{
		{"due", func(*BackupInput) {}, true},
		{"exactly due", func(in *BackupInput) { in.Newest = now.Add(-day) }, true},
		{"no backup yet", func(in *BackupInput) { in.Newest = time.Time{} }, true},
		{"not yet due", func(in *BackupInput) { in.Newest = now.Add(-23 * time.Hour) }, false},
		{"no schedule", func(in *BackupInput) { in.Every = 0 }, false},
		{"not pushing (a replica, or a leader without its lease)", func(in *BackupInput) { in.Pushing = false }, false},
		{"one running", func(in *BackupInput) { in.Running = true }, false},
		{"catalog unknown", func(in *BackupInput) { in.CatalogRead = false; in.Newest = time.Time{} }, false},
		{"failed a minute ago", func(in *BackupInput) { in.LastAttempt = now.Add(-time.Minute) }, false},
		{"failed long ago", func(in *BackupInput) { in.LastAttempt = now.Add(-BackupRetry) }, true},
		{"short schedule retries sooner", func(in *BackupInput) {
			in.Every, in.Newest, in.LastAttempt = time.Minute, now.Add(-2*time.Minute), now.Add(-time.Minute)
		}, true},
		{"no streaming replica yet", func(in *BackupInput) { in.SourceReady = false }, false},
		{"no streaming replica for a while", func(in *BackupInput) { in.SourceReady, in.WaitingSince = false, now.Add(-time.Minute) }, false},
		{"no streaming replica for too long: from the leader", func(in *BackupInput) {
			in.SourceReady, in.WaitingSince = false, now.Add(-BackupRetry)
		}, true},
	} {
		in := due
		c.edit(&in)
		p := DecideBackup(in)
		if p.Start != c.start || p.Reason == "" || (p.Waiting && p.Start) {
			t.Errorf("%s: %+v, want start=%v with a reason", c.name, p, c.start)
		}
	}
}
