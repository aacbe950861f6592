package backup

// Plans as engine.DecideArchive gives them (its own tests cover when).

import "github.com/petrel-db/petrel/internal/engine"

func enginePush() engine.ArchivePlan {
	return engine.ArchivePlan{Role: engine.ArchivePush, CheckChain: true, BackupSource: true, Reason: "test leader, spool drained"}
}
func engineKeep() engine.ArchivePlan {
	return engine.ArchivePlan{Role: engine.ArchiveKeep, Reason: "test standby"}
}
