// Command petrel-watchdog is the node agent's fencing child (package
// watchdog): the agent starts it from next to its own executable and
// feeds it on stdin; people do not run it. It is a separate, tiny binary
// so that it holds a couple of MiB, not a second copy of the agent.
package main

import (
	"os"

	"github.com/petrel-db/petrel/internal/watchdog"
)

func main() { os.Exit(watchdog.Main()) }
