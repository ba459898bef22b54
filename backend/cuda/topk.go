package cuda

import (
	"slices"
	"unsafe"

	"greta/ml"
)

// topkDesc is the int32s of a row's description for the topk kernel
// (TOPK_DESC in kernels/topk.cu): x row, k, first entry, gather start,
// gather count.
const topkDesc = 5

// TopK selects the t.K[i] largest values of rows t.Rows[i] of x on the
// device (a radix select, kernels/topk.cu), one block a row and one launch
// for all of them, after the queued ops in the same run, and copies back
// only the candidates and gathered values, with one sync. Equal
// candidates arrive in column order; they are sorted here, largest first,
// the lower id first on ties (ml.TopKHost's order). The rows' k and gather lists travel
// in dyn, so a decode step's launch keeps its signature (and its graph)
// while they change.
func (b *Backend) TopK(x ml.Tensor, t *ml.TopK) {
	xs := x.(*Tensor)
	if len(t.Rows) < 1 || len(t.Rows) > maxGridY || xs.cols > 1<<31-1 {
		shapeErr("TopK: %d rows of [%d,%d]", len(t.Rows), xs.cols, xs.rows)
	}
	t.Check(xs.rows, xs.cols)
	n := len(t.IDs)
	if n > 1<<30 {
		shapeErr("TopK: %d entries", n)
	}
	nr := len(t.Rows)
	desc := slices.Grow(b.topkBuf[:0], topkDesc*nr)[:topkDesc*nr]
	e := 0
	for i, r := range t.Rows {
		g := t.Gathered(i)
		d := desc[topkDesc*i : topkDesc*(i+1)]
		d[0], d[1], d[2], d[3], d[4] = r, t.K[i], int32(e), int32(len(desc)), int32(len(g))
		desc = append(desc, g...)
		e += int(t.K[i]) + len(g)
	}
	b.topkBuf = desc
	b.enter()
	defer b.exit()
	b.resEnsure(2 * n)
	off := b.pushDyn(desc...)
	b.push(op{kind: opTopK, rows: nr, x: xs, dyn: off})
	if err := b.runQueue(); err != nil {
		b.fatal("TopK", err)
	}
	if err := b.d.MemcpyDtoHAsync(b.resHost, b.resDev, uint64(8*n), b.stream); err != nil {
		b.fatal("TopK", err)
	}
	if err := b.d.StreamSynchronize(b.stream); err != nil {
		b.fatal("TopK: "+b.queueDesc(), err)
	}
	res := unsafe.Slice((*int32)(b.resHost), 2*n)
	e = 0
	for i := range t.Rows {
		k := int(t.K[i])
		// Equal candidates are in column order, so ranking them by their
		// index among the candidates breaks ties the same way as by column.
		if cap(b.topkIdx) < k {
			b.topkIdx, b.topkVal = make([]int32, k), make([]float32, k)
		}
		idx, cv := b.topkIdx[:k], b.topkVal[:k]
		for j := range k {
			cv[j] = *(*float32)(unsafe.Pointer(&res[2*(e+j)+1]))
		}
		ml.TopKHost(cv, k, idx, t.Vals[e:e+k])
		for j, c := range idx {
			t.IDs[e+j] = res[2*(e+int(c))]
		}
		e += k
		for range t.Gathered(i) {
			t.IDs[e], t.Vals[e] = res[2*e], *(*float32)(unsafe.Pointer(&res[2*e+1]))
			e++
		}
	}
}
