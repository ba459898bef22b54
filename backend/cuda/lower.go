package cuda

import (
	"fmt"
	"math"
	"unsafe"

	"greta/ml"
)

// Lowering: each queued op becomes one or a few kernel launches. Every grid
// and bound here comes from the shapes of the tensors and weights involved,
// which the op methods checked against each other when the op was queued.

// unitOf is the values a thread takes per step in each format (UNIT in
// kernels/formats.cuh).
var unitOf = map[string]int{
	"q4_k": 32, "q5_k": 32, "q6_k": 32, "q8_0": 16, "q4_0": 32,
	"f16": 8, "bf16": 8, "f32": 4, "f16s": 1, "bf16s": 1, "f32s": 1,
}

// launch runs kernel name on the stream with the argument struct a.
func (b *Backend) launch(name string, grid [3]int, block, smem int, a args, what string) {
	f, ok := b.fn[name]
	if !ok {
		panic("cuda: no kernel " + name)
	}
	for i, g := range grid {
		if g < 1 || (i == 0 && g > 1<<31-1) || (i > 0 && g > maxGridY) {
			panic(fmt.Sprintf("cuda: %s (%s): grid %v out of range", name, what, grid))
		}
	}
	if len(a) > len(b.argBuf) {
		panic("cuda: too many kernel arguments")
	}
	copy(b.argBuf[:], a)
	b.lastLaunch = name + " (" + what + ")"
	g3, b3 := [3]uint32{uint32(grid[0]), uint32(grid[1]), uint32(grid[2])}, [3]uint32{uint32(block), 1, 1}
	var r cuResult
	if b.PDL && !b.Check && !b.Profile {
		// Every kernel waits for its predecessor itself (pdl_wait in
		// kernels/common.cuh), so it may be launched early.
		r = b.d.LaunchKernelPDL(&b.lcfg, f, g3, b3, uint32(smem), b.stream, unsafe.Pointer(&b.argPtr[0]))
	} else {
		r = b.d.LaunchKernel(f, g3, b3, uint32(smem), b.stream, unsafe.Pointer(&b.argPtr[0]))
	}
	b.Stats.Launches++
	if b.Profile && !b.capturing {
		key := b.profKey
		if key == "" {
			key = name
		}
		b.profMark(key)
	}
	b.profKey = ""
	if r != cuSuccess {
		b.fatal("launch "+b.lastLaunch, b.d.err(r, "cuLaunchKernel"))
	}
	if b.Check {
		if err := b.d.StreamSynchronize(b.stream); err != nil {
			b.fatal("GRETA_CUDA_CHECK: kernel "+b.lastLaunch, err)
		}
	}
}

// gemmRows reports whether a product over rows activation rows goes
// through cuBLAS (UseBLAS only: its kernels depend on the shape, so a
// row's bits would depend on the batch).
func (b *Backend) gemmRows(rows int) bool { return rows > mvMaxRows && b.blasReady() }

// usesBLAS reports whether the op's lowering calls cuBLAS (such runs are
// not captured).
func (o *op) usesBLAS(b *Backend) bool {
	return (o.kind == opMatMul || o.kind == opGateUp) && b.gemmRows(o.rows)
}

// attnPlan is how an attention launch is split: nz blocks along z share a
// row's chunks of attnChunk positions; maxch is the most chunks a row of
// the cache can have. The split only spreads work: a row's result is the
// same for any nz (kernels/attention.cu).
type attnPlan struct {
	name          string // attn_dec_*, attn_gen or fa_dec_*
	per           int    // blocks a row along y: KV heads (attn_dec, fa_dec) or heads (attn_gen)
	nz, maxch     int
	threads, smem int
	split         int // fa_dec: chunks a block (with faDecFill, the least the kernel may take)
	slots         int // fa_dec, faDecFill: blocks of it the GPU holds at once
}

func (b *Backend) planAttn(o *op) attnPlan {
	a := o.attn
	if o.fa {
		// fa_dec: blocks of split chunks (fixed for the launch; a row's
		// bits do not depend on it), about 16 a multiprocessor when every
		// row reaches faCh chunks; the partials' stride is faCh.
		p := attnPlan{name: faDecName(a.HeadDim), per: a.NKVHeads, threads: faThreads, smem: faDecSmem(a.HeadDim), maxch: o.faCh, nz: 1, split: o.faCh}
		if o.faSingle {
			p.split = b.FASplit
			switch {
			case p.split > 0:
			case b.FADecMode&faDecFill != 0:
				// The kernel takes the smallest split from this one up
				// whose blocks fit in one wave for the batch's positions
				// (FA_DEC_FILL). Its longest row has more than faCh/2
				// chunks, so no split below faCh/2·nkv/slots fits.
				p.slots = max(1, b.occupancy(p.name, p.threads, p.smem)) * max(1, b.sms)
				p.split = max(1, o.faCh/2*a.NKVHeads/p.slots)
			default:
				p.split = ceilDiv(o.rows*a.NKVHeads*o.faCh, 16*b.sms)
			}
			p.split = max(min(p.split, o.faCh), ceilDiv(o.faCh, maxGridY))
			p.nz = ceilDiv(o.faCh, p.split)
		}
		return p
	}
	p := attnPlan{maxch: ceilDiv(o.cache.ctx, attnChunk)}
	if name, ok := b.attnDec(o); ok {
		p.name, p.per, p.threads, p.smem = name, a.NKVHeads, attdWarps*32, attnDecSmem(a.HeadDim, a.NHeads/a.NKVHeads)
	} else {
		p.name, p.per, p.threads = "attn_gen", a.NHeads, attgThreads
	}
	// As many blocks along z as fill the GPU about once.
	p.nz = min(p.maxch, max(1, b.sms/max(1, o.rows*p.per)))
	return p
}

// attnScratch returns the partials and counters of a split attention.
func (b *Backend) attnScratch(o *op, p attnPlan) (part, cnt devPtr) {
	if p.nz == 1 {
		return 0, 0
	}
	a := o.attn
	part = b.scratchBuf("attn", uint64(4*o.rows*a.NHeads*p.maxch*(a.HeadDim+2)))
	cnt = b.scratchZeroed("attncnt", uint64(4*o.rows*p.per))
	return part, cnt
}

// prepare makes the scratch buffers the queued ops need before anything is
// launched or captured.
func (b *Backend) prepare() {
	for i := range b.ops {
		o := &b.ops[i]
		switch o.kind {
		case opAttn:
			b.attnScratch(o, b.planAttn(o))
		case opArgmax:
			b.scratchBuf("argmax", uint64(8*o.rows*argmaxBlocks(o.x.cols)))
			b.scratchZeroed("argmaxcnt", uint64(4*o.rows))
		case opMatMul, opGateUp:
			if o.hruns == nil {
				b.prepareMM(o)
				break
			}
			o.parts(func(s *op, prompt bool) {
				if prompt {
					b.prepareF16(s)
				} else {
					b.prepareMM(s)
				}
			})
		}
	}
}

// prepareMM sizes the scratch of a MatMul or GateUp through the decode
// kernels (the GEMM's staged x and partials) or cuBLAS.
func (b *Backend) prepareMM(o *op) {
	if !o.usesBLAS(b) && b.mvsFits(o.w[0]) && o.rows > 1 {
		for _, r := range o.sides() {
			if b.gemmFits(o, r[0]) {
				p := b.planGemm(o, r[0], r[1])
				// Zeroed: the GEMM's MMA tiles read the padding rows
				// n..npad-1, which xstage never writes (their columns are
				// never stored; initcheck flagged the reads).
				b.scratchZeroed("gemmx", uint64(p.xbytes))
				if p.split > 1 {
					b.scratchBuf("gemmpart", uint64(p.partBytes))
				}
			}
		}
	}
	if o.usesBLAS(b) {
		b.prepareF16(o)
	}
}

func (b *Backend) lower(o *op) {
	switch o.kind {
	case opEmbed:
		w, d := o.w[0], o.y[0]
		u := unitOf[w.kfmt]
		b.launch("deq_"+w.kfmt, [3]int{ceilDiv(w.cols/u, deqThreads), min(o.rows, maxGridY), 1}, deqThreads, 0,
			args{}.p(w.ptr).i(w.rows).i(w.cols).p(d.ptr).i(0).i(o.rows).p(b.dynPtr(o.dyn)).i(0), "embed "+w.name)

	case opNorm:
		w, x, d := o.w[0], o.x, o.y[0]
		threads := 1024
		if x.cols < 1024 {
			threads = max(32, ceilDiv(x.cols, 32)*32)
		}
		b.launch("rmsnorm", [3]int{o.rows, 1, 1}, threads, 0,
			args{}.p(x.ptr).p(w.ptr).p(d.ptr).i(o.rows).i(x.cols).f(float64(o.eps)), "rmsnorm "+w.name)

	case opMatMul, opGateUp:
		if o.hruns != nil {
			o.parts(func(s *op, prompt bool) {
				if prompt {
					b.lowerHGemm(s)
				} else {
					b.lowerMM(s)
				}
			})
			return
		}
		b.lowerMM(o)

	case opRope:
		if o.cache != nil {
			b.lowerRopeKV(o)
			return
		}
		x0, x1 := o.rx[0], o.rx[1]
		hd, np := o.rope.headDim, o.rope.n
		h0, h1 := x0.cols/hd, 0
		var p1 devPtr
		ld1 := 0
		if o.nrope == 2 {
			h1, p1, ld1 = x1.cols/hd, x1.ptr, x1.cols
		}
		b.launch(ropeName("rope", o.rope), [3]int{ceilDiv((h0+h1)*np, ropeThreads), min(o.rows, maxGridY), 1}, ropeThreads, 0,
			args{}.p(x0.ptr).i(h0).i(x0.cols).p(p1).i(h1).i(ld1).i(o.rows).i(hd).i(np).p(o.rope.freqs).p(b.batPtr()).f(o.rope.posScale),
			fmt.Sprintf("rope, layer %s", b.layerHint))

	case opAttn:
		b.lowerAttn(o)

	case opCopy:
		d, s := o.y[0], o.x
		n := uint64(4 * d.rows * d.cols)
		b.lastLaunch = "copy rows"
		if err := b.d.MemcpyDtoDAsync(d.ptr, s.ptr+devPtr(4*o.from*s.cols), n, b.stream); err != nil {
			b.fatal("Gather", err)
		}

	case opGather:
		d, s := o.y[0], o.x
		b.launch("gather_rows", [3]int{ceilDiv(d.cols, eltThreads), min(o.rows, maxGridY), 1}, eltThreads, 0,
			args{}.p(s.ptr).p(d.ptr).i(d.cols).i(o.rows).p(b.dynPtr(o.dyn)), "gather")

	case opArgmax:
		x := o.x
		nb := argmaxBlocks(x.cols)
		part := b.scratchBuf("argmax", uint64(8*o.rows*nb))
		cnt := b.scratchZeroed("argmaxcnt", uint64(4*o.rows))
		b.launch("argmax", [3]int{nb, min(o.rows, maxGridY), 1}, 256, 0, args{}.p(x.ptr).i(o.rows).i(x.cols).p(b.resDev).p(part).p(cnt).i(nb), "argmax")

	case opTopK:
		b.launch("topk", [3]int{1, o.rows, 1}, topkThreads, 0,
			args{}.p(o.x.ptr).i(o.x.cols).p(b.dynPtr(o.dyn)).p(b.resDev), fmt.Sprintf("top-k of %d rows", o.rows))

	default:
		b.lowerFamily(o) // family.go
	}
}

// lowerMM launches a MatMul or GateUp whose rows all take the decode
// kernels' numerics. Every row is computed the same way at any row count:
// the staged x kernels (mvs for one row, mvn or the GEMM for many, with
// the same numerics) where the weight's format has them, mv_*_8 otherwise;
// cuBLAS only when switched on.
func (b *Backend) lowerMM(o *op) {
	switch {
	case o.usesBLAS(b):
		b.lowerGEMM(o)
	case !b.mvsFits(o.w[0]):
		for c0 := 0; c0 < o.rows; c0 += mvMaxRows {
			b.lowerMV8(o, c0, min(mvMaxRows, o.rows-c0))
		}
	case o.split > 0 && o.rows == 1 && b.pairFits(o.w[0], o.w[o.split]):
		b.lowerMatvecPair(o)
	case o.split > 0:
		b.lowerStaged(o, 0, o.split, true)
		b.lowerStaged(o, o.split, o.nw, false)
	default:
		b.lowerStaged(o, 0, o.nw, true)
	}
}

// argmaxBlocks is how many blocks scan one row of cols values.
func argmaxBlocks(cols int) int { return max(1, min(64, ceilDiv(cols, 8192))) }

func (w *Weight) rowsOrZero() int {
	if w == nil {
		return 0
	}
	return w.rows
}

// mvsFits reports whether a decode matvec over w can stage its x in shared
// memory (the mvs/gus kernels); otherwise mv_*_1 runs it.
func (b *Backend) mvsFits(w *Weight) bool {
	return runsOf[w.kfmt] > 0 && mvsSmem(w.kfmt, w.cols) <= b.mvsLimit()
}

// mvArgs is the MVArgs (kernels/matvec.cu) of a matvec over the op's
// weights w[i0:i1] (for GateUp: gate and up) for activation rows c0..c0+nx,
// R output rows a group, and the number of groups. xb: this launch writes
// the normalized row of a fused RMSNorm.
func (b *Backend) mvArgs(o *op, i0, i1, R, c0, nx int, xb bool) (args, int) {
	w0 := o.w[i0]
	var rows [3]int
	var ws, ys [3]devPtr
	if o.kind == opGateUp {
		// one output; both weights have its rows
		ws[0], ws[1] = o.w[0].ptr, o.w[1].ptr
		ys[0] = o.y[0].ptr + devPtr(4*c0*w0.rows)
		rows[0] = w0.rows
	} else {
		for i := i0; i < i1; i++ {
			ws[i-i0] = o.w[i].ptr
			ys[i-i0] = o.y[i].ptr + devPtr(4*c0*o.w[i].rows)
			rows[i-i0] = o.w[i].rows
		}
	}
	blk1 := ceilDiv(rows[0], R)
	blk2 := blk1 + ceilDiv(rows[1], R)
	blk3 := blk2 + ceilDiv(rows[2], R)
	a := args{}.p(ws[0]).p(ws[1]).p(ws[2]).p(ys[0]).p(ys[1]).p(ys[2]).i(rows[0]).i(rows[1]).i(rows[2]).i(blk1).i(blk2).i(blk3)
	var resid devPtr
	if o.resid != nil {
		resid = o.resid.ptr + devPtr(4*c0*w0.rows)
	}
	src := o.x.ptr + devPtr(4*c0*w0.cols)
	var normw, xbp devPtr
	if o.normW != nil {
		src, normw = o.normX.ptr+devPtr(4*c0*w0.cols), o.normW.ptr
		if xb {
			xbp = o.x.ptr + devPtr(4*c0*w0.cols)
		}
	}
	return a.p(src).p(resid).i(w0.cols).i(nx).p(normw).p(xbp).f(float64(o.eps)), blk3
}

// lowerStaged launches the staged-x kernels for the op's weights
// w[i0:i1] (one format): mvs for one row, mvn for more (or mvs row by row
// where not even two rows' x fit in shared memory). xb: these launches
// write the normalized rows of a fused RMSNorm.
func (b *Backend) lowerStaged(o *op, i0, i1 int, xb bool) {
	if o.rows == 1 {
		b.lowerMatvec(o, i0, i1, 0, xb)
		return
	}
	if b.gemmFits(o, i0) {
		b.lowerGemmQ(o, i0, i1, xb)
		return
	}
	if nx := b.mvnNX(o.w[i0], o.rows); nx > 0 {
		b.lowerMVN(o, i0, i1, nx, xb)
		return
	}
	for r := 0; r < o.rows; r++ {
		b.lowerMatvec(o, i0, i1, r, xb)
	}
}

// lowerMatvec launches the one-row staged-x kernel (mvs, gus) over the
// op's weights w[i0:i1] for activation row c0.
func (b *Backend) lowerMatvec(o *op, i0, i1, c0 int, xb bool) {
	w0 := o.w[i0]
	gu := o.kind == opGateUp
	nrows := 0
	for i := i0; i < i1; i++ {
		nrows += o.w[i].rows
	}
	// The persistent decode kernels: R rows a warp, W warps a block.
	v := b.mvsVariant(w0.kfmt, nrows, w0.cols, gu)
	name := "mvs_" + w0.kfmt + "_" + v
	if gu {
		name = "gus_" + w0.kfmt + "_" + v
	}
	R, W := variantRW(v)
	threads := 32 * W
	smem := mvsSmem(w0.kfmt, w0.cols)
	a, blk3 := b.mvArgs(o, i0, i1, R, c0, 1, xb)
	what := b.matvecWhat(o)
	// blk3 counts groups; at most as many blocks as fit the GPU at once
	// stride over them, as few as give every warp the same number.
	grid := ceilDiv(blk3, W)
	if occ := b.occupancy(name, threads, smem); occ > 0 && grid > occ*b.sms {
		per := ceilDiv(blk3, occ*b.sms*W) // groups a warp
		grid = ceilDiv(blk3, per*W)
	}
	if gu {
		nrows = w0.rows
	}
	b.profKey = fmt.Sprintf("%s [%d×%d]", name, w0.cols, nrows)
	if o.normW != nil {
		b.profKey += " +norm"
	}
	b.launch(name, [3]int{grid, 1, 1}, threads, smem, a, what)
}

// lowerMV8 launches mv_*_8 (or gu_*_8) for activation rows c0..c0+nx: the
// formats and widths without staged-x kernels, one output row a block.
func (b *Backend) lowerMV8(o *op, c0, nx int) {
	w0 := o.w[0]
	name := "mv_" + w0.kfmt + "_8"
	if o.kind == opGateUp {
		name = "gu_" + w0.kfmt + "_8"
	}
	if o.normW != nil {
		panic("cuda: a fused RMSNorm without a staged-x kernel") // the queue only fuses where mvsFits
	}
	a, blk3 := b.mvArgs(o, 0, o.nw, 1, c0, nx, true)
	b.launch(name, [3]int{blk3, 1, 1}, mvThreads, 0, a, b.matvecWhat(o))
}

// mvnNX is how many activation rows a block of the many-row staged-x
// kernels takes for w and rows rows: the fewest of mvnRows that hold
// them all, or the most that fit in shared memory; 0 if none fits.
func (b *Backend) mvnNX(w *Weight, rows int) int {
	best := 0
	for _, nx := range mvnRows {
		if nx*mvsSmem(w.kfmt, w.cols) > b.mvsLimit() {
			break
		}
		best = nx
		if nx >= rows {
			break
		}
	}
	return best
}

// lowerMVN launches mvn (or gun) over all the op's rows, nx a block along
// y; along x, at most as many blocks as fit the GPU stride over the groups.
func (b *Backend) lowerMVN(o *op, i0, i1, nx int, xb bool) {
	w0 := o.w[i0]
	gu := o.kind == opGateUp
	name := mvnName(w0.kfmt, nx, gu)
	smem := nx * mvsSmem(w0.kfmt, w0.cols)
	a, blk3 := b.mvArgs(o, i0, i1, 1, 0, o.rows, xb)
	gy := ceilDiv(o.rows, nx)
	gx := ceilDiv(blk3, mvnWarps)
	if occ := b.occupancy(name, 32*mvnWarps, smem); occ > 0 {
		if cap := max(1, occ*b.sms/gy); gx > cap {
			per := ceilDiv(blk3, cap*mvnWarps)
			gx = ceilDiv(blk3, per*mvnWarps)
		}
	}
	b.profKey = fmt.Sprintf("%s [%d×%d]", name, w0.cols, w0.rows)
	b.launch(name, [3]int{gx, gy, 1}, 32*mvnWarps, smem, a, b.matvecWhat(o))
}

// matvecWhat names a matvec op's weights for error messages (and notes
// its layer for the launches that name none).
func (b *Backend) matvecWhat(o *op) string {
	what := o.w[0].name
	for i := 1; i < o.nw; i++ {
		what += "+" + o.w[i].name
	}
	if o.normW != nil {
		what = o.normW.name + " → " + what
	}
	if l := layerOf(o.w[0].name); l != "" {
		b.layerHint = l
	}
	return what
}

// lowerMatvecPair launches a pair kernel for a one-row MatMul whose
// weights w[:split] have one format and the rest another. The blocks that
// fit the GPU at once are shared between the two sides by their bytes.
func (b *Backend) lowerMatvecPair(o *op) {
	w0, w1 := o.w[0], o.w[o.split]
	pk, ok := pairKernelFor(w0.kfmt, w1.kfmt)
	if !ok || o.rows != 1 || o.resid != nil {
		panic("cuda: a two-format matvec the queue should not have made")
	}
	r0, _ := variantRW(pk.v0)
	r1, _ := variantRW(pk.v1)
	a0, g0 := b.mvArgs(o, 0, o.split, r0, 0, 1, true)
	a1, g1 := b.mvArgs(o, o.split, o.nw, r1, 0, 1, false)
	name := pk.name()
	const W = 8
	smem := max(mvsSmem(w0.kfmt, w0.cols), mvsSmem(w1.kfmt, w1.cols))
	total := max(2, b.occupancy(name, 32*W, smem)*b.sms)
	var by0, by1 uint64
	for i := 0; i < o.nw; i++ {
		if i < o.split {
			by0 += o.w[i].bytes
		} else {
			by1 += o.w[i].bytes
		}
	}
	nb1 := int(math.Round(float64(total) * float64(by1) / float64(by0+by1)))
	nb1 = max(1, min(total-1, nb1, ceilDiv(g1, W)))
	nb0 := max(1, min(total-nb1, ceilDiv(g0, W)))
	// As few blocks as give every warp of a side the same number of groups.
	nb0 = ceilDiv(g0, ceilDiv(g0, nb0*W)*W)
	nb1 = ceilDiv(g1, ceilDiv(g1, nb1*W)*W)
	what := b.matvecWhat(o)
	b.profKey = fmt.Sprintf("%s [%d×%d]", name, w0.cols, g0*r0+g1*r1)
	a := append(append(a0, a1...), uint64(nb0))
	b.launch(name, [3]int{nb0 + nb1, 1, 1}, 32*W, smem, a, what)
}

func (b *Backend) lowerAttn(o *op) {
	a, c := o.attn, o.cache
	kc, vc := c.layer(o.layer)
	b.layerHint = fmt.Sprint(o.layer)
	kvdim := c.kvDim
	what := fmt.Sprintf("layer %d", o.layer)
	if !o.stored {
		b.launch("kv_store", [3]int{ceilDiv(kvdim, 256), min(o.rows, maxGridY), 1}, 256, 0,
			args{}.p(o.k.ptr).p(o.v.ptr).p(kc).p(vc).i(o.rows).i(kvdim).i(b.batSeqs).p(b.batPtr()).i(c.kv32()), what)
	}
	if o.fa {
		b.lowerFA(o, kc, vc, what)
		return
	}
	p := b.planAttn(o)
	part, cnt := b.attnScratch(o, p)
	// With a rope folded in (o.rope), attn_dec rotates q and the new k and
	// stores k and v itself.
	var rk, rv, rf devPtr
	var rn int
	var rs float64
	if o.rope != nil {
		if p.name == "attn_gen" {
			panic("cuda: a rope folded into an attention without attn_dec") // the queue only folds where attnDec fits
		}
		rk, rv, rf, rn, rs = o.k.ptr, o.v.ptr, o.rope.freqs, o.rope.n, o.rope.posScale
		what += " (with rope)"
	}
	b.launch(p.name, [3]int{o.rows, p.per, p.nz}, p.threads, p.smem,
		args{}.p(o.q.ptr).p(kc).p(vc).p(o.y[0].ptr).p(part).p(b.batPtr()).i(o.rows).i(b.batSeqs).i(a.NHeads).i(a.NKVHeads).i(a.HeadDim).
			i(p.maxch).f(a.Scale).p(cnt).p(rk).p(rv).p(rf).i(rn).f(rs).i(c.kv32()), what)
}

// lowerFA launches the tensor-core attention (kernels/flash.cu): fa_pre
// over the prompt tiles, fa_dec over the rows alone in their sequence
// (with the rope and the KV store folded in, when o.rope is set: then
// every row is such a row).
func (b *Backend) lowerFA(o *op, kc, vc devPtr, what string) {
	a := o.attn
	hd := a.HeadDim
	p := b.planAttn(o)
	part, cnt := b.attnScratch(o, p)
	var rk, rv, rf devPtr
	var rn int
	var rs float64
	if o.rope != nil {
		rk, rv, rf, rn, rs = o.k.ptr, o.v.ptr, o.rope.freqs, o.rope.n, o.rope.posScale
		what += " (with rope)"
	}
	fa := func(tiles devPtr, mixed int) args {
		return args{}.p(o.q.ptr).p(kc).p(vc).p(o.y[0].ptr).p(part).p(b.batPtr()).i(o.rows).i(a.NHeads).i(a.NKVHeads).
			i(p.maxch).f(a.Scale).p(cnt).p(rk).p(rv).p(rf).i(rn).f(rs).p(tiles).i(p.split).i(mixed).
			i(b.FADecMode & faDecAll).i(p.slots)
	}
	if o.faTiles > 0 {
		if o.rope != nil {
			panic("cuda: a rope folded into a prompt attention") // the queue folds only where every sequence has one row
		}
		b.launch(faPreName(hd), [3]int{o.faTiles, a.NKVHeads, 1}, faThreads, faPreSmem(hd), fa(b.dynPtr(o.dyn), 0), what)
	}
	if o.faSingle {
		mixed := 0
		if o.faTiles > 0 {
			mixed = 1
		}
		b.launch(p.name, [3]int{o.rows, a.NKVHeads, p.nz}, faThreads, p.smem, fa(0, mixed), what)
	}
}

// attnDec returns the decode attention kernel for o, if one fits: a head
// size of 64, 128 or 256, and 1, 2, 4 or 8 query heads a KV head.
func (b *Backend) attnDec(o *op) (string, bool) {
	return b.attnDecFor(&o.attn)
}

func (b *Backend) attnDecFor(a *ml.Attn) (string, bool) {
	hd, G := a.HeadDim, a.NHeads/a.NKVHeads
	if hd%32 != 0 || (G != 1 && G != 2 && G != 4 && G != 8) || attnDecSmem(hd, G) > min(b.maxSmem, attnDecSmem(maxHeadDim, 8)) {
		return "", false
	}
	switch hd / 32 {
	case 2, 4, 8:
		return attnDecName(hd/32, G), true
	}
	return "", false
}

// lowerRopeKV launches the rope of q and k fused with the store of k and v
// into the layer's cache.
func (b *Backend) lowerRopeKV(o *op) {
	q, k, c := o.rx[0], o.rx[1], o.cache
	hd, np := o.rope.headDim, o.rope.n
	hq, hk := q.cols/hd, k.cols/hd
	kc, vc := c.layer(o.layer)
	n := hq*np + hk*(hd/2) + hk*hd
	b.launch(ropeName("rope_kv", o.rope), [3]int{ceilDiv(n, ropeThreads), min(o.rows, maxGridY), 1}, ropeThreads, 0,
		args{}.p(q.ptr).i(hq).i(q.cols).p(k.ptr).p(o.v.ptr).i(hk).p(kc).p(vc).i(o.rows).i(hd).i(np).i(b.batSeqs).
			p(o.rope.freqs).p(b.batPtr()).f(o.rope.posScale).i(c.kv32()), fmt.Sprintf("rope and KV store, layer %d", o.layer))
}

// gemmChunk is how many weight rows are dequantized to f16 at a time.
func (b *Backend) gemmChunk(w *Weight) int {
	return max(1, min(w.rows, (256<<20)/(2*w.cols)))
}

// lowerGEMM runs a batch through cuBLAS: x to f16, then for each chunk of
// weight rows a dequantization to f16 and a tensor-core GEMM with float32
// accumulation and output.
func (b *Backend) lowerGEMM(o *op) {
	w := o.w[0]
	n, cols := o.rows, w.cols
	x16 := b.scratchBuf("x16", uint64(2*n*cols))
	b.launch("to_f16", [3]int{ceilDiv(n*cols, eltThreads), 1, 1}, eltThreads, 0, args{}.p(o.x.ptr).p(0).p(x16).i(n*cols), "gemm input "+w.name)
	gemm := func(w *Weight, y devPtr) {
		chunk := b.gemmChunk(w)
		w16 := b.scratchBuf("w16", uint64(2*chunk*cols))
		u := unitOf[w.kfmt]
		for r0 := 0; r0 < w.rows; r0 += chunk {
			cr := min(chunk, w.rows-r0)
			b.launch("deq_"+w.kfmt, [3]int{ceilDiv(cols/u, deqThreads), min(cr, maxGridY), 1}, deqThreads, 0,
				args{}.p(w.ptr).i(w.rows).i(cols).p(w16).i(r0).i(cr).p(0).i(1), "dequantize "+w.name)
			b.lastLaunch = "cublasGemmEx (" + w.name + ")"
			if err := b.blas.gemm(cr, n, cols, w16, x16, y+devPtr(4*r0), w.rows); err != nil {
				b.fatal("GEMM "+w.name, err)
			}
			if b.Check {
				if err := b.d.StreamSynchronize(b.stream); err != nil {
					b.fatal("GRETA_CUDA_CHECK: "+b.lastLaunch, err)
				}
			}
		}
	}
	d := o.y[0]
	total := n * w.rows
	if o.kind == opGateUp {
		up := b.scratchBuf("up", uint64(4*total))
		gemm(o.w[0], d.ptr)
		gemm(o.w[1], up)
		b.launch("silu_mul", [3]int{ceilDiv(total, eltThreads), 1, 1}, eltThreads, 0, args{}.p(d.ptr).p(up).p(d.ptr).i(total), "swiglu "+w.name)
		return
	}
	gemm(w, d.ptr)
	if o.resid != nil {
		b.launch("add_f32", [3]int{ceilDiv(total, eltThreads), 1, 1}, eltThreads, 0, args{}.p(o.resid.ptr).p(d.ptr).p(o.resid.ptr).i(total), "residual "+w.name)
	}
}

// sides are the ranges of the op's weights with one format each: [0, nw),
// or [0, split) and [split, nw).
func (o *op) sides() [][2]int {
	if o.split > 0 {
		return [][2]int{{0, o.split}, {o.split, o.nw}}
	}
	return [][2]int{{0, o.nw}}
}

// gemmFits reports whether the op's product over its weights from w[i]
// goes through the tensor-core GEMM (kernels/gemm.cu): a format it has,
// GemmMin rows or more (twice that for GateUp, where gun stays faster
// longer; the bits are the same either way), and x's staging within shared
// memory.
func (b *Backend) gemmFits(o *op, i int) bool {
	w, rows := o.w[i], o.rows
	min := b.GemmMin
	if o.kind == opGateUp {
		min *= 2
	}
	return b.Gemm && rows >= min && gemmWB[w.kfmt] > 0 && mvsSmem(w.kfmt, w.cols) <= b.mvsLimit() &&
		gemmSmem(w.kfmt) <= b.maxSmem && 3*ceilDiv(w.rows, gemmTO/2) <= maxGridY
}

// gemmPlan is a GEMM launch: npad rows of staged x, the tiles of weight
// rows (t[0], t[1]: where weights 1 and 2 start; t[2] in all), the split
// over classes, and the buffers' sizes.
type gemmPlan struct {
	name              string
	npad, ntn         int
	t                 [3]int
	rows              [3]int
	ptot, split       int
	xbytes, partBytes int
}

func (b *Backend) planGemm(o *op, i0, i1 int) gemmPlan {
	w0 := o.w[i0]
	f := w0.kfmt
	n := o.rows
	p := gemmPlan{name: "gemm_" + f, npad: ceilDiv(n, 8) * 8, ntn: ceilDiv(n, gemmTN)}
	to := gemmTO
	if o.kind == opGateUp {
		p.name, to = "gemmgu_"+f, gemmTO/2
		p.rows[0] = w0.rows
		p.ptot = 2 * w0.rows
	} else {
		for i := i0; i < i1; i++ {
			p.rows[i-i0] = o.w[i].rows
			p.ptot += o.w[i].rows
		}
	}
	p.t[0] = ceilDiv(p.rows[0], to)
	p.t[1] = p.t[0] + ceilDiv(p.rows[1], to)
	p.t[2] = p.t[1] + ceilDiv(p.rows[2], to)
	p.xbytes = gemmXBytes(f, w0.cols, p.npad)
	// Split over classes where the tiles do not fill the GPU: the fewest
	// splits that come within 10% of the best estimate of waves per work.
	blocks := p.t[2] * p.ntn
	occ := max(1, b.occupancy(p.name, 32*gemmWarps, gemmSmem(f)))
	slots := occ * max(1, b.sms)
	cost := func(s int) float64 { return float64(ceilDiv(blocks*s, slots)) / float64(s) }
	p.split = 1
	for s := 2; s <= gemmMaxSplit && p.t[2]*s <= maxGridY; s *= 2 {
		if cost(s) < 0.9*cost(p.split) {
			p.split = s
		}
	}
	if b.gemmSplit > 0 {
		p.split = b.gemmSplit
	}
	p.partBytes = 4 * p.split * n * p.ptot
	return p
}

// lowerGemmQ launches the GEMM over the op's weights w[i0:i1] (one
// format) for all its rows: xstage (x as mvs stages it, the fused norm
// included), the GEMM, and, when split, gemm_fin.
func (b *Backend) lowerGemmQ(o *op, i0, i1 int, xb bool) {
	w0 := o.w[i0]
	f, cols, n := w0.kfmt, w0.cols, o.rows
	p := b.planGemm(o, i0, i1)
	xq := b.scratchZeroed("gemmx", uint64(p.xbytes))
	var part devPtr
	if p.split > 1 {
		part = b.scratchBuf("gemmpart", uint64(p.partBytes))
	}
	what := b.matvecWhat(o)
	src := o.x.ptr
	var normw, xbp devPtr
	if o.normW != nil {
		src, normw = o.normX.ptr, o.normW.ptr
		if xb {
			xbp = o.x.ptr
		}
	}
	b.profKey = fmt.Sprintf("xstage_%s [%d]", f, cols)
	if o.normW != nil {
		b.profKey += " +norm"
	}
	b.launch("xstage_"+f, [3]int{n, 1, 1}, 256, mvsSmem(f, cols),
		args{}.p(src).p(normw).p(xbp).p(xq).i(cols).i(p.npad).f(float64(o.eps)), what)

	var ws, ys [3]devPtr
	if o.kind == opGateUp {
		ws[0], ws[1], ys[0] = o.w[0].ptr, o.w[1].ptr, o.y[0].ptr
	} else {
		for i := i0; i < i1; i++ {
			ws[i-i0], ys[i-i0] = o.w[i].ptr, o.y[i].ptr
		}
	}
	var resid devPtr
	if o.resid != nil {
		resid = o.resid.ptr
	}
	a := args{}.p(ws[0]).p(ws[1]).p(ws[2]).p(ys[0]).p(ys[1]).p(ys[2]).i(p.rows[0]).i(p.rows[1]).i(p.rows[2]).
		i(p.t[0]).i(p.t[1]).i(p.t[2]).p(xq).p(resid).i(cols).i(n).i(p.npad).i(p.split).p(part).i(p.ptot)
	b.profKey = fmt.Sprintf("%s [%d×%d] n=%d s=%d", p.name, cols, p.ptot, n, p.split)
	b.launch(p.name, [3]int{p.ntn, p.t[2] * p.split, 1}, 32*gemmWarps, gemmSmem(f), a, what)
	if p.split > 1 {
		name, cnt := "gemm_fin", p.ptot
		if o.kind == opGateUp {
			name, cnt = "gemm_fin_gu", p.rows[0]
		}
		b.profKey = fmt.Sprintf("%s n=%d s=%d", name, n, p.split)
		b.launch(name, [3]int{ceilDiv(n*cnt, 256), 1, 1}, 256, 0, a, what)
	}
}
