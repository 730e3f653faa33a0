package multinode

import (
	"slices"
	"testing"
)

func TestSplitQuotedKeepsCommentsWhole(t *testing.T) {
	got := splitQuoted(`-D FORWARD -i mnbr -m comment --comment "skiff multinode mn" -j ACCEPT`)
	want := []string{"-D", "FORWARD", "-i", "mnbr", "-m", "comment", "--comment", "skiff multinode mn", "-j", "ACCEPT"}
	if !slices.Equal(got, want) {
		t.Fatalf("got %q\nwant %q", got, want)
	}
}
