package cuda

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"math"
	"math/bits"
	"sort"
	"strings"
	"unsafe"

	"greta/ml"
)

// The op queue. Each Backend op appends an op; runQueue turns the queue
// into launches (lower.go), replaying a captured graph when the queue
// equals the one the graph was made from. An op's signature holds every
// value its launches depend on (buffer addresses, shapes, offsets into the
// dyn buffer), and none of the values that change from one decode step to
// the next (positions and token ids, which live in dyn).

type opKind uint8

const (
	opEmbed opKind = iota + 1
	opNorm
	opMatMul
	opGateUp
	opRope
	opAttn
	opCopy
	opArgmax
	opTopK
	opGather
)

type op struct {
	kind opKind
	rows int

	// Embed, Norm, MatMul (w[:nw], y[:nw]), GateUp (w[0] gate, w[1] up,
	// y[0]), Copy (y[0] ← x), Argmax (x).
	x     *Tensor
	y     [3]*Tensor
	w     [3]*Weight
	nw    int
	resid *Tensor
	eps   float32
	from  int

	// Rope: rx[:nrope]; Attention. Positions, sequences and pages come
	// from the batch buffer (Begin).
	rx    [2]*Tensor
	nrope int
	rope  *ropeDev
	q     *Tensor
	k, v  *Tensor
	cache *KVCache
	layer int
	attn  ml.Attn

	dyn int // offset in dyn of the token ids or the gathered rows

	// Fusions: a Rope of q and k that also stores k and v (o.v, o.cache,
	// o.layer) into the cache, and the Attention that then skips it; a
	// decode MatMul or GateUp that normalizes its input itself (normX by
	// normW and eps) and writes the normalized row to x.
	stored bool
	normW  *Weight
	normX  *Tensor

	// A MatMul whose weights come in two formats: w[:split] in one, the
	// rest in the other (a pair kernel for one row, else a launch for each
	// side; 0: one format).
	split int

	// Attention on the tensor cores (flash.cu): faTiles prompt tiles
	// (their list in dyn at o.dyn) for fa_pre, and fa_dec for the rows
	// that are alone in their sequence (faSingle) over faCh chunks at most
	// (a power of two, so that decode steps keep one signature for a
	// while).
	fa       bool
	faSingle bool
	faTiles  int
	faCh     int

	fam famArgs // the family ops' values (family.go)

	// A MatMul or GateUp of the layers over a batch with prompt rows: the
	// runs [r0, r1) of prompt rows, which take hgemm (hgemm.go).
	hruns [][2]int
}

func (o *op) appendSig(s []byte) []byte {
	u := func(v uint64) { s = binary.LittleEndian.AppendUint64(s, v) }
	t := func(x *Tensor) {
		if x == nil {
			u(0)
		} else {
			u(uint64(x.ptr))
			u(uint64(x.cols))
		}
	}
	u(uint64(o.kind)<<32 | uint64(o.rows))
	t(o.x)
	for i := 0; i < 3; i++ {
		t(o.y[i])
		if o.w[i] != nil {
			u(uint64(o.w[i].ptr))
		} else {
			u(0)
		}
	}
	u(uint64(o.nw))
	t(o.resid)
	u(uint64(math.Float32bits(o.eps))<<32 | uint64(uint32(o.from)))
	t(o.rx[0])
	t(o.rx[1])
	u(uint64(o.nrope))
	if o.rope != nil {
		u(uint64(o.rope.freqs))
	}
	t(o.q)
	t(o.k)
	t(o.v)
	if o.cache != nil {
		u(uint64(o.cache.k))
	}
	u(uint64(o.layer)<<32 | uint64(o.dyn))
	if o.stored {
		u(1)
	}
	if o.normW != nil {
		u(uint64(o.normW.ptr))
		t(o.normX)
	}
	u(uint64(o.split))
	if o.fa {
		u(uint64(o.faTiles)<<32 | uint64(o.faCh)<<1 | b2u(o.faSingle))
	}
	s = o.fam.appendSig(s)
	u(uint64(len(o.hruns)))
	for _, r := range o.hruns {
		u(uint64(r[0])<<32 | uint64(r[1]))
	}
	u(uint64(o.attn.NHeads)<<32 | uint64(o.attn.NKVHeads))
	u(uint64(o.attn.HeadDim)<<32 | uint64(math.Float32bits(float32(o.attn.Scale))))
	u(uint64(o.attn.Window)<<32 | uint64(math.Float32bits(float32(o.attn.Softcap))))
	return s
}

const maxQueue = 4096

func (b *Backend) push(o op) {
	if b.closed {
		panic("cuda: use of a closed backend")
	}
	if o.kind == opMatMul || o.kind == opGateUp {
		o.hruns = b.opRuns(&o)
	}
	b.ops = append(b.ops, o)
	if o.kind == opRope || o.kind == opAttn {
		b.batUsers++
	}
	if len(b.ops) >= maxQueue {
		b.enter()
		defer b.exit()
		if err := b.runQueue(); err != nil {
			b.fatal("run", err)
		}
	}
}

func (b *Backend) last() *op {
	if len(b.ops) == 0 {
		return nil
	}
	return &b.ops[len(b.ops)-1]
}

// pushDyn appends values to dyn and returns their offset.
func (b *Backend) pushDyn(vals ...int32) int {
	if len(b.dyn)+len(vals) > b.dynCap {
		b.enter()
		defer b.exit()
		if len(b.ops) > 0 {
			if err := b.runQueue(); err != nil {
				b.fatal("run", err)
			}
		}
		if len(vals) > b.dynCap {
			b.growDyn(b.batCap, len(vals))
		}
	}
	off := len(b.dyn)
	b.dyn = append(b.dyn, vals...)
	return off
}

// growDyn reallocates the dyn buffer for nb int32s of batch description
// and n of dyn values; the batch is uploaded again with the next run.
func (b *Backend) growDyn(nb, n int) {
	n = max(n, b.dynCap, 1<<14)
	if b.dynBusy {
		b.d.EventSynchronize(b.dynEvent)
		b.dynBusy = false
	}
	if err := b.d.StreamSynchronize(b.stream); err != nil {
		b.fatal("dyn", err)
	}
	b.free(b.dynDev)
	if b.dynHost != nil {
		b.d.MemFreeHost(b.dynHost)
		b.dynHost = nil
	}
	var err error
	if b.dynDev, err = b.alloc(uint64(4*(nb+n)), "the per-step values"); err != nil {
		b.fatal("dyn", err)
	}
	if b.dynHost, err = b.d.MemAllocHost(uint64(4 * (nb + n))); err != nil {
		b.fatal("dyn", err)
	}
	b.batCap, b.dynCap = nb, n
	b.batDirty = true
	b.gen++
}

func (b *Backend) dynPtr(off int) devPtr { return b.dynDev + devPtr(4*(b.batCap+off)) }

// batPtr is the batch description on the device (Begin).
func (b *Backend) batPtr() devPtr { return b.dynDev }

// runQueue runs the queued ops: by replaying the captured graph when the
// queue matches it, by capturing a new graph when the queue matches the
// previous run (the second decode step), and otherwise launch by launch.
// The caller holds the context (enter).
func (b *Backend) runQueue() error {
	if len(b.ops) == 0 {
		return nil
	}
	defer func() {
		b.ops = b.ops[:0]
		b.dyn = b.dyn[:0]
		b.batUsers = 0
	}()
	b.Stats.Runs++
	if len(b.dyn) > 0 || b.batDirty {
		// One copy: the batch description (once after Begin) and dyn.
		if b.dynBusy {
			if err := b.d.EventSynchronize(b.dynEvent); err != nil {
				return err
			}
		}
		host := unsafe.Slice((*int32)(b.dynHost), b.batCap+b.dynCap)
		start := b.batCap
		if b.batDirty {
			copy(host, b.batBuild)
			start = 0
		}
		copy(host[b.batCap:], b.dyn)
		end := b.batCap + len(b.dyn)
		if err := b.d.MemcpyHtoDAsync(b.dynDev+devPtr(4*start), unsafe.Add(b.dynHost, 4*start), uint64(4*(end-start)), b.stream); err != nil {
			return err
		}
		b.batDirty = false
		if err := b.d.EventRecord(b.dynEvent, b.stream); err != nil {
			return err
		}
		b.dynBusy = true
	}
	// Scratch that lowering will need is made now, outside any capture.
	b.prepare()
	b.sig = binary.LittleEndian.AppendUint64(b.sig[:0], b.gen)
	b.sig = binary.LittleEndian.AppendUint64(b.sig, uint64(b.batRows)<<32|uint64(b.batSeqs))
	graphable := b.Graphs && !b.Check && !b.Profile
	for i := range b.ops {
		b.sig = b.ops[i].appendSig(b.sig)
		if b.ops[i].usesBLAS(b) {
			graphable = false
		}
	}
	defer func() { b.sig, b.lastSig = b.lastSig, b.sig }()
	if graphable && b.graphExec != 0 && bytes.Equal(b.sig, b.graphSig) {
		b.Stats.Replays++
		return b.d.GraphLaunch(b.graphExec, b.stream)
	}
	if graphable && bytes.Equal(b.sig, b.lastSig) {
		if err := b.capture(); err == nil {
			b.Stats.Captures++
			return b.d.GraphLaunch(b.graphExec, b.stream)
		} else {
			debugf("graph capture failed, running launch by launch from now on: %v", err)
			b.Graphs = false
		}
	}
	if b.Profile {
		b.profBegin()
	}
	for i := range b.ops {
		b.lower(&b.ops[i])
	}
	if b.Profile {
		b.profEnd()
	}
	return nil
}

// capture records the queue's launches into a graph and instantiates it.
func (b *Backend) capture() error {
	if err := b.d.BeginCapture(b.stream); err != nil {
		return err
	}
	b.capturing = true
	var perr any
	func() {
		defer func() { perr = recover() }()
		for i := range b.ops {
			b.lower(&b.ops[i])
		}
	}()
	b.capturing = false
	g, err := b.d.EndCapture(b.stream)
	if perr != nil {
		if g != 0 {
			b.d.GraphDestroy(g)
		}
		return fmt.Errorf("%v", perr)
	}
	if err != nil {
		return err
	}
	exec, err := b.d.GraphInstantiate(g)
	if err != nil {
		b.d.GraphDestroy(g)
		return err
	}
	if b.graphExec != 0 {
		b.d.GraphExecDestroy(b.graphExec)
		b.d.GraphDestroy(b.graph)
	}
	b.graph, b.graphExec = g, exec
	b.graphSig = append(b.graphSig[:0], b.sig...)
	return nil
}

// ---- the Backend ops: checks, then a queued op.

func shapeErr(format string, a ...any) { panic(fmt.Sprintf("cuda: "+format, a...)) }

func (b *Backend) Embed(dst ml.Tensor, table ml.Weight, tokens []int32) {
	d, w := dst.(*Tensor), table.(*Weight)
	if d.cols != w.cols || len(tokens) < 1 || len(tokens) > d.capRows {
		shapeErr("Embed shapes: table [%d,%d], dst [%d,%d], %d tokens", w.cols, w.rows, d.cols, d.capRows, len(tokens))
	}
	off := b.pushDyn(tokens...)
	b.push(op{kind: opEmbed, rows: len(tokens), y: [3]*Tensor{d}, w: [3]*Weight{w}, nw: 1, dyn: off})
}

func (b *Backend) RMSNorm(dst, x ml.Tensor, w ml.Weight, eps float32) {
	d, xs, ww := dst.(*Tensor), x.(*Tensor), w.(*Weight)
	if ww.cols*ww.rows < xs.cols {
		b.normSeg(d, xs, ww, eps, false) // per head (family.go)
		return
	}
	if d.cols != xs.cols || ww.cols*ww.rows != xs.cols || d.capRows < xs.rows {
		shapeErr("RMSNorm shapes: w %v, x [%d,%d], dst [%d,%d]", ww.shape, xs.cols, xs.rows, d.cols, d.rows)
	}
	b.push(op{kind: opNorm, rows: xs.rows, x: xs, y: [3]*Tensor{d}, w: [3]*Weight{ww}, nw: 1, eps: eps})
}

func (b *Backend) checkMatMul(d, x *Tensor, w *Weight) {
	if x.cols != w.cols || d.cols != w.rows || d.rows != x.rows {
		shapeErr("MatMul shapes: W %s [%d,%d], x [%d,%d], dst [%d,%d]", w.name, w.cols, w.rows, x.cols, x.rows, d.cols, d.rows)
	}
}

func (b *Backend) MatMul(dst, x ml.Tensor, w ml.Weight) {
	d, xs, ww := dst.(*Tensor), x.(*Tensor), w.(*Weight)
	b.checkMatMul(d, xs, ww)
	// q, k and v read the same x: one op does all three, v possibly in
	// another format than q and k (split).
	if l := b.last(); b.Fuse && l != nil && l.kind == opMatMul && l.resid == nil && l.nw < 3 && l.x == xs &&
		l.rows == xs.rows && !b.gemmRows(xs.rows) && l.w[0].cols == ww.cols && d != xs {
		for i := 0; i < l.nw; i++ {
			if l.y[i] == d {
				goto separate
			}
		}
		switch {
		case l.w[l.nw-1].kfmt == ww.kfmt:
		case l.split == 0 && b.mvsFits(l.w[0]) && b.mvsFits(ww):
			// Two formats (v in Q6_K in some Q4_K_M layers): one pair
			// launch for one row, two staged-x launches for more; at any
			// row count both sides take the fused norm, if any.
			l.split = l.nw
		default:
			goto separate
		}
		l.w[l.nw], l.y[l.nw] = ww, d
		l.nw++
		if l.hruns != nil && !b.hgemmFits(ww) {
			l.hruns = nil // every weight of the op or none: the same for every batch
		}
		return
	}
separate:
	o := op{kind: opMatMul, rows: xs.rows, x: xs, y: [3]*Tensor{d}, w: [3]*Weight{ww}, nw: 1}
	b.fuseNorm(&o)
	b.push(o)
}

// fuseNorm folds an RMSNorm queued just before o, whose output is o's
// input, into o: o's kernels (mvs, mvn) normalize x as they stage it and
// write the normalized rows too, and the RMSNorm launch goes. Any row
// count: the fused numerics are the same for a row alone or in a batch.
func (b *Backend) fuseNorm(o *op) {
	l := b.last()
	if !b.Fuse || l == nil || l.kind != opNorm || l.y[0] != o.x || l.rows != o.rows || !b.mvsFits(o.w[0]) || l.x == o.x || b.gemmRows(o.rows) {
		return
	}
	o.normW, o.normX, o.eps = l.w[0], l.x, l.eps
	b.ops = b.ops[:len(b.ops)-1]
}

// pairFits reports whether a pair kernel does w0's format and then w1's,
// both with staged x.
func (b *Backend) pairFits(w0, w1 *Weight) bool {
	_, ok := pairKernelFor(w0.kfmt, w1.kfmt)
	return ok && b.mvsFits(w0) && b.mvsFits(w1)
}

func (b *Backend) MatMulAdd(dst, resid, x ml.Tensor, w ml.Weight) {
	d, r, xs, ww := dst.(*Tensor), resid.(*Tensor), x.(*Tensor), w.(*Weight)
	b.checkMatMul(d, xs, ww)
	if r.cols != d.cols || r.rows != d.rows {
		shapeErr("MatMulAdd shapes: resid [%d,%d], dst [%d,%d]", r.cols, r.rows, d.cols, d.rows)
	}
	b.push(op{kind: opMatMul, rows: xs.rows, x: xs, y: [3]*Tensor{d}, w: [3]*Weight{ww}, nw: 1, resid: r})
}

func (b *Backend) GateUp(dst, x ml.Tensor, gate, up ml.Weight) {
	d, xs, g, u := dst.(*Tensor), x.(*Tensor), gate.(*Weight), up.(*Weight)
	b.checkMatMul(d, xs, g)
	if u.cols != g.cols || u.rows != g.rows || u.kfmt != g.kfmt {
		shapeErr("GateUp: gate %s [%d,%d] %s and up %s [%d,%d] %s differ", g.name, g.cols, g.rows, g.kfmt, u.name, u.cols, u.rows, u.kfmt)
	}
	o := op{kind: opGateUp, rows: xs.rows, x: xs, y: [3]*Tensor{d}, w: [3]*Weight{g, u}, nw: 2}
	b.fuseNorm(&o)
	b.push(o)
}

// ropeFor returns the device copy of r's frequencies.
func (b *Backend) ropeFor(r *ml.Rope) *ropeDev {
	if len(r.Freqs) == 0 || 2*len(r.Freqs) > r.HeadDim {
		shapeErr("Rope: %d frequencies for head size %d", len(r.Freqs), r.HeadDim)
	}
	if rd := b.ropes[r]; rd != nil && rd.n == len(r.Freqs) && rd.src == &r.Freqs[0] && rd.posScale == r.PosScale && rd.headDim == r.HeadDim && rd.neox == r.Neox {
		return rd
	}
	b.enter()
	defer b.exit()
	buf := make([]byte, 8*len(r.Freqs))
	for i, f := range r.Freqs {
		binary.LittleEndian.PutUint64(buf[8*i:], math.Float64bits(f))
	}
	p, err := b.alloc(uint64(len(buf)), "rope frequencies")
	if err != nil {
		b.fatal("Rope", err)
	}
	if err := b.d.MemcpyHtoD(p, buf); err != nil {
		b.fatal("Rope", err)
	}
	rd := &ropeDev{freqs: p, n: len(r.Freqs), src: &r.Freqs[0], posScale: r.PosScale, headDim: r.HeadDim, neox: r.Neox}
	b.ropes[r] = rd
	return rd
}

// Begin takes the batch of the following ops and prepares its description
// (positions, where each row's page table starts, the page tables;
// kernels/common.cuh), which the next run uploads at the start of the dyn
// buffer in the same copy as dyn: once per forward call. Ops queued
// earlier that read the batch are run first; the others (an Embed) may
// stay queued. The kernels' view of it depends only on the row count, so
// the decode steps of one set of sequences keep one signature and replay
// one graph.
func (b *Backend) Begin(batch *ml.Batch) {
	n, ns := len(batch.Pos), len(batch.Pages)
	if n < 1 || len(batch.Seq) != n || ns < 1 {
		shapeErr("Begin: %d positions, %d sequence ids, %d page tables", n, len(batch.Seq), ns)
	}
	// Ops queued for the previous batch run first, with its description
	// (batBuild still holds it, and the run uploads it if it is not on the
	// device yet).
	if b.batUsers > 0 {
		b.enter()
		err := b.runQueue()
		b.exit()
		if err != nil {
			b.fatal("Begin", err)
		}
	}
	h, toff, maxPage := batchDesc(batch, b.batBuild[:0], b.batToff[:0])
	b.batBuild, b.batToff = h, toff
	if len(h) > b.batCap {
		// Room for the batch grows in steps of 256 values, so that a
		// growing page table seldom moves dyn (which ends a graph).
		b.enter()
		b.growDyn(ceilDiv(len(h), 256)*256, b.dynCap)
		b.exit()
	}
	b.batDirty = true
	b.batch, b.batRows, b.batSeqs, b.batMaxPage = batch, n, ns, maxPage
	b.faTilesOf = nil // the caller may reuse the Batch
	b.pastHead = false
	b.hruns = nil
	if b.HGemm {
		b.hruns = promptRuns(batch.IsGen, n)
	}
}

// batchDesc appends the device description of batch to h
// (kernels/common.cuh): pos[rows], toff[rows] (where row i's page table
// starts among the tables), then the page tables one after another. toff
// is scratch for the sequences' table offsets. It returns the largest
// pool page named.
func batchDesc(batch *ml.Batch, h, toff []int32) ([]int32, []int32, int) {
	ns := len(batch.Pages)
	h = append(h, batch.Pos...)
	toff = append(toff, 0)
	for _, t := range batch.Pages {
		toff = append(toff, toff[len(toff)-1]+int32(len(t)))
	}
	for _, s := range batch.Seq {
		if s < 0 || int(s) >= ns {
			shapeErr("Begin: a row of sequence %d of %d", s, ns)
		}
		h = append(h, toff[s])
	}
	maxPage := int32(-1)
	for _, t := range batch.Pages {
		for _, p := range t {
			maxPage = max(maxPage, p)
		}
		h = append(h, t...)
	}
	return h, toff, int(maxPage)
}

// needBatch checks that Begin described at least rows rows.
func (b *Backend) needBatch(what string, rows int) {
	if b.batch == nil || rows > b.batRows {
		shapeErr("%s: %d rows, but the batch (Begin) has %d", what, rows, b.batRows)
	}
}

func (b *Backend) Rope(x ml.Tensor, r *ml.Rope) { b.rope(x, r) }

// Gather copies rows: a run of consecutive rows as one copy, any other
// list through a kernel that reads the row ids from dyn.
func (b *Backend) Gather(dst, src ml.Tensor, rows []int32) {
	d, s := dst.(*Tensor), src.(*Tensor)
	b.pastHead = true // the rows that follow are not the batch's (hgemm.go)
	if d.cols != s.cols || len(rows) != d.rows || len(rows) > maxGridY*64 {
		shapeErr("Gather: dst [%d,%d], src [%d,%d], %d rows", d.cols, d.rows, s.cols, s.capRows, len(rows))
	}
	run := true
	for i, r := range rows {
		if r < 0 || int(r) >= s.capRows {
			shapeErr("Gather: row %d of a tensor of %d", r, s.capRows)
		}
		if int(r) != int(rows[0])+i {
			run = false
		}
	}
	if run {
		b.copyRows(dst, src, int(rows[0]))
		return
	}
	off := b.pushDyn(rows...)
	b.push(op{kind: opGather, rows: len(rows), x: s, y: [3]*Tensor{d}, dyn: off})
}

func (b *Backend) rope(x ml.Tensor, r *ml.Rope) {
	xs := x.(*Tensor)
	if xs.cols < r.HeadDim {
		shapeErr("Rope: x [%d,%d], head size %d", xs.cols, xs.rows, r.HeadDim)
	}
	b.needBatch("Rope", xs.rows)
	rd := b.ropeFor(r)
	// Rope of q then of k: one launch.
	if l := b.last(); b.Fuse && l != nil && l.kind == opRope && l.nrope == 1 && l.rope == rd && l.rows == xs.rows && l.rx[0] != xs {
		l.rx[1] = xs
		l.nrope = 2
		return
	}
	b.push(op{kind: opRope, rows: xs.rows, rx: [2]*Tensor{xs}, nrope: 1, rope: rd})
}

func (b *Backend) Attention(dst, q, k, v ml.Tensor, cache ml.KVCache, layer int, a *ml.Attn) {
	d, qs, ks, vs, c := dst.(*Tensor), q.(*Tensor), k.(*Tensor), v.(*Tensor), cache.(*KVCache)
	switch {
	case a.NHeads < 1 || a.NKVHeads < 1 || a.NHeads%a.NKVHeads != 0 || a.HeadDim < 1:
		shapeErr("Attention: %d heads, %d KV heads, head size %d", a.NHeads, a.NKVHeads, a.HeadDim)
	case a.HeadDim > maxHeadDim:
		shapeErr("Attention: head size %d is over the %d this backend supports", a.HeadDim, maxHeadDim)
	case qs.cols != a.NHeads*a.HeadDim || d.cols != qs.cols || ks.cols != a.NKVHeads*a.HeadDim || vs.cols != ks.cols || ks.cols != c.kvDim:
		shapeErr("Attention shapes: q [%d], k [%d], v [%d], dst [%d], cache kv dim %d, heads %d/%d × %d", qs.cols, ks.cols, vs.cols, d.cols, c.kvDim, a.NHeads, a.NKVHeads, a.HeadDim)
	case qs.rows != ks.rows || vs.rows != ks.rows || d.rows != qs.rows:
		shapeErr("Attention rows: q %d, k %d, v %d, dst %d", qs.rows, ks.rows, vs.rows, d.rows)
	case layer < 0 || layer >= c.layers:
		shapeErr("Attention: layer %d of %d", layer, c.layers)
	case b.batch == nil || qs.rows != b.batRows:
		shapeErr("Attention: %d rows, but the batch (Begin) has %d", qs.rows, b.batRows)
	case b.batMaxPage >= c.pages():
		shapeErr("Attention: the batch names pool page %d of a cache of %d", b.batMaxPage, c.pages())
	}
	if a.Window > 0 || a.Softcap > 0 {
		b.attnWindow(d, qs, ks, vs, c, layer, a) // family.go
		return
	}
	// Rope of q and k just before: when every sequence has one row and the
	// decode kernel fits, the attention kernel does the rope and the KV
	// store itself; otherwise the rope kernel stores k and v too, and
	// attention only reads the cache. Either way a row gets the same bits.
	stored := false
	var rope *ropeDev
	fa := b.faFor(a, c)
	if l := b.last(); b.Fuse && l != nil && l.kind == opRope && l.nrope == 2 && l.rx[0] == qs && l.rx[1] == ks && l.rows == qs.rows &&
		l.cache == nil && l.rope.headDim == a.HeadDim {
		if _, ok := b.attnDecFor(a); (ok || fa) && b.batRows == b.batSeqs && !l.rope.neox { // attn_dec's and fa_dec's folded rope is the normal mode
			rope = l.rope
			b.ops = b.ops[:len(b.ops)-1]
		} else {
			l.v, l.cache, l.layer = vs, c, layer
		}
		stored = true
	}
	o := op{kind: opAttn, rows: qs.rows, y: [3]*Tensor{d}, q: qs, k: ks, v: vs, cache: c, layer: layer, attn: *a, stored: stored, rope: rope}
	if fa {
		o.fa = true
		tiles, single, maxPos := b.faTileList(a.NHeads / a.NKVHeads)
		o.faSingle, o.faTiles = single, len(tiles)/2
		o.faCh = max(1, ceilDiv(1<<bits.Len(uint(maxPos)), attnChunk))
		if len(tiles) > 0 {
			o.dyn = b.pushDyn(tiles...)
		}
	}
	b.push(o)
}

func b2u(v bool) uint64 {
	if v {
		return 1
	}
	return 0
}

// faFor reports whether attention a over cache c runs on the tensor cores
// (kernels/flash.cu): an f16 cache, head size 64 or 128, at most 16 query
// heads a KV head, sm_80 or later; GRETA_CUDA_FA=0 keeps the scalar
// kernels.
func (b *Backend) faFor(a *ml.Attn, c *KVCache) bool {
	G := a.NHeads / a.NKVHeads
	return b.FA && b.major >= 8 && c.kv32() == 0 && (a.HeadDim == 64 || a.HeadDim == 128) && G >= 1 && G <= faMaxGroup
}

// faTileList returns fa_pre's tiles for the current batch and g query
// heads a KV head, as (first row, positions) pairs: each sequence of two
// rows or more in runs of faBM/g rows, the tiles ending at the latest
// positions first (they have the most keys); whether some sequence has a
// single row (fa_dec's); and the largest position of the batch.
func (b *Backend) faTileList(g int) (tiles []int32, single bool, maxPos int) {
	if b.faTilesOf == b.batch && b.faTilesG == g {
		return b.faTiles, b.faSingle, b.faMaxPos
	}
	bt := b.batch
	n := len(bt.Pos)
	pt := faBM / g
	type tile struct{ r0, n, last int32 }
	var ts []tile
	single, maxPos = false, 0
	for s := 0; s < n; {
		e := s + 1
		for e < n && bt.Seq[e] == bt.Seq[s] {
			e++
		}
		maxPos = max(maxPos, int(bt.Pos[e-1]))
		if e-s == 1 {
			single = true
		} else {
			for r := s; r < e; r += pt {
				k := min(pt, e-r)
				ts = append(ts, tile{int32(r), int32(k), bt.Pos[r+k-1]})
			}
		}
		s = e
	}
	sort.SliceStable(ts, func(i, j int) bool { return ts[i].last > ts[j].last })
	tiles = make([]int32, 0, 2*len(ts))
	for _, t := range ts {
		tiles = append(tiles, t.r0, t.n)
	}
	b.faTilesOf, b.faTilesG, b.faTiles, b.faSingle, b.faMaxPos = bt, g, tiles, single, maxPos
	return tiles, single, maxPos
}

func (b *Backend) copyRows(dst, src ml.Tensor, from int) {
	d, s := dst.(*Tensor), src.(*Tensor)
	if d.cols != s.cols || from < 0 || from+d.rows > s.capRows {
		shapeErr("Gather: dst [%d,%d], src [%d,%d], from %d", d.cols, d.rows, s.cols, s.capRows, from)
	}
	b.push(op{kind: opCopy, rows: d.rows, x: s, y: [3]*Tensor{d}, from: from})
}

// Argmax finds each row's largest value on the device and copies back only
// the indices.
func (b *Backend) Argmax(x ml.Tensor, dst []int32) {
	xs := x.(*Tensor)
	if len(dst) < xs.rows || xs.rows > maxGridY {
		shapeErr("Argmax: %d rows into %d", xs.rows, len(dst))
	}
	b.enter()
	defer b.exit()
	b.resEnsure(xs.rows)
	b.push(op{kind: opArgmax, rows: xs.rows, x: xs})
	if err := b.runQueue(); err != nil {
		b.fatal("Argmax", err)
	}
	if err := b.d.MemcpyDtoHAsync(b.resHost, b.resDev, uint64(4*xs.rows), b.stream); err != nil {
		b.fatal("Argmax", err)
	}
	if err := b.d.StreamSynchronize(b.stream); err != nil {
		b.fatal("Argmax: "+b.queueDesc(), err)
	}
	copy(dst, unsafe.Slice((*int32)(b.resHost), xs.rows))
}

// resEnsure makes the device and pinned host buffers for results of n
// 32-bit words (argmax ids, top-k candidates). The caller holds the
// context.
func (b *Backend) resEnsure(n int) {
	if n <= b.resCap {
		return
	}
	if err := b.d.StreamSynchronize(b.stream); err != nil {
		b.fatal("results", err)
	}
	b.free(b.resDev)
	if b.resHost != nil {
		b.d.MemFreeHost(b.resHost)
	}
	n = max(n, 1024)
	var err error
	if b.resDev, err = b.alloc(uint64(4*n), "results"); err != nil {
		b.fatal("results", err)
	}
	if b.resHost, err = b.d.MemAllocHost(uint64(4 * n)); err != nil {
		b.fatal("results", err)
	}
	b.resCap = n
	b.gen++
}

// Read copies x to the host. It runs the queue first, so a Read in the
// middle of a step (tracing) also keeps that step from being replayed.
func (b *Backend) Read(x ml.Tensor, dst []float32) {
	xs := x.(*Tensor)
	n := xs.rows * xs.cols
	if len(dst) < n {
		shapeErr("Read: [%d,%d] into %d values", xs.cols, xs.rows, len(dst))
	}
	b.enter()
	defer b.exit()
	if err := b.runQueue(); err != nil {
		b.fatal("Read", err)
	}
	if err := b.d.StreamSynchronize(b.stream); err != nil {
		b.fatal("Read: "+b.queueDesc(), err)
	}
	if err := b.d.MemcpyDtoH(unsafe.Pointer(&dst[0]), xs.ptr, uint64(4*n)); err != nil {
		b.fatal("Read", err)
	}
}

// Sync runs the queue and waits for the device (tests, timing).
func (b *Backend) Sync() error {
	b.enter()
	defer b.exit()
	if err := b.runQueue(); err != nil {
		return err
	}
	return b.d.StreamSynchronize(b.stream)
}

// queueDesc names what ran last, for error messages.
func (b *Backend) queueDesc() string {
	if b.lastLaunch == "" {
		return "the last launches"
	}
	return "after " + b.lastLaunch
}

// layerOf extracts N from a GGUF name "blk.N.…".
func layerOf(name string) string {
	if strings.HasPrefix(name, "blk.") {
		if i := strings.IndexByte(name[4:], '.'); i > 0 {
			return name[4 : 4+i]
		}
	}
	return ""
}
