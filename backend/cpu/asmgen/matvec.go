package main

import "fmt"

// matvecMulti writes the multi-vector decode kernels (matvec_vnni_v_amd64.s):
//
//	q4kq15RowsV{2,3,4}(y *float32, ystride int, rows *byte, rowBytes, nrows int, a *actK15, astride, nb int)
//	q6kq15RowsV{2,3,4}(same)
//
// For V vectors (actK15 blocks astride bytes apart) and nrows rows they set
// y[v·ystride + 4·i] (strides in bytes) to row i times vector v. They are
// the hand-written q4kq15Rows / q6kq15Rows (matvec_vnni_amd64.s) with the
// weight decoding shared: each block's quants and scales are unpacked once
// and used by V vectors. Per vector the instructions after the integer
// sums are those of the single-vector kernel, in the same order, and the
// integer sums land in the same dword lanes, so every vector's result has
// the bits of the single-vector kernel (TestQ15RowsVAgree): a generated
// row's output does not depend on how many rows decode beside it.
func matvecMulti() {
	b.WriteString(`
// actK15 field offsets (checked in matvec_vnni.go) and the prefetch
// distance, as in matvec_vnni_amd64.s.
#define PFD 8192
#define A_HI 0
#define A_LO 256
#define A_D 512
#define A_MS 516
#define A_MS16 548

DATA nibv<>+0(SB)/8, $0x0f0f0f0f0f0f0f0f
GLOBL nibv<>(SB), RODATA|NOPTR, $8
`)
	// VPSHUFB indices of the Q4_K scales (see matvec_vnni_amd64.s).
	for i, ab := range [][2]int{{0, 2}, {1, 3}, {4, 6}, {5, 7}} {
		for k := range 16 {
			s := ab[0]
			if k >= 8 {
				s = ab[1]
			}
			fmt.Fprintf(&b, "DATA q4idxv%d<>+%d(SB)/4, $0x%08x\n", i, 4*k, 0x80808000+s)
		}
		fmt.Fprintf(&b, "GLOBL q4idxv%d<>(SB), RODATA|NOPTR, $64\n", i)
	}
	// VPERMD indices of the Q6_K scales: dword lane i takes 4z + i/4.
	for zi := range 4 {
		for k := range 16 {
			fmt.Fprintf(&b, "DATA q6idxv%d<>+%d(SB)/4, $%d\n", zi, 4*k, 4*zi+k/4)
		}
		fmt.Fprintf(&b, "GLOBL q6idxv%d<>(SB), RODATA|NOPTR, $64\n", zi)
	}
	for k := range 8 {
		v := "0x0004000400040004"
		if k >= 4 {
			v = "0x0002000200020002"
		}
		fmt.Fprintf(&b, "DATA q6shlv<>+%d(SB)/8, $%s\n", 8*k, v)
	}
	b.WriteString("GLOBL q6shlv<>(SB), RODATA|NOPTR, $64\n")
	for k := range 8 {
		v := "0"
		if k >= 4 {
			v = "0x0002000200020002"
		}
		fmt.Fprintf(&b, "DATA q6shrv<>+%d(SB)/8, $%s\n", 8*k, v)
	}
	b.WriteString("GLOBL q6shrv<>(SB), RODATA|NOPTR, $64\n")
	for V := 2; V <= 4; V++ {
		matvecQ4(V)
	}
	for V := 2; V <= 4; V++ {
		matvecQ6(V)
	}
}

// mvAct returns the address of field offset off of vector v's current
// block: vectors 0 and 1 from SI, 2 and 3 from R12 = SI + 2·astride, the
// stride in R11.
func mvAct(off, v int) string {
	base := "SI"
	if v >= 2 {
		base = "R12"
	}
	if v%2 == 1 {
		return fmt.Sprintf("%d(%s)(R11*1)", off, base)
	}
	return fmt.Sprintf("%d(%s)", off, base)
}

// mvStore returns where vector v's output of the current row goes: DI plus
// v·ystride (AX = ystride, BX = 3·ystride).
func mvStore(v int) string {
	return [...]string{"(DI)", "(DI)(AX*1)", "(DI)(AX*2)", "(DI)(BX*1)"}[v]
}

func mvHeader(name string, V int) {
	fmt.Fprintf(&b, "\n// func %sV%d(y *float32, ystride int, rows *byte, rowBytes, nrows int, a *actK15, astride, nb int)\n", name, V)
	fmt.Fprintf(&b, "TEXT ·%sV%d(SB), NOSPLIT, $0-64\n", name, V)
	p("MOVQ y+0(FP), DI")
	p("MOVQ rows+16(FP), R8")
	p("MOVQ nrows+32(FP), R10")
	p("MOVQ astride+48(FP), R11")
}

// mvRowStart points DX at the row, SI and R12 at the vectors' first blocks
// and CX at the block count.
func mvRowStart(lbl string) {
	fmt.Fprintf(&b, "row%s:\n", lbl)
	p("MOVQ R8, DX")
	p("MOVQ a+40(FP), SI")
	p("LEAQ (SI)(R11*2), R12")
	p("MOVQ nb+56(FP), CX")
}

func mvRowEnd(lbl string) {
	p("ADDQ $4, DI")
	p("ADDQ rowBytes+24(FP), R8")
	p("DECQ R10")
	p("JNZ row%s", lbl)
	p("VZEROUPPER")
	p("RET")
}

// Registers of the Q4_K kernel: Z31 nibble mask, Z27-Z30 scale shuffles,
// Z3-Z6 the block's scale vectors, Z9-Z12 its quants, X25 [d, dmin], Y26
// dmin·m; per vector v the sums acc[v] (Z) and mins[v] (Y); Z17-Z20
// temporaries.
var (
	q4acc  = []int{0, 1, 7, 8}
	q4mins = []int{13, 14, 15, 16}
)

func matvecQ4(V int) {
	lbl := fmt.Sprintf("q4v%d", V)
	mvHeader("q4kq15Rows", V)
	p("VPBROADCASTQ nibv<>(SB), Z31")
	for i := range 4 {
		p("VMOVDQU64 q4idxv%d<>(SB), Z%d", i, 27+i)
	}
	mvRowStart(lbl)
	for v := range V {
		p("VPXORD Z%d, Z%d, Z%d", q4acc[v], q4acc[v], q4acc[v])
		p("VPXORD Y%d, Y%d, Y%d", q4mins[v], q4mins[v], q4mins[v])
	}
	fmt.Fprintf(&b, "blk%s:\n", lbl)
	p("PREFETCHT1 (PFD+0)(DX)")
	p("PREFETCHT1 (PFD+64)(DX)")
	p("PREFETCHT1 (PFD+128)(DX)")
	// scalesK4: sc to X2, m to X26 (as the single-vector kernel).
	for _, s := range []string{
		"MOVQ 4(DX), AX", "MOVL 12(DX), BX", "MOVQ AX, R13", "SHRQ $2, R13", "ANDQ $0x30303030, R13",
		"MOVQ BX, R9", "ANDQ $0x0f0f0f0f, R9", "ORQ R9, R13", "SHLQ $32, R13", "MOVQ AX, R9",
		"ANDQ $0x3f3f3f3f, R9", "ORQ R9, R13", "VMOVQ R13, X2", "MOVQ AX, R13", "SHRQ $34, R13",
		"ANDQ $0x30303030, R13", "SHRQ $4, BX", "ANDQ $0x0f0f0f0f, BX", "ORQ BX, R13", "SHLQ $32, R13",
		"SHRQ $32, AX", "ANDQ $0x3f3f3f3f, AX", "ORQ AX, R13", "VMOVQ R13, X26",
	} {
		p("%s", s)
	}
	p("VPBROADCASTQ X2, Z2")
	for i := range 4 {
		p("VPSHUFB Z%d, Z2, Z%d", 27+i, 3+i)
	}
	p("VMOVDQU64 16(DX), Z9")
	p("VMOVDQU64 80(DX), Z11")
	p("VPSRLW $4, Z9, Z10")
	p("VPSRLW $4, Z11, Z12")
	for i := range 4 {
		p("VPANDD Z31, Z%d, Z%d", 9+i, 9+i)
	}
	// d, dmin; dmin·m (shared by the vectors).
	p("VPBROADCASTD (DX), X25")
	p("VCVTPH2PS X25, X25")
	p("VMOVSHDUP X25, X2")
	p("VBROADCASTSS X2, Y2")
	p("VPMOVZXBD X26, Y26")
	p("VCVTDQ2PS Y26, Y26")
	p("VMULPS Y2, Y26, Y26")
	for v := range V {
		t := []int{17, 18, 19, 20}
		for _, r := range t {
			p("VPXORD Z%d, Z%d, Z%d", r, r, r)
		}
		for i, r := range t {
			p("VPDPBUSD %s, Z%d, Z%d", mvAct(0+64*i, v), 9+i, r)
		}
		for _, r := range t {
			p("VPSLLD $7, Z%d, Z%d", r, r)
		}
		for i, r := range t {
			p("VPDPBUSD %s, Z%d, Z%d", mvAct(256+64*i, v), 9+i, r)
		}
		for i, r := range t {
			p("VPMULLD Z%d, Z%d, Z%d", 3+i, r, r)
		}
		p("VPADDD Z18, Z17, Z17")
		p("VPADDD Z20, Z19, Z19")
		p("VPADDD Z19, Z17, Z17")
		p("VCVTDQ2PS Z17, Z17")
		p("VMULSS %s, X25, X18", mvAct(512, v)) // d·da
		p("VBROADCASTSS X18, Z18")
		p("VFMADD231PS Z18, Z17, Z%d", q4acc[v])
		p("VFMADD231PS %s, Y26, Y%d", mvAct(516, v), q4mins[v])
	}
	p("ADDQ $144, DX")
	p("ADDQ $640, SI")
	p("ADDQ $640, R12")
	p("DECQ CX")
	p("JNZ blk%s", lbl)
	p("MOVQ ystride+8(FP), AX")
	p("LEAQ (AX)(AX*2), BX")
	for v := range V {
		a, m := q4acc[v], q4mins[v]
		p("VEXTRACTF64X4 $1, Z%d, Y2", a)
		p("VADDPS Y2, Y%d, Y%d", a, a)
		p("VSUBPS Y%d, Y%d, Y%d", m, a, a)
		p("VEXTRACTF128 $1, Y%d, X2", a)
		p("VADDPS X2, X%d, X%d", a, a)
		p("VPERMILPS $0x4e, X%d, X2", a)
		p("VADDPS X2, X%d, X%d", a, a)
		p("VPERMILPS $0xb1, X%d, X2", a)
		p("VADDSS X2, X%d, X%d", a, a)
		p("VMOVSS X%d, %s", a, mvStore(v))
	}
	mvRowEnd(lbl)
}

// Registers of the Q6_K kernel: Z31 nibble mask, Z30 bytes 0x30, Z25/Z24
// word shifts, Z26-Z29 scale permutations, Z2 the 16 scales as float32,
// Z3-Z6 the scale vectors, Z7 Z8 Z11 Z12 the quants, X21 d, Z22 d
// broadcast; per vector v the sums acc[v] and corrections corr[v];
// Z17-Z20 temporaries (Z9, Z10, Z13, Z14 while decoding).
var (
	q6acc  = []int{0, 1, 9, 10}
	q6corr = []int{13, 14, 15, 16}
)

func matvecQ6(V int) {
	lbl := fmt.Sprintf("q6v%d", V)
	mvHeader("q6kq15Rows", V)
	p("VPBROADCASTQ nibv<>(SB), Z31")
	p("MOVQ $0x3030303030303030, AX")
	p("VPBROADCASTQ AX, Z30")
	p("VMOVDQU64 q6shlv<>(SB), Z25")
	p("VMOVDQU64 q6shrv<>(SB), Z24")
	for i := range 4 {
		p("VMOVDQU64 q6idxv%d<>(SB), Z%d", i, 26+i)
	}
	mvRowStart(lbl)
	for v := range V {
		p("VPXORD Z%d, Z%d, Z%d", q6acc[v], q6acc[v], q6acc[v])
		p("VPXORD Z%d, Z%d, Z%d", q6corr[v], q6corr[v], q6corr[v])
	}
	fmt.Fprintf(&b, "blk%s:\n", lbl)
	for i := range 4 {
		p("PREFETCHT1 (PFD+%d)(DX)", 64*i)
	}
	p("VPMOVSXBD 192(DX), Z2")
	for i := range 4 {
		p("VPERMD Z2, Z%d, Z%d", 26+i, 3+i)
	}
	// Quants as the single-vector kernel builds them, with Z17-Z20 in
	// place of its temporaries.
	p("VMOVDQU64 0(DX), Z7")
	p("VBROADCASTI64X4 128(DX), Z17")
	p("VPSLLVW Z25, Z17, Z18")
	p("VPSRLVW Z24, Z17, Z17")
	p("VPSRLW $4, Z7, Z8")
	p("VPANDD Z30, Z18, Z18")
	p("VPANDD Z30, Z17, Z17")
	p("VPTERNLOGD $0xe4, Z31, Z18, Z7")
	p("VPTERNLOGD $0xe4, Z31, Z17, Z8")
	p("VMOVDQU64 64(DX), Z11")
	p("VBROADCASTI64X4 160(DX), Z19")
	p("VPSLLVW Z25, Z19, Z20")
	p("VPSRLVW Z24, Z19, Z19")
	p("VPSRLW $4, Z11, Z12")
	p("VPANDD Z30, Z20, Z20")
	p("VPANDD Z30, Z19, Z19")
	p("VPTERNLOGD $0xe4, Z31, Z20, Z11")
	p("VPTERNLOGD $0xe4, Z31, Z19, Z12")
	// d; the scales as float32 (shared by the vectors).
	p("MOVWLZX 208(DX), AX")
	p("VMOVD AX, X21")
	p("VCVTPH2PS X21, X21")
	p("VBROADCASTSS X21, Z22")
	p("VCVTDQ2PS Z2, Z2")
	q := []int{7, 8, 11, 12}
	for v := range V {
		t := []int{17, 18, 19, 20}
		for _, r := range t {
			p("VPXORD Z%d, Z%d, Z%d", r, r, r)
		}
		for i, r := range t {
			p("VPDPBUSD %s, Z%d, Z%d", mvAct(0+64*i, v), q[i], r)
		}
		for _, r := range t {
			p("VPSLLD $7, Z%d, Z%d", r, r)
		}
		for i, r := range t {
			p("VPDPBUSD %s, Z%d, Z%d", mvAct(256+64*i, v), q[i], r)
		}
		for i, r := range t {
			p("VPMULLD Z%d, Z%d, Z%d", 3+i, r, r)
		}
		p("VPADDD Z18, Z17, Z17")
		p("VPADDD Z20, Z19, Z19")
		p("VPADDD Z19, Z17, Z17")
		p("VCVTDQ2PS Z17, Z17")
		p("VMULSS %s, X21, X18", mvAct(512, v)) // d·da
		p("VBROADCASTSS X18, Z18")
		p("VFMADD231PS Z18, Z17, Z%d", q6acc[v])
		p("VMULPS %s, Z2, Z19", mvAct(548, v)) // sc·ms16
		p("VFMADD231PS Z22, Z19, Z%d", q6corr[v])
	}
	p("ADDQ $210, DX")
	p("ADDQ $640, SI")
	p("ADDQ $640, R12")
	p("DECQ CX")
	p("JNZ blk%s", lbl)
	p("MOVL $0x42000000, AX") // 32.0
	p("VMOVD AX, X2")
	p("VBROADCASTSS X2, Z2")
	p("MOVQ ystride+8(FP), AX")
	p("LEAQ (AX)(AX*2), BX")
	for v := range V {
		a := q6acc[v]
		p("VFNMADD231PS Z2, Z%d, Z%d", q6corr[v], a) // acc −= 32·corr
		p("VEXTRACTF64X4 $1, Z%d, Y3", a)
		p("VADDPS Y3, Y%d, Y%d", a, a)
		p("VEXTRACTF128 $1, Y%d, X3", a)
		p("VADDPS X3, X%d, X%d", a, a)
		p("VPERMILPS $0x4e, X%d, X3", a)
		p("VADDPS X3, X%d, X%d", a, a)
		p("VPERMILPS $0xb1, X%d, X3", a)
		p("VADDSS X3, X%d, X%d", a, a)
		p("VMOVSS X%d, %s", a, mvStore(v))
	}
	mvRowEnd(lbl)
}
