package cpu

// Vector helpers of the non-matmul ops (attention, softmax, SwiGLU,
// RMSNorm, residual adds). vec holds the pure-Go versions; the SIMD build
// replaces them with AVX-512 ones (vecops_simd.go), and tests compare both.
type vecKernels struct {
	dot  func(a, b []float32) float32
	axpy func(dst []float32, alpha float32, x []float32) // dst += alpha·x
	// expSum sets x[i] = exp(x[i] − m) and returns their sum.
	expSum func(x []float32, m float32) float32
	// swiglu sets g[i] = silu(g[i])·u[i].
	swiglu func(g, u []float32)
	// sumSq returns Σ x² in float64 (as ggml's rms_norm).
	sumSq func(x []float32) float64
	// scaleMul sets out[i] = x[i]·s·w[i].
	scaleMul func(out, x []float32, s float32, w []float32)
	// add sets dst[i] += x[i].
	add func(dst, x []float32)
	// attnScores and attnValues are attention's two products
	// (attention.go's generic versions document them).
	attnScores func(s, q, kt []float32, scale float32)
	attnValues func(out, w []float32, inv float32, v []float32, stride int)
	attnGroup  func(out, q, kc, vc []float32, kp, vp []int, stride, n, hd int, scale float32, mask attnMask, scores []float32)
}

var genericVec = vecKernels{
	dot:      dot,
	axpy:     axpy,
	expSum:   expSumGeneric,
	swiglu:   swigluGeneric,
	sumSq:    sumSqGeneric,
	scaleMul: scaleMulGeneric,
	add:      addGeneric,

	attnScores: attnScoresGeneric,
	attnValues: attnValuesGeneric,
	attnGroup:  attnGroupGeneric,
}

// vec is what the ops use: genericVec, or simdVecKernels where built and
// supported.
var vec = &genericVec

// simdVecKernels is set by vecops_simd.go on CPUs with AVX-512.
var simdVecKernels *vecKernels

func expSumGeneric(x []float32, m float32) float32 {
	var sum float32
	for i, v := range x {
		e := expf(v - m)
		x[i] = e
		sum += e
	}
	return sum
}

func swigluGeneric(g, u []float32) {
	u = u[:len(g)]
	for i, v := range g {
		g[i] = v / (1 + expf(-v)) * u[i]
	}
}

func sumSqGeneric(x []float32) float64 {
	var ss float64
	for _, v := range x {
		ss += float64(v) * float64(v)
	}
	return ss
}

func scaleMulGeneric(out, x []float32, s float32, w []float32) {
	x, w = x[:len(out)], w[:len(out)]
	for i, v := range x {
		out[i] = v * s * w[i]
	}
}

func addGeneric(dst, x []float32) {
	x = x[:len(dst)]
	for i, v := range x {
		dst[i] += v
	}
}
