package sample

import (
	"fmt"
	"math"
	"math/rand/v2"
)

// RangeError is a setting outside its allowed range. Field is the setting's
// name in the API's terms (the JSON names of llama.cpp's and OpenAI's
// servers: temperature, top_k, ...), so that a server can return it as is
// and the CLI can map it to its flag.
type RangeError struct {
	Field string
	Value string // as given, e.g. "NaN" or "-2"
	Want  string // the allowed range, e.g. "a finite number ≥ 0"
}

func (e *RangeError) Error() string {
	return fmt.Sprintf("%s %s is out of range: want %s", e.Field, e.Value, e.Want)
}

// The limits of the integer settings: far past any useful value, small
// enough that nothing sized from them can overflow.
const (
	maxTopK        = 1 << 24
	maxRepeatLastN = 1 << 24
)

// Validate reports the first setting outside its range. It is the one check
// of sampling settings: the CLI calls it on its flags, and a server calls
// it on a request.
//
//	temperature    finite, ≥ 0 (0: greedy)
//	top_k          0 .. 2^24 (0: off)
//	top_p          0 .. 1 (1: off)
//	min_p          0 .. 1 (0: off)
//	repeat_penalty finite, ≥ 0 (0 and 1: off)
//	repeat_last_n  0 .. 2^24
//	presence_penalty, frequency_penalty  -2 .. 2 (0: off)
func (p Params) Validate() error {
	finite := func(field string, v, lo, hi float64, want string) error {
		if math.IsNaN(v) || math.IsInf(v, 0) || v < lo || v > hi {
			return &RangeError{Field: field, Value: fmt.Sprint(v), Want: want}
		}
		return nil
	}
	for _, c := range []struct {
		field     string
		v, lo, hi float64
		want      string
	}{
		{"temperature", p.Temp, 0, math.MaxFloat64, "a finite number ≥ 0 (0: greedy)"},
		{"top_p", p.TopP, 0, 1, "a number in [0, 1] (1: off)"},
		{"min_p", p.MinP, 0, 1, "a number in [0, 1] (0: off)"},
		{"repeat_penalty", p.RepeatPenalty, 0, math.MaxFloat64, "a finite number ≥ 0 (1: off)"},
		{"presence_penalty", p.PresencePenalty, -2, 2, "a number in [-2, 2] (0: off)"},
		{"frequency_penalty", p.FrequencyPenalty, -2, 2, "a number in [-2, 2] (0: off)"},
	} {
		if err := finite(c.field, c.v, c.lo, c.hi, c.want); err != nil {
			return err
		}
	}
	if p.TopK < 0 || p.TopK > maxTopK {
		return &RangeError{Field: "top_k", Value: fmt.Sprint(p.TopK), Want: fmt.Sprintf("an integer in [0, %d] (0: off)", maxTopK)}
	}
	if p.RepeatLastN < 0 || p.RepeatLastN > maxRepeatLastN {
		return &RangeError{Field: "repeat_last_n", Value: fmt.Sprint(p.RepeatLastN), Want: fmt.Sprintf("an integer in [0, %d]", maxRepeatLastN)}
	}
	return nil
}

// RandomSeed returns a seed for a run that asked for none, from the
// runtime's random source, so that two unseeded runs differ. Report it
// (--verbose, --json) so that such a run can be repeated.
func RandomSeed() uint64 { return rand.Uint64() }
