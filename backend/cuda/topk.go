package cuda

import (
	"unsafe"

	"greta/ml"
)

// TopK selects the k largest values of row row of x on the device (a radix
// select, kernels/topk.cu) and copies back only the k candidates, which
// arrive in column order and are sorted here, largest first, the lower id
// first on ties.
func (b *Backend) TopK(x ml.Tensor, row, k int, ids []int32, vals []float32) {
	xs := x.(*Tensor)
	if row < 0 || row >= xs.rows {
		shapeErr("TopK: row %d of %d", row, xs.rows)
	}
	if k < 1 || k > xs.cols || len(ids) < k || len(vals) < k || xs.rows < 1 || xs.cols > 1<<31-1 {
		shapeErr("TopK: k %d of a row of %d into %d ids and %d values", k, xs.cols, len(ids), len(vals))
	}
	b.enter()
	defer b.exit()
	b.resEnsure(2 * k)
	b.push(op{kind: opTopK, rows: xs.rows, x: xs, from: k, layer: row})
	if err := b.runQueue(); err != nil {
		b.fatal("TopK", err)
	}
	if err := b.d.MemcpyDtoHAsync(b.resHost, b.resDev, uint64(8*k), b.stream); err != nil {
		b.fatal("TopK", err)
	}
	if err := b.d.StreamSynchronize(b.stream); err != nil {
		b.fatal("TopK: "+b.queueDesc(), err)
	}
	res := unsafe.Slice((*int32)(b.resHost), 2*k)
	cv := unsafe.Slice((*float32)(unsafe.Pointer(&res[k])), k)
	// The candidates are in column order, so ranking them by their index
	// among the candidates breaks ties the same way as by column.
	if cap(b.topkIdx) < k {
		b.topkIdx = make([]int32, k)
	}
	idx := b.topkIdx[:k]
	ml.TopKHost(cv, k, idx, vals[:k])
	for i, c := range idx {
		ids[i] = res[c]
	}
}
