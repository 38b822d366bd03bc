package volumes

import (
	"errors"
	"strings"
	"testing"
)

func TestValidName(t *testing.T) {
	cases := []struct {
		name string
		ok   bool
	}{
		{"pv-data", true}, {"a", true}, {"0.v_1-x", true}, {strings.Repeat("a", 253), true},
		{"", false}, {"..", false}, {"a..b", false}, {"../etc", false}, {"a/b", false},
		{"-a", false}, {".a", false}, {"Data", false}, {"a b", false}, {"a;rm", false},
		{strings.Repeat("a", 254), false},
	}
	for _, c := range cases {
		err := ValidName(c.name)
		if (err == nil) != c.ok || (err != nil && !errors.Is(err, ErrInvalidName)) {
			t.Errorf("ValidName(%q) = %v, want ok=%v", c.name, err, c.ok)
		}
	}
}
