package quant

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"greta/gguf"
)

// sharedDir is ../shared seen from the package directory.
const sharedDir = "../../shared"

type refEntry struct {
	Model  string  `json:"model"`
	Tensor string  `json:"tensor"`
	Shape  []int64 `json:"shape"`
	N      int     `json:"n"`
	File   string  `json:"file"`
}

func loadRefIndex(t *testing.T) map[string]refEntry {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(sharedDir, "reference/dequant/index.json"))
	if err != nil {
		t.Skipf("../shared/reference/dequant is absent (%v); the shared fixtures are needed for this test", err)
	}
	var idx map[string]refEntry
	if err := json.Unmarshal(b, &idx); err != nil {
		t.Fatalf("index.json: %v", err)
	}
	return idx
}

func readF32File(t *testing.T, name string) []float32 {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(sharedDir, "reference/dequant", name))
	if err != nil {
		t.Fatal(err)
	}
	v := make([]float32, len(b)/4)
	for i := range v {
		v[i] = math.Float32frombits(binary.LittleEndian.Uint32(b[4*i:]))
	}
	return v
}

// openTensor returns the tensor's info and bytes from a model in
// ../shared/models, skipping the test if the file is absent.
func openTensor(t *testing.T, model, tensor string) (*gguf.TensorInfo, []byte) {
	t.Helper()
	path := filepath.Join(sharedDir, "models", model)
	if _, err := os.Stat(path); err != nil {
		t.Skipf("%s is absent (%v)", path, err)
	}
	f, err := gguf.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	ti, ok := f.Tensor(tensor)
	if !ok {
		t.Fatalf("%s: no tensor %q", model, tensor)
	}
	return ti, f.TensorData(ti)
}

// ulpDiff is the distance in units in the last place between two float32s
// of the same sign (and a large number across signs).
func ulpDiff(a, b float32) int64 {
	ia, ib := int64(int32(math.Float32bits(a))), int64(int32(math.Float32bits(b)))
	if ia < 0 {
		ia = math.MinInt32 - ia
	}
	if ib < 0 {
		ib = math.MinInt32 - ib
	}
	d := ia - ib
	if d < 0 {
		d = -d
	}
	return d
}

// TestDequantMatchesReference checks every block format against the
// float32 values llama.cpp's dequantize wrote to ../shared/reference/dequant,
// bit for bit.
func TestDequantMatchesReference(t *testing.T) {
	idx := loadRefIndex(t)
	for name, e := range idx {
		t.Run(name, func(t *testing.T) {
			typ, ok := gguf.ParseType(name)
			if !ok {
				t.Fatalf("index names unknown type %q", name)
			}
			if _, err := os.Stat(filepath.Join(sharedDir, "models", e.Model)); err != nil {
				if typ == gguf.F16 {
					t.Skipf("%s is not in ../shared/models; F16 is checked by TestF16RealFileFromLlamaQuantize and TestSynFilesAgainstF16Reference instead", e.Model)
				}
				t.Fatalf("model %s named by index.json is missing", e.Model)
			}
			ti, data := openTensor(t, e.Model, e.Tensor)
			if ti.Type != typ {
				t.Fatalf("%s %s is %s, index says %s", e.Model, e.Tensor, ti.Type, typ)
			}
			want := readF32File(t, e.File)
			if len(want) != e.N || int64(e.N) != ti.NumElements() {
				t.Fatalf("sizes: file %d, index %d, tensor %d", len(want), e.N, ti.NumElements())
			}
			got := make([]float32, e.N)
			if err := Dequantize(typ, got, data); err != nil {
				t.Fatal(err)
			}
			bad, maxULP := 0, int64(0)
			for i := range got {
				if math.Float32bits(got[i]) != math.Float32bits(want[i]) {
					if bad < 5 {
						t.Errorf("value %d: got %v (%#08x), want %v (%#08x)", i, got[i], math.Float32bits(got[i]), want[i], math.Float32bits(want[i]))
					}
					bad++
					maxULP = max(maxULP, ulpDiff(got[i], want[i]))
				}
			}
			if bad > 0 {
				t.Errorf("%d of %d values differ, worst by %d ulp", bad, len(got), maxULP)
			}
		})
	}
}

// TestF16RealFileFromLlamaQuantize checks F16 on real F16 tensors: llama-
// quantize wrote stories260K-Q8_0.gguf from stories260K.gguf (F32) and kept
// ffn_down (rows of 172, not a multiple of 32) as F16, converting with
// ggml's FP32→FP16. So F32ToF16 of the F32 source must equal those bytes,
// and Dequantize(F16) must return the binary16 value nearest the source.
func TestF16RealFileFromLlamaQuantize(t *testing.T) {
	src := openModel(t, "stories260K.gguf")
	q := openModel(t, "stories260K-Q8_0.gguf")
	n := 0
	for i := range q.Tensors {
		ti := &q.Tensors[i]
		if ti.Type != gguf.F16 {
			continue
		}
		n++
		si, ok := src.Tensor(ti.Name)
		if !ok || si.Type != gguf.F32 || si.NumElements() != ti.NumElements() {
			t.Fatalf("%s: no matching F32 tensor in stories260K.gguf", ti.Name)
		}
		x := make([]float32, si.NumElements())
		if err := Dequantize(gguf.F32, x, src.TensorData(si)); err != nil {
			t.Fatal(err)
		}
		got := make([]float32, len(x))
		if err := Dequantize(gguf.F16, got, q.TensorData(ti)); err != nil {
			t.Fatal(err)
		}
		data := q.TensorData(ti)
		for j, v := range x {
			h := binary.LittleEndian.Uint16(data[2*j:])
			if e := F32ToF16(v); e != h {
				t.Fatalf("%s[%d]: F32ToF16(%v) = %#04x, llama-quantize wrote %#04x", ti.Name, j, v, e, h)
			}
			if got[j] != F16ToF32(h) || math.Abs(float64(got[j])-float64(v)) > halfULP16(got[j]) {
				t.Fatalf("%s[%d]: decoded %v from source %v", ti.Name, j, got[j], v)
			}
		}
	}
	if n == 0 {
		t.Fatal("stories260K-Q8_0.gguf has no F16 tensor; this test needs another source of real F16 data")
	}
}

// TestQuantizeQ8_0MatchesLlamaQuantize: every Q8_0 tensor of
// stories260K-Q8_0.gguf must be QuantizeQ8_0 of stories260K.gguf's F32
// tensor, byte for byte.
func TestQuantizeQ8_0MatchesLlamaQuantize(t *testing.T) {
	src := openModel(t, "stories260K.gguf")
	q := openModel(t, "stories260K-Q8_0.gguf")
	blocks := 0
	for i := range q.Tensors {
		ti := &q.Tensors[i]
		if ti.Type != gguf.Q8_0 {
			continue
		}
		si, _ := src.Tensor(ti.Name)
		x := make([]float32, si.NumElements())
		if err := Dequantize(si.Type, x, src.TensorData(si)); err != nil {
			t.Fatal(err)
		}
		got := make([]byte, ti.Size())
		QuantizeQ8_0(got, x)
		want := q.TensorData(ti)
		for b := 0; b < len(want)/blockQ8_0Size; b++ {
			g, w := got[b*blockQ8_0Size:(b+1)*blockQ8_0Size], want[b*blockQ8_0Size:(b+1)*blockQ8_0Size]
			if string(g) != string(w) {
				t.Fatalf("%s block %d: got %x, llama-quantize wrote %x", ti.Name, b, g, w)
			}
		}
		blocks += len(want) / blockQ8_0Size
	}
	if blocks == 0 {
		t.Fatal("no Q8_0 tensor found")
	}
	t.Logf("%d Q8_0 blocks identical to llama-quantize's", blocks)
}

// TestSynFilesAgainstF16Reference records what the F16 reference (the
// values of syn-spm-F16.gguf, a file not shipped) tells us. Its values must
// all be binary16 values. syn-spm-Q8_0/Q4_0.gguf were NOT quantized from
// those values but from a common higher-precision source: quantizing the
// F16 values reproduces most blocks exactly, and every block that differs
// must be explained by the F16 rounding of that source (each F16 value v
// stands for a source in [v−½ulp, v+½ulp]). A quantizer bug (wrong rounding
// rule, wrong scale) would produce differences no such interval explains.
func TestSynFilesAgainstF16Reference(t *testing.T) {
	idx := loadRefIndex(t)
	e := idx["F16"]
	ref := readF32File(t, e.File)
	for i, v := range ref {
		if F16ToF32(F32ToF16(v)) != v {
			t.Fatalf("F16 reference value %d (%v) is not a binary16 value", i, v)
		}
	}
	for _, c := range []struct {
		model string
		typ   gguf.Type
	}{{"syn-spm-Q8_0.gguf", gguf.Q8_0}, {"syn-spm-Q4_0.gguf", gguf.Q4_0}} {
		_, data := openTensor(t, c.model, e.Tensor)
		got := make([]byte, len(data))
		ts := c.typ.TypeSize()
		if c.typ == gguf.Q8_0 {
			QuantizeQ8_0(got, ref)
		} else {
			QuantizeQ4_0(got, ref)
		}
		same := 0
		for b := 0; b < len(data)/ts; b++ {
			g, w, x := got[b*ts:(b+1)*ts], data[b*ts:(b+1)*ts], ref[b*32:(b+1)*32]
			if string(g) == string(w) {
				same++
				continue
			}
			if why := unexplained(c.typ, x, g, w); why != "" {
				t.Errorf("%s block %d: got %x, file has %x: %s", c.model, b, g, w, why)
			}
		}
		t.Logf("%s: %d of %d blocks identical to QuantizeQ%s(F16 reference); the rest differ only within F16 rounding of the source", c.model, same, len(data)/ts, c.typ.String()[1:])
		if same < len(data)/ts/2 {
			t.Errorf("%s: only %d blocks identical", c.model, same)
		}
	}
}

// unexplained returns "" if both blocks g (ours, from x) and w (the
// file's) can come from the reference quantizer applied to some source s
// with F16ToF32(F32ToF16(s)) == x, field by field: each differing scale or
// quant of either block must lie in the range the source interval allows.
func unexplained(typ gguf.Type, x []float32, g, w []byte) string {
	lo, hi := make([]float64, 32), make([]float64, 32)
	for j, v := range x {
		h := halfULP16(v)
		lo[j], hi[j] = float64(v)-h, float64(v)+h
	}
	if typ == gguf.Q8_0 {
		var amax float64
		for j := range x {
			amax = max(amax, math.Abs(float64(x[j])))
		}
		h := halfULP16(float32(amax))
		dlo, dhi := F16ToF32(F32ToF16(float32((amax-h)/127))), F16ToF32(F32ToF16(float32((amax+h)/127)))
		for _, b := range [][]byte{g, w} {
			if d := F16ToF32(binary.LittleEndian.Uint16(b)); d < dlo || d > dhi {
				return fmt.Sprintf("scale %v outside [%v, %v]", d, dlo, dhi)
			}
		}
		idlo, idhi := 127/(amax+h), 127/(amax-h)
		for j := range x {
			c := []float64{lo[j] * idlo, lo[j] * idhi, hi[j] * idlo, hi[j] * idhi}
			qlo, qhi := math.Round(slices.Min(c)), math.Round(slices.Max(c))
			for _, b := range [][]byte{g, w} {
				if q := float64(int8(b[2+j])); q < qlo || q > qhi {
					return fmt.Sprintf("quant %d = %v outside [%v, %v]", j, q, qlo, qhi)
				}
			}
		}
		return ""
	}
	// Q4_0: d = max/−8 is exact scaling of the F16-rounded max, so d must
	// equal the reference's; only nibbles on a rounding edge may differ.
	var amax, mx float32
	for _, v := range x {
		if a := float32(math.Abs(float64(v))); amax < a {
			amax, mx = a, v
		}
	}
	for _, b := range [][]byte{g, w} {
		if d := F16ToF32(binary.LittleEndian.Uint16(b)); d != mx/-8 {
			return fmt.Sprintf("scale %v, want %v", d, mx/-8)
		}
	}
	h := halfULP16(mx)
	id1, id2 := -8/(float64(mx)-h), -8/(float64(mx)+h)
	for j := range 32 {
		c := []float64{lo[j] * id1, lo[j] * id2, hi[j] * id1, hi[j] * id2}
		qlo, qhi := min(15, math.Trunc(slices.Min(c)+8.5)), min(15, math.Trunc(slices.Max(c)+8.5))
		for _, b := range [][]byte{g, w} {
			nib := b[2+j%16] & 0xf
			if j >= 16 {
				nib = b[2+j%16] >> 4
			}
			if float64(nib) < qlo || float64(nib) > qhi {
				return fmt.Sprintf("nibble %d = %d outside [%v, %v]", j, nib, qlo, qhi)
			}
		}
	}
	return ""
}

// halfULP16 is half the spacing of binary16 values around v (the larger
// spacing at a binade edge), as a float64.
func halfULP16(v float32) float64 {
	h := F32ToF16(v) & 0x7fff
	a := float64(F16ToF32(h))
	up := float64(F16ToF32(h+1)) - a
	if h == 0 {
		return up / 2
	}
	return max(up, a-float64(F16ToF32(h-1))) / 2
}

func openModel(t *testing.T, name string) *gguf.File {
	t.Helper()
	path := filepath.Join(sharedDir, "models", name)
	if _, err := os.Stat(path); err != nil {
		t.Skipf("%s is absent (%v); the shared fixtures are needed for this test", path, err)
	}
	f, err := gguf.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}
