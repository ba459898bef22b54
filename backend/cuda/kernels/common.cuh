// common.cuh: types and helpers every kernel uses. The kernels include no
// CUDA headers: half and bfloat16 conversions are written in PTX here, so
// NVRTC needs no include path at run time.
//
// Launch arguments: every kernel takes one struct of 8-byte fields (u64
// pointers, i64 integers, double), filled field by field by the Go side in
// the same order (backend/cuda/kernels.go). Keep the two in step.

typedef unsigned char u8;
typedef signed char i8;
typedef unsigned short u16;
typedef unsigned int u32;
typedef unsigned long long u64;
typedef long long i64;

#define NEG_INF __int_as_float(0xff800000u)
#define FULL_MASK 0xffffffffu

__device__ __forceinline__ float h2f(u16 h) {
  float f;
  asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(h));
  return f;
}

__device__ __forceinline__ u16 f2h(float f) {
  u16 h;
  asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(f));
  return h;
}

__device__ __forceinline__ float bf2f(u16 b) { return __uint_as_float(((u32)b) << 16); }

// Byte k (0..3) of w as a float, exactly: the byte goes into the low
// mantissa bits of 2^23, and 2^23 is taken away again. One PRMT and one
// FADD, where an int-to-float conversion would run at a quarter rate.
template <int K>
__device__ __forceinline__ float bytef(u32 w) {
  return __int_as_float(__byte_perm(w, 0x4B000000u, 0x7440 | K)) - 8388608.0f;
}

// Byte k (0..3) of w, which must be below 128, as the float 0.5 + b/256,
// exactly: the byte becomes the top mantissa byte of 0.5. One PRMT and no
// FADD; dots built on it take the 0.5·Σx out at the end (Σ b·x = 256·acc −
// 128·Σx), which costs a few bits of the float's 24, far below what the
// oracle bounds notice.
template <int K>
__device__ __forceinline__ float bytefh(u32 w) {
  return __int_as_float(__byte_perm(w, 0x3F000000u, 0x7044 | (K << 8)));
}

// c + a.lo16·b.byte0 + a.hi16·b.byte1 (dp2a.lo), or with bytes 2 and 3
// (dp2a.hi); a holds two int16, b four int8. (The intrinsics live in a
// header NVRTC would need; the PTX is one instruction.)
__device__ __forceinline__ int dp2a_lo(int a, int b, int c) {
  int d;
  asm("dp2a.lo.s32.s32 %0, %1, %2, %3;" : "=r"(d) : "r"(a), "r"(b), "r"(c));
  return d;
}
__device__ __forceinline__ int dp2a_hi(int a, int b, int c) {
  int d;
  asm("dp2a.hi.s32.s32 %0, %1, %2, %3;" : "=r"(d) : "r"(a), "r"(b), "r"(c));
  return d;
}

// The same with b's bytes unsigned (0..255).
__device__ __forceinline__ int dp2a_lo_u(int a, u32 b, int c) {
  int d;
  asm("dp2a.lo.s32.u32 %0, %1, %2, %3;" : "=r"(d) : "r"(a), "r"(b), "r"(c));
  return d;
}
__device__ __forceinline__ int dp2a_hi_u(int a, u32 b, int c) {
  int d;
  asm("dp2a.hi.s32.u32 %0, %1, %2, %3;" : "=r"(d) : "r"(a), "r"(b), "r"(c));
  return d;
}

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(FULL_MASK, v, o);
  return v;
}

__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(FULL_MASK, v, o));
  return v;
}

// Sum of v over the block (blockDim.x a multiple of 32, ≤ 1024); every
// thread gets the result.
__device__ __forceinline__ float block_sum(float v) {
  __shared__ float part[32];
  __shared__ float total;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  v = warp_sum(v);
  if (lane == 0) part[warp] = v;
  __syncthreads();
  if (warp == 0) {
    float s = lane < (int)(blockDim.x >> 5) ? part[lane] : 0.f;
    s = warp_sum(s);
    if (lane == 0) total = s;
  }
  __syncthreads();
  return total;
}

// Weights are read once per token: load them around L1, streaming.
__device__ __forceinline__ uint4 ld_stream(const void* p) {
  uint4 v;
  asm volatile("ld.global.nc.L1::no_allocate.v4.u32 {%0,%1,%2,%3}, [%4];"
               : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
               : "l"(p));
  return v;
}

__device__ __forceinline__ uint4 ld_nc(const void* p) { return __ldg((const uint4*)p); }

__device__ __forceinline__ float silu(float g) { return g / (1.0f + expf(-g)); }

// Programmatic dependent launch (sm_90). Kernels are launched so that they
// may start while the previous kernel in the stream is still running
// (lower.go). pdl_wait blocks until that kernel (and so every earlier one)
// has finished and its writes are visible: every kernel calls it before it
// reads anything an earlier kernel wrote or writes anything an earlier
// kernel reads. Before it, a kernel may only read weights; the decode
// matvecs issue their first weight loads there, so the memory system is
// busy while the previous kernel drains. (Prefetching their whole first
// rows into L2 there as well made no difference: 373-377 tok/s either way.) pdl_trigger lets the next kernel's
// blocks be scheduled once every block of this one has called it or
// exited. Both are no-ops for kernels launched the ordinary way.
__device__ __forceinline__ void pdl_wait() {
#if __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}

__device__ __forceinline__ void pdl_trigger() {
#if __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
}

// Both, at the top of a kernel that reads nothing before it needs the
// previous kernel's results.
__device__ __forceinline__ void pdl_start() {
  pdl_wait();
  pdl_trigger();
}

// The KV cache holds f16 values (kv32 false, the default) or float32 ones
// (kv32 true, --cache-type f32): element i of the cache at base.
__device__ __forceinline__ float kv_get(u64 base, i64 i, bool kv32) {
  return kv32 ? ((const float*)base)[i] : h2f(((const u16*)base)[i]);
}
__device__ __forceinline__ void kv_put(u64 base, i64 i, float v, bool kv32) {
  if (kv32)
    ((float*)base)[i] = v;
  else
    ((u16*)base)[i] = f2h(v);
}
// v as the cache holds it.
__device__ __forceinline__ float kv_round(float v, bool kv32) { return kv32 ? v : h2f(f2h(v)); }

// ---- the batch (ml.Batch), uploaded by Begin before the ops that use it:
// int32 pos[rows], toff[rows], then the page tables of its sequences one
// after another: page j of row r's sequence is pages[toff[r] + j], pages
// starting at 2·rows. It depends on no earlier kernel, so it may be read
// before pdl_wait. (nseq, the number of sequences, is not needed to find
// a row's table.)
struct BatchRow {
  int pos;           // the row's position
  const int* pages;  // its sequence's page table
};
__device__ __forceinline__ BatchRow batch_row(u64 bat, i64 rows, i64 nseq, i64 r) {
  const int* b = (const int*)bat;
  BatchRow br;
  br.pos = b[r];
  br.pages = b + 2 * rows + b[rows + r];
  return br;
}
// The cache slot (row of [slots][kvdim]) of position t: pages of 16.
__device__ __forceinline__ i64 kv_slot(const int* pages, i64 t) { return (i64)pages[t >> 4] * 16 + (t & 15); }

// Rope of one pair at position p, the same arithmetic in every kernel that
// rotates (rope, rope_kv, attn_dec), so that a row's bits do not depend on
// which of them ran: the angle in double, the rotation in float with
// explicit roundings (no contraction the compiler could choose
// differently in different kernels).
__device__ __forceinline__ void rope_cs(i64 p, double pos_scale, double freq, float& c, float& s) {
  double sd, cd;
  sincos((double)p * pos_scale * freq, &sd, &cd);
  c = (float)cd;
  s = (float)sd;
}
__device__ __forceinline__ void rope_rot(float x0, float x1, float c, float s, float& y0, float& y1) {
  y0 = __fsub_rn(__fmul_rn(x0, c), __fmul_rn(x1, s));
  y1 = __fadd_rn(__fmul_rn(x0, s), __fmul_rn(x1, c));
}
