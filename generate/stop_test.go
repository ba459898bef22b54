package generate

import (
	"strings"
	"testing"
)

func TestStopMatcher(t *testing.T) {
	for _, c := range []struct {
		stops  []string
		pieces []string
		want   string // everything emitted, Flush included
		stop   bool
	}{
		{nil, []string{"a", "b"}, "ab", false},
		{[]string{"END"}, []string{"hello ", "E", "N", "D", " more"}, "hello ", true},
		{[]string{"END"}, []string{"hello EN", "D"}, "hello ", true},
		{[]string{"END"}, []string{"hello E", "NX", "!"}, "hello ENX!", false},
		{[]string{"END"}, []string{"hello EN"}, "hello EN", false}, // held, then flushed
		{[]string{"\n\n", "User:"}, []string{"Hi.", "\nUs", "er:", "x"}, "Hi.\n", true},
		{[]string{"abc", "b"}, []string{"xa", "bc"}, "x", true}, // the earliest start wins
		{[]string{"aab"}, []string{"a", "a", "a", "b"}, "a", true},
		{[]string{"é!"}, []string{"café", "!"}, "caf", true},
		{[]string{""}, []string{"a"}, "a", false},
	} {
		m := NewStopMatcher(c.stops)
		var out strings.Builder
		stopped := false
		for _, p := range c.pieces {
			e, s := m.Feed(p)
			out.WriteString(e)
			if s {
				stopped = true
			}
		}
		if !stopped {
			out.WriteString(m.Flush())
		}
		if out.String() != c.want || stopped != c.stop {
			t.Errorf("%q over %q: emitted %q (stopped %v), want %q (%v)", c.stops, c.pieces, out.String(), stopped, c.want, c.stop)
		}
	}
}

// Nothing emitted before a match may be part of the stop string: the text
// emitted so far never ends inside a stop that completes later.
func TestStopMatcherHoldsPartial(t *testing.T) {
	m := NewStopMatcher([]string{"<|end|>"})
	e, _ := m.Feed("ok <|e")
	if e != "ok " {
		t.Fatalf("emitted %q before the stop could complete", e)
	}
	e, s := m.Feed("nd|> trailing")
	if e != "" || !s {
		t.Fatalf("after the match: %q %v", e, s)
	}
	if e, s := m.Feed("more"); e != "" || !s {
		t.Fatalf("after the stop: %q %v", e, s)
	}
}
