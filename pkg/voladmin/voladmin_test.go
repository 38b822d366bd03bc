package voladmin

import (
	"bytes"
	"testing"
)

func TestHuman(t *testing.T) {
	cases := map[int64]string{0: "0", 1 << 30: "1Gi", 48 << 20: "48Mi", 15360: "15Ki", 3<<20 + 1<<19: "3.5Mi"}
	for n, want := range cases {
		if got := human(n); got != want {
			t.Errorf("human(%d) = %q, want %q", n, got, want)
		}
	}
}

func TestUsage(t *testing.T) {
	for _, args := range [][]string{{}, {"list", "x"}, {"delete"}, {"frob"}, {"-o", "yaml", "list"}} {
		var out, errb bytes.Buffer
		if code := Main(args, &out, &errb, func(string) string { return "" }); code != 2 || out.Len() != 0 {
			t.Errorf("%v: exit %d, stdout %q; want 2 and nothing on stdout", args, code, out.String())
		}
	}
}
