// Package demoapp is `petrel demo-app`: a small notes web app that runs
// in every region behind petrel's edge, reads from its region's replica
// and gets its writes replayed to the primary region by pkg/flyreplay.
// Each page says which region and instance served it, which database
// member it read from and how far behind that member is, so the
// replay and read-your-writes behaviour can be watched in a browser and
// asserted in tests (GET/POST /api/notes).
package demoapp

import (
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
)

// Config is the demo app's settings (ConfigFromEnv reads them).
type Config struct {
	// Listen is the address to serve on: PETREL_LISTEN, else
	// 127.0.0.1:$PORT.
	Listen string
	// Region is where this instance runs: PETREL_REGION, else FLY_REGION.
	Region string
	// PrimaryRegion is the cluster's primary region: PRIMARY_REGION.
	PrimaryRegion string
	// DatabaseURL is DATABASE_URL: in the primary region the leader,
	// elsewhere the region's own read replica (writes there fail
	// read-only and are replayed).
	DatabaseURL string
	// Instance names this instance on its pages: PETREL_INSTANCE, else
	// <hostname>-<pid>.
	Instance string
	// Regions are all regions, for the page's tabs: PETREL_REGIONS
	// (comma-separated).
	Regions []string
	// EagerReplay replays every write method to the primary region
	// before it runs (flyreplay.Config.ReplayWriteMethods):
	// PETREL_DEMO_EAGER=1. Off, writes go to the replica and the captured
	// read-only error triggers the replay.
	EagerReplay bool
}

// ConfigFromEnv reads Config from the environment (see its fields).
func ConfigFromEnv() (Config, error) {
	get := func(k string) string { return strings.TrimSpace(os.Getenv(k)) }
	c := Config{
		Listen:        get("PETREL_LISTEN"),
		Region:        get("PETREL_REGION"),
		PrimaryRegion: get("PRIMARY_REGION"),
		DatabaseURL:   get("DATABASE_URL"),
		Instance:      get("PETREL_INSTANCE"),
	}
	if c.Region == "" {
		c.Region = get("FLY_REGION")
	}
	if c.Listen == "" {
		port := get("PORT")
		if p, err := strconv.Atoi(port); err != nil || p < 1 || p > 65535 {
			return Config{}, fmt.Errorf("demo app: set PORT (listen on 127.0.0.1:$PORT) or PETREL_LISTEN; PORT=%q", port)
		}
		c.Listen = net.JoinHostPort("127.0.0.1", port)
	}
	if c.DatabaseURL == "" {
		return Config{}, errors.New("demo app: DATABASE_URL is not set")
	}
	if c.Instance == "" {
		h, _ := os.Hostname()
		c.Instance = fmt.Sprintf("%s-%d", h, os.Getpid())
	}
	for r := range strings.SplitSeq(get("PETREL_REGIONS"), ",") {
		if r = strings.TrimSpace(r); r != "" {
			c.Regions = append(c.Regions, r)
		}
	}
	switch v := get("PETREL_DEMO_EAGER"); v {
	case "", "0", "false":
	case "1", "true":
		c.EagerReplay = true
	default:
		return Config{}, fmt.Errorf("demo app: PETREL_DEMO_EAGER=%q: want 1 or 0", v)
	}
	return c, nil
}
