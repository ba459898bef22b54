// Package trace is LayerTrace: JSONL records of the activations at named
// points of every layer, from any backend, and the tools that compare two
// traces (see diff.go).
//
// A trace file starts with a header line, then holds one record per
// (step, layer, point). Step 0 is the first forward call (the prefill);
// each later forward call (one decoded token) is the next step. Global
// points (final_norm, logits) have layer −1.
package trace

import (
	"bufio"
	"encoding/json"
	"fmt"
	"hash/fnv"
	"math"
	"os"
	"strconv"
	"strings"

	"greta/ml"
)

// Points lists the per-layer trace points in the order a layer computes them.
var Points = []string{"x", "norm_out", "q", "k", "v", "kqv_out", "attn_out", "ffn_norm", "mlp_out", "x_out"}

// GlobalPoints are traced once per step, after the last layer (layer −1).
var GlobalPoints = []string{"final_norm", "logits"}

// Header is the first line of a trace.
type Header struct {
	Type    string `json:"type"` // "header"
	Model   string `json:"model"`
	Config  any    `json:"config"`
	Backend string `json:"backend"`
	Device  string `json:"device"`
	DType   string `json:"dtype"`
	Version string `json:"version"`
}

// Stats summarize all values of a record, not only those kept.
type Stats struct {
	Mean   float64 `json:"mean"`
	RMS    float64 `json:"rms"`
	Min    float64 `json:"min"`
	Max    float64 `json:"max"`
	AbsMax float64 `json:"absmax"`
	NaN    int     `json:"nan"`
	Inf    int     `json:"inf"`
}

// Record is one trace point at one step. Values holds the first values of
// each token row (all of them with --trace-values all).
type Record struct {
	Step   int       `json:"step"`
	Pos    []int     `json:"pos"`
	Layer  int       `json:"layer"`
	Point  string    `json:"point"`
	Shape  []int     `json:"shape"` // innermost first: [cols, rows]
	DType  string    `json:"dtype"`
	Stats  Stats     `json:"stats"`
	Hash   string    `json:"hash"` // fnv-1a 64 of the float32 values, little-endian
	Values [][]Float `json:"values"`

	// Sparse records (llama.cpp's eval-callback dump) hold some values of
	// each row: Index[r][i] is the column of Values[r][i]. Sums[0] is then
	// the sum of the whole tensor. Dense records leave both empty: Values[r]
	// holds the first columns of row r.
	Index [][]int   `json:"index,omitempty"`
	Sums  []float64 `json:"sums,omitempty"`
	Edge  int       `json:"edge,omitempty"`
	// Quantum is the resolution the values were printed with (llama.cpp
	// prints 4 decimals: 1e-4). Differences within half of it are noise.
	Quantum float64 `json:"quantum,omitempty"`
}

// Options choose what a Recorder keeps.
type Options struct {
	Path   string
	Layers map[int]bool    // nil: all
	Points map[string]bool // nil: all
	Values int             // values kept per token row; <0: all
}

// OptionsFromEnv reads the environment variables of our reports:
// GRETA_TRACE_LAYER=1 turns tracing on (any of Go's boolean spellings: 1,
// true, 0, false, ...; anything else is an error), GRETA_TRACE_LAYER_OUT
// names the file, GRETA_TRACE_LAYER_LAYERS and GRETA_TRACE_LAYER_POINTS
// filter. nLayers is the model's block count, which layer lists are
// checked against.
func OptionsFromEnv(nLayers int) (Options, bool, error) {
	v := strings.TrimSpace(os.Getenv("GRETA_TRACE_LAYER"))
	if v == "" {
		return Options{}, false, nil
	}
	on, err := strconv.ParseBool(v)
	if err != nil {
		return Options{}, false, fmt.Errorf("GRETA_TRACE_LAYER=%q: expected 1 or 0 (true or false)", v)
	}
	if !on {
		return Options{}, false, nil
	}
	o := Options{Path: os.Getenv("GRETA_TRACE_LAYER_OUT"), Values: 8}
	if o.Path == "" {
		o.Path = "greta_trace.jsonl"
	}
	if o.Layers, err = ParseLayers(os.Getenv("GRETA_TRACE_LAYER_LAYERS"), nLayers); err != nil {
		return o, true, fmt.Errorf("GRETA_TRACE_LAYER_LAYERS: %w", err)
	}
	if o.Points, err = ParsePoints(os.Getenv("GRETA_TRACE_LAYER_POINTS")); err != nil {
		return o, true, fmt.Errorf("GRETA_TRACE_LAYER_POINTS: %w", err)
	}
	return o, true, nil
}

// ParseLayers parses "0,1,2,15,31" or ranges such as "0-3,30-31" (empty or
// "all": every layer) for a model of nLayers blocks. Every layer must
// exist; a range is checked before it is expanded, so its size is bounded
// by nLayers whatever the text says.
func ParseLayers(s string, nLayers int) (map[int]bool, error) {
	s = strings.TrimSpace(s)
	if s == "" || s == "all" {
		return nil, nil
	}
	exists := func(n int, f string) error {
		if n >= nLayers {
			return fmt.Errorf("layer %d in %q does not exist: the model has %d layers (0..%d)", n, cut(f, 40), nLayers, nLayers-1)
		}
		return nil
	}
	m := map[int]bool{}
	for _, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(f)
		if lo, hi, ok := strings.Cut(f, "-"); ok {
			a, err1 := strconv.Atoi(strings.TrimSpace(lo))
			b, err2 := strconv.Atoi(strings.TrimSpace(hi))
			if err1 != nil || err2 != nil || a > b || a < 0 {
				return nil, fmt.Errorf("bad layer range %q (expected e.g. 0-3)", cut(f, 40))
			}
			if err := exists(b, f); err != nil {
				return nil, err
			}
			for i := a; i <= b; i++ {
				m[i] = true
			}
			continue
		}
		n, err := strconv.Atoi(f)
		if err != nil || n < 0 {
			return nil, fmt.Errorf("bad layer %q (expected e.g. 0,1,2,15,31)", cut(f, 40))
		}
		if err := exists(n, f); err != nil {
			return nil, err
		}
		m[n] = true
	}
	return m, nil
}

// cut shortens s for an error message.
func cut(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}

// ParsePoints parses "x,norm_out,q" (empty or "all": every point).
func ParsePoints(s string) (map[string]bool, error) {
	s = strings.TrimSpace(s)
	if s == "" || s == "all" {
		return nil, nil
	}
	known := map[string]bool{}
	for _, p := range append(append([]string{}, Points...), GlobalPoints...) {
		known[p] = true
	}
	m := map[string]bool{}
	for _, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(f)
		if !known[f] {
			return nil, fmt.Errorf("unknown trace point %q (known: %s, %s)", cut(f, 40), strings.Join(Points, ","), strings.Join(GlobalPoints, ","))
		}
		m[f] = true
	}
	return m, nil
}

// Recorder writes trace records as a forward pass reaches its points.
type Recorder struct {
	opts  Options
	b     ml.Backend
	f     *os.File
	w     *bufio.Writer
	step  int
	pos   []int
	buf   []float32
	err   error
	begun bool
}

// NewRecorder creates the trace file and writes its header.
func NewRecorder(o Options, b ml.Backend, h Header) (*Recorder, error) {
	f, err := os.Create(o.Path)
	if err != nil {
		return nil, fmt.Errorf("trace: %w", err)
	}
	r := &Recorder{opts: o, b: b, f: f, w: bufio.NewWriterSize(f, 1<<20), step: -1}
	h.Type = "header"
	if h.Backend == "" {
		h.Backend, h.Device, h.DType = b.Name(), b.Device(), b.DType()
	}
	r.writeJSON(h)
	return r, r.err
}

// BeginStep starts a new step covering positions pos0 .. pos0+n−1.
func (r *Recorder) BeginStep(pos0, n int) {
	r.step++
	r.pos = r.pos[:0]
	for i := 0; i < n; i++ {
		r.pos = append(r.pos, pos0+i)
	}
}

// Want reports whether (layer, point) is recorded.
func (r *Recorder) Want(layer int, point string) bool {
	if r.opts.Points != nil && !r.opts.Points[point] {
		return false
	}
	if layer >= 0 && r.opts.Layers != nil && !r.opts.Layers[layer] {
		return false
	}
	return true
}

// Record reads t from its backend and writes one record.
func (r *Recorder) Record(layer int, point string, t ml.Tensor) {
	if !r.Want(layer, point) {
		return
	}
	cols, rows := t.Cols(), t.Rows()
	if cap(r.buf) < cols*rows {
		r.buf = make([]float32, cols*rows)
	}
	v := r.buf[:cols*rows]
	r.b.Read(t, v)
	rec := Record{Step: r.step, Pos: r.pos, Layer: layer, Point: point, Shape: []int{cols, rows}, DType: r.b.DType()}
	if len(rec.Pos) != rows {
		// Logits of the last row only.
		rec.Pos = r.pos[len(r.pos)-rows:]
	}
	rec.Stats, rec.Hash = Summarize(v)
	keep := r.opts.Values
	if keep < 0 || keep > cols {
		keep = cols
	}
	rec.Values = make([][]Float, rows)
	for i := range rec.Values {
		row := make([]Float, keep)
		for j := range row {
			row[j] = Float(v[i*cols+j])
		}
		rec.Values[i] = row
	}
	r.writeJSON(rec)
}

// Summarize computes the stats and the hash of values.
func Summarize(v []float32) (Stats, string) {
	s := Stats{Min: math.Inf(1), Max: math.Inf(-1)}
	h := fnv.New64a()
	var b [4]byte
	var sum, sq float64
	finite := 0
	for _, x := range v {
		u := math.Float32bits(x)
		b[0], b[1], b[2], b[3] = byte(u), byte(u>>8), byte(u>>16), byte(u>>24)
		h.Write(b[:])
		f := float64(x)
		switch {
		case math.IsNaN(f):
			s.NaN++
			continue
		case math.IsInf(f, 0):
			s.Inf++
			continue
		}
		finite++
		sum += f
		sq += f * f
		s.Min = math.Min(s.Min, f)
		s.Max = math.Max(s.Max, f)
		s.AbsMax = math.Max(s.AbsMax, math.Abs(f))
	}
	if finite > 0 {
		s.Mean = sum / float64(finite)
		s.RMS = math.Sqrt(sq / float64(finite))
	} else {
		s.Min, s.Max = 0, 0
	}
	return s, fmt.Sprintf("fnv1a64:%016x", h.Sum64())
}

func (r *Recorder) writeJSON(v any) {
	if r.err != nil {
		return
	}
	b, err := json.Marshal(v)
	if err != nil {
		r.err = err
		return
	}
	b = append(b, '\n')
	if _, err := r.w.Write(b); err != nil {
		r.err = err
	}
}

// Close flushes the file and reports the first write error.
func (r *Recorder) Close() error {
	if err := r.w.Flush(); err != nil && r.err == nil {
		r.err = err
	}
	if err := r.f.Close(); err != nil && r.err == nil {
		r.err = err
	}
	if r.err != nil {
		return fmt.Errorf("trace %s: %w", r.opts.Path, r.err)
	}
	return nil
}

// Float is a JSON number that also carries NaN and ±Inf (as the strings
// "NaN", "Inf" and "-Inf"), so a broken activation can be written down.
type Float float64

func (f Float) MarshalJSON() ([]byte, error) {
	x := float64(f)
	switch {
	case math.IsNaN(x):
		return []byte(`"NaN"`), nil
	case math.IsInf(x, 1):
		return []byte(`"Inf"`), nil
	case math.IsInf(x, -1):
		return []byte(`"-Inf"`), nil
	}
	return strconv.AppendFloat(nil, x, 'g', -1, 64), nil
}

func (f *Float) UnmarshalJSON(b []byte) error {
	switch string(b) {
	case `"NaN"`:
		*f = Float(math.NaN())
	case `"Inf"`:
		*f = Float(math.Inf(1))
	case `"-Inf"`:
		*f = Float(math.Inf(-1))
	default:
		x, err := strconv.ParseFloat(string(b), 64)
		if err != nil {
			return fmt.Errorf("trace value %s: %w", b, err)
		}
		*f = Float(x)
	}
	return nil
}
