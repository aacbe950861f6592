package api

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

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

type sessionsSource struct {
	fakeSource
	asked []netip.Addr
}

func (s *sessionsSource) Sessions(_ context.Context, addr netip.Addr) ([]uint16, time.Duration, error) {
	s.asked = append(s.asked, addr)
	if addr == netip.MustParseAddr("10.0.0.9") {
		return []uint16{40001, 40002}, 10 * time.Second, nil
	}
	return nil, 10 * time.Second, nil
}

// TestSessions: GET /sessions?addr= answers the source's ports for that
// address and its authentication_timeout; an addr that is not an IP is a
// 400 that never reaches the source; PlainHandler does not serve it.
func TestSessions(t *testing.T) {
	src := &sessionsSource{fakeSource: fakeSource{model.RolePrimary}}
	ts := httptest.NewServer(Handler(src, prometheus.NewRegistry()))
	defer ts.Close()
	get := func(h string, q string) (int, Sessions) {
		t.Helper()
		resp, err := http.Get(h + "/sessions?" + q)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var s Sessions
		if resp.StatusCode == http.StatusOK {
			if err := json.NewDecoder(resp.Body).Decode(&s); err != nil {
				t.Fatal(err)
			}
		}
		return resp.StatusCode, s
	}
	if code, s := get(ts.URL, "addr=10.0.0.9"); code != 200 || !slices.Equal(s.Ports, []uint16{40001, 40002}) || s.AuthTimeoutSeconds != 10 {
		t.Errorf("10.0.0.9: %d %+v", code, s)
	}
	if code, s := get(ts.URL, "addr=10.0.0.8"); code != 200 || s.Ports == nil || len(s.Ports) != 0 {
		t.Errorf("10.0.0.8: %d %+v, want an empty list", code, s)
	}
	for _, q := range []string{"", "addr=", "addr=10.0.0.300", "addr=" + strings.Repeat("1", 5000)} {
		if code, _ := get(ts.URL, q); code != http.StatusBadRequest {
			t.Errorf("%q: %d, want 400", q, code)
		}
	}
	if len(src.asked) != 2 {
		t.Errorf("the source was asked %d times, want 2 (bad requests never reach it)", len(src.asked))
	}
	plain := httptest.NewServer(PlainHandler(src, prometheus.NewRegistry()))
	defer plain.Close()
	if code, _ := get(plain.URL, "addr=10.0.0.9"); code != http.StatusNotFound {
		t.Errorf("plain /sessions: %d, want 404", code)
	}
}
