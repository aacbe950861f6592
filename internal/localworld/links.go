package localworld

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/petrel-db/petrel/internal/netsim"
)

// EtcdHost is etcd's id in the local world's netsim.World.
const EtcdHost = "etcd"

// DialMapName is each node's dial map, in its own directory
// (<dir>/nodes/<id>/dialmap.json).
const DialMapName = "dialmap.json"

// ParseLatency applies a latency spec onto m. The spec is a comma- or
// newline-separated list of
//
//	a-b=75ms     one-way delay between regions a and b (symmetric)
//	local=1ms    delay between members of one region
//	jitter=5ms   extra random delay on every cross-region link
//	loss=0.01    share of chunks delayed by a retransmission timeout
//
// with '#' starting a comment. Pairs the spec does not name keep m's
// delay (netsim.DefaultMatrix's, or netsim.Default for unknown pairs).
func ParseLatency(m netsim.Matrix, spec string) (netsim.Matrix, error) {
	var pairs []string
	for _, line := range strings.Split(spec, "\n") {
		line, _, _ = strings.Cut(line, "#")
		for _, part := range strings.Split(line, ",") {
			part = strings.TrimSpace(part)
			if part == "" {
				continue
			}
			k, v, ok := strings.Cut(part, "=")
			if !ok {
				return m, fmt.Errorf("latency %q: want region-region=duration, local=, jitter= or loss=", part)
			}
			k, v = strings.TrimSpace(k), strings.TrimSpace(v)
			switch k {
			case "local", "jitter":
				d, err := time.ParseDuration(v)
				if err != nil || d < 0 {
					return m, fmt.Errorf("latency %q: bad duration", part)
				}
				if k == "local" {
					m.Local = d
				} else {
					m.Jitter = d
				}
			case "loss":
				f, err := strconv.ParseFloat(v, 64)
				if err != nil || f < 0 || f >= 1 {
					return m, fmt.Errorf("latency %q: loss is a fraction in [0,1)", part)
				}
				m.Loss = f
			default:
				pairs = append(pairs, k+"="+v)
			}
		}
	}
	out, err := netsim.ParseMatrix(m, strings.Join(pairs, ","))
	if err != nil {
		return m, fmt.Errorf("parsing latency: %w", err)
	}
	return out, nil
}

// matrixFor builds the matrix from the defaults, the world's saved spec
// and the options' spec (latest wins).
func matrixFor(specs ...string) (netsim.Matrix, error) {
	m := netsim.DefaultMatrix()
	for _, s := range specs {
		var err error
		if m, err = ParseLatency(m, s); err != nil {
			return m, err
		}
	}
	return m, nil
}

// addToNet puts node n into the network (its Postgres and API are what
// the others dial).
func addToNet(nw *netsim.World, n worldNode) error {
	addrs := []string{pgAddr(n), apiAddr(n)}
	if n.ProxyPort > 0 {
		// Apps in other regions reach the leader proxy across the link.
		addrs = append(addrs, fmt.Sprintf("127.0.0.1:%d", n.ProxyPort))
	}
	if err := nw.AddHost(n.ID, n.Region, addrs...); err != nil {
		return fmt.Errorf("adding %s to the local network: %w", n.ID, err)
	}
	return nil
}

func pgAddr(n worldNode) string  { return fmt.Sprintf("127.0.0.1:%d", n.PGPort) }
func apiAddr(n worldNode) string { return fmt.Sprintf("127.0.0.1:%d", n.APIPort) }

// writeDialMaps writes every node's <dir>/nodes/<id>/dialmap.json from
// the network (atomically; agents reload it when it changes). Without a
// network the maps are empty (direct addresses).
func writeDialMaps(dir string, nw *netsim.World, nodes []worldNode) error {
	for _, n := range nodes {
		nd := filepath.Join(dir, "nodes", n.ID)
		if err := os.MkdirAll(nd, 0o700); err != nil {
			return fmt.Errorf("creating %s: %w", nd, err)
		}
		m := map[string]string{}
		if nw != nil {
			m = nw.DialMap(n.ID)
		}
		b, err := json.MarshalIndent(m, "", "  ")
		if err != nil {
			return err
		}
		if err := writeFileAtomic(filepath.Join(nd, DialMapName), append(b, '\n'), 0o644); err != nil {
			return fmt.Errorf("writing %s's dial map: %w", n.ID, err)
		}
	}
	return nil
}

// describeMatrix lists the delays between the regions in use.
func describeMatrix(m netsim.Matrix, nodes []worldNode) string {
	var regions []string
	seen := map[string]bool{}
	for _, n := range nodes {
		if !seen[n.Region] {
			seen[n.Region] = true
			regions = append(regions, n.Region)
		}
	}
	var parts []string
	for i, a := range regions {
		for _, b := range regions[i+1:] {
			parts = append(parts, fmt.Sprintf("%s-%s=%v", a, b, m.Between(a, b)))
		}
	}
	s := strings.Join(parts, " ")
	if m.Jitter > 0 || m.Loss > 0 {
		s += fmt.Sprintf(" (jitter %v, loss %g)", m.Jitter, m.Loss)
	}
	return s
}
