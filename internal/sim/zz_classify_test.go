package sim

import (
	"fmt"
	"strings"
	"testing"
)

func TestZZClassify(t *testing.T) {
	classes := map[string][]uint64{}
	for seed := uint64(0); seed < 5000; seed++ {
		c, _ := randomRun(seed, false)
		if len(c.Violations()) == 0 {
			continue
		}
		c2, _ := randomRun(seed, true)
		log := c2.Flush()
		lines := strings.Split(log, "\n")
		key := ""
		for i, l := range lines {
			if strings.Contains(l, "VIOLATION") {
				v := l
				// previous action line of any node
				prev := ""
				for j := i - 1; j >= 0 && j > i-4; j-- {
					prev += " | " + strings.TrimSpace(lines[j][8:])
				}
				kind := "?"
				switch {
				case strings.Contains(v, "alone while the sync record"):
					kind = "shrink-to-empty"
				case strings.Contains(prev, "note:") || strings.Contains(log[:strings.Index(log, "VIOLATION")], "note:"):
					kind = "stale-cache"
				case strings.Contains(v, "two writable"):
					kind = "two-writable"
				case strings.Contains(prev, "interrupted bootstrap"):
					kind = "rebootstrap"
				case strings.Contains(v, "became writable"):
					kind = "lost-commit"
				default:
					kind = "ack"
				}
				key = kind
				if kind != "rebootstrap" && kind != "shrink-to-empty" && kind != "stale-cache" {
					key += prev
				}
				break
			}
		}
		classes[key] = append(classes[key], seed)
	}
	for k, v := range classes {
		fmt.Printf("%d  %v\n   %s\n", len(v), v[:min(len(v), 8)], k)
	}
}
