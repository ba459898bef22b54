package generate

import "strings"

// StopMatcher finds stop strings in streamed text, across the boundaries of
// the pieces it is fed (one token's text at a time), and never lets a stop
// string, or the start of one that may still complete, reach the output.
//
//	m := NewStopMatcher([]string{"\nUser:"})
//	emit, stopped := m.Feed(piece) // emit is safe to show now
//	...
//	emit = m.Flush()               // at the end, what was held back
//
// It works on bytes; fed complete UTF-8 (as StreamDecoder gives), it emits
// complete UTF-8, since a held-back suffix starts where a stop string does.
type StopMatcher struct {
	stops []string
	held  string
	done  bool
}

// NewStopMatcher returns a matcher for stops. Empty strings are ignored
// (Options.Validate refuses them).
func NewStopMatcher(stops []string) *StopMatcher {
	m := &StopMatcher{}
	for _, s := range stops {
		if s != "" {
			m.stops = append(m.stops, s)
		}
	}
	return m
}

// Feed adds the next piece of text. It returns the text that is now safe to
// emit and whether a stop string matched; on a match, emit is the text up
// to the start of the earliest stop string, and every later Feed returns
// nothing.
func (m *StopMatcher) Feed(piece string) (emit string, stopped bool) {
	if m.done {
		return "", true
	}
	if len(m.stops) == 0 {
		return piece, false
	}
	buf := m.held + piece
	at := -1
	for _, s := range m.stops {
		if i := strings.Index(buf, s); i >= 0 && (at < 0 || i < at) {
			at = i
		}
	}
	if at >= 0 {
		m.done, m.held = true, ""
		return buf[:at], true
	}
	// Hold back the longest suffix that is a proper prefix of a stop string.
	keep := 0
	for _, s := range m.stops {
		for k := min(len(s)-1, len(buf)); k > keep; k-- {
			if strings.HasSuffix(buf, s[:k]) {
				keep = k
				break
			}
		}
	}
	m.held = buf[len(buf)-keep:]
	return buf[:len(buf)-keep], false
}

// Flush returns the text held back as a possible start of a stop string,
// at the end of a generation that matched none.
func (m *StopMatcher) Flush() string {
	h := m.held
	m.held = ""
	return h
}

// Stopped reports whether a stop string has matched.
func (m *StopMatcher) Stopped() bool { return m.done }
