package cuda

import (
	"embed"
	"fmt"
	"math"
	"strings"
)

// The kernel sources, compiled by NVRTC at run time. They are one program:
// the files are joined in this order.
//
//go:embed kernels/*.cuh kernels/*.cu
var kernelFS embed.FS

var kernelFiles = []string{"common.cuh", "formats.cuh", "matvec.cu", "gemm.cu", "hgemm.cu", "ops.cu", "attention.cu", "flash.cu", "topk.cu"}

// kernelSource returns the whole program.
func kernelSource() string {
	var sb strings.Builder
	for _, f := range kernelFiles {
		b, err := kernelFS.ReadFile("kernels/" + f)
		if err != nil {
			panic(err) // embedded at build time: cannot happen
		}
		fmt.Fprintf(&sb, "// ---- %s\n%s\n", f, b)
	}
	return sb.String()
}

// formatNames are the weight formats the kernels know, by their suffix in
// kernel names (kernels/formats.cuh FORMATS).
var formatNames = []string{"q4_k", "q5_k", "q6_k", "q8_0", "q4_0", "f16", "bf16", "f32", "f16s", "bf16s", "f32s"}

// kernelNames lists every kernel the backend launches.
func kernelNames() []string {
	names := []string{"rmsnorm", "rope", "kv_store", "gather_rows", "argmax", "add_f32", "silu_mul", "to_f16", "attn_gen", "rope_kv", "topk", "hprep"}
	names = append(names, hgemmNames()...)
	names = append(names, familyKernels...)
	for _, f := range formatNames {
		names = append(names, "mv_"+f+"_8", "gu_"+f+"_8", "deq_"+f)
		if runsOf[f] == 0 {
			continue
		}
		for _, nx := range mvnRows {
			names = append(names, mvnName(f, nx, false), mvnName(f, nx, true))
		}
		for _, v := range mvsVariants {
			names = append(names, "mvs_"+f+"_"+v)
		}
		for _, v := range gusVariants {
			names = append(names, "gus_"+f+"_"+v)
		}
	}
	for _, f := range gemmFormats {
		names = append(names, "xstage_"+f, "gemm_"+f, "gemmgu_"+f)
	}
	names = append(names, "gemm_fin", "gemm_fin_gu")
	for _, pk := range pairKernels {
		names = append(names, pk.name())
	}
	for _, epl := range []int{2, 4, 8} {
		for _, g := range []int{1, 2, 4, 8} {
			names = append(names, attnDecName(epl, g))
		}
	}
	for _, hd := range faHeadDims {
		names = append(names, faPreName(hd), faDecName(hd))
	}
	return names
}

// mvnRows are the activation rows a block of the many-row staged-x
// kernels (mvn, gun: kernels/matvec.cu MVN_KERNELS) takes.
var mvnRows = []int{2, 4, 8}

const mvnWarps = 8 // MVN_WARPS

func mvnName(f string, nx int, gateUp bool) string {
	if gateUp {
		return fmt.Sprintf("gun_%s_%d", f, nx)
	}
	return fmt.Sprintf("mvn_%s_%d", f, nx)
}

// The decode matvec kernels (mvs, and gus for SwiGLU) come in variants of
// R rows a warp, U units of each in flight, W warps a block and at least B
// blocks an SM (kernels/matvec.cu MVS_KERNELS).
var (
	mvsVariants = []string{"r1u4w8b1", "r1u4w8b3", "r1u2w8b3", "r2u2w8b2", "r1u4w16b1"}
	gusVariants = []string{"r1u4w8b1", "r1u4w16b1"}
)

// pairKernels are the decode matvecs that do weights of two formats in one
// launch (kernels/matvec.cu MVS2_KERNEL): f0 with variant v0, f1 with v1,
// both 8 warps a block.
var pairKernels = []pairKernel{
	{"q4_k", "r1u4w8b1", "q6_k", "r2u2w8b2"},
	{"q5_k", "r1u4w8b1", "q6_k", "r2u2w8b2"},
}

type pairKernel struct{ f0, v0, f1, v1 string }

func (p pairKernel) name() string { return "mvs2_" + p.f0 + "_" + p.f1 }

func pairKernelFor(f0, f1 string) (pairKernel, bool) {
	for _, p := range pairKernels {
		if p.f0 == f0 && p.f1 == f1 {
			return p, true
		}
	}
	return pairKernel{}, false
}

// runsOf is RUNS of each format with staged-x kernels (VFORMATS); the
// others have none.
var runsOf = map[string]int{"q4_k": 2, "q5_k": 2, "q6_k": 2, "q8_0": 1, "q4_0": 2, "f16": 1, "bf16": 1, "f32": 1}

// mvsSmem is the shared memory of a staged-x matvec over rows of cols values
// of format f: x in 32-unit slices (int16 with a scale a run for the
// quantized formats, float otherwise), and the sum of each run.
func mvsSmem(f string, cols int) int {
	u := unitOf[f]
	nu := ceilDiv(cols/u, 32) * 32
	if idotFormats[f] {
		return 2*nu*u + 16*nu
	}
	return 4*nu*u + 4*nu*runsOf[f]
}

// idotFormats have integer dots over int16 x (IDOT in formats.cuh).
var idotFormats = map[string]bool{"q4_k": true, "q5_k": true, "q6_k": true, "q8_0": true, "q4_0": true}

// The tensor-core GEMM for 2 or more activation rows (kernels/gemm.cu):
// the formats it takes, and per format the bytes of a weight row a step
// copies (G::WB).
var (
	gemmFormats = []string{"q4_k", "q5_k", "q6_k", "q8_0", "q4_0"}
	gemmWB      = map[string]int{"q4_k": 48, "q5_k": 80, "q6_k": 96, "q8_0": 48, "q4_0": 48}
)

const (
	gemmWarps    = 8   // GEMM_WARPS
	gemmTO       = 128 // GEMM_TO: weight rows a block
	gemmTN       = 32  // GEMM_TN: activation rows a block
	gemmStages   = 4   // GEMM_STAGES
	gemmMaxSplit = 16  // GEMM_MAXSPLIT
)

// gemmSmem is a GEMM block's shared memory for format f: GEMM_STAGES
// stages of 128 weight rows' bytes and two units' staged x of 32 rows.
func gemmSmem(f string) int {
	rb := 32 * runsOf[f]
	return gemmStages * (gemmTO*gemmWB[f] + 2*gemmTN*rb + 2*gemmTN*16)
}

// gemmXBytes is the staged x of n activation rows (padded to npad) for
// the GEMM over rows of cols values of format f: per unit and row the
// int16 values as high and low bytes, then a float4 of scales and sums.
func gemmXBytes(f string, cols, npad int) int {
	return cols / unitOf[f] * npad * (32*runsOf[f] + 16)
}

// attnDecName is the decode attention kernel for head size 32·epl and g
// query heads a KV head.
func attnDecName(epl, g int) string { return fmt.Sprintf("attn_dec_%d_%d", epl, g) }

// attnDecSmem is its shared memory (kernels/attention.cu).
func attnDecSmem(hd, g int) int { return 4 * attdWarps * g * (hd + 2) }

const attdWarps = 16 // ATTD_WARPS

// The tensor-core attention of the f16 cache (kernels/flash.cu): fa_pre
// for prompt tiles, fa_dec for one row a sequence, head sizes faHeadDims,
// up to faMaxGroup query heads a KV head.
var faHeadDims = []int{64, 128}

const (
	faThreads   = 128 // FA_THREADS
	faBN        = 64  // FA_BN: keys a tile
	faBM        = 64  // M rows (position, query head) of an fa_pre block
	faMaxGroup  = 16  // the M rows of fa_dec's one tile
	faDecStages = 3   // FA_DEC_STAGES
)

func faPreName(hd int) string { return fmt.Sprintf("fa_pre_%d", hd) }

// fa_dec's variants (FaArgs.mode, kernels/flash.cu FA_DEC_*): the
// four-a-thread merge, the first tiles' loads before pdl_wait, the split
// from the batch's positions (one wave). None changes a bit.
const (
	faDecMerge4   = 1
	faDecPrefetch = 2
	faDecFill     = 4
	faDecAll      = faDecMerge4 | faDecPrefetch | faDecFill
)

func faDecName(hd int) string { return fmt.Sprintf("fa_dec_%d", hd) }

// faPreSmem: two stages of K and V tiles (rows of hd+8 halfs), then each
// lane's running output (4 warps × 16 rows × hd floats).
func faPreSmem(hd int) int { return 2*2*faBN*(hd+8)*2 + 4*16*hd*4 }

// faDecSmem: faDecStages stages of K and V tiles, the tile's p (16 rows of
// 72 halfs), group maxima and sums (2 × 4 warps × 16 floats), the rope's
// angles (hd floats).
func faDecSmem(hd int) int { return faDecStages*2*faBN*(hd+8)*2 + 16*72*2 + 2*4*16*4 + hd*4 }

// variantRW parses "r2u4w8b1" into rows a warp and warps a block.
func variantRW(v string) (r, w int) {
	var u, b int
	fmt.Sscanf(v, "r%du%dw%db%d", &r, &u, &w, &b)
	return
}

// mvMaxRows is the most activation rows one mv/gu launch takes; batches
// of more rows go through cuBLAS when it is switched on (UseBLAS).
const mvMaxRows = 8

// attnChunk is the fixed split of attention over positions (ATT_CHUNK):
// a row's chunks are merged in order, whatever the launch's split.
const attnChunk = 256

const (
	mvThreads   = 128 // MV_THREADS
	attgThreads = 256 // ATTG_WARPS·32
	deqThreads  = 256
	eltThreads  = 256
	maxHeadDim  = 256
	maxGridY    = 65535
	ropeThreads = 128
	topkThreads = 1024 // TOPK_THREADS
)

// args builds a kernel's argument struct: every field 8 bytes.
type args []uint64

func (a args) p(p devPtr) args  { return append(a, uint64(p)) }
func (a args) i(v int) args     { return append(a, uint64(int64(v))) }
func (a args) f(v float64) args { return append(a, math.Float64bits(v)) }

func ceilDiv(a, b int) int { return (a + b - 1) / b }
