package dashboard

import (
	"encoding/json"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// TestMetricsDocs: every petrel_* metric registered in the code is in
// docs/metrics.md, every documented one exists, and the Grafana dashboard
// (valid JSON) uses only documented ones.
func TestMetricsDocs(t *testing.T) {
	root := filepath.Join("..", "..")
	doc, err := os.ReadFile(filepath.Join(root, "docs", "metrics.md"))
	if err != nil {
		t.Fatal(err)
	}
	name := regexp.MustCompile(`petrel_[a-z_]+`)
	documented := map[string]bool{}
	for _, m := range regexp.MustCompile("(?m)^\\| `(petrel_[a-z_]+)`").FindAllStringSubmatch(string(doc), -1) {
		documented[m[1]] = true
	}
	registered := map[string]bool{}
	decl := regexp.MustCompile(`Name:\s*"(petrel_[a-z_]+)"`)
	err = filepath.WalkDir(filepath.Join(root, "internal"), func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.HasSuffix(p, ".go") || strings.HasSuffix(p, "_test.go") {
			return err
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		for _, m := range decl.FindAllStringSubmatch(string(b), -1) {
			if strings.Contains(string(b), "prometheus.") {
				registered[m[1]] = true
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(registered) < 10 {
		t.Fatalf("found only %d registered metrics: the scan is broken", len(registered))
	}
	for m := range registered {
		if !documented[m] {
			t.Errorf("%s is registered but not in docs/metrics.md", m)
		}
	}
	for m := range documented {
		if !registered[m] {
			t.Errorf("docs/metrics.md lists %s, which no code registers", m)
		}
	}
	b, err := os.ReadFile(filepath.Join(root, "docs", "grafana", "petrel.json"))
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		Panels []struct {
			Targets []struct{ Expr string } `json:"targets"`
		} `json:"panels"`
	}
	if err := json.Unmarshal(b, &dash); err != nil {
		t.Fatalf("docs/grafana/petrel.json: %v", err)
	}
	used := 0
	for _, p := range dash.Panels {
		for _, tg := range p.Targets {
			for _, m := range name.FindAllString(tg.Expr, -1) {
				used++
				base := strings.TrimSuffix(strings.TrimSuffix(strings.TrimSuffix(m, "_bucket"), "_sum"), "_count")
				if !documented[base] {
					t.Errorf("the Grafana dashboard uses %s, not a documented metric", m)
				}
			}
		}
	}
	if used == 0 {
		t.Error("the Grafana dashboard uses no petrel metric")
	}
}
