package edge

import (
	"errors"
	"reflect"
	"testing"
	"time"
)

func TestParseReplay(t *testing.T) {
	cases := []struct {
		in   string
		want Directive
		bad  bool
	}{
		{in: "region=scl", want: Directive{Regions: []string{"scl"}}},
		{in: "Region=SCL;state=captured_write", want: Directive{Regions: []string{"scl"}, State: "captured_write"}},
		{in: `region="ord,scl";elsewhere=true`, want: Directive{Regions: []string{"ord", "scl"}, Elsewhere: true}},
		{in: "region=any", want: Directive{AnyRegion: true}},
		{in: "instance=scl-1", want: Directive{Instance: "scl-1"}},
		{in: "prefer_instance=abc;region=scl", want: Directive{PreferInstance: "abc", Regions: []string{"scl"}}},
		{in: "region=scl;timeout=250ms;fallback=prefer_self", want: Directive{Regions: []string{"scl"}, Timeout: 250 * time.Millisecond, Fallback: FallbackPreferSelf}},
		{in: "region=scl;timeout=2", want: Directive{Regions: []string{"scl"}, Timeout: 2 * time.Second}},
		{in: "region=scl;fallback=force_self;app=other", want: Directive{Regions: []string{"scl"}, Fallback: FallbackForceSelf}},
		{in: " region = scl ; ", want: Directive{Regions: []string{"scl"}}},
		{in: "elsewhere=true", want: Directive{Elsewhere: true}},
		{in: "", bad: true},
		{in: "state=x", bad: true},      // names nowhere
		{in: "region", bad: true},       // no value
		{in: "region=s c l", bad: true}, // not a region name
		{in: "region=scl;timeout=-1s", bad: true},
		{in: "region=scl;timeout=2h", bad: true},
		{in: "region=scl;fallback=nope", bad: true},
		{in: "region=scl;elsewhere=maybe", bad: true},
		{in: "instance=../../etc", bad: true},
		{in: `region="scl;state=x`, bad: true}, // unterminated quote swallows the rest: a region with ';'
	}
	for _, c := range cases {
		got, err := ParseReplay(c.in)
		if c.bad {
			if err == nil || !errors.Is(err, ErrBadDirective) {
				t.Errorf("ParseReplay(%q) = %+v, %v; want ErrBadDirective", c.in, got, err)
			}
			continue
		}
		if err != nil || !reflect.DeepEqual(got, c.want) {
			t.Errorf("ParseReplay(%q) = %+v, %v; want %+v", c.in, got, err, c.want)
		}
	}
}

func TestSourceAndFailureFormat(t *testing.T) {
	s := Source{Instance: "ord-1", Region: "ord", Time: time.UnixMicro(1700000000123456), State: "captured_write"}
	if got, want := s.String(), "instance=ord-1;region=ord;t=1700000000123456;state=captured_write"; got != want {
		t.Errorf("Source = %q, want %q", got, want)
	}
	f := Failure{Region: "scl", Source: "ord-1", Reason: ReasonNoCandidate, Elapsed: 1500 * time.Millisecond}
	if got, want := f.String(), "instance=;region=scl;replay_source=ord-1;reason=no_candidate;elapsed_ms=1500"; got != want {
		t.Errorf("Failure = %q, want %q", got, want)
	}
}

func TestChooseReplay(t *testing.T) {
	peers := func() []peer {
		return []peer{
			{ID: "edge-ams", Region: "ams", alive: true, rtt: 230 * time.Millisecond, Instances: []string{"ams-1"}},
			{ID: "edge-ord", Region: "ord", alive: true, rtt: 150 * time.Millisecond, Instances: []string{"ord-1", "ord-2"}},
			{ID: "edge-syd", Region: "syd", alive: false, rtt: 10 * time.Millisecond, Instances: []string{"syd-1"}},
			{ID: "edge-lhr", Region: "lhr", alive: true, rtt: 5 * time.Millisecond},
		}
	}
	local := []string{"scl-1", "scl-2"}
	cases := []struct {
		name, dir, asking string
		local             []string
		want              string // "local", "local:<id>", "<peer>", "<peer>:<id>", "none"
	}{
		{"own region", "region=scl", "scl-1", local, "local"},
		{"other region", "region=ord", "scl-1", local, "edge-ord"},
		{"list: nearest listed", `region="ams,ord"`, "scl-1", local, "edge-ord"},
		{"list with own region first", `region="ord,scl"`, "scl-1", local, "local"},
		{"any: own region counts as nearest", "region=any", "scl-1", local, "local"},
		{"any elsewhere with a sibling", "region=any;elsewhere=true", "scl-1", local, "local"},
		{"any elsewhere alone", "region=any;elsewhere=true", "scl-1", []string{"scl-1"}, "edge-ord"},
		{"elsewhere only", "elsewhere=true", "scl-1", []string{"scl-1"}, "edge-ord"},
		{"dead region", "region=syd", "scl-1", local, "none"},
		{"region without instances", "region=lhr", "scl-1", local, "none"},
		{"unknown region", "region=xyz", "scl-1", local, "none"},
		{"instance local", "instance=scl-2", "scl-1", local, "local:scl-2"},
		{"instance remote", "instance=ord-2", "scl-1", local, "edge-ord:ord-2"},
		{"instance on a dead edge", "instance=syd-1", "scl-1", local, "none"},
		{"instance unknown", "instance=nope", "scl-1", local, "none"},
		{"instance is self, elsewhere", "instance=scl-1;elsewhere=true", "scl-1", local, "none"},
		{"prefer_instance up", "prefer_instance=ams-1;region=ord", "scl-1", local, "edge-ams:ams-1"},
		{"prefer_instance down: region", "prefer_instance=gone;region=ord", "scl-1", local, "edge-ord"},
		{"no local instances", "region=scl", "scl-1", nil, "none"},
	}
	for _, c := range cases {
		d, err := ParseReplay(c.dir)
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		tg, ok := chooseReplay(d, c.asking, "scl", c.local, peers())
		got := "none"
		if ok {
			got = "local"
			if tg.peer != nil {
				got = tg.peer.ID
			}
			if tg.instance != "" {
				got += ":" + tg.instance
			}
		}
		if got != c.want {
			t.Errorf("%s: chooseReplay(%q) = %s, want %s", c.name, c.dir, got, c.want)
		}
	}
}
