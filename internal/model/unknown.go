package model

import (
	"bytes"
	"encoding/json"
	"reflect"
	"strings"
)

// Unknown holds the fields of a stored record that this version of petrel
// does not know, so that a record written by a newer petrel and rewritten
// by an older one (a rolling upgrade runs both side by side) keeps them.
// Only the value of each field is kept, as it was written.
type Unknown map[string]json.RawMessage

// decodeKeeping decodes b into v (a pointer to a struct's plain twin, a
// type without these methods) and returns the fields v has no tag for.
func decodeKeeping(b []byte, v any) (Unknown, error) {
	if err := json.Unmarshal(b, v); err != nil {
		return nil, err
	}
	var all map[string]json.RawMessage
	if err := json.Unmarshal(b, &all); err != nil {
		return nil, err
	}
	for _, k := range jsonNames(reflect.TypeOf(v).Elem()) {
		delete(all, k)
	}
	if len(all) == 0 {
		return nil, nil
	}
	return all, nil
}

// encodeKeeping encodes v (the plain twin) with the unknown fields added;
// a field v itself writes wins over a kept one of the same name.
func encodeKeeping(v any, u Unknown) ([]byte, error) {
	b, err := json.Marshal(v)
	if err != nil || len(u) == 0 {
		return b, err
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, err
	}
	for k, raw := range u {
		if _, ok := m[k]; !ok && json.Valid(raw) {
			m[k] = raw
		}
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(m); err != nil {
		return nil, err
	}
	return bytes.TrimRight(buf.Bytes(), "\n"), nil
}

// jsonNames are the JSON names of t's fields ("-" and unexported excluded).
func jsonNames(t reflect.Type) []string {
	var names []string
	for i := range t.NumField() {
		f := t.Field(i)
		if !f.IsExported() {
			continue
		}
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		switch name {
		case "-":
			continue
		case "":
			name = f.Name
		}
		names = append(names, name)
	}
	return names
}

// The records several members (or versions) read and rewrite keep the
// fields they do not know.

// UnmarshalJSON keeps unknown fields.
func (m *Member) UnmarshalJSON(b []byte) error {
	type plain Member
	u, err := decodeKeeping(b, (*plain)(m))
	m.Unknown = u
	return err
}

// MarshalJSON writes the kept unknown fields back.
func (m Member) MarshalJSON() ([]byte, error) {
	type plain Member
	return encodeKeeping(plain(m), m.Unknown)
}

// UnmarshalJSON keeps unknown fields.
func (s *Sync) UnmarshalJSON(b []byte) error {
	type plain Sync
	u, err := decodeKeeping(b, (*plain)(s))
	s.Unknown = u
	return err
}

// MarshalJSON writes the kept unknown fields back.
func (s Sync) MarshalJSON() ([]byte, error) {
	type plain Sync
	return encodeKeeping(plain(s), s.Unknown)
}

// UnmarshalJSON keeps unknown fields.
func (s *Switchover) UnmarshalJSON(b []byte) error {
	type plain Switchover
	u, err := decodeKeeping(b, (*plain)(s))
	s.Unknown = u
	return err
}

// MarshalJSON writes the kept unknown fields back.
func (s Switchover) MarshalJSON() ([]byte, error) {
	type plain Switchover
	return encodeKeeping(plain(s), s.Unknown)
}

// UnmarshalJSON keeps unknown fields.
func (c *ClusterInfo) UnmarshalJSON(b []byte) error {
	type plain ClusterInfo
	u, err := decodeKeeping(b, (*plain)(c))
	c.Unknown = u
	return err
}

// MarshalJSON writes the kept unknown fields back.
func (c ClusterInfo) MarshalJSON() ([]byte, error) {
	type plain ClusterInfo
	return encodeKeeping(plain(c), c.Unknown)
}
