package cpu

import (
	"math"

	"greta/quant"
)

// actK is one block of 256 activations quantized to 8 bits for the K-quant
// integer kernels, like ggml's Q8_K but with the quants in the order the
// weight format's SIMD kernel reads them (see k4Pos) and with precomputed
// partial sums. value = d·q.
type actK struct {
	qs   [256]int8   // quants, natural or K4 order
	d    float32     // scale
	bs16 [16]int16   // Σ of each run of 16 quants, natural order
	ms   [8]float32  // d·Σ of each run of 32 quants, natural order
	ms16 [16]float32 // d·Σ of each run of 16 quants, natural order
}

// act32 is one block of 32 activations quantized to 8 bits for the Q8_0
// and Q4_0 kernels: Q8_0 with a float32 scale and the sum of its quants.
type act32 struct {
	qs  [32]int8
	d   float32
	sum int32
}

// k4Pos maps a value's index within a block of 256 to its position in K4
// order: each half of 128 is stored as [0..31, 64..95, 32..63, 96..127],
// which is how Q4_K and Q5_K lay out their nibbles in 64-byte loads (low
// nibbles of bytes 0..63 are values 0..31 and 64..95).
var k4Pos = func() (p [256]uint8) {
	for i := range p {
		o := i % 128
		switch {
		case o >= 32 && o < 64:
			o += 32
		case o >= 64 && o < 96:
			o -= 32
		}
		p[i] = uint8(i/128*128 + o)
	}
	return p
}()

// quantizeKGeneric quantizes len(x) values (a multiple of 256) into dst as
// ggml's quantize_row_q8_K_ref does (scale −127/max, round half to even),
// storing the quants in K4 order if k4 is set.
func quantizeKGeneric(dst []actK, x []float32, k4 bool) {
	for i := range len(x) / quant.QK_K {
		xb := x[i*quant.QK_K : (i+1)*quant.QK_K]
		a := &dst[i]
		var amax, mx float32
		for _, v := range xb {
			if av := float32(math.Abs(float64(v))); av > amax {
				amax, mx = av, v
			}
		}
		if amax == 0 {
			*a = actK{}
			continue
		}
		iscale := -127 / mx
		a.d = 1 / iscale
		var q [256]int8
		for j, v := range xb {
			q[j] = int8(min(127, int32(math.RoundToEven(float64(iscale*v)))))
		}
		for j := range 16 {
			s := 0
			for _, v := range q[16*j : 16*j+16] {
				s += int(v)
			}
			a.bs16[j] = int16(s)
		}
		for j := range 8 {
			a.ms[j] = a.d * float32(int(a.bs16[2*j])+int(a.bs16[2*j+1]))
		}
		for j := range 16 {
			a.ms16[j] = a.d * float32(a.bs16[j])
		}
		if k4 {
			for j, v := range q {
				a.qs[k4Pos[j]] = v
			}
		} else {
			a.qs = q
		}
	}
}

// quantize32Generic quantizes len(x) values (a multiple of 32) into dst:
// d = amax/127, q = round(x·(127/amax)) half to even.
func quantize32Generic(dst []act32, x []float32) {
	for i := range len(x) / 32 {
		xb := x[i*32 : (i+1)*32]
		a := &dst[i]
		var amax float32
		for _, v := range xb {
			amax = max(amax, float32(math.Abs(float64(v))))
		}
		a.d = amax / 127
		var id float32
		if amax != 0 {
			id = 127 / amax
		}
		var s int32
		for j, v := range xb {
			q := int8(math.RoundToEven(float64(v * id)))
			a.qs[j] = q
			s += int32(q)
		}
		a.sum = s
	}
}

// sums32Generic writes the sum of each run of 32 values of x to xs.
func sums32Generic(xs, x []float32) {
	for i := range xs {
		var s float32
		for _, v := range x[32*i : 32*i+32] {
			s += v
		}
		xs[i] = s
	}
}
