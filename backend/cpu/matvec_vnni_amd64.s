//go:build goexperiment.simd && amd64

#include "textflag.h"

// Decode kernels (one vector, many rows) for Q4_K and Q6_K weights with
// 15-bit activations (actK15: q = 128·hi + lo), AVX-512 + VNNI. Each is the
// twin of dotQ4_KQ15Generic / dotQ6_KQ15Generic (matmul_q15.go): the same
// integer sums per block, then float32. See matvec_vnni.go.

// actK15 field offsets (checked in matvec_vnni.go).
// PFD is how far ahead (bytes) the decode kernels prefetch weights into
// L2. Paired runs on this machine (2 threads, TinyLlama shapes, weights from
// DRAM): 8 KiB ahead into L2 streamed Q4_K at 30-32 GB/s instead of 20-25
// and Q6_K at 30-31 instead of 17-27 (the low figures on 5632-column rows,
// where the hardware prefetchers fall behind); 1-4 KiB ahead, or into L1,
// helped less or not at all.
#define PFD 8192

#define A_HI 0
#define A_LO 256
#define A_D 512
#define A_MS 516
#define A_MS16 548

// Bytes 0x0f.
DATA nib<>+0(SB)/8, $0x0f0f0f0f0f0f0f0f
GLOBL nib<>(SB), RODATA|NOPTR, $8

// q4kScIdx: VPSHUFB indices (within each 128-bit lane) that turn the eight
// scale bytes, repeated in every lane, into the int32 scale vectors of the
// four K4-order weight vectors: dword lanes 0-7 take sub-block a, 8-15
// sub-block b, for (a, b) = (0,2), (1,3), (4,6), (5,7). 0x80 zeroes a byte.
#define IDX(s) $(0x80808000 + s)
#define Q4IDX(name, a, b) \
	DATA name+0(SB)/4, IDX(a); DATA name+4(SB)/4, IDX(a); DATA name+8(SB)/4, IDX(a); DATA name+12(SB)/4, IDX(a); \
	DATA name+16(SB)/4, IDX(a); DATA name+20(SB)/4, IDX(a); DATA name+24(SB)/4, IDX(a); DATA name+28(SB)/4, IDX(a); \
	DATA name+32(SB)/4, IDX(b); DATA name+36(SB)/4, IDX(b); DATA name+40(SB)/4, IDX(b); DATA name+44(SB)/4, IDX(b); \
	DATA name+48(SB)/4, IDX(b); DATA name+52(SB)/4, IDX(b); DATA name+56(SB)/4, IDX(b); DATA name+60(SB)/4, IDX(b); \
	GLOBL name(SB), RODATA|NOPTR, $64

Q4IDX(q4idx0<>, 0, 2)
Q4IDX(q4idx1<>, 1, 3)
Q4IDX(q4idx2<>, 4, 6)
Q4IDX(q4idx3<>, 5, 7)

// q6Idx z: VPERMD indices, dword lane i takes scale 4z + i/4.
#define Q6IDX(name, z) \
	DATA name+0(SB)/4, $(4*z); DATA name+4(SB)/4, $(4*z); DATA name+8(SB)/4, $(4*z); DATA name+12(SB)/4, $(4*z); \
	DATA name+16(SB)/4, $(4*z+1); DATA name+20(SB)/4, $(4*z+1); DATA name+24(SB)/4, $(4*z+1); DATA name+28(SB)/4, $(4*z+1); \
	DATA name+32(SB)/4, $(4*z+2); DATA name+36(SB)/4, $(4*z+2); DATA name+40(SB)/4, $(4*z+2); DATA name+44(SB)/4, $(4*z+2); \
	DATA name+48(SB)/4, $(4*z+3); DATA name+52(SB)/4, $(4*z+3); DATA name+56(SB)/4, $(4*z+3); DATA name+60(SB)/4, $(4*z+3); \
	GLOBL name(SB), RODATA|NOPTR, $64

Q6IDX(q6idx0<>, 0)
Q6IDX(q6idx1<>, 1)
Q6IDX(q6idx2<>, 2)
Q6IDX(q6idx3<>, 3)

// Word shift counts for the Q6_K high bits: [4 ×16, 2 ×16] left,
// [0 ×16, 2 ×16] right.
DATA q6shl<>+0(SB)/8, $0x0004000400040004
DATA q6shl<>+8(SB)/8, $0x0004000400040004
DATA q6shl<>+16(SB)/8, $0x0004000400040004
DATA q6shl<>+24(SB)/8, $0x0004000400040004
DATA q6shl<>+32(SB)/8, $0x0002000200020002
DATA q6shl<>+40(SB)/8, $0x0002000200020002
DATA q6shl<>+48(SB)/8, $0x0002000200020002
DATA q6shl<>+56(SB)/8, $0x0002000200020002
GLOBL q6shl<>(SB), RODATA|NOPTR, $64
DATA q6shr<>+0(SB)/8, $0
DATA q6shr<>+8(SB)/8, $0
DATA q6shr<>+16(SB)/8, $0
DATA q6shr<>+24(SB)/8, $0
DATA q6shr<>+32(SB)/8, $0x0002000200020002
DATA q6shr<>+40(SB)/8, $0x0002000200020002
DATA q6shr<>+48(SB)/8, $0x0002000200020002
DATA q6shr<>+56(SB)/8, $0x0002000200020002
GLOBL q6shr<>(SB), RODATA|NOPTR, $64

// hsum16 Z -> X (low float), clobbers Y/X of tmp.
#define HSUM16(z, y, x, ty, tx) \
	VEXTRACTF64X4 $1, z, ty; \
	VADDPS ty, y, y; \
	VEXTRACTF128 $1, y, tx; \
	VADDPS tx, x, x; \
	VPERMILPS $0x4e, x, tx; \
	VADDPS tx, x, x; \
	VPERMILPS $0xb1, x, tx; \
	VADDPS tx, x, x

// func q4kq15Rows(y *float32, rows *byte, rowBytes, nrows int, a *actK15, nb int)
TEXT ·q4kq15Rows(SB), NOSPLIT, $0-48
	MOVQ y+0(FP), DI
	MOVQ rows+8(FP), R8
	MOVQ nrows+24(FP), R10
	MOVQ a+32(FP), R11
	MOVQ nb+40(FP), R12
	VPBROADCASTQ nib<>(SB), Z31
	VMOVDQU64 q4idx0<>(SB), Z27
	VMOVDQU64 q4idx1<>(SB), Z28
	VMOVDQU64 q4idx2<>(SB), Z29
	VMOVDQU64 q4idx3<>(SB), Z30
row:
	MOVQ R8, DX        // block pointer
	MOVQ R11, SI       // activation pointer
	MOVQ R12, CX
	VPXORD Z0, Z0, Z0  // Σ d·da·int
	VPXORD Y1, Y1, Y1  // Σ dmin·m·ms

block:
	PREFETCHT1 (PFD+0)(DX)
	PREFETCHT1 (PFD+64)(DX)
	PREFETCHT1 (PFD+128)(DX)
	// scales (scalesK4): sc to X2, m to X24
	MOVQ 4(DX), AX          // lo
	MOVL 12(DX), BX         // hi
	MOVQ AX, R13
	SHRQ $2, R13
	ANDQ $0x30303030, R13   // lo>>2 & 0x30303030
	MOVQ BX, R9
	ANDQ $0x0f0f0f0f, R9
	ORQ R9, R13
	SHLQ $32, R13
	MOVQ AX, R9
	ANDQ $0x3f3f3f3f, R9
	ORQ R9, R13             // sc
	VMOVQ R13, X2
	MOVQ AX, R13
	SHRQ $34, R13
	ANDQ $0x30303030, R13   // lo>>34 & 0x30303030
	SHRQ $4, BX
	ANDQ $0x0f0f0f0f, BX    // hi>>4 & 0x0f0f0f0f
	ORQ BX, R13
	SHLQ $32, R13
	SHRQ $32, AX
	ANDQ $0x3f3f3f3f, AX
	ORQ AX, R13             // m
	VMOVQ R13, X24

	VPBROADCASTQ X2, Z2
	VPSHUFB Z27, Z2, Z3
	VPSHUFB Z28, Z2, Z4
	VPSHUFB Z29, Z2, Z5
	VPSHUFB Z30, Z2, Z6

	VMOVDQU64 16(DX), Z7
	VMOVDQU64 80(DX), Z8
	VPSRLW $4, Z7, Z10
	VPSRLW $4, Z8, Z12
	VPANDD Z31, Z7, Z9
	VPANDD Z31, Z10, Z10
	VPANDD Z31, Z8, Z11
	VPANDD Z31, Z12, Z12

	// Σ w·(128·hi + lo): the hi plane's sums, shifted, then the lo plane's.
	VPXORD Z13, Z13, Z13
	VPXORD Z14, Z14, Z14
	VPXORD Z15, Z15, Z15
	VPXORD Z16, Z16, Z16
	VPDPBUSD (A_HI+0)(SI), Z9, Z13
	VPDPBUSD (A_HI+64)(SI), Z10, Z14
	VPDPBUSD (A_HI+128)(SI), Z11, Z15
	VPDPBUSD (A_HI+192)(SI), Z12, Z16
	VPSLLD $7, Z13, Z13
	VPSLLD $7, Z14, Z14
	VPSLLD $7, Z15, Z15
	VPSLLD $7, Z16, Z16
	VPDPBUSD (A_LO+0)(SI), Z9, Z13
	VPDPBUSD (A_LO+64)(SI), Z10, Z14
	VPDPBUSD (A_LO+128)(SI), Z11, Z15
	VPDPBUSD (A_LO+192)(SI), Z12, Z16
	VPMULLD Z3, Z13, Z13
	VPMULLD Z4, Z14, Z14
	VPMULLD Z5, Z15, Z15
	VPMULLD Z6, Z16, Z16
	VPADDD Z14, Z13, Z13
	VPADDD Z16, Z15, Z15
	VPADDD Z15, Z13, Z13
	VCVTDQ2PS Z13, Z13

	// d, dmin
	VPBROADCASTD (DX), X21
	VCVTPH2PS X21, X21          // [d, dmin, d, dmin]
	VMULSS A_D(SI), X21, X22    // d·da
	VBROADCASTSS X22, Z22
	VFMADD231PS Z22, Z13, Z0
	VMOVSHDUP X21, X23          // dmin
	VBROADCASTSS X23, Y23
	VPMOVZXBD X24, Y24
	VCVTDQ2PS Y24, Y24
	VMULPS Y23, Y24, Y24
	VFMADD231PS A_MS(SI), Y24, Y1

	ADDQ $144, DX
	ADDQ $640, SI
	DECQ CX
	JNZ block

	VEXTRACTF64X4 $1, Z0, Y2
	VADDPS Y2, Y0, Y0
	VSUBPS Y1, Y0, Y0
	VEXTRACTF128 $1, Y0, X2
	VADDPS X2, X0, X0
	VPERMILPS $0x4e, X0, X2
	VADDPS X2, X0, X0
	VPERMILPS $0xb1, X0, X2
	VADDSS X2, X0, X0
	VMOVSS X0, (DI)

	ADDQ $4, DI
	ADDQ rowBytes+16(FP), R8
	DECQ R10
	JNZ row
	VZEROUPPER
	RET

// func q6kq15Rows(y *float32, rows *byte, rowBytes, nrows int, a *actK15, nb int)
//
// Q6_K block (210 bytes): ql[128] at 0, qh[64] at 128, scales[16] at 192,
// d at 208. Per half h, 64-byte vector ql[64h:] gives values 0..63 of the
// half in its low nibbles and 64..127 in its high ones; the two high bits
// come from qh[32h+l] (bits 0-1: l, 2-3: l+32, 4-5: l+64, 6-7: l+96).
TEXT ·q6kq15Rows(SB), NOSPLIT, $0-48
	MOVQ y+0(FP), DI
	MOVQ rows+8(FP), R8
	MOVQ nrows+24(FP), R10
	MOVQ a+32(FP), R11
	MOVQ nb+40(FP), R12
	VPBROADCASTQ nib<>(SB), Z31
	MOVQ $0x3030303030303030, AX
	VPBROADCASTQ AX, Z30
	VMOVDQU64 q6shl<>(SB), Z25
	VMOVDQU64 q6shr<>(SB), Z24
	VMOVDQU64 q6idx0<>(SB), Z26
	VMOVDQU64 q6idx1<>(SB), Z27
	VMOVDQU64 q6idx2<>(SB), Z28
	VMOVDQU64 q6idx3<>(SB), Z29
	MOVL $0x42000000, AX         // 32.0
	VMOVD AX, X23

row6:
	MOVQ R8, DX
	MOVQ R11, SI
	MOVQ R12, CX
	VPXORD Z0, Z0, Z0  // Σ d·da·int
	VPXORD Z1, Z1, Z1  // Σ d·sc·ms16 (×32 at the end)

block6:
	PREFETCHT1 (PFD+0)(DX)
	PREFETCHT1 (PFD+64)(DX)
	PREFETCHT1 (PFD+128)(DX)
	PREFETCHT1 (PFD+192)(DX)
	VPMOVSXBD 192(DX), Z2        // 16 scales
	VPERMD Z2, Z26, Z3
	VPERMD Z2, Z27, Z4
	VPERMD Z2, Z28, Z5
	VPERMD Z2, Z29, Z6

	// half 0: low nibbles of ql[0:64] are values 0..63, high ones 64..127;
	// bits 4-5 of [qh<<4, qh<<2] and [qh, qh>>2] (word shifts: what leaks
	// across bytes lands outside bits 4-5) are their two high bits.
	VMOVDQU64 0(DX), Z7          // ql[0:64]
	VBROADCASTI64X4 128(DX), Z9  // [qh[0:32], qh[0:32]]
	VPSLLVW Z25, Z9, Z10
	VPSRLVW Z24, Z9, Z9
	VPSRLW $4, Z7, Z8
	VPANDD Z30, Z10, Z10
	VPANDD Z30, Z9, Z9
	VPTERNLOGD $0xe4, Z31, Z10, Z7 // bits 0-3 from ql, 4-5 from qh: values 0..63
	VPTERNLOGD $0xe4, Z31, Z9, Z8  // values 64..127

	// half 1
	VMOVDQU64 64(DX), Z11        // ql[64:128]
	VBROADCASTI64X4 160(DX), Z13 // [qh[32:64], qh[32:64]]
	VPSLLVW Z25, Z13, Z14
	VPSRLVW Z24, Z13, Z13
	VPSRLW $4, Z11, Z12
	VPANDD Z30, Z14, Z14
	VPANDD Z30, Z13, Z13
	VPTERNLOGD $0xe4, Z31, Z14, Z11 // values 128..191
	VPTERNLOGD $0xe4, Z31, Z13, Z12 // values 192..255

	VPXORD Z13, Z13, Z13
	VPXORD Z14, Z14, Z14
	VPXORD Z15, Z15, Z15
	VPXORD Z16, Z16, Z16
	VPDPBUSD (A_HI+0)(SI), Z7, Z13
	VPDPBUSD (A_HI+64)(SI), Z8, Z14
	VPDPBUSD (A_HI+128)(SI), Z11, Z15
	VPDPBUSD (A_HI+192)(SI), Z12, Z16
	VPSLLD $7, Z13, Z13
	VPSLLD $7, Z14, Z14
	VPSLLD $7, Z15, Z15
	VPSLLD $7, Z16, Z16
	VPDPBUSD (A_LO+0)(SI), Z7, Z13
	VPDPBUSD (A_LO+64)(SI), Z8, Z14
	VPDPBUSD (A_LO+128)(SI), Z11, Z15
	VPDPBUSD (A_LO+192)(SI), Z12, Z16
	VPMULLD Z3, Z13, Z13
	VPMULLD Z4, Z14, Z14
	VPMULLD Z5, Z15, Z15
	VPMULLD Z6, Z16, Z16
	VPADDD Z14, Z13, Z13
	VPADDD Z16, Z15, Z15
	VPADDD Z15, Z13, Z13
	VCVTDQ2PS Z13, Z13

	// d
	MOVWLZX 208(DX), AX
	VMOVD AX, X21
	VCVTPH2PS X21, X21
	VMULSS A_D(SI), X21, X22    // d·da
	VBROADCASTSS X22, Z22
	VFMADD231PS Z22, Z13, Z0
	// −32: Σ d·sc_j·ms16_j
	VCVTDQ2PS Z2, Z2
	VMULPS A_MS16(SI), Z2, Z2
	VBROADCASTSS X21, Z21
	VFMADD231PS Z21, Z2, Z1

	ADDQ $210, DX
	ADDQ $640, SI
	DECQ CX
	JNZ block6

	VBROADCASTSS X23, Z2
	VFNMADD231PS Z2, Z1, Z0      // Z0 −= 32·Z1
	VEXTRACTF64X4 $1, Z0, Y2
	VADDPS Y2, Y0, Y0
	VEXTRACTF128 $1, Y0, X2
	VADDPS X2, X0, X0
	VPERMILPS $0x4e, X0, X2
	VADDPS X2, X0, X0
	VPERMILPS $0xb1, X0, X2
	VADDSS X2, X0, X0
	VMOVSS X0, (DI)

	ADDQ $4, DI
	ADDQ rowBytes+16(FP), R8
	DECQ R10
	JNZ row6
	VZEROUPPER
	RET

// func q80f32Rows(y *float32, rows *byte, rowBytes, nrows int, x *float32, nb int)
//
// Decode for Q8_0 weights with float32 activations: y[i] = row i · x, for
// nrows rows of nb blocks (34 bytes: f16 scale, 32 int8). The arithmetic of
// dotQ8_0F32SIMD (matmul_simd.go), instruction for instruction, so the bits
// are the same: per block p = fma(q[16:32], x[16:32], q[0:16]·x[0:16]),
// acc = fma(p, d, acc), even blocks into Z0 and odd ones into Z1, then
// Z0+Z1 summed as hsum16v does (halves, then two VHADDPS).
TEXT ·q80f32Rows(SB), NOSPLIT, $0-48
	MOVQ y+0(FP), DI
	MOVQ rows+8(FP), R8
	MOVQ nrows+24(FP), R10
	MOVQ x+32(FP), R11
	MOVQ nb+40(FP), R12
q80row:
	MOVQ R8, DX
	MOVQ R11, SI
	MOVQ R12, CX
	VPXORD Z0, Z0, Z0
	VPXORD Z1, Z1, Z1
	CMPQ CX, $2
	JLT q80tail
q80pair:
	PREFETCHT1 (PFD+0)(DX)
	PREFETCHT1 (PFD+64)(DX)
	VPMOVSXBD 2(DX), Z2
	VPMOVSXBD 18(DX), Z3
	VCVTDQ2PS Z2, Z2
	VCVTDQ2PS Z3, Z3
	VMULPS (SI), Z2, Z2
	VFMADD231PS 64(SI), Z3, Z2
	VPBROADCASTW (DX), Y4
	VCVTPH2PS Y4, Z4
	VFMADD231PS Z4, Z2, Z0
	VPMOVSXBD 36(DX), Z5
	VPMOVSXBD 52(DX), Z6
	VCVTDQ2PS Z5, Z5
	VCVTDQ2PS Z6, Z6
	VMULPS 128(SI), Z5, Z5
	VFMADD231PS 192(SI), Z6, Z5
	VPBROADCASTW 34(DX), Y7
	VCVTPH2PS Y7, Z7
	VFMADD231PS Z7, Z5, Z1
	ADDQ $68, DX
	ADDQ $256, SI
	SUBQ $2, CX
	CMPQ CX, $2
	JGE q80pair
q80tail:
	TESTQ CX, CX
	JZ q80sum
	VPMOVSXBD 2(DX), Z2
	VPMOVSXBD 18(DX), Z3
	VCVTDQ2PS Z2, Z2
	VCVTDQ2PS Z3, Z3
	VMULPS (SI), Z2, Z2
	VFMADD231PS 64(SI), Z3, Z2
	VPBROADCASTW (DX), Y4
	VCVTPH2PS Y4, Z4
	VFMADD231PS Z4, Z2, Z0
q80sum:
	VADDPS Z1, Z0, Z0
	VEXTRACTF64X4 $1, Z0, Y2
	VADDPS Y2, Y0, Y0
	VEXTRACTF128 $1, Y0, X2
	VADDPS X2, X0, X0
	VHADDPS X0, X0, X0
	VHADDPS X0, X0, X0
	VMOVSS X0, (DI)
	ADDQ $4, DI
	ADDQ rowBytes+16(FP), R8
	DECQ R10
	JNZ q80row
	VZEROUPPER
	RET
