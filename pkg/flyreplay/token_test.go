package flyreplay

import (
	"net/http/httptest"
	"testing"
)

func TestParseToken(t *testing.T) {
	p, at, err := ParseToken("3/1/60~1796179788626~sig")
	if err != nil || p != (Position{Timeline: 3, LSN: 1<<32 | 0x60}) || at.UnixMilli() != 1796179788626 {
		t.Fatalf("ParseToken = %v %v %v", p, at, err)
	}
	for _, bad := range []string{"", "x", "3/1/60~abc~s", "0/1/60~1~s", "3/1~1~s", "3/1/60~1"} {
		if _, _, err := ParseToken(bad); err == nil {
			t.Errorf("ParseToken(%q) accepted", bad)
		}
	}
	r := httptest.NewRequest("GET", "/", nil)
	r.Header.Set("Cookie", TokenCookie+"=junk; "+TokenCookie+"=2/0/10~5~s")
	if p, _, ok := TokenFromRequest(r); !ok || p.Timeline != 2 || p.LSN != 0x10 {
		t.Errorf("TokenFromRequest = %v %v", p, ok)
	}
}
