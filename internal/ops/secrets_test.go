package ops

import "testing"

func TestCheckNewPassword(t *testing.T) {
	for pw, ok := range map[string]bool{
		"short":                       false,
		"twelve-chars":                true,
		" leading-space-password":     false,
		"trailing-space-password ":    false,
		`"quoted-password-value"`:     false,
		"#comment-like-password":      false,
		"line\nbreak-in-the-password": false,
		"tab\tinside-the-password":    false,
		"unicode-ok-ñandú-password":   true,
	} {
		if err := CheckNewPassword(pw); (err == nil) != ok {
			t.Errorf("%q: %v, want ok=%v", pw, err, ok)
		}
	}
	g, err := GeneratePassword()
	if err != nil || CheckNewPassword(g) != nil {
		t.Fatalf("generated %q: %v", g, err)
	}
	if h, _ := GeneratePassword(); h == g {
		t.Fatal("two generated passwords are equal")
	}
}
