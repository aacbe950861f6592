package model

import (
	"encoding/json"
	"strings"
	"testing"
)

// TestUnknownFieldsKept: a record written by a newer petrel (a field this
// version lacks) decoded, changed and encoded again by this one still has
// the field; known fields decode as before and win over kept ones.
func TestUnknownFieldsKept(t *testing.T) {
	newer := `{"leader":"scl1","members":["scl2"],"k":1,"version":"9.0.0","quorum_policy":{"mode":"any","n":2},"note":"x"}`
	var s Sync
	if err := json.Unmarshal([]byte(newer), &s); err != nil {
		t.Fatal(err)
	}
	if s.Leader != "scl1" || s.K != 1 || s.Version != "9.0.0" || len(s.Unknown) != 2 {
		t.Fatalf("decoded %+v", s)
	}
	s.Members = append(s.Members, "scl3")
	s.Version = "0.1.0"
	b, err := json.Marshal(s)
	if err != nil {
		t.Fatal(err)
	}
	var back map[string]json.RawMessage
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	if string(back["quorum_policy"]) != `{"mode":"any","n":2}` || string(back["note"]) != `"x"` {
		t.Fatalf("unknown fields lost: %s", b)
	}
	if string(back["members"]) != `["scl2","scl3"]` || string(back["version"]) != `"0.1.0"` {
		t.Fatalf("known fields: %s", b)
	}

	// A kept field never overrides one this version writes.
	m := Member{ID: "a", Unknown: Unknown{"id": json.RawMessage(`"forged"`), "zone": json.RawMessage(`"z1"`)}}
	b, _ = json.Marshal(m)
	if !strings.Contains(string(b), `"id":"a"`) || strings.Contains(string(b), "forged") || !strings.Contains(string(b), `"zone":"z1"`) {
		t.Fatalf("member: %s", b)
	}
	// Records without unknown fields encode exactly as before.
	b, _ = json.Marshal(ClusterInfo{Name: "c"})
	var plain struct {
		Name string `json:"name"`
	}
	if err := json.Unmarshal(b, &plain); err != nil || plain.Name != "c" || strings.Contains(string(b), "Unknown") {
		t.Fatalf("info: %s %v", b, err)
	}
	for _, bad := range []string{`{"leader":`, `[1,2]`, `"x"`} {
		if err := json.Unmarshal([]byte(bad), &s); err == nil {
			t.Fatalf("%q decoded", bad)
		}
	}
	var sw Switchover
	if err := json.Unmarshal([]byte(`{"from":"a","to":"b","requested_at":"2026-01-01T00:00:00Z","future":true}`), &sw); err != nil || sw.From != "a" || string(sw.Unknown["future"]) != "true" {
		t.Fatalf("switchover: %+v %v", sw, err)
	}
}
