package trace

import (
	"math"
	"strings"
	"testing"
	"time"
)

func TestParseLayers(t *testing.T) {
	m, err := ParseLayers("0, 2-3,1", 4)
	if err != nil || len(m) != 4 || !m[0] || !m[1] || !m[2] || !m[3] {
		t.Fatalf("%v %v", m, err)
	}
	if m, err := ParseLayers("all", 4); m != nil || err != nil {
		t.Fatalf("all: %v %v", m, err)
	}
	// A range past the model is refused at once, never expanded.
	start := time.Now()
	for _, s := range []string{"0-2000000000", "4", "3-4", "0-9223372036854775807", "-1", "3-1", "x", "1-"} {
		if _, err := ParseLayers(s, 4); err == nil {
			t.Errorf("%q: accepted for a 4-layer model", s)
		}
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("took %v", d)
	}
	_, err = ParseLayers("0-2000000000", 22)
	if err == nil || !strings.Contains(err.Error(), "the model has 22 layers") {
		t.Errorf("message: %v", err)
	}
	_, err = ParsePoints(strings.Repeat("z", 1<<20))
	if err == nil || len(err.Error()) > 400 {
		t.Errorf("a 1 MiB point name gives a %d-byte error", len(err.Error()))
	}
}

func TestOptionsFromEnv(t *testing.T) {
	for v, want := range map[string]bool{"": false, "0": false, "false": false, "FALSE": false, "1": true, "true": true, "t": true} {
		t.Setenv("GRETA_TRACE_LAYER", v)
		_, on, err := OptionsFromEnv(2)
		if err != nil || on != want {
			t.Errorf("GRETA_TRACE_LAYER=%q: on %v, %v", v, on, err)
		}
	}
	for _, v := range []string{"yes please", "2", "on"} {
		t.Setenv("GRETA_TRACE_LAYER", v)
		if _, _, err := OptionsFromEnv(2); err == nil {
			t.Errorf("GRETA_TRACE_LAYER=%q accepted", v)
		}
	}
	t.Setenv("GRETA_TRACE_LAYER", "1")
	t.Setenv("GRETA_TRACE_LAYER_LAYERS", "0-2000000000")
	if _, _, err := OptionsFromEnv(2); err == nil {
		t.Error("layers past the model accepted")
	}
}

func rec(step, layer int, point string, shape []int, vals ...float64) *Record {
	r := &Record{Step: step, Layer: layer, Point: point, Shape: shape, Pos: []int{0}}
	row := make([]Float, len(vals))
	for i, v := range vals {
		row[i] = Float(v)
	}
	r.Values = [][]Float{row}
	return r
}

// Records of different shapes diverge, even where the values kept agree.
func TestDiffShapes(t *testing.T) {
	a := &Trace{Records: []*Record{rec(0, 0, "x", []int{4, 1}, 1, 2, 3, 4), rec(0, 0, "q", []int{8, 1}, 1, 2, 3, 4)}}
	b := &Trace{Records: []*Record{rec(0, 0, "x", []int{4, 1}, 1, 2, 3, 4), rec(0, 0, "q", []int{4, 1}, 1, 2, 3, 4)}}
	rep := Diff(a, b, 1e-4)
	if rep.First == nil || rep.First.Point != "q" || !math.IsInf(rep.First.RelErr, 1) || !strings.Contains(rep.FirstLine(), "shapes differ: [8 1] vs [4 1]") {
		t.Fatalf("%+v: %s", rep.First, rep.FirstLine())
	}
	b.Records[1].Shape = []int{8, 2}
	if rep := Diff(a, b, 1e-4); rep.First == nil || rep.First.Shapes == "" {
		t.Fatalf("rows differ: %+v", rep.First)
	}
	b.Records[1].Shape = []int{8, 1}
	if rep := Diff(a, b, 1e-4); rep.First != nil {
		t.Fatalf("same shapes: %+v", rep.First)
	}
}
