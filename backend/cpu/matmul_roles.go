package cpu

import (
	"fmt"

	"greta/gguf"
)

// modeRole is how MatMul treats the activations of rows of one role: what
// mode gives a single vector (gen: a generated row, decoded token by token)
// or a batch (a prompt row), whatever the number of rows in the call. So a
// row's numerics depend on its role, never on its neighbours.
func (a Activations) modeRole(t gguf.Type, gen, simd bool) actMode {
	if gen {
		return a.mode(t, 1, simd)
	}
	return a.mode(t, 2, simd)
}

// MatMulRoles is MatMul for n vectors of which gen[j] marks the generated
// rows (nil: none): each row is computed in its role's mode (modeRole),
// so that its result is the same bits alone or in any batch.
func (p *Pool) MatMulRoles(y []float32, w *Matrix, x []float32, n int, gen []bool) {
	if n <= 0 {
		return
	}
	rb := w.Type.RowBytes(w.Cols)
	if len(x) < n*w.Cols || len(y) < n*w.Rows || len(w.Data) < w.Rows*rb || w.Cols%w.Type.BlockSize() != 0 || (gen != nil && len(gen) < n) {
		panic(fmt.Sprintf("cpu.MatMulRoles: %s [%d, %d] with %d bytes, x %d, y %d, n %d, roles %d", w.Type, w.Cols, w.Rows, len(w.Data), len(x), len(y), n, len(gen)))
	}
	simd := p.simd()
	ng := 0
	for j := range n {
		if gen != nil && gen[j] {
			ng++
		}
	}
	if ng == 0 || ng == n {
		p.mm.matmul(p, y, w, x, n, p.Act.modeRole(w.Type, ng == n, simd))
		return
	}
	// Mixed roles: each role's rows gathered into scratch, multiplied in
	// their mode, and scattered back.
	r := &p.roles
	for _, g := range []bool{true, false} {
		m := ng
		if !g {
			m = n - ng
		}
		r.x = grow(r.x, m*w.Cols)
		r.y = grow(r.y, m*w.Rows)
		i := 0
		for j := range n {
			if gen[j] == g {
				copy(r.x[i*w.Cols:(i+1)*w.Cols], x[j*w.Cols:(j+1)*w.Cols])
				i++
			}
		}
		p.mm.matmul(p, r.y, w, r.x, m, p.Act.modeRole(w.Type, g, simd))
		i = 0
		for j := range n {
			if gen[j] == g {
				copy(y[j*w.Rows:(j+1)*w.Rows], r.y[i*w.Rows:(i+1)*w.Rows])
				i++
			}
		}
	}
}

// roleScratch holds MatMulRoles' gathered rows.
type roleScratch struct{ x, y []float32 }
