package main

import "fmt"

// matvecMulti writes the multi-vector decode kernels (matvec_vnni_v_amd64.s):
//
//	q4kq15RowsV{2,3,4}(y *float32, ystride int, rows *byte, rowBytes, nrows int, a *actK16, astride, nb int)
//	q6kq15RowsV{2,3,4}(same)
//
// For V vectors (actK16 blocks astride bytes apart) and nrows rows they set
// y[v·ystride + 4·i] (strides in bytes) to row i times vector v, with the
// bits of the single-vector kernels q4kq15Rows / q6kq15Rows
// (matvec_vnni_amd64.s) on the same activations (TestQ15RowsVAgree): a
// generated row's output does not depend on how many rows decode beside
// it. Each block's weights are decoded once for the V vectors: the quants
// times their sub-block scale as int16 words (|q·sc| < 2¹⁵), so that one
// VPDPWSSD per 32 values multiplies them with the 15-bit activations held
// as int16 (actK16) — no hi/lo planes, shifts or scale multiplies per
// vector. The words are arranged so that every dword lane sums the same
// four values as the single-vector kernel's VPDPBUSD lanes (word m of the
// even / odd vector of chunk k holds value 64k+2m / 64k+2m+1), so the
// integer sums per lane are the same (exact, or equal mod 2³²), and after
// them each vector runs the single-vector kernel's float instructions in
// the same order.
func matvecMulti() {
	b.WriteString(`
// actK16 field offsets (checked in matvec_vnni.go) and the prefetch
// distance, as in matvec_vnni_amd64.s.
#define PFD 8192
#define A_D 512
#define A_MS 516
#define A_MS16 548

DATA nibv<>+0(SB)/8, $0x0f0f0f0f0f0f0f0f
GLOBL nibv<>(SB), RODATA|NOPTR, $8
DATA wlov<>+0(SB)/8, $0x00ff00ff00ff00ff
GLOBL wlov<>(SB), RODATA|NOPTR, $8
`)
	// VPSHUFB indices of the Q4_K scales as words: both words of dword
	// lanes 0-7 take sub-block a, of 8-15 sub-block b, for (a, b) = (0,2),
	// (1,3), (4,6), (5,7) (the single-vector kernel's dword lanes).
	for i, ab := range [][2]int{{0, 2}, {1, 3}, {4, 6}, {5, 7}} {
		for k := range 16 {
			s := ab[0]
			if k >= 8 {
				s = ab[1]
			}
			fmt.Fprintf(&b, "DATA q4widx%d<>+%d(SB)/4, $0x%08x\n", i, 4*k, 0x80008000+s+s<<16)
		}
		fmt.Fprintf(&b, "GLOBL q4widx%d<>(SB), RODATA|NOPTR, $64\n", i)
	}
	// VPERMW indices of the Q6_K scales: word m of chunk z takes scale
	// 4z + m/8 (dword lane m/2 of the single-vector kernel: 4z + lane/4).
	for zi := range 4 {
		for k := range 16 {
			lo, hi := 4*zi+(2*k)/8, 4*zi+(2*k+1)/8
			fmt.Fprintf(&b, "DATA q6widx%d<>+%d(SB)/4, $0x%08x\n", zi, 4*k, lo|hi<<16)
		}
		fmt.Fprintf(&b, "GLOBL q6widx%d<>(SB), RODATA|NOPTR, $64\n", zi)
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
	fmt.Fprintf(&b, "\n// func %sV%d(y *float32, ystride int, rows *byte, rowBytes, nrows int, a *actK16, astride, nb int)\n", name, V)
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

// mvWords splits the quant bytes of chunk k (register src) into the even
// and odd words Z(9+2k), Z(10+2k) (low bytes: Z30 holds 0x00ff words) and
// multiplies them by the word scales in register sc.
func mvWords(k, src, sc int) {
	e, o := 9+2*k, 10+2*k
	p("VPSRLW $8, Z%d, Z%d", src, o)
	p("VPANDD Z%d, Z%d, Z%d", wlo, src, e)
	p("VPMULLW Z%d, Z%d, Z%d", sc, e, e)
	p("VPMULLW Z%d, Z%d, Z%d", sc, o, o)
}

// wlo is the register of the 0x00ff word mask in both kernels.
const wlo = 30

// mvDot adds, for vector v, the products of the block's 8 word vectors
// (Z9-Z16) with its activations into Z17 (dword lanes as the single-vector
// kernel's sum), using Z18, and converts it to float32.
func mvDot(v int) {
	p("VPXORD Z17, Z17, Z17")
	p("VPXORD Z18, Z18, Z18")
	for i := range 8 {
		p("VPDPWSSD %s, Z%d, Z%d", mvAct(64*i, v), 9+i, 17+i%2)
	}
	p("VPADDD Z18, Z17, Z17")
	p("VCVTDQ2PS Z17, Z17")
}

// Registers of the Q4_K kernel: Z31 nibble mask, Z30 word mask, Z26-Z29
// word-scale shuffles, Z9-Z16 the block's scaled quant words, X25 [d,
// dmin], Y24 dmin·m; per vector v the sums acc[v] (Z) and mins[v] (Y);
// Z2, Z3, Z17-Z20 temporaries.
var (
	q4acc  = []int{0, 1, 4, 5}
	q4mins = []int{6, 7, 8, 21}
)

func matvecQ4(V int) {
	lbl := fmt.Sprintf("q4v%d", V)
	mvHeader("q4kq15Rows", V)
	p("VPBROADCASTQ nibv<>(SB), Z31")
	p("VPBROADCASTQ wlov<>(SB), Z30")
	for i := range 4 {
		p("VMOVDQU64 q4widx%d<>(SB), Z%d", i, 26+i)
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
	// scalesK4: sc to X2, m to X24 (as the single-vector kernel).
	for _, s := range []string{
		"MOVQ 4(DX), AX", "MOVL 12(DX), BX", "MOVQ AX, R13", "SHRQ $2, R13", "ANDQ $0x30303030, R13",
		"MOVQ BX, R9", "ANDQ $0x0f0f0f0f, R9", "ORQ R9, R13", "SHLQ $32, R13", "MOVQ AX, R9",
		"ANDQ $0x3f3f3f3f, R9", "ORQ R9, R13", "VMOVQ R13, X2", "MOVQ AX, R13", "SHRQ $34, R13",
		"ANDQ $0x30303030, R13", "SHRQ $4, BX", "ANDQ $0x0f0f0f0f, BX", "ORQ BX, R13", "SHLQ $32, R13",
		"SHRQ $32, AX", "ANDQ $0x3f3f3f3f, AX", "ORQ AX, R13", "VMOVQ R13, X24",
	} {
		p("%s", s)
	}
	p("VPBROADCASTQ X2, Z2")
	// Chunks 0-3: low nibbles of qs[0:64], high ones, low of qs[64:128],
	// high ones (the single-vector kernel's Z9-Z12).
	p("VMOVDQU64 16(DX), Z17")
	p("VMOVDQU64 80(DX), Z19")
	p("VPSRLW $4, Z17, Z18")
	p("VPSRLW $4, Z19, Z20")
	for i := range 4 {
		p("VPANDD Z31, Z%d, Z%d", 17+i, 17+i)
	}
	for k, src := range []int{17, 18, 19, 20} {
		p("VPSHUFB Z%d, Z2, Z3", 26+k)
		mvWords(k, src, 3)
	}
	// d, dmin; dmin·m (shared by the vectors).
	p("VPBROADCASTD (DX), X25")
	p("VCVTPH2PS X25, X25")
	p("VMOVSHDUP X25, X2")
	p("VBROADCASTSS X2, Y2")
	p("VPMOVZXBD X24, Y24")
	p("VCVTDQ2PS Y24, Y24")
	p("VMULPS Y2, Y24, Y24")
	for v := range V {
		mvDot(v)
		p("VMULSS %s, X25, X18", mvAct(512, v)) // d·da
		p("VBROADCASTSS X18, Z18")
		p("VFMADD231PS Z18, Z17, Z%d", q4acc[v])
		p("VFMADD231PS %s, Y24, Y%d", mvAct(516, v), q4mins[v])
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

// Registers of the Q6_K kernel: Z31 nibble mask, Z30 word mask, Z23 bytes
// 0x30, Z25/Z24 word shifts, Z26-Z29 word-scale permutations, Z9-Z16 the
// block's scaled quant words, Z2 the 16 scales as float32, X21 d, Z22 d
// broadcast; per vector v the sums acc[v] and corrections corr[v];
// Z17-Z20 temporaries.
var (
	q6acc  = []int{0, 1, 7, 8}
	q6corr = []int{3, 4, 5, 6}
)

func matvecQ6(V int) {
	lbl := fmt.Sprintf("q6v%d", V)
	mvHeader("q6kq15Rows", V)
	p("VPBROADCASTQ nibv<>(SB), Z31")
	p("VPBROADCASTQ wlov<>(SB), Z30")
	p("MOVQ $0x3030303030303030, AX")
	p("VPBROADCASTQ AX, Z23")
	p("VMOVDQU64 q6shlv<>(SB), Z25")
	p("VMOVDQU64 q6shrv<>(SB), Z24")
	for i := range 4 {
		p("VMOVDQU64 q6widx%d<>(SB), Z%d", i, 26+i)
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
	// Quants as the single-vector kernel builds them (values 64k..64k+63
	// of chunk k), each half then split into scaled words.
	for h := range 2 {
		p("VMOVDQU64 %d(DX), Z17", 64*h)
		p("VBROADCASTI64X4 %d(DX), Z19", 128+32*h)
		p("VPSLLVW Z25, Z19, Z20")
		p("VPSRLVW Z24, Z19, Z19")
		p("VPSRLW $4, Z17, Z18")
		p("VPANDD Z23, Z20, Z20")
		p("VPANDD Z23, Z19, Z19")
		p("VPTERNLOGD $0xe4, Z31, Z20, Z17") // values 128h..128h+63
		p("VPTERNLOGD $0xe4, Z31, Z19, Z18") // values 128h+64..128h+127
		p("VPMOVSXBW 192(DX), Y19")          // the 16 scales as words
		p("VPERMW Z19, Z%d, Z20", 26+2*h)
		mvWords(2*h, 17, 20)
		p("VPERMW Z19, Z%d, Z20", 27+2*h)
		mvWords(2*h+1, 18, 20)
	}
	// d; the scales as float32 (shared by the vectors).
	p("MOVWLZX 208(DX), AX")
	p("VMOVD AX, X21")
	p("VCVTPH2PS X21, X21")
	p("VBROADCASTSS X21, Z22")
	p("VPMOVSXBD 192(DX), Z2")
	p("VCVTDQ2PS Z2, Z2")
	for v := range V {
		mvDot(v)
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
		p("VEXTRACTF64X4 $1, Z%d, Y9", a)
		p("VADDPS Y9, Y%d, Y%d", a, a)
		p("VEXTRACTF128 $1, Y%d, X9", a)
		p("VADDPS X9, X%d, X%d", a, a)
		p("VPERMILPS $0x4e, X%d, X9", a)
		p("VADDPS X9, X%d, X%d", a, a)
		p("VPERMILPS $0xb1, X%d, X9", a)
		p("VADDSS X9, X%d, X%d", a, a)
		p("VMOVSS X%d, %s", a, mvStore(v))
	}
	mvRowEnd(lbl)
}
