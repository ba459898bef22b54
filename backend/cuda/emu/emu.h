// emu.h: CPU emulation of the CUDA subset the matvec/gemm kernels use: each CUDA
// thread is a fiber (ucontext), barriers switch fibers.
#pragma once
#include <ucontext.h>
#include <cstdint>
#include <cstring>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <vector>
#include <functional>
struct dim3e { unsigned x, y, z; };
struct Fiber { ucontext_t ctx; dim3e tid; int warp; bool done; std::vector<char> stack; };
struct Bar { int n = 0, count = 0, gen = 0; };
extern Fiber* emu_cur;
extern dim3e emu_bid, emu_bdim, emu_gdim;
extern unsigned char* emu_smem;
void emu_yield();
void emu_bar_wait(Bar& b);
extern Bar emu_blockbar;
extern Bar emu_warpbar[32];
#define threadIdx (emu_cur->tid)
#define blockIdx emu_bid
#define blockDim emu_bdim
#define gridDim emu_gdim
#define __device__
#define __global__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __shared__ static
struct uint4 { unsigned x, y, z, w; };
struct uint2 { unsigned x, y; };
struct float4 { float x, y, z, w; };
inline uint4 make_uint4(unsigned a, unsigned b, unsigned c, unsigned d) { return {a, b, c, d}; }
inline float4 make_float4(float a, float b, float c, float d) { return {a, b, c, d}; }
template <class T> inline T __ldg(const T* p) { return *p; }
inline float __int_as_float(int i) { float f; memcpy(&f, &i, 4); return f; }
inline float __uint_as_float(unsigned i) { float f; memcpy(&f, &i, 4); return f; }
inline int __float_as_int(float f) { int i; memcpy(&i, &f, 4); return i; }
inline unsigned __float_as_uint(float f) { unsigned i; memcpy(&i, &f, 4); return i; }
inline unsigned __byte_perm(unsigned x, unsigned y, unsigned s) {
  uint64_t v = (uint64_t)x | ((uint64_t)y << 32); unsigned r = 0;
  for (int i = 0; i < 4; i++) { unsigned sel = (s >> (4 * i)) & 7; r |= (unsigned)((v >> (8 * sel)) & 0xff) << (8 * i); }
  return r;
}
inline unsigned __brev(unsigned x) { unsigned r = 0; for (int i = 0; i < 32; i++) if (x & (1u << i)) r |= 1u << (31 - i); return r; }
inline float __fmul_rn(float a, float b) { volatile float r = a * b; return r; }
inline float __fsub_rn(float a, float b) { volatile float r = a - b; return r; }
inline float __fadd_rn(float a, float b) { volatile float r = a + b; return r; }
inline int __float2int_rn(float f) { return (int)std::nearbyintf(f); }
template <class A, class B> inline auto min(A a, B b) -> decltype(a + b) { return a < b ? a : b; }
template <class A, class B> inline auto max(A a, B b) -> decltype(a + b) { return a > b ? a : b; }
inline void __syncthreads() { emu_bar_wait(emu_blockbar); }
extern float emu_xch[32][32];
inline float __shfl_xor_sync(unsigned, float v, int o) {
  int w = emu_cur->warp, l = emu_cur->tid.x & 31;
  emu_bar_wait(emu_warpbar[w]);
  emu_xch[w][l] = v;
  emu_bar_wait(emu_warpbar[w]);
  float r = emu_xch[w][l ^ o];
  emu_bar_wait(emu_warpbar[w]);
  return r;
}
// half conversions (round to nearest even)
inline float h2f(unsigned short h) {
  unsigned s = (h >> 15) & 1, e = (h >> 10) & 31, m = h & 1023; float v;
  if (e == 0) v = std::ldexp((float)m, -24); else if (e == 31) v = m ? NAN : INFINITY; else v = std::ldexp((float)(m | 1024), (int)e - 25);
  return s ? -v : v;
}
unsigned short f2h(float f);
inline int dp2a_lo(int a, int b, int c) { return c + (short)(a & 0xffff) * (signed char)(b & 0xff) + (short)(a >> 16) * (signed char)((b >> 8) & 0xff); }
inline int dp2a_hi(int a, int b, int c) { return c + (short)(a & 0xffff) * (signed char)((b >> 16) & 0xff) + (short)(a >> 16) * (signed char)((b >> 24) & 0xff); }
inline int dp2a_lo_u(int a, unsigned b, int c) { return c + (short)(a & 0xffff) * (int)(b & 0xff) + (short)(a >> 16) * (int)((b >> 8) & 0xff); }
inline int dp2a_hi_u(int a, unsigned b, int c) { return c + (short)(a & 0xffff) * (int)((b >> 16) & 0xff) + (short)(a >> 16) * (int)((b >> 24) & 0xff); }
inline uint4 ld_stream(const void* p) { uint4 v; memcpy(&v, p, 16); return v; }
inline uint4 ld_nc(const void* p) { uint4 v; memcpy(&v, p, 16); return v; }
inline void cp16(void* d, const void* s) { memcpy(d, s, 16); }
inline void cp4(void* d, const void* s) { memcpy(d, s, 4); }
inline void cp_commit() {}
template <int N> inline void cp_wait() {}
extern unsigned emu_mma[32][32][3];
template <bool AS, bool BS> inline void mma8(int* d, unsigned a0, unsigned a1, unsigned b) {
  int w = emu_cur->warp, l = emu_cur->tid.x & 31;
  emu_bar_wait(emu_warpbar[w]);
  emu_mma[w][l][0] = a0; emu_mma[w][l][1] = a1; emu_mma[w][l][2] = b;
  emu_bar_wait(emu_warpbar[w]);
  int g = l >> 2, t = l & 3;
  for (int e = 0; e < 4; e++) {
    int row = (e >> 1) * 8 + g, col = 2 * t + (e & 1), s = 0;
    for (int k = 0; k < 16; k++) {
      unsigned ar = emu_mma[w][(row % 8) * 4 + k / 4][row < 8 ? 0 : 1], br = emu_mma[w][col * 4 + k / 4][2];
      int av = (ar >> (8 * (k % 4))) & 0xff, bv = (br >> (8 * (k % 4))) & 0xff;
      if (AS) av = (signed char)av;
      if (BS) bv = (signed char)bv;
      s += av * bv;
    }
    d[e] = s;
  }
  emu_bar_wait(emu_warpbar[w]);
}
// run kernel f over grid × block, dynamic smem bytes
void emu_launch(dim3e grid, int block, size_t smem, std::function<void()> f);
