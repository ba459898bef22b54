// formats.cuh: the weight formats as the GPU holds them, one struct each.
//
// A weight matrix has rows × cols values (GGUF shape [cols, rows]); row r
// maps an input vector of cols values to output r. The device layout is the
// file's for Q4_K, Q5_K, F32, F16 and BF16. Q8_0, Q4_0 and Q6_K blocks are
// 34, 18 and 210 bytes, which breaks 16-byte alignment, so LoadWeight
// (weights.go) splits them into planes with the same bytes:
//
//   Q8_0: qs [rows·nb][32] int8,  then d [rows·nb] f16         (nb = cols/32)
//   Q4_0: qs [rows·nb][16] u8,    then d [rows·nb] f16         (nb = cols/32)
//   Q6_K: ql+qh [rows·nb][192],   then scales [rows·nb][16] i8,
//         then d [rows·nb] f16                                 (nb = cols/256)
//
// One thread handles one "unit" of a row at a time: UNIT values, read with
// one 16-byte load, laid out as RUNS runs of RUNLEN consecutive columns
// starting at xoff(u, run). Each format gives:
//   load(raw, w, rows, cols, row, u)  read unit u of row
//   dot(raw, u, xv, xs)               Σ value·x over the unit; xv holds the
//                                     x values in run order, xs[run] their sums
//   deq(raw, u, v)                    the unit's values in run order
// Dots keep the block scales outside the inner sums: for a K-quant
// sub-block, Σ (d·sc·q − dmin·m)·x = d·sc·Σ q·x − dmin·m·Σ x.
//
// The quantized formats also have idot (IDOT = true), for the decode
// kernels that stage x in shared memory as int16: each run of x is
// x ≈ sx[run]·xq with |xq| ≤ 32767 (a relative error under 2^-15 of the
// run's largest value, far below what float32 activations would show
// against the oracle), and Σ q·x is sx·Σ q·xq, two products per dp2a
// instruction in int32. xq holds the run's values as int16 pairs, run r's
// pair j in xq[r·RUNLEN/2 + j]; xs[run] is the run's exact float sum.
// idotl forms the exact integer sums of the unit's runs and hands them to
// fin(ws, s0, s1, sx, xs), the unit's float value from its weight scales
// (WS, from ws()); the GEMM (gemm.cu) gets the same integer sums from the
// tensor cores and calls the same fin, so a row's bits agree.

#define DOT4(acc, w, xp)                       \
  acc = fmaf(bytef<0>(w), (xp)[0], acc);       \
  acc = fmaf(bytef<1>(w), (xp)[1], acc);       \
  acc = fmaf(bytef<2>(w), (xp)[2], acc);       \
  acc = fmaf(bytef<3>(w), (xp)[3], acc)

// acc += Σ (0.5 + b/256)·x over the 4 bytes of w (each below 128).
#define DOT4H(acc, w, xp)                      \
  acc = fmaf(bytefh<0>(w), (xp)[0], acc);      \
  acc = fmaf(bytefh<1>(w), (xp)[1], acc);      \
  acc = fmaf(bytefh<2>(w), (xp)[2], acc);      \
  acc = fmaf(bytefh<3>(w), (xp)[3], acc)

// acc += Σ q·xq over the 4 bytes of w (int8, or small unsigned values) and
// the 4 int16 values in xq[0], xq[1].
#define IDOT4(acc, w, xq)                          \
  acc = dp2a_lo((int)(xq)[0], (int)(w), acc);    \
  acc = dp2a_hi((int)(xq)[1], (int)(w), acc)

// The same with w's bytes unsigned: the high nibbles of a Q4 byte can be
// used in place (w & 0xF0F0F0F0, 16·q), saving the shift; the sum is then
// 16 times too large, which the float scale takes out.
#define IDOT4U(acc, w, xq)                          \
  acc = dp2a_lo_u((int)(xq)[0], (w), acc);          \
  acc = dp2a_hi_u((int)(xq)[1], (w), acc)

#define DEQ4(v, w, sc, mn)                     \
  (v)[0] = (sc) * bytef<0>(w) - (mn);          \
  (v)[1] = (sc) * bytef<1>(w) - (mn);          \
  (v)[2] = (sc) * bytef<2>(w) - (mn);          \
  (v)[3] = (sc) * bytef<3>(w) - (mn)

// The 6-bit scales and mins of the two sub-blocks (2g, 2g+1) that chunk c
// = u%8 of a Q4_K/Q5_K super-block touches (g = c/2), from the 12 packed
// bytes held in h.y (bytes 0-3), h.z (4-7) and h.w (8-11); ggml's
// get_scale_min_k4, without branches: all eight of each are unpacked a
// word at a time and the lane's bytes selected.
__device__ __forceinline__ void k4scales(const uint4& h, int c, float& d1, float& m1, float& d2, float& m2) {
  const float d = h2f(h.x & 0xffff), dmin = h2f(h.x >> 16);
  const u32 sc03 = h.y & 0x3F3F3F3Fu, m03 = h.z & 0x3F3F3F3Fu;
  const u32 sc47 = (h.w & 0x0F0F0F0Fu) | ((h.y >> 2) & 0x30303030u);
  const u32 m47 = ((h.w >> 4) & 0x0F0F0F0Fu) | ((h.z >> 2) & 0x30303030u);
  const bool hi = c >= 4;
  const u32 sc = hi ? sc47 : sc03, mn = hi ? m47 : m03;
  const int sh = 16 * ((c >> 1) & 1);  // sub-blocks 2g, 2g+1 are bytes 2(g%2), 2(g%2)+1 of their word
  d1 = d * (float)((sc >> sh) & 0xff);
  d2 = d * (float)((sc >> (sh + 8)) & 0xff);
  m1 = dmin * (float)((mn >> sh) & 0xff);
  m2 = dmin * (float)((mn >> (sh + 8)) & 0xff);
}

// The staged-x decode kernels use a second interface, where everything
// that depends only on the lane (unit u = lane + 32·i, so u mod 8 is fixed)
// is worked out once (Lane), and the row's base addresses once a group
// (RowP): loadl(raw, rowp, lane, u) and idotl(raw, lane, xq, sx, xs).

// d·b for a byte b (0..255) by way of the float 2^23 + b that one PRMT
// makes: d·(2^23 + b) − d·2^23 is exact inside the FMA.
__device__ __forceinline__ float mulbyte(float d, float dneg223, u32 w, u32 sel) {
  return fmaf(d, __int_as_float(__byte_perm(w, 0x4B000000u, sel)), dneg223);
}
// The selector that puts byte k of the first operand under 0x4B.
__device__ __forceinline__ u32 magicsel(int k) { return 0x7440u | (u32)k; }

// Q4_K/Q5_K scales of the lane's two sub-blocks, from a header h.
struct K4Lane {
  u32 hi;      // all ones for sub-blocks 4..7 (a mask: selects without branches)
  u32 s1, s2;  // PRMT selectors of their bytes in the unpacked words
};
__device__ __forceinline__ K4Lane k4lane(int c) {
  K4Lane l;
  l.hi = c >= 4 ? 0xffffffffu : 0u;
  const int b = 2 * ((c >> 1) & 1);
  l.s1 = magicsel(b);
  l.s2 = magicsel(b + 1);
  return l;
}
__device__ __forceinline__ void k4scalesl(const uint4& h, const K4Lane& l, float& d1, float& m1, float& d2, float& m2) {
  const float d = h2f(h.x & 0xffff), dmin = h2f(h.x >> 16);
  const u32 sc47 = (h.w & 0x0F0F0F0Fu) | ((h.y >> 2) & 0x30303030u), sc03 = h.y & 0x3F3F3F3Fu;
  const u32 mn47 = ((h.w >> 4) & 0x0F0F0F0Fu) | ((h.z >> 2) & 0x30303030u), mn03 = h.z & 0x3F3F3F3Fu;
  const u32 sc = (sc47 & l.hi) | (sc03 & ~l.hi), mn = (mn47 & l.hi) | (mn03 & ~l.hi);
  const float dn = d * -8388608.f, mnn = dmin * -8388608.f;
  d1 = mulbyte(d, dn, sc, l.s1);
  d2 = mulbyte(d, dn, sc, l.s2);
  m1 = mulbyte(dmin, mnn, mn, l.s1);
  m2 = mulbyte(dmin, mnn, mn, l.s2);
}

// Q4_K: 144-byte super-blocks of 256 values: d, dmin (f16), 12 bytes of
// scales, 128 bytes of nibbles. Unit u: super-block u/8, chunk c = u%8 =
// 16 qs bytes at 16c, i.e. group g = c/2, half c%2: low nibbles are columns
// 64g+16(c%2)+i (sub-block 2g), high nibbles the same +32 (sub-block 2g+1).
struct Q4K {
  static constexpr int UNIT = 32, RUNS = 2, RUNLEN = 16;
  struct Raw {
    uint4 q, h;
  };
  static __device__ __forceinline__ void load(Raw& r, const u8* w, i64 rows, i64 cols, i64 row, i64 u) {
    const u8* b = w + (row * (cols >> 8) + (u >> 3)) * 144;
    r.h = ld_nc(b);
    r.q = ld_stream(b + 16 + 16 * (u & 7));
  }
  static __device__ __forceinline__ i64 xoff(i64 u, int run) {
    const int c = (int)(u & 7);
    return (u >> 3) * 256 + 64 * (c >> 1) + 16 * (c & 1) + 32 * run;
  }
  static __device__ __forceinline__ float dot(const Raw& r, i64 u, const float* xv, const float* xs) {
    float s0 = 0.f, s1 = 0.f;
    const u32 qw[4] = {r.q.x, r.q.y, r.q.z, r.q.w};
#pragma unroll
    for (int k = 0; k < 4; k++) {
      const u32 lo = qw[k] & 0x0F0F0F0Fu, hi = (qw[k] >> 4) & 0x0F0F0F0Fu;
      DOT4H(s0, lo, xv + 4 * k);
      DOT4H(s1, hi, xv + 16 + 4 * k);
    }
    float d1, m1, d2, m2;
    k4scales(r.h, (int)(u & 7), d1, m1, d2, m2);
    // Σ (d·sc·q − dmin·m)·x with Σ q·x = 256·s − 128·Σx.
    return d1 * fmaf(256.f, s0, -128.f * xs[0]) - m1 * xs[0] + d2 * fmaf(256.f, s1, -128.f * xs[1]) - m2 * xs[1];
  }
  static constexpr bool IDOT = true;
  struct Lane {
    K4Lane k;
    int qoff;
  };
  static __device__ __forceinline__ Lane lane_of(int u) {
    Lane l;
    l.k = k4lane(u & 7);
    l.qoff = 16 + 16 * (u & 7);
    return l;
  }
  struct RowP {
    const u8* p;
  };
  static __device__ __forceinline__ RowP rowp(const u8* w, i64 rows, i64 cols, i64 row) { return {w + row * (cols >> 8) * 144}; }
  static __device__ __forceinline__ void loadl(Raw& r, const RowP& rp, const Lane& l, int u) {
    const u8* b = rp.p + (u32)(u >> 3) * 144u;
    r.h = ld_nc(b);
    r.q = ld_stream(b + l.qoff);
  }
  static __device__ __forceinline__ float idotl(const Raw& r, const Lane& l, const u32* xq, const float* sx, const float* xs) {
    int s0 = 0, s1 = 0;
    const u32 qw[4] = {r.q.x, r.q.y, r.q.z, r.q.w};
#pragma unroll
    for (int k = 0; k < 4; k++) {
      IDOT4U(s0, qw[k] & 0x0F0F0F0Fu, xq + 2 * k);
      IDOT4U(s1, qw[k] & 0xF0F0F0F0u, xq + 8 + 2 * k);  // 16·q
    }
    return fin(ws(r, l), (float)s0, (float)s1, sx, xs);
  }
  // The unit's weight scales, and its value from the exact integer sums
  // s0 = Σ q·xq (run 0) and s1 = Σ 16q·xq (run 1, high nibbles in place).
  // Every operation is explicitly rounded (no contraction the compiler
  // could choose differently in different kernels): the decode kernels and
  // the GEMM (gemm.cu) call this one function, so a row's bits agree.
  struct WS {
    float d1, m1, d2, m2;
  };
  static __device__ __forceinline__ WS ws(const Raw& r, const Lane& l) {
    WS w;
    k4scalesl(r.h, l.k, w.d1, w.m1, w.d2, w.m2);
    return w;
  }
  static __device__ __forceinline__ float fin(const WS& w, float s0, float s1, const float* sx, const float* xs) {
    return fmaf(__fmul_rn(w.d1, sx[0]), s0,
                fmaf(__fmul_rn(w.d2, __fmul_rn(0.0625f, sx[1])), s1, -fmaf(w.m1, xs[0], __fmul_rn(w.m2, xs[1]))));
  }
  static __device__ __forceinline__ void deq(const Raw& r, i64 u, float* v) {
    float d1, m1, d2, m2;
    k4scales(r.h, (int)(u & 7), d1, m1, d2, m2);
    const u32 qw[4] = {r.q.x, r.q.y, r.q.z, r.q.w};
#pragma unroll
    for (int k = 0; k < 4; k++) {
      const u32 lo = qw[k] & 0x0F0F0F0Fu, hi = (qw[k] >> 4) & 0x0F0F0F0Fu;
      DEQ4(v + 4 * k, lo, d1, m1);
      DEQ4(v + 16 + 4 * k, hi, d2, m2);
    }
  }
};

// Q5_K: 176-byte super-blocks: d, dmin, 12 bytes of scales (as Q4_K), 32
// bytes qh (fifth bits), 128 bytes qs. Units as Q4_K; the fifth bit of
// column 64g+l is bit 2g of qh[l], of column 64g+32+l bit 2g+1.
struct Q5K {
  static constexpr int UNIT = 32, RUNS = 2, RUNLEN = 16;
  struct Raw {
    uint4 q, h, qh;
  };
  static __device__ __forceinline__ void load(Raw& r, const u8* w, i64 rows, i64 cols, i64 row, i64 u) {
    const u8* b = w + (row * (cols >> 8) + (u >> 3)) * 176;
    r.h = ld_nc(b);
    r.qh = ld_nc(b + 16 + 16 * (u & 1));
    r.q = ld_stream(b + 48 + 16 * (u & 7));
  }
  static __device__ __forceinline__ i64 xoff(i64 u, int run) { return Q4K::xoff(u, run); }
  static __device__ __forceinline__ void bits(const Raw& r, i64 u, u32* lo, u32* hi) {
    const int sh = 2 * (int)((u & 7) >> 1);
    const u32 qw[4] = {r.q.x, r.q.y, r.q.z, r.q.w};
    const u32 hw[4] = {r.qh.x, r.qh.y, r.qh.z, r.qh.w};
#pragma unroll
    for (int k = 0; k < 4; k++) {
      lo[k] = (qw[k] & 0x0F0F0F0Fu) | (((hw[k] >> sh) & 0x01010101u) << 4);
      hi[k] = ((qw[k] >> 4) & 0x0F0F0F0Fu) | (((hw[k] >> (sh + 1)) & 0x01010101u) << 4);
    }
  }
  static __device__ __forceinline__ float dot(const Raw& r, i64 u, const float* xv, const float* xs) {
    u32 lo[4], hi[4];
    bits(r, u, lo, hi);
    float s0 = 0.f, s1 = 0.f;
#pragma unroll
    for (int k = 0; k < 4; k++) {
      DOT4H(s0, lo[k], xv + 4 * k);
      DOT4H(s1, hi[k], xv + 16 + 4 * k);
    }
    float d1, m1, d2, m2;
    k4scales(r.h, (int)(u & 7), d1, m1, d2, m2);
    return d1 * fmaf(256.f, s0, -128.f * xs[0]) - m1 * xs[0] + d2 * fmaf(256.f, s1, -128.f * xs[1]) - m2 * xs[1];
  }
  static constexpr bool IDOT = true;
  struct Lane {
    K4Lane k;
    int qoff, qhoff, sh;
  };
  static __device__ __forceinline__ Lane lane_of(int u) {
    Lane l;
    const int c = u & 7;
    l.k = k4lane(c);
    l.qoff = 48 + 16 * c;
    l.qhoff = 16 + 16 * (c & 1);
    l.sh = 2 * (c >> 1);
    return l;
  }
  struct RowP {
    const u8* p;
  };
  static __device__ __forceinline__ RowP rowp(const u8* w, i64 rows, i64 cols, i64 row) { return {w + row * (cols >> 8) * 176}; }
  static __device__ __forceinline__ void loadl(Raw& r, const RowP& rp, const Lane& l, int u) {
    const u8* b = rp.p + (u32)(u >> 3) * 176u;
    r.h = ld_nc(b);
    r.qh = ld_nc(b + l.qhoff);
    r.q = ld_stream(b + l.qoff);
  }
  static __device__ __forceinline__ float idotl(const Raw& r, const Lane& l, const u32* xq, const float* sx, const float* xs) {
    const u32 qw[4] = {r.q.x, r.q.y, r.q.z, r.q.w};
    const u32 hw[4] = {r.qh.x, r.qh.y, r.qh.z, r.qh.w};
    int s0 = 0, s1 = 0;
#pragma unroll
    for (int k = 0; k < 4; k++) {
      const u32 lo = (qw[k] & 0x0F0F0F0Fu) | (((hw[k] >> l.sh) & 0x01010101u) << 4);
      const u32 hi = ((qw[k] >> 4) & 0x0F0F0F0Fu) | (((hw[k] >> (l.sh + 1)) & 0x01010101u) << 4);
      IDOT4(s0, lo, xq + 2 * k);
      IDOT4(s1, hi, xq + 8 + 2 * k);
    }
    return fin(ws(r, l), (float)s0, (float)s1, sx, xs);
  }
  typedef Q4K::WS WS;
  static __device__ __forceinline__ WS ws(const Raw& r, const Lane& l) {
    WS w;
    k4scalesl(r.h, l.k, w.d1, w.m1, w.d2, w.m2);
    return w;
  }
  static __device__ __forceinline__ float fin(const WS& w, float s0, float s1, const float* sx, const float* xs) {
    return fmaf(__fmul_rn(w.d1, sx[0]), s0, fmaf(__fmul_rn(w.d2, sx[1]), s1, -fmaf(w.m1, xs[0], __fmul_rn(w.m2, xs[1]))));
  }
  static __device__ __forceinline__ void deq(const Raw& r, i64 u, float* v) {
    u32 lo[4], hi[4];
    bits(r, u, lo, hi);
    float d1, m1, d2, m2;
    k4scales(r.h, (int)(u & 7), d1, m1, d2, m2);
#pragma unroll
    for (int k = 0; k < 4; k++) {
      DEQ4(v + 4 * k, lo[k], d1, m1);
      DEQ4(v + 16 + 4 * k, hi[k], d2, m2);
    }
  }
};

// Q6_K (planes, see above): per super-block ql[128] qh[64] | scales[16] | d.
// Unit u: super-block u/8, chunk c = u%8, half h = c/4, j = c%4: 16 ql bytes
// at 64h+16j and the 16 qh bytes at 128+32h+16(j%2). Low nibbles are
// columns 128h+32(j/2)+16(j%2)+i with qh bits 2(j/2).., high nibbles the
// same +64 with qh bits 2(j/2)+4..; sub-blocks 8h+j and 8h+j+4.
struct Q6K {
  static constexpr int UNIT = 32, RUNS = 2, RUNLEN = 16;
  struct Raw {
    uint4 ql, qh, sc;
    u32 d;
  };
  static __device__ __forceinline__ void load(Raw& r, const u8* w, i64 rows, i64 cols, i64 row, i64 u) {
    const i64 nb = cols >> 8, bi = row * nb + (u >> 3);
    const int c = (int)(u & 7), h = c >> 2, j = c & 3;
    const u8* a = w + bi * 192;
    r.ql = ld_stream(a + 64 * h + 16 * j);
    r.qh = ld_nc(a + 128 + 32 * h + 16 * (j & 1));
    r.sc = ld_nc(w + rows * nb * 192 + bi * 16);
    r.d = ((const u16*)(w + rows * nb * 208))[bi];
  }
  static __device__ __forceinline__ i64 xoff(i64 u, int run) {
    const int c = (int)(u & 7), h = c >> 2, j = c & 3;
    return (u >> 3) * 256 + 128 * h + 32 * (j >> 1) + 16 * (j & 1) + 64 * run;
  }
  static __device__ __forceinline__ void bits(const Raw& r, i64 u, u32* lo, u32* hi, float& slo, float& shi) {
    const int c = (int)(u & 7), h = c >> 2, j = c & 3;
    const int sh = 2 * (j >> 1);
    const u32 qw[4] = {r.ql.x, r.ql.y, r.ql.z, r.ql.w};
    const u32 hw[4] = {r.qh.x, r.qh.y, r.qh.z, r.qh.w};
#pragma unroll
    for (int k = 0; k < 4; k++) {
      lo[k] = (qw[k] & 0x0F0F0F0Fu) | (((hw[k] >> sh) & 0x03030303u) << 4);
      hi[k] = ((qw[k] >> 4) & 0x0F0F0F0Fu) | (((hw[k] >> (sh + 4)) & 0x03030303u) << 4);
    }
    const u32 wl = h ? r.sc.z : r.sc.x, wh = h ? r.sc.w : r.sc.y;
    const float d = h2f((u16)r.d);
    slo = d * (float)(int)(i8)((wl >> (8 * j)) & 0xff);
    shi = d * (float)(int)(i8)((wh >> (8 * j)) & 0xff);
  }
  static __device__ __forceinline__ float dot(const Raw& r, i64 u, const float* xv, const float* xs) {
    u32 lo[4], hi[4];
    float slo, shi;
    bits(r, u, lo, hi, slo, shi);
    float s0 = 0.f, s1 = 0.f;
#pragma unroll
    for (int k = 0; k < 4; k++) {
      DOT4H(s0, lo[k], xv + 4 * k);
      DOT4H(s1, hi[k], xv + 16 + 4 * k);
    }
    // Σ (q−32)·x = 256·s − 128·Σx − 32·Σx.
    return slo * fmaf(256.f, s0, -160.f * xs[0]) + shi * fmaf(256.f, s1, -160.f * xs[1]);
  }
  static constexpr bool IDOT = true;
  struct Lane {
    int qloff, qhoff, sh;
    u32 h;    // all ones for the second half of the super-block
    int shl;  // byte j of a scales word to the top, for an arithmetic shift down
  };
  static __device__ __forceinline__ Lane lane_of(int u) {
    Lane l;
    const int c = u & 7, h = c >> 2, j = c & 3;
    l.qloff = 64 * h + 16 * j;
    l.qhoff = 128 + 32 * h + 16 * (j & 1);
    l.sh = 2 * (j >> 1);
    l.h = h ? 0xffffffffu : 0u;
    l.shl = 24 - 8 * j;
    return l;
  }
  struct RowP {
    const u8* a;
    const u8* s;
    const u16* d;
  };
  static __device__ __forceinline__ RowP rowp(const u8* w, i64 rows, i64 cols, i64 row) {
    const i64 nb = cols >> 8, b0 = row * nb;
    return {w + b0 * 192, w + rows * nb * 192 + b0 * 16, (const u16*)(w + rows * nb * 208) + b0};
  }
  static __device__ __forceinline__ void loadl(Raw& r, const RowP& rp, const Lane& l, int u) {
    const u32 sb = (u32)(u >> 3);
    const u8* a = rp.a + sb * 192u;
    r.ql = ld_stream(a + l.qloff);
    r.qh = ld_nc(a + l.qhoff);
    r.sc = ld_nc(rp.s + sb * 16u);
    r.d = rp.d[sb];
  }
  static __device__ __forceinline__ float idotl(const Raw& r, const Lane& l, const u32* xq, const float* sx, const float* xs) {
    const u32 qw[4] = {r.ql.x, r.ql.y, r.ql.z, r.ql.w};
    const u32 hw[4] = {r.qh.x, r.qh.y, r.qh.z, r.qh.w};
    int s0 = 0, s1 = 0;
#pragma unroll
    for (int k = 0; k < 4; k++) {
      const u32 lo = (qw[k] & 0x0F0F0F0Fu) | (((hw[k] >> l.sh) & 0x03030303u) << 4);
      const u32 hi = ((qw[k] >> 4) & 0x0F0F0F0Fu) | (((hw[k] >> (l.sh + 4)) & 0x03030303u) << 4);
      IDOT4(s0, lo, xq + 2 * k);
      IDOT4(s1, hi, xq + 8 + 2 * k);
    }
    return fin(ws(r, l), (float)s0, (float)s1, sx, xs);
  }
  struct WS {
    float slo, shi;
  };
  // The scales from the scale words of the lane's half (lo: sc.x or sc.z,
  // hi: sc.y or sc.w) and d.
  static __device__ __forceinline__ WS wsw(u32 wlo, u32 whi, u32 d, int shl) {
    const float df = h2f((u16)d);
    return {__fmul_rn(df, (float)((int)(wlo << shl) >> 24)), __fmul_rn(df, (float)((int)(whi << shl) >> 24))};
  }
  static __device__ __forceinline__ WS ws(const Raw& r, const Lane& l) {
    return wsw((r.sc.z & l.h) | (r.sc.x & ~l.h), (r.sc.w & l.h) | (r.sc.y & ~l.h), r.d, l.shl);
  }
  static __device__ __forceinline__ float fin(const WS& w, float s0, float s1, const float* sx, const float* xs) {
    return fmaf(w.slo, fmaf(sx[0], s0, __fmul_rn(-32.f, xs[0])), __fmul_rn(w.shi, fmaf(sx[1], s1, __fmul_rn(-32.f, xs[1]))));
  }
  static __device__ __forceinline__ void deq(const Raw& r, i64 u, float* v) {
    u32 lo[4], hi[4];
    float slo, shi;
    bits(r, u, lo, hi, slo, shi);
#pragma unroll
    for (int k = 0; k < 4; k++) {
      DEQ4(v + 4 * k, lo[k], slo, 32.f * slo);
      DEQ4(v + 16 + 4 * k, hi[k], shi, 32.f * shi);
    }
  }
};

// Q8_0 (planes): unit u = half u%2 of block u/2, 16 int8 values.
struct Q80 {
  static constexpr int UNIT = 16, RUNS = 1, RUNLEN = 16;
  struct Raw {
    uint4 q;
    u32 d;
  };
  static __device__ __forceinline__ void load(Raw& r, const u8* w, i64 rows, i64 cols, i64 row, i64 u) {
    const i64 nb = cols >> 5, bi = row * nb + (u >> 1);
    r.q = ld_stream(w + bi * 32 + 16 * (u & 1));
    r.d = ((const u16*)(w + rows * nb * 32))[bi];
  }
  static __device__ __forceinline__ i64 xoff(i64 u, int run) { return u * 16; }
  // Bytes are read as q+128 (flip the sign bit), and 128·Σx taken away.
  static __device__ __forceinline__ float dot(const Raw& r, i64 u, const float* xv, const float* xs) {
    const u32 qw[4] = {r.q.x ^ 0x80808080u, r.q.y ^ 0x80808080u, r.q.z ^ 0x80808080u, r.q.w ^ 0x80808080u};
    float s = 0.f, t = 0.f;
    DOT4(s, qw[0], xv);
    DOT4(t, qw[1], xv + 4);
    DOT4(s, qw[2], xv + 8);
    DOT4(t, qw[3], xv + 12);
    return h2f((u16)r.d) * ((s + t) - 128.f * xs[0]);
  }
  static constexpr bool IDOT = true;
  struct Lane {
    int off;
  };
  static __device__ __forceinline__ Lane lane_of(int u) { return {16 * (u & 1)}; }
  struct RowP {
    const u8* q;
    const u16* d;
  };
  static __device__ __forceinline__ RowP rowp(const u8* w, i64 rows, i64 cols, i64 row) {
    const i64 nb = cols >> 5, b0 = row * nb;
    return {w + b0 * 32, (const u16*)(w + rows * nb * 32) + b0};
  }
  static __device__ __forceinline__ void loadl(Raw& r, const RowP& rp, const Lane& l, int u) {
    const u32 b = (u32)(u >> 1);
    r.q = ld_stream(rp.q + b * 32u + l.off);
    r.d = rp.d[b];
  }
  static __device__ __forceinline__ float idotl(const Raw& r, const Lane& l, const u32* xq, const float* sx, const float* xs) {
    int s = 0, t = 0;
    IDOT4(s, r.q.x, xq);
    IDOT4(t, r.q.y, xq + 2);
    IDOT4(s, r.q.z, xq + 4);
    IDOT4(t, r.q.w, xq + 6);
    return fin(ws(r, l), (float)(s + t), 0.f, sx, xs);
  }
  struct WS {
    float d;
  };
  static __device__ __forceinline__ WS ws(const Raw& r, const Lane& l) { return {h2f((u16)r.d)}; }
  static __device__ __forceinline__ float fin(const WS& w, float s0, float s1, const float* sx, const float* xs) {
    return __fmul_rn(w.d, __fmul_rn(sx[0], s0));
  }
  static __device__ __forceinline__ void deq(const Raw& r, i64 u, float* v) {
    const float d = h2f((u16)r.d);
    const u32 qw[4] = {r.q.x ^ 0x80808080u, r.q.y ^ 0x80808080u, r.q.z ^ 0x80808080u, r.q.w ^ 0x80808080u};
#pragma unroll
    for (int k = 0; k < 4; k++) {
      DEQ4(v + 4 * k, qw[k], d, 128.f * d);
    }
  }
};

// Q4_0 (planes): unit u = block u, 16 bytes: low nibbles are columns
// 32u+i, high nibbles 32u+16+i; value = (q−8)·d.
struct Q40 {
  static constexpr int UNIT = 32, RUNS = 2, RUNLEN = 16;
  struct Raw {
    uint4 q;
    u32 d;
  };
  static __device__ __forceinline__ void load(Raw& r, const u8* w, i64 rows, i64 cols, i64 row, i64 u) {
    const i64 nb = cols >> 5, bi = row * nb + u;
    r.q = ld_stream(w + bi * 16);
    r.d = ((const u16*)(w + rows * nb * 16))[bi];
  }
  static __device__ __forceinline__ i64 xoff(i64 u, int run) { return u * 32 + 16 * run; }
  static __device__ __forceinline__ float dot(const Raw& r, i64 u, const float* xv, const float* xs) {
    float s0 = 0.f, s1 = 0.f;
    const u32 qw[4] = {r.q.x, r.q.y, r.q.z, r.q.w};
#pragma unroll
    for (int k = 0; k < 4; k++) {
      const u32 lo = qw[k] & 0x0F0F0F0Fu, hi = (qw[k] >> 4) & 0x0F0F0F0Fu;
      DOT4H(s0, lo, xv + 4 * k);
      DOT4H(s1, hi, xv + 16 + 4 * k);
    }
    // Σ (q−8)·x = 256·s − 128·Σx − 8·Σx.
    return h2f((u16)r.d) * fmaf(256.f, s0 + s1, -136.f * (xs[0] + xs[1]));
  }
  static constexpr bool IDOT = true;
  struct Lane {};
  static __device__ __forceinline__ Lane lane_of(int u) { return {}; }
  struct RowP {
    const u8* q;
    const u16* d;
  };
  static __device__ __forceinline__ RowP rowp(const u8* w, i64 rows, i64 cols, i64 row) {
    const i64 nb = cols >> 5, b0 = row * nb;
    return {w + b0 * 16, (const u16*)(w + rows * nb * 16) + b0};
  }
  static __device__ __forceinline__ void loadl(Raw& r, const RowP& rp, const Lane& l, int u) {
    r.q = ld_stream(rp.q + (u32)u * 16u);
    r.d = rp.d[u];
  }
  static __device__ __forceinline__ float idotl(const Raw& r, const Lane& l, const u32* xq, const float* sx, const float* xs) {
    int s0 = 0, s1 = 0;
    const u32 qw[4] = {r.q.x, r.q.y, r.q.z, r.q.w};
#pragma unroll
    for (int k = 0; k < 4; k++) {
      IDOT4U(s0, qw[k] & 0x0F0F0F0Fu, xq + 2 * k);
      IDOT4U(s1, qw[k] & 0xF0F0F0F0u, xq + 8 + 2 * k);  // 16·q
    }
    return fin(ws(r, l), (float)s0, (float)s1, sx, xs);
  }
  struct WS {
    float d;
  };
  static __device__ __forceinline__ WS ws(const Raw& r, const Lane& l) { return {h2f((u16)r.d)}; }
  static __device__ __forceinline__ float fin(const WS& w, float s0, float s1, const float* sx, const float* xs) {
    return __fmul_rn(w.d, fmaf(sx[0], s0, fmaf(__fmul_rn(0.0625f, sx[1]), s1, __fmul_rn(-8.f, __fadd_rn(xs[0], xs[1])))));
  }
  static __device__ __forceinline__ void deq(const Raw& r, i64 u, float* v) {
    const float d = h2f((u16)r.d);
    const u32 qw[4] = {r.q.x, r.q.y, r.q.z, r.q.w};
#pragma unroll
    for (int k = 0; k < 4; k++) {
      const u32 lo = qw[k] & 0x0F0F0F0Fu, hi = (qw[k] >> 4) & 0x0F0F0F0Fu;
      DEQ4(v + 4 * k, lo, d, 8.f * d);
      DEQ4(v + 16 + 4 * k, hi, d, 8.f * d);
    }
  }
};

// Float formats, 16 bytes a unit (rows must then be 16-byte aligned: cols a
// multiple of 8, or of 4 for F32), and their one-value twins for any cols.
struct F16V {
  static constexpr bool IDOT = false;
  static constexpr int UNIT = 8, RUNS = 1, RUNLEN = 8;
  struct Raw {
    uint4 q;
  };
  struct Lane {};
  static __device__ __forceinline__ Lane lane_of(int u) { return {}; }
  struct RowP {
    const u8* p;
  };
  static __device__ __forceinline__ RowP rowp(const u8* w, i64 rows, i64 cols, i64 row) { return {w + row * cols * 2}; }
  static __device__ __forceinline__ void loadl(Raw& r, const RowP& rp, const Lane& l, int u) { r.q = ld_stream(rp.p + (u32)u * 16u); }
  static __device__ __forceinline__ void load(Raw& r, const u8* w, i64 rows, i64 cols, i64 row, i64 u) {
    r.q = ld_stream(w + (row * cols + 8 * u) * 2);
  }
  static __device__ __forceinline__ i64 xoff(i64 u, int run) { return 8 * u; }
  static __device__ __forceinline__ void deq(const Raw& r, i64 u, float* v) {
    const u32 qw[4] = {r.q.x, r.q.y, r.q.z, r.q.w};
#pragma unroll
    for (int k = 0; k < 4; k++) {
      v[2 * k] = h2f((u16)(qw[k] & 0xffff));
      v[2 * k + 1] = h2f((u16)(qw[k] >> 16));
    }
  }
  static __device__ __forceinline__ float dot(const Raw& r, i64 u, const float* xv, const float* xs) {
    float v[8];
    deq(r, u, v);
    float s = 0.f;
#pragma unroll
    for (int i = 0; i < 8; i++) s = fmaf(v[i], xv[i], s);
    return s;
  }
};

struct BF16V {
  static constexpr bool IDOT = false;
  static constexpr int UNIT = 8, RUNS = 1, RUNLEN = 8;
  struct Raw {
    uint4 q;
  };
  struct Lane {};
  static __device__ __forceinline__ Lane lane_of(int u) { return {}; }
  struct RowP {
    const u8* p;
  };
  static __device__ __forceinline__ RowP rowp(const u8* w, i64 rows, i64 cols, i64 row) { return {w + row * cols * 2}; }
  static __device__ __forceinline__ void loadl(Raw& r, const RowP& rp, const Lane& l, int u) { r.q = ld_stream(rp.p + (u32)u * 16u); }
  static __device__ __forceinline__ void load(Raw& r, const u8* w, i64 rows, i64 cols, i64 row, i64 u) {
    r.q = ld_stream(w + (row * cols + 8 * u) * 2);
  }
  static __device__ __forceinline__ i64 xoff(i64 u, int run) { return 8 * u; }
  static __device__ __forceinline__ void deq(const Raw& r, i64 u, float* v) {
    const u32 qw[4] = {r.q.x, r.q.y, r.q.z, r.q.w};
#pragma unroll
    for (int k = 0; k < 4; k++) {
      v[2 * k] = __uint_as_float(qw[k] << 16);
      v[2 * k + 1] = __uint_as_float(qw[k] & 0xffff0000u);
    }
  }
  static __device__ __forceinline__ float dot(const Raw& r, i64 u, const float* xv, const float* xs) {
    float v[8];
    deq(r, u, v);
    float s = 0.f;
#pragma unroll
    for (int i = 0; i < 8; i++) s = fmaf(v[i], xv[i], s);
    return s;
  }
};

struct F32V {
  static constexpr bool IDOT = false;
  static constexpr int UNIT = 4, RUNS = 1, RUNLEN = 4;
  struct Raw {
    uint4 q;
  };
  struct Lane {};
  static __device__ __forceinline__ Lane lane_of(int u) { return {}; }
  struct RowP {
    const u8* p;
  };
  static __device__ __forceinline__ RowP rowp(const u8* w, i64 rows, i64 cols, i64 row) { return {w + row * cols * 4}; }
  static __device__ __forceinline__ void loadl(Raw& r, const RowP& rp, const Lane& l, int u) { r.q = ld_stream(rp.p + (u32)u * 16u); }
  static __device__ __forceinline__ void load(Raw& r, const u8* w, i64 rows, i64 cols, i64 row, i64 u) {
    r.q = ld_stream(w + (row * cols + 4 * u) * 4);
  }
  static __device__ __forceinline__ i64 xoff(i64 u, int run) { return 4 * u; }
  static __device__ __forceinline__ void deq(const Raw& r, i64 u, float* v) {
    v[0] = __uint_as_float(r.q.x);
    v[1] = __uint_as_float(r.q.y);
    v[2] = __uint_as_float(r.q.z);
    v[3] = __uint_as_float(r.q.w);
  }
  static __device__ __forceinline__ float dot(const Raw& r, i64 u, const float* xv, const float* xs) {
    float s = __uint_as_float(r.q.x) * xv[0];
    s = fmaf(__uint_as_float(r.q.y), xv[1], s);
    s = fmaf(__uint_as_float(r.q.z), xv[2], s);
    return fmaf(__uint_as_float(r.q.w), xv[3], s);
  }
};

// One value a unit: any cols.
template <int KIND>  // 0 f32, 1 f16, 2 bf16
struct FloatS {
  static constexpr int UNIT = 1, RUNS = 1, RUNLEN = 1;
  static constexpr bool IDOT = false;
  struct Raw {
    float v;
  };
  static __device__ __forceinline__ void load(Raw& r, const u8* w, i64 rows, i64 cols, i64 row, i64 u) {
    const i64 i = row * cols + u;
    if (KIND == 0) r.v = __ldg((const float*)w + i);
    else if (KIND == 1) r.v = h2f(__ldg((const unsigned short*)w + i));
    else r.v = bf2f(__ldg((const unsigned short*)w + i));
  }
  static __device__ __forceinline__ i64 xoff(i64 u, int run) { return u; }
  static __device__ __forceinline__ void deq(const Raw& r, i64 u, float* v) { v[0] = r.v; }
  static __device__ __forceinline__ float dot(const Raw& r, i64 u, const float* xv, const float* xs) { return r.v * xv[0]; }
};
typedef FloatS<0> F32S;
typedef FloatS<1> F16S;
typedef FloatS<2> BF16S;

// VFORMATS(X) are the formats read 16 bytes a unit (the staged-x decode
// kernels need runs of whole float4s); FORMATS(X) adds the one-value ones.
#define VFORMATS(X) \
  X(Q4K, q4_k)      \
  X(Q5K, q5_k)      \
  X(Q6K, q6_k)      \
  X(Q80, q8_0)      \
  X(Q40, q4_0)      \
  X(F16V, f16)      \
  X(BF16V, bf16)    \
  X(F32V, f32)

// FORMATS(X) lists every (struct, name) pair kernels are made for.
#define FORMATS(X) \
  X(Q4K, q4_k)     \
  X(Q5K, q5_k)     \
  X(Q6K, q6_k)     \
  X(Q80, q8_0)     \
  X(Q40, q4_0)     \
  X(F16V, f16)     \
  X(BF16V, bf16)   \
  X(F32V, f32)     \
  X(F16S, f16s)    \
  X(BF16S, bf16s)  \
  X(F32S, f32s)
