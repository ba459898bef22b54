package cuda

import "fmt"

// The layers' products of prompt rows on the tensor cores in f16
// (kernels/hgemm.cu). Prompt rows have numerics of their own, as on the
// CPU: Begin notes the batch's runs of prompt rows (ml.Batch.Gen false),
// MatMul and GateUp ops of the layers record them (o.hruns), and the
// lowering splits such an op by rows: the prompt runs through hprep, deq_*
// and hgemm, the generated rows through the decode kernels as before. A
// prompt row's bits depend only on the row (hgemm.cu says why); a
// generated row's are what they were. After the head's Gather (the output
// projection), every row takes the decode kernels: the logits of a
// prompt's last row do not depend on how many rows want logits.
//
// GRETA_CUDA_HGEMM=0 turns this off: prompt rows then take the decode
// kernels' numerics too (the exact mode of device-verify.sh).

const hgemmBM = 128 // HG_BM

// hgemmSmem is the shared memory of an hgemm block of bn weight rows:
// HG_ST stages of (HG_BM + bn) rows of HG_LD halves.
func hgemmSmem(bn int) int { return 3 * (hgemmBM + bn) * 40 * 2 }

// hgemmVariant is a tiling of kernels/hgemm.cu's hgemm_tile (one
// HGEMM_VARIANT line): bm x rows by bn weight rows a block, wm by wn
// warps, k tiles of bk halves in st stages, fb fragment buffers. Every
// variant gives the reference hgemm's bits (hgemm.cu says why).
type hgemmVariant struct{ bm, bn, wm, wn, bk, st, fb int }

func (v hgemmVariant) name() string {
	return fmt.Sprintf("hgemm_%dx%d_w%dx%d_k%d_s%d_f%d", v.bm, v.bn, v.wm, v.wn, v.bk, v.st, v.fb)
}
func (v hgemmVariant) threads() int { return 32 * v.wm * v.wn }
func (v hgemmVariant) smem() int    { return v.st * (v.bm + v.bn) * (v.bk + 8) * 2 }

// hgemmVariants are the compiled tilings, in HGEMM_VARIANT's order.
var hgemmVariants = []hgemmVariant{
	{128, 256, 2, 4, 32, 4, 2}, // warps of 64x64
	{256, 128, 4, 2, 32, 4, 2},
	{128, 256, 2, 4, 64, 3, 2},
	{128, 128, 2, 2, 32, 4, 2}, // 4 warps of 64x64
	{128, 128, 2, 2, 64, 3, 2},
	{128, 128, 2, 4, 32, 4, 1}, // the reference's warps of 64x32, one more stage
	{128, 128, 2, 4, 64, 3, 1},
	{64, 128, 2, 2, 32, 4, 2}, // warps of 32x64, for small grids
}

// hgemmKernel returns the launch shape of the hgemm kernel called name:
// "hgemm" (the reference tiling), "hgemm_n64", or a variant's name.
func hgemmKernel(name string) (bm, bn, threads, smem int, ok bool) {
	switch name {
	case "hgemm":
		return hgemmBM, 128, 256, hgemmSmem(128), true
	case "hgemm_n64":
		return hgemmBM, 64, 128, hgemmSmem(64), true
	}
	for _, v := range hgemmVariants {
		if v.name() == name {
			return v.bm, v.bn, v.threads(), v.smem(), true
		}
	}
	return 0, 0, 0, 0, false
}

// hgemmNames are every hgemm kernel: the reference, hgemm_n64, the variants.
func hgemmNames() []string {
	names := []string{"hgemm", "hgemm_n64"}
	for _, v := range hgemmVariants {
		names = append(names, v.name())
	}
	return names
}

// hgemmPick is the hgemm kernel for n x rows and r weight rows (the
// measured table needs no more of the shape). The tiling changes no bit, only the time. The table comes
// from TestHGemmTime on the H200 (docs/BENCHMARKS.md, 2026-12-02 12:35):
// at the Llama-3-8B shapes the wide products (gate, up: 14336 rows) are
// fastest in 128x256 blocks with k tiles of 64 (236.6 µs at 512 x rows,
// 850.3 at 2048, against 280.3 and 968.0 for the first kernel); the small
// ones at 512 rows (k, v: 1024 rows) in 64x128 blocks (73.8 against 83.6);
// the rest in 128x128 blocks of 8 warps with k tiles of 64 (q, o and down
// at 512 rows: 77.8 and 263.2 against 88.4 and 290.1; within 6 % of the
// best at 2048). A variant needing more shared memory than the device
// gives a block falls back to the reference.
func (b *Backend) hgemmPick(n, r int) string {
	name := hgemmPickFor(n, r)
	if _, _, _, smem, _ := hgemmKernel(name); smem > b.maxSmem {
		return "hgemm"
	}
	return name
}

func hgemmPickFor(n, r int) string {
	switch {
	case r >= 8192:
		return "hgemm_128x256_w2x4_k64_s3_f2"
	case n <= 1024 && r <= 1024:
		return "hgemm_64x128_w2x2_k32_s4_f2"
	default:
		return "hgemm_128x128_w2x4_k64_s3_f1"
	}
}

// hgemmLaunch runs the hgemm kernel name (hgemmKernel) over n rows of x16
// ([n][k] f16) and r rows of w16 ([r][k] f16) into y ([n][ldy] float),
// adding to resid ([n][ldy], or 0) as well.
func (b *Backend) hgemmLaunch(name string, x16, w16, y, resid devPtr, n, r, k, ldy int, what string) {
	bm, bn, threads, smem, ok := hgemmKernel(name)
	if !ok {
		panic("cuda: no hgemm kernel " + name)
	}
	b.launch(name, [3]int{ceilDiv(r, bn), ceilDiv(n, bm), 1}, threads, smem,
		args{}.p(x16).p(w16).p(y).p(resid).i(n).i(r).i(k).i(ldy), what)
}

// hgemmFormats are the weight formats whose rows dequantize exactly to f16.
var hgemmFormats = map[string]bool{"q4_k": true, "q5_k": true, "q6_k": true, "q8_0": true, "q4_0": true, "f16": true}

func (b *Backend) hgemmFits(w *Weight) bool {
	return hgemmFormats[w.kfmt] && w.cols%32 == 0 && w.cols >= 32
}

// promptRuns returns the runs [r0, r1) of the batch's prompt rows, or nil
// when there are none (decode steps allocate nothing).
func promptRuns(gen func(int) bool, n int) [][2]int {
	var runs [][2]int
	for i := 0; i < n; {
		if gen(i) {
			i++
			continue
		}
		j := i
		for j < n && !gen(j) {
			j++
		}
		runs = append(runs, [2]int{i, j})
		i = j
	}
	return runs
}

// opRuns is what a MatMul or GateUp op about to be queued records: the
// batch's prompt runs when its rows are the batch's rows (a layer's
// product, not the output projection after the head's Gather) and every
// weight has an f16 form.
func (b *Backend) opRuns(o *op) [][2]int {
	if !b.HGemm || b.hruns == nil || b.pastHead || o.rows != b.batRows {
		return nil
	}
	for i := 0; i < o.nw; i++ {
		if !b.hgemmFits(o.w[i]) {
			return nil
		}
	}
	return b.hruns
}

// view is rows r0..r0+n of t (float32 rows).
func (t *Tensor) view(r0, n int) *Tensor {
	if t == nil {
		return nil
	}
	return &Tensor{ptr: t.ptr + devPtr(4*r0*t.cols), cols: t.cols, rows: n, capRows: n}
}

// sub is the op over its rows r0..r1 only, without prompt runs.
func (o *op) sub(r0, r1 int) *op {
	s := *o
	s.hruns = nil
	s.rows = r1 - r0
	s.x = o.x.view(r0, s.rows)
	for i := range s.y {
		s.y[i] = o.y[i].view(r0, s.rows)
	}
	s.resid = o.resid.view(r0, s.rows)
	s.normX = o.normX.view(r0, s.rows)
	return &s
}

// parts calls f for each run of the op's rows with one role, in order.
func (o *op) parts(f func(s *op, prompt bool)) {
	prev := 0
	for _, r := range o.hruns {
		if r[0] > prev {
			f(o.sub(prev, r[0]), false)
		}
		f(o.sub(r[0], r[1]), true)
		prev = r[1]
	}
	if prev < o.rows {
		f(o.sub(prev, o.rows), false)
	}
}

// prepareF16 sizes the scratch of an op through an f16 GEMM (hgemm, or
// cuBLAS): x in f16, a chunk of dequantized weight rows, and SwiGLU's up
// product.
func (b *Backend) prepareF16(o *op) {
	w := o.w[0]
	b.scratchBuf("x16", uint64(2*o.rows*w.cols))
	b.scratchBuf("w16", uint64(2*b.gemmChunk(w)*w.cols))
	if o.kind == opGateUp {
		b.scratchBuf("up", uint64(4*o.rows*w.rows))
	}
}

// lowerHGemm launches the products of an op whose rows are all prompt rows.
func (b *Backend) lowerHGemm(o *op) {
	w0 := o.w[0]
	n, cols := o.rows, w0.cols
	x16 := b.scratchBuf("x16", uint64(2*n*cols))
	src, normw, xb := o.x.ptr, devPtr(0), devPtr(0)
	if o.normW != nil {
		src, normw, xb = o.normX.ptr, o.normW.ptr, o.x.ptr
	}
	b.launch("hprep", [3]int{n, 1, 1}, 256, 0, args{}.p(src).p(normw).p(xb).p(x16).i(n).i(cols).f(float64(o.eps)), "prompt rows to f16 for "+w0.name)
	gemm := func(w *Weight, y, resid devPtr) {
		chunk := b.gemmChunk(w)
		w16 := b.scratchBuf("w16", uint64(2*chunk*cols))
		u := unitOf[w.kfmt]
		for r0 := 0; r0 < w.rows; r0 += chunk {
			cr := min(chunk, w.rows-r0)
			b.launch("deq_"+w.kfmt, [3]int{ceilDiv(cols/u, deqThreads), min(cr, maxGridY), 1}, deqThreads, 0,
				args{}.p(w.ptr).i(w.rows).i(cols).p(w16).i(r0).i(cr).p(0).i(1), "dequantize to f16 "+w.name)
			var rp devPtr
			if resid != 0 {
				rp = resid + devPtr(4*r0)
			}
			// The kernel by the shape (hgemmPick), or the one a test
			// forces (hgemmKern). hgemm_n64 (64 weight rows, the reference's
			// arithmetic) measured slower than hgemm on the H200 (pp512
			// 5,468 against 6,847, pp4096 5,897 against 6,906 tok/s, a
			// lease apart): tests only.
			name := b.hgemmKern
			if name == "" {
				name = b.hgemmPick(n, cr)
			}
			b.hgemmLaunch(name, x16, w16, y+devPtr(4*r0), rp, n, cr, cols, w.rows, fmt.Sprintf("%s %s, %d prompt rows", name, w.name, n))
		}
	}
	if o.kind == opGateUp {
		total := n * w0.rows
		up := b.scratchBuf("up", uint64(4*total))
		d := o.y[0].ptr
		gemm(o.w[0], d, 0)
		gemm(o.w[1], up, 0)
		b.launch("silu_mul", [3]int{ceilDiv(total, eltThreads), 1, 1}, eltThreads, 0, args{}.p(d).p(up).p(d).i(total), "swiglu "+w0.name)
		return
	}
	for i := 0; i < o.nw; i++ {
		var resid devPtr
		if o.nw == 1 && o.resid != nil {
			resid = o.resid.ptr
		}
		gemm(o.w[i], o.y[i].ptr, resid)
	}
}
