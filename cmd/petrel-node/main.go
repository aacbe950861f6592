// Command petrel-node is the node agent alone: `petrel node` without the
// rest of petrel's CLI, which petrel runs in its place when it finds it
// next to itself. Arguments, environment and behaviour are `petrel
// node`'s (see package nodecmd).
package main

import (
	"os"

	"github.com/petrel-db/petrel/internal/nodecmd"
	"github.com/petrel-db/petrel/internal/watchdog"
)

func main() {
	// The agent's watchdog fallback when petrel-watchdog is missing.
	if len(os.Args) > 1 && os.Args[1] == "watchdog" {
		os.Exit(watchdog.Main())
	}
	os.Exit(nodecmd.Main())
}
