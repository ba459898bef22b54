package trace

import (
	"bufio"
	"fmt"
	"io"
	"regexp"
	"strconv"
	"strings"
)

// llama.cpp's eval-callback names, mapped to our points. Per-layer names
// end in -L. l_out-L is also the input x of layer L+1; embd is x of layer 0.
var evalcbPoints = map[string]string{
	"attn_norm": "norm_out",
	"Qcur":      "q",
	"Kcur":      "k",
	"Vcur":      "v",
	"kqv_out":   "kqv_out",
	"attn_out":  "attn_out",
	"ffn_norm":  "ffn_norm",
	"ffn_out":   "mlp_out",
	"l_out":     "x_out",
}

var evalcbLine = regexp.MustCompile(`common_debug_cb_eval:\s+(\S+) = \((\w+)\)\s+\w+\(.*\) = \{(\d+), (\d+), (\d+), (\d+)\}\s*$`)

type evalcbTensor struct {
	name  string
	dtype string
	ne    [4]int
	vals  []float64 // printed values, in print order
	sum   float64
}

// ReadEvalCallback parses the output of llama.cpp's llama-eval-callback
// (prefill only: step 0). Each tensor prints the first and last 3 values
// along every dimension and its total sum; Record.Index holds the flat
// index of each kept value, and Sums[0] the sum.
func ReadEvalCallback(r io.Reader) (*Trace, error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<20), 1<<26)
	var tensors []*evalcbTensor
	var cur *evalcbTensor
	nTokens := 0
	for sc.Scan() {
		line := sc.Text()
		if m := evalcbLine.FindStringSubmatch(line); m != nil {
			cur = &evalcbTensor{name: m[1], dtype: m[2]}
			for i := range cur.ne {
				cur.ne[i], _ = strconv.Atoi(m[3+i])
			}
			tensors = append(tensors, cur)
			continue
		}
		if i := strings.Index(line, "number of input tokens = "); i >= 0 {
			nTokens, _ = strconv.Atoi(strings.TrimSpace(line[i+len("number of input tokens = "):]))
			continue
		}
		if cur == nil {
			continue
		}
		s := strings.TrimSpace(line)
		if strings.HasPrefix(s, "sum = ") {
			cur.sum, _ = strconv.ParseFloat(strings.TrimPrefix(s, "sum = "), 64)
			cur = nil
			continue
		}
		if strings.HasPrefix(s, "[") && strings.Contains(s, "]") || strings.Contains(s, ",") {
			for _, f := range strings.FieldsFunc(s, func(r rune) bool { return r == '[' || r == ']' || r == ',' || r == ' ' }) {
				if f == "..." {
					continue
				}
				v, err := strconv.ParseFloat(f, 64)
				if err != nil {
					return nil, fmt.Errorf("tensor %s: bad value %q", cur.name, f)
				}
				cur.vals = append(cur.vals, v)
			}
		}
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	if len(tensors) == 0 {
		return nil, fmt.Errorf("no common_debug_cb_eval lines: not a llama-eval-callback log")
	}
	if nTokens == 0 {
		nTokens = tensors[0].ne[1] // embd is {dim, n_tokens}
	}

	// The last tensor of each exact name is its final value (Qcur-L is
	// printed after MUL_MAT, RESHAPE and ROPE).
	last := map[string]*evalcbTensor{}
	var order []string
	for _, t := range tensors {
		if _, seen := last[t.name]; !seen {
			order = append(order, t.name)
		}
		last[t.name] = t
	}
	tr := &Trace{Sparse: true, Header: Header{Type: "header", Backend: "llama.cpp", Device: "llama-eval-callback", DType: "f32"}}
	add := func(t *evalcbTensor, layer int, point string) error {
		rec, err := t.record(layer, point, nTokens)
		if err != nil {
			return err
		}
		tr.Records = append(tr.Records, rec)
		return nil
	}
	for _, name := range order {
		t := last[name]
		var err error
		switch {
		case name == "embd":
			err = add(t, 0, "x")
		case name == "result_norm":
			err = add(t, -1, "final_norm")
		case name == "result_output":
			err = add(t, -1, "logits")
		default:
			base, num, ok := strings.Cut(name, "-")
			l, perr := strconv.Atoi(num)
			point := evalcbPoints[base]
			if !ok || perr != nil || point == "" {
				continue
			}
			if err = add(t, l, point); err == nil && base == "l_out" {
				err = add(t, l+1, "x")
			}
		}
		if err != nil {
			return nil, err
		}
	}
	return tr, nil
}

// record turns a printed tensor into a sparse Record. The tensor's values,
// flattened in ggml order, are token rows of cols values each; when there
// are fewer rows than tokens (llama.cpp computes only the last token's row
// at the end), the rows are the last positions.
func (t *evalcbTensor) record(layer int, point string, nTokens int) (*Record, error) {
	// {cols, rows, 1, 1}, or after a reshape into heads
	// {head_dim, heads, rows, 1}.
	total := t.ne[0] * t.ne[1] * t.ne[2] * t.ne[3]
	rows := t.ne[1]
	if t.ne[2]*t.ne[3] > 1 {
		rows = t.ne[2] * t.ne[3]
	}
	if rows > nTokens {
		return nil, fmt.Errorf("tensor %s: %d rows but only %d input tokens", t.name, rows, nTokens)
	}
	cols := total / rows
	idx := printedIndices(t.ne)
	if len(idx) != len(t.vals) {
		return nil, fmt.Errorf("tensor %s: parsed %d values, expected %d for shape %v", t.name, len(t.vals), len(idx), t.ne)
	}
	rec := &Record{Step: 0, Layer: layer, Point: point, Shape: []int{cols, rows}, DType: t.dtype, Sums: []float64{t.sum}, Edge: 3, Quantum: 1e-4}
	for r := 0; r < rows; r++ {
		rec.Pos = append(rec.Pos, nTokens-rows+r)
	}
	rec.Index = make([][]int, rows)
	rec.Values = make([][]Float, rows)
	for i, flat := range idx {
		r, c := flat/cols, flat%cols
		rec.Index[r] = append(rec.Index[r], c)
		rec.Values[r] = append(rec.Values[r], Float(t.vals[i]))
	}
	return rec, nil
}

// printedIndices lists the flat indices ggml_print_tensor prints (n = 3):
// along each dimension, all indices when it has at most 6, else the first
// and last 3, in print order.
func printedIndices(ne [4]int) []int {
	pick := func(n int) []int {
		var s []int
		for i := 0; i < n; i++ {
			if n <= 6 || i < 3 || i >= n-3 {
				s = append(s, i)
			}
		}
		return s
	}
	var out []int
	for _, i3 := range pick(ne[3]) {
		for _, i2 := range pick(ne[2]) {
			for _, i1 := range pick(ne[1]) {
				for _, i0 := range pick(ne[0]) {
					out = append(out, ((i3*ne[2]+i2)*ne[1]+i1)*ne[0]+i0)
				}
			}
		}
	}
	return out
}
