package cpu

import (
	"fmt"
	"os"
	"runtime"
	"strings"

	"greta/gguf"
	"greta/ml"
	"greta/quant"
)

// Backend runs the model on the CPU in float32 with a worker pool.
type Backend struct {
	pool     *Pool
	scratch  []float32 // GateUp's second product
	scratchT Tensor
	device   string

	batch  *ml.Batch // the rows of the current ops (Begin)
	outGen []bool    // the roles of the batch's Out rows

	// Tasks of the parallel ops, kept here so Run gets a pointer and
	// nothing is allocated per call.
	norm   normTask
	rope   ropeTask
	attn   attnTask
	swiglu swigluTask
}

// New returns a CPU backend with threads workers (all cores if ≤ 0).
func New(threads int) *Backend {
	p := NewPool(threads)
	return &Backend{pool: p, device: fmt.Sprintf("%s (%d threads)", cpuName(), p.Threads())}
}

// Pool exposes the worker pool (tests, benchmarks).
func (b *Backend) Pool() *Pool { return b.pool }

func (b *Backend) Name() string   { return "cpu" }
func (b *Backend) Device() string { return b.device }
func (b *Backend) DType() string  { return "f32" }
func (b *Backend) Close() error   { b.pool.Close(); return nil }

func cpuName() string {
	data, err := os.ReadFile("/proc/cpuinfo")
	if err == nil {
		for _, line := range strings.Split(string(data), "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				return strings.TrimSpace(v)
			}
		}
	}
	return runtime.GOARCH
}

// Tensor is rows × cols float32 values, row-major.
type Tensor struct {
	cols, rows, capRows int
	d                   []float32
}

func (t *Tensor) Cols() int { return t.cols }
func (t *Tensor) Rows() int { return t.rows }
func (t *Tensor) SetRows(n int) {
	if n < 1 || n > t.capRows {
		panic(fmt.Sprintf("cpu: SetRows(%d) outside 1..%d", n, t.capRows))
	}
	t.rows = n
}

// data returns the live values.
func (t *Tensor) data() []float32 { return t.d[:t.rows*t.cols] }
func (t *Tensor) row(i int) []float32 {
	return t.d[i*t.cols : (i+1)*t.cols : (i+1)*t.cols]
}

func (b *Backend) NewTensor(cols, rows int) ml.Tensor {
	return &Tensor{cols: cols, rows: rows, capRows: rows, d: make([]float32, cols*rows)}
}

// Weight is a matrix kept in its file format, or a vector (norm weights)
// dequantized to float32 at load.
type Weight struct {
	m     Matrix
	shape []int64
	vec   []float32
}

func (w *Weight) Type() gguf.Type { return w.m.Type }
func (w *Weight) Shape() []int64  { return w.shape }

func (b *Backend) LoadWeight(wd ml.WeightData) (ml.Weight, error) {
	if !quant.Supported(wd.Type) {
		return nil, fmt.Errorf("type %s is not supported on the cpu backend", wd.Type)
	}
	w := &Weight{shape: wd.Shape, m: Matrix{Type: wd.Type, Cols: int(wd.Shape[0]), Rows: 1, Data: wd.Data}}
	if len(wd.Shape) > 1 {
		w.m.Rows = int(wd.Shape[1])
	}
	if len(wd.Shape) == 1 {
		w.vec = make([]float32, wd.Shape[0])
		if err := quant.Dequantize(wd.Type, w.vec, wd.Data); err != nil {
			return nil, err
		}
	}
	return w, nil
}

// Begin sets the batch whose rows the following ops compute.
func (b *Backend) Begin(batch *ml.Batch) {
	b.batch = batch
	b.outGen = b.outGen[:0]
	if batch.Gen != nil {
		for _, r := range batch.Out {
			b.outGen = append(b.outGen, batch.Gen[r])
		}
	}
}

// roles returns the roles of the rows of a tensor of n rows: the batch's
// rows, or its Out rows (the tensors after the final gather). When the two
// counts agree, Out is every row in order, so either reading is the same.
func (b *Backend) roles(n int) []bool {
	switch {
	case b.batch == nil || b.batch.Gen == nil:
		return nil
	case n == b.batch.Rows():
		return b.batch.Gen
	case n == len(b.batch.Out):
		return b.outGen
	}
	panic(fmt.Sprintf("cpu: a tensor of %d rows in a batch of %d rows (%d out)", n, b.batch.Rows(), len(b.batch.Out)))
}

func (b *Backend) MatMul(dst, x ml.Tensor, w ml.Weight) {
	d, xs, ww := dst.(*Tensor), x.(*Tensor), w.(*Weight)
	if !(xs.cols == ww.m.Cols && d.cols == ww.m.Rows && d.rows == xs.rows) {
		panic("cpu: " + fmt.Sprintf("MatMul: W [%d,%d], x [%d,%d], dst [%d,%d]", ww.m.Cols, ww.m.Rows, xs.cols, xs.rows, d.cols, d.rows))
	}
	if b.batch == nil {
		b.pool.MatMul(d.data(), &ww.m, xs.data(), xs.rows) // outside a forward pass (tests)
		return
	}
	b.pool.MatMulRoles(d.data(), &ww.m, xs.data(), xs.rows, b.roles(xs.rows))
}

func (b *Backend) MatMulAdd(dst, resid, x ml.Tensor, w ml.Weight) {
	b.MatMul(dst, x, w)
	d, r := dst.(*Tensor), resid.(*Tensor)
	if !(d.rows == r.rows && d.cols == r.cols) {
		panic("cpu: " + fmt.Sprintf("MatMulAdd: resid shape"))
	}
	vec.add(r.data(), d.data())
}

func (b *Backend) GateUp(dst, x ml.Tensor, gate, up ml.Weight) { b.glu(dst, x, gate, up, false) }

func (b *Backend) GeGLU(dst, x ml.Tensor, gate, up ml.Weight) { b.glu(dst, x, gate, up, true) }

func (b *Backend) glu(dst, x ml.Tensor, gate, up ml.Weight, gelu bool) {
	d := dst.(*Tensor)
	n := d.rows * d.cols
	if cap(b.scratch) < n {
		b.scratch = make([]float32, d.capRows*d.cols)
	}
	u := &b.scratchT
	*u = Tensor{cols: d.cols, rows: d.rows, capRows: d.rows, d: b.scratch[:n]}
	b.MatMul(d, x, gate)
	b.MatMul(u, x, up)
	b.swiglu = swigluTask{g: d.data(), u: u.d, gelu: gelu}
	b.pool.Run(n, &b.swiglu)
}

func (b *Backend) Gather(dst, src ml.Tensor, rows []int32) {
	d, s := dst.(*Tensor), src.(*Tensor)
	if !(d.cols == s.cols && len(rows) == d.rows) {
		panic("cpu: " + fmt.Sprintf("Gather: %d rows into %d", len(rows), d.rows))
	}
	for i, r := range rows {
		copy(d.row(i), s.row(int(r)))
	}
}

func (b *Backend) Argmax(x ml.Tensor, dst []int32) {
	xs := x.(*Tensor)
	for r := 0; r < xs.rows; r++ {
		row := xs.row(r)
		best := 0
		for i, v := range row {
			if v > row[best] {
				best = i
			}
		}
		dst[r] = int32(best)
	}
}

func (b *Backend) TopK(x ml.Tensor, t *ml.TopK) {
	xs := x.(*Tensor)
	ml.TopKRows(t, xs.Rows(), xs.Cols(), xs.row)
}

func (b *Backend) Read(x ml.Tensor, dst []float32) {
	copy(dst, x.(*Tensor).data())
}
