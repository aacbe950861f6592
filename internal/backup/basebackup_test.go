package backup

import (
	"testing"

	"github.com/petrel-db/petrel/internal/model"
)

func TestChooseSource(t *testing.T) {
	p := model.Status{ID: "scl1", Role: model.RolePrimary, Timeline: 2, LSNNum: 100}
	r1 := model.Status{ID: "scl2", Role: model.RoleReplica, Streaming: true, Timeline: 2, LSNNum: 90}
	r2 := model.Status{ID: "ord1", Role: model.RoleReplica, Streaming: true, Timeline: 2, LSNNum: 95}
	lagging := model.Status{ID: "scl3", Role: model.RoleReplica, Streaming: false, Timeline: 2, LSNNum: 99}
	oldTL := model.Status{ID: "scl4", Role: model.RoleReplica, Streaming: true, Timeline: 1, LSNNum: 99}
	cases := []struct {
		sts  []model.Status
		want string
	}{
		{[]model.Status{p, r1, r2, lagging}, "ord1"},
		{[]model.Status{p, lagging}, "scl1"},
		{[]model.Status{p, oldTL}, "scl1"},
		{[]model.Status{r1}, "scl2"},
	}
	for _, c := range cases {
		got, err := ChooseSource(c.sts)
		if err != nil || got.ID != c.want {
			t.Errorf("%v: got %s %v, want %s", c.sts, got.ID, err, c.want)
		}
	}
	if _, err := ChooseSource([]model.Status{lagging}); err == nil {
		t.Error("a source chosen with no primary and no streaming replica")
	}
}
