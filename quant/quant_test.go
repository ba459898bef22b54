package quant

import (
	"math"
	"math/rand/v2"
	"testing"

	"greta/gguf"
)

func TestTableMatchesGGUF(t *testing.T) {
	for typ, f := range formats {
		if f.blockSize != typ.BlockSize() || f.typeSize != typ.TypeSize() {
			t.Errorf("%s: table says %d values in %d bytes, gguf says %d in %d", typ, f.blockSize, f.typeSize, typ.BlockSize(), typ.TypeSize())
		}
	}
	for _, typ := range []gguf.Type{gguf.F32, gguf.F16, gguf.BF16, gguf.Q8_0, gguf.Q4_0, gguf.Q4_K, gguf.Q5_K, gguf.Q6_K} {
		if !Supported(typ) {
			t.Errorf("%s is not supported", typ)
		}
	}
	if Supported(gguf.Q2_K) {
		t.Error("Q2_K claims support")
	}
}

func TestDequantizeErrors(t *testing.T) {
	if err := Dequantize(gguf.Q2_K, make([]float32, 256), make([]byte, 84)); err == nil {
		t.Error("unsupported type: no error")
	}
	if err := Dequantize(gguf.Q4_K, make([]float32, 100), make([]byte, 144)); err == nil {
		t.Error("partial block: no error")
	}
	if err := Dequantize(gguf.Q4_K, make([]float32, 512), make([]byte, 287)); err == nil {
		t.Error("short source: no error")
	}
}

// f16Value is an independent definition of binary16: (-1)^s·2^(e-15)·1.m,
// or 2^-14·0.m for e == 0.
func f16Value(h uint16) float64 {
	s := 1.0
	if h&0x8000 != 0 {
		s = -1
	}
	e, m := int(h>>10&0x1f), float64(h&0x3ff)
	switch e {
	case 0:
		return s * math.Ldexp(m, -24)
	case 31:
		if m == 0 {
			return s * math.Inf(1)
		}
		return math.NaN()
	}
	return s * math.Ldexp(1024+m, e-25)
}

func TestF16AllValues(t *testing.T) {
	for i := 0; i < 1<<16; i++ {
		h := uint16(i)
		f := F16ToF32(h)
		want := f16Value(h)
		if math.IsNaN(want) {
			if !math.IsNaN(float64(f)) {
				t.Fatalf("%#04x: got %v, want NaN", h, f)
			}
			if back := F32ToF16(f); back != h|0x200 {
				t.Fatalf("NaN %#04x came back as %#04x, want the quiet %#04x", h, back, h|0x200)
			}
			continue
		}
		if float64(f) != want || math.Signbit(float64(f)) != (h&0x8000 != 0) {
			t.Fatalf("%#04x: got %v, want %v", h, f, want)
		}
		if back := F32ToF16(f); back != h {
			t.Fatalf("%#04x -> %v -> %#04x", h, f, back)
		}
	}
}

// TestF32ToF16Rounding checks round-to-nearest-even against the decoded
// neighbours, on random bit patterns and on exact midpoints.
func TestF32ToF16Rounding(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	check := func(f float32) {
		h := F32ToF16(f)
		got := f16Value(h)
		x := float64(f)
		if math.IsNaN(x) {
			return
		}
		if math.Abs(x) >= 65520 { // half-way between max (65504) and 2^16 rounds to Inf
			if !math.IsInf(got, 0) || math.Signbit(got) != math.Signbit(x) {
				t.Fatalf("%v -> %#04x, want Inf", f, h)
			}
			return
		}
		// Neighbours of h toward and away from zero.
		for _, nb := range []uint16{h - 1, h + 1} {
			if nb&0x7fff >= 0x7c00 || h&0x7fff == 0 && nb == h-1 {
				continue
			}
			v := f16Value(nb)
			dg, dn := math.Abs(x-got), math.Abs(x-v)
			if dn < dg || dn == dg && h&1 == 1 {
				t.Fatalf("%v -> %#04x (%v), but %#04x (%v) is nearer or even", f, h, got, nb, v)
			}
		}
	}
	for range 200000 {
		check(math.Float32frombits(r.Uint32()))
		// Values in and near the binary16 range, including subnormals.
		check(float32(math.Ldexp(r.Float64()*2-1, r.IntN(44)-28)))
	}
	for i := 0; i < 0x7bff; i++ { // every midpoint between finite halves
		m := (f16Value(uint16(i)) + f16Value(uint16(i+1))) / 2
		check(float32(m))
		check(float32(-m))
	}
}

func TestBF16(t *testing.T) {
	for i := 0; i < 1<<16; i++ {
		b := uint16(i)
		f := BF16ToF32(b)
		if math.Float32bits(f) != uint32(b)<<16 {
			t.Fatalf("%#04x -> %#08x", b, math.Float32bits(f))
		}
		if math.IsNaN(float64(f)) {
			if back := F32ToBF16(f); back != b|64 {
				t.Fatalf("NaN %#04x -> %#04x", b, back)
			}
		} else if back := F32ToBF16(f); back != b {
			t.Fatalf("%#04x -> %v -> %#04x", b, f, back)
		}
	}
	r := rand.New(rand.NewPCG(3, 4))
	for range 200000 {
		u := r.Uint32()
		f := math.Float32frombits(u)
		if math.IsNaN(float64(f)) {
			continue
		}
		b := F32ToBF16(f)
		lo, hi := u&^0xffff, u&^0xffff+0x10000 // truncation and the next bf16 away from zero
		var want uint32
		switch rem := u & 0xffff; {
		case rem < 0x8000:
			want = lo
		case rem > 0x8000:
			want = hi
		case (lo>>16)&1 == 0:
			want = lo
		default:
			want = hi
		}
		if uint32(b)<<16 != want {
			t.Fatalf("%#08x -> %#04x, want %#04x", u, b, want>>16)
		}
	}
}

// randomBlocks returns n blocks of type typ with random content that is
// valid (finite binary16 scales of a sensible size).
func randomBlocks(r *rand.Rand, typ gguf.Type, values int) []byte {
	switch typ {
	case gguf.F32, gguf.F16, gguf.BF16:
		x := make([]float32, values)
		for i := range x {
			x[i] = float32(r.NormFloat64())
		}
		b := make([]byte, typ.RowBytes(values))
		if err := Quantize(typ, b, x); err != nil {
			panic(err)
		}
		return b
	}
	b := make([]byte, typ.RowBytes(values))
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	ts := typ.TypeSize()
	scale := func(off int) { // a positive or negative binary16 around 1e-3..1e-2
		h := F32ToF16(float32((r.Float64()*2 - 1) * 0.01))
		b[off], b[off+1] = byte(h), byte(h>>8)
	}
	for blk := 0; blk < len(b)/ts; blk++ {
		o := blk * ts
		switch typ {
		case gguf.Q8_0, gguf.Q4_0:
			scale(o)
		case gguf.Q4_K, gguf.Q5_K:
			scale(o)
			scale(o + 2)
		case gguf.Q6_K:
			scale(o + Q6_KOffD)
		case gguf.Q8_K:
			f := math.Float32bits(float32(r.Float64() * 0.01))
			b[o], b[o+1], b[o+2], b[o+3] = byte(f), byte(f>>8), byte(f>>16), byte(f>>24)
		}
	}
	return b
}

// TestDotRef checks DotRef against Σ Dequantize(w)·x in float64.
func TestDotRef(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	for typ := range formats {
		const n = 1024
		row := randomBlocks(r, typ, n)
		x := make([]float32, n)
		for i := range x {
			x[i] = float32(r.NormFloat64())
		}
		w := make([]float32, n)
		if err := Dequantize(typ, w, row); err != nil {
			t.Fatal(err)
		}
		var want float64
		for i := range w {
			want += float64(w[i]) * float64(x[i])
		}
		if got := DotRef(typ, row, x); math.Abs(got-want) > 1e-12*math.Abs(want)+1e-300 {
			t.Errorf("%s: DotRef %v, want %v", typ, got, want)
		}
	}
}

// TestQuantizeRoundTrip bounds the error of the quantizers on random data.
// With step d: Q8_K within d/2; Q8_0 within d/2 plus 127·|d − fp16(d)| ≤
// 127·2⁻¹¹·d, since values are quantized with the float32 d and decoded with
// the binary16 one; Q4_0 within |d| (x = −max clips from 16 to 15) plus
// 8·2⁻¹¹·|d| for the same reason.
func TestQuantizeRoundTrip(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 8))
	x := make([]float32, 4096)
	for i := range x {
		x[i] = float32(r.NormFloat64()) * float32(math.Exp(r.NormFloat64()))
	}
	x[5] = 0
	clear(x[256:512]) // an all-zero block of each format
	for _, c := range []struct {
		typ  gguf.Type
		q    func([]byte, []float32)
		step func(blk []float32) float64 // the bound for a block
	}{
		{gguf.Q8_0, QuantizeQ8_0, func(b []float32) float64 { return absMax(b) / 127 * (0.5 + 127.0/2048) * (1 + 1e-6) }},
		{gguf.Q4_0, QuantizeQ4_0, func(b []float32) float64 { return absMax(b) / 8 * (1 + 8.0/2048) * (1 + 1e-6) }},
		{gguf.Q8_K, QuantizeQ8_K, func(b []float32) float64 { return absMax(b) / 127 * 0.5 * (1 + 1e-6) }},
	} {
		buf := make([]byte, c.typ.RowBytes(len(x)))
		c.q(buf, x)
		y := make([]float32, len(x))
		if err := Dequantize(c.typ, y, buf); err != nil {
			t.Fatal(err)
		}
		bs := c.typ.BlockSize()
		for b := 0; b < len(x)/bs; b++ {
			bound := c.step(x[b*bs : (b+1)*bs])
			for i := b * bs; i < (b+1)*bs; i++ {
				if e := math.Abs(float64(y[i]) - float64(x[i])); e > bound {
					t.Fatalf("%s value %d: %v -> %v, error %g > %g", c.typ, i, x[i], y[i], e, bound)
				}
			}
		}
	}
	// Q8_K's block sums must be the sums of its quants.
	buf := make([]byte, gguf.Q8_K.RowBytes(len(x)))
	QuantizeQ8_K(buf, x)
	for b := 0; b < len(x)/QK_K; b++ {
		blk := buf[b*blockQ8_KSize:]
		for j := range 16 {
			s := 0
			for _, q := range blk[Q8_KOffQs+16*j : Q8_KOffQs+16*j+16] {
				s += int(int8(q))
			}
			if got := int(int16(uint16(blk[Q8_KOffBsums+2*j]) | uint16(blk[Q8_KOffBsums+2*j+1])<<8)); got != s {
				t.Fatalf("block %d bsum %d = %d, want %d", b, j, got, s)
			}
		}
	}
}

func absMax(x []float32) float64 {
	var m float64
	for _, v := range x {
		m = max(m, math.Abs(float64(v)))
	}
	return m
}

func TestConvert(t *testing.T) {
	r := rand.New(rand.NewPCG(9, 10))
	const n = 3 * 4096
	for _, from := range []gguf.Type{gguf.F32, gguf.F16, gguf.BF16} {
		src := randomBlocks(r, from, n)
		for _, to := range []gguf.Type{gguf.Q8_0, gguf.Q4_0} {
			got, err := Convert(to, from, src, n)
			if err != nil {
				t.Fatal(err)
			}
			x := make([]float32, n)
			Dequantize(from, x, src)
			want := make([]byte, to.RowBytes(n))
			Quantize(to, want, x)
			if string(got) != string(want) {
				t.Errorf("Convert(%s, %s) differs from Quantize(Dequantize)", to, from)
			}
		}
	}
	if _, err := Convert(gguf.Q4_K, gguf.F32, make([]byte, 1024), 256); err == nil {
		t.Error("Convert to Q4_K: no error")
	}
	if _, err := Convert(gguf.Q8_0, gguf.F32, make([]byte, 40), 10); err == nil {
		t.Error("Convert of 10 values to Q8_0: no error")
	}
}
