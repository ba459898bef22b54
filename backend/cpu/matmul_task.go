package cpu

import (
	"unsafe"

	"greta/gguf"
	"greta/quant"
)

// simdKernels is set by matmul_simd.go's init when the SIMD build runs on a
// CPU that has the instructions it needs; nil otherwise.
var simdKernels *kernels

// simdKernelsNoVNNI is simdKernels without the assembly (VNNI) kernels, for
// tests and benchmarks that compare the two (Pool.noVNNI).
var simdKernelsNoVNNI *kernels

// Tiling. A decode tile is a few rows; a batch tile is a few rows times a
// chunk of vectors, so that a weight row is reused from L1 by every vector
// of the chunk and the chunk's activations from L1/L2 by every row.
const (
	tileRows   = 8  // rows per tile (both cases)
	chunkVecs  = 16 // vectors per chunk in a batch tile
	serialWork = 1 << 16
)

// matmulState is MatMul's reusable task: the operands of the current call,
// the chosen kernels and the scratch that grows to the largest shape seen.
type matmulState struct {
	pool *Pool
	k    *kernels

	y    []float32
	w    *Matrix
	x    []float32
	n    int
	rb   int  // bytes per weight row
	q8   bool // 8-bit activations
	q15  bool // 15-bit activations (K-quants)
	k32  bool // q8 with 32-blocks (Q8_0, Q4_0) rather than 256-blocks
	k4   bool // K4 order
	sums bool // f32 path needs the sums of 32
	rp   bool // q8 K-quants through repacked rows
	vn   bool // q8 K-quants through the VNNI microkernel (gemm.go)
	vq8  bool // q8 Q8_0 through its VNNI microkernel (gemm.go)
	r16  bool // q8 Q8_0, few vectors: gemmQ8R16, the same bits per vector
	v16  bool // q15 through the multi-vector decode kernels (q15RowsV)
	fam  int  // its kernel family

	rpBuf [][]rpK // per worker: tileRows rows of repacked blocks

	xs    []float32 // n × Cols/32 sums of x
	actK  []actK    // n × Cols/256
	act15 []actK15  // n × Cols/256
	act16 []actK16  // n × Cols/256, for q15RowsV (v16)
	act32 []act32   // n × Cols/32

	// The VNNI batch path: token-lane activations (gemm.go; for Q8_0, lq,
	// ld and lb hold lq8, ld and lc8) and, per worker, a tile of unpacked
	// rows, the kernel's output and (Q8_0) the last rows of the matrix
	// padded to the kernel's 3.
	lq     []uint32
	ld, lm []float32
	lb     []int32
	rvBuf  [][]rpV
	outBuf [][]float32
	padBuf [][]byte

	prep prepTask
}

func (s *matmulState) init(p *Pool) {
	s.pool = p
	s.prep.s = s
}

// prepTask quantizes (or sums) the activations of vectors [lo, hi).
type prepTask struct{ s *matmulState }

func (t *prepTask) Do(_, lo, hi int) {
	s := t.s
	c := s.w.Cols
	for j := lo; j < hi; j++ {
		if s.vq8 {
			nb := c / 32
			if j >= s.n {
				toLanes8(s.lq, s.ld, s.lb, nil, j, nb)
				continue
			}
			a := s.act32[j*nb : (j+1)*nb]
			s.k.quantize32(a, s.x[j*c:(j+1)*c])
			toLanes8(s.lq, s.ld, s.lb, a, j, nb)
			continue
		}
		if s.vn {
			nb := c / quant.QK_K
			if j >= s.n { // padding lanes of the last vector
				toLanes(s.lq, s.ld, s.lm, s.lb, nil, j, nb, s.fam)
				continue
			}
			a := s.actK[j*nb : (j+1)*nb]
			s.k.quantizeK(a, s.x[j*c:(j+1)*c], false)
			toLanes(s.lq, s.ld, s.lm, s.lb, a, j, nb, s.fam)
			continue
		}
		x := s.x[j*c : (j+1)*c]
		switch {
		case s.q15:
			a := s.act15[j*c/256 : (j+1)*c/256]
			s.k.quantizeK15(a, x, s.k4)
			if s.v16 {
				toK16(s.act16[j*c/256:(j+1)*c/256], a)
			}
		case s.q8 && s.k32:
			s.k.quantize32(s.act32[j*c/32:(j+1)*c/32], x)
		case s.q8:
			s.k.quantizeK(s.actK[j*c/256:(j+1)*c/256], x, s.k4)
		case s.sums:
			s.k.sums32(s.xs[j*c/32:(j+1)*c/32], x)
		}
	}
}

// matmul computes y = x·Wᵀ for n vectors whose activations are treated as
// mode says.
func (s *matmulState) matmul(p *Pool, y []float32, w *Matrix, x []float32, n int, mode actMode) {
	s.k = &genericKernels
	if simdKernels != nil && !p.Generic {
		s.k = simdKernels
		if p.noVNNI {
			s.k = simdKernelsNoVNNI
		}
	}
	s.y, s.w, s.x, s.n = y, w, x, n
	s.rb = w.Type.RowBytes(w.Cols)
	s.q8, s.q15 = mode == modeQ8, mode == modeQ15
	s.k32 = w.Type == gguf.Q8_0 || w.Type == gguf.Q4_0
	// One arithmetic per (type, mode) whatever n, so that a row's bits
	// never depend on the batch (issue 12): 8-bit K-quants always through
	// the VNNI microkernel where there is one (padding lanes for small n),
	// else always through repacked rows; 15-bit ones always through the
	// decode kernels (q15Rows where set: the multi-vector assembly gives
	// each vector the single-vector bits); 8-bit Q8_0 always through its
	// VNNI microkernel where there is one (padding lanes likewise); the
	// others through the same per-row dot products for every n.
	s.vn = s.q8 && !s.k32 && s.k.gemmV != nil
	s.rp = s.q8 && !s.k32 && !s.vn
	s.vq8 = s.q8 && w.Type == gguf.Q8_0 && s.k.gemmQ8 != nil
	if s.vq8 && n <= q8R16Max && s.k.gemmQ8R16 != nil {
		s.vq8, s.r16 = false, true
	} else {
		s.r16 = false
	}
	if s.vn {
		s.fam = vnniFamily(w.Type)
	}
	s.k4 = s.k.k4[w.Type] && !s.rp && !s.vn
	s.sums = mode == modeF32 && (w.Type == gguf.Q4_K || w.Type == gguf.Q5_K)
	s.v16 = s.q15 && n > 1 && s.k.q15Rows[w.Type] != nil && s.k.q15RowsV[w.Type] != nil
	c := w.Cols
	switch {
	case s.q8 && s.k32:
		s.act32 = grow(s.act32, n*c/32)
	case s.q8:
		s.actK = grow(s.actK, n*c/quant.QK_K)
	case s.q15:
		s.act15 = growAligned(s.act15, n*c/quant.QK_K)
		if s.v16 {
			s.act16 = growAligned(s.act16, n*c/quant.QK_K)
		}
	case s.sums:
		s.xs = grow(s.xs, n*c/32)
	}
	if s.rp {
		if len(s.rpBuf) < p.threads {
			s.rpBuf = make([][]rpK, p.threads)
		}
		for i := range s.rpBuf {
			s.rpBuf[i] = grow(s.rpBuf[i], tileRows*c/quant.QK_K)
		}
	}
	nprep, tile := n, tileRows
	if s.vn {
		nb, nch := c/quant.QK_K, (n+vnniChunk-1)/vnniChunk
		s.lq = grow(s.lq, nch*nb*lqBlock)
		s.ld = grow(s.ld, nch*nb*ldBlock)
		if s.fam == famK4 {
			s.lm = grow(s.lm, nch*nb*lmBlock)
		} else {
			s.lb = grow(s.lb, nch*nb*lbBlock)
		}
		if len(s.rvBuf) < p.threads {
			s.rvBuf = make([][]rpV, p.threads)
			s.outBuf = make([][]float32, p.threads)
		}
		for i := range s.rvBuf {
			s.rvBuf[i] = grow(s.rvBuf[i], vnniTile*nb)
			s.outBuf[i] = grow(s.outBuf[i], vnniRows*4*16)
		}
		nprep, tile = (n+15)/16*16, vnniTile
	}
	if s.vq8 {
		nb, nch := c/32, (n+vnniChunk-1)/vnniChunk
		s.lq = grow(s.lq, nch*nb*lq8Block)
		s.ld = grow(s.ld, nch*nb*ldBlock)
		s.lb = grow(s.lb, nch*nb*lc8Block)
		if len(s.outBuf) < p.threads {
			s.outBuf = make([][]float32, p.threads)
		}
		if len(s.padBuf) < p.threads {
			s.padBuf = make([][]byte, p.threads)
		}
		for i := range s.outBuf {
			s.outBuf[i] = grow(s.outBuf[i], vnniRows*4*16)
			s.padBuf[i] = grow(s.padBuf[i], vnniRows*s.rb)
		}
		nprep, tile = (n+15)/16*16, vnniTile
	}
	if s.r16 {
		if len(s.outBuf) < p.threads {
			s.outBuf = make([][]float32, p.threads)
		}
		if len(s.padBuf) < p.threads {
			s.padBuf = make([][]byte, p.threads)
		}
		for i := range s.outBuf {
			s.outBuf[i] = grow(s.outBuf[i], vnniRows*4*16)
			s.padBuf[i] = grow(s.padBuf[i], 16*s.rb)
		}
		tile = 16
	}
	work := w.Rows * c * n
	if s.q8 || s.q15 || s.sums {
		if n >= 4 && work >= serialWork {
			p.Run(nprep, &s.prep)
		} else {
			s.prep.Do(0, 0, nprep)
		}
	}
	tiles := (w.Rows + tile - 1) / tile
	switch {
	case work < serialWork:
		s.Do(0, 0, tiles)
	case n == 1:
		// A matrix-vector product streams its weights once and the two
		// threads' rates differ by up to 30 % from call to call: guided
		// chunks (long runs first, 16-row ones at the end) end both
		// threads together. Paired decode runs of the TinyLlama model:
		// 4-6 % more tokens/s than four equal chunks per thread.
		p.runGuided(tiles, 2, 2, s)
	default:
		p.Run(tiles, s)
	}
	s.y, s.w, s.x = nil, nil, nil
}

// Do computes the row tiles [lo, hi) for every vector.
func (s *matmulState) Do(wk, lo, hi int) {
	r0, r1 := lo*tileRows, min(hi*tileRows, s.w.Rows)
	rows, cols, rb := s.w.Rows, s.w.Cols, s.rb
	data := s.w.Data
	switch {
	case s.vn:
		s.doVNNI(wk, lo, hi)
	case s.vq8:
		s.doQ8VNNI(wk, lo, hi)
	case s.r16:
		s.doQ8R16(wk, lo, hi)
	case s.q8 && s.k32:
		dot, dot4 := s.k.q832[s.w.Type], s.k.q832x4[s.w.Type]
		nb := cols / 32
		for j0 := 0; j0 < s.n; j0 += chunkVecs {
			j1 := min(j0+chunkVecs, s.n)
			for r := r0; r < r1; r++ {
				row := data[r*rb : (r+1)*rb]
				j := j0
				for ; dot4 != nil && j+4 <= j1; j += 4 {
					s.y[j*rows+r], s.y[(j+1)*rows+r], s.y[(j+2)*rows+r], s.y[(j+3)*rows+r] = dot4(row, s.act32[j*nb:(j+4)*nb], nb)
				}
				for ; j < j1; j++ {
					s.y[j*rows+r] = dot(row, s.act32[j*nb:(j+1)*nb])
				}
			}
		}
	case s.rp:
		nb := cols / quant.QK_K
		buf := s.rpBuf[wk]
		for t := lo; t < hi; t++ {
			t0, t1 := t*tileRows, min((t+1)*tileRows, rows)
			for r := t0; r < t1; r++ {
				s.k.repack(s.w.Type, buf[(r-t0)*nb:(r-t0+1)*nb], data[r*rb:(r+1)*rb])
			}
			for j0 := 0; j0 < s.n; j0 += chunkVecs {
				j1 := min(j0+chunkVecs, s.n)
				for r := t0; r < t1; r++ {
					rp := buf[(r-t0)*nb : (r-t0+1)*nb]
					j := j0
					for ; j+2 <= j1; j += 2 {
						s.y[j*rows+r], s.y[(j+1)*rows+r] = s.k.dotRp2(rp, s.actK[j*nb:(j+1)*nb], s.actK[(j+1)*nb:(j+2)*nb])
					}
					if j < j1 {
						s.y[j*rows+r] = s.k.dotRp(rp, s.actK[j*nb:(j+1)*nb])
					}
				}
			}
		}
	case s.v16:
		// Many generated rows (decode of many sequences): each tile's
		// weights decoded once per group of up to 4 vectors, and read
		// from L1/L2 after the first group; a last single vector through
		// q15Rows (the same bits).
		f, f1 := s.k.q15RowsV[s.w.Type], s.k.q15Rows[s.w.Type]
		nb := cols / quant.QK_K
		for t := lo; t < hi; t++ {
			t0, t1 := t*tileRows, min((t+1)*tileRows, rows)
			for j := 0; j < s.n; j += 4 {
				if nv := min(4, s.n-j); nv > 1 {
					f(s.y[j*rows+t0:], rows, t1-t0, data[t0*rb:t1*rb], rb, s.act16[j*nb:], nb, nv)
				} else {
					f1(s.y[j*rows+t0:j*rows+t1], data[t0*rb:t1*rb], rb, s.act15[j*nb:(j+1)*nb])
				}
			}
		}
	case s.q15 && s.k.q15Rows[s.w.Type] != nil:
		f := s.k.q15Rows[s.w.Type]
		nb := cols / quant.QK_K
		for j := 0; j < s.n; j++ {
			f(s.y[j*rows+r0:j*rows+r1], data[r0*rb:r1*rb], rb, s.act15[j*nb:(j+1)*nb])
		}
	case s.q15:
		dot := s.k.q15K[s.w.Type]
		nb := cols / quant.QK_K
		for j0 := 0; j0 < s.n; j0 += chunkVecs {
			j1 := min(j0+chunkVecs, s.n)
			for r := r0; r < r1; r++ {
				row := data[r*rb : (r+1)*rb]
				for j := j0; j < j1; j++ {
					s.y[j*rows+r] = dot(row, s.act15[j*nb:(j+1)*nb])
				}
			}
		}
	case s.q8:
		dot := s.k.q8K[s.w.Type]
		nb := cols / quant.QK_K
		for j0 := 0; j0 < s.n; j0 += chunkVecs {
			j1 := min(j0+chunkVecs, s.n)
			for r := r0; r < r1; r++ {
				row := data[r*rb : (r+1)*rb]
				for j := j0; j < j1; j++ {
					s.y[j*rows+r] = dot(row, s.actK[j*nb:(j+1)*nb])
				}
			}
		}
	case s.k.f32Rows[s.w.Type] != nil && !s.sums:
		f := s.k.f32Rows[s.w.Type]
		for j := 0; j < s.n; j++ {
			f(s.y[j*rows+r0:j*rows+r1], data[r0*rb:r1*rb], rb, s.x[j*cols:(j+1)*cols])
		}
	default:
		dot := s.k.f32[s.w.Type]
		ns := cols / 32
		var xs []float32
		for j0 := 0; j0 < s.n; j0 += chunkVecs {
			j1 := min(j0+chunkVecs, s.n)
			for r := r0; r < r1; r++ {
				row := data[r*rb : (r+1)*rb]
				for j := j0; j < j1; j++ {
					if s.sums {
						xs = s.xs[j*ns : (j+1)*ns]
					}
					s.y[j*rows+r] = dot(row, s.x[j*cols:(j+1)*cols], xs)
				}
			}
		}
	}
}

func grow[T any](s []T, n int) []T {
	if cap(s) < n {
		return make([]T, n)
	}
	return s[:n]
}

// doVNNI computes the row tiles [lo, hi) (vnniTile rows each) of the VNNI
// batch path: unpack the tile's rows, then run the kernel on each group of
// 3 rows and chunk of 64 tokens, and scatter its output into y.
func (s *matmulState) doVNNI(wk, lo, hi int) {
	rows, cols, rb := s.w.Rows, s.w.Cols, s.rb
	nb := cols / quant.QK_K
	buf, out := s.rvBuf[wk], s.outBuf[wk]
	for t := lo; t < hi; t++ {
		t0, t1 := t*vnniTile, min((t+1)*vnniTile, rows)
		for r := t0; r < t1; r++ {
			s.k.repackV(s.w.Type, buf[(r-t0)*nb:(r-t0+1)*nb], s.w.Data[r*rb:(r+1)*rb])
		}
		for r := t1; r < t0+(t1-t0+vnniRows-1)/vnniRows*vnniRows; r++ {
			clear(buf[(r-t0)*nb : (r-t0+1)*nb])
		}
		for c := 0; c*vnniChunk < s.n; c++ {
			T := min(4, (s.n-c*vnniChunk+15)/16)
			cb := c * nb
			var lm []float32
			var lb []int32
			if s.fam == famK4 {
				lm = s.lm[cb*lmBlock:]
			} else {
				lb = s.lb[cb*lbBlock:]
			}
			for g := t0; g < t1; g += vnniRows {
				o := out[:vnniRows*T*16]
				clear(o)
				s.k.gemmV(s.fam, T, o, buf[(g-t0)*nb:], nb, s.lq[cb*lqBlock:], s.ld[cb*ldBlock:], lm, lb, nb)
				s.scatter(o, T, c, g, min(vnniRows, t1-g))
			}
		}
	}
}

// doQ8VNNI computes the row tiles [lo, hi) (vnniTile rows each) of the
// Q8_0 batch path: the kernel on each group of 3 raw rows (the matrix's
// last rows copied and padded with zero rows) and chunk of 64 tokens.
func (s *matmulState) doQ8VNNI(wk, lo, hi int) {
	rows, rb := s.w.Rows, s.rb
	nb := s.w.Cols / 32
	out, pad := s.outBuf[wk], s.padBuf[wk]
	for t := lo; t < hi; t++ {
		t0, t1 := t*vnniTile, min((t+1)*vnniTile, rows)
		for c := 0; c*vnniChunk < s.n; c++ {
			T := min(4, (s.n-c*vnniChunk+15)/16)
			cb := c * nb
			for g := t0; g < t1; g += vnniRows {
				nr := min(vnniRows, t1-g)
				w := s.w.Data[g*rb:]
				if nr < vnniRows {
					copy(pad, w[:nr*rb])
					clear(pad[nr*rb:])
					w = pad
				}
				o := out[:vnniRows*T*16]
				clear(o)
				s.k.gemmQ8(T, o, w, rb, s.lq[cb*lq8Block:], s.ld[cb*ldBlock:], s.lb[cb*lc8Block:], nb)
				s.scatter(o, T, c, g, nr)
			}
		}
	}
}

// q8R16Max is the most vectors the Q8_0 batch path multiplies one at a
// time with gemmQ8R16 (16 rows per call, no empty lanes) rather than in
// the lanes of gemmQ8T1 (3 rows per call).
const q8R16Max = 2

// doQ8R16 computes the row tiles [lo, hi) (16 rows each; the matrix's last
// rows copied and padded with zero rows) for each vector with gemmQ8R16.
func (s *matmulState) doQ8R16(wk, lo, hi int) {
	rows, rb := s.w.Rows, s.rb
	nb := s.w.Cols / 32
	out, pad := s.outBuf[wk][:16], s.padBuf[wk]
	for t := lo; t < hi; t++ {
		t0, t1 := t*16, min((t+1)*16, rows)
		w := s.w.Data[t0*rb:]
		if t1-t0 < 16 {
			copy(pad, w[:(t1-t0)*rb])
			clear(pad[(t1-t0)*rb:])
			w = pad
		}
		for j := range s.n {
			s.k.gemmQ8R16(out, w, rb, s.act32[j*nb:(j+1)*nb])
			copy(s.y[j*rows+t0:j*rows+t1], out)
		}
	}
}

// scatter writes the kernel output o (3 rows × T vectors of 16 lanes, of
// chunk c) for the nr rows from g into y.
func (s *matmulState) scatter(o []float32, T, c, g, nr int) {
	rows := s.w.Rows
	for tv := range T {
		j0 := c*vnniChunk + tv*16
		o0 := (*[16]float32)(o[(0*T+tv)*16:])
		o1 := (*[16]float32)(o[(1*T+tv)*16:])
		o2 := (*[16]float32)(o[(2*T+tv)*16:])
		nl := min(16, s.n-j0)
		if nr == vnniRows {
			for lane := range nl {
				dst := s.y[(j0+lane)*rows+g:]
				dst = dst[:3:3]
				dst[0], dst[1], dst[2] = o0[lane], o1[lane], o2[lane]
			}
			continue
		}
		for lane := range nl {
			dst := s.y[(j0+lane)*rows+g:][:nr]
			dst[0] = o0[lane]
			if nr > 1 {
				dst[1] = o1[lane]
			}
		}
	}
}

// growAligned is grow for blocks whose size is a multiple of 64 bytes: the
// slice it returns starts on a 64-byte boundary, so that the kernels'
// vector loads never straddle cache lines. T must hold no pointers.
func growAligned[T any](s []T, n int) []T {
	if cap(s) >= n {
		return s[:n]
	}
	var z T
	size := int(unsafe.Sizeof(z))
	buf := make([]byte, n*size+63)
	off := (64 - int(uintptr(unsafe.Pointer(&buf[0]))%64)) % 64
	return unsafe.Slice((*T)(unsafe.Pointer(&buf[off])), n)
}
