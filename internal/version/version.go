// Package version is petrel's own version and the commit it was built
// from: set by the Makefile's -ldflags -X, else read from the build
// information Go records (the module version, vcs.revision).
package version

import (
	"fmt"
	"runtime/debug"
)

// Set at link time: -X github.com/petrel-db/petrel/internal/version.Version=0.1.0
// (and .Commit=<git sha>). Empty in `go build`/`go test` builds.
var (
	Version string
	Commit  string
)

// Info is what this binary knows of its origin.
type Info struct {
	Version  string `json:"version"`            // "0.1.0", or "devel" when unknown
	Commit   string `json:"commit"`             // git commit, "" when unknown
	Modified bool   `json:"modified,omitempty"` // built from a tree with uncommitted changes
	Go       string `json:"go"`
}

// Get returns the link-time values, completed from debug.ReadBuildInfo.
func Get() Info {
	in := Info{Version: Version, Commit: Commit}
	if bi, ok := debug.ReadBuildInfo(); ok {
		in.Go = bi.GoVersion
		if in.Version == "" && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
			in.Version = bi.Main.Version
		}
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				if in.Commit == "" {
					in.Commit = s.Value
				}
			case "vcs.modified":
				in.Modified = s.Value == "true"
			}
		}
	}
	if in.Version == "" {
		in.Version = "devel"
	}
	return in
}

// String is "petrel 0.1.0 (commit 1dd96ce..., go1.26)".
func (in Info) String() string {
	c := in.Commit
	if c == "" {
		c = "unknown"
	}
	if in.Modified {
		c += "+modified"
	}
	return fmt.Sprintf("petrel %s (commit %s, %s)", in.Version, c, in.Go)
}

// Short is "0.1.0" with the commit's first 12 characters when known
// ("0.1.0@1dd96ce0a1b2"): what members publish in their records.
func (in Info) Short() string {
	if in.Commit == "" {
		return in.Version
	}
	c := in.Commit
	if len(c) > 12 {
		c = c[:12]
	}
	return in.Version + "@" + c
}
