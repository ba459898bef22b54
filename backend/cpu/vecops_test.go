package cpu

import (
	"math"
	"math/rand/v2"
	"testing"
)

// TestVecOps checks every vector helper (pure Go and SIMD) against float64
// arithmetic, on lengths that exercise the scalar tails.
func TestVecOps(t *testing.T) {
	sets := map[string]*vecKernels{"generic": &genericVec}
	if simdVecKernels != nil {
		sets["simd"] = simdVecKernels
	}
	r := rand.New(rand.NewPCG(31, 32))
	for name, k := range sets {
		for _, n := range []int{1, 15, 16, 33, 64, 100, 2048} {
			a, b := randomVec(r, n), randomVec(r, n)
			var want float64
			for i := range a {
				want += float64(a[i]) * float64(b[i])
			}
			if got := k.dot(a, b); math.Abs(float64(got)-want) > 1e-5*math.Sqrt(float64(n)) {
				t.Errorf("%s dot n=%d: %v, want %v", name, n, got, want)
			}
			dst := append([]float32(nil), a...)
			k.axpy(dst, 0.5, b)
			for i := range dst {
				if w := a[i] + 0.5*b[i]; math.Abs(float64(dst[i]-w)) > 1e-6 {
					t.Fatalf("%s axpy n=%d [%d]: %v, want %v", name, n, i, dst[i], w)
				}
			}
			dst = append(dst[:0], a...)
			k.add(dst, b)
			for i := range dst {
				if dst[i] != a[i]+b[i] {
					t.Fatalf("%s add n=%d [%d]", name, n, i)
				}
			}
			var ss float64
			for _, v := range a {
				ss += float64(v) * float64(v)
			}
			if got := k.sumSq(a); math.Abs(got-ss) > 1e-12*ss {
				t.Errorf("%s sumSq n=%d: %v, want %v", name, n, got, ss)
			}
			out := make([]float32, n)
			k.scaleMul(out, a, 0.75, b)
			for i := range out {
				if w := float64(a[i]) * 0.75 * float64(b[i]); math.Abs(float64(out[i])-w) > 1e-6*math.Abs(w)+1e-30 {
					t.Fatalf("%s scaleMul n=%d [%d]: %v, want %v", name, n, i, out[i], w)
				}
			}
			// softmax numerators: x in [−100, 0] after subtracting the max
			x := make([]float32, n)
			for i := range x {
				x[i] = float32(r.Float64()*100 - 90)
			}
			x0 := append([]float32(nil), x...)
			m := float32(10)
			sum := k.expSum(x, m)
			var wsum float64
			for i := range x {
				w := math.Exp(float64(x0[i] - m))
				wsum += w
				if math.Abs(float64(x[i])-w) > 3e-7*w+0x1p-126 { // below the smallest normal: 0
					t.Fatalf("%s expSum n=%d [%d]: exp(%v) = %v, want %v", name, n, i, x0[i]-m, x[i], w)
				}
			}
			if math.Abs(float64(sum)-wsum) > 1e-6*wsum {
				t.Errorf("%s expSum n=%d: sum %v, want %v", name, n, sum, wsum)
			}
			g := make([]float32, n)
			for i := range g {
				g[i] = float32(r.NormFloat64() * 30)
			}
			g0 := append([]float32(nil), g...)
			k.swiglu(g, b)
			for i := range g {
				v := float64(g0[i])
				w := v / (1 + math.Exp(-v)) * float64(b[i]) // exp(−v) past float32 range: ±0 or −0·b
				if math.Abs(float64(g[i])-w) > 1e-6*math.Abs(w)+1e-30 {
					t.Fatalf("%s swiglu n=%d [%d]: silu(%v)·%v = %v, want %v", name, n, i, g0[i], b[i], g[i], w)
				}
			}
		}
	}
}

// TestAttnKernels: attention's two products (SIMD and generic) against
// float64 sums, for head sizes that are and are not multiples of 16 and
// position counts of 1 to 7 blocks.
func TestAttnKernels(t *testing.T) {
	sets := map[string]*vecKernels{"generic": &genericVec}
	if simdVecKernels != nil {
		sets["simd"] = simdVecKernels
	}
	r := rand.New(rand.NewPCG(33, 34))
	for name, k := range sets {
		for _, hd := range []int{8, 64, 72, 128} {
			for _, nb := range []int{1, 3, 4, 7} {
				q := randomVec(r, hd)
				kt := randomVec(r, nb*hd*16)
				s := make([]float32, nb*16)
				k.attnScores(s, q, kt, 0.125)
				for p := range s {
					var want float64
					for d := range hd {
						want += float64(q[d]) * float64(kt[(p/16*hd+d)*16+p%16])
					}
					want *= 0.125
					if math.Abs(float64(s[p])-want) > 1e-5*math.Sqrt(float64(hd)) {
						t.Fatalf("%s attnScores hd %d nb %d [%d]: %v, want %v", name, hd, nb, p, s[p], want)
					}
				}
				const stride = 200
				n := nb*16 - 5
				v := randomVec(r, n*stride+hd)
				w := randomVec(r, n)
				out := randomVec(r, hd) // overwritten
				k.attnValues(out, w, 0.5, v, stride)
				for c := range hd {
					var want float64
					for p := range n {
						want += float64(w[p]) * float64(v[p*stride+c])
					}
					want *= 0.5
					if math.Abs(float64(out[c])-want) > 1e-5*math.Sqrt(float64(n)) {
						t.Fatalf("%s attnValues hd %d n %d [%d]: %v, want %v", name, hd, n, c, out[c], want)
					}
				}
			}
		}
	}
}

// TestAttnGroup: attention of the query heads sharing one KV head (the
// assembly path for head size 64 and 8 or 16 heads, the vector one
// otherwise) against float64 softmax attention, over pages in shuffled
// order.
func TestAttnGroup(t *testing.T) {
	sets := map[string]*vecKernels{"generic": &genericVec}
	if simdVecKernels != nil {
		sets["simd"] = simdVecKernels
	}
	r := rand.New(rand.NewPCG(35, 36))
	for name, k := range sets {
		for _, c := range []struct{ hd, nh int }{{64, 8}, {64, 16}, {64, 4}, {8, 3}, {48, 2}} {
			for _, mc := range []struct {
				n    int
				mask attnMask
			}{{1, attnMask{}}, {5, attnMask{}}, {16, attnMask{}}, {17, attnMask{}}, {100, attnMask{}},
				{17, attnMask{skip: 3}}, {100, attnMask{skip: 15, softcap: 0.5}}, {5, attnMask{softcap: 0.3}}} {
				n, mask := mc.n, mc.mask
				n16 := (n + 15) / 16 * 16
				const stride = 300
				q := randomVec(r, c.nh*c.hd)
				kt := randomVec(r, n16*c.hd)
				v := randomVec(r, n16*stride)
				out := randomVec(r, c.nh*c.hd)
				scores := make([]float32, c.nh*n16+attnScratch)
				perm := r.Perm(n16 / 16) // logical page j is physical page perm[j]
				kp, vp := make([]int, len(perm)), make([]int, len(perm))
				for j, pg := range perm {
					kp[j], vp[j] = pg*16*c.hd, pg*16*stride
				}
				// at maps logical position p to its physical one.
				at := func(p int) int { return perm[p/16]*16 + p%16 }
				k.attnGroup(out, q, kt, v, kp, vp, stride, n, c.hd, 0.125, mask, scores)
				for h := range c.nh {
					s := make([]float64, n)
					m := math.Inf(-1)
					for p := mask.skip; p < n; p++ {
						for d := range c.hd {
							s[p] += float64(q[h*c.hd+d]) * float64(kt[(at(p)/16*c.hd+d)*16+p%16])
						}
						s[p] *= 0.125
						if mask.softcap > 0 {
							s[p] = float64(mask.softcap) * math.Tanh(s[p]/float64(mask.softcap))
						}
						m = math.Max(m, s[p])
					}
					var sum float64
					for p := range s {
						if p < mask.skip {
							s[p] = 0
							continue
						}
						s[p] = math.Exp(s[p] - m)
						sum += s[p]
					}
					for d := range c.hd {
						var want float64
						for p := range n {
							want += s[p] / sum * float64(v[at(p)*stride+h*0+d])
						}
						if got := out[h*c.hd+d]; math.Abs(float64(got)-want) > 1e-5 {
							t.Fatalf("%s hd %d heads %d n %d mask %+v: out[%d][%d] = %v, want %v", name, c.hd, c.nh, n, mask, h, d, got, want)
						}
					}
				}
			}
		}
	}
}

// TestExpVRange: the SIMD exp over the whole float32 input range that
// matters, against math.Exp (relative error ≤ 3e-7, like expf) and at the
// edges.
func TestExpVRange(t *testing.T) {
	if simdVecKernels == nil {
		t.Skip("no SIMD vector kernels")
	}
	x := make([]float32, 1<<16)
	for i := range x {
		x[i] = -87 + 175.3*float32(i)/float32(len(x))
	}
	x = append(x, -87.3, -88, -100, 88, 88.3, 89, 100, 0, -1e30, 1e30)
	y := append([]float32(nil), x...)
	simdVecKernels.expSum(y, 0)
	for i, v := range x {
		w := math.Exp(float64(v))
		switch {
		case v < -87.33654:
			if y[i] != 0 {
				t.Errorf("exp(%v) = %v, want 0", v, y[i])
			}
		case v > 88.37626:
			if !math.IsInf(float64(y[i]), 1) {
				t.Errorf("exp(%v) = %v, want +Inf", v, y[i])
			}
		case math.Abs(float64(y[i])-w) > 3e-7*w:
			t.Errorf("exp(%v) = %v, want %v", v, y[i], w)
		}
	}
}
