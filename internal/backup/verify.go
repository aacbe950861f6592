package backup

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"

	"github.com/petrel-db/petrel/internal/backupstore"
)

// Report is what Verify found in an archive.
type Report struct {
	Store    string   `json:"store"`
	Files    int      `json:"files"`             // archived WAL files read back
	Corrupt  []string `json:"corrupt,omitempty"` // files whose content does not match their checksum, with why
	Timeline uint32   `json:"timeline"`          // the newest timeline (highest history file)
	// Chains: one per kept backup (from its first segment), or one from
	// the oldest archived segment when there is no backup.
	Chains  []Chain  `json:"chains"`
	Backups []Backup `json:"backups,omitempty"`
}

// OK says nothing is corrupt or missing.
func (r Report) OK() bool {
	if len(r.Corrupt) > 0 {
		return false
	}
	for _, c := range r.Chains {
		if !c.OK() {
			return false
		}
	}
	return true
}

// Verify reads back every archived WAL file and checks its checksum, and
// checks the chain from every backup (or the oldest segment) to the
// newest segment on the newest timeline.
func Verify(ctx context.Context, st backupstore.Store) (Report, error) {
	r := Report{Store: st.String(), Timeline: 1}
	l, err := ListWAL(ctx, st)
	if err != nil {
		return r, err
	}
	for name := range l {
		if strings.HasSuffix(name, ".history") {
			if t, err := strconv.ParseUint(strings.TrimSuffix(name, ".history"), 16, 32); err == nil && uint32(t) > r.Timeline {
				r.Timeline = uint32(t)
			}
		}
	}
	for _, name := range sortedNames(l) {
		r.Files++
		if err := Fetch(ctx, st, name, io.Discard); err != nil {
			if !errors.Is(err, ErrCorrupt) {
				return r, err
			}
			r.Corrupt = append(r.Corrupt, err.Error())
		}
	}
	if r.Backups, err = ListBackups(ctx, st); err != nil {
		return r, err
	}
	for _, b := range r.Backups {
		if err := CheckBackup(ctx, st, b); err != nil {
			if !errors.Is(err, ErrCorrupt) {
				return r, err
			}
			r.Corrupt = append(r.Corrupt, err.Error())
		}
	}
	froms := []uint64{0}
	if len(r.Backups) > 0 {
		froms = froms[:0]
		for _, b := range r.Backups {
			s, ok := ParseSegment(b.StartSeg)
			if !ok {
				return r, fmt.Errorf("backup %s: bad start segment %q", b.ID, b.StartSeg)
			}
			froms = append(froms, s.No)
		}
	}
	for _, from := range froms {
		c, err := CheckChain(ctx, st, r.Timeline, from)
		if err != nil {
			return r, err
		}
		r.Chains = append(r.Chains, c)
	}
	return r, nil
}
