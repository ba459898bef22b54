package cpu

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"

	"greta/gguf"
)

// roleKernelCases are the kernel sets MatMulRoles can run on this machine:
// the pure-Go twins, the SIMD kernels and, where the CPU has VNNI, the SIMD
// kernels without the assembly (what a CPU without VNNI runs).
func roleKernelCases(t testing.TB) []struct {
	name            string
	generic, novnni bool
} {
	cs := []struct {
		name            string
		generic, novnni bool
	}{{"generic", true, false}}
	if simdKernels != nil {
		cs = append(cs, struct {
			name            string
			generic, novnni bool
		}{"simd", false, false})
		if hasVNNIKernels() {
			cs = append(cs, struct {
				name            string
				generic, novnni bool
			}{"simd-novnni", false, true})
		}
	} else {
		t.Logf("SIMD kernels not built or not supported here; testing the pure-Go twins only")
	}
	return cs
}

// hasVNNIKernels reports whether the SIMD kernels include the assembly.
func hasVNNIKernels() bool { return simdKernels != nil && simdKernels.gemmV != nil }

// TestMatMulRolesInvariant: every row of a MatMulRoles call gives the same
// bits as that row computed alone in its role, whatever the number of rows,
// the row's index and the other rows' roles (batch invariance, issue 12),
// for every type, activation setting and kernel set; and the rows computed
// alone agree with the float64 oracle within the bound of their mode.
func TestMatMulRolesInvariant(t *testing.T) {
	r := rand.New(rand.NewPCG(31, 32))
	p := NewPool(2)
	defer p.Close()
	// 100 rows: not a multiple of the tiles (8, 12) nor of the VNNI
	// kernel's 3 rows; 100×768 is above serialWork, so even one vector
	// runs on the pool. 13×256: one vector runs on the caller alone,
	// larger batches on the pool.
	const pool = 64
	ns := []int{1, 2, 3, 4, 5, 7, 8, 15, 16, 17, 33, 64}
	if testing.Short() {
		ns = []int{1, 2, 4, 5, 17, 64}
	}
	for _, sh := range []struct{ rows, cols int }{{100, 768}, {13, 256}} {
		rows, cols := sh.rows, sh.cols
		x := randomVec(r, pool*cols)
		for _, kc := range roleKernelCases(t) {
			p.Generic, p.noVNNI = kc.generic, kc.novnni
			for _, typ := range allTypes {
				w := randomMatrix(r, typ, rows, cols)
				ref := refMatMul(w, x, pool)
				for _, act := range []Activations{ActAuto, ActF32, ActQ8, ActQ15} {
					p.Act = act
					name := fmt.Sprintf("%s/%s/%dx%d/%v", kc.name, typ, rows, cols, act)
					// alone[g][j]: row j of the pool computed alone in role g.
					var alone [2][]float32
					for g := range 2 {
						alone[g] = make([]float32, pool*rows)
						for j := range pool {
							p.MatMulRoles(alone[g][j*rows:(j+1)*rows], w, x[j*cols:(j+1)*cols], 1, []bool{g == 1})
						}
						mode := act.modeRole(typ, g == 1, p.simd())
						bound := nmseF32
						switch mode {
						case modeQ8:
							bound = nmseQ8
						case modeQ15:
							bound = nmseQ15
						}
						if e := nmse(alone[g], ref); !(e <= bound) {
							t.Errorf("%s gen=%v (%v): NMSE %.3g against the oracle > %.0g", name, g == 1, mode, e, bound)
						}
					}
					for _, roles := range []string{"prompt", "gen", "mixed"} {
						for _, n := range ns {
							// Rows of the pool from an offset that depends on n,
							// so that a pool row sits at other indices.
							off := (7 * n) % pool
							xb := make([]float32, n*cols)
							gen := make([]bool, n)
							src := make([]int, n)
							for i := range n {
								src[i] = (off + i) % pool
								copy(xb[i*cols:(i+1)*cols], x[src[i]*cols:(src[i]+1)*cols])
								gen[i] = roles == "gen" || roles == "mixed" && r.IntN(2) == 0
							}
							y := make([]float32, n*rows)
							p.MatMulRoles(y, w, xb, n, gen)
							bad := 0
							for i := range n {
								g := 0
								if gen[i] {
									g = 1
								}
								want := alone[g][src[i]*rows : (src[i]+1)*rows]
								for k, v := range y[i*rows : (i+1)*rows] {
									if math.Float32bits(v) != math.Float32bits(want[k]) {
										if bad == 0 {
											t.Errorf("%s %s n=%d: row %d (gen=%v) output %d is %v, alone %v", name, roles, n, i, gen[i], k, v, want[k])
										}
										bad++
									}
								}
							}
							if bad > 1 {
								t.Errorf("%s %s n=%d: %d outputs differ in all", name, roles, n, bad)
							}
						}
					}
				}
			}
		}
	}
}

// TestActModeRole: a row's mode follows its role, not the batch size.
func TestActModeRole(t *testing.T) {
	for _, c := range []struct {
		a    Activations
		t    gguf.Type
		gen  bool
		simd bool
		want actMode
	}{
		{ActAuto, gguf.Q4_K, true, true, modeQ15}, {ActAuto, gguf.Q4_K, false, true, modeQ8},
		{ActAuto, gguf.Q8_0, true, true, modeF32}, {ActAuto, gguf.Q8_0, false, true, modeQ8},
		{ActAuto, gguf.Q6_K, false, false, modeF32}, {ActQ15, gguf.Q6_K, false, true, modeQ15},
	} {
		if got := c.a.modeRole(c.t, c.gen, c.simd); got != c.want {
			t.Errorf("%v.modeRole(%s, gen=%v, simd=%v) = %v, want %v", c.a, c.t, c.gen, c.simd, got, c.want)
		}
	}
}

// TestQ15RowsVAgree: the multi-vector decode kernels give each vector the
// bits of the single-vector kernel, and write nothing else.
func TestQ15RowsVAgree(t *testing.T) {
	if simdKernels == nil || simdKernels.q15RowsV[gguf.Q4_K] == nil {
		t.Skip("no multi-vector decode kernels here")
	}
	r := rand.New(rand.NewPCG(33, 34))
	for _, typ := range []gguf.Type{gguf.Q4_K, gguf.Q6_K} {
		for _, sh := range []struct{ nr, cols int }{{1, 256}, {5, 512}, {13, 2048}, {8, 5632}} {
			w := randomMatrix(r, typ, sh.nr, sh.cols)
			rb, nb := typ.RowBytes(sh.cols), sh.cols/256
			for nv := 1; nv <= 4; nv++ {
				astr, ystr := nb+1, sh.nr+3 // gaps between vectors
				a := growAligned([]actK15(nil), nv*astr)
				for v := range nv {
					x := randomVec(r, sh.cols)
					simdKernels.quantizeK15(a[v*astr:v*astr+nb], x, simdKernels.k4[typ])
				}
				y := make([]float32, nv*ystr)
				for i := range y {
					y[i] = -7
				}
				if nv == 1 {
					continue
				}
				a16 := growAligned([]actK16(nil), nv*astr)
				toK16(a16, a)
				simdKernels.q15RowsV[typ](y, ystr, sh.nr, w.Data, rb, a16, astr, nv)
				for v := range nv {
					want := make([]float32, sh.nr)
					simdKernels.q15Rows[typ](want, w.Data, rb, a[v*astr:v*astr+nb])
					for i := range ystr {
						got := y[v*ystr+i]
						if i >= sh.nr {
							if got != -7 {
								t.Fatalf("%s %dx%d nv=%d: wrote y[%d] of vector %d past the rows", typ, sh.nr, sh.cols, nv, i, v)
							}
							continue
						}
						if math.Float32bits(got) != math.Float32bits(want[i]) {
							t.Fatalf("%s %dx%d nv=%d: vector %d row %d is %v, alone %v", typ, sh.nr, sh.cols, nv, v, i, got, want[i])
						}
					}
				}
			}
		}
	}
}
