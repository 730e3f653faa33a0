package dsstatus

import "testing"

func TestParseCompactValue(t *testing.T) {
	for _, c := range []struct {
		in   string
		rev  int64
		isOK bool
	}{
		{"1234", 1234, true},
		{"3|1234", 1234, true},
		{"3|0", 0, false},
		{"0", 0, false},
		{"", 0, false},
		{"x|y", 0, false},
	} {
		rev, ok := ParseCompactValue([]byte(c.in))
		if rev != c.rev || ok != c.isOK {
			t.Errorf("ParseCompactValue(%q) = %d, %v; want %d, %v", c.in, rev, ok, c.rev, c.isOK)
		}
	}
}
