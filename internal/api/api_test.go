package api

import (
	"context"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/petrel-db/petrel/internal/model"
	"github.com/prometheus/client_golang/prometheus"
)

type fakeSource struct{ role string }

func (f fakeSource) Role() string                        { return f.role }
func (f fakeSource) Status(context.Context) model.Status { return model.Status{Role: f.role} }
func (f fakeSource) Health() []string                    { return nil }

// TestRoleProbes: /primary and /replica answer 200 only in that role, so a
// load balancer can check by status code alone.
func TestRoleProbes(t *testing.T) {
	for _, role := range []string{model.RolePrimary, model.RoleReplica, model.RoleFenced, model.RoleOffline} {
		ts := httptest.NewServer(Handler(fakeSource{role}, prometheus.NewRegistry()))
		for _, path := range []string{"/primary", "/replica"} {
			resp, err := http.Get(ts.URL + path)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			want := http.StatusServiceUnavailable
			if path[1:] == role {
				want = http.StatusOK
			}
			if resp.StatusCode != want {
				t.Errorf("%s as %s: %d, want %d", path, role, resp.StatusCode, want)
			}
		}
		ts.Close()
	}
}
