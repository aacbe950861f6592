// Command petrel is the single binary: node agent, local world and CLI.
package main

import (
	"os"

	"github.com/petrel-db/petrel/internal/cli"
)

func main() { os.Exit(cli.Execute()) }
