package agent

// The agent's hook for WAL archiving (internal/backup): every round it
// asks engine.DecideArchive whether this node pushes WAL to the archive
// or keeps its spool, and hands the answer to the archiver, which runs on
// its own goroutine (started by the caller of SetArchiver).

import (
	"github.com/petrel-db/petrel/internal/backup"
	"github.com/petrel-db/petrel/internal/engine"
	"github.com/petrel-db/petrel/internal/model"
)

// SetArchiver gives the agent its archiver (before Run).
func (a *Agent) SetArchiver(ar *backup.Archiver) { a.archiver = ar }

func (a *Agent) archiveStep(obs engine.Observation) {
	if a.archiver == nil {
		return
	}
	a.archiver.Update(engine.DecideArchive(obs, a.archiver.Facts(), a.params), obs.Timeline)
}

func (a *Agent) archiveStatus(st *model.Status) {
	if a.archiver == nil {
		return
	}
	st.Archive = a.archiver.Status()
	if f := st.Archive.LastFailure; f != "" && st.Archive.LastAt.Before(st.Archive.FailureAt) {
		st.Problems = append(st.Problems, "archiving: "+f)
	}
	if st.Archive.Chain != "" && !st.Archive.ChainOK {
		st.Problems = append(st.Problems, "WAL archive: "+st.Archive.Chain)
	}
}
