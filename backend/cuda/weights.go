package cuda

import (
	"fmt"
	"math"
	"runtime"
	"sync"

	"greta/gguf"
	"greta/ml"
	"greta/quant"
)

// Tensor is an activation: capRows × cols float32 on the device, row-major,
// of which the first rows are live.
type Tensor struct {
	ptr                 devPtr
	cols, rows, capRows int
}

func (t *Tensor) Cols() int { return t.cols }
func (t *Tensor) Rows() int { return t.rows }
func (t *Tensor) SetRows(n int) {
	if n < 1 || n > t.capRows {
		panic(fmt.Sprintf("cuda: SetRows(%d) outside 1..%d", n, t.capRows))
	}
	t.rows = n
}

// NewTensor allocates an activation buffer, poisoned with NaN so that a
// value no kernel wrote cannot pass for a result.
func (b *Backend) NewTensor(cols, rows int) ml.Tensor {
	if cols < 1 || rows < 1 {
		panic(fmt.Sprintf("cuda: NewTensor(%d, %d)", cols, rows))
	}
	b.enter()
	defer b.exit()
	n := uint64(cols) * uint64(rows)
	p, err := b.alloc(4*n, fmt.Sprintf("an activation buffer [%d × %d]", cols, rows))
	if err != nil {
		panic(err.Error())
	}
	if err := b.d.MemsetD32Async(p, 0x7fc00000, n, b.stream); err != nil {
		b.fatal("NewTensor", err)
	}
	return &Tensor{ptr: p, cols: cols, rows: rows, capRows: rows}
}

// Weight is a model tensor on the device: a matrix in its format's device
// layout (kernels/formats.cuh), or a vector as float32.
type Weight struct {
	typ   gguf.Type
	shape []int64
	name  string
	ptr   devPtr
	rows  int    // output rows (GGUF shape[1..] multiplied)
	cols  int    // values per row (GGUF shape[0])
	kfmt  string // kernel format suffix: q4_k, f16s, ...
	bytes uint64
}

func (w *Weight) Type() gguf.Type { return w.typ }
func (w *Weight) Shape() []int64  { return w.shape }

// kernelFormat picks the kernels for a tensor of type t with cols values a
// row; "" means: dequantize to float32 at load.
func kernelFormat(t gguf.Type, cols int) string {
	switch t {
	case gguf.Q4_K:
		return "q4_k"
	case gguf.Q5_K:
		return "q5_k"
	case gguf.Q6_K:
		return "q6_k"
	case gguf.Q8_0:
		return "q8_0"
	case gguf.Q4_0:
		return "q4_0"
	case gguf.F16:
		if cols%8 == 0 {
			return "f16"
		}
		return "f16s"
	case gguf.BF16:
		if cols%8 == 0 {
			return "bf16"
		}
		return "bf16s"
	case gguf.F32:
		if cols%4 == 0 {
			return "f32"
		}
		return "f32s"
	}
	return ""
}

// LoadWeight uploads a tensor, synchronously: when it returns, the host
// bytes may go. Vectors (norm weights) become float32; Q8_0, Q4_0 and Q6_K
// are split into aligned planes (kernels/formats.cuh); other formats upload
// as they are.
func (b *Backend) LoadWeight(wd ml.WeightData) (ml.Weight, error) {
	if !quant.Supported(wd.Type) {
		return nil, fmt.Errorf("type %s is not supported", wd.Type)
	}
	if len(wd.Shape) == 0 || wd.Shape[0] < 1 {
		return nil, fmt.Errorf("shape %v: expected at least one dimension", wd.Shape)
	}
	cols := int(wd.Shape[0])
	rows := 1
	for _, d := range wd.Shape[1:] {
		rows *= int(d)
	}
	if cols%wd.Type.BlockSize() != 0 {
		return nil, fmt.Errorf("shape %v: rows of %d values are not whole %s blocks", wd.Shape, cols, wd.Type)
	}
	rb := wd.Type.RowBytes(cols)
	if len(wd.Data) < rows*rb {
		return nil, fmt.Errorf("%d bytes of data, expected %d", len(wd.Data), rows*rb)
	}
	data := wd.Data[:rows*rb]
	w := &Weight{typ: wd.Type, shape: wd.Shape, name: wd.Name, rows: rows, cols: cols}
	w.kfmt = kernelFormat(wd.Type, cols)
	if rows == 1 || w.kfmt == "" {
		// Vectors and formats without kernels: float32.
		f := make([]float32, rows*cols)
		if err := quant.Dequantize(wd.Type, f, data); err != nil {
			return nil, err
		}
		data = f32Bytes(f)
		w.kfmt = kernelFormat(gguf.F32, cols)
	} else {
		data = repack(wd.Type, data, rows*cols/wd.Type.BlockSize())
	}
	b.enter()
	defer b.exit()
	var err error
	if w.ptr, err = b.alloc(uint64(len(data)), fmt.Sprintf("tensor %s (%s)", wd.Name, gib(uint64(len(data))))); err != nil {
		return nil, err
	}
	if err := b.d.MemcpyHtoD(w.ptr, data); err != nil {
		b.free(w.ptr)
		return nil, err
	}
	w.bytes = uint64(len(data))
	return w, nil
}

// repack turns nb blocks of Q8_0, Q4_0 or Q6_K into the planes the
// kernels read; other formats are returned as they are.
func repack(t gguf.Type, src []byte, nb int) []byte {
	var qs, scales, dOff, sOff int // bytes per block of the first two planes; where d and scales sit in a block
	switch t {
	case gguf.Q8_0:
		qs, dOff = 32, 0
	case gguf.Q4_0:
		qs, dOff = 16, 0
	case gguf.Q6_K:
		qs, scales, sOff, dOff = 192, 16, quant.Q6_KOffScales, quant.Q6_KOffD
	default:
		return src
	}
	ts := t.TypeSize()
	// 16 bytes past the d plane: the GEMM copies d values four bytes at a
	// time (kernels/gemm.cu), which may reach two bytes beyond the last.
	out := make([]byte, len(src)+16)
	pB := nb * qs
	pC := nb * (qs + scales)
	parallelChunks(nb, func(lo, hi int) {
		for i := lo; i < hi; i++ {
			blk := src[i*ts : (i+1)*ts]
			switch t {
			case gguf.Q6_K:
				copy(out[i*qs:(i+1)*qs], blk[:qs])
				copy(out[pB+i*scales:pB+(i+1)*scales], blk[sOff:sOff+scales])
			default: // d first, then the quants
				copy(out[i*qs:(i+1)*qs], blk[2:2+qs])
			}
			out[pC+2*i], out[pC+2*i+1] = blk[dOff], blk[dOff+1]
		}
	})
	return out
}

func parallelChunks(n int, f func(lo, hi int)) {
	workers := min(runtime.GOMAXPROCS(0), max(1, n/4096))
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		lo, hi := n*w/workers, n*(w+1)/workers
		wg.Add(1)
		go func() { defer wg.Done(); f(lo, hi) }()
	}
	wg.Wait()
}

func f32Bytes(f []float32) []byte {
	out := make([]byte, 4*len(f))
	for i, v := range f {
		u := math.Float32bits(v)
		out[4*i], out[4*i+1], out[4*i+2], out[4*i+3] = byte(u), byte(u>>8), byte(u>>16), byte(u>>24)
	}
	return out
}

// KVCache is a pool of pages of ml.PageSize positions holding keys and
// values of every layer, f16 (or float32): k, v [layers][slots][kvDim],
// where position t of a sequence is slot page·16 + t%16 and page is entry
// t/16 of the sequence's page table (kernels/common.cuh kv_slot).
type KVCache struct {
	k, v               devPtr
	layers, ctx, kvDim int
	esz                int // bytes a value: 2 (f16) or 4 (f32)
	spec               ml.KVSpec
}

func (c *KVCache) Spec() ml.KVSpec { return c.spec }

// pages is the number of pages of ml.PageSize positions the pool holds.
func (c *KVCache) pages() int { return c.ctx / ml.PageSize }

// kv32 is the kernels' flag for a float32 cache.
func (c *KVCache) kv32() int { return c.esz / 4 }

// layer returns the addresses of layer l's keys and values.
func (c *KVCache) layer(l int) (devPtr, devPtr) {
	off := uint64(l) * uint64(c.ctx) * uint64(c.kvDim) * uint64(c.esz)
	return c.k + devPtr(off), c.v + devPtr(off)
}

// NewKVCache preallocates the cache for spec's positions. Out of memory is
// an error that says how much was needed, how much is free, and to try a
// smaller --ctx.
func (b *Backend) NewKVCache(spec ml.KVSpec) (ml.KVCache, error) {
	layers, ctx, kvDim := spec.Layers, spec.Tokens(), spec.KVDim
	if layers < 1 || ctx < 1 || kvDim < 1 {
		return nil, fmt.Errorf("KV cache: %d layers × %d positions × %d", layers, ctx, kvDim)
	}
	b.enter()
	defer b.exit()
	esz, typ := 2, "f16"
	switch {
	case spec.DType == "f32", spec.DType == "" && b.KVF32:
		esz, typ = 4, "f32"
	case spec.DType == "", spec.DType == "f16":
	default:
		return nil, fmt.Errorf("KV cache type %q: expected f16 or f32", spec.DType)
	}
	spec.DType = typ
	half := (uint64(layers)*uint64(ctx)*uint64(kvDim)*uint64(esz) + 3) &^ 3
	free, _ := b.d.MemInfo()
	if 2*half > free {
		_, total := b.d.MemInfo()
		return nil, &OOMError{What: fmt.Sprintf("the KV cache for %d tokens (%d layers × %d values, %s, keys and values)", ctx, layers, kvDim, typ), Need: 2 * half, Free: free, Total: total}
	}
	what := fmt.Sprintf("the KV cache for %d tokens", ctx)
	c := &KVCache{layers: layers, ctx: ctx, kvDim: kvDim, esz: esz, spec: spec}
	var err error
	if c.k, err = b.alloc(half, what); err != nil {
		return nil, err
	}
	if c.v, err = b.alloc(half, what); err != nil {
		b.free(c.k)
		return nil, err
	}
	// Zeroed, so that no read of the cache ever meets uninitialized memory.
	if err := b.d.MemsetD32Async(c.k, 0, half/4, b.stream); err != nil {
		return nil, err
	}
	if err := b.d.MemsetD32Async(c.v, 0, half/4, b.stream); err != nil {
		return nil, err
	}
	return c, nil
}
