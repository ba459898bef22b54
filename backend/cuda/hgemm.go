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
			// 128 weight rows a block. hgemm_n64 (64, the same
			// arithmetic) was picked for grids that would not give every
			// SM two blocks, and measured slower on the H200 (pp512 5,468
			// against 6,847, pp4096 5,897 against 6,906 tok/s, a lease
			// apart; llama.cpp's pp4096 the same in both): tests only.
			name, bn := "hgemm", 128
			if b.hgemmBN == 64 {
				name, bn = "hgemm_n64", 64
			}
			b.launch(name, [3]int{ceilDiv(cr, bn), ceilDiv(n, hgemmBM), 1}, 2*bn, hgemmSmem(bn),
				args{}.p(x16).p(w16).p(y+devPtr(4*r0)).p(rp).i(n).i(cr).i(cols).i(w.rows), fmt.Sprintf("%s %s, %d prompt rows", name, w.name, n))
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
